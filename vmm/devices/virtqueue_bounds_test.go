package devices

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// producerMem is guest RAM with a second "vCPU" in it: every time the
// device reads the available index, produce runs first (and may make one
// more chain available), as a driver on another vCPU would while the device
// serves the notifying one.
type producerMem struct {
	*fakeMem
	produce func()
}

func (p *producerMem) ReadAt(b []byte, gpa uint64) error {
	if len(b) == 2 && gpa == tAvail+2 && p.produce != nil {
		p.produce()
	}
	return p.fakeMem.ReadAt(b, gpa)
}

// TestVirtioNotifyServesAtMostAQueueful has the guest keep making requests
// available while the device serves one notification: the notification
// returns after at most a queueful, the device stays healthy, and the next
// notification serves what is left.
func TestVirtioNotifyServesAtMostAQueueful(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	pm := &producerMem{fakeMem: r.mem}
	r.m = newVirtioMMIO(r.m.Base(), r.blk, pm, r.irq)
	r.start()
	// One FLUSH chain in descriptors 0 and 1, offered again and again (the
	// device uses each before it reads the index for the next).
	r.ramWrite(tData, blkHeader(VIRTIO_BLK_T_FLUSH, 0))
	r.writeDesc(0, tData, virtioBlkHeaderLen, VIRTQ_DESC_F_NEXT, 1)
	r.writeDesc(1, tData+virtioBlkHeaderLen, 1, VIRTQ_DESC_F_WRITE, 0)
	// The producer stops after many queuefuls so that a device without the
	// bound still returns, and fails the test instead of hanging it.
	const limit = 10 * tQSize
	produced := 0
	pm.produce = func() {
		if produced < limit {
			produced++
			r.offer(0)
		}
	}
	r.offer(0)
	r.wr(VirtioMMIOQueueNotify, 0)
	require.NoError(t, r.m.Err())
	require.Zero(t, r.rd(VirtioMMIOStatus)&VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET)
	usedIdx := r.get16(tUsed + 2)
	require.LessOrEqual(t, int(usedIdx), tQSize, "one notification served more than a queueful")
	require.Positive(t, usedIdx)

	// The driver stops; its last notification serves the rest.
	pm.produce = nil
	r.wr(VirtioMMIOQueueNotify, 0)
	require.NoError(t, r.m.Err())
	require.Equal(t, r.availIdx, r.get16(tUsed+2), "every chain made available is used")
}

// TestVirtioAvailAheadOfUsed: an available index more than a queueful ahead
// of the used index is a broken queue, even when it is within a queueful of
// the last chain taken.
func TestVirtioAvailAheadOfUsed(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	r.start()
	r.m.mu.Lock()
	r.m.t.queues[0].lastAvail = 4
	r.m.t.queues[0].usedIdx = 0
	r.m.mu.Unlock()
	r.put16(tAvail+2, 4+tQSize)
	r.wr(VirtioMMIOQueueNotify, 0)
	require.ErrorIs(t, r.m.Err(), errQueue)
	require.NotZero(t, r.rd(VirtioMMIOStatus)&VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET)
	require.Zero(t, r.get16(tUsed+2), "nothing used")
}

// TestVirtioBlkLongRequest: a request whose buffers add up to more than
// VirtioBlkMaxRequest fails with IOERR without touching the disk or guest
// memory beyond its status byte.
func TestVirtioBlkLongRequest(t *testing.T) {
	// A sparse disk larger than the longest request, so that only the
	// bound (not the disk's end) refuses it.
	path := filepath.Join(t.TempDir(), "big.img")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	require.NoError(t, os.Truncate(path, 4*VirtioBlkMaxRequest))
	r := newBlkRig(t, VirtioBlkConfig{Path: path})
	r.start()
	pattern := make([]byte, 4096)
	for i := range pattern {
		pattern[i] = 0xa5
	}
	r.ramWrite(tData+0x100, pattern)
	for _, typ := range []uint32{VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT} {
		hdrAt := uint64(tData)
		r.ramWrite(hdrAt, blkHeader(typ, 0))
		flags := uint16(VIRTQ_DESC_F_NEXT)
		if typ == VIRTIO_BLK_T_IN {
			flags |= VIRTQ_DESC_F_WRITE
		}
		// Two data descriptors of half the limit plus a sector each.
		half := uint32(VirtioBlkMaxRequest/2 + VirtioBlkSectorSize)
		r.writeDesc(0, hdrAt, virtioBlkHeaderLen, VIRTQ_DESC_F_NEXT, 1)
		r.writeDesc(1, tData+0x100, half, flags, 2)
		r.writeDesc(2, tData+0x100, half, flags, 3)
		r.writeDesc(3, tData+0x80, 1, VIRTQ_DESC_F_WRITE, 0)
		r.mem.mu.Lock()
		before := len(r.mem.writes)
		r.mem.mu.Unlock()
		r.offer(0)
		r.wr(VirtioMMIOQueueNotify, 0)
		u := r.used()
		require.Len(t, u, 1)
		require.Equal(t, uint32(1), u[0][1], "only the status byte is written")
		require.Equal(t, byte(VIRTIO_BLK_S_IOERR), r.ramRead(tData+0x80, 1)[0])
		r.mem.mu.Lock()
		for _, w := range r.mem.writes[before:] {
			inUsed := w.gpa >= tUsed && w.gpa+w.n <= tUsed+0x1000
			require.True(t, inUsed || w == memRange{tData + 0x80, 1}, "type %d: write of %d bytes at %#x", typ, w.n, w.gpa)
		}
		r.mem.mu.Unlock()
	}
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	disk := make([]byte, len(pattern))
	_, err = f.ReadAt(disk, 0)
	require.NoError(t, err)
	require.Equal(t, make([]byte, len(pattern)), disk, "the refused OUT wrote nothing")
}

