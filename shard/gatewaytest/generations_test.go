package gatewaytest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

const q10 = "v=10&encoding=json"

// member is one session a test holds open, with the last seq its client read.
type member struct {
	c     *tclient
	ready readyD
	last  int64
	total int
	shard int
}

func openGeneration(t *testing.T, s *Server, total int) []*member {
	t.Helper()
	out := make([]*member, total)
	for k := range total {
		c, r, last := start(t, s, q10, []int{k, total})
		out[k] = &member{c: c, ready: r, last: last, total: total, shard: k}
	}
	return out
}

// guildIDOf is the guild id the fake's payloads carry for guild index i.
func guildIDOf(i int) string { return strconv.FormatUint(guildID(i), 10) }

// readMessages reads n MESSAGE_CREATEs with contiguous seqs and returns them.
func (m *member) readMessages(t *testing.T, n int) []payload {
	t.Helper()
	out := make([]payload, 0, n)
	for len(out) < n {
		p := readUntil(t, m.c, &m.last, func(payload) bool { return true })
		if p.name() != "MESSAGE_CREATE" {
			t.Fatalf("shard %d/%d: %s where a MESSAGE_CREATE was due", m.shard, m.total, p.name())
		}
		out = append(out, p)
	}
	return out
}

// Two generations open at once (4 and 8 shards), as during a reshard: every
// guild event reaches the session of its guild's shard in both, with the same
// d byte for byte and each session's own contiguous seqs, and nowhere else.
func TestTwoGenerationsEachGetEveryGuildEvent(t *testing.T) {
	s := newTestServer(t, Options{Shards: 4, Guilds: 16, GuildEventRate: 10})
	gens := map[int][]*member{4: openGeneration(t, s, 4), 8: openGeneration(t, s, 8)}
	allOpen := s.Stats().GuildEvents
	await(t, s, "guild events with both generations open", func(st Stats) bool { return st.GuildEvents >= allOpen+64 })
	if err := s.SetGuildEventRate(0); err != nil {
		t.Fatal(err)
	}
	events := s.GuildEvents(0)
	if int64(len(events)) != s.Stats().GuildEvents {
		t.Fatalf("%d events listed, %d counted", len(events), s.Stats().GuildEvents)
	}

	// Which session got which event, by the generations each event lists.
	want := map[[2]int][]GuildEvent{}
	queued := int64(0)
	for i, ev := range events {
		if ev.Index != int64(i) || (i > 0 && ev.ID <= events[i-1].ID) {
			t.Fatalf("event %d: index %d, id %d after %d: want numbered in order, ids growing", i, ev.Index, ev.ID, events[max(i-1, 0)].ID)
		}
		if ev.Index >= allOpen && !slices.Equal(ev.Generations, []int{4, 8}) {
			t.Fatalf("event %d with both generations open went to %v", ev.Index, ev.Generations)
		}
		idx := int(ev.GuildID >> 22)
		if ev.GuildID != guildID(idx) || idx >= 16 {
			t.Fatalf("event %d: guild id %d is none of the bot's", ev.Index, ev.GuildID)
		}
		for _, total := range ev.Generations {
			want[[2]int{total, idx % total}] = append(want[[2]int{total, idx % total}], ev)
			queued++
		}
	}

	bodies := map[int]map[uint64][]byte{4: {}, 8: {}} // generation → message id → d
	for total, members := range gens {
		for _, m := range members {
			evs := want[[2]int{total, m.shard}]
			got := m.readMessages(t, len(evs))
			for j, p := range got {
				var msg messageD
				if err := json.Unmarshal(p.D, &msg); err != nil {
					t.Fatal(err)
				}
				if msg.ID != strconv.FormatUint(evs[j].ID, 10) || msg.GuildID != strconv.FormatUint(evs[j].GuildID, 10) {
					t.Fatalf("shard %d/%d message %d: id %s guild %s, want event %+v", m.shard, total, j, msg.ID, msg.GuildID, evs[j])
				}
				bodies[total][evs[j].ID] = p.D
			}
			if total == 8 && m.shard == 3 && len(got) > 0 {
				checkShape(t, "message_create.json", got[0])
			}
			// Nothing more was queued for it: a heartbeat's ACK comes next.
			m.c.send(opHeartbeat, m.last)
			m.c.expect(opHeartbeatACK, "")
		}
	}
	both := 0
	for id, d4 := range bodies[4] {
		if d8, ok := bodies[8][id]; ok {
			both++
			if !bytes.Equal(d4, d8) {
				t.Fatalf("message %d differs between the generations:\n 4: %s\n 8: %s", id, d4, d8)
			}
		}
	}
	if both < 64 {
		t.Fatalf("%d events reached both generations, want >= 64", both)
	}

	st := s.Stats()
	for total, members := range gens {
		g := st.Generations[total]
		if g.Identifies != total || g.Live != total || g.OpenSessions != total || len(g.Sessions) != total {
			t.Fatalf("generation %d: %+v", total, g)
		}
		for _, m := range members {
			if sh := g.Shards[m.shard]; sh.Live != 1 || sh.MaxLive != 1 || sh.Identifies != 1 {
				t.Fatalf("generation %d shard %d: %+v", total, m.shard, sh)
			}
			if g.Sessions[m.ready.SessionID] != m.shard {
				t.Fatalf("generation %d: session %s on shard %d, want %d", total, m.ready.SessionID, g.Sessions[m.ready.SessionID], m.shard)
			}
		}
	}
	if g4, g8 := st.Generations[4], st.Generations[8]; g4.GuildEvents+g8.GuildEvents != queued {
		t.Fatalf("guild events queued %d + %d, want %d", g4.GuildEvents, g8.GuildEvents, queued)
	}
	// Shard ids across generations: shard 0 of 4 and shard 0 of 8 are both live.
	if sh := st.Shards[0]; sh.Live != 2 || sh.Identifies != 2 {
		t.Fatalf("shard 0 over both generations: %+v", sh)
	}
}

