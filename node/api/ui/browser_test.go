package ui_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/browsertest"
	"github.com/discluster/discluster/internal/testlock"
	"github.com/discluster/discluster/node/api"
)

// explain is what a failed wait reports of the page.
const explain = `JSON.stringify({cells: document.querySelectorAll('#grid .c').length, notReady: document.querySelectorAll('#grid .c:not(.s-ready)').length,
	metrics: discluster.metrics, source: document.getElementById('source').textContent, banner: document.getElementById('banner').textContent})`

// nextFrame waits until the page has drawn what it has been given.
const nextFrame = `new Promise((r) => requestAnimationFrame(() => setTimeout(() => r(true), 0)))`

// webViewFigures are what the page costs at a size.
type webViewFigures struct {
	firstRender, build, snapshot float64 // ms: navigation to the grid painted; building it; parsing and applying the snapshot
	received                     float64 // ms: navigation to the snapshot's last byte
	scriptPerUpdate              float64 // µs of script per stream message (parse, apply, cell), in the page's own count
	taskPerUpdate                float64 // µs of main-thread work per update, updates 10 ms apart (all of the page's work in the window)
	burstShards, burstMessages   int
	burstWall, burstTask         float64 // ms: a failover's messages pushed → the page showing every shard ready; main-thread work for it
}

