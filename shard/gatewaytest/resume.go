package gatewaytest

import (
	"fmt"
	"strings"
	"time"
)

// resumeLocked re-attaches a session: replay after seq, RESUMED, then live
// events, all queued under the session's lock. Anything it cannot serve
// exactly gets op 9 false.
func (s *Server) resumeLocked(c *conn, r *resumeData) {
	if c.sess != nil {
		s.closeConnLocked(c, closeAlreadyAuthenticated, closeReasons[closeAlreadyAuthenticated])
		return
	}
	// The gateway takes the token with or without the "Bot " prefix.
	if !s.tokenOKLocked(strings.TrimPrefix(r.Token, "Bot ")) {
		s.closeConnLocked(c, closeAuthenticationFailed, closeReasons[closeAuthenticationFailed])
		return
	}
	if !c.onResumeURL {
		s.cnt.resumesOffURL++
	}
	fail := func(why string) {
		s.cnt.resumesFailed++
		c.log.Info("resume refused", "reason", why)
		s.sendInvalidLocked(c, false)
	}
	ss := s.sessions[r.SessionID]
	if ss == nil {
		fail("unknown session")
		return
	}
	ss.mu.Lock()
	switch {
	case ss.ended:
		why := ss.endReason
		ss.mu.Unlock()
		fail("session ended: " + why)
		return
	case ss.conn == nil && time.Since(ss.detachedAt) >= s.opts.SessionTTL:
		// The expiry timer may not have fired yet; the TTL is the rule.
		ss.mu.Unlock()
		ss.end("expired")
		fail("session expired")
		return
	case r.Seq == nil:
		ss.mu.Unlock()
		fail("seq is null")
		return
	}
	replay, ok := ss.replayLocked(*r.Seq)
	if !ok {
		first, last := ss.firstSeqLocked(), ss.seq
		ss.mu.Unlock()
		fail(fmt.Sprintf("seq %d outside the replay buffer [%d, %d]", *r.Seq, first-1, last))
		return
	}
	if old := ss.conn; old != nil {
		// The session moves: the old connection stops counting before the
		// new one counts, and is closed with a code that tells its client
		// to start over rather than resume it back.
		old.sess = nil
		ss.conn = nil
		s.closeConnLocked(old, closeSessionTakenOver, "Session resumed on another connection.")
	}
	s.countLocked(c, ss.shardID, ss.numShards)
	ss.conn, c.sess = c, ss
	ss.resumes++
	ss.resumed = time.Now()
	ss.kickLocked()
	ss.seq++
	resumed := event{seq: ss.seq, raw: rawDispatch("RESUMED", ss.seq, resumedBody)}
	ss.pushLocked(resumed, &replay)
	c.enqueue(replay...)
	seq := ss.seq
	ss.mu.Unlock()
	s.cnt.resumes++
	s.cnt.shard(ss.shardID).Resumes++
	gen := s.cnt.gen(ss.numShards)
	gen.resumes++
	gen.shard(ss.shardID).Resumes++
	c.log.Info("session resumed", "shard", ss.shardID, "from_seq", *r.Seq, "replayed", len(replay)-1, "seq", seq)
}
