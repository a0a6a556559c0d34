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
)

// escapeKey detaches from the console: Ctrl-], as telnet and virsh do.
const escapeKey = 0x1d

func (c *vmCmd) serial(ctx context.Context, args []string, stdin io.Reader) error {
	until := c.fs.String("until", "", "detach once the guest has printed this text")
	timeout := c.fs.Duration("timeout", 0, "detach after this long (0: never)")
	if err := c.parse(args); err != nil {
		return err
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
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
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				if *until != "" && *timeout > 0 && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
					return fmt.Errorf("did not see %q within %v", *until, *timeout)
				}
				return nil
			}
			if websocket.CloseStatus(err) != -1 {
				return nil // the server ended the console
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
