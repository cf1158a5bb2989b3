package gatewaytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// setMemberCount gives every guild of s n members, so that a test can
// ask for more than one chunk's worth.
func (s *Server) setMemberCount(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.memberCount = n
}

const memberIntents = testIntents | intentGuildMembers | intentGuildPresences

// memberClient is a client identified with GUILD_MEMBERS, past its READY
// and GUILD_CREATEs.
type memberClient struct {
	*tclient
	ready  readyD
	last   int64             // seq of the last dispatch read
	guilds []json.RawMessage // GUILD_CREATE d, in order
}

func startMembers(t *testing.T, s *Server, shard []int) *memberClient {
	t.Helper()
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.send(opIdentify, identifyD(defaultToken, shard, memberIntents))
	p := c.expect(opDispatch, "READY")
	mc := &memberClient{tclient: c, last: p.seq()}
	if err := json.Unmarshal(p.D, &mc.ready); err != nil {
		t.Fatalf("READY: %v", err)
	}
	for range mc.ready.Guilds {
		g := mc.next(opDispatch, "GUILD_CREATE")
		mc.guilds = append(mc.guilds, g.D)
	}
	return mc
}

// next expects a payload; a dispatch must carry the seq after the last.
func (c *memberClient) next(op int, name string) payload {
	c.t.Helper()
	p := c.expect(op, name)
	if op == opDispatch {
		if p.seq() != c.last+1 {
			c.t.Fatalf("%s has seq %d after %d", name, p.seq(), c.last)
		}
		c.last = p.seq()
	}
	return p
}

// sync proves that nothing else was sent before it: the heartbeat's ACK
// must be the very next payload.
func (c *memberClient) sync() {
	c.t.Helper()
	c.send(opHeartbeat, c.last)
	c.expect(opHeartbeatACK, "")
}

type chunkMember struct {
	User struct {
		ID            string  `json:"id"`
		Username      string  `json:"username"`
		Discriminator string  `json:"discriminator"`
		GlobalName    *string `json:"global_name"`
		Avatar        *string `json:"avatar"`
		Bot           bool    `json:"bot"`
	} `json:"user"`
	Roles    []string `json:"roles"`
	JoinedAt string   `json:"joined_at"`
	Deaf     *bool    `json:"deaf"`
	Mute     *bool    `json:"mute"`
}

type chunk struct {
	GuildID    string            `json:"guild_id"`
	Members    []json.RawMessage `json:"members"`
	ChunkIndex int               `json:"chunk_index"`
	ChunkCount int               `json:"chunk_count"`
	NotFound   []string          `json:"not_found"`
	Nonce      *string           `json:"nonce"`
	keys       map[string]json.RawMessage
	members    []chunkMember
}

// chunks reads one answer: GUILD_MEMBERS_CHUNKs with consecutive seqs and
// chunk_index 0..chunk_count-1.
func (c *memberClient) chunks() []chunk {
	c.t.Helper()
	var out []chunk
	for {
		p := c.next(opDispatch, "GUILD_MEMBERS_CHUNK")
		var ch chunk
		if err := json.Unmarshal(p.D, &ch); err != nil {
			c.t.Fatalf("chunk: %v: %s", err, p.D)
		}
		_ = json.Unmarshal(p.D, &ch.keys)
		for _, raw := range ch.Members {
			var m chunkMember
			if err := json.Unmarshal(raw, &m); err != nil {
				c.t.Fatalf("member: %v: %s", err, raw)
			}
			ch.members = append(ch.members, m)
		}
		if ch.ChunkIndex != len(out) || ch.ChunkCount < 1 || ch.ChunkIndex >= ch.ChunkCount {
			c.t.Fatalf("chunk %d of %d, want index %d", ch.ChunkIndex, ch.ChunkCount, len(out))
		}
		if len(ch.Members) > membersPerChunk {
			c.t.Fatalf("chunk has %d members", len(ch.Members))
		}
		if len(out) > 0 && (ch.ChunkCount != out[0].ChunkCount || ch.GuildID != out[0].GuildID) {
			c.t.Fatalf("chunk %d disagrees with chunk 0: %s", ch.ChunkIndex, p.D)
		}
		out = append(out, ch)
		if ch.ChunkIndex == ch.ChunkCount-1 {
			return out
		}
	}
}

func members(chs []chunk) []chunkMember {
	var out []chunkMember
	for _, ch := range chs {
		out = append(out, ch.members...)
	}
	return out
}

func gid(i int) string { return strconv.FormatUint(guildID(i), 10) }

