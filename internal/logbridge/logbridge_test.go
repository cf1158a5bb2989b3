package logbridge

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// rec is a record as the recorder saw it, with the handler's attrs (from With)
// and the record's own in one map.
type rec struct {
	level slog.Level
	msg   string
	pc    uintptr
	attrs map[string]slog.Value
	keys  []string // the record's own attr keys, in order
}

func (r rec) str(key string) string {
	v, ok := r.attrs[key]
	if !ok {
		return "<missing>"
	}
	return v.String()
}

// recorder is a slog.Handler that keeps every record it is handed. It is safe for
// concurrent use (raft logs from its own goroutines).
type recorder struct {
	min   slog.Level
	mu    *sync.Mutex
	recs  *[]rec
	attrs []slog.Attr
}

func newRecorder(min slog.Level) *recorder {
	return &recorder{min: min, mu: new(sync.Mutex), recs: new([]rec)}
}

func (h *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	out := rec{level: r.Level, msg: r.Message, pc: r.PC, attrs: map[string]slog.Value{}}
	for _, a := range h.attrs {
		out.attrs[a.Key] = a.Value.Resolve()
	}
	r.Attrs(func(a slog.Attr) bool {
		out.attrs[a.Key] = a.Value.Resolve()
		out.keys = append(out.keys, a.Key)
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, out)
	h.mu.Unlock()
	return nil
}

func (h *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *recorder) WithGroup(string) slog.Handler { return h }

func (h *recorder) all() []rec {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]rec(nil), *h.recs...)
}

func (h *recorder) one(t *testing.T) rec {
	t.Helper()
	rs := h.all()
	if len(rs) != 1 {
		t.Fatalf("got %d records, want 1: %+v", len(rs), rs)
	}
	return rs[0]
}

func (h *recorder) reset() {
	h.mu.Lock()
	*h.recs = nil
	h.mu.Unlock()
}

func TestHclogLevels(t *testing.T) {
	h := newRecorder(slog.LevelDebug - 8)
	l := Hclog(slog.New(h), "raft", hclog.Trace)
	for _, c := range []struct {
		log  func(string, ...any)
		want slog.Level
	}{
		{l.Trace, slog.LevelDebug},
		{l.Debug, slog.LevelDebug},
		{l.Info, slog.LevelInfo},
		{l.Warn, slog.LevelWarn},
		{l.Error, slog.LevelError},
	} {
		h.reset()
		c.log("m")
		if r := h.one(t); r.level != c.want || r.msg != "m" || r.str("component") != "raft" {
			t.Errorf("want %v: got %+v", c.want, r)
		}
	}
	for lv, want := range map[hclog.Level]slog.Level{
		hclog.Trace: slog.LevelDebug, hclog.Debug: slog.LevelDebug, hclog.Info: slog.LevelInfo,
		hclog.Warn: slog.LevelWarn, hclog.Error: slog.LevelError,
	} {
		h.reset()
		l.Log(lv, "m2") // "m" at this level was logged just above: a repeat
		if r := h.one(t); r.level != want {
			t.Errorf("Log(%v): level %v, want %v", lv, r.level, want)
		}
	}
	// Levels that are not levels of a record are dropped, not guessed.
	h.reset()
	l.Log(hclog.Off, "m")
	l.Log(hclog.NoLevel, "m")
	l.Log(hclog.Level(-3), "m")
	l.Log(hclog.Level(42), "m")
	if rs := h.all(); len(rs) != 0 {
		t.Errorf("Off, NoLevel and out-of-range levels reached the handler: %+v", rs)
	}
}

func TestHclogArgsBecomeAttrs(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	l := Hclog(slog.New(h), "raft", hclog.Info)
	err := errors.New("boom")
	l.Info("entering leader state", "leader", "n1", "term", 7, "err", err)
	r := h.one(t)
	if got := strings.Join(r.keys, ","); got != "leader,term,err" {
		t.Errorf("attr keys %q, want in call order", got)
	}
	if r.str("leader") != "n1" || r.attrs["term"].Int64() != 7 || r.attrs["err"].Any() != err {
		t.Errorf("attrs %+v", r.attrs)
	}
}

