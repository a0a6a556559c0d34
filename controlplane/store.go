package controlplane

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
)

// ErrNotFound is the error of a store read for a record that does not
// exist (errors.Is).
var ErrNotFound = errors.New("not found")

// ErrUnavailable wraps the store's errors when the database cannot be
// reached: callers answer 503 and try again later (errors.Is).
var ErrUnavailable = errors.New("the database is unavailable")

// ErrConflict is the error of a write that an invariant refuses: a name in
// use, a VMM for an instance that has one, a reservation beyond a sled's
// capacity (errors.Is; the message says which).
var ErrConflict = errors.New("conflict")

// Applied says what storing a sled agent's report did.
type Applied struct {
	// Vmm is what the generation-checked write of the VMM's own state did.
	Vmm model.WriteResult
	// Migrations counts the migration sides that moved to a newer
	// generation.
	Migrations int
	// Instance says whether the instance's runtime changed (a hand-off, a
	// dropped migration, a VMM that ended).
	Instance bool
	// Stored is the VMM as stored after the write (its state may be newer
	// than the report's when the report was stale).
	Stored model.Vmm
}

// Store keeps the fleet's records. Package controlplane/db implements it on
// PostgreSQL; every write of a state is generation-checked in one statement.
type Store interface {
	// RegisterSled inserts or updates a sled (address, versions, capacity),
	// marks it active and its last contact now.
	RegisterSled(ctx context.Context, s model.Sled) error
	// TouchSled moves a sled's last contact to at, when later.
	TouchSled(ctx context.Context, id uuid.UUID, at time.Time) error
	// Sled reads one sled (ErrNotFound).
	Sled(ctx context.Context, id uuid.UUID) (model.Sled, error)
	// Sleds lists every sled, by id.
	Sleds(ctx context.Context) ([]model.Sled, error)
	// SledsAfter lists at most limit sleds whose ids sort after after
	// (from the first when after is not Valid), by id: one page.
	SledsAfter(ctx context.Context, after uuid.NullUUID, limit int) ([]model.Sled, error)
	// MarkSledLost marks an active sled lost, when its last contact is
	// before silentSince, and fails every VMM on it that still exists on
	// the sled with reason sled_lost (each with its next generation, its
	// instance updated as ApplyVmm says, its reservation released), in one
	// transaction. It returns the VMMs it failed; none and false when the
	// sled was heard from since (or is lost already).
	MarkSledLost(ctx context.Context, id uuid.UUID, silentSince time.Time, now time.Time) ([]uuid.UUID, bool, error)
	// ReviveSled marks a lost sled active, its last contact at (when
	// later), and says whether it was lost; ErrNotFound for an unknown
	// sled.
	ReviveSled(ctx context.Context, id uuid.UUID, at time.Time) (bool, error)

	// CreateInstance inserts an instance in its given runtime state
	// (ErrConflict when the name or id is taken).
	CreateInstance(ctx context.Context, in model.Instance) error
	// Instance reads one instance (ErrNotFound).
	Instance(ctx context.Context, id uuid.UUID) (model.Instance, error)
	// UpdateInstanceRuntime writes r when r.Gen is newer than the stored
	// generation, in one statement.
	UpdateInstanceRuntime(ctx context.Context, id uuid.UUID, r model.InstanceRuntime) (model.WriteResult, error)

	// CreateVmm inserts a VMM and reserves its resources on its sled in one
	// transaction (ErrConflict when the sled lacks room, or is not active).
	CreateVmm(ctx context.Context, v model.Vmm) error
	// Vmm reads one VMM (ErrNotFound).
	Vmm(ctx context.Context, id uuid.UUID) (model.Vmm, error)
	// VmmsOnSled lists the VMMs of a sled not yet retired, by id.
	VmmsOnSled(ctx context.Context, sled uuid.UUID) ([]model.Vmm, error)
	// UpdateVmmRuntime writes r when r.Gen is newer than the stored
	// generation, in one statement, releasing the VMM's reservation when
	// r.State is destroyable.
	UpdateVmmRuntime(ctx context.Context, id uuid.UUID, r model.VmmRuntime) (model.WriteResult, error)
	// ApplySledVmmState stores a sled agent's report of a VMM in one
	// transaction: the VMM's state and address (generation-checked), each
	// side of its migrations (generation-checked), and what ApplyVmm says
	// for its instance; a destroyable VMM's reservation is released.
	// Applied.Vmm is WriteMissing for an unknown VMM.
	ApplySledVmmState(ctx context.Context, id uuid.UUID, addr string, st model.SledVmmState, now time.Time) (Applied, error)
	// RetireVmm records that a terminal VMM's final state is stored and its
	// sled agent told to forget it.
	RetireVmm(ctx context.Context, id uuid.UUID, at time.Time) error

	// CreateMigration inserts a migration (both sides pending, generation
	// 1) and points its instance at the target VMM and the migration, in
	// one transaction (ErrConflict when the instance has no active VMM
	// equal to the source, or migrates already).
	CreateMigration(ctx context.Context, m model.Migration) error
	// Migration reads one migration (ErrNotFound).
	Migration(ctx context.Context, id uuid.UUID) (model.Migration, error)

	// Reserved sums what the VMMs of a sled hold (their reservations).
	Reserved(ctx context.Context, sled uuid.UUID) (model.Resources, error)

	// Instances lists the instances not destroyed, by name.
	Instances(ctx context.Context) ([]model.Instance, error)
	// InstancesAfter lists at most limit instances not destroyed whose
	// names sort after after ("" for the first page), by name: one page.
	InstancesAfter(ctx context.Context, after string, limit int) ([]model.Instance, error)
	// InstanceByName reads the instance not destroyed with that name
	// (ErrNotFound).
	InstanceByName(ctx context.Context, name string) (model.Instance, error)
	// LockInstance takes an instance's updater lock for a saga, in one
	// statement that applies only when no saga, or that one, holds it
	// (ErrInstanceBusy, ErrNotFound).
	LockInstance(ctx context.Context, id, saga uuid.UUID) error
	// UnlockInstance releases the updater lock that saga holds on the
	// instance; one it does not hold is left as it is.
	UnlockInstance(ctx context.Context, id, saga uuid.UUID) error

	// The saga log (saga.Log: create, read, claim, renew, save), where
	// CreateSaga with lock takes the instance's updater lock in the same
	// transaction (ErrInstanceBusy).
	saga.Log
}
