package server

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/spec"
)

// fakeCore is a Core for the HTTP layer's unit tests: a small in-memory state
// machine with no VM behind it. The real core is tested with KVM elsewhere.
type fakeCore struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every change; guarded by mu
	req     *EnsureRequest
	inst    Instance
	serial  []byte
	input   []byte
	expect  uuid.UUID // the migration id the source expects
	out     *MigrationProgress
}

func newFakeCore() *fakeCore { return &fakeCore{changed: make(chan struct{})} }

func (f *fakeCore) setStateLocked(s State) {
	f.inst.State = s
	f.inst.Gen++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCore) Ensure(_ context.Context, req EnsureRequest) (Instance, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Properties.Name == "panic" {
		panic("fake core told to panic")
	}
	if f.req != nil {
		if f.req.Equal(req) {
			return f.inst, false, nil
		}
		return Instance{}, false, ErrInstanceExists
	}
	f.req = &req
	f.inst = Instance{Properties: req.Properties}
	f.setStateLocked(StateCreating)
	return f.inst, true, nil
}

func (f *fakeCore) Instance(context.Context) (Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.req == nil {
		return Instance{}, ErrNoInstance
	}
	return f.inst, nil
}

func (f *fakeCore) Spec(context.Context) (Instance, *spec.Spec, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.req == nil {
		return Instance{}, nil, ErrNoInstance
	}
	return f.inst, f.req.Spec, nil
}

func (f *fakeCore) DerivedSMBIOS(p Properties) spec.SMBIOS {
	return spec.SMBIOS{Manufacturer: "fake", SerialNumber: p.Name}
}

func (f *fakeCore) RequestState(_ context.Context, r Requested) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.req == nil {
		return 0, ErrNoInstance
	}
	// The real rule book, with transitions that end at once.
	switch decide(f.inst.State, r, true, false) {
	case alreadyDone:
		return f.inst.Gen, nil
	case honour:
		switch r {
		case RequestRun, RequestReboot:
			f.setStateLocked(StateRunning)
		case RequestStop:
			f.setStateLocked(StateStopped)
		}
		return f.inst.Gen, nil
	}
	return 0, &TransitionError{State: f.inst.State, Requested: r.String()}
}

func (f *fakeCore) WaitGen(ctx context.Context, gen uint64) (Instance, MigrationStatus, []Transition, error) {
	for {
		f.mu.Lock()
		if f.req == nil {
			f.mu.Unlock()
			return Instance{}, MigrationStatus{}, nil, ErrNoInstance
		}
		inst, ch := f.inst, f.changed
		f.mu.Unlock()
		if inst.Gen > gen {
			return inst, MigrationStatus{}, nil, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return inst, MigrationStatus{}, nil, nil
		}
	}
}

func (f *fakeCore) SerialHistory(_ context.Context, q SerialQuery) (SerialHistory, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	start := uint64(0)
	if q.FromStart != nil {
		start = min(*q.FromStart, uint64(len(f.serial)))
	}
	end := min(uint64(len(f.serial)), start+uint64(q.MaxBytes))
	return SerialHistory{Data: append([]byte(nil), f.serial[start:end]...), Start: start, End: end}, nil
}

type fakeSerialConn struct {
	f   *fakeCore
	out chan []byte
}

func (c *fakeSerialConn) Output() <-chan []byte { return c.out }
func (c *fakeSerialConn) End() ConsoleEnd       { return ConsoleEnd{Reason: consoleVMStopped} }
func (c *fakeSerialConn) Close() error          { return nil }
func (c *fakeSerialConn) Write(p []byte) (int, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.f.input = append(c.f.input, p...)
	return len(p), nil
}

func (f *fakeCore) SerialAttach(context.Context) (SerialConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.req == nil {
		return nil, ErrNoInstance
	}
	out := make(chan []byte, 1)
	out <- append([]byte(nil), f.serial...)
	return &fakeSerialConn{f: f, out: out}, nil
}

func (f *fakeCore) MigrationStatus(context.Context) (MigrationStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return MigrationStatus{Out: f.out}, nil
}

func (f *fakeCore) MigrateExpect(_ context.Context, arm MigrationArm) (ArmedMigration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.req == nil {
		return ArmedMigration{}, ErrNoInstance
	}
	f.expect = arm.ID
	return ArmedMigration{ID: arm.ID, ExpiresAt: time.Now().Add(time.Minute)}, nil
}

// MigrateSource serves an expected migration by echoing the stream.
func (f *fakeCore) MigrateSource(_ context.Context, id uuid.UUID) (func(context.Context, net.Conn) error, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != f.expect {
		return nil, ErrNoSuchMigration
	}
	return func(_ context.Context, conn net.Conn) error {
		if conn == nil {
			return errors.New("not upgraded")
		}
		_, err := io.Copy(conn, conn)
		return err
	}, nil
}
