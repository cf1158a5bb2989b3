package node

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/internal/certs"
	"github.com/discluster/discluster/node/rpc"
	"github.com/discluster/discluster/shard/gatewaytest"
	"github.com/discluster/discluster/transport"
)

// Over mutual TLS, every RPC is its certificate's node's, and only a current
// member's: once a node has left, its certificate, still valid, no longer writes
// through the leader, and no certificate speaks for another node.
func TestARemovedNodesCertificateNoLongerWrites(t *testing.T) {
	c := newTestCluster(t, 4, gatewaytest.Options{})
	caCert, caKey, err := certs.NewCA(1)
	if err != nil {
		t.Fatal(err)
	}
	pki := t.TempDir()
	nodes := c.startNWith(3, func(cfg *Config) {
		f, err := certs.IssueFiles(pki, caCert, caKey, cfg.Name, []net.IP{net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = &f
	})
	leader := c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, leader)
	leaver := c.nonLeader(nodes)

	// A stranger in the gossip pool (no gossip key is set) with a certificate of
	// another CA: the leader cannot reach its cluster port, so it never enters Raft,
	// and is never recorded as a member nor given a shard. Before this rule the
	// leader recorded it on its next pass.
	otherCA, otherKey, err := certs.NewCA(1)
	if err != nil {
		t.Fatal(err)
	}
	strangerCfg := c.config("stranger", 0)
	f, err := certs.IssueFiles(t.TempDir(), otherCA, otherKey, "stranger", []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	strangerCfg.TLS = &f
	stranger := c.start(strangerCfg, leader)
	waitFor(t, 20*time.Second, "the leader to see the stranger in the gossip pool", func() error {
		for _, m := range leader.gossip.Members() {
			if m.Name == "stranger" {
				return nil
			}
		}
		return errors.New("not yet")
	})
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if m, ok := leader.fsm.Member("stranger"); ok {
			t.Fatalf("the stranger was recorded as a member: %+v", m)
		}
	}
	stranger.Kill()

	// A client holding the leaver's certificate, as a removed machine still would.
	conf, err := certs.Load(*leaver.cfg.TLS)
	if err != nil {
		t.Fatal(err)
	}
	mux, err := transport.ListenTLS("127.0.0.1:0", nil, nil, transport.TLS{Server: conf.Server(), Client: conf.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	as := func(name string) *rpc.ToLeader {
		pool := rpc.NewPool(name, func(addr string, timeout time.Duration) (net.Conn, error) {
			return mux.Dial(addr, transport.ProtoRPC, timeout)
		})
		t.Cleanup(pool.Close)
		return &rpc.ToLeader{Node: name, Where: fixedLeader(leader.ClusterAddr()), Pool: pool}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	write := fsm.Undrain{ID: leaver.Name()} // refused by the state (not drained) if it gets that far

	if _, err := as(leaver.Name()).Apply(ctx, write); errors.Is(err, rpc.ErrNotMember) {
		t.Fatalf("a member's own certificate was refused: %v", err)
	}
	other := without(nodes, leaver)[0].Name()
	if _, err := as(other).Apply(ctx, write); !errors.Is(err, rpc.ErrNotMember) || !strings.Contains(err.Error(), "certificate names "+leaver.Name()) {
		t.Fatalf("%s's certificate speaking for %s: %v, want ErrNotMember", leaver.Name(), other, err)
	}

	if err := leaver.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	waitFor(t, 30*time.Second, "the leader to forget the leaver", func() error {
		if m, ok := leader.fsm.Member(leaver.Name()); ok && m.State != fsm.Left {
			return errors.New("still a member: " + m.State.String())
		}
		return nil
	})
	if _, err := as(leaver.Name()).Apply(ctx, write); !errors.Is(err, rpc.ErrNotMember) {
		t.Fatalf("a write with a removed node's certificate: %v, want ErrNotMember", err)
	}
	if _, err := as(leaver.Name()).Renew(ctx, ""); !errors.Is(err, rpc.ErrNotMember) {
		t.Fatalf("a lease for a removed node's certificate: %v, want ErrNotMember", err)
	}
}

// fixedLeader says the leader is at addr, another node.
type fixedLeader string

func (l fixedLeader) Leader() (string, bool) { return string(l), false }
func (l fixedLeader) LastContact() time.Time { return time.Time{} }
