package node

import (
	"context"
	"fmt"
	"math/rand/v2"
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

// PromiseArgs asks a node to wait for From's bootstrap, or (Release) frees it.
type PromiseArgs struct {
	From    string
	Release bool
}

// PromiseReply is empty: an error is a refusal.
type PromiseReply struct{}

type bootstrapPromise struct {
	mu    sync.Mutex
	to    string
	until time.Time
	retry time.Time // a bootstrapper that failed to gather promises waits until then
}

// take promises this node to from, unless it promised another in the last promiseTTL.
func (p *bootstrapPromise) take(from string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.to != "" && p.to != from && time.Now().Before(p.until) {
		return fmt.Errorf("promised to %s's bootstrap", p.to)
	}
	p.to, p.until = from, time.Now().Add(promiseTTL)
	return nil
}

func (p *bootstrapPromise) release(from string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.to == from {
		p.to = ""
	}
}

func (s *rpcService) BootstrapPromise(args *PromiseArgs, reply *PromiseReply) error {
	n := s.n
	if args.Release {
		n.promise.release(args.From)
		return nil
	}
	if n.hasRaftState() {
		return fmt.Errorf("%s already belongs to a cluster", n.cfg.Name)
	}
	return n.promise.take(args.From)
}

// gatherPromises asks the other bootstrap candidates for their promise. On any
// refusal it frees those it got, and waits a little before trying again, so that
// racing bootstrappers do not keep blocking each other.
func (n *Node) gatherPromises(cands []serf.Member) bool {
	p := &n.promise
	p.mu.Lock()
	wait := time.Now().Before(p.retry)
	p.mu.Unlock()
	if wait {
		return false
	}
	if err := p.take(n.cfg.Name); err != nil {
		return false
	}
	var got []serf.Member
	var refusal error
	for _, m := range cands {
		if m.Name == n.cfg.Name {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		err := n.peers.call(ctx, m.Tags[tagRPC], "BootstrapPromise", &PromiseArgs{From: n.cfg.Name}, &PromiseReply{})
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
	n.log.Info("bootstrap: not every candidate promised its vote yet; retrying", "why", refusal)
	for _, m := range got {
		ctx, cancel := context.WithTimeout(n.ctx, time.Second)
		_ = n.peers.call(ctx, m.Tags[tagRPC], "BootstrapPromise", &PromiseArgs{From: n.cfg.Name, Release: true}, &PromiseReply{})
		cancel()
	}
	p.release(n.cfg.Name)
	p.mu.Lock()
	p.retry = time.Now().Add(time.Second + rand.N(time.Second))
	p.mu.Unlock()
	return false
}
