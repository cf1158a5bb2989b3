package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/node/rpc"
	"github.com/discluster/discluster/shard"
)

// maxGrantAge is the oldest grant a shard still uses: half of shard.GrantDeadline, the
// rest is slack for writing the IDENTIFY.
const maxGrantAge = shard.GrantDeadline / 2

// MayLogin is the last check before a shard of this node writes IDENTIFY or RESUME:
// the node holds its lease and its state machine still gives it the shard of
// generation gen (0: the current one) at epoch.
// A lease holds only while this node's state has caught up with the leader's at the
// last renewal, and a leader moves a shard off a node only after revoking it (which
// the node sees) or after that node's lease ran out; so a shard that passes here is
// not running anywhere else.
func (r *Runner) MayLogin(gen uint64, shardID int, epoch uint64) error {
	if !r.lease.valid(r.now()) {
		return fmt.Errorf("no lease: %s", r.lease.status(r.now()).Reason)
	}
	a, ok := r.deps.FSM.AssignmentIn(gen, shardID)
	switch {
	case !ok || a.Node != r.cfg.Name || a.Epoch != epoch:
		return fmt.Errorf("%w: shard %d moved (now %q at epoch %d, ran here at %d)", rpc.ErrNotOwner, shardID, a.Node, a.Epoch, epoch)
	case a.Phase != fsm.Assigned:
		return fmt.Errorf("%w: shard %d is being handed off", rpc.ErrNotOwner, shardID)
	}
	return nil
}

// identifyClient asks the leader for each identify: one per bucket per window across
// the whole cluster, within the daily session start budget. It reports each
// IDENTIFY written, so that the leader times the bucket's next grant from the write.
type identifyClient struct {
	r     *Runner
	gen   uint64 // the shard's generation
	epoch uint64 // the assignment the shard runs under: the leader grants only to it
}

var _ shard.SendReporter = (*identifyClient)(nil)

// IdentifySent implements shard.SendReporter without holding up the shard: the
// report only makes the leader's next grant in the bucket exact rather than
// conservative.
func (g *identifyClient) IdentifySent(shardID int) {
	r := g.r
	if r.ctx.Err() != nil {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.deps.Leader.IdentifySent(r.ctx, shardID); err != nil {
			r.log.Debug("identify report not delivered; the leader's bucket waits it out", "shard", shardID, "err", err)
		}
	}()
}

// Wait implements shard.Gate: it returns once the leader granted this shard's turn.
func (g *identifyClient) Wait(ctx context.Context, shardID int) error {
	r := g.r
	bo := backoff.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	began := r.now()
	for {
		err := r.MayLogin(g.gen, shardID, g.epoch)
		if err == nil { // else asking would be refused; the supervisor stops the shard soon
			asked := r.now()
			var leader string
			var waited time.Duration
			leader, waited, err = r.deps.Leader.Identify(ctx, g.gen, shardID, g.epoch)
			// The grant is at most this old: the round trip less the wait at the
			// leader. The leader times the bucket's next grant from this one if no
			// report comes within shard.GrantDeadline; an IDENTIFY written later than
			// that could meet the next one inside the window, so a grant that took too
			// long to get here (a starved process) is dropped rather than used.
			if age := r.now().Sub(asked) - waited; err == nil && age > maxGrantAge {
				err = fmt.Errorf("grant %v old when it arrived (a busy machine?); asking again", age.Round(time.Millisecond))
			}
			// A grant counts only while the leader that gave it still leads. One that
			// reached a starved process after a new leader took over was timed against
			// buckets the new leader knows nothing of; the new leader holds its first
			// grants long enough for prompt ones, not for late ones.
			if now := r.deps.LeaderAddr(); err == nil && now != leader {
				err = fmt.Errorf("%w: leadership moved from %s while the grant was on its way", rpc.ErrNotLeader, leader)
			}
		}
		if err == nil {
			r.identifyWaited(r.now().Sub(began))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := bo.Next()
		if errors.Is(err, rpc.ErrBudgetLow) {
			wait = 30 * time.Second
		}
		if n := bo.Attempt(); n%20 == 1 {
			r.log.Warn("identify not granted yet", "shard", shardID, "err", err, "retry_in", wait)
		}
		if !backoff.Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}
