package db

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wagglevm/waggle/controlplane/model"
)

// The columns each read selects, in the order its scan expects.
const (
	sledCols = "id, address, api_versions, cpus, memory_mib, state, time_created, last_contact"
	vmmCols  = "id, instance_id, sled_id, address, cpus, memory_mib, time_created, state, gen, time_updated, " +
		"failure_kind, failure_message, time_retired"
	instanceRuntimeCols = "state, gen, time_updated, active_vmm_id, target_vmm_id, migration_id, failure_kind, failure_message"
	instanceCols        = "id, name, description, spec_version, spec, cpus, memory_mib, time_created, " + instanceRuntimeCols
	migrationCols       = "id, instance_id, source_vmm_id, target_vmm_id, source_state, source_gen, source_time_updated, " +
		"target_state, target_gen, target_time_updated, time_created"
)

// terminalVmmStates lists, for SQL, the VMM states nothing leaves.
const terminalVmmStates = "('failed', 'destroyed', 'saga_unwound')"

// genArg converts a generation for an INT8 column.
func genArg(field string, g model.Generation) (int64, error) {
	if g < model.FirstGeneration || g > math.MaxInt64 {
		return 0, fmt.Errorf("%s %d: out of range [%d, %d]", field, g, model.FirstGeneration, int64(math.MaxInt64))
	}
	return int64(g), nil
}

// genCol converts a generation read from table's row id.
func genCol(table string, id uuid.UUID, col string, v int64) (model.Generation, error) {
	if v < int64(model.FirstGeneration) {
		return 0, fmt.Errorf("%s %s: column %s: generation %d below %d", table, id, col, v, model.FirstGeneration)
	}
	return model.Generation(v), nil
}

// resourcesArgs converts resources for two INT8 columns; both must be
// positive.
func resourcesArgs(field string, r model.Resources) (int64, int64, error) {
	if r.CPUs == 0 {
		return 0, 0, fmt.Errorf("%s.cpus: must be positive", field)
	}
	if r.MemoryMiB == 0 || r.MemoryMiB > math.MaxInt64 {
		return 0, 0, fmt.Errorf("%s.memory_mib %d: out of range [1, %d]", field, r.MemoryMiB, int64(math.MaxInt64))
	}
	return int64(r.CPUs), int64(r.MemoryMiB), nil
}

// resourcesCol converts resources read from table's row id.
func resourcesCol(table string, id uuid.UUID, cpus, mem int64) (model.Resources, error) {
	if cpus < 0 || cpus > math.MaxUint32 {
		return model.Resources{}, fmt.Errorf("%s %s: column cpus: %d out of range", table, id, cpus)
	}
	if mem < 0 {
		return model.Resources{}, fmt.Errorf("%s %s: column memory_mib: %d out of range", table, id, mem)
	}
	return model.Resources{CPUs: uint32(cpus), MemoryMiB: uint64(mem)}, nil
}

// failureArgs splits a failure reason into the failure_kind and
// failure_message columns (NULL and NULL without one).
func failureArgs(field string, r *model.FailureReason) (kind, msg *string, err error) {
	if r == nil {
		return nil, nil, nil
	}
	if !r.Kind.Known() {
		return nil, nil, fmt.Errorf("%s.kind %q: unknown (known: %v)", field, r.Kind, model.FailureKinds)
	}
	k, m := string(r.Kind), r.Message
	return &k, &m, nil
}

// failureCol joins the failure columns of table's row id.
func failureCol(table string, id uuid.UUID, kind, msg *string) (*model.FailureReason, error) {
	if (kind == nil) != (msg == nil) {
		return nil, fmt.Errorf("%s %s: columns failure_kind and failure_message: one is NULL, the other not", table, id)
	}
	if kind == nil {
		return nil, nil
	}
	return &model.FailureReason{Kind: model.FailureKind(*kind), Message: *msg}, nil
}

