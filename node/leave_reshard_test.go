package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// A node that leaves (SIGTERM: Leave) while a reshard runs hands off its shards of
// both generations before it goes, without waiting for the switch: the leader moves
// its new shards at once, and one that had a session RESUMEs elsewhere from the
// position before the oldest event it held, which its next owner holds again. The
// node is never marked failed, the switch still happens, with the two others, and
// every guild event reaches the sinks exactly once.
//
// The nodes keep an identify window of 1 s, so the new generation takes 8 s to
// identify: the leave starts with at least four windows of it left.
func TestLeaveDuringReshardHandsOffBothGenerations(t *testing.T) {
	const from, to = 4, 8
	c := newTestCluster(t, from, gatewaytest.Options{Guilds: 32, GuildEventRate: 2, EventRate: 0.001})
	msgs := &guildMessages{seen: map[uint64]int{}, next: c.events}
	nodes := c.startNWith(3, func(cfg *Config) { cfg.Sink = msgs; cfg.IdentifyWindow = time.Second })
	c.readyAndBalanced(60*time.Second, nodes[0], nodes...)
	leader := c.waitLeader(30*time.Second, nodes...)
	r, err := api.NewClient(leader.HTTPAddr()).Reshard(context.Background(), api.ReshardRequest{Shards: to})
	if err != nil {
		t.Fatalf("reshard: %v", err)
	}

	// The leaver: the first follower with a shard of the new generation that has a
	// session (its checkpoint in the state), while at most half of them have one.
	var leaver *testNode
	moved := -1
	waitFor(t, 30*time.Second, "a follower's shard of the new generation with a session", func() error {
		if _, ok := leader.fsm.Reshard(); !ok {
			t.Fatal("the reshard switched before a follower's new shard had a session")
		}
		started := 0
		for id := range to {
			if res, ok := leader.fsm.ResumeIn(r.Generation, id); ok && res.Resumable() {
				started++
			}
		}
		for _, a := range leader.fsm.AssignmentsIn(r.Generation) {
			res, ok := leader.fsm.ResumeIn(r.Generation, a.Shard)
			if a.Node == leader.Name() || !ok || !res.Resumable() {
				continue
			}
			if started > to/2 {
				t.Fatalf("%d of the new generation's %d shards have a session already: no time left to leave mid-reshard", started, to)
			}
			for _, n := range nodes {
				if n.Name() == a.Node {
					leaver, moved = n, a.Shard
				}
			}
			return nil
		}
		return fmt.Errorf("%d of %d new shards have a session, none on a follower", started, to)
	})
	held := len(leader.fsm.ShardsOfIn(r.Generation, leaver.Name()))
	t.Logf("%s leaves holding %d current shards and %d of the new generation (shard %d with a session)",
		leaver.Name(), len(leader.fsm.ShardsOf(leaver.Name())), held, moved)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	began := time.Now()
	if err := leaver.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	took := time.Since(began)
	if _, ok := leader.fsm.Reshard(); !ok {
		t.Errorf("the reshard switched before the leave returned (%v): the leave should not wait for it", took)
	}
	if k := len(leader.fsm.ShardsOf(leaver.Name())) + len(leader.fsm.ShardsOfIn(r.Generation, leaver.Name())); k != 0 {
		t.Fatalf("the leave returned with %d shards still assigned to %s", k, leaver.Name())
	}
	t.Logf("%s left in %v with every shard of both generations handed off", leaver.Name(), took.Round(time.Millisecond))

	var survivors []*testNode
	for _, n := range nodes {
		if n != leaver {
			survivors = append(survivors, n)
		}
	}
	waitFor(t, 60*time.Second, "the switch, on the survivors, to 8 shards held by them", func() error {
		for _, n := range survivors {
			if g, total := n.fsm.Generation(), n.fsm.Config().TotalShards; g != r.Generation || total != to {
				return fmt.Errorf("%s: generation %d of %d shards", n.Name(), g, total)
			}
		}
		return placedIn(survivors[0], r.Generation, to, survivors...)
	})
	waitFor(t, 30*time.Second, "the old generation's sessions ended, the new one's all live", func() error {
		st := c.fake.Stats()
		if old := st.Generations[from]; old.OpenSessions != 0 || old.Live != 0 {
			return fmt.Errorf("generation of %d: %d sessions open, %d live", from, old.OpenSessions, old.Live)
		}
		if cur := st.Generations[to]; cur.Live != to {
			return fmt.Errorf("generation of %d: %d live", to, cur.Live)
		}
		return nil
	})
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
	// Moved, not started again: every shard of the new generation identified once,
	// and the one with a session resumed it on its next owner.
	if g := st.Generations[to]; g.Identifies != to {
		t.Errorf("the new generation identified %d times, want %d", g.Identifies, to)
	}
	if s := st.Generations[to].Shards[moved]; s.Resumes < 1 {
		t.Errorf("shard %d of the new generation: %d resumes, want its session resumed off %s", moved, s.Resumes, leaver.Name())
	}
	for _, e := range survivors[0].Status(context.Background()).Events {
		if e.Kind == event.NodeFailed && e.Subject == leaver.Name() {
			t.Errorf("%s was marked failed (%s): its shards should have been handed off", leaver.Name(), e.Cause)
		}
	}
	t.Logf("%d guild events, each delivered once; the new generation: %d identifies, %d resumes",
		len(evs), st.Generations[to].Identifies, st.Generations[to].Resumes)
}
