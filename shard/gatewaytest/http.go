package gatewaytest

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, v := range []string{"v9", "v10"} {
		mux.HandleFunc("GET /api/"+v+"/gateway/bot", s.handleGatewayBot)
		mux.HandleFunc("GET /api/"+v+"/gateway", s.handleGateway)
	}
	// Clients append "?v=10&encoding=json" or "/?v=10&encoding=json" to the
	// URL they were given; serve both spellings.
	for _, p := range []string{"/gateway", "/gateway/"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { s.handleWebsocket(w, r, false) })
	}
	for _, p := range []string{"/resume", "/resume/"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { s.handleWebsocket(w, r, true) })
	}
	mux.HandleFunc("GET /fake/stats", s.handleStats)
	mux.HandleFunc("POST /fake/shards/{id}/{action}", s.handleInject)
	mux.HandleFunc("POST /fake/acks", s.handleACKs)
	mux.HandleFunc("POST /fake/guilds", s.handleAddGuilds)
	mux.HandleFunc("GET /fake/guild-events", s.handleGuildEvents)
	mux.HandleFunc("POST /fake/guild-events", s.handleGuildEventRate)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.track() {
			http.Error(w, "server closed", http.StatusServiceUnavailable)
			return
		}
		defer s.wg.Done()
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type apiError struct {
	Message string `json:"message"`
	Code    int    `json:"code"`
}

// authorized checks "Authorization: Bot <token>". The header is never
// logged or echoed.
func (s *Server) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bot ")
	s.mu.Lock()
	defer s.mu.Unlock()
	return ok && s.tokenOKLocked(tok)
}

// tokenOKLocked reports whether tok is a token the fake accepts now: one of
// AcceptTokens' (Options.Token at start), and not reset by a spent session budget.
func (s *Server) tokenOKLocked(tok string) bool {
	return s.tokenValid && slices.Contains(s.tokens, tok)
}

// AcceptTokens sets the bot tokens the fake accepts from now on, in place of
// Options.Token: a token regenerated in the developer portal, or one an agent was
// wrongly given that becomes valid. Sessions already open stay open.
func (s *Server) AcceptTokens(tokens ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = slices.Clone(tokens)
}

type sessionStartLimit struct {
	Total          int   `json:"total"`
	Remaining      int   `json:"remaining"`
	ResetAfter     int64 `json:"reset_after"`
	MaxConcurrency int   `json:"max_concurrency"`
}

type gatewayBotResponse struct {
	URL               string            `json:"url"`
	Shards            int               `json:"shards"`
	SessionStartLimit sessionStartLimit `json:"session_start_limit"`
}

func (s *Server) handleGatewayBot(w http.ResponseWriter, r *http.Request) {
	ok := s.authorized(r)
	s.mu.Lock()
	s.cnt.gatewayBot++
	s.refillStartsLocked()
	resp := gatewayBotResponse{
		URL:    s.GatewayURL(),
		Shards: s.recommendedShardsLocked(),
		SessionStartLimit: sessionStartLimit{
			Total:          s.opts.SessionStartLimit,
			Remaining:      s.startsRemaining,
			ResetAfter:     max(s.startsResetAt.Sub(s.now()), 0).Milliseconds(),
			MaxConcurrency: s.opts.MaxConcurrency,
		},
	}
	s.mu.Unlock()
	s.changed.notify()
	if !ok {
		writeJSON(w, http.StatusUnauthorized, apiError{Message: "401: Unauthorized", Code: 0})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleGateway(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"url": s.GatewayURL()})
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

// handleInject serves the fault injectors to other processes:
// POST /fake/shards/{id}/reconnect | invalidate?resumable=B | close?code=N | drop | heartbeat,
// and a user's message: POST /fake/shards/{id}/message?content=TEXT.
func (s *Server) handleInject(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Message: "shard id must be an integer"})
		return
	}
	q := r.URL.Query()
	switch r.PathValue("action") {
	case "reconnect":
		err = s.SendReconnect(id)
	case "invalidate":
		resumable, perr := strconv.ParseBool(q.Get("resumable"))
		if perr != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Message: "resumable must be true or false"})
			return
		}
		err = s.InvalidateSession(id, resumable)
	case "close":
		code, perr := strconv.Atoi(q.Get("code"))
		if perr != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Message: "code must be an integer"})
			return
		}
		err = s.CloseShard(id, code)
	case "drop":
		err = s.DropShard(id)
	case "heartbeat":
		err = s.RequestHeartbeat(id)
	case "message":
		err = s.SendMessage(id, q.Get("content"))
	default:
		writeJSON(w, http.StatusNotFound, apiError{Message: "unknown action"})
		return
	}
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, ErrNoLiveConnection), errors.Is(err, ErrNoMessages):
		writeJSON(w, http.StatusNotFound, apiError{Message: err.Error()})
	case errors.Is(err, ErrClosed):
		writeJSON(w, http.StatusServiceUnavailable, apiError{Message: err.Error()})
	default:
		writeJSON(w, http.StatusBadRequest, apiError{Message: err.Error()})
	}
}