func TestHclogOddArgs(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	l := Hclog(slog.New(h), "raft", hclog.Info)
	l.Info("m", "a", 1, "lonely")
	r := h.one(t)
	if r.attrs["a"].Int64() != 1 || r.str(hclog.MissingKey) != "lonely" {
		t.Errorf("odd args: %+v", r.attrs)
	}
	h.reset()
	l.Info("m", 12)
	if r := h.one(t); r.attrs[hclog.MissingKey].Int64() != 12 {
		t.Errorf("single arg: %+v", r.attrs)
	}
	h.reset()
	l.Info("m", "a", 1, hclog.CapturedStacktrace("trace"))
	if r := h.one(t); r.str("stacktrace") != "trace" {
		t.Errorf("trailing stack trace: %+v", r.attrs)
	}
}

func TestHclogOddKeysAndValues(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	l := Hclog(slog.New(h), "raft", hclog.Info)
	l.Info("m",
		7, "int key",
		nil, "nil key",
		"fmt", hclog.Fmt("%d beans", 3),
		"badfmt", hclog.Format{42, 43},
		"nofmt", hclog.Format{},
		"hex", hclog.Hex(255),
		"oct", hclog.Octal(8),
		"bin", hclog.Binary(5),
		"q", hclog.Quote("a\nb"),
		"nil", nil,
	)
	r := h.one(t)
	for k, want := range map[string]string{
		"7": "int key", "<nil>": "nil key", "fmt": "3 beans", "badfmt": "42 43", "nofmt": "",
		"hex": "0xff", "oct": "010", "bin": "0b101", "q": "a\nb",
	} {
		if got := r.str(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if v, ok := r.attrs["nil"]; !ok || v.Any() != nil {
		t.Errorf("nil value: %v %v", v, ok)
	}
	// With takes the same odd input without panicking.
	l.With(1, 2, nil, "x", "odd").Info("m")
}

func TestHclogWith(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	root := Hclog(slog.New(h), "raft", hclog.Info)
	l := root.With("b", 2, "a", 1)
	l2 := l.With("b", 3, "c")
	if got := fmt.Sprint(l.ImpliedArgs()); got != "[a 1 b 2]" {
		t.Errorf("ImpliedArgs %s, want sorted [a 1 b 2]", got)
	}
	if got := fmt.Sprint(l2.ImpliedArgs()); got != "[a 1 b 3 "+hclog.MissingKey+" c]" {
		t.Errorf("ImpliedArgs after second With %s", got)
	}
	if len(root.ImpliedArgs()) != 0 {
		t.Errorf("With changed its parent: %v", root.ImpliedArgs())
	}
	// ImpliedArgs is a copy.
	l.ImpliedArgs()[1] = "changed"
	l2.Info("m", "d", 4)
	r := h.one(t)
	if r.attrs["a"].Int64() != 1 || r.attrs["b"].Int64() != 3 || r.str(hclog.MissingKey) != "c" ||
		r.attrs["d"].Int64() != 4 || r.str("component") != "raft" {
		t.Errorf("With attrs: %+v", r.attrs)
	}
	h.reset()
	l.Info("m")
	if r := h.one(t); r.attrs["a"].Int64() != 1 || r.attrs["b"].Int64() != 2 {
		t.Errorf("parent of With: %+v", r.attrs)
	}
}

func TestHclogNamed(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	root := Hclog(slog.New(h), "raft", hclog.Info).With("k", "v")
	for _, c := range []struct {
		l    hclog.Logger
		want string
	}{
		{root, "raft"},
		{root.Named("snapshot"), "raft.snapshot"},
		{root.Named("snapshot").Named("file"), "raft.snapshot.file"},
		{root.Named("snapshot").ResetNamed("serf"), "serf"},
		{Hclog(slog.New(h), "", hclog.Info).Named("memberlist"), "memberlist"},
	} {
		h.reset()
		c.l.Info("m")
		r := h.one(t)
		if c.l.Name() != c.want || r.str("component") != c.want {
			t.Errorf("Name %q component %q, want %q", c.l.Name(), r.str("component"), c.want)
		}
		if c.want != "memberlist" && r.str("k") != "v" {
			t.Errorf("%s lost implied args: %+v", c.want, r.attrs)
		}
	}
	h.reset()
	Hclog(slog.New(h), "", hclog.Info).Info("m")
	if _, ok := h.one(t).attrs["component"]; ok {
		t.Error("a logger without a name got a component attr")
	}
}

// counter counts how often it is formatted.
type counter struct{ n *atomic.Int32 }

func (c counter) String() string             { c.n.Add(1); return "counted" }
func (c counter) LogValue() slog.Value       { c.n.Add(1); return slog.StringValue("counted") }
func (c counter) Format(f fmt.State, _ rune) { c.n.Add(1); fmt.Fprint(f, "counted") }

func TestHclogMinDropsBeforeFormatting(t *testing.T) {
	h := newRecorder(slog.LevelDebug - 8)
	l := Hclog(slog.New(h), "raft", hclog.Warn)
	c := counter{new(atomic.Int32)}
	l.Trace("m", "c", c, "f", hclog.Fmt("%v", c))
	l.Debug("m", "c", c, "f", hclog.Fmt("%v", c))
	l.Info("m", "c", c, "f", hclog.Fmt("%v", c))
	l.Log(hclog.Info, "m", "f", hclog.Fmt("%v", c))
	if rs := h.all(); len(rs) != 0 {
		t.Fatalf("records below Warn reached the handler: %+v", rs)
	}
	if c.n.Load() != 0 {
		t.Fatalf("dropped records were formatted %d times", c.n.Load())
	}
	l.Warn("m", "f", hclog.Fmt("%v", c))
	if r := h.one(t); r.level != slog.LevelWarn || r.str("f") != "counted" {
		t.Fatalf("Warn: %+v", r)
	}
	if l.IsTrace() || l.IsDebug() || l.IsInfo() || !l.IsWarn() || !l.IsError() {
		t.Error("Is* guards do not match level Warn")
	}
	if l.GetLevel() != hclog.Warn {
		t.Errorf("GetLevel %v", l.GetLevel())
	}
}

func TestHclogHandlerLevel(t *testing.T) {
	// The hclog level lets Debug through, the handler does not: the record is
	// dropped before formatting, and IsDebug says so.
	h := newRecorder(slog.LevelInfo)
	l := Hclog(slog.New(h), "raft", hclog.Trace)
	c := counter{new(atomic.Int32)}
	l.Debug("m", "f", hclog.Fmt("%v", c))
	if len(h.all()) != 0 || c.n.Load() != 0 {
		t.Fatalf("a record the handler does not take was formatted or handled")
	}
	if l.IsTrace() || l.IsDebug() || !l.IsInfo() {
		t.Error("Is* guards ignore the handler's level")
	}
}

func TestHclogSetLevelShared(t *testing.T) {
	h := newRecorder(slog.LevelDebug - 8)
	root := Hclog(slog.New(h), "raft", hclog.Info)
	sub := root.Named("snapshot").With("k", "v")
	sub.Debug("m")
	if len(h.all()) != 0 {
		t.Fatal("Debug passed level Info")
	}
	root.SetLevel(hclog.Debug)
	if sub.GetLevel() != hclog.Debug {
		t.Fatalf("SetLevel on the root did not reach a derived logger: %v", sub.GetLevel())
	}
	sub.Debug("m")
	if r := h.one(t); r.level != slog.LevelDebug {
		t.Fatalf("after SetLevel(Debug): %+v", r)
	}
	sub.SetLevel(hclog.Off)
	h.reset()
	root.Error("m")
	if len(h.all()) != 0 {
		t.Fatal("Error passed level Off")
	}
	root.SetLevel(hclog.NoLevel)
	if root.GetLevel() != hclog.Info {
		t.Fatalf("SetLevel(NoLevel): %v, want Info", root.GetLevel())
	}
	if Hclog(slog.New(h), "raft", hclog.NoLevel).GetLevel() != hclog.Info {
		t.Fatal("min NoLevel is not Info")
	}
}

func TestHclogSourceIsCaller(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	l := Hclog(slog.New(h), "raft", hclog.Info)
	l.Info("m")
	l.Log(hclog.Info, "m")
	rs := h.all()
	if len(rs) != 2 {
		t.Fatalf("got %d records, want 2", len(rs))
	}
	for _, r := range rs {
		f, _ := runtime.CallersFrames([]uintptr{r.pc}).Next()
		if !strings.HasSuffix(f.Function, "TestHclogSourceIsCaller") {
			t.Errorf("record source %s, want the caller of the logger", f.Function)
		}
	}
}

func TestHclogNilSlog(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	old := slog.Default()
	slog.SetDefault(slog.New(h))
	defer slog.SetDefault(old)
	Hclog(nil, "raft", hclog.Info).Info("m")
	if r := h.one(t); r.str("component") != "raft" {
		t.Fatalf("nil slog.Logger: %+v", r)
	}
}

func TestHclogStandardLogger(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	l := Hclog(slog.New(h), "raft", hclog.Debug)
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[WARN] raft: slow")
	if r := h.one(t); r.level != slog.LevelWarn || r.msg != "raft: slow" || r.str("component") != "raft" {
		t.Fatalf("InferLevels: %+v", r)
	}
	h.reset()
	l.StandardLogger(nil).Print("[WARN] plain")
	if r := h.one(t); r.level != slog.LevelInfo || r.msg != "[WARN] plain" {
		t.Fatalf("no options: %+v", r)
	}
	h.reset()
	fmt.Fprintln(l.StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}), "[DEBUG] forced")
	if r := h.one(t); r.level != slog.LevelError || r.msg != "forced" {
		t.Fatalf("ForceLevel: %+v", r)
	}
}

