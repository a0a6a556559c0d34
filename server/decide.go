package server

// decision is what a state change request does.
type decision uint8

const (
	// refuse: 409 invalid_transition, naming the state.
	refuse decision = iota
	// alreadyDone: the request is met, or on its way; nothing changes.
	alreadyDone
	// honour: run goes to starting, stop to stopping, reboot to rebooting.
	honour
	// abortAndStop: a stop during an outbound migration aborts the
	// migration and stops the VM: migrating -> stopping at once, then
	// stopped and destroyed once the aborted migration has resumed the VM
	// and let go of what it held.
	abortAndStop
)

// decide is the lifecycle's rule book, one exhaustive switch over the
// state: hasVM says the instance has a VM (a migration target waiting for
// its source has none); migratingOut that an outbound migration can still
// be aborted (before its hand-off).
func decide(s State, req Requested, hasVM, migratingOut bool) decision {
	switch s {
	case StateCreating:
		if !hasVM {
			return refuse
		}
		switch req {
		case RequestRun, RequestStop:
			return honour
		case RequestReboot:
			return refuse
		}
	case StateStarting:
		switch req {
		case RequestRun:
			return alreadyDone
		case RequestStop, RequestReboot:
			return refuse
		}
	case StateRunning:
		switch req {
		case RequestRun:
			return alreadyDone
		case RequestStop, RequestReboot:
			return honour
		}
	case StateRebooting:
		switch req {
		case RequestReboot:
			return alreadyDone
		case RequestRun, RequestStop:
			return refuse
		}
	case StateStopping, StateStopped, StateDestroyed:
		switch req {
		case RequestStop:
			return alreadyDone
		case RequestRun, RequestReboot:
			return refuse
		}
	case StateMigrating:
		if req == RequestStop && migratingOut && hasVM {
			return abortAndStop
		}
		return refuse
	case StateFailed:
		return refuse
	}
	return refuse
}