func allReq(guild string, nonce any) map[string]any {
	d := map[string]any{"guild_id": guild, "query": "", "limit": 0}
	if nonce != nil {
		d["nonce"] = nonce
	}
	return d
}

// TestMembersAllInChunks: the whole list of a guild bigger than one chunk
// arrives in chunks of 1000 with the next seqs, every member once, the
// nonce echoed; the chunks are replayed on RESUME like any dispatch.
func TestMembersAllInChunks(t *testing.T) {
	s := newTestServer(t, Options{})
	s.setMemberCount(2500)
	c := startMembers(t, s, nil)
	before := c.last
	c.send(opRequestGuildMembers, allReq(gid(0), "all-0"))
	chs := c.chunks()
	if len(chs) != 3 || chs[0].ChunkCount != 3 {
		t.Fatalf("got %d chunks (chunk_count %d), want 3", len(chs), chs[0].ChunkCount)
	}
	for k, want := range []int{1000, 1000, 500} {
		ch := chs[k]
		if len(ch.Members) != want || ch.GuildID != gid(0) {
			t.Fatalf("chunk %d: %d members of guild %s, want %d of %s", k, len(ch.Members), ch.GuildID, want, gid(0))
		}
		if ch.Nonce == nil || *ch.Nonce != "all-0" {
			t.Fatalf("chunk %d nonce %v, want all-0", k, ch.Nonce)
		}
		if _, ok := ch.keys["not_found"]; ok {
			t.Fatalf("chunk %d of a query has not_found", k)
		}
		if _, ok := ch.keys["presences"]; ok {
			t.Fatalf("chunk %d has presences without asking", k)
		}
	}
	seen := map[string]bool{}
	for _, m := range members(chs) {
		if m.User.ID == "" || seen[m.User.ID] {
			t.Fatalf("member id %q missing or repeated", m.User.ID)
		}
		seen[m.User.ID] = true
		if m.User.Username == "" || m.JoinedAt == "" || m.Roles == nil || m.Deaf == nil || m.Mute == nil {
			t.Fatalf("member lacks fields: %+v", m)
		}
		if !m.User.Bot && (m.User.Discriminator != "0" || m.User.GlobalName == nil || m.User.Avatar != nil) {
			t.Fatalf("generated member: %+v", m)
		}
	}
	if !seen[chs[0].members[0].User.ID] || !chs[0].members[0].User.Bot {
		t.Fatalf("the bot itself must be the first member, as in GUILD_CREATE: %+v", chs[0].members[0])
	}
	c.sync()
	if st := s.Stats().Sessions[c.ready.SessionID]; st.LastSeq != c.last {
		t.Fatalf("session LastSeq %d, want %d", st.LastSeq, c.last)
	}
	await(t, s, "chunks counted as sent", func(st Stats) bool {
		return st.Sessions[c.ready.SessionID].EventsSent == c.last
	})

	// A new connection resuming from before the chunks gets them again.
	r := dial(t, s.ResumeURL(), "v=10&encoding=json")
	r.hello()
	r.resume(c.ready.SessionID, before)
	rc := &memberClient{tclient: r, last: before}
	again := rc.chunks()
	if len(again) != 3 || len(members(again)) != 2500 {
		t.Fatalf("replayed %d chunks, %d members", len(again), len(members(again)))
	}
	rc.next(opDispatch, "RESUMED")
}

// TestMembersDefaultRoster: without a test override a guild has the
// member_count its GUILD_CREATE gave, and its first member is the one that
// GUILD_CREATE listed, byte for byte.
func TestMembersDefaultRoster(t *testing.T) {
	s := newTestServer(t, Options{})
	c := startMembers(t, s, nil)
	var gc struct {
		MemberCount int               `json:"member_count"`
		Members     []json.RawMessage `json:"members"`
	}
	if err := json.Unmarshal(c.guilds[0], &gc); err != nil {
		t.Fatal(err)
	}
	c.send(opRequestGuildMembers, allReq(gid(0), nil))
	chs := c.chunks()
	if len(chs) != 1 || len(chs[0].Members) != gc.MemberCount {
		t.Fatalf("%d chunks, %d members; GUILD_CREATE member_count %d", len(chs), len(chs[0].Members), gc.MemberCount)
	}
	var a, b bytes.Buffer
	_ = json.Compact(&a, gc.Members[0])
	_ = json.Compact(&b, chs[0].Members[0])
	if a.String() != b.String() {
		t.Fatalf("first member %s, GUILD_CREATE has %s", b.String(), a.String())
	}
	if _, ok := chs[0].keys["nonce"]; ok {
		t.Fatal("nonce in a reply to a request without one")
	}
}

