package kvmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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

// ender records how a test ended instead of ending the real one.
type ender struct {
	recorder
	fatal, skip string
}

func (e *ender) Fatalf(format string, args ...any) {
	e.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (e *ender) Skipf(format string, args ...any) {
	e.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// requireIn runs Require for a recorded test on its own goroutine, as the
// testing package runs a test, and tells how it ended.
func requireIn(t *testing.T, dev string) *ender {
	old := devPath
	devPath = dev
	t.Cleanup(func() { devPath = old })
	e := &ender{recorder: recorder{TB: t, name: "TestX"}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Require(e)
	}()
	<-done
	e.end()
	return e
}

// TestRequireSkipsOnlyWithoutTheDevice: no device, the test skips; a device
// that is there but cannot be opened fails the test, so a KVM machine never
// skips its KVM tests quietly.
func TestRequireSkipsOnlyWithoutTheDevice(t *testing.T) {
	missing := requireIn(t, filepath.Join(t.TempDir(), "no-such-kvm"))
	if missing.skip == "" || missing.fatal != "" {
		t.Errorf("a missing device: skip %q, fatal %q; want a skip", missing.skip, missing.fatal)
	}
	unusable := requireIn(t, t.TempDir()) // a directory cannot be opened read-write
	if unusable.fatal == "" || unusable.skip != "" {
		t.Errorf("an unusable device: skip %q, fatal %q; want a failure", unusable.skip, unusable.fatal)
	}
}
