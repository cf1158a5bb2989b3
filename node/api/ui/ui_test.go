package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The page and its files are served with a policy that lets them load nothing but
// themselves and call nothing but their agent and the origins given.
func TestFilesAndPolicy(t *testing.T) {
	srv := httptest.NewServer(Handler(func() []string {
		return []string{"http://10.0.0.2:7948", "https://[::1]:7948", "http://x; script-src *", "javascript:alert(1)"}
	}))
	defer srv.Close()
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css",
		"/ui/login.html": "text/html", "/ui/login.js": "text/javascript"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || len(body) == 0 {
			t.Errorf("GET %s: %d %s, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self';", "connect-src 'self' http://10.0.0.2:7948 https://[::1]:7948;", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: policy %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "script-src *") || strings.Contains(csp, "javascript:") {
			t.Errorf("GET %s: policy %q took an origin that is not one", path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
	}
	resp, err := http.Get(srv.URL + "/ui/nothing.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/nothing.js: %d", resp.StatusCode)
	}
}

// The files load nothing from elsewhere and run no inline script or style, which the
// policy would block anyway: a page that needs the network, or an inline handler,
// would be broken offline and under the policy.
func TestFilesLoadNothingFromElsewhere(t *testing.T) {
	for _, name := range []string{"index.html", "login.html", "app.js", "login.js", "app.css"} {
		b, err := static.ReadFile("static/" + name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{"http://", "https://", "//cdn", "@import", "url(http", " onclick=", " onload=", " style=\"", "<script>", "innerHTML", "eval("} {
			if strings.Contains(s, bad) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
}
