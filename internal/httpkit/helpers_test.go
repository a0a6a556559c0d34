package httpkit

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/require"
)

// testDoc is a small contract of the shape the skeleton serves: bearer
// auth on every operation but one, a path parameter, a query parameter and
// a JSON body.
const testDoc = `
openapi: 3.0.3
info: {title: test, version: "1"}
servers: [{url: /v1}]
security: [{bearerAuth: []}]
components:
  securitySchemes:
    bearerAuth: {type: http, scheme: bearer}
  schemas:
    Item:
      type: object
      additionalProperties: false
      required: [name]
      properties:
        name: {type: string, maxLength: 10}
paths:
  /items/{id}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: string, format: uuid}}
    get:
      operationId: item_get
      parameters:
        - {name: n, in: query, required: false, schema: {type: integer, minimum: 1}}
      responses: {"200": {description: ok}}
    put:
      operationId: item_put
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Item"}
      responses: {"204": {description: ok}}
  /open:
    get:
      operationId: open_get
      security: []
      responses: {"200": {description: ok}}
`

const (
	goodToken = "0123456789abcdefghijklmnopqrstuvwxyzABCD"
	itemPath  = "/v1/items/5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01"
)

func loadDoc(t testing.TB, src string) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData([]byte(src))
	require.NoError(t, err)
	return doc
}

// testHandler is the skeleton over testDoc: its handlers answer 200 with
// the body they were given.
func testHandler(t testing.TB, opts HandlerOptions) http.Handler {
	t.Helper()
	validate, err := NewValidator(loadDoc(t, testDoc), "/v1")
	require.NoError(t, err)
	echo := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			WriteError(w, r, BodyReadError(err))
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	}
	r := chi.NewRouter()
	r.Use(validate)
	r.Get("/items/{id}", echo)
	r.Put("/items/{id}", echo)
	r.Get("/open", echo)
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h, err := NewHandler(opts, Version{Prefix: "/v1", Handler: r})
	require.NoError(t, err)
	return h
}

// serve runs h on a request and returns the recorded answer.
func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// errorOf checks that rec is the Error schema with the given status and
// returns it.
func errorOf(t *testing.T, rec *httptest.ResponseRecorder, status int) ErrorBody {
	t.Helper()
	require.Equal(t, status, rec.Code, rec.Body.String())
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var e ErrorBody
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&e), rec.Body.String())
	require.NotEmpty(t, e.RequestID)
	require.Equal(t, rec.Header().Get("X-Request-Id"), e.RequestID)
	return e
}

func newRequest(method, path, body string, header ...string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req := httptest.NewRequest(method, path, rd)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	return req
}

// quiet is a logger for tests that look at answers, not logs.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))
