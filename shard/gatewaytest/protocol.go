package gatewaytest

import (
	"fmt"
	"time"

	"github.com/coder/websocket"
)

// endsSession reports whether a close the fake sends with code leaves the
// session unresumable. These are the codes whose meaning is "this session
// cannot continue": bad token, invalid seq, session timed out (start a new
// one), and the fatal shard, version and intent codes. Every other code
// keeps the session resumable, as the docs' "reconnect" column says.
func endsSession(code int) bool {
	switch code {
	case closeAuthenticationFailed, closeInvalidSeq, closeSessionTimedOut:
		return true
	}
	return code >= closeInvalidShard && code <= closeDisallowedIntents
}

// closeReasons are Discord's close reasons, sent in the close frame.
var closeReasons = map[int]string{
	closeUnknownError:         "Unknown error.",
	closeUnknownOpcode:        "Unknown opcode.",
	closeDecodeError:          "Error while decoding payload.",
	closeNotAuthenticated:     "Not authenticated.",
	closeAuthenticationFailed: "Authentication failed.",
	closeAlreadyAuthenticated: "Already authenticated.",
	closeInvalidSeq:           "Invalid seq.",
	closeRateLimited:          "Rate limited.",
	closeSessionTimedOut:      "Session timed out.",
	closeInvalidShard:         "Invalid shard.",
	closeShardingRequired:     "Sharding required.",
	closeInvalidAPIVersion:    "Invalid API version.",
	closeInvalidIntents:       "Invalid intent(s).",
	closeDisallowedIntents:    "Disallowed intent(s).",
}

// countLocked makes c one of shard's live connections.
func (s *Server) countLocked(c *conn, shard int) {
	if c.counted && c.shard == shard {
		return
	}
	s.uncountLocked(c)
	c.shard, c.counted = shard, true
	st := s.cnt.shard(shard)
	st.Live++
	st.MaxLive = max(st.MaxLive, st.Live)
}

func (s *Server) uncountLocked(c *conn) {
	if c.counted {
		s.cnt.shard(c.shard).Live--
		c.counted = false
	}
}

// releaseLocked marks c as ended by the fake: it stops counting as live
// at once (so a client that reconnects the moment it sees the close is
// never counted twice) and its session is detached, or ended if endWhy is
// set.
func (s *Server) releaseLocked(c *conn, endWhy string) {
	c.closing = true
	s.uncountLocked(c)
	if sess := c.sess; sess != nil {
		c.sess = nil
		if endWhy != "" {
			sess.end(endWhy)
		} else {
			sess.detach(c)
		}
	}
}

// closeConnLocked sends close code after the payloads already queued.
func (s *Server) closeConnLocked(c *conn, code int, reason string) {
	if c.closing {
		return
	}
	why := ""
	if endsSession(code) {
		why = fmt.Sprintf("closed by the fake with %d", code)
	}
	s.releaseLocked(c, why)
	c.closeSent = true
	s.cnt.closes[code]++
	c.log.Info("closing connection", "shard", c.shard, "code", code, "reason", reason)
	c.requestClose(code, reason)
}

// dropConnLocked marks c as dropped without a close frame; the caller
// cuts the TCP connection (CloseNow) after unlocking.
func (s *Server) dropConnLocked(c *conn) {
	if c.closing {
		return
	}
	s.releaseLocked(c, "")
	c.qmu.Lock()
	c.qclosed = true
	c.qmu.Unlock()
	c.log.Info("dropping connection", "shard", c.shard)
}

// connEnded settles a connection whose reading is over: the client closed
// it, dropped it, or the fake did.
func (s *Server) connEnded(c *conn, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed.notify()
	if c.closing {
		return // the fake ended it and settled everything then
	}
	code := int(websocket.CloseStatus(err))
	switch {
	case c.overflowed.Load():
		s.cnt.slowDrops++
		s.releaseLocked(c, "")
	case code == -1:
		s.cnt.clientDrops++
		s.releaseLocked(c, "")
	case code == int(websocket.StatusNormalClosure) || code == int(websocket.StatusGoingAway):
		// Discord: closing with 1000 or 1001 invalidates the session.
		s.cnt.clientCloses[code]++
		s.releaseLocked(c, fmt.Sprintf("client closed with %d", code))
	default:
		s.cnt.clientCloses[code]++
		s.releaseLocked(c, "")
	}
	c.log.Debug("client ended connection", "shard", c.shard, "code", code)
}

