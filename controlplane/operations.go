package controlplane

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
)

// The domain errors of the operations users ask for. The external API maps
// each to its status and error code; the message says what to do.
var (
	// ErrNameInUse: another instance has that name.
	ErrNameInUse = errors.New("the name is in use")
	// ErrInstanceBusy: another saga updates the instance (it holds the
	// instance's updater lock); try again when it ends.
	ErrInstanceBusy = errors.New("another operation on the instance is under way")
	// ErrInvalidState: the instance's state does not allow the operation
	// (start a running instance, delete one that runs, ...).
	ErrInvalidState = errors.New("the instance's state does not allow this")
	// ErrNoCapacity: no active sled has the room the instance needs.
	ErrNoCapacity = errors.New("no sled has room for the instance")
	// ErrSameSled: a migration to the sled the instance runs on.
	ErrSameSled = errors.New("the instance runs on that sled already")
	// ErrInvalidSpec: the instance's spec does not decode or validate in
	// its version (the error names the field).
	ErrInvalidSpec = errors.New("the spec is not valid")
)

// InstanceCreate is a request to create an instance.
type InstanceCreate struct {
	Name        string
	Description string
	SpecVersion string // e.g. "vmm-server/v1"
	Spec        []byte // that version's InstanceSpec, JSON
	Start       bool   // start it once created
}

// InstanceView is an instance as users see it: its record, its visible
// state derived from the record and its active VMM, where it runs and
// whether it migrates.
type InstanceView struct {
	Instance  model.Instance
	State     model.VisibleState
	ActiveVmm *model.Vmm       // nil when it has none
	Migration *model.Migration // nil unless one is under way
}

// SledView is a sled with what its VMMs hold.
type SledView struct {
	Sled     model.Sled
	Reserved model.Resources
	Vmms     int // VMMs not yet retired
}

// SagaState is where a saga stands.
//
//	running   -> done, unwinding
//	unwinding -> unwound, stuck
//	done, unwound (terminal)
//	stuck     (terminal: an undo failed past its retries; needs an operator)
type SagaState string

const (
	SagaRunning   SagaState = "running"
	SagaUnwinding SagaState = "unwinding"
	SagaDone      SagaState = "done"
	SagaUnwound   SagaState = "unwound"
	SagaStuck     SagaState = "stuck"
)

// StepState is where one step of a saga stands.
type StepState string

const (
	StepPending StepState = "pending"
	StepDone    StepState = "done"
	StepFailed  StepState = "failed"
	StepUndone  StepState = "undone"
)

// StepView is one step of a saga, for people watching its progress.
type StepView struct {
	Name  string
	State StepState
}

// SagaView is a saga's progress.
type SagaView struct {
	ID         uuid.UUID
	Kind       string // instance_start, instance_stop, instance_reboot, instance_migrate, instance_delete
	InstanceID uuid.UUID
	State      SagaState
	Steps      []StepView
	Error      string // why it unwound (or stuck); empty otherwise
	// ErrorCode is Error's stable code (of the failure that made it
	// unwind, for one stuck too); empty when it did not fail.
	ErrorCode   SagaErrorCode
	TimeCreated time.Time
	TimeUpdated time.Time
}

// Operations are what users ask of the control plane; the external API
// serves them. Instances are named by id or by name (ref). An operation
// that takes time starts a saga and answers its view at once; its progress
// is read with Saga.
type Operations interface {
	CreateInstance(ctx context.Context, req InstanceCreate) (InstanceView, *SagaView, error)
	ListInstances(ctx context.Context) ([]InstanceView, error)
	// ListInstancesPage lists one page of the instances not destroyed: at
	// most limit whose names sort after after ("" for the first page), by
	// name.
	ListInstancesPage(ctx context.Context, after string, limit int) ([]InstanceView, error)
	GetInstance(ctx context.Context, ref string) (InstanceView, error)
	StartInstance(ctx context.Context, ref string) (SagaView, error)
	StopInstance(ctx context.Context, ref string) (SagaView, error)
	RebootInstance(ctx context.Context, ref string) (SagaView, error)
	// MigrateInstance moves the instance to the sled target, or to any
	// other sled with room when target is not Valid.
	MigrateInstance(ctx context.Context, ref string, target uuid.NullUUID) (SagaView, error)
	DeleteInstance(ctx context.Context, ref string) (SagaView, error)
	Saga(ctx context.Context, id uuid.UUID) (SagaView, error)
	ListSleds(ctx context.Context) ([]SledView, error)
	// ListSledsPage lists one page of the sleds: at most limit whose ids
	// sort after after (from the first when after is not Valid), by id.
	ListSledsPage(ctx context.Context, after uuid.NullUUID, limit int) ([]SledView, error)
	// OpenSerial connects to the serial console of the instance's active
	// VMM through its sled agent (ErrInvalidState when it has none).
	OpenSerial(ctx context.Context, ref string, fromStart *uint64) (io.ReadWriteCloser, error)
}
