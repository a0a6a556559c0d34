package v1

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
)

// The pages of the lists: how many items a page holds unless asked, and
// the most it may hold (the contract's limit parameter says the same).
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// Which list a page token belongs to.
const (
	listInstances = "instances"
	listSleds     = "sleds"
)

// pageTokenVersion is the version of the token's content; a later control
// plane that changes the content still reads this one.
const pageTokenVersion = 1

// maxPageTokenLen is the contract's maxLength of a PageToken.
const maxPageTokenLen = 256

// pageToken is what a page token holds, as JSON under URL-safe base64
// without padding: its version, the list it belongs to and the key (an
// instance's name, a sled's id) of the last item of the page it ended.
type pageToken struct {
	V     int    `json:"v"`
	List  string `json:"list"`
	After string `json:"after"`
}

// encodePageToken makes the token of a page of list that ended at after.
func encodePageToken(list, after string) string {
	b, err := json.Marshal(pageToken{V: pageTokenVersion, List: list, After: after})
	if err != nil {
		panic(fmt.Sprintf("encode a page token: %v", err)) // a struct of an int and strings always encodes
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// badPageToken is the 400 of a page token the control plane did not give
// for the list.
func badPageToken(problem string) error {
	return &fieldError{Field: "query parameter page_token", Problem: problem + "; send back a next_page_token of this list as it came, or none for the first page"}
}

// decodePageToken reads a token of list and answers the key its page
// ended at. A token that is not one this control plane gives for list
// (other bytes, another list's, a key that cannot be one) is a 400 naming
// page_token.
func decodePageToken(list, raw string) (string, error) {
	if raw == "" || len(raw) > maxPageTokenLen {
		return "", badPageToken(fmt.Sprintf("has %d characters; want 1 to %d", len(raw), maxPageTokenLen))
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(raw)
	if err != nil {
		return "", badPageToken("is not a page token")
	}
	var t pageToken
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil || dec.More() {
		return "", badPageToken("is not a page token")
	}
	if t.V != pageTokenVersion {
		return "", badPageToken(fmt.Sprintf("is of token version %d, which this control plane does not read", t.V))
	}
	if t.List != list {
		return "", badPageToken(fmt.Sprintf("is a token of the %s list, not of the %s list", t.List, list))
	}
	switch list {
	case listInstances:
		if CheckName(t.After) != nil {
			return "", badPageToken("is not a page token")
		}
	case listSleds:
		id, err := uuid.Parse(t.After)
		if err != nil || id.String() != t.After {
			return "", badPageToken("is not a page token")
		}
	}
	// Only the bytes this control plane gives: encoding/json also takes
	// keys in another case ("aFter"), spaces, escapes and other orders,
	// each of which would make a second token for one page.
	if encodePageToken(list, t.After) != raw {
		return "", badPageToken("is not a page token")
	}
	return t.After, nil
}

// pageLimit reads the limit parameter: DefaultPageLimit when left out.
// The contract's validation refuses others first; this is the boundary's
// own guard.
func pageLimit(limit *int) (int, error) {
	if limit == nil {
		return DefaultPageLimit, nil
	}
	if *limit < 1 || *limit > MaxPageLimit {
		return 0, &fieldError{Field: "query parameter limit", Problem: fmt.Sprintf("%d: want 1 to %d", *limit, MaxPageLimit)}
	}
	return *limit, nil
}
