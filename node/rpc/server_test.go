package rpc

import (
	"context"
	"crypto/tls"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/internal/certs"
	"github.com/discluster/discluster/node/api"
)

// stubService answers like a leader that refuses some things. standing is what it
// knows of each caller; nil knows every caller as a member.
type stubService struct {
	sent     chan int
	mu       sync.Mutex
	standing map[string]Standing
}

func (s *stubService) Cut(CutArgs) (map[int][]CutKey, bool) { return nil, true }

func (s *stubService) Reshard(context.Context, ReshardArgs) (fsm.Reshard, error) {
	return fsm.Reshard{}, errors.New("not the leader")
}

func (s *stubService) Standing(node string) Standing {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.standing == nil {
		return Standing{Replicated: true, Gossip: true}
	}
	return s.standing[node]
}

func (s *stubService) set(node string, st Standing) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.standing[node] = st
}

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

func (s *stubService) GrantIdentify(_ context.Context, node string, _ uint64, shard int, epoch uint64) (time.Time, error) {
	if epoch != 5 {
		return time.Time{}, fmt.Errorf("%w: shard %d is at epoch 5", ErrNotOwner, shard)
	}
	return time.Now(), nil
}

func (s *stubService) IdentifySent(shard int) { s.sent <- shard }
func (s *stubService) Send(_ context.Context, args SendArgs) (string, error) {
	switch args.Shard {
	case 1:
		return "", &api.RetryError{Err: fmt.Errorf("%w: shard 1", api.ErrRateLimited), After: 3 * time.Second}
	case 2:
		return "", fmt.Errorf("%w: shard 2", api.ErrUnknownShard)
	}
	return "owner", nil
}
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

// serve starts svc on a loopback port and returns its address; pools made with
// dialPool are closed with it.
func serve(t *testing.T, svc Service, peerName PeerName, ln net.Listener) string {
	t.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		Serve(ctx, ln, svc, peerName)
	}()
	t.Cleanup(func() {
		ln.Close()
		cancel()
		<-served
	})
	return ln.Addr().String()
}

// dialPool is a pool of the node self over plain TCP.
func dialPool(t *testing.T, self string) *Pool {
	p := NewPool(self, func(addr string, timeout time.Duration) (net.Conn, error) {
		return net.DialTimeout("tcp", addr, timeout)
	})
	t.Cleanup(p.Close)
	return p
}

// Every call crosses a real connection and comes back with its answer, and every
// refusal with its code.
func TestToLeaderOverTheWire(t *testing.T) {
	svc := &stubService{sent: make(chan int, 1)}
	addr := serve(t, svc, nil, nil)
	pool := dialPool(t, "n1")
	to := &ToLeader{Node: "n1", Where: leaderAt(addr), Pool: pool}
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
	failed := &ToLeader{Node: "failed", Where: to.Where, Pool: dialPool(t, "failed")}
	if _, err := failed.Renew(cctx, ""); !errors.Is(err, ErrLeaseRefused) {
		t.Fatalf("renew of a failed node: %v, want ErrLeaseRefused", err)
	}
	if leader, waited, err := to.Identify(cctx, 0, 3, 5); err != nil || leader != addr || waited < 0 {
		t.Fatalf("identify: %s %v %v", leader, waited, err)
	}
	if _, _, err := to.Identify(cctx, 0, 3, 4); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("identify at a stale epoch: %v, want ErrNotOwner", err)
	}
	if err := to.IdentifySent(cctx, 3); err != nil || <-svc.sent != 3 {
		t.Fatalf("identify report: %v", err)
	}
	var sr ShardsReply
	if err := pool.Call(cctx, addr, "Shards", &ShardsArgs{}, &sr); err != nil || len(sr.Shards) != 1 || sr.Shards[0].Epoch != 5 {
		t.Fatalf("shards: %+v, %v", sr, err)
	}
	if err := pool.Call(cctx, addr, "BootstrapPromise", &PromiseArgs{}, &PromiseReply{}); err == nil {
		t.Fatal("a refused promise came back as success")
	}
	if err := dialPool(t, "b1").Call(cctx, addr, "BootstrapPromise", &PromiseArgs{}, &PromiseReply{}); err != nil {
		t.Fatalf("b1's promise: %v", err)
	}
	if node, err := pool.Send(cctx, addr, SendArgs{Shard: 0, Op: 3}); err != nil || node != "owner" {
		t.Fatalf("send: %q, %v", node, err)
	}
	var retry *api.RetryError
	if _, err := pool.Send(cctx, addr, SendArgs{Shard: 1, Op: 3}); !errors.Is(err, api.ErrRateLimited) || !errors.As(err, &retry) || retry.After != 3*time.Second {
		t.Fatalf("a rate-limited send: %v, want api.ErrRateLimited with its wait", err)
	}
	if _, err := pool.Send(cctx, addr, SendArgs{Shard: 2, Op: 3}); !errors.Is(err, api.ErrUnknownShard) {
		t.Fatalf("a send to an unknown shard: %v, want api.ErrUnknownShard", err)
	}
	none := &ToLeader{Node: "n1", Where: leaderAt(""), Pool: pool}
	if _, err := none.Renew(cctx, ""); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("renew with no leader: %v, want ErrNoLeader", err)
	}
}

