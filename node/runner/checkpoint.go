package runner

import (
	"context"
	"errors"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/event"
)

// writeReleases writes the releases of every generation, one command each.
func (r *Runner) writeReleases() {
	for _, g := range r.gens {
		r.writeGenerationReleases(g)
	}
}

func (r *Runner) writeGenerationReleases(g *generation) {
	if len(g.releases) == 0 {
		return
	}
	cmd := fsm.Released{Gen: g.gen, Node: r.cfg.Name, At: r.now().UnixNano()}
	for _, rel := range g.releases {
		cmd.Shards = append(cmd.Shards, rel)
	}
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	res, err := r.deps.Proposer.Write(ctx, cmd)
	if err != nil {
		r.log.Warn("cannot release shards yet; retrying", "count", len(cmd.Shards), "err", err)
		return
	}
	ids := make(event.Shards, 0, len(cmd.Shards))
	for _, rel := range cmd.Shards {
		ids = append(ids, rel.Shard)
		delete(g.releases, rel.Shard)
		delete(g.suspended, rel.Shard)
		g.released[rel.Shard] = rel.Epoch
	}
	r.log.Info("released shards", "shards", ids, "generation", g.gen, "applied", res.Applied, "stale", len(res.Stale))
	r.deps.Notify.Notify(event.Event{Kind: event.HandedOff, Shards: ids})
}

// writeCheckpoint writes the handled position of every shard that moved since the
// last checkpoint, one command per generation, while the lease holds.
func (r *Runner) writeCheckpoint() {
	if !r.lease.valid(r.now()) {
		return
	}
	for _, g := range r.gens {
		if !g.ending.Load() {
			r.writeGenerationCheckpoint(g)
		}
	}
}

func (r *Runner) writeGenerationCheckpoint(g *generation) {
	if len(g.running) == 0 {
		return
	}
	cmd := fsm.Checkpoint{Gen: g.gen, Node: r.cfg.Name, At: r.now().UnixNano()}
	r.mu.Lock()
	for id, epoch := range g.running {
		c := g.clusters[g.clusterOf[id]]
		if c == nil {
			continue
		}
		pos, ok := c.Handled(id)
		if !ok || !pos.Resumable() {
			continue
		}
		pos = g.trail(id, pos)
		if pos.ResumeURL == "" {
			pos.ResumeURL = g.checkpoint[id].ResumeURL
		}
		if g.checkpoint[id] == pos {
			continue
		}
		cmd.Entries = append(cmd.Entries, fsm.CheckpointEntry{Shard: id, Epoch: epoch, Resume: pos})
	}
	r.mu.Unlock()
	if len(cmd.Entries) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CheckpointInterval*2)
	defer cancel()
	if _, err := r.deps.Proposer.Write(ctx, cmd); err != nil {
		r.log.Warn("checkpoint failed", "shards", len(cmd.Entries), "err", err)
		return
	}
	for _, e := range cmd.Entries {
		g.checkpoint[e.Shard] = e.Resume
	}
}

// finalWriteTimeout bounds the write of the final positions: when the whole cluster
// stops at once, the quorum may already be gone, and the last checkpoint (at most a
// checkpoint interval old) is there to resume from.
const finalWriteTimeout = 5 * time.Second

// StopAll stops every shard with a resumable close and, when checkpoint is set,
// writes their final positions (for at most finalWriteTimeout): whoever runs them
// next resumes exactly there.
func (r *Runner) StopAll(ctx context.Context, checkpoint bool) error {
	done := make(chan error, 1)
	// The run goroutine owns the maps, so the work runs there.
	f := func() {
		r.halted = true
		var cmds []fsm.Checkpoint
		for _, g := range r.gens {
			cmd := fsm.Checkpoint{Gen: g.gen, Node: r.cfg.Name, At: r.now().UnixNano()}
			for id, epoch := range g.running {
				pos := r.stopShard(g, id)
				if pos.Resumable() {
					cmd.Entries = append(cmd.Entries, fsm.CheckpointEntry{Shard: id, Epoch: epoch, Resume: pos})
				}
				delete(g.running, id)
				delete(g.checkpoint, id)
			}
			if len(cmd.Entries) > 0 {
				cmds = append(cmds, cmd)
			}
		}
		if !checkpoint || len(cmds) == 0 {
			done <- nil
			return
		}
		wctx, cancel := context.WithTimeout(ctx, finalWriteTimeout)
		defer cancel()
		var errs []error
		for _, cmd := range cmds {
			if _, err := r.deps.Proposer.Write(wctx, cmd); err != nil {
				errs = append(errs, err)
			}
		}
		done <- errors.Join(errs...)
	}
	select {
	case r.reqs <- f:
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-done
}
