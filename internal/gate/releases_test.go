package gate

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/corpus"
)

// fakeWaggle is a module whose cmd/waggle prints which release it is, and
// stands in for `waggle server` and `waggle vm get|create` as far as the
// checks without a VM go (fakeWaggleMode).
func fakeWaggle(say string) map[string]string { return fakeWaggleMode(say, "good") }

// fakeWaggleMode is fakeWaggle whose server misbehaves as mode says:
// "good", "get-200" (answers GET /v1/instance with 200), "no-auth" (takes
// any token), "ensure-500" (answers an ensure with 500), "no-listen"
// (exits at once), "busy" (says its port is taken), "busy-once" (says so
// the first time in a storage root).
func fakeWaggleMode(say, mode string) map[string]string {
	return map[string]string{
		"go.mod":              "module example.com/fakewaggle\n\ngo 1.26.0\n",
		"cmd/waggle/main.go":  strings.ReplaceAll(strings.ReplaceAll(fakeWaggleMain, "SAY", say), "MODE", mode),
		"cmd/waggle/extra.go": "package main\n",
	}
}

const fakeWaggleMain = `package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
)

const mode = "MODE"

func main() {
	if len(os.Args) < 2 {
		fmt.Println("SAY")
		return
	}
	switch os.Args[1] {
	case "server":
		serve(os.Args[2:])
	case "vm":
		os.Exit(vm(os.Args[2:]))
	default:
		fmt.Println("SAY")
	}
}

func readToken(p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(data))
}

func answer(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error_code": code, "message": code, "request_id": "r"})
}

func serve(args []string) {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "", "")
	tokenFile := fs.String("auth-token-file", "", "")
	storage := fs.String("storage-root", "", "")
	fs.Parse(args)
	if mode == "no-listen" {
		fmt.Fprintln(os.Stderr, "fake: not listening")
		os.Exit(1)
	}
	if mode == "busy" || mode == "busy-once" {
		marker := *storage + "/busy"
		if _, err := os.Stat(marker); mode == "busy" || err != nil {
			os.WriteFile(marker, nil, 0o600)
			fmt.Fprintln(os.Stderr, "listen tcp "+*listen+": bind: address already in use")
			os.Exit(1)
		}
	}
	token := readToken(*tokenFile)
	http.HandleFunc("/v1/instance", func(w http.ResponseWriter, r *http.Request) {
		if mode != "no-auth" && r.Header.Get("Authorization") != "Bearer "+token {
			answer(w, 401, "unauthorized")
			return
		}
		switch {
		case r.Method == "GET" && mode == "get-200":
			w.Write([]byte("{}"))
		case r.Method == "GET":
			answer(w, 404, "no_instance")
		case mode == "ensure-500":
			answer(w, 500, "internal")
		default:
			answer(w, 400, "vm_error")
		}
	})
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt)
		<-c
		os.Exit(0)
	}()
	fmt.Fprintln(os.Stderr, http.ListenAndServe(*listen, nil))
	os.Exit(1)
}

func vm(args []string) int {
	fs := flag.NewFlagSet("vm", flag.ExitOnError)
	server := fs.String("server", "", "")
	tokenFile := fs.String("token-file", "", "")
	spec := fs.String("spec", "", "")
	fs.Parse(args[1:])
	method, body := "GET", io.Reader(nil)
	if args[0] == "create" {
		data, err := os.ReadFile(*spec)
		if err != nil {
			panic(err)
		}
		method, body = "PUT", strings.NewReader(string(data))
	}
	req, _ := http.NewRequest(method, "http://"+*server+"/v1/instance", body)
	req.Header.Set("Authorization", "Bearer "+readToken(*tokenFile))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "waggle:", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode < 300 {
		fmt.Println("ok")
		return 0
	}
	var e struct{ Error_code string }
	json.NewDecoder(resp.Body).Decode(&e)
	fmt.Fprintf(os.Stderr, "waggle: refused (%d %s, request r)\n", resp.StatusCode, e.Error_code)
	return 1
}
`