func TestStdInfersLevels(t *testing.T) {
	for _, c := range []struct {
		line  string
		level slog.Level
		msg   string
	}{
		{"2026/12/02 15:00:00 [DEBUG] memberlist: Stream connection from=127.0.0.1:7946",
			slog.LevelDebug, "memberlist: Stream connection from=127.0.0.1:7946"},
		{"2026/12/02 15:00:00.123456 [INFO] serf: EventMemberJoin: n2 127.0.0.1",
			slog.LevelInfo, "serf: EventMemberJoin: n2 127.0.0.1"},
		{"15:00:00 [WARN] serf: Event queue depth: 4096", slog.LevelWarn, "serf: Event queue depth: 4096"},
		{"[WARN] serf: Failed to update coordinate", slog.LevelWarn, "serf: Failed to update coordinate"},
		{"[ERR] memberlist: Failed to send ping: timeout", slog.LevelError, "memberlist: Failed to send ping: timeout"},
		{"[ERROR] memberlist: Failed to accept TCP connection", slog.LevelError, "memberlist: Failed to accept TCP connection"},
		{"[TRACE] serf: tick", slog.LevelDebug, "serf: tick"},
		// No prefix: Info, and the text is kept whole (InferLevelsWithTimestamp
		// would have made it "rr: ...").
		{"Err: Could not set the deadline: closed", slog.LevelInfo, "Err: Could not set the deadline: closed"},
		{"2026 is not a timestamp", slog.LevelInfo, "2026 is not a timestamp"},
	} {
		h := newRecorder(slog.LevelDebug)
		std := Std(slog.New(h), "memberlist", hclog.Trace)
		std.Print(c.line)
		r := h.one(t)
		if r.level != c.level || r.msg != c.msg || r.str("component") != "memberlist" {
			t.Errorf("%q:\n got %v %q component=%s\nwant %v %q", c.line, r.level, r.msg, r.str("component"), c.level, c.msg)
		}
	}
}

