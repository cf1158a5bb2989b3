package gatewaytest

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"
)

// event is one dispatch of a session, kept compactly in the replay buffer:
// generated events hold only what varies and are rendered by the writer of
// whichever connection sends them, so a full buffer costs ~64 bytes an entry.
type event struct {
	seq  int64
	tmpl *dispatchTemplate // nil when raw is set
	args renderArgs
	raw  []byte // a fully rendered payload (READY, RESUMED)
}

func (e *event) render(dst []byte) []byte {
	if e.raw != nil {
		return e.raw
	}
	return e.tmpl.render(dst, e.seq, &e.args)
}

// session is one Discord gateway session. It outlives connections: a
// detached session keeps producing (and buffering) events until it is
// resumed, ended, or expires after SessionTTL.
type session struct {
	srv        *Server
	id         string
	identified time.Time
	resumed    time.Time // the last RESUME that attached it; guarded by mu
	idx        uint64    // distinguishes the message ids of concurrent sessions
	shardID    int
	numShards  int
	guilds     int               // number of guilds this shard owns; guarded by mu
	intents    int64             // as IDENTIFY gave them: member requests depend on them
	msgTmpl    *dispatchTemplate // nil: the session generates no messages
	// guildMsgTmpl renders guild events (GuildEventRate) for this session's
	// intents; nil without GUILD_MESSAGES.
	guildMsgTmpl *dispatchTemplate
	dm           bool          // generated messages are DMs (no guild)
	stop         chan struct{} // closed when the session ends
	kick         chan struct{} // attachment changed; re-arm the expiry timer

	eventsSent atomic.Int64
	replayed   atomic.Int64

	mu         sync.Mutex
	seq        int64
	ring       []event // replay buffer, oldest at ring[start] once full
	start      int
	conn       *conn
	detachedAt time.Time
	resumes    int
	generated  uint64 // MESSAGE_CREATEs so far, for guild round-robin
	ended      bool
	endReason  string
}

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// guildCount is how many of the bot's guilds fall on shard id of total:
// guild index i goes to shard i % total, Discord's (id>>22) % num_shards.
func guildCount(guilds, id, total int) int {
	n := guilds / total
	if id < guilds%total {
		n++
	}
	return n
}

// guildID is the snowflake of guild index i: i in the timestamp bits, so
// that (id>>22) % total == i % total for every total, and worker id 1 in
// the low bits; ids id+1..id+4 are the guild's channels and role.
func guildID(i int) uint64 { return uint64(i)<<22 | 1<<17 }

// discordEpochMS is the first millisecond of 2015, the snowflake epoch.
const discordEpochMS = 1420070400000

// pushLocked appends ev to the replay buffer and sends it to the attached
// connection. Both happen under ss.mu, as do RESUME's replay and attach, so
// no event can fall between a replay and the live stream or be sent twice.
func (ss *session) pushLocked(ev event, frames *[]outFrame) {
	if limit := ss.srv.opts.ReplayBuffer; len(ss.ring) < limit {
		ss.ring = append(ss.ring, ev)
	} else {
		ss.ring[ss.start] = ev
		ss.start = (ss.start + 1) % limit
	}
	if ss.conn != nil {
		*frames = append(*frames, outFrame{ev: ev, sess: ss})
	}
}

// firstSeqLocked is the oldest seq still in the replay buffer.
func (ss *session) firstSeqLocked() int64 { return ss.seq - int64(len(ss.ring)) + 1 }

// replayLocked returns the buffered dispatches after seq, oldest first,
// and whether seq is one the buffer can resume from.
func (ss *session) replayLocked(seq int64) ([]outFrame, bool) {
	first := ss.firstSeqLocked()
	if seq < first-1 || seq > ss.seq {
		return nil, false
	}
	n := int(ss.seq - seq)
	out := make([]outFrame, 0, n+1)
	for k := len(ss.ring) - n; k < len(ss.ring); k++ {
		ev := ss.ring[(ss.start+k)%len(ss.ring)]
		out = append(out, outFrame{ev: ev, sess: ss, replay: true})
	}
	return out, true
}

// detach unhooks c from the session if it still carries it; the session
// stays resumable for SessionTTL.
func (ss *session) detach(c *conn) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.conn != c || ss.ended {
		return
	}
	ss.conn = nil
	ss.detachedAt = time.Now()
	ss.kickLocked()
}

