package httpkit

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	errDomain := errors.New("domain thing")
	domain := func(err error) *Error {
		if errors.Is(err, errDomain) {
			return &Error{http.StatusConflict, "domain_code", err.Error()}
		}
		return nil
	}
	own := &Error{http.StatusTeapot, "own", "mine"}
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{own, http.StatusTeapot, "own"},
		{fmt.Errorf("wrapped: %w", own), http.StatusTeapot, "own"},
		{&http.MaxBytesError{Limit: 1 << 20}, http.StatusRequestEntityTooLarge, CodeBodyTooLarge},
		{fmt.Errorf("ensure: %w", errDomain), http.StatusConflict, "domain_code"},
		// A deadline deep in the runtime is not the client's slow body.
		{fmt.Errorf("dial source: %w", os.ErrDeadlineExceeded), http.StatusInternalServerError, CodeInternal},
		{errors.New("unknown"), http.StatusInternalServerError, CodeInternal},
	}
	for _, c := range cases {
		e := Classify(c.err, domain)
		require.Equal(t, c.status, e.Status, c.err.Error())
		require.Equal(t, c.code, e.Code, c.err.Error())
	}
	require.Equal(t, CodeInternal, Classify(errDomain, nil).Code)

	require.Equal(t, CodeRequestTimeout, BodyReadError(fmt.Errorf("read: %w", os.ErrDeadlineExceeded)).Code)
	require.Equal(t, CodeBodyTooLarge, BodyReadError(&http.MaxBytesError{Limit: 100}).Code)
	require.Equal(t, http.StatusBadRequest, BodyReadError(errors.New("unexpected EOF")).Status)
}
