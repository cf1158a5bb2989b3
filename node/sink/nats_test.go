package sink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/discluster/discluster/internal/natstest"
	"github.com/discluster/discluster/node/sink"
)

func newNATSSink(t testing.TB, url string, maxMsgs int64) *sink.NATS {
	t.Helper()
	s, err := sink.NewNATS(url, maxMsgs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newJetStream is a worker's client.
func newJetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// natsEvent is one stored message, read back.
type natsEvent struct {
	subject string
	header  nats.Header
	body    struct {
		Op int             `json:"op"`
		T  string          `json:"t"`
		S  int64           `json:"s"`
		D  json.RawMessage `json:"d"`
	}
}

// readNATSStream returns every message the stream holds, in stream order.
func readNATSStream(t testing.TB, js jetstream.JetStream, name string) []natsEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []natsEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		e := natsEvent{subject: m.Subject, header: m.Header}
		if err := json.Unmarshal(m.Data, &e.body); err != nil {
			t.Fatalf("seq %d: body %q: %v", seq, m.Data, err)
		}
		out = append(out, e)
	}
	return out
}

// A batch becomes one message per event on discord.<shard>.<EVENT_NAME>, in order,
// its body the dispatch as Discord sent it and its headers naming it; the stream is
// made with the limits asked for.
func TestNATSSinkPublishesDispatches(t *testing.T) {
	srv := natstest.Start(t)
	s := newNATSSink(t, srv.URL()+"?max_age=1h&duplicates=30s", 1000)
	js := newJetStream(t, srv.URL())
	d := messageCreate(t)
	var batch []sink.Delivery
	for seq := int64(1); seq <= 50; seq++ {
		typ := "MESSAGE_CREATE"
		if seq%10 == 0 {
			typ = "GUILD_CREATE"
		}
		batch = append(batch, delivery(int(seq%3), "sess-"+strconv.Itoa(int(seq%3)), seq, typ, d))
	}
	if err := s.Deliver(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	if err := s.Deliver(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	got := readNATSStream(t, js, sink.DefaultNATSStream)
	if len(got) != 50 {
		t.Fatalf("%d messages, want 50", len(got))
	}
	last := map[int]int64{}
	for i, e := range got {
		want := batch[i].Event
		shardID := strconv.Itoa(want.ShardID)
		if e.subject != "discord."+shardID+"."+want.Type {
			t.Errorf("message %d on %s", i, e.subject)
		}
		for k, v := range map[string]string{sink.HeaderShard: shardID, sink.HeaderSession: want.SessionID,
			sink.HeaderSeq: strconv.FormatInt(want.Seq, 10), sink.HeaderEvent: want.Type,
			jetstream.MsgIDHeader: want.SessionID + ":" + strconv.FormatInt(want.Seq, 10)} {
			if e.header.Get(k) != v {
				t.Errorf("message %d: %s %q, want %q", i, k, e.header.Get(k), v)
			}
		}
		if e.body.Op != 0 || e.body.T != want.Type || e.body.S != want.Seq || !reflect.DeepEqual(jsonValue(t, e.body.D), jsonValue(t, d)) {
			t.Errorf("message %d: body %+v", i, e.body)
		}
		if want.Seq <= last[want.ShardID] {
			t.Errorf("shard %d: seq %d after %d", want.ShardID, want.Seq, last[want.ShardID])
		}
		last[want.ShardID] = want.Seq
	}
	st, err := js.Stream(t.Context(), sink.DefaultNATSStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !reflect.DeepEqual(cfg.Subjects, []string{"discord.>"}) || cfg.MaxMsgs != 1000 || cfg.MaxAge != time.Hour ||
		cfg.Duplicates != 30*time.Second || cfg.Storage != jetstream.FileStorage || cfg.Discard != jetstream.DiscardOld {
		t.Errorf("stream made as %+v", cfg)
	}
}

// The same events delivered twice (what a RESUME after a failover replays, or a
// retry after a lost ack) are stored once: JetStream drops them by Nats-Msg-Id,
// and Deliver accepts them.
func TestNATSSinkDropsReplays(t *testing.T) {
	srv := natstest.Start(t)
	s := newNATSSink(t, srv.URL(), 0)
	js := newJetStream(t, srv.URL())
	d := json.RawMessage(`{"id":"1"}`)
	batch := func(from, to int64) []sink.Delivery {
		var b []sink.Delivery
		for seq := from; seq <= to; seq++ {
			b = append(b, delivery(4, "sess", seq, "MESSAGE_CREATE", d))
		}
		return b
	}
	for _, b := range [][]sink.Delivery{batch(1, 20), batch(1, 20), batch(11, 30), batch(25, 25)} {
		if err := s.Deliver(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	// Another session's seq 1 is another event.
	if err := s.Deliver(t.Context(), []sink.Delivery{delivery(4, "sess-2", 1, "MESSAGE_CREATE", d)}); err != nil {
		t.Fatal(err)
	}
	got := readNATSStream(t, js, sink.DefaultNATSStream)
	if len(got) != 31 {
		t.Fatalf("%d messages stored, want 31", len(got))
	}
	for i, e := range got[:30] {
		if e.body.S != int64(i+1) || e.header.Get(sink.HeaderSession) != "sess" {
			t.Errorf("message %d: %s seq %d", i, e.header.Get(sink.HeaderSession), e.body.S)
		}
	}
}

// A killed, paused or not yet started nats-server refuses the batch within
// Deliver's context, and a retry once it is back delivers it: nothing is dropped,
// and what the retry sends again is dropped as a duplicate, so every seq is stored
// exactly once.
func TestNATSSinkDownRefusesAndRecovers(t *testing.T) {
	srv := natstest.Start(t)
	srv.Kill() // down when the node starts
	s := newNATSSink(t, srv.URL(), 0)
	d := json.RawMessage(`{"id":"1"}`)
	seq := int64(0)
	next := func(n int) []sink.Delivery {
		b := make([]sink.Delivery, n)
		for i := range b {
			seq++
			b[i] = delivery(1, "s", seq, "MESSAGE_CREATE", d)
		}
		return b
	}
	// deliverRetrying is the node's loop, in short: retry from the first event not
	// accepted until all are.
	deliverRetrying := func(b []sink.Delivery) (failures int) {
		deadline := time.Now().Add(30 * time.Second)
		for len(b) > 0 {
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			err := s.Deliver(ctx, b)
			cancel()
			b = b[sink.Accepted(err, len(b)):]
			if err != nil {
				failures++
				if time.Now().After(deadline) {
					t.Errorf("still failing after 30 s: %v", err)
					return failures
				}
				time.Sleep(50 * time.Millisecond) // the node's backoff
			}
		}
		return failures
	}
	refused := func(how string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		start := time.Now()
		err := s.Deliver(ctx, next(20))
		cancel()
		seq -= 20 // the refused batch is sent again below
		if err == nil {
			t.Fatalf("%s: Deliver accepted a batch", how)
		}
		if n := sink.Accepted(err, 20); n != 0 {
			t.Errorf("%s: %d events accepted", how, n)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: Deliver took %v past its context", how, took)
		}
		t.Logf("%s: %v", how, err)
	}

	refused("not started")
	b := next(20)
	done := make(chan int)
	go func() { done <- deliverRetrying(b) }()
	srv.Restart()
	<-done

	for _, how := range []string{"paused", "killed"} {
		switch how {
		case "paused":
			srv.Pause()
		case "killed":
			srv.Kill()
		}
		refused(how)
		b := next(20)
		go func() { done <- deliverRetrying(b) }()
		switch how {
		case "paused":
			srv.Continue()
		case "killed":
			srv.Restart()
		}
		<-done
	}
	if f := deliverRetrying(next(10)); f != 0 {
		t.Errorf("%d failures after the last restart", f)
	}
	got := readNATSStream(t, newJetStream(t, srv.URL()), sink.DefaultNATSStream)
	have := map[int64]int{}
	for _, e := range got {
		have[e.body.S]++
	}
	for s := int64(1); s <= seq; s++ {
		if have[s] != 1 {
			t.Errorf("seq %d stored %d times", s, have[s])
		}
	}
	t.Logf("%d messages for %d seqs", len(got), seq)
}

// A stream of the sink's name that exists already is the operator's: the sink
// publishes into it and changes nothing of it; one that does not take the sink's
// subjects makes a failing sink that says so.
func TestNATSSinkLeavesAnExistingStreamAlone(t *testing.T) {
	srv := natstest.Start(t)
	js := newJetStream(t, srv.URL())
	want := jetstream.StreamConfig{Name: "EVENTS", Description: "the operator's", Subjects: []string{"bot.>", "other"},
		MaxMsgs: 7, Storage: jetstream.MemoryStorage, Duplicates: time.Minute}
	if _, err := js.CreateStream(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	s := newNATSSink(t, srv.URL()+"?subject=bot&stream=EVENTS", 100)
	var batch []sink.Delivery
	for seq := int64(1); seq <= 10; seq++ {
		batch = append(batch, delivery(0, "s", seq, "TYPING_START", json.RawMessage(`{}`)))
	}
	if err := s.Deliver(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(t.Context(), "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info := st.CachedInfo()
	got := info.Config
	if got.Description != want.Description || !reflect.DeepEqual(got.Subjects, want.Subjects) || got.MaxMsgs != 7 ||
		got.Storage != jetstream.MemoryStorage || got.Duplicates != time.Minute {
		t.Errorf("the stream's configuration changed: %+v", got)
	}
	if info.State.Msgs != 7 || info.State.LastSeq != 10 {
		t.Errorf("stream state %+v, want the last 7 of 10", info.State)
	}
	if _, err := js.Stream(t.Context(), sink.DefaultNATSStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s: %v, want none made", sink.DefaultNATSStream, err)
	}

	// A stream of that name that does not take the subjects.
	other := newNATSSink(t, srv.URL()+"?subject=elsewhere&stream=EVENTS", 100)
	err = other.Deliver(t.Context(), batch[:1])
	if err == nil || !strings.Contains(err.Error(), "elsewhere.>") {
		t.Errorf("publishing outside the stream: %v", err)
	}
}

// The sink's URL: servers, credentials and options; errors name the problem and
// never the password or token, and the printed form hides them.
func TestNATSURL(t *testing.T) {
	for _, bad := range []string{
		"redis://x:1",
		"nats://:s3cret@host:notaport",
		"nats://u:s3cret@h:1/path",
		"nats://u:s3cret@h:1,tls://h:2",
		"nats://u:s3cret@h:1,u:other@h:2",
		"nats://s3cret@h:1?stream=A.B",
		"nats://s3cret@h:1?subject=a.*",
		"nats://s3cret@h:1?subject=a..b",
		"nats://s3cret@h:1?max_age=forever",
		"nats://s3cret@h:1?max_age=1m&duplicates=2m",
		"nats://s3cret@h:1?duplicates=0s",
		"nats://s3cret@h:1?replicas=9",
		"nats://s3cret@h:1?colour=blue",
		"nats://s3cret@%zz:1",
		"nats://",
	} {
		err := sink.CheckNATSURL(bad)
		if err == nil {
			t.Errorf("%s accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the secret: %v", err)
		}
		if _, err := sink.NewNATS(bad, 10); err == nil {
			t.Errorf("NewNATS(%s) accepted", bad)
		}
	}
	for _, good := range []string{
		"nats://127.0.0.1:4222",
		"nats://u:p@10.0.0.1:4222,10.0.0.2:4222,nats://10.0.0.3:4222?subject=discord.gw&stream=GW&max_age=0&duplicates=5m&replicas=3",
		"tls://tok@nats.example:4222?ca=/etc/ca.pem",
		"nats://host",
	} {
		if err := sink.CheckNATSURL(good); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
	if _, err := sink.NewNATS("nats://127.0.0.1:1", -1); err == nil {
		t.Error("negative max messages accepted")
	}
	for spec, want := range map[string]string{
		"nats://u:s3cret@h:1,h:2?stream=X": "nats://u:xxxxx@h:1,h:2?stream=X",
		"tls://s3cret@h:1":                 "tls://xxxxx@h:1",
		"nats://h:1,u:s3cret@h:2":          "nats://h:1,u:xxxxx@h:2",
		"nats://h:1":                       "nats://h:1",
	} {
		if got := sink.RedactNATSURL(spec); got != want {
			t.Errorf("RedactNATSURL(%s) = %s, want %s", spec, got, want)
		}
	}
}

// Credentials in the URL reach the server: a user and password, or a token.
func TestNATSSinkCredentials(t *testing.T) {
	d := []sink.Delivery{delivery(0, "s", 1, "READY", json.RawMessage(`{}`))}
	for _, tc := range []struct {
		args     []string
		cred     string
		wrongCrd string
	}{
		{[]string{"--user", "bot", "--pass", "s3cret"}, "bot:s3cret@", "bot:wrong@"},
		{[]string{"--auth", "t0ken"}, "t0ken@", "wrong@"},
	} {
		srv := natstest.Start(t, tc.args...)
		s := newNATSSink(t, "nats://"+tc.cred+srv.Addr(), 0)
		if err := s.Deliver(t.Context(), d); err != nil {
			t.Errorf("with %s: %v", tc.args[0], err)
		}
		wrong := newNATSSink(t, "nats://"+tc.wrongCrd+srv.Addr(), 0)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := wrong.Deliver(ctx, d)
		cancel()
		if err == nil {
			t.Errorf("with wrong credentials for %s: delivered", tc.args[0])
		} else {
			t.Logf("wrong credentials: %v", err)
		}
		if err != nil && (strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "t0ken")) {
			t.Errorf("error shows a secret: %v", err)
		}
	}
}

// BenchmarkNATSSink measures events/s through the NATS sink into a real
// nats-server (JetStream, file storage) on this machine: batches of recorded
// MESSAGE_CREATEs as a busy cluster's queue hands them over, every event acked,
// and the sink's own CPU per million events (the nats-server's is not counted).
func BenchmarkNATSSink(b *testing.B) {
	for _, size := range []int{1, 32, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			srv := natstest.Start(b)
			s := newNATSSink(b, srv.URL(), sink.DefaultRedisMaxLen)
			d := messageCreate(b)
			batch := make([]sink.Delivery, size)
			seq := int64(0)
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			events := 0
			for b.Loop() {
				for i := range batch {
					seq++ // a new seq each time: the duplicate window would drop repeats
					batch[i] = delivery(int(seq%16), "bench-session", seq, "MESSAGE_CREATE", d)
				}
				if err := s.Deliver(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				events += size
			}
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(cpu.Seconds()/float64(events)*1e6, "cpu-s/Mevents")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// A dispatch over the server's max_payload (1 MB by default; a large guild's
// GUILD_CREATE) is refused, with the events before it accepted: never dropped, so
// its shard holds there, and status says why, until max_payload is raised.
func TestNATSSinkRefusesAnEventOverMaxPayload(t *testing.T) {
	srv := natstest.Start(t)
	s := newNATSSink(t, srv.URL(), 0)
	big := json.RawMessage(`{"members":"` + strings.Repeat("x", 1<<20) + `"}`)
	batch := []sink.Delivery{
		delivery(0, "s", 1, "MESSAGE_CREATE", json.RawMessage(`{}`)),
		delivery(0, "s", 2, "GUILD_CREATE", big),
		delivery(0, "s", 3, "MESSAGE_CREATE", json.RawMessage(`{}`)),
	}
	err := s.Deliver(t.Context(), batch)
	if n := sink.Accepted(err, len(batch)); n != 1 || !strings.Contains(fmt.Sprint(err), "maximum payload") {
		t.Fatalf("Deliver: %v (%d accepted), want the first accepted and the GUILD_CREATE refused for its size", err, n)
	}
	t.Log(err)
	got := readNATSStream(t, newJetStream(t, srv.URL()), sink.DefaultNATSStream)
	if len(got) != 1 || got[0].body.S != 1 {
		t.Errorf("stream holds %d messages, want seq 1 only", len(got))
	}
}
