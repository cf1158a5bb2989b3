package node

import (
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/metrics"
	"github.com/discluster/discluster/shard"
)

// newMetrics makes the node's registry over its rooms. The adapters read n's rooms
// when scraped, which is only once the API serves, after they all exist.
func (n *Node) newMetrics() *metrics.Metrics {
	return metrics.New(metrics.Deps{Runner: metricsRunner{n}, Leader: metricsLeader{n}, Raft: n.raft})
}

// metricsRunner is the runner for the metrics room.
type metricsRunner struct{ n *Node }

var _ metrics.Runner = metricsRunner{}

func (m metricsRunner) Shards() []shard.Info {
	local := m.n.runner.Shards()
	out := make([]shard.Info, len(local))
	for i, s := range local {
		out[i] = s.Info
	}
	return out
}

func (m metricsRunner) Lease() api.Lease { return m.n.runner.Lease() }
func (m metricsRunner) Sink() api.Sink   { return m.n.runner.Sink() }
func (m metricsRunner) Backlog() int     { return m.n.runner.Backlog() }

// metricsLeader is the leader room for the metrics room.
type metricsLeader struct{ n *Node }

func (m metricsLeader) Budget() *api.Budget { return m.n.leader.Budget() }

// notifier records an event in the node's log and counts it in its metrics.
type notifier struct{ n *Node }

var _ event.Notifier = notifier{}

func (t notifier) Notify(e event.Event) {
	t.n.events.Notify(e)
	t.n.metrics.Notify(e)
	if e.Kind == event.ShardingRequired {
		t.n.noteShardingRequired(e)
	}
}
