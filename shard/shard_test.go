package shard_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// A shard identifies, receives READY and its GUILD_CREATEs, then every generated
// event, in order, under each transport compression.
func TestIdentifyReadyAndEvents(t *testing.T) {
	tests := []struct {
		name  string
		comp  shard.Compression
		split bool
	}{
		{"zlib-stream", shard.CompressionZlibStream, false},
		{"zlib-stream split frames", shard.CompressionZlibStream, true},
		{"zstd-stream", shard.CompressionZstdStream, false},
		{"uncompressed", shard.CompressionNone, false},
		{"payload compression", shard.CompressionPayload, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t, gatewaytest.Options{Shards: 2, Guilds: 6, EventRate: 200, SplitFrames: tt.split})
			rec := newRecorder()
			cfg := baseConfig(t, srv, rec, 1, 2)
			cfg.Compression = tt.comp
			sh := startShard(t, cfg)
			rec.waitFor(t, "50 events", func() bool { return len(rec.delivered(1)) >= 50 })
			if got := rec.count("READY"); got != 1 {
				t.Fatalf("READY delivered %d times", got)
			}
			if got := rec.count("GUILD_CREATE"); got != 3 {
				t.Fatalf("GUILD_CREATE delivered %d times, want the shard's 3 guilds", got)
			}
			rs, err := sh.Stop(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checkContiguous(t, rec.delivered(1), 1, rs.Seq)
			if rs.SessionID == "" || rs.ResumeURL != srv.ResumeURL() {
				t.Fatalf("resume state %+v: want a session id and the fake's resume URL %s", rs, srv.ResumeURL())
			}
			if info := sh.Info(); info.State != shard.StateStopped || info.Counters.Identifies != 1 {
				t.Fatalf("after Stop: %+v", info)
			}
			if got := srv.Stats().PayloadsCompressed; (got > 0) != (tt.comp == shard.CompressionPayload) {
				t.Fatalf("%d payloads sent payload-compressed with %s", got, tt.comp)
			}
			// Bytes in: the payloads at least hold every d delivered; what arrived on
			// the wire is that much when nothing is compressed, less when it is.
			ds := rec.dataBytes(1)
			c := sh.Info().Counters
			if c.PayloadBytes < ds || c.WireBytes == 0 {
				t.Fatalf("bytes in %d (wire %d), less than the %d bytes of d delivered", c.PayloadBytes, c.WireBytes, ds)
			}
			if compressed := tt.comp != shard.CompressionNone; compressed != (c.WireBytes < c.PayloadBytes) || !compressed && c.WireBytes != c.PayloadBytes {
				t.Fatalf("%s: %d bytes on the wire for %d bytes of payloads", tt.comp, c.WireBytes, c.PayloadBytes)
			}
		})
	}
}

// The gateway URL comes from GET /gateway/bot when none is configured.
func TestGatewayURLFromGatewayBot(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{Shards: 4, MaxConcurrency: 2})
	gb, err := shard.FetchGatewayBot(context.Background(), nil, srv.APIURL(), testToken)
	if err != nil {
		t.Fatal(err)
	}
	if gb.URL != srv.GatewayURL() || gb.Shards != 4 || gb.SessionStartLimit.MaxConcurrency != 2 || gb.SessionStartLimit.Remaining < 1 {
		t.Fatalf("gateway/bot = %+v", gb)
	}
	rec := newRecorder()
	cfg := baseConfig(t, srv, rec, 0, 4)
	cfg.GatewayURL = ""
	sh := startShard(t, cfg)
	rec.waitFor(t, "READY", stateIs(sh.Shard, shard.StateReady))
}

func TestGatewayBotBadTokenNeverEchoesIt(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{})
	const bad = "MTk4.bad-token-do-not-print"
	_, err := shard.FetchGatewayBot(context.Background(), nil, srv.APIURL(), bad)
	if !errors.Is(err, shard.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if strings.Contains(err.Error(), bad) {
		t.Fatalf("error contains the token: %v", err)
	}
}

