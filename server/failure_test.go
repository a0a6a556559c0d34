package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/vmm"
)

// requireFailed checks inst (failed) and its history: kind and reason
// agree on the instance and its Failed transition, and no other
// transition has a kind.
func requireFailed(t *testing.T, core Core, kind FailureKind, reason string) {
	t.Helper()
	inst := waitState(t, core, StateFailed)
	require.Equal(t, kind, inst.FailureKind, inst.FailureReason)
	require.Equal(t, reason, inst.FailureReason)
	_, _, hist, err := core.WaitGen(context.Background(), 0)
	require.NoError(t, err)
	require.NotEmpty(t, hist)
	for _, tr := range hist {
		if tr.State == StateFailed {
			require.Equal(t, kind, tr.FailureKind)
			require.Equal(t, reason, tr.FailureReason)
		} else {
			require.Empty(t, tr.FailureKind, "a %s transition has no failure kind", tr.State)
		}
	}
	require.Equal(t, StateFailed, hist[len(hist)-1].State)
}

// TestFailureKindOfAGuestThatEnds: a VM that ends failed fails its
// instance with the kind its exit says (the guest's doing or the host's),
// and the reason is the exit's text, word for word as before kinds.
func TestFailureKindOfAGuestThatEnds(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		kind FailureKind
	}{
		{"pvpanic", vmm.ErrGuestPanicked, FailureGuestPanicked},
		{"triple fault", fmt.Errorf("vCPU 0: %w at rip 0x1234", vmm.ErrTripleFault), FailureGuestTripleFault},
		{"emulation", fmt.Errorf("vCPU 1: %w: suberror 1 (emulation failure)", vmm.ErrEmulation), FailureGuestError},
		{"unhandled exit", fmt.Errorf("vCPU 0: %w", vmm.ErrUnhandledExit), FailureGuestError},
		{"entry failed", fmt.Errorf("vCPU 0: %w: hardware reason 0x21", vmm.ErrEntryFailed), FailureHostError},
		{"ioctl", errors.New("KVM_RUN: bad address"), FailureHostError},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, fakeGuest{})
			_, vm := g.ensure(t, "crashes")
			g.run(t)
			vm.crash(c.err)
			requireFailed(t, g.rt, c.kind, "failed: "+c.err.Error())
		})
	}
}

// TestFailureKindOfTheHost: a VM that cannot start, or cannot reboot, is
// the host's failure.
func TestFailureKindOfTheHost(t *testing.T) {
	t.Run("start", func(t *testing.T) {
		g := newRig(t, fakeGuest{})
		g.ensure(t, "no-start")
		g.vms.mu.Lock()
		g.vms.failStart = errors.New("no vCPU thread")
		g.vms.mu.Unlock()
		require.NoError(t, request(g.rt, RequestRun))
		requireFailed(t, g.rt, FailureHostError, "start: no vCPU thread")
	})
	t.Run("reboot", func(t *testing.T) {
		g := newRig(t, fakeGuest{})
		g.ensure(t, "no-reboot")
		g.run(t)
		g.vms.mu.Lock()
		g.vms.failReset = errors.New("restore the irqchip: bad address")
		g.vms.mu.Unlock()
		require.NoError(t, request(g.rt, RequestReboot))
		requireFailed(t, g.rt, FailureHostError, "reboot: restore the irqchip: bad address")
	})
}

// TestFailureKindOfMigrations: a target whose inbound migration fails, and
// a source that cannot resume its VM after an outbound one failed, fail
// with migration_failed; the messages are as before kinds.
func TestFailureKindOfMigrations(t *testing.T) {
	src := newRig(t, fakeGuest{})
	dst := newRig(t, fakeGuest{}, func(o *RuntimeOptions) { o.FailPoints = FailPoints{FailDeviceImport: true} })
	src.ensure(t, "cannot-resume")
	src.run(t)
	src.vms.mu.Lock()
	src.vms.failResume = errors.New("vCPU 0 gone")
	src.vms.mu.Unlock()

	migrate(t, src, dst)
	inst := waitState(t, dst.rt, StateFailed)
	require.Regexp(t, `^inbound migration failed: `, inst.FailureReason)
	requireFailed(t, dst.rt, FailureMigrationFailed, inst.FailureReason)

	requireFailed(t, src.rt, FailureMigrationFailed, "resume after the failed migration: vCPU 0 gone")
}

// TestEveryFailureHasAKind: nothing in the server moves an instance to
// Failed without a kind (setStateLocked would log the bug and say
// host_error): every failure goes through failLocked or fail.
func TestEveryFailureHasAKind(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	direct := regexp.MustCompile(`setStateLocked\(\s*StateFailed`)
	for _, f := range files {
		if filepath.Ext(f) != ".go" || regexp.MustCompile(`_test\.go$`).MatchString(f) {
			continue
		}
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NotRegexp(t, direct, string(b), "%s sets StateFailed without a kind", f)
	}
	require.Len(t, failureKinds, 5)
	seen := map[FailureKind]bool{}
	for _, k := range failureKinds {
		require.Regexp(t, `^[a-z]+(_[a-z]+)*$`, string(k))
		require.False(t, seen[k], "kind %s twice", k)
		seen[k] = true
	}
}
