package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/coder/websocket"
	"golang.org/x/term"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// serial attaches to an instance's console through the control plane.
func (c *cpCmd) serial(ctx context.Context, args []string, stdin io.Reader) error {
	until := c.fs.String("until", "", "detach once the guest has printed this text")
	timeout := c.fs.Duration("timeout", 0, "detach after this long (0: never)")
	if err := c.parse(args, 1, "NAME"); err != nil {
		return err
	}
	ref := c.args[0]
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	tok, err := serverToken(c.ep, *c.tokenFile)
	if err != nil {
		return err
	}
	var opts websocket.DialOptions
	if tok != "" {
		opts.HTTPHeader = httpkit.BearerHeader(tok)
	}
	u := c.ep.wsURL("/v1/instances/" + url.PathEscape(ref) + "/serial")
	ws, resp, err := websocket.Dial(ctx, u, &opts)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			return fmt.Errorf("attach to the serial console of %s: %w", ref, cpErr(c.ep.String(), resp.StatusCode, body, ref))
		}
		return fmt.Errorf("attach to the serial console of %s: %w", ref, explainCPNetErr(err))
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)

	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err == nil {
			defer term.Restore(int(f.Fd()), old)
		}
		fmt.Fprint(c.stderr, "attached to the serial console; Ctrl-] detaches\r\n")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if stdin != nil {
		go func() {
			defer cancel()
			pumpInput(ctx, ws, stdin)
		}()
	}
	var seen []byte
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				if *until != "" && *timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return fmt.Errorf("did not see %q within %v", *until, *timeout)
				}
				return nil // detached
			case websocket.CloseStatus(err) != -1:
				ending := "the console ended"
				if reason := closeReason(err); reason != "" {
					ending += ": " + reason
				}
				ending += fmt.Sprintf(" (`waggle instance get %s` shows where the instance stands)", ref)
				if *until != "" {
					return fmt.Errorf("did not see %q: %s", *until, ending)
				}
				fmt.Fprintf(c.stderr, "\r\n%s\r\n", ending)
				return nil
			}
			return err
		}
		if _, err := c.stdout.Write(data); err != nil {
			return err
		}
		if *until != "" {
			seen = append(seen, data...)
			if bytes.Contains(seen, []byte(*until)) {
				ws.Close(websocket.StatusNormalClosure, "")
				return nil
			}
			if keep := len(*until) * 2; len(seen) > keep+4096 {
				seen = seen[len(seen)-keep:]
			}
		}
	}
}
