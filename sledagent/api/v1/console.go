package v1

import (
	"context"
	"net/http"

	"github.com/coder/websocket"

	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// CodeNotUpgraded: the console was asked without a WebSocket upgrade.
const CodeNotUpgraded = "not_upgraded"

// rawHTTP carries the connection's writer and request to the console
// endpoint, which the strict interface otherwise hides.
type rawHTTP struct {
	w http.ResponseWriter
	r *http.Request
}

type rawHTTPKey struct{}

func withRawHTTP(f api.StrictHandlerFunc, operationID string) api.StrictHandlerFunc {
	if operationID != "VmmSerial" {
		return f
	}
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		return f(context.WithValue(ctx, rawHTTPKey{}, rawHTTP{w, r}), w, r, req)
	}
}

// upgraded is the answer once the connection was taken over.
type upgraded struct{}

func (upgraded) VisitVmmSerialResponse(http.ResponseWriter) error { return nil }

// VmmSerial passes the VMM server's console WebSocket through: it attaches
// to the VMM's console first (so that a refusal answers its code), then
// upgrades the client and pumps bytes both ways until either side ends.
func (s *Server) VmmSerial(ctx context.Context, req api.VmmSerialRequestObject) (api.VmmSerialResponseObject, error) {
	raw, _ := ctx.Value(rawHTTPKey{}).(rawHTTP)
	if raw.r == nil || !httpkit.IsWebSocketUpgrade(raw.r) {
		return nil, &httpkit.Error{Status: http.StatusBadRequest, Code: CodeNotUpgraded,
			Message: "the console is a WebSocket: send Connection: Upgrade and Upgrade: websocket"}
	}
	conn, err := s.a.Console(ctx, req.VmmId)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ws, err := websocket.Accept(raw.w, raw.r, nil)
	if err != nil {
		return upgraded{}, nil // Accept has answered the client
	}
	httpkit.PumpConsole(raw.r.Context(), ws, conn, "the VMM's console ended")
	return upgraded{}, nil
}
