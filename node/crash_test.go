package node

import (
	"testing"
	"time"
)

// A refused probe is a crash verdict for the process it probed, not for one started
// on the same port afterwards: heartbeats keep failing while the first verdict is
// acted on, and a second one must not fail the node again once it is back.
func TestCrashVerdictOlderThanTheNodesReturnIsStale(t *testing.T) {
	ls := &leaderState{crashed: make(map[string]time.Time)}
	probe := time.Now()
	ls.crashed["n1"] = probe
	if ls.takeCrashed("n1", probe.Add(time.Millisecond).UnixNano()) {
		t.Fatal("a verdict from before the node came back failed it again")
	}
	if ls.takeCrashed("n1", 0) {
		t.Fatal("a verdict was taken twice")
	}
	ls.crashed["n1"] = probe
	if !ls.takeCrashed("n1", probe.Add(-time.Millisecond).UnixNano()) {
		t.Fatal("a verdict from after the node's last change was ignored")
	}
}
