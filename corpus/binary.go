package corpus

// Binary state is stored as JSON, its bytes in base64 (encoding/json's
// []byte), so that every corpus file is one JSON value and a reviewer sees
// what each holds. The shapes:

// DeviceFile is one device's saved state (kind device): the payload exactly
// as the device's Save wrote it, and what the device was, so that replay
// can build a device that accepts it.
type DeviceFile struct {
	Kind    string       `json:"kind"`
	Version uint32       `json:"version"`
	Data    []byte       `json:"data"`
	Device  DeviceConfig `json:"device"`
}

// DeviceConfig says how to build the device a payload belongs to. Fields
// that do not apply to a kind are left out.
type DeviceConfig struct {
	// Port is a UART's COM port ("com1".."com4").
	Port string `json:"port,omitempty"`
	// Slot is a virtio device's virtio-mmio slot.
	Slot *uint8 `json:"slot,omitempty"`
	// DiskBytes, BlockSize and ReadOnly describe a virtio-blk disk.
	DiskBytes int64  `json:"disk_bytes,omitempty"`
	BlockSize uint32 `json:"block_size,omitempty"`
	ReadOnly  bool   `json:"readonly,omitempty"`
}

// MachineFile is the machine's own state (kind machine): vCPUs, irqchip,
// PIT, clock (and any device payloads inside), in package vmm's encoding
// (State.MarshalBinary) at Version, as the Machine frame carries it.
type MachineFile struct {
	Version uint32 `json:"version"`
	Data    []byte `json:"data"`
}

// FrameFile is one frame of the migration stream (kind frame): its type's
// name and the whole frame, header and payload, as the sender wrote it.
type FrameFile struct {
	Type  string `json:"type"`
	Frame []byte `json:"frame"`
}

// VersionsFile says what a build reads (kind versions, name importable):
// the migration protocols it speaks, the spec versions it accepts, the
// device state versions it imports and the machine state version it
// reads. Replay checks that today's build can still write something each
// of them reads, so that today's server can migrate into that release.
type VersionsFile struct {
	Protocols    []uint32            `json:"protocols"`
	SpecVersions []string            `json:"spec_versions"`
	Devices      map[string][]uint32 `json:"devices"`
	MachineState uint32              `json:"machine_state"`
}

// Kinds of binary state.
const (
	KindDevice   = "device"
	KindMachine  = "machine"
	KindFrame    = "frame"
	KindVersions = "versions"
)
