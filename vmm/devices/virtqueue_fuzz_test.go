package devices

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// Layout of the fuzzed queue in its 64 KiB of fake RAM.
const (
	fzRAM   = 64 << 10
	fzDesc  = 0x0000
	fzAvail = 0x1000
	fzUsed  = 0x2000
)

// writableRanges lists the buffers a descriptor table of size entries marks
// device-writable.
func writableRanges(ram []byte, size int) []memRange {
	var out []memRange
	for i := range size {
		d := ram[fzDesc+16*i:]
		if binary.LittleEndian.Uint16(d[12:])&VIRTQ_DESC_F_WRITE != 0 {
			out = append(out, memRange{binary.LittleEndian.Uint64(d), uint64(binary.LittleEndian.Uint32(d[8:]))})
		}
	}
	return out
}

func within(w memRange, rs []memRange) bool {
	for _, r := range rs {
		if w.gpa >= r.gpa && w.gpa+w.n <= r.gpa+r.n && r.gpa+r.n >= r.gpa {
			return true
		}
	}
	return false
}

// fuzzQueueSeed builds a RAM image holding a valid IN request and a valid
// OUT request.
func fuzzQueueSeed() []byte {
	ram := make([]byte, fzUsed)
	desc := func(i int, addr uint64, n uint32, flags, next uint16) {
		d := ram[fzDesc+16*i:]
		binary.LittleEndian.PutUint64(d, addr)
		binary.LittleEndian.PutUint32(d[8:], n)
		binary.LittleEndian.PutUint16(d[12:], flags)
		binary.LittleEndian.PutUint16(d[14:], next)
	}
	desc(0, 0x1800, 16, VIRTQ_DESC_F_NEXT, 1)
	desc(1, 0x3000, 1024, VIRTQ_DESC_F_NEXT|VIRTQ_DESC_F_WRITE, 2)
	desc(2, 0x1810, 1, VIRTQ_DESC_F_WRITE, 0)
	desc(3, 0x1820, 16, VIRTQ_DESC_F_NEXT, 4)
	desc(4, 0x4000, 512, VIRTQ_DESC_F_NEXT, 5)
	desc(5, 0x1830, 1, VIRTQ_DESC_F_WRITE, 0)
	binary.LittleEndian.PutUint32(ram[0x1800:], VIRTIO_BLK_T_IN)
	binary.LittleEndian.PutUint64(ram[0x1808:], 3)
	binary.LittleEndian.PutUint32(ram[0x1820:], VIRTIO_BLK_T_OUT)
	binary.LittleEndian.PutUint64(ram[0x1828:], 7)
	binary.LittleEndian.PutUint16(ram[fzAvail+2:], 2)
	binary.LittleEndian.PutUint16(ram[fzAvail+4:], 0)
	binary.LittleEndian.PutUint16(ram[fzAvail+6:], 3)
	return ram
}

// FuzzVirtqueue drives a virtio-blk queue whose descriptor table, available
// ring and buffers are fuzzer-chosen bytes. The device must not panic, must
// write only to the used ring and to buffers the table marks writable, and
// must leave the device either working or marked as needing a reset.
func FuzzVirtqueue(f *testing.F) {
	f.Add(fuzzQueueSeed(), uint8(4), false, uint16(0))
	f.Add(fuzzQueueSeed(), uint8(3), true, uint16(0))
	f.Add(fuzzQueueSeed(), uint8(8), false, uint16(0xfff0))
	f.Add([]byte{}, uint8(0), true, uint16(1))
	loop := fuzzQueueSeed()
	binary.LittleEndian.PutUint16(loop[fzDesc+16*2+12:], VIRTQ_DESC_F_WRITE|VIRTQ_DESC_F_NEXT)
	f.Add(loop, uint8(4), false, uint16(0))

	path := tempDisk(f, 64*VirtioBlkSectorSize)
	roPath := tempDisk(f, 64*VirtioBlkSectorSize)
	f.Fuzz(func(t *testing.T, image []byte, sizeLog uint8, readOnly bool, startIdx uint16) {
		mem := newFakeMem(fzRAM)
		copy(mem.ram[:fzUsed], image)
		size := 1 << (sizeLog % 9) // 1..256
		p := path
		if readOnly {
			p = roPath
		}
		m, _ := fuzzBlkDevice(t, p, readOnly, mem)
		r := &blkRig{t: t, mem: mem, m: m}
		r.wr(VirtioMMIOStatus, VIRTIO_CONFIG_S_ACKNOWLEDGE|VIRTIO_CONFIG_S_DRIVER)
		r.setDriverFeatures(r.features())
		r.wr(VirtioMMIOStatus, VIRTIO_CONFIG_S_ACKNOWLEDGE|VIRTIO_CONFIG_S_DRIVER|VIRTIO_CONFIG_S_FEATURES_OK)
		r.wr(VirtioMMIOQueueNum, uint32(size))
		r.wr(VirtioMMIOQueueDescLow, fzDesc)
		r.wr(VirtioMMIOQueueDriverLow, fzAvail)
		r.wr(VirtioMMIOQueueDeviceLow, fzUsed)
		r.wr(VirtioMMIOQueueReady, 1)
		require.Equal(t, uint32(1), r.rd(VirtioMMIOQueueReady))
		r.wr(VirtioMMIOStatus, VIRTIO_CONFIG_S_ACKNOWLEDGE|VIRTIO_CONFIG_S_DRIVER|VIRTIO_CONFIG_S_FEATURES_OK|VIRTIO_CONFIG_S_DRIVER_OK)
		if startIdx != 0 {
			// Start from an arbitrary ring position, as after a migration.
			st, err := m.Save(0)
			require.NoError(t, err)
			binary.LittleEndian.PutUint16(st.Data[vsQueue0+27:], startIdx)
			binary.LittleEndian.PutUint16(st.Data[vsQueue0+29:], startIdx)
			require.NoError(t, m.Restore(st))
		}
		allowed := writableRanges(mem.ram, size)
		r.wr(VirtioMMIOQueueNotify, 0)
		r.wr(VirtioMMIOQueueNotify, 0)
		allowed = append(allowed, writableRanges(mem.ram, size)...)
		allowed = append(allowed, memRange{fzUsed, 4 + 8*uint64(size) + 2})

		for _, w := range mem.writes {
			require.LessOrEqual(t, w.gpa+w.n, uint64(fzRAM))
			require.True(t, within(w, allowed), "write of %d bytes at %#x is outside the used ring and writable buffers", w.n, w.gpa)
		}
		status := r.rd(VirtioMMIOStatus)
		if status&VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET != 0 {
			require.Error(t, m.Err())
		} else {
			require.NoError(t, m.Err())
		}
		// A reset always brings the device back to a clean state.
		r.wr(VirtioMMIOStatus, 0)
		require.Zero(t, r.rd(VirtioMMIOStatus))
		require.Zero(t, r.rd(VirtioMMIOInterruptStatus))
	})
}
