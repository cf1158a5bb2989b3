package gatewaytest

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Generations, as Discord's "Sharding for large bots" and resharding advice
// describe them: num_shards only routes traffic, so a bot may open a second
// set of sessions with a new num_shards beside the old ones, and every
// guild's events then reach the session of the guild's shard in each set.
// The fake calls each set a generation, keyed by num_shards, and routes
// every guild-level dispatch it makes after READY (a new guild's
// GUILD_CREATE, a guild event) through the same index of open sessions.

// genShard is one shard of one generation.
type genShard struct{ total, shard int }

// maxAddGuilds bounds one AddGuilds call: every live session of a shard that
// gains guilds gets their GUILD_CREATEs queued at once, and a far bigger
// burst would overflow a default outbound queue (a slow-client drop).
const maxAddGuilds = 10000

// maxGuilds bounds the bot's guild count: guild index i lives in the
// timestamp bits of its id, and READY lists a shard's guilds in one payload.
const maxGuilds = 1 << 24

// indexLocked adds a new session to the open index. Callers hold Server.mu.
func (s *Server) indexLocked(ss *session) {
	k := genShard{ss.numShards, ss.shardID}
	s.open[k] = append(s.open[k], ss)
	if i, found := slices.BinarySearch(s.openTotals, ss.numShards); !found {
		s.openTotals = slices.Insert(s.openTotals, i, ss.numShards)
	}
}

// unindexLocked removes an ended session from the open index; a generation
// whose last session ended gets no more dispatches. Callers hold Server.mu.
func (s *Server) unindexLocked(ss *session) {
	k := genShard{ss.numShards, ss.shardID}
	list := s.open[k]
	i := slices.Index(list, ss)
	if i < 0 {
		return
	}
	list = slices.Delete(list, i, i+1)
	if len(list) > 0 {
		s.open[k] = list
		return
	}
	delete(s.open, k)
	for sh := range ss.numShards {
		if len(s.open[genShard{ss.numShards, sh}]) > 0 {
			return
		}
	}
	if j, found := slices.BinarySearch(s.openTotals, ss.numShards); found {
		s.openTotals = slices.Delete(s.openTotals, j, j+1)
	}
}

// guildDispatches gathers dispatches for sessions, each session's in the
// order they were added, so that each session is locked once per batch.
type guildDispatches struct {
	order []*session
	args  map[*session][]renderArgs
}

// routeLocked adds args (a dispatch of guild index) to every open session
// whose shard holds the guild, in every generation, and returns the
// num_shards of each session it went to. A session is skipped if skip says
// so. Callers hold Server.mu.
func (s *Server) routeLocked(d *guildDispatches, index uint64, args renderArgs, skip func(*session) bool) []int {
	var gens []int
	for _, total := range s.openTotals {
		for _, ss := range s.open[genShard{total, int(index % uint64(total))}] {
			if skip != nil && skip(ss) {
				continue
			}
			if d.args == nil {
				d.args = map[*session][]renderArgs{}
			}
			if _, ok := d.args[ss]; !ok {
				d.order = append(d.order, ss)
			}
			d.args[ss] = append(d.args[ss], args)
			gens = append(gens, total)
		}
	}
	return gens
}

// pushGuildDispatches queues tmpl rendered with each args as the session's
// next dispatches, kept for RESUME replay like every other; addGuilds is
// added to the session's guild count in the same critical section, so its
// own generated messages never name a guild before its GUILD_CREATE.
func (ss *session) pushGuildDispatches(tmpl *dispatchTemplate, args []renderArgs, addGuilds int) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return
	}
	ss.guilds += addGuilds
	var frames []outFrame
	if ss.conn != nil {
		frames = make([]outFrame, 0, len(args))
	}
	for _, a := range args {
		ss.seq++
		ss.pushLocked(event{seq: ss.seq, tmpl: tmpl, args: a}, &frames)
	}
	if c := ss.conn; c != nil && len(frames) > 0 {
		c.enqueue(frames...)
	}
}

