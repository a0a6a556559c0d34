// Package qemubench live-migrates a guest image between two QEMU processes on
// loopback and reports QEMU's own figures (total time, downtime, bytes sent,
// throughput), so that waggle's live migration can be compared with QEMU's on
// the same guest image (see waggle/vmm/guest and its ABI.md).
//
// The room: two qemu-system-x86_64 processes (-machine pc, no network, no
// display, serial to a file, a QMP unix socket each) in a private temporary
// directory; the target waits with -incoming defer and is told to listen on
// 127.0.0.1 (an ephemeral port), the source boots the image with -kernel and
// -append. Migrate waits for the guest's ready line, lets it run for
// Config.WarmUp, lifts QEMU's bandwidth limit, migrates over TCP on loopback
// (a single stream, no multifd, no compression, no postcopy, QEMU's default
// capabilities), polls query-migrate until the migration ends, checks that the
// guest carries on on the target, and quits both processes. Everything is
// loopback only, and both processes are killed and the directory removed on
// every path.
//
// QEMU is an optional comparison, never a requirement: nothing in waggle
// depends on it. Callers (benchmarks, tests) must call Available first and skip,
// giving its reason, when QEMU is not installed or can run no guest.
package qemubench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binary is the QEMU system emulator looked up on PATH.
const Binary = "qemu-system-x86_64"

// MaxBandwidth is the migration bandwidth limit Migrate sets (bytes per
// second, QEMU's max-bandwidth): 100 GB/s, far above what loopback carries, so
// QEMU is effectively not throttled. QEMU's default (128 MiB/s in QEMU 7.2)
// would make it look far slower than it is.
const MaxBandwidth uint64 = 100_000_000_000

// DowntimeLimit is the downtime-limit Migrate sets: QEMU's default, 300 ms.
// QEMU stops iterating and switches over once it estimates the remaining dirty
// memory can be sent within this time.
const DowntimeLimit = 300 * time.Millisecond

// Config describes one migration.
type Config struct {
	// Image is the Multiboot guest image, booted with -kernel (for example
	// guest.Image("ticker")). Required.
	Image []byte
	// MemoryMiB is the guest's RAM (-m); 0 means 256.
	MemoryMiB int
	// Cmdline is the guest command line (-append). QEMU appends no tsc_khz=,
	// so the guest assumes a 2 GHz TSC unless Cmdline gives it.
	Cmdline string
	// Accel is "kvm" or "tcg". Empty means kvm if /dev/kvm works (falling back
	// to tcg if QEMU cannot start with kvm), else tcg. An explicit value is
	// used as given, without fallback.
	Accel string
	// WarmUp is how long the guest runs on the source, after its ready line,
	// before the migration starts.
	WarmUp time.Duration
	// ReadyLine is the serial output that says the guest is up; empty means
	// "ticker ready" (the ticker image). For memcheck use "mem filled".
	ReadyLine string
	// MigrateTimeout bounds the migration itself (from the migrate command to
	// completion); 0 means 60 s. A guest that dirties memory faster than
	// loopback carries it never converges under the downtime limit; when the
	// timeout (or ctx) ends the migration first, Migrate cancels it and
	// returns an error with QEMU's last progress figures.
	MigrateTimeout time.Duration
	// AfterLines is how many complete lines the target must print after
	// the migration, ticks consecutive and no "BAD", before Migrate
	// returns; 0 means 2. Negative: Migrate checks only that the target
	// runs, for a guest that prints nothing for long (memcheck with a
	// large pace_ms, whose check comes a pace after the migration).
	AfterLines int
}

