package leader

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/internal/fakeclock"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/membership"
	"github.com/discluster/discluster/node/rpc"
	"github.com/discluster/discluster/shard"
)

type staticMembers []membership.Member

func (m staticMembers) Members() []membership.Member { return m }

// soloLeader is a Leader on a one-node in-memory Raft: the real grant code, with the
// clock in the test's hands.
func soloLeader(t *testing.T, gossip ...membership.Member) (*Leader, *fsm.FSM, *fakeclock.Clock) {
	t.Helper()
	return soloLeaderWith(t, soloOptions{}, gossip...)
}

// soloOptions change soloLeader's defaults: Discord unreachable, nobody's shards
// polled, no automatic reshard.
type soloOptions struct {
	gatewayBot  func(context.Context) (shard.GatewayBot, error)
	localShards func(context.Context, fsm.Member) ([]rpc.LocalShard, error)
	threshold   float64
	notify      event.Notifier
}

func soloLeaderWith(t *testing.T, o soloOptions, gossip ...membership.Member) (*Leader, *fsm.FSM, *fakeclock.Clock) {
	t.Helper()
	f := fsm.New()
	_, trans := raft.NewInmemTransport("a")
	rc := raft.DefaultConfig()
	rc.LocalID = "a"
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	rc.CommitTimeout = time.Millisecond
	rc.Logger = hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	notify := make(chan bool, 8)
	rc.NotifyCh = notify
	store := raft.NewInmemStore()
	r, err := raft.NewRaft(rc, f, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "a", Address: trans.LocalAddr()}}}).Error(); err != nil {
		t.Fatal(err)
	}
	clk := fakeclock.New(time.Unix(1_000_000, 0)) // long past: the gate's hold of a new leader is over
	done := make(chan struct{})
	if len(gossip) == 0 {
		gossip = []membership.Member{{Name: "a", Status: membership.StatusAlive, Weight: 1, RPCAddr: string(trans.LocalAddr())}}
	}
	if o.gatewayBot == nil {
		o.gatewayBot = func(context.Context) (shard.GatewayBot, error) {
			return shard.GatewayBot{}, errors.New("no Discord here")
		}
	}
	if o.notify == nil {
		o.notify = event.NewLog("a", clk.Now)
	}
	l := New(Config{Name: "a", Voters: 3, MaxMoves: 16, Shards: 4, MaxConcurrency: 1, ShardsPerCluster: 4,
		IdentifyWindow: time.Millisecond, Lease: lease, CheckpointInterval: time.Second, ReconcileInterval: 10 * time.Millisecond,
		ProbeEvery: time.Millisecond, ReshardAutoThreshold: o.threshold, ReshardPoll: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)},
		Deps{Raft: r, FSM: f, Members: staticMembers(gossip), Notify: o.notify, Now: clk.Now,
			Lease: func() time.Duration { return lease }, ProcessGone: func(string) bool { return false },
			GatewayBot: o.gatewayBot, LocalShards: o.localShards, Done: done})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		l.Run(ctx, notify)
	}()
	t.Cleanup(func() {
		cancel()
		<-ran
		close(done)
		r.Shutdown().Error()
	})
	deadline := time.Now().Add(10 * time.Second)
	for !l.IsLeader() || len(f.ShardsOf("a")) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("no leader with every shard placed within 10s (leader %v, %d shards)", l.IsLeader(), len(f.ShardsOf("a")))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return l, f, clk
}

// The leader grants an identify only while the asker holds a lease from it: one
// lease after the last grant, the same owner at the same epoch is refused.
func TestIdentifyRefusedWithoutALease(t *testing.T) {
	l, f, clk := soloLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, _ := f.Assignment(0)
	if _, err := l.GrantIdentify(ctx, "a", 0, 0, a.Epoch); !errors.Is(err, rpc.ErrNotOwner) || !strings.Contains(err.Error(), "no lease") {
		t.Fatalf("identify before any lease: %v, want ErrNotOwner (no lease)", err)
	}
	if _, err := l.GrantLease(ctx, rpc.RenewArgs{Node: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GrantIdentify(ctx, "a", 0, 0, a.Epoch); err != nil {
		t.Fatalf("identify with a fresh lease: %v", err)
	}
	clk.Add(lease - time.Millisecond)
	b, _ := f.Assignment(1)
	if _, err := l.GrantIdentify(ctx, "a", 0, 1, b.Epoch); err != nil {
		t.Fatalf("identify just inside the lease: %v", err)
	}
	clk.Add(time.Millisecond)
	if _, err := l.GrantIdentify(ctx, "a", 0, 2, a.Epoch); !errors.Is(err, rpc.ErrNotOwner) {
		t.Fatalf("identify once the lease ran out: %v, want ErrNotOwner", err)
	}
}

// A node marked failed gets no lease: the leader is waiting for its last one to run
// out. Its asking is remembered as proof that a process runs there again.
func TestLeaseRefusedToAFailedNode(t *testing.T) {
	l, _, _ := soloLeader(t,
		membership.Member{Name: "a", Status: membership.StatusAlive, Weight: 1, RPCAddr: "a"},
		membership.Member{Name: "b", Status: membership.StatusFailed, Weight: 1, RPCAddr: "b"})
	if _, err := l.Apply(fsm.UpsertMember{Member: fsm.Member{ID: "b", Weight: 1, State: fsm.Alive}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Apply(fsm.MarkFailed{ID: "b", At: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := l.GrantLease(context.Background(), rpc.RenewArgs{Node: "b"})
	if !errors.Is(err, rpc.ErrLeaseRefused) {
		t.Fatalf("lease to a failed node: %v, want ErrLeaseRefused", err)
	}
	t.Logf("refused with: %v", err)
	tm := l.cur.Load()
	tm.mu.Lock()
	asked := tm.grants.AskedWhileFailed["b"]
	tm.mu.Unlock()
	if !asked {
		t.Fatal("the refused ask was not remembered")
	}
}
