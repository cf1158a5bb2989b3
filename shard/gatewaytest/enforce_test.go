package gatewaytest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestEnforcement checks every close code the fake sends for a client's
// mistake, and what the close does to the session.
func TestEnforcement(t *testing.T) {
	identify := func(shard []int, intents any) func(c *tclient) {
		return func(c *tclient) {
			d := identifyD(defaultToken, shard, 0)
			d["intents"] = intents
			if intents == nil {
				delete(d, "intents")
			}
			c.send(opIdentify, d)
		}
	}
	raw := func(s string) func(c *tclient) { return func(c *tclient) { c.sendRaw([]byte(s)) } }
	oversize := `{"op":1,"d":null,"pad":"` + strings.Repeat("x", 5000) + `"}`

	for _, tc := range []struct {
		name    string
		opts    Options
		query   string
		noHello bool // the fake closes before HELLO
		ready   bool // identify successfully first
		send    []func(c *tclient)
		code    int
	}{
		{name: "unknown op", send: []func(*tclient){raw(`{"op":5,"d":null}`)}, code: 4001},
		{name: "identify d of the wrong shape", send: []func(*tclient){raw(`{"op":2,"d":"token"}`)}, code: 4001},
		{name: "heartbeat d not a number", ready: true, send: []func(*tclient){raw(`{"op":1,"d":"7"}`)}, code: 4001},
		{name: "invalid JSON", send: []func(*tclient){raw(`{"op":1,`)}, code: 4002},
		{name: "op not an integer", send: []func(*tclient){raw(`{"op":"1"}`)}, code: 4002},
		{name: "payload over 4096 bytes", ready: true, send: []func(*tclient){raw(oversize)}, code: 4002},
		{name: "encoding etf", query: "v=10&encoding=etf", noHello: true, code: 4002},
		{name: "presence before identify", send: []func(*tclient){raw(`{"op":3,"d":{"since":null,"activities":[],"status":"online","afk":false}}`)}, code: 4003},
		{name: "bad token in identify", send: []func(*tclient){func(c *tclient) {
			c.send(opIdentify, identifyD("wrong", nil, testIntents))
		}}, code: 4004},
		{name: "bad token in resume", send: []func(*tclient){func(c *tclient) {
			c.send(opResume, map[string]any{"token": "wrong", "session_id": "x", "seq": 1})
		}}, code: 4004},
		{name: "second identify", ready: true, send: []func(*tclient){identify(nil, testIntents)}, code: 4005},
		{name: "resume after identify", ready: true, send: []func(*tclient){func(c *tclient) { c.resume("x", 1) }}, code: 4005},
		{name: "send limit", opts: Options{SendLimit: 5}, send: []func(*tclient){
			raw(`{"op":1,"d":null}`), raw(`{"op":1,"d":null}`), raw(`{"op":1,"d":null}`),
			raw(`{"op":1,"d":null}`), raw(`{"op":1,"d":null}`), raw(`{"op":1,"d":null}`),
		}, code: 4008},
		{name: "shard id not below total", send: []func(*tclient){identify([]int{2, 2}, testIntents)}, code: 4010},
		{name: "shard total zero", send: []func(*tclient){identify([]int{0, 0}, testIntents)}, code: 4010},
		{name: "negative shard id", send: []func(*tclient){identify([]int{-1, 2}, testIntents)}, code: 4010},
		{name: "shard pair too short", send: []func(*tclient){identify([]int{0}, testIntents)}, code: 4010},
		{name: "too many guilds for the shard", opts: Options{Guilds: 3, MaxGuildsPerShard: 2}, send: []func(*tclient){identify(nil, testIntents)}, code: 4011},
		{name: "api version 8", query: "v=8&encoding=json", noHello: true, code: 4012},
		{name: "no api version", query: "encoding=json", noHello: true, code: 4012},
		{name: "undefined intent bit", send: []func(*tclient){identify(nil, 1<<18)}, code: 4013},
		{name: "missing intents", send: []func(*tclient){identify(nil, nil)}, code: 4013},
		{name: "privileged intent denied", opts: Options{DenyPrivilegedIntents: true}, send: []func(*tclient){identify(nil, 1<<1)}, code: 4014},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, tc.opts)
			q := tc.query
			if q == "" {
				q = "v=10&encoding=json"
			}
			c := dial(t, s.GatewayURL(), q)
			var sessionID string
			if !tc.noHello {
				c.hello()
				if tc.ready {
					c.identify(nil)
					sessionID = readyOf(t, c.expect(opDispatch, "READY")).SessionID
				}
			}
			for _, f := range tc.send {
				f(c)
			}
			c.expectClose(tc.code)
			st := s.Stats()
			if st.Closes[tc.code] != 1 {
				t.Fatalf("Closes = %v, want one %d", st.Closes, tc.code)
			}
			if sessionID != "" && st.Sessions[sessionID].Ended != endsSession(tc.code) {
				t.Fatalf("after close %d session ended = %v, want %v", tc.code, st.Sessions[sessionID].Ended, endsSession(tc.code))
			}
			await(t, s, "connection gone", func(st Stats) bool { return st.Connections == 0 && st.Shards[0].Live == 0 })
		})
	}
}

