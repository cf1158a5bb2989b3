package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
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
	// Keyring lists the gossip keys (op "list") or installs, uses or removes one on
	// every member.
	Keyring(ctx context.Context, op, key string) (Keyring, error)
	// Send writes a gateway command on the target shard's connection, through its
	// owner; refusals wrap the Err... of send.go.
	Send(ctx context.Context, t Target, c Command) (Sent, error)
	// Watch emits a StreamSnapshot, then what changes, until ctx ends or emit fails;
	// between changes it calls emit with kind "" now and then (a tick the route uses
	// for keep-alives).
	Watch(ctx context.Context, emit Emit) error
	// Reshard starts a reshard and CancelReshard drops the one that runs, both at the
	// leader; a refusal wraps ErrRefused and says why, with the numbers.
	Reshard(ctx context.Context, req ReshardRequest) (Reshard, error)
	CancelReshard(ctx context.Context) (Reshard, error)
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
	CodeUnknownNode  = "unknown_node"
	CodeRefused      = "refused"
	CodeUnavailable  = "unavailable"
	CodeUnauthorized = "unauthorized" // no token, or a wrong one
	CodeForbidden    = "forbidden"    // a write, and the agent has no token to check it against
	CodeNotFound     = "not_found"
	CodeTooLarge     = "body_too_large"
	CodeBadRequest   = "bad_request"
)

// Auth is who may call the routes. The agent's rule: on loopback, reads are open and
// writes need the token; anywhere else every route needs it; and with no token set,
// writes are refused unless InsecureWrites says loopback callers may write.
type Auth struct {
	// Token is the bearer token callers must send ("Authorization: Bearer ..."); ""
	// when none is set.
	Token string
	// Reads needs the token for the routes that only read.
	Reads bool
	// InsecureWrites lets writes through without a token when none is set
	// (--http-insecure-loopback).
	InsecureWrites bool
}

// MaxBody bounds a request's body: no route takes more than a few bytes.
const MaxBody = 64 << 10

// writeTimeout bounds a write through the leader from one request.
const writeTimeout = 10 * time.Second

// Handler serves the API's routes over b, and those of opts, to the callers auth
// lets through.
func Handler(b Backend, auth Auth, opts ...Option) http.Handler {
	mux := http.NewServeMux()
	read := func(h http.HandlerFunc) http.HandlerFunc { return auth.guard(false, h) }
	write := func(h http.HandlerFunc) http.HandlerFunc { return auth.guard(true, h) }
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	o.routes(mux, auth, read, write)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrorBody{Error: "no such route: " + r.Method + " " + r.URL.Path, Code: CodeNotFound})
	})
	mux.HandleFunc("GET /v1/status", read(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Status(r.Context(), r.URL.Query().Get("all") == "true"))
	}))
	// /healthz stays open to every caller that reaches the port: a load balancer or
	// systemd's watchdog has no token, and it tells nothing but the node's health.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		h := b.Health()
		code := http.StatusOK
		if !h.Healthy {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, h)
	})
	mux.HandleFunc("POST /v1/drain/{node}", write(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("node")
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		d, err := b.Drain(ctx, id)
		if err != nil {
			writeError(w, err, http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, d)
	}))
	// Cancelling a drain makes the node take shards again; the balancer moves some
	// back to it one handoff at a time.
	mux.HandleFunc("DELETE /v1/drain/{node}", write(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("node")
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		if err := b.Undrain(ctx, id); err != nil {
			writeError(w, err, http.StatusConflict)
			return
		}
		writeJSON(w, http.StatusOK, Undrained{Undrained: id})
	}))
	mux.HandleFunc("GET /v1/keyring", write(func(w http.ResponseWriter, r *http.Request) {
		// Listing is a write's privilege: the keys are the gossip's secret.
		k, err := b.Keyring(r.Context(), "list", "")
		if err != nil {
			writeError(w, err, http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, k)
	}))
	mux.HandleFunc("POST /v1/keyring", write(func(w http.ResponseWriter, r *http.Request) {
		var req KeyringRequest
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorBody{Error: "the body must be {\"op\": \"install\"|\"use\"|\"remove\", \"key\": \"<base64>\"}: " + err.Error(), Code: CodeBadRequest})
			return
		}
		if req.Op != "install" && req.Op != "use" && req.Op != "remove" {
			writeJSON(w, http.StatusBadRequest, ErrorBody{Error: fmt.Sprintf("op %q: install, use or remove", req.Op), Code: CodeBadRequest})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		k, err := b.Keyring(ctx, req.Op, req.Key)
		if err != nil {
			writeError(w, err, http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, k)
	}))
	mux.HandleFunc("GET /v1/events", read(streamRoute(b)))
	reshardRoutes(mux, b, write)
	// Commands change what the bot does on Discord: a write's privilege.
	mux.HandleFunc("POST /v1/shards/{id}/send", write(sendRoute(b, false)))
	mux.HandleFunc("POST /v1/guilds/{guild_id}/send", write(sendRoute(b, true)))
	return o.cors(limitBody(mux))
}

// guard lets a request through to h when auth allows it.
func (a Auth) guard(isWrite bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.refuse(w, r, isWrite) {
			return
		}
		h(w, r)
	}
}

// refuse answers a request auth does not let through, and says so. A read may carry
// the web view's cookie instead of the token (webview.go); a write never: a cookie
// rides along with any request the browser makes, the token only with the page's
// own.
func (a Auth) refuse(w http.ResponseWriter, r *http.Request, isWrite bool) bool {
	switch {
	case a.Token != "":
		if isWrite || a.Reads {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if ok && subtle.ConstantTimeCompare([]byte(got), []byte(a.Token)) == 1 || !isWrite && a.hasUICookie(r, time.Now()) {
				return false
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="discluster"`)
			writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: "this route needs the agent's API token: send Authorization: Bearer <token> (discluster reads it from --http-token-file or DISCLUSTER_HTTP_TOKEN)", Code: CodeUnauthorized})
			return true
		}
	case isWrite && !a.InsecureWrites:
		writeJSON(w, http.StatusForbidden, ErrorBody{Error: "the agent has no API token, so nothing may change the cluster through it: start it with --http-token-file (or DISCLUSTER_HTTP_TOKEN), or with --http-insecure-loopback to allow writes from loopback without one", Code: CodeForbidden})
		return true
	}
	return false
}

// limitBody bounds every request's body to MaxBody.
func limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxBody {
			writeJSON(w, http.StatusRequestEntityTooLarge, ErrorBody{Error: fmt.Sprintf("a body of at most %d bytes", MaxBody), Code: CodeTooLarge})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		h.ServeHTTP(w, r)
	})
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
