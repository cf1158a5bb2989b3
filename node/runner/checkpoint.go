package runner

import (
	"context"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/event"
)

func (r *Runner) writeReleases() {
	if len(r.releases) == 0 {
		return
	}
	cmd := fsm.Released{Node: r.cfg.Name, At: r.now().UnixNano()}
	for _, rel := range r.releases {
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
		delete(r.releases, rel.Shard)
		delete(r.suspended, rel.Shard)
		r.released[rel.Shard] = rel.Epoch
	}
	r.log.Info("released shards", "shards", ids, "applied", res.Applied, "stale", len(res.Stale))
	r.deps.Notify.Notify(event.Event{Kind: event.HandedOff, Shards: ids})
}

// writeCheckpoint writes the handled position of every shard that moved since the
// last checkpoint, in one command, while the lease holds.
func (r *Runner) writeCheckpoint() {
	if !r.lease.valid(r.now()) || len(r.running) == 0 {
		return
	}
	cmd := fsm.Checkpoint{Node: r.cfg.Name, At: r.now().UnixNano()}
	r.mu.Lock()
	for id, epoch := range r.running {
		c := r.clusters[r.clusterOf[id]]
		if c == nil {
			continue
		}
		pos, ok := c.Handled(id)
		if !ok || !pos.Resumable() {
			continue
		}
		if pos.ResumeURL == "" {
			pos.ResumeURL = r.checkpoint[id].ResumeURL
		}
		if r.checkpoint[id] == pos {
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
		r.checkpoint[e.Shard] = e.Resume
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
		cmd := fsm.Checkpoint{Node: r.cfg.Name, At: r.now().UnixNano()}
		for id, epoch := range r.running {
			pos := r.stopShard(id)
			if pos.Resumable() {
				cmd.Entries = append(cmd.Entries, fsm.CheckpointEntry{Shard: id, Epoch: epoch, Resume: pos})
			}
			delete(r.running, id)
			delete(r.checkpoint, id)
		}
		if checkpoint && len(cmd.Entries) > 0 {
			wctx, cancel := context.WithTimeout(ctx, finalWriteTimeout)
			defer cancel()
			_, err := r.deps.Proposer.Write(wctx, cmd)
			done <- err
			return
		}
		done <- nil
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
