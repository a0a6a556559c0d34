package httpkit_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// A server mounts each version of its contract behind the validator, on
// the skeleton, and serves it with a bounded shutdown.
func Example() {
	doc, err := openapi3.NewLoader().LoadFromData([]byte(`
openapi: 3.0.3
info: {title: hello, version: "1"}
security: [{bearerAuth: []}]
components:
  securitySchemes:
    bearerAuth: {type: http, scheme: bearer}
paths:
  /hello:
    get:
      responses: {"200": {description: ok}}
`))
	if err != nil {
		log.Fatal(err)
	}
	validate, err := httpkit.NewValidator(doc, "/v1")
	if err != nil {
		log.Fatal(err)
	}
	v1 := http.StripPrefix("/v1", validate(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "hello")
	})))
	token, _ := httpkit.GenerateToken()
	h, err := httpkit.NewHandler(httpkit.HandlerOptions{Auth: httpkit.BearerToken(token), Log: slog.New(slog.DiscardHandler)},
		httpkit.Version{Prefix: "/v1", Handler: v1})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := httpkit.NewServer(h, httpkit.ServerOptions{})
	go srv.Serve(ln)

	for _, tok := range []string{"", token} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/hello", nil)
		_ = httpkit.BearerAuth(tok)(context.Background(), req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Println(resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	// Output:
	// 401 Unauthorized
	// 200 OK
}