func TestPayloadOfExactly4096BytesIsAccepted(t *testing.T) {
	s := newTestServer(t, Options{})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	head := `{"op":1,"d":null,"pad":"`
	b := []byte(head + strings.Repeat("x", maxPayload-len(head)-2) + `"}`)
	if len(b) != maxPayload {
		t.Fatalf("built %d bytes", len(b))
	}
	c.sendRaw(b)
	c.expect(opHeartbeatACK, "")
}

func TestUnknownCompressIsRefused(t *testing.T) {
	s := newTestServer(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, s.GatewayURL()+"?v=10&encoding=json&compress=deflate", nil)
	if err == nil {
		t.Fatal("dial with compress=deflate succeeded")
	}
	if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("response %v, want 400", resp)
	}
}

func TestIdentifyBuckets(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	s := newTestServer(t, Options{Shards: 4, MaxConcurrency: 2, IdentifyWindow: time.Hour})
	s.setClock(clock.now)

	start(t, s, "v=10&encoding=json", []int{0, 4})
	start(t, s, "v=10&encoding=json", []int{1, 4}) // another bucket: no wait

	// Shard 2 shares bucket 0 with shard 0: too early.
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.identify([]int{2, 4})
	p := c.expect(opInvalidSession, "")
	if string(p.D) != "false" {
		t.Fatalf("op 9 d = %s, want false", p.D)
	}
	st := s.Stats()
	if st.IdentifyViolations != 1 || st.Identifies != 2 {
		t.Fatalf("violations %d identifies %d, want 1 and 2", st.IdentifyViolations, st.Identifies)
	}
	// The socket stays open: heartbeats still work, and once the window has
	// passed the same socket may identify.
	c.send(opHeartbeat, nil)
	c.expect(opHeartbeatACK, "")
	clock.advance(time.Hour)
	c.identify([]int{2, 4})
	c.expect(opDispatch, "READY")

	st = s.Stats()
	if st.IdentifiesPerBucket[0] != 2 || st.IdentifiesPerBucket[1] != 1 || st.IdentifyViolations != 1 {
		t.Fatalf("per bucket %v violations %d", st.IdentifiesPerBucket, st.IdentifyViolations)
	}
	if st.Shards[2].Identifies != 1 || st.Shards[2].Live != 1 {
		t.Fatalf("shard 2 stats %+v", st.Shards[2])
	}
}

func TestSessionStartBudgetAndTokenReset(t *testing.T) {
	s := newTestServer(t, Options{Shards: 2, SessionStartLimit: 2})
	a, ready, _ := start(t, s, "v=10&encoding=json", []int{0, 2})
	b, _, _ := start(t, s, "v=10&encoding=json", []int{1, 2})
	if got := s.Stats().SessionStartRemaining; got != 0 {
		t.Fatalf("remaining %d, want 0", got)
	}
	gb := getGatewayBot(t, s, defaultToken)
	if gb.SessionStartLimit.Remaining != 0 || gb.SessionStartLimit.Total != 2 {
		t.Fatalf("gateway/bot session_start_limit %+v", gb.SessionStartLimit)
	}

	// One more IDENTIFY with no session starts left resets the token.
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.identify([]int{0, 2})
	for _, cl := range []*tclient{a, b, c} {
		cl.expectClose(4004)
	}
	st := s.Stats()
	if st.TokenResets != 1 || st.TokenValid || !st.Sessions[ready.SessionID].Ended {
		t.Fatalf("after reset: resets %d valid %v session %+v", st.TokenResets, st.TokenValid, st.Sessions[ready.SessionID])
	}
	if code := gatewayBotStatus(t, s, defaultToken); code != http.StatusUnauthorized {
		t.Fatalf("/gateway/bot after token reset: %d, want 401", code)
	}
	d := dial(t, s.ResumeURL(), "v=10&encoding=json")
	d.hello()
	d.resume(ready.SessionID, 1)
	d.expectClose(4004)
}