// A dropped connection RESUMEs on resume_gateway_url and the replay fills the gap:
// every seq exactly once, in order, and no second IDENTIFY.
func TestDropThenResumeDeliversEverySeqOnce(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{EventRate: 300})
	rec := newRecorder()
	sh := startShard(t, baseConfig(t, srv, rec, 0, 1))
	for round := 1; round <= 3; round++ {
		rec.waitFor(t, "events", func() bool { return len(rec.delivered(0)) >= 30*round })
		if err := srv.DropShard(0); err != nil {
			t.Fatal(err)
		}
		awaitFake(t, srv, "resume", func(s gatewaytest.Stats) bool { return s.Resumes >= round })
		rec.waitFor(t, "ready after resume", stateIs(sh.Shard, shard.StateReady))
	}
	rec.waitFor(t, "events after the last resume", func() bool { return len(rec.delivered(0)) >= 120 })
	rs, err := sh.Stop(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkContiguous(t, rec.delivered(0), 1, rs.Seq)
	st := srv.Stats()
	if st.Identifies != 1 || st.ResumesOffResumeURL != 0 || st.ResumesFailed != 0 {
		t.Fatalf("identifies %d, resumes off the resume URL %d, failed resumes %d; want 1, 0, 0",
			st.Identifies, st.ResumesOffResumeURL, st.ResumesFailed)
	}
	if got := rec.count("RESUMED"); got != 3 {
		t.Fatalf("RESUMED delivered %d times, want 3", got)
	}
}

// Session stealing in miniature: a shard stopped with Stop hands over a resume state
// that a brand-new Shard continues with RESUME, every seq delivered exactly once.
func TestStopThenResumeElsewhereIsExactlyOnce(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{EventRate: 300})
	rec := newRecorder()
	first := startShard(t, baseConfig(t, srv, rec, 0, 1))
	rec.waitFor(t, "events", func() bool { return len(rec.delivered(0)) >= 40 })
	rs, err := first.Stop(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rs.Resumable() {
		t.Fatalf("Stop returned a state that cannot resume: %+v", rs)
	}
	awaitFake(t, srv, "the client's resumable close", func(s gatewaytest.Stats) bool {
		return s.ClientCloses[shard.CloseResumable] == 1 && s.Shards[0].Live == 0
	})

	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.Resume, cfg.Gate = rs, nil // no gate: a resume never identifies
	second := startShard(t, cfg)
	rec.waitFor(t, "events on the new shard", func() bool { return second.ResumeState().Seq >= rs.Seq+40 })
	final, err := second.Stop(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkContiguous(t, rec.delivered(0), 1, final.Seq)
	st := srv.Stats()
	if st.Identifies != 1 || st.Resumes != 1 || st.Shards[0].MaxLive != 1 {
		t.Fatalf("identifies %d, resumes %d, most live at once %d; want 1, 1, 1", st.Identifies, st.Resumes, st.Shards[0].MaxLive)
	}
	if final.SessionID != rs.SessionID {
		t.Fatalf("session changed from %s to %s", rs.SessionID, final.SessionID)
	}
}

// N shards over max_concurrency buckets identify through one LocalGate with no
// violation at the gateway.
func TestIdentifyBucketsNoViolations(t *testing.T) {
	const shards, maxConcurrency = 8, 2
	// The gate keeps 2.5 times the window the fake enforces: grants that ignored
	// buckets or the window would still collide, while a grant delayed on its way by
	// a loaded machine does not.
	window := 100 * time.Millisecond
	srv := newFake(t, gatewaytest.Options{Shards: shards, MaxConcurrency: maxConcurrency, IdentifyWindow: window})
	gate, err := shard.NewLocalGate(maxConcurrency, 5*window/2)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	var all []*testShard
	for id := range shards {
		cfg := baseConfig(t, srv, rec, id, shards)
		cfg.Gate = gate
		all = append(all, startShard(t, cfg))
	}
	rec.waitFor(t, "every shard READY", func() bool {
		for _, sh := range all {
			if sh.Info().State != shard.StateReady {
				return false
			}
		}
		return true
	})
	st := srv.Stats()
	if st.IdentifyViolations != 0 || st.Identifies != shards {
		t.Fatalf("identifies %d, violations %d; want %d, 0", st.Identifies, st.IdentifyViolations, shards)
	}
	for b := range maxConcurrency {
		if st.IdentifiesPerBucket[b] != shards/maxConcurrency {
			t.Fatalf("bucket %d: %d identifies, want %d", b, st.IdentifiesPerBucket[b], shards/maxConcurrency)
		}
	}
}

// Each class of close code: resume, re-identify.
func TestCloseCodeClasses(t *testing.T) {
	tests := []struct {
		code       int
		identifies int // total after the close
		resumes    int
	}{
		{4000, 1, 1}, {4002, 1, 1}, {4008, 1, 1}, {1011, 1, 1},
		{4001, 2, 0}, {4003, 2, 0}, {4005, 2, 0}, {4007, 2, 0}, {4009, 2, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			srv := newFake(t, gatewaytest.Options{EventRate: 100})
			rec := newRecorder()
			sh := startShard(t, baseConfig(t, srv, rec, 0, 1))
			rec.waitFor(t, "ready", stateIs(sh.Shard, shard.StateReady))
			if err := srv.CloseShard(0, tt.code); err != nil {
				t.Fatal(err)
			}
			awaitFake(t, srv, "the reconnect", func(s gatewaytest.Stats) bool {
				return s.Identifies == tt.identifies && s.Resumes == tt.resumes && s.Shards[0].Live == 1
			})
			rec.waitFor(t, "ready again", stateIs(sh.Shard, shard.StateReady))
			st := srv.Stats()
			if st.Identifies != tt.identifies || st.Resumes != tt.resumes {
				t.Fatalf("after close %d: identifies %d resumes %d, want %d %d", tt.code, st.Identifies, st.Resumes, tt.identifies, tt.resumes)
			}
		})
	}
}

