package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/discluster/discluster/internal/logbridge"
	"github.com/discluster/discluster/transport"
)

// gossipLabel keeps discluster's gossip apart from any other memberlist pool on the
// same ports.
const gossipLabel = "discluster"

// Gossip tags; together well under memberlist's 512-byte limit.
const (
	tagRPC     = "rpc"     // cluster address: Raft and RPC
	tagHTTP    = "http"    // the API
	tagWeight  = "w"       // relative capacity
	tagExpect  = "expect"  // --bootstrap-expect
	tagCluster = "cluster" // the Raft cluster's ID, once it belongs to one
	tagNonce   = "nonce"   // random per data dir; cluster IDs derive from it
)

// Timing holds gossip's timers.
type Timing struct {
	ProbeInterval     time.Duration
	ProbeTimeout      time.Duration
	SuspicionMult     int
	GossipInterval    time.Duration
	PushPull          time.Duration
	ReconnectInterval time.Duration // how often gossip retries failed members (partition heal)
	ReapAfter         time.Duration // a failed member is forgotten after this
	JoinBackoffMax    time.Duration
}

// Raft is what bootstrap-expect needs of the node's Raft.
type Raft interface {
	// HasState reports whether the data dir holds a Raft log: the node belongs to a
	// cluster, or did.
	HasState() bool
	// Bootstrap starts a Raft cluster of these voters (name → cluster address); a
	// Raft that already has state refuses without harm.
	Bootstrap(voters []Voter) error
	// LeaderID is the name of the leader, "" when none is known.
	LeaderID() string
}

// Voter is one member of a bootstrapped Raft cluster.
type Voter struct{ Name, Addr string }

// Promiser asks a peer, over the cluster port, to promise its bootstrap vote to this
// node (the connection names the asker).
type Promiser interface {
	AskPromise(ctx context.Context, addr string, release bool) error
}

// Config configures the node's gossip.
type Config struct {
	Name    string
	DataDir string
	// BindAddr is the gossip address (UDP and TCP); Advertise the IP others reach.
	BindAddr  string
	Advertise string
	// ClusterAddr and HTTPAddr are advertised in the tags.
	ClusterAddr     string
	HTTPAddr        string
	Weight          int
	BootstrapExpect int
	// EncryptKey, when set, encrypts gossip with it unless the data dir already holds
	// a keyring (which then wins: it has the cluster's current keys).
	EncryptKey  []byte
	Join        []string
	JoinTimeout time.Duration
	// DefaultPort names the gossip port in the hint of a failed join.
	DefaultPort int
	Timing      Timing
	Filter      *transport.Filter
	Logger      *slog.Logger
	// OnChange is called on every membership event: the leader reconciles.
	OnChange func()
}

// Gossip is the node in the gossip pool.
type Gossip struct {
	cfg      Config
	log      *slog.Logger
	raft     Raft
	promiser Promiser
	serf     *serf.Serf

	idMu sync.Mutex
	id   Identity

	joined   chan struct{} // closed once a --join succeeded (or none was asked)
	conflict atomic.Value  // error: a join met another cluster
	fatal    chan error
	promise  promise

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start joins the gossip pool as id's node; Shutdown stops it.
func Start(cfg Config, id Identity, raft Raft, promiser Promiser) (*Gossip, error) {
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gossip{cfg: cfg, log: cfg.Logger, raft: raft, promiser: promiser, id: id,
		joined: make(chan struct{}), fatal: make(chan error, 1), ctx: ctx, cancel: cancel}
	if g.cfg.OnChange == nil {
		g.cfg.OnChange = func() {}
	}
	if err := g.start(); err != nil {
		cancel()
		return nil, err
	}
	return g, nil
}

func (g *Gossip) start() error {
	cfg := g.cfg
	host, port, err := SplitHostPort(cfg.BindAddr)
	if err != nil {
		return fmt.Errorf("%w: --gossip-addr: %v", ErrInvalidAddr, err)
	}
	t := cfg.Timing
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr = cfg.Advertise
	mc.ProbeInterval, mc.ProbeTimeout = t.ProbeInterval, t.ProbeTimeout
	mc.SuspicionMult = t.SuspicionMult
	mc.GossipInterval, mc.PushPullInterval = t.GossipInterval, t.PushPull
	mc.DeadNodeReclaimTime = t.ReconnectInterval
	mc.Label = gossipLabel
	// Gossip's info lines are many (every probe, every join); warnings and errors
	// reach the log at the node's level, everything at debug.
	floor := hclog.Warn
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		floor = hclog.Debug
	}
	mc.Logger = logbridge.Std(g.log, "memberlist", floor)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{host}, BindPort: port, Logger: mc.Logger,
	})
	if err != nil {
		return fmt.Errorf("gossip port: %w (--gossip-addr %s)", err, cfg.BindAddr)
	}
	if port == 0 {
		port = nt.GetAutoBindPort()
	}
	mc.BindPort, mc.AdvertisePort = port, port
	mc.Transport = nt
	if cfg.Filter != nil {
		mc.Transport = &filteredGossip{nt: nt, f: cfg.Filter}
	}

	sc := serf.DefaultConfig()
	sc.NodeName = cfg.Name
	sc.Tags = g.tags()
	events := make(chan serf.Event, 256)
	sc.EventCh = events
	sc.Merge = &mergeGuard{g: g}
	sc.MemberlistConfig = mc
	sc.Logger = logbridge.Std(g.log, "serf", floor)
	sc.ReconnectInterval = t.ReconnectInterval
	sc.ReconnectTimeout, sc.TombstoneTimeout = t.ReapAfter, t.ReapAfter
	sc.ReapInterval = min(15*time.Second, t.ReconnectInterval)
	sc.LeavePropagateDelay = 2 * t.GossipInterval
	sc.RejoinAfterLeave = true
	sc.EnableNameConflictResolution = false // names are unique by contract; a conflict is an operator error
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "serf"), 0o700); err != nil {
		nt.Shutdown()
		return fmt.Errorf("data dir: %w", err)
	}
	ring, ringPath, ignored, err := loadKeyring(filepath.Join(cfg.DataDir, "serf"), cfg.EncryptKey)
	if err != nil {
		nt.Shutdown()
		return err
	}
	if ring != nil {
		mc.Keyring = ring
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
		sc.KeyringFile = ringPath
	}
	if ignored {
		g.log.Warn("--encrypt is not in this data dir's gossip keyring; using the keyring (rotate keys with discluster keyring)", "keyring", ringPath)
	}
	// The snapshot lets a restarted node find its peers again without --join.
	sc.SnapshotPath = filepath.Join(cfg.DataDir, "serf", "local.snapshot")
	guard := newGuardedGossip(mc.Transport, gossipLabel, ring, g.log)
	mc.Transport = guard
	g.serf, err = serf.Create(sc)
	if err != nil {
		guard.Shutdown()
		return fmt.Errorf("gossip: %w", err)
	}
	g.goRun(func() { g.loop(events) })
	g.goRun(g.joinLoop)
	return nil
}

