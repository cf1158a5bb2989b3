// Package ui is the agent's web view: one page of HTML, CSS and a small script,
// embedded in the binary, that shows the cluster live (the members, a grid of every
// shard by state, cold-start and failover progress, recent events) from the API's
// event stream, and drains nodes with the API token.
//
// It holds the files and the headers they are served with, nothing else: the API
// (api.WithUI) decides who may fetch them, and the page reads the cluster only
// through the API, as any client does. It has no build step and no framework and
// fetches nothing from elsewhere, so it works offline and under a strict
// Content-Security-Policy. It must never put cluster data or a secret into the
// files it serves.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// Handler serves the page and its files under /ui/. connect gives the web origins
// (scheme://host:port) of the other agents, which the page may call when its own
// agent goes away: the Content-Security-Policy lets it reach those and no others.
func Handler(connect func() []string) http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/ui", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", policy(connect))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		// The files change with the binary: an upgraded agent's page is fetched anew.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// policy is the page's Content-Security-Policy: its own files only, no inline script
// or style, and connections to its agent and the others.
func policy(connect func() []string) string {
	src := []string{"'self'"}
	if connect != nil {
		for _, o := range connect() {
			if isOrigin(o) {
				src = append(src, o)
			}
		}
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src " + strings.Join(src, " ") +
		"; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
}

// isOrigin reports whether o is scheme://host:port and nothing that could end the
// policy's directive.
func isOrigin(o string) bool {
	rest, ok := strings.CutPrefix(o, "http://")
	if !ok {
		rest, ok = strings.CutPrefix(o, "https://")
	}
	if !ok || rest == "" {
		return false
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return false
		}
	}
	return true
}
