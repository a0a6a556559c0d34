package migration

import "fmt"

// AbortCode says, in a form the receiver can put in its own words, why a
// migration ends. A receiver treats a code it does not know as
// AbortFailed.
type AbortCode uint8

// The abort codes. Values are never reused.
const (
	// AbortFailed: the migration failed; the reason says how.
	AbortFailed AbortCode = iota + 1
	// AbortNoSuchMigration: the source expects no migration with the id of
	// the Hello (it was never armed, its arm expired, or it was used).
	AbortNoSuchMigration
	// AbortSecretRefused: the peer's proof of the migration secret did not
	// hold.
	AbortSecretRefused
	// AbortNoCommonProtocol: the two sides speak no protocol in common.
	AbortNoCommonProtocol
)

var abortNames = map[AbortCode]string{
	AbortFailed: "failed", AbortNoSuchMigration: "no_such_migration",
	AbortSecretRefused: "secret_refused", AbortNoCommonProtocol: "no_common_protocol",
}

func (c AbortCode) String() string {
	if n, ok := abortNames[c]; ok {
		return n
	}
	return fmt.Sprintf("AbortCode(%d)", uint8(c))
}

// Abort ends a migration before the hand-off, saying why. Either side may
// send it at any point before Commit. The Reason is the sender's own text
// and untrusted: a receiver shows it only once the sender has proved that
// it holds the migration secret, and then sanitized.
type Abort struct {
	Code   AbortCode
	Reason string
}

// MaxReason bounds an Abort's reason.
const MaxReason = 4096

// Encode returns the payload: the code (u8) and the reason, cut to
// MaxReason bytes.
func (a Abort) Encode() []byte {
	var e enc
	e.u8(uint8(a.Code))
	r := a.Reason
	if len(r) > MaxReason {
		r = r[:MaxReason]
	}
	e.str(r)
	return e.b
}

// DecodeAbort parses an Abort payload. Any code decodes (a newer peer may
// send one this build does not know); code 0 does not.
func DecodeAbort(p []byte) (Abort, error) {
	d := dec{b: p, msg: TypeAbort}
	a := Abort{Code: AbortCode(d.u8("code"))}
	if d.err == nil && a.Code == 0 {
		d.fail("code 0")
	}
	a.Reason = d.str("reason", MaxReason)
	return a, d.done()
}