// measureWebView opens the web view of a made-up cluster of total shards over nodes
// members, checks that the grid is drawn once and its cells change in place, and
// measures it: the first render, single updates, and the failover of one member's
// shards to the others.
func measureWebView(t testing.TB, total, nodes int) webViewFigures {
	// Chromium drawing 20,000 cells keeps both cores busy for seconds: the cluster
	// tests of other packages, whose heartbeats it would starve, wait for it, and
	// it measures a quiet machine.
	testlock.Cluster(t)
	f := newFakeCluster(total, nodes)
	url := serve(t, f, api.Auth{})
	b := browsertest.Start(t, 1400, 1000)
	b.Navigate(url + "/ui/")
	b.WaitFor(60*time.Second, "the grid drawn", fmt.Sprintf(`discluster.metrics.firstRender > 0 && document.querySelectorAll('#grid .c').length === %d`, total), explain)
	var fig webViewFigures
	fig.firstRender = browsertest.Eval[float64](b, `discluster.metrics.firstRender`)
	fig.build = browsertest.Eval[float64](b, `discluster.metrics.buildMs`)
	fig.snapshot = browsertest.Eval[float64](b, `discluster.metrics.snapshotMs`)
	fig.received = browsertest.Eval[float64](b, `discluster.metrics.snapshotAt`)
	if n := browsertest.Eval[int](b, `document.querySelectorAll('#grid .c:not(.s-ready)').length`); n != 0 {
		t.Fatalf("%d cells not ready in a cluster that is", n)
	}
	if got := browsertest.Eval[string](b, `document.getElementById('ready').textContent`); got != fmt.Sprintf("%d/%d", total, total) {
		t.Errorf("progress %q, want %d/%d", got, total, total)
	}
	// A cell marked now must be the same element after the updates, not a new one.
	browsertest.Eval[bool](b, `(discluster.view.cells[7].__mark = true)`)
	browsertest.Eval[bool](b, `(discluster.view.cells[`+fmt.Sprint(total-1)+`].__mark = true)`)

	// Single updates, 10 ms apart: a shard starts resuming.
	const spaced = 200
	count := func() int { return browsertest.Eval[int](b, `discluster.metrics.shardMessages`) }
	scriptMs := func() float64 { return browsertest.Eval[float64](b, `discluster.metrics.shardMs`) }
	msgs0, script0, cost0 := count(), scriptMs(), b.MainThread()
	var resumed []api.ShardStatus
	tick := time.NewTicker(10 * time.Millisecond)
	for i := range spaced {
		<-tick.C
		s := f.st.Shards[i*total/spaced]
		s.State = "resuming"
		resumed = append(resumed, s)
		f.pushes <- []message{{api.StreamShard, s}}
	}
	tick.Stop()
	b.WaitFor(10*time.Second, "the single updates applied", fmt.Sprintf(`discluster.metrics.shardMessages === %d && !discluster.view.dirty`, msgs0+spaced), explain)
	browsertest.Eval[bool](b, nextFrame)
	cost := b.MainThread().Sub(cost0)
	fig.scriptPerUpdate = (scriptMs() - script0) * 1000 / spaced
	fig.taskPerUpdate = cost.Task * 1e6 / spaced
	t.Logf("single updates, main thread per update: %.0f µs in all, %.0f µs script, %.0f µs style, %.0f µs layout",
		cost.Task*1e6/spaced, cost.Script*1e6/spaced, cost.Style*1e6/spaced, cost.Layout*1e6/spaced)
	if n := browsertest.Eval[int](b, `document.querySelectorAll('#grid .c.s-resuming').length`); n != spaced {
		t.Errorf("%d cells resuming, want %d", n, spaced)
	}

	// A failover: the last member fails and its shards move to the others, resume,
	// and are ready; the single updates' shards are ready again too.
	gone := f.st.Members[nodes-1]
	failed := gone
	failed.State, failed.Gossip, failed.Lease = "failed", "failed", nil
	batch := []message{{api.StreamMember, failed}}
	latest := map[int]api.ShardStatus{}
	for _, s := range resumed {
		latest[s.Shard] = s
	}
	var moved []api.ShardStatus
	for _, s := range f.st.Shards {
		if s.Node == gone.ID {
			s.Node, s.State, s.Epoch = f.st.Members[len(moved)%(nodes-1)].ID, "resuming", s.Epoch+1
			moved = append(moved, s)
			latest[s.Shard] = s
			batch = append(batch, message{api.StreamShard, s})
		}
	}
	for _, s := range latest {
		s.State = "ready"
		batch = append(batch, message{api.StreamShard, s})
	}
	fig.burstShards, fig.burstMessages = len(moved), len(batch)
	msgs0, cost0 = count(), b.MainThread()
	start := time.Now()
	f.pushes <- batch
	b.WaitFor(20*time.Second, "the failover shown", fmt.Sprintf(`discluster.metrics.shardMessages === %d && !discluster.view.dirty &&
		document.querySelectorAll('#grid .c:not(.s-ready)').length === 0 &&
		document.querySelector('#grid .group[data-node="%s"] .cells').childElementCount === 0`, msgs0+len(batch)-1, gone.ID), explain)
	fig.burstWall = float64(time.Since(start).Microseconds()) / 1000
	browsertest.Eval[bool](b, nextFrame)
	burst := b.MainThread().Sub(cost0)
	fig.burstTask = burst.Task * 1000
	t.Logf("failover, main thread: %.0f ms in all, %.0f ms script, %.0f ms style, %.0f ms layout", burst.Task*1e3, burst.Script*1e3, burst.Style*1e3, burst.Layout*1e3)

	// Drawn once: the same cells, moved into their new node's group.
	if n := browsertest.Eval[int](b, `document.querySelectorAll('#grid .c').length`); n != total {
		t.Errorf("%d cells after the updates, want %d", n, total)
	}
	if !browsertest.Eval[bool](b, `discluster.view.cells[7].__mark === true && discluster.view.cells[`+fmt.Sprint(total-1)+`].__mark === true`) {
		t.Error("the cells were made anew: the grid must be drawn once and changed in place")
	}
	last := moved[len(moved)-1]
	if got := browsertest.Eval[string](b, fmt.Sprintf(`discluster.view.cells[%d].closest('.group').dataset.node`, last.Shard)); got != last.Node {
		t.Errorf("shard %d drawn in %s's group, want %s's", last.Shard, got, last.Node)
	}
	if row := browsertest.Eval[string](b, fmt.Sprintf(`document.querySelector('#members tr[data-node="%s"]').className`, gone.ID)); !strings.Contains(row, "bad") {
		t.Errorf("the failed member's row is %q, not marked", row)
	}
	if n := browsertest.Eval[int](b, `discluster.metrics.cspViolations`); n != 0 {
		t.Errorf("%d Content-Security-Policy violations", n)
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page's errors: %q", errs)
	}
	b.Screenshot(fmt.Sprintf("webview-%d-shards", total))
	return fig
}

func (f webViewFigures) String() string {
	return fmt.Sprintf("first render %.0f ms (the snapshot in at %.0f ms, parsed and applied in %.0f ms, of which building the grid %.0f ms); an update: %.1f µs of script, %.0f µs of main-thread work (10 ms apart); "+
		"a failover of %d shards (%d messages): shown %.0f ms after it was sent, %.0f ms of main-thread work",
		f.firstRender, f.received, f.snapshot, f.build, f.scriptPerUpdate, f.taskPerUpdate, f.burstShards, f.burstMessages, f.burstWall, f.burstTask)
}

