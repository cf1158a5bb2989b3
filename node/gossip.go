package node

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"

	"github.com/discluster/discluster/transport"
)

// gossipLabel keeps discluster's gossip apart from any other memberlist pool on the
// same ports.
const gossipLabel = "discluster"

func (n *Node) startSerf(advertise string) error {
	host, port, err := splitHostPort(n.cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("%w: --gossip-addr: %v", ErrInvalidConfig, err)
	}
	t := n.cfg.Timing
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr = advertise
	mc.ProbeInterval, mc.ProbeTimeout = t.ProbeInterval, t.ProbeTimeout
	mc.SuspicionMult = t.SuspicionMult
	mc.GossipInterval, mc.PushPullInterval = t.GossipInterval, t.PushPull
	mc.DeadNodeReclaimTime = t.ReconnectInterval
	mc.Label = gossipLabel
	mc.Logger = stdLogger(n.log, "memberlist")
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{host}, BindPort: port, Logger: mc.Logger,
	})
	if err != nil {
		return fmt.Errorf("gossip port: %w (--gossip-addr %s)", err, n.cfg.GossipAddr)
	}
	if port == 0 {
		port = nt.GetAutoBindPort()
	}
	mc.BindPort, mc.AdvertisePort = port, port
	mc.Transport = nt
	if n.cfg.Filter != nil {
		mc.Transport = &filteredGossip{nt: nt, f: n.cfg.Filter}
	}

	sc := serf.DefaultConfig()
	sc.NodeName = n.cfg.Name
	sc.Tags = n.tags()
	events := make(chan serf.Event, 256)
	sc.EventCh = events
	sc.Merge = &mergeGuard{n: n}
	sc.MemberlistConfig = mc
	sc.Logger = stdLogger(n.log, "serf")
	sc.ReconnectInterval = t.ReconnectInterval
	sc.ReconnectTimeout, sc.TombstoneTimeout = t.ReapAfter, t.ReapAfter
	sc.ReapInterval = min(15*time.Second, t.ReconnectInterval)
	sc.LeavePropagateDelay = 2 * t.GossipInterval
	sc.RejoinAfterLeave = true
	sc.EnableNameConflictResolution = false // names are unique by contract; a conflict is an operator error
	if err := os.MkdirAll(filepath.Join(n.cfg.DataDir, "serf"), 0o700); err != nil {
		nt.Shutdown()
		return fmt.Errorf("data dir: %w", err)
	}
	// The snapshot lets a restarted node find its peers again without --join.
	sc.SnapshotPath = filepath.Join(n.cfg.DataDir, "serf", "local.snapshot")
	n.serf, err = serf.Create(sc)
	if err != nil {
		nt.Shutdown()
		return fmt.Errorf("gossip: %w", err)
	}
	n.goRun(func() { n.gossipLoop(events) })
	return nil
}

// gossipLoop handles membership events: it pokes the leader, bootstraps Raft when
// --bootstrap-expect is met, and learns the cluster ID of a cluster it was added to.
func (n *Node) gossipLoop(events <-chan serf.Event) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	bootstrapped := false
	for {
		select {
		case <-n.ctx.Done():
			return
		case e := <-events:
			if me, ok := e.(serf.MemberEvent); ok {
				for _, m := range me.Members {
					n.log.Info("gossip: "+strings.TrimPrefix(me.Type.String(), "member-"), "member", m.Name, "addr", m.Addr.String())
				}
			}
			n.pokeLeader()
		case <-tick.C:
		}
		if !bootstrapped {
			bootstrapped = n.maybeBootstrap()
		}
		n.adoptClusterID()
	}
}

// maybeBootstrap bootstraps Raft the way Consul's bootstrap-expect does: once this
// node sees --bootstrap-expect agents that all expect the same number and none of
// which belongs to a cluster, the first of the first N by name bootstraps them all,
// once the others promised it their votes. It reports true once there is nothing
// left to decide.
func (n *Node) maybeBootstrap() bool {
	if n.hasRaftState() {
		return true
	}
	select {
	case <-n.joined:
	default:
		return false // a node told to join bootstraps nothing before it has joined
	}
	expect := n.cfg.BootstrapExpect
	var cands []serf.Member
	for _, m := range n.serf.Members() {
		if m.Status != serf.StatusAlive || m.Tags[tagRPC] == "" {
			continue
		}
		if m.Tags[tagCluster] != "" {
			return true // a cluster exists: its leader adds this node
		}
		if e, _ := strconv.Atoi(m.Tags[tagExpect]); e != expect {
			n.log.Error("bootstrap: agents disagree on --bootstrap-expect; not bootstrapping", "member", m.Name, "its", e, "mine", expect)
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
	// their own turn): see bootstrap.go.
	if cands[0].Name != n.cfg.Name || !n.gatherPromises(cands) {
		return false
	}
	var conf raft.Configuration
	h := sha256.New()
	for _, m := range cands {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Tags[tagRPC])})
		fmt.Fprintf(h, "%s\x00%s\x00", m.Name, m.Tags[tagNonce])
	}
	id := hex.EncodeToString(h.Sum(nil))[:16]
	if err := n.setClusterID(id); err != nil {
		n.log.Error("bootstrap", "err", err)
		return false
	}
	if err := n.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		n.log.Error("bootstrap", "err", err)
		return false
	}
	names := make([]string, len(cands))
	for i, m := range cands {
		names[i] = m.Name
	}
	n.log.Info("bootstrapped raft", "cluster", id, "voters", strings.Join(names, ","))
	return true
}

