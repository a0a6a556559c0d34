// Package sledtest helps tests run real sled agents on machines without
// KVM: the agent, its VMM server processes, their ports, tokens and token
// checks are real; only each VMM's instance (its ensure and its states) is
// played by the test, through a sledagent.Dialer that wraps the real one.
// Tests on machines with KVM use the real dialer instead.
package sledtest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/sledagent/vmmclient"
	"github.com/wagglevm/waggle/spec"
)

// Instance stands in for the VM of one real VMM server process.
type Instance struct {
	mu       sync.Mutex
	gen      uint64
	obs      sledagent.Observation
	changed  chan struct{} // closed and replaced at every change
	ensured  int
	requests []sledagent.Requested
}

// Set moves the instance to state s (with a failure reason for failed),
// as if its VM had.
func (fi *Instance) Set(s sledagent.VmmState, reason string) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.gen++
	fi.obs = sledagent.Observation{Gen: fi.gen, State: s, FailureReason: reason}
	close(fi.changed)
	fi.changed = make(chan struct{})
}

// Gen is the generation of the instance's current state.
func (fi *Instance) Gen() uint64 {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.obs.Gen
}

// Ensured counts the ensures the instance received.
func (fi *Instance) Ensured() int {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.ensured
}

// Requests lists the state changes asked of the instance, in order.
func (fi *Instance) Requests() []sledagent.Requested {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return append([]sledagent.Requested(nil), fi.requests...)
}

// client is the real VMM client of a process, with its instance played.
type client struct {
	sledagent.VMMClient // the real client, for what is not played
	inst                *Instance
}

func (f *client) Ensure(ctx context.Context, p sledagent.Properties, s *spec.Spec, m *sledagent.MigrationTarget) error {
	f.inst.mu.Lock()
	defer f.inst.mu.Unlock()
	f.inst.ensured++
	f.inst.gen = 1
	f.inst.obs = sledagent.Observation{Gen: 1, State: sledagent.StateCreating}
	return nil
}

func (f *client) Observe(ctx context.Context, gen uint64, wait time.Duration) (sledagent.Observation, error) {
	for {
		f.inst.mu.Lock()
		obs, ch := f.inst.obs, f.inst.changed
		f.inst.mu.Unlock()
		if obs.Gen > gen {
			return obs, nil
		}
		// A real call, so that a dead process fails the watch as it would.
		if _, err := f.VMMClient.Serial(ctx, sledagent.SerialQuery{}); err != nil && errors.Is(err, sledagent.ErrVMMUnavailable) {
			return sledagent.Observation{}, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return sledagent.Observation{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (f *client) Request(ctx context.Context, r sledagent.Requested) error {
	f.inst.mu.Lock()
	f.inst.requests = append(f.inst.requests, r)
	f.inst.mu.Unlock()
	// As the real VMM server: a stop passes through stopping and stopped
	// and ends destroyed (its VM is gone); a reboot passes through
	// rebooting. Each is one observation with its history.
	steps := map[sledagent.Requested][]sledagent.VmmState{sledagent.RequestRun: {sledagent.StateRunning},
		sledagent.RequestStop:   {sledagent.StateStopping, sledagent.StateStopped, sledagent.StateDestroyed},
		sledagent.RequestReboot: {sledagent.StateRebooting, sledagent.StateRunning}}[r]
	f.inst.play(steps, nil, nil)
	return nil
}

func (f *client) Arm(ctx context.Context, a sledagent.MigrationArm) (sledagent.MigrationArmed, error) {
	out := sledagent.MigrationArmed{MigrationID: a.MigrationID, ExpiresAt: time.Now().Add(5 * time.Minute)}
	if a.Secret == "" {
		out.Secret = "made-by-the-server-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	}
	return out, nil
}

// Fakes dials real VMM server processes (the token check is real) and
// hands out clients whose instance is played, one Instance per address.
type Fakes struct {
	mu   sync.Mutex
	byAd map[string]*Instance
	real sledagent.Dialer
}

// NewFakes returns a Fakes over the real VMM client.
func NewFakes() *Fakes {
	return &Fakes{byAd: map[string]*Instance{}, real: vmmclient.New(nil)}
}

// Dial is a sledagent.Dialer.
func (f *Fakes) Dial(ctx context.Context, addr, token string) (sledagent.VMMClient, error) {
	c, err := f.real(ctx, addr, token)
	if err != nil {
		return nil, err
	}
	return &client{VMMClient: c, inst: f.instance(addr)}, nil
}

func (f *Fakes) instance(addr string) *Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, ok := f.byAd[addr]
	if !ok {
		inst = &Instance{changed: make(chan struct{})}
		f.byAd[addr] = inst
	}
	return inst
}

// At returns the instance of the VMM server at addr (nil before it was
// dialled).
func (f *Fakes) At(addr string) *Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byAd[addr]
}
