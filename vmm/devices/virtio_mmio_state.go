package devices

import "fmt"

// virtioMMIOStateVersion is the newest transport state encoding.
const virtioMMIOStateVersion = 1

// virtioMMIOStateMax caps a transport payload: the header, 31 bytes per
// queue for at most a few queues, and the device's own few bytes.
const virtioMMIOStateMax = 4096

// virtioMMIOStatusBits are the status bits a device can hold.
const virtioMMIOStatusBits = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
	VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FEATURES_OK |
	VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED

// virtioMMIOSaved is a transport's saved state, apart from the live device.
// Encoding version 1, little-endian:
//
//	device ID                                  u32
//	status                                     u32
//	DeviceFeaturesSel, DriverFeaturesSel       u32, u32
//	driver features                            u64
//	QueueSel                                   u32
//	InterruptStatus                            u32
//	ConfigGeneration                           u32
//	number of queues n                         u16
//	n x { QueueNum u16, QueueReady u8 (0 or 1),
//	      QueueDesc u64, QueueDriver u64, QueueDevice u64,
//	      last available index u16, next used index u16 }
//	device configuration                       as the device encodes it
type virtioMMIOSaved struct {
	deviceID uint32
	t        mmioState
}

func (s *virtioMMIOSaved) encode(dev virtioDevice) []byte {
	var e stateEncoder
	t := &s.t
	e.u32(s.deviceID)
	e.u32(t.status)
	e.u32(t.deviceFeaturesSel)
	e.u32(t.driverFeaturesSel)
	e.u64(t.driverFeatures)
	e.u32(t.queueSel)
	e.u32(t.interruptStatus)
	e.u32(t.configGeneration)
	e.u16(uint16(len(t.queues)))
	for _, q := range t.queues {
		e.u16(q.num)
		e.bool(q.ready)
		e.u64(q.desc)
		e.u64(q.driver)
		e.u64(q.device)
		e.u16(q.lastAvail)
		e.u16(q.usedIdx)
	}
	dev.saveConfig(&e)
	return e.b
}

// decodeVirtioMMIOState decodes and checks a saved transport against the
// live device it is to be restored into.
func decodeVirtioMMIOState(b []byte, dev virtioDevice, maxima []uint16) (virtioMMIOSaved, error) {
	d := stateDecoder{b: b}
	var s virtioMMIOSaved
	t := &s.t
	s.deviceID = d.u32("device ID")
	t.status = d.u32("status")
	t.deviceFeaturesSel = d.u32("DeviceFeaturesSel")
	t.driverFeaturesSel = d.u32("DriverFeaturesSel")
	t.driverFeatures = d.u64("driver features")
	t.queueSel = d.u32("QueueSel")
	t.interruptStatus = d.u32("InterruptStatus")
	t.configGeneration = d.u32("ConfigGeneration")
	n := int(d.u16("number of queues"))
	if d.err == nil && n != len(maxima) {
		return s, fmt.Errorf("%w: %d queues, the device has %d", ErrIncompatible, n, len(maxima))
	}
	if d.err == nil {
		t.queues = make([]mmioQueue, n)
	}
	for i := range t.queues {
		q := &t.queues[i]
		q.num = d.u16("QueueNum")
		q.ready = d.bool("QueueReady")
		q.desc = d.u64("QueueDesc")
		q.driver = d.u64("QueueDriver")
		q.device = d.u64("QueueDevice")
		q.lastAvail = d.u16("last available index")
		q.usedIdx = d.u16("next used index")
		if d.err != nil {
			break
		}
		if q.num > maxima[i] {
			d.fail("queue %d: QueueNum %d is above QueueNumMax %d", i, q.num, maxima[i])
		}
		if q.ready {
			if err := checkVirtqLayout(q.num, maxima[i], q.desc, q.driver, q.device); err != nil {
				d.fail("queue %d is ready but %v", i, err)
			} else if inFlight := q.lastAvail - q.usedIdx; inFlight > q.num {
				// The device takes a chain and uses it in one step, so a
				// saved queue has at most one chain taken but not used
				// (when the driver broke the queue on it); more than a
				// queueful is a state no device could have reached.
				d.fail("queue %d: last available index %d is %d ahead of used index %d, more than the queue size %d",
					i, q.lastAvail, inFlight, q.usedIdx, q.num)
			}
		}
	}
	if d.err == nil {
		if err := dev.checkConfig(&d); err != nil {
			return s, err
		}
	}
	if err := d.finish(); err != nil {
		return s, err
	}
	if s.deviceID != dev.DeviceID() {
		return s, fmt.Errorf("%w: device ID %d, the device is %d", ErrIncompatible, s.deviceID, dev.DeviceID())
	}
	if t.status&^virtioMMIOStatusBits != 0 {
		return s, fmt.Errorf("%w: status %#x has unknown bits", ErrMalformed, t.status)
	}
	if extra := t.driverFeatures &^ dev.Features(); extra != 0 {
		return s, fmt.Errorf("%w: driver features %#x were not offered by this device", ErrIncompatible, extra)
	}
	if t.status&VIRTIO_CONFIG_S_FEATURES_OK != 0 && t.driverFeatures&(1<<VIRTIO_F_VERSION_1) == 0 {
		return s, fmt.Errorf("%w: FEATURES_OK without VIRTIO_F_VERSION_1", ErrMalformed)
	}
	if t.interruptStatus&^(VIRTIO_MMIO_INT_VRING|VIRTIO_MMIO_INT_CONFIG) != 0 {
		return s, fmt.Errorf("%w: InterruptStatus %#x has unknown bits", ErrMalformed, t.interruptStatus)
	}
	return s, nil
}

// Save encodes the transport's and device's state (version 0 or 1). Call it
// while the VM is paused; Quiesce first so no request is in flight.
func (m *VirtioMMIO) Save(version uint32) (Payload, error) {
	kind := m.dev.StateKind()
	v, err := checkSaveVersion(kind, version, virtioMMIOStateVersion)
	if err != nil {
		return Payload{}, err
	}
	m.mu.Lock()
	s := virtioMMIOSaved{deviceID: m.dev.DeviceID(), t: m.t.clone()}
	data := s.encode(m.dev)
	m.mu.Unlock()
	return Payload{Kind: kind, Version: v, Data: data}, nil
}

// Restore replaces the transport's state with p and drives the interrupt
// line to match; on error the device is unchanged. It serves no requests,
// so call Resume once guest memory is in place: it serves the requests the
// driver made available (and notified) while the source was quiesced, which
// no later notification will announce.
func (m *VirtioMMIO) Restore(p Payload) error {
	if err := checkPayload(p, m.dev.StateKind(), stateVersion{virtioMMIOStateVersion, virtioMMIOStateMax}); err != nil {
		return err
	}
	s, err := decodeVirtioMMIOState(p.Data, m.dev, m.maxima)
	if err != nil {
		return &StateError{Op: "restore", Kind: p.Kind, Version: p.Version, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t = s.t
	m.lastErr = nil
	m.irqKnown = false
	m.updateIRQLocked()
	return nil
}