// The web view of 20,000 shards over 10 members (the largest cluster the README
// plans for): drawn once, every cell changed in place, a failover shown. The
// figures are logged; BenchmarkWebView reports them.
func TestWebViewAt20000Shards(t *testing.T) {
	t.Log(measureWebView(t, 20000, 10))
}

// BenchmarkWebView measures the page in headless Chromium at 20,000 shards: time to
// the first render, the cost of an update, and a failover of 2,000 shards. One run
// is one page load: go test -run '^$' -bench WebView -benchtime 1x ./node/api/ui/
func BenchmarkWebView(b *testing.B) {
	for range b.N {
		f := measureWebView(b, 20000, 10)
		b.ReportMetric(f.firstRender, "ms/first-render")
		b.ReportMetric(f.scriptPerUpdate, "µs-script/update")
		b.ReportMetric(f.taskPerUpdate, "µs-main/update")
		b.ReportMetric(f.burstWall, "ms/failover-2000")
		b.ReportMetric(f.burstTask, "ms-main/failover-2000")
		b.ReportMetric(0, "ns/op")
	}
}

// An agent whose reads need the token: the page sends the browser to the sign-in,
// a wrong token is refused, the right one opens the page (the cookie out of the
// script's reach, the token in the tab for writes), and a drain asks first.
func TestWebViewSignInAndDrain(t *testing.T) {
	f := newFakeCluster(12, 3)
	f.st.Reshard = &api.Reshard{Generation: 2, From: 12, To: 24, Assigned: 24, Warm: 5, ETA: 10 * time.Second}
	url := serve(t, f, api.Auth{Token: "s3cret", Reads: true})
	b := browsertest.Start(t, 1200, 900)
	b.Navigate(url + "/ui/")
	if p := browsertest.Eval[string](b, `location.pathname`); p != "/ui/login.html" {
		t.Fatalf("the page without the token is %s, want the sign-in", p)
	}
	signIn := func(token string) {
		browsertest.Eval[bool](b, `(document.getElementById('token').value = `+fmt.Sprintf("%q", token)+`, document.getElementById('login').requestSubmit(), true)`)
	}
	signIn("wrong")
	b.WaitFor(10*time.Second, "a wrong token refused", `document.getElementById('err').textContent.includes('not the agent')`, `document.getElementById('err').textContent`)
	signIn("s3cret")
	b.WaitFor(15*time.Second, "the page open", `location.pathname === '/ui/' && document.querySelectorAll('#grid .c.s-ready').length === 12 &&
		document.querySelectorAll('#members tbody tr').length === 3`, explain)
	if got, want := browsertest.Eval[string](b, `document.getElementById('progress').textContent`),
		"resharding 12 → 24 shards: 5/24 warm, 24/24 assigned, switch in ~10.0 s by the identify schedule"; got != want {
		t.Errorf("progress %q, want %q", got, want)
	}
	if c := browsertest.Eval[string](b, `document.cookie`); c != "" {
		t.Errorf("the page's script sees the cookie %q: it must be HttpOnly", c)
	}

	// Drain n02: the dialog says what will happen, and the drain goes with the token.
	browsertest.Eval[bool](b, `(document.querySelector('#members tr[data-node="n02"] button[data-act="drain"]').click(), true)`)
	b.WaitFor(5*time.Second, "the confirmation", `document.getElementById('actdlg').open && document.getElementById('acttext').textContent.includes('exact seq')`, `document.getElementById('acttitle').textContent`)
	if len(f.drains()) != 0 {
		t.Fatal("drained before the confirmation")
	}
	browsertest.Eval[bool](b, `(document.getElementById('actok').click(), true)`)
	b.WaitFor(10*time.Second, "the drain done", `!document.getElementById('actdlg').open && document.getElementById('banner').textContent.includes('n02 is draining')`,
		`document.getElementById('acterr').textContent`)
	if d := f.drains(); len(d) != 1 || d[0] != "n02" {
		t.Errorf("drained %v, want [n02]", d)
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page's errors: %q", errs)
	}
}
