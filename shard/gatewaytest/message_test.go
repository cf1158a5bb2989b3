package gatewaytest

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

type typedMessageD struct {
	ID        string            `json:"id"`
	Content   string            `json:"content"`
	GuildID   string            `json:"guild_id"`
	ChannelID string            `json:"channel_id"`
	Mentions  []json.RawMessage `json:"mentions"`
	Embeds    []json.RawMessage `json:"embeds"`
	Author    struct {
		ID string `json:"id"`
	} `json:"author"`
}

// A typed message reaches the shard's session as the next dispatch, in the shard's
// own guild, with its content as typed, and is replayed on RESUME like any other;
// by method and over HTTP (what discluster fake-discord serves).
func TestSendMessage(t *testing.T) {
	s := newTestServer(t, Options{Shards: 2})
	if err := s.SendMessage(1, "!ping"); !errors.Is(err, ErrNoLiveConnection) {
		t.Fatalf("a message to a shard with no connection: %v, want ErrNoLiveConnection", err)
	}
	c, ready, last := start(t, s, "v=10&encoding=json", []int{1, 2})
	if err := s.SendMessage(1, "!ping"); err != nil {
		t.Fatal(err)
	}
	p := c.expect(opDispatch, "MESSAGE_CREATE")
	if p.seq() != last+1 {
		t.Fatalf("MESSAGE_CREATE seq %d after %d", p.seq(), last)
	}
	var m typedMessageD
	if err := json.Unmarshal(p.D, &m); err != nil {
		t.Fatal(err)
	}
	if m.Content != "!ping" || m.GuildID != gid(1) || m.ID == "" || m.ChannelID == "" || m.Author.ID == "" || len(m.Mentions) != 0 || len(m.Embeds) != 0 {
		t.Fatalf("the typed message: %s", p.D)
	}

	if code := post(t, "http://"+s.base+"/fake/shards/1/message?content="+url.QueryEscape("!members please")); code != http.StatusNoContent {
		t.Fatalf("POST message: %d", code)
	}
	p = c.expect(opDispatch, "MESSAGE_CREATE")
	if err := json.Unmarshal(p.D, &m); err != nil || m.Content != "!members please" || p.seq() != last+2 {
		t.Fatalf("the message posted over HTTP: seq %d, %s (%v)", p.seq(), p.D, err)
	}
	if code := post(t, "http://"+s.base+"/fake/shards/0/message?content=x"); code != http.StatusNotFound {
		t.Fatalf("POST message to a shard with no connection: %d, want 404", code)
	}
	if err := s.SendMessage(1, strings.Repeat("x", 2001)); err == nil {
		t.Fatal("a message over 2000 characters was sent")
	}

	// RESUME on another connection (which moves the session off the first) replays both.
	d := dial(t, s.ResumeURL(), "v=10&encoding=json")
	d.hello()
	d.resume(ready.SessionID, last)
	for _, want := range []string{"!ping", "!members please"} {
		p := d.expect(opDispatch, "MESSAGE_CREATE")
		if err := json.Unmarshal(p.D, &m); err != nil || m.Content != want {
			t.Fatalf("replayed %s, want content %q", p.D, want)
		}
	}
	d.expect(opDispatch, "RESUMED")
}

// Content arrives only with MESSAGE_CONTENT, messages only with GUILD_MESSAGES, as
// on Discord.
func TestSendMessageFollowsIntents(t *testing.T) {
	s := newTestServer(t, Options{Shards: 1})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	c.send(opIdentify, identifyD(defaultToken, []int{0, 1}, 1|intentGuildMessages))
	c.expect(opDispatch, "READY")
	c.expect(opDispatch, "GUILD_CREATE")
	if err := s.SendMessage(0, "!ping"); err != nil {
		t.Fatal(err)
	}
	var m typedMessageD
	if err := json.Unmarshal(c.expect(opDispatch, "MESSAGE_CREATE").D, &m); err != nil || m.Content != "" {
		t.Fatalf("content without MESSAGE_CONTENT: %q (%v)", m.Content, err)
	}

	s2 := newTestServer(t, Options{Shards: 1})
	c2 := dial(t, s2.GatewayURL(), "v=10&encoding=json")
	c2.hello()
	c2.send(opIdentify, identifyD(defaultToken, []int{0, 1}, 1))
	c2.expect(opDispatch, "READY")
	c2.expect(opDispatch, "GUILD_CREATE")
	if err := s2.SendMessage(0, "!ping"); !errors.Is(err, ErrNoMessages) {
		t.Fatalf("a message to a session without GUILD_MESSAGES: %v, want ErrNoMessages", err)
	}
}
