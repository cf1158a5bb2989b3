package gatewaytest

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTemplatesRenderValidJSON(t *testing.T) {
	p, err := loadPayloads()
	if err != nil {
		t.Fatal(err)
	}
	args := renderArgs{guildID: guildID(12345), guildIndex: 12345, messageID: 1300000000000000001}
	tmpls := map[string]*dispatchTemplate{"GUILD_CREATE": p.guildCreate}
	for dm := 0; dm < 2; dm++ {
		for c := 0; c < 2; c++ {
			tmpls["MESSAGE_CREATE"+strings.Repeat("/dm", dm)+strings.Repeat("/content", c)] = p.message[dm][c]
		}
	}
	for name, tm := range tmpls {
		b := tm.render(nil, 77, &args)
		var env struct {
			T  string                     `json:"t"`
			S  int64                      `json:"s"`
			Op int                        `json:"op"`
			D  map[string]json.RawMessage `json:"d"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, b)
		}
		if env.Op != 0 || env.S != 77 || !strings.HasPrefix(name, env.T) {
			t.Fatalf("%s: envelope %+v", name, env)
		}
		if strings.Contains(string(b), "{{") {
			t.Fatalf("%s: placeholder left: %s", name, b)
		}
		if strings.HasPrefix(name, "MESSAGE_CREATE") && string(env.D["id"]) != `"1300000000000000001"` {
			t.Fatalf("%s: id %s", name, env.D["id"])
		}
	}
	if _, err := compileTemplate([]byte(`{"a":"{{nope}}"}`)); err == nil {
		t.Fatal("unknown placeholder accepted")
	}
	if _, err := compileTemplate([]byte(`{"a":"{{guild_id"}`)); err == nil {
		t.Fatal("unterminated placeholder accepted")
	}
	ready, err := p.renderReady(1, readyFields{v: 10, sessionID: "abc", resumeURL: "ws://x/resume", guildIDs: []uint64{guildID(0), guildID(3)}, shard: []int{0, 3}})
	if err != nil || !json.Valid(ready) {
		t.Fatalf("READY: %v %s", err, ready)
	}
}

func TestGuildRouting(t *testing.T) {
	for _, total := range []int{1, 2, 3, 7, 16, 100} {
		sum := 0
		for k := 0; k < total; k++ {
			n := guildCount(250, k, total)
			sum += n
			for j := 0; j < n; j++ {
				id := guildID(k + j*total)
				if int(id>>22)%total != k {
					t.Fatalf("guild %d routes to %d, want shard %d of %d", id, (id>>22)%uint64(total), k, total)
				}
			}
		}
		if sum != 250 {
			t.Fatalf("total %d: %d guilds across shards, want 250", total, sum)
		}
	}
	if guildID(0) == 0 {
		t.Fatal("guild id 0")
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Shards: -1}, "Options.Shards"},
		{Options{SendWindow: -1}, "Options.SendWindow"},
		{Options{EventRate: -1}, "Options.EventRate"},
		{Options{HeartbeatInterval: 500}, "Options.HeartbeatInterval"},
		{Options{Guilds: -2}, "Options.Guilds"},
	} {
		if _, err := NewServer(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %s", tc.o, err, tc.want)
		}
	}
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.Token != "test-token" || o.Shards != 1 || o.Guilds != 1 || o.HeartbeatTimeout != o.HeartbeatInterval/2 || o.SendLimit != 120 || o.MaxGuildsPerShard != 2500 {
		t.Fatalf("defaults %+v", o)
	}
}
