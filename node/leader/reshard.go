package leader

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/rpc"
)

// The leader's side of a reshard: starting one (asked through the API, or on its
// own when Discord's recommendation has grown past --reshard-auto-threshold or a
// shard was closed with 4011), learning which of its shards are warm, and cancelling
// it. Placing and failing over its shards, and the switch, are Plan's. Nothing of it
// lives only in memory: a new leader finds the reshard in the replicated state and
// carries it on.

// warmth is what the owners of a reshard's shards last said of them.
type warmth struct {
	gen    uint64
	shards map[int]uint64 // warm shard → the epoch of the assignment it runs under
}

// autoTries spaces the leader's own attempts to start a reshard that was refused
// (the budget, Discord unreachable): a refusal is logged, not retried every pass.
const autoTries = time.Minute

// autoEvery is the least time between two reshards the threshold starts.
const autoEvery = time.Hour

// StartReshard starts a reshard to shards, or with auto to Discord's recommended
// count, after checking that none runs, that the count changes and is in range, and
// that the session start budget covers an identify for each new shard on top of its
// reserve. why says who asked, for the event. A refusal wraps api.ErrRefused and
// gives the numbers.
func (l *Leader) StartReshard(ctx context.Context, shards int, auto bool, why string) (fsm.Reshard, error) {
	t := l.cur.Load()
	if t == nil {
		return fsm.Reshard{}, rpc.ErrNotLeader
	}
	f := l.deps.FSM
	cur := f.Config()
	if cur.TotalShards == 0 {
		return fsm.Reshard{}, fmt.Errorf("%w: the cluster has no shard count yet", api.ErrRefused)
	}
	if r, ok := f.Reshard(); ok {
		return fsm.Reshard{}, fmt.Errorf("%w: a reshard from %d to %d shards (generation %d) runs since %s: wait for its switch, or cancel it first",
			api.ErrRefused, cur.TotalShards, r.Total, r.Gen, time.Unix(0, r.StartedAt).Format(time.RFC3339))
	}
	if auto {
		gb, err := l.gatewayBot(ctx)
		if err != nil {
			return fsm.Reshard{}, fmt.Errorf("--shards auto needs Discord's recommendation (GET /gateway/bot): %w", err)
		}
		t.mu.Lock()
		t.recommended = gb.Shards
		t.mu.Unlock()
		shards = gb.Shards
	}
	t.mu.Lock()
	budget := t.budget
	t.mu.Unlock()
	if err := checkReshard(cur.TotalShards, shards, auto, budget); err != nil {
		return fsm.Reshard{}, err
	}
	r := fsm.Reshard{Gen: f.Generation() + 1, Total: shards, StartedAt: l.now().UnixNano()}
	if _, err := l.Apply(fsm.StartReshard{Gen: r.Gen, Total: r.Total, At: r.StartedAt}); err != nil {
		if errors.Is(err, fsm.ErrInvalid) {
			return fsm.Reshard{}, fmt.Errorf("%w: %v", api.ErrRefused, err)
		}
		return fsm.Reshard{}, err
	}
	l.log.Info("reshard started: placing the new generation beside the current one", "gen", r.Gen, "from", cur.TotalShards, "to", r.Total, "why", why)
	l.deps.Notify.Notify(event.Event{Kind: event.ReshardStarted, Gen: r.Gen,
		Cause: fmt.Sprintf("from %d to %d shards (%s)", cur.TotalShards, r.Total, why)})
	l.Poke()
	return r, nil
}

