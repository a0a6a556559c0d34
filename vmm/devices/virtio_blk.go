package devices

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/wagglevm/waggle/spec"
)

// VirtioBlkDeviceID is the virtio device type of a block device.
const VirtioBlkDeviceID = 2

// Block device feature bits (virtio 1.1, 5.2.3).
const (
	VIRTIO_BLK_F_SIZE_MAX = 1
	VIRTIO_BLK_F_SEG_MAX  = 2
	VIRTIO_BLK_F_GEOMETRY = 4
	VIRTIO_BLK_F_RO       = 5
	VIRTIO_BLK_F_BLK_SIZE = 6
	VIRTIO_BLK_F_FLUSH    = 9
)

// Block request types (virtio 1.1, 5.2.6).
const (
	VIRTIO_BLK_T_IN     = 0
	VIRTIO_BLK_T_OUT    = 1
	VIRTIO_BLK_T_FLUSH  = 4
	VIRTIO_BLK_T_GET_ID = 8
)

// Block request statuses.
const (
	VIRTIO_BLK_S_OK     = 0
	VIRTIO_BLK_S_IOERR  = 1
	VIRTIO_BLK_S_UNSUPP = 2
)

// VIRTIO_BLK_ID_BYTES is the length of the device ID GET_ID returns.
const VIRTIO_BLK_ID_BYTES = 20

// VirtioBlkSectorSize is the unit of request sectors and of capacity,
// whatever the backend's block size.
const VirtioBlkSectorSize = 512

// VirtioBlkQueueSize is the size of the block device's one request queue.
const VirtioBlkQueueSize = 256

// VirtioBlkStateKind is the Payload kind of a block device's saved state
// (transport and device together).
const VirtioBlkStateKind = "virtio_blk_mmio"

// Configuration space offsets (struct virtio_blk_config).
const (
	virtioBlkCfgCapacity = 0
	virtioBlkCfgSegMax   = 12
	virtioBlkCfgBlkSize  = 20
	virtioBlkCfgLen      = 24
)

// virtioBlkHeaderLen is the size of struct virtio_blk_req's header (type,
// reserved, sector).
const virtioBlkHeaderLen = 16

// virtioBlkChunk is the most a request moves through host memory at once:
// guest buffers of any length are copied piecewise, so a guest cannot make
// the host allocate.
const virtioBlkChunk = 128 << 10

// VirtioBlkMaxRequest bounds the data of one request (the bytes of its
// buffers, header and status apart). A longer request fails with
// VIRTIO_BLK_S_IOERR: it would hold the notifying vCPU and the transport
// for as long as the disk takes to move it, and its length would not fit the
// used ring's 32-bit count. Linux's default is far below (max_sectors_kb).
const VirtioBlkMaxRequest = 64 << 20

// VirtioBlkConfig says how to build a VirtioBlk.
type VirtioBlkConfig struct {
	// Path is the host file holding the disk, or when File is set only its
	// name in messages.
	Path string
	// File, when set, is the disk, already open (read-only or read-write
	// as ReadOnly says): the VMM opens backends beneath its storage root
	// and hands them over. The device then owns it: Close closes it. When
	// it is nil, NewVirtioBlk opens Path as it is, which only a caller that
	// trusts the path may do.
	File *os.File
	// ReadOnly opens the file read-only and offers VIRTIO_BLK_F_RO.
	ReadOnly bool
	// BlockSize is the logical block size, a power of two from 512 to
	// 65536; 0 means 512. Other sizes are offered with
	// VIRTIO_BLK_F_BLK_SIZE.
	BlockSize uint32
	// Serial is the device ID GET_ID returns (the disk's component key); its
	// first VIRTIO_BLK_ID_BYTES bytes are used, NUL-padded.
	Serial string
}

// VirtioBlk is a virtio block device backed by a host file. Put it behind a
// transport with NewVirtioBlkMMIO; the
// transport serializes all calls into it. Close it when the VM is gone.
type VirtioBlk struct {
	file      *os.File
	path      string
	readOnly  bool
	blockSize uint32
	capacity  uint64 // in 512-byte sectors
	serial    [VIRTIO_BLK_ID_BYTES]byte
	features  uint64
	config    [virtioBlkCfgLen]byte

	// buf is the bounce buffer for data; used only under the transport's
	// lock.
	buf []byte
}