// Result is what QEMU reported for a completed migration (query-migrate on
// the source), plus what Migrate observed. QEMU reports times in whole
// milliseconds.
type Result struct {
	// Total is QEMU's total-time: from the migrate command to completion.
	Total time.Duration
	// Downtime is QEMU's downtime: how long the guest was stopped (from the
	// source pausing it to the end of the migration on the source side).
	Downtime time.Duration
	// Bytes is ram.transferred: RAM bytes sent, page headers included.
	Bytes uint64
	// Throughput in bytes per second: QEMU's ram.mbps (megabits per second
	// over total-time minus setup-time, counting the whole stream) converted,
	// or Bytes/Total when QEMU reports no rate.
	Throughput float64
	// SetupTime is QEMU's setup-time (before the first RAM is sent).
	SetupTime time.Duration
	// QEMUVersion is the source QEMU's version as QMP reports it, e.g.
	// "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)".
	QEMUVersion string

	// Accel is the accelerator both QEMUs ran with ("kvm" or "tcg").
	Accel string
	// MaxBandwidth and DowntimeLimit are the migration parameters in effect
	// (read back from QEMU after setting them).
	MaxBandwidth  uint64
	DowntimeLimit time.Duration
	// DirtySyncCount is ram.dirty-sync-count: how many times QEMU synced the
	// dirty bitmap (about the number of RAM passes).
	DirtySyncCount uint64
	// NormalPages and ZeroPages are ram.normal and ram.duplicate: pages sent
	// whole and pages sent as "all zero" markers.
	NormalPages, ZeroPages uint64
	// SourceLastTick is the last "tick N" the source printed and TargetTick the
	// last one the target printed when Migrate checked it (0 when the guest
	// prints no ticks). The ticks across both are consecutive.
	SourceLastTick, TargetTick uint64
}

// probe is what Available found, computed once.
type probe struct {
	bin      string
	kvm, tcg bool
	reason   string
}

