package vmmclient

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
)

// fakeServer answers like a VMM server that speaks the versions given and
// holds token.
func fakeServer(t *testing.T, token string, speaks ...string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, v := range speaks {
			if strings.HasPrefix(r.URL.Path, v+"/") {
				if r.Header.Get("Authorization") != "Bearer "+token {
					httpkit.WriteError(w, r, httpkit.Errorf(401, httpkit.CodeUnauthorized, "the bearer token is not valid"))
					return
				}
				httpkit.WriteError(w, r, httpkit.Errorf(404, "no_instance", "no instance has been created"))
				return
			}
		}
		httpkit.WriteError(w, r, httpkit.Errorf(404, httpkit.CodeNotFound, "no such path: %s", r.URL.Path))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestDialFindsAVersion: the newest version the server speaks is the one
// driven: v2 where it is served (today's servers), v1 where only v1 is (a
// v0.1.0 server).
func TestDialFindsAVersion(t *testing.T) {
	token := strings.Repeat("t", 43)
	c, err := New(nil)(context.Background(), fakeServer(t, token, "/v1"), token)
	require.NoError(t, err)
	require.IsType(t, &v1Client{}, c)
	c, err = New(nil)(context.Background(), fakeServer(t, token, "/v1", "/v2"), token)
	require.NoError(t, err)
	require.IsType(t, &v2Client{}, c)
}

// TestReplacementsToV2: replacements written as v1 components are checked
// by v1's rules and passed on as the same v2 components; a version the
// agent does not know is refused, naming it.
func TestReplacementsToV2(t *testing.T) {
	raw := map[string]json.RawMessage{"disk0-be": json.RawMessage(`{"type":"file_storage_backend","path":"disks/b.img"}`)}
	got, err := replacementsToV2("vmm-server/v1", raw)
	require.NoError(t, err)
	be, err := got["disk0-be"].AsFileStorageBackendComponent()
	require.NoError(t, err)
	require.Equal(t, "disks/b.img", be.Path)

	_, err = replacementsToV2("vmm-server/v1", map[string]json.RawMessage{"com1": json.RawMessage(`{"type":"serial_port","num":"com1"}`)})
	var re *sledagent.RefusedError
	require.ErrorAs(t, err, &re, "only backends may be replaced")
	require.Equal(t, "not_expressible", re.Code)

	_, err = replacementsToV2("vmm-server/v9", raw)
	require.ErrorAs(t, err, &re)
	require.Contains(t, re.Message, "vmm-server/v9")
}

func TestDialRefusals(t *testing.T) {
	token := strings.Repeat("t", 43)
	dial := New(nil)
	_, err := dial(context.Background(), fakeServer(t, token, "/v1"), strings.Repeat("x", 43))
	require.ErrorIs(t, err, sledagent.ErrTokenRefused, "a wrong token")
	require.False(t, errors.Is(err, sledagent.ErrVMMUnavailable), "a refused token is definite, not a server that does not answer")
	require.NotContains(t, err.Error(), token)

	var re *sledagent.RefusedError

	_, err = dial(context.Background(), fakeServer(t, token, "/v7"), token)
	require.ErrorAs(t, err, &re, "no version in common")
	require.Contains(t, re.Message, "no API version")

	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	_, err = dial(context.Background(), addr, token)
	require.True(t, errors.Is(err, sledagent.ErrVMMUnavailable), "a server that does not answer: %v", err)
}

func TestAnswerClassifies(t *testing.T) {
	require.NoError(t, answer(204, nil, "x"))
	err := answer(409, []byte(`{"error_code":"invalid_transition","message":"cannot reboot","request_id":"r"}`), "x")
	var re *sledagent.RefusedError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "invalid_transition", re.Code)
	require.Equal(t, 409, re.Status)
	require.ErrorIs(t, answer(500, []byte(`{}`), "x"), sledagent.ErrVMMUnavailable)
	require.ErrorIs(t, answer(502, []byte(`not json`), "x"), sledagent.ErrVMMUnavailable)
}