// adoptClusterID records the cluster ID of the leader once this node is part of its
// Raft cluster.
func (n *Node) adoptClusterID() {
	if n.clusterID() != "" || !n.hasRaftState() {
		return
	}
	_, leader := n.raft.LeaderWithID()
	for _, m := range n.serf.Members() {
		if m.Name == string(leader) && m.Tags[tagCluster] != "" {
			if err := n.setClusterID(m.Tags[tagCluster]); err != nil {
				n.log.Error("cannot record cluster ID", "err", err)
			}
			return
		}
	}
}

// joinLoop joins the --join addresses, retrying with backoff until one answers.
func (n *Node) joinLoop() {
	if len(n.cfg.Join) == 0 {
		close(n.joined)
		return
	}
	backoff := 200 * time.Millisecond
	start := time.Now()
	for attempt := 1; ; attempt++ {
		k, err := n.serf.Join(n.cfg.Join, true)
		if err == nil && k > 0 {
			n.log.Info("joined", "via", strings.Join(n.cfg.Join, ","), "contacted", k)
			close(n.joined)
			return
		}
		if c := n.conflict.Load(); c != nil {
			select {
			case n.fatal <- c.(error):
			default:
			}
			return
		}
		if t := n.cfg.JoinTimeout; t > 0 && time.Since(start) > t {
			select {
			case n.fatal <- fmt.Errorf("could not join any of %s within --join-timeout %v (last error: %v): check the addresses (gossip ports, default %d) and that an agent runs there",
				strings.Join(n.cfg.Join, ", "), t, err, DefaultGossipPort):
			default:
			}
			return
		}
		n.log.Warn("cannot join yet; retrying", "join", strings.Join(n.cfg.Join, ","), "attempt", attempt, "in", backoff, "err", err)
		if !sleepCtx(n.ctx, backoff) {
			return
		}
		backoff = min(2*backoff, n.cfg.Timing.JoinBackoffMax)
	}
}

// ErrOtherCluster is the error of a join that would merge two clusters.
var ErrOtherCluster = errors.New("another discluster cluster")

// mergeGuard refuses to merge gossip pools of two different Raft clusters: two
// clusters that meet would both assign every shard.
type mergeGuard struct{ n *Node }

func (g *mergeGuard) NotifyMerge(members []*serf.Member) error {
	mine := g.n.clusterID()
	for _, m := range members {
		theirs := m.Tags[tagCluster]
		if m.Name == g.n.cfg.Name || theirs == "" || mine == "" || theirs == mine {
			continue
		}
		err := fmt.Errorf("%w: node %s belongs to cluster %s, this node (%s, data dir %s) to cluster %s. "+
			"Two clusters never merge: each has its own Raft log and would run every shard. Join a member of cluster %s, "+
			"or start this node with an empty --data-dir to join afresh",
			ErrOtherCluster, m.Name, theirs, g.n.cfg.Name, g.n.cfg.DataDir, mine, mine)
		if g.n.conflict.CompareAndSwap(nil, err) {
			g.n.log.Error("refusing to merge with another cluster", "err", err)
		}
		return err
	}
	return nil
}

// privateIP picks the address to advertise when bound to 0.0.0.0, as memberlist does.
func privateIP() (string, error) {
	ip, err := sockaddr.GetPrivateIP()
	if err != nil {
		return "", err
	}
	if ip == "" {
		return "", errors.New("no private IP found")
	}
	return ip, nil
}

// filteredGossip is memberlist's transport with a transport.Filter in front, so a
// test can cut gossip together with the cluster port.
type filteredGossip struct {
	nt *memberlist.NetTransport
	f  *transport.Filter
}

var _ memberlist.Transport = (*filteredGossip)(nil)

func (t *filteredGossip) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.nt.FinalAdvertiseAddr(ip, port)
}

func (t *filteredGossip) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.f.Blocked(addr) {
		return time.Now(), nil // dropped on the floor, as a partition does
	}
	return t.nt.WriteTo(b, addr)
}

func (t *filteredGossip) PacketCh() <-chan *memberlist.Packet { return t.nt.PacketCh() }

func (t *filteredGossip) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.f.Blocked(addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, transport.ErrBlocked)
	}
	c, err := t.nt.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return t.f.Track(c, addr), nil
}

func (t *filteredGossip) StreamCh() <-chan net.Conn { return t.nt.StreamCh() }
func (t *filteredGossip) Shutdown() error           { return t.nt.Shutdown() }

var _ atomic.Value
