package gatewaytest

import (
	"net"
	"runtime"
	"testing"
	"time"
)

// The identify window is judged by when a frame reached the machine, not by when the
// fake got round to reading it.
func TestArrivalIsStampedByTheKernelNotTheReader(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("kernel arrival stamps are read on Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := batchListener{ln}.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer srv.Close()
	bc := srv.(*batchConn)
	if bc.raw == nil {
		t.Fatal("no arrival stamps on a loopback TCP connection")
	}
	if _, ok := bc.lastArrival(); ok {
		t.Fatal("an arrival before anything was read")
	}
	bc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16)
	// The kernel turns arrival stamps on for the whole machine lazily (a deferred
	// static key, the first time a socket asks), so the first segments after that
	// may come unstamped: the fake then judges by its read time. Ping until one is
	// stamped.
	for attempt := 1; ; attempt++ {
		sent := time.Now()
		if _, err := cli.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		// Read a few milliseconds after the segment arrived, as a busy fake would: a
		// stamp taken by the reader would then come after readFrom.
		for wrote := time.Now(); time.Since(wrote) < 5*time.Millisecond; {
			runtime.Gosched()
		}
		readFrom := time.Now()
		n, err := bc.Read(buf)
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		at, ok := bc.lastArrival()
		if !ok {
			if attempt == 200 {
				t.Fatal("no arrival stamp on 200 segments")
			}
			continue
		}
		if at.Before(sent.Add(-time.Millisecond)) || !at.Before(readFrom) {
			t.Fatalf("arrival %v not between the write at %v and the read at %v", at, sent, readFrom)
		}
		break
	}
	cli.Close()
	if _, err := bc.Read(buf); err == nil {
		t.Fatal("read after the peer closed: no error")
	}
}
