package event

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

func TestShardsTravelAsRanges(t *testing.T) {
	e := Event{Kind: Failover, Subject: "b", Shards: Shards{3, 0, 1, 2, 7, 9, 10}}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if got, want := back.Shards.String(), "0-3,7,9-10"; got != want {
		t.Fatalf("shards %q, want %q (json %s)", got, want, b)
	}
	if !slices.Equal(back.Shards, Shards{0, 1, 2, 3, 7, 9, 10}) {
		t.Fatalf("shards %v", back.Shards)
	}
	if back.Kind != Failover || back.Subject != "b" {
		t.Fatalf("round trip lost fields: %+v", back)
	}
}

func TestParseRangesRefusesNonsense(t *testing.T) {
	for _, s := range []string{"a", "3-1", "-1", "1,,2", "0-99999999"} {
		if _, err := ParseRanges(s); err == nil {
			t.Errorf("ParseRanges(%q) accepted it", s)
		}
	}
}

func TestLogKeepsTheLastAndMergeOrders(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	a, b := NewLog("a", clock), NewLog("b", clock)
	for i := range Keep + 5 {
		a.Notify(Event{Kind: HandedOff, Shards: Shards{i}})
		if i%10 == 0 {
			b.Notify(Event{Kind: NodeJoined, Subject: "c"})
		}
	}
	la := a.List()
	if len(la) != Keep || la[0].Shards[0] != 5 || la[0].Node != "a" {
		t.Fatalf("log kept %d events starting with %+v", len(la), la[0])
	}
	m := Merge([][]Event{la, b.List()}, 10)
	if len(m) != 10 || !slices.IsSortedFunc(m, func(x, y Event) int { return x.At.Compare(y.At) }) {
		t.Fatalf("merge: %d events, sorted %v", len(m), slices.IsSortedFunc(m, func(x, y Event) int { return x.At.Compare(y.At) }))
	}
}

func TestEveryKindHasWords(t *testing.T) {
	for _, k := range []Kind{LeaderElected, NodeJoined, NodeBack, NodeFailed, NodeRemoved, Revoking, Failover, HandedOff, Resumed, LeaseLost, FlagOverridden, TokenRejected} {
		e := Event{Kind: k, Subject: "n", Shards: Shards{1}, Cause: "why"}
		if s := e.String(); s == "" || s == string(k)+" why" && k != FlagOverridden {
			t.Errorf("kind %s has no wording: %q", k, s)
		}
	}
}
