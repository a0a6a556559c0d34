package v2

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/internal/oapierr"
	"github.com/wagglevm/waggle/internal/strictjson"
)

// schemas loads the version 2 document embedded in the generated package once.
var schemas = sync.OnceValues(func() (openapi3.Schemas, error) {
	doc, err := api.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("load embedded %s document: %w", Version, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("embedded %s document is invalid: %w", Version, err)
	}
	return doc.Components.Schemas, nil
})

// DecodeInstanceSpec decodes untrusted JSON (a migration preamble, a corpus
// file) into a version 2 InstanceSpec. The bytes are checked against the
// InstanceSpec schema of the embedded contract first, exactly as the HTTP
// layer checks a request, so a missing or unknown field or an out-of-range
// number is an error that names the field.
func DecodeInstanceSpec(data []byte) (api.InstanceSpec, error) {
	var w api.InstanceSpec
	if err := ValidateJSON("InstanceSpec", data); err != nil {
		return w, err
	}
	if err := strictjson.Decode(data, &w); err != nil {
		return w, fmt.Errorf("decode %s InstanceSpec: %w", Version, err)
	}
	return w, nil
}

// ValidateJSON checks data against the named schema of the version 2
// contract. The error names the offending field as a JSON path.
func ValidateJSON(schema string, data []byte) error {
	all, err := schemas()
	if err != nil {
		return err
	}
	ref, ok := all[schema]
	if !ok || ref.Value == nil {
		return fmt.Errorf("%s has no schema %q", Version, schema)
	}
	var value any
	if err := json.Unmarshal(data, &value); err != nil {
		return fmt.Errorf("decode %s %s: %w", Version, schema, err)
	}
	if err := ref.Value.VisitJSON(value, openapi3.MultiErrors()); err != nil {
		return &SchemaError{Schema: schema, Err: err}
	}
	return nil
}

// SchemaError is a value that breaks its schema.
type SchemaError struct {
	Schema string
	Err    error
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("%s %s: %s", Version, e.Schema, oapierr.Describe(e.Err))
}

func (e *SchemaError) Unwrap() error { return e.Err }
