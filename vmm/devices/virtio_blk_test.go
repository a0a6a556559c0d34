package devices

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

// Where the test driver puts things in its fake guest RAM.
const (
	tDesc    = 0x1000
	tAvail   = 0x3000
	tUsed    = 0x4000
	tData    = 0x10000
	tRAMSize = 1 << 20
	tQSize   = 16
)

// blkRig is a virtio-blk device on a temp file, driven by a minimal driver.
type blkRig struct {
	t    testing.TB
	path string
	mem  *fakeMem
	irq  *fakeIRQ
	m    *VirtioMMIO
	blk  *VirtioBlk
	// the driver's ring state
	availIdx uint16
	nextDesc uint16
	usedSeen uint16
	dataNext uint64
}

func tempDisk(t testing.TB, size int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i / VirtioBlkSectorSize)
	}
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

func newBlkRig(t testing.TB, cfg VirtioBlkConfig) *blkRig {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = tempDisk(t, 64*VirtioBlkSectorSize)
	}
	r := &blkRig{t: t, path: cfg.Path, mem: newFakeMem(tRAMSize), irq: &fakeIRQ{}}
	m, b, err := NewVirtioBlkMMIO(cfg, 3, r.mem, r.irq)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	r.m, r.blk = m, b
	require.Equal(t, uint64(0xD0003000), m.Base())
	require.Equal(t, uint32(19), VirtioMMIOSlotGSI(3))
	return r
}

