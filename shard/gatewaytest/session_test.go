package gatewaytest

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// readUntil reads dispatches, checking that seqs are contiguous after
// *last, until stop returns true for one; heartbeat ACKs are skipped.
func readUntil(t testing.TB, c *tclient, last *int64, stop func(p payload) bool) payload {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		p := c.mustRead()
		if p.Op != opDispatch {
			t.Fatalf("unexpected payload %s", p.raw)
		}
		if p.seq() != *last+1 {
			t.Fatalf("seq %d (%s) after %d: gap or duplicate", p.seq(), p.name(), *last)
		}
		*last = p.seq()
		if stop(p) {
			return p
		}
	}
	t.Fatalf("condition not met after %v (last seq %d)", testTimeout, *last)
	return payload{}
}

// upTo returns a stop condition for readUntil: seq reached target.
func upTo(target int64) func(p payload) bool {
	return func(p payload) bool { return p.seq() >= target }
}

func TestResumeReplaysExactlyTheMissedEvents(t *testing.T) {
	for _, compress := range []string{"", "zlib-stream", "zstd-stream"} {
		t.Run("compress="+compress, func(t *testing.T) {
			s := newTestServer(t, Options{EventRate: 2000, SplitFrames: true})
			q := "v=10&encoding=json"
			if compress != "" {
				q += "&compress=" + compress
			}
			c, ready, last := start(t, s, q, nil)
			// Read some live events, then lose the connection.
			readUntil(t, c, &last, upTo(last+20))
			if err := s.DropShard(0); err != nil {
				t.Fatal(err)
			}
			// The session keeps producing while detached.
			await(t, s, "events while detached", func(st Stats) bool {
				ss := st.Sessions[ready.SessionID]
				return !ss.Attached && ss.LastSeq >= last+50
			})

			if ss := s.Stats().Sessions[ready.SessionID]; !ss.Resumed.IsZero() {
				t.Fatalf("a session never resumed has Resumed %v", ss.Resumed)
			}
			sent := time.Now()
			r := dial(t, s.ResumeURL(), q)
			r.hello()
			r.resume(ready.SessionID, last)
			from := last
			resumed := readUntil(t, r, &last, func(p payload) bool { return p.name() == "RESUMED" })
			replayed := resumed.seq() - from - 1
			if replayed < 50 {
				t.Fatalf("replayed %d events, want >= 50", replayed)
			}
			// Live events follow RESUMED with no gap.
			readUntil(t, r, &last, upTo(resumed.seq()+20))

			st := s.Stats()
			ss := st.Sessions[ready.SessionID]
			if ss.Replayed != replayed || st.Resumes != 1 || st.ResumesOffResumeURL != 0 || st.Shards[0].Resumes != 1 || st.Shards[0].MaxLive != 1 {
				t.Fatalf("stats: replayed %d (want %d), resumes %d, off-url %d, shard %+v", ss.Replayed, replayed, st.Resumes, st.ResumesOffResumeURL, st.Shards[0])
			}
			if ss.Resumed.Before(sent) || ss.Resumed.After(time.Now()) {
				t.Fatalf("Resumed %v, want between the RESUME at %v and now", ss.Resumed, sent)
			}
			if st.Drops != 1 || ss.Ended || !ss.Attached {
				t.Fatalf("drops %d, session %+v", st.Drops, ss)
			}
		})
	}
}

