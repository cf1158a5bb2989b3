package metrics

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard"
)

type fakeRunner struct {
	mu      sync.Mutex
	shards  []shard.Info
	lease   api.Lease
	sink    api.Sink
	backlog int
}

func (f *fakeRunner) Shards() []shard.Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]shard.Info(nil), f.shards...)
}
func (f *fakeRunner) Lease() api.Lease { return f.lease }
func (f *fakeRunner) Sink() api.Sink   { return f.sink }
func (f *fakeRunner) Backlog() int     { return f.backlog }

type fakeLeader struct{ b *api.Budget }

func (f fakeLeader) Budget() *api.Budget { return f.b }

type fakeRaft map[string]string

func (f fakeRaft) Stats() map[string]string { return f }

var now = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func newTest(r *fakeRunner, l Leader, rf Raft) *Metrics {
	return New(Deps{Runner: r, Leader: l, Raft: rf, Now: func() time.Time { return now }})
}

func lint(t *testing.T, m *Metrics) {
	t.Helper()
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func compare(t *testing.T, m *Metrics, want string, names ...string) {
	t.Helper()
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func TestStateCollector(t *testing.T) {
	r := &fakeRunner{
		shards: []shard.Info{
			{ShardID: 0, State: shard.StateReady, Counters: shard.Counters{Events: 10, Identifies: 1}},
			{ShardID: 1, State: shard.StateReady, Counters: shard.Counters{Events: 5, Resumes: 1}},
			{ShardID: 2, State: shard.StateResuming},
		},
		lease:   api.Lease{Held: true, Until: now.Add(1500 * time.Millisecond)},
		sink:    api.Sink{Failing: true, Failures: 3},
		backlog: 7,
	}
	m := newTest(r, fakeLeader{&api.Budget{Known: true, Total: 1000, Remaining: 990}},
		fakeRaft{"state": "Follower", "term": "4", "commit_index": "120", "applied_index": "118", "last_contact": "250ms"})
	lint(t, m)
	compare(t, m, `
# HELP discluster_shards Shards this node runs, by state.
# TYPE discluster_shards gauge
discluster_shards{state="connecting"} 0
discluster_shards{state="failed"} 0
discluster_shards{state="identifying"} 0
discluster_shards{state="idle"} 0
discluster_shards{state="ready"} 2
discluster_shards{state="reconnecting"} 0
discluster_shards{state="resuming"} 1
discluster_shards{state="stopped"} 0
# HELP discluster_lease_remaining_seconds Seconds until this node's lease runs out unless renewed; 0 without one.
# TYPE discluster_lease_remaining_seconds gauge
discluster_lease_remaining_seconds 1.5
# HELP discluster_lease_held 1 while this node holds its lease (it may run shards).
# TYPE discluster_lease_held gauge
discluster_lease_held 1
# HELP discluster_sink_backlog_events Events this node's shards received that are waiting for the sink (its clusters' queues).
# TYPE discluster_sink_backlog_events gauge
discluster_sink_backlog_events 7
# HELP discluster_sink_failing 1 while the sink fails (deliveries are retried, the shards' positions hold).
# TYPE discluster_sink_failing gauge
discluster_sink_failing 1
# HELP discluster_session_starts_remaining Session starts (identifies) left in Discord's daily budget, less those granted since it was fetched; only the leader reports it.
# TYPE discluster_session_starts_remaining gauge
discluster_session_starts_remaining 990
# HELP discluster_raft_is_leader 1 while this node is the Raft leader.
# TYPE discluster_raft_is_leader gauge
discluster_raft_is_leader 0
# HELP discluster_raft_term The current Raft term.
# TYPE discluster_raft_term gauge
discluster_raft_term 4
# HELP discluster_raft_commit_index The Raft log's commit index as this node knows it.
# TYPE discluster_raft_commit_index gauge
discluster_raft_commit_index 120
# HELP discluster_raft_applied_index The last Raft log index this node applied to its state.
# TYPE discluster_raft_applied_index gauge
discluster_raft_applied_index 118
# HELP discluster_raft_last_contact_seconds Seconds since this follower last heard from the leader (0 on the leader; absent before any contact).
# TYPE discluster_raft_last_contact_seconds gauge
discluster_raft_last_contact_seconds 0.25
`, "discluster_shards", "discluster_lease_remaining_seconds", "discluster_lease_held", "discluster_sink_backlog_events",
		"discluster_sink_failing", "discluster_session_starts_remaining", "discluster_raft_is_leader", "discluster_raft_term",
		"discluster_raft_commit_index", "discluster_raft_applied_index", "discluster_raft_last_contact_seconds")
	counters := func(events, identifies, resumes int) string {
		return fmt.Sprintf(`
# HELP discluster_gateway_events_total Dispatches this node's shards received from the gateway.
# TYPE discluster_gateway_events_total counter
discluster_gateway_events_total %d
# HELP discluster_gateway_identifies_total IDENTIFYs this node's shards sent: new sessions, each from the daily budget.
# TYPE discluster_gateway_identifies_total counter
discluster_gateway_identifies_total %d
# HELP discluster_gateway_resumes_total RESUMEs this node's shards sent: sessions continued, at no budget cost.
# TYPE discluster_gateway_resumes_total counter
discluster_gateway_resumes_total %d
`, events, identifies, resumes)
	}
	names := []string{"discluster_gateway_events_total", "discluster_gateway_identifies_total", "discluster_gateway_resumes_total"}
	compare(t, m, counters(15, 1, 1), names...)

	// Shard 1 moves away, shard 0 grows, and shard 3 arrives: the counters only grow.
	r.mu.Lock()
	r.shards = []shard.Info{
		{ShardID: 0, State: shard.StateReady, Counters: shard.Counters{Events: 12, Identifies: 1}},
		{ShardID: 3, State: shard.StateReady, Counters: shard.Counters{Events: 4, Resumes: 1}},
	}
	r.mu.Unlock()
	compare(t, m, counters(21, 1, 2), names...)
	// Shard 0 restarts here (a new run: its counters start over) with more than it
	// had: counted from zero.
	r.mu.Lock()
	r.shards[0].Counters = shard.Counters{Events: 3, Resumes: 1}
	r.mu.Unlock()
	compare(t, m, counters(24, 1, 3), names...)
}

// A leader reports 0 seconds since contact; a node that never heard from one, none;
// a node that does not lead, no budget.
func TestRaftAndBudgetEdges(t *testing.T) {
	m := newTest(&fakeRunner{}, fakeLeader{}, fakeRaft{"state": "Leader", "term": "2", "last_contact": "0"})
	compare(t, m, `
# HELP discluster_raft_is_leader 1 while this node is the Raft leader.
# TYPE discluster_raft_is_leader gauge
discluster_raft_is_leader 1
# HELP discluster_raft_last_contact_seconds Seconds since this follower last heard from the leader (0 on the leader; absent before any contact).
# TYPE discluster_raft_last_contact_seconds gauge
discluster_raft_last_contact_seconds 0
`, "discluster_raft_is_leader", "discluster_raft_last_contact_seconds", "discluster_session_starts_remaining")
	m = newTest(&fakeRunner{}, nil, fakeRaft{"state": "Follower", "last_contact": "never", "term": "garbage"})
	if n, _ := testutil.GatherAndCount(m.Registry(), "discluster_raft_last_contact_seconds", "discluster_raft_term"); n != 0 {
		t.Errorf("%d series for a follower with no contact and a bad term, want none", n)
	}
	lint(t, m)
}

func TestEventsAndCommands(t *testing.T) {
	m := newTest(&fakeRunner{}, nil, nil)
	m.Notify(event.Event{Kind: event.Failover, Shards: event.Shards{1, 2, 3}, Duration: 2 * time.Second, Cause: "lease expired", Reason: event.ReasonLeaseExpired})
	m.Notify(event.Event{Kind: event.Failover, Shards: event.Shards{4}, Duration: 100 * time.Millisecond, Cause: "the words may change", Reason: event.ReasonProcessGone})
	m.Notify(event.Event{Kind: event.Failover, Shards: event.Shards{5}, Cause: "lease expired (failed under an earlier leader)", Reason: event.ReasonLeaseExpired})
	m.Notify(event.Event{Kind: event.HandedOff, Shards: event.Shards{6, 7}})
	m.Notify(event.Event{Kind: event.LeaseLost})
	m.Notify(event.Event{Kind: event.LeaderElected, Term: 3})
	m.Notify(event.Event{Kind: event.NodeJoined})
	m.Command(nil)
	m.Command(nil)
	m.Command(&api.RetryError{Err: api.ErrRateLimited, After: time.Second})
	m.Command(fmt.Errorf("%w: shard 9", api.ErrUnknownShard))
	m.HeartbeatLatency(40 * time.Millisecond)
	m.IdentifyWaited(5 * time.Second)
	compare(t, m, `
# HELP discluster_failovers_total Failovers this node wrote as leader: a failed node's shards reassigned, by cause (lease_expired, process_gone).
# TYPE discluster_failovers_total counter
discluster_failovers_total{cause="lease_expired"} 2
discluster_failovers_total{cause="process_gone"} 1
# HELP discluster_failover_shards_total Shards reassigned in failovers this node wrote as leader, by cause.
# TYPE discluster_failover_shards_total counter
discluster_failover_shards_total{cause="lease_expired"} 4
discluster_failover_shards_total{cause="process_gone"} 1
# HELP discluster_handoff_shards_total Shards this node handed off in planned moves (released at their exact seq).
# TYPE discluster_handoff_shards_total counter
discluster_handoff_shards_total 2
# HELP discluster_lease_losses_total Times this node lost its lease and suspended its shards.
# TYPE discluster_lease_losses_total counter
discluster_lease_losses_total 1
# HELP discluster_leader_elections_total Times this node became the leader.
# TYPE discluster_leader_elections_total counter
discluster_leader_elections_total 1
# HELP discluster_commands_sent_total Gateway commands asked of this node that their shard's connection took.
# TYPE discluster_commands_sent_total counter
discluster_commands_sent_total 2
`, "discluster_failovers_total", "discluster_failover_shards_total", "discluster_handoff_shards_total",
		"discluster_lease_losses_total", "discluster_leader_elections_total", "discluster_commands_sent_total")
	for code, want := range map[string]float64{api.CodeRateLimited: 1, api.CodeUnknownShard: 1, api.CodeNotReady: 0} {
		if v := testutil.ToFloat64(m.commandsRefused.WithLabelValues(code)); v != want {
			t.Errorf("commands refused %s: %v, want %v", code, v, want)
		}
	}
	// Only the timed failovers are in the histogram.
	for cause, want := range map[string]uint64{CauseLeaseExpired: 1, CauseProcessGone: 1} {
		if n := histCount(t, m, "discluster_failover_duration_seconds", cause); n != want {
			t.Errorf("failover durations %s: %d, want %d", cause, n, want)
		}
	}
	if n := histCount(t, m, "discluster_gateway_heartbeat_latency_seconds", ""); n != 1 {
		t.Errorf("heartbeat latencies: %d", n)
	}
	if n := histCount(t, m, "discluster_identify_wait_seconds", ""); n != 1 {
		t.Errorf("identify waits: %d", n)
	}
	lint(t, m)
}

// histCount is the sample count of a histogram's series (with label cause, when set).
func histCount(t *testing.T, m *Metrics, name, cause string) uint64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			if cause == "" || len(s.GetLabel()) == 1 && s.GetLabel()[0].GetValue() == cause {
				return s.GetHistogram().GetSampleCount()
			}
		}
	}
	t.Fatalf("no %s{%s}", name, cause)
	return 0
}

