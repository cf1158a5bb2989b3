package gatewaytest

import (
	"encoding/json"
	"regexp"
	"strconv"
	"testing"
)

func TestReadyAndGuildRouting(t *testing.T) {
	s := newTestServer(t, Options{Shards: 3, Guilds: 7})
	for _, tc := range []struct {
		name       string
		shard      []int
		wantGuilds []int // guild indexes
	}{
		{"shard 1 of the recommended 3", []int{1, 3}, []int{1, 4}},
		{"shard 0 of 3", []int{0, 3}, []int{0, 3, 6}},
		{"client picks 2 shards", []int{1, 2}, []int{1, 3, 5}},
		{"no shard field is [0,1]", nil, []int{0, 1, 2, 3, 4, 5, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s.GatewayURL(), "v=10&encoding=json")
			hello := c.hello()
			var h struct {
				HeartbeatInterval int64 `json:"heartbeat_interval"`
			}
			if err := json.Unmarshal(hello.D, &h); err != nil || h.HeartbeatInterval != 41250 {
				t.Fatalf("HELLO d = %s, want heartbeat_interval 41250", hello.D)
			}
			if hello.S != nil || hello.T != nil {
				t.Fatalf("HELLO s/t must be null: %s", hello.raw)
			}
			c.identify(tc.shard)
			p := c.expect(opDispatch, "READY")
			if p.seq() != 1 {
				t.Fatalf("READY s = %d, want 1", p.seq())
			}
			var r readyD
			if err := json.Unmarshal(p.D, &r); err != nil {
				t.Fatal(err)
			}
			if r.V != 10 || !r.User.Bot || r.User.ID == "" || r.Application.ID == "" {
				t.Fatalf("READY fields: %+v", r)
			}
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(r.SessionID) {
				t.Fatalf("session_id %q", r.SessionID)
			}
			if r.ResumeGatewayURL != s.ResumeURL() || r.ResumeGatewayURL == s.GatewayURL() {
				t.Fatalf("resume_gateway_url %q: want %q, distinct from %q", r.ResumeGatewayURL, s.ResumeURL(), s.GatewayURL())
			}
			total := 1
			if tc.shard != nil {
				total = tc.shard[1]
				if len(r.Shard) != 2 || r.Shard[0] != tc.shard[0] || r.Shard[1] != tc.shard[1] {
					t.Fatalf("READY shard %v, want %v", r.Shard, tc.shard)
				}
			} else if r.Shard != nil {
				t.Fatalf("READY shard %v without a shard in IDENTIFY", r.Shard)
			}
			shardID := 0
			if tc.shard != nil {
				shardID = tc.shard[0]
			}
			if len(r.Guilds) != len(tc.wantGuilds) {
				t.Fatalf("READY has %d guilds, want %d", len(r.Guilds), len(tc.wantGuilds))
			}
			for k, g := range r.Guilds {
				id, err := strconv.ParseUint(g.ID, 10, 64)
				if err != nil || !g.Unavailable {
					t.Fatalf("READY guild %+v", g)
				}
				if int(id>>22)%total != shardID || id>>22 != uint64(tc.wantGuilds[k]) {
					t.Fatalf("guild %d routes to shard %d of %d, want %d (index %d)", id, (id>>22)%uint64(total), total, shardID, tc.wantGuilds[k])
				}
			}
			for k := range r.Guilds {
				g := c.expect(opDispatch, "GUILD_CREATE")
				if g.seq() != int64(k+2) {
					t.Fatalf("GUILD_CREATE s = %d, want %d", g.seq(), k+2)
				}
				var gd struct {
					ID          string `json:"id"`
					Unavailable bool   `json:"unavailable"`
					MemberCount int    `json:"member_count"`
					Roles       []struct {
						ID   string `json:"id"`
						Name string `json:"name"`
					} `json:"roles"`
					Channels []struct {
						ID   string `json:"id"`
						Type int    `json:"type"`
					} `json:"channels"`
					Members []json.RawMessage `json:"members"`
				}
				if err := json.Unmarshal(g.D, &gd); err != nil {
					t.Fatal(err)
				}
				if gd.ID != r.Guilds[k].ID || gd.Unavailable || gd.MemberCount == 0 || len(gd.Channels) == 0 || len(gd.Members) == 0 {
					t.Fatalf("GUILD_CREATE %d: %s", k, g.D)
				}
				// Discord's @everyone role has the guild's id.
				if gd.Roles[0].Name != "@everyone" || gd.Roles[0].ID != gd.ID {
					t.Fatalf("GUILD_CREATE roles: %+v", gd.Roles)
				}
			}
		})
	}
}

func TestGatewayURLsAreDistinct(t *testing.T) {
	s := newTestServer(t, Options{})
	if s.GatewayURL() == s.ResumeURL() {
		t.Fatal("GatewayURL and ResumeURL must differ")
	}
	// Clients that append "/?v=10..." to the URL must reach the same gateway.
	c := dial(t, s.GatewayURL()+"/", "v=10&encoding=json")
	c.hello()
	c = dial(t, s.ResumeURL()+"/", "v=9")
	c.hello()
}
