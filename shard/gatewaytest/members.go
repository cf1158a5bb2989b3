package gatewaytest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Member chunking (op 8, Request Guild Members), as Discord documents it
// (research/discord-gateway.md §10): the request names one guild and either
// a username prefix (query, with limit) or user_ids; the answer is one or more
// GUILD_MEMBERS_CHUNK dispatches of up to 1000 members each. A request for
// all members (query "" and limit 0) is limited to one per guild per bot
// every 30 s; over it Discord sends a RATE_LIMITED dispatch instead.
const (
	membersPerChunk  = 1000             // Discord's chunk size
	maxQueryMembers  = 100              // a prefix query returns at most this many
	maxUserIDs       = 100              // user_ids answered per request
	maxNonceBytes    = 32               // a longer nonce is ignored
	allMembersWindow = 30 * time.Second // one all-members request per guild per window

	// memberWorker is the snowflake worker id of generated users, so that
	// their ids never equal a guild's, a channel's (worker 1) or a
	// message's (worker 2).
	memberWorker = 3
	// maxGuildMembers bounds a guild's member count: a generated member's
	// index lives in the 17 process and increment bits of its id.
	maxGuildMembers = 1 << 17
	// defaultMemberCount is used only if guild_create.json has no
	// member_count.
	defaultMemberCount = 3
)

// memberNames are the username stems of generated members: username is
// stem+index ("grace10"), so a prefix query matches a real subset of a
// guild rather than all of it or nothing.
var memberNames = [...]string{"ada", "grace", "linus", "ken", "dennis", "barbara", "margaret", "alan"}

// memberJoinedBase is the joined_at of generated member 0; member m joined
// m minutes later. Fixed so that every run renders the same bytes.
var memberJoinedBase = time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)

// recordedMember is a member listed in guild_create.json (the bot itself):
// the first members of every guild are those, byte for byte, so a chunk
// agrees with the GUILD_CREATE the client already has.
type recordedMember struct {
	id       uint64
	username string // lowercased, for prefix queries
	raw      []byte // compact JSON guild member object
}

// roster is what every guild's member list is made of: the recorded members,
// then generated ones up to count. Nothing per member is stored: a guild of
// 100k members costs no memory until a request renders a chunk of it.
type roster struct {
	recorded []recordedMember
	count    int // GUILD_CREATE's member_count
}

// guildRoster reads member_count and members from the embedded
// GUILD_CREATE, so that what op 8 answers matches what GUILD_CREATE said.
var guildRoster = sync.OnceValue(func() *roster {
	r := &roster{count: defaultMemberCount}
	b, err := payloadFS.ReadFile("testdata/guild_create.json")
	if err != nil {
		return r // NewServer has already failed on this; keep the default
	}
	var gc struct {
		MemberCount *int              `json:"member_count"`
		Members     []json.RawMessage `json:"members"`
	}
	if json.Unmarshal(b, &gc) != nil {
		return r
	}
	for _, raw := range gc.Members {
		var m struct {
			User struct {
				ID       string `json:"id"`
				Username string `json:"username"`
			} `json:"user"`
		}
		var buf bytes.Buffer
		if json.Unmarshal(raw, &m) != nil || json.Compact(&buf, raw) != nil {
			continue
		}
		id, err := strconv.ParseUint(m.User.ID, 10, 64)
		if err != nil {
			continue
		}
		r.recorded = append(r.recorded, recordedMember{id: id, username: strings.ToLower(m.User.Username), raw: buf.Bytes()})
	}
	if gc.MemberCount != nil {
		r.count = *gc.MemberCount
	}
	r.count = min(max(r.count, len(r.recorded), 1), maxGuildMembers)
	return r
})

// guildMembers is the member list of one guild: count members, the recorded
// ones first, the rest generated from the guild index.
type guildMembers struct {
	r     *roster
	index uint64 // guild index: the guild's id is guildID(index)
	count int
}

func (s *Server) guildMembersLocked(guild uint64) guildMembers {
	g := guildMembers{r: guildRoster(), index: guild >> 22}
	g.count = g.r.count
	if n := s.memberCount; n > 0 {
		g.count = min(max(n, len(g.r.recorded)), maxGuildMembers)
	}
	return g
}

// userID is the id of member m (at least len(recorded)).
func (g guildMembers) userID(m int) uint64 {
	return g.index<<22 | memberWorker<<17 | uint64(m)
}

