package gatewaytest

import (
	"fmt"
	"log/slog"
	"time"
)

// Options configures a fake gateway. The zero value is valid: every field
// left zero takes the default named in its comment, which matches what
// Discord itself does (heartbeat interval, limits) unless a test shortens it.
type Options struct {
	// Addr is the listen address. Default "127.0.0.1:0" (loopback, OS-chosen port).
	Addr string
	// Token is the only bot token the fake accepts, in /gateway/bot
	// ("Authorization: Bot <token>"), IDENTIFY and RESUME. Default "test-token".
	Token string
	// Shards is the shard count GET /gateway/bot recommends at the least: the
	// recommendation is the larger of Shards and ceil(guilds /
	// GuildsPerShardRecommended), so it rises as AddGuilds adds guilds. Default 1.
	Shards int
	// Guilds is the number of guilds the bot is in at start (AddGuilds adds
	// more). Guild index i has the id (i<<22)|lowbits, so (id>>22)%total ==
	// i%total for any total a client picks. Default Shards; NoGuilds for a bot
	// in no guild at all.
	Guilds int
	// GuildsPerShardRecommended is how many guilds /gateway/bot counts per
	// shard when it recommends a shard count; Discord recommends about one
	// shard per 1,000 guilds. Default 1000.
	GuildsPerShardRecommended int
	// MaxConcurrency is session_start_limit.max_concurrency: identifies are
	// bucketed by shard_id % MaxConcurrency. Default 1.
	MaxConcurrency int
	// IdentifyWindow is how long a bucket stays spent after an accepted
	// IDENTIFY. Discord uses 5 s. Default 5s.
	IdentifyWindow time.Duration
	// SessionStartLimit is session_start_limit.total and the initial
	// remaining. Default 1000.
	SessionStartLimit int
	// SessionStartResetAfter is the length of the session start window;
	// /gateway/bot reports the time left in it as reset_after (ms), and the
	// budget refills when it ends. Default 24h.
	SessionStartResetAfter time.Duration
	// HeartbeatInterval is sent in HELLO (whole milliseconds, at least 1 ms).
	// Default 41250ms, Discord's current value.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is the grace after HeartbeatInterval before a
	// connection that sent no heartbeat is closed. Default HeartbeatInterval/2.
	HeartbeatTimeout time.Duration
	// EventRate is the number of generated MESSAGE_CREATE dispatches per
	// second per session (0 = none). Events are generated whether or not the
	// session has a connection, as Discord buffers them for a RESUME. As on
	// Discord, guild messages need the GUILD_MESSAGES intent and DMs (shard 0
	// when it owns no guild) need DIRECT_MESSAGES; without MESSAGE_CONTENT the
	// content, embeds, attachments and components arrive empty.
	EventRate float64
	// GuildEventRate is the number of MESSAGE_CREATE dispatches per second per
	// guild of the bot (0 = none; SetGuildEventRate changes it). Unlike
	// EventRate's per-session events, each is an event of one guild, sent as
	// Discord sends it: once to every session, of every num_shards in use
	// (every generation), whose shard holds the guild, with the same d byte for
	// byte and each session's own next seq. Sessions without GUILD_MESSAGES get
	// none, as with EventRate. GuildEvents lists what was generated.
	GuildEventRate float64
	// GuildEventLog is how many generated guild events GuildEvents keeps (the
	// newest). Default 1<<19.
	GuildEventLog int
	// SessionTTL is how long a session without a connection stays
	// resumable. Discord says "a few minutes". Default 2m.
	SessionTTL time.Duration
	// ReplayBuffer is the number of dispatches each session keeps for
	// RESUME replay. Default 10000.
	ReplayBuffer int
	// SendLimit is the number of client payloads (of any op, heartbeats
	// included) allowed within any SendWindow on one connection; one more
	// gets close 4008. Default 120.
	SendLimit int
	// SendWindow: see SendLimit. Default 60s.
	SendWindow time.Duration
	// MaxGuildsPerShard: an IDENTIFY whose shard would hold more guilds gets
	// close 4011. The guilds are counted with the IDENTIFY's own num_shards,
	// so a new generation with more shards passes where the old one would not.
	// A session already open is not closed when AddGuilds takes its shard over
	// the limit: Discord documents 4011 as the answer to an IDENTIFY (a test
	// that wants the close sends it with CloseShard). Default 2500.
	MaxGuildsPerShard int
	// DenyPrivilegedIntents makes an IDENTIFY with GUILD_MEMBERS (1<<1),
	// GUILD_PRESENCES (1<<8) or MESSAGE_CONTENT (1<<15) fail with close 4014,
	// as for a bot whose privileged intents are not enabled.
	DenyPrivilegedIntents bool
	// SplitFrames splits every zlib-stream payload across two websocket
	// messages at a varying point, so only the last one ends with the
	// 00 00 ff ff sync-flush marker; clients must buffer until it arrives.
	// zstd-stream is never split: Discord sends one gateway message per
	// websocket message there.
	SplitFrames bool
	// OutboundQueue is how many payloads may wait for one connection's
	// writer. A client further behind is dropped (no close frame; its
	// session stays resumable), so one slow client never stalls the fake.
	// Default ReplayBuffer + MaxGuildsPerShard + 1024, enough for a full
	// replay or a full READY burst.
	OutboundQueue int
	// Logger receives the fake's logs. Nil discards them. The token is
	// never logged.
	Logger *slog.Logger
}