// 4011 is judged per generation: the IDENTIFY's own num_shards counts the
// guilds of its shard, so a new generation with more shards passes where the
// old count no longer does, whatever else is open.
func TestShardingRequiredPerGeneration(t *testing.T) {
	s := newTestServer(t, Options{Shards: 2, Guilds: 10, MaxGuildsPerShard: 2})
	identify := func(shard []int) *tclient {
		c := dial(t, s.GatewayURL(), q10)
		c.hello()
		c.identify(shard)
		return c
	}
	identify([]int{0, 4}).expectClose(closeShardingRequired) // guilds 0, 4, 8
	five := openGeneration(t, s, 5)                          // two guilds each
	identify([]int{1, 4}).expectClose(closeShardingRequired) // still over with 5 open
	if _, err := s.AddGuilds(1); err != nil {                // guild 10 goes to shard 0 of 5
		t.Fatal(err)
	}
	identify([]int{0, 5}).expectClose(closeShardingRequired) // guilds 0, 5, 10
	identify([]int{1, 5}).expect(opDispatch, "READY")        // guilds 1, 6
	// The open session whose shard grew past the limit is not closed: it gets
	// the guild, as a live session on Discord does.
	g := readUntil(t, five[0].c, &five[0].last, func(payload) bool { return true })
	var d struct{ ID string }
	if err := json.Unmarshal(g.D, &d); err != nil || g.name() != "GUILD_CREATE" || d.ID != guildIDOf(10) {
		t.Fatalf("shard 0 of 5 after a guild joined: %s", g.raw)
	}
	st := s.Stats()
	if st.Closes[closeShardingRequired] != 3 || st.Generations[4].Identifies != 0 || st.Generations[5].Identifies != 6 {
		t.Fatalf("closes %v, generation 4 %+v, generation 5 %+v", st.Closes, st.Generations[4], st.Generations[5])
	}
	if g := st.Generations[4]; g.Live != 0 || g.Shards[0].MaxLive != 1 || len(g.Sessions) != 0 {
		t.Fatalf("generation 4 after its 4011s: %+v", g)
	}
}

func postJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("POST %s: %v in %s", url, err, b)
		}
	}
	return resp.StatusCode
}

