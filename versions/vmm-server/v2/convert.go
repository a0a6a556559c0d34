package v2

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/internal/strictjson"
	"github.com/wagglevm/waggle/spec"
)

// Documented defaults of version 2, written out by Canonical.
const (
	DefaultImage     = "ticker"
	DefaultBlockSize = api.BlockSizeN512
)

// UnsupportedError lists every part of a Spec that version 2 cannot express.
type UnsupportedError struct {
	Problems []spec.Problem
}

func (e *UnsupportedError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return Version + " cannot express the spec: " + strings.Join(parts, "; ")
}

// RuleUnsupported marks a Problem of a spec that this version cannot express.
const RuleUnsupported spec.Rule = "unsupported_by_version"

// ToSpec converts a version 2 InstanceSpec into the hub. Every problem, from
// the wire form (an unknown component type, an enum value version 2 lacks) to
// the hub's rules, is reported in one *spec.ValidationError.
func ToSpec(w api.InstanceSpec) (spec.Spec, error) {
	var problems []spec.Problem
	bad := func(path string, rule spec.Rule, format string, args ...any) {
		problems = append(problems, spec.Problem{Path: path, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	b := spec.NewBuilder()

	board := spec.Board{Chipset: spec.ChipsetI440FX}
	if w.Board.Cpus < 0 {
		bad("board.cpus", spec.RuleRange, "must be from 1 to %d, is %d", spec.MaxCPUs, w.Board.Cpus)
	} else {
		board.CPUs = uint32(w.Board.Cpus)
	}
	if w.Board.MemoryMb < 0 {
		bad("board.memory_mb", spec.RuleRange, "must be from %d to %d MiB, is %d", spec.MinMemoryMiB, spec.MaxMemoryMiB, w.Board.MemoryMb)
	} else {
		board.MemoryMiB = uint64(w.Board.MemoryMb)
	}
	if w.Board.Chipset != api.ChipsetI440fx {
		bad("board.chipset", spec.RuleInvalid, "unknown chipset %q; want i440fx", w.Board.Chipset)
	}
	b.SetBoard(board)

	boot := spec.Boot{Image: DefaultImage}
	if w.Boot != nil {
		boot.Image = w.Boot.Image
		if w.Boot.Cmdline != nil {
			boot.Cmdline = *w.Boot.Cmdline
		}
	}
	b.SetBoot(boot)

	if w.Smbios != nil {
		b.SetSMBIOS(smbiosToSpec(*w.Smbios))
	}

	// Sorted, so that the same spec gives the same problems in the same
	// order, whatever the map's iteration order.
	for _, name := range slices.Sorted(maps.Keys(w.Components)) {
		raw := w.Components[name]
		key, err := spec.ParseKey(name)
		if err != nil {
			bad("components."+name, spec.RuleInvalid, "%v", err)
			continue
		}
		c, err := componentToSpec(key, raw)
		if err != nil {
			var p *spec.Problem
			if asProblem(err, &p) {
				problems = append(problems, *p)
			} else {
				bad(spec.ComponentPath(key, ""), spec.RuleInvalid, "%v", err)
			}
			continue
		}
		b.Add(key, c)
	}

	s, err := b.Build()
	if err != nil {
		if ve, ok := err.(*spec.ValidationError); ok {
			problems = mergeProblems(problems, ve.Problems)
		} else {
			return spec.Spec{}, err
		}
	}
	if len(problems) > 0 {
		return spec.Spec{}, &spec.ValidationError{Problems: problems}
	}
	return s, nil
}

// mergeProblems appends the builder's problems to those found in the wire
// form, leaving out the builder's word on a field the wire form already
// reported (a negative cpus is reported once, as itself, not again as 0).
func mergeProblems(wire, built []spec.Problem) []spec.Problem {
	seen := make(map[string]bool, len(wire))
	for _, p := range wire {
		seen[p.Path] = true
	}
	for _, p := range built {
		if !seen[p.Path] {
			wire = append(wire, p)
		}
	}
	return wire
}

// problemError carries a spec.Problem through an error return.
type problemError struct{ p spec.Problem }

func (e *problemError) Error() string { return e.p.String() }

func asProblem(err error, out **spec.Problem) bool {
	if pe, ok := err.(*problemError); ok {
		*out = &pe.p
		return true
	}
	return false
}

func problemf(path string, rule spec.Rule, format string, args ...any) error {
	return &problemError{spec.Problem{Path: path, Rule: rule, Detail: fmt.Sprintf(format, args...)}}
}

func componentToSpec(key spec.Key, raw api.Component) (spec.Component, error) {
	typ, err := raw.Discriminator()
	if err != nil {
		return nil, problemf(spec.ComponentPath(key, ""), spec.RuleInvalid, "does not decode: %v", err)
	}
	js, err := raw.MarshalJSON()
	if err != nil {
		return nil, problemf(spec.ComponentPath(key, ""), spec.RuleInvalid, "does not encode: %v", err)
	}
	switch typ {
	case string(api.SerialPortComponentTypeSerialPort):
		var c api.SerialPortComponent
		if err := strictjson.Decode(js, &c); err != nil {
			return nil, problemf(spec.ComponentPath(key, ""), spec.RuleInvalid, "bad serial_port: %v", err)
		}
		num, ok := serialFromWire[c.Num]
		if !ok {
			return nil, problemf(spec.ComponentPath(key, "num"), spec.RuleInvalid, "unknown serial port %q; want com1 to com4", c.Num)
		}
		return spec.SerialPort{Num: num}, nil
	case string(api.VirtioDiskComponentTypeVirtioDisk):
		var c api.VirtioDiskComponent
		if err := strictjson.Decode(js, &c); err != nil {
			return nil, problemf(spec.ComponentPath(key, ""), spec.RuleInvalid, "bad virtio_disk: %v", err)
		}
		if c.Slot < 0 || c.Slot >= spec.MaxVirtioSlots {
			return nil, problemf(spec.ComponentPath(key, "slot"), spec.RuleRange, "must be from 0 to %d, is %d", spec.MaxVirtioSlots-1, c.Slot)
		}
		backend, err := spec.ParseKey(c.Backend)
		if err != nil {
			return nil, problemf(spec.ComponentPath(key, "backend"), spec.RuleInvalid, "%v", err)
		}
		return spec.VirtioDisk{Backend: backend, Slot: uint8(c.Slot)}, nil
	case string(api.FileStorageBackendComponentTypeFileStorageBackend):
		var c api.FileStorageBackendComponent
		if err := strictjson.Decode(js, &c); err != nil {
			return nil, problemf(spec.ComponentPath(key, ""), spec.RuleInvalid, "bad file_storage_backend: %v", err)
		}
		bs := DefaultBlockSize
		if c.BlockSize != nil {
			bs = *c.BlockSize
		}
		if !bs.Valid() {
			return nil, problemf(spec.ComponentPath(key, "block_size"), spec.RuleInvalid, "must be a power of two from %d to %d, is %d", spec.MinBlockSize, spec.MaxBlockSize, bs)
		}
		ro := c.Readonly != nil && *c.Readonly
		return spec.FileStorageBackend{Path: c.Path, ReadOnly: ro, BlockSize: uint32(bs)}, nil
	case string(api.PVPanicComponentTypePvpanic):
		var c api.PVPanicComponent
		if err := strictjson.Decode(js, &c); err != nil {
			return nil, problemf(spec.ComponentPath(key, ""), spec.RuleInvalid, "bad pvpanic: %v", err)
		}
		return spec.PVPanic{}, nil
	}
	return nil, problemf(spec.ComponentPath(key, "type"), spec.RuleInvalid, "unknown component type %q; want serial_port, virtio_disk, file_storage_backend or pvpanic", typ)
}

// smbiosToSpec converts the table: an absent string is an empty one.
func smbiosToSpec(w api.Smbios) spec.SMBIOS {
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	return spec.SMBIOS{
		Manufacturer: str(w.Manufacturer), Product: str(w.Product), Version: str(w.Version),
		SerialNumber: str(w.SerialNumber), SKU: str(w.Sku), Family: str(w.Family),
	}
}

// smbiosFromSpec writes every string of the table, an empty one as "".
func smbiosFromSpec(t spec.SMBIOS) *api.Smbios {
	return &api.Smbios{
		Manufacturer: ptr(t.Manufacturer), Product: ptr(t.Product), Version: ptr(t.Version),
		SerialNumber: ptr(t.SerialNumber), Sku: ptr(t.SKU), Family: ptr(t.Family),
	}
}

var serialFromWire = map[api.SerialPortNumber]spec.SerialPortNumber{
	api.SerialPortNumberCom1: spec.COM1,
	api.SerialPortNumberCom2: spec.COM2,
	api.SerialPortNumberCom3: spec.COM3,
	api.SerialPortNumberCom4: spec.COM4,
}

// FromSpec converts a hub Spec into version 2, in canonical form. It fails
// with an *UnsupportedError that lists everything version 2 cannot express;
// it never drops or alters information.
func FromSpec(s spec.Spec) (api.InstanceSpec, error) {
	var problems []spec.Problem
	unsupported := func(path, format string, args ...any) {
		problems = append(problems, spec.Problem{Path: path, Rule: RuleUnsupported, Detail: fmt.Sprintf(format, args...)})
	}
	board := s.Board()
	w := api.InstanceSpec{
		Board: api.Board{Cpus: int32(board.CPUs), MemoryMb: int64(board.MemoryMiB)},
		Boot:  &api.Boot{Image: s.Boot().Image, Cmdline: ptr(s.Boot().Cmdline)},
	}
	switch board.Chipset {
	case spec.ChipsetI440FX:
		w.Board.Chipset = api.ChipsetI440fx
	default:
		unsupported("board.chipset", "chipset %s has no version 2 name", board.Chipset)
	}
	if t, ok := s.SMBIOS(); ok {
		w.Smbios = smbiosFromSpec(t)
	}
	w.Components = make(map[string]api.Component, s.Len())
	for _, e := range s.Components() {
		var c api.Component
		var err error
		switch v := e.Component.(type) {
		case spec.SerialPort:
			err = c.FromSerialPortComponent(api.SerialPortComponent{Num: api.SerialPortNumber(v.Num.String())})
		case spec.VirtioDisk:
			err = c.FromVirtioDiskComponent(api.VirtioDiskComponent{Backend: v.Backend.String(), Slot: int32(v.Slot)})
		case spec.FileStorageBackend:
			bs := api.BlockSize(v.BlockSize)
			if !bs.Valid() {
				unsupported(spec.ComponentPath(e.Key, "block_size"), "block size %d has no version 2 value", v.BlockSize)
				continue
			}
			err = c.FromFileStorageBackendComponent(api.FileStorageBackendComponent{
				Path: v.Path, Readonly: ptr(v.ReadOnly), BlockSize: &bs,
			})
		case spec.PVPanic:
			err = c.FromPVPanicComponent(api.PVPanicComponent{})
		default:
			unsupported(spec.ComponentPath(e.Key, ""), "component kind %s has no version 2 type", e.Component.Kind())
			continue
		}
		if err != nil {
			return api.InstanceSpec{}, fmt.Errorf("encode %s: %w", spec.ComponentPath(e.Key, ""), err)
		}
		w.Components[e.Key.String()] = c
	}
	if len(problems) > 0 {
		return api.InstanceSpec{}, &UnsupportedError{Problems: problems}
	}
	return w, nil
}

func ptr[T any](v T) *T { return &v }

// ReplacementsToSpec converts a migration target's replacement components.
// Only storage backends may be replaced (they are what is local to a host);
// anything else, or a component that does not decode, is a problem naming
// it. Whether each names a component of the source's spec, of the same kind,
// is checked when the spec arrives (spec.Builder.Replace).
func ReplacementsToSpec(w map[string]api.Component) (map[spec.Key]spec.Component, error) {
	out := make(map[spec.Key]spec.Component, len(w))
	var problems []spec.Problem
	for _, name := range slices.Sorted(maps.Keys(w)) {
		raw := w[name]
		path := "init.replace_components." + name
		key, err := spec.ParseKey(name)
		if err != nil {
			problems = append(problems, spec.Problem{Path: path, Rule: spec.RuleInvalid, Detail: err.Error()})
			continue
		}
		c, err := componentToSpec(key, raw)
		if err != nil {
			problems = append(problems, spec.Problem{Path: path, Rule: spec.RuleInvalid, Detail: err.Error()})
			continue
		}
		if !c.Kind().IsBackend() {
			problems = append(problems, spec.Problem{Path: path, Rule: spec.RuleWrongKind,
				Detail: fmt.Sprintf("a %s cannot be replaced; only storage backends can", c.Kind())})
			continue
		}
		if err := spec.CheckComponent(key, c); err != nil {
			var ve *spec.ValidationError
			if !errors.As(err, &ve) {
				return nil, err
			}
			for _, p := range ve.Problems {
				p.Path = "init.replace_components." + strings.TrimPrefix(p.Path, "components.")
				problems = append(problems, p)
			}
			continue
		}
		out[key] = c
	}
	if len(problems) > 0 {
		return nil, &spec.ValidationError{Problems: problems}
	}
	return out, nil
}