func (g *Gossip) goRun(f func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
}

func (g *Gossip) tags() map[string]string {
	id := g.Identity()
	return map[string]string{
		tagRPC: g.cfg.ClusterAddr, tagHTTP: g.cfg.HTTPAddr, tagWeight: strconv.Itoa(g.cfg.Weight),
		tagExpect: strconv.Itoa(g.cfg.BootstrapExpect), tagCluster: id.Cluster, tagNonce: id.Nonce,
	}
}

// loop handles membership events: it tells the leader, bootstraps Raft when
// --bootstrap-expect is met, and learns the cluster ID of a cluster it was added to.
func (g *Gossip) loop(events <-chan serf.Event) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	bootstrapped := false
	for {
		select {
		case <-g.ctx.Done():
			return
		case e := <-events:
			if me, ok := e.(serf.MemberEvent); ok {
				for _, m := range me.Members {
					g.log.Info("gossip: "+strings.TrimPrefix(me.Type.String(), "member-"), "member", m.Name, "addr", m.Addr.String())
				}
			}
			g.cfg.OnChange()
		case <-tick.C:
		}
		if !bootstrapped {
			bootstrapped = g.maybeBootstrap()
		}
		g.adoptClusterID()
	}
}

// Addr is the address other nodes join.
func (g *Gossip) Addr() string {
	m := g.serf.LocalMember()
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}

// Identity is the data dir's identity as it stands.
func (g *Gossip) Identity() Identity {
	g.idMu.Lock()
	defer g.idMu.Unlock()
	return g.id
}

// ClusterID is the ID of the Raft cluster this node belongs to; "" before it does.
func (g *Gossip) ClusterID() string { return g.Identity().Cluster }

// setClusterID records the Raft cluster this data dir now belongs to.
func (g *Gossip) setClusterID(id string) error {
	g.idMu.Lock()
	if g.id.Cluster == id {
		g.idMu.Unlock()
		return nil
	}
	g.id.Cluster = id
	cp := g.id
	g.idMu.Unlock()
	if err := SaveIdentity(g.cfg.DataDir, cp); err != nil {
		return err
	}
	g.log.Info("member of cluster", "cluster", id)
	if g.serf == nil {
		return nil
	}
	return g.serf.SetTags(g.tags())
}

// adoptClusterID records the cluster ID of the leader once this node is part of its
// Raft cluster.
func (g *Gossip) adoptClusterID() {
	if g.ClusterID() != "" || !g.raft.HasState() {
		return
	}
	leader := g.raft.LeaderID()
	for _, m := range g.serf.Members() {
		if m.Name == leader && m.Tags[tagCluster] != "" {
			if err := g.setClusterID(m.Tags[tagCluster]); err != nil {
				g.log.Error("cannot record cluster ID", "err", err)
			}
			return
		}
	}
}

// Fatal delivers an error that should end the agent: this node cannot become part
// of the cluster it was told to join.
func (g *Gossip) Fatal() <-chan error { return g.fatal }

// Conflict is the error of a join that met another cluster, nil if none did.
func (g *Gossip) Conflict() error {
	if c := g.conflict.Load(); c != nil {
		return c.(error)
	}
	return nil
}

// Join joins the pools of the agents at addrs (gossip addresses), as --join does once;
// it returns how many answered. Joining a member of another cluster is refused.
func (g *Gossip) Join(addrs []string) (int, error) { return g.serf.Join(addrs, true) }

// Leave tells the pool this node leaves.
func (g *Gossip) Leave() error { return g.serf.Leave() }

// Shutdown stops gossip without a leave: to the others, this node failed.
func (g *Gossip) Shutdown() {
	g.cancel()
	g.serf.Shutdown()
	g.wg.Wait()
}

// ErrInvalidAddr is the error of a gossip address that cannot be bound.
var ErrInvalidAddr = errors.New("invalid gossip address")

// PrivateIP picks the address to advertise when bound to 0.0.0.0, as memberlist does.
func PrivateIP() (string, error) {
	ip, err := sockaddr.GetPrivateIP()
	if err != nil {
		return "", err
	}
	if ip == "" {
		return "", errors.New("no private IP found")
	}
	return ip, nil
}

// SplitHostPort splits addr and checks its port.
func SplitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number in [0, 65535]", port)
	}
	return host, p, nil
}