// TestMembersQuery: a username prefix query returns at most 100 (and at
// most limit) matching members in one chunk; no match is one empty chunk.
// Queries are not rate limited.
func TestMembersQuery(t *testing.T) {
	s := newTestServer(t, Options{})
	s.setMemberCount(2500)
	c := startMembers(t, s, nil)
	for _, tc := range []struct {
		query  string
		limit  int
		want   int
		prefix string
	}{
		{"grace", 500, 100, "grace"},
		{"GRACE1", 7, 7, "grace1"}, // usernames are lowercase; matching ignores case
		{"dennis", 0, 100, "dennis"},
		{"discluster", 10, 1, "discluster"}, // the bot itself
		{"", 20, 20, ""},
		{"zzz", 10, 0, ""},
		{"grace", 500, 100, "grace"}, // again at once: not rate limited
	} {
		c.send(opRequestGuildMembers, map[string]any{"guild_id": gid(0), "query": tc.query, "limit": tc.limit, "nonce": "q"})
		chs := c.chunks()
		ms := members(chs)
		if len(chs) != 1 || len(ms) != tc.want {
			t.Fatalf("query %q limit %d: %d chunks, %d members, want 1 chunk of %d", tc.query, tc.limit, len(chs), len(ms), tc.want)
		}
		if chs[0].Nonce == nil || *chs[0].Nonce != "q" {
			t.Fatalf("query %q: nonce %v", tc.query, chs[0].Nonce)
		}
		for _, m := range ms {
			if !strings.HasPrefix(m.User.Username, tc.prefix) {
				t.Fatalf("query %q returned %q", tc.query, m.User.Username)
			}
		}
	}
	c.sync()
}

// TestMembersUserIDs: user_ids (an array or one snowflake) returns the
// members the guild has and lists the rest in not_found.
func TestMembersUserIDs(t *testing.T) {
	s := newTestServer(t, Options{Guilds: 2})
	c := startMembers(t, s, nil)
	s.mu.Lock()
	g0, g1 := s.guildMembersLocked(guildID(0)), s.guildMembersLocked(guildID(1))
	s.mu.Unlock()
	botID := c.ready.User.ID
	own := strconv.FormatUint(g0.userID(2), 10)
	outside := strconv.FormatUint(g0.userID(g0.count), 10) // one past the last member
	other := strconv.FormatUint(g1.userID(2), 10)          // a member of guild 1 only
	c.send(opRequestGuildMembers, map[string]any{"guild_id": gid(0), "user_ids": []string{botID, own, outside, other, own}, "nonce": "ids"})
	chs := c.chunks()
	ms := members(chs)
	if len(chs) != 1 || len(ms) != 2 || ms[0].User.ID != botID || ms[1].User.ID != own {
		t.Fatalf("got %d chunks, members %+v", len(chs), ms)
	}
	if fmt.Sprint(chs[0].NotFound) != fmt.Sprint([]string{outside, other}) {
		t.Fatalf("not_found %v, want [%s %s]", chs[0].NotFound, outside, other)
	}
	if chs[0].Nonce == nil || *chs[0].Nonce != "ids" {
		t.Fatalf("nonce %v", chs[0].Nonce)
	}

	// One snowflake, not an array; presences asked: an empty list (all
	// the fake's members are offline).
	c.send(opRequestGuildMembers, map[string]any{"guild_id": gid(1), "user_ids": other, "presences": true})
	chs = c.chunks()
	if ms := members(chs); len(ms) != 1 || ms[0].User.ID != other || chs[0].NotFound == nil || len(chs[0].NotFound) != 0 {
		t.Fatalf("single id: %+v not_found %v", ms, chs[0].NotFound)
	}
	if string(chs[0].keys["presences"]) != "[]" {
		t.Fatalf("presences %s, want []", chs[0].keys["presences"])
	}
	c.sync()
}

