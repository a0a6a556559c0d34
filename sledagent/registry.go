package sledagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// registryName is the registry's file in the agent's root.
const registryName = "registry.json"

// registryFile is the registry on disk: the agent's own format, not an API.
type registryFile struct {
	SledID uuid.UUID   `json:"sled_id"`
	VMMs   []vmmRecord `json:"vmms"`
	Saved  time.Time   `json:"saved"`
}

// vmmRecord is what the agent keeps of one VMM across its own restarts.
type vmmRecord struct {
	ID          uuid.UUID `json:"vmm_id"`
	Properties  diskProps `json:"instance"`
	CPUs        uint32    `json:"cpus"`
	MemoryMiB   uint64    `json:"memory_mib"`
	Fingerprint string    `json:"fingerprint"`
	Pid         int       `json:"pid"`
	Port        int       `json:"port"`
	Addr        string    `json:"addr"`
	TokenPath   string    `json:"token_path"`
	Dir         string    `json:"dir"`
	ServerGen   uint64    `json:"server_gen"`
	State       diskState `json:"state"`
	// Starting marks a VMM whose server was started but whose ensure has
	// not ended: if the agent stops meanwhile, the next one kills the
	// process and removes its directory (the control plane was never told
	// it exists).
	Starting bool `json:"starting,omitempty"`
	// CheckBoard marks a migration target whose spec (from the source)
	// has not yet been compared with its reservation.
	CheckBoard bool `json:"check_board,omitempty"`
}

type diskProps struct {
	ID          uuid.UUID `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
}

type diskState struct {
	State        VmmState          `json:"state"`
	Gen          uint64            `json:"gen"`
	TimeUpdated  time.Time         `json:"time_updated"`
	Failure      *FailureReason    `json:"failure,omitempty"`
	MigrationIn  *MigrationRuntime `json:"migration_in,omitempty"`
	MigrationOut *MigrationRuntime `json:"migration_out,omitempty"`
}

func toDiskState(s SledVmmState) diskState {
	return diskState{s.State, s.Gen, s.TimeUpdated, s.Failure, s.MigrationIn, s.MigrationOut}
}

func (d diskState) domain() SledVmmState {
	return SledVmmState{d.State, d.Gen, d.TimeUpdated, d.Failure, d.MigrationIn, d.MigrationOut}
}

// loadRegistry reads the registry; a missing file is an empty registry.
func loadRegistry(root string) (registryFile, error) {
	var reg registryFile
	data, err := os.ReadFile(filepath.Join(root, registryName))
	if errors.Is(err, fs.ErrNotExist) {
		return reg, nil
	}
	if err != nil {
		return reg, fmt.Errorf("read the registry: %w", err)
	}
	if err := json.Unmarshal(data, &reg); err != nil {
		return reg, fmt.Errorf("read the registry %s: %w", filepath.Join(root, registryName), err)
	}
	return reg, nil
}

// saveRegistry writes the registry whole, so that a crash leaves either
// the old or the new one.
func saveRegistry(root string, reg registryFile) error {
	data, err := json.MarshalIndent(reg, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(root, registryName), data); err != nil {
		return fmt.Errorf("save the registry: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, synced,
// then renames it over path and syncs the directory: a reader (or the
// next agent after a crash) sees the old file or the new one, never a
// part of either.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// sledID reads the sled's id from root, or makes and keeps one.
func sledID(root string) (uuid.UUID, error) {
	path := filepath.Join(root, "sled-id")
	data, err := os.ReadFile(path)
	if err == nil {
		id, err := uuid.ParseBytes(trimSpace(data))
		if err != nil {
			return uuid.Nil, fmt.Errorf("%s: %w", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return uuid.Nil, err
	}
	id := uuid.New()
	if err := writeFileAtomic(path, []byte(id.String()+"\n")); err != nil {
		return uuid.Nil, fmt.Errorf("keep the sled id: %w", err)
	}
	return id, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// lockName is the lock file in the agent's root: one agent per root.
const lockName = "lock"

// lockRoot takes an exclusive lock on root's lock file, without waiting;
// the lock lasts as long as the returned file stays open (and ends with
// the process, however it ends).
func lockRoot(root string) (*os.File, error) {
	path := filepath.Join(root, lockName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sled agent root: open %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("sled agent root %s: %w", root, ErrRootLocked)
		}
		return nil, fmt.Errorf("sled agent root: lock %s: %w", path, err)
	}
	return f, nil
}