// NewVirtioBlk opens the backing file (or takes cfg.File). It fails with an
// error naming the path if the file does not exist, cannot be opened, is not
// a regular file or is smaller than one block; a cfg.File is then left open.
func NewVirtioBlk(cfg VirtioBlkConfig) (*VirtioBlk, error) {
	bs := cfg.BlockSize
	if bs == 0 {
		bs = VirtioBlkSectorSize
	}
	if bs < 512 || bs > 65536 || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("virtio-blk %s: block size %d is not a power of two from 512 to 65536", cfg.Path, bs)
	}
	f := cfg.File
	if f == nil {
		flag := os.O_RDWR
		if cfg.ReadOnly {
			flag = os.O_RDONLY
		}
		var err error
		if f, err = os.OpenFile(cfg.Path, flag, 0); err != nil {
			return nil, fmt.Errorf("virtio-blk: open backing file: %w", err)
		}
	}
	// On failure, a file the caller handed over stays the caller's.
	closeOwn := func() {
		if cfg.File == nil {
			f.Close()
		}
	}
	fi, err := f.Stat()
	if err != nil {
		closeOwn()
		return nil, fmt.Errorf("virtio-blk: stat backing file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		closeOwn()
		return nil, fmt.Errorf("virtio-blk %s: backing file is not a regular file", cfg.Path)
	}
	if fi.Size() < int64(bs) {
		closeOwn()
		return nil, fmt.Errorf("virtio-blk %s: backing file has %d bytes, less than one block of %d", cfg.Path, fi.Size(), bs)
	}
	b := &VirtioBlk{
		file: f, path: cfg.Path, readOnly: cfg.ReadOnly, blockSize: bs,
		capacity: uint64(fi.Size()) / VirtioBlkSectorSize,
	}
	copy(b.serial[:], cfg.Serial)
	b.features = 1<<VIRTIO_F_VERSION_1 | 1<<VIRTIO_BLK_F_FLUSH | 1<<VIRTIO_BLK_F_SEG_MAX
	if cfg.ReadOnly {
		b.features |= 1 << VIRTIO_BLK_F_RO
	}
	binary.LittleEndian.PutUint64(b.config[virtioBlkCfgCapacity:], b.capacity)
	binary.LittleEndian.PutUint32(b.config[virtioBlkCfgSegMax:], VirtioBlkQueueSize-2)
	if bs != VirtioBlkSectorSize {
		b.features |= 1 << VIRTIO_BLK_F_BLK_SIZE
		binary.LittleEndian.PutUint32(b.config[virtioBlkCfgBlkSize:], bs)
	}
	return b, nil
}

// VirtioBlkConfigFromSpec returns the configuration of a spec's VirtioDisk
// with component key key, stored in backend, whose file the caller has
// opened beneath its storage root (a backend's path is relative to that
// root, so it is never opened as it is). The key becomes the serial number
// GET_ID reports (its first VIRTIO_BLK_ID_BYTES bytes).
func VirtioBlkConfigFromSpec(key spec.Key, backend spec.FileStorageBackend, file *os.File) VirtioBlkConfig {
	return VirtioBlkConfig{Path: backend.Path, File: file, ReadOnly: backend.ReadOnly, BlockSize: backend.BlockSize, Serial: key.String()}
}

// NewVirtioBlkMMIO opens a block device and puts it behind a virtio-mmio
// transport in slot: the usual way to make a spec's VirtioDisk.
func NewVirtioBlkMMIO(cfg VirtioBlkConfig, slot uint8, mem GuestMemory, irq IRQLine) (*VirtioMMIO, *VirtioBlk, error) {
	b, err := NewVirtioBlk(cfg)
	if err != nil {
		return nil, nil, err
	}
	return newVirtioMMIO(VirtioMMIOSlotAddr(slot), b, mem, irq), b, nil
}

// Capacity returns the disk's size in 512-byte sectors.
func (b *VirtioBlk) Capacity() uint64 { return b.capacity }

// Close closes the backing file.
func (b *VirtioBlk) Close() error { return b.file.Close() }

// DeviceID returns VirtioBlkDeviceID.
func (b *VirtioBlk) DeviceID() uint32 { return VirtioBlkDeviceID }

