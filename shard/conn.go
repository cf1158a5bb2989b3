package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// outcome is how one connection ended and what the shard does next.
type outcome struct {
	action       closeAction
	code         int // the gateway's close code, or -1
	reason       string
	err          error
	stop         bool // Stop was called
	progress     bool // worth reconnecting at once rather than after a backoff
	invalidDelay bool // INVALID_SESSION(false): wait 1-5 s before identifying
}

// connection is one websocket of a shard.
type connection struct {
	s       *Shard
	ws      *websocket.Conn
	raw     *rawConnSlot
	resumed bool // this connection RESUMEs rather than IDENTIFYs

	limiter     atomic.Pointer[sendLimiter]
	established atomic.Bool

	// The heartbeat runs on a timer rather than a goroutine of its own, so that an
	// idle shard has one goroutine (its read loop) and one stack. beats counts the
	// timer's pending and running callbacks and the beats the gateway asked for.
	beatMu      sync.Mutex
	beatTimer   *time.Timer
	beatStopped bool
	beatAsked   atomic.Bool // an op 1 beat is on its way
	beats       sync.WaitGroup

	reads atomic.Uint64 // payloads read so far

	mu            sync.Mutex
	lastBeat      time.Time
	acked         bool
	readsAtBeat   uint64 // reads when lastBeat was sent
	lateAcks      int    // consecutive beats whose ACK was late while payloads arrived
	inDispatch    bool
	dispatchSince time.Time     // when the current Dispatch call began
	dispatchTime  time.Duration // spent in Dispatch since the last heartbeat
	ended         *outcome      // set by whoever decided the end: op 7, op 9, zombie
	closeOnce     sync.Once
}

func (c *connection) isEstablished() bool { return c.established.Load() }

// end records why the connection is ending; the first reason wins.
func (c *connection) end(o outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended == nil {
		c.ended = &o
	}
}

func (c *connection) endedBy() *outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

// hardClose drops the TCP connection: no close frame, no waiting. The session stays
// resumable, as after any close other than 1000/1001.
func (c *connection) hardClose() {
	if conn := c.raw.get(); conn != nil {
		conn.Close()
	}
	c.ws.CloseNow()
}

// closeGracefully sends a close frame with code and waits up to CloseTimeout for the
// gateway's answer before dropping the connection.
func (c *connection) closeGracefully(code int, reason string) {
	c.closeOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.ws.Close(websocket.StatusCode(code), reason)
		}()
		t := time.NewTimer(c.s.cfg.CloseTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			c.hardClose()
			<-done
		}
	})
}

// send writes one payload. Priority payloads (heartbeat, IDENTIFY, RESUME) skip the
// command queue of the send limiter but are counted in its window.
func (c *connection) send(ctx context.Context, payload []byte, priority bool) error {
	if len(payload) > MaxPayloadSize {
		return fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(payload))
	}
	l := c.limiter.Load()
	if l == nil {
		return ErrNotConnected
	}
	if priority {
		l.record()
	} else if err := l.wait(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.WriteTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, payload); err != nil {
		return fmt.Errorf("write gateway payload: %w", err)
	}
	return nil
}

func marshalPayload(op int, d any) ([]byte, error) {
	p, err := json.Marshal(struct {
		Op int `json:"op"`
		D  any `json:"d"`
	}{op, d})
	if err != nil {
		return nil, err
	}
	if len(p) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(p))
	}
	return p, nil
}

// runConn runs one connection from dial to close.
func (s *Shard) runConn(ctx context.Context) outcome {
	s.setState(StateConnecting, nil)
	target, resuming, err := s.connectURL(ctx)
	if err != nil {
		return outcome{action: actionResume, code: -1, reason: "gateway url unavailable", err: err}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	slot := &rawConnSlot{}
	dctx, dcancel := context.WithTimeout(context.WithValue(ctx, rawConnKey{}, slot), s.cfg.HandshakeTimeout)
	ws, _, err := websocket.Dial(dctx, target, &websocket.DialOptions{HTTPClient: s.ws})
	dcancel()
	if err != nil {
		if resuming {
			// The docs: when a resume connection cannot be made, use the cached
			// gateway URL; the session may still be resumable there.
			s.mu.Lock()
			s.resumeDead = true
			s.mu.Unlock()
		}
		return outcome{action: actionResume, code: -1, reason: "dial failed", err: fmt.Errorf("dial gateway: %w", err)}
	}
	ws.SetReadLimit(s.cfg.MaxMessageSize)
	c := &connection{s: s, ws: ws, raw: slot, resumed: resuming}

	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		c.hardClose()
		return outcome{stop: true}
	}
	s.conn = c
	s.counters.Connects++
	s.mu.Unlock()

	var wg sync.WaitGroup
	defer func() {
		cancel()
		c.hardClose()
		c.stopHeartbeat()
		c.beats.Wait()
		wg.Wait()
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
	}()

	// Reads run without a context (see noCancel): the connection's end drops it.
	stopOnCancel := context.AfterFunc(ctx, c.hardClose)
	defer stopOnCancel()

	pr, err := newPayloadReader(ws, s.cfg.Compression, &s.bytes)
	if err != nil {
		return outcome{action: actionResume, code: -1, reason: "decoder", err: err}
	}
	defer pr.close()

	helloTimer := time.AfterFunc(s.cfg.HelloTimeout, func() {
		c.end(outcome{action: actionResume, code: -1, reason: "no HELLO from the gateway",
			err: fmt.Errorf("no HELLO within %v", s.cfg.HelloTimeout)})
		c.hardClose()
	})
	defer helloTimer.Stop()

	readErr := c.readLoop(ctx, pr, func(interval time.Duration) {
		helloTimer.Stop()
		c.limiter.Store(newSendLimiter(s.cfg.SendLimit, s.cfg.SendWindow, interval))
		c.startHeartbeat(ctx, interval)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.login(ctx)
		}()
	})
	return c.outcome(ctx, readErr)
}

