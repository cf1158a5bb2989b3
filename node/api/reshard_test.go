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

func (s *stub) Reshard(context.Context, ReshardRequest) (Reshard, error) {
	return Reshard{}, errors.New("no leader")
}

func (s *stub) CancelReshard(context.Context) (Reshard, error) {
	return Reshard{}, errors.New("no leader")
}

// reshardStub is a backend that runs one reshard at a time, as the leader does.
type reshardStub struct {
	stub
	running *Reshard
	asked   []ReshardRequest
}

func (s *reshardStub) Reshard(_ context.Context, req ReshardRequest) (Reshard, error) {
	s.asked = append(s.asked, req)
	if s.running != nil {
		return Reshard{}, fmt.Errorf("%w: a reshard to %d shards runs", ErrRefused, s.running.To)
	}
	to := req.Shards
	if req.Auto {
		to = 24
	}
	s.running = &Reshard{Generation: 2, From: 16, To: to, StartedAt: time.Unix(1, 0)}
	return *s.running, nil
}

func (s *reshardStub) CancelReshard(context.Context) (Reshard, error) {
	if s.running == nil {
		return Reshard{}, fmt.Errorf("%w: no reshard runs", ErrRefused)
	}
	r := *s.running
	s.running = nil
	return r, nil
}

// POST /v1/reshard takes a count or "auto" and nothing else; the leader's refusal is
// a 409 with the refused code, and DELETE cancels; both are writes.
func TestReshardRoutes(t *testing.T) {
	ctx := context.Background()
	b := &reshardStub{}
	c := serve(t, b)
	for _, body := range []string{`{}`, `{"shards": 0}`, `{"shards": -3}`, `{"shards": "many"}`, `{"shards": 1.5}`,
		`{"shards": 32, "extra": 1}`, `[32]`, `not json`} {
		_, err := c.DoBody(ctx, http.MethodPost, "/v1/reshard", []byte(body))
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != CodeBadRequest || !strings.Contains(e.Msg, `{"shards": "auto"}`) {
			t.Errorf("body %s: got %v, want a 400 saying what the body must be", body, err)
		}
	}
	if len(b.asked) != 0 {
		t.Fatalf("bad bodies reached the backend: %+v", b.asked)
	}

	r, err := c.Reshard(ctx, ReshardRequest{Shards: 32})
	if err != nil || r.To != 32 || r.Generation != 2 {
		t.Fatalf("start: %+v, %v", r, err)
	}
	_, err = c.Reshard(ctx, ReshardRequest{Auto: true})
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusConflict || e.Code != CodeRefused || !strings.Contains(e.Msg, "runs") {
		t.Fatalf("a second start: %v, want a 409 refusal", err)
	}
	if got := b.asked[1]; !got.Auto || got.Shards != 0 {
		t.Fatalf(`{"shards": "auto"} reached the backend as %+v`, got)
	}
	if r, err := c.CancelReshard(ctx); err != nil || r.To != 32 {
		t.Fatalf("cancel: %+v, %v", r, err)
	}
	if _, err := c.CancelReshard(ctx); !errors.As(err, &e) || e.Status != http.StatusConflict || e.Code != CodeRefused {
		t.Fatalf("a cancel with none running: %v, want a 409 refusal", err)
	}

	// Writes: without a token, and the agent's rule refusing writes without one.
	locked := serveWith(t, b, Auth{Token: "secret"})
	if _, err := locked.Reshard(ctx, ReshardRequest{Shards: 8}); !errors.As(err, &e) || e.Code != CodeUnauthorized {
		t.Fatalf("start without the token: %v", err)
	}
	if _, err := locked.CancelReshard(ctx); !errors.As(err, &e) || e.Code != CodeUnauthorized {
		t.Fatalf("cancel without the token: %v", err)
	}
	if _, err := serveWith(t, b, Auth{}).Reshard(ctx, ReshardRequest{Shards: 8}); !errors.As(err, &e) || e.Code != CodeForbidden {
		t.Fatalf("start on an agent without a token: %v", err)
	}
	locked.Token = "secret"
	if _, err := locked.Reshard(ctx, ReshardRequest{Shards: 8}); err != nil {
		t.Fatalf("start with the token: %v", err)
	}
}

func TestReshardRequestJSON(t *testing.T) {
	for _, r := range []ReshardRequest{{Shards: 32}, {Auto: true}} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back ReshardRequest
		if err := json.Unmarshal(b, &back); err != nil || back != r {
			t.Fatalf("%+v → %s → %+v, %v", r, b, back, err)
		}
	}
}

func TestReshardETA(t *testing.T) {
	for _, tc := range []struct {
		remaining, maxConcurrency int
		want                      time.Duration
	}{
		{0, 16, 0}, {-1, 16, 0}, {1, 16, 5 * time.Second}, {16, 16, 5 * time.Second}, {17, 16, 10 * time.Second},
		{2000, 16, 125 * 5 * time.Second}, {3, 0, 15 * time.Second},
	} {
		if got := ReshardETA(tc.remaining, tc.maxConcurrency, 5*time.Second); got != tc.want {
			t.Errorf("ReshardETA(%d, %d, 5s) = %v, want %v", tc.remaining, tc.maxConcurrency, got, tc.want)
		}
	}
}

// The event stream carries a reshard's progress in its overview, and a watcher's
// view follows it to its end.
func TestStreamCarriesAReshard(t *testing.T) {
	base := Status{Node: "a", Config: &ShardConfig{TotalShards: 16, MaxConcurrency: 16, Generation: 1}}
	view := base
	follow := func(old, cur Status) []string {
		var kinds []string
		err := Diff(old, cur, func(kind string, data any) error {
			b, err := json.Marshal(data)
			if err != nil {
				return err
			}
			kinds = append(kinds, kind)
			return view.Apply(kind, b)
		})
		if err != nil {
			t.Fatal(err)
		}
		return kinds
	}
	running := base
	running.Reshard = &Reshard{Generation: 2, From: 16, To: 32, Assigned: 32, Warm: 3}
	if k := follow(base, running); len(k) != 1 || k[0] != StreamOverview || view.Reshard == nil || view.Reshard.Warm != 3 {
		t.Fatalf("a reshard's start: messages %v, view %+v", k, view.Reshard)
	}
	warmer := running
	warmer.Reshard = &Reshard{Generation: 2, From: 16, To: 32, Assigned: 32, Warm: 30}
	if k := follow(running, warmer); len(k) != 1 || view.Reshard.Warm != 30 {
		t.Fatalf("progress: messages %v, view %+v", k, view.Reshard)
	}
	switched := base
	switched.Config = &ShardConfig{TotalShards: 32, MaxConcurrency: 16, Generation: 2}
	if k := follow(warmer, switched); len(k) != 1 || view.Reshard != nil || view.Config.Generation != 2 {
		t.Fatalf("the switch: messages %v, view %+v %+v", k, view.Reshard, view.Config)
	}
	if k := follow(switched, switched); len(k) != 0 {
		t.Fatalf("nothing changed, yet %v", k)
	}
}
