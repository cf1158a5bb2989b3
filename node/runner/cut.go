package runner

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/node/cutover"
	"github.com/discluster/discluster/node/rpc"
)

// endedCut is a generation's final cut here: its shards' trackers, stopped at the
// switch. The new generation's owners fetch it.
type endedCut struct {
	trackers map[int]*cutover.Tracker // by old shard
	at       time.Time
}

// keepCuts is how long an ended generation's cut is kept for the new generation's
// owners: they fetch it right after the switch; one that starts later (a failover)
// holds nothing back any more.
const keepCuts = 10 * time.Minute

// cutWait bounds how long a new generation's owner waits for a node's cut: a node
// that does not answer by then (down, cut off) is taken to have delivered nothing,
// so its guilds' held events are delivered whole (duplicates, never a loss).
const cutWait = 10 * time.Second

// cutShardsPerCall bounds the new shards one Cut call asks for. A cut holds every
// delivery of the last half window for their guilds (a busy bot's shard: a few
// thousand), so one call for all of a node's new shards could pass the RPC's reply
// limit; a call per 128 stays far below it.
const cutShardsPerCall = 128

// Cut answers a new generation's owner: the cut here of generation gen, which the
// switch ended, for the guilds of shards of a generation of total shards. Final is
// false while gen still delivers here (this node has not applied the switch yet).
func (r *Runner) Cut(gen uint64, total int, shards []int) (keys map[int][]rpc.CutKey, final bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for g, c := range r.cuts {
		if r.now().Sub(c.at) > keepCuts {
			delete(r.cuts, g)
		}
	}
	c, ok := r.cuts[gen]
	if !ok {
		// Still running here: not final yet. Never ran here, or ended without a cut
		// (a restart): nothing delivered here that a cut could name.
		_, running := r.gens[gen]
		return nil, !running
	}
	keys = make(map[int][]rpc.CutKey, len(shards))
	for old, t := range c.trackers {
		for _, id := range shards {
			cut, err := t.Cut(cutover.Wanted(old, id, total))
			if err != nil {
				continue // not stopped: cannot happen for an ended generation
			}
			for _, k := range cut {
				keys[id] = append(keys[id], rpc.CutKey{Guild: k.Guild, Hash: k.Hash, Age: k.Age, Earlier: k.Earlier})
			}
		}
	}
	return keys, true
}

// release runs at the switch, for a generation that held its events back: it fetches
// the cut of the generation before it from every member, for the shards held here,
// and has each cluster hand on what its shards held past it.
func (r *Runner) release(g *generation) {
	r.mu.Lock()
	held := make(map[int]*heldShard, len(g.hold))
	byCluster := map[int][]int{}
	for id, h := range g.hold {
		held[id] = h
		byCluster[g.clusterOf[id]] = append(byCluster[g.clusterOf[id]], id)
	}
	r.mu.Unlock()
	if len(held) == 0 {
		return
	}
	ids := make([]int, 0, len(held))
	for id := range held {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	cuts := r.fetchCuts(g.gen-1, g.total, ids)
	for id, h := range held {
		h.mu.Lock()
		h.cut = cuts[id]
		if h.cut == nil {
			h.cut = []cutover.CutEntry{} // known: nothing delivered of its guilds
		}
		h.mu.Unlock()
	}
	// Each cluster releases its shards on its handler goroutine, then delivers the
	// events of guilds that waited for their cut event once the wait is over: Due
	// on a tick until every Holdback is done (Window/2 after the switch at most; a
	// guild's next event usually ends its wait first, through Add).
	release := r.onHandlers(g, byCluster, held, r.releaseShard)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for deadline := r.now().Add(cutoverConfig.Window); release > 0 && r.now().Before(deadline); {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		release = r.onHandlers(g, byCluster, held, r.dueShard)
	}
}

// onHandlers runs do for each shard still held, on its cluster's handler goroutine,
// and returns how many are still held afterwards.
func (r *Runner) onHandlers(g *generation, byCluster map[int][]int, held map[int]*heldShard, do func(g *generation, cluster, id int, h *heldShard)) int {
	left := 0
	for cid, ids := range byCluster {
		r.mu.Lock()
		c := g.clusters[cid]
		r.mu.Unlock()
		if c == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
		err := c.Do(ctx, func() {
			for _, id := range ids {
				if !r.released(g, id, held[id]) {
					do(g, cid, id, held[id])
				}
			}
		})
		cancel()
		if err != nil && r.ctx.Err() == nil {
			// The cluster is busy (a slow sink): its handler releases each shard with
			// its next event.
			r.log.Warn("reshard: held events not handed on yet; they go with the shards' next events", "cluster", cid, "err", err)
		}
		for _, id := range ids {
			if !r.released(g, id, held[id]) {
				left++
			}
		}
	}
	return left
}

// released reports that a shard no longer holds events back: its release is done
// (or it stopped here).
func (r *Runner) released(g *generation, id int, h *heldShard) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return g.hold[id] != h
}

// fetchCuts asks every member (this node too) for its cut of generation gen for
// shards, waiting for each at most cutWait, and merges them.
func (r *Runner) fetchCuts(gen uint64, total int, shards []int) map[int][]cutover.CutEntry {
	var mu sync.Mutex
	out := map[int][]cutover.CutEntry{}
	add := func(keys map[int][]rpc.CutKey) {
		mu.Lock()
		defer mu.Unlock()
		for id, ks := range keys {
			for _, k := range ks {
				out[id] = append(out[id], cutover.CutEntry{Key: cutover.Key{Guild: k.Guild, Hash: k.Hash}, Age: k.Age, Earlier: k.Earlier})
			}
		}
	}
	var wg sync.WaitGroup
	for _, m := range r.deps.FSM.Members() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.ctx, cutWait)
			defer cancel()
			for part := range slices.Chunk(shards, cutShardsPerCall) {
				bo := backoff.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond}
				for {
					var keys map[int][]rpc.CutKey
					var final bool
					var err error
					if m.ID == r.cfg.Name {
						keys, final = r.Cut(gen, total, part)
					} else if r.deps.Cuts != nil {
						keys, final, err = r.deps.Cuts(ctx, m.RaftAddr, rpc.CutArgs{Gen: gen, Total: total, Shards: part})
					} else {
						final = true
					}
					if err == nil && final {
						add(keys)
						break
					}
					if !backoff.Sleep(ctx, bo.Next()) {
						r.log.Warn("reshard: no cut from a member in time; its guilds' held events are delivered whole (duplicates possible)",
							"member", m.ID, "err", fmt.Sprint(err))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	return out
}
