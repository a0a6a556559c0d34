package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// State is where a saga stands (the values of controlplane.SagaState).
type State string

// The states of a saga.
const (
	Running   State = "running"
	Unwinding State = "unwinding"
	Done      State = "done"
	Unwound   State = "unwound"
	Stuck     State = "stuck"
)

// InFlight says whether an executor still has work on a saga in state s.
func (s State) InFlight() bool { return s == Running || s == Unwinding }

// StepState is where one step stands (the values of
// controlplane.StepState).
type StepState string

// The states of a step.
const (
	StepPending StepState = "pending"
	StepDone    StepState = "done"
	StepFailed  StepState = "failed"
	StepUndone  StepState = "undone"
)

// Step is one step of a saga. Do and Undo must be idempotent: either may
// run again after a crash, and Undo may run for a step whose Do failed
// half-way or never ran. Undo is nil for a step that changes nothing to be
// undone.
type Step struct {
	Name string // stable: the API shows it
	Do   func(ctx context.Context, s *Ctx) error
	Undo func(ctx context.Context, s *Ctx) error
}

// Kind is a kind of saga: its stable name and ordered steps.
type Kind struct {
	Name  string
	Steps []Step
}

// Record is a saga as the Log keeps it.
type Record struct {
	ID         uuid.UUID
	Kind       string
	InstanceID uuid.NullUUID
	Params     json.RawMessage // the request, as the kind's params
	Data       json.RawMessage // a JSON object of what steps recorded
	State      State
	// Step is, while running, the next step to do; while unwinding, the
	// next step to undo (-1 when none is left).
	Step        int
	Steps       []StepState // one per step of the kind
	Error       string      // why it unwound (and why it is stuck)
	Owner       uuid.NullUUID
	LeaseUntil  time.Time
	TimeCreated time.Time
	TimeUpdated time.Time
}

// ErrLocked is the error of CreateSaga asked to take an instance's updater
// lock that another saga holds (errors.Is).
var ErrLocked = errors.New("another saga holds the instance's updater lock")

// ErrLeaseLost is the error of a Log write by an executor that no longer
// owns the saga (errors.Is): another executor claimed it.
var ErrLeaseLost = errors.New("the saga is owned by another executor")

// Log stores sagas. Package controlplane/db implements it.
type Log interface {
	// CreateSaga inserts a new saga (unowned, its lease expired, so that
	// any executor claims it). With lock, it takes the updater lock of
	// r.InstanceID for r.ID in the same transaction (ErrLocked when another
	// saga holds it).
	CreateSaga(ctx context.Context, r Record, lock bool) error
	// Saga reads one saga (an error wrapping controlplane.ErrNotFound when
	// there is none).
	Saga(ctx context.Context, id uuid.UUID) (Record, error)
	// ClaimSagas makes owner the owner of at most limit sagas in flight
	// whose lease expired before now, or that owner owns already and are
	// not in skip, with a lease until leaseUntil, and returns them.
	ClaimSagas(ctx context.Context, owner uuid.UUID, skip []uuid.UUID, now, leaseUntil time.Time, limit int) ([]Record, error)
	// RenewLeases extends to leaseUntil the leases that owner holds on
	// ids, and returns the ids it still owns.
	RenewLeases(ctx context.Context, owner uuid.UUID, ids []uuid.UUID, leaseUntil time.Time) ([]uuid.UUID, error)
	// SaveSaga stores r's progress (data, state, step, step states, error,
	// time updated) and extends its lease, when owner still owns it
	// (ErrLeaseLost otherwise).
	SaveSaga(ctx context.Context, r Record, owner uuid.UUID, leaseUntil time.Time) error
}

// Ctx is what a step sees of its saga: its ids, its params and its data.
type Ctx struct {
	ID         uuid.UUID
	InstanceID uuid.UUID // uuid.Nil for a saga of no instance
	params     json.RawMessage
	data       map[string]json.RawMessage
}

// Params decodes the saga's params into v.
func (s *Ctx) Params(v any) error {
	if err := json.Unmarshal(s.params, v); err != nil {
		return fmt.Errorf("saga %s: decode its params: %w", s.ID, err)
	}
	return nil
}

// Put records v under key in the saga's data; it is stored with the step.
func (s *Ctx) Put(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("saga %s: record %s: %w", s.ID, key, err)
	}
	s.data[key] = b
	return nil
}

// Get decodes the data recorded under key into v; false when there is
// none.
func (s *Ctx) Get(key string, v any) (bool, error) {
	b, ok := s.data[key]
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("saga %s: decode %s: %w", s.ID, key, err)
	}
	return true, nil
}

// Phase is a point in a step's run where Options.Inject is asked.
type Phase string

// The phases of a step.
const (
	// BeforeDo: the step is about to run. An error fails it unrun.
	BeforeDo Phase = "before_do"
	// AfterDo: the step's Do succeeded; its record is not stored yet. An
	// error fails the step as if Do had failed after its effect; ErrCrash
	// is a death before the record (the step runs again on resume).
	AfterDo Phase = "after_do"
	// AfterSave: the step's record is stored. ErrCrash is a death after
	// it; other errors are ignored (the step is done).
	AfterSave Phase = "after_save"
	// BeforeUndo: the step's Undo is about to run. An error fails this
	// attempt of it (it is retried); ErrCrash is a death.
	BeforeUndo Phase = "before_undo"
)

// Phases lists every phase.
var Phases = []Phase{BeforeDo, AfterDo, AfterSave, BeforeUndo}

// ErrCrash, returned by Options.Inject, makes the executor stop dead at
// once, as a killed control plane would: no more writes, every saga left
// as stored, Run returning ErrCrash.
var ErrCrash = errors.New("saga: injected crash")

// InjectFunc decides, at each phase of each step, whether to inject a
// fault: nil for none, ErrCrash for a crash, another error to fail.
type InjectFunc func(kind, step string, phase Phase) error
