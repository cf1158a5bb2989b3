package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// stub is a Backend with canned answers.
type stub struct {
	healthy  bool
	drainErr error
	undrain  error
	drained  []string
	sendErr  error
	sent     []Target
}

func (s *stub) Watch(ctx context.Context, emit Emit) error {
	if err := emit(StreamSnapshot, Status{Node: "a", Leader: "a", Shards: []ShardStatus{{Shard: 0, Node: "a", State: "ready"}}}); err != nil {
		return err
	}
	if err := emit("", nil); err != nil { // a tick: no message
		return err
	}
	if err := emit(StreamShard, ShardStatus{Shard: 0, Node: "b", State: "resuming"}); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *stub) Send(_ context.Context, t Target, c Command) (Sent, error) {
	s.sent = append(s.sent, t)
	if s.sendErr != nil {
		return Sent{}, s.sendErr
	}
	return Sent{Sent: true, Shard: t.Shard, Node: "b"}, nil
}

func (s *stub) Status(_ context.Context, all bool) Status {
	st := Status{Node: "a", Leader: "a"}
	if all {
		st.Members = []MemberStatus{{ID: "gone", Gossip: "left"}}
	}
	return st
}
func (s *stub) Health() Health { return Health{Node: "a", Healthy: s.healthy} }
func (s *stub) Drain(_ context.Context, n string) (Drained, error) {
	s.drained = append(s.drained, n)
	return Drained{Draining: n, Shards: 3, State: "draining"}, s.drainErr
}
func (s *stub) Undrain(context.Context, string) error { return s.undrain }
func (s *stub) Keyring(_ context.Context, op, key string) (Keyring, error) {
	s.drained = append(s.drained, op+":"+key)
	return Keyring{Nodes: 1, Responded: 1, Keys: map[string]int{"k": 1}}, nil
}

func serve(t *testing.T, b Backend) *Client {
	t.Helper()
	return serveWith(t, b, Auth{InsecureWrites: true})
}

func serveWith(t *testing.T, b Backend, auth Auth) *Client {
	t.Helper()
	srv := httptest.NewServer(Handler(b, auth))
	t.Cleanup(srv.Close)
	return NewClient(strings.TrimPrefix(srv.URL, "http://"))
}

// The routes answer each kind of backend error with its HTTP status and a code a
// program can branch on, and the client hands both back.
func TestRoutesMapErrorsToStatusAndCode(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"unknown node", fmt.Errorf("%w: no member %q", ErrUnknownNode, "x"), http.StatusNotFound, CodeUnknownNode},
		{"refused", fmt.Errorf("%w: cannot drain", ErrRefused), http.StatusBadRequest, CodeRefused},
		{"no leader", errors.New("no leader"), http.StatusServiceUnavailable, CodeUnavailable},
	} {
		c := serve(t, &stub{drainErr: tc.err})
		_, err := c.Drain(ctx, "x")
		var ae *Error
		if !errors.As(err, &ae) || ae.Status != tc.status || ae.Code != tc.code || !strings.Contains(ae.Error(), tc.err.Error()) {
			t.Errorf("%s: drain answered %v (%+v), want HTTP %d code %s with the message", tc.name, err, ae, tc.status, tc.code)
		}
	}
	c := serve(t, &stub{undrain: fmt.Errorf("%w: not draining", ErrRefused)})
	var ae *Error
	if err := c.Undrain(ctx, "b"); !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != CodeRefused {
		t.Errorf("undrain of a node not draining: %v, want 409 refused", err)
	}
}

func TestClientReadsStatusDrainAndHealth(t *testing.T) {
	ctx := context.Background()
	b := &stub{healthy: true}
	c := serve(t, b)
	st, err := c.Status(ctx)
	if err != nil || st.Node != "a" || st.Leader != "a" || len(st.Members) != 0 {
		t.Fatalf("status %+v, %v", st, err)
	}
	if st, err := c.StatusAll(ctx); err != nil || len(st.Members) != 1 {
		t.Fatalf("status?all=true %+v, %v", st, err)
	}
	d, err := c.Drain(ctx, "node/with slash")
	if err != nil || d.Draining != "node/with slash" || d.Shards != 3 || b.drained[0] != "node/with slash" {
		t.Fatalf("drain %+v, %v (backend saw %q)", d, err, b.drained)
	}
	if h, err := c.Health(ctx); err != nil || !h.Healthy {
		t.Fatalf("health %+v, %v", h, err)
	}
	b.healthy = false
	h, err := c.Health(ctx)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || h.Node != "a" || h.Healthy {
		t.Fatalf("unhealthy node: %+v, %v; want its health with a 503", h, err)
	}
}

func TestClientSaysWhenNoAgentAnswers(t *testing.T) {
	_, err := NewClient("127.0.0.1:1").Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot reach an agent at 127.0.0.1:1") {
		t.Fatalf("no agent: %v", err)
	}
}

