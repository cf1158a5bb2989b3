package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// WithUI serves the web view's files (files, node/api/ui's handler) under GET /ui/
// to the callers that may read, and lets the pages of allowOrigin's origins (the
// other agents' web views, which follow the cluster when their own agent goes away)
// call the API from a browser.
//
// A browser cannot put the token in an Authorization header of a page it navigates
// to, so an agent with a token also serves a sign-in page: POST /ui/login with the
// token sets a cookie that stands for it, for reads only, for UISessionLife.
func WithUI(files http.Handler, allowOrigin func(origin string) bool) Option {
	return func(o *options) { o.ui, o.allowOrigin = files, allowOrigin }
}

// UICookie is the web view's sign-in cookie.
const UICookie = "discluster_ui"

// UISessionLife is how long a sign-in lasts.
const UISessionLife = 12 * time.Hour

// uiOpenFiles are what the sign-in page needs: no cluster data, the same in every
// binary.
var uiOpenFiles = map[string]bool{"/ui/login.html": true, "/ui/login.js": true, "/ui/app.css": true}

func (o options) uiRoutes(mux *http.ServeMux, auth Auth) {
	mux.HandleFunc("GET /ui/", func(w http.ResponseWriter, r *http.Request) {
		if !uiOpenFiles[r.URL.Path] {
			if (r.URL.Path == "/ui/" || r.URL.Path == "/ui/index.html") && !auth.mayRead(r) {
				http.Redirect(w, r, "/ui/login.html", http.StatusSeeOther)
				return
			}
			if auth.refuse(w, r, false) {
				return
			}
		}
		o.ui.ServeHTTP(w, r)
	})
	// The sign-in checks the token it is given like any request's bearer token, and
	// answers with a cookie that stands for it (never the token itself) when one is
	// set; without a token there is nothing to sign in to.
	mux.HandleFunc("POST /ui/login", func(w http.ResponseWriter, r *http.Request) {
		if auth.Token == "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if err := r.ParseForm(); err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorBody{Error: "the body must be a form with the token: token=...", Code: CodeBadRequest})
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("token")), []byte(auth.Token)) != 1 {
			writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: "not the agent's API token (--http-token-file)", Code: CodeUnauthorized})
			return
		}
		http.SetCookie(w, uiCookie(auth.Token, time.Now().Add(UISessionLife), r.TLS != nil))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /ui/logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: UICookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
		w.WriteHeader(http.StatusNoContent)
	})
}

// mayRead reports whether r may read, without answering it.
func (a Auth) mayRead(r *http.Request) bool {
	if a.Token == "" || !a.Reads {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(a.Token)) == 1 || a.hasUICookie(r, time.Now())
}

// uiCookie is a sign-in cookie valid until until: the time and a MAC of it under a
// key made from the token, so every agent with the same token accepts it, and a new
// token ends every sign-in. HttpOnly keeps it from the page's script, SameSite=Strict
// from requests other sites make.
func uiCookie(token string, until time.Time, secure bool) *http.Cookie {
	exp := strconv.FormatInt(until.Unix(), 10)
	return &http.Cookie{Name: UICookie, Value: "v1." + exp + "." + uiMAC(token, exp), Path: "/", Expires: until,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure}
}

func uiMAC(token, exp string) string {
	k := hmac.New(sha256.New, []byte(token))
	k.Write([]byte("discluster web view sign-in"))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte("v1." + exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// hasUICookie reports whether r carries a sign-in cookie of a's token that has not
// expired at now.
func (a Auth) hasUICookie(r *http.Request, now time.Time) bool {
	if a.Token == "" {
		return false
	}
	c, err := r.Cookie(UICookie)
	if err != nil {
		return false
	}
	rest, ok := strings.CutPrefix(c.Value, "v1.")
	if !ok {
		return false
	}
	exp, mac, ok := strings.Cut(rest, ".")
	if !ok {
		return false
	}
	until, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || now.Unix() >= until {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(uiMAC(a.Token, exp)))
}

// cors lets the pages of the allowed origins read and write from a browser, as their
// own agent's page does; the token (or the agent's rules for loopback) still decides.
// Other origins get no CORS headers, so a browser keeps the answers from their pages.
func (o options) cors(h http.Handler) http.Handler {
	if o.allowOrigin == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		w.Header().Add("Vary", "Origin")
		if origin == "" || !o.allowOrigin(origin) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Set("Access-Control-Expose-Headers", "Retry-After")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	})
}