func (r *blkRig) rd(off uint64) uint32 {
	var b [4]byte
	r.m.MMIORead(r.m.Base()+off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (r *blkRig) wr(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.m.MMIOWrite(r.m.Base()+off, b[:])
}

// features returns the 64 device feature bits.
func (r *blkRig) features() uint64 {
	r.wr(VirtioMMIODeviceFeaturesSel, 0)
	lo := r.rd(VirtioMMIODeviceFeatures)
	r.wr(VirtioMMIODeviceFeaturesSel, 1)
	hi := r.rd(VirtioMMIODeviceFeatures)
	return uint64(hi)<<32 | uint64(lo)
}

func (r *blkRig) setDriverFeatures(f uint64) {
	r.wr(VirtioMMIODriverFeaturesSel, 0)
	r.wr(VirtioMMIODriverFeatures, uint32(f))
	r.wr(VirtioMMIODriverFeaturesSel, 1)
	r.wr(VirtioMMIODriverFeatures, uint32(f>>32))
}

// start runs driver initialization with all offered features.
func (r *blkRig) start() {
	r.t.Helper()
	r.wr(VirtioMMIOStatus, 0)
	r.wr(VirtioMMIOStatus, VIRTIO_CONFIG_S_ACKNOWLEDGE)
	r.wr(VirtioMMIOStatus, VIRTIO_CONFIG_S_ACKNOWLEDGE|VIRTIO_CONFIG_S_DRIVER)
	r.setDriverFeatures(r.features())
	s := uint32(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)
	r.wr(VirtioMMIOStatus, s)
	require.Equal(r.t, s, r.rd(VirtioMMIOStatus))
	r.wr(VirtioMMIOQueueSel, 0)
	require.Equal(r.t, uint32(VirtioBlkQueueSize), r.rd(VirtioMMIOQueueNumMax))
	r.wr(VirtioMMIOQueueNum, tQSize)
	r.wr(VirtioMMIOQueueDescLow, tDesc)
	r.wr(VirtioMMIOQueueDescHigh, 0)
	r.wr(VirtioMMIOQueueDriverLow, tAvail)
	r.wr(VirtioMMIOQueueDriverHigh, 0)
	r.wr(VirtioMMIOQueueDeviceLow, tUsed)
	r.wr(VirtioMMIOQueueDeviceHigh, 0)
	r.wr(VirtioMMIOQueueReady, 1)
	require.Equal(r.t, uint32(1), r.rd(VirtioMMIOQueueReady))
	r.wr(VirtioMMIOStatus, s|VIRTIO_CONFIG_S_DRIVER_OK)
	r.ramWrite(tAvail, make([]byte, tUsed+0x1000-tAvail))
	r.availIdx, r.nextDesc, r.usedSeen, r.dataNext = 0, 0, 0, tData
}

// ramWrite and ramRead are the driver's accesses to guest RAM; they take
// the fake's lock because the device may run on another goroutine.
func (r *blkRig) ramWrite(gpa uint64, b []byte) {
	r.mem.mu.Lock()
	defer r.mem.mu.Unlock()
	copy(r.mem.ram[gpa:], b)
}

func (r *blkRig) ramRead(gpa uint64, n int) []byte {
	r.mem.mu.Lock()
	defer r.mem.mu.Unlock()
	return bytes.Clone(r.mem.ram[gpa : gpa+uint64(n)])
}

func (r *blkRig) put16(gpa uint64, v uint16) {
	r.ramWrite(gpa, binary.LittleEndian.AppendUint16(nil, v))
}
func (r *blkRig) get16(gpa uint64) uint16 { return binary.LittleEndian.Uint16(r.ramRead(gpa, 2)) }

// buf is one buffer of a request: bytes to place in guest RAM, or (write)
// room for the device to write n bytes.
type buf struct {
	data  []byte
	write bool
	gpa   uint64 // set by submit
}

func rbuf(b []byte) *buf { return &buf{data: b} }
func wbuf(n int) *buf    { return &buf{data: make([]byte, n), write: true} }
func (b *buf) len() int  { return len(b.data) }
func blkHeader(typ uint32, sector uint64) []byte {
	h := make([]byte, virtioBlkHeaderLen)
	binary.LittleEndian.PutUint32(h, typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	return h
}

// writeDesc writes descriptor i.
func (r *blkRig) writeDesc(i uint16, addr uint64, n uint32, flags, next uint16) {
	d := make([]byte, 16)
	defer r.ramWrite(tDesc+uint64(i)*16, d)
	binary.LittleEndian.PutUint64(d, addr)
	binary.LittleEndian.PutUint32(d[8:], n)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

// offer makes head available (without notifying).
func (r *blkRig) offer(head uint16) {
	r.put16(tAvail+4+2*uint64(r.availIdx%tQSize), head)
	r.availIdx++
	r.put16(tAvail+2, r.availIdx)
}

// submit places a chain of buffers, makes it available and notifies; it
// returns the head.
func (r *blkRig) submit(bufs ...*buf) uint16 {
	head := r.nextDesc
	for i, b := range bufs {
		b.gpa = r.dataNext
		r.dataNext += uint64(len(b.data)+15) &^ 15
		r.ramWrite(b.gpa, b.data)
		idx := r.nextDesc % tQSize
		r.nextDesc++
		var flags uint16
		if b.write {
			flags |= VIRTQ_DESC_F_WRITE
		}
		if i < len(bufs)-1 {
			flags |= VIRTQ_DESC_F_NEXT
		}
		r.writeDesc(idx, b.gpa, uint32(len(b.data)), flags, r.nextDesc%tQSize)
	}
	r.offer(head % tQSize)
	r.wr(VirtioMMIOQueueNotify, 0)
	return head % tQSize
}

// used returns the used ring entries the driver has not seen yet.
func (r *blkRig) used() [][2]uint32 {
	var out [][2]uint32
	idx := r.get16(tUsed + 2)
	for ; r.usedSeen != idx; r.usedSeen++ {
		e := r.ramRead(tUsed+4+8*uint64(r.usedSeen%tQSize), 8)
		out = append(out, [2]uint32{binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])})
	}
	return out
}

// fill refreshes b.data from guest RAM.
func (r *blkRig) fill(b *buf) []byte {
	copy(b.data, r.ramRead(b.gpa, len(b.data)))
	return b.data
}

// do submits a request, checks that it was used, and returns its status.
func (r *blkRig) do(bufs ...*buf) (status byte, usedLen uint32) {
	r.t.Helper()
	head := r.submit(bufs...)
	u := r.used()
	require.Len(r.t, u, 1)
	require.Equal(r.t, uint32(head), u[0][0])
	st := bufs[len(bufs)-1]
	return r.fill(st)[st.len()-1], u[0][1]
}

func sectorPattern(sector, n int) []byte {
	b := make([]byte, n*VirtioBlkSectorSize)
	for i := range b {
		b[i] = byte(sector + i/VirtioBlkSectorSize)
	}
	return b
}

func TestVirtioMMIORegisters(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	require.Equal(t, uint32(0x74726976), r.rd(VirtioMMIOMagicValue))
	require.Equal(t, uint32(2), r.rd(VirtioMMIOVersion))
	require.Equal(t, uint32(2), r.rd(VirtioMMIODeviceID))
	require.Equal(t, uint32(VirtioVendorID), r.rd(VirtioMMIOVendorID))
	f := r.features()
	require.Equal(t, uint64(1<<VIRTIO_F_VERSION_1|1<<VIRTIO_BLK_F_FLUSH|1<<VIRTIO_BLK_F_SEG_MAX), f)
	r.wr(VirtioMMIODeviceFeaturesSel, 2)
	require.Zero(t, r.rd(VirtioMMIODeviceFeatures))

	// Config space: capacity in sectors, any width.
	var b8 [8]byte
	r.m.MMIORead(r.m.Base()+VirtioMMIOConfig, b8[:])
	require.Equal(t, uint64(64), binary.LittleEndian.Uint64(b8[:]))
	var b1 [1]byte
	r.m.MMIORead(r.m.Base()+VirtioMMIOConfig, b1[:])
	require.Equal(t, byte(64), b1[0])
	require.Equal(t, uint32(VirtioBlkQueueSize-2), r.rd(VirtioMMIOConfig+virtioBlkCfgSegMax))
	require.Zero(t, r.rd(VirtioMMIOConfig+virtioBlkCfgBlkSize), "no blk_size for 512-byte blocks")
	require.Zero(t, r.rd(VirtioMMIOConfig+0x200))
	require.Zero(t, r.rd(VirtioMMIOConfigGeneration))

	// Registers are 32 bits wide; other accesses read 0 and write nothing.
	var b2 [2]byte
	r.m.MMIORead(r.m.Base()+VirtioMMIOMagicValue, b2[:])
	require.Equal(t, [2]byte{}, b2)
	r.m.MMIOWrite(r.m.Base()+VirtioMMIOStatus, []byte{1})
	require.Zero(t, r.rd(VirtioMMIOStatus))
	r.m.MMIORead(r.m.Base()+VirtioMMIOMagicValue+1, make([]byte, 4))
	r.m.MMIORead(r.m.Base()-4, make([]byte, 4))
	r.m.MMIORead(r.m.Base()+VirtioMMIOSlotSize, make([]byte, 4))
	r.m.MMIOWrite(r.m.Base()+VirtioMMIOSlotSize, make([]byte, 4))
	r.m.MMIORead(r.m.Base(), make([]byte, 16))

	// A queue that does not exist.
	r.wr(VirtioMMIOQueueSel, 1)
	require.Zero(t, r.rd(VirtioMMIOQueueNumMax))
	r.wr(VirtioMMIOQueueReady, 1)
	require.Zero(t, r.rd(VirtioMMIOQueueReady))
	r.wr(VirtioMMIOQueueNotify, 7)
}

func TestVirtioBlkBlockSize(t *testing.T) {
	path := tempDisk(t, 8*4096+100)
	r := newBlkRig(t, VirtioBlkConfig{Path: path, BlockSize: 4096, ReadOnly: true})
	f := r.features()
	require.NotZero(t, f&(1<<VIRTIO_BLK_F_BLK_SIZE))
	require.NotZero(t, f&(1<<VIRTIO_BLK_F_RO))
	require.Equal(t, uint32(4096), r.rd(VirtioMMIOConfig+virtioBlkCfgBlkSize))
	require.Equal(t, uint64(64), r.blk.Capacity(), "capacity rounds down to whole sectors")
}

func TestVirtioFeatureNegotiation(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	base := uint32(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER)
	for _, tc := range []struct {
		name string
		f    uint64
		ok   bool
	}{
		{"no VERSION_1", 1 << VIRTIO_BLK_F_FLUSH, false},
		{"not offered", 1<<VIRTIO_F_VERSION_1 | 1<<VIRTIO_F_RING_INDIRECT_DESC, false},
		{"not offered RO", 1<<VIRTIO_F_VERSION_1 | 1<<VIRTIO_BLK_F_RO, false},
		{"VERSION_1 only", 1 << VIRTIO_F_VERSION_1, true},
	} {
		r.wr(VirtioMMIOStatus, 0)
		r.wr(VirtioMMIOStatus, base)
		r.setDriverFeatures(tc.f)
		r.wr(VirtioMMIOStatus, base|VIRTIO_CONFIG_S_FEATURES_OK)
		got := r.rd(VirtioMMIOStatus)&VIRTIO_CONFIG_S_FEATURES_OK != 0
		require.Equal(t, tc.ok, got, tc.name)
	}
	// Features are fixed once FEATURES_OK is set.
	r.setDriverFeatures(1<<VIRTIO_F_VERSION_1 | 1<<VIRTIO_BLK_F_FLUSH)
	p, err := r.m.Save(0)
	require.NoError(t, err)
	s, err := decodeVirtioMMIOState(p.Data, r.blk, r.blk.QueueMaxSizes())
	require.NoError(t, err)
	require.Equal(t, uint64(1<<VIRTIO_F_VERSION_1), s.t.driverFeatures)
	// The driver cannot set DEVICE_NEEDS_RESET itself.
	r.wr(VirtioMMIOStatus, base|VIRTIO_CONFIG_S_FEATURES_OK|VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET)
	require.Zero(t, r.rd(VirtioMMIOStatus)&VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET)
}

func TestVirtioQueueReadyChecks(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	for _, tc := range []struct {
		name              string
		num               uint32
		desc, avail, used uint32
	}{
		{"size 0", 0, tDesc, tAvail, tUsed},
		{"size 3", 3, tDesc, tAvail, tUsed},
		{"size above max", 512, tDesc, tAvail, tUsed},
		{"desc alignment", 16, tDesc + 8, tAvail, tUsed},
		{"avail alignment", 16, tDesc, tAvail + 1, tUsed},
		{"used alignment", 16, tDesc, tAvail, tUsed + 2},
	} {
		r.wr(VirtioMMIOStatus, 0)
		r.wr(VirtioMMIOQueueNum, tc.num)
		r.wr(VirtioMMIOQueueDescLow, tc.desc)
		r.wr(VirtioMMIOQueueDriverLow, tc.avail)
		r.wr(VirtioMMIOQueueDeviceLow, tc.used)
		r.wr(VirtioMMIOQueueReady, 1)
		require.Zero(t, r.rd(VirtioMMIOQueueReady), tc.name)
	}
	// Wrapping addresses.
	r.wr(VirtioMMIOStatus, 0)
	r.wr(VirtioMMIOQueueDescLow, 0xfffffff0)
	r.wr(VirtioMMIOQueueDescHigh, 0xffffffff)
	r.wr(VirtioMMIOQueueReady, 1)
	require.Zero(t, r.rd(VirtioMMIOQueueReady))

	// A ready queue's registers are frozen until it is made not ready.
	r.start()
	r.wr(VirtioMMIOQueueDescLow, 0x8000)
	r.wr(VirtioMMIOQueueNum, 4)
	p, err := r.m.Save(0)
	require.NoError(t, err)
	s, err := decodeVirtioMMIOState(p.Data, r.blk, r.blk.QueueMaxSizes())
	require.NoError(t, err)
	require.Equal(t, uint64(tDesc), s.t.queues[0].desc)
	require.Equal(t, uint16(tQSize), s.t.queues[0].num)
	r.wr(VirtioMMIOQueueReady, 0)
	require.Zero(t, r.rd(VirtioMMIOQueueReady))
	r.wr(VirtioMMIOQueueNum, 4)
	r.wr(VirtioMMIOQueueReady, 1)
	require.Equal(t, uint32(1), r.rd(VirtioMMIOQueueReady))
}

func TestVirtioBlkReadWrite(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{Serial: "disk-0123456789abcdefXYZ"})
	r.start()

	// Read sectors 2..3 in one buffer.
	data, st := wbuf(2*VirtioBlkSectorSize), wbuf(1)
	status, n := r.do(rbuf(blkHeader(VIRTIO_BLK_T_IN, 2)), data, st)
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	require.Equal(t, uint32(2*VirtioBlkSectorSize+1), n)
	require.Equal(t, sectorPattern(2, 2), r.fill(data))
	require.True(t, r.irq.High())
	require.Equal(t, uint32(VIRTIO_MMIO_INT_VRING), r.rd(VirtioMMIOInterruptStatus))
	r.wr(VirtioMMIOInterruptACK, VIRTIO_MMIO_INT_VRING)
	require.False(t, r.irq.High())
	require.Zero(t, r.rd(VirtioMMIOInterruptStatus))

	// Write sector 5 from two buffers, with the header split in two and the
	// status byte sharing nothing.
	payload := bytes.Repeat([]byte{0xab}, VirtioBlkSectorSize)
	h := blkHeader(VIRTIO_BLK_T_OUT, 5)
	status, n = r.do(rbuf(h[:3]), rbuf(h[3:]), rbuf(payload[:100]), rbuf(payload[100:]), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	require.Equal(t, uint32(1), n)
	disk, err := os.ReadFile(r.path)
	require.NoError(t, err)
	require.Equal(t, payload, disk[5*VirtioBlkSectorSize:6*VirtioBlkSectorSize])
	require.Equal(t, sectorPattern(4, 1), disk[4*VirtioBlkSectorSize:5*VirtioBlkSectorSize])

	// Header and data in one buffer, as some drivers send them.
	one := append(blkHeader(VIRTIO_BLK_T_OUT, 6), payload...)
	status, _ = r.do(rbuf(one[:20]), rbuf(one[20:]), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	disk, err = os.ReadFile(r.path)
	require.NoError(t, err)
	require.Equal(t, payload, disk[6*VirtioBlkSectorSize:7*VirtioBlkSectorSize])

	// Read it back scattered over three buffers, the last holding the status.
	d1, d2, last := wbuf(10), wbuf(VirtioBlkSectorSize-20), wbuf(11)
	status, n = r.do(rbuf(blkHeader(VIRTIO_BLK_T_IN, 5)), d1, d2, last)
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	require.Equal(t, uint32(VirtioBlkSectorSize+1), n)
	got := append(append(r.fill(d1), r.fill(d2)...), r.fill(last)[:10]...)
	require.Equal(t, payload, got)

	// Flush, GET_ID, and an unsupported request.
	status, _ = r.do(rbuf(blkHeader(VIRTIO_BLK_T_FLUSH, 0)), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	id := wbuf(VIRTIO_BLK_ID_BYTES + 1)
	status, n = r.do(rbuf(blkHeader(VIRTIO_BLK_T_GET_ID, 0)), id)
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	require.Equal(t, uint32(VIRTIO_BLK_ID_BYTES+1), n)
	require.Equal(t, "disk-0123456789abcde", string(r.fill(id)[:VIRTIO_BLK_ID_BYTES]))
	status, _ = r.do(rbuf(blkHeader(11 /* DISCARD */, 0)), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_UNSUPP), status)

	// Last sector is fine, one past it is not; neither are partial sectors.
	status, _ = r.do(rbuf(blkHeader(VIRTIO_BLK_T_IN, 63)), wbuf(VirtioBlkSectorSize), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	for _, tc := range []struct {
		sector uint64
		n      int
	}{{64, 512}, {63, 1024}, {1 << 60, 512}, {^uint64(0), 512}, {0, 100}} {
		status, _ = r.do(rbuf(blkHeader(VIRTIO_BLK_T_IN, tc.sector)), wbuf(tc.n), wbuf(1))
		require.Equal(t, byte(VIRTIO_BLK_S_IOERR), status, "read %d bytes at sector %d", tc.n, tc.sector)
		status, _ = r.do(rbuf(blkHeader(VIRTIO_BLK_T_OUT, tc.sector)), rbuf(make([]byte, tc.n)), wbuf(1))
		require.Equal(t, byte(VIRTIO_BLK_S_IOERR), status, "write %d bytes at sector %d", tc.n, tc.sector)
	}
	// A short header.
	status, _ = r.do(rbuf(make([]byte, 8)), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_IOERR), status)
	// No status byte: used, with nothing written.
	head := r.submit(rbuf(blkHeader(VIRTIO_BLK_T_FLUSH, 0)))
	require.Equal(t, [][2]uint32{{uint32(head), 0}}, r.used())
	require.Zero(t, r.rd(VirtioMMIOStatus)&VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET)
}

func TestVirtioBlkBadBuffers(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	r.start()
	// A data buffer outside guest RAM: IOERR, and nothing written outside.
	head := r.nextDesc
	hdr, st := rbuf(blkHeader(VIRTIO_BLK_T_IN, 0)), wbuf(1)
	r.submit(hdr, wbuf(512), st) // placed normally, then redirected:
	r.writeDesc(head+1, tRAMSize-256, 512, VIRTQ_DESC_F_WRITE|VIRTQ_DESC_F_NEXT, head+2)
	r.usedSeen = r.get16(tUsed + 2)
	r.offer(head)
	r.wr(VirtioMMIOQueueNotify, 0)
	require.Len(t, r.used(), 1)
	require.Equal(t, byte(VIRTIO_BLK_S_IOERR), r.fill(st)[0])
	require.Zero(t, r.rd(VirtioMMIOStatus)&VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET)

	// A huge readable buffer is refused by the range check, not allocated.
	head = r.nextDesc
	r.submit(rbuf(blkHeader(VIRTIO_BLK_T_OUT, 0)), rbuf(make([]byte, 512)), wbuf(1))
	r.writeDesc(head+1, tData, 0xfffffe00, VIRTQ_DESC_F_NEXT, head+2)
	r.used()
	r.offer(head)
	r.wr(VirtioMMIOQueueNotify, 0)
	require.Len(t, r.used(), 1)
	require.Equal(t, byte(VIRTIO_BLK_S_IOERR), r.ramRead(r.dataNext-16, 1)[0])
}

func TestVirtioBlkReadOnly(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{ReadOnly: true})
	r.start()
	before, err := os.ReadFile(r.path)
	require.NoError(t, err)
	status, _ := r.do(rbuf(blkHeader(VIRTIO_BLK_T_OUT, 0)), rbuf(make([]byte, 512)), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_IOERR), status)
	after, err := os.ReadFile(r.path)
	require.NoError(t, err)
	require.Equal(t, before, after)
	status, _ = r.do(rbuf(blkHeader(VIRTIO_BLK_T_IN, 1)), wbuf(512), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	status, _ = r.do(rbuf(blkHeader(VIRTIO_BLK_T_FLUSH, 0)), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
}

func TestVirtioBlkNoInterrupt(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	r.start()
	r.put16(tAvail, VIRTQ_AVAIL_F_NO_INTERRUPT)
	status, _ := r.do(rbuf(blkHeader(VIRTIO_BLK_T_FLUSH, 0)), wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	require.False(t, r.irq.High())
	require.Zero(t, r.rd(VirtioMMIOInterruptStatus))
}

func TestVirtioBrokenQueues(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(r *blkRig)
	}{
		{"head out of range", func(r *blkRig) { r.offer(tQSize) }},
		{"avail index too far ahead", func(r *blkRig) { r.put16(tAvail+2, tQSize+1) }},
		{"loop", func(r *blkRig) {
			r.writeDesc(0, tData, 16, VIRTQ_DESC_F_NEXT, 1)
			r.writeDesc(1, tData, 16, VIRTQ_DESC_F_NEXT, 0)
			r.offer(0)
		}},
		{"self loop", func(r *blkRig) {
			r.writeDesc(0, tData, 16, VIRTQ_DESC_F_NEXT, 0)
			r.offer(0)
		}},
		{"next out of range", func(r *blkRig) {
			r.writeDesc(0, tData, 16, VIRTQ_DESC_F_NEXT, 0xffff)
			r.offer(0)
		}},
		{"indirect", func(r *blkRig) {
			r.writeDesc(0, tData, 16, VIRTQ_DESC_F_INDIRECT, 0)
			r.offer(0)
		}},
		{"readable after writable", func(r *blkRig) {
			r.writeDesc(0, tData, 1, VIRTQ_DESC_F_WRITE|VIRTQ_DESC_F_NEXT, 1)
			r.writeDesc(1, tData, 16, 0, 0)
			r.offer(0)
		}},
		{"wrapping buffer", func(r *blkRig) {
			r.writeDesc(0, 0xffffffffffffff00, 0x1000, 0, 0)
			r.offer(0)
		}},
		{"rings outside RAM", func(r *blkRig) {
			r.wr(VirtioMMIOStatus, 0)
			r.wr(VirtioMMIOQueueNum, tQSize)
			r.wr(VirtioMMIOQueueDescLow, tDesc)
			r.wr(VirtioMMIOQueueDriverLow, tRAMSize)
			r.wr(VirtioMMIOQueueDeviceLow, tUsed)
			r.wr(VirtioMMIOQueueReady, 1)
			r.wr(VirtioMMIOStatus, VIRTIO_CONFIG_S_DRIVER_OK|VIRTIO_CONFIG_S_FEATURES_OK)
		}},
		{"used ring outside RAM", func(r *blkRig) {
			r.wr(VirtioMMIOStatus, 0)
			r.wr(VirtioMMIOQueueNum, tQSize)
			r.wr(VirtioMMIOQueueDescLow, tDesc)
			r.wr(VirtioMMIOQueueDriverLow, tAvail)
			r.wr(VirtioMMIOQueueDeviceLow, tRAMSize-8)
			r.wr(VirtioMMIOQueueReady, 1)
			r.wr(VirtioMMIOStatus, VIRTIO_CONFIG_S_DRIVER_OK|VIRTIO_CONFIG_S_FEATURES_OK)
			r.writeDesc(0, tData, 16, 0, 0)
			r.offer(0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newBlkRig(t, VirtioBlkConfig{})
			r.start()
			tc.setup(r)
			r.wr(VirtioMMIOQueueNotify, 0)
			require.NotZero(t, r.rd(VirtioMMIOStatus)&VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET)
			require.ErrorIs(t, r.m.Err(), errQueue)
			require.NotZero(t, r.rd(VirtioMMIOInterruptStatus)&VIRTIO_MMIO_INT_CONFIG)
			require.True(t, r.irq.High())
			require.Zero(t, r.mem.writesOutside(tUsed, tUsed+0x1000), "no writes but to the used ring")

			// A reset brings it back.
			r.start()
			require.NoError(t, r.m.Err())
			require.False(t, r.irq.High())
			status, _ := r.do(rbuf(blkHeader(VIRTIO_BLK_T_FLUSH, 0)), wbuf(1))
			require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
		})
	}
}

func TestVirtioNotifyBeforeDriverOK(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	r.start()
	r.wr(VirtioMMIOStatus, 0)
	r.offer(0)
	r.wr(VirtioMMIOQueueNotify, 0)
	require.Empty(t, r.used())
	require.False(t, r.irq.High())
}

func TestVirtioQuiesce(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	r.start()
	r.m.Quiesce()
	head := r.submit(rbuf(blkHeader(VIRTIO_BLK_T_FLUSH, 0)), wbuf(1))
	require.Empty(t, r.used(), "held while quiesced")
	r.m.Resume()
	require.Equal(t, [][2]uint32{{uint32(head), 1}}, r.used())

	// Concurrent notifies against Quiesce/Resume; every request completes.
	var wg sync.WaitGroup
	const n = 200
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				r.m.Quiesce()
				r.m.Resume()
			}
		}
	}()
	for i := 0; i < n; i++ {
		r.submit(rbuf(blkHeader(VIRTIO_BLK_T_IN, uint64(i%64))), wbuf(512), wbuf(1))
		for len(r.used()) == 0 {
			r.wr(VirtioMMIOQueueNotify, 0)
		}
		r.dataNext = tData
	}
	close(stop)
	wg.Wait()
}

// writesOutside counts recorded writes not within [lo, hi).
func (m *fakeMem) writesOutside(lo, hi uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, w := range m.writes {
		if w.gpa < lo || w.gpa+w.n > hi {
			n++
		}
	}
	return n
}

func TestNewVirtioBlkErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.img")
	_, err := NewVirtioBlk(VirtioBlkConfig{Path: missing})
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, missing)

	small := filepath.Join(dir, "small.img")
	require.NoError(t, os.WriteFile(small, make([]byte, 511), 0o600))
	_, err = NewVirtioBlk(VirtioBlkConfig{Path: small})
	require.ErrorContains(t, err, small)
	require.ErrorContains(t, err, "less than one block")

	mid := filepath.Join(dir, "mid.img")
	require.NoError(t, os.WriteFile(mid, make([]byte, 1024), 0o600))
	_, err = NewVirtioBlk(VirtioBlkConfig{Path: mid, BlockSize: 4096})
	require.ErrorContains(t, err, "less than one block")
	_, err = NewVirtioBlk(VirtioBlkConfig{Path: mid, BlockSize: 1000})
	require.ErrorContains(t, err, "block size")

	_, err = NewVirtioBlk(VirtioBlkConfig{Path: dir})
	require.ErrorContains(t, err, dir)

	if os.Getuid() != 0 {
		noperm := filepath.Join(dir, "noperm.img")
		require.NoError(t, os.WriteFile(noperm, make([]byte, 1024), 0o400))
		_, err = NewVirtioBlk(VirtioBlkConfig{Path: noperm})
		require.ErrorIs(t, err, os.ErrPermission)
		require.ErrorContains(t, err, noperm)
	}
}

