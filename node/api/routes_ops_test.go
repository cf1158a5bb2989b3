package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// GET /metrics is a read and the profiler a write: each behind its own auth.
func TestMetricsAndPprofAuth(t *testing.T) {
	ok := func(body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
	}
	for _, tc := range []struct {
		name           string
		auth           Auth
		token          string
		metrics, pprof int
	}{
		{"loopback, no token set", Auth{}, "", 200, 403},
		{"loopback, insecure writes", Auth{InsecureWrites: true}, "", 200, 200},
		{"loopback, token set, none sent", Auth{Token: "s3cret"}, "", 200, 401},
		{"loopback, token sent", Auth{Token: "s3cret"}, "s3cret", 200, 200},
		{"network, none sent", Auth{Token: "s3cret", Reads: true}, "", 401, 401},
		{"network, wrong token", Auth{Token: "s3cret", Reads: true}, "s3cre", 401, 401},
		{"network, token sent", Auth{Token: "s3cret", Reads: true}, "s3cret", 200, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(&stub{healthy: true}, tc.auth, WithMetrics(ok("metrics")), WithPprof(ok("pprof"))))
			defer srv.Close()
			get := func(path string) (int, string) {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
				if tc.token != "" {
					req.Header.Set("Authorization", "Bearer "+tc.token)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			if code, body := get("/metrics"); code != tc.metrics || code == 200 && body != "metrics" {
				t.Errorf("GET /metrics: %d %q, want %d", code, body, tc.metrics)
			}
			if code, body := get("/debug/pprof/heap"); code != tc.pprof || code == 200 && body != "pprof" {
				t.Errorf("GET /debug/pprof/heap: %d %q, want %d", code, body, tc.pprof)
			}
		})
	}
	// Without the options the routes are not there.
	srv := httptest.NewServer(Handler(&stub{}, Auth{InsecureWrites: true}))
	defer srv.Close()
	for _, p := range []string{"/metrics", "/debug/pprof/"} {
		resp, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s without the option: %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestErrorCode(t *testing.T) {
	for err, want := range map[error]string{
		&RetryError{Err: ErrRateLimited}: CodeRateLimited,
		ErrOwnerMoving:                   CodeOwnerMoving,
		ErrUnknownShard:                  CodeUnknownShard,
		ErrUnknownNode:                   CodeUnknownNode,
		io.EOF:                           CodeUnavailable,
	} {
		if got := ErrorCode(err); got != want {
			t.Errorf("ErrorCode(%v) = %s, want %s", err, got, want)
		}
	}
}
