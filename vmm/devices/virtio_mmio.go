package devices

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Guest-physical placement of virtio-mmio slots (guest ABI).
const (
	VirtioMMIOBase     = 0xD0000000
	VirtioMMIOSlotSize = 0x1000
	VirtioMMIOFirstGSI = 16
)

// VirtioMMIOSlotAddr returns the base address of virtio-mmio slot n.
func VirtioMMIOSlotAddr(slot uint8) uint64 {
	return VirtioMMIOBase + uint64(slot)*VirtioMMIOSlotSize
}

// VirtioMMIOSlotGSI returns the interrupt line (IOAPIC pin) of slot n.
func VirtioMMIOSlotGSI(slot uint8) uint32 { return VirtioMMIOFirstGSI + uint32(slot) }

// virtio-mmio register offsets (virtio 1.1, 4.2.2), named as the spec names
// them.
const (
	VirtioMMIOMagicValue        = 0x000
	VirtioMMIOVersion           = 0x004
	VirtioMMIODeviceID          = 0x008
	VirtioMMIOVendorID          = 0x00c
	VirtioMMIODeviceFeatures    = 0x010
	VirtioMMIODeviceFeaturesSel = 0x014
	VirtioMMIODriverFeatures    = 0x020
	VirtioMMIODriverFeaturesSel = 0x024
	VirtioMMIOQueueSel          = 0x030
	VirtioMMIOQueueNumMax       = 0x034
	VirtioMMIOQueueNum          = 0x038
	VirtioMMIOQueueReady        = 0x044
	VirtioMMIOQueueNotify       = 0x050
	VirtioMMIOInterruptStatus   = 0x060
	VirtioMMIOInterruptACK      = 0x064
	VirtioMMIOStatus            = 0x070
	VirtioMMIOQueueDescLow      = 0x080
	VirtioMMIOQueueDescHigh     = 0x084
	VirtioMMIOQueueDriverLow    = 0x090
	VirtioMMIOQueueDriverHigh   = 0x094
	VirtioMMIOQueueDeviceLow    = 0x0a0
	VirtioMMIOQueueDeviceHigh   = 0x0a4
	VirtioMMIOConfigGeneration  = 0x0fc
	VirtioMMIOConfig            = 0x100
)

// Register values.
const (
	VirtioMMIOMagic = 0x74726976 // "virt", little-endian
	// VirtioMMIOVersion2 is the modern (virtio 1.x) transport.
	VirtioMMIOVersion2 = 2
	// VirtioVendorID is what waggle's devices say in VendorID ("WGGL").
	VirtioVendorID = 0x4c474757
)

// Device status bits (virtio 1.1, 2.1).
const (
	VIRTIO_CONFIG_S_ACKNOWLEDGE        = 1
	VIRTIO_CONFIG_S_DRIVER             = 2
	VIRTIO_CONFIG_S_DRIVER_OK          = 4
	VIRTIO_CONFIG_S_FEATURES_OK        = 8
	VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET = 64
	VIRTIO_CONFIG_S_FAILED             = 128
)

// Interrupt status bits.
const (
	VIRTIO_MMIO_INT_VRING  = 1 // used buffer notification
	VIRTIO_MMIO_INT_CONFIG = 2 // configuration change notification
)

// Transport feature bits (virtio 1.1, 6).
const (
	VIRTIO_F_RING_INDIRECT_DESC = 28
	VIRTIO_F_RING_EVENT_IDX     = 29
	VIRTIO_F_VERSION_1          = 32
)

// virtioDevice is a virtio device type behind a transport: what it offers
// and how it serves its queues. The transport calls it with its lock held,
// so a device needs no locking of its own for these calls. VirtioBlk is the
// one implementation.
type virtioDevice interface {
	// DeviceID is the virtio device type (2 for a block device).
	DeviceID() uint32
	// Features returns the feature bits the device offers, including
	// VIRTIO_F_VERSION_1.
	Features() uint64
	// QueueMaxSizes returns each queue's largest size; its length is the
	// number of queues.
	QueueMaxSizes() []uint16
	// ReadConfig fills data from the device configuration space at off.
	ReadConfig(off uint64, data []byte)
	// serve handles the chains the driver made available on queue qi,
	// negotiated being the features agreed. It returns whether any chain
	// was used, and a queue error (one that wraps errQueue) if the driver
	// broke the queue, after which the device needs a reset.
	serve(qi int, q *virtqueue, negotiated uint64) (used bool, err error)
	// StateKind is the Payload kind of the device behind its transport.
	StateKind() string
	// saveConfig encodes what identifies the device's backend (for
	// VirtioBlk, capacity and block size), so that a restore can refuse a
	// device that differs.
	saveConfig(e *stateEncoder)
	// checkConfig decodes what saveConfig wrote and checks it matches.
	checkConfig(d *stateDecoder) error
}