func TestBuildReleaseFromItsCommit(t *testing.T) {
	repo := newRepo(t)
	first := commitAll(t, repo, fakeWaggle("release one"), "one")
	commitAll(t, repo, fakeWaggle("release two"), "two") // HEAD moves on; the release stays at its commit
	bin, err := BuildRelease(ctx, repo, corpus.Release{Name: "v0.1.0", Commit: first}, t.TempDir())
	require.NoError(t, err)
	out, err := exec.Command(bin).Output()
	require.NoError(t, err)
	require.Equal(t, "release one\n", string(out))
	// The work tree is untouched.
	data, err := os.ReadFile(filepath.Join(repo, "cmd/waggle/main.go"))
	require.NoError(t, err)
	require.Contains(t, string(data), "release two")
}

func TestBuildReleaseThatDoesNotBuild(t *testing.T) {
	repo := newRepo(t)
	files := fakeWaggle("x")
	files["cmd/waggle/main.go"] = "package main\n\nfunc main() { undefined() }\n"
	c := commitAll(t, repo, files, "broken")
	_, err := BuildRelease(ctx, repo, corpus.Release{Name: "v0.1.0", Commit: c}, t.TempDir())
	require.ErrorContains(t, err, "release v0.1.0: build waggle from")
	require.ErrorContains(t, err, "undefined")
}

func TestBuildReleaseWithMissingCommit(t *testing.T) {
	repo := newRepo(t)
	commitAll(t, repo, fakeWaggle("x"), "one")
	missing := strings.Repeat("1", 40)
	_, err := BuildRelease(ctx, repo, corpus.Release{Name: "v0.1.0", Commit: missing}, t.TempDir())
	var mc *MissingCommitError
	require.True(t, errors.As(err, &mc), "got %v", err)
	require.False(t, mc.Shallow)
	require.ErrorContains(t, err, "release v0.1.0: commit "+missing+" is not in this clone")
	require.ErrorContains(t, err, "git fetch --unshallow")
}

// TestBuildReleaseInShallowClone: the release's commit is older than a
// depth-1 clone holds; the error says the clone is shallow and how to fix it.
func TestBuildReleaseInShallowClone(t *testing.T) {
	repo := newRepo(t)
	first := commitAll(t, repo, fakeWaggle("one"), "one")
	commitAll(t, repo, fakeWaggle("two"), "two")
	shallow := filepath.Join(t.TempDir(), "clone")
	run(t, filepath.Dir(shallow), "clone", "-q", "--depth", "1", "file://"+repo, shallow)
	_, err := BuildRelease(ctx, shallow, corpus.Release{Name: "v0.1.0", Commit: first}, t.TempDir())
	var mc *MissingCommitError
	require.True(t, errors.As(err, &mc), "got %v", err)
	require.True(t, mc.Shallow)
	require.ErrorContains(t, err, "(this clone is shallow)")
	require.ErrorContains(t, err, "git fetch --unshallow")
}

// releasedFakeRepo is a scratch repository whose first commit is a fake
// waggle (mode) released as v0.1.0 by the second, and whose work tree (HEAD)
// is the fake waggle of headMode.
func releasedFakeRepo(t *testing.T, mode, headMode string) string {
	t.Helper()
	repo := newRepo(t)
	files := fakeWaggleMode("release one", mode)
	files["openapi/LOCK"] = strings.Repeat("0", 64) + "  openapi/vmm-server/v1.yaml\n"
	c := commitAll(t, repo, files, "one")
	head := fakeWaggleMode("head", headMode)
	head["corpus/RELEASES"] = "v0.1.0  " + c + "  vmm-server/v1\n"
	commitAll(t, repo, head, "release")
	return repo
}