// POST /fake/guilds adds guilds at run time: /gateway/bot's recommendation
// rises with them (ceil(guilds / GuildsPerShardRecommended), never below
// Options.Shards), and each new guild's GUILD_CREATE reaches its shard's
// session in every generation, one without a connection through RESUME's
// replay. Sessions identified later have the guilds in READY.
func TestAddGuildsRaisesTheRecommendationAndReachesEveryGeneration(t *testing.T) {
	s := newTestServer(t, Options{Shards: 2, Guilds: 4, GuildsPerShardRecommended: 2})
	base := strings.TrimSuffix(s.StatsURL(), "/stats")
	if gb := getGatewayBot(t, s, defaultToken); gb.Shards != 2 {
		t.Fatalf("recommended %d shards for 4 guilds at 2 a shard, want 2", gb.Shards)
	}
	gens := map[int][]*member{2: openGeneration(t, s, 2), 4: openGeneration(t, s, 4)}
	detached := gens[4][3]
	if err := s.DropShard(3); err != nil {
		t.Fatal(err)
	}
	await(t, s, "shard 3 of 4 detached", func(st Stats) bool { return !st.Sessions[detached.ready.SessionID].Attached })

	var added addGuildsResponse
	if code := postJSON(t, base+"/guilds?count=4", &added); code != http.StatusOK {
		t.Fatalf("POST /fake/guilds?count=4: %d", code)
	}
	if added.Guilds != 8 || added.Shards != 4 || added.FirstGuildID != guildID(4) || added.LastGuildID != guildID(7) {
		t.Fatalf("POST /fake/guilds answered %+v", added)
	}
	if gb := getGatewayBot(t, s, defaultToken); gb.Shards != 4 {
		t.Fatalf("recommended %d shards for 8 guilds at 2 a shard, want 4", gb.Shards)
	}
	guildCreates := func(m *member, stop func(payload) bool) []string {
		var ids []string
		readUntil(t, m.c, &m.last, func(p payload) bool {
			if p.name() == "GUILD_CREATE" {
				var d struct{ ID string }
				if err := json.Unmarshal(p.D, &d); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, d.ID)
			}
			return stop(p)
		})
		return ids
	}
	for total, members := range gens {
		for _, m := range members {
			var want []string
			for i := 4; i < 8; i++ {
				if i%total == m.shard {
					want = append(want, guildIDOf(i))
				}
			}
			stop := func(payload) bool { return m.last == 1+int64(len(m.ready.Guilds)+len(want)) }
			if m == detached {
				m.c = dial(t, m.ready.ResumeGatewayURL, q10)
				m.c.hello()
				m.c.resume(m.ready.SessionID, m.last)
				stop = func(p payload) bool { return p.name() == "RESUMED" }
			}
			got := guildCreates(m, stop)
			if !slices.Equal(got, want) {
				t.Fatalf("shard %d of %d got GUILD_CREATEs %v, want %v", m.shard, total, got, want)
			}
		}
	}

	_, r, _ := start(t, s, q10, []int{1, 2})
	var ids []string
	for _, g := range r.Guilds {
		ids = append(ids, g.ID)
	}
	if want := []string{guildIDOf(1), guildIDOf(3), guildIDOf(5), guildIDOf(7)}; !slices.Equal(ids, want) {
		t.Fatalf("READY of shard 1 of 2 lists %v, want %v", ids, want)
	}
	if code := postJSON(t, base+"/guilds", &added); code != http.StatusOK || added.Guilds != 9 || added.Shards != 5 {
		t.Fatalf("POST /fake/guilds: %d %+v, want 9 guilds and 5 shards", code, added)
	}
	if st := s.Stats(); st.Guilds != 9 || st.RecommendedShards != 5 {
		t.Fatalf("stats: %d guilds, %d shards recommended", st.Guilds, st.RecommendedShards)
	}
	for _, bad := range []string{"count=0", "count=x", "count=10001", "count=-3"} {
		if code := postJSON(t, base+"/guilds?"+bad, nil); code != http.StatusBadRequest {
			t.Fatalf("POST /fake/guilds?%s: %d, want 400", bad, code)
		}
	}
}

