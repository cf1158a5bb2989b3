package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A command reaches the backend for its shard, by id or by guild; a payload a bot
// may not send, a malformed body or a bad id changes nothing and says why; each
// refusal of the backend comes back with its status, code and, when worth retrying,
// Retry-After.
func TestSendRoutes(t *testing.T) {
	ctx := context.Background()
	b := &stub{}
	c := serve(t, b)
	presence := Command{Op: 3, D: json.RawMessage(`{"since":null,"activities":[],"status":"idle","afk":false}`)}
	if s, err := c.Send(ctx, Target{Shard: 5}, presence); err != nil || !s.Sent || s.Node != "b" {
		t.Fatalf("send to shard 5: %+v, %v", s, err)
	}
	if _, err := c.Send(ctx, Target{Guild: 81384788765712384, ByGuild: true}, presence); err != nil {
		t.Fatalf("send by guild: %v", err)
	}
	if len(b.sent) != 2 || b.sent[0].Shard != 5 || !b.sent[1].ByGuild || b.sent[1].Guild != 81384788765712384 {
		t.Fatalf("the backend got %+v", b.sent)
	}

	for _, tc := range []struct {
		name, path, body, code string
	}{
		{"identify", "/v1/shards/0/send", `{"op":2,"d":{"token":"x"}}`, CodeBadCommand},
		{"heartbeat", "/v1/shards/0/send", `{"op":1,"d":{}}`, CodeBadCommand},
		{"d not an object", "/v1/shards/0/send", `{"op":3,"d":5}`, CodeBadCommand},
		{"no d", "/v1/shards/0/send", `{"op":3}`, CodeBadCommand},
		{"unknown field", "/v1/shards/0/send", `{"op":3,"d":{},"s":1}`, CodeBadRequest},
		{"not JSON", "/v1/shards/0/send", `op=3`, CodeBadRequest},
		{"bad shard id", "/v1/shards/-1/send", `{"op":3,"d":{}}`, CodeBadRequest},
		{"bad guild id", "/v1/guilds/abc/send", `{"op":3,"d":{}}`, CodeBadRequest},
	} {
		_, err := c.DoBody(ctx, http.MethodPost, tc.path, []byte(tc.body))
		var ae *Error
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != tc.code {
			t.Errorf("%s: %v, want 400 %s", tc.name, err, tc.code)
		}
	}
	if len(b.sent) != 2 {
		t.Fatalf("a refused body reached the backend: %+v", b.sent)
	}

	for _, tc := range []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{fmt.Errorf("%w: shard 99", ErrUnknownShard), http.StatusNotFound, CodeUnknownShard, ""},
		{&RetryError{Err: fmt.Errorf("%w: shard 1", ErrRateLimited), After: 2500 * time.Millisecond}, http.StatusTooManyRequests, CodeRateLimited, "3"},
		{&RetryError{Err: fmt.Errorf("%w: shard 1", ErrNotReady), After: time.Second}, http.StatusServiceUnavailable, CodeNotReady, "1"},
		{fmt.Errorf("%w: moving", ErrOwnerMoving), http.StatusServiceUnavailable, CodeOwnerMoving, "1"},
		{fmt.Errorf("%w: 5000 bytes", ErrPayloadTooLarge), http.StatusRequestEntityTooLarge, CodePayloadTooLarge, ""},
	} {
		c := serve(t, &stub{sendErr: tc.err})
		req, _ := http.NewRequest(http.MethodPost, "http://"+c.Addr+"/v1/shards/1/send", strings.NewReader(`{"op":3,"d":{}}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Retry-After") != tc.retryAfter {
			t.Errorf("%v: HTTP %d Retry-After %q, want %d %q", tc.err, resp.StatusCode, resp.Header.Get("Retry-After"), tc.status, tc.retryAfter)
		}
		_, err = c.Send(ctx, Target{Shard: 1}, Command{Op: 3, D: json.RawMessage(`{}`)})
		var ae *Error
		if !errors.As(err, &ae) || ae.Code != tc.code {
			t.Errorf("%v: the client got %v, want code %s", tc.err, err, tc.code)
		}
	}
}

// Commands change what the bot does: without the token they are refused like a drain.
func TestSendNeedsTheToken(t *testing.T) {
	b := &stub{}
	c := serveWith(t, b, Auth{Token: "s3cret"})
	_, err := c.Send(context.Background(), Target{Shard: 0}, Command{Op: 3, D: json.RawMessage(`{}`)})
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || len(b.sent) != 0 {
		t.Fatalf("a command without the token: %v, sent %v", err, b.sent)
	}
	c.Token = "s3cret"
	if _, err := c.Send(context.Background(), Target{Shard: 0}, Command{Op: 3, D: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
}
