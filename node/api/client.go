package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls one agent's API.
type Client struct {
	// Addr is the agent's --http-addr: host:port or http://host:port, or
	// https://host:port for an agent that serves HTTPS (--http-tls).
	Addr string
	// HTTP is the client to use; http.DefaultClient when nil. For an https agent it
	// says whom to trust: HTTPS makes one that verifies the agent against the
	// cluster CA. The default trusts the system's roots, which never issued an
	// agent's certificate.
	HTTP *http.Client
	// Token is the agent's API token, sent as a bearer token when set.
	Token string
}

// NewClient calls the agent at addr (host:port, or https://host:port).
func NewClient(addr string) *Client { return &Client{Addr: addr} }

// HTTPS is an http.Client for Client.HTTP that verifies https agents with conf: for
// the cluster CA, RootCAs holding it and ServerName "server.discluster", the name
// every agent's certificate carries (agents are called by IP, which a certificate
// need not name). Its transport is its own: make one and share it between Clients.
func HTTPS(conf *tls.Config) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = conf
	return &http.Client{Transport: t}
}

// url is the address of path at the agent: plain HTTP unless Addr names a scheme.
func (c *Client) url(path string) string {
	if strings.Contains(c.Addr, "://") {
		return strings.TrimSuffix(c.Addr, "/") + path
	}
	return "http://" + c.Addr + path
}

// request is a request to path carrying the client's token.
func (c *Client) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return nil, fmt.Errorf("--addr %q: %w", c.Addr, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// Error is an answer other than 2xx.
type Error struct {
	Addr   string
	Status int    // the HTTP status
	Code   string // ErrorBody.Code: CodeUnknownNode, CodeRefused, …; "" when the body had none
	Msg    string
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return e.Addr + ": " + e.Msg
	}
	return fmt.Sprintf("%s: HTTP %d", e.Addr, e.Status)
}

// maxBody bounds an answer read into memory: a status of 20,000 shards is a few MB.
const maxBody = 64 << 20

// Do calls path with method and returns the body of a 2xx answer; any other answer
// is an *Error.
func (c *Client) Do(ctx context.Context, method, path string) ([]byte, error) {
	return c.DoBody(ctx, method, path, nil)
}

// DoBody is Do with a JSON request body.
func (c *Client) DoBody(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := c.request(ctx, method, path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.httpClient().Do(req)
	var untrusted *tls.CertificateVerificationError
	if errors.As(err, &untrusted) {
		return nil, fmt.Errorf("the agent at %s has a certificate this client does not trust: pass the cluster CA with --tls-ca (or DISCLUSTER_TLS_CA): %w", c.Addr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot reach an agent at %s (is it running? --addr names its --http-addr): %w", c.Addr, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Addr, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Addr: c.Addr, Status: resp.StatusCode}
		var eb ErrorBody
		if json.Unmarshal(answer, &eb) == nil {
			e.Code, e.Msg = eb.Code, eb.Error
		} else if resp.StatusCode == http.StatusBadRequest && bytes.Contains(answer, []byte("HTTP request to an HTTPS server")) {
			// Go's TLS server answers plain HTTP with this, before any route.
			e.Msg = "the agent serves HTTPS (--http-tls): call it at https://" + strings.TrimPrefix(c.Addr, "http://") + ", with --tls-ca"
		}
		return answer, e
	}
	return answer, nil
}

func (c *Client) get(ctx context.Context, method, path string, v any) error {
	body, err := c.Do(ctx, method, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s%s: %w", c.Addr, path, err)
	}
	return nil
}

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.get(ctx, http.MethodGet, "/v1/status", &st)
}

// StatusAll is GET /v1/status?all=true: members that left are listed too.
func (c *Client) StatusAll(ctx context.Context) (Status, error) {
	var st Status
	return st, c.get(ctx, http.MethodGet, "/v1/status?all=true", &st)
}

// Health is GET /healthz; an unhealthy node answers with its Health and an *Error
// of status 503.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	body, err := c.Do(ctx, http.MethodGet, "/healthz")
	if jerr := json.Unmarshal(body, &h); err == nil && jerr != nil {
		err = fmt.Errorf("%s/healthz: %w", c.Addr, jerr)
	}
	return h, err
}

// Drain is POST /v1/drain/{node}.
func (c *Client) Drain(ctx context.Context, node string) (Drained, error) {
	var d Drained
	return d, c.get(ctx, http.MethodPost, "/v1/drain/"+url.PathEscape(node), &d)
}

// Keyring is GET /v1/keyring (op "list") or POST /v1/keyring (install, use, remove).
func (c *Client) Keyring(ctx context.Context, op, key string) (Keyring, error) {
	var k Keyring
	if op == "list" {
		return k, c.get(ctx, http.MethodGet, "/v1/keyring", &k)
	}
	body, _ := json.Marshal(KeyringRequest{Op: op, Key: key})
	b, err := c.DoBody(ctx, http.MethodPost, "/v1/keyring", body)
	if err != nil {
		return k, err
	}
	return k, json.Unmarshal(b, &k)
}

// Undrain is DELETE /v1/drain/{node}.
func (c *Client) Undrain(ctx context.Context, node string) error {
	var u Undrained
	return c.get(ctx, http.MethodDelete, "/v1/drain/"+url.PathEscape(node), &u)
}
