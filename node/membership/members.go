package membership

import (
	"net"
	"strconv"

	"github.com/hashicorp/serf/serf"
)

// Status is a member's state as gossip sees it.
type Status int

// The states, as serf names them.
const (
	StatusNone Status = iota
	StatusAlive
	StatusLeaving
	StatusLeft
	StatusFailed
)

func (s Status) String() string {
	switch s {
	case StatusAlive:
		return "alive"
	case StatusLeaving:
		return "leaving"
	case StatusLeft:
		return "left"
	case StatusFailed:
		return "failed"
	}
	return "none"
}

// Member is one agent in the pool.
type Member struct {
	Name       string
	Status     Status
	RPCAddr    string // the cluster address: Raft and RPC
	HTTPAddr   string
	GossipAddr string
	Weight     int
	Cluster    string // its Raft cluster's ID; "" until it has one
}

func memberOf(m serf.Member) Member {
	w, _ := strconv.Atoi(m.Tags[tagWeight])
	st := map[serf.MemberStatus]Status{serf.StatusAlive: StatusAlive, serf.StatusLeaving: StatusLeaving,
		serf.StatusLeft: StatusLeft, serf.StatusFailed: StatusFailed}[m.Status]
	return Member{Name: m.Name, Status: st, RPCAddr: m.Tags[tagRPC], HTTPAddr: m.Tags[tagHTTP],
		GossipAddr: net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))), Weight: w, Cluster: m.Tags[tagCluster]}
}

// Members is the pool minus agents of other clusters and anything that is not a
// discluster agent.
func (g *Gossip) Members() []Member {
	cluster := g.ClusterID()
	var out []Member
	for _, sm := range g.serf.Members() {
		m := memberOf(sm)
		if m.Cluster != "" && cluster != "" && m.Cluster != cluster {
			continue
		}
		if m.RPCAddr == "" {
			continue // not a discluster agent
		}
		out = append(out, m)
	}
	return out
}
