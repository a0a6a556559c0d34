package zzft

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/vmm"
)

func TestFirstTouch(t *testing.T) {
	img := make([]byte, 64<<10)
	for i := range img { img[i] = byte(i) }
	const n = 30
	for round := range 3 {
	var cold, warm, pop time.Duration
	for range n {
		m, _ := vmm.MapRAM(64 << 20)
		t0 := time.Now()
		unix.Madvise(m[:2<<20], unix.MADV_POPULATE_WRITE)
		pop += time.Since(t0)
		t0 = time.Now()
		copy(m[1<<20:], img)
		m[0x8000] = 1
		warm += time.Since(t0)
		unix.Munmap(m)

		m, _ = vmm.MapRAM(64 << 20)
		t0 = time.Now()
		copy(m[1<<20:], img)
		m[0x8000] = 1
		cold += time.Since(t0)
		unix.Munmap(m)
	}
	t.Logf("round %d: cold copy %v, populate %v, copy after populate %v (means of %d)", round, cold/n, pop/n, warm/n, n)
	}
}
