package gatewaytest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// documented reads one of the shared frames in Discord's documented shape.
func documented(t *testing.T, file string) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "gateway", file))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return v
}

// sameShape reports where got lacks a field of want, or holds it with another JSON
// type. A field documented as null may hold anything (Discord's nullable fields), and
// an array is compared by its first element.
func sameShape(path string, want, got any) []string {
	switch w := want.(type) {
	case nil:
		return nil
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: an object, got %T", path, got)}
		}
		var out []string
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				out = append(out, fmt.Sprintf("%s.%s: missing", path, k))
				continue
			}
			out = append(out, sameShape(path+"."+k, wv, gv)...)
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: an array, got %T", path, got)}
		}
		if len(w) > 0 && len(g) > 0 {
			return sameShape(path+"[0]", w[0], g[0])
		}
		return nil
	default:
		if fmt.Sprintf("%T", want) != fmt.Sprintf("%T", got) {
			return []string{fmt.Sprintf("%s: %T (%v), got %T (%v)", path, want, want, got, got)}
		}
		return nil
	}
}

func checkShape(t *testing.T, file string, p payload) {
	t.Helper()
	var got any
	if err := json.Unmarshal(p.raw, &got); err != nil {
		t.Fatal(err)
	}
	for _, diff := range sameShape(file, documented(t, file), got) {
		t.Errorf("the fake's frame differs from Discord's documented shape: %s\n  fake: %s", diff, p.raw)
	}
}

// The fake's frames carry every field of Discord's documented frames, with the same
// JSON types: the fixtures the client's own tests decode (testdata/gateway).
func TestFakeFramesHaveDiscordsShape(t *testing.T) {
	s := newTestServer(t, Options{Shards: 1, Guilds: 2, EventRate: 50})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	checkShape(t, "hello.json", c.hello())
	c.send(opHeartbeat, nil)
	checkShape(t, "heartbeat_ack.json", c.expect(opHeartbeatACK, ""))
	c.identify([]int{0, 1})
	ready := c.expect(opDispatch, "READY")
	checkShape(t, "ready.json", ready)
	var r readyD
	if err := json.Unmarshal(ready.D, &r); err != nil {
		t.Fatal(err)
	}
	var seq int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := c.mustRead()
		if p.Op == opDispatch {
			seq = p.seq()
		}
		if p.Op == opDispatch && p.name() == "MESSAGE_CREATE" {
			checkShape(t, "message_create.json", p)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no MESSAGE_CREATE within 10s")
		}
	}
	c.ws.CloseNow()
	c2 := dial(t, r.ResumeGatewayURL, "v=10&encoding=json")
	c2.hello()
	c2.resume(r.SessionID, seq)
	for {
		p := c2.mustRead()
		if p.Op == opDispatch && p.name() == "RESUMED" {
			checkShape(t, "resumed.json", p)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no RESUMED within 10s")
		}
	}
}

func TestSameShapeCatchesDifferences(t *testing.T) {
	var want, got any
	json.Unmarshal([]byte(`{"op":0,"d":{"id":"1","n":null,"list":[{"a":1}],"flag":true}}`), &want)
	json.Unmarshal([]byte(`{"op":0,"d":{"id":1,"n":5,"list":[{"b":1}]}}`), &got)
	diffs := sameShape("x", want, got)
	if len(diffs) != 3 { // id's type, list[0].a missing, flag missing; n may be anything
		t.Fatalf("diffs %q, want 3", diffs)
	}
	if d := sameShape("x", want, want); len(d) != 0 {
		t.Fatalf("a frame differs from itself: %q", d)
	}
}
