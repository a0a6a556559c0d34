package devices

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// busyBlkRig returns a started rig that has served some requests and has an
// unacknowledged interrupt.
func busyBlkRig(t testing.TB) *blkRig {
	r := newBlkRig(t, VirtioBlkConfig{Serial: "vol-1"})
	r.start()
	for i := range 5 {
		status, _ := r.do(rbuf(blkHeader(VIRTIO_BLK_T_IN, uint64(i))), wbuf(512), wbuf(1))
		require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	}
	return r
}

func TestVirtioSaveRestoreContinues(t *testing.T) {
	src := busyBlkRig(t)
	src.m.Quiesce()
	// A request made available after the pause is served on the target.
	head := src.submit(rbuf(blkHeader(VIRTIO_BLK_T_IN, 9)), wbuf(512), wbuf(1))
	require.Empty(t, src.used())
	p, err := src.m.Save(0)
	require.NoError(t, err)
	require.Equal(t, VirtioBlkStateKind, p.Kind)
	require.Equal(t, uint32(1), p.Version)
	_, err = src.m.Save(2)
	require.ErrorIs(t, err, ErrUnknownVersion)

	// The target: same disk, same guest memory (as after RAM migration).
	dst := newBlkRig(t, VirtioBlkConfig{Path: src.path, Serial: "vol-1"})
	dst.mem = src.mem
	dst.m = newVirtioMMIO(dst.m.Base(), dst.blk, src.mem, dst.irq)
	require.NoError(t, dst.m.Restore(p))
	require.True(t, dst.irq.High(), "the unacknowledged interrupt is still pending")
	for _, off := range []uint64{VirtioMMIOStatus, VirtioMMIOInterruptStatus, VirtioMMIOQueueReady, VirtioMMIOConfigGeneration} {
		require.Equal(t, src.rd(off), dst.rd(off), "register %#x", off)
	}
	dst.availIdx, dst.nextDesc, dst.usedSeen, dst.dataNext = src.availIdx, src.nextDesc, src.usedSeen, src.dataNext
	dst.m.Resume()
	require.Equal(t, [][2]uint32{{uint32(head), 513}}, dst.used())

	// And the driver carries on, past the ring's wrap-around.
	for i := range 2 * tQSize {
		status, _ := dst.do(rbuf(blkHeader(VIRTIO_BLK_T_IN, uint64(i%64))), wbuf(512), wbuf(1))
		require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
		dst.dataNext = tData
	}
	dst.wr(VirtioMMIOInterruptACK, 3)
	require.False(t, dst.irq.High())

	// Saving the target gives back what it restored plus its progress.
	p2, err := dst.m.Save(1)
	require.NoError(t, err)
	s, err := decodeVirtioMMIOState(p2.Data, dst.blk, dst.blk.QueueMaxSizes())
	require.NoError(t, err)
	require.Equal(t, uint16(5+1+2*tQSize), s.t.queues[0].lastAvail)
	require.Equal(t, s.t.queues[0].lastAvail, s.t.queues[0].usedIdx)
}

// mutate returns a copy of p changed by f.
func mutate(p Payload, f func(p *Payload)) Payload {
	c := Payload{Kind: p.Kind, Version: p.Version, Data: bytes.Clone(p.Data)}
	f(&c)
	return c
}

// Offsets in a version-1 virtio_blk_mmio payload.
const (
	vsDeviceID  = 0
	vsStatus    = 4
	vsDrvFeat   = 16
	vsIntStatus = 28
	vsNQueues   = 36
	vsQueue0    = 38
	vsConfig    = vsQueue0 + 31
)

