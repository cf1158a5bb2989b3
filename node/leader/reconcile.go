package leader

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/shard"
)

// reconcile is one full pass: the Raft configuration, the shard configuration, then
// the plan (members, failures, placement), written one command at a time. A step
// that fails is retried on the next pass.
func (l *Leader) reconcile(ctx context.Context, t *term) {
	if ctx.Err() != nil {
		return
	}
	members := l.deps.Members.Members()
	l.reconcileRaft(t, members)
	if err := l.ensureConfig(ctx, t); err != nil {
		t.mu.Lock()
		if t.configErr != err.Error() {
			l.log.Error("cannot set the shard configuration", "err", err)
		}
		t.configErr = err.Error()
		t.mu.Unlock()
		return
	}
	f := l.deps.FSM
	inRaft := l.inRaft()
	t.mu.Lock()
	in := Input{
		Now: l.now(), Self: l.cfg.Name, Lease: l.deps.Lease(), Established: t.established, MaxMoves: l.cfg.MaxMoves,
		TotalShards: f.Config().TotalShards, Members: f.Members(), Drained: f.Drained(), Gen: f.Generation(),
		Assignments: f.Assignments(), Gossip: members, InRaft: inRaft, Grants: t.grants.clone(),
	}
	if r, ok := f.Reshard(); ok {
		in.Reshard, in.ReshardAssignments = &r, f.AssignmentsIn(r.Gen)
		if t.warm.gen == r.Gen {
			in.Warm = maps.Clone(t.warm.shards)
		}
	}
	t.mu.Unlock()
	d, err := Plan(in)
	if err != nil {
		l.log.Error("cannot place shards", "err", err)
		return
	}
	t.mu.Lock()
	for _, id := range d.TakenCrashed {
		// A verdict newer than the plan's input is not the one the plan used up.
		if in.Grants.Crashed[id] == t.grants.Crashed[id] {
			delete(t.grants.Crashed, id)
		}
	}
	t.mu.Unlock()
	for _, w := range d.Writes {
		if !l.write(t, w) {
			return
		}
	}
	l.autoReshard(ctx, t)
}

// write makes one write of a plan and what follows from it; false stops the pass,
// whose later writes were planned on this one.
func (l *Leader) write(t *term, w Write) bool {
	res, err := l.Apply(w.Cmd)
	if err != nil {
		l.log.Warn("cannot write the leader's decision; retrying on the next pass", "cmd", fmt.Sprintf("%T", w.Cmd), "err", err)
		return false
	}
	now := l.now()
	if w.Failed != "" {
		t.mu.Lock()
		t.grants.FailedAt[w.Failed] = now
		delete(t.grants.AskedWhileFailed, w.Failed)
		delete(t.grants.Crashed, w.Failed)
		t.mu.Unlock()
		l.probeFailed(t, w.Failed)
	}
	if w.Back != "" {
		t.mu.Lock()
		delete(t.grants.FailedAt, w.Back)
		delete(t.grants.Refused, w.Back)
		delete(t.grants.AskedWhileFailed, w.Back)
		t.grants.LastRenew[w.Back] = now
		t.mu.Unlock()
	}
	if w.Log != "" {
		l.log.Log(context.Background(), w.Level, w.Log, append(w.Attrs, "applied", res.Applied)...)
	}
	if !w.IfChanged || res.Applied > 0 {
		for _, e := range w.Events {
			l.deps.Notify.Notify(e)
		}
	}
	return true
}

// probeFailed dials a node just marked failed: when its port refuses, its process is
// gone and its shards need not wait out its lease.
func (l *Leader) probeFailed(t *term, id string) {
	m, ok := l.deps.FSM.Member(id)
	if !ok || m.RaftAddr == "" {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if l.deps.ProcessGone(m.RaftAddr) {
			t.mu.Lock()
			t.grants.Refused[id] = true
			t.mu.Unlock()
			l.log.Info("failed node's cluster port refuses connections: its process is gone, no lease wait", "member", id)
			l.Poke()
		}
	}()
}

// ensureConfig writes the shard configuration once: from the flags, or from Discord.
func (l *Leader) ensureConfig(ctx context.Context, t *term) error {
	cur := l.deps.FSM.Config()
	if cur.TotalShards != 0 {
		if l.cfg.Shards != 0 && l.cfg.Shards != cur.TotalShards {
			t.mu.Lock()
			if t.configErr == "" {
				l.log.Warn("ignoring --shards: the cluster already runs another count (`discluster reshard --shards N` changes it)",
					"flag", l.cfg.Shards, "cluster", cur.TotalShards)
				t.configErr = "shards mismatch"
			}
			t.mu.Unlock()
		}
		l.ensureGate(t, cur)
		return nil
	}
	c := fsm.Config{
		TotalShards: l.cfg.Shards, MaxConcurrency: l.cfg.MaxConcurrency, ShardsPerCluster: l.cfg.ShardsPerCluster,
		IdentifyWindow: l.cfg.IdentifyWindow, Lease: l.cfg.Lease, CheckpointInterval: l.cfg.CheckpointInterval,
	}
	if c.TotalShards == 0 || c.MaxConcurrency == 0 {
		gb, err := l.gatewayBot(ctx)
		switch {
		case err != nil && c.TotalShards == 0:
			return fmt.Errorf("--shards auto needs GET /gateway/bot: %w", err)
		case err != nil:
			l.log.Warn("cannot ask Discord for max_concurrency; using 1", "err", err)
			c.MaxConcurrency = 1
		default:
			if c.TotalShards == 0 {
				c.TotalShards = gb.Shards
			}
			if c.MaxConcurrency == 0 {
				c.MaxConcurrency = gb.SessionStartLimit.MaxConcurrency
			}
		}
	}
	if _, err := l.Apply(fsm.SetConfig{Config: c}); err != nil {
		return err
	}
	l.log.Info("shard configuration set", "shards", c.TotalShards, "max_concurrency", c.MaxConcurrency,
		"identify_window", c.IdentifyWindow)
	l.ensureGate(t, c)
	return nil
}

// ensureGate makes the cluster-wide identify gate once the configuration is known. A
// new leader's gate holds its first grants for one window and the arrival margin: it
// cannot know when the previous leader last granted, only that it granted nothing
// after this leader's election (grants are confirmed with VerifyLeader), and a shard
// drops a grant that reaches it after it heard of the new leader.
func (l *Leader) ensureGate(t *term, c fsm.Config) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gate != nil {
		return
	}
	g, err := shard.NewLocalGate(c.MaxConcurrency, c.IdentifyWindow)
	if err != nil {
		l.log.Error("identify gate", "err", err)
		return
	}
	g.HoldUntil(t.established.Add(c.IdentifyWindow + shard.ArrivalMargin(c.IdentifyWindow)))
	t.gate = g
}

func (l *Leader) gatewayBot(ctx context.Context) (shard.GatewayBot, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return l.deps.GatewayBot(ctx)
}
