package membership

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/discluster/discluster/transport"
)

// filteredGossip is memberlist's transport with a transport.Filter in front, so a
// test can cut gossip together with the cluster port.
type filteredGossip struct {
	nt *memberlist.NetTransport
	f  *transport.Filter
}

var _ memberlist.Transport = (*filteredGossip)(nil)

func (t *filteredGossip) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.nt.FinalAdvertiseAddr(ip, port)
}

func (t *filteredGossip) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.f.Blocked(addr) {
		return time.Now(), nil // dropped on the floor, as a partition does
	}
	return t.nt.WriteTo(b, addr)
}

func (t *filteredGossip) PacketCh() <-chan *memberlist.Packet { return t.nt.PacketCh() }

func (t *filteredGossip) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.f.Blocked(addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, transport.ErrBlocked)
	}
	c, err := t.nt.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return t.f.Track(c, addr), nil
}

func (t *filteredGossip) StreamCh() <-chan net.Conn { return t.nt.StreamCh() }
func (t *filteredGossip) Shutdown() error           { return t.nt.Shutdown() }
