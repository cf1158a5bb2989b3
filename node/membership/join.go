package membership

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/discluster/discluster/internal/backoff"
)

// joinLoop joins the --join addresses, retrying with backoff until one answers.
func (g *Gossip) joinLoop() {
	cfg := g.cfg
	if len(cfg.Join) == 0 {
		close(g.joined)
		return
	}
	bo := backoff.Backoff{Min: 200 * time.Millisecond, Max: cfg.Timing.JoinBackoffMax}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		k, err := g.serf.Join(cfg.Join, true)
		if err == nil && k > 0 {
			g.log.Info("joined", "via", strings.Join(cfg.Join, ","), "contacted", k)
			close(g.joined)
			return
		}
		if c := g.Conflict(); c != nil {
			g.sendFatal(c)
			return
		}
		if t := cfg.JoinTimeout; t > 0 && time.Since(start) > t {
			g.sendFatal(fmt.Errorf("could not join any of %s within --join-timeout %v (last error: %v): check the addresses (gossip ports, default %d) and that an agent runs there",
				strings.Join(cfg.Join, ", "), t, err, cfg.DefaultPort))
			return
		}
		wait := bo.Next()
		g.log.Warn("cannot join yet; retrying", "join", strings.Join(cfg.Join, ","), "attempt", attempt, "in", wait, "err", err)
		if !backoff.Sleep(g.ctx, wait) {
			return
		}
	}
}

func (g *Gossip) sendFatal(err error) {
	select {
	case g.fatal <- err:
	default:
	}
}

// ErrOtherCluster is the error of a join that would merge two clusters.
var ErrOtherCluster = errors.New("another discluster cluster")

// mergeGuard refuses to merge gossip pools of two different Raft clusters: two
// clusters that meet would both assign every shard.
type mergeGuard struct{ g *Gossip }

func (mg *mergeGuard) NotifyMerge(members []*serf.Member) error {
	g := mg.g
	mine := g.ClusterID()
	for _, m := range members {
		theirs := m.Tags[tagCluster]
		if m.Name == g.cfg.Name || theirs == "" || mine == "" || theirs == mine {
			continue
		}
		err := fmt.Errorf("%w: node %s belongs to cluster %s, this node (%s, data dir %s) to cluster %s. "+
			"Two clusters never merge: each has its own Raft log and would run every shard. Join a member of cluster %s, "+
			"or start this node with an empty --data-dir to join afresh",
			ErrOtherCluster, m.Name, theirs, g.cfg.Name, g.cfg.DataDir, mine, mine)
		if g.conflict.CompareAndSwap(nil, err) {
			g.log.Error("refusing to merge with another cluster", "err", err)
		}
		return err
	}
	return nil
}