// lookup returns the member index of user id, if the guild has that user.
func (g guildMembers) lookup(id uint64) (int, bool) {
	for m, rm := range g.r.recorded {
		if rm.id == id {
			return m, true
		}
	}
	if id>>22 != g.index || (id>>17)&31 != memberWorker {
		return 0, false
	}
	m := int(id & (1<<17 - 1))
	return m, m >= len(g.r.recorded) && m < g.count
}

// appendUsername appends member m's username (lowercase, like every
// username since Discord's 2023 migration).
func (g guildMembers) appendUsername(dst []byte, m int) []byte {
	if m < len(g.r.recorded) {
		return append(dst, g.r.recorded[m].username...)
	}
	dst = append(dst, memberNames[m%len(memberNames)]...)
	return strconv.AppendInt(dst, int64(m), 10)
}

// appendMember appends member m as a guild member object, with the fields
// of the member recorded in guild_create.json. Generated members are
// humans with migrated usernames (discriminator "0"), no roles beyond
// @everyone and no avatar.
func (g guildMembers) appendMember(dst []byte, m int) []byte {
	if m < len(g.r.recorded) {
		return append(dst, g.r.recorded[m].raw...)
	}
	stem := memberNames[m%len(memberNames)]
	dst = append(dst, `{"user":{"username":"`...)
	dst = g.appendUsername(dst, m)
	dst = append(dst, `","public_flags":0,"id":"`...)
	dst = strconv.AppendUint(dst, g.userID(m), 10)
	dst = append(dst, `","global_name":"`...)
	dst = append(dst, stem[0]-'a'+'A')
	dst = append(dst, stem[1:]...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(m), 10)
	dst = append(dst, `","discriminator":"0","bot":false,"avatar":null},"roles":[],"premium_since":null,"pending":false,"nick":null,"mute":false,"joined_at":"`...)
	dst = memberJoinedBase.Add(time.Duration(m)*time.Minute).AppendFormat(dst, "2006-01-02T15:04:05.000000+00:00")
	return append(dst, `","flags":0,"deaf":false,"communication_disabled_until":null,"avatar":null}`...)
}

// memberRequest is the d of one op 8.
type memberRequest struct {
	guildID uint64
	// byIDs: user_ids was given (it wins over query); userIDs are the first
	// maxUserIDs of them, duplicates removed.
	byIDs   bool
	userIDs []uint64
	query   string // lowercased
	limit   int64
	// presences asks for the members' presences. The fake's members are
	// all offline, so the chunks carry an empty presences list.
	presences bool
	nonce     string
	hasNonce  bool // nonce was a string of at most 32 bytes
}

// all reports whether r asks for the whole member list, the request that
// needs GUILD_MEMBERS and is rate limited.
func (r *memberRequest) all() bool { return !r.byIDs && r.query == "" && r.limit == 0 }

// parseSnowflake accepts a snowflake as Discord does: a decimal string, or
// a JSON integer.
func parseSnowflake(raw json.RawMessage) (uint64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		raw = []byte(s)
	}
	id, err := strconv.ParseUint(string(raw), 10, 64)
	return id, err == nil
}

