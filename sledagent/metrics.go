package sledagent

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's Prometheus metrics, in a registry of its own (so
// that two agents in one process, as in tests, keep theirs apart).
type metrics struct {
	reg         *prometheus.Registry
	vmms        *prometheus.GaugeVec
	rings       *prometheus.CounterVec
	retries     prometheus.Counter
	ringLatency prometheus.Histogram
	exits       *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		vmms: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "waggle_sled_vmms", Help: "Registered VMMs by state.",
		}, []string{"state"}),
		rings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waggle_sled_doorbell_rings_total",
			Help: "Doorbell rings by result: delivered, failed (retried), unknown_vmm (the control plane disowned the VMM).",
		}, []string{"result"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "waggle_sled_doorbell_retries_total", Help: "Doorbell rings retried after a failure.",
		}),
		ringLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "waggle_sled_doorbell_latency_seconds",
			Help:    "From a change of a VMM's state to the control plane hearing the ring that covers it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waggle_sled_vmm_process_exits_total",
			Help: "VMM server processes that ended while their VMM was not terminal, by how: signal, exit_code, unknown.",
		}, []string{"how"}),
	}
	m.reg.MustRegister(m.vmms, m.rings, m.retries, m.ringLatency, m.exits,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, s := range AllStates {
		m.vmms.WithLabelValues(string(s)).Set(0)
	}
	for _, r := range []string{"delivered", "failed", "unknown_vmm"} {
		m.rings.WithLabelValues(r)
	}
	for _, h := range []string{"signal", "exit_code", "unknown"} {
		m.exits.WithLabelValues(h)
	}
	return m
}

// MetricsHandler serves the agent's metrics in the Prometheus text format.
func (a *Agent) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.m.reg, promhttp.HandlerOpts{})
}
