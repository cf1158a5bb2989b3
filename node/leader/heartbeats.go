package leader

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
)

// WatchHeartbeats gives the leader a crash verdict within a Raft heartbeat instead
// of a gossip suspicion timeout: when a heartbeat to a peer fails, the leader dials
// the peer's cluster port, and a refusal (the machine answers, nothing listens)
// means the process died and its websockets with it. A silent peer (SIGSTOP, a dead
// machine, a partition) refuses nothing and is left to gossip and the lease. It
// runs until ctx ends.
func (l *Leader) WatchHeartbeats(ctx context.Context) {
	r := l.deps.Raft
	ch := make(chan raft.Observation, 64)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.FailedHeartbeatObservation)
		return ok
	})
	r.RegisterObserver(obs)
	defer r.DeregisterObserver(obs)
	probed := make(map[raft.ServerID]time.Time)
	for {
		var o raft.Observation
		select {
		case <-ctx.Done():
			return
		case o = <-ch:
		}
		peer := o.Data.(raft.FailedHeartbeatObservation).PeerID
		t := l.cur.Load()
		// Raft backs off its heartbeats to a failing peer; one probe per backoff step
		// is plenty.
		if t == nil || l.now().Sub(probed[peer]) < l.cfg.ProbeEvery {
			continue
		}
		probed[peer] = l.now()
		m, ok := l.deps.FSM.Member(string(peer))
		if !ok || m.RaftAddr == "" || (m.State != fsm.Alive && m.State != fsm.Draining) {
			continue
		}
		probe := l.now()
		if l.deps.ProcessGone(m.RaftAddr) {
			t.mu.Lock()
			t.grants.Crashed[m.ID] = probe
			t.mu.Unlock()
			l.Poke()
		}
	}
}
