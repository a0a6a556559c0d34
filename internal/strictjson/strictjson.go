// Package strictjson decodes untrusted JSON strictly: an unknown field, or
// anything after the one value, is an error.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
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
	return atEnd(dec)
}

// Single checks that data holds exactly one well-formed JSON value and
// nothing after it but white space.
func Single(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil {
		return err
	}
	return atEnd(dec)
}

// atEnd reports ErrTrailingData unless dec has nothing left but white space.
// (Decoder.More is not enough: it says false before a stray ']' or '}'.)
func atEnd(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return ErrTrailingData
	}
	return nil
}