// Two nodes in one process each have their own registry.
func TestRegistriesArePerNode(t *testing.T) {
	a, b := newTest(&fakeRunner{}, nil, nil), newTest(&fakeRunner{}, nil, nil)
	a.Command(nil)
	if v := testutil.ToFloat64(b.commandsSent); v != 0 {
		t.Errorf("b counted a's command: %v", v)
	}
}

// The Grafana dashboard asks only for metrics the node exports.
func TestDashboardNamesExist(t *testing.T) {
	raw, err := os.ReadFile("../../contrib/grafana/discluster.json")
	if err != nil {
		t.Fatal(err)
	}
	m := newTest(&fakeRunner{lease: api.Lease{Held: true}}, fakeLeader{&api.Budget{Known: true}},
		fakeRaft{"state": "Follower", "term": "1", "commit_index": "1", "applied_index": "1", "last_contact": "1s"})
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			have[mf.GetName()+"_bucket"] = true
		}
	}
	names := regexp.MustCompile(`\b(?:discluster|process|go)_[a-z_]+`).FindAllString(string(raw), -1)
	if len(names) < 20 {
		t.Fatalf("only %d metric names in the dashboard", len(names))
	}
	for _, n := range names {
		if !have[n] {
			t.Errorf("the dashboard asks for %s, which the node does not export", n)
		}
	}
}

