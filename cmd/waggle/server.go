package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"time"

	"github.com/wagglevm/waggle/server"
)

// DefaultListen is where `waggle server` listens unless told otherwise.
const DefaultListen = "127.0.0.1:12400"

func runServer(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("waggle server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", DefaultListen, "address to serve the API on")
	logJSON := fs.Bool("log-json", false, "write logs as JSON lines")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the server's whole run to this file")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "least severe log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	opts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(stderr, opts)
	if *logJSON {
		handler = slog.NewJSONHandler(stderr, opts)
	}
	log := slog.New(handler)
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

	fp := server.ParseFailPoints(os.Getenv("WAGGLE_FAILPOINTS"))
	if len(fp) > 0 {
		log.Warn("fail points set: this server misbehaves on purpose", "failpoints", os.Getenv("WAGGLE_FAILPOINTS"))
	}
	rt := server.NewRuntime(server.RuntimeOptions{Log: log, Version: Version, FailPoints: fp})
	defer rt.Close()
	h, err := server.NewHandler(rt, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Info("waggle server listening", "addr", ln.Addr().String(), "version", Version, "api", "/v1")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
