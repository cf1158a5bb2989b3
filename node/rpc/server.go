package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"sync"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/api"
)

// Timeout bounds every RPC but the identify wait.
const Timeout = 5 * time.Second

// MaxSendHops bounds how often a command is forwarded toward its shard's owner: from
// the node that took it to the owner it knows, and once more should that owner have
// seen the shard move on. Past it the answer is api.ErrOwnerMoving.
const MaxSendHops = 2

// IdentifyTimeout bounds one identify wait at the leader; the asker asks again.
const IdentifyTimeout = 30 * time.Second

// ReshardTimeout bounds a reshard's start at the leader: Discord's recommendation
// (GET /gateway/bot, up to 10 s) and a write.
const ReshardTimeout = 25 * time.Second

// Service is what a node answers on the cluster port.
type Service interface {
	Apply(cmd fsm.Command) (*fsm.Result, error)
	GrantLease(ctx context.Context, args RenewArgs) (LeaseGrant, error)
	// GrantIdentify returns when the grant was given.
	GrantIdentify(ctx context.Context, node string, gen uint64, shard int, epoch uint64) (time.Time, error)
	IdentifySent(shard int)
	Shards() ShardsReply
	Promise(from string, release bool) error
	// Send writes a command on a shard's connection here, or forwards it toward the
	// shard's owner (see MaxSendHops).
	Send(ctx context.Context, args SendArgs) (node string, err error)
	// Cut is this node's cut of a generation a reshard ended (see CutArgs).
	Cut(args CutArgs) (keys map[int][]CutKey, final bool)
	// Standing is what this node knows of a caller, checked at every call: a node
	// removed while its connection stays open is refused from then on.
	Standing(node string) Standing
	// Reshard starts or cancels a reshard, at the leader.
	Reshard(ctx context.Context, args ReshardArgs) (fsm.Reshard, error)
}

// Standing is what a node knows of another.
type Standing struct {
	// Replicated: in the replicated member table, and not left. Only such a node
	// may write, be granted identifies, or report them.
	Replicated bool
	// Gossip: an alive member of the gossip pool. Enough to ask for a bootstrap
	// promise (there is no table before Raft), a lease (a joining node asks before
	// the leader records it; a lease without shards is harmless) and a node's shards.
	Gossip bool
}

// need is the standing a method asks of its caller.
type need int

const (
	needGossip     need = iota // an alive gossip member
	needMember                 // in the replicated table or an alive gossip member
	needReplicated             // in the replicated table
)

// receiver is what net/rpc exposes as "Node", for the calls of one connection, whose
// hello named the caller.
type receiver struct {
	svc  Service
	ctx  context.Context
	from string
	// refused answers every call when the caller cannot be who it says: its
	// certificate names another node.
	refused error
}

// admit checks the caller may make a call that needs n.
func (r *receiver) admit(n need) error {
	if r.refused != nil {
		return r.refused
	}
	s := r.svc.Standing(r.from)
	ok := false
	switch n {
	case needGossip:
		ok = s.Gossip
	case needMember:
		ok = s.Gossip || s.Replicated
	case needReplicated:
		ok = s.Replicated
	}
	if ok {
		return nil
	}
	switch {
	case s.Gossip:
		return fmt.Errorf("%w: %s is in the gossip pool but not in the replicated member table yet (or no more)", ErrNotMember, r.from)
	case n == needGossip:
		return fmt.Errorf("%w: %s is not an alive member of the gossip pool", ErrNotMember, r.from)
	}
	return fmt.Errorf("%w: %s is not a current member of the cluster (removed, left, or never joined)", ErrNotMember, r.from)
}

func (r *receiver) Apply(args *ApplyArgs, reply *ApplyReply) error {
	if err := r.admit(needReplicated); err != nil {
		reply.Set(err)
		return nil
	}
	cmd, err := fsm.Decode(args.Command)
	if err != nil {
		reply.Set(fmt.Errorf("apply: %w", err))
		return nil
	}
	res, err := r.svc.Apply(cmd)
	if err != nil {
		reply.Set(err)
		return nil
	}
	*reply = ApplyReply{Index: res.Index, Applied: res.Applied, Stale: res.Stale}
	return nil
}