func (s *Server) heartbeatTimedOut(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.closing {
		return
	}
	s.cnt.hbTimeouts++
	s.closeConnLocked(c, closeHeartbeatTimeout, "Heartbeat timed out.")
	s.changed.notify()
}

// handlePayload applies one client payload to the connection.
func (s *Server) handlePayload(c *conn, b []byte) {
	limited := c.rateLimited(time.Now())
	f, cerr := parseClientFrame(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed.notify()
	if c.closing || s.closed {
		return
	}
	switch {
	case limited:
		s.closeConnLocked(c, closeRateLimited, closeReasons[closeRateLimited])
		return
	case cerr != nil:
		s.closeConnLocked(c, cerr.Code, cerr.Reason)
		return
	}
	switch f.Op {
	case opHeartbeat:
		s.heartbeatLocked(c, f.Heartbeat)
	case opIdentify:
		s.identifyLocked(c, f.Identify)
	case opResume:
		s.resumeLocked(c, f.Resume)
	default:
		// Presence, voice state, member and channel-info requests are
		// accepted but not answered: the fake has no members or voice.
		if c.sess == nil {
			s.closeConnLocked(c, closeNotAuthenticated, closeReasons[closeNotAuthenticated])
		}
	}
}

func (s *Server) heartbeatLocked(c *conn, seq *int64) {
	c.lastBeat.Store(time.Now().UnixNano())
	s.cnt.heartbeats++
	if c.shard >= 0 {
		st := s.cnt.shard(c.shard)
		st.Heartbeats++
		st.LastHeartbeat = nil
		if seq != nil {
			v := *seq
			st.LastHeartbeat = &v
		}
	}
	if c.hbRequested {
		c.hbRequested = false
		s.cnt.hbAnswered++
	}
	if s.acks && c.sendRaw(payloadHeartbeatACK) {
		s.cnt.acks++
	}
}

func (s *Server) sendInvalidLocked(c *conn, resumable bool) {
	p := payloadInvalidFalse
	if resumable {
		p = payloadInvalidTrue
	}
	if c.sendRaw(p) {
		s.cnt.invalidSent++
	}
}

func (s *Server) identifyLocked(c *conn, id *identifyData) {
	if c.sess != nil {
		s.closeConnLocked(c, closeAlreadyAuthenticated, closeReasons[closeAlreadyAuthenticated])
		return
	}
	if !s.tokenValid || id.Token != s.opts.Token {
		s.closeConnLocked(c, closeAuthenticationFailed, closeReasons[closeAuthenticationFailed])
		return
	}
	shardID, total, cerr := id.shardOf()
	if cerr != nil {
		s.closeConnLocked(c, cerr.Code, cerr.Reason)
		return
	}
	s.countLocked(c, shardID)
	guilds := guildCount(s.opts.Guilds, shardID, total)
	if guilds > s.opts.MaxGuildsPerShard {
		s.closeConnLocked(c, closeShardingRequired, closeReasons[closeShardingRequired])
		return
	}
	if cerr := checkIntents(id.Intents, s.opts.DenyPrivilegedIntents); cerr != nil {
		s.closeConnLocked(c, cerr.Code, cerr.Reason)
		return
	}
	now := s.now()
	bucket := shardID % s.opts.MaxConcurrency
	if last, ok := s.lastIdentify[bucket]; ok && now.Sub(last) < s.opts.IdentifyWindow {
		// Discord answers an IDENTIFY over max_concurrency with op 9 and
		// keeps the socket; the client may identify again later.
		s.cnt.identifyViolations++
		c.log.Warn("identify too early for its bucket", "shard", shardID, "bucket", bucket, "since_last", now.Sub(last))
		s.sendInvalidLocked(c, false)
		return
	}
	s.refillStartsLocked()
	if s.startsRemaining == 0 {
		s.tokenResetLocked()
		return
	}
	s.startsRemaining--
	s.lastIdentify[bucket] = now
	s.cnt.identifies++
	s.cnt.perBucket[bucket]++
	s.cnt.shard(shardID).Identifies++
	s.startSessionLocked(c, id, shardID, total, guilds)
}

// tokenResetLocked is what Discord does when a bot runs out of session
// starts: it ends every session, resets the token and mails the owner.
func (s *Server) tokenResetLocked() {
	s.opts.Logger.Warn("session start limit exhausted: resetting the token")
	s.tokenValid = false
	s.cnt.tokenResets++
	for c := range s.conns {
		s.closeConnLocked(c, closeAuthenticationFailed, closeReasons[closeAuthenticationFailed])
	}
	for _, sess := range s.sessions {
		sess.end("token reset")
	}
}

func (s *Server) startSessionLocked(c *conn, id *identifyData, shardID, total, guilds int) {
	intents := *id.Intents
	var msg *dispatchTemplate
	dm := false
	content := 0
	if intents&intentMessageContent != 0 {
		content = 1
	}
	switch {
	case guilds > 0 && intents&intentGuildMessages != 0:
		msg = s.payloads.message[0][content]
	case shardID == 0 && intents&intentDirectMessages != 0:
		// Events without a guild_id go to shard 0 only.
		msg, dm = s.payloads.message[1][content], true
	}
	s.nextSessionIdx++
	ss := &session{
		srv:       s,
		id:        newSessionID(),
		idx:       s.nextSessionIdx,
		shardID:   shardID,
		numShards: total,
		guilds:    guilds,
		msgTmpl:   msg,
		dm:        dm,
		stop:      make(chan struct{}),
		kick:      make(chan struct{}, 1),
		conn:      c,
	}
	s.sessions[ss.id] = ss
	c.sess = ss

	f := readyFields{v: c.apiVersion, sessionID: ss.id, resumeURL: s.ResumeURL()}
	if id.Shard != nil {
		f.shard = []int{shardID, total}
	}
	f.guildIDs = make([]uint64, guilds)
	for j := range guilds {
		f.guildIDs[j] = guildID(shardID + j*total)
	}
	ss.mu.Lock()
	ss.seq = 1
	ready, err := s.payloads.renderReady(ss.seq, f)
	if err != nil {
		// Only a broken embedded ready.json gets here; tests load it.
		ss.mu.Unlock()
		s.closeConnLocked(c, closeUnknownError, closeReasons[closeUnknownError])
		return
	}
	frames := make([]outFrame, 0, guilds+1)
	ss.pushLocked(event{seq: ss.seq, raw: ready}, &frames)
	for j := range guilds {
		i := shardID + j*total
		ss.seq++
		ss.pushLocked(event{seq: ss.seq, tmpl: s.payloads.guildCreate,
			args: renderArgs{guildID: guildID(i), guildIndex: uint64(i)}}, &frames)
	}
	c.enqueue(frames...)
	ss.mu.Unlock()

	s.wg.Add(1) // s.closed is false (checked under s.mu), so Close has not begun waiting
	go ss.run()
	c.log.Info("session started", "shard", shardID, "total", total, "guilds", guilds)
}

func (s *Server) resumeLocked(c *conn, r *resumeData) {
	if c.sess != nil {
		s.closeConnLocked(c, closeAlreadyAuthenticated, closeReasons[closeAlreadyAuthenticated])
		return
	}
	if !s.tokenValid || r.Token != s.opts.Token {
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
		ss.mu.Unlock()
		fail("session " + ss.endReason)
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
	s.countLocked(c, ss.shardID)
	ss.conn, c.sess = c, ss
	ss.resumes++
	ss.kickLocked()
	ss.seq++
	resumed := event{seq: ss.seq, raw: rawDispatch("RESUMED", ss.seq, resumedBody)}
	ss.pushLocked(resumed, &replay)
	c.enqueue(replay...)
	seq := ss.seq
	ss.mu.Unlock()
	s.cnt.resumes++
	s.cnt.shard(ss.shardID).Resumes++
	c.log.Info("session resumed", "shard", ss.shardID, "from_seq", *r.Seq, "replayed", len(replay)-1, "seq", seq)
}
