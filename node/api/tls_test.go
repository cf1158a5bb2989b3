package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/discluster/discluster/internal/certs"
)

// pki writes a CA and a node certificate (naming no IP: the client must go by the
// role) into a temporary directory.
func pki(t *testing.T) certs.Files {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey, err := certs.NewCA(1)
	if err != nil {
		t.Fatal(err)
	}
	f := certs.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "n1.pem"), Key: filepath.Join(dir, "n1-key.pem")}
	if err := os.WriteFile(f.CA, caCert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca-key.pem"), caKey, 0o600); err != nil {
		t.Fatal(err)
	}
	renew(t, f)
	return f
}

// renew writes a new node certificate and key over f's, issued by the CA beside them.
func renew(t *testing.T, f certs.Files) {
	t.Helper()
	caCert, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := os.ReadFile(filepath.Join(filepath.Dir(f.CA), "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := certs.NewNodeCert(caCert, caKey, "n1", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Cert, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, key, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serveTLS serves the routes over HTTPS on a loopback port, as the agent does with
// --http-tls, and returns the address (host:port).
func serveTLS(t *testing.T, conf *certs.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(&stub{healthy: true}, Auth{}), TLSConfig: conf.APIServer(),
		ErrorLog: log.New(io.Discard, "", 0)} // the refused handshakes below
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// The API over HTTPS: a client with the cluster CA verifies the agent by the role
// (the certificate does not name 127.0.0.1); one without it, or with another CA, is
// refused and told to pass --tls-ca; a plain-HTTP client is told to use https://;
// and a reload renews the certificate the API presents.
func TestAPIOverTLS(t *testing.T) {
	ctx := context.Background()
	f := pki(t)
	conf, err := certs.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, conf)
	trust, err := certs.APIClient(f.CA)
	if err != nil {
		t.Fatal(err)
	}

	c := &Client{Addr: "https://" + addr, HTTP: HTTPS(trust)}
	if st, err := c.Status(ctx); err != nil || st.Node != "a" {
		t.Fatalf("with the CA: %+v, %v", st, err)
	}

	var untrusted *tls.CertificateVerificationError
	_, err = NewClient("https://" + addr).Status(ctx)
	if !errors.As(err, &untrusted) || !strings.Contains(err.Error(), "--tls-ca") {
		t.Fatalf("without the CA (the system roots): %v, want a verification error that names --tls-ca", err)
	}
	other := pki(t)
	otherTrust, err := certs.APIClient(other.CA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Client{Addr: "https://" + addr, HTTP: HTTPS(otherTrust)}).Status(ctx); !errors.As(err, &untrusted) {
		t.Fatalf("with another cluster's CA: %v, want a verification error", err)
	}

	_, err = NewClient(addr).Status(ctx)
	var ae *Error
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "https://"+addr) {
		t.Fatalf("plain HTTP to the TLS port: %v, want an answer that says https://", err)
	}

	old := presented(t, addr, trust)
	renew(t, f)
	if err := conf.Reload(); err != nil {
		t.Fatal(err)
	}
	if now := presented(t, addr, trust); bytes.Equal(now, old) {
		t.Fatal("after a reload the API still presents the old certificate")
	}
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("after the reload: %v", err)
	}

	tooOld := trust.Clone()
	tooOld.MaxVersion = tls.VersionTLS11
	if _, err := (&Client{Addr: "https://" + addr, HTTP: HTTPS(tooOld)}).Status(ctx); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}
}

// presented dials the API with conf and returns the certificate it presents (DER).
func presented(t *testing.T, addr string, conf *tls.Config) []byte {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Raw
}
