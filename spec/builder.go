package spec

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// MaxComponents bounds the number of components in a Spec.
const MaxComponents = 64

// Builder collects the parts of a Spec and checks them in Build. Its methods
// record problems instead of failing at once, so that Build reports every
// broken rule together.
type Builder struct {
	board      Board
	boot       Boot
	smbios     SMBIOS
	hasSMBIOS  bool
	components map[Key]Component
	// early holds problems found while adding (such as duplicate keys).
	early []Problem
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{components: make(map[Key]Component)}
}

// SetBoard sets the board.
func (b *Builder) SetBoard(board Board) *Builder { b.board = board; return b }

// SetBoot sets the boot settings.
func (b *Builder) SetBoot(boot Boot) *Builder { b.boot = boot; return b }

// SetSMBIOS sets an explicit SMBIOS type 1 table.
func (b *Builder) SetSMBIOS(t SMBIOS) *Builder { b.smbios, b.hasSMBIOS = t, true; return b }

// ClearSMBIOS removes the explicit SMBIOS table: the VMM derives one.
func (b *Builder) ClearSMBIOS() *Builder { b.smbios, b.hasSMBIOS = SMBIOS{}, false; return b }

// Add adds a component under key k. A key used twice is a problem reported by
// Build. What Build reports does not depend on the order of the calls to Add
// (callers often add from a map): of two components under one key, the one
// whose Go syntax representation sorts first is kept and checked.
func (b *Builder) Add(k Key, c Component) *Builder {
	switch {
	case k.IsZero():
		b.early = append(b.early, Problem{"components", RuleRequired, "a component has an empty key"})
	case c == nil:
		b.early = append(b.early, Problem{ComponentPath(k, ""), RuleRequired, "component is nil"})
	default:
		if old, dup := b.components[k]; dup {
			b.early = append(b.early, Problem{ComponentPath(k, ""), RuleDuplicateKey, "key is used by two components"})
			if fmt.Sprintf("%#v", c) < fmt.Sprintf("%#v", old) {
				b.components[k] = c
			}
			return b
		}
		b.components[k] = c
	}
	return b
}

// Replace replaces the component under key k, which must exist and be of the
// same kind. It is how a migration target swaps a host-local backend.
func (b *Builder) Replace(k Key, c Component) error {
	old, ok := b.components[k]
	if !ok {
		return fmt.Errorf("replace %s: no such component", ComponentPath(k, ""))
	}
	if c == nil || old.Kind() != c.Kind() {
		return fmt.Errorf("replace %s: a %s cannot replace a %s", ComponentPath(k, ""), kindOf(c), old.Kind())
	}
	b.components[k] = c
	return nil
}

func kindOf(c Component) string {
	if c == nil {
		return "nil component"
	}
	return c.Kind().String()
}

// CheckComponent checks the rules about c's own fields (not those between
// components, such as references), as Build does, and returns nil or a
// *ValidationError.
func CheckComponent(k Key, c Component) error {
	var problems []Problem
	checkFields(k, c, func(path string, rule Rule, format string, args ...any) {
		problems = append(problems, Problem{path, rule, fmt.Sprintf(format, args...)})
	})
	if len(problems) > 0 {
		return &ValidationError{Problems: problems}
	}
	return nil
}

// addFunc records a problem.
type addFunc func(path string, rule Rule, format string, args ...any)

// checkFields checks the rules about one component's own fields.
func checkFields(k Key, c Component, add addFunc) {
	switch c := c.(type) {
	case SerialPort:
		if c.Num < COM1 || c.Num > COM4 {
			add(ComponentPath(k, "num"), RuleInvalid, "must be com1 to com4")
		}
	case VirtioDisk:
		if c.Slot >= MaxVirtioSlots {
			add(ComponentPath(k, "slot"), RuleRange, "must be from 0 to %d, is %d", MaxVirtioSlots-1, c.Slot)
		}
	case FileStorageBackend:
		checkFileBackend(k, c, add)
	case nil:
		add(ComponentPath(k, ""), RuleRequired, "component is nil")
	}
}

