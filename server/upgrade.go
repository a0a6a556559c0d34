package server

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// The endpoints that take over their connection, the same in every
// version: the serial console (a WebSocket) and the migration stream. A
// version's handler lets them reach the raw connection (withRawHTTPFor) and
// calls attachConsole or startMigrationStream.

// rawHTTP carries the connection's writer and request to the upgrade
// endpoints, which the strict interface otherwise hides.
type rawHTTP struct {
	w http.ResponseWriter
	r *http.Request
}

type rawHTTPKey struct{}

// strictFunc is the type of the generated strict handlers' functions: each
// version's package names its own, with this one underlying type.
type strictFunc = func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error)

// withRawHTTPFor is every version's strict middleware for operation op:
// the upgrade operations (InstanceSerial, InstanceMigrateStart) find their
// raw connection in ctx; the others pass through.
func withRawHTTPFor(op string, f strictFunc) strictFunc {
	if op != "InstanceSerial" && op != "InstanceMigrateStart" {
		return f
	}
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		return f(context.WithValue(ctx, rawHTTPKey{}, rawHTTP{w, r}), w, r, req)
	}
}

// attachConsole serves the console WebSocket of the request in ctx (its
// raw connection, see withRawHTTPFor): every version's serial endpoint. A
// refusal before the upgrade is an error for the Error schema; once the
// WebSocket is accepted, nothing is left to answer.
func attachConsole(ctx context.Context, core Core) error {
	raw := ctx.Value(rawHTTPKey{}).(rawHTTP)
	conn, err := core.SerialAttach(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := checkWebSocketHandshake(raw.r); err != nil {
		return err
	}
	// No Origin check: the console needs the bearer token, which a browser
	// cannot attach to a WebSocket of its own accord, so a page on another
	// site cannot open it for a user; refusing a foreign Origin would only
	// answer non-browser clients with a 403 outside the contract.
	ws, err := websocket.Accept(raw.w, raw.r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil // Accept has answered the client
	}
	serveSerial(raw.r.Context(), ws, conn)
	return nil
}

// serveSerial pumps guest output to the WebSocket and WebSocket input to the
// guest until either side ends.
func serveSerial(ctx context.Context, ws *websocket.Conn, conn SerialConn) {
	// Every path lets the connection go (after a Close this does nothing).
	defer ws.CloseNow()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer cancel()
		for {
			typ, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary || typ == websocket.MessageText {
				if _, err := conn.Write(data); err != nil {
					return
				}
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			ws.Close(websocket.StatusNormalClosure, "")
			return
		case data, ok := <-conn.Output():
			if !ok {
				ws.Close(consoleCloseStatus(conn.End()))
				return
			}
			// A reader that cannot keep up is cut off.
			wctx, wcancel := context.WithTimeout(ctx, consoleWriteTimeout)
			err := ws.Write(wctx, websocket.MessageBinary, data)
			wcancel()
			if err != nil {
				return
			}
		}
	}
}

// consoleCloseStatus is the WebSocket close status and reason for a
// console that ended for end, as the contract says: 1008 for a reader that
// fell too far behind, 1000 when the instance's console ended (the VM
// stopped, failed or migrated away), with what happened as the reason.
func consoleCloseStatus(end ConsoleEnd) (websocket.StatusCode, string) {
	if end.Behind {
		return websocket.StatusPolicyViolation, end.Reason
	}
	return websocket.StatusNormalClosure, end.Reason
}

// MigrateUpgradeProtocol is the Upgrade token of the migration stream.
const MigrateUpgradeProtocol = "waggle-migrate"

// startMigrationStream turns the request in ctx into the migration stream
// of migration id, the source's end: every version's migration start
// endpoint. A request that cannot become the stream, or that the core
// refuses, is an error for the Error schema.
func startMigrationStream(ctx context.Context, core Core, id uuid.UUID) error {
	raw := ctx.Value(rawHTTPKey{}).(rawHTTP)
	// A request that cannot become the stream is refused before the core
	// sees it, so that it does not use up the armed migration.
	if !isUpgrade(raw.r, MigrateUpgradeProtocol) {
		return &apiError{http.StatusBadRequest, CodeNotUpgraded, "header Upgrade: want " + MigrateUpgradeProtocol}
	}
	serve, err := core.MigrateSource(ctx, id)
	if err != nil {
		return err
	}
	// From here serve is called exactly once, with no connection when the
	// upgrade fails, so the migration ends and the instance runs on.
	serveCtx := context.WithoutCancel(ctx)
	conn, brw, err := http.NewResponseController(raw.w).Hijack()
	if err != nil {
		_ = serve(serveCtx, nil)
		return fmt.Errorf("hijack migration connection: %w", err)
	}
	defer conn.Close()
	_, err = fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", MigrateUpgradeProtocol)
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		_ = serve(serveCtx, nil)
		return nil
	}
	_ = serve(serveCtx, &bufferedConn{Conn: conn, r: brw.Reader})
	return nil
}

// bufferedConn reads first what the HTTP server had already buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// checkWebSocketHandshake refuses, in the Error schema and naming the
// header, a request that is not a WebSocket opening handshake (RFC 6455
// section 4.2.1), so that the WebSocket library is left only with requests
// it will accept.
func checkWebSocketHandshake(r *http.Request) error {
	notWS := func(msg string) error { return &apiError{http.StatusBadRequest, CodeNotUpgraded, msg} }
	if !isUpgrade(r, "websocket") {
		return notWS("header Upgrade: this endpoint speaks only WebSocket")
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		return notWS(fmt.Sprintf("header Sec-WebSocket-Version: want 13, got %q", v))
	}
	if key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(key) != 16 {
		return notWS("header Sec-WebSocket-Key: want 16 bytes in base64")
	}
	return nil
}

func isUpgrade(r *http.Request, proto string) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", proto)
}
