package rpc

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"reflect"
	"sync"
	"time"

	"github.com/discluster/discluster/node/api"
)

// Dialer opens a connection to a peer's RPC service.
type Dialer func(addr string, timeout time.Duration) (net.Conn, error)

// Pool keeps one RPC client per node address, each connection opened with this
// node's name.
type Pool struct {
	self string
	dial Dialer
	mu   sync.Mutex
	m    map[string]*pooled
}

type pooled struct {
	c        *rpc.Client
	lastUsed time.Time
}

// NewPool dials peers with dial, as the node self.
func NewPool(self string, dial Dialer) *Pool {
	return &Pool{self: self, dial: dial, m: make(map[string]*pooled)}
}

func (p *Pool) client(addr string) (*rpc.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc, ok := p.m[addr]; ok {
		// The peer closes a connection idle for IdleTimeout; one idle for half of it
		// is dialed afresh rather than risked.
		if time.Since(pc.lastUsed) < idleTimeout/2 {
			pc.lastUsed = time.Now()
			return pc.c, nil
		}
		pc.c.Close()
		delete(p.m, addr)
	}
	conn, err := p.dial(addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := newCodec(conn, MaxReply, 0)
	if err := c.write(hello{From: p.self}, nil); err != nil {
		conn.Close()
		return nil, err
	}
	cl := rpc.NewClientWithCodec(c)
	p.m[addr] = &pooled{c: cl, lastUsed: time.Now()}
	return cl, nil
}

func (p *Pool) drop(addr string, c *rpc.Client) {
	p.mu.Lock()
	if pc, ok := p.m[addr]; ok && pc.c == c {
		delete(p.m, addr)
	}
	p.mu.Unlock()
	c.Close()
}

// Call runs one RPC on the node at addr, until ctx ends. An error the peer's service
// returned keeps its code: errors.Is matches this package's sentinels.
func (p *Pool) Call(ctx context.Context, addr, method string, args, reply any) error {
	err := p.call(ctx, addr, method, args, reply)
	if errors.Is(err, rpc.ErrShutdown) {
		// The connection was closed (the peer restarted, or closed it idle) before
		// the call went out: nothing was sent, so one fresh try is safe.
		err = p.call(ctx, addr, method, args, reply)
	}
	return err
}

func (p *Pool) call(ctx context.Context, addr, method string, args, reply any) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	// The call decodes into a reply of its own, copied to the caller's only when it
	// ends in time: after ctx ends the caller has its answer and may read reply
	// while a late response would still be decoded into it.
	into := reflect.New(reflect.TypeOf(reply).Elem())
	call := c.Go("Node."+method, args, into.Interface(), make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
		reflect.ValueOf(reply).Elem().Set(into.Elem())
		var se rpc.ServerError
		if call.Error != nil && !errors.As(call.Error, &se) {
			p.drop(addr, c) // the connection broke; dial afresh next time
		}
		if call.Error != nil {
			return call.Error
		}
		if sr, ok := reply.(statusReply); ok {
			return sr.status().Err()
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes every connection.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, pc := range p.m {
		pc.c.Close()
		delete(p.m, addr)
	}
}

// Send forwards a command to the node at addr; a refusal worth retrying comes back
// as an *api.RetryError.
func (p *Pool) Send(ctx context.Context, addr string, args SendArgs) (string, error) {
	var reply SendReply
	err := p.Call(ctx, addr, "Send", &args, &reply)
	if err != nil && reply.RetryAfter > 0 {
		err = &api.RetryError{Err: err, After: reply.RetryAfter}
	}
	return reply.Node, err
}

// Cut asks the node at addr for its cut of an ended generation.
func (p *Pool) Cut(ctx context.Context, addr string, args CutArgs) (map[int][]CutKey, bool, error) {
	var reply CutReply
	err := p.Call(ctx, addr, "Cut", &args, &reply)
	return reply.Keys, reply.Final, err
}