// Who may call what: on loopback reads are open and writes need the token; anywhere
// else every route but /healthz needs it; with no token, writes are refused unless
// insecure writes were asked for. A wrong token is as good as none.
func TestAuth(t *testing.T) {
	ctx := context.Background()
	code := func(err error) string {
		var ae *Error
		if err == nil {
			return "ok"
		}
		if errors.As(err, &ae) {
			return ae.Code
		}
		return err.Error()
	}
	for _, tc := range []struct {
		name                      string
		auth                      Auth
		token                     string
		status, drain, healthWant string
	}{
		{"loopback, no token set", Auth{}, "", "ok", CodeForbidden, "ok"},
		{"loopback, insecure writes", Auth{InsecureWrites: true}, "", "ok", "ok", "ok"},
		{"loopback, token set, none sent", Auth{Token: "s3cret"}, "", "ok", CodeUnauthorized, "ok"},
		{"loopback, token sent", Auth{Token: "s3cret"}, "s3cret", "ok", "ok", "ok"},
		{"loopback, wrong token", Auth{Token: "s3cret"}, "s3cre", "ok", CodeUnauthorized, "ok"},
		{"network, none sent", Auth{Token: "s3cret", Reads: true}, "", CodeUnauthorized, CodeUnauthorized, "ok"},
		{"network, token sent", Auth{Token: "s3cret", Reads: true}, "s3cret", "ok", "ok", "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &stub{healthy: true}
			c := serveWith(t, b, tc.auth)
			c.Token = tc.token
			_, err := c.Status(ctx)
			if got := code(err); got != tc.status {
				t.Errorf("status: %s, want %s", got, tc.status)
			}
			_, err = c.Drain(ctx, "n")
			if got := code(err); got != tc.drain {
				t.Errorf("drain: %s, want %s", got, tc.drain)
			}
			if tc.drain != "ok" && len(b.drained) != 0 {
				t.Errorf("a refused drain reached the backend")
			}
			_, err = c.Health(ctx)
			if got := code(err); got != tc.healthWant {
				t.Errorf("healthz: %s, want %s", got, tc.healthWant)
			}
		})
	}
}

// A body over MaxBody is refused before a route reads it, and an unknown route is a
// 404 with a code.
func TestLimits(t *testing.T) {
	c := serve(t, &stub{healthy: true})
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.Addr+"/v1/drain/n", strings.NewReader(strings.Repeat("x", MaxBody+1)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a %d-byte body: HTTP %d", MaxBody+1, resp.StatusCode)
	}
	_, err = c.Do(context.Background(), http.MethodGet, "/v1/nosuch")
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Code != CodeNotFound {
		t.Errorf("unknown route: %v", err)
	}
}

// The keyring routes are writes (listing shows the gossip's secret), and a malformed
// body is a 400 with a code that reaches no backend.
func TestKeyringRoutes(t *testing.T) {
	ctx := context.Background()
	b := &stub{}
	c := serveWith(t, b, Auth{Token: "s3cret"})
	var ae *Error
	if _, err := c.Keyring(ctx, "list", ""); !errors.As(err, &ae) || ae.Code != CodeUnauthorized {
		t.Fatalf("listing without the token: %v", err)
	}
	c.Token = "s3cret"
	if k, err := c.Keyring(ctx, "install", "a2V5"); err != nil || k.Keys["k"] != 1 || b.drained[0] != "install:a2V5" {
		t.Fatalf("install: %+v %v (backend saw %q)", k, err, b.drained)
	}
	for _, body := range []string{`{"op":"explode","key":"x"}`, `{"op":"use"`, `{"op":"use","key":"x","extra":1}`, `[]`} {
		_, err := c.DoBody(ctx, http.MethodPost, "/v1/keyring", []byte(body))
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != CodeBadRequest {
			t.Errorf("body %s: %v, want a 400 bad_request", body, err)
		}
	}
	if len(b.drained) != 1 {
		t.Errorf("malformed bodies reached the backend: %q", b.drained)
	}
}

// FuzzKeyringBody: whatever body POST /v1/keyring gets, the answer is a 400 or the
// backend's, never a 500 or a panic, and only a well-formed request reaches the
// backend.
func FuzzKeyringBody(f *testing.F) {
	for _, s := range []string{`{"op":"install","key":"a2V5"}`, `{"op":"use"}`, `{`, `null`, `{"op":1}`, `{"op":"remove","key":"x","y":2}`} {
		f.Add([]byte(s))
	}
	b := &stub{}
	h := Handler(b, Auth{InsecureWrites: true})
	f.Fuzz(func(t *testing.T, body []byte) {
		before := len(b.drained)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/keyring", bytes.NewReader(body)))
		switch rec.Code {
		case http.StatusOK:
			if len(b.drained) != before+1 {
				t.Fatalf("a 200 without a backend call")
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if len(b.drained) != before {
				t.Fatalf("a refused body %q reached the backend", body)
			}
		default:
			t.Fatalf("body %q: HTTP %d", body, rec.Code)
		}
	})
}