// VirtioMMIO is a virtio-mmio version 2 transport in one slot, in front of
// a virtioDevice. It implements MMIO, Stateful and Quiescer. Requests are
// served synchronously on QueueNotify, in the notifying vCPU's thread.
//
// Device status moves as the virtio spec says: 0 (reset) -> ACKNOWLEDGE ->
// DRIVER -> FEATURES_OK (refused when the features are not acceptable) ->
// DRIVER_OK; writing 0 resets from any state. DEVICE_NEEDS_RESET is added by
// the device when the driver breaks a queue; only a reset clears it.
type VirtioMMIO struct {
	base   uint64
	dev    virtioDevice
	mem    GuestMemory
	irq    IRQLine // may be nil
	maxima []uint16

	// quiescing is set by Quiesce before it takes mu, so that a queue being
	// served stops after the request in flight; cleared by Resume.
	quiescing atomic.Bool

	mu sync.Mutex
	// t is the transport state; guarded by mu.
	t mmioState
	// paused holds new requests back (Quiesce until Resume); guarded by mu.
	paused bool
	// irqLevel and irqKnown are as for UART; guarded by mu.
	irqLevel, irqKnown bool
	// lastErr is the queue error that made the device need a reset;
	// guarded by mu.
	lastErr error
}

// mmioState is the guest-visible transport state, what Save encodes.
type mmioState struct {
	status            uint32
	deviceFeaturesSel uint32
	driverFeaturesSel uint32
	driverFeatures    uint64
	queueSel          uint32
	interruptStatus   uint32
	configGeneration  uint32
	queues            []mmioQueue
}

// mmioQueue is one queue's transport registers and ring progress.
type mmioQueue struct {
	num                  uint16
	ready                bool
	desc, driver, device uint64
	lastAvail, usedIdx   uint16
}

func (s *mmioState) clone() mmioState {
	c := *s
	c.queues = append([]mmioQueue(nil), s.queues...)
	return c
}

// newVirtioMMIO returns the transport at guest-physical base for dev, using
// mem for the queues and irq (which may be nil) for interrupts.
func newVirtioMMIO(base uint64, dev virtioDevice, mem GuestMemory, irq IRQLine) *VirtioMMIO {
	m := &VirtioMMIO{base: base, dev: dev, mem: mem, irq: irq, maxima: dev.QueueMaxSizes()}
	m.resetLocked()
	return m
}

// Base returns the transport's guest-physical base address.
func (m *VirtioMMIO) Base() uint64 { return m.base }

// Status returns the device status register.
func (m *VirtioMMIO) Status() uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t.status
}

// Err returns the driver error that made the device need a reset, or nil.
func (m *VirtioMMIO) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

func (m *VirtioMMIO) resetLocked() {
	m.t = mmioState{queues: make([]mmioQueue, len(m.maxima))}
	for i, max := range m.maxima {
		m.t.queues[i].num = max
	}
	m.lastErr = nil
	m.updateIRQLocked()
}

// MMIORead reads a register or the configuration space.
func (m *VirtioMMIO) MMIORead(addr uint64, data []byte) {
	clear(data)
	off := addr - m.base
	if off >= VirtioMMIOSlotSize || len(data) == 0 || len(data) > 8 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= VirtioMMIOConfig {
		m.dev.ReadConfig(off-VirtioMMIOConfig, data)
		return
	}
	if len(data) != 4 || off%4 != 0 {
		return // registers are 32 bits wide
	}
	binary.LittleEndian.PutUint32(data, m.readRegLocked(off))
}

