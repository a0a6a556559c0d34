package sledtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildWaggle builds the waggle binary (the VMM server that agents start,
// and the agent itself) into a new temporary directory, for a TestMain; the
// returned function removes it.
func BuildWaggle() (string, func(), error) {
	dir, err := os.MkdirTemp("", "waggle-bin-")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "waggle")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/wagglevm/waggle/cmd/waggle").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build waggle: %w\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}
