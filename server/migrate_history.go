package server

import (
	"fmt"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm/devices"
)

// The serial console's history in a migration (serial_state.go says what
// the payload is): the source sends it after the devices' payloads, the
// target checks it as it comes and makes it its console's history just
// before its VM starts.

// sendSerialHistory sends the console's history, in the newest version
// both sides know, when the target lists the kind among those it imports.
// A target that does not (a released v0.1.0 build), or that lists only
// versions this build does not write, gets none: the history is not the
// VM's state, and its console then starts empty.
func (s *source) sendSerialHistory(accepted []migration.DeviceVersions) error {
	var version uint32
	for _, d := range accepted {
		if d.Kind == serialHistoryKind {
			version = newestCommon(d.Versions, serialHistoryVersions)
		}
	}
	if version == 0 {
		return nil
	}
	s.r.mu.Lock()
	log := s.r.serial
	s.r.mu.Unlock()
	p := log.snapshot(maxSerialHistory).encode()
	dv := migration.Device{Key: serialHistoryKey, Kind: p.Kind, Version: p.Version, Data: p.Data}
	if err := s.p.send(migration.TypeDevice, dv.Encode()); err != nil {
		return fmt.Errorf("send the serial history: %w", err)
	}
	return nil
}

// takeSerialHistory checks the serial history the source sent in d (a
// Device frame of its kind, in a version this target offered) and keeps
// it until the VM starts. A payload under another key, over the bound or
// malformed ends the migration.
func (t *target) takeSerialHistory(d migration.Device) error {
	if d.Key != serialHistoryKey {
		return fmt.Errorf("%w: the serial history came under key %q, not %q", migration.ErrFrame, d.Key, serialHistoryKey)
	}
	h, err := decodeSerialHistory(devices.Payload{Kind: d.Kind, Version: d.Version, Data: d.Data})
	if err != nil {
		return fmt.Errorf("the source's serial history: %w", err)
	}
	t.history = &h
	return nil
}

// restoreSerialHistory makes the history the source sent, if it sent one,
// the console's: called before the migrated VM starts, so that the guest's
// next byte follows it.
func (t *target) restoreSerialHistory() {
	if t.history == nil {
		return
	}
	t.r.mu.Lock()
	log := t.r.serial
	t.r.mu.Unlock()
	if err := log.restore(*t.history); err != nil {
		t.r.log.Warn("migration: the serial history stays behind", "migration", t.id, "err", err)
	}
}
