package corpus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/wagglevm/waggle/internal/strictjson"
	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/server/serialhistory"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
	"github.com/wagglevm/waggle/vmm"
	"github.com/wagglevm/waggle/vmm/devices"
)

// Importer is today's importer of one kind of device state.
type Importer struct {
	// Versions are the payload versions today's device reads, and writes,
	// oldest first (devices.ImportableVersions).
	Versions []uint32
	// New builds a device that a payload of this configuration restores
	// into; tmp is a directory for its files.
	New func(c DeviceConfig, tmp string) (devices.Stateful, error)
}

// DeviceImporters returns today's importers.
func DeviceImporters() map[string]Importer {
	vs := devices.ImportableVersions()
	return map[string]Importer{
		devices.UARTStateKind: {Versions: vs[devices.UARTStateKind], New: func(c DeviceConfig, _ string) (devices.Stateful, error) {
			for n := spec.COM1; n <= spec.COM4; n++ {
				if n.String() == c.Port {
					return devices.NewUART(n, nopIRQ{}, nil)
				}
			}
			return nil, fmt.Errorf("UART port %q is not com1 to com4", c.Port)
		}},
		devices.VirtioBlkStateKind: {Versions: vs[devices.VirtioBlkStateKind], New: func(c DeviceConfig, tmp string) (devices.Stateful, error) {
			return NewVirtioBlkForState(c, tmp)
		}},
		serialhistory.Kind: {Versions: serialhistory.Versions(), New: func(c DeviceConfig, _ string) (devices.Stateful, error) {
			if c != (DeviceConfig{}) {
				return nil, fmt.Errorf("the serial history is no device: its device config must be empty, not %+v", c)
			}
			return &serialHistoryHolder{}, nil
		}},
	}
}

// serialHistoryHolder holds a serial history payload as the server's
// console log does across a migration: decoded with the server's codec and
// encoded again.
type serialHistoryHolder struct{ h serialhistory.State }

// Restore decodes p with the server's codec.
func (s *serialHistoryHolder) Restore(p devices.Payload) error {
	h, err := serialhistory.Decode(p)
	if err != nil {
		return err
	}
	s.h = serialhistory.State{End: h.End, Data: bytes.Clone(h.Data)}
	return nil
}

// Save encodes the history at version (0: the newest).
func (s *serialHistoryHolder) Save(version uint32) (devices.Payload, error) {
	if version != 0 && version != serialhistory.V1 {
		return devices.Payload{}, &devices.StateError{Op: "save", Kind: serialhistory.Kind, Version: version, Err: devices.ErrUnknownVersion}
	}
	return s.h.Encode(), nil
}

// stateHandlers replay the binary state every version's corpus holds.
func stateHandlers() map[string]Handler {
	return map[string]Handler{
		KindDevice:   replayDevice,
		KindMachine:  replayMachine,
		KindFrame:    replayFrame,
		KindVersions: replayVersions,
	}
}

// replayDevice imports a payload into today's device and exports it again
// at the same version. A payload older than the version before today's
// newest may have been dropped (an importer reads its own version and the
// one before); any other version today's importer lacks fails.
func replayDevice(r *Replayer, data, want []byte) error {
	var f DeviceFile
	if err := strictjson.Decode(data, &f); err != nil {
		return fmt.Errorf("decode device file: %w", err)
	}
	imp, ok := r.Importers[f.Kind]
	if !ok || len(imp.Versions) == 0 {
		return fmt.Errorf("today's build has no importer of %s state", f.Kind)
	}
	newest := slices.Max(imp.Versions)
	if f.Version > newest {
		return fmt.Errorf("%s state version %d was dropped from today's importer, which reads %v, none as new: a device never forgets its newest version", f.Kind, f.Version, imp.Versions)
	}
	if !slices.Contains(imp.Versions, f.Version) {
		if f.Version+1 < newest {
			return nil // two or more versions behind: no longer read, by design
		}
		return fmt.Errorf("%s state version %d was dropped from today's importer, which reads %v; a device reads its newest version and the one before", f.Kind, f.Version, imp.Versions)
	}
	dev, err := imp.New(f.Device, r.TempDir)
	if err != nil {
		return fmt.Errorf("build the %s device: %w", f.Kind, err)
	}
	if err := dev.Restore(devices.Payload{Kind: f.Kind, Version: f.Version, Data: f.Data}); err != nil {
		return fmt.Errorf("today's device refuses it: %w", err)
	}
	p, err := dev.Save(f.Version)
	if err != nil {
		return fmt.Errorf("export again at version %d: %w", f.Version, err)
	}
	out := f
	out.Kind, out.Version, out.Data = p.Kind, p.Version, p.Data
	return sameJSON(out, want)
}

