package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/server"
)

// DefaultListen is where `waggle server` listens unless told otherwise.
const DefaultListen = "127.0.0.1:12400"

func runServer(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("waggle server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", DefaultListen, "address to serve the API on")
	tokenFile := fs.String("auth-token-file", "", "file holding the bearer token every request must carry (mode 0600, at least 32 characters);\n"+
		"without it the server makes a token and writes it where waggle vm on this host finds it")
	maxConns := fs.Int("max-conns", httpkit.DefaultMaxConns, "most connections open at once; one more is answered 503")
	bodyTimeout := fs.Duration("body-timeout", httpkit.DefaultBodyReadTimeout, "time a client has to send a request body")
	idleTimeout := fs.Duration("idle-timeout", httpkit.DefaultIdleTimeout, "time a keep-alive connection may stay idle")
	grace := fs.Duration("shutdown-grace", 5*time.Second, "on SIGTERM or SIGINT, time requests and streams get to end before they are cut")
	newLogger := logFlags(fs)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the server's whole run to this file")
	migrationPeers := fs.String("migration-peers", "", "networks a migration target may dial as its source, CIDR,CIDR,...\n"+
		"(default: loopback and the networks of this host's interface addresses)")
	storageRoot := fs.String("storage-root", "", "directory the disk files of specs are relative to; nothing outside it is opened\n"+
		"(default $XDG_DATA_HOME/waggle/storage, else ~/.local/share/waggle/storage; made 0700 when missing)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	var peers []netip.Prefix // nil: the default
	if *migrationPeers != "" {
		var err error
		if peers, err = server.ParseMigrationPeers(*migrationPeers); err != nil {
			return fmt.Errorf("--migration-peers: %w", err)
		}
	}
	root, err := prepareStorageRoot(*storageRoot)
	if err != nil {
		return fmt.Errorf("--storage-root: %w", err)
	}
	log := newLogger(stderr)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	token, err := readAuthToken(*tokenFile)
	if err != nil {
		return err
	}
	fp := server.ParseFailPoints(os.Getenv("WAGGLE_FAILPOINTS"))
	if len(fp) > 0 {
		log.Warn("fail points set: this server misbehaves on purpose", "failpoints", os.Getenv("WAGGLE_FAILPOINTS"))
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

	rt := server.NewRuntime(server.RuntimeOptions{Log: log, Version: Version, FailPoints: fp, MigrationPeers: peers, StorageRoot: root,
		PrepareVM: true})
	h, err := server.NewHandler(rt, httpkit.HandlerOptions{Log: log, Auth: httpkit.BearerToken(token), BodyReadTimeout: *bodyTimeout})
	if err != nil {
		rt.Close()
		return err
	}
	srv := httpkit.NewServer(h, httpkit.ServerOptions{IdleTimeout: *idleTimeout, MaxConns: *maxConns, Log: log})
	log.Info("waggle server listening", "addr", addr, "version", Version, "api", "/v1", "token_file", tokenPath)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		closeCtx, cancel := context.WithTimeout(context.Background(), *grace)
		defer cancel()
		closeRuntime(closeCtx, log, rt.Close)
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", *grace)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	return shutdown(shutdownCtx, log, srv, rt.Close)
}

// shutdown stops srv and then closes the runtime with closeRuntime, both
// within ctx: one grace period bounds the whole shutdown, not one each.
func shutdown(ctx context.Context, log *slog.Logger, srv interface{ Shutdown(context.Context) error }, closeRT func()) error {
	err := srv.Shutdown(ctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		log.Warn("grace period over: open connections were closed")
		err = nil
	}
	closeRuntime(ctx, log, closeRT)
	return err
}

// closeRuntime closes the runtime with closeRT, giving it until ctx ends:
// the process is about to exit, and its VM ends with it.
func closeRuntime(ctx context.Context, log *slog.Logger, closeRT func()) {
	done := make(chan struct{})
	go func() { closeRT(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		log.Warn("the runtime did not close within the grace period; exiting anyway")
	}
}

// defaultDataDir is waggle's directory name beneath the user's data
// directory ($XDG_DATA_HOME, else ~/.local/share).
func defaultDataDir(name string) (string, error) {
	data := os.Getenv("XDG_DATA_HOME")
	if data == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no default: %w", err)
		}
		data = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(data, "waggle", name), nil
}

// prepareStorageRoot returns the absolute storage root: dir, or the
// default beneath the user's data directory, made (mode 0700) when missing.
// It must be a directory.
func prepareStorageRoot(dir string) (string, error) {
	if dir == "" {
		var err error
		if dir, err = defaultDataDir("storage"); err != nil {
			return "", err
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", abs)
	}
	return abs, nil
}