// vmmStateArgs converts a VMM state for its columns.
func vmmStateArgs(field string, s model.VmmState) (name string, kind, msg *string, err error) {
	if !s.Valid() {
		return "", nil, nil, fmt.Errorf("%s: not a state (the zero VmmState)", field)
	}
	if r, failed := s.FailureReason(); failed {
		kind, msg, err = failureArgs(field+".failure", &r)
	}
	return s.Name(), kind, msg, err
}

// vmmRuntimeArgs checks and converts a VMM runtime for its columns.
func vmmRuntimeArgs(field string, r model.VmmRuntime) (name string, kind, msg *string, gen int64, err error) {
	if name, kind, msg, err = vmmStateArgs(field+".state", r.State); err != nil {
		return
	}
	gen, err = genArg(field+".gen", r.Gen)
	return
}

// migrationRuntimeArgs checks a migration side for its columns.
func migrationRuntimeArgs(field string, r model.MigrationRuntime) (string, int64, error) {
	if _, err := model.ParseMigrationState(string(r.State)); err != nil {
		return "", 0, fmt.Errorf("%s.state: %w", field, err)
	}
	gen, err := genArg(field+".gen", r.Gen)
	return string(r.State), gen, err
}

// instanceRuntimeArgs checks an instance runtime against the model's
// invariants and converts it for its columns: state, gen, time_updated,
// active_vmm_id, target_vmm_id, migration_id, failure_kind,
// failure_message.
func instanceRuntimeArgs(r model.InstanceRuntime) ([]any, error) {
	if _, err := model.ParseInstanceState(string(r.State)); err != nil {
		return nil, fmt.Errorf("runtime.state: %w", err)
	}
	if err := r.Check(); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	gen, err := genArg("runtime.gen", r.Gen)
	if err != nil {
		return nil, err
	}
	kind, msg, err := failureArgs("runtime.failure", r.Failure)
	if err != nil {
		return nil, err
	}
	return []any{string(r.State), gen, r.TimeUpdated, r.ActiveVmm, r.TargetVmm, r.Migration, kind, msg}, nil
}

// scanSled reads a row of sledCols.
func scanSled(row pgx.Row) (model.Sled, error) {
	var (
		s         model.Sled
		cpus, mem int64
		state     string
	)
	if err := row.Scan(&s.ID, &s.Address, &s.APIVersions, &cpus, &mem, &state, &s.TimeCreated, &s.LastContact); err != nil {
		return model.Sled{}, err
	}
	var err error
	if s.Capacity, err = resourcesCol("sled", s.ID, cpus, mem); err != nil {
		return model.Sled{}, err
	}
	switch model.SledState(state) {
	case model.SledActive, model.SledLost:
		s.State = model.SledState(state)
	default:
		return model.Sled{}, fmt.Errorf("sled %s: column state: %q is not a sled state", s.ID, state)
	}
	s.TimeCreated, s.LastContact = s.TimeCreated.UTC(), s.LastContact.UTC()
	if s.APIVersions == nil {
		s.APIVersions = []string{}
	}
	return s, nil
}

// scanVmm reads a row of vmmCols.
func scanVmm(row pgx.Row) (model.Vmm, error) {
	var (
		v          model.Vmm
		cpus, mem  int64
		state      string
		gen        int64
		kind, msg  *string
		retiredCol *time.Time
	)
	if err := row.Scan(&v.ID, &v.InstanceID, &v.SledID, &v.Address, &cpus, &mem, &v.TimeCreated, &state, &gen,
		&v.Runtime.TimeUpdated, &kind, &msg, &retiredCol); err != nil {
		return model.Vmm{}, err
	}
	var err error
	if v.Resources, err = resourcesCol("vmm", v.ID, cpus, mem); err != nil {
		return model.Vmm{}, err
	}
	if v.Runtime.Gen, err = genCol("vmm", v.ID, "gen", gen); err != nil {
		return model.Vmm{}, err
	}
	reason, err := failureCol("vmm", v.ID, kind, msg)
	if err != nil {
		return model.Vmm{}, err
	}
	if v.Runtime.State, err = model.ParseVmmState(state, reason); err != nil {
		return model.Vmm{}, fmt.Errorf("vmm %s: columns state and failure_*: %w", v.ID, err)
	}
	v.TimeCreated, v.Runtime.TimeUpdated = v.TimeCreated.UTC(), v.Runtime.TimeUpdated.UTC()
	if retiredCol != nil {
		t := retiredCol.UTC()
		v.TimeRetired = &t
	}
	return v, nil
}

