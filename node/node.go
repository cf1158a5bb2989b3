package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/internal/certs"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/leader"
	"github.com/discluster/discluster/node/membership"
	"github.com/discluster/discluster/node/metrics"
	"github.com/discluster/discluster/node/rpc"
	"github.com/discluster/discluster/node/runner"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/transport"
)

// httpLimits bound the API's open connections (see transport.Limiter).
var httpLimits = transport.Limits{Total: 1024, PerIP: 256}

// Node is one discluster agent.
type Node struct {
	cfg    Config
	log    *slog.Logger
	events *event.Log

	mux      *transport.Mux
	fsm      *fsm.FSM
	raft     *raft.Raft
	store    *raftboltdb.BoltStore
	gossip   *membership.Gossip
	pool     *rpc.Pool
	toLeader *rpc.ToLeader
	leader   *leader.Leader
	runner   *runner.Runner
	httpLn   net.Listener
	http     *http.Server
	metrics  *metrics.Metrics

	identity         membership.Identity // as the data dir held it at start
	certs            *certs.Config       // the cluster port's TLS; nil without
	advertiseCluster string
	advertiseHTTP    string
	leaseWarned      atomic.Bool
	leaveMu          sync.Mutex
	leaving          bool // Leave began: the drain it writes is this run's own; under leaveMu
	started          time.Time
	// shardingRequired is the generation of a shard here that Discord closed with
	// 4011, reported with each lease renewal (see noteShardingRequired); 0 when none.
	shardingRequired atomic.Uint64

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
	id, err := membership.LoadIdentity(cfg.DataDir, cfg.Name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg: cfg, log: cfg.Logger.With("node", cfg.Name), events: event.NewLog(cfg.Name, nil),
		fsm: fsm.New(), identity: id, started: time.Now(), ctx: ctx, cancel: cancel,
	}
	if err := n.start(id); err != nil {
		n.shutdown()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(id membership.Identity) error {
	cfg := n.cfg
	advertise, err := advertiseIP(cfg)
	if err != nil {
		return err
	}
	var mtls transport.TLS
	if cfg.TLS != nil {
		if n.certs, err = certs.Load(*cfg.TLS); err != nil {
			return err
		}
		mtls = transport.TLS{Server: n.certs.Server(), Client: n.certs.Client()}
		n.log.Info("cluster port: mutual TLS", "cert", cfg.TLS.Cert, "expires", n.certs.Expires().Format(time.DateOnly))
	}
	n.mux, err = transport.ListenTLS(cfg.ClusterAddr, cfg.Filter, n.log, mtls)
	if err != nil {
		return fmt.Errorf("%w (--cluster-addr %s)", err, cfg.ClusterAddr)
	}
	n.advertiseCluster = net.JoinHostPort(advertise, strconv.Itoa(n.mux.ListenAddr().(*net.TCPAddr).Port))
	if err := n.mux.SetAdvertise(n.advertiseCluster); err != nil {
		return err
	}
	n.pool = rpc.NewPool(cfg.Name, func(addr string, timeout time.Duration) (net.Conn, error) {
		return n.mux.Dial(addr, transport.ProtoRPC, timeout)
	})

	httpLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http port: %w (--http-addr %s)", err, cfg.HTTPAddr)
	}
	// A flood of connections is closed as it is accepted, beyond what any number of
	// operators, scrapers and bot workers hold open.
	n.httpLn = transport.LimitListener(httpLn, transport.NewLimiter("http port", httpLimits, n.log))
	httpHost, _, _ := net.SplitHostPort(cfg.HTTPAddr)
	if ip := net.ParseIP(httpHost); ip == nil || ip.IsUnspecified() {
		httpHost = advertise
	}
	n.advertiseHTTP = net.JoinHostPort(httpHost, strconv.Itoa(n.httpLn.Addr().(*net.TCPAddr).Port))

	notify := make(chan bool, 16)
	if err := n.startRaft(notify); err != nil {
		return err
	}
	n.metrics = n.newMetrics()
	n.leader = leader.New(leader.Config{
		Name: cfg.Name, Voters: cfg.Voters, MaxMoves: cfg.MaxMoves, Shards: cfg.Shards, MaxConcurrency: cfg.MaxConcurrency,
		ShardsPerCluster: cfg.ShardsPerCluster, IdentifyWindow: cfg.IdentifyWindow, Lease: cfg.Lease,
		CheckpointInterval: cfg.CheckpointInterval, SessionReserve: cfg.SessionReserve,
		ReconcileInterval: cfg.Timing.ReconcileInterval, ProbeEvery: cfg.Timing.RaftHeartbeat / 10,
		ReshardAutoThreshold: cfg.ReshardAutoThreshold, ReshardPoll: cfg.Timing.ReconcileInterval, Logger: n.log,
	}, leader.Deps{
		Raft: n.raft, FSM: n.fsm, Members: membersView{n}, Notify: notifier{n}, Lease: n.leaseDuration,
		ProcessGone: n.processGone, GatewayBot: n.gatewayBot, Done: n.ctx.Done(), CanReach: n.canReach,
		LocalShards: n.localShards,
	})
	n.toLeader = &rpc.ToLeader{Node: cfg.Name, Where: leadership{n.raft}, Local: service{n}, Pool: n.pool,
		ShardingRequired: n.shardingRequiredGen}
	n.gossip, err = membership.Start(membership.Config{
		Name: cfg.Name, DataDir: cfg.DataDir, BindAddr: cfg.GossipAddr, Advertise: advertise,
		ClusterAddr: n.advertiseCluster, HTTPAddr: n.advertiseHTTP, Weight: cfg.Weight, EncryptKey: cfg.EncryptKey,
		BootstrapExpect: cfg.BootstrapExpect, Join: cfg.Join, JoinTimeout: cfg.JoinTimeout, DefaultPort: DefaultGossipPort,
		Timing: membership.Timing{
			ProbeInterval: cfg.Timing.ProbeInterval, ProbeTimeout: cfg.Timing.ProbeTimeout, SuspicionMult: cfg.Timing.SuspicionMult,
			GossipInterval: cfg.Timing.GossipInterval, PushPull: cfg.Timing.PushPull, ReconnectInterval: cfg.Timing.ReconnectInterval,
			ReapAfter: cfg.Timing.ReapAfter, JoinBackoffMax: cfg.Timing.JoinBackoffMax,
		},
		Filter: cfg.Filter, Logger: n.log, OnChange: n.leader.Poke,
	}, id, raftBootstrap{n}, promiser{n.pool})
	if err != nil {
		if errors.Is(err, membership.ErrInvalidAddr) {
			return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
		return err
	}
	n.runner = runner.New(runner.Config{
		Name: cfg.Name, ShardsPerCluster: cfg.ShardsPerCluster, CheckpointInterval: cfg.CheckpointInterval,
		Token: cfg.Token, APIBase: cfg.APIBase, GatewayURL: cfg.GatewayURL, Intents: cfg.Intents,
		Compression: cfg.Compression, NoSessionStealing: cfg.NoSessionStealing, TokenRetryMax: cfg.Timing.TokenRetryMax,
		Sink: n.metrics.Sink(n.eventSink()), Events: eventSet(cfg.Events), Observer: n.metrics, Logger: n.log,
	}, runner.Deps{
		FSM: n.fsm, Leader: n.toLeader, Proposer: proposer{n}, LeaderAddr: n.leaderAddr, Notify: notifier{n},
		Lease: n.leaseDuration, GatewayBot: n.gatewayBot, Cuts: n.pool.Cut,
	})

	loopback := IsLoopback(cfg.HTTPAddr)
	auth := api.Auth{Token: cfg.HTTPToken.Reveal(), Reads: !loopback, InsecureWrites: loopback && cfg.HTTPInsecureLoopback}
	// Every request is bounded in time and size: a slow or idle client holds nothing.
	handler := api.Handler(backend{n}, auth, api.WithMetrics(n.metrics.Handler()), api.WithPprof(metrics.Pprof()), n.webView())
	n.http = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 15 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	serve := n.http.Serve
	if cfg.HTTPTLS {
		// The node's certificate, through the pointer ReloadTLS swaps: a SIGHUP renews
		// the API's with the cluster port's. A failed handshake goes to the log.
		n.http.TLSConfig = n.certs.APIServer()
		n.http.ErrorLog = slog.NewLogLogger(n.log.With("component", "http").Handler(), slog.LevelWarn)
		serve = func(l net.Listener) error { return n.http.ServeTLS(l, "", "") }
	}
	n.goRun(func() { serve(n.httpLn) })
	n.goRun(func() { rpc.Serve(n.ctx, n.mux.RPC(), service{n}, certs.PeerNode) })
	n.goRun(func() { n.leader.Run(n.ctx, notify) })
	n.goRun(func() { n.leader.WatchHeartbeats(n.ctx) })
	n.goRun(n.watchState)
	n.goRun(func() { n.runner.Run(n.ctx) })
	n.goRun(n.endOwnLeaveDrain)
	if cfg.Commands != nil {
		n.goRun(n.readCommands)
	}
	n.log.Info("node started", "gossip", n.gossip.Addr(), "cluster", n.advertiseCluster, "http", n.advertiseHTTP,
		"data_dir", cfg.DataDir, "bootstrap_expect", cfg.BootstrapExpect, "existing_state", n.hasRaftState())
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
	ip, err := membership.PrivateIP()
	if err != nil {
		return "", fmt.Errorf("cannot pick an address to advertise (%v): set --advertise", err)
	}
	return ip, nil
}

// write applies a command through the leader, wherever it is, until ctx ends. Every
// command is safe to apply twice (fenced by epoch, or idempotent), so a write whose
// outcome was lost is simply sent again.
func (n *Node) write(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for {
		res, err := n.toLeader.Apply(ctx, cmd)
		if err == nil || errors.Is(err, fsm.ErrInvalid) {
			return res, err
		}
		if !bo.Wait(ctx) {
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		}
	}
}

// watchState pokes the leader and the runner on every applied command.
func (n *Node) watchState() {
	var after uint64
	for {
		idx, err := n.fsm.WaitChange(n.ctx, after)
		if err != nil {
			return
		}
		after = idx
		n.warnLeaseFlag()
		n.leader.Poke()
		n.runner.Poke()
	}
}

// leaseDuration is the cluster's lease: the replicated value, which every node keeps
// and every leader fences with, whatever its own --lease says. Before the cluster
// has a configuration no shard is assigned, and the flag stands in.
func (n *Node) leaseDuration() time.Duration {
	if c := n.fsm.Config(); c.Lease > 0 {
		return c.Lease
	}
	return n.cfg.Lease
}

// warnLeaseFlag says once that --lease differs from the cluster's lease, which is
// the one this node follows.
func (n *Node) warnLeaseFlag() {
	if c := n.fsm.Config(); c.Lease > 0 && c.Lease != n.cfg.Lease && n.leaseWarned.CompareAndSwap(false, true) {
		n.log.Warn("--lease differs from the cluster's lease; following the cluster's (a lease is one value for the whole cluster, set when it was first configured)",
			"flag", n.cfg.Lease, "cluster", c.Lease)
		n.events.Notify(event.Event{Kind: event.FlagOverridden,
			Cause: fmt.Sprintf("--lease %v ignored: the cluster's lease is %v", n.cfg.Lease, c.Lease)})
	}
}

func (n *Node) gatewayBot(ctx context.Context) (shard.GatewayBot, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return shard.FetchGatewayBot(ctx, nil, n.cfg.APIBase, n.cfg.Token)
}

// processGone reports whether addr's machine answers but nothing listens on the port:
// the process died, and its websockets with it.
func (n *Node) processGone(addr string) bool {
	c, err := n.mux.Dial(addr, transport.ProtoRPC, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// canReach dials addr's cluster port, handshake included.
func (n *Node) canReach(addr string) error {
	c, err := n.mux.Dial(addr, transport.ProtoRPC, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func (n *Node) leaderAddr() string {
	addr, _ := n.raft.LeaderWithID()
	return string(addr)
}

// ReloadTLS reads the node's certificate and key again (a renewal), for the
// connections made from then on; the CA stays. A node without TLS has nothing to do.
func (n *Node) ReloadTLS() error {
	if n.certs == nil {
		return nil
	}
	if err := n.certs.Reload(); err != nil {
		return err
	}
	n.log.Info("cluster port: certificate reloaded", "expires", n.certs.Expires().Format(time.DateOnly))
	return nil
}

// Fatal delivers an error that should end the agent: this node cannot become part
// of the cluster it was told to join.
func (n *Node) Fatal() <-chan error { return n.gossip.Fatal() }

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// HTTPAddr is the address the API listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// GossipAddr is the address other nodes join.
func (n *Node) GossipAddr() string { return n.gossip.Addr() }

// ClusterAddr is the advertised Raft and RPC address.
func (n *Node) ClusterAddr() string { return n.advertiseCluster }

// IsLeader reports whether this node leads and has finished taking over.
func (n *Node) IsLeader() bool { return n.leader.IsLeader() }

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

func (n *Node) raftPeers() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	return len(f.Configuration().Servers)
}

func (n *Node) shutdown() {
	n.cancel()
	if n.runner != nil {
		n.runner.Kill()
	}
	if n.http != nil {
		n.http.Close()
	}
	if n.gossip != nil {
		n.gossip.Shutdown()
	}
	if n.raft != nil {
		n.raft.Shutdown().Error()
	}
	if n.pool != nil {
		n.pool.Close()
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

// eventSet is --events as a set; nil (every type) when none are named.
func eventSet(names []string) map[string]bool {
	if len(names) == 0 {
		return nil
	}
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	return set
}
