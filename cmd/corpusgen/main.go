// Command corpusgen regenerates the synthesized corpus of every API version
// in development and rewrites corpus/MANIFEST:
//
//	go run ./cmd/corpusgen            (from the repository root)
//
// On one commit it writes the same bytes every time. It never touches the
// corpus of a released version (one whose contract openapi/LOCK lists).
// Files captured from running servers (captured-*.json) are left in place;
// capturing them needs KVM (see corpus.CaptureHook).
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/wagglevm/waggle/corpus"
)

func main() {
	root := flag.String("root", ".", "the repository root")
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
	fmt.Printf("corpusgen: %s/%s lists %d files\n", corpus.Dir, corpus.ManifestName, rep.Files)
}