// NoGuilds as Options.Guilds configures a bot that is in no guild.
const NoGuilds = -1

// Defaults that are Discord's own values or the brief's.
const (
	defaultToken             = "test-token"
	defaultIdentifyWindow    = 5 * time.Second
	defaultSessionStarts     = 1000
	defaultStartResetAfter   = 24 * time.Hour
	defaultHeartbeatInterval = 41250 * time.Millisecond
	defaultSessionTTL        = 2 * time.Minute
	defaultReplayBuffer      = 10000
	defaultSendLimit         = 120
	defaultSendWindow        = 60 * time.Second
	defaultMaxGuildsPerShard = 2500
	// Discord's /gateway/bot recommends about one shard per 1,000 guilds.
	defaultGuildsPerShardRecommended = 1000
	defaultGuildEventLog             = 1 << 19
)

// withDefaults returns o with every zero field replaced by its default, or
// an error naming the first field that is out of range.
func (o Options) withDefaults() (Options, error) {
	neg := func(name string, v int64) error {
		if v < 0 {
			return fmt.Errorf("gatewaytest: Options.%s must not be negative (got %d)", name, v)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Shards", int64(o.Shards)}, {"Guilds", int64(max(o.Guilds, 0))}, {"MaxConcurrency", int64(o.MaxConcurrency)},
		{"IdentifyWindow", int64(o.IdentifyWindow)}, {"SessionStartLimit", int64(o.SessionStartLimit)},
		{"SessionStartResetAfter", int64(o.SessionStartResetAfter)}, {"HeartbeatInterval", int64(o.HeartbeatInterval)},
		{"HeartbeatTimeout", int64(o.HeartbeatTimeout)}, {"SessionTTL", int64(o.SessionTTL)},
		{"ReplayBuffer", int64(o.ReplayBuffer)}, {"SendLimit", int64(o.SendLimit)}, {"SendWindow", int64(o.SendWindow)},
		{"MaxGuildsPerShard", int64(o.MaxGuildsPerShard)}, {"OutboundQueue", int64(o.OutboundQueue)},
		{"GuildsPerShardRecommended", int64(o.GuildsPerShardRecommended)}, {"GuildEventLog", int64(o.GuildEventLog)},
	} {
		if err := neg(f.name, f.v); err != nil {
			return o, err
		}
	}
	if o.EventRate < 0 {
		return o, fmt.Errorf("gatewaytest: Options.EventRate must not be negative (got %g)", o.EventRate)
	}
	if o.GuildEventRate < 0 {
		return o, fmt.Errorf("gatewaytest: Options.GuildEventRate must not be negative (got %g)", o.GuildEventRate)
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Token == "" {
		o.Token = defaultToken
	}
	if o.Shards == 0 {
		o.Shards = 1
	}
	switch {
	case o.Guilds == 0:
		o.Guilds = o.Shards
	case o.Guilds == NoGuilds:
		o.Guilds = 0
	case o.Guilds < 0:
		return o, fmt.Errorf("gatewaytest: Options.Guilds must not be negative other than NoGuilds (got %d)", o.Guilds)
	}
	if o.MaxConcurrency == 0 {
		o.MaxConcurrency = 1
	}
	if o.IdentifyWindow == 0 {
		o.IdentifyWindow = defaultIdentifyWindow
	}
	if o.SessionStartLimit == 0 {
		o.SessionStartLimit = defaultSessionStarts
	}
	if o.SessionStartResetAfter == 0 {
		o.SessionStartResetAfter = defaultStartResetAfter
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = defaultHeartbeatInterval
	}
	if o.HeartbeatInterval < time.Millisecond {
		return o, fmt.Errorf("gatewaytest: Options.HeartbeatInterval must be at least 1ms, HELLO carries whole milliseconds (got %v)", o.HeartbeatInterval)
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = o.HeartbeatInterval / 2
	}
	if o.SessionTTL == 0 {
		o.SessionTTL = defaultSessionTTL
	}
	if o.ReplayBuffer == 0 {
		o.ReplayBuffer = defaultReplayBuffer
	}
	if o.SendLimit == 0 {
		o.SendLimit = defaultSendLimit
	}
	if o.SendWindow == 0 {
		o.SendWindow = defaultSendWindow
	}
	if o.MaxGuildsPerShard == 0 {
		o.MaxGuildsPerShard = defaultMaxGuildsPerShard
	}
	if o.GuildsPerShardRecommended == 0 {
		o.GuildsPerShardRecommended = defaultGuildsPerShardRecommended
	}
	if o.GuildEventLog == 0 {
		o.GuildEventLog = defaultGuildEventLog
	}
	if o.OutboundQueue == 0 {
		o.OutboundQueue = o.ReplayBuffer + o.MaxGuildsPerShard + 1024
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
