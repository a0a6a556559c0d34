package v1

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"strconv"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
	api "github.com/wagglevm/waggle/gen/control-plane-internal/v1"
)

// apiVersion is a version path prefix without its slash, as the contract
// writes it.
var apiVersion = regexp.MustCompile(`^v[1-9][0-9]*$`)

// SledFromV1 converts a v1 registration into the domain's sled, checking
// what the contract's schema cannot say: the address is a host and a port
// that can be dialled (no wildcard, a port from 1 to 65535), the versions
// are each given once. The contract's own rules are checked again, so that
// the conversion stands without the validator. Each error names its field
// ("body.address").
func SledFromV1(id uuid.UUID, b api.SledRegistration) (model.Sled, error) {
	if id == uuid.Nil {
		return model.Sled{}, &fieldError{"path parameter sled_id", "the nil UUID is not a sled's id"}
	}
	if err := checkAddress(b.Address); err != nil {
		return model.Sled{}, &fieldError{"body.address", err.Error()}
	}
	if len(b.ApiVersions) == 0 {
		return model.Sled{}, &fieldError{"body.api_versions", "name at least one sled-agent API version, such as v1"}
	}
	seen := map[string]bool{}
	for i, v := range b.ApiVersions {
		field := fmt.Sprintf("body.api_versions.%d", i)
		if !apiVersion.MatchString(v) {
			return model.Sled{}, &fieldError{field, fmt.Sprintf("%q is not a version such as v1", v)}
		}
		if seen[v] {
			return model.Sled{}, &fieldError{field, fmt.Sprintf("%s is given more than once", v)}
		}
		seen[v] = true
	}
	c := b.Capacity
	if c.Cpus < 1 || c.Cpus > 65536 {
		return model.Sled{}, &fieldError{"body.capacity.cpus", fmt.Sprintf("%d is not from 1 to 65536", c.Cpus)}
	}
	if c.MemoryMib < 1 || c.MemoryMib > 1<<53-1 {
		return model.Sled{}, &fieldError{"body.capacity.memory_mib", fmt.Sprintf("%d is not from 1 to 2^53-1", c.MemoryMib)}
	}
	return model.Sled{
		ID:          id,
		Address:     b.Address,
		APIVersions: append([]string(nil), b.ApiVersions...),
		Capacity:    model.Resources{CPUs: uint32(c.Cpus), MemoryMiB: uint64(c.MemoryMib)},
	}, nil
}

// checkAddress says why addr is not a host:port the control plane can
// dial, or nil.
func checkAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q is a wildcard address, which nobody can dial; register the address the agent is reached at", addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || n > math.MaxUint16 {
		return fmt.Errorf("%q: the port is not from 1 to 65535", addr)
	}
	if u, err := url.Parse("http://" + addr); err != nil || u.Host != addr || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not the host:port of a URL", addr)
	}
	return nil
}
