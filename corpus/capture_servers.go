package corpus

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/server/serialhistory"
)

// ServerCapture captures the files of vmm-server/v1 and vmm-server/v2 from
// real `waggle server` processes of this build (it needs KVM), in one run
// of the servers: a running ticker (its instance, its state monitor with
// history, its serial history), a disk guest that has written and verified
// its data, and the migration of each into a second server through a
// recording proxy, whose stream gives the device payloads (UART,
// virtio-blk), the machine state (vCPUs, irqchip, PIT, clock) and every
// kind of frame as the target saw it, and two arms of the migrated ticker
// as a source (a secret made, a secret given). Each body is read once at each
// version's path (/v1/instance, /v2/instance, ...) and kept in that
// version's files; the stream's files, which no API version shapes, go
// into both. A guest only v2 can describe (the panic guest with a pvpanic
// device and an explicit SMBIOS table) adds v2's own bodies: the ensure's
// and the state change's answers, an instance failed as guest_panicked,
// and two of the server's errors (capture_panic.go). The servers are
// driven by this build's CLI or plain HTTP and read over plain HTTP, so
// each body is kept as the server wrote it; nothing imports the server's
// code. cmd/corpusgen installs its Hook as CaptureHook.
type ServerCapture struct {
	// Root is the repository root; Waggle, if empty, is built from it.
	Root string
	// Waggle is a waggle binary of this build ("" builds one).
	Waggle string
	// Wait bounds each wait for a guest or a server (default 3 minutes,
	// generous for nested emulation).
	Wait time.Duration
	// Log says what the capture does (default: slog.Default()).
	Log *slog.Logger

	// run stands in for the servers in tests (nil: captureAll).
	run func(ctx context.Context) (captured, error)
}

// The versions the capturer writes files of.
var (
	capturedV1 = Version{API: "vmm-server", N: 1}
	capturedV2 = Version{API: "vmm-server", N: 2}
)

// bodyVersions are the versions whose response bodies a capture reads,
// each at its own path on the same servers.
var bodyVersions = []struct {
	v      Version
	prefix string
}{{capturedV1, "/v1"}, {capturedV2, "/v2"}}

// captured is what one run of the servers gave: for each version, files
// by path "<kind>/<name>.json".
type captured map[Version]map[string][]byte

// put records data as kind/name of version v.
func (c captured) put(v Version, kind, name string, data []byte) {
	if c[v] == nil {
		c[v] = map[string][]byte{}
	}
	c[v][kind+"/"+name+".json"] = data
}

// putShared records files (path "<kind>/<name>.json") in every version of
// bodyVersions: what a migration stream carries (frames, device and machine
// payloads) is the same bytes whichever API version armed it.
func (c captured) putShared(files map[string][]byte) {
	for _, b := range bodyVersions {
		if c[b.v] == nil {
			c[b.v] = map[string][]byte{}
		}
		for p, data := range files {
			c[b.v][p] = data
		}
	}
}

