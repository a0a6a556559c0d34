package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/term"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// escapeKey detaches from the console: Ctrl-], as telnet and virsh do.
const escapeKey = 0x1d

// errVMEnded ends a console whose VM has ended.
var errVMEnded = errors.New("the VM has ended")

func (c *vmCmd) serial(ctx context.Context, args []string, stdin io.Reader) error {
	until := c.fs.String("until", "", "detach once the guest has printed this text")
	timeout := c.fs.Duration("timeout", 0, "detach after this long (0: never)")
	history := c.fs.Bool("history", false, "print what the guest printed (the server keeps the last MiB) and end, without attaching")
	cl, err := c.connect(ctx, args)
	if err != nil {
		return err
	}
	if *history {
		return c.serialHistory(ctx, cl)
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	// A VM that has ended has no console to attach to.
	now, err := stateNow(ctx, cl)
	if err != nil {
		return err
	}
	if ended(now.State) {
		if out := migratedOut(now); out != nil {
			return fmt.Errorf("the VM is no longer here: %s (what it printed here: `waggle vm serial -history`)", movedText(*out))
		}
		return fmt.Errorf("the VM is %s: its console has ended (what it printed: `waggle vm serial -history`)", now.State)
	}
	tok, err := serverToken(c.ep, *c.tokenFile)
	if err != nil {
		return err
	}
	var opts websocket.DialOptions
	if tok != "" {
		opts.HTTPHeader = httpkit.BearerHeader(tok)
	}
	ws, resp, err := websocket.Dial(ctx, cl.consoleURL(), &opts)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			return fmt.Errorf("attach to the serial console: %w", apiErr(c.ep.String(), resp.StatusCode, body))
		}
		return fmt.Errorf("attach to the serial console: %w", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)

	// On a terminal, pass keys through raw and tell the user how to leave.
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err == nil {
			defer term.Restore(int(f.Fd()), old)
		}
		fmt.Fprint(c.stderr, "attached to the serial console; Ctrl-] detaches\r\n")
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if stdin != nil {
		go func() {
			defer cancel(nil)
			pumpInput(ctx, ws, stdin)
		}()
	}
	// The server closes the console when the VM ends; should the VM end
	// just before we attached, nothing would, so watch its state too.
	go func() {
		if endedAfter(ctx, cl, now.Gen) {
			select { // let the server's close, after the last output, come first
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
			cancel(errVMEnded)
		}
	}()

	var seen []byte
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			var ending string
			switch {
			case errors.Is(context.Cause(ctx), errVMEnded):
				ending = c.consoleEnded(cl, err)
			case ctx.Err() != nil:
				if *until != "" && *timeout > 0 && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
					return fmt.Errorf("did not see %q within %v", *until, *timeout)
				}
				return nil // detached
			case websocket.CloseStatus(err) != -1:
				ending = c.consoleEnded(cl, err)
			default:
				return err
			}
			if *until != "" {
				return fmt.Errorf("did not see %q: %s", *until, ending)
			}
			fmt.Fprintf(c.stderr, "\r\n%s\r\n", ending)
			return nil
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

// consoleEnded says why the console ended: where the VM went, that it
// ended, or else the reason the server gave when it closed the console.
func (c *vmCmd) consoleEnded(cl vmmAPI, err error) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, serr := stateNow(ctx, cl); serr == nil {
		if out := migratedOut(st); out != nil {
			return "the VM has moved: " + movedText(*out) + "; its console goes on there"
		}
		if ended(st.State) || st.State == stateStopping || st.State == stateStopped {
			if st.Failure != nil {
				return fmt.Sprintf("the VM has ended (%s: %s)", st.State, st.Failure)
			}
			return fmt.Sprintf("the VM has ended (%s)", st.State)
		}
	}
	ending := "the server closed the console"
	if reason := closeReason(err); reason != "" {
		ending += ": " + reason
	}
	return ending
}

// serialHistory prints what the guest printed, as far as the server kept
// it.
func (c *vmCmd) serialHistory(ctx context.Context, cl vmmAPI) error {
	h, err := cl.serialHistory(ctx, 1<<20)
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw(h.raw)
	}
	_, err = c.stdout.Write(h.Data)
	return err
}

// ended says whether an instance in state s has ended for good.
func ended(s string) bool {
	return s == stateDestroyed || s == stateFailed
}

// endedAfter follows the instance's state from gen and says whether it
// ended; it returns false when ctx ends or the server cannot tell.
func endedAfter(ctx context.Context, cl vmmAPI, gen int64) bool {
	for ctx.Err() == nil {
		st, err := cl.monitor(ctx, gen, nil)
		if err != nil {
			return false
		}
		if ended(st.State) {
			return true
		}
		gen = st.Gen
	}
	return false
}

func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}

// pumpInput sends stdin to the guest until EOF or the escape key.
func pumpInput(ctx context.Context, ws *websocket.Conn, stdin io.Reader) {
	buf := make([]byte, 1024)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if i := bytes.IndexByte(chunk, escapeKey); i >= 0 {
				if i > 0 {
					_ = ws.Write(ctx, websocket.MessageBinary, chunk[:i])
				}
				return
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := ws.Write(wctx, websocket.MessageBinary, chunk)
			cancel()
			if err != nil {
				return
			}
		}
		if err != nil {
			// EOF on a pipe: keep showing output until told to stop.
			<-ctx.Done()
			return
		}
	}
}