// instanceRuntimeDest returns the scan destinations of instanceRuntimeCols
// and the function that converts them once scanned.
func instanceRuntimeDest(id *uuid.UUID) ([]any, func() (model.InstanceRuntime, error)) {
	var (
		r         model.InstanceRuntime
		state     string
		gen       int64
		kind, msg *string
	)
	dest := []any{&state, &gen, &r.TimeUpdated, &r.ActiveVmm, &r.TargetVmm, &r.Migration, &kind, &msg}
	return dest, func() (model.InstanceRuntime, error) {
		var err error
		st, err := model.ParseInstanceState(state)
		if err != nil {
			return r, fmt.Errorf("instance %s: column state: %w", *id, err)
		}
		r.State = st
		if r.Gen, err = genCol("instance", *id, "gen", gen); err != nil {
			return r, err
		}
		if r.Failure, err = failureCol("instance", *id, kind, msg); err != nil {
			return r, err
		}
		r.TimeUpdated = r.TimeUpdated.UTC()
		if err := r.Check(); err != nil {
			return r, fmt.Errorf("instance %s: columns of the runtime: %w", *id, err)
		}
		return r, nil
	}
}

// scanInstance reads a row of instanceCols.
func scanInstance(row pgx.Row) (model.Instance, error) {
	var (
		in        model.Instance
		cpus, mem int64
		spec      []byte
	)
	rdest, finish := instanceRuntimeDest(&in.ID)
	dest := append([]any{&in.ID, &in.Name, &in.Description, &in.SpecVersion, &spec, &cpus, &mem, &in.TimeCreated}, rdest...)
	if err := row.Scan(dest...); err != nil {
		return model.Instance{}, err
	}
	var err error
	if in.Resources, err = resourcesCol("instance", in.ID, cpus, mem); err != nil {
		return model.Instance{}, err
	}
	if in.Runtime, err = finish(); err != nil {
		return model.Instance{}, err
	}
	in.Spec = spec
	in.TimeCreated = in.TimeCreated.UTC()
	return in, nil
}

// scanMigration reads a row of migrationCols.
func scanMigration(row pgx.Row) (model.Migration, error) {
	var (
		m                  model.Migration
		srcState, tgtState string
		srcGen, tgtGen     int64
	)
	if err := row.Scan(&m.ID, &m.InstanceID, &m.SourceVmm, &m.TargetVmm, &srcState, &srcGen, &m.Source.TimeUpdated,
		&tgtState, &tgtGen, &m.Target.TimeUpdated, &m.TimeCreated); err != nil {
		return model.Migration{}, err
	}
	var err error
	for _, side := range []struct {
		col   string
		state string
		gen   int64
		dst   *model.MigrationRuntime
	}{{"source", srcState, srcGen, &m.Source}, {"target", tgtState, tgtGen, &m.Target}} {
		if side.dst.State, err = model.ParseMigrationState(side.state); err != nil {
			return model.Migration{}, fmt.Errorf("migration %s: column %s_state: %w", m.ID, side.col, err)
		}
		if side.dst.Gen, err = genCol("migration", m.ID, side.col+"_gen", side.gen); err != nil {
			return model.Migration{}, err
		}
		side.dst.TimeUpdated = side.dst.TimeUpdated.UTC()
	}
	m.TimeCreated = m.TimeCreated.UTC()
	return m, nil
}

// validSpec checks an instance's spec: present, and JSON.
func validSpec(spec []byte) error {
	if len(spec) == 0 {
		return fmt.Errorf("spec: empty")
	}
	if !json.Valid(spec) {
		return fmt.Errorf("spec: not JSON")
	}
	return nil
}