// Hook returns the capture function for CaptureHook. The first call for
// vmm-server/v1 or v2 runs the servers once and keeps what they gave;
// every call then answers its version's files from that run (so v2 is
// captured whether or not v1, released, is asked for, and a run serves
// both when both are). Other versions get no captured files. An error of
// the run is every call's error.
func (c ServerCapture) Hook() func(ctx context.Context, v Version) (map[string][]byte, error) {
	var (
		mu    sync.Mutex
		done  bool
		files captured
		err   error
	)
	return func(ctx context.Context, v Version) (map[string][]byte, error) {
		if v != capturedV1 && v != capturedV2 {
			return nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		if !done {
			run := c.run
			if run == nil {
				run = c.captureAll
			}
			files, err = run(ctx)
			done = true
		}
		if err != nil {
			return nil, err
		}
		return files[v], nil
	}
}

func (c ServerCapture) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

func (c ServerCapture) wait() time.Duration {
	if c.Wait > 0 {
		return c.Wait
	}
	return 3 * time.Minute
}

// capturedTicker is the ticker the capture runs: a fast pace, and RAM it
// dirties (one vCPU, so that it runs on a one-CPU host; the synthesized
// machine files have up to four).
const capturedTicker = `{"board":{"chipset":"i440fx","cpus":1,"memory_mb":32},"boot":{"cmdline":"pace_ms=50 dirty_kib=512 dirty_base_mib=8","image":"ticker"},` +
	`"components":{"com1":{"num":"com1","type":"serial_port"}}}`

// capturedDiskPath and capturedDiskBytes are the disk guest's file, under
// the storage root its two servers share, and its size.
const (
	capturedDiskPath  = "capture/disk.img"
	capturedDiskBytes = 1 << 20
)

// capturedDisk is the disk guest: it writes 128 sectors at slot 2 and
// verifies them again every 100 ms.
var capturedDisk = fmt.Sprintf(`{"board":{"chipset":"i440fx","cpus":1,"memory_mb":32},"boot":{"cmdline":"slot=2 sectors=128 seed=7 pace_ms=100","image":"disk"},`+
	`"components":{"com1":{"num":"com1","type":"serial_port"},"disk0":{"backend":"disk0-be","slot":2,"type":"virtio_disk"},`+
	`"disk0-be":{"block_size":512,"path":%q,"readonly":false,"type":"file_storage_backend"}}}`, capturedDiskPath)

// captureAll builds this build's waggle when none is given and runs the
// ticker, the disk guest and the panic guest.
func (c ServerCapture) captureAll(ctx context.Context) (captured, error) {
	dir, err := os.MkdirTemp("", "corpus-capture-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := c.Waggle
	if bin == "" {
		bin = filepath.Join(dir, "waggle")
		c.log().Info("capture: building waggle", "root", c.Root)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/waggle")
		cmd.Dir = c.Root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build this build's waggle: %w\n%s", err, out)
		}
	}
	out := captured{}
	if err := c.captureTicker(ctx, bin, dir, out); err != nil {
		return nil, fmt.Errorf("the ticker: %w", err)
	}
	if err := c.captureDisk(ctx, bin, dir, out); err != nil {
		return nil, fmt.Errorf("the disk guest: %w", err)
	}
	if err := c.capturePanic(ctx, bin, dir, out); err != nil {
		return nil, fmt.Errorf("the panic guest: %w", err)
	}
	return out, nil
}

// pair starts two servers named a and b under dir; both share the storage
// root storage (the disk file is where both look for it, as on shared
// storage).
func (c ServerCapture) pair(ctx context.Context, bin, dir, a, b, storage string) (*capServer, *capServer, error) {
	sa, err := startCapServer(ctx, bin, dir, a, storage, c.wait())
	if err != nil {
		return nil, nil, err
	}
	sb, err := startCapServer(ctx, bin, dir, b, storage, c.wait())
	if err != nil {
		sa.stop()
		return nil, nil, err
	}
	return sa, sb, nil
}

// startGuest creates and runs the VM of spec on s with the CLI, and waits
// until its console shows ready.
func (c ServerCapture) startGuest(ctx context.Context, bin, dir string, s *capServer, name, spec, ready string) error {
	p := filepath.Join(dir, name+".json")
	if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
		return err
	}
	if _, err := s.vm(ctx, bin, dir, c.wait(), "create", "-spec", p, "-name", name); err != nil {
		return err
	}
	if _, err := s.vm(ctx, bin, dir, c.wait(), "run"); err != nil {
		return err
	}
	_, err := s.awaitSerial(ctx, ready, c.wait())
	return err
}

// keep records a response body of the server under kind/name in every
// version of bodyVersions: GET of path (with its query) at each version's
// prefix, as the server wrote it.
func keep(ctx context.Context, out captured, s *capServer, kind, name, path string) error {
	return keepCall(ctx, out, s, kind, name, http.MethodGet, path, nil)
}

