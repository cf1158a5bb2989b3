package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/shard"
)

// Send writes a gateway command on shard's connection here, if this node runs it
// under epoch (or a later one) and holds its lease. Its refusals are the API's:
// a shard that does not run here, or not safely, is api.ErrOwnerMoving; one still
// connecting api.ErrNotReady; a full send limit an *api.RetryError.
func (r *Runner) Send(ctx context.Context, shardID int, epoch uint64, op int, d json.RawMessage) (err error) {
	gen := r.deps.FSM.Generation()
	r.mu.Lock()
	var cid int
	var runEpoch uint64
	var c *shard.Cluster
	g, ok := r.gens[gen]
	if ok {
		cid, ok = g.clusterOf[shardID]
		runEpoch, c = g.epochOf[shardID], g.clusters[cid]
	}
	r.mu.Unlock()
	if !ok || c == nil || runEpoch < epoch {
		return fmt.Errorf("%w: shard %d does not run on %s at epoch %d", api.ErrOwnerMoving, shardID, r.cfg.Name, epoch)
	}
	// The lease and the assignment, as before a login: a node that may not log in
	// may not speak for the shard either.
	if err = r.MayLogin(gen, shardID, runEpoch); err != nil {
		return fmt.Errorf("%w: %v", api.ErrOwnerMoving, err)
	}
	if op == opRequestGuildMembers {
		if guild, all := allMembersGuild(d); all {
			now := r.now()
			if wait := r.memberReqs.reserve(guild, now); wait > 0 {
				return &api.RetryError{Err: fmt.Errorf("%w: all members of guild %d were requested less than %v ago (Discord's limit)", api.ErrRateLimited, guild, allMembersWindow), After: wait}
			}
			defer func() {
				if err != nil {
					r.memberReqs.release(guild, now)
				}
			}()
		}
	}
	err = c.Send(ctx, shardID, op, d)
	var limited *shard.RateLimitedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &limited):
		return &api.RetryError{Err: fmt.Errorf("%w: shard %d", api.ErrRateLimited, shardID), After: limited.RetryAfter}
	case errors.Is(err, shard.ErrNotConnected):
		return &api.RetryError{Err: fmt.Errorf("%w: shard %d is %s", api.ErrNotReady, shardID, r.stateOf(c, shardID)), After: time.Second}
	case errors.Is(err, shard.ErrPayloadTooLarge):
		return fmt.Errorf("%w: %v", api.ErrPayloadTooLarge, err)
	case errors.Is(err, shard.ErrManagedOpcode):
		return fmt.Errorf("%w: %v", api.ErrBadCommand, err)
	case errors.Is(err, shard.ErrUnknownShard):
		return fmt.Errorf("%w: %v", api.ErrOwnerMoving, err)
	}
	return err
}

// opRequestGuildMembers is op 8, whose requests for all members Discord limits.
const opRequestGuildMembers = 8

// stateOf is a shard's state in c, for a refusal's text.
func (r *Runner) stateOf(c *shard.Cluster, shardID int) string {
	for _, in := range c.Info() {
		if in.ShardID == shardID {
			return string(in.State)
		}
	}
	return "stopped"
}