// Features returns VIRTIO_F_VERSION_1, VIRTIO_BLK_F_FLUSH,
// VIRTIO_BLK_F_SEG_MAX, and VIRTIO_BLK_F_RO and VIRTIO_BLK_F_BLK_SIZE when
// they apply.
func (b *VirtioBlk) Features() uint64 { return b.features }

// QueueMaxSizes returns the one request queue's size.
func (b *VirtioBlk) QueueMaxSizes() []uint16 { return []uint16{VirtioBlkQueueSize} }

// ReadConfig reads struct virtio_blk_config: capacity, seg_max, and
// blk_size when VIRTIO_BLK_F_BLK_SIZE is offered. Other fields read as 0.
func (b *VirtioBlk) ReadConfig(off uint64, data []byte) {
	if off < virtioBlkCfgLen {
		copy(data, b.config[off:])
	}
}

// StateKind returns VirtioBlkStateKind.
func (b *VirtioBlk) StateKind() string { return VirtioBlkStateKind }

// saveConfig encodes capacity u64, block size u32, read-only u8.
func (b *VirtioBlk) saveConfig(e *stateEncoder) {
	e.u64(b.capacity)
	e.u32(b.blockSize)
	e.bool(b.readOnly)
}

// checkConfig refuses a saved state of a disk of another size, block size
// or writability: the driver would see its disk change under it.
func (b *VirtioBlk) checkConfig(d *stateDecoder) error {
	capacity := d.u64("capacity")
	bs := d.u32("block size")
	ro := d.bool("read-only")
	if d.err != nil {
		return d.err
	}
	if capacity != b.capacity || bs != b.blockSize || ro != b.readOnly {
		return fmt.Errorf("%w: saved disk has %d sectors, block size %d, read-only %v; %s has %d, %d, %v",
			ErrIncompatible, capacity, bs, ro, b.path, b.capacity, b.blockSize, b.readOnly)
	}
	return nil
}

// serve handles every available request on the queue.
func (b *VirtioBlk) serve(qi int, q *virtqueue, negotiated uint64) (bool, error) {
	used := false
	for {
		head, ok, err := q.pop()
		if err != nil || !ok {
			return used, err
		}
		c, err := q.chain(head)
		if err != nil {
			return used, err
		}
		written := b.handle(q.mem, c)
		if err := q.push(head, written); err != nil {
			return used, err
		}
		used = true
	}
}

// handle serves one request and returns how many bytes it wrote into the
// chain's writable buffers.
func (b *VirtioBlk) handle(mem GuestMemory, c virtqChain) uint32 {
	// The status byte is the last writable byte.
	if len(c.writable) == 0 {
		return 0 // nowhere to say anything: used with nothing written
	}
	last := &c.writable[len(c.writable)-1]
	statusAddr := last.addr + uint64(last.len) - 1
	data := append([]virtqSeg(nil), c.writable...)
	data[len(data)-1].len--

	status, n := b.execute(mem, c.readable, data)
	if err := mem.WriteAt([]byte{status}, statusAddr); err != nil {
		return n
	}
	return n + 1
}

