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