func TestOpcodesAfterIdentifyAreAccepted(t *testing.T) {
	s := newTestServer(t, Options{})
	c, _, _ := start(t, s, "v=10&encoding=json", nil)
	for _, p := range []string{
		`{"op":3,"d":{"since":null,"activities":[],"status":"online","afk":false}}`,
		`{"op":4,"d":{"guild_id":"1","channel_id":null,"self_mute":false,"self_deaf":false}}`,
		`{"op":8,"d":{"guild_id":"1","query":"","limit":0}}`,
		`{"op":31,"d":{"guild_ids":["1"]}}`,
		`{"op":43,"d":{"guild_id":"1","fields":["status"]}}`,
	} {
		c.sendRaw([]byte(p))
	}
	c.send(opHeartbeat, 3)
	c.expect(opHeartbeatACK, "")
	if st := s.Stats(); len(st.Closes) != 0 {
		t.Fatalf("closes %v", st.Closes)
	}
}

func readyOf(t testing.TB, p payload) readyD {
	t.Helper()
	var r readyD
	if err := json.Unmarshal(p.D, &r); err != nil {
		t.Fatalf("READY: %v", err)
	}
	return r
}

func TestCloseCodeTable(t *testing.T) {
	// The codes that end a session are exactly Discord's "start over" and
	// fatal ones.
	for code := 4000; code <= 4014; code++ {
		want := code == 4004 || code == 4007 || code == 4009 || code >= 4010
		if endsSession(code) != want {
			t.Errorf("endsSession(%d) = %v", code, !want)
		}
	}
	if endsSession(1000) || endsSession(4200) {
		t.Error("non-Discord codes must keep the session")
	}
}

// The gateway takes the token with or without the "Bot " prefix, as Discord's does;
// AcceptTokens changes which tokens pass, at the gateway and on GET /gateway/bot.
func TestTokenPrefixAndAcceptTokens(t *testing.T) {
	s := newTestServer(t, Options{Shards: 1})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.send(opIdentify, identifyD("Bot "+defaultToken, []int{0, 1}, testIntents))
	c.expect(opDispatch, "READY")

	gatewayBot := func(tok string) int {
		req, _ := http.NewRequest(http.MethodGet, s.APIURL()+"/gateway/bot", nil)
		req.Header.Set("Authorization", "Bot "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := gatewayBot("other"); code != http.StatusUnauthorized {
		t.Fatalf("an unknown token got HTTP %d", code)
	}
	s.AcceptTokens("other")
	if code := gatewayBot("other"); code != http.StatusOK {
		t.Fatalf("an accepted token got HTTP %d", code)
	}
	if code := gatewayBot(defaultToken); code != http.StatusUnauthorized {
		t.Fatalf("a token no longer accepted got HTTP %d", code)
	}
	c2 := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c2.hello()
	c2.identify([]int{0, 1})
	c2.expectClose(closeAuthenticationFailed)
}

// An IDENTIFY too soon after its bucket's previous one, when the fake could not date
// that one exactly (read late, behind later bytes whose stamp it may carry), is not
// called a violation: it is let through and counted as unverified.
func TestIdentifyAfterAnInexactArrivalIsNotJudged(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	s := newTestServer(t, Options{Shards: 4, MaxConcurrency: 2, IdentifyWindow: time.Hour})
	s.setClock(clock.now)
	start(t, s, "v=10&encoding=json", []int{0, 4})

	s.mu.Lock()
	last := s.lastIdentify[0]
	last.exact = false // as a stamp taken behind later bytes would be
	s.lastIdentify[0] = last
	s.mu.Unlock()

	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.identify([]int{2, 4}) // bucket 0 again, within the hour
	c.expect(opDispatch, "READY")
	if st := s.Stats(); st.IdentifyViolations != 0 || st.IdentifyUnverified != 1 || st.Identifies != 2 {
		t.Fatalf("violations %d, unverified %d, identifies %d: want 0, 1, 2", st.IdentifyViolations, st.IdentifyUnverified, st.Identifies)
	}
	// Shard 2's own arrival was exact: the next one in the bucket is judged again.
	d := dial(t, s.GatewayURL(), "v=10&encoding=json")
	d.hello()
	d.identify([]int{0, 4})
	if p := d.expect(opInvalidSession, ""); string(p.D) != "false" {
		t.Fatalf("op 9 d = %s, want false", p.D)
	}
	if st := s.Stats(); st.IdentifyViolations != 1 || st.IdentifyUnverified != 1 {
		t.Fatalf("violations %d, unverified %d: want 1, 1", st.IdentifyViolations, st.IdentifyUnverified)
	}
}