// Build checks every rule and returns the Spec, or a *ValidationError listing
// every problem.
func (b *Builder) Build() (Spec, error) {
	// The problems found while adding come first, sorted, so that the order
	// of the calls to Add does not show; the rest follow the fixed order of
	// the checks below, components in key order.
	problems := slices.Clone(b.early)
	slices.SortStableFunc(problems, compareProblems)
	add := func(path string, rule Rule, format string, args ...any) {
		problems = append(problems, Problem{path, rule, fmt.Sprintf(format, args...)})
	}

	if b.board.CPUs < 1 || b.board.CPUs > MaxCPUs {
		add("board.cpus", RuleRange, "must be from 1 to %d, is %d", MaxCPUs, b.board.CPUs)
	}
	if b.board.MemoryMiB < MinMemoryMiB || b.board.MemoryMiB > MaxMemoryMiB {
		add("board.memory_mb", RuleRange, "must be from %d to %d MiB, is %d", MinMemoryMiB, MaxMemoryMiB, b.board.MemoryMiB)
	}
	if b.board.Chipset != ChipsetI440FX {
		add("board.chipset", RuleInvalid, "unknown chipset %d", b.board.Chipset)
	}
	if err := checkName(b.boot.Image); err != nil {
		add("boot.image", RuleInvalid, "%v", err)
	}
	if len(b.boot.Cmdline) > MaxCmdlineLen {
		add("boot.cmdline", RuleRange, "is %d bytes, at most %d", len(b.boot.Cmdline), MaxCmdlineLen)
	}
	for i := 0; i < len(b.boot.Cmdline); i++ {
		if c := b.boot.Cmdline[i]; c < 0x20 || c > 0x7e {
			add("boot.cmdline", RuleInvalid, "byte %d is %#x; only printable ASCII is allowed", i, c)
			break
		}
	}
	if b.hasSMBIOS {
		checkSMBIOS(b.smbios, add)
	}
	if len(b.components) > MaxComponents {
		add("components", RuleTooMany, "has %d components, at most %d", len(b.components), MaxComponents)
	}

	keys := slices.SortedFunc(maps.Keys(b.components), Key.Compare)
	comPorts := map[SerialPortNumber]Key{}
	slots := map[uint8]Key{}
	users := map[Key][]Key{} // backend key -> devices using it
	pvpanic := map[int]Key{} // the one pvpanic device, at index 0
	for _, k := range keys {
		checkFields(k, b.components[k], add)
		switch c := b.components[k].(type) {
		case SerialPort:
			if c.Num < COM1 || c.Num > COM4 {
				break // reported by checkFields
			}
			if other, taken := comPorts[c.Num]; taken {
				add(ComponentPath(k, "num"), RuleSerialConflict, "%s is already used by %s", c.Num, other)
				break
			}
			comPorts[c.Num] = k
		case VirtioDisk:
			if c.Slot < MaxVirtioSlots {
				if other, taken := slots[c.Slot]; taken {
					add(ComponentPath(k, "slot"), RuleSlotConflict, "slot %d is already used by %s", c.Slot, other)
				} else {
					slots[c.Slot] = k
				}
			}
			b.checkBackendRef(k, c.Backend, users, add)
		case FileStorageBackend:
		case PVPanic:
			if other, taken := pvpanic[0]; taken {
				add(ComponentPath(k, ""), RulePVPanicConflict, "a VM has one pvpanic device, and %s is already one", other)
			} else {
				pvpanic[0] = k
			}
		default:
			add(ComponentPath(k, ""), RuleInvalid, "unknown component type %T", c)
		}
	}
	for _, k := range keys {
		c := b.components[k]
		if !c.Kind().IsBackend() {
			continue
		}
		switch u := users[k]; len(u) {
		case 0:
			add(ComponentPath(k, ""), RuleUnusedBackend, "no device uses this %s", c.Kind())
		case 1:
		default:
			add(ComponentPath(k, ""), RuleSharedBackend, "used by %d devices (%s); a backend serves exactly one device", len(u), joinKeys(u))
		}
	}

	if len(problems) > 0 {
		return Spec{}, &ValidationError{Problems: problems}
	}
	return Spec{board: b.board, boot: b.boot, smbios: b.smbios, hasSMBIOS: b.hasSMBIOS, components: maps.Clone(b.components)}, nil
}

func (b *Builder) checkBackendRef(dev, ref Key, users map[Key][]Key, add addFunc) {
	path := ComponentPath(dev, "backend")
	if ref.IsZero() {
		add(path, RuleRequired, "no backend named")
		return
	}
	target, ok := b.components[ref]
	if !ok {
		add(path, RuleDanglingRef, "names %q, which is not a component", ref)
		return
	}
	if !target.Kind().IsBackend() {
		add(path, RuleWrongKind, "names %q, a %s, not a backend", ref, target.Kind())
		return
	}
	users[ref] = append(users[ref], dev)
}

func checkFileBackend(k Key, c FileStorageBackend, add addFunc) {
	switch err := CheckStoragePath(c.Path); {
	case err == nil:
	case c.Path == "":
		add(ComponentPath(k, "path"), RuleRequired, "path is empty")
	case len(c.Path) > MaxStoragePathLen:
		add(ComponentPath(k, "path"), RuleRange, "%v", err)
	default:
		add(ComponentPath(k, "path"), RuleInvalid, "%v", err)
	}
	bs := c.BlockSize
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		add(ComponentPath(k, "block_size"), RuleInvalid, "must be a power of two from %d to %d, is %d", MinBlockSize, MaxBlockSize, bs)
	}
}

// compareProblems orders problems by path, rule and detail.
func compareProblems(a, b Problem) int {
	return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Detail, b.Detail))
}

func joinKeys(ks []Key) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = k.String()
	}
	return strings.Join(s, ", ")
}
