package db

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/model"
)

// BenchmarkApplySledVmmState stores a report that moves a running VMM to
// its next generation (toggling running and rebooting), the doorbell's
// common case: one transaction of five statements (four when nothing
// changes) over a unix socket, to a server with fsync off.
func BenchmarkApplySledVmmState(b *testing.B) {
	f := newFixture(b)
	v := f.start(b, f.inst, f.sled)
	gen := model.Generation(3)
	b.ResetTimer()
	for b.Loop() {
		gen++
		s := model.VmmRunning
		if gen%2 == 0 {
			s = model.VmmRebooting
		}
		ap, err := f.d.ApplySledVmmState(f.ctx, v.ID, "", sledState(vmmRT(s, gen)), at(int(gen)))
		if err != nil || ap.Vmm != model.WriteUpdated {
			require.FailNow(b, "apply", "%v %v", ap.Vmm, err)
		}
	}
}

// BenchmarkApplySledVmmStateDuplicate stores the same report again and
// again (a ring that repeats itself): stale each time.
func BenchmarkApplySledVmmStateDuplicate(b *testing.B) {
	f := newFixture(b)
	v := f.start(b, f.inst, f.sled)
	for b.Loop() {
		ap, err := f.d.ApplySledVmmState(f.ctx, v.ID, "", sledState(running(3)), at(3))
		if err != nil || ap.Vmm != model.WriteStale {
			require.FailNow(b, "apply", "%v %v", ap.Vmm, err)
		}
	}
}
