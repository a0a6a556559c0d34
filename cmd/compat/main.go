// Command compat is the compatibility gate (`make compat`): from the
// repository root,
//
//	go run ./cmd/compat
//
// runs every check of package gate (released contracts locked, breaking
// changes declared, corpus complete, unchanged and fresh, replay green,
// releases built from their commits), prints one line per phase with its
// time and what it covered, and exits 1 if any failed, after printing every
// failure.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/wagglevm/waggle/internal/gate"
)

func main() {
	root := flag.String("root", ".", "the repository root")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := gate.Run(ctx, *root, gate.Phases, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "\ncompat failed:\n%v\n", err)
		os.Exit(1)
	}
}
