// Package kvmtest lets a test declare that it needs /dev/kvm. A test that
// calls Require runs where KVM can be opened and skips, with the reason,
// elsewhere; either way it logs a marker line that `make unit` counts, so CI
// output says how many KVM tests ran.
package kvmtest

import (
	"os"
	"testing"
)

// Require skips t, naming the reason, unless /dev/kvm can be opened.
func Require(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("kvmtest: skipped: %v", err)
	}
	f.Close()
	t.Log("kvmtest: ran on /dev/kvm")
}
