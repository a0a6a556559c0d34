package pgembed

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNoBinaries is the error of Start (and FindBinaries) when the host has
// no PostgreSQL server binaries at all (errors.Is).
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under /usr/lib/postgresql/*/bin")

// debianGlob is where Debian and Ubuntu install each major version's server
// binaries, which they keep off PATH.
var debianGlob = "/usr/lib/postgresql/*/bin"

// Binaries are the paths of the server programs Start runs. All three come
// from one directory, so that their versions agree.
type Binaries struct {
	Initdb   string
	PgCtl    string
	Postgres string
}

// FindBinaries looks for initdb, pg_ctl and postgres in dir when it is not
// empty; otherwise on PATH first, then under /usr/lib/postgresql/*/bin
// (newest major version first). It returns ErrNoBinaries when none of the
// places has all three.
func FindBinaries(dir string) (Binaries, error) {
	if dir != "" {
		b, err := binariesIn(dir)
		if err != nil {
			return Binaries{}, fmt.Errorf("PostgreSQL binaries in %s: %w", dir, err)
		}
		return b, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if b, err := binariesIn(filepath.Dir(p)); err == nil {
			return b, nil
		}
	}
	dirs, _ := filepath.Glob(debianGlob)
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, d := range dirs {
		if b, err := binariesIn(d); err == nil {
			return b, nil
		}
	}
	return Binaries{}, ErrNoBinaries
}

// binariesIn returns the three programs of dir, or an error naming the
// first one missing.
func binariesIn(dir string) (Binaries, error) {
	var b Binaries
	for _, x := range []struct {
		name string
		dst  *string
	}{{"initdb", &b.Initdb}, {"pg_ctl", &b.PgCtl}, {"postgres", &b.Postgres}} {
		p := filepath.Join(dir, x.name)
		st, err := os.Stat(p)
		if err != nil {
			return Binaries{}, fmt.Errorf("%s: %w", x.name, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return Binaries{}, fmt.Errorf("%s: not an executable file", p)
		}
		*x.dst = p
	}
	return b, nil
}

// majorOf reads the major version from a path such as
// /usr/lib/postgresql/15/bin (0 when it has none).
func majorOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Available says whether FindBinaries finds the server programs.
func Available() bool {
	_, err := FindBinaries("")
	return err == nil
}

// tail returns the last n lines of s, for error messages.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
