// Command waggle-go-client is a program outside the waggle module that
// drives a VMM server through the generated v1 client: it prints the
// instance's state and, with -watch, every change of it until the instance
// is gone. It shows what another Go program needs: the client package, the
// server's address and its bearer token; none of the VMM or the server is
// compiled into it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	vmmv1 "github.com/wagglevm/waggle/gen/vmm-server/v1"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:12400", "the VMM server's base URL")
	tokenFile := flag.String("token-file", "", "file holding the server's bearer token")
	watch := flag.Bool("watch", false, "print every state change until the instance is stopped, failed or gone")
	flag.Parse()
	if err := run(*server, *tokenFile, *watch); err != nil {
		fmt.Fprintln(os.Stderr, "waggle-go-client:", err)
		os.Exit(1)
	}
}

func run(server, tokenFile string, watch bool) error {
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("read the token: %w", err)
	}
	bearer := "Bearer " + strings.TrimSpace(string(token))
	c, err := vmmv1.NewClientWithResponses(strings.TrimSuffix(server, "/")+"/v1",
		vmmv1.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", bearer)
			return nil
		}))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r, err := c.InstanceGetWithResponse(ctx)
	if err != nil {
		return err
	}
	if r.JSON200 == nil {
		return apiError(r.StatusCode(), r.Body)
	}
	inst := *r.JSON200
	fmt.Printf("%s %s gen %d\n", inst.Properties.Name, inst.State, inst.Gen)
	gen := inst.Gen
	for watch && !final(inst.State) {
		m, err := c.InstanceStateMonitorWithResponse(ctx, &vmmv1.InstanceStateMonitorParams{Gen: gen})
		if err != nil {
			return err
		}
		if m.JSON200 == nil {
			return apiError(m.StatusCode(), m.Body)
		}
		if m.JSON200.History != nil {
			for _, t := range *m.JSON200.History {
				fmt.Printf("%s gen %d\n", t.State, t.Gen)
			}
		}
		gen, inst.State = m.JSON200.Gen, m.JSON200.State
	}
	return nil
}

func final(s vmmv1.InstanceState) bool {
	return s == vmmv1.InstanceStateDestroyed || s == vmmv1.InstanceStateFailed
}

func apiError(status int, body []byte) error {
	if status == 0 {
		return errors.New("no answer")
	}
	return fmt.Errorf("HTTP %d: %s", status, strings.TrimSpace(string(body)))
}
