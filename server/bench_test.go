package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/kvmtest"
	"github.com/wagglevm/waggle/spec"
)

// load sends n GET requests to url from conc goroutines over keep-alive
// connections and returns requests per second and the 50th and 99th
// percentile latencies.
func load(tb testing.TB, url string, n, conc int) (rps float64, p50, p99 time.Duration) {
	tb.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	defer client.CloseIdleConnections()
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	per := n / conc
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g * per; i < (g+1)*per; i++ {
				t0 := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					tb.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					tb.Errorf("GET %s: %d", url, resp.StatusCode)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	lat = lat[:per*conc]
	slices.Sort(lat)
	return float64(len(lat)) / elapsed.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100]
}

// BenchmarkGetInstanceUnderLoad measures GET /v1/instance on the real
// handler and Runtime (with a built VM) under 16 concurrent clients, beside
// the same load on an empty chi handler in the same run. ratio_rps is ours
// over the reference's.
func BenchmarkGetInstanceUnderLoad(b *testing.B) {
	kvmtest.Require(b)
	rt := NewRuntime(RuntimeOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer rt.Close()
	s, err := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: 1, MemoryMiB: 64, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: "ticker"}).Build()
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := rt.Ensure(context.Background(), EnsureRequest{Properties: Properties{ID: uuid.New(), Name: "bench"}, Spec: &s}); err != nil {
		b.Fatal(err)
	}
	h, err := NewHandler(rt, httpkit.HandlerOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Auth: httpkit.NoAuth()})
	if err != nil {
		b.Fatal(err)
	}
	ours := httptest.NewServer(h)
	defer ours.Close()
	ref := chi.NewRouter()
	ref.Get("/v1/instance", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	})
	refSrv := httptest.NewServer(ref)
	defer refSrv.Close()

	const conc = 16
	n := max(b.N, 1) * 2000
	b.ResetTimer()
	rps, p50, p99 := load(b, ours.URL+"/v1/instance", n, conc)
	refRPS, refP50, refP99 := load(b, refSrv.URL+"/v1/instance", n, conc)
	b.StopTimer()
	b.ReportMetric(rps, "req/s")
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
	b.ReportMetric(refRPS, "ref-req/s")
	b.ReportMetric(float64(refP50.Microseconds()), "ref-p50-µs")
	b.ReportMetric(float64(refP99.Microseconds()), "ref-p99-µs")
	b.ReportMetric(rps/refRPS, "ratio-rps")
	b.Logf("GET /v1/instance: %.0f req/s p50 %v p99 %v; empty chi handler: %.0f req/s p50 %v p99 %v",
		rps, p50, p99, refRPS, refP50, refP99)
}
