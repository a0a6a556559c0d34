package corpus

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	v1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
	v2 "github.com/wagglevm/waggle/versions/vmm-server/v2"
)

// The capturer's parts that need no KVM: one run of the servers serves
// both versions, each body is read at each version's path and kept as
// sent, the stream's files go into both, the panic guest's steps record
// only v2 files and refuse a guest that did not panic, and Capture writes
// only versions in development.

// fakeRun is a capture run that counts its calls and answers files.
func fakeRun(calls *atomic.Int32, files captured, err error) func(context.Context) (captured, error) {
	return func(context.Context) (captured, error) {
		calls.Add(1)
		return files, err
	}
}

func TestCaptureHookOneRunForBothVersions(t *testing.T) {
	ctx := context.Background()
	files := captured{}
	files.put(capturedV1, KindInstance, "a", []byte(`v1`))
	files.put(capturedV2, KindInstance, "a", []byte(`v2`))
	var calls atomic.Int32
	hook := ServerCapture{run: fakeRun(&calls, files, nil)}.Hook()

	none, err := hook(ctx, Version{API: "sled-agent", N: 1})
	require.NoError(t, err)
	require.Empty(t, none)
	require.Zero(t, calls.Load(), "a version the capturer does not write runs no servers")

	got2, err := hook(ctx, capturedV2)
	require.NoError(t, err)
	require.Equal(t, map[string][]byte{"instance/a.json": []byte(`v2`)}, got2)
	got1, err := hook(ctx, capturedV1)
	require.NoError(t, err)
	require.Equal(t, map[string][]byte{"instance/a.json": []byte(`v1`)}, got1)
	require.Equal(t, int32(1), calls.Load(), "both versions come from one run of the servers")

	var failed atomic.Int32
	broken := errors.New("no KVM")
	hook = ServerCapture{run: fakeRun(&failed, nil, broken)}.Hook()
	for _, v := range []Version{capturedV2, capturedV1} {
		_, err := hook(ctx, v)
		require.ErrorIs(t, err, broken, v.String())
	}
	require.Equal(t, int32(1), failed.Load(), "a failed run is not run again")
}

// fakeServer serves handler as a capServer with a token file; every
// request must carry the token.
func fakeServer(t *testing.T, handler http.HandlerFunc) *capServer {
	t.Helper()
	const token = "fake-token"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	tok := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tok, []byte(token+"\n"), 0o600))
	return &capServer{name: "fake", addr: strings.TrimPrefix(srv.URL, "http://"), token: tok}
}

func TestKeepReadsEveryVersionAtItsPath(t *testing.T) {
	// Bodies with the server's own spacing: they are kept byte for byte.
	s := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.RequestURI() {
		case "/v1/instance/state-monitor?gen=0":
			io.WriteString(w, "{\"v\": 1}\n")
		case "/v2/instance/state-monitor?gen=0":
			io.WriteString(w, "{\"v\":2}\n")
		default:
			http.NotFound(w, r)
		}
	})
	out := captured{}
	require.NoError(t, keep(context.Background(), out, s, KindStateView, "x", "/instance/state-monitor?gen=0"))
	require.Equal(t, "{\"v\": 1}\n", string(out[capturedV1]["instance-state-view/x.json"]))
	require.Equal(t, "{\"v\":2}\n", string(out[capturedV2]["instance-state-view/x.json"]))

	err := keep(context.Background(), captured{}, s, KindInstance, "y", "/instance")
	require.ErrorContains(t, err, "GET /v1/instance")
	require.ErrorContains(t, err, "HTTP 404")

	// The arms: a PUT at each version's path, the first leaving the secret
	// to the server, the second giving one.
	var puts []string
	s = fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPut || r.Header.Get("Content-Type") != "application/json" ||
			!strings.HasSuffix(r.URL.Path, "/instance/migrate/expect") {
			http.Error(w, "not an arm", http.StatusBadRequest)
			return
		}
		puts = append(puts, r.URL.Path+" "+string(body))
		io.WriteString(w, `{"prefix":"`+strings.Split(r.URL.Path, "/")[1]+`"}`)
	})
	arms := captured{}
	require.NoError(t, keepArms(context.Background(), arms, s, "t"))
	require.Len(t, puts, 4)
	for _, b := range bodyVersions {
		for _, n := range []string{"migration-armed/t-made-secret.json", "migration-armed/t-secret-given.json"} {
			require.Equal(t, `{"prefix":"`+strings.TrimPrefix(b.prefix, "/")+`"}`, string(arms[b.v][n]), "%s %s", b.v, n)
		}
	}
	for i, p := range puts { // made at v1, at v2; given at v1, at v2
		if i < 2 {
			require.NotContains(t, p, `"secret"`, "the first arm leaves the secret to the server")
		} else {
			require.Regexp(t, `"secret":"[A-Za-z0-9_-]{43}"`, p, "the second gives one of 32 random bytes")
		}
		require.NoError(t, v2.ValidateJSON("InstanceMigrateExpectRequest", []byte(p[strings.Index(p, " ")+1:])))
	}

	shared := captured{}
	shared.putShared(map[string][]byte{"frame/t-hello.json": []byte(`h`)})
	for _, b := range bodyVersions {
		require.Equal(t, []byte(`h`), shared[b.v]["frame/t-hello.json"], "the stream's files go into %s", b.v)
	}
}