func TestResumeRefusals(t *testing.T) {
	// READY and 40 GUILD_CREATEs are seqs 1..41; a 10-entry buffer keeps
	// 32..41, so RESUME can start after 31 at the earliest.
	s := newTestServer(t, Options{Guilds: 40, ReplayBuffer: 10})
	_, ready, last := start(t, s, "v=10&encoding=json", nil)
	if err := s.DropShard(0); err != nil {
		t.Fatal(err)
	}
	await(t, s, "detached", func(st Stats) bool { return !st.Sessions[ready.SessionID].Attached })
	if ss := s.Stats().Sessions[ready.SessionID]; last != 41 || ss.FirstSeq != 32 || ss.LastSeq != 41 {
		t.Fatalf("last %d, session %+v", last, ss)
	}
	for _, tc := range []struct {
		name      string
		sessionID string
		seq       int64
	}{
		{"seq long before the buffer", ready.SessionID, 1},
		{"seq just before the buffer", ready.SessionID, 30},
		{"seq newer than the session", ready.SessionID, 42},
		{"unknown session", "0123456789abcdef0123456789abcdef", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s.ResumeURL(), "v=10&encoding=json")
			c.hello()
			c.resume(tc.sessionID, tc.seq)
			expectInvalid(c, "false")
		})
	}
	st := s.Stats()
	if st.ResumesFailed != 4 || st.Resumes != 0 {
		t.Fatalf("ResumesFailed %d Resumes %d", st.ResumesFailed, st.Resumes)
	}
	// A failed resume does not end the session: the oldest valid seq works
	// and replays the whole buffer.
	c := dial(t, s.ResumeURL(), "v=10&encoding=json")
	c.hello()
	c.resume(ready.SessionID, 31)
	last = 31
	if p := readUntil(t, c, &last, func(p payload) bool { return p.name() == "RESUMED" }); p.seq() != 42 {
		t.Fatalf("RESUMED seq %d, want 42", p.seq())
	}
}

func TestResumeAfterTTLFails(t *testing.T) {
	s := newTestServer(t, Options{SessionTTL: 50 * time.Millisecond})
	_, ready, last := start(t, s, "v=10&encoding=json", nil)
	if err := s.DropShard(0); err != nil {
		t.Fatal(err)
	}
	await(t, s, "session expiry", func(st Stats) bool { return st.Sessions[ready.SessionID].Ended })
	if why := s.Stats().Sessions[ready.SessionID].EndReason; why != "expired" {
		t.Fatalf("EndReason %q", why)
	}
	c := dial(t, s.ResumeURL(), "v=10&encoding=json")
	c.hello()
	c.resume(ready.SessionID, last)
	c.expect(opInvalidSession, "")
}

func TestClientCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code      int
		resumable bool
	}{
		{1000, false},
		{1001, false},
		{4000, true},
		{4200, true}, // discord.js's resumable code
		{1012, true}, // disgo's and discordgo's
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			s := newTestServer(t, Options{})
			c, ready, last := start(t, s, "v=10&encoding=json", nil)
			if err := c.ws.Close(websocket.StatusCode(tc.code), ""); err != nil {
				t.Fatalf("close: %v", err)
			}
			await(t, s, "close seen", func(st Stats) bool { return st.ClientCloses[tc.code] == 1 && st.Shards[0].Live == 0 })
			if ended := s.Stats().Sessions[ready.SessionID].Ended; ended == tc.resumable {
				t.Fatalf("session ended = %v after client close %d", ended, tc.code)
			}
			r := dial(t, s.ResumeURL(), "v=10&encoding=json")
			r.hello()
			r.resume(ready.SessionID, last)
			if tc.resumable {
				r.expect(opDispatch, "RESUMED")
			} else {
				r.expect(opInvalidSession, "")
			}
		})
	}
}

func TestResumeTakesOverALiveSession(t *testing.T) {
	s := newTestServer(t, Options{EventRate: 1000})
	old, ready, last := start(t, s, "v=10&encoding=json", nil)
	c := dial(t, s.ResumeURL(), "v=10&encoding=json")
	c.hello()
	c.resume(ready.SessionID, last)
	old.expectClose(closeSessionTakenOver)
	readUntil(t, c, &last, func(p payload) bool { return p.name() == "RESUMED" })
	readUntil(t, c, &last, upTo(last+5))

	st := s.Stats()
	if sh := st.Shards[0]; sh.MaxLive != 1 || sh.Live != 1 {
		t.Fatalf("shard 0: %+v, want Live 1 and MaxLive 1 across the takeover", sh)
	}
	if ss := st.Sessions[ready.SessionID]; ss.Ended || !ss.Attached {
		t.Fatalf("session after takeover: %+v", ss)
	}
}

func TestTwoLiveConnectionsForOneShardShowInMaxLive(t *testing.T) {
	s := newTestServer(t, Options{})
	start(t, s, "v=10&encoding=json", []int{0, 1})
	start(t, s, "v=10&encoding=json", []int{0, 1}) // Discord allows it; MaxLive shows it
	if sh := s.Stats().Shards[0]; sh.MaxLive != 2 || sh.Live != 2 || sh.Identifies != 2 {
		t.Fatalf("shard 0: %+v", sh)
	}
}

