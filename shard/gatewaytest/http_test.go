package gatewaytest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func gatewayBotRequest(t testing.TB, s *Server, auth string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, s.APIURL()+"/gateway/bot", nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func gatewayBotStatus(t testing.TB, s *Server, token string) int {
	t.Helper()
	resp, _ := gatewayBotRequest(t, s, "Bot "+token)
	return resp.StatusCode
}

func getGatewayBot(t testing.TB, s *Server, token string) gatewayBotResponse {
	t.Helper()
	resp, body := gatewayBotRequest(t, s, "Bot "+token)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/gateway/bot: %d %s", resp.StatusCode, body)
	}
	var gb gatewayBotResponse
	if err := json.Unmarshal(body, &gb); err != nil {
		t.Fatal(err)
	}
	return gb
}

func TestGatewayBot(t *testing.T) {
	s := newTestServer(t, Options{Token: "s3cret-token", Shards: 16, MaxConcurrency: 4, SessionStartLimit: 50})
	gb := getGatewayBot(t, s, "s3cret-token")
	want := sessionStartLimit{Total: 50, Remaining: 50, MaxConcurrency: 4}
	got := gb.SessionStartLimit
	if gb.URL != s.GatewayURL() || gb.Shards != 16 || got.Total != want.Total || got.Remaining != want.Remaining || got.MaxConcurrency != want.MaxConcurrency {
		t.Fatalf("/gateway/bot = %+v", gb)
	}
	if got.ResetAfter <= 0 || got.ResetAfter > (24*time.Hour).Milliseconds() {
		t.Fatalf("reset_after %d ms", got.ResetAfter)
	}
	for _, auth := range []string{"", "Bot wrong", "s3cret-token", "Bearer s3cret-token", "bot s3cret-token"} {
		resp, body := gatewayBotRequest(t, s, auth)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("auth %q: status %d", auth, resp.StatusCode)
		}
		var e apiError
		if err := json.Unmarshal(body, &e); err != nil || e.Message != "401: Unauthorized" || e.Code != 0 {
			t.Fatalf("auth %q: body %s", auth, body)
		}
		if strings.Contains(string(body), "s3cret") {
			t.Fatalf("the token leaked into a response: %s", body)
		}
	}
	if n := s.Stats().GatewayBotRequests; n != 6 {
		t.Fatalf("GatewayBotRequests %d, want 6", n)
	}
}

func TestSessionStartWindowRefills(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	s := newTestServer(t, Options{SessionStartLimit: 3, SessionStartResetAfter: time.Hour})
	s.setClock(clock.now)
	// NewServer started the window on the real clock; move the fake clock
	// past it so the window restarts on the fake one.
	clock.advance(24 * 365 * time.Hour)
	start(t, s, "v=10&encoding=json", nil)
	if r := getGatewayBot(t, s, defaultToken).SessionStartLimit; r.Remaining != 2 {
		t.Fatalf("remaining %d after one identify, want 2", r.Remaining)
	}
	clock.advance(time.Hour)
	gb := getGatewayBot(t, s, defaultToken).SessionStartLimit
	if gb.Remaining != 3 || gb.ResetAfter <= 0 || gb.ResetAfter > time.Hour.Milliseconds() {
		t.Fatalf("after the window: %+v", gb)
	}
}

func post(t testing.TB, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestStatsEndpointAndHTTPInjectors(t *testing.T) {
	s := newTestServer(t, Options{Shards: 2})
	base := strings.TrimSuffix(s.StatsURL(), "/stats")
	c, ready, last := start(t, s, "v=10&encoding=json", []int{1, 2})

	if code := post(t, base+"/shards/0/reconnect"); code != http.StatusNotFound {
		t.Fatalf("reconnect of a shard with no connection: %d, want 404", code)
	}
	for _, bad := range []string{"/shards/x/drop", "/shards/1/close?code=abc", "/shards/1/invalidate?resumable=maybe", "/acks?enabled=perhaps", "/shards/1/close?code=1005"} {
		if code := post(t, base+bad); code != http.StatusBadRequest {
			t.Fatalf("POST %s: %d, want 400", bad, code)
		}
	}

	if code := post(t, base+"/shards/1/reconnect"); code != http.StatusNoContent {
		t.Fatalf("reconnect: %d", code)
	}
	c.expect(opReconnect, "")

	if code := post(t, base+"/shards/1/heartbeat"); code != http.StatusNoContent {
		t.Fatalf("heartbeat: %d", code)
	}
	c.expect(opHeartbeat, "")
	c.send(opHeartbeat, last)
	c.expect(opHeartbeatACK, "")

	if code := post(t, base+"/acks?enabled=false"); code != http.StatusNoContent {
		t.Fatalf("acks: %d", code)
	}
	c.send(opHeartbeat, last)
	await(t, s, "second heartbeat", func(st Stats) bool { return st.HeartbeatsReceived == 2 })
	post(t, base+"/acks?enabled=true")

	if code := post(t, base+"/shards/1/invalidate?resumable=true"); code != http.StatusNoContent {
		t.Fatalf("invalidate: %d", code)
	}
	p := c.expect(opInvalidSession, "")
	if string(p.D) != "true" {
		t.Fatalf("op 9 d = %s", p.D)
	}
	// Resume on the same socket, as discord.js does after op 9 true.
	c.resume(ready.SessionID, last)
	c.expect(opDispatch, "RESUMED")

	if code := post(t, base+"/shards/1/close?code=4000"); code != http.StatusNoContent {
		t.Fatalf("close: %d", code)
	}
	c.expectClose(4000)

	d := dial(t, s.ResumeURL(), "v=10&encoding=json")
	d.hello()
	d.resume(ready.SessionID, last+1)
	d.expect(opDispatch, "RESUMED")
	if code := post(t, base+"/shards/1/drop"); code != http.StatusNoContent {
		t.Fatalf("drop: %d", code)
	}
	if _, err := d.read(); err == nil {
		t.Fatal("read after drop succeeded")
	}

	resp, err := http.Get(s.StatsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	sess := st.Sessions[ready.SessionID]
	if st.ReconnectsSent != 1 || st.HeartbeatRequestsSent != 1 || st.HeartbeatRequestsAnswered != 1 ||
		st.HeartbeatACKsSent != 1 || st.InvalidSessionsSent != 1 || st.Closes[4000] != 1 || st.Drops != 1 ||
		st.Resumes != 2 || st.Shards[1].MaxLive != 1 || sess.Ended || sess.ShardID != 1 || sess.NumShards != 2 || sess.Resumes != 2 {
		b, _ := json.MarshalIndent(st, "", " ")
		t.Fatalf("stats JSON: %s", b)
	}
}
