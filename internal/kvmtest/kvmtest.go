// Package kvmtest lets a test declare that it needs /dev/kvm. A test that
// calls Require runs where KVM can be opened and skips, with the reason,
// elsewhere; either way it logs a marker line, once per test, that
// scripts/count-tests.sh counts, so CI output says how many KVM tests ran.
package kvmtest

import (
	"os"
	"sync"
	"testing"
)

// devPath is the device Require opens; tests of this package point it
// elsewhere.
var devPath = "/dev/kvm"

// marked holds the names of the running tests that have logged the marker.
// A name is forgotten when its test ends, so that a rerun (go test -count)
// logs again. Names are unique among the tests running at one time.
var marked sync.Map

// Require skips t, naming the reason, where there is no /dev/kvm. Where the
// device is there but cannot be opened (permissions, a broken module), the
// test fails instead: on a KVM machine a KVM test must run, never skip
// quietly. Helpers may call it for every machine they build: the marker is
// logged once per test.
func Require(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(devPath, os.O_RDWR, 0)
	if err != nil {
		if _, statErr := os.Stat(devPath); statErr == nil {
			t.Fatalf("kvmtest: %s is present but cannot be used: %v", devPath, err)
		}
		t.Skipf("kvmtest: skipped: %v", err)
	}
	f.Close()
	name := t.Name()
	if _, loaded := marked.LoadOrStore(name, struct{}{}); loaded {
		return
	}
	t.Cleanup(func() { marked.Delete(name) })
	t.Log("kvmtest: ran on /dev/kvm")
}