// AddGuilds has the bot join n more guilds (at most 10,000 at a time), as
// when servers invite it: the new guilds take the next indexes, every open
// session whose shard holds one (in every generation) gets its GUILD_CREATE
// with the next seq, as Discord sends one when the bot joins a guild, and
// /gateway/bot recommends ceil(guilds / GuildsPerShardRecommended) shards
// once that passes Options.Shards. Sessions identified later get the new
// guilds in READY, and their IDENTIFY counts them against MaxGuildsPerShard.
// It returns the bot's guild count.
func (s *Server) AddGuilds(n int) (int, error) {
	if n < 1 || n > maxAddGuilds {
		return 0, fmt.Errorf("gatewaytest: AddGuilds(%d): add 1 to %d guilds at a time", n, maxAddGuilds)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	if s.guilds+n > maxGuilds {
		total := s.guilds
		s.mu.Unlock()
		return 0, fmt.Errorf("gatewaytest: AddGuilds(%d): the bot is in %d guilds, the fake holds at most %d", n, total, maxGuilds)
	}
	var d guildDispatches
	for j := range n {
		i := s.guilds + j
		s.routeLocked(&d, uint64(i), renderArgs{guildID: guildID(i), guildIndex: uint64(i)}, nil)
	}
	for _, ss := range d.order {
		ss.pushGuildDispatches(s.payloads.guildCreate, d.args[ss], len(d.args[ss]))
	}
	s.guilds += n
	total, rec := s.guilds, s.recommendedShardsLocked()
	s.mu.Unlock()
	s.changed.notify()
	s.opts.Logger.Info("guilds added", "added", n, "guilds", total, "recommended_shards", rec)
	return total, nil
}

// recommendedShardsLocked is the shard count /gateway/bot recommends.
func (s *Server) recommendedShardsLocked() int {
	per := s.opts.GuildsPerShardRecommended
	return max(s.opts.Shards, (s.guilds+per-1)/per)
}

// GuildEvent is one guild event the fake generated (GuildEventRate).
type GuildEvent struct {
	// Index numbers the guild events from 0 in the order they were generated.
	Index int64 `json:"index"`
	// GuildID is the guild's id (d.guild_id); ID is the message id (d.id),
	// unique among every message the fake makes.
	GuildID uint64 `json:"guild_id,string"`
	ID      uint64 `json:"id,string"`
	// At is when the event was generated and queued in its sessions.
	At time.Time `json:"at"`
	// Generations has the num_shards of each session the event was queued in,
	// one entry per session: [] when no open session's shard held the guild
	// (on Discord such an event reaches nobody), [16 32] during a reshard from
	// 16 to 32 shards.
	Generations []int `json:"generations"`
}

// guildEventSource is the state of the guild event generator, guarded by
// Server.mu.
type guildEventSource struct {
	rate    float64       // events per second per guild
	changed chan struct{} // the rate changed: wake the generator
	cursor  uint64        // the next guild, round-robin over guild indexes
	lastID  uint64        // the last message id, so ids only grow
	log     []GuildEvent  // the newest generated events, oldest first
	next    int64         // Index of the next event
}

func newGuildEventSource(rate float64) guildEventSource {
	return guildEventSource{rate: rate, changed: make(chan struct{}, 1)}
}

// guildEventTick is how often the generator runs: coarse ticks with a carried
// fraction keep any rate exact on average at one lock per tick.
const guildEventTick = 10 * time.Millisecond

// guildEventWorker is the snowflake worker id of guild events' message ids;
// per-session messages use 2 and typed ones 3, so no two kinds collide.
const guildEventWorker = 4

// SetGuildEventRate sets GuildEventRate from now on; 0 stops guild events,
// so that a test can let everything in flight arrive and then compare.
func (s *Server) SetGuildEventRate(perGuild float64) error {
	if perGuild < 0 || math.IsNaN(perGuild) || math.IsInf(perGuild, 0) {
		return fmt.Errorf("gatewaytest: guild event rate %g: must be a number, not negative", perGuild)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.guildEvents.rate = perGuild
	s.mu.Unlock()
	select {
	case s.guildEvents.changed <- struct{}{}:
	default:
	}
	s.changed.notify()
	return nil
}

// GuildEvents returns the generated guild events with Index >= from that
// the fake still keeps (the newest GuildEventLog), oldest first.
func (s *Server) GuildEvents(from int64) []GuildEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &s.guildEvents
	first := g.next - int64(len(g.log))
	start := min(max(int64(len(g.log)-s.opts.GuildEventLog), from-first, 0), int64(len(g.log)))
	return slices.Clone(g.log[start:])
}

// runGuildEvents generates guild events while the rate is above 0. It is
// owned by Server.wg and ends when the server closes.
func (s *Server) runGuildEvents() {
	defer s.wg.Done()
	var ticker *time.Ticker
	var tick <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	var last time.Time
	var carry float64 // the fraction of an event owed from past ticks
	for {
		s.mu.Lock()
		rate := s.guildEvents.rate
		s.mu.Unlock()
		switch {
		case rate > 0 && ticker == nil:
			ticker = time.NewTicker(guildEventTick)
			tick, last, carry = ticker.C, time.Now(), 0
		case rate == 0 && ticker != nil:
			ticker.Stop()
			ticker, tick = nil, nil
		}
		select {
		case <-s.done:
			return
		case <-s.guildEvents.changed:
		case now := <-tick:
			carry = s.generateGuildEvents(now, now.Sub(last), carry)
			last = now
		}
	}
}

// generateGuildEvents makes the events owed for elapsed at the current rate
// and guild count, round-robin over the guilds, and queues each in every open
// session whose shard holds its guild. It returns the fraction still owed.
func (s *Server) generateGuildEvents(now time.Time, elapsed time.Duration, carry float64) float64 {
	s.mu.Lock()
	if s.closed || s.guilds == 0 || elapsed <= 0 {
		s.mu.Unlock()
		return carry
	}
	g := &s.guildEvents
	owed := carry + elapsed.Seconds()*g.rate*float64(s.guilds)
	n := int(min(owed, float64(s.opts.ReplayBuffer)))
	// After a stall, do not burst more than a buffer's worth: the rest is
	// forgotten, not owed.
	carry = 0
	if owed < float64(s.opts.ReplayBuffer) {
		carry = owed - float64(n)
	}
	if n == 0 {
		s.mu.Unlock()
		return carry
	}
	ms := uint64(now.UnixMilli() - discordEpochMS)
	var d guildDispatches
	noMessages := func(ss *session) bool { return ss.guildMsgTmpl == nil }
	for range n {
		i := g.cursor % uint64(s.guilds)
		g.cursor++
		id := ms<<22 | guildEventWorker<<17 | g.cursor&(1<<17-1)
		if id <= g.lastID {
			id = g.lastID + 1
		}
		g.lastID = id
		gens := s.routeLocked(&d, i, renderArgs{guildID: guildID(int(i)), guildIndex: i, messageID: id}, noMessages)
		for _, total := range gens {
			s.cnt.gen(total).guildEvents++
		}
		g.log = append(g.log, GuildEvent{Index: g.next, GuildID: guildID(int(i)), ID: id, At: now, Generations: gens})
		g.next++
	}
	// Forget the oldest events a quarter of the log at a time, so trimming
	// costs little per event.
	if keep := s.opts.GuildEventLog; len(g.log) >= keep+max(keep/4, 1) {
		g.log = slices.Clone(g.log[len(g.log)-keep:])
	}
	for _, ss := range d.order {
		ss.pushGuildDispatches(ss.guildMsgTmpl, d.args[ss], 0)
	}
	s.mu.Unlock()
	s.changed.notify()
	return carry
}

// handleAddGuilds serves AddGuilds: POST /fake/guilds?count=N (default 1)
// answers the bot's guild count, the shard count /gateway/bot now recommends
// and the ids of the first and last guild added.
func (s *Server) handleAddGuilds(w http.ResponseWriter, r *http.Request) {
	n := 1
	if v := r.URL.Query().Get("count"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Message: "count must be an integer"})
			return
		}
	}
	total, err := s.AddGuilds(n)
	switch {
	case errors.Is(err, ErrClosed):
		writeJSON(w, http.StatusServiceUnavailable, apiError{Message: err.Error()})
		return
	case err != nil:
		writeJSON(w, http.StatusBadRequest, apiError{Message: err.Error()})
		return
	}
	s.mu.Lock()
	rec := s.recommendedShardsLocked()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, addGuildsResponse{
		Guilds: total, Shards: rec, FirstGuildID: guildID(total - n), LastGuildID: guildID(total - 1),
	})
}

