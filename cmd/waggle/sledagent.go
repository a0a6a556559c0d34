package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/sledagent/api"
	"github.com/wagglevm/waggle/sledagent/cpclient"
	"github.com/wagglevm/waggle/sledagent/vmmclient"
	"github.com/wagglevm/waggle/vmm"
)

// DefaultSledAgentListen is where `waggle sled-agent` listens unless told
// otherwise.
const DefaultSledAgentListen = "127.0.0.1:12300"

// runSledAgent runs `waggle sled-agent`: the VMM servers of this host, one
// process each, behind the sled-agent API.
func runSledAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("waggle sled-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", DefaultSledAgentListen, "address to serve the sled-agent API on")
	advertise := fs.String("advertise", "", "host:port the control plane reaches this agent at, registered with it\n"+
		"(default: the -listen address; required when -listen is a wildcard such as :12300 or 0.0.0.0:12300)")
	tokenFile := fs.String("auth-token-file", "", "file holding the bearer token every request must carry (mode 0600, at least 32 characters);\n"+
		"without it the agent makes a token and writes it where clients on this host find it")
	root := fs.String("root", "", "the agent's directory: its registry and one directory per VMM (token, log, storage root)\n"+
		"(default $XDG_DATA_HOME/waggle/sled-agent, else ~/.local/share/waggle/sled-agent; made 0700)")
	sledID := fs.String("sled-id", "", "the sled's id (default: kept in <root>/sled-id, made at the first start)")
	cpus := fs.Int("cpus", 0, "CPUs to offer to VMMs (default: the CPUs this process may run on)")
	memMiB := fs.Uint64("memory-mib", 0, "memory to offer to VMMs, in MiB (default: the memory available now)")
	ports := fs.String("vmm-ports", "12500-12999", "the range of ports the VMM servers listen on, LOW-HIGH")
	vmmHost := fs.String("vmm-host", "127.0.0.1", "the address the VMM servers listen on (migration targets on other sleds dial it)")
	cpURL := fs.String("control-plane", "", "the control plane's internal API, e.g. http://10.0.0.1:12200 (empty: no doorbell)")
	cpToken := fs.String("control-plane-token-file", "", "file holding the bearer token for the control plane")
	startTimeout := fs.Duration("vmm-start-timeout", 15*time.Second, "how long a new VMM server gets to answer before its registration fails")
	grace := fs.Duration("shutdown-grace", 5*time.Second, "on SIGTERM or SIGINT, time requests get to end (the VMMs run on)")
	newLogger := logFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "waggle sled-agent: unexpected arguments: %v\n", fs.Args())
		return errUsage
	}
	if *startTimeout <= 0 {
		return fmt.Errorf("--vmm-start-timeout: %s is not a positive duration", *startTimeout)
	}
	portMin, portMax, err := parsePortRange(*ports)
	if err != nil {
		return fmt.Errorf("--vmm-ports: %w", err)
	}
	var id uuid.UUID
	if *sledID != "" {
		if id, err = uuid.Parse(*sledID); err != nil {
			return fmt.Errorf("--sled-id: %w", err)
		}
	}
	capacity, err := sledCapacity(*cpus, *memMiB)
	if err != nil {
		return err
	}
	dir, err := sledAgentRoot(*root)
	if err != nil {
		return fmt.Errorf("--root: %w", err)
	}
	log := newLogger(stderr)
	if ctx.Err() != nil {
		return nil // stopped before it started
	}

	var cp *cpclient.Client
	if *cpURL != "" {
		if *cpToken == "" {
			return errors.New("--control-plane needs --control-plane-token-file")
		}
		path := *cpToken
		if _, err := httpkit.ReadTokenFile(path); err != nil {
			return fmt.Errorf("--control-plane-token-file: %w", err)
		}
		if cp, err = cpclient.New(*cpURL, func() (string, error) { return httpkit.ReadTokenFile(path) }); err != nil {
			return fmt.Errorf("--control-plane: %w", err)
		}
	}
	if cp != nil {
		// Checked before listening: a wildcard is no address to register.
		if _, err := advertiseAddr(*listen, *advertise); err != nil {
			return err
		}
	}
	token, err := readAuthToken(*tokenFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	token, tokenPath, dropToken, err := servingToken(log, stderr, ln, *tokenFile, token)
	if err != nil {
		return err
	}
	defer dropToken()

	aopts := sledagent.Options{Root: dir, SledID: id, Capacity: capacity, PortMin: portMin, PortMax: portMax,
		Host: *vmmHost, Dial: vmmclient.New(nil), StartTimeout: *startTimeout, Log: log}
	if cp != nil {
		aopts.Bell = cp
	}
	agent, err := sledagent.New(aopts)
	if err != nil {
		return err
	}
	defer agent.Close()
	h, err := api.NewHandler(agent, httpkit.HandlerOptions{Log: log, Auth: httpkit.BearerToken(token)})
	if err != nil {
		return err
	}
	if cp != nil {
		public, err := advertiseAddr(addr, *advertise)
		if err != nil {
			return err
		}
		go registerSled(ctx, log, cp, agent, public)
	}
	srv := httpkit.NewServer(h, httpkit.ServerOptions{Log: log})
	log.Info("waggle sled-agent listening", "addr", addr, "sled_id", agent.SledID(), "root", dir,
		"cpus", capacity.CPUs, "memory_mib", capacity.MemoryMiB, "vmm_ports", *ports, "token_file", tokenPath)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down; the VMMs run on and the next agent adopts them", "grace", *grace)
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// registerSled registers the sled with the control plane, retrying with
// backoff until it is heard or ctx ends.
func registerSled(ctx context.Context, log *slog.Logger, cp *cpclient.Client, a *sledagent.Agent, addr string) {
	wait := 100 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cp.Register(rctx, a.SledID(), addr, api.Versions, a.Capacity())
		cancel()
		if err == nil {
			log.Info("registered the sled with the control plane")
			return
		}
		log.Warn("the sled's registration failed; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// advertiseAddr returns the address to register with the control plane:
// advertise when given (a host and a port, the host not a wildcard), else
// listen, unless listen's host is a wildcard (empty, 0.0.0.0, ::), which
// no one can dial.
func advertiseAddr(listen, advertise string) (string, error) {
	if advertise != "" {
		host, port, err := net.SplitHostPort(advertise)
		if err != nil {
			return "", fmt.Errorf("-advertise %q: not host:port: %w", advertise, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("-advertise %q: the port is not within 1-65535", advertise)
		}
		if wildcardHost(host) {
			return "", fmt.Errorf("-advertise %q: a wildcard host is no address to reach the agent at", advertise)
		}
		return advertise, nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("-listen %q: not host:port: %w", listen, err)
	}
	if wildcardHost(host) {
		return "", fmt.Errorf("-listen %q listens on every address, which the control plane cannot dial: give -advertise host:port", listen)
	}
	return listen, nil
}

// wildcardHost says whether host means every address of this host.
func wildcardHost(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// parsePortRange parses LOW-HIGH.
func parsePortRange(s string) (int, int, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return 0, 0, fmt.Errorf("%q is not a port range LOW-HIGH within 1-65535", s)
	}
	return a, b, nil
}

// sledCapacity is what the flags offer, the host's capacity where they
// are zero.
func sledCapacity(cpus int, memMiB uint64) (sledagent.Resources, error) {
	if cpus < 0 {
		return sledagent.Resources{}, fmt.Errorf("--cpus: %d is negative", cpus)
	}
	if cpus == 0 || memMiB == 0 {
		hc, mem, err := vmm.HostCapacity()
		if err != nil {
			return sledagent.Resources{}, fmt.Errorf("the host's capacity (give --cpus and --memory-mib): %w", err)
		}
		if cpus == 0 {
			cpus = hc
		}
		if memMiB == 0 {
			memMiB = mem >> 20
		}
	}
	return sledagent.Resources{CPUs: uint32(cpus), MemoryMiB: memMiB}, nil
}

// sledAgentRoot returns the agent's absolute root, made 0700.
func sledAgentRoot(dir string) (string, error) {
	if dir == "" {
		var err error
		if dir, err = defaultDataDir("sled-agent"); err != nil {
			return "", err
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return abs, os.MkdirAll(abs, 0o700)
}
