package kvmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// recorder is a test that keeps its log lines and cleanups instead of
// printing and running them, so this test's own output carries no marker.
type recorder struct {
	testing.TB
	name     string
	logs     []string
	cleanups []func()
}

func (r *recorder) Name() string     { return r.name }
func (r *recorder) Helper()          {}
func (r *recorder) Log(args ...any)  { r.logs = append(r.logs, fmt.Sprint(args...)) }
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// end runs the cleanups, last first, as the end of a test does.
func (r *recorder) end() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}

const marker = "kvmtest: ran on /dev/kvm"

func TestRequireMarksOncePerTest(t *testing.T) {
	// Any file that opens read-write stands in for /dev/kvm, so this runs
	// on hosts without KVM too.
	dev := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	old := devPath
	devPath = dev
	t.Cleanup(func() { devPath = old })

	a := &recorder{TB: t, name: "TestA"}
	b := &recorder{TB: t, name: "TestA/sub"}
	for range 3 { // a helper building three machines
		Require(a)
	}
	Require(b)
	Require(a)
	for _, r := range []*recorder{a, b} {
		if len(r.logs) != 1 || r.logs[0] != marker {
			t.Errorf("%s logged %q, want the marker once", r.name, r.logs)
		}
	}

	// The test ends; run again (go test -count=2), it logs again.
	a.end()
	b.end()
	a2 := &recorder{TB: t, name: "TestA"}
	Require(a2)
	Require(a2)
	if len(a2.logs) != 1 {
		t.Errorf("the rerun logged %q, want the marker once", a2.logs)
	}
	a2.end()
}