// Fatal close codes stop the shard with an error that names the cause; no retry.
// (4010 and 4012 cannot be provoked by a valid Config: Validate refuses a shard id
// beyond the count, and the shard always speaks v10; TestServerSideFatalClose covers
// them.)
func TestFatalCloseCodesStopWithoutRetry(t *testing.T) {
	tests := []struct {
		code  int
		cause string
		cfg   func(*shard.Config)
		opts  gatewaytest.Options
	}{
		{4004, "token", func(c *shard.Config) { c.Token = "wrong-token" }, gatewaytest.Options{}},
		{4011, "shard count", func(c *shard.Config) {}, gatewaytest.Options{Guilds: 30, MaxGuildsPerShard: 10}},
		{4013, "intents", func(c *shard.Config) { c.Intents = 1 << 40 }, gatewaytest.Options{}},
		{4014, "privileged", func(c *shard.Config) { c.Intents = 1 << 1 }, gatewaytest.Options{DenyPrivilegedIntents: true}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			srv := newFake(t, tt.opts)
			rec := newRecorder()
			cfg := baseConfig(t, srv, rec, 0, 1)
			tt.cfg(&cfg)
			sh, err := shard.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			err = sh.Run(ctx)
			var fe *shard.FatalError
			if !errors.As(err, &fe) || fe.Code != tt.code || !errors.Is(err, shard.ErrFatal) {
				t.Fatalf("Run = %v, want a FatalError with code %d", err, tt.code)
			}
			if !strings.Contains(err.Error(), tt.cause) {
				t.Fatalf("error %q does not name the cause (%q)", err, tt.cause)
			}
			if strings.Contains(err.Error(), cfg.Token.Reveal()) {
				t.Fatalf("error contains the token: %v", err)
			}
			if sh.Info().State != shard.StateFailed {
				t.Fatalf("state %v, want failed", sh.Info().State)
			}
			if n := srv.Stats().Closes[tt.code]; n != 1 {
				t.Fatalf("the gateway closed with %d %d times: the shard retried", tt.code, n)
			}
		})
	}
}

// Every fatal code, sent by the server on an established session.
func TestServerSideFatalClose(t *testing.T) {
	for _, code := range []int{4004, 4010, 4011, 4012, 4013, 4014} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			srv := newFake(t, gatewaytest.Options{})
			rec := newRecorder()
			sh, err := shard.New(baseConfig(t, srv, rec, 0, 1))
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- sh.Run(context.Background()) }()
			rec.waitFor(t, "ready", stateIs(sh, shard.StateReady))
			if err := srv.CloseShard(0, code); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				var fe *shard.FatalError
				if !errors.As(err, &fe) || fe.Code != code {
					t.Fatalf("Run = %v, want FatalError %d", err, code)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return after a fatal close")
			}
			if st := srv.Stats(); st.Identifies != 1 || st.Resumes != 0 {
				t.Fatalf("after fatal %d: identifies %d resumes %d: the shard reconnected", code, st.Identifies, st.Resumes)
			}
		})
	}
}

