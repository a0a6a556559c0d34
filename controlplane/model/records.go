package model

import (
	"time"

	"github.com/google/uuid"
)

// SledState is whether the control plane hears from a sled.
//
//	active -> lost (silent for longer than the control plane waits)
//	lost   -> active (it registered again)
type SledState string

const (
	SledActive SledState = "active"
	SledLost   SledState = "lost"
)

// Resources are CPUs and memory, offered by a sled or reserved by a VMM.
type Resources struct {
	CPUs      uint32
	MemoryMiB uint64
}

// Sled is a host of the fleet and its agent.
type Sled struct {
	ID          uuid.UUID
	Address     string   // the agent's host:port
	APIVersions []string // sled-agent API versions the agent serves, e.g. ["v1"]
	Capacity    Resources
	State       SledState
	TimeCreated time.Time
	LastContact time.Time // the last registration, ring or answer
}

// Instance is a VM as users know it, apart from the VMMs that incarnate it.
type Instance struct {
	ID          uuid.UUID
	Name        string
	Description string
	// SpecVersion names the version of the spec in Spec, as the versioned
	// envelope does (e.g. "vmm-server/v1"); Spec holds that version's JSON
	// as the user gave it.
	SpecVersion string
	Spec        []byte
	Resources   Resources // what a VMM of this instance reserves on its sled
	TimeCreated time.Time
	Runtime     InstanceRuntime
}

// Vmm is one incarnation of an instance on one sled.
type Vmm struct {
	ID          uuid.UUID
	InstanceID  uuid.UUID
	SledID      uuid.UUID
	Address     string // the VMM server's host:port once its agent reported it; "" before
	Resources   Resources
	TimeCreated time.Time
	Runtime     VmmRuntime
	// TimeRetired is set once the VMM is terminal, its final state stored
	// and its sled agent told to forget it.
	TimeRetired *time.Time
}

// WriteResult says what a generation-checked write did.
type WriteResult int

const (
	// WriteUpdated: the write was newer, and applied.
	WriteUpdated WriteResult = iota + 1
	// WriteStale: the record holds this generation or a newer one; nothing
	// changed.
	WriteStale
	// WriteMissing: there is no such record.
	WriteMissing
)

func (w WriteResult) String() string {
	switch w {
	case WriteUpdated:
		return "updated"
	case WriteStale:
		return "stale"
	case WriteMissing:
		return "missing"
	}
	return "invalid"
}
