// Package strictjson decodes untrusted JSON strictly: an unknown field, or
// anything after the one value, is an error.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
)

// ErrTrailingData is returned when bytes follow the value.
var ErrTrailingData = errors.New("trailing data after the JSON value")

// Decode decodes data, which must hold exactly one JSON value with no field
// that v lacks, into v.
func Decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return ErrTrailingData
	}
	return nil
}