// sameJSON fails unless v encodes to the JSON value want holds.
func sameJSON(v any, want []byte) error {
	got, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if eq, err := jsonEqual(got, want); err != nil || !eq {
		return fmt.Errorf("re-exports to another value: %s", firstDifference(got, want))
	}
	return nil
}

// firstDifference shows where two texts part, with a little context, so
// that a message about a large payload stays readable.
func firstDifference(got, want []byte) string {
	if len(got)+len(want) < 400 {
		return fmt.Sprintf("\n\t%s\nwant\n\t%s", got, want)
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(i-40, 0)
	return fmt.Sprintf("%d and %d bytes of JSON, first different at byte %d: ...%s... want ...%s...",
		len(got), len(want), i, got[from:min(i+40, len(got))], want[from:min(i+40, len(want))])
}

// replayMachine decodes machine state with today's codec and encodes it
// again, byte for byte.
func replayMachine(_ *Replayer, data, want []byte) error {
	var f MachineFile
	if err := strictjson.Decode(data, &f); err != nil {
		return fmt.Errorf("decode machine file: %w", err)
	}
	if f.Version != vmm.StateVersion {
		return fmt.Errorf("machine state version %d; today's build reads %d", f.Version, vmm.StateVersion)
	}
	st, err := vmm.UnmarshalState(f.Data)
	if err != nil {
		return fmt.Errorf("today's codec refuses it: %w", err)
	}
	again, err := st.MarshalBinary()
	if err != nil {
		return err
	}
	return sameJSON(MachineFile{Version: f.Version, Data: again}, want)
}

// frameCodecs decode one message type's payload and encode it again.
var frameCodecs = map[migration.Type]func([]byte) ([]byte, error){
	migration.TypeHello:   codec(migration.DecodeHello, migration.Hello.Encode),
	migration.TypeWelcome: codec(migration.DecodeWelcome, migration.Welcome.Encode),
	migration.TypeProof:   codec(migration.DecodeProof, migration.Proof.Encode),
	migration.TypePreamble: func(p []byte) ([]byte, error) {
		pre, err := migration.DecodePreamble(p)
		if err != nil {
			return nil, err
		}
		if _, _, err := versions.Unwrap(pre.Envelope); err != nil {
			return nil, fmt.Errorf("today's target refuses the envelope: %w", err)
		}
		return pre.Encode(), nil
	},
	migration.TypeRAM:      codec(migration.DecodeRAM, migration.RAM.Encode),
	migration.TypeZero:     codec(migration.DecodeZero, migration.Zero.Encode),
	migration.TypeRoundEnd: codec(migration.DecodeRoundEnd, migration.RoundEnd.Encode),
	migration.TypeRoundAck: codec(migration.DecodeRoundAck, migration.RoundAck.Encode),
	migration.TypePlan:     codec(migration.DecodePlan, migration.Plan.Encode),
	migration.TypeDevice:   replayDeviceFrame,
	migration.TypeMachine: func(p []byte) ([]byte, error) {
		m, err := migration.DecodeMachine(p)
		if err != nil {
			return nil, err
		}
		st, err := vmm.UnmarshalState(m.Data)
		if err != nil {
			return nil, err
		}
		if m.Data, err = st.MarshalBinary(); err != nil {
			return nil, err
		}
		return m.Encode(), nil
	},
	migration.TypeCommit:    codec(migration.DecodeCommit, migration.Commit.Encode),
	migration.TypeAbort:     codec(migration.DecodeAbort, migration.Abort.Encode),
	migration.TypeReady:     empty(migration.TypeReady),
	migration.TypeStateDone: empty(migration.TypeStateDone),
	migration.TypeImported:  empty(migration.TypeImported),
}

// replayDeviceFrame decodes a Device frame's payload and encodes it again;
// a serial history's data goes through the server's codec too, under one
// of the two keys the server sends it with.
func replayDeviceFrame(p []byte) ([]byte, error) {
	d, err := migration.DecodeDevice(p)
	if err != nil {
		return nil, err
	}
	if d.Kind == serialhistory.Kind {
		if d.Key != serialhistory.HeadKey && d.Key != serialhistory.TailKey {
			return nil, fmt.Errorf("the serial history under key %q, not %q or %q", d.Key, serialhistory.HeadKey, serialhistory.TailKey)
		}
		h, err := serialhistory.Decode(devices.Payload{Kind: d.Kind, Version: d.Version, Data: d.Data})
		if err != nil {
			return nil, fmt.Errorf("the serial history (%s): %w", d.Key, err)
		}
		again := h.Encode()
		d.Version, d.Data = again.Version, again.Data
	}
	return d.Encode(), nil
}

func codec[T any](decode func([]byte) (T, error), encode func(T) []byte) func([]byte) ([]byte, error) {
	return func(p []byte) ([]byte, error) {
		v, err := decode(p)
		if err != nil {
			return nil, err
		}
		return encode(v), nil
	}
}

func empty(t migration.Type) func([]byte) ([]byte, error) {
	return func(p []byte) ([]byte, error) { return nil, migration.DecodeEmpty(t, p) }
}

// replayFrame reads a frame with today's stream reader, decodes its
// message and writes it again, byte for byte.
func replayFrame(_ *Replayer, data, want []byte) error {
	var f FrameFile
	if err := strictjson.Decode(data, &f); err != nil {
		return fmt.Errorf("decode frame file: %w", err)
	}
	rd := bytes.NewReader(f.Frame)
	fr, err := migration.ReadFrame(rd, nil)
	if err != nil {
		return fmt.Errorf("today's stream reader refuses it: %w", err)
	}
	if rd.Len() != 0 {
		return fmt.Errorf("%d bytes after the frame", rd.Len())
	}
	if fr.Type.String() != f.Type {
		return fmt.Errorf("frame of type %s, recorded as %s", fr.Type, f.Type)
	}
	c, ok := frameCodecs[fr.Type]
	if !ok {
		return fmt.Errorf("no decoder of %s frames", fr.Type)
	}
	payload, err := c(fr.Payload)
	if err != nil {
		return fmt.Errorf("today's %s decoder refuses it: %w", fr.Type, err)
	}
	var b bytes.Buffer
	if err := migration.WriteFrame(&b, fr.Type, payload); err != nil {
		return err
	}
	return sameJSON(FrameFile{Type: f.Type, Frame: b.Bytes()}, want)
}

// replayVersions checks that today's build can still talk to the build
// that wrote the file: a protocol and a spec version in common, for each
// kind of device state a version today's devices write and that build
// reads, and the machine state version it reads.
func replayVersions(r *Replayer, data, want []byte) error {
	var f VersionsFile
	if err := strictjson.Decode(data, &f); err != nil {
		return fmt.Errorf("decode versions file: %w", err)
	}
	var problems []string
	if !intersects(migration.Supported, f.Protocols) {
		problems = append(problems, fmt.Sprintf("no migration protocol in common (today %v, then %v)", migration.Supported, f.Protocols))
	}
	var names []string
	for _, s := range r.Spokes {
		names = append(names, s.Name)
	}
	if !intersects(names, f.SpecVersions) {
		problems = append(problems, fmt.Sprintf("no spec version in common (today %v, then %v)", names, f.SpecVersions))
	}
	for _, kind := range sortedKeys(f.Devices) {
		if !intersects(r.Importers[kind].Versions, f.Devices[kind]) {
			problems = append(problems, fmt.Sprintf("today's build writes no %s state version that build reads (today %v, then %v)", kind, r.Importers[kind].Versions, f.Devices[kind]))
		}
	}
	if f.MachineState != vmm.StateVersion {
		problems = append(problems, fmt.Sprintf("machine state version %d, that build reads %d", vmm.StateVersion, f.MachineState))
	}
	if len(problems) > 0 {
		return fmt.Errorf("today's server cannot migrate into that build: %v", problems)
	}
	return sameJSON(f, want)
}

func intersects[T comparable](a, b []T) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
