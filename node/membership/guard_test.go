package membership

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fakeTransport is a memberlist transport whose packets and streams the test sends.
type fakeTransport struct {
	memberlist.Transport
	packets chan *memberlist.Packet
	streams chan net.Conn
}

func (f *fakeTransport) PacketCh() <-chan *memberlist.Packet { return f.packets }
func (f *fakeTransport) StreamCh() <-chan net.Conn           { return f.streams }
func (f *fakeTransport) Shutdown() error                     { return nil }

// warnings counts the records at warning or above.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, r.Message)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// seal is a datagram as memberlist sends it: the label header, encryption version
// 1, a nonce, AES-GCM with the label as additional data.
func seal(t *testing.T, key []byte, label string, plain []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 12)
	out := append(labelHeader(label), 1)
	out = append(out, nonce...)
	return gcm.Seal(out, nonce, plain, []byte(label))
}

// The guard passes the cluster's datagrams and streams to memberlist and drops a
// stranger's (no label, another key, garbage) with one warning for the lot.
func TestGuardDropsWhatIsNotTheClusters(t *testing.T) {
	key, other := make([]byte, 32), make([]byte, 32)
	other[0] = 1
	ring, err := memberlist.NewKeyring([][]byte{key}, key)
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTransport{packets: make(chan *memberlist.Packet), streams: make(chan net.Conn)}
	w := &warnings{}
	g := newGuardedGossip(ft, gossipLabel, ring, slog.New(w))
	defer g.Shutdown()
	from := &net.UDPAddr{IP: net.ParseIP("10.0.0.9"), Port: 1}
	send := func(b []byte) { ft.packets <- &memberlist.Packet{Buf: b, From: from} }
	for _, bad := range [][]byte{
		{1, 2, 3},
		append(labelHeader("another"), make([]byte, 64)...),
		append(labelHeader(gossipLabel), make([]byte, 64)...),
		labelHeader(gossipLabel),
		seal(t, other, gossipLabel, []byte("ping")),
		seal(t, key, "another", []byte("ping")),
	} {
		send(bad)
	}
	good := seal(t, key, gossipLabel, []byte("ping"))
	send(good)
	select {
	case p := <-g.PacketCh():
		if string(p.Buf) != string(good) {
			t.Fatalf("passed %x, want the sealed ping", p.Buf)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cluster's datagram was not passed on")
	}

	// Streams: one without the label is closed, one with it is passed on whole.
	stranger, s1 := net.Pipe()
	ft.streams <- s1
	go stranger.Write([]byte("GET / HTTP/1.1\r\n"))
	stranger.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := stranger.Read(make([]byte, 1)); err != io.EOF && (err == nil || strings.Contains(err.Error(), "timeout")) {
		t.Fatalf("a stranger's stream was not closed: %v", err)
	}
	for _, bad := range [][]byte{
		append(labelHeader(gossipLabel), "plain state"...),             // not encrypted, with a key set
		append(labelHeader(gossipLabel), encryptMsg, 0x7f, 0, 0, 0, 1), // announces 2 GiB
	} {
		stranger, s := net.Pipe()
		ft.streams <- s
		go stranger.Write(bad)
		waitPipeClosed(t, stranger)
	}
	member, s2 := net.Pipe()
	ft.streams <- s2
	msg := append(labelHeader(gossipLabel), encryptMsg, 0, 0, 0, 5)
	msg = append(msg, "state"...)
	go member.Write(msg)
	select {
	case c := <-g.StreamCh():
		got := make([]byte, len(msg))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
			t.Fatalf("read %q, %v from the passed stream, want %q", got, err, msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cluster's stream was not passed on")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.msgs) != 1 || !strings.Contains(w.msgs[0], "dropped") {
		t.Fatalf("warnings %q, want one", w.msgs)
	}
}

// waitPipeClosed fails unless the guard closes the far end of c within 5 s.
func waitPipeClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && (err == nil || strings.Contains(err.Error(), "timeout")) {
		t.Fatalf("a refused stream was not closed: %v", err)
	}
}

// Streams from one address are bounded: past maxGossipStreamsPerIP open at once, a
// new one is closed at once; a closed one gives its place back.
func TestGuardBoundsStreamsPerAddress(t *testing.T) {
	ft := &fakeTransport{packets: make(chan *memberlist.Packet), streams: make(chan net.Conn)}
	g := newGuardedGossip(ft, gossipLabel, nil, slog.New(&warnings{}))
	defer g.Shutdown()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range maxGossipStreamsPerIP {
		c, s := net.Pipe() // every pipe's address is "pipe": one address
		held = append(held, c)
		ft.streams <- s
	}
	over, s := net.Pipe()
	ft.streams <- s
	waitPipeClosed(t, over)

	held[0].Close() // its header never came: the guard gives its place back
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, s := net.Pipe()
		ft.streams <- s
		go c.Write(append(labelHeader(gossipLabel), "x"...))
		select {
		case got := <-g.StreamCh():
			got.Close()
			c.Close()
			return
		case <-time.After(200 * time.Millisecond):
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed stream's place was not given back")
		}
	}
}

// Without a keyring, the label alone lets a datagram in.
func TestGuardWithoutKeyringChecksTheLabel(t *testing.T) {
	ft := &fakeTransport{packets: make(chan *memberlist.Packet), streams: make(chan net.Conn)}
	g := newGuardedGossip(ft, gossipLabel, nil, slog.New(&warnings{}))
	defer g.Shutdown()
	if g.admitPacket([]byte{1, 2, 3}) || !g.admitPacket(append(labelHeader(gossipLabel), 7)) {
		t.Fatal("without a keyring, the guard should check the label only")
	}
}

// lingeringTransport is a transport whose Shutdown, like memberlist's NetTransport,
// waits for its listener to hand on the last packet it read.
type lingeringTransport struct{ fakeTransport }

func (l *lingeringTransport) Shutdown() error {
	l.packets <- &memberlist.Packet{Buf: append(labelHeader(gossipLabel), "the last datagram"...)}
	return nil
}

// Shutdown returns though a packet arrives while the transport shuts down: the guard
// keeps passing packets on to memberlist, which reads until its transport is down.
func TestGuardShutdownWithAPacketInFlight(t *testing.T) {
	lt := &lingeringTransport{fakeTransport{packets: make(chan *memberlist.Packet), streams: make(chan net.Conn)}}
	g := newGuardedGossip(lt, gossipLabel, nil, slog.New(&warnings{}))
	readerDone := make(chan struct{})
	stop := make(chan struct{})
	go func() { // memberlist's packet reader, until its transport is down
		defer close(readerDone)
		for {
			select {
			case <-g.PacketCh():
			case <-stop:
				return
			}
		}
	}()
	shut := make(chan error, 1)
	go func() { shut <- g.Shutdown() }()
	select {
	case <-shut:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown hangs with a packet in flight")
	}
	close(stop)
	<-readerDone
}
