package spec

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"strings"
)

// MaxKeyNameLen is the longest name a Key may carry.
const MaxKeyNameLen = 63

// Key names a component of a Spec. A key is either a UUID or a name; a string
// that parses as a UUID is always a UUID, so the two sorts never collide.
//
// The zero Key is invalid; keys come from ParseKey, KeyFromUUID or MustKey.
type Key struct {
	// isUUID says which of the two fields below is meaningful.
	isUUID bool
	uuid   [16]byte
	name   string
}

// ParseKey parses s as a UUID (canonical 8-4-4-4-12 form, either case) or,
// failing that, as a name: 1 to 63 characters from [A-Za-z0-9._-], starting
// with a letter or digit.
func ParseKey(s string) (Key, error) {
	if u, ok := parseUUID(s); ok {
		return Key{isUUID: true, uuid: u}, nil
	}
	if err := checkName(s); err != nil {
		return Key{}, err
	}
	return Key{name: s}, nil
}

// MustKey is ParseKey for keys written into programs; it panics on a bad key.
func MustKey(s string) Key {
	k, err := ParseKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

// KeyFromUUID returns the key for the 16 bytes of a UUID.
func KeyFromUUID(u [16]byte) Key { return Key{isUUID: true, uuid: u} }

// IsUUID reports whether k is a UUID key.
func (k Key) IsUUID() bool { return k.isUUID }

// UUID returns the bytes of a UUID key, and false for a name key.
func (k Key) UUID() ([16]byte, bool) { return k.uuid, k.isUUID }

// IsZero reports whether k is the invalid zero Key.
func (k Key) IsZero() bool { return !k.isUUID && k.name == "" }

// String returns the name, or the UUID in lower-case canonical form.
func (k Key) String() string {
	if !k.isUUID {
		return k.name
	}
	var buf [36]byte
	hex.Encode(buf[0:8], k.uuid[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], k.uuid[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], k.uuid[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], k.uuid[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], k.uuid[10:16])
	return string(buf[:])
}

// Compare orders keys by their string form, which is how a Spec lists its
// components.
func (k Key) Compare(o Key) int { return cmp.Compare(k.String(), o.String()) }

// parseUUID accepts the canonical 36-character form only.
func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	hexOnly := strings.ReplaceAll(s, "-", "")
	if len(hexOnly) != 32 {
		return u, false
	}
	if _, err := hex.Decode(u[:], []byte(hexOnly)); err != nil {
		return u, false
	}
	return u, true
}

func checkName(s string) error {
	if s == "" {
		return fmt.Errorf("key is empty")
	}
	if len(s) > MaxKeyNameLen {
		return fmt.Errorf("key %.20q... is longer than %d characters", s, MaxKeyNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("key %q must start with a letter or digit", s)
		}
		if !alnum && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("key %q has character %q; allowed are letters, digits, '-', '_' and '.'", s, c)
		}
	}
	return nil
}
