// Package logbridge sends the logs of hashicorp's raft, serf and memberlist into
// log/slog at their own levels: Hclog gives raft an hclog.Logger, Std gives serf
// and memberlist the *log.Logger they log through, and both end in one slog.Logger
// with a "component" attr naming the library.
//
// It must never write anywhere but the slog.Logger it is given, never panic on a
// library's odd arguments, and never format a record that is below its level.
package logbridge

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Hclog returns an hclog.Logger whose records go to l with their levels: Trace and
// Debug → slog.LevelDebug, Info → Info, Warn → Warn, Error → Error. The key/value
// args become slog attrs, and the logger's name is the attr "component" (Named
// extends it as hclog does: "raft" then "raft.snapshot"). Named, ResetNamed, With
// and ImpliedArgs work as hclog documents them, and SetLevel changes the level of
// every logger derived from this one, as hclog's default does.
//
// Records below min, or that l's handler would not take, are dropped before their
// args are formatted. hclog.NoLevel as min means hclog's default, Info; a nil l
// means slog.Default().
func Hclog(l *slog.Logger, name string, min hclog.Level) hclog.Logger {
	if l == nil {
		l = slog.Default()
	}
	lv := new(atomic.Int32)
	lv.Store(int32(normLevel(min)))
	return newLogger(l, name, nil, lv, &repeats{last: map[string]*repeat{}})
}

// RepeatWindow is how long a warning or error that repeats (the same message about
// the same peer) stays quiet after it was logged: Raft retries a dead peer every few
// milliseconds, and says so each time, until the peer is removed.
const RepeatWindow = 10 * time.Second

// repeats remembers the warnings and errors logged lately, for every logger derived
// from one Hclog call.
type repeats struct {
	mu   sync.Mutex
	last map[string]*repeat
}

type repeat struct {
	at         time.Time
	suppressed int
}

// admit reports whether a record under key may be logged at now, and how many like
// it were kept quiet since the last one that was.
func (r *repeats) admit(key string, now time.Time) (ok bool, quiet int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.last[key]
	if e != nil && now.Sub(e.at) < RepeatWindow {
		e.suppressed++
		return false, 0
	}
	if e == nil {
		if len(r.last) > 1024 { // many distinct messages: forget, rather than grow
			clear(r.last)
		}
		e = &repeat{}
		r.last[key] = e
	}
	quiet, e.at, e.suppressed = e.suppressed, now, 0
	return true, quiet
}

// repeatKey is what makes two records the same: the level, the logger, the message and the peer
// it is about (hclog libraries name it "peer", "server-id", "id" or "addr").
func repeatKey(level hclog.Level, name, msg string, args []any) string {
	key := level.String() + "\x00" + name + "\x00" + fromPort.ReplaceAllString(msg, "$1")
	for i := 0; i+1 < len(args); i += 2 {
		switch k, _ := args[i].(string); k {
		case "peer", "server-id", "id", "addr", "node":
			key += "\x00" + fmt.Sprint(args[i+1])
		}
	}
	return key
}

// fromPort matches the source port in memberlist's "from=1.2.3.4:5678": a peer that
// opens connection after connection (a flood) comes from a new port each time, and
// is still one peer.
var fromPort = regexp.MustCompile(`(from=(?:\[[^\]\s]*\]|[^\s:\[]+)):[0-9]+`)

// Std returns a *log.Logger for libraries that log through the standard library
// (serf, memberlist). Each line's level is inferred by hclog's own standard-logger
// adapter (InferLevels) from its "[TRACE]", "[DEBUG]", "[INFO]", "[WARN]",
// "[ERR]" or "[ERROR]" prefix, a line without one being Info; the prefix is
// stripped, and the line goes to l at that level with attr component=name, through
// Hclog(l, name, min).
//
// The returned logger writes no timestamp of its own; if a timestamp of the
// standard log format ("2006/01/02 15:04:05[.000000] ", as log.LstdFlags and
// log.Lmicroseconds write) starts a line anyway, it is removed before the level is
// read. hclog's InferLevelsWithTimestamp is not used for that: its pattern also
// eats leading capitals, turning memberlist's "Err: Could not set the deadline"
// into "rr: Could not set the deadline".
func Std(l *slog.Logger, name string, min hclog.Level) *log.Logger {
	w := Hclog(l, name, min).StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})
	return log.New(stdTimeTrimmer{w}, "", 0)
}

// logger is the hclog.Logger of Hclog. Loggers derived by Named, ResetNamed and
// With share level; each keeps its own name and implied args, already applied to
// sl.
type logger struct {
	base    *slog.Logger // as given to Hclog, without component or implied attrs
	sl      *slog.Logger // base with component and implied attrs
	name    string
	implied []any // even length, string keys, as ImpliedArgs returns them
	level   *atomic.Int32
	rep     *repeats
}

