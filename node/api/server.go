package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// Backend is what the routes need of the agent.
type Backend interface {
	// Status is the cluster; with all, members that left the gossip pool are listed
	// too (they stay known to gossip for a long while after they are gone).
	Status(ctx context.Context, all bool) Status
	Health() Health
	// Drain marks node drained until Undrain, and says how many shards it holds.
	Drain(ctx context.Context, node string) (Drained, error)
	Undrain(ctx context.Context, node string) error
}

// Errors a Backend returns for the routes to answer with the right code.
var (
	ErrUnknownNode = errors.New("no such member")
	// ErrRefused is a request the cluster's state refuses (a drain of a node that
	// cannot be drained, a cancel of a drain that is not there).
	ErrRefused = errors.New("refused by the cluster's state")
)

// Error codes of ErrorBody.Code.
const (
	CodeUnknownNode = "unknown_node"
	CodeRefused     = "refused"
	CodeUnavailable = "unavailable"
)

// writeTimeout bounds a write through the leader from one request.
const writeTimeout = 10 * time.Second

// Handler serves the API's routes over b.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Status(r.Context(), r.URL.Query().Get("all") == "true"))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		h := b.Health()
		code := http.StatusOK
		if !h.Healthy {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, h)
	})
	mux.HandleFunc("POST /v1/drain/{node}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("node")
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		d, err := b.Drain(ctx, id)
		if err != nil {
			writeError(w, err, http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	// Cancelling a drain makes the node take shards again; the balancer moves some
	// back to it one handoff at a time.
	mux.HandleFunc("DELETE /v1/drain/{node}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("node")
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		if err := b.Undrain(ctx, id); err != nil {
			writeError(w, err, http.StatusConflict)
			return
		}
		writeJSON(w, http.StatusOK, Undrained{Undrained: id})
	})
	return mux
}

// writeError answers err: 404 for an unknown node, refusedCode for a refusal, 503
// for anything else (no leader, a timeout: worth retrying).
func writeError(w http.ResponseWriter, err error, refusedCode int) {
	switch {
	case errors.Is(err, ErrUnknownNode):
		writeJSON(w, http.StatusNotFound, ErrorBody{Error: err.Error(), Code: CodeUnknownNode})
	case errors.Is(err, ErrRefused):
		writeJSON(w, refusedCode, ErrorBody{Error: err.Error(), Code: CodeRefused})
	default:
		writeJSON(w, http.StatusServiceUnavailable, ErrorBody{Error: err.Error(), Code: CodeUnavailable})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
