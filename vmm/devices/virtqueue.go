package devices

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Split virtqueue descriptor flags (virtio 1.1, 2.6.5).
const (
	VIRTQ_DESC_F_NEXT     = 1
	VIRTQ_DESC_F_WRITE    = 2
	VIRTQ_DESC_F_INDIRECT = 4
)

// VIRTQ_AVAIL_F_NO_INTERRUPT in the available ring's flags asks the device
// not to interrupt when it uses buffers.
const VIRTQ_AVAIL_F_NO_INTERRUPT = 1

// Split virtqueue layout: sizes and alignments of its three parts.
const (
	virtqDescSize       = 16
	virtqDescAlign      = 16
	virtqAvailAlign     = 2
	virtqUsedAlign      = 4
	virtqUsedElemSize   = 8
	virtqMaxSize        = 32768
	virtqRingHeaderSize = 4 // flags and idx
)

// errQueue marks a driver error in a queue's structure (as opposed to a bad
// data buffer): the device then needs a reset.
var errQueue = errors.New("virtqueue error")

// queueError returns an error wrapping errQueue.
func queueError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errQueue, fmt.Sprintf(format, args...))
}

// virtqDesc is one descriptor as read from guest memory.
type virtqDesc struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

// virtqSeg is one guest buffer of a descriptor chain.
type virtqSeg struct {
	addr uint64
	len  uint32
}

// virtqChain is a descriptor chain split into the buffers the device reads
// (first) and those it writes (after). Zero-length buffers are left out.
type virtqChain struct {
	head     uint16
	readable []virtqSeg
	writable []virtqSeg
}

// virtqueue is the device side of one split virtqueue: where its parts are
// and how far the device has got. It reads and writes the rings only
// through GuestMemory, checking every index the driver gives it.
type virtqueue struct {
	mem  GuestMemory
	size uint16 // a power of two, 1 to virtqMaxSize
	// desc, avail and used are the guest-physical addresses of the
	// descriptor table, the available ring and the used ring.
	desc, avail, used uint64
	// lastAvail is the available ring index of the next chain to take.
	lastAvail uint16
	// usedIdx is the used ring index the device writes next.
	usedIdx uint16
	// stop, if set, is asked before each chain is taken; true makes pop
	// report that none is available (the transport is pausing).
	stop func() bool
	// taken counts the chains pop has handed out. A virtqueue value lives
	// for one notification, and pop hands out at most size chains in it:
	// a driver that keeps making chains available while the device serves
	// (another vCPU, or rings laid over one another so that the device's
	// own writes move the available index) cannot hold the notifying vCPU,
	// and the transport's lock, for ever. Chains left over are served on
	// the next notification, which a driver sends after making them
	// available.
	taken int
}

func (q *virtqueue) readU16(gpa uint64, what string) (uint16, error) {
	var b [2]byte
	if err := q.mem.ReadAt(b[:], gpa); err != nil {
		return 0, queueError("read %s at %#x: %v", what, gpa, err)
	}
	return binary.LittleEndian.Uint16(b[:]), nil
}

// pop takes the head of the next available chain; ok is false when the
// driver has made none available.
func (q *virtqueue) pop() (head uint16, ok bool, err error) {
	if q.stop != nil && q.stop() {
		return 0, false, nil
	}
	if q.taken >= int(q.size) {
		return 0, false, nil
	}
	availIdx, err := q.readU16(q.avail+2, "available ring index")
	if err != nil {
		return 0, false, err
	}
	pending := availIdx - q.lastAvail
	if pending == 0 {
		return 0, false, nil
	}
	if pending > q.size {
		return 0, false, queueError("available index %d is %d ahead of %d, more than the queue size %d",
			availIdx, pending, q.lastAvail, q.size)
	}
	// The driver can have at most size chains outstanding: those it made
	// available and the device has not yet put on the used ring.
	if outstanding := availIdx - q.usedIdx; outstanding > q.size {
		return 0, false, queueError("available index %d is %d ahead of used index %d, more than the queue size %d",
			availIdx, outstanding, q.usedIdx, q.size)
	}
	slot := q.avail + virtqRingHeaderSize + 2*uint64(q.lastAvail%q.size)
	head, err = q.readU16(slot, "available ring entry")
	if err != nil {
		return 0, false, err
	}
	if head >= q.size {
		return 0, false, queueError("available ring entry %d names descriptor %d of %d", q.lastAvail, head, q.size)
	}
	q.lastAvail++
	q.taken++
	return head, true, nil
}