// outcome classifies the end of the connection once the read loop returned.
func (c *connection) outcome(ctx context.Context, readErr error) outcome {
	established := c.isEstablished()
	if c.s.isStopping() {
		return outcome{stop: true}
	}
	if ctx.Err() != nil {
		return outcome{action: actionResume, code: -1, reason: "context ended", err: ctx.Err()}
	}
	if o := c.endedBy(); o != nil {
		if o.progress {
			// op 7 before the session is up must not become a tight reconnect loop.
			o.progress = established || o.invalidDelay
		}
		return *o
	}
	code := int(websocket.CloseStatus(readErr))
	if code == -1 {
		return outcome{action: actionResume, code: -1, reason: "connection lost", err: readErr, progress: established}
	}
	rule := closeRuleFor(code)
	return outcome{
		action:   rule.action,
		code:     code,
		reason:   fmt.Sprintf("gateway closed with %d: %s", code, rule.cause),
		err:      readErr,
		progress: established,
	}
}

// readLoop reads payloads until the connection ends. onHello runs once, on HELLO.
func (c *connection) readLoop(ctx context.Context, pr payloadReader, onHello func(time.Duration)) error {
	s := c.s
	var env envelope
	hello := false
	for {
		if err := pr.next(&env); err != nil {
			return err
		}
		c.reads.Add(1)
		switch env.Op {
		case OpDispatch:
			if err := c.dispatch(ctx, &env); err != nil {
				return err
			}
		case OpHeartbeat:
			// The gateway wants a heartbeat now; it does not reset the interval.
			c.beatNow(ctx)
		case OpHeartbeatACK:
			c.mu.Lock()
			c.acked = true
			rtt := time.Since(c.lastBeat)
			c.mu.Unlock()
			s.mu.Lock()
			s.latency = rtt
			s.counters.HeartbeatACKs++
			s.mu.Unlock()
			if f := s.cfg.ObserveLatency; f != nil {
				f(rtt)
			}
		case OpHello:
			if hello {
				continue
			}
			var d struct {
				HeartbeatInterval int64 `json:"heartbeat_interval"`
			}
			if err := json.Unmarshal(env.D, &d); err != nil || d.HeartbeatInterval <= 0 {
				return fmt.Errorf("bad HELLO %.100s: %v", env.D, err)
			}
			hello = true
			onHello(time.Duration(d.HeartbeatInterval) * time.Millisecond)
		case OpReconnect:
			c.end(outcome{action: actionResume, code: -1, reason: "gateway asked to reconnect (op 7)", progress: true})
			c.closeGracefully(closeReconnect, "reconnect")
			return nil
		case OpInvalidSession:
			var resumable bool
			_ = json.Unmarshal(env.D, &resumable) // anything but true means not resumable
			if resumable {
				c.end(outcome{action: actionResume, code: -1, reason: "invalid session, resumable (op 9 true)", progress: true})
			} else {
				c.end(outcome{action: actionIdentify, code: -1, reason: "invalid session (op 9 false)", progress: true, invalidDelay: true})
			}
			c.closeGracefully(closeReconnect, "invalid session")
			return nil
		default:
			s.log.Debug("ignoring unknown gateway opcode", "op", env.Op)
		}
	}
}