func (s *Server) handleACKs(w http.ResponseWriter, r *http.Request) {
	enabled, err := strconv.ParseBool(r.URL.Query().Get("enabled"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Message: "enabled must be true or false"})
		return
	}
	s.SetHeartbeatACKs(enabled)
	w.WriteHeader(http.StatusNoContent)
}

// handleWebsocket accepts a gateway connection on /gateway or /resume.
func (s *Server) handleWebsocket(w http.ResponseWriter, r *http.Request, onResumeURL bool) {
	q := r.URL.Query()
	compress := q.Get("compress")
	enc, err := newEncoder(compress, s.opts.SplitFrames, &s.payloadsCompressed)
	if err != nil {
		// An unknown compress value is refused before the upgrade.
		writeJSON(w, http.StatusBadRequest, apiError{Message: "invalid compress value", Code: 50035})
		return
	}
	nc, ok := r.Context().Value(netConnKey{}).(*batchConn)
	if !ok {
		enc.close()
		writeJSON(w, http.StatusInternalServerError, apiError{Message: "no connection"})
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		enc.close()
		return
	}
	// The library's own limit sits far above Discord's 4096 bytes, so that
	// an oversized payload reaches the fake and gets 4002, not 1009.
	ws.SetReadLimit(64 << 10)
	nc.framesFollow()

	c := &conn{
		srv:         s,
		ws:          ws,
		nc:          nc,
		onResumeURL: onResumeURL,
		enc:         enc,
		qsig:        make(chan struct{}, 1),
		qlimit:      s.opts.OutboundQueue,
		stop:        make(chan struct{}),
		closeReq:    make(chan struct{}),
		writerDone:  make(chan struct{}),
		watchDone:   make(chan struct{}),
		shard:       -1,
	}
	c.lastBeat.Store(time.Now().UnixNano())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		enc.close()
		_ = ws.CloseNow()
		return
	}
	s.nextConnID++
	c.id = s.nextConnID
	c.log = s.opts.Logger.With("conn", c.id)
	s.conns[c] = struct{}{}
	switch v := q.Get("v"); v {
	case "9", "10":
		c.apiVersion, _ = strconv.Atoi(v)
		if e := q.Get("encoding"); e != "" && e != "json" {
			s.closeConnLocked(c, closeDecodeError, "the fake gateway only speaks encoding=json")
		} else {
			c.sendRaw(helloPayload(s.opts.HeartbeatInterval.Milliseconds()))
		}
	default:
		s.closeConnLocked(c, closeInvalidAPIVersion, "Invalid API version")
	}
	s.mu.Unlock()
	s.changed.notify()
	c.log.Debug("connection opened", "resume_url", onResumeURL, "compress", compress)

	go c.writeLoop()
	go c.watchdog()
	err = c.readLoop()
	s.connEnded(c, err)
	// A close the fake started finishes in the writer (pending payloads,
	// then the close handshake); the watchdog cuts it after closeGrace.
	s.mu.Lock()
	closeSent := c.closeSent
	s.mu.Unlock()
	if closeSent {
		<-c.writerDone
	}
	close(c.stop)
	<-c.writerDone
	<-c.watchDone
	_ = ws.CloseNow()

	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.changed.notify()
	c.log.Debug("connection ended")
}