// execute runs the request in readable (header, then data for OUT) and
// writes data into writable (for IN and GET_ID). It returns the status and
// the bytes of data written.
func (b *VirtioBlk) execute(mem GuestMemory, readable, writable []virtqSeg) (status uint8, written uint32) {
	var hdr [virtioBlkHeaderLen]byte
	if n, err := gather(mem, readable, hdr[:]); err != nil || n < virtioBlkHeaderLen {
		return VIRTIO_BLK_S_IOERR, 0
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	switch typ {
	case VIRTIO_BLK_T_IN:
		length := segsLen(writable)
		if length > VirtioBlkMaxRequest {
			return VIRTIO_BLK_S_IOERR, 0
		}
		off, ok := b.checkRange(sector, length)
		if !ok {
			return VIRTIO_BLK_S_IOERR, 0
		}
		n, err := b.readInto(mem, writable, off)
		if err != nil {
			return VIRTIO_BLK_S_IOERR, uint32(n)
		}
		return VIRTIO_BLK_S_OK, uint32(n)
	case VIRTIO_BLK_T_OUT:
		if b.readOnly {
			return VIRTIO_BLK_S_IOERR, 0
		}
		data := skipSegs(readable, virtioBlkHeaderLen)
		if segsLen(data) > VirtioBlkMaxRequest {
			return VIRTIO_BLK_S_IOERR, 0
		}
		off, ok := b.checkRange(sector, segsLen(data))
		if !ok {
			return VIRTIO_BLK_S_IOERR, 0
		}
		if err := b.writeFrom(mem, data, off); err != nil {
			return VIRTIO_BLK_S_IOERR, 0
		}
		return VIRTIO_BLK_S_OK, 0
	case VIRTIO_BLK_T_FLUSH:
		if !b.readOnly {
			if err := b.file.Sync(); err != nil {
				return VIRTIO_BLK_S_IOERR, 0
			}
		}
		return VIRTIO_BLK_S_OK, 0
	case VIRTIO_BLK_T_GET_ID:
		n, err := scatter(mem, writable, b.serial[:])
		if err != nil {
			return VIRTIO_BLK_S_IOERR, uint32(n)
		}
		return VIRTIO_BLK_S_OK, uint32(n)
	}
	return VIRTIO_BLK_S_UNSUPP, 0
}

// checkRange checks that length bytes from sector are a whole number of
// sectors inside the disk and returns the byte offset.
func (b *VirtioBlk) checkRange(sector, length uint64) (int64, bool) {
	if length%VirtioBlkSectorSize != 0 || sector > b.capacity {
		return 0, false
	}
	if length/VirtioBlkSectorSize > b.capacity-sector {
		return 0, false
	}
	return int64(sector * VirtioBlkSectorSize), true
}

func (b *VirtioBlk) bounce() []byte {
	if b.buf == nil {
		b.buf = make([]byte, virtioBlkChunk)
	}
	return b.buf
}

// readInto reads the disk from off into the guest buffers segs.
func (b *VirtioBlk) readInto(mem GuestMemory, segs []virtqSeg, off int64) (int, error) {
	buf := b.bounce()
	done := 0
	for _, s := range segs {
		for rest, gpa := uint64(s.len), s.addr; rest > 0; {
			n := min(rest, uint64(len(buf)))
			if _, err := b.file.ReadAt(buf[:n], off); err != nil {
				return done, fmt.Errorf("read %s at %d: %w", b.path, off, err)
			}
			if err := mem.WriteAt(buf[:n], gpa); err != nil {
				return done, err
			}
			done += int(n)
			off += int64(n)
			gpa += n
			rest -= n
		}
	}
	return done, nil
}

// writeFrom writes the guest buffers segs to the disk at off.
func (b *VirtioBlk) writeFrom(mem GuestMemory, segs []virtqSeg, off int64) error {
	buf := b.bounce()
	for _, s := range segs {
		for rest, gpa := uint64(s.len), s.addr; rest > 0; {
			n := min(rest, uint64(len(buf)))
			if err := mem.ReadAt(buf[:n], gpa); err != nil {
				return err
			}
			if _, err := b.file.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("write %s at %d: %w", b.path, off, err)
			}
			off += int64(n)
			gpa += n
			rest -= n
		}
	}
	return nil
}

// segsLen returns the total length of segs.
func segsLen(segs []virtqSeg) uint64 {
	var n uint64
	for _, s := range segs {
		n += uint64(s.len)
	}
	return n
}

// skipSegs returns segs without their first n bytes.
func skipSegs(segs []virtqSeg, n uint64) []virtqSeg {
	for len(segs) > 0 && n > 0 {
		if uint64(segs[0].len) > n {
			s := segs[0]
			s.addr += n
			s.len -= uint32(n)
			return append([]virtqSeg{s}, segs[1:]...)
		}
		n -= uint64(segs[0].len)
		segs = segs[1:]
	}
	return segs
}

// gather copies the start of the guest buffers segs into p and returns how
// many bytes it copied.
func gather(mem GuestMemory, segs []virtqSeg, p []byte) (int, error) {
	done := 0
	for _, s := range segs {
		if done == len(p) {
			break
		}
		n := min(len(p)-done, int(min(s.len, uint32(len(p)))))
		if err := mem.ReadAt(p[done:done+n], s.addr); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// scatter copies p into the start of the guest buffers segs and returns how
// many bytes it copied.
func scatter(mem GuestMemory, segs []virtqSeg, p []byte) (int, error) {
	done := 0
	for _, s := range segs {
		if done == len(p) {
			break
		}
		n := min(len(p)-done, int(min(s.len, uint32(len(p)))))
		if err := mem.WriteAt(p[done:done+n], s.addr); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}
