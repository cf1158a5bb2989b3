package gatewaytest

import (
	"bytes"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// serverGoroutines lists the goroutines running the fake's own code.
func serverGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range []string{"(*conn).writeLoop", "(*conn).watchdog", "(*session).run", "(*Server).handleWebsocket", "NewServer.func"} {
			if strings.Contains(g, "gatewaytest."+fn) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

func TestCloseWaitsForEveryGoroutine(t *testing.T) {
	s, err := NewServer(Options{Shards: 3, EventRate: 1000, IdentifyWindow: 1})
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 3; k++ {
		start(t, s, "v=10&encoding=json&compress=zlib-stream", []int{k, 3})
	}
	if err := s.DropShard(1); err != nil { // a detached session with a live generator
		t.Fatal(err)
	}
	c := dial(t, s.GatewayURL(), "v=10&encoding=json") // a connection that never identifies
	c.hello()
	if len(serverGoroutines()) == 0 {
		t.Fatal("found no server goroutines while serving; the check is broken")
	}
	var wg sync.WaitGroup
	for range 3 { // concurrent Close calls all wait
		wg.Go(s.Close)
	}
	wg.Wait()
	// A goroutine that has signalled its owner is still listed for the
	// instant it takes to return, so allow a bounded number of yields.
	g := serverGoroutines()
	for i := 0; i < 1000 && len(g) != 0; i++ {
		runtime.Gosched()
		g = serverGoroutines()
	}
	if len(g) != 0 {
		t.Fatalf("%d goroutines left after Close:\n%s", len(g), strings.Join(g, "\n\n"))
	}
	if st := s.Stats(); st.Connections != 0 {
		t.Fatalf("%d connections after Close", st.Connections)
	}
}

func TestTokenNeverLogged(t *testing.T) {
	var logs safeBuffer
	const token = "Mz-very-secret-token.abc"
	s := newTestServer(t, Options{Token: token, SessionStartLimit: 1, Shards: 2, MaxConcurrency: 2,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.send(opIdentify, identifyD(token, []int{0, 2}, testIntents))
	ready := readyOf(t, c.expect(opDispatch, "READY"))
	r := dial(t, s.ResumeURL(), "v=10&encoding=json")
	r.hello()
	r.send(opResume, map[string]any{"token": token, "session_id": ready.SessionID, "seq": 1})
	c.expectClose(closeSessionTakenOver)
	bad := dial(t, s.GatewayURL(), "v=10&encoding=json")
	bad.hello()
	bad.send(opIdentify, identifyD(token+"x", nil, testIntents))
	bad.expectClose(4004)
	reset := dial(t, s.GatewayURL(), "v=10&encoding=json")
	reset.hello()
	reset.send(opIdentify, identifyD(token, []int{1, 2}, testIntents)) // no starts left: token reset
	reset.expectClose(4004)
	s.Close()
	if strings.Contains(logs.String(), "secret") {
		t.Fatalf("token in logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "token") {
		t.Fatalf("expected the token reset to be logged:\n%s", logs.String())
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
