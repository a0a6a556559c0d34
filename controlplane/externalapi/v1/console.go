package v1

import (
	"context"
	"net/http"

	"github.com/coder/websocket"

	api "github.com/wagglevm/waggle/gen/control-plane/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// rawHTTP carries the connection's writer and request to the console
// endpoint, which the strict interface otherwise hides.
type rawHTTP struct {
	w http.ResponseWriter
	r *http.Request
}

type rawHTTPKey struct{}

func withRawHTTP(f api.StrictHandlerFunc, operationID string) api.StrictHandlerFunc {
	if operationID != "InstanceSerial" {
		return f
	}
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		return f(context.WithValue(ctx, rawHTTPKey{}, rawHTTP{w, r}), w, r, req)
	}
}

// upgraded is the answer once the connection was taken over.
type upgraded struct{}

func (upgraded) VisitInstanceSerialResponse(http.ResponseWriter) error { return nil }

// InstanceSerial passes the console of the instance's active VMM through:
// it opens the console first (so that a refusal answers its code), then
// upgrades the client and pumps bytes both ways until either side ends.
// The console lives as long as the request: Operations.OpenSerial gets the
// request's context, not the operations' timeout.
func (s *Server) InstanceSerial(ctx context.Context, req api.InstanceSerialRequestObject) (api.InstanceSerialResponseObject, error) {
	raw, _ := ctx.Value(rawHTTPKey{}).(rawHTTP)
	if raw.r == nil || !httpkit.IsWebSocketUpgrade(raw.r) {
		return nil, &httpkit.Error{Status: http.StatusBadRequest, Code: CodeNotUpgraded,
			Message: "the console is a WebSocket: send Connection: Upgrade and Upgrade: websocket"}
	}
	ref, err := ParseRef(req.Instance)
	if err != nil {
		return nil, err
	}
	conn, err := s.ops.OpenSerial(ctx, ref, nil)
	if err != nil {
		return nil, &opError{op: "attach to the console of", ref: ref, err: err}
	}
	defer conn.Close()
	ws, err := websocket.Accept(raw.w, raw.r, nil)
	if err != nil {
		return upgraded{}, nil // Accept has answered the client
	}
	httpkit.PumpConsole(raw.r.Context(), ws, conn, "the instance's console ended")
	return upgraded{}, nil
}
