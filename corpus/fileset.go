package corpus

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
)

// fileSet is what a generator synthesizes for one version: file contents by
// path relative to the version's directory ("<kind>/<name>.json").
type fileSet map[string][]byte

// add records one file, refusing a name used twice (a generator bug).
func (s fileSet) add(kind, name string, data []byte) {
	p := path.Join(kind, name+".json")
	if _, dup := s[p]; dup {
		panic(fmt.Sprintf("corpus generator: %s written twice", p))
	}
	s[p] = data
}

// addJSON records v encoded with encoding/json, as the server writes a
// response body (compact, fields in struct order).
func (s fileSet) addJSON(kind, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", kind, name, err)
	}
	s.add(kind, name, data)
	return nil
}

// paths returns the set's paths, sorted.
func (s fileSet) paths() []string { return slices.Sorted(maps.Keys(s)) }

// sortedKeys returns a map's keys, sorted.
func sortedKeys[M ~map[string]V, V any](m M) []string { return slices.Sorted(maps.Keys(m)) }
