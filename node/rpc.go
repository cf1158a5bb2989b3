package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"sync"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/transport"
)

// The node-to-node RPCs, served on the cluster port (net/rpc, gob-encoded). Writes go
// to the leader: any node accepts them and forwards them there.

// ApplyArgs carries one encoded fsm command to the leader.
type ApplyArgs struct{ Command []byte }

// RPCStatus is how a service's error crosses the wire: net/rpc carries an error's text
// only, so every reply embeds the error's code, which the caller's errors.Is branches
// on, beside its text. A method returns nil and fills this in.
type RPCStatus struct {
	Code    string // one of the codes of wireCodes; "" for an error without one
	Message string // the error's text; "" for success
}

// wireCodes are the errors a caller branches on, by their code on the wire.
var wireCodes = map[string]error{
	"not_leader": ErrNotLeader, "no_leader": ErrNoLeader, "lease_refused": ErrLeaseRefused,
	"budget_low": ErrBudgetLow, "not_owner": ErrNotOwner, "invalid_command": fsm.ErrInvalid,
}

func (s *RPCStatus) rpcStatus() *RPCStatus { return s }

// set records err (nil for success) in the reply.
func (s *RPCStatus) set(err error) {
	*s = RPCStatus{}
	if err == nil {
		return
	}
	s.Message = err.Error()
	for code, sentinel := range wireCodes {
		if errors.Is(err, sentinel) {
			s.Code = code
			return
		}
	}
}

// err is the error the reply carries, matching its sentinel with errors.Is.
func (s *RPCStatus) err() error {
	if s.Message == "" && s.Code == "" {
		return nil
	}
	return &remoteErr{msg: s.Message, sentinel: wireCodes[s.Code]}
}

// remoteErr is an error a peer's service returned.
type remoteErr struct {
	msg      string
	sentinel error // nil when the error had no code
}

func (e *remoteErr) Error() string        { return e.msg }
func (e *remoteErr) Is(target error) bool { return e.sentinel != nil && target == e.sentinel }

// statusReply is every reply: it embeds RPCStatus.
type statusReply interface{ rpcStatus() *RPCStatus }

// ApplyReply is the command's outcome.
type ApplyReply struct {
	RPCStatus
	Index   uint64
	Applied int
	Stale   []fsm.Stale
}

// RenewArgs asks the leader to renew a node's lease.
type RenewArgs struct{ Node string }

// RenewReply grants the lease for Lease, the cluster's replicated value, counted by
// the node from when it sent the request. The node counts it only once its state
// machine has applied Index, so that it has seen every move the leader had made by then.
type RenewReply struct {
	RPCStatus
	Index uint64
	Lease time.Duration
}

// IdentifyArgs asks the leader for a turn to IDENTIFY shard Shard, which Node runs
// under the assignment of Epoch. The leader grants it only while that is the shard's
// current assignment and Node holds a lease.
type IdentifyArgs struct {
	Node  string
	Shard int
	Epoch uint64
}

// IdentifyReply grants it. Waited is how long the request waited at the leader before
// the grant: the asker subtracts it from its round trip to bound how old the grant is
// without comparing clocks.
type IdentifyReply struct {
	RPCStatus
	Waited time.Duration
}

// IdentifySentArgs tells the leader that the IDENTIFY it granted shard Shard has been
// written: the bucket's next grant is timed from here, not from the grant.
type IdentifySentArgs struct {
	Node  string
	Shard int
}

// IdentifySentReply is empty.
type IdentifySentReply struct{ RPCStatus }

// ShardsArgs asks a node what its shards are doing.
type ShardsArgs struct{}

// ShardsReply is a node's local view, for status.
type ShardsReply struct {
	RPCStatus
	Shards []LocalShard
	Budget *Budget // from the leader only
	Lease  LeaseStatus
	Sink   SinkStatus
	Events []Event
}

// LocalShard is a shard as its node runs it.
type LocalShard struct {
	Info    shard.Info
	Cluster int
	Epoch   uint64
}

// rpcService is what the RPC server exposes as "Node".
type rpcService struct{ n *Node }