// parseMemberRequest decodes the d of an op 8 payload b. A d the gateway
// cannot act on (not an object, no valid guild_id, neither query nor
// user_ids, query without limit, a field of the wrong type) is an invalid
// payload for a known opcode: 4001, like the other ops' shape errors. An
// invalid nonce is not an error: Discord ignores it and answers without one.
// Close reasons never quote the client's data.
func parseMemberRequest(b []byte) (memberRequest, *closeErr) {
	bad := func(why string) (memberRequest, *closeErr) {
		return memberRequest{}, closeWith(closeUnknownOpcode, "invalid request guild members payload: "+why)
	}
	var env struct {
		D json.RawMessage `json:"d"`
	}
	if json.Unmarshal(b, &env) != nil {
		return bad("d must be an object")
	}
	d := bytes.TrimSpace(env.D)
	if len(d) == 0 || d[0] != '{' {
		return bad("d must be an object")
	}
	var raw struct {
		GuildID   json.RawMessage `json:"guild_id"`
		Query     *string         `json:"query"`
		Limit     *int64          `json:"limit"`
		UserIDs   json.RawMessage `json:"user_ids"`
		Presences *bool           `json:"presences"`
		Nonce     json.RawMessage `json:"nonce"`
	}
	if json.Unmarshal(d, &raw) != nil {
		return bad("a field has the wrong type")
	}
	var r memberRequest
	var ok bool
	if r.guildID, ok = parseSnowflake(raw.GuildID); !ok {
		return bad("guild_id must be a snowflake")
	}
	if ids := bytes.TrimSpace(raw.UserIDs); len(ids) > 0 && string(ids) != "null" {
		r.byIDs = true
		var list []json.RawMessage
		if ids[0] == '[' {
			if json.Unmarshal(ids, &list) != nil {
				return bad("user_ids must be a snowflake or an array of them")
			}
		} else {
			list = []json.RawMessage{ids}
		}
		seen := make(map[uint64]bool, len(list))
		for _, e := range list {
			id, ok := parseSnowflake(e)
			if !ok {
				return bad("user_ids must be a snowflake or an array of them")
			}
			// Discord answers at most 100 user ids; the rest are not looked
			// up (nor reported in not_found).
			if !seen[id] && len(r.userIDs) < maxUserIDs {
				seen[id] = true
				r.userIDs = append(r.userIDs, id)
			}
		}
	}
	switch {
	case r.byIDs:
	case raw.Query == nil:
		return bad("query or user_ids is required")
	case raw.Limit == nil:
		return bad("limit is required with query")
	case *raw.Limit < 0:
		return bad("limit must not be negative")
	default:
		r.query, r.limit = strings.ToLower(*raw.Query), *raw.Limit
	}
	r.presences = raw.Presences != nil && *raw.Presences
	var nonce string
	if n := bytes.TrimSpace(raw.Nonce); len(n) > 0 && n[0] == '"' && json.Unmarshal(n, &nonce) == nil && len(nonce) <= maxNonceBytes {
		r.nonce, r.hasNonce = nonce, true
	}
	return r, nil
}

// servesGuild reports whether guild is one of the guilds this session's
// shard holds: a guild id the fake made (guildID of an index below the bot's
// guild count) whose index falls on the session's shard.
func (ss *session) servesGuild(guild uint64, guilds int) bool {
	i := guild >> 22
	return i < uint64(guilds) && guild == guildID(int(i)) && int(i)%ss.numShards == ss.shardID
}

// sessionIntents returns the intents the session identified with: the
// GUILD_MEMBERS rule for all-members requests and the GUILD_PRESENCES rule for
// presences depend on them.
func sessionIntents(ss *session) (int64, bool) { return ss.intents, true }

// dispatchLocked sends each body as a dispatch named name with the
// session's next seq. The events go through pushLocked like every other
// dispatch of the session: they are kept for RESUME replay, sent to the
// attached connection (or only buffered while there is none), and counted
// in EventsSent as they reach the socket. Callers hold Server.mu.
func (ss *session) dispatchLocked(name string, bodies ...[]byte) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return
	}
	frames := make([]outFrame, 0, len(bodies))
	for _, d := range bodies {
		ss.seq++
		ss.pushLocked(event{seq: ss.seq, raw: rawDispatch(name, ss.seq, d)}, &frames)
	}
	if c := ss.conn; c != nil && len(frames) > 0 {
		c.enqueue(frames...)
	}
}

// requestGuildMembersLocked answers an op 8 payload b from c, whose
// session is set. Callers hold s.mu.
func (s *Server) requestGuildMembersLocked(c *conn, b []byte) {
	req, cerr := parseMemberRequest(b)
	if cerr != nil {
		s.closeConnLocked(c, cerr.Code, cerr.Reason)
		return
	}
	ss := c.sess
	if !ss.servesGuild(req.guildID, s.guilds) {
		// Discord sends nothing for a guild the shard does not serve.
		c.log.Debug("member request for a guild the shard does not serve", "shard", ss.shardID, "guild", req.guildID)
		return
	}
	intents, known := sessionIntents(ss)
	if known && intents&intentGuildPresences == 0 {
		req.presences = false // Discord forces it false without the intent
	}
	if req.all() {
		if known && intents&intentGuildMembers == 0 {
			// Discord requires GUILD_MEMBERS for the whole list. The docs
			// name no close code or error for a request without it, so the
			// fake answers nothing, which is what a client then sees.
			return
		}
		if s.lastAllMembers == nil {
			s.lastAllMembers = map[uint64]time.Time{}
		}
		now := s.now()
		if last, ok := s.lastAllMembers[req.guildID]; ok {
			if left := allMembersWindow - now.Sub(last); left > 0 {
				c.log.Info("member request rate limited", "shard", ss.shardID, "guild", req.guildID, "retry_after", left)
				ss.dispatchLocked("RATE_LIMITED", rateLimitedBody(&req, left))
				return
			}
		}
		if len(s.lastAllMembers) >= 1024 {
			// Forget guilds whose window is over, so the map stays as small
			// as the set of guilds asked for within the last 30 s.
			for g, t := range s.lastAllMembers {
				if now.Sub(t) >= allMembersWindow {
					delete(s.lastAllMembers, g)
				}
			}
		}
		s.lastAllMembers[req.guildID] = now
	}
	ss.dispatchLocked("GUILD_MEMBERS_CHUNK", s.memberChunksLocked(&req)...)
}

