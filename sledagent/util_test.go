package sledagent_test

import (
	"io"
	"log/slog"
	"os"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
)

func specFromJSON(js string) (spec.Spec, error) {
	sp, _ := versions.Lookup("vmm-server/v1")
	return sp.Decode([]byte(js))
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func readDir(dir string) ([]os.DirEntry, error) { return os.ReadDir(dir) }
