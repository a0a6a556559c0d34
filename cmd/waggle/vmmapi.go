package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/spec"
)

// The CLI drives a VMM server through the newest API version both speak,
// or the one -api names. Its commands see the server through vmmAPI, in
// the CLI's own views below; one adapter per version (vmm_v2.go,
// vmm_v1.go) turns that version's generated client and answers into them,
// and a spec crosses as the hub's spec.Spec, through the version's spoke.
// Instance states and migration phases have the same names in every
// version, so the views keep them as strings.

// vmmAPI is a VMM server as the CLI drives it. Every method answers an
// *apiError when the server refuses.
type vmmAPI interface {
	// version is the API version spoken: "v2".
	version() string
	// instance is GET /instance.
	instance(ctx context.Context) (instanceView, error)
	// spec is GET /instance/spec.
	spec(ctx context.Context) (specView, error)
	// decodeSpec reads an InstanceSpec of this version (a -spec file).
	decodeSpec(data []byte) (spec.Spec, error)
	// create creates the instance from a spec.
	create(ctx context.Context, p properties, s spec.Spec) (instanceView, error)
	// createTarget creates the instance as the target of a migration.
	createTarget(ctx context.Context, p properties, t migrationTarget) (instanceView, error)
	// request asks for a state: "run", "stop" or "reboot".
	request(ctx context.Context, verb string) error
	// monitor is the state monitor: the state once the generation passes
	// gen, or after timeout (nil: the server's default).
	monitor(ctx context.Context, gen int64, timeout *time.Duration) (stateView, error)
	// arm arms the instance as the source of migration id and answers its
	// one-time secret.
	arm(ctx context.Context, id uuid.UUID) (string, error)
	// migrations is GET /instance/migration.
	migrations(ctx context.Context) (migrationsView, error)
	// serialHistory is the last mostRecent bytes the guest printed.
	serialHistory(ctx context.Context, mostRecent int64) (serialView, error)
	// consoleURL is the serial console's WebSocket URL.
	consoleURL() string
}

// properties are an instance's properties.
type properties struct {
	ID          uuid.UUID
	Name        string
	Description string
}

// failure is why an instance failed. Kind is "" where the version spoken
// does not say (v1 has only the message).
type failure struct {
	Kind    string
	Message string
}

// String is the failure as the CLI prints it: "kind: message".
func (f *failure) String() string {
	if f.Kind == "" {
		return f.Message
	}
	if f.Message == "" {
		return f.Kind
	}
	return f.Kind + ": " + f.Message
}

// text is the failure's String, or "" for none.
func (f *failure) text() string {
	if f == nil {
		return ""
	}
	return f.String()
}

// instanceView is an instance: GET /instance or an ensure's answer.
type instanceView struct {
	Properties properties
	State      string
	Gen        int64
	Failure    *failure
	// raw is the server's answer, which -o json prints as it came.
	raw json.RawMessage
}

// historyEntry is one state change of an instance's history.
type historyEntry struct {
	Gen     int64
	State   string
	At      time.Time
	Failure *failure
}

// migrationProgress is one side's view of a migration; every version has
// the same shape.
type migrationProgress struct {
	MigrationID   uuid.UUID `json:"migration_id"`
	Phase         string    `json:"phase"`
	BytesSent     int64     `json:"bytes_sent"`
	PagesLeft     int64     `json:"pages_left"`
	Rounds        int       `json:"rounds"`
	TotalUs       *int64    `json:"total_us,omitempty"`
	DowntimeUs    *int64    `json:"downtime_us,omitempty"`
	FailureReason *string   `json:"failure_reason,omitempty"`
}

// migrationsView is the migrations of an instance, each side's.
type migrationsView struct {
	In  *migrationProgress `json:"migration_in,omitempty"`
	Out *migrationProgress `json:"migration_out,omitempty"`
}

// stateView is a state monitor's answer.
type stateView struct {
	Gen       int64
	State     string
	Failure   *failure
	History   []historyEntry // nil when the server keeps none
	Migration migrationsView
}

// specView is GET /instance/spec: the spec, or nil while a migration
// target waits for its source to send it.
type specView struct {
	Spec *spec.Spec
	raw  json.RawMessage
}

// serialView is a stretch of what the guest printed.
type serialView struct {
	Data []byte
	raw  json.RawMessage
}

// migrationTarget is how a target reaches its source.
type migrationTarget struct {
	ID      uuid.UUID
	SrcAddr string
	Secret  string
	// Replace holds components of the source's spec that the target
	// opens otherwise, each a component's JSON.
	Replace map[string]json.RawMessage
}

// Instance states and migration phases the CLI acts on, as every version
// names them.
const (
	stateRunning   = "running"
	stateStopping  = "stopping"
	stateStopped   = "stopped"
	stateRebooting = "rebooting"
	stateDestroyed = "destroyed"
	stateFailed    = "failed"

	phaseCompleted = "completed"
	phaseFailed    = "failed"
)

// apiVersion is one version of the VMM server's API the CLI speaks.
type apiVersion struct {
	name string // "v2": the -api value and the path prefix without "/"
	dial func(ep endpoint, hc *http.Client, token string) (vmmAPI, error)
}

// apiVersions lists the versions the CLI speaks, newest first.
var apiVersions = []apiVersion{
	{name: "v2", dial: dialV2},
	{name: "v1", dial: dialV1},
}

// apiNames is the -api values, for messages: "v2, v1".
func apiNames() string {
	names := make([]string, len(apiVersions))
	for i, v := range apiVersions {
		names[i] = v.name
	}
	return strings.Join(names, ", ")
}

// dialVMM returns the server at ep in the version force names, or else
// the newest version it serves, which it asks the server for. The oldest
// version is asked for by no probe: a server that serves none of the
// newer ones is spoken to in it (a server that serves no version at all
// then refuses the first request, which says so).
func dialVMM(ctx context.Context, ep endpoint, token string, timeout time.Duration, force string) (vmmAPI, error) {
	hc := &http.Client{Timeout: timeout}
	for i, v := range apiVersions {
		switch {
		case force != "":
			if v.name != force {
				continue
			}
		case i < len(apiVersions)-1:
			ok, err := serves(ctx, hc, ep, "/"+v.name, token)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		return v.dial(ep, hc, token)
	}
	return nil, fmt.Errorf("-api %s: this CLI speaks %s", force, apiNames())
}

// serves asks the server whether it serves the version at prefix: it does
// when GET <prefix>/instance is answered, or refused for any reason other
// than an unknown path. A refused token is an error.
func serves(ctx context.Context, hc *http.Client, ep endpoint, prefix, token string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.baseURL()+prefix+"/instance", nil)
	if err != nil {
		return false, err
	}
	if token != "" {
		req.Header = httpkit.BearerHeader(token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return true, nil
	}
	e := apiErr(ep.String(), resp.StatusCode, body)
	switch {
	case resp.StatusCode == http.StatusNotFound && e.Code == httpkit.CodeNotFound:
		return false, nil
	case resp.StatusCode == http.StatusUnauthorized, e.Code == "", resp.StatusCode >= 500:
		return false, e
	}
	return true, nil
}

// refused turns a non-2xx answer into the CLI's error.
func refused(ep endpoint, status int, body []byte) error {
	return apiErr(ep.String(), status, body)
}

// printRaw prints a server's JSON answer, indented.
func (c *vmCmd) printRaw(raw json.RawMessage) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("the server's answer is not JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := b.WriteTo(c.stdout)
	return err
}
