package v1

import (
	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

func vmmStateNames() []string { return model.VmmStateNames }

func visibleStates() []string {
	var out []string
	for _, s := range []model.VisibleState{model.VisibleCreating, model.VisibleStarting, model.VisibleRunning, model.VisibleStopping,
		model.VisibleStopped, model.VisibleRebooting, model.VisibleMigrating, model.VisibleFailed, model.VisibleDestroyed} {
		out = append(out, string(s))
	}
	return out
}

func failureKinds() []any {
	var out []any
	for _, k := range model.FailureKinds {
		out = append(out, string(k))
	}
	return out
}

func sagaErrorCodes() []string {
	var out []string
	for _, c := range controlplane.SagaErrorCodes {
		out = append(out, string(c))
	}
	return out
}

func sagaKinds() []string {
	return []string{controlplane.KindInstanceStart, controlplane.KindInstanceStop, controlplane.KindInstanceReboot,
		controlplane.KindInstanceMigrate, controlplane.KindInstanceDelete}
}
