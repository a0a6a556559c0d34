package controlplane

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the control plane's Prometheus metrics, in a registry of
// their own.
type Metrics struct {
	reg          *prometheus.Registry
	rings        prometheus.Counter
	coalesced    prometheus.Counter
	pullRetries  prometheus.Counter
	pulls        *prometheus.CounterVec
	ringLatency  prometheus.Histogram
	checks       *prometheus.CounterVec
	sledsLost    prometheus.Counter
	sledsRevived prometheus.Counter
	rounds       prometheus.Counter
}

func newMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.rings = prometheus.NewCounter(prometheus.CounterOpts{Name: "waggle_controlplane_doorbell_rings_total",
		Help: "Doorbell rings heard, for known and unknown VMMs."})
	m.coalesced = prometheus.NewCounter(prometheus.CounterOpts{Name: "waggle_controlplane_doorbell_coalesced_total",
		Help: "Rings that found a pull of their VMM queued or under way, and joined it."})
	m.pullRetries = prometheus.NewCounter(prometheus.CounterOpts{Name: "waggle_controlplane_pull_retries_total",
		Help: "Pulls asked again of a sled agent that did not answer, or while the database was away."})
	m.pulls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "waggle_controlplane_pulls_total",
		Help: "VMM states pulled from sled agents, by outcome (updated, stale, missing, vmm_gone, retired, unreachable, error, skipped)."},
		[]string{"outcome"})
	m.ringLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "waggle_controlplane_doorbell_latency_seconds",
		Help:    "From a ring to its VMM's state stored.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.checks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "waggle_controlplane_watcher_checks_total",
		Help: "The instance watcher's checks of VMMs, by class: ok (answered), vmm_gone (the sled does not know it), sled_unreachable, error."},
		[]string{"class"})
	m.sledsLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "waggle_controlplane_sleds_lost_total",
		Help: "Sleds marked lost after a silence, their VMMs failed."})
	m.sledsRevived = prometheus.NewCounter(prometheus.CounterOpts{Name: "waggle_controlplane_sleds_revived_total",
		Help: "Lost sleds whose agents answered the instance watcher again, made active."})
	m.rounds = prometheus.NewCounter(prometheus.CounterOpts{Name: "waggle_controlplane_watcher_rounds_total",
		Help: "Rounds of the instance watcher over every sled."})
	m.reg.MustRegister(m.rings, m.coalesced, m.pullRetries, m.pulls, m.ringLatency, m.checks, m.sledsLost, m.sledsRevived, m.rounds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []Outcome{OutcomeUpdated, OutcomeStale, OutcomeMissing, OutcomeVmmGone, OutcomeRetired,
		OutcomeUnreachable, OutcomeError, OutcomeSkipped} {
		m.pulls.WithLabelValues(string(o))
	}
	for _, c := range []CheckClass{CheckOK, CheckVmmGone, CheckSledUnreachable, CheckError} {
		m.checks.WithLabelValues(string(c))
	}
	return m
}

// MetricsHandler serves the metrics in Prometheus's text format.
func (c *ControlPlane) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(c.metrics.reg, promhttp.HandlerOpts{})
}
