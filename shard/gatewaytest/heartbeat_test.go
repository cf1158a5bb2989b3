package gatewaytest

import (
	"testing"
	"time"
)

func TestHeartbeatACKs(t *testing.T) {
	s := newTestServer(t, Options{})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	// Heartbeats are allowed before IDENTIFY, with d null.
	c.send(opHeartbeat, nil)
	if p := c.expect(opHeartbeatACK, ""); string(p.raw) != `{"op":11}` {
		t.Fatalf("ACK %s, want the bare {\"op\":11}", p.raw)
	}
	c.identify(nil)
	c.expect(opDispatch, "READY")
	c.expect(opDispatch, "GUILD_CREATE")
	c.send(opHeartbeat, 2)
	c.expect(opHeartbeatACK, "")
	st := s.Stats()
	if sh := st.Shards[0]; sh.Heartbeats != 1 || sh.LastHeartbeat == nil || *sh.LastHeartbeat != 2 {
		t.Fatalf("shard 0 heartbeats %+v", sh)
	}
	if st.HeartbeatsReceived != 2 || st.HeartbeatACKsSent != 2 {
		t.Fatalf("received %d acked %d", st.HeartbeatsReceived, st.HeartbeatACKsSent)
	}

	// Zombie: heartbeats go unanswered until ACKs are back on.
	s.SetHeartbeatACKs(false)
	c.send(opHeartbeat, 2)
	await(t, s, "unanswered heartbeat", func(st Stats) bool { return st.HeartbeatsReceived == 3 })
	s.SetHeartbeatACKs(true)
	c.send(opHeartbeat, nil)
	c.expect(opHeartbeatACK, "") // the next payload is the ACK of the 4th, none for the 3rd
	st = s.Stats()
	if st.HeartbeatsReceived != 4 || st.HeartbeatACKsSent != 3 || st.Shards[0].LastHeartbeat != nil {
		t.Fatalf("received %d acked %d last %v", st.HeartbeatsReceived, st.HeartbeatACKsSent, st.Shards[0].LastHeartbeat)
	}
}

func TestServerRequestedHeartbeat(t *testing.T) {
	s := newTestServer(t, Options{})
	c, _, last := start(t, s, "v=10&encoding=json", nil)
	if err := s.RequestHeartbeat(0); err != nil {
		t.Fatal(err)
	}
	c.expect(opHeartbeat, "")
	c.send(opHeartbeat, last)
	c.expect(opHeartbeatACK, "")
	st := s.Stats()
	if st.HeartbeatRequestsSent != 1 || st.HeartbeatRequestsAnswered != 1 {
		t.Fatalf("requests %d answered %d", st.HeartbeatRequestsSent, st.HeartbeatRequestsAnswered)
	}
}

func TestMissedHeartbeatClosesResumably(t *testing.T) {
	s := newTestServer(t, Options{HeartbeatInterval: 40 * time.Millisecond, HeartbeatTimeout: 20 * time.Millisecond})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	p := c.hello()
	if string(p.D) == "" {
		t.Fatal("empty HELLO")
	}
	c.identify(nil)
	ready := readyOf(t, c.expect(opDispatch, "READY"))
	// Never heartbeat.
	c.expectClose(closeHeartbeatTimeout)
	st := s.Stats()
	if st.HeartbeatTimeouts != 1 || st.Closes[closeHeartbeatTimeout] != 1 {
		t.Fatalf("timeouts %d closes %v", st.HeartbeatTimeouts, st.Closes)
	}
	if ss := st.Sessions[ready.SessionID]; ss.Ended {
		t.Fatalf("session ended on a heartbeat timeout: %+v", ss)
	}
}