func TestVirtioRestoreRejects(t *testing.T) {
	src := busyBlkRig(t)
	good, err := src.m.Save(0)
	require.NoError(t, err)
	require.Len(t, good.Data, vsConfig+13)
	put32 := func(off int, v uint32) func(p *Payload) {
		return func(p *Payload) { binary.LittleEndian.PutUint32(p.Data[off:], v) }
	}
	for _, tc := range []struct {
		name string
		p    Payload
		want error
	}{
		{"kind", mutate(good, func(p *Payload) { p.Kind = UARTStateKind }), ErrUnknownKind},
		{"version", mutate(good, func(p *Payload) { p.Version = 9 }), ErrUnknownVersion},
		{"empty", mutate(good, func(p *Payload) { p.Data = nil }), ErrMalformed},
		{"truncated", mutate(good, func(p *Payload) { p.Data = p.Data[:len(p.Data)-1] }), ErrMalformed},
		{"truncated in queue", mutate(good, func(p *Payload) { p.Data = p.Data[:vsQueue0+5] }), ErrMalformed},
		{"trailing", mutate(good, func(p *Payload) { p.Data = append(p.Data, 1) }), ErrMalformed},
		{"oversized", mutate(good, func(p *Payload) { p.Data = make([]byte, 1<<16) }), ErrTooLarge},
		{"device ID", mutate(good, put32(vsDeviceID, 1)), ErrIncompatible},
		{"status bits", mutate(good, put32(vsStatus, 0x10f)), ErrMalformed},
		{"features not offered", mutate(good, func(p *Payload) { p.Data[vsDrvFeat+3] |= 0x10 }), ErrIncompatible},
		{"FEATURES_OK without VERSION_1", mutate(good, func(p *Payload) { p.Data[vsDrvFeat+4] = 0 }), ErrMalformed},
		{"interrupt bits", mutate(good, put32(vsIntStatus, 4)), ErrMalformed},
		{"queue count", mutate(good, func(p *Payload) { p.Data[vsNQueues] = 2 }), ErrIncompatible},
		{"queue num", mutate(good, func(p *Payload) { binary.LittleEndian.PutUint16(p.Data[vsQueue0:], 512) }), ErrMalformed},
		{"ready bool", mutate(good, func(p *Payload) { p.Data[vsQueue0+2] = 7 }), ErrMalformed},
		{"ready misaligned", mutate(good, func(p *Payload) { p.Data[vsQueue0+3] |= 1 }), ErrMalformed},
		{"ready bad size", mutate(good, func(p *Payload) { binary.LittleEndian.PutUint16(p.Data[vsQueue0:], 3) }), ErrMalformed},
		{"capacity", mutate(good, func(p *Payload) { p.Data[vsConfig]++ }), ErrIncompatible},
		{"block size", mutate(good, func(p *Payload) { p.Data[vsConfig+9]++ }), ErrIncompatible},
		{"read-only", mutate(good, func(p *Payload) { p.Data[vsConfig+12] = 1 }), ErrIncompatible},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := newBlkRig(t, VirtioBlkConfig{Path: src.path})
			dst.start()
			before, err := dst.m.Save(0)
			require.NoError(t, err)
			err = dst.m.Restore(tc.p)
			require.ErrorIs(t, err, tc.want)
			var se *StateError
			require.ErrorAs(t, err, &se)
			after, err := dst.m.Save(0)
			require.NoError(t, err)
			require.Equal(t, before, after, "a failed restore leaves the device unchanged")
		})
	}
	// The good payload is accepted by a device on the same disk.
	dst := newBlkRig(t, VirtioBlkConfig{Path: src.path})
	require.NoError(t, dst.m.Restore(good))
}

// fuzzBlkDevice builds a transport over a small disk for fuzz targets.
func fuzzBlkDevice(t testing.TB, path string, readOnly bool, mem GuestMemory) (*VirtioMMIO, *VirtioBlk) {
	m, b, err := NewVirtioBlkMMIO(VirtioBlkConfig{Path: path, ReadOnly: readOnly, Serial: "fuzz"}, 0, mem, &fakeIRQ{})
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return m, b
}

func FuzzVirtioBlkRestore(f *testing.F) {
	path := tempDisk(f, 64*VirtioBlkSectorSize)
	for _, r := range []*blkRig{newBlkRig(f, VirtioBlkConfig{Path: path}), busyBlkRig(f)} {
		p, err := r.m.Save(0)
		require.NoError(f, err)
		f.Add(p.Data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Guest memory that refuses writes after a budget far above what
		// two bounded notifications can use: a device that loops fails
		// here at once instead of growing the fake's write log for ever
		// (finding b9fd4099342f123a).
		mem := &budgetMem{fakeMem: newFakeMem(tRAMSize), left: 1 << 20}
		m, _ := fuzzBlkDevice(t, path, false, mem)
		before, err := m.Save(0)
		require.NoError(t, err)
		err = m.Restore(Payload{Kind: VirtioBlkStateKind, Version: 1, Data: data})
		after, err2 := m.Save(0)
		require.NoError(t, err2)
		if err != nil {
			require.Equal(t, before, after)
			return
		}
		require.Equal(t, data, after.Data, "an accepted state re-encodes to itself")
		m.Resume()
		m.MMIOWrite(m.Base()+VirtioMMIOQueueNotify, []byte{0, 0, 0, 0})
		require.Positive(t, mem.left, "the device wrote guest memory without bound")
		m.MMIOWrite(m.Base()+VirtioMMIOStatus, []byte{0, 0, 0, 0})
	})
}
