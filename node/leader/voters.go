package leader

import (
	"time"

	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/membership"
)

// reconcileRaft adds alive members to the Raft configuration (voters up to --voters,
// then non-voters), removes members that left or were reaped, and promotes a
// non-voter when a voter is gone. Failed members stay: removing them would shrink
// the quorum on a guess.
func (l *Leader) reconcileRaft(t *term, members []membership.Member) {
	r := l.deps.Raft
	fut := r.GetConfiguration()
	if err := fut.Error(); err != nil {
		return
	}
	servers := fut.Configuration().Servers
	inRaft := make(map[raft.ServerID]raft.Server, len(servers))
	voters := 0
	for _, s := range servers {
		inRaft[s.ID] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	status := make(map[string]membership.Status, len(members))
	for _, m := range members {
		status[m.Name] = m.Status
	}
	self := raft.ServerID(l.cfg.Name)
	for _, m := range members {
		id, addr := raft.ServerID(m.Name), raft.ServerAddress(m.RPCAddr)
		s, ok := inRaft[id]
		switch {
		case m.Status == membership.StatusAlive && !ok:
			// A voter this leader cannot reach would count in the quorum and never
			// vote: a stranger in the gossip pool (without the cluster's certificate)
			// must not get there.
			if l.deps.CanReach != nil {
				if err := l.deps.CanReach(m.RPCAddr); err != nil {
					if t.unreachable[m.Name] != err.Error() {
						l.log.Warn("not adding node to raft: its cluster port refuses this node", "member", m.Name, "addr", m.RPCAddr, "err", err)
						t.unreachable[m.Name] = err.Error()
					}
					continue
				}
				delete(t.unreachable, m.Name)
			}
			var f raft.IndexFuture
			if voters < l.cfg.Voters {
				f = r.AddVoter(id, addr, 0, 10*time.Second)
				voters++
			} else {
				f = r.AddNonvoter(id, addr, 0, 10*time.Second)
			}
			if err := f.Error(); err != nil {
				l.log.Warn("cannot add node to raft", "member", m.Name, "err", err)
				return
			}
			l.log.Info("added node to raft", "member", m.Name, "addr", addr, "voter", voters <= l.cfg.Voters)
		case m.Status == membership.StatusAlive && s.Address != addr && id != self:
			// The node came back at another address: Raft must forget the old one.
			if err := r.RemoveServer(id, 0, 10*time.Second).Error(); err != nil {
				return
			}
			l.log.Info("node moved; re-adding it to raft", "member", m.Name, "from", s.Address, "to", addr)
			return // the next pass adds it at the new address
		case m.Status == membership.StatusLeft && ok && id != self:
			// A voter leaving while another is dead would leave the dead one half of
			// the quorum: remove the dead ones first, while they are a minority.
			voters -= l.removeFailedVoters(servers, status, 0)
			if err := r.RemoveServer(id, 0, 10*time.Second).Error(); err != nil {
				return
			}
			if s.Suffrage == raft.Voter {
				voters--
			}
			l.log.Info("removed node from raft: it left", "member", m.Name)
		}
	}
	for _, s := range servers {
		if _, known := status[string(s.ID)]; !known && s.ID != self {
			// Reaped by gossip: gone for longer than --reap-after.
			if err := r.RemoveServer(s.ID, 0, 10*time.Second).Error(); err == nil {
				l.log.Info("removed node from raft: forgotten by gossip", "member", s.ID)
				if s.Suffrage == raft.Voter {
					voters--
				}
			}
		}
	}
	voters -= l.removeFailedVoters(servers, status, 2*l.deps.Lease())
	for _, s := range servers {
		if voters >= l.cfg.Voters {
			break
		}
		if s.Suffrage == raft.Nonvoter && status[string(s.ID)] == membership.StatusAlive {
			if err := r.AddVoter(s.ID, s.Address, 0, 10*time.Second).Error(); err == nil {
				voters++
				l.log.Info("promoted node to voter", "member", s.ID)
			}
		}
	}
}

// inRaft is the set of nodes in the Raft configuration, voters or not; nil when Raft
// cannot say, which records no new member.
func (l *Leader) inRaft() map[string]bool {
	fut := l.deps.Raft.GetConfiguration()
	if fut.Error() != nil {
		return nil
	}
	in := map[string]bool{}
	for _, s := range fut.Configuration().Servers {
		in[string(s.ID)] = true
	}
	return in
}

// removeFailedVoters removes from the Raft configuration the voters that gossip has
// seen failed for longer than after (with after 0, that the leader marked failed),
// when they are a minority of the voters (the rule of Consul's autopilot): a dead
// voter still counts in the quorum, and one more failure would then stop the
// cluster. A removed node that comes back is added again. It returns how many it
// removed.
func (l *Leader) removeFailedVoters(servers []raft.Server, status map[string]membership.Status, after time.Duration) int {
	var failed, voters []raft.Server
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters = append(voters, s)
		// A leave (after 0) cannot wait for gossip's verdict on a voter the leader
		// already failed (its process found gone): the leaver would take the quorum.
		if string(s.ID) == l.cfg.Name || status[string(s.ID)] != membership.StatusFailed && after > 0 {
			continue
		}
		if m, ok := l.deps.FSM.Member(string(s.ID)); ok && m.State == fsm.Failed && l.now().Sub(time.Unix(0, m.Since)) >= after {
			failed = append(failed, s)
		}
	}
	if len(failed) == 0 || len(failed) > (len(voters)-1)/2 {
		return 0
	}
	removed := 0
	for _, s := range failed {
		if err := l.deps.Raft.RemoveServer(s.ID, 0, 10*time.Second).Error(); err != nil {
			l.log.Warn("cannot remove failed voter from raft", "member", s.ID, "err", err)
			continue
		}
		removed++
		l.log.Warn("removed failed voter from raft so that one more failure does not stop the cluster; it is added back when it returns", "member", s.ID)
	}
	return removed
}
