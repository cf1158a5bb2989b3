package runner

import "time"

// Observer is told, as they happen, what the runner sees that cannot be read back
// later: the metrics room implements it. Its methods are called from shards'
// goroutines and must not block.
type Observer interface {
	// HeartbeatLatency is the round trip of one acknowledged heartbeat.
	HeartbeatLatency(rtt time.Duration)
	// IdentifyWaited is how long a shard waited for the leader's identify grant,
	// from its first ask to the grant, retries included.
	IdentifyWaited(d time.Duration)
	// HeldReleased is one shard of generation gen done with its release at a
	// reshard's switch: the held events it delivered then (the events the switch
	// delayed), those it dropped as delivered by the old generation, and the longest
	// any delivered one had been held since it arrived.
	HeldReleased(gen uint64, delivered, dropped int, longest time.Duration)
}

// latencyObserver is the shards' heartbeat hook, nil without an observer.
func (r *Runner) latencyObserver() func(time.Duration) {
	if r.cfg.Observer == nil {
		return nil
	}
	return r.cfg.Observer.HeartbeatLatency
}

func (r *Runner) identifyWaited(d time.Duration) {
	if r.cfg.Observer != nil {
		r.cfg.Observer.IdentifyWaited(d)
	}
}

// Backlog is how many events this node's shards received that the sink has not
// been handed yet, over all its clusters' queues.
func (r *Runner) Backlog() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, g := range r.gens {
		for _, c := range g.clusters {
			n += c.Queued()
		}
	}
	return n
}

func (r *Runner) heldReleased(gen uint64, delivered, dropped int, longest time.Duration) {
	if r.cfg.Observer != nil {
		r.cfg.Observer.HeldReleased(gen, delivered, dropped, longest)
	}
}
