package rpc

import (
	"context"
	"fmt"
	"net"
	"net/rpc"
	"sync"
	"time"

	"github.com/discluster/discluster/fsm"
)

// Timeout bounds every RPC but the identify wait.
const Timeout = 5 * time.Second

// IdentifyTimeout bounds one identify wait at the leader; the asker asks again.
const IdentifyTimeout = 30 * time.Second

// Service is what a node answers on the cluster port.
type Service interface {
	Apply(cmd fsm.Command) (*fsm.Result, error)
	GrantLease(ctx context.Context, args RenewArgs) (LeaseGrant, error)
	// GrantIdentify returns when the grant was given.
	GrantIdentify(ctx context.Context, node string, shard int, epoch uint64) (time.Time, error)
	IdentifySent(shard int)
	Shards() ShardsReply
	Promise(from string, release bool) error
}

// receiver is what net/rpc exposes as "Node".
type receiver struct {
	svc Service
	ctx context.Context
}

func (r *receiver) Apply(args *ApplyArgs, reply *ApplyReply) error {
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
	ctx, cancel := context.WithTimeout(r.ctx, Timeout)
	defer cancel()
	g, err := r.svc.GrantLease(ctx, *args)
	*reply = RenewReply{LeaseGrant: g}
	reply.Set(err)
	return nil
}

func (r *receiver) Identify(args *IdentifyArgs, reply *IdentifyReply) error {
	ctx, cancel := context.WithTimeout(r.ctx, IdentifyTimeout)
	defer cancel()
	start := time.Now()
	granted, err := r.svc.GrantIdentify(ctx, args.Node, args.Shard, args.Epoch)
	if err == nil {
		reply.Waited = granted.Sub(start)
	}
	reply.Set(err)
	return nil
}

func (r *receiver) IdentifySent(args *IdentifySentArgs, reply *IdentifySentReply) error {
	r.svc.IdentifySent(args.Shard)
	return nil
}

func (r *receiver) Shards(args *ShardsArgs, reply *ShardsReply) error {
	*reply = r.svc.Shards()
	return nil
}

func (r *receiver) BootstrapPromise(args *PromiseArgs, reply *PromiseReply) error {
	reply.Set(r.svc.Promise(args.From, args.Release))
	return nil
}

// Serve answers RPCs on ln with svc until ln closes; it closes the connections it
// serves when ctx ends, and returns once they are all closed.
func Serve(ctx context.Context, ln net.Listener, svc Service) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Node", &receiver{svc: svc, ctx: ctx}); err != nil {
		panic(err) // the method set is fixed at compile time
	}
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
			srv.ServeConn(conn)
		}()
	}
}
