package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ReshardRequest is the body of POST /v1/reshard: {"shards": N} for a count, or
// {"shards": "auto"} for Discord's recommendation.
type ReshardRequest struct {
	Shards int  // the new count; 0 with Auto
	Auto   bool // Discord's recommended count (GET /gateway/bot)
}

// MarshalJSON writes {"shards": N} or {"shards": "auto"}.
func (r ReshardRequest) MarshalJSON() ([]byte, error) {
	if r.Auto {
		return []byte(`{"shards":"auto"}`), nil
	}
	return json.Marshal(struct {
		Shards int `json:"shards"`
	}{r.Shards})
}

// errReshardBody says what POST /v1/reshard takes.
var errReshardBody = errors.New(`the body must be {"shards": N} (N at least 1) or {"shards": "auto"}`)

// UnmarshalJSON reads {"shards": N} or {"shards": "auto"}, and nothing else.
func (r *ReshardRequest) UnmarshalJSON(b []byte) error {
	var body struct {
		Shards json.RawMessage `json:"shards"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return fmt.Errorf("%w: %v", errReshardBody, err)
	}
	var auto string
	switch {
	case len(body.Shards) == 0:
		return fmt.Errorf("%w: no shards", errReshardBody)
	case json.Unmarshal(body.Shards, &auto) == nil:
		if auto != "auto" {
			return fmt.Errorf("%w: got %q", errReshardBody, auto)
		}
		*r = ReshardRequest{Auto: true}
	default:
		var n int
		if err := json.Unmarshal(body.Shards, &n); err != nil || n < 1 {
			return fmt.Errorf("%w: got %s", errReshardBody, body.Shards)
		}
		*r = ReshardRequest{Shards: n}
	}
	return nil
}

// Reshard is a reshard in progress: generation Generation, of To shards, being
// placed, identified and warmed beside the current From, until one command switches
// delivery to it. It is the answer of POST and DELETE /v1/reshard (the reshard
// started, or cancelled) and the reshard part of GET /v1/status.
type Reshard struct {
	Generation uint64    `json:"generation"`
	From       int       `json:"from"`
	To         int       `json:"to"`
	StartedAt  time.Time `json:"started_at"`
	// Assigned counts its shards placed on a node, Warm those whose owner reports
	// them READY with every guild arrived: at To warm, the leader switches.
	Assigned int `json:"assigned"`
	Warm     int `json:"warm"`
	// ETA is the identify schedule's floor for the shards not yet warm: one window
	// per max_concurrency of them (they identify in parallel, one per bucket).
	ETA time.Duration `json:"eta_ns"`
}

// ReshardETA is the identify schedule's floor for remaining shards: ⌈remaining /
// max_concurrency⌉ identify windows.
func ReshardETA(remaining, maxConcurrency int, window time.Duration) time.Duration {
	if remaining <= 0 {
		return 0
	}
	maxConcurrency = max(maxConcurrency, 1)
	return time.Duration((remaining+maxConcurrency-1)/maxConcurrency) * window
}

// reshardTimeout bounds a reshard's start from one request: the leader may ask
// Discord for its recommendation first.
const reshardTimeout = 30 * time.Second

// reshardRoutes serves POST /v1/reshard (start) and DELETE /v1/reshard (cancel), both
// writes, decided by the leader wherever the request arrives.
func reshardRoutes(mux *http.ServeMux, b Backend, write func(http.HandlerFunc) http.HandlerFunc) {
	mux.HandleFunc("POST /v1/reshard", write(func(w http.ResponseWriter, r *http.Request) {
		var req ReshardRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			if !errors.Is(err, errReshardBody) {
				err = fmt.Errorf("%w: %v", errReshardBody, err)
			}
			writeJSON(w, http.StatusBadRequest, ErrorBody{Error: err.Error(), Code: CodeBadRequest})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), reshardTimeout)
		defer cancel()
		res, err := b.Reshard(ctx, req)
		if err != nil {
			writeError(w, err, http.StatusConflict)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}))
	mux.HandleFunc("DELETE /v1/reshard", write(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		res, err := b.CancelReshard(ctx)
		if err != nil {
			writeError(w, err, http.StatusConflict)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}))
}

// Reshard is POST /v1/reshard: it starts a reshard, or says why not (an *Error of
// code CodeRefused, with the numbers).
func (c *Client) Reshard(ctx context.Context, req ReshardRequest) (Reshard, error) {
	var res Reshard
	body, _ := json.Marshal(req)
	b, err := c.DoBody(ctx, http.MethodPost, "/v1/reshard", body)
	if err != nil {
		return res, err
	}
	return res, json.Unmarshal(b, &res)
}

// CancelReshard is DELETE /v1/reshard.
func (c *Client) CancelReshard(ctx context.Context) (Reshard, error) {
	var res Reshard
	return res, c.get(ctx, http.MethodDelete, "/v1/reshard", &res)
}
