package server

import (
	"context"
	"net"
	"net/http"

	"github.com/google/uuid"
)

// migrations tracks the instance's migrations; guarded by Runtime.mu.
type migrations struct {
	in, out *MigrationProgress
}

func (m *migrations) statusLocked() MigrationStatus {
	st := MigrationStatus{}
	if m.in != nil {
		in := *m.in
		st.In = &in
	}
	if m.out != nil {
		out := *m.out
		st.Out = &out
	}
	return st
}

// ensureMigrationTargetLocked would create the instance as a migration
// target. Live migration is not built yet.
func (r *Runtime) ensureMigrationTargetLocked(context.Context, EnsureRequest) (Instance, bool, error) {
	return Instance{}, false, &apiError{http.StatusNotImplemented, CodeNotImplemented, "migrate: live migration is not implemented yet"}
}

// MigrateSource serves no migrations yet.
func (r *Runtime) MigrateSource(context.Context, uuid.UUID) (func(context.Context, net.Conn) error, error) {
	return nil, ErrNoSuchMigration
}
