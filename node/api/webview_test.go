package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// files stands for node/api/ui's handler: it answers with the path it was asked.
var files = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "file "+r.URL.Path) })

func webViewServer(t *testing.T, auth Auth, allow func(string) bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(Handler(&stub{healthy: true}, auth, WithUI(files, allow)))
	t.Cleanup(srv.Close)
	return srv
}

// noRedirects is a client that shows redirects instead of following them.
func noRedirects() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, method, u string, body io.Reader, h map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, body)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// The page is a read: open where reads are; behind the token elsewhere, where a
// browser is sent to the sign-in page, whose own files are open.
func TestWebViewPageAuth(t *testing.T) {
	c := noRedirects()
	open := webViewServer(t, Auth{Token: "s3cret"}, nil) // loopback: reads are open
	if resp, body := do(t, c, "GET", open.URL+"/ui/", nil, nil); resp.StatusCode != 200 || body != "file /ui/" {
		t.Errorf("loopback: GET /ui/: %d %q", resp.StatusCode, body)
	}
	if resp, _ := do(t, c, "GET", open.URL+"/ui", nil, nil); resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}

	guarded := webViewServer(t, Auth{Token: "s3cret", Reads: true}, nil)
	resp, _ := do(t, c, "GET", guarded.URL+"/ui/", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login.html" {
		t.Errorf("network, no token: GET /ui/: %d to %q, want 303 to the sign-in page", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := do(t, c, "GET", guarded.URL+"/ui/app.js", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("network, no token: GET /ui/app.js: %d, want 401", resp.StatusCode)
	}
	for _, p := range []string{"/ui/login.html", "/ui/login.js", "/ui/app.css"} {
		if resp, body := do(t, c, "GET", guarded.URL+p, nil, nil); resp.StatusCode != 200 || body != "file "+p {
			t.Errorf("network, no token: GET %s: %d %q, want the file", p, resp.StatusCode, body)
		}
	}
	if resp, body := do(t, c, "GET", guarded.URL+"/ui/", nil, map[string]string{"Authorization": "Bearer s3cret"}); resp.StatusCode != 200 || body != "file /ui/" {
		t.Errorf("network, token: GET /ui/: %d %q", resp.StatusCode, body)
	}

	// Without the option there is no page.
	bare := httptest.NewServer(Handler(&stub{}, Auth{}))
	defer bare.Close()
	if resp, _ := do(t, c, "GET", bare.URL+"/ui/", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("without WithUI: GET /ui/: %d, want 404", resp.StatusCode)
	}
}

// Signing in with the token gives a cookie that stands for it for reads, never for
// writes, and carries no token.
func TestWebViewSignInCookie(t *testing.T) {
	srv := webViewServer(t, Auth{Token: "s3cret", Reads: true}, nil)
	c := noRedirects()
	form := func(token string) io.Reader { return strings.NewReader(url.Values{"token": {token}}.Encode()) }
	ct := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if resp, _ := do(t, c, "POST", srv.URL+"/ui/login", form("s3cre"), ct); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("a wrong token: %d with %d cookies, want 401 and none", resp.StatusCode, len(resp.Cookies()))
	}
	resp, _ := do(t, c, "POST", srv.URL+"/ui/login", form("s3cret"), ct)
	if resp.StatusCode != http.StatusNoContent || len(resp.Cookies()) != 1 {
		t.Fatalf("the token: %d with %d cookies, want 204 and one", resp.StatusCode, len(resp.Cookies()))
	}
	ck := resp.Cookies()[0]
	if ck.Name != UICookie || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || strings.Contains(ck.Value, "s3cret") {
		t.Errorf("cookie %+v: want %s, HttpOnly, SameSite=Strict, Path=/, and not the token", ck, UICookie)
	}
	if left := time.Until(ck.Expires); left < UISessionLife-time.Minute || left > UISessionLife+time.Minute {
		t.Errorf("the cookie lasts %v, want %v", left, UISessionLife)
	}
	with := map[string]string{"Cookie": ck.Name + "=" + ck.Value}
	for _, p := range []string{"/ui/", "/ui/app.js", "/v1/status"} {
		if resp, _ := do(t, c, "GET", srv.URL+p, nil, with); resp.StatusCode != 200 {
			t.Errorf("GET %s with the cookie: %d, want 200", p, resp.StatusCode)
		}
	}
	if resp, _ := do(t, c, "POST", srv.URL+"/v1/drain/n", nil, with); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a drain with the cookie: %d, want 401 (writes need the token itself)", resp.StatusCode)
	}
	resp, _ = do(t, c, "POST", srv.URL+"/ui/logout", nil, with)
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].MaxAge >= 0 {
		t.Errorf("sign-out: cookies %v, want the cookie removed", cs)
	}

	r := httptest.NewRequest("GET", "/v1/status", nil)
	r.AddCookie(ck)
	now := time.Now()
	for _, tc := range []struct {
		name string
		auth Auth
		at   time.Time
		want bool
	}{
		{"now", Auth{Token: "s3cret"}, now, true},
		{"expired", Auth{Token: "s3cret"}, now.Add(UISessionLife + time.Second), false},
		{"another token", Auth{Token: "other"}, now, false},
		{"no token", Auth{}, now, false},
	} {
		if got := tc.auth.hasUICookie(r, tc.at); got != tc.want {
			t.Errorf("%s: cookie accepted %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, v := range []string{"", "v1.", "v1.x.y", "v2" + strings.TrimPrefix(ck.Value, "v1"), ck.Value + "A",
		strings.Replace(ck.Value, ".", ".9", 1)} {
		r := httptest.NewRequest("GET", "/v1/status", nil)
		r.AddCookie(&http.Cookie{Name: UICookie, Value: v})
		if (Auth{Token: "s3cret"}).hasUICookie(r, now) {
			t.Errorf("cookie %q accepted", v)
		}
	}
}

// The other agents' pages may call the API from a browser; other origins get no
// CORS headers, so the browser keeps the answers from them.
func TestWebViewCORS(t *testing.T) {
	allowed := "http://10.0.0.2:7948"
	srv := webViewServer(t, Auth{Token: "s3cret", Reads: true}, func(o string) bool { return o == allowed })
	c := srv.Client()
	pre := map[string]string{"Origin": allowed, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
	resp, _ := do(t, c, "OPTIONS", srv.URL+"/v1/drain/n", nil, pre)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != allowed ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight from a member: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = do(t, c, "GET", srv.URL+"/v1/status", nil, map[string]string{"Origin": allowed, "Authorization": "Bearer s3cret"})
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != allowed {
		t.Errorf("a read from a member's page: %d, Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	// The token still decides.
	if resp, _ := do(t, c, "GET", srv.URL+"/v1/status", nil, map[string]string{"Origin": allowed}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a read from a member's page without the token: %d, want 401", resp.StatusCode)
	}
	for _, o := range []string{"http://evil.example", "http://10.0.0.2:7949", "null"} {
		resp, _ := do(t, c, "GET", srv.URL+"/v1/status", nil, map[string]string{"Origin": o, "Authorization": "Bearer s3cret"})
		if h := resp.Header.Get("Access-Control-Allow-Origin"); h != "" {
			t.Errorf("origin %s: Allow-Origin %q, want none", o, h)
		}
	}
}
