package httpkit

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/require"
)

func TestMethodNotAllowedListsTheContractsMethods(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken)})
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodDelete, itemPath, "GET, PUT"},
		{http.MethodPost, itemPath, "GET, PUT"},
		{http.MethodPut, "/v1/open", "GET"},
	} {
		rec := serve(h, newRequest(c.method, c.path, ""))
		e := errorOf(t, rec, http.StatusMethodNotAllowed)
		require.Equal(t, CodeMethodNotAllowed, e.ErrorCode)
		require.Equal(t, c.allow, rec.Header().Get("Allow"), "%s %s", c.method, c.path)
		require.Contains(t, e.Message, c.allow)
	}
}

// TestRouterMethodNotAllowedListsMethods: a 405 from a version's own chi
// router (no validator in front) carries Allow too.
func TestRouterMethodNotAllowedListsMethods(t *testing.T) {
	r := chi.NewRouter()
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) }
	r.Get("/thing", ok)
	r.Delete("/thing", ok)
	h, err := NewHandler(HandlerOptions{Auth: NoAuth(), Log: quiet}, Version{Prefix: "/v1", Handler: r})
	require.NoError(t, err)
	rec := serve(h, newRequest(http.MethodPost, "/v1/thing", ""))
	e := errorOf(t, rec, http.StatusMethodNotAllowed)
	require.Equal(t, CodeMethodNotAllowed, e.ErrorCode)
	require.Equal(t, "GET, DELETE", rec.Header().Get("Allow"))
	errorOf(t, serve(h, newRequest(http.MethodGet, "/v2/thing", "")), http.StatusNotFound)
}

func TestBodyAndContentType(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken)})
	auth := "Bearer " + goodToken
	cases := []struct {
		name, method, path, body string
		header                   []string
		status                   int
		code, msg                string
	}{
		{"GET with a JSON content type and no body", http.MethodGet, itemPath, "", []string{"Content-Type", "application/json"}, 200, "", ""},
		{"PUT with a JSON content type and no body", http.MethodPut, itemPath, "", []string{"Content-Type", "application/json"}, 400, CodeInvalidRequest, "body"},
		{"good body", http.MethodPut, itemPath, `{"name":"a"}`, []string{"Content-Type", "application/json"}, 200, "", ""},
		{"content type in capitals", http.MethodPut, itemPath, `{"name":"a"}`, []string{"Content-Type", "Application/JSON; charset=utf-8"}, 200, "", ""},
		{"two values", http.MethodPut, itemPath, `{"name":"a"} {}`, []string{"Content-Type", "application/json"}, 400, CodeInvalidRequest, "not one JSON value"},
		{"two values, capitals", http.MethodPut, itemPath, `{"name":"a"}]`, []string{"Content-Type", "APPLICATION/json"}, 400, CodeInvalidRequest, "not one JSON value"},
		{"malformed content type", http.MethodPut, itemPath, `{"name":"a"}`, []string{"Content-Type", "application/json;;;="}, 415, CodeUnsupportedMedia, "Content-Type"},
		{"malformed content type, two values", http.MethodPut, itemPath, `{"name":"a"} {}`, []string{"Content-Type", "application/json;;;="}, 415, CodeUnsupportedMedia, "Content-Type"},
		{"malformed parameter", http.MethodPut, itemPath, `{"name":"a"} {}`, []string{"Content-Type", "application/json; charset"}, 415, CodeUnsupportedMedia, "Content-Type"},
		{"two content types", http.MethodPut, itemPath, `{"name":"a"} {}`, []string{"Content-Type", "application/json", "Content-Type", "text/plain"}, 415, CodeUnsupportedMedia, "Content-Type"},
		{"other content type", http.MethodPut, itemPath, `{"name":"a"}`, []string{"Content-Type", "text/plain"}, 415, CodeUnsupportedMedia, "Content-Type"},
		{"no content type", http.MethodPut, itemPath, `{"name":"a"}`, nil, 415, CodeUnsupportedMedia, "Content-Type"},
		{"schema error", http.MethodPut, itemPath, `{"name":"abcdefghijklmnop"}`, []string{"Content-Type", "application/json"}, 400, CodeInvalidRequest, "body.name"},
		{"unknown field", http.MethodPut, itemPath, `{"name":"a","x":1}`, []string{"Content-Type", "application/json"}, 400, CodeInvalidRequest, "x"},
		{"bad query", http.MethodGet, itemPath + "?n=0", "", nil, 400, CodeInvalidRequest, "query parameter n"},
		{"body too large", http.MethodPut, itemPath, `{"name":"` + strings.Repeat("a", 200) + `"}`, []string{"Content-Type", "application/json"}, 413, CodeBodyTooLarge, "100 bytes"},
	}
	small := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken), MaxBodyBytes: 100})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := newRequest(c.method, c.path, c.body, append([]string{"Authorization", auth}, c.header...)...)
			rec := serve(small, req)
			if c.code == "" {
				require.Equal(t, c.status, rec.Code, rec.Body.String())
				require.Equal(t, c.body, rec.Body.String(), "the handler reads the body as sent")
				return
			}
			e := errorOf(t, rec, c.status)
			require.Equal(t, c.code, e.ErrorCode, e.Message)
			require.Contains(t, e.Message, c.msg)
		})
	}
	// A body of unknown length that turns out empty is no body; one over
	// the limit is refused whatever its declared length.
	req := newRequest(http.MethodGet, itemPath, "", "Authorization", auth, "Content-Type", "application/json")
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader("")), -1
	require.Equal(t, 200, serve(h, req).Code)
	req = newRequest(http.MethodPut, itemPath, "", "Authorization", auth, "Content-Type", "application/json")
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader(`{"name":"`+strings.Repeat("a", 200)+`"}`)), -1
	require.Equal(t, CodeBodyTooLarge, errorOf(t, serve(small, req), 413).ErrorCode)
	// A body whose declared length is 0 is not read by anyone, not even
	// kin-openapi.
	req = newRequest(http.MethodPut, itemPath, "", "Authorization", auth, "Content-Type", "application/json")
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader(`{"name":"a"} {}`)), 0
	require.Equal(t, CodeInvalidRequest, errorOf(t, serve(h, req), 400).ErrorCode)
}

func TestRequestID(t *testing.T) {
	h := testHandler(t, HandlerOptions{Log: quiet})
	rec := serve(h, newRequest(http.MethodGet, "/v1/open", "", "X-Request-Id", "trace-1"))
	require.Equal(t, "trace-1", rec.Header().Get("X-Request-Id"))
	for _, bad := range []string{strings.Repeat("a", 65), "a\x01b", "a b"} {
		rec := serve(h, newRequest(http.MethodGet, "/v1/open", "", "X-Request-Id", bad))
		id := rec.Header().Get("X-Request-Id")
		require.NotEqual(t, bad, id)
		require.Len(t, id, 16)
	}
}

func TestPanicIsAnInternalError(t *testing.T) {
	h, err := NewHandler(HandlerOptions{Auth: NoAuth(), Log: quiet}, Version{Prefix: "/v1", Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	})})
	require.NoError(t, err)
	e := errorOf(t, serve(h, newRequest(http.MethodGet, "/v1/x", "")), 500)
	require.Equal(t, CodeInternal, e.ErrorCode)
	require.NotContains(t, e.Message, "boom")
}