func TestVirtioBlkConfigFromSpec(t *testing.T) {
	f, err := os.Open(tempDisk(t, 16*VirtioBlkSectorSize))
	require.NoError(t, err)
	defer f.Close()
	cfg := VirtioBlkConfigFromSpec(spec.MustKey("boot-disk"), spec.FileStorageBackend{Path: "vm/d.img", ReadOnly: true, BlockSize: 4096}, f)
	require.Equal(t, VirtioBlkConfig{Path: "vm/d.img", File: f, ReadOnly: true, BlockSize: 4096, Serial: "boot-disk"}, cfg)
}

// TestVirtioBlkTakesOpenFile: given a File, the device uses it and never
// opens Path (a storage path, relative to a root the device does not know);
// when it refuses the file, the file stays open for its owner.
func TestVirtioBlkTakesOpenFile(t *testing.T) {
	f, err := os.Open(tempDisk(t, 16*VirtioBlkSectorSize))
	require.NoError(t, err)
	r := newBlkRig(t, VirtioBlkConfig{Path: "no/such/file.img", File: f, ReadOnly: true})
	require.Equal(t, uint64(16), r.blk.Capacity())
	r.start()
	data := wbuf(VirtioBlkSectorSize)
	status, _ := r.do(rbuf(blkHeader(VIRTIO_BLK_T_IN, 5)), data, wbuf(1))
	require.Equal(t, byte(VIRTIO_BLK_S_OK), status)
	require.Equal(t, sectorPattern(5, 1), r.fill(data))

	small, err := os.Open(tempDisk(t, 100))
	require.NoError(t, err)
	defer small.Close()
	_, err = NewVirtioBlk(VirtioBlkConfig{Path: "small.img", File: small})
	require.ErrorContains(t, err, "less than one block")
	_, err = small.Stat()
	require.NoError(t, err, "a refused file is left open for its owner")
}