// checkReshard is StartReshard's rule for a count: it changes, is in range, and the
// budget covers one identify per new shard on top of the reserve that failovers
// keep. An unknown budget refuses too: the new shards would identify blind.
func checkReshard(cur, shards int, auto bool, b api.Budget) error {
	switch {
	case shards < 1 || shards > fsm.MaxShards:
		return fmt.Errorf("%w: %d shards is out of range: 1 to %d", api.ErrRefused, shards, fsm.MaxShards)
	case shards == cur && auto:
		return fmt.Errorf("%w: Discord recommends %d shards, which the cluster runs already", api.ErrRefused, shards)
	case shards == cur:
		return fmt.Errorf("%w: the cluster runs %d shards already", api.ErrRefused, shards)
	case !b.Known:
		why := "not fetched yet"
		if b.Note != "" {
			why = b.Note
		}
		return fmt.Errorf("%w: the session start budget is not known (%s), and a reshard to %d shards needs %d session starts: try again once the leader has read it from Discord",
			api.ErrRefused, why, shards, shards)
	case shards > b.Remaining-b.Reserve:
		return fmt.Errorf("%w: a reshard to %d shards needs %d session starts plus the reserve of %d; %d of %d are left until %s",
			api.ErrRefused, shards, shards, b.Reserve, b.Remaining, b.Total, b.ResetsAt.Format(time.RFC3339))
	}
	return nil
}

// CancelReshard drops the reshard that runs: its shards' sessions end, the current
// generation goes on delivering. A refusal (none runs) wraps api.ErrRefused.
func (l *Leader) CancelReshard(why string) (fsm.Reshard, error) {
	t := l.cur.Load()
	if t == nil {
		return fsm.Reshard{}, rpc.ErrNotLeader
	}
	r, ok := l.deps.FSM.Reshard()
	if !ok {
		return fsm.Reshard{}, fmt.Errorf("%w: no reshard runs", api.ErrRefused)
	}
	now := l.now()
	if _, err := l.Apply(fsm.CancelReshard{Gen: r.Gen, At: now.UnixNano()}); err != nil {
		if errors.Is(err, fsm.ErrInvalid) {
			return fsm.Reshard{}, fmt.Errorf("%w: %v", api.ErrRefused, err)
		}
		return fsm.Reshard{}, err
	}
	took := now.Sub(time.Unix(0, r.StartedAt)).Round(time.Millisecond)
	l.log.Info("reshard cancelled: the current generation goes on", "gen", r.Gen, "to", r.Total, "after", took, "why", why)
	l.deps.Notify.Notify(event.Event{Kind: event.ReshardCancelled, Gen: r.Gen, Duration: took,
		Cause: fmt.Sprintf("to %d shards; %s", r.Total, why)})
	t.mu.Lock()
	t.warm = warmth{}
	t.mu.Unlock()
	l.Poke()
	return r, nil
}

// noteShardingRequired records a node's report, with its lease renewal, of a shard
// of generation gen closed with 4011 (0: none any more). It says whether that is news.
func (t *term) noteShardingRequired(node string, gen uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen == 0 {
		delete(t.shardingRequired, node)
		return false
	}
	was := t.shardingRequired[node]
	t.shardingRequired[node] = gen
	return was != gen
}

