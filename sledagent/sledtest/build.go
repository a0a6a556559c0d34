package sledtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/google/uuid"
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

// RegistryPid reads the pid of VMM id from the registry of the agent whose
// root is root.
func RegistryPid(root string, id uuid.UUID) (int, error) {
	data, err := os.ReadFile(filepath.Join(root, "registry.json"))
	if err != nil {
		return 0, err
	}
	var reg struct {
		VMMs []struct {
			ID  uuid.UUID `json:"vmm_id"`
			Pid int       `json:"pid"`
		} `json:"vmms"`
	}
	if err := json.Unmarshal(data, &reg); err != nil {
		return 0, fmt.Errorf("the registry in %s: %w", root, err)
	}
	for _, v := range reg.VMMs {
		if v.ID == id {
			return v.Pid, nil
		}
	}
	return 0, fmt.Errorf("VMM %s is not in the registry in %s", id, root)
}