// hookMem calls hook before each read of at least 512 bytes (a data buffer).
type hookMem struct {
	*fakeMem
	hook func()
}

func (h *hookMem) ReadAt(p []byte, gpa uint64) error {
	if len(p) >= 512 && h.hook != nil {
		h.hook()
	}
	return h.fakeMem.ReadAt(p, gpa)
}

func TestVirtioQuiesceStopsAfterRequestInFlight(t *testing.T) {
	r := newBlkRig(t, VirtioBlkConfig{})
	hm := &hookMem{fakeMem: r.mem}
	r.m = newVirtioMMIO(r.m.Base(), r.blk, hm, r.irq)
	r.start()
	r.submit(rbuf(blkHeader(VIRTIO_BLK_T_OUT, 1)), rbuf(make([]byte, 512)), wbuf(1))
	require.Len(t, r.used(), 1)
	var quiesced sync.WaitGroup
	hm.hook = func() {
		hm.hook = nil
		quiesced.Add(1)
		go func() {
			defer quiesced.Done()
			r.m.Quiesce()
		}()
		for !r.m.quiescing.Load() {
			runtime.Gosched()
		}
	}
	// Three writes made available at once, then one notification.
	for range 3 {
		hdr := blkHeader(VIRTIO_BLK_T_OUT, 2)
		bufs := []*buf{rbuf(hdr), rbuf(make([]byte, 512)), wbuf(1)}
		head := r.nextDesc
		for i, b := range bufs {
			b.gpa = r.dataNext
			r.dataNext += 1024
			r.ramWrite(b.gpa, b.data)
			flags := uint16(0)
			if b.write {
				flags = VIRTQ_DESC_F_WRITE
			}
			if i < 2 {
				flags |= VIRTQ_DESC_F_NEXT
			}
			r.writeDesc((head+uint16(i))%tQSize, b.gpa, uint32(len(b.data)), flags, (head+uint16(i)+1)%tQSize)
		}
		r.nextDesc += 3
		r.offer(head % tQSize)
	}
	r.wr(VirtioMMIOQueueNotify, 0)
	quiesced.Wait()
	require.Len(t, r.used(), 1, "only the request in flight completes")
	r.m.Resume()
	require.Len(t, r.used(), 2, "the held requests complete on Resume")
}