func TestResumeOffResumeURLIsCounted(t *testing.T) {
	s := newTestServer(t, Options{})
	_, ready, last := start(t, s, "v=10&encoding=json", nil)
	if err := s.DropShard(0); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.resume(ready.SessionID, last)
	c.expect(opDispatch, "RESUMED")
	if st := s.Stats(); st.ResumesOffResumeURL != 1 || st.Resumes != 1 {
		t.Fatalf("off-url %d resumes %d", st.ResumesOffResumeURL, st.Resumes)
	}
}

func TestInjectedInvalidationAndCloses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inject    func(s *Server) error
		expect    func(c *tclient)
		resumable bool
	}{
		{"op 9 false", func(s *Server) error { return s.InvalidateSession(0, false) },
			func(c *tclient) { expectInvalid(c, "false") }, false},
		{"op 9 true", func(s *Server) error { return s.InvalidateSession(0, true) },
			func(c *tclient) { expectInvalid(c, "true") }, true},
		{"close 4000", func(s *Server) error { return s.CloseShard(0, 4000) },
			func(c *tclient) { c.expectClose(4000) }, true},
		{"close 4008", func(s *Server) error { return s.CloseShard(0, 4008) },
			func(c *tclient) { c.expectClose(4008) }, true},
		{"close 4004", func(s *Server) error { return s.CloseShard(0, 4004) },
			func(c *tclient) { c.expectClose(4004) }, false},
		{"close 4009", func(s *Server) error { return s.CloseShard(0, 4009) },
			func(c *tclient) { c.expectClose(4009) }, false},
		{"close 1000 from the server", func(s *Server) error { return s.CloseShard(0, 1000) },
			func(c *tclient) { c.expectClose(1000) }, true},
		{"reconnect", func(s *Server) error { return s.SendReconnect(0) },
			func(c *tclient) { c.expect(opReconnect, "") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Options{})
			c, ready, last := start(t, s, "v=10&encoding=json", nil)
			if err := tc.inject(s); err != nil {
				t.Fatal(err)
			}
			tc.expect(c)
			r := dial(t, s.ResumeURL(), "v=10&encoding=json")
			r.hello()
			r.resume(ready.SessionID, last)
			if tc.resumable {
				r.expect(opDispatch, "RESUMED")
			} else {
				expectInvalid(r, "false")
			}
		})
	}
}

func expectInvalid(c *tclient, d string) {
	c.t.Helper()
	if p := c.expect(opInvalidSession, ""); string(p.D) != d {
		c.t.Fatalf("op 9 d = %s, want %s", p.D, d)
	}
}

func TestInjectorsNeedALiveConnection(t *testing.T) {
	s := newTestServer(t, Options{})
	for name, f := range map[string]func() error{
		"SendReconnect":     func() error { return s.SendReconnect(0) },
		"InvalidateSession": func() error { return s.InvalidateSession(0, true) },
		"CloseShard":        func() error { return s.CloseShard(0, 4000) },
		"DropShard":         func() error { return s.DropShard(0) },
		"RequestHeartbeat":  func() error { return s.RequestHeartbeat(0) },
	} {
		if err := f(); !errors.Is(err, ErrNoLiveConnection) {
			t.Errorf("%s: %v, want ErrNoLiveConnection", name, err)
		}
	}
	s.Close()
	s.Close() // idempotent
	if err := s.SendReconnect(0); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	if err := s.Await(ctxT(t), func(st Stats) bool { return false }); !errors.Is(err, ErrClosed) {
		t.Errorf("Await after Close: %v, want ErrClosed", err)
	}
}

type messageD struct {
	ID        string `json:"id"`
	GuildID   string `json:"guild_id"`
	ChannelID string `json:"channel_id"`
	Content   string `json:"content"`
	Author    struct {
		ID string `json:"id"`
	} `json:"author"`
	Member *json.RawMessage `json:"member"`
	Embeds []json.RawMessage
}