// keepCall records the 200 answer to method at path (body, when not nil,
// is the request's JSON) in every version of bodyVersions, each sent at
// its version's prefix and kept as the server wrote it.
func keepCall(ctx context.Context, out captured, s *capServer, kind, name, method, path string, body []byte) error {
	for _, b := range bodyVersions {
		got, err := s.call(ctx, method, b.prefix+path, body, http.StatusOK)
		if err != nil {
			return err
		}
		out.put(b.v, kind, name, got)
	}
	return nil
}

// capturedArmID is the id of the migrations the capture arms and never
// starts (their arms lapse with the servers).
const capturedArmID = "3b1f0e6a-9c2d-4e8f-a7b6-5d4c3b2a1f0e"

// keepArms arms s's running instance twice through each version and
// records the answers: once with a secret the server makes and answers,
// once with a secret given (which is not answered). Nothing starts: each
// arm replaces the one before, and the last lapses.
func keepArms(ctx context.Context, out captured, s *capServer, name string) error {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	given := base64.RawURLEncoding.EncodeToString(raw)
	for _, a := range []struct{ name, body string }{
		{name + "-made-secret", `{"migration_id":"` + capturedArmID + `","ttl_seconds":60}`},
		{name + "-secret-given", `{"migration_id":"` + capturedArmID + `","secret":"` + given + `","ttl_seconds":3600}`},
	} {
		if err := keepCall(ctx, out, s, KindMigrationArmed, a.name, http.MethodPut, "/instance/migrate/expect", []byte(a.body)); err != nil {
			return err
		}
	}
	return nil
}

func (c ServerCapture) captureTicker(ctx context.Context, bin, dir string, out captured) error {
	a, b, err := c.pair(ctx, bin, dir, "ticker-a", "ticker-b", filepath.Join(dir, "ticker-storage"))
	if err != nil {
		return err
	}
	defer a.stop()
	defer b.stop()
	c.log().Info("capture: a ticker", "server", a.addr)
	if err := c.startGuest(ctx, bin, dir, a, "ticker", capturedTicker, "tick 5\n"); err != nil {
		return err
	}
	for _, k := range []struct{ kind, name, path string }{
		{KindInstance, "ticker-running", "/instance"},
		{KindSpecView, "ticker-running", "/instance/spec"},
		{KindStateView, "ticker-running-history", "/instance/state-monitor?gen=0"},
		{KindSerialHistory, "ticker", "/instance/serial/history"},
		{KindSerialHistory, "ticker-most-recent-16", "/instance/serial/history?most_recent=16"},
		{KindSerialHistory, "ticker-from-start-13", "/instance/serial/history?from_start=13&max_bytes=20"},
		{KindMigrationStatus, "ticker-none", "/instance/migration-status"},
	} {
		if err := keep(ctx, out, a, k.kind, k.name, k.path); err != nil {
			return err
		}
	}
	if err := c.migrate(ctx, bin, dir, a, b, "ticker", capturedTicker, out); err != nil {
		return err
	}
	// The guest ticks on, on b: new output past the history that came along.
	moved, err := b.serialEnd(ctx)
	if err != nil {
		return err
	}
	if _, err := b.awaitSerialFrom(ctx, "tick", moved, c.wait()); err != nil {
		return fmt.Errorf("after the migration: %w", err)
	}
	for _, k := range []struct {
		s          *capServer
		kind, name string
		path       string
	}{
		{a, KindInstance, "ticker-migrated-out", "/instance"},
		{a, KindStateView, "ticker-migrated-out-history", "/instance/state-monitor?gen=0"},
		{a, KindMigrationStatus, "ticker-source", "/instance/migration-status"},
		{b, KindInstance, "ticker-migrated-in", "/instance"},
		{b, KindStateView, "ticker-migrated-in-history", "/instance/state-monitor?gen=0"},
		{b, KindMigrationStatus, "ticker-target", "/instance/migration-status"},
		{b, KindSerialHistory, "ticker-migrated-in", "/instance/serial/history"},
	} {
		if err := keep(ctx, out, k.s, k.kind, k.name, k.path); err != nil {
			return err
		}
	}
	// The migrated ticker runs on b: arm it, as a source, and keep the
	// answers.
	return keepArms(ctx, out, b, "ticker")
}

