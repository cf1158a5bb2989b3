package membership

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/discluster/discluster/transport"
)

// guardedGossip is memberlist's transport with a cheap door in front: a datagram
// that does not carry the cluster's label, or (with a keyring) does not decrypt
// under one of its keys, and a stream that does not start with the label, are
// dropped before memberlist sees them, counted, and summed up in one warning per
// guardLogPeriod. Memberlist handles every datagram on one goroutine and logs an
// error for each it refuses; a stranger's flood of garbage would otherwise fill
// that goroutine and the log, and the members' own probes and acks would be lost
// among it, turning a flood into false failures.
type guardedGossip struct {
	memberlist.Transport
	label  []byte // the label header every datagram and stream starts with
	ring   *memberlist.Keyring
	log    *slog.Logger
	packet chan *memberlist.Packet
	stream chan net.Conn
	done   chan struct{}
	once   sync.Once

	aeadMu sync.Mutex
	aeads  map[string]cipher.AEAD

	// Streams open (waiting for their header, or passed on and not closed yet): see
	// maxGossipStreams.
	streamLimits *transport.Limiter

	dropped   atomic.Int64 // since the last warning
	refused   atomic.Int64 // streams, since the last warning
	lastFrom  atomic.Value // string
	lastLog   atomic.Int64 // unix nanos of the last warning
	logPeriod time.Duration
}

// guardLogPeriod is how often at most the guard says what it dropped.
const guardLogPeriod = 10 * time.Second

// guardHeaderTimeout bounds how long a stream may take to send its label header.
const guardHeaderTimeout = 5 * time.Second

// Bounds on gossip streams. A member opens one at a time to a peer (a push/pull of
// the state, a ping's TCP fallback), and the members of a test cluster share one IP,
// hence the generous per-address bound. Memberlist buffers a stream's encrypted state
// up to 20 MiB as it arrives; a stream that announces more than maxGossipState is
// refused from its header, and so many streams at once hold at most
// maxGossipStreams x maxGossipState.
const (
	maxGossipStreams      = 256
	maxGossipStreamsPerIP = 32
	maxGossipState        = 2 << 20 // a push/pull of 1,000 members is ~200 KiB
	encryptMsg            = 10      // memberlist's message type of an encrypted stream
)

// labelHeader is memberlist's label header: the type byte 244, the length, the label.
func labelHeader(label string) []byte {
	return append([]byte{244, byte(len(label))}, label...)
}

func newGuardedGossip(t memberlist.Transport, label string, ring *memberlist.Keyring, log *slog.Logger) *guardedGossip {
	g := &guardedGossip{Transport: t, label: labelHeader(label), ring: ring, log: log,
		packet: make(chan *memberlist.Packet), stream: make(chan net.Conn), done: make(chan struct{}),
		aeads: map[string]cipher.AEAD{}, logPeriod: guardLogPeriod,
		streamLimits: transport.NewLimiter("gossip port", transport.Limits{Total: maxGossipStreams, PerIP: maxGossipStreamsPerIP}, log)}
	go g.packets()
	go g.streams()
	return g
}

func (g *guardedGossip) PacketCh() <-chan *memberlist.Packet { return g.packet }
func (g *guardedGossip) StreamCh() <-chan net.Conn           { return g.stream }

// Shutdown stops the transport first, and the guard after it: the transport's
// listeners hand on what they read before they notice the shutdown, and wait for it
// to be taken; memberlist reads through the guard until the transport is down (it
// shuts its transport down before its own readers), so the guard must keep passing
// packets on until then, or a packet arriving at that moment blocks the shutdown
// forever.
func (g *guardedGossip) Shutdown() error {
	err := g.Transport.Shutdown()
	g.once.Do(func() { close(g.done) })
	return err
}

func (g *guardedGossip) packets() {
	in := g.Transport.PacketCh()
	for {
		select {
		case p := <-in:
			if !g.admitPacket(p.Buf) {
				g.drop(&g.dropped, p.From)
				continue
			}
			select {
			case g.packet <- p:
			case <-g.done:
				return
			}
		case <-g.done:
			return
		}
	}
}

