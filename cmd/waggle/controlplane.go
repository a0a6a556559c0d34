package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/db"
	"github.com/wagglevm/waggle/controlplane/externalapi"
	"github.com/wagglevm/waggle/controlplane/internalapi"
	"github.com/wagglevm/waggle/controlplane/sledclient"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/pgembed"
)

// DefaultControlPlaneListen is where `waggle control-plane` serves its
// internal API unless told otherwise.
const DefaultControlPlaneListen = "127.0.0.1:12200"

// runControlPlane runs `waggle control-plane`: the fleet's records in
// PostgreSQL, the doorbell the sled agents ring, and the instance watcher.
func runControlPlane(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("waggle control-plane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", DefaultControlPlaneListen, "address to serve the internal API (the sled agents' doorbell) on")
	tokenFile := fs.String("auth-token-file", "", "file holding the bearer token the sled agents send (mode 0600, at least 32 characters);\n"+
		"without it the control plane makes one and writes it where agents on this host find it")
	apiListen := fs.String("api-listen", DefaultAPIListen, "address to serve the external API (`waggle instance`, `waggle sled`) on")
	apiTokenFile := fs.String("api-token-file", "", "file holding the bearer token users of the external API send (mode 0600, at least 32\n"+
		"characters); without it the control plane makes one and writes it where the CLI on this host finds it")
	sledTokenFile := fs.String("sled-agent-token-file", "", "file holding the bearer token the fleet's sled agents accept\n"+
		"(default: for each sled, the token its agent generated on this host, found by the sled's address)")
	dataDir := fs.String("data-dir", "", "the control plane's directory; the embedded PostgreSQL lives in its postgres/\n"+
		"(default $XDG_DATA_HOME/waggle/control-plane, else ~/.local/share/waggle/control-plane, and for root\n"+
		"/var/lib/waggle/control-plane)")
	dbURL := fs.String("database-url", "", "PostgreSQL to keep the records in, e.g. postgres://waggle@db.example:5432/waggle\n"+
		"(default $DATABASE_URL; when neither is set, an embedded PostgreSQL started from this host's binaries)")
	watchEvery := fs.Duration("watch-interval", 30*time.Second, "how often the instance watcher checks every VMM on every sled")
	lostAfter := fs.Duration("sled-lost-after", 5*time.Minute, "how long a sled may stay silent before it is marked lost and its VMMs failed")
	grace := fs.Duration("shutdown-grace", 5*time.Second, "on SIGTERM or SIGINT, time requests get to end")
	newLogger := logFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "waggle control-plane: unexpected arguments: %v\n", fs.Args())
		return errUsage
	}
	if *watchEvery <= 0 {
		return fmt.Errorf("--watch-interval: %s is not a positive duration", *watchEvery)
	}
	if *lostAfter <= *watchEvery {
		return fmt.Errorf("--sled-lost-after: %s must be longer than --watch-interval (%s), or every sled that misses one round is lost", *lostAfter, *watchEvery)
	}
	log := newLogger(stderr)
	if ctx.Err() != nil {
		return nil // stopped before it started
	}
	sledToken, err := sledTokenSource(*sledTokenFile)
	if err != nil {
		return err
	}
	token, err := readAuthToken(*tokenFile)
	if err != nil {
		return err
	}
	apiToken := ""
	if *apiTokenFile != "" {
		if apiToken, err = httpkit.ReadTokenFile(*apiTokenFile); err != nil {
			return fmt.Errorf("--api-token-file: %w", err)
		}
	}

	url := *dbURL
	if url == "" {
		url = os.Getenv("DATABASE_URL")
	}
	if url == "" {
		dir, err := controlPlaneDir(*dataDir)
		if err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
		pg, err := pgembed.Start(ctx, pgembed.Options{Dir: filepath.Join(dir, "postgres"), Logger: log})
		if err != nil {
			return fmt.Errorf("start the embedded PostgreSQL (or give --database-url): %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := pg.Stop(sctx); err != nil {
				log.Error("stop the embedded PostgreSQL", "err", err)
			}
		}()
		url = pg.URL()
		log.Info("embedded PostgreSQL started", "dir", filepath.Join(dir, "postgres"))
	}
	store, err := db.Open(ctx, url)
	if err != nil {
		return err
	}
	defer store.Close()

	cp, err := controlplane.New(controlplane.Options{Store: store, Dial: sledclient.New(sledToken), Logger: log,
		WatchInterval: *watchEvery, SledLostAfter: *lostAfter})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	token, tokenPath, dropToken, err := servingToken(log, stderr, ln, *tokenFile, token)
	if err != nil {
		return err
	}
	defer dropToken()
	h, err := internalapi.NewHandler(cp, httpkit.HandlerOptions{Log: log, Auth: httpkit.BearerToken(token)}, cp.MetricsHandler())
	if err != nil {
		return err
	}
	srv := httpkit.NewServer(h, httpkit.ServerOptions{Log: log})
	log.Info("waggle control-plane listening", "addr", ln.Addr().String(), "token_file", tokenPath)

	apiLn, err := net.Listen("tcp", *apiListen)
	if err != nil {
		return fmt.Errorf("listen for the external API (-api-listen): %w", err)
	}
	defer apiLn.Close()
	apiToken, apiTokenPath, dropAPIToken, err := servingToken(log, stderr, apiLn, *apiTokenFile, apiToken)
	if err != nil {
		return fmt.Errorf("the external API's token: %w", err)
	}
	defer dropAPIToken()
	apiH, err := externalapi.NewHandler(cp, httpkit.HandlerOptions{Log: log, Auth: httpkit.BearerToken(apiToken)})
	if err != nil {
		return err
	}
	apiSrv := httpkit.NewServer(apiH, httpkit.ServerOptions{Log: log})
	log.Info("waggle control-plane external API listening", "addr", apiLn.Addr().String(), "token_file", apiTokenPath)

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = cp.Run(runCtx)
	}()
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- apiSrv.Serve(apiLn) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", *grace)
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	for _, s := range []*httpkit.Server{apiSrv, srv} {
		if serr := s.Shutdown(sctx); serr != nil && !errors.Is(serr, context.DeadlineExceeded) && err == nil {
			err = serr
		}
	}
	stopRun()
	<-ran
	return err
}

