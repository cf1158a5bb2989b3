package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/discluster/discluster/node/event"
)

// The stream carries the backend's messages in order, each as its kind and JSON,
// behind the read rule of the token.
func TestEventStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := serveWith(t, &stub{}, Auth{Token: "s3cret", Reads: true})
	var ae *Error
	if err := c.Watch(ctx, func(string, []byte) error { return nil }); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("a stream without the token: %v, want 401", err)
	}
	c.Token = "s3cret"
	var kinds []string
	var moved ShardStatus
	done := errors.New("done")
	err := c.Watch(ctx, func(kind string, data []byte) error {
		kinds = append(kinds, kind)
		if kind == StreamShard {
			if err := json.Unmarshal(data, &moved); err != nil {
				return err
			}
			return done
		}
		return nil
	})
	if !errors.Is(err, done) || len(kinds) != 2 || kinds[0] != StreamSnapshot || moved.Node != "b" || moved.State != "resuming" {
		t.Fatalf("got %v, %+v, %v; want a snapshot then shard 0 resuming on b", kinds, moved, err)
	}
}

// Diff says what changed and nothing else: a new leader, a member joined, changed and
// gone, a shard moved or changed state (not its seq), and the newer events.
func TestDiff(t *testing.T) {
	t0 := time.Unix(100, 0)
	old := Status{Leader: "a", Term: 2,
		Members: []MemberStatus{{ID: "a", State: "alive", Shards: 2}, {ID: "b", State: "alive", Shards: 2}, {ID: "c", State: "alive"}},
		Shards:  []ShardStatus{{Shard: 0, Node: "a", State: "ready", Seq: 5}, {Shard: 1, Node: "b", State: "ready", Seq: 9}},
		Events:  []event.Event{{Kind: event.NodeJoined, At: t0}}}
	cur := Status{Leader: "a", Term: 2,
		Members: []MemberStatus{{ID: "a", State: "alive", Shards: 2}, {ID: "b", State: "failed", Shards: 2}, {ID: "d", State: "alive"}},
		Shards:  []ShardStatus{{Shard: 0, Node: "a", State: "ready", Seq: 50}, {Shard: 1, Node: "a", State: "resuming", Seq: 9}},
		Events:  []event.Event{{Kind: event.NodeJoined, At: t0}, {Kind: event.NodeFailed, At: t0.Add(time.Second)}}}
	var got []string
	err := Diff(old, cur, func(kind string, data any) error {
		switch d := data.(type) {
		case MemberStatus:
			kind += ":" + d.ID
		case MemberGone:
			kind += ":" + d.ID
		case ShardStatus:
			kind += ":" + d.Node
		case event.Event:
			kind += ":" + string(d.Kind)
		}
		got = append(got, kind)
		return nil
	})
	want := []string{"member:b", "member:d", "member_gone:c", "shard:a", "event:node_failed"}
	if err != nil || len(got) != len(want) {
		t.Fatalf("diff %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("diff %v, want %v", got, want)
		}
	}
	got = nil
	Diff(cur, cur, func(kind string, _ any) error { got = append(got, kind); return nil })
	if len(got) != 0 {
		t.Fatalf("no change, yet %v", got)
	}

	// The overview: the shard configuration arrives, the lease's end moves (no message).
	next := cur
	next.Config = &ShardConfig{TotalShards: 2}
	next.Applied, next.Lease.Until = 99, t0.Add(time.Hour)
	var view Status
	view.Apply(StreamSnapshot, mustJSON(t, cur))
	got = nil
	Diff(cur, next, func(kind string, data any) error {
		got = append(got, kind)
		return view.Apply(kind, mustJSON(t, data))
	})
	if len(got) != 1 || got[0] != StreamOverview || view.Config == nil || view.Config.TotalShards != 2 || len(view.Shards) != 2 {
		t.Fatalf("a new shard configuration: %v, the view %+v", got, view)
	}
	// A member whose sink starts failing is news; its backlog moving is not.
	failing := next
	failing.Members = append([]MemberStatus(nil), next.Members...)
	failing.Members[0].Sink = &Sink{Failing: true, Backlog: 5}
	got = nil
	Diff(next, failing, func(kind string, _ any) error { got = append(got, kind); return nil })
	if len(got) != 1 || got[0] != StreamMember {
		t.Fatalf("a failing sink: %v, want one member message", got)
	}
	more := failing
	more.Members = append([]MemberStatus(nil), failing.Members...)
	more.Members[0].Sink = &Sink{Failing: true, Backlog: 500}
	got = nil
	Diff(failing, more, func(kind string, _ any) error { got = append(got, kind); return nil })
	if len(got) != 0 {
		t.Fatalf("only the backlog moved, yet %v", got)
	}
	after := next
	after.Applied, after.Lease.Until = 100, t0.Add(2*time.Hour)
	got = nil
	Diff(next, after, func(kind string, _ any) error { got = append(got, kind); return nil })
	if len(got) != 0 {
		t.Fatalf("only the applied index and the lease's end moved, yet %v", got)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
