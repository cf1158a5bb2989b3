package membership

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/serf/serf"
)

// Bootstrap promises keep two groups of agents from bootstrapping two Raft clusters
// that share a member. With more agents starting than --bootstrap-expect (5 started
// with expect 3), agents see each other in different orders: one may see b1, b2, b3
// and another b1, b4, b5, and both would bootstrap, with b1 taking Raft messages from
// two leaders. So only the lowest-named agent of the first N bootstraps, and only
// once each of the other N-1 has promised it, and not another bootstrapper, its
// vote. Any two sets of N drawn from fewer than 2N agents overlap, and the agent in
// both promises only one of them.

// promiseTTL is how long a promise holds a node for a bootstrapper that went quiet.
// The bootstrapper's Raft reaches the promised nodes within milliseconds; once they
// hold Raft state they refuse every other bootstrapper anyway.
const promiseTTL = 30 * time.Second

type promise struct {
	mu    sync.Mutex
	to    string
	until time.Time
	retry time.Time // a bootstrapper that failed to gather promises waits until then
}

// take promises this node to from, unless it promised another in the last promiseTTL.
func (p *promise) take(from string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.to != "" && p.to != from && time.Now().Before(p.until) {
		return fmt.Errorf("promised to %s's bootstrap", p.to)
	}
	p.to, p.until = from, time.Now().Add(promiseTTL)
	return nil
}

func (p *promise) release(from string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.to == from {
		p.to = ""
	}
}

// Promise answers a bootstrapper's request for this node's vote, or (release) frees
// the promise.
func (g *Gossip) Promise(from string, release bool) error {
	if release {
		g.promise.release(from)
		return nil
	}
	if g.raft.HasState() {
		return fmt.Errorf("%s already belongs to a cluster", g.cfg.Name)
	}
	return g.promise.take(from)
}

// maybeBootstrap bootstraps Raft the way Consul's bootstrap-expect does: once this
// node sees --bootstrap-expect agents that all expect the same number and none of
// which belongs to a cluster, the first of the first N by name bootstraps them all,
// once the others promised it their votes. It reports true once there is nothing
// left to decide.
func (g *Gossip) maybeBootstrap() bool {
	if g.raft.HasState() {
		return true
	}
	select {
	case <-g.joined:
	default:
		return false // a node told to join bootstraps nothing before it has joined
	}
	expect := g.cfg.BootstrapExpect
	var cands []serf.Member
	for _, m := range g.serf.Members() {
		if m.Status != serf.StatusAlive || m.Tags[tagRPC] == "" {
			continue
		}
		if m.Tags[tagCluster] != "" {
			return true // a cluster exists: its leader adds this node
		}
		if e, _ := strconv.Atoi(m.Tags[tagExpect]); e != expect {
			g.log.Error("bootstrap: agents disagree on --bootstrap-expect; not bootstrapping", "member", m.Name, "its", e, "mine", expect)
			return false
		}
		cands = append(cands, m)
	}
	if len(cands) < expect {
		return false
	}
	slices.SortFunc(cands, func(a, b serf.Member) int { return strings.Compare(a.Name, b.Name) })
	cands = cands[:expect]
	// The lowest name bootstraps, the others wait for its Raft (or, if it fails, for
	// their own turn).
	if cands[0].Name != g.cfg.Name || !g.gatherPromises(cands) {
		return false
	}
	var voters []Voter
	h := sha256.New()
	for _, m := range cands {
		voters = append(voters, Voter{Name: m.Name, Addr: m.Tags[tagRPC]})
		fmt.Fprintf(h, "%s\x00%s\x00", m.Name, m.Tags[tagNonce])
	}
	id := hex.EncodeToString(h.Sum(nil))[:16]
	if err := g.setClusterID(id); err != nil {
		g.log.Error("bootstrap", "err", err)
		return false
	}
	if err := g.raft.Bootstrap(voters); err != nil {
		g.log.Error("bootstrap", "err", err)
		return false
	}
	names := make([]string, len(cands))
	for i, m := range cands {
		names[i] = m.Name
	}
	g.log.Info("bootstrapped raft", "cluster", id, "voters", strings.Join(names, ","))
	return true
}

// gatherPromises asks the other bootstrap candidates for their promise. On any
// refusal it frees those it got, and waits a little before trying again, so that
// racing bootstrappers do not keep blocking each other.
func (g *Gossip) gatherPromises(cands []serf.Member) bool {
	p := &g.promise
	p.mu.Lock()
	wait := time.Now().Before(p.retry)
	p.mu.Unlock()
	if wait {
		return false
	}
	if err := p.take(g.cfg.Name); err != nil {
		return false
	}
	var got []serf.Member
	var refusal error
	for _, m := range cands {
		if m.Name == g.cfg.Name {
			continue
		}
		ctx, cancel := context.WithTimeout(g.ctx, 2*time.Second)
		err := g.promiser.AskPromise(ctx, m.Tags[tagRPC], false)
		cancel()
		if err != nil {
			refusal = fmt.Errorf("%s: %w", m.Name, err)
			break
		}
		got = append(got, m)
	}
	if refusal == nil {
		return true
	}
	g.log.Info("bootstrap: not every candidate promised its vote yet; retrying", "why", refusal)
	for _, m := range got {
		ctx, cancel := context.WithTimeout(g.ctx, time.Second)
		_ = g.promiser.AskPromise(ctx, m.Tags[tagRPC], true)
		cancel()
	}
	p.release(g.cfg.Name)
	p.mu.Lock()
	p.retry = time.Now().Add(time.Second + rand.N(time.Second))
	p.mu.Unlock()
	return false
}
