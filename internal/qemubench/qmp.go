package qemubench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// qmpCommandTimeout bounds one QMP exchange when ctx has no earlier deadline.
const qmpCommandTimeout = 15 * time.Second

// qmpConn is a minimal, synchronous QMP client: one command at a time, each
// tagged with an id; asynchronous events read while waiting for a response are
// kept (the last few) for error messages and otherwise ignored.
type qmpConn struct {
	conn    net.Conn
	dec     *json.Decoder
	nextID  int
	version string
	events  []string
}

// qmpMessage is any message QEMU sends: the greeting, a response (with
// "return" or "error") or an event.
type qmpMessage struct {
	QMP *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
	} `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	ID    json.RawMessage `json:"id"`
}

// qmpError is an error response from QEMU.
type qmpError struct {
	Command, Class, Desc string
}

func (e *qmpError) Error() string {
	return fmt.Sprintf("QMP %s: %s: %s", e.Command, e.Class, e.Desc)
}

// dialQMP connects to the QMP unix socket at path, reads the greeting and
// leaves capabilities negotiation mode.
func dialQMP(ctx context.Context, path string) (*qmpConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	q := &qmpConn{conn: c, dec: json.NewDecoder(bufio.NewReader(c))}
	var greeting qmpMessage
	if err := q.withDeadline(ctx, func() error { return q.dec.Decode(&greeting) }); err != nil {
		c.Close()
		return nil, fmt.Errorf("QMP greeting: %w", err)
	}
	if greeting.QMP == nil {
		c.Close()
		return nil, errors.New("QMP greeting: not a QMP server")
	}
	v := greeting.QMP.Version
	q.version = fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
	if p := strings.TrimSpace(v.Package); p != "" {
		q.version += " (" + p + ")"
	}
	if err := q.do(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

// withDeadline runs f (which does I/O on the connection) under ctx's deadline,
// capped at qmpCommandTimeout, and unblocks it when ctx is cancelled.
func (q *qmpConn) withDeadline(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(qmpCommandTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := q.conn.SetDeadline(deadline); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { q.conn.SetDeadline(time.Now()) })
	err := f()
	stop()
	if ctxErr := ctx.Err(); ctxErr != nil && err != nil {
		return fmt.Errorf("%w (%v)", ctxErr, err)
	}
	return err
}

// do runs command with arguments args (nil for none) and, if out is not nil,
// decodes the "return" value into it.
func (q *qmpConn) do(ctx context.Context, command string, args any, out any) error {
	q.nextID++
	id := strconv.Itoa(q.nextID)
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var resp qmpMessage
	err = q.withDeadline(ctx, func() error {
		if _, err := q.conn.Write(append(b, '\n')); err != nil {
			return err
		}
		for {
			resp = qmpMessage{}
			if err := q.dec.Decode(&resp); err != nil {
				return err
			}
			if resp.Event != "" {
				q.noteEvent(resp)
				continue
			}
			var got string
			if json.Unmarshal(resp.ID, &got) == nil && got == id {
				return nil
			}
			// A response to some other id (there are none: commands are
			// synchronous) or without one: skip it.
		}
	})
	if err != nil {
		return fmt.Errorf("QMP %s: %w", command, err)
	}
	if resp.Error != nil {
		return &qmpError{Command: command, Class: resp.Error.Class, Desc: resp.Error.Desc}
	}
	if resp.Return == nil {
		return fmt.Errorf("QMP %s: response has neither return nor error", command)
	}
	if out != nil {
		if err := json.Unmarshal(resp.Return, out); err != nil {
			return fmt.Errorf("QMP %s: decoding the return value: %w", command, err)
		}
	}
	return nil
}

func (q *qmpConn) noteEvent(m qmpMessage) {
	s := m.Event
	if len(m.Data) > 0 {
		s += " " + string(m.Data)
	}
	q.events = append(q.events, s)
	if len(q.events) > 16 {
		q.events = q.events[len(q.events)-16:]
	}
}

func (q *qmpConn) Close() error { return q.conn.Close() }