func (m *VirtioMMIO) readRegLocked(off uint64) uint32 {
	t := &m.t
	q := m.selectedLocked()
	switch off {
	case VirtioMMIOMagicValue:
		return VirtioMMIOMagic
	case VirtioMMIOVersion:
		return VirtioMMIOVersion2
	case VirtioMMIODeviceID:
		return m.dev.DeviceID()
	case VirtioMMIOVendorID:
		return VirtioVendorID
	case VirtioMMIODeviceFeatures:
		switch t.deviceFeaturesSel {
		case 0:
			return uint32(m.dev.Features())
		case 1:
			return uint32(m.dev.Features() >> 32)
		}
		return 0
	case VirtioMMIOQueueNumMax:
		if q == nil {
			return 0
		}
		return uint32(m.maxima[t.queueSel])
	case VirtioMMIOQueueReady:
		if q != nil && q.ready {
			return 1
		}
		return 0
	case VirtioMMIOInterruptStatus:
		return t.interruptStatus
	case VirtioMMIOStatus:
		return t.status
	case VirtioMMIOConfigGeneration:
		return t.configGeneration
	}
	return 0
}

// selectedLocked returns the queue QueueSel names, or nil.
func (m *VirtioMMIO) selectedLocked() *mmioQueue {
	if m.t.queueSel >= uint32(len(m.t.queues)) {
		return nil
	}
	return &m.t.queues[m.t.queueSel]
}

// MMIOWrite writes a register. Writes to the configuration space are
// ignored: no device here has a writable one.
func (m *VirtioMMIO) MMIOWrite(addr uint64, data []byte) {
	off := addr - m.base
	if off >= VirtioMMIOConfig || len(data) != 4 || off%4 != 0 {
		return
	}
	v := binary.LittleEndian.Uint32(data)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writeRegLocked(off, v)
}

func (m *VirtioMMIO) writeRegLocked(off uint64, v uint32) {
	t := &m.t
	q := m.selectedLocked()
	// Queue registers may change only while the queue is not ready.
	qw := q != nil && !q.ready
	switch off {
	case VirtioMMIODeviceFeaturesSel:
		t.deviceFeaturesSel = v
	case VirtioMMIODriverFeatures:
		if t.status&VIRTIO_CONFIG_S_FEATURES_OK != 0 {
			return
		}
		switch t.driverFeaturesSel {
		case 0:
			t.driverFeatures = t.driverFeatures&^0xffffffff | uint64(v)
		case 1:
			t.driverFeatures = t.driverFeatures&0xffffffff | uint64(v)<<32
		}
	case VirtioMMIODriverFeaturesSel:
		t.driverFeaturesSel = v
	case VirtioMMIOQueueSel:
		t.queueSel = v
	case VirtioMMIOQueueNum:
		if qw {
			q.num = uint16(min(v, 0xffff))
		}
	case VirtioMMIOQueueReady:
		if q == nil {
			return
		}
		if v&1 == 0 {
			q.ready = false
			return
		}
		if q.ready {
			return
		}
		if err := checkVirtqLayout(q.num, m.maxima[t.queueSel], q.desc, q.driver, q.device); err != nil {
			// The driver reads QueueReady back as 0.
			return
		}
		q.ready = true
		q.lastAvail, q.usedIdx = 0, 0
	case VirtioMMIOQueueNotify:
		m.notifyLocked(v)
	case VirtioMMIOInterruptACK:
		t.interruptStatus &^= v
		m.updateIRQLocked()
	case VirtioMMIOStatus:
		m.setStatusLocked(v)
	case VirtioMMIOQueueDescLow, VirtioMMIOQueueDescHigh:
		if qw {
			q.desc = setHalf(q.desc, v, off == VirtioMMIOQueueDescHigh)
		}
	case VirtioMMIOQueueDriverLow, VirtioMMIOQueueDriverHigh:
		if qw {
			q.driver = setHalf(q.driver, v, off == VirtioMMIOQueueDriverHigh)
		}
	case VirtioMMIOQueueDeviceLow, VirtioMMIOQueueDeviceHigh:
		if qw {
			q.device = setHalf(q.device, v, off == VirtioMMIOQueueDeviceHigh)
		}
	}
}