var _ hclog.Logger = (*logger)(nil)

func newLogger(base *slog.Logger, name string, implied []any, level *atomic.Int32, rep *repeats) *logger {
	sl := base
	if name != "" {
		sl = sl.With("component", name)
	}
	if len(implied) > 0 {
		sl = slog.New(sl.Handler().WithAttrs(attrs(implied)))
	}
	return &logger{base: base, sl: sl, name: name, implied: implied, level: level, rep: rep}
}

// normLevel maps hclog.NoLevel to hclog's default level.
func normLevel(l hclog.Level) hclog.Level {
	if l == hclog.NoLevel {
		return hclog.DefaultLevel
	}
	return l
}

func slogLevel(l hclog.Level) slog.Level {
	switch {
	case l <= hclog.Debug:
		return slog.LevelDebug
	case l == hclog.Info:
		return slog.LevelInfo
	case l == hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// enabled reports whether a record at level would reach the handler.
func (g *logger) enabled(level hclog.Level) bool {
	if level < g.GetLevel() || level < hclog.Trace || level >= hclog.Off {
		return false
	}
	return g.sl.Handler().Enabled(context.Background(), slogLevel(level))
}

// log is called by each exported logging method directly, so that the caller of
// that method is always three frames up.
func (g *logger) log(level hclog.Level, msg string, args []any) {
	if !g.enabled(level) {
		return
	}
	now := time.Now()
	quiet := 0
	if level >= hclog.Warn {
		var ok bool
		if ok, quiet = g.rep.admit(repeatKey(level, g.name, msg, args), now); !ok {
			return
		}
	}
	var pc [1]uintptr
	runtime.Callers(3, pc[:]) // runtime.Callers, log, the method
	r := slog.NewRecord(now, slogLevel(level), msg, pc[0])
	r.AddAttrs(attrs(args)...)
	if quiet > 0 {
		r.AddAttrs(slog.Int("repeated", quiet), slog.Duration("in", RepeatWindow))
	}
	_ = g.sl.Handler().Handle(context.Background(), r)
}

func (g *logger) Log(level hclog.Level, msg string, args ...any) { g.log(level, msg, args) }
func (g *logger) Trace(msg string, args ...any)                  { g.log(hclog.Trace, msg, args) }
func (g *logger) Debug(msg string, args ...any)                  { g.log(hclog.Debug, msg, args) }
func (g *logger) Info(msg string, args ...any)                   { g.log(hclog.Info, msg, args) }
func (g *logger) Warn(msg string, args ...any)                   { g.log(hclog.Warn, msg, args) }
func (g *logger) Error(msg string, args ...any)                  { g.log(hclog.Error, msg, args) }

func (g *logger) IsTrace() bool { return g.enabled(hclog.Trace) }
func (g *logger) IsDebug() bool { return g.enabled(hclog.Debug) }
func (g *logger) IsInfo() bool  { return g.enabled(hclog.Info) }
func (g *logger) IsWarn() bool  { return g.enabled(hclog.Warn) }
func (g *logger) IsError() bool { return g.enabled(hclog.Error) }

// ImpliedArgs returns a copy of the key/value pairs that With added.
func (g *logger) ImpliedArgs() []any { return slices.Clone(g.implied) }

// With returns a logger whose records all carry args besides the implied args it
// already has, as hclog's With does: a key given again replaces the old value, the
// keys are sorted, a key that is not a string is formatted into one, and an odd
// last arg is kept under hclog.MissingKey.
func (g *logger) With(args ...any) hclog.Logger {
	var extra any
	odd := len(args)%2 != 0
	if odd {
		extra = args[len(args)-1]
		args = args[:len(args)-1]
	}
	vals := make(map[string]any, len(g.implied)+len(args)/2)
	keys := make([]string, 0, len(g.implied)+len(args)/2)
	add := func(k any, v any) {
		key := keyString(k)
		if _, ok := vals[key]; !ok {
			keys = append(keys, key)
		}
		vals[key] = v
	}
	for i := 0; i+1 < len(g.implied); i += 2 {
		add(g.implied[i], g.implied[i+1])
	}
	for i := 0; i+1 < len(args); i += 2 {
		add(args[i], args[i+1])
	}
	slices.Sort(keys)
	implied := make([]any, 0, 2*len(keys)+2)
	for _, k := range keys {
		implied = append(implied, k, vals[k])
	}
	if odd {
		implied = append(implied, hclog.MissingKey, extra)
	}
	return newLogger(g.base, g.name, implied, g.level, g.rep)
}

func (g *logger) Name() string { return g.name }

// Named returns a logger named name under this one: "raft" then "raft.name".
func (g *logger) Named(name string) hclog.Logger {
	if g.name != "" {
		name = g.name + "." + name
	}
	return newLogger(g.base, name, g.implied, g.level, g.rep)
}

// ResetNamed returns a logger named name, whatever this one's name is.
func (g *logger) ResetNamed(name string) hclog.Logger {
	return newLogger(g.base, name, g.implied, g.level, g.rep)
}

// SetLevel sets the level of this logger and of all those derived from the same
// Hclog call; hclog.NoLevel means Info, and hclog.Off drops everything.
func (g *logger) SetLevel(level hclog.Level) { g.level.Store(int32(normLevel(level))) }

func (g *logger) GetLevel() hclog.Level { return hclog.Level(g.level.Load()) }

// StandardLogger returns a *log.Logger writing through StandardWriter(opts).
func (g *logger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(g.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer for log.SetOutput that sends each line to this
// logger. The line handling (InferLevels, InferLevelsWithTimestamp, ForceLevel) is
// hclog's own: its adapter is not exported, so it is had from an intercept logger
// that prints nothing (level Off, output discarded) and passes each record to a
// sink that logs it here, where min and the handler filter it.
func (g *logger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name: g.name, Level: hclog.Off, Output: io.Discard,
	})
	il.RegisterSink(sink{g})
	return il.StandardWriter(opts)
}

// sink hands the records of StandardWriter's intercept logger to a logger.
type sink struct{ g *logger }

func (s sink) Accept(_ string, level hclog.Level, msg string, args ...any) {
	s.g.log(level, msg, args)
}

// attrs turns hclog's alternating key/value args into slog attrs. An odd last arg
// is a stack trace if it is an hclog.CapturedStacktrace, and otherwise the value of
// the key hclog.MissingKey, as hclog prints it.
func attrs(args []any) []slog.Attr {
	if len(args) == 0 {
		return nil
	}
	out := make([]slog.Attr, 0, (len(args)+1)/2)
	for i := 0; i+1 < len(args); i += 2 {
		out = append(out, attr(keyString(args[i]), args[i+1]))
	}
	if len(args)%2 != 0 {
		last := args[len(args)-1]
		if st, ok := last.(hclog.CapturedStacktrace); ok {
			out = append(out, slog.String("stacktrace", string(st)))
		} else {
			out = append(out, attr(hclog.MissingKey, last))
		}
	}
	return out
}

func keyString(k any) string {
	if s, ok := k.(string); ok {
		return s
	}
	return fmt.Sprint(k)
}

// attr renders hclog's special value types the way hclog's text output does and
// leaves everything else to slog.
func attr(key string, v any) slog.Attr {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return slog.String(key, "")
		}
		if f, ok := v[0].(string); ok {
			return slog.String(key, fmt.Sprintf(f, v[1:]...))
		}
		return slog.String(key, fmt.Sprint(v...))
	case hclog.Hex:
		return slog.String(key, "0x"+strconv.FormatUint(uint64(v), 16))
	case hclog.Octal:
		return slog.String(key, "0"+strconv.FormatUint(uint64(v), 8))
	case hclog.Binary:
		return slog.String(key, "0b"+strconv.FormatUint(uint64(v), 2))
	case hclog.Quote:
		return slog.String(key, string(v))
	case hclog.CapturedStacktrace:
		return slog.String(key, string(v))
	}
	return slog.Any(key, v)
}