// What a reshard's new shards released at the switch: counted by outcome over every
// release, the longest hold kept for the newest generation only.
func TestReshardReleases(t *testing.T) {
	m := newTest(&fakeRunner{}, nil, nil)
	m.HeldReleased(2, 3, 40, 120*time.Millisecond)
	m.HeldReleased(2, 0, 12, 0)
	m.HeldReleased(2, 5, 1, 800*time.Millisecond)
	m.HeldReleased(2, 1, 0, 300*time.Millisecond)
	compare(t, m, `
# HELP discluster_reshard_released_events_total Events a reshard's new generation held back and released at its switch on this node: delivered then (delayed by the switch), or dropped as delivered by the old generation.
# TYPE discluster_reshard_released_events_total counter
discluster_reshard_released_events_total{outcome="delivered"} 9
discluster_reshard_released_events_total{outcome="dropped"} 53
# HELP discluster_reshard_released_shards_total Shards of a reshard's new generation on this node that finished their release at the switch: every event they held delivered or dropped.
# TYPE discluster_reshard_released_shards_total counter
discluster_reshard_released_shards_total 4
# HELP discluster_reshard_held_longest_seconds The longest an event delivered at the last reshard's switch on this node had been held, from its arrival to its release; 0 before any.
# TYPE discluster_reshard_held_longest_seconds gauge
discluster_reshard_held_longest_seconds 0.8
`, "discluster_reshard_released_events_total", "discluster_reshard_released_shards_total", "discluster_reshard_held_longest_seconds")
	m.HeldReleased(3, 2, 2, 50*time.Millisecond) // the next reshard
	m.HeldReleased(2, 1, 0, 5*time.Second)       // a late shard of the one before
	if v := testutil.ToFloat64(m.heldLongest); v != 0.05 {
		t.Errorf("the longest hold after the next reshard: %vs, want 0.05", v)
	}
	if v := testutil.ToFloat64(m.reshardReleased.WithLabelValues(OutcomeDelivered)); v != 12 {
		t.Errorf("delivered: %v, want 12", v)
	}
	lint(t, m)
}
