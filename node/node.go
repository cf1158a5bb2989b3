package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/hashicorp/serf/serf"
	"go.etcd.io/bbolt"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/transport"
)

// Node is one discluster agent.
type Node struct {
	cfg Config
	log *slog.Logger

	idMu sync.Mutex
	id   identity

	mux    *transport.Mux
	fsm    *fsm.FSM
	raft   *raft.Raft
	store  *raftboltdb.BoltStore
	serf   *serf.Serf
	peers  *peers
	httpLn net.Listener
	http   *http.Server
	sup    *supervisor

	advertiseCluster string
	advertiseHTTP    string

	leader      atomic.Pointer[leaderState]
	leaseWarned atomic.Bool
	leaderPoke  chan struct{}
	lease       leaseKeeper
	recent      recentEvents

	joined   chan struct{} // closed once a --join succeeded (or none was asked)
	conflict atomic.Value  // error: a join met another cluster
	promise  bootstrapPromise
	fatal    chan error
	started  time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stopOnce sync.Once
}

// Start builds a node and starts every part of it. Stop it with Leave (graceful) or
// Kill (as a crash would).
func Start(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	id, err := loadIdentity(cfg.DataDir, cfg.Name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg: cfg, log: cfg.Logger.With("node", cfg.Name), id: id,
		fsm: fsm.New(), leaderPoke: make(chan struct{}, 1),
		joined: make(chan struct{}), fatal: make(chan error, 1), started: time.Now(),
		ctx: ctx, cancel: cancel,
	}
	if err := n.start(); err != nil {
		n.shutdown()
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	cfg := n.cfg
	advertise, err := advertiseIP(cfg)
	if err != nil {
		return err
	}
	n.mux, err = transport.Listen(cfg.ClusterAddr, cfg.Filter, n.log)
	if err != nil {
		return fmt.Errorf("%w (--cluster-addr %s)", err, cfg.ClusterAddr)
	}
	n.advertiseCluster = net.JoinHostPort(advertise, strconv.Itoa(n.mux.ListenAddr().(*net.TCPAddr).Port))
	if err := n.mux.SetAdvertise(n.advertiseCluster); err != nil {
		return err
	}
	n.peers = newPeers(n.mux)

	n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http port: %w (--http-addr %s)", err, cfg.HTTPAddr)
	}
	httpHost, _, _ := net.SplitHostPort(cfg.HTTPAddr)
	if ip := net.ParseIP(httpHost); ip == nil || ip.IsUnspecified() {
		httpHost = advertise
	}
	n.advertiseHTTP = net.JoinHostPort(httpHost, strconv.Itoa(n.httpLn.Addr().(*net.TCPAddr).Port))

	notify := make(chan bool, 16)
	if err := n.startRaft(notify); err != nil {
		return err
	}
	if err := n.startSerf(advertise); err != nil {
		return err
	}
	n.sup = newSupervisor(n)

	n.http = &http.Server{Handler: n.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
	n.goRun(func() { n.http.Serve(n.httpLn) })
	n.goRun(func() { n.serveRPC(n.mux.RPC()) })
	n.goRun(func() { n.monitorLeadership(notify) })
	n.goRun(n.watchState)
	n.goRun(n.leaseLoop)
	n.goRun(n.sup.run)
	n.goRun(n.joinLoop)
	n.goRun(n.watchHeartbeats)
	n.log.Info("node started", "gossip", n.serf.LocalMember().Addr.String()+":"+strconv.Itoa(int(n.serf.LocalMember().Port)),
		"cluster", n.advertiseCluster, "http", n.advertiseHTTP, "data_dir", cfg.DataDir,
		"bootstrap_expect", cfg.BootstrapExpect, "existing_state", n.hasRaftState())
	return nil
}

func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// advertiseIP is the IP other nodes reach this one at.
func advertiseIP(cfg Config) (string, error) {
	if cfg.Advertise != "" {
		return cfg.Advertise, nil
	}
	host, _, _ := net.SplitHostPort(cfg.ClusterAddr)
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return ip.String(), nil
	}
	if host != "" && net.ParseIP(host) == nil {
		return "", fmt.Errorf("%w: --cluster-addr host %q must be an IP address", ErrInvalidConfig, host)
	}
	ip, err := privateIP()
	if err != nil {
		return "", fmt.Errorf("cannot pick an address to advertise (%v): set --advertise", err)
	}
	return ip, nil
}

