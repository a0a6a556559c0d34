package devices

import (
	"fmt"
	"sync"
)

// fakeIRQ records the level of an interrupt line.
type fakeIRQ struct {
	mu sync.Mutex
	// level and changes are guarded by mu.
	level   bool
	changes int
	// fail makes SetLevel return an error; guarded by mu.
	fail bool
}

func (f *fakeIRQ) SetLevel(high bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return fmt.Errorf("fake irq failure")
	}
	if high != f.level {
		f.changes++
	}
	f.level = high
	return nil
}

func (f *fakeIRQ) High() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.level
}

// fakeMem is guest RAM from gpa 0 to len(ram). Accesses outside it fail; it
// records every write so tests can check where the device wrote.
type fakeMem struct {
	mu sync.Mutex
	// ram and writes are guarded by mu.
	ram    []byte
	writes []memRange
	// outside counts accesses that were refused for falling outside ram.
	outside int
}

type memRange struct{ gpa, n uint64 }

func newFakeMem(size int) *fakeMem { return &fakeMem{ram: make([]byte, size)} }

func (m *fakeMem) inRange(n int, gpa uint64) bool {
	end := gpa + uint64(n)
	return end >= gpa && end <= uint64(len(m.ram))
}

func (m *fakeMem) ReadAt(p []byte, gpa uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.inRange(len(p), gpa) {
		m.outside++
		return fmt.Errorf("read of %d bytes at %#x: not RAM", len(p), gpa)
	}
	copy(p, m.ram[gpa:])
	return nil
}

func (m *fakeMem) WriteAt(p []byte, gpa uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.inRange(len(p), gpa) {
		m.outside++
		return fmt.Errorf("write of %d bytes at %#x: not RAM", len(p), gpa)
	}
	copy(m.ram[gpa:], p)
	m.writes = append(m.writes, memRange{gpa, uint64(len(p))})
	return nil
}