// sledTokenSource returns where the token for a sled's agent comes from:
// the file given (read at each call, so a rotated token is picked up), or
// the token the agent generated on this host for its address.
func sledTokenSource(file string) (sledclient.TokenFunc, error) {
	if file != "" {
		if _, err := httpkit.ReadTokenFile(file); err != nil {
			return nil, fmt.Errorf("--sled-agent-token-file: %w", err)
		}
		return func(string) (string, error) { return httpkit.ReadTokenFile(file) }, nil
	}
	return func(addr string) (string, error) {
		path, err := httpkit.DefaultTokenPath(addr)
		if err != nil {
			return "", err
		}
		t, err := httpkit.ReadTokenFile(path)
		if err != nil {
			return "", fmt.Errorf("no --sled-agent-token-file, and no token generated on this host for the agent at %s: %w", addr, err)
		}
		return t, nil
	}, nil
}

// controlPlaneDir returns the control plane's absolute directory, made
// when missing. PostgreSQL refuses to run as root, so under root the
// embedded one runs as another account, which must be able to pass through
// this directory to its postgres/: for root the directory is made 0711 (no
// one else may list it) and the default is /var/lib/waggle/control-plane
// rather than one beneath root's home (0700 on Debian). For anyone else it
// is made 0700.
func controlPlaneDir(dir string) (string, error) {
	mode := os.FileMode(0o700)
	if os.Geteuid() == 0 {
		mode = 0o711
		if dir == "" && os.Getenv("XDG_DATA_HOME") == "" {
			dir = "/var/lib/waggle/control-plane"
		}
	}
	if dir == "" {
		var err error
		if dir, err = defaultDataDir("control-plane"); err != nil {
			return "", err
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return "", err
	}
	if err := os.Mkdir(abs, mode); err != nil && !os.IsExist(err) {
		return "", err
	}
	return abs, nil
}