// memberChunksLocked renders the GUILD_MEMBERS_CHUNK bodies that answer
// req: the whole list in chunks of membersPerChunk, or one chunk for a
// prefix query or user_ids (at most 100 members either way; no match is one
// empty chunk, so the client still sees chunk_index == chunk_count-1).
func (s *Server) memberChunksLocked(req *memberRequest) [][]byte {
	g := s.guildMembersLocked(req.guildID)
	var picked []int // member indexes; nil for the whole list
	var notFound []uint64
	switch {
	case req.byIDs:
		for _, id := range req.userIDs {
			if m, ok := g.lookup(id); ok {
				picked = append(picked, m)
			} else {
				notFound = append(notFound, id)
			}
		}
	case !req.all():
		limit := int(min(req.limit, maxQueryMembers))
		if limit == 0 {
			limit = maxQueryMembers // limit 0 means "all" only with an empty query
		}
		q := []byte(req.query)
		var name []byte
		for m := 0; m < g.count && len(picked) < limit; m++ {
			if name = g.appendUsername(name[:0], m); bytes.HasPrefix(name, q) {
				picked = append(picked, m)
			}
		}
	}
	total := len(picked)
	if req.all() {
		total = g.count
	}
	count := max((total+membersPerChunk-1)/membersPerChunk, 1)
	out := make([][]byte, count)
	for k := range count {
		lo, hi := k*membersPerChunk, min((k+1)*membersPerChunk, total)
		b := make([]byte, 0, 64+(hi-lo)*360)
		b = append(b, `{"guild_id":"`...)
		b = strconv.AppendUint(b, req.guildID, 10)
		b = append(b, `","members":[`...)
		for i := lo; i < hi; i++ {
			if i > lo {
				b = append(b, ',')
			}
			m := i
			if !req.all() {
				m = picked[i]
			}
			b = g.appendMember(b, m)
		}
		b = append(b, `],"chunk_index":`...)
		b = strconv.AppendInt(b, int64(k), 10)
		b = append(b, `,"chunk_count":`...)
		b = strconv.AppendInt(b, int64(count), 10)
		if req.byIDs {
			b = append(b, `,"not_found":[`...)
			for i, id := range notFound {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, '"')
				b = strconv.AppendUint(b, id, 10)
				b = append(b, '"')
			}
			b = append(b, ']')
		}
		if req.presences {
			b = append(b, `,"presences":[]`...)
		}
		b = appendNonce(b, req)
		out[k] = append(b, '}')
	}
	return out
}

// rateLimitedBody is the d of the RATE_LIMITED dispatch that refuses an
// all-members request with left of the window to go.
func rateLimitedBody(req *memberRequest, left time.Duration) []byte {
	b := []byte(`{"opcode":8,"retry_after":`)
	b = strconv.AppendFloat(b, left.Seconds(), 'f', -1, 64)
	b = append(b, `,"meta":{"guild_id":"`...)
	b = strconv.AppendUint(b, req.guildID, 10)
	b = append(b, '"')
	b = appendNonce(b, req)
	return append(b, "}}"...)
}

// appendNonce appends `,"nonce":...` when the request had a valid nonce.
func appendNonce(b []byte, req *memberRequest) []byte {
	if !req.hasNonce {
		return b
	}
	n, _ := json.Marshal(req.nonce) // a string always marshals
	b = append(b, `,"nonce":`...)
	return append(b, n...)
}
