// Command corpusgen regenerates the synthesized corpus of every API version
// in development and rewrites corpus/MANIFEST:
//
//	go run ./cmd/corpusgen            (from the repository root)
//
// On one commit it writes the same bytes every time. It never touches the
// corpus of a released version (one whose contract openapi/LOCK lists).
// Files captured from running servers (captured-*.json) are left in place
// and never re-hashed: their MANIFEST lines and their provenance
// (corpus/CAPTURED) are written by the capture alone. Capturing needs KVM
// (-capture installs corpus.ServerCapture as corpus.CaptureHook: it runs
// real waggle servers of this build, -waggle or built from -root, once, and
// reads each body at every vmm-server version's path; it writes the
// captured files of each vmm-server version in development, never of a
// released one).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/wagglevm/waggle/corpus"
)

func main() {
	root := flag.String("root", ".", "the repository root")
	capture := flag.Bool("capture", false, "also capture files from running servers of this build (needs KVM: see corpus.ServerCapture)")
	waggle := flag.String("waggle", "", "with -capture: a waggle binary of this build (default: build one from -root)")
	wait := flag.Duration("capture-wait", 3*time.Minute, "with -capture: how long to wait at most for each guest and server")
	flag.Parse()
	rep, err := corpus.Generate(*root)
	if err != nil {
		slog.Error("corpusgen failed", "err", err)
		os.Exit(1)
	}
	for _, v := range rep.Frozen {
		fmt.Printf("corpusgen: %s is released; its corpus is frozen and was left alone\n", v)
	}
	for _, v := range rep.Written {
		fmt.Printf("corpusgen: regenerated %s\n", v)
	}
	if *capture {
		corpus.CaptureHook = corpus.ServerCapture{Root: *root, Waggle: *waggle, Wait: *wait}.Hook()
		written, err := corpus.Capture(context.Background(), *root)
		for _, w := range written {
			fmt.Printf("corpusgen: captured %s\n", w)
		}
		if err != nil {
			slog.Error("corpusgen: capture failed", "err", err)
			os.Exit(1)
		}
	}
	fmt.Printf("corpusgen: %s/%s lists %d files\n", corpus.Dir, corpus.ManifestName, rep.Files)
}