func TestGeneratedMessages(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		shard   []int
		intents int64
		dm      bool
		content bool
	}{
		{"guild messages with content", Options{Shards: 2, Guilds: 5}, []int{1, 2}, testIntents, false, true},
		{"guild messages without MESSAGE_CONTENT", Options{Shards: 2, Guilds: 5}, []int{0, 2}, 1 | intentGuildMessages, false, false},
		{"DMs on shard 0 of a bot in no guild", Options{Guilds: NoGuilds}, nil, intentDirectMessages | intentMessageContent, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.EventRate = 2000
			s := newTestServer(t, tc.opts)
			c := dial(t, s.GatewayURL(), "v=10&encoding=json")
			c.hello()
			c.send(opIdentify, identifyD(defaultToken, tc.shard, tc.intents))
			ready := readyOf(t, c.expect(opDispatch, "READY"))
			owned := map[string]bool{}
			for _, g := range ready.Guilds {
				owned[g.ID] = true
			}
			last := int64(1)
			seen := map[string]bool{}
			readUntil(t, c, &last, func(p payload) bool {
				if p.name() == "GUILD_CREATE" {
					return false
				}
				if p.name() != "MESSAGE_CREATE" {
					t.Fatalf("unexpected %s", p.name())
				}
				if len(p.raw) < 500 || len(p.raw) > 2000 {
					t.Fatalf("MESSAGE_CREATE of %d bytes", len(p.raw))
				}
				var m messageD
				if err := json.Unmarshal(p.D, &m); err != nil {
					t.Fatal(err)
				}
				if m.ID == "" || seen[m.ID] || m.Author.ID == "" {
					t.Fatalf("message id %q (seen %v)", m.ID, seen[m.ID])
				}
				seen[m.ID] = true
				if tc.dm != (m.GuildID == "") || tc.dm != (m.Member == nil) {
					t.Fatalf("dm %v but guild_id %q member %v", tc.dm, m.GuildID, m.Member != nil)
				}
				if !tc.dm && !owned[m.GuildID] {
					t.Fatalf("guild_id %s is not one of the shard's guilds", m.GuildID)
				}
				if tc.content != (m.Content != "") || tc.content != (len(m.Embeds) > 0) {
					t.Fatalf("content %v but content %q, %d embeds", tc.content, m.Content, len(m.Embeds))
				}
				return len(seen) == 30
			})
		})
	}
}

func TestNoMessagesWithoutTheirIntent(t *testing.T) {
	s := newTestServer(t, Options{EventRate: 5000})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.send(opIdentify, identifyD(defaultToken, nil, 1)) // GUILDS only
	ready := readyOf(t, c.expect(opDispatch, "READY"))
	c.expect(opDispatch, "GUILD_CREATE")
	// A heartbeat round trip proves nothing else was queued before the ACK.
	c.send(opHeartbeat, 2)
	c.expect(opHeartbeatACK, "")
	if ss := s.Stats().Sessions[ready.SessionID]; ss.LastSeq != 2 {
		t.Fatalf("LastSeq %d, want 2 (no MESSAGE_CREATE without GUILD_MESSAGES)", ss.LastSeq)
	}
}

func TestSlowClientIsDroppedAndOthersContinue(t *testing.T) {
	s := newTestServer(t, Options{Shards: 2, EventRate: 20000, OutboundQueue: 256, SendLimit: 1 << 20})
	_, slowReady, _ := start(t, s, "v=10&encoding=json", []int{0, 2}) // never reads again
	// The other client gets no events (GUILDS intent only), so it cannot
	// fall behind itself; its heartbeat round trips show the fake serves it
	// while the slow one is stuck.
	fast := dial(t, s.GatewayURL(), "v=10&encoding=json")
	fast.hello()
	fast.send(opIdentify, identifyD(defaultToken, []int{1, 2}, 1))
	fast.expect(opDispatch, "READY")
	fast.expect(opDispatch, "GUILD_CREATE")
	deadline := time.Now().Add(testTimeout)
	for s.Stats().SlowClientDrops == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow client was never dropped")
		}
		fast.send(opHeartbeat, 2)
		fast.expect(opHeartbeatACK, "")
	}
	st := s.Stats()
	if ss := st.Sessions[slowReady.SessionID]; ss.Ended || ss.Attached || st.Shards[0].Live != 0 {
		t.Fatalf("slow session %+v, shard 0 %+v: want detached and resumable", ss, st.Shards[0])
	}
}