// TestReleasesNeedKVMToMigrate: with a release listed, the builds and the
// checks without a VM run here, both ways; the migration is skipped with
// the reason where /dev/kvm is missing, and tried where it is present
// (the fake builds cannot run a VM, so it fails), never passing unchecked.
func TestReleasesNeedKVMToMigrate(t *testing.T) {
	repo := releasedFakeRepo(t, "good", "good")
	rep, err := CheckReleases(ctx, repo, t.TempDir())
	require.Equal(t, 1, rep.Releases)
	require.Equal(t, []string{"v0.1.0"}, rep.Built)
	require.Len(t, rep.Ran, 2)
	require.Contains(t, rep.Ran[0], "v0.1.0's server by HEAD's CLI (GET /instance: 404 no_instance, PUT /instance (missing disk): 400 vm_error, ")
	require.Contains(t, rep.Ran[0], "GET /instance with a wrong token: 401 unauthorized")
	require.Contains(t, rep.Ran[1], "HEAD's server by v0.1.0's CLI (")
	if KVMAvailable() {
		// The fake builds run no VM: the migration is tried and fails.
		var me *ReleaseMigrationError
		require.ErrorAs(t, err, &me)
		require.Equal(t, "v0.1.0", me.Release)
		return
	}
	require.NoError(t, err)
	require.Contains(t, rep.Skipped, "needs /dev/kvm")
	err, out := runPhase(t, repo, "releases")
	require.NoError(t, err)
	require.Contains(t, out, "ran without a VM: v0.1.0's server by HEAD's CLI")
	require.Contains(t, out, "SKIPPED: migrating a running VM between each release and HEAD")
}

// TestReleasesCrossDriveFails: a server, released or HEAD's, that answers
// wrongly on an endpoint that needs no VM fails the releases phase, with
// or without KVM.
func TestReleasesCrossDriveFails(t *testing.T) {
	cases := []struct{ release, head, want string }{
		{"get-200", "good", "release v0.1.0: v0.1.0's server by HEAD's CLI: GET /instance: waggle vm get -server"},
		{"good", "no-auth", "release v0.1.0: HEAD's server by v0.1.0's CLI: GET /instance with a wrong token: want 401 unauthorized, got 404 no_instance"},
		{"ensure-500", "good", "PUT /instance (missing disk): want a 4xx, got 500 internal"},
		{"no-listen", "good", "server ended before it listened"},
	}
	for _, c := range cases {
		t.Run(c.release+"/"+c.head, func(t *testing.T) {
			repo := releasedFakeRepo(t, c.release, c.head)
			err, out := runPhase(t, repo, "releases")
			require.Contains(t, out, "releases FAIL")
			require.ErrorContains(t, err, c.want)
		})
	}
}

// TestCrossDriveRealWaggle drives this repository's waggle server with
// its own CLI: what the checks read is what the real binary shows.
func TestCrossDriveRealWaggle(t *testing.T) {
	bin, err := BuildHead(ctx, repoRoot, t.TempDir())
	require.NoError(t, err)
	did, err := CrossDrive(ctx, bin, bin, t.TempDir())
	require.NoError(t, err)
	require.Equal(t, []string{
		"GET /instance: 404 no_instance",
		"PUT /instance (missing disk): 400 vm_error",
		"GET /instance after the refused ensure: 404 no_instance",
		"GET /instance with a wrong token: 401 unauthorized",
	}, did)
}

func TestReleasesFileMalformed(t *testing.T) {
	repo := newRepo(t)
	commitAll(t, repo, map[string]string{
		"openapi/LOCK":    "# none\n",
		"corpus/RELEASES": "# header\nv0.1.0 abc vmm-server/v1\n",
	}, "bad")
	_, err := CheckReleases(ctx, repo, t.TempDir())
	require.ErrorContains(t, err, "corpus/RELEASES line 2")
}

// TestCrossDrivePortTaken: a server whose port was taken before it bound
// it is started again on another port, and one that never gets a port
// fails.
func TestCrossDrivePortTaken(t *testing.T) {
	build := func(mode string) string {
		repo := newRepo(t)
		c := commitAll(t, repo, fakeWaggleMode("x", mode), mode)
		bin, err := BuildRelease(ctx, repo, corpus.Release{Name: mode, Commit: c}, t.TempDir())
		require.NoError(t, err)
		return bin
	}
	good, once, busy := build("good"), build("busy-once"), build("busy")
	did, err := CrossDrive(ctx, once, good, t.TempDir())
	require.NoError(t, err)
	require.Len(t, did, 4)
	_, err = CrossDrive(ctx, busy, good, t.TempDir())
	require.ErrorIs(t, err, errPortTaken)
	require.ErrorContains(t, err, "address already in use")
}