func (c ServerCapture) captureDisk(ctx context.Context, bin, dir string, out captured) error {
	storage := filepath.Join(dir, "disk-storage")
	a, b, err := c.pair(ctx, bin, dir, "disk-a", "disk-b", storage)
	if err != nil {
		return err
	}
	defer a.stop()
	defer b.stop()
	disk := filepath.Join(storage, filepath.FromSlash(capturedDiskPath))
	if err := os.MkdirAll(filepath.Dir(disk), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(disk, make([]byte, capturedDiskBytes), 0o600); err != nil {
		return err
	}
	c.log().Info("capture: a disk guest", "server", a.addr)
	if err := c.startGuest(ctx, bin, dir, a, "disk", capturedDisk, "disk ok pass 2\n"); err != nil {
		return err
	}
	for _, k := range []struct{ kind, name, path string }{
		{KindInstance, "disk-running", "/instance"},
		{KindSpecView, "disk-running", "/instance/spec"},
		{KindSerialHistory, "disk", "/instance/serial/history"},
	} {
		if err := keep(ctx, out, a, k.kind, k.name, k.path); err != nil {
			return err
		}
	}
	if err := c.migrate(ctx, bin, dir, a, b, "disk", capturedDisk, out); err != nil {
		return err
	}
	// The data came along: the guest verifies it again on the target (past
	// the history that came along with the VM).
	moved, err := b.serialEnd(ctx)
	if err != nil {
		return err
	}
	text, err := b.awaitSerialFrom(ctx, "disk ok pass", moved, c.wait())
	if err != nil {
		return fmt.Errorf("after the migration: %w", err)
	}
	if strings.Contains(text, "BAD") {
		return fmt.Errorf("the disk guest found bad data after the migration: %q", tailString(text, 300))
	}
	return keep(ctx, out, b, KindSerialHistory, "disk-migrated-in", "/instance/serial/history")
}

// migrate moves name's VM from a to b with the CLI, the target dialing the
// source through a recording proxy, and records the stream: each kind of
// frame (the first of each, and the last RoundEnd), each device's payload
// and the machine state, named after name.
func (c ServerCapture) migrate(ctx context.Context, bin, dir string, a, b *capServer, name, spec string, out captured) error {
	proxy, err := newStreamProxy(a.addr)
	if err != nil {
		return err
	}
	c.log().Info("capture: migrating", "vm", name, "from", a.addr, "to", b.addr, "through", proxy.Addr())
	if _, err := a.vm(ctx, bin, dir, 2*c.wait(), "migrate", "-to", b.addr, "-to-token-file", b.token, "-src-addr", proxy.Addr(), "-o", "json"); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, c.wait())
	defer cancel()
	up, down, err := proxy.recorded(rctx)
	if err != nil {
		return err
	}
	fromTarget, rawUp, err := streamFrames(up, true)
	if err != nil {
		return err
	}
	fromSource, rawDown, err := streamFrames(down, false)
	if err != nil {
		return err
	}
	files := map[string][]byte{}
	if err := recordStream(files, name, spec, append(fromTarget, fromSource...), append(rawUp, rawDown...)); err != nil {
		return err
	}
	out.putShared(files)
	return nil
}