var probeOnce = sync.OnceValue(func() probe {
	bin, err := exec.LookPath(Binary)
	if err != nil {
		return probe{reason: Binary + " not on PATH (install qemu-system-x86 for the QEMU comparison)"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-accel", "help").CombinedOutput()
	if err != nil {
		return probe{bin: bin, reason: fmt.Sprintf("%s -accel help: %v: %s", bin, err, bytes.TrimSpace(out))}
	}
	p := probe{bin: bin}
	var kvmWhy string
	for _, line := range strings.Split(string(out), "\n") {
		switch strings.TrimSpace(line) {
		case "tcg":
			p.tcg = true
		case "kvm":
			if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
				kvmWhy = err.Error()
			} else {
				f.Close()
				p.kvm = true
			}
		}
	}
	if !p.kvm && !p.tcg {
		p.reason = fmt.Sprintf("%s supports neither usable kvm (%s) nor tcg", bin, kvmWhy)
	}
	return p
})

// Available reports whether qemu-system-x86_64 is on PATH and can run a guest
// with KVM or TCG; when not, the reason.
func Available() (bool, string) {
	p := probeOnce()
	return p.reason == "", p.reason
}

// Migrate boots cfg.Image in a source QEMU, live-migrates it to a target QEMU
// over TCP on loopback and returns QEMU's figures. It fails if the migration
// fails or does not finish in time, or if the guest does not carry on on the
// target. Both QEMUs are gone and their files removed when it returns.
func Migrate(ctx context.Context, cfg Config) (res Result, err error) {
	p := probeOnce()
	if p.reason != "" {
		return res, errors.New("qemubench: " + p.reason)
	}
	if len(cfg.Image) == 0 {
		return res, errors.New("qemubench: Config.Image is empty")
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 256
	}
	if cfg.MemoryMiB < 0 {
		return res, fmt.Errorf("qemubench: MemoryMiB %d is negative", cfg.MemoryMiB)
	}
	if cfg.ReadyLine == "" {
		cfg.ReadyLine = "ticker ready"
	}
	if cfg.MigrateTimeout <= 0 {
		cfg.MigrateTimeout = 60 * time.Second
	}
	if cfg.AfterLines == 0 {
		cfg.AfterLines = 2
	}
	accels := []string{cfg.Accel}
	switch cfg.Accel {
	case "":
		accels = []string{"tcg"}
		if p.kvm {
			accels = []string{"kvm", "tcg"}
		}
	case "kvm", "tcg":
	default:
		return res, fmt.Errorf("qemubench: Accel %q: want kvm, tcg or empty", cfg.Accel)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	dir, err := os.MkdirTemp("", "qemubench-")
	if err != nil {
		return res, fmt.Errorf("qemubench: %w", err)
	}
	// Unix socket paths are limited to 107 bytes; keep ours well short of it.
	if len(dir) > 80 {
		os.RemoveAll(dir)
		if dir, err = os.MkdirTemp("/tmp", "qemubench-"); err != nil {
			return res, fmt.Errorf("qemubench: %w", err)
		}
	}
	defer os.RemoveAll(dir)
	if strings.Contains(dir, ",") {
		return res, fmt.Errorf("qemubench: temporary directory %q contains a comma, which QEMU options cannot take", dir)
	}
	image := filepath.Join(dir, "guest.bin")
	if err := os.WriteFile(image, cfg.Image, 0o600); err != nil {
		return res, fmt.Errorf("qemubench: %w", err)
	}
	common := []string{
		"-machine", "pc", "-m", strconv.Itoa(cfg.MemoryMiB),
		"-nodefaults", "-no-user-config", "-nographic", "-display", "none", "-monitor", "none",
		"-nic", "none", "-no-reboot",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=4",
		"-kernel", image, "-append", cfg.Cmdline,
	}

	// The source first, to settle the accelerator.
	var src, dst *qemuProc
	defer func() {
		// Normal paths have quit both already; this kills whatever is left.
		for _, q := range []*qemuProc{src, dst} {
			if q != nil {
				q.stop(2 * time.Second)
			}
		}
	}()
	var startErrs []string
	for _, accel := range accels {
		src, err = startQEMU(ctx, p.bin, "source", dir, append(common[:len(common):len(common)], "-accel", accel))
		if err == nil {
			res.Accel = accel
			break
		}
		startErrs = append(startErrs, fmt.Sprintf("with %s: %v", accel, err))
		src = nil
		if ctx.Err() != nil {
			break
		}
	}
	if src == nil {
		return res, fmt.Errorf("qemubench: starting the source QEMU: %s", strings.Join(startErrs, "; "))
	}
	res.QEMUVersion = src.qmp.version
	dst, err = startQEMU(ctx, p.bin, "target", dir, append(common[:len(common):len(common)], "-accel", res.Accel, "-incoming", "defer"))
	if err != nil {
		return res, fmt.Errorf("qemubench: starting the target QEMU: %w", err)
	}
	uri, err := listenIncoming(ctx, dst)
	if err != nil {
		return res, fmt.Errorf("qemubench: target: %w", err)
	}

	// Wait for the guest, then let it run.
	readyCtx, readyCancel := context.WithTimeout(ctx, 60*time.Second)
	readyAt, err := src.waitSerial(readyCtx, cfg.ReadyLine)
	readyCancel()
	if err != nil {
		return res, fmt.Errorf("qemubench: source guest: waiting for %q: %w", cfg.ReadyLine, err)
	}
	if cfg.WarmUp > 0 {
		select {
		case <-time.After(cfg.WarmUp):
		case <-ctx.Done():
			return res, fmt.Errorf("qemubench: warming up: %w", ctx.Err())
		case <-src.done:
			return res, fmt.Errorf("qemubench: source QEMU exited while warming up: %s", src.exitReason())
		}
	}

	if err := setParameters(ctx, src, &res); err != nil {
		return res, fmt.Errorf("qemubench: source: %w", err)
	}
	info, err := runMigration(ctx, src, uri, cfg.MigrateTimeout)
	if err != nil {
		return res, fmt.Errorf("qemubench: %w", err)
	}
	ms := func(v *int64) time.Duration {
		if v == nil {
			return 0
		}
		return time.Duration(*v) * time.Millisecond
	}
	res.Total, res.Downtime, res.SetupTime = ms(info.TotalTime), ms(info.Downtime), ms(info.SetupTime)
	if info.RAM != nil {
		res.Bytes = info.RAM.Transferred
		res.DirtySyncCount = info.RAM.DirtySyncCount
		res.NormalPages, res.ZeroPages = info.RAM.Normal, info.RAM.Duplicate
		res.Throughput = info.RAM.Mbps * 1e6 / 8
	}
	if res.Throughput <= 0 && res.Total > 0 {
		res.Throughput = float64(res.Bytes) / res.Total.Seconds()
	}

	// The guest must carry on on the target.
	if err := waitRunning(ctx, dst); err != nil {
		return res, fmt.Errorf("qemubench: target: %w", err)
	}
	if cfg.AfterLines < 0 {
		src.stop(5 * time.Second)
		dst.stop(5 * time.Second)
		return res, nil
	}
	srcOut, err := os.ReadFile(src.serial)
	if err != nil {
		return res, fmt.Errorf("qemubench: %w", err)
	}
	checkCtx, checkCancel := context.WithTimeout(ctx, 10*time.Second+time.Duration(cfg.AfterLines+1)*paceOf(cfg.Cmdline))
	res.SourceLastTick, res.TargetTick, err = checkProgress(checkCtx, srcOut[readyAt:], dst, cfg.AfterLines)
	checkCancel()
	if err != nil {
		return res, fmt.Errorf("qemubench: after the migration: %w", err)
	}

	// Quit both (the deferred stop does it too, but report a failure to quit).
	src.stop(5 * time.Second)
	dst.stop(5 * time.Second)
	return res, nil
}

// paceOf returns the pace_ms= of a command line (the last occurrence wins, as
// in the guests), defaulting to 500 ms, the longest default of the images.
func paceOf(cmdline string) time.Duration {
	pace := 500 * time.Millisecond
	for _, w := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(w, "pace_ms="); ok {
			n := 0
			for _, c := range v {
				if c < '0' || c > '9' {
					break
				}
				n = n*10 + int(c-'0')
				if n > 3_600_000 {
					break
				}
			}
			pace = time.Duration(n) * time.Millisecond
		}
	}
	return pace
}

// qemuProc is one running QEMU.
type qemuProc struct {
	name   string
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	stderr *tailBuffer
	serial string
	qmp    *qmpConn
}

// startQEMU starts QEMU with args plus its own QMP socket and serial file in
// dir and connects to the QMP socket.
func startQEMU(ctx context.Context, bin, name, dir string, args []string) (*qemuProc, error) {
	sock := filepath.Join(dir, name+".qmp")
	q := &qemuProc{
		name:   name,
		done:   make(chan struct{}),
		stderr: &tailBuffer{max: 8 << 10},
		serial: filepath.Join(dir, name+".serial"),
	}
	args = append(args,
		"-qmp", "unix:"+sock+",server=on,wait=off",
		"-serial", "file:"+q.serial,
	)
	q.cmd = exec.CommandContext(ctx, bin, args...)
	q.cmd.Stdin = nil
	q.cmd.Stdout = q.stderr
	q.cmd.Stderr = q.stderr
	q.cmd.WaitDelay = 2 * time.Second
	// If this process dies, so does QEMU.
	q.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := q.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		q.cmd.Wait()
		close(q.done)
	}()

	deadline := time.Now().Add(20 * time.Second)
	for {
		dialCtx, dialCancel := context.WithTimeout(ctx, 5*time.Second)
		qmp, err := dialQMP(dialCtx, sock)
		dialCancel()
		if err == nil {
			q.qmp = qmp
			return q, nil
		}
		var opErr *net.OpError
		retry := errors.As(err, &opErr) && opErr.Op == "dial"
		if !retry || time.Now().After(deadline) {
			q.stop(2 * time.Second)
			return nil, fmt.Errorf("%s QEMU: QMP: %w; %s", name, err, q.exitReason())
		}
		select {
		case <-q.done:
			return nil, fmt.Errorf("%s QEMU exited at start: %s", name, q.exitReason())
		case <-ctx.Done():
			q.stop(2 * time.Second)
			return nil, fmt.Errorf("%s QEMU: %w", name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// exitReason describes how the process ended (or that it runs) and the tail
// of its output.
func (q *qemuProc) exitReason() string {
	state := "still running"
	select {
	case <-q.done:
		state = q.cmd.ProcessState.String()
		// isa-debug-exit makes QEMU exit with (v << 1) | 1 for guest status v.
		if code := q.cmd.ProcessState.ExitCode(); code > 0 && code&1 == 1 {
			state += fmt.Sprintf(" (the guest powered off through port 0xf4 with status %d)", code>>1)
		}
	default:
	}
	out := strings.TrimSpace(q.stderr.String())
	if out == "" {
		return state
	}
	return state + ", output: " + out
}

// stop quits QEMU through QMP, and kills it if it has not exited after grace.
// It is safe to call more than once.
func (q *qemuProc) stop(grace time.Duration) {
	select {
	case <-q.done:
	default:
		if q.qmp != nil {
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			q.qmp.do(ctx, "quit", nil, nil) // the connection may close before the reply
			cancel()
		}
		select {
		case <-q.done:
		case <-time.After(grace):
			q.cmd.Process.Kill()
			<-q.done
		}
	}
	if q.qmp != nil {
		q.qmp.Close()
	}
}

// waitSerial polls the serial output until it contains line and returns the
// offset at which it starts.
func (q *qemuProc) waitSerial(ctx context.Context, line string) (int, error) {
	for {
		b, err := os.ReadFile(q.serial)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		if i := bytes.Index(b, []byte(line)); i >= 0 {
			return i, nil
		}
		select {
		case <-q.done:
			return 0, fmt.Errorf("QEMU exited: %s; serial output: %q", q.exitReason(), tail(b))
		case <-ctx.Done():
			return 0, fmt.Errorf("%w; serial output: %q", ctx.Err(), tail(b))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// listenIncoming makes the target listen on an ephemeral loopback port and
// returns the URI the source migrates to.
func listenIncoming(ctx context.Context, dst *qemuProc) (string, error) {
	if err := dst.qmp.do(ctx, "migrate-incoming", map[string]any{"uri": "tcp:127.0.0.1:0"}, nil); err != nil {
		return "", err
	}
	var info migrationInfo
	if err := dst.qmp.do(ctx, "query-migrate", nil, &info); err != nil {
		return "", err
	}
	for _, a := range info.SocketAddress {
		if a.Type == "inet" && a.Port != "" && a.Port != "0" {
			return "tcp:127.0.0.1:" + a.Port, nil
		}
	}
	return "", fmt.Errorf("query-migrate names no listening port (socket-address %+v)", info.SocketAddress)
}

// migrationInfo is the part of query-migrate's MigrationInfo we read.
type migrationInfo struct {
	Status           string `json:"status"`
	TotalTime        *int64 `json:"total-time"`
	Downtime         *int64 `json:"downtime"`
	ExpectedDowntime *int64 `json:"expected-downtime"`
	SetupTime        *int64 `json:"setup-time"`
	ErrorDesc        string `json:"error-desc"`
	RAM              *struct {
		Transferred    uint64  `json:"transferred"`
		Remaining      uint64  `json:"remaining"`
		Total          uint64  `json:"total"`
		Duplicate      uint64  `json:"duplicate"`
		Normal         uint64  `json:"normal"`
		Mbps           float64 `json:"mbps"`
		DirtyPagesRate uint64  `json:"dirty-pages-rate"`
		DirtySyncCount uint64  `json:"dirty-sync-count"`
	} `json:"ram"`
	SocketAddress []struct {
		Type string `json:"type"`
		Host string `json:"host"`
		Port string `json:"port"`
	} `json:"socket-address"`
}

func (m *migrationInfo) String() string {
	s := "status " + m.Status
	if m.RAM != nil {
		s += fmt.Sprintf(", ram transferred %d B, remaining %d B of %d B, %.0f Mbit/s, dirty pages rate %d/s, dirty syncs %d",
			m.RAM.Transferred, m.RAM.Remaining, m.RAM.Total, m.RAM.Mbps, m.RAM.DirtyPagesRate, m.RAM.DirtySyncCount)
	}
	if m.ExpectedDowntime != nil {
		s += fmt.Sprintf(", expected downtime %d ms", *m.ExpectedDowntime)
	}
	if m.ErrorDesc != "" {
		s += ", error: " + m.ErrorDesc
	}
	return s
}

// setParameters lifts the bandwidth limit and sets the downtime limit on the
// source, and records what QEMU took.
func setParameters(ctx context.Context, src *qemuProc, res *Result) error {
	err := src.qmp.do(ctx, "migrate-set-parameters", map[string]any{
		"max-bandwidth":  MaxBandwidth,
		"downtime-limit": DowntimeLimit.Milliseconds(),
	}, nil)
	if err != nil {
		return err
	}
	var params struct {
		MaxBandwidth  uint64 `json:"max-bandwidth"`
		DowntimeLimit int64  `json:"downtime-limit"`
	}
	if err := src.qmp.do(ctx, "query-migrate-parameters", nil, &params); err != nil {
		return err
	}
	res.MaxBandwidth = params.MaxBandwidth
	res.DowntimeLimit = time.Duration(params.DowntimeLimit) * time.Millisecond
	return nil
}

// runMigration starts the migration to uri and polls until it completes. On a
// timeout it cancels the migration.
func runMigration(ctx context.Context, src *qemuProc, uri string, timeout time.Duration) (*migrationInfo, error) {
	if err := src.qmp.do(ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	last := &migrationInfo{}
	for {
		info := &migrationInfo{}
		if err := src.qmp.do(ctx, "query-migrate", nil, info); err != nil {
			return nil, fmt.Errorf("migration: %w (last: %v)", err, last)
		}
		last = info
		switch info.Status {
		case "completed":
			return info, nil
		case "failed", "cancelled":
			return nil, fmt.Errorf("migration %s: %v", info.Status, info)
		}
		expired := time.Now().After(deadline)
		if expired || ctx.Err() != nil {
			why := "context ended"
			if expired {
				why = fmt.Sprintf("did not complete within %v (a guest dirtying memory faster than it can be sent never converges)", timeout)
			}
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			src.qmp.do(cctx, "migrate_cancel", nil, nil)
			ccancel()
			return nil, fmt.Errorf("migration %s; cancelled; last progress: %v", why, info)
		}
		select {
		case <-src.done:
			return nil, fmt.Errorf("source QEMU exited during the migration: %s", src.exitReason())
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitRunning waits for the target's VM to run (it starts by itself when the
// incoming migration completes).
func waitRunning(ctx context.Context, dst *qemuProc) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		var st struct {
			Status  string `json:"status"`
			Running bool   `json:"running"`
		}
		if err := dst.qmp.do(ctx, "query-status", nil, &st); err != nil {
			return err
		}
		if st.Running {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("VM not running after the migration: status %q", st.Status)
		}
		select {
		case <-dst.done:
			return fmt.Errorf("QEMU exited after the migration: %s", dst.exitReason())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var tickRE = regexp.MustCompile(`^tick (\d+)$`)

// checkProgress waits until the target has printed at least lines complete
// lines of its own, with any "tick N" lines consecutive across source and
// target output (the counter lives in guest RAM), and no line containing
// "BAD". srcOut is the source's output from the guest's ready line on; the
// target's output continues it (a line may be split between the two).
func checkProgress(ctx context.Context, srcOut []byte, dst *qemuProc, lines int) (uint64, uint64, error) {
	for {
		dstOut, rerr := os.ReadFile(dst.serial)
		if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return 0, 0, rerr
		}
		all := string(srcOut) + string(dstOut)
		var lastSrc, lastDst, prev uint64
		newLines := 0
		havePrev := false
		start := 0
		for start < len(all) {
			nl := strings.IndexByte(all[start:], '\n')
			if nl < 0 {
				break // an incomplete line
			}
			end := start + nl // the newline's offset
			line := strings.TrimRight(all[start:end], "\r")
			onTarget := end >= len(srcOut)
			if onTarget {
				newLines++
				if strings.Contains(line, "BAD") {
					return 0, 0, fmt.Errorf("target guest reports %q", line)
				}
			}
			if m := tickRE.FindStringSubmatch(line); m != nil {
				n, _ := strconv.ParseUint(m[1], 10, 64)
				if havePrev && n == prev && onTarget && lastDst == 0 {
					// QEMU may print the line the source was printing at
					// the switch-over once more on the target (the guest's
					// UART write is replayed there); that is QEMU's, not a
					// lost or reordered tick.
					start = end + 1
					continue
				}
				if havePrev && n != prev+1 {
					return 0, 0, fmt.Errorf("ticks not consecutive: tick %d after tick %d (source output %q, target output %q)", n, prev, tail(srcOut), tail(dstOut))
				}
				prev, havePrev = n, true
				if onTarget {
					lastDst = n
				} else {
					lastSrc = n
				}
			}
			start = end + 1
		}
		if newLines >= lines {
			return lastSrc, lastDst, nil
		}
		select {
		case <-dst.done:
			return 0, 0, fmt.Errorf("target QEMU exited: %s; target serial output %q", dst.exitReason(), tail(dstOut))
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("target guest printed %d new lines: %w; source output %q, target output %q", newLines, ctx.Err(), tail(srcOut), tail(dstOut))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// tail returns the last 300 bytes of b.
func tail(b []byte) string {
	if len(b) > 300 {
		b = b[len(b)-300:]
	}
	return string(b)
}

// tailBuffer keeps the last max bytes written to it; it is safe for
// concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