type addGuildsResponse struct {
	Guilds       int    `json:"guilds"`
	Shards       int    `json:"shards"`
	FirstGuildID uint64 `json:"first_guild_id,string"`
	LastGuildID  uint64 `json:"last_guild_id,string"`
}

// guildEventsResponse is GET /fake/guild-events: the kept events from the
// asked index on, and next, the index to ask from next time.
type guildEventsResponse struct {
	Next   int64        `json:"next"`
	Events []GuildEvent `json:"events"`
}

// handleGuildEvents serves GuildEvents: GET /fake/guild-events?from=K
// (default 0).
func (s *Server) handleGuildEvents(w http.ResponseWriter, r *http.Request) {
	var from int64
	if v := r.URL.Query().Get("from"); v != "" {
		var err error
		if from, err = strconv.ParseInt(v, 10, 64); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Message: "from must be an integer"})
			return
		}
	}
	evs := s.GuildEvents(from)
	next := from
	if len(evs) > 0 {
		next = evs[len(evs)-1].Index + 1
	}
	writeJSON(w, http.StatusOK, guildEventsResponse{Next: next, Events: evs})
}

// handleGuildEventRate serves SetGuildEventRate: POST
// /fake/guild-events?rate=R (events per second per guild; 0 stops them).
func (s *Server) handleGuildEventRate(w http.ResponseWriter, r *http.Request) {
	rate, err := strconv.ParseFloat(r.URL.Query().Get("rate"), 64)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Message: "rate must be a number"})
		return
	}
	switch err := s.SetGuildEventRate(rate); {
	case errors.Is(err, ErrClosed):
		writeJSON(w, http.StatusServiceUnavailable, apiError{Message: err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadRequest, apiError{Message: err.Error()})
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}
