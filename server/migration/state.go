package migration

import "time"

// MaxDeviceState bounds one device's state.
const MaxDeviceState = 1 << 20

// Device carries one device's state, tagged with its kind and the version of
// its encoding, under the device's spec component key.
type Device struct {
	Key     string
	Kind    string
	Version uint32
	Data    []byte
}

// Encode returns the payload.
func (dv Device) Encode() []byte {
	var e enc
	e.str(dv.Key)
	e.str(dv.Kind)
	e.u32(dv.Version)
	e.bytes(dv.Data)
	return e.b
}

// DecodeDevice parses a Device payload.
func DecodeDevice(p []byte) (Device, error) {
	d := dec{b: p, msg: TypeDevice}
	dv := Device{Key: d.str("key", maxNameLen), Kind: d.str("kind", maxNameLen), Version: d.u32("version")}
	dv.Data = d.bytes("data", MaxDeviceState)
	return dv, d.done()
}

// Machine carries the VM's vCPUs, irqchip, PIT and clock, in the encoding of
// package vmm (its MachineStateVersion).
type Machine struct {
	Version uint32
	Data    []byte
}

// Encode returns the payload.
func (m Machine) Encode() []byte {
	var e enc
	e.u32(m.Version)
	e.bytes(m.Data)
	return e.b
}

// DecodeMachine parses a Machine payload.
func DecodeMachine(p []byte) (Machine, error) {
	d := dec{b: p, msg: TypeMachine}
	m := Machine{Version: d.u32("version")}
	m.Data = d.bytes("data", MaxPayload)
	return m, d.done()
}

// Commit is the hand-off: the source will never run the VM again. It says
// how long the VM has been paused, so that the target can report the whole
// downtime without comparing clocks.
type Commit struct {
	PausedFor time.Duration
}

// Encode returns the payload.
func (c Commit) Encode() []byte {
	var e enc
	e.u64(uint64(max(c.PausedFor, 0)))
	return e.b
}

// DecodeCommit parses a Commit payload.
func DecodeCommit(p []byte) (Commit, error) {
	d := dec{b: p, msg: TypeCommit}
	c := Commit{PausedFor: time.Duration(d.u64("paused for"))}
	if d.err == nil && c.PausedFor < 0 {
		d.fail("paused for %d ns", uint64(c.PausedFor))
	}
	return c, d.done()
}

// DecodeEmpty checks the payload of a message that carries nothing (Ready,
// StateDone, Imported).
func DecodeEmpty(t Type, p []byte) error {
	d := dec{b: p, msg: t}
	return d.done()
}