// TestCapturedPanicEnsureSaysWhatOnlyV2Can: the panic guest's ensure is a
// valid v2 request whose spec v1 cannot express (its SMBIOS table and its
// pvpanic device), so what it gives is v2's own.
func TestCapturedPanicEnsureSaysWhatOnlyV2Can(t *testing.T) {
	require.NoError(t, v2.ValidateJSON("InstanceEnsureRequest", []byte(capturedPanicEnsure)))
	var req struct {
		Init struct {
			Spec json.RawMessage `json:"spec"`
		} `json:"init"`
	}
	require.NoError(t, json.Unmarshal([]byte(capturedPanicEnsure), &req))
	w, err := v2.DecodeInstanceSpec(req.Init.Spec)
	require.NoError(t, err)
	s, err := v2.ToSpec(w)
	require.NoError(t, err)
	_, err = v1.FromSpec(s)
	require.ErrorContains(t, err, "smbios")
	require.ErrorContains(t, err, "components.panic0")
}

// panicFake is a server that plays the panic guest's life with the
// synthesized v2 bodies; its instance ends failed with the file last.
func panicFake(t *testing.T, last string) (*capServer, *atomic.Int32) {
	t.Helper()
	file := func(p string) []byte {
		data, err := os.ReadFile(corpusFile(root, "vmm-server/v2/"+p))
		require.NoError(t, err)
		return data
	}
	var reads, runs atomic.Int32
	created := atomic.Bool{}
	s := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		answer := func(status int, body []byte) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write(body)
		}
		switch r.Method + " " + r.URL.RequestURI() {
		case "GET /v2/instance":
			switch {
			case !created.Load():
				answer(http.StatusNotFound, file("error/no-instance.json"))
			case reads.Add(1) < 3:
				answer(http.StatusOK, file("instance/running.json"))
			default:
				answer(http.StatusOK, file(last))
			}
		case "PUT /v2/instance":
			body, _ := io.ReadAll(r.Body)
			if string(body) != capturedPanicEnsure || r.Header.Get("Content-Type") != "application/json" {
				answer(http.StatusBadRequest, file("error/invalid-request.json"))
				return
			}
			created.Store(true)
			answer(http.StatusCreated, file("instance/creating.json"))
		case "PUT /v2/instance/state":
			if runs.Add(1) == 1 {
				answer(http.StatusOK, file("state-change-response/gen-2.json"))
				return
			}
			answer(http.StatusConflict, file("error/invalid-transition.json"))
		case "GET /v2/instance/state-monitor?gen=0":
			answer(http.StatusOK, file("instance-state-view/failed-guest-panicked.json"))
		case "GET /v2/instance/spec":
			answer(http.StatusOK, file("instance-spec-view/present.json"))
		case "GET /v2/instance/serial/history":
			answer(http.StatusOK, file("serial-history/ticks.json"))
		default:
			answer(http.StatusNotFound, file("error/not-found.json"))
		}
	})
	return s, &reads
}

