package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// typeSink records the types and the highest seq per shard it was given.
type typeSink struct {
	mu     sync.Mutex
	types  map[string]int
	maxSeq map[int]int64
}

func (s *typeSink) Deliver(_ context.Context, batch []sink.Delivery) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range batch {
		s.types[d.Event.Type]++
		s.maxSeq[d.Event.ShardID] = max(s.maxSeq[d.Event.ShardID], d.Event.Seq)
	}
	return nil
}

// With --events GUILD_CREATE, the sink gets the shards' GUILD_CREATEs and nothing
// else, while the MESSAGE_CREATEs after them still move the checkpoints: a failover
// would not replay what was filtered.
func TestEventsFilterKeepsPositionsMoving(t *testing.T) {
	c := newTestCluster(t, 2, gatewaytest.Options{})
	ts := &typeSink{types: map[string]int{}, maxSeq: map[int]int64{}}
	n := c.startNWith(1, func(cfg *Config) {
		cfg.Sink = ts
		cfg.Events = []string{"GUILD_CREATE"}
	})[0]
	c.waitLeader(20*time.Second, n)
	c.allReady(30*time.Second, n)
	waitFor(t, 30*time.Second, "checkpoints past the last delivered GUILD_CREATE", func() error {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if ts.types["GUILD_CREATE"] == 0 {
			return errors.New("no GUILD_CREATE delivered yet")
		}
		for id := range 2 {
			r, ok := n.fsm.Resume(id)
			if !ok || r.Seq <= ts.maxSeq[id]+5 {
				return fmt.Errorf("shard %d: checkpoint %d, last delivered seq %d", id, r.Seq, ts.maxSeq[id])
			}
		}
		return nil
	})
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for typ := range ts.types {
		if typ != "GUILD_CREATE" {
			t.Errorf("the sink got %d %s, filtered out", ts.types[typ], typ)
		}
	}
}