func (n *Node) startRaft(notify chan bool) error {
	dir := filepath.Join(n.cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return fmt.Errorf("data dir %s is in use by another discluster process", n.cfg.DataDir)
		}
		return fmt.Errorf("raft log: %w", err)
	}
	n.store = store
	hl := hclogAdapter(n.log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hl)
	if err != nil {
		return fmt.Errorf("raft snapshots: %w", err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: n.mux.Raft(), MaxPool: 3, Timeout: 10 * time.Second, Logger: hl,
	})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.Logger = hl
	rc.NotifyCh = notify
	rc.HeartbeatTimeout = n.cfg.Timing.RaftHeartbeat
	rc.ElectionTimeout = n.cfg.Timing.RaftElection
	rc.LeaderLeaseTimeout = n.cfg.Timing.RaftLeaderLease
	rc.SnapshotThreshold = 4096
	rc.TrailingLogs = 4096
	// The leader removes and re-adds nodes as gossip sees them go and come back; a
	// node must not stop itself on reading an old removal while it catches up.
	rc.ShutdownOnRemove = false
	n.raft, err = raft.NewRaft(rc, n.fsm, store, store, snaps, trans)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	return nil
}

func (n *Node) hasRaftState() bool {
	idx, err := n.store.LastIndex()
	return err == nil && idx > 0
}

// Gossip tags; together well under memberlist's 512-byte limit.
const (
	tagRPC     = "rpc"     // cluster address: Raft and RPC
	tagHTTP    = "http"    // the API
	tagWeight  = "w"       // relative capacity
	tagExpect  = "expect"  // --bootstrap-expect
	tagCluster = "cluster" // the Raft cluster's ID, once it belongs to one
	tagNonce   = "nonce"   // random per data dir; cluster IDs derive from it
)

func (n *Node) tags() map[string]string {
	return map[string]string{
		tagRPC: n.advertiseCluster, tagHTTP: n.advertiseHTTP, tagWeight: strconv.Itoa(n.cfg.Weight),
		tagExpect: strconv.Itoa(n.cfg.BootstrapExpect), tagCluster: n.clusterID(), tagNonce: n.nonce(),
	}
}

func (n *Node) clusterID() string {
	n.idMu.Lock()
	defer n.idMu.Unlock()
	return n.id.Cluster
}

func (n *Node) nonce() string {
	n.idMu.Lock()
	defer n.idMu.Unlock()
	return n.id.Nonce
}

// setClusterID records the Raft cluster this data dir now belongs to.
func (n *Node) setClusterID(id string) error {
	n.idMu.Lock()
	if n.id.Cluster == id {
		n.idMu.Unlock()
		return nil
	}
	n.id.Cluster = id
	cp := n.id
	n.idMu.Unlock()
	if err := saveIdentity(n.cfg.DataDir, cp); err != nil {
		return err
	}
	n.log.Info("member of cluster", "cluster", id)
	return n.serf.SetTags(n.tags())
}

// applyTimeout bounds the wait for one command's commit.
const applyTimeout = 30 * time.Second

var errNodeStopping = errors.New("node stopping")

// applyLocal applies a command on this node, which must be the leader.
func (n *Node) applyLocal(cmd fsm.Command) (*fsm.Result, error) {
	if n.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	f := n.raft.Apply(fsm.Encode(cmd), 10*time.Second)
	// Raft leaves a command that was queued but not yet taken when it shut down
	// without an answer, and its future would wait forever: a shutdown must not wait
	// for it. Every command is safe to send again, so the caller may retry.
	answered := make(chan error, 1)
	go func() { answered <- f.Error() }()
	var err error
	select {
	case err = <-answered:
	case <-n.ctx.Done():
		return nil, errNodeStopping
	case <-time.After(applyTimeout):
		return nil, fmt.Errorf("apply: no answer from Raft within %v", applyTimeout)
	}
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return nil, err
	}
	switch r := f.Response().(type) {
	case *fsm.Result:
		return r, nil
	case error:
		return nil, r
	default:
		return nil, fmt.Errorf("apply: unexpected response %T", r)
	}
}

// write applies a command through the leader, wherever it is, until ctx ends. Every
// command is safe to apply twice (fenced by epoch, or idempotent), so a write whose
// outcome was lost is simply sent again.
func (n *Node) write(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	var last error
	for attempt := 0; ; attempt++ {
		if n.raft.State() == raft.Leader {
			res, err := n.applyLocal(cmd)
			if err == nil || errors.Is(err, fsm.ErrInvalid) {
				return res, err
			}
			last = err
		} else if addr, _ := n.raft.LeaderWithID(); addr == "" {
			last = ErrNoLeader
		} else {
			var reply ApplyReply
			cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
			err := n.peers.call(cctx, string(addr), "Apply", &ApplyArgs{Command: fsm.Encode(cmd)}, &reply)
			cancel()
			if err == nil {
				return &fsm.Result{Index: reply.Index, Applied: reply.Applied, Stale: reply.Stale}, nil
			}
			if errors.Is(err, fsm.ErrInvalid) {
				return nil, err
			}
			last = err
		}
		if !sleepCtx(ctx, min(time.Duration(attempt+1)*50*time.Millisecond, time.Second)) {
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		}
	}
}

// watchState pokes the leader loop and the supervisor on every applied command.
func (n *Node) watchState() {
	var after uint64
	for {
		idx, err := n.fsm.WaitChange(n.ctx, after)
		if err != nil {
			return
		}
		after = idx
		n.warnLeaseFlag()
		n.pokeLeader()
		n.sup.poke()
	}
}

