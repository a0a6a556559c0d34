package sledagent_test

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
)

func specFromJSON(js string) (spec.Spec, error) {
	sp, _ := versions.Lookup("vmm-server/v1")
	return sp.Decode([]byte(js))
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func readDir(dir string) ([]os.DirEntry, error) { return os.ReadDir(dir) }

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
