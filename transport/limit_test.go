package transport

import (
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

// An HTTP server behind LimitListener holds no more connections than its limits
// from one address; the ones it admits are served, and a freed place is taken again.
func TestLimitListenerBoundsAnHTTPServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := NewLimiter("http port", Limits{Total: 100, PerIP: 2}, nil)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }),
		ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(LimitListener(ln, lim))
	defer srv.Close()

	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitOpen := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for lim.Open() != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections counted, want %d", lim.Open(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	held := []net.Conn{dial(), dial()}
	waitOpen(2)
	extra := dial()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = extra.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a third connection from one address was held: %v", err)
	}
	extra.Close()

	held[0].Close()
	waitOpen(1)
	again := dial()
	defer again.Close()
	again.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := again.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 12)
	if _, err := again.Read(buf); err != nil || string(buf) != "HTTP/1.1 200" {
		t.Fatalf("a freed place was not served: %q, %v", buf, err)
	}
	held[1].Close()
}
