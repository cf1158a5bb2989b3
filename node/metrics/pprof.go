package metrics

import (
	"net/http"
	"net/http/pprof"
)

// Pprof serves net/http/pprof's handlers under /debug/pprof/, on a mux of its own
// (the API mounts it behind the write token). The command line is left out: no
// secret is passed on it today, and a profile never needs it.
func Pprof() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", http.NotFound)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