func (ss *session) kickLocked() {
	select {
	case ss.kick <- struct{}{}:
	default:
	}
}

// end makes the session unresumable and frees its buffer; its generation
// gets no more guild dispatches for it. Callers hold Server.mu.
func (ss *session) end(reason string) {
	ss.srv.unindexLocked(ss)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return
	}
	ss.ended, ss.endReason = true, reason
	ss.ring, ss.start = nil, 0
	if c := ss.conn; c != nil && c.sess == ss {
		c.sess = nil
	}
	ss.conn = nil
	close(ss.stop)
}

func (ss *session) stats() SessionStats {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := SessionStats{
		ShardID:    ss.shardID,
		NumShards:  ss.numShards,
		LastSeq:    ss.seq,
		EventsSent: ss.eventsSent.Load(),
		Replayed:   ss.replayed.Load(),
		Resumes:    ss.resumes,
		Attached:   ss.conn != nil,
		Ended:      ss.ended,
		EndReason:  ss.endReason,
		Identified: ss.identified,
		Resumed:    ss.resumed,
	}
	if !ss.ended {
		st.FirstSeq = ss.firstSeqLocked()
	}
	return st
}

// generate produces n MESSAGE_CREATE dispatches.
func (ss *session) generate(n int, now time.Time) {
	ms := uint64(now.UnixMilli() - discordEpochMS)
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return
	}
	var frames []outFrame
	if ss.conn != nil {
		frames = make([]outFrame, 0, n)
	}
	for range n {
		ss.seq++
		ev := event{seq: ss.seq, tmpl: ss.msgTmpl}
		ev.args.messageID = ms<<22 | 2<<17 | (ss.idx&31)<<12 | uint64(ss.seq)&0xfff
		if !ss.dm {
			i := ss.shardID + int(ss.generated%uint64(ss.guilds))*ss.numShards
			ev.args.guildID, ev.args.guildIndex = guildID(i), uint64(i)
		}
		ss.generated++
		ss.pushLocked(ev, &frames)
	}
	if c := ss.conn; c != nil {
		c.enqueue(frames...)
	}
	ss.mu.Unlock()
	ss.srv.changed.notify()
}

// run generates events at EventRate and expires the session SessionTTL
// after it lost its connection. It is owned by Server.wg and stops when the
// session ends or the server closes.
func (ss *session) run() {
	defer ss.srv.wg.Done()
	s := ss.srv
	var tick <-chan time.Time
	rate := s.opts.EventRate
	if rate > 0 && ss.msgTmpl != nil {
		// Coarse ticks with catch-up keep high rates cheap: one lock and
		// one enqueue per tick instead of per event.
		period := max(time.Duration(float64(time.Second)/rate), 5*time.Millisecond)
		t := time.NewTicker(period)
		defer t.Stop()
		tick = t.C
	}
	began := time.Now()
	var done uint64
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	defer expiry.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-ss.stop:
			return
		case <-ss.kick:
			ss.mu.Lock()
			if ss.conn == nil && !ss.ended {
				expiry.Reset(s.opts.SessionTTL - time.Since(ss.detachedAt))
			} else {
				expiry.Stop()
			}
			ss.mu.Unlock()
		case <-expiry.C:
			if s.expire(ss) {
				return
			}
		case now := <-tick:
			due := uint64(now.Sub(began).Seconds() * rate)
			if due <= done {
				continue
			}
			n := due - done
			// After a stall, do not burst more than a buffer's worth.
			if lim := uint64(s.opts.ReplayBuffer); n > lim {
				n = lim
			}
			done = due
			ss.generate(int(n), now)
		}
	}
}

// expire ends ss if it has been detached for SessionTTL; it reports
// whether the session is over.
func (s *Server) expire(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.mu.Lock()
	expired := !ss.ended && ss.conn == nil && time.Since(ss.detachedAt) >= s.opts.SessionTTL
	ended, seq := ss.ended, ss.seq
	if !expired && !ended {
		ss.kickLocked() // re-arm with the time left
	}
	ss.mu.Unlock()
	if expired {
		s.opts.Logger.Info("session expired", "shard", ss.shardID, "session", ss.id, "seq", seq)
		ss.end("expired")
		s.changed.notify()
	}
	return expired || ended
}
