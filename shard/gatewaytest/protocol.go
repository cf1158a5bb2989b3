package gatewaytest

import (
	"fmt"
	"slices"
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

// countLocked makes c one of the live connections of shard, and of shard in
// generation total.
func (s *Server) countLocked(c *conn, shard, total int) {
	if c.counted && c.shard == shard && c.total == total {
		return
	}
	s.uncountLocked(c)
	c.shard, c.total, c.counted = shard, total, true
	st := s.cnt.shard(shard)
	st.Live++
	st.MaxLive = max(st.MaxLive, st.Live)
	gs := s.cnt.gen(total).shard(shard)
	gs.Live++
	gs.MaxLive = max(gs.MaxLive, gs.Live)
}

func (s *Server) uncountLocked(c *conn) {
	if c.counted {
		s.cnt.shard(c.shard).Live--
		s.cnt.gen(c.total).shard(c.shard).Live--
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
// cuts the TCP connection (kill) after unlocking.
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
	arrived := s.arrival(c)
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
		s.identifyLocked(c, f.Identify, arrived)
	case opResume:
		s.resumeLocked(c, f.Resume)
	default:
		// Presence, voice state, soundboard and channel-info requests are
		// accepted but not answered: the fake has no presences, voice or
		// sounds. Member requests are answered with chunks (members.go);
		// their d is decoded from b there, as parseClientFrame only checks
		// that it is an object.
		if c.sess == nil {
			s.closeConnLocked(c, closeNotAuthenticated, closeReasons[closeNotAuthenticated])
			return
		}
		if c.shard >= 0 {
			st := s.cnt.shard(c.shard)
			if st.Commands == nil {
				st.Commands = map[int]int{}
			}
			st.Commands[f.Op]++
			st.LastCommand = slices.Clone(b)
		}
		if f.Op == opRequestGuildMembers {
			s.requestGuildMembersLocked(c, b)
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
