package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/term"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
)

// escapeKey detaches from the console: Ctrl-], as telnet and virsh do.
const escapeKey = 0x1d

// errVMEnded ends a console whose VM has ended.
var errVMEnded = errors.New("the VM has ended")

func (c *vmCmd) serial(ctx context.Context, args []string, stdin io.Reader) error {
	until := c.fs.String("until", "", "detach once the guest has printed this text")
	timeout := c.fs.Duration("timeout", 0, "detach after this long (0: never)")
	cl, err := c.connect(args)
	if err != nil {
		return err
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
		return fmt.Errorf("the VM is %s: its console has ended (what it printed: GET /v1/instance/serial/history)", now.State)
	}
	ws, _, err := websocket.Dial(ctx, "ws://"+*c.server+"/v1/instance/serial", nil)
	if err != nil {
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
				ending = "the VM has ended"
			case ctx.Err() != nil:
				if *until != "" && *timeout > 0 && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
					return fmt.Errorf("did not see %q within %v", *until, *timeout)
				}
				return nil // detached
			case websocket.CloseStatus(err) != -1:
				ending = "the server closed the console"
				if reason := closeReason(err); reason != "" {
					ending += ": " + reason
				}
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

// ended says whether an instance in state s has ended for good.
func ended(s api.InstanceState) bool {
	return s == api.InstanceStateDestroyed || s == api.InstanceStateFailed
}

// endedAfter follows the instance's state from gen and says whether it
// ended; it returns false when ctx ends or the server cannot tell.
func endedAfter(ctx context.Context, cl *api.ClientWithResponses, gen int64) bool {
	for ctx.Err() == nil {
		r, err := cl.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: gen})
		if err != nil || r.JSON200 == nil {
			return false
		}
		if ended(r.JSON200.State) {
			return true
		}
		gen = r.JSON200.Gen
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