func (r *receiver) Renew(args *RenewArgs, reply *RenewReply) error {
	if err := r.admit(needMember); err != nil {
		reply.Set(err)
		return nil
	}
	args.Node = r.from // a caller speaks for itself only
	ctx, cancel := context.WithTimeout(r.ctx, Timeout)
	defer cancel()
	g, err := r.svc.GrantLease(ctx, *args)
	*reply = RenewReply{LeaseGrant: g}
	reply.Set(err)
	return nil
}

func (r *receiver) Identify(args *IdentifyArgs, reply *IdentifyReply) error {
	if err := r.admit(needReplicated); err != nil {
		reply.Set(err)
		return nil
	}
	args.Node = r.from
	ctx, cancel := context.WithTimeout(r.ctx, IdentifyTimeout)
	defer cancel()
	start := time.Now()
	granted, err := r.svc.GrantIdentify(ctx, args.Node, args.Gen, args.Shard, args.Epoch)
	if err == nil {
		reply.Waited = granted.Sub(start)
	}
	reply.Set(err)
	return nil
}

func (r *receiver) IdentifySent(args *IdentifySentArgs, reply *IdentifySentReply) error {
	if err := r.admit(needReplicated); err != nil {
		reply.Set(err)
		return nil
	}
	r.svc.IdentifySent(args.Shard)
	return nil
}

func (r *receiver) Send(args *SendArgs, reply *SendReply) error {
	if err := r.admit(needReplicated); err != nil {
		reply.Set(err)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.ctx, Timeout)
	defer cancel()
	node, err := r.svc.Send(ctx, *args)
	reply.Node = node
	reply.Set(err)
	var retry *api.RetryError
	if errors.As(err, &retry) {
		reply.RetryAfter = retry.After
	}
	return nil
}

func (r *receiver) Reshard(args *ReshardArgs, reply *ReshardReply) error {
	if err := r.admit(needReplicated); err != nil {
		reply.Set(err)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.ctx, ReshardTimeout)
	defer cancel()
	res, err := r.svc.Reshard(ctx, *args)
	reply.Reshard = res
	reply.Set(err)
	return nil
}

func (r *receiver) Shards(args *ShardsArgs, reply *ShardsReply) error {
	if err := r.admit(needMember); err != nil {
		reply.Set(err)
		return nil
	}
	*reply = r.svc.Shards()
	return nil
}

func (r *receiver) Cut(args *CutArgs, reply *CutReply) error {
	if err := r.admit(needReplicated); err != nil {
		reply.Set(err)
		return nil
	}
	reply.Keys, reply.Final = r.svc.Cut(*args)
	return nil
}

func (r *receiver) BootstrapPromise(args *PromiseArgs, reply *PromiseReply) error {
	if err := r.admit(needGossip); err != nil {
		reply.Set(err)
		return nil
	}
	reply.Set(r.svc.Promise(r.from, args.Release))
	return nil
}

// PeerName is the node a connection's TLS certificate names, "" when it names none
// (plain TCP, or a certificate for the cluster role alone, which may speak for any
// member).
type PeerName func(tls.ConnectionState) string

// Serve answers RPCs on ln with svc until ln closes; it closes the connections it
// serves when ctx ends, and returns once they are all closed. Each connection starts
// with the caller's name; with peerName set, a name its certificate contradicts is
// refused every call.
func Serve(ctx context.Context, ln net.Listener, svc Service, peerName PeerName) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Peers keep their connections open; shutdown must not wait for them.
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			serveConn(ctx, conn, svc, peerName)
		}()
	}
}

func serveConn(ctx context.Context, conn net.Conn, svc Service, peerName PeerName) {
	c := newCodec(conn, MaxRequest, idleTimeout)
	var h hello
	if err := c.dec.Decode(&h); err != nil || h.From == "" {
		conn.Close()
		return
	}
	r := &receiver{svc: svc, ctx: ctx, from: h.From}
	if tc, ok := conn.(interface{ ConnectionState() tls.ConnectionState }); ok && peerName != nil {
		if named := peerName(tc.ConnectionState()); named != "" && named != h.From {
			r.refused = fmt.Errorf("%w: the connection says it is %s, its certificate names %s", ErrNotMember, h.From, named)
		}
	}
	srv := rpc.NewServer()
	if err := srv.RegisterName("Node", r); err != nil {
		panic(err) // the method set is fixed at compile time
	}
	srv.ServeCodec(c)
}