// An unacknowledged heartbeat means a zombie connection: the shard drops it and
// resumes without identifying.
func TestZombieConnectionIsResumed(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: time.Second})
	rec := newRecorder()
	sh := startShard(t, baseConfig(t, srv, rec, 0, 1))
	rec.waitFor(t, "ready", stateIs(sh.Shard, shard.StateReady))
	srv.SetHeartbeatACKs(false)
	rec.waitFor(t, "zombie detected", func() bool { return sh.Info().Counters.Zombies >= 1 })
	srv.SetHeartbeatACKs(true)
	awaitFake(t, srv, "resume", func(s gatewaytest.Stats) bool { return s.Resumes >= 1 })
	rec.waitFor(t, "ready again", stateIs(sh.Shard, shard.StateReady))
	if st := srv.Stats(); st.Identifies != 1 {
		t.Fatalf("identifies %d after a zombie: want a resume, not a new session", st.Identifies)
	}
	if life := rec.lifecycle(0); !strings.Contains(strings.Join(life, ","), "reconnecting") {
		t.Fatalf("lifecycle %v has no reconnecting", life)
	}
}

// An ACK late while dispatches keep arriving is queued behind them, not lost: the
// connection is given a few intervals before it counts as a zombie, and is still
// dropped when the ACKs never come.
func TestLateAckWhilePayloadsArriveIsForgivenForAWhile(t *testing.T) {
	const interval = 200 * time.Millisecond
	srv := newFake(t, gatewaytest.Options{EventRate: 500, HeartbeatInterval: interval, HeartbeatTimeout: time.Minute})
	rec := newRecorder()
	sh := startShard(t, baseConfig(t, srv, rec, 0, 1))
	rec.waitFor(t, "ready", stateIs(sh.Shard, shard.StateReady))
	srv.SetHeartbeatACKs(false)
	off := time.Now()
	rec.waitFor(t, "zombie detected", func() bool { return sh.Info().Counters.Zombies >= 1 })
	// A beat goes out at most one interval after ACKs stop; it is judged a zombie at
	// the earliest after four forgiven intervals and the one that fails.
	if took := time.Since(off); took < 4*interval {
		t.Fatalf("zombie after %v with events flowing; want at least %v of grace", took, 4*interval)
	}
	srv.SetHeartbeatACKs(true)
	rec.waitFor(t, "ready again", stateIs(sh.Shard, shard.StateReady))
	if st := srv.Stats(); st.Identifies != 1 {
		t.Fatalf("identifies %d: want the zombie resumed", st.Identifies)
	}
}

// Heartbeats are answered with ACKs and their round trip is measured; a heartbeat
// the gateway asks for is sent at once.
func TestHeartbeatsAndServerRequest(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{HeartbeatInterval: time.Hour})
	rec := newRecorder()
	sh := startShard(t, baseConfig(t, srv, rec, 0, 1))
	rec.waitFor(t, "ready", stateIs(sh.Shard, shard.StateReady))
	before := sh.Info().Counters
	if err := srv.RequestHeartbeat(0); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the requested heartbeat and its ACK", func() bool {
		c := sh.Info().Counters
		return c.HeartbeatsSent == before.HeartbeatsSent+1 && c.HeartbeatACKs == before.HeartbeatACKs+1
	})
	if sh.Info().Latency <= 0 {
		t.Fatal("no heartbeat latency measured")
	}
}

// RECONNECT and INVALID_SESSION: op 7 and op 9 true resume, op 9 false re-identifies.
func TestReconnectAndInvalidSession(t *testing.T) {
	tests := []struct {
		name                string
		inject              func(*gatewaytest.Server) error
		identifies, resumes int
	}{
		{"op 7", func(s *gatewaytest.Server) error { return s.SendReconnect(0) }, 1, 1},
		{"op 9 true", func(s *gatewaytest.Server) error { return s.InvalidateSession(0, true) }, 1, 1},
		{"op 9 false", func(s *gatewaytest.Server) error { return s.InvalidateSession(0, false) }, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t, gatewaytest.Options{EventRate: 100})
			rec := newRecorder()
			sh := startShard(t, baseConfig(t, srv, rec, 0, 1))
			rec.waitFor(t, "ready", stateIs(sh.Shard, shard.StateReady))
			first := sh.ResumeState().SessionID
			if err := tt.inject(srv); err != nil {
				t.Fatal(err)
			}
			awaitFake(t, srv, "the reconnect", func(s gatewaytest.Stats) bool {
				return s.Identifies == tt.identifies && s.Resumes == tt.resumes && s.Shards[0].Live == 1
			})
			rec.waitFor(t, "ready again", stateIs(sh.Shard, shard.StateReady))
			if same := sh.ResumeState().SessionID == first; same != (tt.resumes == 1) {
				t.Fatalf("session kept = %v, want %v", same, tt.resumes == 1)
			}
		})
	}
}

