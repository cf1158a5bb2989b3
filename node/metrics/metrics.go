package metrics

import (
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard"
)

const namespace = "discluster"

// MaxEventTypes caps the distinct values of discluster_events_total's type label;
// the types seen after that count as "other". Discord documents fewer than 100.
const MaxEventTypes = 256

// Runner is the node's local shards, as its supervisor sees them.
type Runner interface {
	Shards() []shard.Info
	Lease() api.Lease
	Sink() api.Sink
	// Backlog is the events received and not yet handed to the sink.
	Backlog() int
}

// Leader is the leader room: the session start budget, nil unless this node leads.
type Leader interface {
	Budget() *api.Budget
}

// Raft is Raft's own report: *raft.Raft's Stats ("state", "term", "commit_index",
// "applied_index", "last_contact").
type Raft interface {
	Stats() map[string]string
}

// Deps are what the scrape-time collector reads. Any of them may be nil: its
// metrics are then left out.
type Deps struct {
	Runner Runner
	Leader Leader
	Raft   Raft
	// Now is the clock of the lease's seconds left; time.Now when nil.
	Now func() time.Time
}

// Metrics is one node's registry and the instruments fed as things happen.
type Metrics struct {
	reg *prometheus.Registry

	heartbeat    prometheus.Histogram
	identifyWait prometheus.Histogram

	events     *prometheus.CounterVec
	typesMu    sync.RWMutex
	types      map[string]prometheus.Counter
	eventOther prometheus.Counter

	sinkErrors  prometheus.Counter
	sinkSeconds prometheus.Histogram

	failovers       *prometheus.CounterVec
	failoverShards  *prometheus.CounterVec
	failoverSeconds *prometheus.HistogramVec
	handoffs        prometheus.Counter
	leaseLosses     prometheus.Counter
	elections       prometheus.Counter

	commandsSent    prometheus.Counter
	commandsRefused *prometheus.CounterVec

	reshardReleased *prometheus.CounterVec
	reshardShards   prometheus.Counter
	heldMu          sync.Mutex
	heldGen         uint64  // the generation heldLongest is of
	heldMax         float64 // heldLongest's value
	heldLongest     prometheus.Gauge
}

// Failover causes, the values of the cause label: the failover event's Reason.
const (
	CauseLeaseExpired = string(event.ReasonLeaseExpired)
	CauseProcessGone  = string(event.ReasonProcessGone)
)

// Outcomes of the held events a reshard's new generation releases at its switch,
// the values of the outcome label.
const (
	OutcomeDelivered = "delivered"
	OutcomeDropped   = "dropped"
)

// commandCodes are the refusals a command can get, pre-set so that every series
// exists from the start.
var commandCodes = []string{api.CodeUnknownShard, api.CodeNotReady, api.CodeOwnerMoving, api.CodeRateLimited,
	api.CodePayloadTooLarge, api.CodeBadCommand, api.CodeUnavailable}

// New makes a node's registry, reading d when scraped.
func New(d Deps) *Metrics {
	if d.Now == nil {
		d.Now = time.Now
	}
	m := &Metrics{reg: prometheus.NewRegistry(), types: make(map[string]prometheus.Counter)}
	f := factory{m.reg}
	m.heartbeat = f.histogram("gateway_heartbeat_latency_seconds",
		"Round trip of each heartbeat the gateway acknowledged, over this node's shards.",
		[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10})
	m.identifyWait = f.histogram("identify_wait_seconds",
		"How long a shard of this node waited for the leader's identify grant (one per bucket per window, cluster-wide), retries included.",
		[]float64{.01, .1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900})
	m.events = f.counterVec("events_total",
		"Dispatches this node handled (accepted by the sink, or counted when there is none), by event type; types past the first 256 count as \"other\".",
		"type")
	m.eventOther = m.events.WithLabelValues("other")
	m.sinkErrors = f.counter("sink_errors_total", "Sink deliveries that failed (each is retried; the shards' positions hold).")
	m.sinkSeconds = f.histogram("sink_deliver_seconds", "Time of one delivery of a batch to the sink, failed ones included.",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5})
	m.failovers = f.counterVec("failovers_total",
		"Failovers this node wrote as leader: a failed node's shards reassigned, by cause (lease_expired, process_gone).", "cause")
	m.failoverShards = f.counterVec("failover_shards_total", "Shards reassigned in failovers this node wrote as leader, by cause.", "cause")
	m.failoverSeconds = f.histogramVec("failover_duration_seconds",
		"From a node being marked failed to its shards reassigned, by cause (failovers timed by this leader only).",
		[]float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120}, "cause")
	for _, c := range []string{CauseLeaseExpired, CauseProcessGone} {
		m.failovers.WithLabelValues(c)
		m.failoverShards.WithLabelValues(c)
		m.failoverSeconds.WithLabelValues(c)
	}
	m.handoffs = f.counter("handoff_shards_total", "Shards this node handed off in planned moves (released at their exact seq).")
	m.leaseLosses = f.counter("lease_losses_total", "Times this node lost its lease and suspended its shards.")
	m.elections = f.counter("leader_elections_total", "Times this node became the leader.")
	m.commandsSent = f.counter("commands_sent_total", "Gateway commands asked of this node that their shard's connection took.")
	m.commandsRefused = f.counterVec("commands_refused_total", "Gateway commands asked of this node that were refused, by the API's code.", "code")
	for _, c := range commandCodes {
		m.commandsRefused.WithLabelValues(c)
	}
	m.reshardReleased = f.counterVec("reshard_released_events_total",
		"Events a reshard's new generation held back and released at its switch on this node: delivered then (delayed by the switch), "+
			"or dropped as delivered by the old generation.", "outcome")
	for _, o := range []string{OutcomeDelivered, OutcomeDropped} {
		m.reshardReleased.WithLabelValues(o)
	}
	m.reshardShards = f.counter("reshard_released_shards_total",
		"Shards of a reshard's new generation on this node that finished their release at the switch: every event they held delivered or dropped.")
	m.heldLongest = f.gauge("reshard_held_longest_seconds",
		"The longest an event delivered at the last reshard's switch on this node had been held, from its arrival to its release; 0 before any.")
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newStateCollector(d),
	)
	return m
}