// dispatch hands one dispatch to the Dispatcher and only then advances seq, so the
// resume state never names an event the handler did not accept.
func (c *connection) dispatch(ctx context.Context, env *envelope) error {
	s := c.s
	switch env.T {
	case "READY":
		var d struct {
			SessionID        string `json:"session_id"`
			ResumeGatewayURL string `json:"resume_gateway_url"`
		}
		if err := json.Unmarshal(env.D, &d); err != nil || d.SessionID == "" {
			return fmt.Errorf("bad READY: %v", err)
		}
		s.mu.Lock()
		s.resume = ResumeState{SessionID: d.SessionID, ResumeURL: d.ResumeGatewayURL}
		s.mu.Unlock()
		c.markEstablished()
		s.log.Info("shard ready", "session", d.SessionID)
		s.observe(LifecycleReady, "", nil)
	case "RESUMED":
		c.markEstablished()
		s.log.Info("shard resumed", "seq", env.S)
		s.observe(LifecycleResumed, "", nil)
	}
	s.mu.Lock()
	ev := Event{ShardID: s.cfg.ShardID, SessionID: s.resume.SessionID, Seq: env.S, Type: env.T, Data: env.D}
	s.mu.Unlock()

	c.mu.Lock()
	c.inDispatch, c.dispatchSince = true, time.Now()
	c.mu.Unlock()
	err := s.cfg.Dispatch.Dispatch(ctx, ev)
	c.mu.Lock()
	c.inDispatch = false
	c.dispatchTime += time.Since(c.dispatchSince)
	c.mu.Unlock()
	if err != nil {
		return err
	}

	now := time.Now()
	s.mu.Lock()
	if env.S > s.resume.Seq {
		s.resume.Seq = env.S
	}
	s.lastEvent = now
	s.counters.Events++
	s.mu.Unlock()
	return nil
}

// markEstablished records that the session is up (READY or RESUMED): the resume URL
// worked again, and the supervisor's backoff may reset.
func (c *connection) markEstablished() {
	s := c.s
	s.mu.Lock()
	s.resumeDead = false
	s.state = StateReady
	s.established++
	s.mu.Unlock()
	c.established.Store(true)
}

// startHeartbeat sends a heartbeat every interval, the first after a random
// fraction of it (so that a fleet reconnecting together does not beat in lockstep),
// and declares the connection a zombie when a beat went unacknowledged until the next
// one. Each beat runs as a timer's callback.
func (c *connection) startHeartbeat(ctx context.Context, interval time.Duration) {
	c.beatMu.Lock()
	defer c.beatMu.Unlock()
	if c.beatStopped || c.beatTimer != nil {
		return
	}
	c.beats.Add(1)
	c.beatTimer = time.AfterFunc(time.Duration(rand.Int64N(int64(interval))), func() { c.beat(ctx, interval) })
}

// beat is one tick of the heartbeat timer.
func (c *connection) beat(ctx context.Context, interval time.Duration) {
	defer c.beats.Done()
	if ctx.Err() != nil {
		return
	}
	if c.zombie(interval) {
		c.s.mu.Lock()
		c.s.counters.Zombies++
		c.s.mu.Unlock()
		c.end(outcome{action: actionResume, code: -1, reason: "zombie connection: heartbeat not acknowledged", progress: true})
		// A zombie does not answer a close frame; waiting for one only delays
		// the resume. Dropping TCP leaves the session resumable.
		c.hardClose()
		return
	}
	tick := time.Now()
	if err := c.sendHeartbeat(ctx); err != nil {
		return // the read loop sees the broken connection
	}
	// The next tick is interval after this one; the write's own time is not added.
	c.beatMu.Lock()
	defer c.beatMu.Unlock()
	if !c.beatStopped {
		c.beats.Add(1)
		c.beatTimer.Reset(max(interval-time.Since(tick), 0))
	}
}

// beatNow sends a heartbeat at once, as the gateway asked with op 1, unless one it
// asked for is still being written. Before HELLO there is nothing to beat on yet.
func (c *connection) beatNow(ctx context.Context) {
	c.beatMu.Lock()
	defer c.beatMu.Unlock()
	if c.beatStopped || c.beatTimer == nil || !c.beatAsked.CompareAndSwap(false, true) {
		return
	}
	c.beats.Add(1)
	go func() {
		defer c.beats.Done()
		defer c.beatAsked.Store(false)
		_ = c.sendHeartbeat(ctx) // an error: the read loop sees the broken connection
	}()
}

// stopHeartbeat ends the heartbeat; beats.Wait then waits for a beat under way.
func (c *connection) stopHeartbeat() {
	c.beatMu.Lock()
	defer c.beatMu.Unlock()
	c.beatStopped = true
	if c.beatTimer != nil && c.beatTimer.Stop() {
		c.beats.Done() // the pending callback will not run
	}
}

// maxLateAcks bounds how many beats in a row may go unacknowledged while payloads
// still arrive: a gateway that sends but never answers heartbeats is not healthy.
const maxLateAcks = 4

