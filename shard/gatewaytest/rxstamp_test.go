package gatewaytest

import (
	"encoding/binary"
	"net"
	"runtime"
	"testing"
	"time"
)

// stampedPair is a loopback TCP connection: the client's end, and the fake's, as its
// listener hands it out. Both are closed when the test ends.
func stampedPair(t *testing.T) (net.Conn, *batchConn) {
	t.Helper()
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
	t.Cleanup(func() { cli.Close() })
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { srv.Close() })
	return cli, srv.(*batchConn)
}

// The identify window is judged by when a frame reached the machine, not by when the
// fake got round to reading it.
func TestArrivalIsStampedByTheKernelNotTheReader(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("kernel arrival stamps are read on Linux only")
	}
	cli, bc := stampedPair(t)
	if bc.raw == nil {
		t.Fatal("no arrival stamps on a loopback TCP connection")
	}
	if _, _, ok := bc.lastArrival(); ok {
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
		at, _, ok := bc.lastArrival()
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

// Once the websocket handshake is done, a read ends at a client frame's end, and a
// frame read while later bytes already wait is marked inexact: the kernel merged the
// later segment into the waiting one, stamp included, so the frame's stamp may be the
// later bytes' arrival (an IDENTIFY dated by the heartbeat the client wrote after
// it).
func TestReadsKeepToClientFrames(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("kernel arrival stamps are read on Linux only")
	}
	cli, bc := stampedPair(t)
	bc.framesFollow()
	bc.SetReadDeadline(time.Now().Add(10 * time.Second))

	// Masked client frames: a 300-byte text frame (a 2-byte extended length), a
	// 20-byte one, and a 70,000-byte one (an 8-byte extended length).
	frame := func(size int) []byte {
		h := []byte{0x81, 0x80 | byte(size)}
		switch {
		case size >= 1<<16:
			h[1] = 0x80 | 127
			h = binary.BigEndian.AppendUint64(h, uint64(size))
		case size >= 126:
			h[1] = 0x80 | 126
			h = binary.BigEndian.AppendUint16(h, uint16(size))
		}
		h = append(h, 1, 2, 3, 4) // the masking key
		return append(h, make([]byte, size)...)
	}
	frames := [][]byte{frame(300), frame(20), frame(70_000)}
	total := 0
	for _, f := range frames {
		if _, err := cli.Write(f); err != nil {
			t.Fatal(err)
		}
		total += len(f)
	}
	// Wait until the first two have arrived together, as they do for a reader that
	// did not get the CPU in between.
	probe := make([]byte, 512)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if n, err := peek(bc.raw, probe); err != nil || n >= len(frames[0])+len(frames[1]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the frames did not arrive")
		}
		runtime.Gosched()
	}
	buf := make([]byte, 4096)
	for i, f := range frames[:2] {
		n, err := bc.Read(buf)
		if err != nil || n != len(f) {
			t.Fatalf("read %d: %d bytes, %v; want frame %d's %d", i, n, err, i, len(f))
		}
		if _, exact, _ := bc.lastArrival(); exact {
			t.Errorf("frame %d read with the next one waiting behind it: stamp called exact", i)
		}
	}
	// A large frame is read in several reads that stop at its end; nothing waits
	// behind it.
	left := len(frames[2])
	for left > 0 {
		n, err := bc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if left != 0 {
		t.Fatalf("read %d bytes past the last frame", -left)
	}
	if _, exact, _ := bc.lastArrival(); !exact {
		t.Error("the last frame, nothing behind it: stamp not exact")
	}
	if _, err := cli.Write(frames[1]); err != nil {
		t.Fatal(err)
	}
	if n, err := bc.Read(buf); err != nil || n != len(frames[1]) {
		t.Fatalf("the next frame after the large one: %d bytes, %v", n, err)
	}
	if _, exact, _ := bc.lastArrival(); !exact {
		t.Error("a frame read alone: stamp not exact")
	}
}

func TestFrameLen(t *testing.T) {
	for _, tc := range []struct {
		h    []byte
		want int
	}{
		{[]byte{0x81, 0x85}, 2 + 4 + 5},
		{[]byte{0x81, 0x05}, 2 + 5},                   // unmasked: the server's own frames' shape
		{[]byte{0x81, 0xfe, 0x01, 0x2c}, 4 + 4 + 300}, // 16-bit length
		{[]byte{0x81, 0xff, 0, 0, 0, 0, 0, 1, 0x11, 0x70}, 10 + 4 + 70_000},
		{[]byte{0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0}, 0}, // 4 GiB: left to the library
		{[]byte{0x81}, 0},                               // too short to tell
		{[]byte{0x81, 0xfe, 0x01}, 0},
		{[]byte{0x81, 0xff, 0, 0, 0, 0}, 0},
	} {
		if got := frameLen(tc.h); got != tc.want {
			t.Errorf("frameLen(% x) = %d, want %d", tc.h, got, tc.want)
		}
	}
}