// admitPacket reports whether b carries the label and, with a keyring, decrypts
// under one of its keys (memberlist's format after the label: a version byte, a
// 12-byte nonce, then AES-GCM sealed with the label as additional data).
func (g *guardedGossip) admitPacket(b []byte) bool {
	if !bytes.HasPrefix(b, g.label) {
		return false
	}
	if g.ring == nil {
		return true
	}
	msg := b[len(g.label):]
	const versionSize, nonceSize, tagSize = 1, 12, 16
	if len(msg) < versionSize+nonceSize+tagSize || msg[0] > 1 {
		return false
	}
	ad := g.label[2:]
	for _, key := range g.ring.GetKeys() {
		aead := g.aead(key)
		if aead == nil {
			continue
		}
		if _, err := aead.Open(nil, msg[versionSize:versionSize+nonceSize], msg[versionSize+nonceSize:], ad); err == nil {
			return true
		}
	}
	return false
}

func (g *guardedGossip) aead(key []byte) cipher.AEAD {
	g.aeadMu.Lock()
	defer g.aeadMu.Unlock()
	if a, ok := g.aeads[string(key)]; ok {
		return a
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil
	}
	if len(g.aeads) > 16 { // rotated keys: forget, rather than grow
		clear(g.aeads)
	}
	g.aeads[string(key)] = a
	return a
}

func (g *guardedGossip) streams() {
	in := g.Transport.StreamCh()
	for {
		select {
		case c := <-in:
			release, ok := g.streamLimits.Admit(c.RemoteAddr())
			if !ok {
				c.Close()
				g.drop(&g.refused, c.RemoteAddr())
				continue
			}
			go g.checkStream(c, release)
		case <-g.done:
			return
		}
	}
}

// checkStream passes c, admitted under the bounds, on once it has sent the label header (and, with a keyring,
// announced an encrypted state no larger than maxGossipState), or closes it.
func (g *guardedGossip) checkStream(c net.Conn, release func()) {
	head := make([]byte, len(g.label), len(g.label)+5)
	c.SetReadDeadline(time.Now().Add(guardHeaderTimeout))
	_, err := io.ReadFull(c, head)
	if err == nil && bytes.Equal(head, g.label) && g.ring != nil {
		head = head[:len(g.label)+5] // the message type and the state's length
		if _, err = io.ReadFull(c, head[len(g.label):]); err == nil {
			msg := head[len(g.label):]
			if msg[0] != encryptMsg || binary.BigEndian.Uint32(msg[1:]) > maxGossipState {
				err = errors.New("not an encrypted state of an admissible size")
			}
		}
	}
	if err != nil || !bytes.Equal(head[:len(g.label)], g.label) {
		c.Close()
		release()
		g.drop(&g.refused, c.RemoteAddr())
		return
	}
	c.SetReadDeadline(time.Time{})
	select {
	case g.stream <- &prefixConn{Conn: c, head: head, release: release}:
	case <-g.done:
		c.Close()
		release()
	}
}

// drop counts one refusal from from and, at most once per logPeriod, says how
// many there were.
func (g *guardedGossip) drop(n *atomic.Int64, from net.Addr) {
	n.Add(1)
	if from != nil {
		g.lastFrom.Store(from.String())
	}
	now := time.Now().UnixNano()
	last := g.lastLog.Load()
	if now-last < int64(g.logPeriod) || !g.lastLog.CompareAndSwap(last, now) {
		return
	}
	from2, _ := g.lastFrom.Load().(string)
	g.log.Warn("gossip port: dropped datagrams and streams that are not the cluster's (wrong label or key); logged once per 10s",
		"datagrams", g.dropped.Swap(0), "streams", g.refused.Swap(0), "last_from", from2)
}

// prefixConn is a conn whose first bytes, already read, are read again; closing it
// gives its place under the stream bounds back.
type prefixConn struct {
	net.Conn
	head    []byte
	release func()
}

func (c *prefixConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(b, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
