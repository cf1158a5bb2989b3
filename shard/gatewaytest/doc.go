// Package gatewaytest is a fake Discord for tests, in the spirit of
// net/http/httptest: NewServer starts GET /api/v10/gateway/bot and the
// gateway websocket on loopback, Close stops everything, and methods let a
// test inject faults and observe what clients did.
//
// It owns no client code and imports no discluster package, so a protocol
// misunderstanding in the client cannot hide in the fake as well. Its rules
// come from Discord's documentation (see research/discord-gateway.md).
//
// # What it enforces
//
// On connect: v must be 9 or 10 (else close 4012), encoding json (else
// 4002), compress absent, zlib-stream or zstd-stream (else HTTP 400 before
// the upgrade). HELLO comes first. Then, per connection:
//   - a payload other than a heartbeat before IDENTIFY/RESUME: 4003;
//   - a second IDENTIFY (or a RESUME after one): 4005;
//   - invalid JSON, or a payload over 4096 bytes: 4002; an unknown op or
//     a d of the wrong shape: 4001;
//   - more than SendLimit payloads (heartbeats included) in any SendWindow:
//     4008;
//   - a bad token in IDENTIFY or RESUME: 4004; a bad shard pair: 4010; more
//     than MaxGuildsPerShard guilds on the shard: 4011; missing or undefined
//     intent bits: 4013; privileged intents when denied: 4014;
//   - no heartbeat within HeartbeatInterval+HeartbeatTimeout of HELLO or of
//     the previous heartbeat: 4000, a resumable code, because Discord says
//     a client that missed its heartbeat must resume;
//   - more than one IDENTIFY per bucket (shard_id % MaxConcurrency) per
//     IdentifyWindow, across the whole fake, by arrival time (the kernel's
//     receive stamp on Linux, so the fake's own scheduling delays do not count):
//     op 9 false, counted as an IdentifyViolation; the socket stays open;
//   - an IDENTIFY with no session starts left: the token is reset, as on
//     Discord: every connection closes with 4004, every session ends, and
//     the token is refused from then on (4004, HTTP 401).
//
// Closes with 4004, 4007, 4009 and 4010-4014 end the session; other codes,
// client closes other than 1000/1001, and dropped connections leave it
// resumable for SessionTTL. A client close with 1000 or 1001 ends it.
//
// # What it promises
//
// Every dispatch of a session has the next seq (READY is 1, then one
// GUILD_CREATE per guild of the shard, then generated MESSAGE_CREATEs).
// A session keeps its last ReplayBuffer dispatches and keeps generating
// while it has no connection. A RESUME with seq in [FirstSeq-1, LastSeq]
// replays every dispatch after seq in order, then RESUMED with its own seq,
// then live events, with no gap, duplicate or reordering: replay and attach
// happen under the session's lock. Any other RESUME gets op 9 false.
// A RESUME of a session that still has a connection moves it: the old
// connection stops counting as live first, then is closed with 4009, so
// ShardStats.MaxLive shows whether a shard ever had two connections.
//
// Guild index i has id (i<<22)|lowbits, so (id>>22)%total == i%total and
// shard k of total owns the guilds with i%total == k. Events without a
// guild (DMs) go to shard 0 only (Options.Guilds = NoGuilds makes a bot in
// no guild, whose shard 0 receives DMs).
//
// # Generations: resharding as Discord allows it
//
// num_shards only routes traffic, so, as Discord's docs allow, a bot may
// open sessions with a new num_shards beside its old ones; the sessions
// identified with one num_shards are a generation (Stats.Generations). Every
// guild-level dispatch after READY goes to the session of the guild's shard
// in every open generation, each with that session's own next seq and kept
// for RESUME like any other: guild events (Options.GuildEventRate, per guild,
// round-robin over the guilds; each a MESSAGE_CREATE with a unique id and the
// same d on every generation, as on Discord; GuildEvents lists them with the
// generations each reached), and the GUILD_CREATE of a guild the bot joins
// (AddGuilds, POST /fake/guilds). /gateway/bot recommends the larger of
// Options.Shards and ceil(guilds / GuildsPerShardRecommended), so its
// recommendation rises as guilds are added. MaxGuildsPerShard is checked at
// IDENTIFY with that IDENTIFY's num_shards. A session ended (a client close
// with 1000, say) leaves its generation at once; a detached one keeps
// receiving into its replay buffer. Stats.Generations has per (num_shards,
// shard) Live and MaxLive, identifies, resumes and the sessions.
//
// Every connection has its own writer goroutine and a bounded queue; a
// client that falls OutboundQueue payloads behind is dropped (resumable),
// so one slow client never slows the others. Payload shapes come from
// testdata/*.json and are pre-split once; an event costs a few appends to
// render, and the messages of one queue batch leave in few TCP writes.
//
// The token never appears in logs, errors, close reasons or responses.
// Close is idempotent and returns only after every goroutine of the
// server has ended.
//
// Payload compression (IDENTIFY compress:true, on a connection without
// transport compression) sends each payload of 1 KiB or more as a binary
// message that is a complete zlib stream of its own. Request Guild Members
// (op 8) is answered with GUILD_MEMBERS_CHUNK dispatches of up to 1000
// members (all members, a username prefix of at most 100, or user_ids with
// not_found; the nonce echoed when valid), all-members requests need
// GUILD_MEMBERS and are limited to one per guild every 30 s across sessions
// (RATE_LIMITED with retry_after beyond that), and presences need
// GUILD_PRESENCES.
//
// # What it does not do
//
// ETF encoding, voice, large-bot sharding rules (a shard count that must be
// a multiple of Discord's), and guild events of more than one kind.
package gatewaytest
