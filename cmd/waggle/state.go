package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// A goal is what a state request waits for: the states that meet it, and
// the states from which, by the instance lifecycle (InstanceState in the
// contract), it can no longer come.
type goal struct {
	want    string   // the goal, for messages: "running"
	already []string // states in which the request has nothing to do
	met     []string
	lost    []string
}

var notRunning = []string{stateStopping, stateStopped,
	stateDestroyed, stateFailed}

// goals are the state requests' goals. The server accepts a request that
// is already met or under way, so the CLI checks the state first.
var goals = map[string]goal{
	"run": {want: "running", already: []string{stateRunning},
		met: []string{stateRunning}, lost: notRunning},
	"stop": {want: "stopped", already: []string{stateStopped, stateDestroyed},
		met: []string{stateStopped, stateDestroyed}},
	"reboot": {want: "running", met: []string{stateRunning}, lost: notRunning},
}

// reached says whether st ends the wait for g, and with what error: nil
// when st meets g, or when the VM has ended (destroyed) and g names no
// state; an error when the VM failed or g can no longer be met.
func (g goal) reached(st stateChange) (bool, error) {
	switch {
	case slices.Contains(g.met, st.State):
		return true, nil
	case st.State == stateFailed:
		return true, fmt.Errorf("the VM failed: %s", st.failureText())
	case st.MigratedOut != nil && g.want != "":
		return true, fmt.Errorf("the VM is no longer here: %s", movedText(*st.MigratedOut))
	case slices.Contains(g.lost, st.State):
		return true, fmt.Errorf("the VM is %s: it will not be %s", st.State, g.want)
	case st.State == stateDestroyed:
		return true, nil
	}
	return false, nil
}

// stateChange is one state the CLI prints: a transition the server
// remembered, or the state it answered. Its JSON is a line of `-o json`.
type stateChange struct {
	Gen   int64  `json:"gen"`
	State string `json:"state"`
	// At is when the server saw the change; absent for a state the CLI
	// only asked for.
	At *time.Time `json:"at,omitempty"`
	// FailureReason is why the VM failed, on a failed state, and
	// FailureKind its kind, where the API version spoken tells it (v2).
	FailureReason *string `json:"failure_reason,omitempty"`
	FailureKind   string  `json:"failure_kind,omitempty"`
	// MigratedOut is the outbound migration that took the VM away, on a
	// source's destroyed state.
	MigratedOut *migrationProgress `json:"migration_out,omitempty"`
}

// withFailure sets st's failure fields from f.
func (st stateChange) withFailure(f *failure) stateChange {
	if f != nil {
		msg := f.Message
		st.FailureReason, st.FailureKind = &msg, f.Kind
	}
	return st
}

// failureText is the failure as a line of text: "kind: message".
func (st stateChange) failureText() string {
	return (&failure{Kind: st.FailureKind, Message: deref(st.FailureReason)}).String()
}

// current is the state a state-monitor answer st is in.
func current(st stateView) stateChange {
	return stateChange{Gen: st.Gen, State: st.State, MigratedOut: migratedOut(st)}.withFailure(st.Failure)
}

// changesAfter returns what st, a state-monitor answer, tells of the
// changes after gen, oldest first: every transition the server remembered
// (its history), ending with the current state; or the current state
// alone when the server keeps no history; nothing when the generation did
// not pass gen.
func changesAfter(st stateView, gen int64) []stateChange {
	if st.Gen <= gen {
		return nil
	}
	var out []stateChange
	if st.History != nil {
		for _, t := range st.History {
			if t.Gen <= gen || t.Gen > st.Gen || (len(out) > 0 && t.Gen <= out[len(out)-1].Gen) {
				continue
			}
			at := t.At
			out = append(out, stateChange{Gen: t.Gen, State: t.State, At: &at}.withFailure(t.Failure))
		}
	}
	cur := current(st)
	if n := len(out); n > 0 && out[n-1].Gen == st.Gen {
		cur.At = out[n-1].At
		out[n-1] = cur
	} else {
		out = append(out, cur)
	}
	return out
}

func (c *vmCmd) state(ctx context.Context, verb string, args []string) error {
	wait := c.fs.Bool("wait", true, "wait until the VM reaches the state asked for (or fails)")
	cl, err := c.connect(ctx, args)
	if err != nil {
		return err
	}
	g := goals[verb]
	now, err := stateNow(ctx, cl)
	if err != nil {
		return err
	}
	if err := c.printState(current(now)); err != nil {
		return err
	}
	if slices.Contains(g.already, now.State) {
		return nil // nothing to do
	}
	// A reboot under way is the reboot asked for: wait for its end.
	if verb != "reboot" || now.State != stateRebooting {
		if err := cl.request(ctx, verb); err != nil {
			var e *apiError
			if errors.As(err, &e) && e.Code == codeInvalidTransition {
				switch {
				case migratedOut(now) != nil:
					e.Hint = movedText(*migratedOut(now)) + ": drive it there"
				case ended(now.State):
					e.Hint = "the VM has ended; `waggle vm create` makes a new one"
				}
			}
			return err
		}
	}
	if !*wait {
		return nil
	}
	return c.follow(ctx, cl, now.Gen, g)
}

// stateNow returns the instance's state view at once, as the state
// monitor shows it.
func stateNow(ctx context.Context, cl vmmAPI) (stateView, error) {
	var now time.Duration
	return cl.monitor(ctx, 0, &now)
}

// printState prints one state: a JSON line, or a timestamped line of text.
func (c *vmCmd) printState(st stateChange) error {
	if c.json() {
		return json.NewEncoder(c.stdout).Encode(st)
	}
	at := time.Now()
	if st.At != nil {
		at = st.At.Local()
	}
	line := fmt.Sprintf("%s  gen %d  %s", at.Format("15:04:05.000"), st.Gen, st.State)
	switch {
	case st.FailureReason != nil:
		line += ": " + st.failureText()
	case st.MigratedOut != nil:
		line += ": " + movedText(*st.MigratedOut)
	}
	_, err := fmt.Fprintln(c.stdout, line)
	return err
}

// follow prints each state change after gen until g is reached (see
// goal.reached).
func (c *vmCmd) follow(ctx context.Context, cl vmmAPI, gen int64, g goal) error {
	for {
		st, err := cl.monitor(ctx, gen, nil)
		if err != nil {
			return err
		}
		// Print every change of the answer; the first that ends the wait
		// decides how.
		var done bool
		var result error
		for _, st := range changesAfter(st, gen) {
			gen = st.Gen
			if err := c.printState(st); err != nil {
				return err
			}
			if !done {
				done, result = g.reached(st)
			}
		}
		if done {
			return result
		}
	}
}

// watch prints the current state, then every change until the VM ends: it
// exits 0 once the VM is destroyed, 1 if it failed.
func (c *vmCmd) watch(ctx context.Context, args []string) error {
	cl, err := c.connect(ctx, args)
	if err != nil {
		return err
	}
	now, err := stateNow(ctx, cl)
	if err != nil {
		return err
	}
	first := current(now)
	if err := c.printState(first); err != nil {
		return err
	}
	if done, err := (goal{}).reached(first); done {
		return err
	}
	err = c.follow(ctx, cl, now.Gen, goal{})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