// autoReshard starts a reshard on the leader's own: when a shard of the current
// generation was closed with 4011, to Discord's recommendation (twice the count if
// Discord does not recommend more: the shard cannot connect at all as it is); or when
// Discord's recommendation has grown to --reshard-auto-threshold times the current
// count, at most once per hour. A refused attempt is tried again after a minute.
func (l *Leader) autoReshard(ctx context.Context, t *term) {
	f := l.deps.FSM
	cur := f.Config().TotalShards
	if cur == 0 {
		return
	}
	if _, running := f.Reshard(); running {
		return
	}
	gen, now := f.Generation(), l.now()
	t.mu.Lock()
	var closed []string
	for node, g := range t.shardingRequired {
		switch {
		case genOf(g) == gen:
			closed = append(closed, node)
		case genOf(g) < gen:
			delete(t.shardingRequired, node) // of a generation gone since
		}
	}
	slices.Sort(closed)
	rec, tried, started := t.recommended, t.autoTried, t.autoStarted
	t.mu.Unlock()
	if now.Sub(tried) < autoTries {
		return
	}
	threshold := l.cfg.ReshardAutoThreshold
	var shards int
	var why string
	switch {
	case len(closed) > 0:
		t.mu.Lock()
		t.autoTried = now // before asking Discord, which may take its time
		t.mu.Unlock()
		gb, err := l.gatewayBot(ctx)
		if err == nil {
			rec = gb.Shards
		}
		shards = 2 * cur
		if rec > cur {
			shards = rec
		}
		why = fmt.Sprintf("automatic: Discord closed shards with 4011, sharding required, on %s; Discord recommends %d", strings.Join(closed, ", "), rec)
		if rec <= cur {
			why = fmt.Sprintf("automatic: Discord closed shards with 4011, sharding required, on %s, and recommends no more than the %d running: twice as many", strings.Join(closed, ", "), cur)
		}
	case threshold > 0 && rec > cur && float64(rec) >= threshold*float64(cur) && (started.IsZero() || now.Sub(started) >= autoEvery):
		shards = rec
		why = fmt.Sprintf("automatic: Discord recommends %d shards, at least %g times the %d running (--reshard-auto-threshold)", rec, threshold, cur)
	default:
		return
	}
	t.mu.Lock()
	t.autoTried = now
	t.mu.Unlock()
	if _, err := l.StartReshard(ctx, shards, false, why); err != nil {
		l.log.Warn("cannot start a reshard on the leader's own; trying again in a minute", "to", shards, "why", why, "err", err)
		return
	}
	t.mu.Lock()
	t.autoStarted = now
	t.mu.Unlock()
}

// warmPollTimeout bounds one owner's answer to the warm poll.
const warmPollTimeout = 2 * time.Second

// watchWarm asks, while a reshard runs and every shard of it is assigned, each
// owner of its shards which of them are warm, every ReshardPoll, and pokes the
// reconcile when that changed: the switch is Plan's, once all are. It runs for the
// term, and calls no one while no reshard runs.
func (l *Leader) watchWarm(ctx context.Context, t *term) {
	if l.deps.LocalShards == nil {
		return
	}
	every := l.cfg.ReshardPoll
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		w := l.pollWarm(ctx)
		t.mu.Lock()
		changed := w.gen != t.warm.gen || !maps.Equal(w.shards, t.warm.shards)
		t.warm = w
		t.mu.Unlock()
		if changed && len(w.shards) > 0 {
			l.Poke()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pollWarm asks the owners of the reshard's shards, in parallel, which are warm. A
// shard counts only under the assignment the state holds: warm on a node it has
// left since means nothing. An owner that does not answer has none warm this time.
func (l *Leader) pollWarm(ctx context.Context) warmth {
	f := l.deps.FSM
	r, ok := f.Reshard()
	if !ok {
		return warmth{}
	}
	asg := f.AssignmentsIn(r.Gen)
	owners := map[string]bool{}
	for _, a := range asg {
		if a.Phase != fsm.Assigned {
			return warmth{gen: r.Gen} // not all placed: nothing can switch yet
		}
		owners[a.Node] = true
	}
	if len(asg) < r.Total {
		return warmth{gen: r.Gen}
	}
	type answer struct {
		node   string
		shards []rpc.LocalShard
	}
	answers := make(chan answer, len(owners))
	var wg sync.WaitGroup
	for node := range owners {
		m, ok := f.Member(node)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, warmPollTimeout)
			defer cancel()
			shards, err := l.deps.LocalShards(cctx, m)
			if err != nil {
				l.log.Debug("warm poll: no answer", "member", node, "err", err)
				return
			}
			answers <- answer{node, shards}
		}()
	}
	wg.Wait()
	close(answers)
	w := warmth{gen: r.Gen, shards: map[int]uint64{}}
	for a := range answers {
		for _, s := range a.shards {
			id := s.Info.ShardID
			if s.Gen != r.Gen || !s.Warm || id < 0 || id >= len(asg) {
				continue
			}
			if cur := asg[id]; cur.Shard == id && cur.Node == a.node && cur.Epoch == s.Epoch {
				w.shards[id] = s.Epoch
			}
		}
	}
	return w
}
