package rpc

import (
	"bytes"
	"context"
	"encoding/gob"
	"net"
	"net/rpc"
	"slices"
	"testing"
	"time"
)

// FuzzServe: whatever bytes a peer sends on the RPC port, the server neither panics
// nor hangs: it answers or drops the connection, and returns once the listener
// closes.
func FuzzServe(f *testing.F) {
	for _, s := range []string{"", "\x00", "GET / HTTP/1.1\r\n\r\n", "\x0d\xff\x81\x03\x01\x01\x07Request\x01\xff\x82\x00\x01\x02"} {
		f.Add([]byte(s))
	}
	// A hello, then a request for each method with empty arguments, so that the
	// fuzzer starts past the hello.
	var b bytes.Buffer
	enc := gob.NewEncoder(&b)
	enc.Encode(hello{From: "n1"})
	f.Add(slices.Clone(b.Bytes()))
	for _, m := range []string{"Apply", "Renew", "Identify", "IdentifySent", "Shards", "BootstrapPromise", "Nope"} {
		enc.Encode(&rpc.Request{ServiceMethod: "Node." + m, Seq: 1})
		enc.Encode(&ApplyArgs{Command: []byte{1, 2, 3}})
		f.Add(slices.Clone(b.Bytes()))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			Serve(ctx, ln, &stubService{sent: make(chan int, 16)}, nil)
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		c.Write(b)
		buf := make([]byte, 512)
		c.Read(buf) // an answer, an error, or the deadline: all fine
		c.Close()
		ln.Close()
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the server did not return after its listener closed")
		}
	})
}