// recordStream turns a migration's frames into corpus files: one frame
// file per type (RAM frames aside: a page of a ticker says nothing a
// synthesized one does not, and a megabyte each), the last RoundEnd too,
// a device file per Device frame and a machine file for the Machine frame.
func recordStream(out map[string][]byte, name, spec string, frames []migration.Frame, raw [][]byte) error {
	var ws struct {
		Components map[string]struct {
			Type      string `json:"type"`
			Num       string `json:"num"`
			Slot      *uint8 `json:"slot"`
			BlockSize uint32 `json:"block_size"`
			ReadOnly  bool   `json:"readonly"`
		} `json:"components"`
	}
	if err := json.Unmarshal([]byte(spec), &ws); err != nil {
		return err
	}
	seen := map[migration.Type]bool{}
	add := func(kind, n string, v any) error {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		out[kind+"/"+n+".json"] = data
		return nil
	}
	var lastEnd []byte
	for i, f := range frames {
		fname := name + "-" + frameFileName(f.Type)
		switch f.Type {
		case migration.TypeRAM:
			continue
		case migration.TypeRoundEnd:
			if re, err := migration.DecodeRoundEnd(f.Payload); err == nil && re.Final {
				lastEnd = raw[i]
			}
		case migration.TypeDevice:
			d, err := migration.DecodeDevice(f.Payload)
			if err != nil {
				return err
			}
			if held, ok := strings.CutPrefix(d.Key, "@"); ok {
				// Not a device of the spec (no spec key has an @): a
				// payload the server keeps for the VM, such as the
				// console's history (its head "@console", its tail
				// "@console-tail"). Its frame is kept, and, for a kind
				// the corpus replays (the serial history), its payload
				// as a device file with no device config.
				if !heldKeyName.MatchString(held) {
					return fmt.Errorf("the stream carries a payload under key %q, which names no corpus file", d.Key)
				}
				fname = name + "-device-at-" + held
				if d.Kind == serialhistory.Kind {
					if err := add(KindDevice, name+"-at-"+held, DeviceFile{Kind: d.Kind, Version: d.Version, Data: d.Data}); err != nil {
						return err
					}
				}
				break
			}
			fname = name + "-device-" + d.Key
			cfg := DeviceConfig{}
			comp, ok := ws.Components[d.Key]
			switch {
			case !ok:
				return fmt.Errorf("the stream carries device %q, which the spec does not have", d.Key)
			case comp.Type == "serial_port":
				cfg.Port = comp.Num
			case comp.Type == "virtio_disk":
				cfg.Slot, cfg.DiskBytes, cfg.BlockSize = comp.Slot, capturedDiskBytes, 512
				if be, ok := ws.Components["disk0-be"]; ok {
					cfg.BlockSize, cfg.ReadOnly = be.BlockSize, be.ReadOnly
				}
			}
			if err := add(KindDevice, name+"-"+d.Key, DeviceFile{Kind: d.Kind, Version: d.Version, Data: d.Data, Device: cfg}); err != nil {
				return err
			}
		case migration.TypeMachine:
			m, err := migration.DecodeMachine(f.Payload)
			if err != nil {
				return err
			}
			if err := add(KindMachine, name, MachineFile{Version: m.Version, Data: m.Data}); err != nil {
				return err
			}
		}
		if f.Type != migration.TypeDevice && seen[f.Type] {
			continue
		}
		seen[f.Type] = true
		if err := add(KindFrame, fname, FrameFile{Type: f.Type.String(), Frame: raw[i]}); err != nil {
			return err
		}
	}
	if lastEnd != nil {
		if err := add(KindFrame, name+"-round-end-final", FrameFile{Type: migration.TypeRoundEnd.String(), Frame: lastEnd}); err != nil {
			return err
		}
	}
	for _, t := range []migration.Type{migration.TypeHello, migration.TypeWelcome, migration.TypeProof, migration.TypeMachine} {
		if !seen[t] {
			return fmt.Errorf("the stream of %s carried no %s frame", name, t)
		}
	}
	return nil
}

// heldKeyName is what a server-held payload's key (after its @) must be to
// name a corpus file.
var heldKeyName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// frameFileName is a frame type's name in a file name: "RoundEnd" ->
// "round-end".
func frameFileName(t migration.Type) string {
	var b strings.Builder
	for i, r := range t.String() {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('-')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
