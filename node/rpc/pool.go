package rpc

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"sync"
	"time"
)

// Dialer opens a connection to a peer's RPC service.
type Dialer func(addr string, timeout time.Duration) (net.Conn, error)

// Pool keeps one RPC client per node address.
type Pool struct {
	dial Dialer
	mu   sync.Mutex
	m    map[string]*rpc.Client
}

// NewPool dials peers with dial.
func NewPool(dial Dialer) *Pool {
	return &Pool{dial: dial, m: make(map[string]*rpc.Client)}
}

func (p *Pool) client(addr string) (*rpc.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.m[addr]; ok {
		return c, nil
	}
	conn, err := p.dial(addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := rpc.NewClient(conn)
	p.m[addr] = c
	return c, nil
}

func (p *Pool) drop(addr string, c *rpc.Client) {
	p.mu.Lock()
	if p.m[addr] == c {
		delete(p.m, addr)
	}
	p.mu.Unlock()
	c.Close()
}

// Call runs one RPC on the node at addr, until ctx ends. An error the peer's service
// returned keeps its code: errors.Is matches this package's sentinels.
func (p *Pool) Call(ctx context.Context, addr, method string, args, reply any) error {
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
	for addr, c := range p.m {
		c.Close()
		delete(p.m, addr)
	}
}
