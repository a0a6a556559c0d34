// Command waggle is waggle's one binary: the VMM server and the client
// commands that drive it.
//
//	waggle server [-listen 127.0.0.1:12400]     run a VMM server
//	waggle vm <command> [flags]                 drive a VMM server (see waggle vm -h)
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Version is the build's version, shown by servers to guests (SMBIOS) and
// by `waggle version`.
var Version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage: waggle <command> [flags]

commands:
  server    run a VMM server: one VM behind the versioned HTTP API
  vm        drive a VMM server (create, get, spec, run, stop, reboot, watch, serial, migrate)
  version   print the version
`

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "server":
		err = runServer(ctx, args[1:], stderr)
	case "vm":
		err = runVM(ctx, args[1:], stdin, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, Version)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "waggle: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if err == errUsage {
			return 2
		}
		fmt.Fprintln(stderr, "waggle:", err)
		return 1
	}
	return 0
}
