package node

import (
	"context"
	"time"

	"github.com/discluster/discluster/node/api"
)

// watchInterval is how often a watcher's view is compared with the cluster: a
// shard's state lives on its owner, so a change shows within one interval.
const watchInterval = time.Second

// watchMinGap spaces a watcher's passes (each asks every member for its shards).
const watchMinGap = 250 * time.Millisecond

// Watch implements api.Backend: a snapshot of the cluster's status, then its changes
// each watchInterval, and at once when the replicated state changes.
func (b backend) Watch(ctx context.Context, emit api.Emit) error {
	n := b.n
	st := n.status(ctx, false)
	if err := emit(api.StreamSnapshot, st); err != nil {
		return err
	}
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	for {
		changed := make(chan struct{})
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			if _, err := n.fsm.WaitChange(wctx, st.Applied); err == nil {
				close(changed)
			}
		}()
		select {
		case <-ctx.Done():
			cancel()
			return ctx.Err()
		case <-tick.C:
		case <-changed:
		}
		cancel()
		cur := n.status(ctx, false)
		if err := api.Diff(st, cur, emit); err != nil {
			return err
		}
		if err := emit("", nil); err != nil {
			return err
		}
		st = cur
		// Checkpoints change the replicated state every second on every node: one
		// pass per watchMinGap at most, however busy the cluster.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(watchMinGap):
		}
	}
}
