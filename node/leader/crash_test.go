package leader

import (
	"testing"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/membership"
)

// A refused probe is a crash verdict for the process it probed, not for one started
// on the same port afterwards: heartbeats keep failing while the first verdict is
// acted on, and a second one must not fail the node again once it is back.
func TestCrashVerdictOlderThanTheNodesReturnIsStale(t *testing.T) {
	probe := time.Unix(1000, 0)
	plan := func(since time.Time) Decision {
		in := Input{Now: probe.Add(time.Second), Self: "leader", Lease: 5 * time.Second, Established: probe,
			TotalShards: 1, Grants: newGrants(),
			Members: []fsm.Member{{ID: "leader", State: fsm.Alive, Weight: 1}, {ID: "n1", State: fsm.Alive, Weight: 1, Since: since.UnixNano()}},
			Gossip:  []membership.Member{{Name: "leader", Status: membership.StatusAlive, Weight: 1}, {Name: "n1", Status: membership.StatusAlive, Weight: 1}}}
		in.Members[0].RaftAddr, in.Members[1].RaftAddr = "", ""
		in.Grants.LastRenew["n1"] = probe
		in.Grants.Crashed["n1"] = probe
		d, err := Plan(in)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := plan(probe.Add(time.Millisecond)); failed(d) != nil || len(d.TakenCrashed) != 1 {
		t.Fatalf("a verdict from before the node came back failed it again (%v), or was not used up (%v)", failed(d), d.TakenCrashed)
	}
	if d := plan(probe.Add(-time.Millisecond)); len(failed(d)) != 1 || failed(d)[0] != "n1" {
		t.Fatalf("a verdict from after the node's last change was ignored: %+v", d.Writes)
	}
}

// failed lists the nodes a decision marks failed.
func failed(d Decision) []string {
	var out []string
	for _, w := range d.Writes {
		if mf, ok := w.Cmd.(fsm.MarkFailed); ok {
			out = append(out, mf.ID)
		}
	}
	return out
}