func TestStdTimestampFromFlags(t *testing.T) {
	// A library that turns the logger's timestamps on still gets its level read.
	h := newRecorder(slog.LevelDebug)
	std := Std(slog.New(h), "serf", hclog.Debug)
	std.SetFlags(log.LstdFlags | log.Lmicroseconds)
	std.Printf("[DEBUG] serf: messageJoinType: %s", "n2")
	if r := h.one(t); r.level != slog.LevelDebug || r.msg != "serf: messageJoinType: n2" {
		t.Fatalf("%+v", r)
	}
}

func TestStdMin(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	std := Std(slog.New(h), "serf", hclog.Warn)
	std.Print("[DEBUG] serf: a")
	std.Print("[INFO] serf: b")
	std.Print("no level, so Info")
	std.Print("[WARN] serf: c")
	std.Print("[ERR] serf: d")
	rs := h.all()
	if len(rs) != 2 || rs[0].level != slog.LevelWarn || rs[1].level != slog.LevelError {
		t.Fatalf("min Warn: %+v", rs)
	}
}

func TestStdFitsSerfAndMemberlist(t *testing.T) {
	l := slog.New(newRecorder(slog.LevelInfo))
	var _ *log.Logger = Std(l, "memberlist", hclog.Info)
	mc := memberlist.DefaultLANConfig()
	mc.Logger = Std(l, "memberlist", hclog.Info)
	sc := serf.DefaultConfig()
	sc.Logger = Std(l, "serf", hclog.Info)
	sc.MemberlistConfig.Logger = mc.Logger
}

