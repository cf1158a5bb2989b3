package gatewaytest

import (
	"strings"
	"time"
)

// identifyLocked applies Discord's IDENTIFY rules in the order a real
// gateway can: authentication, shard pair, shard size, intents, then the
// identify bucket and the session start budget. The bucket is judged by arrived,
// the kernel's arrival stamp of the frame (Linux) or the time it was read: time
// the fake spent getting the CPU or the server's lock is its own delay, not the
// client's. An IDENTIFY too soon after a bucket's previous one whose stamp was not
// exact (the fake read it late, behind later bytes, and may have dated it by
// them) is not called a violation, which the fake cannot tell, but counted apart
// (Stats.IdentifyUnverified) and let through.
func (s *Server) identifyLocked(c *conn, id *identifyData, arrived arrival) {
	if c.sess != nil {
		s.closeConnLocked(c, closeAlreadyAuthenticated, closeReasons[closeAlreadyAuthenticated])
		return
	}
	// The gateway takes the token with or without the "Bot " prefix.
	if !s.tokenOKLocked(strings.TrimPrefix(id.Token, "Bot ")) {
		s.closeConnLocked(c, closeAuthenticationFailed, closeReasons[closeAuthenticationFailed])
		return
	}
	shardID, total, cerr := id.shardOf()
	if cerr != nil {
		s.closeConnLocked(c, cerr.Code, cerr.Reason)
		return
	}
	s.countLocked(c, shardID, total)
	// Counted with this IDENTIFY's num_shards: the limit holds per generation.
	guilds := guildCount(s.guilds, shardID, total)
	if guilds > s.opts.MaxGuildsPerShard {
		s.closeConnLocked(c, closeShardingRequired, closeReasons[closeShardingRequired])
		return
	}
	if cerr := checkIntents(id.Intents, s.opts.DenyPrivilegedIntents); cerr != nil {
		s.closeConnLocked(c, cerr.Code, cerr.Reason)
		return
	}
	now := arrived.at
	bucket := shardID % s.opts.MaxConcurrency
	if last, ok := s.lastIdentify[bucket]; ok && now.Sub(last.at) < s.opts.IdentifyWindow {
		if !last.exact {
			s.cnt.identifyUnverified++
			c.log.Warn("identify soon after its bucket's previous one, whose arrival is not known exactly (read late, behind later bytes): not judged",
				"shard", shardID, "bucket", bucket, "since_last_at_most", now.Sub(last.at))
		} else {
			// Discord answers an IDENTIFY over max_concurrency with op 9 and
			// keeps the socket; the client may identify again later.
			s.cnt.identifyViolations++
			c.log.Warn("identify too early for its bucket", "shard", shardID, "bucket", bucket, "since_last", now.Sub(last.at))
			s.sendInvalidLocked(c, false)
			return
		}
	}
	s.refillStartsLocked()
	if s.startsRemaining == 0 {
		s.tokenResetLocked()
		return
	}
	s.startsRemaining--
	s.lastIdentify[bucket] = arrived
	s.cnt.identifies++
	s.cnt.perBucket[bucket]++
	s.cnt.shard(shardID).Identifies++
	gen := s.cnt.gen(total)
	gen.identifies++
	gen.shard(shardID).Identifies++
	if id.Compress {
		// Payload compression; on a connection with transport compression Discord
		// ignores it (the two do not combine), and so does the fake.
		if pc, ok := c.enc.(payloadCompressor); ok {
			pc.compressPayloads()
		}
	}
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
	var msg, guildMsg *dispatchTemplate
	dm := false
	content := 0
	if intents&intentMessageContent != 0 {
		content = 1
	}
	if intents&intentGuildMessages != 0 {
		guildMsg = s.payloads.message[0][content]
	}
	switch {
	case guilds > 0 && guildMsg != nil:
		msg = guildMsg
	case shardID == 0 && intents&intentDirectMessages != 0:
		// Events without a guild_id go to shard 0 only.
		msg, dm = s.payloads.message[1][content], true
	}
	s.nextSessionIdx++
	ss := &session{
		srv:          s,
		id:           newSessionID(),
		identified:   time.Now(),
		idx:          s.nextSessionIdx,
		shardID:      shardID,
		numShards:    total,
		guilds:       guilds,
		intents:      intents,
		msgTmpl:      msg,
		guildMsgTmpl: guildMsg,
		dm:           dm,
		stop:         make(chan struct{}),
		kick:         make(chan struct{}, 1),
		conn:         c,
	}
	s.sessions[ss.id] = ss
	s.indexLocked(ss)
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