func (q *virtqueue) readDesc(i uint16) (virtqDesc, error) {
	var b [virtqDescSize]byte
	gpa := q.desc + uint64(i)*virtqDescSize
	if err := q.mem.ReadAt(b[:], gpa); err != nil {
		return virtqDesc{}, queueError("read descriptor %d at %#x: %v", i, gpa, err)
	}
	return virtqDesc{
		addr:  binary.LittleEndian.Uint64(b[0:]),
		len:   binary.LittleEndian.Uint32(b[8:]),
		flags: binary.LittleEndian.Uint16(b[12:]),
		next:  binary.LittleEndian.Uint16(b[14:]),
	}, nil
}

// chain walks the descriptor chain starting at head. A chain longer than the
// queue (a loop), a next index out of range, an indirect descriptor (never
// offered), a readable buffer after a writable one, or a buffer whose end
// overflows the address space is a queue error.
func (q *virtqueue) chain(head uint16) (virtqChain, error) {
	c := virtqChain{head: head}
	i := head
	for n := 0; ; n++ {
		if n >= int(q.size) {
			return c, queueError("descriptor chain from %d is longer than the queue size %d", head, q.size)
		}
		d, err := q.readDesc(i)
		if err != nil {
			return c, err
		}
		if d.flags&VIRTQ_DESC_F_INDIRECT != 0 {
			return c, queueError("descriptor %d is indirect, which was not negotiated", i)
		}
		if d.addr+uint64(d.len) < d.addr {
			return c, queueError("descriptor %d: buffer at %#x of %d bytes wraps around", i, d.addr, d.len)
		}
		if d.len > 0 {
			seg := virtqSeg{addr: d.addr, len: d.len}
			if d.flags&VIRTQ_DESC_F_WRITE != 0 {
				c.writable = append(c.writable, seg)
			} else {
				if len(c.writable) > 0 {
					return c, queueError("descriptor %d is readable but follows a writable one", i)
				}
				c.readable = append(c.readable, seg)
			}
		}
		if d.flags&VIRTQ_DESC_F_NEXT == 0 {
			return c, nil
		}
		if d.next >= q.size {
			return c, queueError("descriptor %d: next %d is out of range %d", i, d.next, q.size)
		}
		i = d.next
	}
}

// push puts a used chain with the number of bytes written into it on the
// used ring.
func (q *virtqueue) push(head uint16, written uint32) error {
	var elem [virtqUsedElemSize]byte
	binary.LittleEndian.PutUint32(elem[0:], uint32(head))
	binary.LittleEndian.PutUint32(elem[4:], written)
	gpa := q.used + virtqRingHeaderSize + uint64(q.usedIdx%q.size)*virtqUsedElemSize
	if err := q.mem.WriteAt(elem[:], gpa); err != nil {
		return queueError("write used ring entry at %#x: %v", gpa, err)
	}
	q.usedIdx++
	var idx [2]byte
	binary.LittleEndian.PutUint16(idx[:], q.usedIdx)
	if err := q.mem.WriteAt(idx[:], q.used+2); err != nil {
		return queueError("write used ring index at %#x: %v", q.used+2, err)
	}
	return nil
}

// wantsInterrupt reports whether the driver wants an interrupt for used
// buffers (it has not set VIRTQ_AVAIL_F_NO_INTERRUPT).
func (q *virtqueue) wantsInterrupt() (bool, error) {
	flags, err := q.readU16(q.avail, "available ring flags")
	if err != nil {
		return false, err
	}
	return flags&VIRTQ_AVAIL_F_NO_INTERRUPT == 0, nil
}

// checkVirtqLayout checks a queue's size and the alignment of its parts, as
// the driver set them before making it ready.
func checkVirtqLayout(size, max uint16, desc, avail, used uint64) error {
	switch {
	case size == 0 || size > max || size&(size-1) != 0:
		return fmt.Errorf("size %d is not a power of two from 1 to %d", size, max)
	case desc%virtqDescAlign != 0:
		return fmt.Errorf("descriptor table %#x is not %d-byte aligned", desc, virtqDescAlign)
	case avail%virtqAvailAlign != 0:
		return fmt.Errorf("available ring %#x is not %d-byte aligned", avail, virtqAvailAlign)
	case used%virtqUsedAlign != 0:
		return fmt.Errorf("used ring %#x is not %d-byte aligned", used, virtqUsedAlign)
	}
	for _, p := range []struct {
		name      string
		gpa, size uint64
	}{
		{"descriptor table", desc, uint64(size) * virtqDescSize},
		{"available ring", avail, virtqRingHeaderSize + 2*uint64(size) + 2},
		{"used ring", used, virtqRingHeaderSize + virtqUsedElemSize*uint64(size) + 2},
	} {
		if p.gpa+p.size < p.gpa {
			return fmt.Errorf("%s at %#x wraps around", p.name, p.gpa)
		}
	}
	return nil
}