// zombie reports whether the last heartbeat went unacknowledged for a reason that is
// the connection's fault. The gateway queues its ACK behind the dispatches already
// on their way, so an ACK can be late without anything being wrong:
//   - a slow handler stops the read loop (back-pressure) and the ACK waits unread:
//     if the read loop spent half the interval or more inside Dispatch, the missing
//     ACK is forgiven;
//   - a busy or starved process reads a long RESUME replay slower than it arrives:
//     while payloads keep arriving the connection is alive, and treating it as a
//     zombie would only resume into a longer replay, again and again.
//
// A dead connection delivers nothing, and that is what this catches.
func (c *connection) zombie(interval time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	blocked := c.dispatchTime
	if c.inDispatch {
		blocked += time.Since(c.dispatchSince)
	}
	c.dispatchTime = 0
	if c.lastBeat.IsZero() || c.acked {
		c.lateAcks = 0
		return false
	}
	if blocked >= interval/2 {
		return false
	}
	if c.reads.Load() != c.readsAtBeat && c.lateAcks < maxLateAcks {
		c.lateAcks++
		return false
	}
	return true
}

func (c *connection) sendHeartbeat(ctx context.Context) error {
	seq := c.s.ResumeState().Seq
	var d any
	if seq > 0 {
		d = seq
	}
	payload, err := marshalPayload(OpHeartbeat, d)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.lastBeat, c.acked = time.Now(), false
	c.readsAtBeat = c.reads.Load()
	c.mu.Unlock()
	if err := c.send(ctx, payload, true); err != nil {
		return err
	}
	c.s.mu.Lock()
	c.s.counters.HeartbeatsSent++
	c.s.mu.Unlock()
	return nil
}

type identifyData struct {
	Token          string          `json:"token"`
	Properties     Properties      `json:"properties"`
	LargeThreshold int             `json:"large_threshold"`
	Shard          [2]int          `json:"shard"`
	Presence       json.RawMessage `json:"presence,omitempty"`
	Intents        uint64          `json:"intents"`
	Compress       bool            `json:"compress,omitempty"` // payload compression
}

type resumeData struct {
	Token     string `json:"token"`
	SessionID string `json:"session_id"`
	Seq       int64  `json:"seq"`
}

// login sends RESUME at once, or IDENTIFY when the gate allows it.
func (c *connection) login(ctx context.Context) {
	s := c.s
	var payload []byte
	var err error
	// permitted asks Config.Permit right before the write: the gate's wait can be
	// long, and the lease or the ownership may have ended during it.
	permitted := func() bool {
		if s.cfg.Permit == nil {
			return true
		}
		err := s.cfg.Permit()
		if err == nil {
			return true
		}
		c.end(outcome{action: actionResume, code: -1, reason: "login not permitted",
			err: fmt.Errorf("%w: %v", ErrNotPermitted, err)})
		c.closeGracefully(CloseResumable, "discluster: login not permitted")
		return false
	}
	if c.resumed {
		if !permitted() {
			return
		}
		rs := s.ResumeState()
		s.setState(StateResuming, nil)
		s.observe(LifecycleResuming, "", nil)
		payload, err = marshalPayload(OpResume, resumeData{Token: s.cfg.Token.Reveal(), SessionID: rs.SessionID, Seq: rs.Seq})
		s.mu.Lock()
		s.counters.Resumes++
		s.mu.Unlock()
	} else {
		s.setState(StateIdentifying, nil)
		s.observe(LifecycleIdentifying, "", nil)
		if err := s.cfg.Gate.Wait(ctx, s.cfg.ShardID); err != nil {
			return
		}
		if r, ok := s.cfg.Gate.(SendReporter); ok {
			defer r.IdentifySent(s.cfg.ShardID) // after the write below, whatever came of it
		}
		if !permitted() {
			return
		}
		payload, err = marshalPayload(OpIdentify, identifyData{
			Token:          s.cfg.Token.Reveal(),
			Properties:     s.cfg.Properties,
			LargeThreshold: s.cfg.LargeThreshold,
			Shard:          [2]int{s.cfg.ShardID, s.cfg.ShardCount},
			Presence:       s.cfg.Presence,
			Intents:        s.cfg.Intents,
			Compress:       s.cfg.Compression == CompressionPayload,
		})
		s.mu.Lock()
		s.resume = ResumeState{} // a new session starts; the old one is gone
		s.counters.Identifies++
		s.mu.Unlock()
	}
	if err != nil {
		// Only an oversized IDENTIFY (a huge presence) gets here: no retry can fix it.
		c.end(outcome{action: actionFatal, code: -1, reason: fmt.Sprintf("cannot log in: %v", err), err: err})
		c.hardClose()
		return
	}
	if err := c.send(ctx, payload, true); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Debug("login write failed", "err", err)
	}
}