// Fatal delivers an error that should end the agent: this node cannot become part
// of the cluster it was told to join.
func (n *Node) Fatal() <-chan error { return n.fatal }

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// HTTPAddr is the address the API listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// GossipAddr is the address other nodes join.
func (n *Node) GossipAddr() string {
	m := n.serf.LocalMember()
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}

// ClusterAddr is the advertised Raft and RPC address.
func (n *Node) ClusterAddr() string { return n.advertiseCluster }

// IsLeader reports whether this node leads and has finished taking over.
func (n *Node) IsLeader() bool { return n.leader.Load() != nil }

// Kill stops the node as a crash would: no leave, no handoff, no last checkpoint;
// its websockets are dropped without a close frame. Tests use it for a SIGKILL.
func (n *Node) Kill() {
	n.stopOnce.Do(func() {
		n.log.Warn("killed")
		n.shutdown()
	})
}

// Leave stops the node gracefully: it drains its shards to other nodes (each handed
// off at its exact seq), gives up leadership, leaves the gossip pool and stops. When
// ctx ends first, the shards still here are stopped with a resumable close and
// their final state is checkpointed, so whoever runs them next resumes exactly.
func (n *Node) Leave(ctx context.Context) error {
	var err error
	n.stopOnce.Do(func() {
		err = n.leave(ctx)
		n.shutdown()
	})
	return err
}

func (n *Node) leave(ctx context.Context) error {
	start := time.Now()
	n.log.Info("leaving: draining shards")
	others := false
	for _, m := range n.fsm.Members() {
		if m.ID != n.cfg.Name && m.State == fsm.Alive && m.Weight > 0 {
			others = true
		}
	}
	var errs []error
	if others {
		if _, err := n.write(ctx, fsm.Drain{ID: n.cfg.Name, At: time.Now().UnixNano()}); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		} else if err := n.waitNoShards(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		}
	}
	if err := n.sup.stopAll(ctx, true); err != nil {
		errs = append(errs, err)
	}
	if n.raft.State() == raft.Leader && n.raftPeers() > 1 {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer failed", "err", err)
		}
	}
	if err := n.serf.Leave(); err != nil {
		errs = append(errs, fmt.Errorf("leave gossip: %w", err))
	}
	n.log.Info("left", "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

func (n *Node) raftPeers() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	return len(f.Configuration().Servers)
}

func (n *Node) waitNoShards(ctx context.Context) error {
	after := uint64(0)
	for {
		if len(n.fsm.ShardsOf(n.cfg.Name)) == 0 {
			return nil
		}
		idx, err := n.fsm.WaitChange(ctx, after)
		if err != nil {
			return fmt.Errorf("%d shards still here: %w", len(n.fsm.ShardsOf(n.cfg.Name)), err)
		}
		after = idx
	}
}

func (n *Node) shutdown() {
	n.cancel()
	if n.sup != nil {
		n.sup.kill()
	}
	if n.http != nil {
		n.http.Close()
	}
	if n.serf != nil {
		n.serf.Shutdown()
	}
	if n.raft != nil {
		n.raft.Shutdown().Error()
	}
	if n.peers != nil {
		n.peers.close()
	}
	if n.mux != nil {
		n.mux.Close()
	}
	if n.httpLn != nil {
		n.httpLn.Close()
	}
	n.wg.Wait()
	if n.store != nil {
		n.store.Close()
	}
}

// hclogAdapter sends raft's and serf's warnings and errors to slog.
func hclogAdapter(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name: "raft", Level: hclog.Warn, Output: logWriter{l.With("component", "raft")},
	})
}

type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	msg := string(p)
	for len(msg) > 0 && (msg[len(msg)-1] == '\n' || msg[len(msg)-1] == '\r') {
		msg = msg[:len(msg)-1]
	}
	w.l.Warn(msg)
	return len(p), nil
}

func stdLogger(l *slog.Logger, component string) *log.Logger {
	return log.New(logFilter{logWriter{l.With("component", component)}}, "", 0)
}

// logFilter drops serf's and memberlist's debug and info lines, which are many.
type logFilter struct{ w io.Writer }

func (f logFilter) Write(p []byte) (int, error) {
	s := string(p)
	for _, lvl := range []string{"[DEBUG]", "[INFO]"} {
		if len(s) >= len(lvl) && containsLevel(s, lvl) {
			return len(p), nil
		}
	}
	return f.w.Write(p)
}

func containsLevel(s, lvl string) bool {
	for i := 0; i+len(lvl) <= len(s) && i < 40; i++ {
		if s[i:i+len(lvl)] == lvl {
			return true
		}
	}
	return false
}

// note records an event for status and logs nothing: the caller logs.
func (n *Node) note(format string, args ...any) { n.recent.add(n.cfg.Name, format, args...) }
