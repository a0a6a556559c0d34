package gate

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// git runs git in dir and returns its standard output; a failure carries
// what git said.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// isShallow reports whether the checkout at dir is a shallow clone.
func isShallow(ctx context.Context, dir string) (bool, error) {
	out, err := git(ctx, dir, "rev-parse", "--is-shallow-repository")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(out) != "false", nil
}