func TestCapturePanicRecordsV2Files(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, reads := panicFake(t, "instance/failed-guest-panicked.json")
	out := captured{}
	require.NoError(t, capturePanicOn(ctx, s, out, 30*time.Second))
	require.GreaterOrEqual(t, reads.Load(), int32(3), "it waited for the failure")
	require.Len(t, out, 1, "the panic guest gives version 2's files only")
	want := []string{
		"error/no-instance.json", "instance/panic-created.json", "state-change-response/panic-run.json",
		"instance/panic-failed.json", "instance-state-view/panic-failed-history.json",
		"instance-spec-view/panic-failed.json", "serial-history/panic.json", "error/invalid-transition.json",
	}
	require.ElementsMatch(t, want, keys(out[capturedV2]))
	require.Contains(t, string(out[capturedV2]["instance/panic-failed.json"]), `"kind":"guest_panicked"`)
	require.Contains(t, string(out[capturedV2]["error/invalid-transition.json"]), `"error_code":"invalid_transition"`)
	r := NewReplayer(root, t.TempDir())
	for p, data := range out[capturedV2] {
		h := r.Handlers[capturedV2][path.Dir(p)]
		require.NotNil(t, h, p)
		require.NoError(t, h(r, data, data), p)
	}

	for last, why := range map[string]string{
		"instance/failed-host-error.json": "not as guest_panicked",
		"instance/destroyed.json":         "ended without a panic",
	} {
		s, _ := panicFake(t, last)
		err := capturePanicOn(ctx, s, captured{}, 30*time.Second)
		require.ErrorContains(t, err, why, last)
	}
	s, _ = panicFake(t, "instance/running.json")
	require.ErrorContains(t, capturePanicOn(ctx, s, captured{}, 300*time.Millisecond), "did not fail within")
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// scratchRepo is a copy of the corpus with LOCK lock, in a git repository
// of one commit (Capture records the commit).
func scratchRepo(t *testing.T, lock string) string {
	t.Helper()
	r := copyRoot(t, lock)
	for _, args := range [][]string{
		{"init", "-q"},
		{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "--allow-empty", "-m", "scratch"},
	} {
		out, err := exec.Command("git", append([]string{"-C", r}, args...)...).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	return r
}

// TestCaptureWritesOnlyVersionsInDevelopment: with v1 released, a capture
// writes v2's files and leaves v1's corpus as it is (one run of the
// servers); with nothing released, the same run gives both.
func TestCaptureWritesOnlyVersionsInDevelopment(t *testing.T) {
	saved := CaptureHook
	t.Cleanup(func() { CaptureHook = saved })
	data, err := os.ReadFile(corpusFile(root, "vmm-server/v2/instance/running.json"))
	require.NoError(t, err)
	v1data, err := os.ReadFile(corpusFile(root, "vmm-server/v1/instance/running.json"))
	require.NoError(t, err)
	files := captured{}
	files.put(capturedV1, KindInstance, "hook-test", v1data)
	files.put(capturedV2, KindInstance, "hook-test", data)

	for _, c := range []struct {
		name, lock string
		want       []string
	}{
		{"v1 released", lockV1, []string{"vmm-server/v2/instance/captured-hook-test.json"}},
		{"nothing released", "# nothing released\n", []string{
			"vmm-server/v1/instance/captured-hook-test.json", "vmm-server/v2/instance/captured-hook-test.json"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := scratchRepo(t, c.lock)
			before, err := ListFiles(r)
			require.NoError(t, err)
			var calls atomic.Int32
			CaptureHook = ServerCapture{run: fakeRun(&calls, files, nil)}.Hook()
			written, err := Capture(context.Background(), r)
			require.NoError(t, err)
			require.ElementsMatch(t, c.want, written)
			require.Equal(t, int32(1), calls.Load())
			after, err := ListFiles(r)
			require.NoError(t, err)
			require.ElementsMatch(t, append(before, c.want...), after, "nothing else is written")
			_, err = CheckManifest(r)
			require.NoError(t, err)
			require.NoError(t, CheckCaptured(r))
		})
	}
}

// TestAwaitSerialFromReadsPastTheMovedHistory: after a migration the
// target's history starts with the source's, so the capturer waits for
// output past the end offset it had: text before it does not count.
func TestAwaitSerialFromReadsPastTheMovedHistory(t *testing.T) {
	var reads atomic.Int32
	s := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch {
		case r.URL.Path != "/v1/instance/serial/history":
			http.NotFound(w, r)
		case q.Get("most_recent") == "0":
			io.WriteString(w, `{"data":"","start":14,"end":14}`)
		case q.Get("from_start") == "0":
			io.WriteString(w, `{"data":"dGljayAxCnRpY2sgMgo=","start":0,"end":14}`) // "tick 1\ntick 2\n" (moved)
		case q.Get("from_start") == "14" && reads.Add(1) < 3:
			io.WriteString(w, `{"data":"","start":14,"end":14}`)
		case q.Get("from_start") == "14":
			io.WriteString(w, `{"data":"dGljayAzCg==","start":14,"end":21}`) // "tick 3\n"
		default:
			http.Error(w, "unexpected query "+r.URL.RawQuery, http.StatusBadRequest)
		}
	})
	ctx := context.Background()
	end, err := s.serialEnd(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(14), end)
	text, err := s.awaitSerialFrom(ctx, "tick", end, 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, "tick 3\n", text, "only what the guest printed past the moved history")
	require.Equal(t, int32(3), reads.Load(), "it waited for new output")
	_, err = s.awaitSerialFrom(ctx, "tock", end, 300*time.Millisecond)
	require.ErrorContains(t, err, `did not print "tock" after offset 14`)
}
