package httpkit

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/coder/websocket"
)

// IsWebSocketUpgrade says whether r asks to become a WebSocket: a
// Connection header naming upgrade and "Upgrade: websocket".
func IsWebSocketUpgrade(r *http.Request) bool {
	hasUpgrade := false
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				hasUpgrade = true
			}
		}
	}
	return hasUpgrade && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// PumpConsole passes a serial console through a client's WebSocket: the
// console's output to the client as binary messages, the client's
// messages to the console, until either side ends or ctx does. When the
// console ended (rather than the client), it closes the WebSocket normally
// with reason ended; it always releases both.
func PumpConsole(ctx context.Context, ws *websocket.Conn, console io.ReadWriteCloser, ended string) {
	defer ws.CloseNow()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer cancel()
		defer console.Close()
		for {
			typ, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary || typ == websocket.MessageText {
				if _, err := console.Write(data); err != nil {
					return
				}
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := console.Read(buf)
		if n > 0 {
			if werr := ws.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() == nil {
				ws.Close(websocket.StatusNormalClosure, ended)
			}
			return
		}
	}
}
