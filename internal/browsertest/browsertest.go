// Package browsertest runs headless Chromium for tests, driven by chromedp over the
// DevTools protocol: on this machine, with a profile of its own in the test's
// temporary directory and none of the browser's own network traffic (this machine
// reaches no network), closed when the test ends. Without Chromium a test skips and
// says how to install it, unless DISCLUSTER_REQUIRE_CHROMIUM is set (as .ci/run sets
// it, having installed it), when it fails: CI never skips.
//
// Only tests import it; production code never does.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// RequireEnv, when set, turns a missing Chromium into a failure.
const RequireEnv = "DISCLUSTER_REQUIRE_CHROMIUM"

// ScreenshotsEnv names a directory that keeps a copy of every screenshot a test
// takes (the test's own copy goes with its temporary directory).
const ScreenshotsEnv = "DISCLUSTER_SCREENSHOTS"

// Browser is one headless Chromium with one tab.
type Browser struct {
	// Ctx is the tab's chromedp context: chromedp.Run(b.Ctx, ...).
	Ctx context.Context
	t   testing.TB
	dir string

	mu     sync.Mutex
	errors []string // exceptions the page threw, and console errors
}

// Start starts Chromium with a window of width × height CSS pixels, or skips the
// test when there is none.
func Start(t testing.TB, width, height int) *Browser {
	t.Helper()
	path := find()
	if path == "" {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("no chromium found, and %s is set: install it (apt-get install chromium)", RequireEnv)
		}
		t.Skip("chromium not installed (apt-get install chromium); .ci/run installs it")
	}
	dir := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		// Chromium's own connections (updates, sync, QUIC probes) go nowhere on a
		// machine without a network, and are refused many at a time.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Timers of a page in a window nobody looks at run at full speed.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.WindowSize(width, height),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &Browser{Ctx: ctx, t: t, dir: dir}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium (%s): %v", path, err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if e.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			msg = "console.error: " + strings.Join(parts, " ")
		default:
			return
		}
		b.mu.Lock()
		b.errors = append(b.errors, msg)
		b.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, runtime.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, performance.Enable, performance.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	return b
}

// Costs are the seconds the page's main thread has spent so far: in all (tasks),
// and of that in script, style and layout, as Chromium's DevTools count them.
type Costs struct {
	Task, Script, Style, Layout float64
}

// Sub is the costs between o and c.
func (c Costs) Sub(o Costs) Costs {
	return Costs{c.Task - o.Task, c.Script - o.Script, c.Style - o.Style, c.Layout - o.Layout}
}

// MainThread reads the page's costs so far.
func (b *Browser) MainThread() Costs {
	b.t.Helper()
	r, err := chromedp.Call(b.Ctx, performance.GetMetrics, cdp.Empty{})
	if err != nil {
		b.t.Fatalf("performance metrics: %v", err)
	}
	var c Costs
	for _, m := range r.Metrics {
		switch m.Name {
		case "TaskDuration":
			c.Task = m.Value
		case "ScriptDuration":
			c.Script = m.Value
		case "RecalcStyleDuration":
			c.Style = m.Value
		case "LayoutDuration":
			c.Layout = m.Value
		}
	}
	return c
}

// find is the path of a Chromium, or "".
func find() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Errors are the exceptions the page threw and the errors it logged so far.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// Navigate opens url and waits for its load event.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	if err := chromedp.Do(b.Ctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("open %s: %v", url, err)
	}
}

// evalTimeout bounds one evaluation: a page that hangs fails the test, not the run.
const evalTimeout = 30 * time.Second

// Eval evaluates a JavaScript expression and decodes its value into T.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, evalTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// WaitFor waits up to d for a JavaScript expression to be true, checked every 25 ms,
// and fails the test with what explain (another expression, giving a string) says
// of the page when it is not. It returns how long it waited.
func (b *Browser) WaitFor(d time.Duration, what, cond, explain string) time.Duration {
	b.t.Helper()
	start := time.Now()
	var err error
	for {
		left := d - time.Since(start)
		if left <= 0 {
			break
		}
		_, err = chromedp.Run(b.Ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(left)))
		if err == nil || b.Ctx.Err() != nil {
			break
		}
		// The page navigated away under the poll (a sign-in, a reload): ask the new one.
		t := time.NewTimer(25 * time.Millisecond)
		<-t.C
	}
	if err != nil {
		state := "?"
		if explain != "" {
			if s, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](explain)); err == nil {
				state = s
			}
		}
		b.Screenshot("failed-" + strings.NewReplacer(" ", "-", "/", "-").Replace(what))
		b.t.Fatalf("after %v, still not %s (%v): %s; page errors: %q", d, what, err, state, b.Errors())
	}
	return time.Since(start)
}

// Screenshot writes the whole page as name.png into the test's temporary directory,
// and into $DISCLUSTER_SCREENSHOTS when that is set; it returns the first path.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	if keep := os.Getenv(ScreenshotsEnv); keep != "" {
		if err := os.MkdirAll(keep, 0o755); err == nil {
			err = os.WriteFile(filepath.Join(keep, name+".png"), png, 0o644)
		}
		if err != nil {
			b.t.Errorf("keep screenshot %s in %s: %v", name, keep, err)
		}
	}
	b.t.Logf("screenshot %s (%d KiB)", path, len(png)>>10)
	return path
}

// String is for messages.
func (b *Browser) String() string { return fmt.Sprintf("chromium (profile in %s)", b.dir) }
