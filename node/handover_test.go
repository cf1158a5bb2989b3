package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// guildMessages records the guild MESSAGE_CREATEs every node delivered, by message
// id: what the union of the sinks holds of the fake's guild events.
type guildMessages struct {
	mu   sync.Mutex
	seen map[uint64]int
	next sink.Sink
}

func (g *guildMessages) Deliver(ctx context.Context, batch []sink.Delivery) error {
	g.mu.Lock()
	for _, d := range batch {
		if d.Event.Type != "MESSAGE_CREATE" {
			continue
		}
		var m struct {
			ID      string `json:"id"`
			GuildID string `json:"guild_id"`
		}
		if json.Unmarshal(d.Event.Data, &m) != nil || m.GuildID == "" {
			continue
		}
		id, _ := strconv.ParseUint(m.ID, 10, 64)
		g.seen[id]++
	}
	g.mu.Unlock()
	return g.next.Deliver(ctx, batch)
}

// check compares the deliveries with the guild events the fake generated that
// reached a session: each must be there exactly once.
func (g *guildMessages) check(evs []gatewaytest.GuildEvent) (missing, twice int, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var first []string
	for _, e := range evs {
		if len(e.Generations) == 0 {
			continue // no session held its guild: it reached no one
		}
		switch n := g.seen[e.ID]; {
		case n == 0:
			missing++
			if len(first) < 5 {
				first = append(first, fmt.Sprintf("event %d (guild %d, %v, generations %v) missing", e.Index, e.GuildID, e.At.Format("15:04:05.000"), e.Generations))
			}
		case n > 1:
			twice++
			if len(first) < 5 {
				first = append(first, fmt.Sprintf("event %d (guild %d, %v) delivered %d times", e.Index, e.GuildID, e.At.Format("15:04:05.000"), n))
			}
		}
	}
	if missing > 0 || twice > 0 {
		err = fmt.Errorf("%d of %d guild events missing, %d delivered more than once: %v", missing, len(evs), twice, first)
	}
	return missing, twice, err
}

// A reshard from 4 to 8 shards over three nodes while guild events flow: the new
// generation identifies beside the old one, within the cluster's identify gate,
// holds its events back until every shard of it is warm, and one switch hands
// delivery over. The union of the sinks holds every guild event the fake generated
// exactly once, the fake never saw two live connections of one (generation, shard)
// nor an identify violation, and the old generation's sessions are gone at the end.
func TestReshardHandsOverExactlyOnce(t *testing.T) {
	c := newTestCluster(t, 4, gatewaytest.Options{Guilds: 32, GuildEventRate: 2, EventRate: 0.001})
	msgs := &guildMessages{seen: map[uint64]int{}, next: c.events}
	nodes := c.startNWith(3, func(cfg *Config) { cfg.Sink = msgs })
	c.readyAndBalanced(60*time.Second, nodes[0], nodes...)

	c.waitLeader(30*time.Second, nodes...)
	if _, err := api.NewClient(nodes[1].HTTPAddr()).Reshard(context.Background(), api.ReshardRequest{Shards: 8}); err != nil {
		t.Fatalf("reshard: %v", err)
	}
	waitFor(t, 90*time.Second, "the switch to 8 shards on every node", func() error {
		for _, n := range nodes {
			if g, total := n.fsm.Generation(), n.fsm.Config().TotalShards; g != 2 || total != 8 {
				return fmt.Errorf("%s: generation %d of %d shards", n.Name(), g, total)
			}
		}
		return nil
	})
	waitFor(t, 30*time.Second, "the old generation's sessions ended, the new one's all live", func() error {
		st := c.fake.Stats()
		if old := st.Generations[4]; old.OpenSessions != 0 || old.Live != 0 {
			return fmt.Errorf("generation of 4: %d sessions open, %d live", old.OpenSessions, old.Live)
		}
		if cur := st.Generations[8]; cur.Live != 8 {
			return fmt.Errorf("generation of 8: %d live", cur.Live)
		}
		return nil
	})
	// Let the events in flight arrive, then compare with everything generated.
	if err := c.fake.SetGuildEventRate(0); err != nil {
		t.Fatal(err)
	}
	evs := c.fake.GuildEvents(0)
	waitFor(t, 30*time.Second, "every guild event delivered once", func() error {
		_, _, err := msgs.check(evs)
		return err
	})
	st := c.fake.Stats()
	if st.IdentifyViolations != 0 {
		t.Errorf("%d identify violations", st.IdentifyViolations)
	}
	for total, g := range st.Generations {
		for id, s := range g.Shards {
			if s.MaxLive > 1 {
				t.Errorf("generation of %d, shard %d: %d live connections at once", total, id, s.MaxLive)
			}
		}
	}
	if g := st.Generations[8]; g.Identifies != 8 {
		t.Errorf("the new generation identified %d times, want 8", g.Identifies)
	}
	// Each node's /metrics counts what its new shards released at the switch: the
	// held events the old generation had delivered (dropped) and the others
	// (delivered then), and how long the longest of those waited.
	var delivered, dropped float64
	longest := 0.0
	waitFor(t, 30*time.Second, "every node's releases counted", func() error {
		delivered, dropped, longest = 0, 0, 0
		for _, n := range nodes {
			mfs := scrape(t, n)
			d := value(mfs, "discluster_reshard_released_events_total", "outcome", "delivered")
			x := value(mfs, "discluster_reshard_released_events_total", "outcome", "dropped")
			if d < 0 || x < 0 {
				return fmt.Errorf("%s exports no discluster_reshard_released_events_total", n.Name())
			}
			delivered, dropped = delivered+d, dropped+x
			longest = max(longest, value(mfs, "discluster_reshard_held_longest_seconds"))
		}
		if dropped == 0 {
			return errors.New("no held event counted as dropped: the old generation delivered events the new one held for seconds")
		}
		return nil
	})
	if longest < 0 || longest > 30 || delivered == 0 && longest > 0 {
		t.Errorf("the longest hold: %vs with %v events delivered at the switch", longest, delivered)
	}
	t.Logf("%d guild events, each delivered once; the new generation: %d identifies; at the switch %v held events delivered (the longest held %.3fs), %v dropped",
		len(evs), st.Generations[8].Identifies, delivered, longest, dropped)
}