// A warning that repeats about the same peer is logged once per RepeatWindow, the
// next one saying how many were kept quiet; another peer's is its own.
func TestRepeatedWarningsAreRateLimited(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	l := Hclog(slog.New(h), "raft", hclog.Info)
	for range 50 {
		l.Error("failed to heartbeat to", "peer", "10.0.0.2:7947", "backoff time", "10ms")
	}
	l.Error("failed to heartbeat to", "peer", "10.0.0.3:7947")
	l.Named("snapshot").Error("failed to heartbeat to", "peer", "10.0.0.2:7947")
	l.Info("entering follower state") // info is never limited
	l.Info("entering follower state")
	recs := h.all()
	if len(recs) != 5 {
		t.Fatalf("%d records, want 1 + 1 (another peer) + 1 (another logger) + 2 infos: %v", len(recs), recs)
	}
	l.(*logger).rep.mu.Lock()
	for _, e := range l.(*logger).rep.last {
		e.at = e.at.Add(-RepeatWindow)
	}
	l.(*logger).rep.mu.Unlock()
	l.Error("failed to heartbeat to", "peer", "10.0.0.2:7947")
	last := h.all()[len(h.all())-1]
	if got := last.str("repeated"); got != "49" {
		t.Fatalf("the next one after the window says repeated=%q, want 49", got)
	}
}

// memberlist names its peer in the message ("from=1.2.3.4:5678"); a stranger that
// opens connection after connection comes from a new port each time and is still
// one peer, logged once per RepeatWindow, while another host is its own.
func TestRepeatedStdLinesFromOneHostAreRateLimited(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	l := Std(slog.New(h), "memberlist", hclog.Info)
	for port := range 100 {
		l.Printf("[ERR] memberlist: failed to receive: garbage from=10.0.0.9:%d", 40000+port)
	}
	l.Printf("[ERR] memberlist: failed to receive: garbage from=10.0.0.8:40000")
	l.Printf("[ERR] memberlist: failed to receive: garbage from=[fe80::1%%eth0]:40000")
	l.Printf("[ERR] memberlist: failed to receive: garbage from=[fe80::1%%eth0]:40001")
	if recs := h.all(); len(recs) != 3 {
		t.Fatalf("%d records, want one per host: %v", len(recs), recs)
	}
	for in, want := range map[string]string{"x from=10.0.0.9:1": "x from=10.0.0.9", "from=10.0.0.9": "from=10.0.0.9",
		"from=[::1]:7946 y": "from=[::1] y", "from=host.example:80": "from=host.example"} {
		if got := fromPort.ReplaceAllString(in, "$1"); got != want {
			t.Errorf("%q: key %q, want %q", in, got, want)
		}
	}
}
