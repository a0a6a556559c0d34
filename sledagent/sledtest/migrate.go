package sledtest

import "github.com/wagglevm/waggle/sledagent"

// SetMigration moves the instance to state s with the progress of its
// migrations in and out (nil: none reported), as if its VM had: a
// migration target is moved with in, a source with out.
func (fi *Instance) SetMigration(s sledagent.VmmState, in, out *sledagent.MigrationProgress) {
	fi.play([]sledagent.VmmState{s}, in, out)
}

// play moves the instance through states (its history, the last being
// its state now) in one observation, with its migrations' progress.
func (fi *Instance) play(states []sledagent.VmmState, in, out *sledagent.MigrationProgress) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.gen++
	o := sledagent.Observation{Gen: fi.gen, State: states[len(states)-1], MigrationIn: in, MigrationOut: out}
	if len(states) > 1 {
		for _, st := range states {
			o.History = append(o.History, sledagent.Transition{State: st})
		}
	}
	fi.obs = o
	close(fi.changed)
	fi.changed = make(chan struct{})
}