// budgetMem is guest RAM that refuses every write after a budget: a device
// that loops without end over it ends with a queue error instead of
// growing the fake's write log for ever.
type budgetMem struct {
	*fakeMem
	left int
}

func (b *budgetMem) WriteAt(p []byte, gpa uint64) error {
	if b.left <= 0 {
		return fmt.Errorf("write budget spent")
	}
	b.left--
	return b.fakeMem.WriteAt(p, gpa)
}

// readFuzzFinding returns the bytes of a corpus file in the go test fuzz v1
// format holding one []byte.
func readFuzzFinding(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err, "the fuzz finding stays in the corpus")
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.Len(t, lines, 2)
	require.Equal(t, "go test fuzz v1", lines[0])
	lit, ok := strings.CutPrefix(lines[1], "[]byte(")
	require.True(t, ok)
	lit, ok = strings.CutSuffix(lit, ")")
	require.True(t, ok)
	s, err := strconv.Unquote(lit)
	require.NoError(t, err)
	return []byte(s)
}

// TestVirtioBlkFuzzFindingB9fd covers what FuzzVirtioBlkRestore found: a
// state whose three rings lie on one another, with the last available index
// behind the used index, so that each used-index write moved the available
// index on and one notification served for ever. The state is refused; and
// a queue in that shape (forced in, as if another path led there) still
// ends its notification at once, as a broken queue.
func TestVirtioBlkFuzzFindingB9fd(t *testing.T) {
	data := readFuzzFinding(t, filepath.Join("testdata", "fuzz", "FuzzVirtioBlkRestore", "b9fd4099342f123a"))
	path := tempDisk(t, 64*VirtioBlkSectorSize)

	m, _ := fuzzBlkDevice(t, path, false, newFakeMem(tRAMSize))
	err := m.Restore(Payload{Kind: VirtioBlkStateKind, Version: 1, Data: data})
	require.ErrorIs(t, err, ErrMalformed)
	require.ErrorContains(t, err, "ahead of used index")

	s, err := decodeVirtioMMIOState(data, m.dev, m.maxima)
	require.Error(t, err)
	q := s.t.queues[0]
	require.Equal(t, q.desc, q.driver, "the finding's rings overlap")
	require.Equal(t, q.driver, q.device)

	bm := &budgetMem{fakeMem: newFakeMem(tRAMSize), left: 100 * int(q.num)}
	m, _ = fuzzBlkDevice(t, path, false, bm)
	m.mu.Lock()
	m.t = s.t
	m.mu.Unlock()
	m.Resume()
	m.MMIOWrite(m.Base()+VirtioMMIOQueueNotify, []byte{0, 0, 0, 0})
	// The used index ahead of the last available one makes the first
	// notification a broken queue; whatever the device decides, it must
	// not have run until its write budget was spent.
	if err := m.Err(); err != nil {
		require.ErrorIs(t, err, errQueue)
		require.NotContains(t, err.Error(), "budget", "the device looped until its writes were refused")
	}
	m.mu.Lock()
	served := m.t.queues[0].usedIdx - q.usedIdx
	m.mu.Unlock()
	require.LessOrEqual(t, int(served), 2*int(q.num), "two notifications (Resume and QueueNotify) serve at most a queueful each")
}
