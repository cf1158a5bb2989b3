package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/browsertest"
)

// The web view in a real browser against three real agents: it shows the members
// and every shard ready; then the agent that served the page, the leader, is
// SIGKILLed, and without a reload the page follows another agent's stream and shows
// the failure, the new leader, and every shard ready on the two others.
// DISCLUSTER_SCREENSHOTS=DIR keeps the screenshots (during and after the failover).
func TestE2EWebViewFollowsAFailover(t *testing.T) {
	e := newE2E(t, 12)
	e.startAgents(3)
	e.allReady(60*time.Second, e.nodes...)
	lead := e.leader(e.nodes...)

	b := browsertest.Start(t, 1280, 900)
	b.Navigate("http://" + lead.http + "/ui/")
	const state = `JSON.stringify({source: document.getElementById('source').dataset, members: [...document.querySelectorAll('#members tbody tr')].map((r) => r.dataset.node + ':' + r.className + ':' + r.textContent),
		notReady: [...document.querySelectorAll('#grid .c:not(.s-ready)')].map((c) => c.sid + ':' + c.className), banner: document.getElementById('banner').textContent})`
	b.WaitFor(20*time.Second, "three members and every shard ready", `document.querySelectorAll('#members tbody tr').length === 3 &&
		document.querySelectorAll('#grid .c').length === 12 && document.querySelectorAll('#grid .c:not(.s-ready)').length === 0 &&
		document.getElementById('source').dataset.how === 'live'`, state)
	if l := browsertest.Eval[string](b, `document.querySelector('#members tr.leader').dataset.node`); l != lead.name {
		t.Errorf("the page marks %s as the leader, want %s", l, lead.name)
	}
	browsertest.Eval[bool](b, `(window.sameDocument = true)`)

	if err := lead.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// The failure shows: the page follows another agent, which marks the killed one.
	failed := b.WaitFor(20*time.Second, "the failure shown", fmt.Sprintf(`document.getElementById('source').dataset.how === 'live' &&
		document.getElementById('source').dataset.addr !== %q && document.querySelector('#members tr[data-node="%s"]').classList.contains('bad')`,
		lead.http, lead.name), state)
	b.Screenshot("webview-failover-during")
	b.WaitFor(20*time.Second, "the shards ready on the others", fmt.Sprintf(`document.querySelectorAll('#grid .c').length === 12 &&
		document.querySelectorAll('#grid .c:not(.s-ready)').length === 0 &&
		document.querySelector('#grid .group[data-node="%[1]s"] .cells').childElementCount === 0 &&
		document.querySelector('#members tr.leader') !== null && document.querySelector('#members tr.leader').dataset.node !== '%[1]s'`, lead.name), state)
	t.Logf("after the SIGKILL of %s (the leader, which served the page): the page showed it failed in %v, every shard ready elsewhere in %v",
		lead.name, failed.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if !browsertest.Eval[bool](b, `window.sameDocument === true`) {
		t.Error("the page was reloaded")
	}
	b.Screenshot("webview-failover-after")
	if errs := b.Errors(); len(errs) > 0 {
		// A fetch to the killed agent fails in the console as a network error; the
		// page's own errors are exceptions and CSP reports.
		for _, e := range errs {
			t.Logf("page: %s", e)
		}
	}
	if n := browsertest.Eval[int](b, `discluster.metrics.cspViolations`); n != 0 {
		t.Errorf("%d Content-Security-Policy violations", n)
	}
}
