package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/discluster/discluster/fsm"
)

// stubService answers like a leader that refuses some things.
type stubService struct{ sent chan int }

func (s *stubService) Apply(cmd fsm.Command) (*fsm.Result, error) {
	switch cmd.(type) {
	case fsm.Drain, *fsm.Drain: // the local path passes the value, the wire a decoded pointer

		return nil, fmt.Errorf("%w: no such member", fsm.ErrInvalid)
	}
	return &fsm.Result{Index: 7, Applied: 1}, nil
}

func (s *stubService) GrantLease(_ context.Context, args RenewArgs) (LeaseGrant, error) {
	if args.Node == "failed" {
		return LeaseGrant{}, fmt.Errorf("%w: %s is marked failed", ErrLeaseRefused, args.Node)
	}
	if args.Unfit != "" {
		return LeaseGrant{Index: 1, Lease: time.Second}, nil
	}
	return LeaseGrant{Index: 9, Lease: 3 * time.Second}, nil
}

func (s *stubService) GrantIdentify(_ context.Context, node string, shard int, epoch uint64) (time.Time, error) {
	if epoch != 5 {
		return time.Time{}, fmt.Errorf("%w: shard %d is at epoch 5", ErrNotOwner, shard)
	}
	return time.Now(), nil
}

func (s *stubService) IdentifySent(shard int) { s.sent <- shard }
func (s *stubService) Shards() ShardsReply {
	return ShardsReply{Shards: []LocalShard{{Cluster: 2, Epoch: 5}}}
}
func (s *stubService) Promise(from string, release bool) error {
	if from != "b1" {
		return errors.New("promised to b1's bootstrap")
	}
	return nil
}

// leaderAt says the leader is addr, another node.
type leaderAt string

func (l leaderAt) Leader() (string, bool) { return string(l), false }
func (l leaderAt) LastContact() time.Time { return time.Time{} }

// Every call crosses a real connection and comes back with its answer, and every
// refusal with its code.
func TestToLeaderOverTheWire(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := &stubService{sent: make(chan int, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		Serve(ctx, ln, svc)
	}()
	pool := NewPool(func(addr string, timeout time.Duration) (net.Conn, error) {
		return net.DialTimeout("tcp", addr, timeout)
	})
	t.Cleanup(func() {
		pool.Close()
		ln.Close()
		cancel()
		<-served
	})
	to := &ToLeader{Node: "n1", Where: leaderAt(ln.Addr().String()), Pool: pool}
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()

	if res, err := to.Apply(cctx, fsm.Undrain{ID: "x"}); err != nil || res.Index != 7 || res.Applied != 1 {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	if _, err := to.Apply(cctx, fsm.Drain{ID: "x"}); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("a refused apply: %v, want fsm.ErrInvalid", err)
	}
	if g, err := to.Renew(cctx, ""); err != nil || g.Index != 9 || g.Lease != 3*time.Second {
		t.Fatalf("renew: %+v, %v", g, err)
	}
	if g, err := to.Renew(cctx, "token rejected"); err != nil || g.Index != 1 {
		t.Fatalf("renew of an unfit node: %+v, %v (the reason did not cross the wire)", g, err)
	}
	failed := &ToLeader{Node: "failed", Where: to.Where, Pool: pool}
	if _, err := failed.Renew(cctx, ""); !errors.Is(err, ErrLeaseRefused) {
		t.Fatalf("renew of a failed node: %v, want ErrLeaseRefused", err)
	}
	if leader, waited, err := to.Identify(cctx, 3, 5); err != nil || leader != ln.Addr().String() || waited < 0 {
		t.Fatalf("identify: %s %v %v", leader, waited, err)
	}
	if _, _, err := to.Identify(cctx, 3, 4); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("identify at a stale epoch: %v, want ErrNotOwner", err)
	}
	if err := to.IdentifySent(cctx, 3); err != nil || <-svc.sent != 3 {
		t.Fatalf("identify report: %v", err)
	}
	var sr ShardsReply
	if err := pool.Call(cctx, ln.Addr().String(), "Shards", &ShardsArgs{}, &sr); err != nil || len(sr.Shards) != 1 || sr.Shards[0].Epoch != 5 {
		t.Fatalf("shards: %+v, %v", sr, err)
	}
	if err := pool.Call(cctx, ln.Addr().String(), "BootstrapPromise", &PromiseArgs{From: "b2"}, &PromiseReply{}); err == nil {
		t.Fatal("a refused promise came back as success")
	}
	none := &ToLeader{Node: "n1", Where: leaderAt(""), Pool: pool}
	if _, err := none.Renew(cctx, ""); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("renew with no leader: %v, want ErrNoLeader", err)
	}
}
