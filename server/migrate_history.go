package server

import (
	"bytes"
	"fmt"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm/devices"
)

// The serial console's history in a migration (serial_state.go says what
// the payloads are): the source sends its head while the VM runs and its
// tail once it is paused; the target checks each as it comes, joins them,
// and makes the result its console's history just before its VM starts.

// historySend is what a source sent of the serial history.
type historySend struct {
	// version is the payload version both sides know; 0: send none.
	version uint32
	// end is the head's end offset: the tail begins there.
	end uint64
}

// sendSerialHistoryHead sends the console's history so far, while the VM
// runs, in the newest version both sides know, when the target lists the
// kind among those it imports. A target that does not (a released v0.1.0
// build), or that lists only versions this build does not write, gets
// none: the history is not the VM's state, and its console then starts
// empty.
func (s *source) sendSerialHistoryHead(accepted []migration.DeviceVersions) error {
	for _, d := range accepted {
		if d.Kind == serialHistoryKind {
			s.history.version = newestCommon(d.Versions, serialHistoryVersions)
		}
	}
	if s.history.version == 0 {
		return nil
	}
	h := s.serialLog().snapshot(0, maxSerialHistory)
	s.history.end = h.End
	return s.sendSerialHistory(serialHistoryKey, h)
}

// sendSerialHistoryTail sends, once the VM is paused, what the guest
// printed after the head: usually little, so that the pause carries
// little.
func (s *source) sendSerialHistoryTail() error {
	if s.history.version == 0 {
		return nil
	}
	return s.sendSerialHistory(serialHistoryTailKey, s.serialLog().snapshot(s.history.end, maxSerialHistory))
}

func (s *source) sendSerialHistory(key string, h serialHistoryState) error {
	p := h.Encode()
	dv := migration.Device{Key: key, Kind: p.Kind, Version: p.Version, Data: p.Data}
	if err := s.p.send(migration.TypeDevice, dv.Encode()); err != nil {
		return fmt.Errorf("send the serial history: %w", err)
	}
	return nil
}

// serialLog returns the instance's console.
func (s *source) serialLog() *serialLog {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	return s.r.serial
}

// takeSerialHistory checks a piece of the serial history the source sent
// in d (a Device frame of its kind, in a version this target offered, its
// key not seen before) and joins it to what came before, to keep until
// the VM starts. A piece under another key, over the bound or malformed,
// or a head after the tail, ends the migration.
func (t *target) takeSerialHistory(d migration.Device) error {
	if d.Key != serialHistoryKey && d.Key != serialHistoryTailKey {
		return fmt.Errorf("%w: the serial history came under key %q, not %q or %q", migration.ErrFrame, d.Key,
			serialHistoryKey, serialHistoryTailKey)
	}
	h, err := decodeSerialHistory(devices.Payload{Kind: d.Kind, Version: d.Version, Data: d.Data})
	if err != nil {
		return fmt.Errorf("the source's serial history (%s): %w", d.Key, err)
	}
	// h.Data is the frame's, which the next frame overwrites.
	switch {
	case d.Key == serialHistoryKey && t.historyTail:
		return fmt.Errorf("%w: the serial history's head came after its tail", migration.ErrFrame)
	case d.Key == serialHistoryKey:
		// Copied now, while the VM runs, with room for the tail: joining
		// the tail in the pause then copies only the tail.
		h.Data = append(make([]byte, 0, len(h.Data)+maxSerialHistory), h.Data...)
	case t.history != nil:
		if h, err = joinSerialHistory(*t.history, h); err != nil {
			return fmt.Errorf("%w: %w", migration.ErrFrame, err)
		}
	default:
		h.Data = bytes.Clone(h.Data)
	}
	t.history, t.historyTail = &h, t.historyTail || d.Key == serialHistoryTailKey
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
