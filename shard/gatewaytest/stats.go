package gatewaytest

import (
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of what the fake has seen and done. Stats() returns a
// deep copy; StatsURL serves the same as JSON.
type Stats struct {
	// Shards is keyed by shard id, whatever num_shards the sessions used.
	Shards map[int]ShardStats `json:"shards"`
	// Sessions is keyed by session id; ended sessions stay listed.
	Sessions map[string]SessionStats `json:"sessions"`
	// Generations is keyed by num_shards: the sessions identified with one
	// shard count are one generation, and a reshard opens a second beside
	// the first.
	Generations map[int]GenerationStats `json:"generations"`

	// Guilds is the bot's guild count now (Options.Guilds, then AddGuilds), and
	// RecommendedShards the shard count /gateway/bot recommends for it.
	Guilds            int `json:"guilds"`
	RecommendedShards int `json:"recommended_shards"`
	// GuildEventRate is the guild events' rate per guild now; GuildEvents
	// counts the guild events generated (GuildEvents() lists them).
	GuildEventRate float64 `json:"guild_event_rate"`
	GuildEvents    int64   `json:"guild_events"`

	// Connections is the number of open websocket connections.
	Connections int `json:"connections"`
	// GatewayBotRequests counts GET /gateway/bot, answered or refused.
	GatewayBotRequests int `json:"gateway_bot_requests"`
	// PayloadsCompressed counts payloads sent as complete zlib streams of their own,
	// to clients that asked for payload compression.
	PayloadsCompressed int64 `json:"payloads_compressed"`

	// Identifies counts accepted IDENTIFYs (session starts).
	Identifies int `json:"identifies"`
	// IdentifiesPerBucket counts accepted IDENTIFYs by shard_id % max_concurrency.
	IdentifiesPerBucket map[int]int `json:"identifies_per_bucket"`
	// IdentifyViolations counts IDENTIFYs refused with op 9 because their
	// bucket had already identified within IdentifyWindow.
	IdentifyViolations int `json:"identify_violations"`
	// IdentifyUnverified counts IDENTIFYs that came sooner than the identify window
	// after their bucket's previous one by the stamps, where that one's stamp was
	// not exact (the fake read it late, behind bytes that arrived after it, whose
	// arrival it may carry): let through, since the fake cannot tell.
	IdentifyUnverified int `json:"identify_unverified,omitempty"`
	// Resumes counts successful RESUMEs.
	Resumes int `json:"resumes"`
	// ResumesOffResumeURL counts RESUMEs (successful or not) that arrived on
	// GatewayURL instead of the resume_gateway_url READY gave.
	ResumesOffResumeURL int `json:"resumes_off_resume_url"`
	// ResumesFailed counts RESUMEs answered with op 9 false.
	ResumesFailed int `json:"resumes_failed"`
	// InvalidSessionsSent counts op 9 payloads sent, for any reason.
	InvalidSessionsSent int `json:"invalid_sessions_sent"`
	// ReconnectsSent counts op 7 payloads sent.
	ReconnectsSent int `json:"reconnects_sent"`

	// HeartbeatsReceived counts op 1 from clients.
	HeartbeatsReceived int `json:"heartbeats_received"`
	// HeartbeatACKsSent counts op 11 sent.
	HeartbeatACKsSent int `json:"heartbeat_acks_sent"`
	// HeartbeatRequestsSent counts op 1 sent by the fake; Answered counts
	// those followed by a client heartbeat on the same connection.
	HeartbeatRequestsSent     int `json:"heartbeat_requests_sent"`
	HeartbeatRequestsAnswered int `json:"heartbeat_requests_answered"`
	// HeartbeatTimeouts counts connections closed for a missed heartbeat.
	HeartbeatTimeouts int `json:"heartbeat_timeouts"`

	// Closes counts close frames the fake sent, by code.
	Closes map[int]int `json:"closes"`
	// ClientCloses counts close frames clients sent first, by code.
	ClientCloses map[int]int `json:"client_closes"`
	// Drops counts connections the fake cut without a close frame
	// (DropShard); SlowClientDrops those cut because their outbound queue
	// overflowed; ClientDrops those the client ended without a close frame.
	Drops           int `json:"drops"`
	SlowClientDrops int `json:"slow_client_drops"`
	ClientDrops     int `json:"client_drops"`

	// TokenResets counts IDENTIFYs sent with no session starts left, after
	// which the token is invalid for good.
	TokenResets int  `json:"token_resets"`
	TokenValid  bool `json:"token_valid"`

	SessionStartTotal     int `json:"session_start_total"`
	SessionStartRemaining int `json:"session_start_remaining"`

	// EventsSent counts dispatches written to connections, replays included.
	EventsSent int64 `json:"events_sent"`
}

// ShardStats are the counters of one shard id (whatever total the client
// used).
type ShardStats struct {
	// Live is the number of connections that currently speak for this
	// shard: counted from the IDENTIFY (past the token and shard checks) or
	// successful RESUME on, until the fake closes or drops the connection or
	// the client's close or disconnect is read. (A client close is seen
	// when the fake reads it; a client that closes and reconnects within
	// microseconds could in principle be counted twice for that instant.)
	Live int `json:"live"`
	// MaxLive is the largest Live ever was. Tests use it to prove that a
	// shard never had two connections at once.
	MaxLive    int `json:"max_live"`
	Identifies int `json:"identifies"`
	Resumes    int `json:"resumes"`
	Heartbeats int `json:"heartbeats"`
	// LastHeartbeat is the d of the last heartbeat (the client's last seq);
	// nil if it was null or none arrived.
	LastHeartbeat *int64 `json:"last_heartbeat"`
	// Commands counts the commands a session of this shard sent (presence, voice
	// state, member, soundboard and channel-info requests), by opcode; LastCommand
	// is the last one, as it arrived.
	Commands    map[int]int     `json:"commands,omitempty"`
	LastCommand json.RawMessage `json:"last_command,omitempty"`
}

// GenerationStats are the counters of one generation: the sessions
// identified with one num_shards.
type GenerationStats struct {
	// Shards is keyed by shard id (below the generation's num_shards).
	Shards map[int]GenerationShardStats `json:"shards"`
	// Live is the sum of the shards' Live.
	Live       int `json:"live"`
	Identifies int `json:"identifies"`
	Resumes    int `json:"resumes"`
	// Sessions maps the id of every session of the generation (ended ones
	// included) to its shard id; OpenSessions counts those not ended, with a
	// connection or resumable. A generation is gone when it is 0.
	Sessions     map[string]int `json:"sessions"`
	OpenSessions int            `json:"open_sessions"`
	// GuildEvents counts the guild events queued in the generation's
	// sessions, one per session that got one.
	GuildEvents int64 `json:"guild_events"`
}

// GenerationShardStats are the counters of one shard in one generation;
// they mean what ShardStats' fields of the same names mean.
type GenerationShardStats struct {
	Live       int `json:"live"`
	MaxLive    int `json:"max_live"`
	Identifies int `json:"identifies"`
	Resumes    int `json:"resumes"`
}

// SessionStats describe one gateway session.
type SessionStats struct {
	ShardID   int `json:"shard_id"`
	NumShards int `json:"num_shards"`
	// FirstSeq is the oldest seq still in the replay buffer: a RESUME with
	// seq >= FirstSeq-1 (and <= LastSeq) can be served.
	FirstSeq int64 `json:"first_seq"`
	// LastSeq is the newest seq the session produced.
	LastSeq int64 `json:"last_seq"`
	// EventsSent counts this session's dispatches written to connections,
	// replays included; Replayed counts the replays alone.
	EventsSent int64 `json:"events_sent"`
	Replayed   int64 `json:"replayed"`
	Resumes    int   `json:"resumes"`
	// Attached is true while a connection carries the session.
	Attached bool `json:"attached"`
	// Ended sessions can no longer be resumed; EndReason says why.
	Ended     bool   `json:"ended"`
	EndReason string `json:"end_reason,omitempty"`
	// Identified is when the IDENTIFY that started the session arrived, READY
	// written right after it: a cold start ends at the last one.
	Identified time.Time `json:"identified"`
	// Resumed is when the last RESUME that attached the session was answered
	// (replay queued, RESUMED after it); zero if none did. A failover ends at the
	// last one.
	Resumed time.Time `json:"resumed,omitzero"`
}

// counters are the server-wide numbers kept under Server.mu.
type counters struct {
	gatewayBot, identifies, identifyViolations, identifyUnverified int
	resumes, resumesOffURL, resumesFailed, invalidSent             int
	reconnectsSent, heartbeats, acks, hbRequests, hbAnswered       int
	hbTimeouts, drops, slowDrops, clientDrops, tokenResets         int
	perBucket, closes, clientCloses                                map[int]int
	shards                                                         map[int]*ShardStats
	gens                                                           map[int]*genCounters
}

// genCounters are the counters of one generation, by num_shards.
type genCounters struct {
	identifies, resumes int
	guildEvents         int64
	shards              map[int]*GenerationShardStats
}

func newCounters() counters {
	return counters{
		perBucket:    map[int]int{},
		closes:       map[int]int{},
		clientCloses: map[int]int{},
		shards:       map[int]*ShardStats{},
		gens:         map[int]*genCounters{},
	}
}

func (c *counters) gen(total int) *genCounters {
	g := c.gens[total]
	if g == nil {
		g = &genCounters{shards: map[int]*GenerationShardStats{}}
		c.gens[total] = g
	}
	return g
}

func (g *genCounters) shard(id int) *GenerationShardStats {
	st := g.shards[id]
	if st == nil {
		st = &GenerationShardStats{}
		g.shards[id] = st
	}
	return st
}

func (c *counters) shard(id int) *ShardStats {
	st := c.shards[id]
	if st == nil {
		st = &ShardStats{}
		c.shards[id] = st
	}
	return st
}

// Stats returns a deep copy of the fake's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refillStartsLocked()
	c := &s.cnt
	st := Stats{
		Shards:                    make(map[int]ShardStats, len(c.shards)),
		Sessions:                  make(map[string]SessionStats, len(s.sessions)),
		Generations:               make(map[int]GenerationStats, len(c.gens)),
		Guilds:                    s.guilds,
		RecommendedShards:         s.recommendedShardsLocked(),
		GuildEventRate:            s.guildEvents.rate,
		GuildEvents:               s.guildEvents.next,
		Connections:               len(s.conns),
		GatewayBotRequests:        c.gatewayBot,
		PayloadsCompressed:        s.payloadsCompressed.Load(),
		Identifies:                c.identifies,
		IdentifiesPerBucket:       maps.Clone(c.perBucket),
		IdentifyViolations:        c.identifyViolations,
		IdentifyUnverified:        c.identifyUnverified,
		Resumes:                   c.resumes,
		ResumesOffResumeURL:       c.resumesOffURL,
		ResumesFailed:             c.resumesFailed,
		InvalidSessionsSent:       c.invalidSent,
		ReconnectsSent:            c.reconnectsSent,
		HeartbeatsReceived:        c.heartbeats,
		HeartbeatACKsSent:         c.acks,
		HeartbeatRequestsSent:     c.hbRequests,
		HeartbeatRequestsAnswered: c.hbAnswered,
		HeartbeatTimeouts:         c.hbTimeouts,
		Closes:                    maps.Clone(c.closes),
		ClientCloses:              maps.Clone(c.clientCloses),
		Drops:                     c.drops,
		SlowClientDrops:           c.slowDrops,
		ClientDrops:               c.clientDrops,
		TokenResets:               c.tokenResets,
		TokenValid:                s.tokenValid,
		SessionStartTotal:         s.opts.SessionStartLimit,
		SessionStartRemaining:     s.startsRemaining,
	}
	for id, sh := range c.shards {
		cp := *sh
		if sh.LastHeartbeat != nil {
			v := *sh.LastHeartbeat
			cp.LastHeartbeat = &v
		}
		cp.Commands, cp.LastCommand = maps.Clone(sh.Commands), slices.Clone(sh.LastCommand)
		st.Shards[id] = cp
	}
	for total, g := range c.gens {
		gs := GenerationStats{
			Shards:      make(map[int]GenerationShardStats, len(g.shards)),
			Identifies:  g.identifies,
			Resumes:     g.resumes,
			Sessions:    map[string]int{},
			GuildEvents: g.guildEvents,
		}
		for id, sh := range g.shards {
			gs.Shards[id] = *sh
			gs.Live += sh.Live
		}
		st.Generations[total] = gs
	}
	for id, sess := range s.sessions {
		ss := sess.stats()
		st.Sessions[id] = ss
		st.EventsSent += ss.EventsSent
		if gs, ok := st.Generations[ss.NumShards]; ok {
			gs.Sessions[id] = ss.ShardID
			if !ss.Ended {
				gs.OpenSessions++
			}
			st.Generations[ss.NumShards] = gs
		}
	}
	return st
}

// notifier wakes Await calls on every change. Changing state costs one
// atomic load while nobody waits, so the event path stays cheap.
type notifier struct {
	waiting atomic.Bool
	mu      sync.Mutex
	ch      chan struct{}
}

// wait returns a channel closed at the next change after this call.
func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	n.waiting.Store(true)
	return n.ch
}

func (n *notifier) notify() {
	if !n.waiting.Load() {
		return
	}
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.waiting.Store(false)
	n.mu.Unlock()
}