// The client's own sends stay within the send limit, and an oversized command is
// refused before it reaches the wire.
func TestSendLimitAndPayloadLimit(t *testing.T) {
	const limit, window = 20, 500 * time.Millisecond
	srv := newFake(t, gatewaytest.Options{SendLimit: limit, SendWindow: window, HeartbeatInterval: time.Hour})
	rec := newRecorder()
	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.SendLimit, cfg.SendWindow = limit, window
	sh := startShard(t, cfg)
	rec.waitFor(t, "ready", stateIs(sh.Shard, shard.StateReady))

	big := map[string]any{"since": nil, "activities": []map[string]any{{"name": strings.Repeat("x", 5000), "type": 0}}, "status": "online", "afk": false}
	if err := sh.Send(context.Background(), shard.OpPresenceUpdate, big); !errors.Is(err, shard.ErrPayloadTooLarge) {
		t.Fatalf("oversized send: %v, want ErrPayloadTooLarge", err)
	}
	if err := sh.Send(context.Background(), shard.OpIdentify, nil); !errors.Is(err, shard.ErrManagedOpcode) {
		t.Fatalf("identify through Send: %v, want ErrManagedOpcode", err)
	}

	presence := map[string]any{"since": nil, "activities": []any{}, "status": "online", "afk": false}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	const sends = 3 * limit
	for i := range sends {
		if err := sh.Send(ctx, shard.OpPresenceUpdate, presence); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if elapsed := time.Since(start); elapsed < 2*window {
		t.Fatalf("%d sends took %v: the limiter let more than %d per %v through", sends, elapsed, limit, window)
	}
	st := srv.Stats()
	if st.Closes[4008] != 0 || st.Closes[4002] != 0 || st.Shards[0].MaxLive != 1 || st.Identifies != 1 {
		t.Fatalf("closes %v, identifies %d: the fake saw a limit broken", st.Closes, st.Identifies)
	}
}

// An identify that the gate lets through too early for the gateway is answered with
// op 9 false; the shard waits and identifies again.
func TestEarlyIdentifyIsRetried(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{Shards: 2, IdentifyWindow: 300 * time.Millisecond})
	rec := newRecorder()
	var all []*testShard
	for id := range 2 {
		cfg := baseConfig(t, srv, rec, id, 2)
		cfg.Gate = openGate{} // breaks the rule on purpose
		all = append(all, startShard(t, cfg))
	}
	rec.waitFor(t, "both READY", func() bool {
		return all[0].Info().State == shard.StateReady && all[1].Info().State == shard.StateReady
	})
	st := srv.Stats()
	// Identifies counts the accepted ones: both shards got in, after at least one
	// refusal.
	if st.IdentifyViolations < 1 || st.Identifies != 2 {
		t.Fatalf("violations %d accepted identifies %d: expected the fake to refuse at least one and both shards to get in", st.IdentifyViolations, st.Identifies)
	}
}

type openGate struct{}

func (openGate) Wait(ctx context.Context, _ int) error { return ctx.Err() }

// The token never reaches a log line or an error, whatever happens to the session.
func TestTokenNeverLogged(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{EventRate: 50})
	var logs syncBuffer
	rec := newRecorder()
	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sh := startShard(t, cfg)
	rec.waitFor(t, "ready", stateIs(sh.Shard, shard.StateReady))
	for _, inject := range []func() error{
		func() error { return srv.DropShard(0) },
		func() error { return srv.InvalidateSession(0, false) },
		func() error { return srv.CloseShard(0, 4000) },
	} {
		if err := inject(); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, "ready again", func() bool {
			info := sh.Info()
			return info.State == shard.StateReady && srv.Stats().Shards[0].Live == 1
		})
	}
	bad := cfg
	bad.Token = "bad-token-value"
	failing, err := shard.New(bad)
	if err != nil {
		t.Fatal(err)
	}
	runErr := failing.Run(context.Background())
	for _, tok := range []string{testToken, "bad-token-value"} {
		if strings.Contains(logs.String(), tok) {
			t.Fatalf("a log line contains the token %q", tok)
		}
		if strings.Contains(fmt.Sprint(runErr, sh.Info(), failing.Info()), tok) {
			t.Fatalf("an error or status contains the token %q", tok)
		}
	}
	if !strings.Contains(logs.String(), "shard ready") {
		t.Fatal("nothing was logged: the check above proves nothing")
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
