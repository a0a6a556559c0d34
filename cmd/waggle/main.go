// Command waggle is waggle's one binary: the VMM server and the client
// commands that drive it.
//
//	waggle server [-listen 127.0.0.1:12400]     run a VMM server
//	waggle sled-agent [-listen 127.0.0.1:12300] run the VMM servers of a host
//	waggle control-plane [-listen 127.0.0.1:12200] keep the fleet's records, hear the doorbell
//	waggle vm <command> [flags]                 drive a VMM server (see waggle vm -h)
//	waggle instance <command> [flags]           drive the fleet's instances (see waggle instance -h)
//	waggle sled list                            list the fleet's sleds
package main

import (
	"context"
	"errors"
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
  server      run a VMM server: one VM behind the versioned HTTP API
  sled-agent  run the VMM servers of this host behind the sled-agent API
  control-plane
              keep the fleet's instances and VMMs in PostgreSQL; hear the sled agents' doorbell
  vm          drive a VMM server (create, get, spec, run, stop, reboot, watch, serial, migrate)
  instance    drive the fleet's instances through the control plane (create, list, get, start, stop,
              reboot, migrate, delete, serial)
  sled        list the fleet's sleds (list)
  version     print the version

` + "`waggle <command> -h` shows a command's flags; `waggle vm -h`, `waggle instance -h` list their commands.\n"

// run executes one command line and returns the exit status: 0 when it
// did its job or printed the help asked for (on stdout), 2 for a command
// line it could not parse, 1 for any other failure (on stderr).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "server":
		if helpAsked(args[1:]) {
			return daemonHelp("waggle server runs a VMM server: one VM behind the versioned HTTP API, at /v1.", runServer, args[1:], stdout, stderr)
		}
		err = runServer(ctx, args[1:], stderr)
	case "sled-agent":
		if helpAsked(args[1:]) {
			return daemonHelp("waggle sled-agent runs the VMM servers of this host behind the sled-agent API.", runSledAgent, args[1:], stdout, stderr)
		}
		err = runSledAgent(ctx, args[1:], stderr)
	case "control-plane":
		if helpAsked(args[1:]) {
			return daemonHelp("waggle control-plane keeps the fleet's instances and VMMs in PostgreSQL and hears the sled agents' doorbell.", runControlPlane, args[1:], stdout, stderr)
		}
		err = runControlPlane(ctx, args[1:], stderr)
	case "vm":
		err = runVM(ctx, args[1:], stdin, stdout, stderr)
	case "instance":
		err = runInstance(ctx, args[1:], stdin, stdout, stderr)
	case "sled":
		err = runSled(ctx, args[1:], stdout, stderr)
	case "version":
		switch {
		case helpAsked(args[1:]):
			fmt.Fprint(stdout, "usage: waggle version\n\nprints the version of this waggle binary\n")
		case len(args) > 1:
			fmt.Fprintf(stderr, "waggle version: unexpected arguments: %v\n", args[1:])
			return 2
		default:
			fmt.Fprintln(stdout, Version)
		}
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "waggle: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintln(stderr, "waggle:", err)
	return 1
}

// helpAsked says whether a command line asks for help: -h, -help or
// --help among its flags (before a "--").
func helpAsked(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--h", "--help":
			return true
		}
	}
	return false
}

// daemonHelp prints the flags of a long-running command (server,
// sled-agent) on stdout, after intro. The command's flag set prints them
// when it meets the help flag; it is handed stdout, and a context that has
// ended, so that nothing would run should the flags somehow parse.
func daemonHelp(intro string, runCmd func(context.Context, []string, io.Writer) error, args []string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fmt.Fprint(stdout, intro+"\n\n")
	if err := runCmd(ctx, args, stdout); err != nil && !errors.Is(err, errUsage) && !errors.Is(err, errHelp) {
		fmt.Fprintln(stderr, "waggle:", err)
		return 1
	}
	return 0
}