// stdTimeTrimmer removes a leading standard-log timestamp from each line before
// hclog's adapter reads its level.
type stdTimeTrimmer struct{ w io.Writer }

func (t stdTimeTrimmer) Write(p []byte) (int, error) {
	if _, err := t.w.Write(trimStdTime(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// trimStdTime removes from the start of p what the log package writes for Ldate
// ("2006/01/02 "), Ltime ("15:04:05 ") and Lmicroseconds ("15:04:05.000000 "),
// if it is there; anything else is left alone.
func trimStdTime(p []byte) []byte {
	if n := match(p, "dddd/dd/dd "); n > 0 {
		p = p[n:]
	}
	if n := match(p, "dd:dd:dd"); n > 0 {
		q := p[n:]
		if m := match(q, ".dddddd"); m > 0 {
			q = q[m:]
		}
		if len(q) > 0 && q[0] == ' ' {
			p = q[1:]
		}
	}
	return p
}

// match reports the length of pattern if p starts with it, where 'd' in pattern
// stands for any ASCII digit, and 0 otherwise.
func match(p []byte, pattern string) int {
	if len(p) < len(pattern) {
		return 0
	}
	for i := 0; i < len(pattern); i++ {
		c := p[i]
		if pattern[i] == 'd' {
			if c < '0' || c > '9' {
				return 0
			}
		} else if c != pattern[i] {
			return 0
		}
	}
	return len(pattern)
}