// setStatusLocked handles a write to Status.
func (m *VirtioMMIO) setStatusLocked(v uint32) {
	t := &m.t
	if v == 0 {
		m.resetLocked()
		return
	}
	v &= 0xff &^ VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
	v |= t.status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
	if v&VIRTIO_CONFIG_S_FEATURES_OK != 0 && t.status&VIRTIO_CONFIG_S_FEATURES_OK == 0 {
		if m.checkFeaturesLocked() != nil {
			v &^= VIRTIO_CONFIG_S_FEATURES_OK
		}
	}
	t.status = v
}

// checkFeaturesLocked checks the driver's features before FEATURES_OK.
func (m *VirtioMMIO) checkFeaturesLocked() error {
	f := m.t.driverFeatures
	if extra := f &^ m.dev.Features(); extra != 0 {
		return fmt.Errorf("driver accepted features %#x the device did not offer", extra)
	}
	if f&(1<<VIRTIO_F_VERSION_1) == 0 {
		return errors.New("driver did not accept VIRTIO_F_VERSION_1")
	}
	return nil
}

// notifyLocked serves queue qi after the driver's notification, unless the
// device is paused (Resume serves it then) or not running.
func (m *VirtioMMIO) notifyLocked(qi uint32) {
	if m.paused || qi >= uint32(len(m.t.queues)) {
		return
	}
	m.serveLocked(int(qi))
}

// running reports whether the driver has the device going and it has not
// broken.
func (m *VirtioMMIO) runningLocked() bool {
	s := m.t.status
	return s&VIRTIO_CONFIG_S_DRIVER_OK != 0 &&
		s&(VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET|VIRTIO_CONFIG_S_FAILED) == 0
}

// serveLocked lets the device serve queue qi and raises the interrupt.
func (m *VirtioMMIO) serveLocked(qi int) {
	mq := &m.t.queues[qi]
	if !m.runningLocked() || !mq.ready {
		return
	}
	vq := &virtqueue{mem: m.mem, size: mq.num, desc: mq.desc, avail: mq.driver, used: mq.device,
		lastAvail: mq.lastAvail, usedIdx: mq.usedIdx, stop: m.quiescing.Load}
	used, err := m.dev.serve(qi, vq, m.t.driverFeatures)
	mq.lastAvail, mq.usedIdx = vq.lastAvail, vq.usedIdx
	if used {
		want, werr := vq.wantsInterrupt()
		if werr != nil && err == nil {
			err = werr
		}
		if want {
			m.t.interruptStatus |= VIRTIO_MMIO_INT_VRING
		}
	}
	if err != nil {
		m.needsResetLocked(fmt.Errorf("queue %d: %w", qi, err))
	}
	m.updateIRQLocked()
}

// needsResetLocked marks the device broken by the driver and tells it so
// with a configuration change notification.
func (m *VirtioMMIO) needsResetLocked(err error) {
	m.lastErr = err
	m.t.status |= VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET
	m.t.interruptStatus |= VIRTIO_MMIO_INT_CONFIG
}

// updateIRQLocked drives the interrupt line: high while InterruptStatus has
// a bit set.
func (m *VirtioMMIO) updateIRQLocked() {
	if m.irq == nil {
		return
	}
	level := m.t.interruptStatus != 0
	if m.irqKnown && level == m.irqLevel {
		return
	}
	if err := m.irq.SetLevel(level); err != nil {
		m.irqKnown = false
		return
	}
	m.irqLevel, m.irqKnown = level, true
}

// Quiesce waits for the request in flight, if any, to finish and holds new
// ones back until Resume; a queue being served stops after its current
// request, however many more the driver has made available. Notifications
// that arrive meanwhile are not lost: Resume looks at every queue.
func (m *VirtioMMIO) Quiesce() {
	m.quiescing.Store(true)
	m.mu.Lock()
	m.paused = true
	m.mu.Unlock()
}

// Resume lets requests run again and serves whatever the driver made
// available while the device was paused (or before a Restore): call it after
// Restore on a migration target.
func (m *VirtioMMIO) Resume() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.paused = false
	m.quiescing.Store(false)
	for qi := range m.t.queues {
		m.serveLocked(qi)
	}
}

// setHalf replaces the low or the high 32 bits of a 64-bit register.
func setHalf(reg uint64, v uint32, high bool) uint64 {
	if high {
		return reg&0xffffffff | uint64(v)<<32
	}
	return reg&^0xffffffff | uint64(v)
}
