package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// run carries one claimed saga forward until it ends, ctx ends (shutdown,
// a crash, a lost lease: the saga is left as stored), or a store fails
// (the saga is left to the next claim, once its lease expires).
func (e *Executor) run(ctx context.Context, r Record) {
	k, ok := e.kinds[r.Kind]
	log := e.log.With("saga", r.ID, "kind", r.Kind, "instance", r.InstanceID.UUID)
	if !ok {
		log.Error("saga: a saga of a kind this executor does not run; left alone")
		return
	}
	s := &Ctx{ID: r.ID, InstanceID: r.InstanceID.UUID, params: r.Params, data: map[string]json.RawMessage{}}
	if len(r.Data) > 0 {
		if err := json.Unmarshal(r.Data, &s.data); err != nil {
			e.stuck(ctx, &r, fmt.Sprintf("its stored data does not decode: %v", err))
			return
		}
	}
	if len(r.Steps) != len(k.Steps) {
		e.stuck(ctx, &r, fmt.Sprintf("it was stored with %d steps, its kind has %d", len(r.Steps), len(k.Steps)))
		return
	}
	log.Info("saga: running", "state", r.State, "step", r.Step)
	for r.State == Running {
		if r.Step >= len(k.Steps) {
			r.State = Done
			if e.save(ctx, &r, s) != nil {
				return
			}
			break
		}
		i := r.Step
		st := k.Steps[i]
		err := e.inject(k.Name, st.Name, BeforeDo)
		if errors.Is(err, ErrCrash) {
			return
		}
		if err == nil {
			err = e.call(ctx, st.Do, s)
		}
		if ctx.Err() != nil {
			return // not the step's failure: this executor stops
		}
		if err == nil {
			if err = e.inject(k.Name, st.Name, AfterDo); errors.Is(err, ErrCrash) {
				return
			}
		}
		if err != nil {
			log.Warn("saga: step failed; unwinding", "step", st.Name, "err", err)
			r.Steps[i], r.State, r.Step = StepFailed, Unwinding, i
			r.Error = fmt.Sprintf("step %s: %v", st.Name, err)
			if e.save(ctx, &r, s) != nil {
				return
			}
			break
		}
		r.Steps[i], r.Step = StepDone, i+1
		if r.Step == len(k.Steps) {
			r.State = Done
		}
		if e.save(ctx, &r, s) != nil {
			return
		}
		if errors.Is(e.inject(k.Name, st.Name, AfterSave), ErrCrash) {
			return
		}
	}
	for r.State == Unwinding {
		i := r.Step
		if i < 0 {
			r.State = Unwound
			if e.save(ctx, &r, s) != nil {
				return
			}
			break
		}
		st := k.Steps[i]
		if st.Undo != nil && (r.Steps[i] == StepDone || r.Steps[i] == StepFailed) {
			err := e.undo(ctx, k.Name, st, s)
			if ctx.Err() != nil || errors.Is(err, ErrCrash) {
				return
			}
			if err != nil {
				e.stuck(ctx, &r, fmt.Sprintf("undo of step %s failed %d times: %v", st.Name, e.o.UndoAttempts, err))
				return
			}
		}
		if r.Steps[i] == StepDone {
			r.Steps[i] = StepUndone
		}
		r.Step = i - 1
		if r.Step < 0 {
			r.State = Unwound
		}
		if e.save(ctx, &r, s) != nil {
			return
		}
	}
	log.Info("saga: ended", "state", r.State, "error", r.Error)
}

// call runs a Do or an Undo, bounded by StepTimeout.
func (e *Executor) call(ctx context.Context, f func(context.Context, *Ctx) error, s *Ctx) error {
	ctx, cancel := context.WithTimeout(ctx, e.o.StepTimeout)
	defer cancel()
	return f(ctx, s)
}

// undo runs a step's Undo, retrying with backoff UndoAttempts times in
// all; the last error when every attempt failed.
func (e *Executor) undo(ctx context.Context, kind string, st Step, s *Ctx) error {
	wait := e.o.UndoBackoff
	var err error
	for attempt := 1; ; attempt++ {
		err = e.inject(kind, st.Name, BeforeUndo)
		if errors.Is(err, ErrCrash) {
			return err
		}
		if err == nil {
			err = e.call(ctx, st.Undo, s)
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		if attempt >= e.o.UndoAttempts {
			return err
		}
		e.log.Warn("saga: undo failed; trying again", "saga", s.ID, "step", st.Name, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// stuck stores the saga stuck, with why, and says so loudly: an operator
// must look at it.
func (e *Executor) stuck(ctx context.Context, r *Record, why string) {
	r.State = Stuck
	if r.Error != "" {
		why = r.Error + "; then " + why
	}
	r.Error = why
	e.log.Error("SAGA STUCK: an operator must repair what it left and mark it", "saga", r.ID, "kind", r.Kind,
		"instance", r.InstanceID.UUID, "step", r.Step, "error", why)
	_ = e.save(ctx, r, nil)
}

// save stores the saga's progress with its data, unless this executor is
// stopping.
func (e *Executor) save(ctx context.Context, r *Record, s *Ctx) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s != nil {
		b, err := json.Marshal(s.data)
		if err != nil {
			return fmt.Errorf("saga %s: encode its data: %w", r.ID, err)
		}
		r.Data = b
	}
	now := e.o.Now().UTC()
	r.TimeUpdated = now
	if err := e.o.Log.SaveSaga(ctx, *r, e.o.Owner, now.Add(e.o.Lease)); err != nil {
		if ctx.Err() == nil {
			e.log.Warn("saga: progress not stored; the saga is left to the next claim", "saga", r.ID, "err", err)
		}
		return err
	}
	return nil
}