// TestMembersNonce: a nonce of up to 32 bytes is echoed; a longer one (or
// one that is not a string) is ignored and the chunks come without it.
func TestMembersNonce(t *testing.T) {
	s := newTestServer(t, Options{})
	c := startMembers(t, s, nil)
	for _, tc := range []struct {
		nonce any
		echo  bool
	}{
		{strings.Repeat("n", 32), true},
		{strings.Repeat("n", 33), false},
		{strings.Repeat("é", 17), false}, // 34 bytes: the limit is in bytes
		{42, false},
	} {
		c.send(opRequestGuildMembers, map[string]any{"guild_id": gid(0), "query": "a", "limit": 1, "nonce": tc.nonce})
		ch := c.chunks()[0]
		if tc.echo != (ch.Nonce != nil) || (tc.echo && *ch.Nonce != tc.nonce) {
			t.Fatalf("nonce %v: reply nonce %v, want echoed=%v", tc.nonce, ch.Nonce, tc.echo)
		}
	}
	c.sync()
}

type rateLimitedD struct {
	Opcode     int      `json:"opcode"`
	RetryAfter *float64 `json:"retry_after"`
	Meta       struct {
		GuildID string  `json:"guild_id"`
		Nonce   *string `json:"nonce"`
	} `json:"meta"`
}

// TestMembersAllRateLimited: a second all-members request for a guild
// within 30 s, from any session of the bot, gets RATE_LIMITED with the time
// left and the request's guild and nonce, and no chunks; other guilds and
// queries are not limited; after the window it is answered again.
func TestMembersAllRateLimited(t *testing.T) {
	s := newTestServer(t, Options{Guilds: 2})
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	s.setClock(clock.now)
	c := startMembers(t, s, nil)
	rateLimited := func(c *memberClient, guild string, nonce string, wantLeft float64) {
		t.Helper()
		p := c.next(opDispatch, "RATE_LIMITED")
		var d rateLimitedD
		if err := json.Unmarshal(p.D, &d); err != nil {
			t.Fatal(err)
		}
		if d.Opcode != 8 || d.RetryAfter == nil || *d.RetryAfter <= 0 || *d.RetryAfter != wantLeft || d.Meta.GuildID != guild {
			t.Fatalf("RATE_LIMITED %s, want retry_after %g for guild %s", p.D, wantLeft, guild)
		}
		if (nonce == "") != (d.Meta.Nonce == nil) || (d.Meta.Nonce != nil && *d.Meta.Nonce != nonce) {
			t.Fatalf("RATE_LIMITED meta nonce %v, want %q", d.Meta.Nonce, nonce)
		}
	}

	c.send(opRequestGuildMembers, allReq(gid(0), "first"))
	c.chunks()
	c.send(opRequestGuildMembers, allReq(gid(0), "second"))
	rateLimited(c, gid(0), "second", 30)
	c.send(opRequestGuildMembers, allReq(gid(1), nil)) // another guild
	c.chunks()
	c.send(opRequestGuildMembers, map[string]any{"guild_id": gid(0), "query": "", "limit": 5}) // not "all"
	c.chunks()
	c.sync()

	// Another session of the same bot shares the limit.
	clock.advance(10 * time.Second)
	c2 := startMembers(t, s, nil)
	c2.send(opRequestGuildMembers, allReq(gid(0), nil))
	rateLimited(c2, gid(0), "", 20)
	c2.sync()

	// Refused requests do not extend the window.
	clock.advance(20 * time.Second)
	c2.send(opRequestGuildMembers, allReq(gid(0), "third"))
	if chs := c2.chunks(); *chs[0].Nonce != "third" {
		t.Fatalf("nonce %v", chs[0].Nonce)
	}
	c2.sync()
	c.sync()
}

// TestMembersUnservedGuild: Discord answers nothing for a guild the shard
// does not hold, nor for an id that is no guild of the bot.
func TestMembersUnservedGuild(t *testing.T) {
	s := newTestServer(t, Options{Shards: 2, Guilds: 4})
	c := startMembers(t, s, []int{0, 2}) // guilds 0 and 2
	for _, guild := range []string{
		gid(1),                                  // shard 1's
		gid(9),                                  // not a guild of the bot
		strconv.FormatUint(guildID(0)+1, 10),    // guild 0's channel
		strconv.FormatUint(uint64(2)<<22|1, 10), // guild 2's index, not its id
	} {
		c.send(opRequestGuildMembers, allReq(guild, "x"))
		c.sync()
	}
	c.send(opRequestGuildMembers, map[string]any{"guild_id": gid(2), "query": "", "limit": 1})
	if chs := c.chunks(); len(members(chs)) != 1 || chs[0].GuildID != gid(2) {
		t.Fatalf("served guild: %+v", chs)
	}
}

