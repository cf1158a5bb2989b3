package api

import (
	"errors"
	"net/http"
)

// Option adds routes that the agent brings and a client of the API never needs: the
// handlers come from the agent, so that this package, which bots import, pulls in no
// metrics library and no profiler.
type Option func(*options)

type options struct {
	metrics http.Handler
	pprof   http.Handler
	ui      http.Handler
	// allowOrigin says which other web origins may call the API from a browser.
	allowOrigin func(origin string) bool
}

// WithMetrics serves h (a Prometheus exposition) at GET /metrics, to the callers
// that may read.
func WithMetrics(h http.Handler) Option { return func(o *options) { o.metrics = h } }

// WithPprof serves h (net/http/pprof's handlers) under /debug/pprof/, to the callers
// that may write: a profile shows the process's insides and costs it CPU.
func WithPprof(h http.Handler) Option { return func(o *options) { o.pprof = h } }

// routes adds the options' routes to mux.
func (o options) routes(mux *http.ServeMux, auth Auth, read, write func(http.HandlerFunc) http.HandlerFunc) {
	if o.metrics != nil {
		mux.HandleFunc("GET /metrics", read(o.metrics.ServeHTTP))
	}
	if o.pprof != nil {
		// Every method: pprof's symbol route takes a POST.
		mux.HandleFunc("/debug/pprof/", write(o.pprof.ServeHTTP))
	}
	if o.ui != nil {
		o.uiRoutes(mux, auth)
	}
}

// ErrorCode is the code (ErrorBody.Code) the API answers err with: one of the
// Code... constants; CodeUnavailable for an error it has no code for.
func ErrorCode(err error) string {
	for _, c := range sendCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	switch {
	case errors.Is(err, ErrUnknownNode):
		return CodeUnknownNode
	case errors.Is(err, ErrRefused):
		return CodeRefused
	}
	return CodeUnavailable
}