// Registry is the node's registry, for tests and for embedding programs that add
// their own collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// HeartbeatLatency implements runner.Observer.
func (m *Metrics) HeartbeatLatency(rtt time.Duration) { m.heartbeat.Observe(rtt.Seconds()) }

// IdentifyWaited implements runner.Observer.
func (m *Metrics) IdentifyWaited(d time.Duration) { m.identifyWait.Observe(d.Seconds()) }

// HeldReleased implements runner.Observer: one shard of generation gen released
// what it held at the switch. The longest hold is kept for the newest generation
// only, so the gauge says what the last reshard cost.
func (m *Metrics) HeldReleased(gen uint64, delivered, dropped int, longest time.Duration) {
	m.reshardReleased.WithLabelValues(OutcomeDelivered).Add(float64(delivered))
	m.reshardReleased.WithLabelValues(OutcomeDropped).Add(float64(dropped))
	m.reshardShards.Inc()
	m.heldMu.Lock()
	defer m.heldMu.Unlock()
	switch {
	case gen < m.heldGen:
		return // a late shard of an earlier reshard
	case gen > m.heldGen:
		m.heldGen, m.heldMax = gen, 0
	}
	m.heldMax = max(m.heldMax, longest.Seconds())
	m.heldLongest.Set(m.heldMax)
}

// Command counts a gateway command asked of this node: sent when err is nil, else
// refused with the API's code for err.
func (m *Metrics) Command(err error) {
	if err == nil {
		m.commandsSent.Inc()
		return
	}
	m.commandsRefused.WithLabelValues(api.ErrorCode(err)).Inc()
}

// Notify implements event.Notifier: the node's typed events feed the failover,
// handoff, lease and election counters.
func (m *Metrics) Notify(e event.Event) {
	switch e.Kind {
	case event.Failover:
		cause := failoverCause(e)
		m.failovers.WithLabelValues(cause).Inc()
		m.failoverShards.WithLabelValues(cause).Add(float64(len(e.Shards)))
		if e.Duration > 0 {
			m.failoverSeconds.WithLabelValues(cause).Observe(e.Duration.Seconds())
		}
	case event.HandedOff:
		m.handoffs.Add(float64(len(e.Shards)))
	case event.LeaseLost:
		m.leaseLosses.Inc()
	case event.LeaderElected:
		m.elections.Inc()
	}
}

// failoverCause is a failover event's label value; an event without a reason (from
// an older leader) counts as a lease that expired, the rule before there were others.
func failoverCause(e event.Event) string {
	if e.Reason == event.ReasonProcessGone {
		return CauseProcessGone
	}
	return CauseLeaseExpired
}

// eventType is a dispatch name as Discord writes them; anything else is "other".
var eventType = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)

// countEvent adds n to the events of type t.
func (m *Metrics) countEvent(t string, n int) {
	m.typesMu.RLock()
	c, ok := m.types[t]
	m.typesMu.RUnlock()
	if !ok {
		c = m.eventCounter(t)
	}
	c.Add(float64(n))
}

func (m *Metrics) eventCounter(t string) prometheus.Counter {
	if !eventType.MatchString(t) {
		return m.eventOther
	}
	m.typesMu.Lock()
	defer m.typesMu.Unlock()
	if c, ok := m.types[t]; ok {
		return c
	}
	if len(m.types) >= MaxEventTypes {
		return m.eventOther
	}
	c := m.events.WithLabelValues(t)
	m.types[t] = c
	return c
}

// factory registers discluster_ instruments on one registry.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
