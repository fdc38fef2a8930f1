package router

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Refusal reasons, the values of the "reason" label of mse_router_connections_refused_total.
const (
	ReasonMaxConns         = "max_conns"         // MaxConns connections already open
	ReasonShutdown         = "shutdown"          // the router is shutting down
	ReasonHandshakeTimeout = "handshake_timeout" // no complete ClientHello within HandshakeTimeout
	ReasonClientClosed     = "client_closed"     // the client closed (or reset) before a complete ClientHello
	ReasonNotTLS           = "not_tls"           // the first bytes are not a TLS handshake record
	ReasonMalformed        = "malformed"         // a broken or oversized ClientHello
	ReasonNoSNI            = "no_sni"            // no server_name host_name
	ReasonBadSNI           = "bad_sni"           // a host_name that is not a valid DNS name
	ReasonUnknownName      = "unknown_name"      // Lookup returned ErrUnknownServerName
	ReasonLookupError      = "lookup_error"      // Lookup failed otherwise (or timed out)
	ReasonDialError        = "dial_error"        // the backend could not be reached
)

var allReasons = []string{
	ReasonMaxConns, ReasonShutdown, ReasonHandshakeTimeout, ReasonClientClosed, ReasonNotTLS, ReasonMalformed,
	ReasonNoSNI, ReasonBadSNI, ReasonUnknownName, ReasonLookupError, ReasonDialError,
}

// Metrics are the router's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	accepted      prometheus.Counter
	routed        prometheus.Counter
	refused       *prometheus.CounterVec
	active        prometheus.Gauge
	bytesIn       prometheus.Counter // client -> backend (the replayed ClientHello included)
	bytesOut      prometheus.Counter // backend -> client
	lookupSeconds *prometheus.HistogramVec
}

// NewMetrics creates the router's metrics and registers them on reg (if reg is nil, they are not
// registered). Registering twice on the same registry fails with the registry's error.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns, sub = "mse", "router"
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "bytes_total",
		Help: `Bytes relayed; direction="in": client to backend (ClientHello included), "out": backend to client.`,
	}, []string{"direction"})
	m := &Metrics{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_accepted_total",
			Help: "TCP connections accepted by the router.",
		}),
		routed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_routed_total",
			Help: "Connections whose ClientHello was forwarded to a backend.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_refused_total",
			Help: "Connections closed without being routed, by reason.",
		}, []string{"reason"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_active",
			Help: "Connections currently open (reading the ClientHello or relaying).",
		}),
		bytesIn:  bytes.WithLabelValues("in"),
		bytesOut: bytes.WithLabelValues("out"),
		lookupSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "lookup_duration_seconds",
			Help:    `Latency of server-name lookups; result is "found", "unknown" or "error".`,
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"result"}),
	}
	for _, r := range allReasons {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{"found", "unknown", "error"} {
		m.lookupSeconds.WithLabelValues(r)
	}
	if reg != nil {
		cs := []prometheus.Collector{m.accepted, m.routed, m.refused, m.active, bytes, m.lookupSeconds}
		for i, c := range cs {
			if err := reg.Register(c); err != nil {
				for _, done := range cs[:i] {
					reg.Unregister(done)
				}
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) incAccepted() {
	if m != nil {
		m.accepted.Inc()
		m.active.Inc()
	}
}

func (m *Metrics) decActive() {
	if m != nil {
		m.active.Dec()
	}
}

func (m *Metrics) incRouted() {
	if m != nil {
		m.routed.Inc()
	}
}

func (m *Metrics) incRefused(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) addBytes(in bool, n int) {
	if m == nil || n <= 0 {
		return
	}
	if in {
		m.bytesIn.Add(float64(n))
	} else {
		m.bytesOut.Add(float64(n))
	}
}

func (m *Metrics) observeLookup(result string, d time.Duration) {
	if m != nil {
		m.lookupSeconds.WithLabelValues(result).Observe(d.Seconds())
	}
}