// Each call is checked against what the receiver knows of its caller at that
// moment: a stranger gets nothing, a node only in the gossip pool may ask for a
// lease and a promise but not write, and a member removed while its connection stays
// open is refused from then on.
func TestCallersMustBeCurrentMembers(t *testing.T) {
	svc := &stubService{sent: make(chan int, 1), standing: map[string]Standing{
		"n1": {Replicated: true, Gossip: true}, "b1": {Gossip: true}}}
	addr := serve(t, svc, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	calls := map[string]func(*ToLeader) error{
		"apply":    func(to *ToLeader) error { _, err := to.Apply(ctx, fsm.Undrain{ID: "x"}); return err },
		"renew":    func(to *ToLeader) error { _, err := to.Renew(ctx, ""); return err },
		"identify": func(to *ToLeader) error { _, _, err := to.Identify(ctx, 0, 3, 5); return err },
		"sent":     func(to *ToLeader) error { return to.IdentifySent(ctx, 3) },
		"shards":   func(to *ToLeader) error { return to.Pool.Call(ctx, addr, "Shards", &ShardsArgs{}, &ShardsReply{}) },
		"promise": func(to *ToLeader) error {
			return to.Pool.Call(ctx, addr, "BootstrapPromise", &PromiseArgs{}, &PromiseReply{})
		},
	}
	as := func(node string) *ToLeader {
		return &ToLeader{Node: node, Where: leaderAt(addr), Pool: dialPool(t, node)}
	}
	check := func(to *ToLeader, allowed ...string) {
		t.Helper()
		for name, call := range calls {
			err := call(to)
			if slices.Contains(allowed, name) {
				if errors.Is(err, ErrNotMember) {
					t.Errorf("%s's %s was refused: %v", to.Node, name, err)
				}
			} else if !errors.Is(err, ErrNotMember) {
				t.Errorf("%s's %s: %v, want ErrNotMember", to.Node, name, err)
			}
		}
	}
	n1 := as("n1")
	check(n1, "apply", "renew", "identify", "sent", "shards", "promise")
	check(as("b1"), "renew", "shards", "promise")
	check(as("stranger"))

	svc.set("n1", Standing{}) // removed; its connection stays open
	check(n1)
	if _, err := n1.Apply(ctx, fsm.Undrain{ID: "x"}); err == nil || !strings.Contains(err.Error(), "not a current member") {
		t.Errorf("the refusal does not say why: %v", err)
	}
}

// A connection whose certificate names a node speaks for that node only.
func TestTheCertificateNamesTheCaller(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey, err := certs.NewCA(1)
	if err != nil {
		t.Fatal(err)
	}
	load := func(name string) *certs.Config {
		f, err := certs.IssueFiles(dir, caCert, caKey, name, []net.IP{net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := certs.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	server, n1 := load("server"), load("n1")
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := &stubService{sent: make(chan int, 1)}
	addr := serve(t, svc, certs.PeerNode, tls.NewListener(raw, server.Server()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	withN1Cert := func(self string) *Pool {
		p := NewPool(self, func(addr string, timeout time.Duration) (net.Conn, error) {
			return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, n1.Client())
		})
		t.Cleanup(p.Close)
		return p
	}
	if _, err := (&ToLeader{Node: "n1", Where: leaderAt(addr), Pool: withN1Cert("n1")}).Apply(ctx, fsm.Undrain{ID: "x"}); err != nil {
		t.Fatalf("n1 with its own certificate: %v", err)
	}
	_, err = (&ToLeader{Node: "n2", Where: leaderAt(addr), Pool: withN1Cert("n2")}).Apply(ctx, fsm.Undrain{ID: "x"})
	if !errors.Is(err, ErrNotMember) || !strings.Contains(err.Error(), "certificate names n1") {
		t.Fatalf("n1's certificate speaking for n2: %v, want ErrNotMember naming the certificate", err)
	}
}

// writeHello opens a raw connection to addr and names itself, as the pool does.
func writeHello(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := gob.NewEncoder(c).Encode(hello{From: "n1"}); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitClosed waits until the server closes c, failing after within.
func waitClosed(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close the connection within %v", within)
	}
}

// A message whose length is over the limit is refused from its length alone: gob
// would allocate it all before reading a byte of it.
func TestAMessageOverItsLimitIsRefusedBeforeItIsRead(t *testing.T) {
	addr := serve(t, &stubService{sent: make(chan int, 1)}, nil, nil)
	for _, size := range []uint32{MaxRequest + 1, 1 << 30} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c := writeHello(t, addr)
		prefix := []byte{0xfc, byte(size >> 24), byte(size >> 16), byte(size >> 8), byte(size)} // gob: 4 bytes follow
		if _, err := c.Write(prefix); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c, 5*time.Second)
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > MaxRequest {
			t.Errorf("a %d-byte message's length made the process allocate %d bytes", size, grew)
		}
	}
	// Under the limit, a large request still goes through.
	pool := dialPool(t, "n1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	big := &ApplyArgs{Command: make([]byte, MaxRequest/2)}
	if err := pool.Call(ctx, addr, "Apply", big, &ApplyReply{}); err == nil || errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "apply") {
		t.Fatalf("a request under the limit: %v, want the service's own answer (not a command)", err)
	}
}

// A connection that sends nothing, or trickles a message, is closed; the pool dials
// afresh after the server closed its idle connection.
func TestIdleAndSlowConnectionsAreClosed(t *testing.T) {
	idleTimeout, messageTimeout = 300*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { idleTimeout, messageTimeout = IdleTimeout, MessageTimeout })
	addr := serve(t, &stubService{sent: make(chan int, 1)}, nil, nil)

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitClosed(t, silent, 5*time.Second) // no hello

	idle := writeHello(t, addr)
	waitClosed(t, idle, 5*time.Second)

	slow := writeHello(t, addr)
	if _, err := slow.Write([]byte{0x20, 0x01}); err != nil { // a 32-byte message, 1 byte of it
		t.Fatal(err)
	}
	waitClosed(t, slow, 5*time.Second)

	closed := make(chan struct{}, 4)
	pool := NewPool("n1", func(addr string, timeout time.Duration) (net.Conn, error) {
		c, err := net.DialTimeout("tcp", addr, timeout)
		return &noticeClose{Conn: c, closed: closed}, err
	})
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 2 {
		if err := pool.Call(ctx, addr, "Shards", &ShardsArgs{}, &ShardsReply{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		select {
		case <-closed: // the server closed it idle
		case <-ctx.Done():
			t.Fatal("the server kept an idle connection open")
		}
	}
}

// noticeClose says when the peer closed the connection.
type noticeClose struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *noticeClose) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(func() { c.closed <- struct{}{} })
	}
	return n, err
}

// blockedShards answers Shards only once release is closed.
type blockedShards struct {
	*stubService
	release chan struct{}
}

func (b blockedShards) Shards() ShardsReply {
	<-b.release
	return b.stubService.Shards()
}

// A call whose context ends first returns at once, and the answer that comes later
// is never written into the caller's reply, which the caller owns again from the
// moment Call returned (the race detector checks it; the reply stays as it was).
func TestALateAnswerLeavesTheReplyAlone(t *testing.T) {
	svc := blockedShards{&stubService{sent: make(chan int, 1)}, make(chan struct{})}
	addr := serve(t, svc, nil, nil)
	p := dialPool(t, "a1")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var late ShardsReply
	if err := p.Call(ctx, addr, "Shards", &ShardsArgs{}, &late); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call past its deadline: %v", err)
	}
	_ = len(late.Shards) // the caller reads its reply, as localShards does
	close(svc.release)
	var next ShardsReply
	if err := p.Call(context.Background(), addr, "Shards", &ShardsArgs{}, &next); err != nil || len(next.Shards) != 1 {
		t.Fatalf("the next call: %+v, %v", next, err)
	}
	if len(late.Shards) != 0 {
		t.Errorf("the late answer was written into the reply of a call that had returned: %+v", late)
	}
}