// TestMembersMalformed: an op 8 whose d the gateway cannot act on closes
// with 4001, like any invalid payload of a known opcode.
func TestMembersMalformed(t *testing.T) {
	s := newTestServer(t, Options{})
	g := gid(0)
	for _, d := range []string{
		`"members please"`,
		`null`,
		`{}`,
		`{"query":"","limit":0}`,
		`{"guild_id":"` + g + `"}`,
		`{"guild_id":"` + g + `","query":"a"}`,
		`{"guild_id":"` + g + `","query":"a","limit":-1}`,
		`{"guild_id":"` + g + `","query":5,"limit":1}`,
		`{"guild_id":"` + g + `","query":"a","limit":1.5}`,
		`{"guild_id":"general","query":"","limit":0}`,
		`{"guild_id":null,"query":"","limit":0}`,
		`{"guild_id":"` + g + `","user_ids":["x"]}`,
		`{"guild_id":"` + g + `","user_ids":{"id":"1"}}`,
		`{"guild_id":"` + g + `","query":"","limit":0,"presences":"yes"}`,
	} {
		t.Run(d, func(t *testing.T) {
			c := startMembers(t, s, nil)
			c.sendRaw([]byte(`{"op":8,"d":` + d + `}`))
			c.expectClose(closeUnknownOpcode)
		})
	}
	t.Run("before identify", func(t *testing.T) {
		c := dial(t, s.GatewayURL(), "v=10&encoding=json")
		c.hello()
		c.send(opRequestGuildMembers, allReq(g, nil))
		c.expectClose(closeNotAuthenticated)
	})
}

func TestParseMemberRequest(t *testing.T) {
	ids := make([]string, 150)
	for i := range ids {
		ids[i] = strconv.Itoa(1000 + i%120) // 120 distinct, repeated
	}
	many, _ := json.Marshal(map[string]any{"op": 8, "d": map[string]any{"guild_id": "7", "user_ids": ids}})
	for _, tc := range []struct {
		in   string
		want memberRequest
	}{
		{`{"op":8,"d":{"guild_id":"7","query":"Ab","limit":3,"presences":true,"nonce":"x"}}`,
			memberRequest{guildID: 7, query: "ab", limit: 3, presences: true, nonce: "x", hasNonce: true}},
		{`{"op":8,"d":{"guild_id":7,"query":"","limit":0}}`, // an integer snowflake
			memberRequest{guildID: 7}},
		{`{"op":8,"d":{"guild_id":"7","user_ids":"9","query":"a","limit":1}}`, // user_ids wins
			memberRequest{guildID: 7, byIDs: true, userIDs: []uint64{9}}},
		{`{"op":8,"d":{"guild_id":"7","user_ids":[],"nonce":null}}`,
			memberRequest{guildID: 7, byIDs: true}},
		{`{"op":8,"d":{"guild_id":"7","user_ids":null,"query":"","limit":0}}`,
			memberRequest{guildID: 7}},
	} {
		got, err := parseMemberRequest([]byte(tc.in))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	got, err := parseMemberRequest(many)
	if err != nil || len(got.userIDs) != maxUserIDs || got.userIDs[0] != 1000 || got.userIDs[99] != 1099 {
		t.Fatalf("150 ids (120 distinct): %d kept, %v", len(got.userIDs), err)
	}
	if r := (memberRequest{query: "", limit: 0}); !r.all() {
		t.Fatal(`query "" limit 0 is all members`)
	}
	if r := (memberRequest{query: "", limit: 1}); r.all() {
		t.Fatal(`query "" limit 1 is not all members`)
	}
}

// Without the GUILD_MEMBERS intent a request for all members gets nothing, and
// without GUILD_PRESENCES presences are forced off, as Discord does.
func TestMembersNeedTheirIntents(t *testing.T) {
	s := newTestServer(t, Options{Shards: 1, Guilds: 2})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.send(opIdentify, identifyD(defaultToken, []int{0, 1}, testIntents)) // no GUILD_MEMBERS, no GUILD_PRESENCES
	ready := c.expect(opDispatch, "READY")
	mc := &memberClient{tclient: c, last: ready.seq()}
	for range 2 {
		mc.next(opDispatch, "GUILD_CREATE")
	}
	mc.send(opRequestGuildMembers, map[string]any{"guild_id": gid(0), "query": "", "limit": 0})
	mc.sync() // the ACK comes next: no chunk
	mc.send(opRequestGuildMembers, map[string]any{"guild_id": gid(0), "query": "a", "limit": 10, "presences": true})
	chs := mc.chunks()
	if _, ok := chs[0].keys["presences"]; ok {
		t.Fatalf("presences sent without the GUILD_PRESENCES intent: %s", chs[0].keys["presences"])
	}
}
