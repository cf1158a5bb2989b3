// Package cutover is the rule by which a reshard switches event delivery from the
// old generation of shards (total T) to the new one (total N) with no event lost and
// none delivered twice. It is pure bookkeeping: the caller passes in the events, the
// times (no clock inside), and the cut that travels between nodes; this package
// starts no goroutine and talks to no one.
//
// # The setting
//
// During a reshard both generations' sessions are open. Discord sends each guild's
// events to shard ShardOf(guild, total) of every generation, in the same per-guild
// order, with byte-identical d. The old generation delivers them to the sink; the new
// one holds them back. One Raft command, the switch, applies on every node at
// slightly different moments: there the old generation stops delivering and the new
// one starts.
//
// # The rule
//
// An event's Key is its guild (the top-level guild_id of d; 0 for none: DMs, which
// Discord sends to shard 0 of every generation, and the session's own events) and a
// 64-bit hash of its type and d (KeyOf).
//
// The old generation, one Tracker per shard, records per guild the Key of the last
// event it delivered, from before the new generation's sessions start, and forgets a
// guild 2W after its last delivery; it also keeps every delivery of the last W/2.
// When the switch applies, the old shard stops delivering (what it delivered stays
// delivered) and Stop makes its cut final: per guild delivered within 2W before Stop,
// the last Key (the guild's cut event) and its age (how long before Stop), and the
// guild's earlier deliveries within W/2 before Stop, marked Earlier. The new
// generation's owners fetch it, filtered to one new shard's guilds (Wanted). An old
// shard that moved between nodes during the reshard has a Tracker on each, and both
// answer: a guild's cut event is then the youngest of the two last Keys, the other an
// earlier delivery.
//
// The new generation, one Holdback per shard, keeps every event it received in the
// last W before the switch, in arrival order, with its Key; older ones are pruned
// (the old generation delivered them). From the switch it prunes nothing, since all
// of that must be delivered, until the cut arrives. Release then decides per guild:
//
//   - its cut Key is among the held events: the events up to and including the first
//     with that Key are dropped, the rest delivered;
//   - no cut entry: all its held events are delivered;
//   - its cut Key is not held and is older than W/2: the old generation's last
//     delivery was received here before the switch and pruned (or came before this
//     session), so every held event of the guild is later: all delivered;
//   - its cut Key is not held and younger than W/2: either this generation is behind
//     the old one and has not received it yet, or it came before this session
//     started (a new shard READY shortly before the switch). The guild's next event
//     received from the switch on tells which: one of the old generation's earlier
//     deliveries means behind, anything else means the cut event came before the
//     session. Behind, the guild's events stay held (others flow on) until the cut
//     event arrives, when it and everything of the guild before it are dropped;
//     before the session, the guild's held events are delivered with that next event.
//     A guild with no event after the switch waits until W/2 after it, when all its
//     held events are delivered.
//
// Delivered events keep their arrival order, so each guild's order. The new shard's
// READY, and the GUILD_CREATE burst that follows it until the caller says
// GuildsArrived, are session start, not guild events: they are never held, never
// delivered (the workers know those guilds from the old generation).
//
// # Why it holds, and what it needs
//
// Let σ bound, over every event, how much earlier or later one generation sees it
// than the other, each counted from its own switch: for an event delivered by the
// old shard at a (its node's clock; the time passed to Tracker.Delivered) and
// received by the new one at b (passed to Holdback.Add),
// |(b − Switch) − (a − Stop)| ≤ σ, with the times passed to Holdback.Switch and
// Tracker.Stop; an event the old shard never delivered counts as delivered after
// its Stop. σ adds up Discord's skew between the two sessions, the old generation's
// delivery lag (its sink's backlog, and the batch in flight at the switch), and the
// spread of the switch's apply. Only durations on one node's clock are compared (an
// age travels as a duration), so the nodes' clocks need not agree.
//
// With σ < W/2, every event is delivered exactly once, and each guild's events in
// order. The old generation delivers a prefix of each guild's stream. An event the
// new generation pruned was received more than W before its switch, so delivered by
// the old one before its Stop. A held event that was a guild's last delivery was
// delivered within W + σ < 2W of the Stop, so the Tracker still has it; that is why
// it remembers twice as long as the Holdback holds (with equal windows, a new
// generation that sees an event later than the old one did would hold it while the
// old one forgot it, and deliver it twice). A guild the Tracker forgot was last
// delivered more than 2W before the Stop, so none of its held events was delivered.
// A cut Key older than W/2 was received here before the switch (b − Switch ≤
// −W/2 + σ < 0), so if it is not held it was pruned; one younger than W/2 cannot have
// been pruned (b − Switch > −W/2 − σ > −W), so if it is not held it is still to
// come, within σ < W/2 of the switch. An event the old generation delivered and this
// one receives after its switch was delivered less than σ < W/2 before the Stop, so
// it is among the earlier deliveries; one that is not among them (and is not the cut
// event) was never delivered, and since each guild's order is the same, its cut
// event came earlier: before the session, as it is not held. A handoff of an old
// shard gaps its deliveries by a resume, longer than the switch's spread over the
// nodes, so the youngest age is its last delivery. TestExactlyOnceProperty checks
// the claim over random streams, switch points, new sessions that start early or
// just before the switch, old shards that move between nodes, skews and clock
// offsets; it fails when the Tracker remembers only W, when young-cut guilds do not
// wait, when a guild's next event ends its wait whether or not the old generation
// delivered it, when the first of two Trackers' last Keys counts, or when the
// Holdback prunes after the switch.
//
// # Limits
//
//   - The same event twice within W (same guild, type and d bytes) matches the cut
//     at its first occurrence, so the second, and the events between the two, are
//     delivered again. Discord's events carry ids and timestamps, so this takes two
//     genuinely identical payloads, or a hash collision: one in 2^64 per pair of a
//     guild's held events. A collision before the real match also only repeats
//     events; one after the guild's last old delivery, when that delivery itself is
//     not held, would drop events. KeyOf's CRC does not resist bytes chosen to
//     collide, but the bytes that matter (ids, timestamps) are Discord's to choose.
//   - An old owner that dies before giving its cut leaves its guilds with no cut
//     entry: the new shards deliver their whole held window for them (duplicates
//     within W, never a loss). A new owner that crashes after the switch but before
//     Release resumes from Trailing, replays the window into a fresh Holdback, and
//     releases with the cut again if an old owner still has it (a guild whose cut
//     event was before the replay waits W/2 for it, then gets everything); else the
//     same duplicates. A checkpoint past Trailing would lose events in such a crash;
//     the caller checkpoints no further than Trailing while anything is held.
//   - Per-guild order must be the same in both generations (Discord's behaviour, and
//     the fake's). σ ≥ W/2 breaks exactly once. An old generation lagging more than W
//     behind (a sink backlog) lets the new one prune events never delivered: a loss.
//     A new generation lagging more than W/2 behind repeats events, never loses one
//     (TestNeverLosesProperty). The leader should switch only while the old
//     generation's delivery is current.
//   - Events without a guild on shards other than 0 (the session's own, and whatever
//     Discord sends every shard) are not matched: Wanted keeps guild 0 from old shard
//     0 only, so new shards other than 0 deliver their held ones. READY and RESUMED
//     (SessionEvent) are never passed to Tracker.Delivered: they belong to one session.
//   - A fresh Holdback after a crash does not know which replayed GUILD_CREATE were
//     its session's start (no READY is replayed on RESUME): held and delivered, they
//     repeat guilds the workers know.
//   - A re-identify of a new shard before the switch loses Discord's events between
//     its sessions in the new generation, which is harmless while the old one still
//     delivers them, except that a guild whose cut event fell in that gap repeats
//     what it held from before the gap; after the switch it is the loss of any
//     re-identify.
//   - A Tracker keeps at most MaxEvents deliveries of the last W/2 (a shard busier
//     than that forgets the oldest): a guild waiting for its cut event whose next
//     event is a forgotten one is taken as before the session, and its held events
//     are repeated, never lost.
//
// # Memory
//
// A Tracker holds one entry per guild delivered in the last 2W (at most the shard's
// guilds) and one per delivery of the last W/2 (at most MaxEvents); the cut that
// travels to the new owners holds as many entries. A Holdback holds W of events before the switch, everything from the
// switch to Release, and after it the waiting guilds' events for at most W/2; all
// bounded by MaxEvents and MaxBytes: past them Add returns ErrFull, which the caller
// turns into back-pressure on the shard's reads, never a silent drop.
//
// # The caller's part
//
// Old shard, while a reshard is under way: KeyOf and Tracker.Delivered for each
// dispatch the sink accepted (not SessionEvent ones); at the switch, stop delivering,
// let the batch in flight finish, Tracker.Stop; answer Cut until the new owners
// have theirs. New shard: Holdback.Add for each dispatch, GuildsArrived after its
// start burst, Switch when the switch applies, Release with the union of the old
// shards' Cut(Wanted(old, new, N)); deliver what Add, Release and Due return; call
// Due on a timer and pass events through Add until Done; checkpoint at most Trailing.
package cutover