// A session its client closed with 1000 is gone: no RESUME, no more guild
// events, and its generation ends with its last session. A session that only
// lost its connection keeps getting its guild events, replayed on RESUME.
func TestGenerationsLoseSessionsClosedWith1000(t *testing.T) {
	s := newTestServer(t, Options{Shards: 2, Guilds: 4, GuildEventRate: 25})
	gen := openGeneration(t, s, 2)
	if err := gen[0].c.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	await(t, s, "shard 0 of 2 ended", func(st Stats) bool { return st.Sessions[gen[0].ready.SessionID].Ended })
	if err := s.DropShard(1); err != nil {
		t.Fatal(err)
	}
	await(t, s, "shard 1 of 2 detached", func(st Stats) bool { return !st.Sessions[gen[1].ready.SessionID].Attached })
	from := s.Stats().GuildEvents
	await(t, s, "guild events", func(st Stats) bool { return st.GuildEvents >= from+40 })
	if err := s.SetGuildEventRate(0); err != nil {
		t.Fatal(err)
	}
	var toShard1 []GuildEvent // every guild event queued for shard 1 since its READY
	for _, ev := range s.GuildEvents(0) {
		odd := (ev.GuildID>>22)%2 == 1
		switch {
		case odd && len(ev.Generations) > 0:
			toShard1 = append(toShard1, ev)
		case ev.Index >= from && !odd && len(ev.Generations) != 0:
			t.Fatalf("event %d of shard 0 went to %v after its only session closed with 1000", ev.Index, ev.Generations)
		case ev.Index >= from && odd && !slices.Equal(ev.Generations, []int{2}):
			t.Fatalf("event %d of shard 1 went to %v, want its detached session's generation", ev.Index, ev.Generations)
		}
	}

	c := dial(t, s.ResumeURL(), q10)
	c.hello()
	c.resume(gen[0].ready.SessionID, gen[0].last)
	expectInvalid(c, "false")

	m := gen[1]
	m.c = dial(t, m.ready.ResumeGatewayURL, q10)
	m.c.hello()
	m.c.resume(m.ready.SessionID, m.last)
	got := m.readMessages(t, len(toShard1))
	for j, p := range got {
		var msg messageD
		if err := json.Unmarshal(p.D, &msg); err != nil || msg.ID != strconv.FormatUint(toShard1[j].ID, 10) {
			t.Fatalf("replayed message %d: %s, want id %d", j, p.D, toShard1[j].ID)
		}
	}
	m.c.expect(opDispatch, "RESUMED")

	st := s.Stats()
	if g := st.Generations[2]; g.OpenSessions != 1 || g.Live != 1 || g.Resumes != 1 || g.Shards[0].Live != 0 || g.Shards[1].Resumes != 1 {
		t.Fatalf("generation 2 with shard 0 closed with 1000: %+v", g)
	}
	if err := m.c.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	await(t, s, "generation 2 gone", func(st Stats) bool { g := st.Generations[2]; return g.OpenSessions == 0 && g.Live == 0 })
	if s.Stats().Generations[2].Identifies != 2 {
		t.Fatal("a generation's counters went with its sessions")
	}
}

// GuildEvents keeps the newest GuildEventLog events, numbered from the first;
// GET /fake/guild-events pages through them and POST sets the rate.
func TestGuildEventsLogAndEndpoints(t *testing.T) {
	s := newTestServer(t, Options{Guilds: 3, GuildEventLog: 8})
	base := strings.TrimSuffix(s.StatsURL(), "/stats")
	start(t, s, q10, nil)
	if n := s.Stats().GuildEvents; n != 0 {
		t.Fatalf("%d guild events at rate 0", n)
	}
	if code := postJSON(t, base+"/guild-events?rate=100", nil); code != http.StatusNoContent {
		t.Fatalf("POST rate: %d", code)
	}
	await(t, s, "50 guild events", func(st Stats) bool { return st.GuildEvents >= 50 && st.GuildEventRate == 100 })
	if code := postJSON(t, base+"/guild-events?rate=0", nil); code != http.StatusNoContent {
		t.Fatalf("POST rate 0: %d", code)
	}
	total := s.Stats().GuildEvents
	kept := s.GuildEvents(0)
	if len(kept) != 8 || kept[7].Index != total-1 || kept[0].Index != total-8 {
		t.Fatalf("kept %d events, indexes %d..%d of %d", len(kept), kept[0].Index, kept[len(kept)-1].Index, total)
	}
	if got := s.GuildEvents(total - 2); len(got) != 2 || got[0].Index != total-2 {
		t.Fatalf("GuildEvents(%d) = %+v", total-2, got)
	}
	resp, err := http.Get(base + "/guild-events?from=" + strconv.FormatInt(total-3, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page guildEventsResponse
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	if page.Next != total || len(page.Events) != 3 || page.Events[0].ID != kept[5].ID || !slices.Equal(page.Events[0].Generations, []int{1}) {
		t.Fatalf("GET /fake/guild-events?from=%d: %+v", total-3, page)
	}
	for _, bad := range []string{"/guild-events?rate=-1", "/guild-events?rate=fast", "/guild-events?rate=NaN"} {
		if code := postJSON(t, base+bad, nil); code != http.StatusBadRequest {
			t.Fatalf("POST %s: %d, want 400", bad, code)
		}
	}
	if _, err := NewServer(Options{GuildEventRate: -1}); err == nil {
		t.Fatal("a negative GuildEventRate was accepted")
	}
}
