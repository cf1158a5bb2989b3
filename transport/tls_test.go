package transport

import (
	"net"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/certs"
)

// tlsFor makes a CA (or uses ca) and a node certificate from it, and loads them.
func tlsFor(t *testing.T, caCert, caKey []byte, node string) (TLS, []byte, []byte) {
	t.Helper()
	if caCert == nil {
		var err error
		if caCert, caKey, err = certs.NewCA(1); err != nil {
			t.Fatal(err)
		}
	}
	f, err := certs.IssueFiles(t.TempDir(), caCert, caKey, node, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return TLS{Server: c.Server(), Client: c.Client()}, caCert, caKey
}

// With mutual TLS, a peer reaches Raft and RPC only with a certificate of the
// cluster's CA: one from another CA, or none at all, is refused at the handshake,
// and not a byte of it reaches the listeners.
func TestMutualTLSRefusesStrangers(t *testing.T) {
	good, ca, caKey := tlsFor(t, nil, nil, "a")
	peer, _, _ := tlsFor(t, ca, caKey, "b")
	stranger, _, _ := tlsFor(t, nil, nil, "mallory")
	a, err := ListenTLS("127.0.0.1:0", nil, nil, good)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	got := make(chan []byte, 4)
	go func() {
		for {
			c, err := a.RPC().Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 5)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _ := c.Read(buf)
			got <- buf[:n]
			c.Close()
		}
	}()
	dialer := func(t *testing.T, cfg TLS) *Mux {
		m, err := ListenTLS("127.0.0.1:0", nil, nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	// The cluster's own: through.
	c, err := dialer(t, peer).Dial(a.ListenAddr().String(), ProtoRPC, 5*time.Second)
	if err != nil {
		t.Fatalf("a peer with the cluster's certificate: %v", err)
	}
	c.Write([]byte("hello"))
	select {
	case b := <-got:
		if string(b) != "hello" {
			t.Fatalf("the RPC listener read %q", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's bytes never reached the RPC listener")
	}
	c.Close()
	// Another CA's certificate: refused at the handshake.
	if c, err := dialer(t, stranger).Dial(a.ListenAddr().String(), ProtoRPC, 5*time.Second); err == nil {
		c.Write([]byte("sneak"))
		c.Close()
		t.Fatal("a certificate of another CA got through the handshake")
	}
	// No TLS at all: the protocol byte and what follows are never routed.
	raw, err := net.Dial("tcp", a.ListenAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte{ProtoRPC, 'x', 'x', 'x', 'x'})
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil {
		t.Error("a plain TCP client got an answer")
	}
	raw.Close()
	select {
	case b := <-got:
		t.Fatalf("a refused peer's bytes reached the RPC listener: %q", b)
	case <-time.After(300 * time.Millisecond): // a negative: nothing should arrive
	}
}
