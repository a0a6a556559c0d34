package corpus

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
)

// KindCross holds the results of converting specs between two versions of
// an API. A crossing between versions M < N is recorded in the corpus of
// N, the newer one: when N joins, its corpus is in development and takes
// the records; once N is released they freeze with it, and a change in
// either direction (a spec that could cross no longer can, or the reverse)
// fails replay.
const KindCross = "cross"

// CrossRecord is one crossing: a spec file of version From converted into
// version To through the hub, and back.
type CrossRecord struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Spec is the spec file crossed, relative to the corpus directory.
	Spec string `json:"spec"`
	// Result is "ok" or "cannot_express".
	Result string `json:"result"`
	// Encoded is the spec in version To, when Result is "ok".
	Encoded json.RawMessage `json:"encoded,omitempty"`
	// Problems are the fields version To cannot express (spec.Problem
	// paths and rules), when Result is "cannot_express".
	Problems []string `json:"problems,omitempty"`
}

// Crossing results.
const (
	CrossOK            = "ok"
	CrossCannotExpress = "cannot_express"
)

// spokeOf returns the spoke named after v, if registered.
func spokeOf(spokes []versions.Spoke, v Version) (versions.Spoke, bool) {
	i := slices.IndexFunc(spokes, func(s versions.Spoke) bool { return s.Name == v.String() })
	if i < 0 {
		return versions.Spoke{}, false
	}
	return spokes[i], true
}

// registeredSpokes returns every spoke of the registry in versions/.
func registeredSpokes() []versions.Spoke {
	var out []versions.Spoke
	for _, n := range versions.Names() {
		s, _ := versions.Lookup(n)
		out = append(out, s)
	}
	return out
}

// olderVersions lists the versions of v's API below v that spokes has.
func olderVersions(spokes []versions.Spoke, v Version) []Version {
	var out []Version
	for _, s := range spokes {
		api, n, ok := strings.Cut(s.Name, "/v")
		var num int
		if _, err := fmt.Sscan(n, &num); ok && err == nil && api == v.API && num < v.N {
			out = append(out, Version{API: api, N: num})
		}
	}
	return out
}

// crossings computes the crossing records that belong in v's corpus: every
// spec of each older version into v, and every spec of v into each older
// version. specsOf returns a version's spec files (name -> bytes).
func crossings(spokes []versions.Spoke, v Version, specsOf func(Version) (map[string][]byte, error)) (fileSet, error) {
	out := fileSet{}
	top, ok := spokeOf(spokes, v)
	if !ok {
		return out, nil
	}
	for _, old := range olderVersions(spokes, v) {
		low, _ := spokeOf(spokes, old)
		for _, dir := range []struct {
			from, to versions.Spoke
			fromV    Version
			prefix   string
		}{{low, top, old, fmt.Sprintf("from-v%d-", old.N)}, {top, low, v, fmt.Sprintf("to-v%d-", old.N)}} {
			specs, err := specsOf(dir.fromV)
			if err != nil {
				return nil, err
			}
			for _, name := range sortedKeys(specs) {
				rec, err := cross(dir.from, dir.to, specs[name])
				if err != nil {
					return nil, fmt.Errorf("%s/%s/%s.json: %w", dir.fromV, KindSpec, name, err)
				}
				rec.Spec = path.Join(dir.fromV.String(), KindSpec, name+".json")
				data, err := json.Marshal(rec)
				if err != nil {
					return nil, err
				}
				out.add(KindCross, dir.prefix+name, data)
			}
		}
	}
	return out, nil
}

// cross converts one spec from one version into another and back.
func cross(from, to versions.Spoke, data []byte) (CrossRecord, error) {
	rec := CrossRecord{From: from.Name, To: to.Name}
	hub, err := from.Decode(data)
	if err != nil {
		return rec, fmt.Errorf("decode in %s: %w", from.Name, err)
	}
	enc, err := to.Encode(hub)
	if err != nil {
		rec.Result = CrossCannotExpress
		rec.Problems = problemList(err)
		if len(rec.Problems) == 0 {
			return rec, fmt.Errorf("%s cannot express it but names no field: %w", to.Name, err)
		}
		return rec, nil
	}
	back, err := to.Decode(enc)
	if err != nil {
		return rec, fmt.Errorf("%s does not read back what it wrote: %w", to.Name, err)
	}
	if !back.Equal(hub) {
		return rec, fmt.Errorf("crossing into %s and back loses information", to.Name)
	}
	rec.Result, rec.Encoded = CrossOK, enc
	return rec, nil
}

// problemList names the fields of a conversion error: "<path> <rule>".
func problemList(err error) []string {
	var out []string
	var ve *spec.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			out = append(out, p.Path+" "+string(p.Rule))
		}
	}
	if u := unsupportedProblems(err); u != nil {
		for _, p := range u {
			out = append(out, p.Path+" "+string(p.Rule))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// unsupportedProblems finds, in err's chain, a version's "cannot express"
// error: any error struct with a Problems []spec.Problem field (each
// version package has its own UnsupportedError type).
func unsupportedProblems(err error) []spec.Problem {
	for err != nil {
		v := reflect.ValueOf(err)
		for v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct {
			if f := v.FieldByName("Problems"); f.IsValid() {
				if ps, ok := f.Interface().([]spec.Problem); ok {
					return ps
				}
			}
		}
		err = errors.Unwrap(err)
	}
	return nil
}

// specFilesOnDisk reads a version's spec files from the corpus directory.
func specFilesOnDisk(dir string) func(Version) (map[string][]byte, error) {
	return func(v Version) (map[string][]byte, error) {
		sd := filepath.Join(dir, filepath.FromSlash(v.String()), KindSpec)
		entries, err := os.ReadDir(sd)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		out := map[string][]byte{}
		for _, e := range entries {
			name, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok || strings.HasSuffix(e.Name(), AfterSuffix) {
				continue
			}
			data, err := os.ReadFile(filepath.Join(sd, e.Name()))
			if err != nil {
				return nil, err
			}
			out[name] = data
		}
		return out, nil
	}
}