// rpcTimeout bounds every RPC but the identify wait.
const rpcTimeout = 5 * time.Second

func (s *rpcService) Apply(args *ApplyArgs, reply *ApplyReply) error {
	cmd, err := fsm.Decode(args.Command)
	if err != nil {
		reply.set(fmt.Errorf("apply: %w", err))
		return nil
	}
	res, err := s.n.applyLocal(cmd)
	if err != nil {
		reply.set(err)
		return nil
	}
	*reply = ApplyReply{Index: res.Index, Applied: res.Applied, Stale: res.Stale}
	return nil
}

func (s *rpcService) Renew(args *RenewArgs, reply *RenewReply) error {
	ctx, cancel := context.WithTimeout(s.n.ctx, rpcTimeout)
	defer cancel()
	g, err := s.n.grantLease(ctx, args.Node)
	*reply = RenewReply{Index: g.Index, Lease: g.Lease}
	reply.set(err)
	return nil
}

func (s *rpcService) Identify(args *IdentifyArgs, reply *IdentifyReply) error {
	ctx, cancel := context.WithTimeout(s.n.ctx, identifyRPCTimeout)
	defer cancel()
	start := time.Now()
	granted, err := s.n.grantIdentify(ctx, args.Node, args.Shard, args.Epoch)
	reply.Waited = granted.Sub(start)
	reply.set(err)
	return nil
}

func (s *rpcService) IdentifySent(args *IdentifySentArgs, reply *IdentifySentReply) error {
	s.n.identifySent(args.Shard)
	return nil
}

func (s *rpcService) Shards(args *ShardsArgs, reply *ShardsReply) error {
	*reply = s.n.localShards()
	return nil
}

// identifyRPCTimeout bounds one identify wait at the leader; the node asks again.
const identifyRPCTimeout = 30 * time.Second

// serveRPC serves the RPC listener until it closes.
func (n *Node) serveRPC(ln net.Listener) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Node", &rpcService{n: n}); err != nil {
		panic(err) // the method set is fixed at compile time
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			// Peers keep their connections open; shutdown must not wait for them.
			stop := context.AfterFunc(n.ctx, func() { conn.Close() })
			defer stop()
			srv.ServeConn(conn)
		}()
	}
}

// peers keeps one RPC client per node address.
type peers struct {
	mux *transport.Mux
	mu  sync.Mutex
	m   map[string]*rpc.Client
}

func newPeers(mux *transport.Mux) *peers {
	return &peers{mux: mux, m: make(map[string]*rpc.Client)}
}

func (p *peers) client(addr string) (*rpc.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.m[addr]; ok {
		return c, nil
	}
	conn, err := p.mux.Dial(addr, transport.ProtoRPC, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := rpc.NewClient(conn)
	p.m[addr] = c
	return c, nil
}

func (p *peers) drop(addr string, c *rpc.Client) {
	p.mu.Lock()
	if p.m[addr] == c {
		delete(p.m, addr)
	}
	p.mu.Unlock()
	c.Close()
}

// call runs one RPC on the node at addr, until ctx ends.
func (p *peers) call(ctx context.Context, addr, method string, args, reply any) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	call := c.Go("Node."+method, args, reply, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
		var se rpc.ServerError
		if call.Error != nil && !errors.As(call.Error, &se) {
			p.drop(addr, c) // the connection broke; dial afresh next time
		}
		if call.Error != nil {
			return call.Error
		}
		if sr, ok := reply.(statusReply); ok {
			return sr.rpcStatus().err()
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, c := range p.m {
		c.Close()
		delete(p.m, addr)
	}
}

// Errors of the leader's services.
var (
	ErrNotLeader    = errors.New("not the leader")
	ErrNoLeader     = errors.New("no leader")
	ErrLeaseRefused = errors.New("lease refused")
	ErrBudgetLow    = errors.New("session start budget low")
	// ErrNotOwner refuses an identify to a node that is not the shard's current owner
	// with a lease.
	ErrNotOwner = errors.New("not the shard's owner")
)
