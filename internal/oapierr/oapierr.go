// Package oapierr turns kin-openapi validation errors into short messages
// that name the field at fault, for the Error schema's message.
package oapierr

import (
	"errors"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
)

// Describe renders err as "field.path: reason" parts joined by "; ". Body
// fields are prefixed "body.", parameters "<in> parameter <name>".
func Describe(err error) string {
	// A RequestError may wrap a MultiError and a MultiError may hold
	// RequestErrors: look at the outermost layer first, so that the body or
	// parameter a problem belongs to is not lost.
	if multi, ok := err.(openapi3.MultiError); ok {
		parts := make([]string, 0, len(multi))
		for _, e := range multi {
			parts = append(parts, Describe(e))
		}
		return strings.Join(parts, "; ")
	}
	var re *openapi3filter.RequestError
	if errors.As(err, &re) {
		switch {
		case re.Parameter != nil:
			return re.Parameter.In + " parameter " + re.Parameter.Name + ": " + reason(re.Err, re.Reason)
		case re.RequestBody != nil:
			return prefixed("body", re.Err, re.Reason)
		}
		return reason(re.Err, re.Reason)
	}
	return prefixed("", err, "")
}

func reason(err error, fallback string) string {
	if err == nil {
		return fallback
	}
	return prefixed("", err, fallback)
}

// prefixed describes a schema error with its JSON path.
func prefixed(prefix string, err error, fallback string) string {
	if err == nil {
		if prefix == "" {
			return fallback
		}
		return prefix + ": " + fallback
	}
	var multi openapi3.MultiError
	if errors.As(err, &multi) {
		multi = closestBranches(multi)
		parts := make([]string, 0, len(multi))
		for _, e := range multi {
			parts = append(parts, prefixed(prefix, e, fallback))
		}
		return strings.Join(parts, "; ")
	}
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		path := se.JSONPointer()
		if prefix != "" {
			path = append([]string{prefix}, path...)
		}
		field := strings.Join(path, ".")
		if field == "" {
			field = "(value)"
		}
		return field + ": " + se.Reason
	}
	if prefix == "" {
		return err.Error()
	}
	return prefix + ": " + err.Error()
}

// closestBranches narrows the failure of a oneOf to the branches the value
// came closest to. kin-openapi reports a value that matches no branch of a
// oneOf as one MultiError per branch; listing them all would tell a client
// that sent a spec that `spec` is unsupported and `migrate` missing. The
// branches with the fewest shape errors (a required property missing, a
// property the branch does not have) are the ones the client meant; when
// exactly one branch fits its shape, only its errors are reported.
func closestBranches(multi openapi3.MultiError) openapi3.MultiError {
	if len(multi) < 2 {
		return multi
	}
	shape := make([]int, len(multi))
	for i, e := range multi {
		branch, ok := e.(openapi3.MultiError)
		if !ok {
			return multi // not a oneOf's branches
		}
		for _, be := range branch {
			var se *openapi3.SchemaError
			if errors.As(be, &se) && (se.SchemaField == "required" || se.SchemaField == "properties" || se.SchemaField == "additionalProperties") {
				shape[i]++
			}
		}
	}
	best, count := 0, 0
	for i := range shape {
		switch {
		case shape[i] < shape[best]:
			best, count = i, 1
		case shape[i] == shape[best]:
			count++
		}
	}
	if count != 1 || shape[best] > 0 {
		return multi // no branch fits its shape: say what each lacks
	}
	return openapi3.MultiError{multi[best]}
}
