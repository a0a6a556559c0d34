package spec

import (
	"fmt"
	"strings"
)

// Rule names a validation rule. Rules are stable identifiers: clients match on
// them, so a rule is never renamed.
type Rule string

// The rules a Builder checks.
const (
	RuleRequired       Rule = "required"           // a field must be set
	RuleRange          Rule = "out_of_range"       // a number outside its limits
	RuleInvalid        Rule = "invalid_value"      // a value of the wrong form
	RuleDuplicateKey   Rule = "duplicate_key"      // two components with one key
	RuleDanglingRef    Rule = "dangling_reference" // a reference to no component
	RuleWrongKind      Rule = "wrong_kind"         // a reference to a component of the wrong kind
	RuleUnusedBackend  Rule = "unused_backend"     // a backend no device uses
	RuleSharedBackend  Rule = "shared_backend"     // a backend used by two devices
	RuleSerialConflict Rule = "serial_port_conflict"
	RuleSlotConflict   Rule = "slot_conflict"
	RuleTooMany        Rule = "too_many_components"
	// RulePVPanicConflict: a second pvpanic device (it has one fixed port).
	RulePVPanicConflict Rule = "pvpanic_conflict"
)

// Problem is one broken rule. Path names the field the way the contracts do,
// for example "components.disk0.backend" or "board.cpus".
type Problem struct {
	Path   string
	Rule   Rule
	Detail string
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s (%s)", p.Path, p.Detail, p.Rule) }

// ValidationError lists every rule a spec breaks, in a stable order.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid spec: " + strings.Join(parts, "; ")
}

// Has reports whether the error includes a problem at path under rule.
func (e *ValidationError) Has(path string, rule Rule) bool {
	for _, p := range e.Problems {
		if p.Path == path && p.Rule == rule {
			return true
		}
	}
	return false
}

// ComponentPath returns the path of a component's field, as Problems name it.
func ComponentPath(k Key, field string) string {
	if field == "" {
		return "components." + k.String()
	}
	return "components." + k.String() + "." + field
}
