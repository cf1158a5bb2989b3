// Package certs makes and loads the certificates of the cluster port's mutual TLS:
// a cluster CA, and node certificates it issues for the cluster's role name. The
// agent presents its certificate and accepts a peer only with one the CA issued for
// that role; the certificate and key are reloaded on demand (SIGHUP), without a
// restart. The HTTP API can serve the same certificate (--http-tls), and its
// clients verify it against the same CA and role.
//
// It must never accept a certificate that the CA did not issue, that has expired,
// or that does not name the role: those are the only things that let a process
// speak Raft to the cluster, or pass for an agent to the API's clients.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// Role is the DNS name every node certificate carries: what a peer checks, since
// nodes reach each other by IP and their names change.
const Role = "server.discluster"

// NewCA makes a cluster CA, valid for years, as PEM certificate and key.
func NewCA(years int) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "discluster cluster CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(years, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemKey(key), nil
}

// NewNodeCert makes a certificate for node, issued by the CA, for the role name, the
// node's name and ips, valid for days; it serves as both server and client.
func NewNodeCert(caCertPEM, caKeyPEM []byte, node string, ips []net.IP, days int) (certPEM, keyPEM []byte, err error) {
	ca, err := tls.X509KeyPair(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("the CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil || !caCert.IsCA {
		return nil, nil, errors.New("the CA certificate is not a CA")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: node},
		DNSNames:     []string{Role, node},
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(0, 0, days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemKey(key), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalECPrivateKey(k)
	return pemBlock("EC PRIVATE KEY", der)
}

// Files are where the node's CA, certificate and key live.
type Files struct{ CA, Cert, Key string }

// Config is the mutual TLS of the cluster port: one tls.Config for accepting and one
// for dialing, over a certificate that Reload replaces.
type Config struct {
	files Files
	pool  *x509.CertPool
	cert  atomic.Pointer[tls.Certificate]
}

// Load reads the CA and the node's certificate and key, and checks that they fit.
func Load(f Files) (*Config, error) {
	pool, err := loadCA(f.CA)
	if err != nil {
		return nil, err
	}
	c := &Config{files: f, pool: pool}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// loadCA reads the cluster CA from file.
func loadCA(file string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", file)
	}
	return pool, nil
}

// Reload reads the certificate and key again (after a renewal): connections made
// from then on present the new one. The CA stays as loaded.
func (c *Config) Reload() error {
	cert, err := tls.LoadX509KeyPair(c.files.Cert, c.files.Key)
	if err != nil {
		return fmt.Errorf("--tls-cert %s / --tls-key %s: %w", c.files.Cert, c.files.Key, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.pool, DNSName: Role, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("--tls-cert %s does not fit the cluster (issued by --tls-ca, for %s, not expired): %w", c.files.Cert, Role, err)
	}
	cert.Leaf = leaf
	c.cert.Store(&cert)
	return nil
}

// Expires is when the node's certificate expires.
func (c *Config) Expires() time.Time { return c.cert.Load().Leaf.NotAfter }

// verifyRole checks that a verified peer chain's leaf names the role.
func verifyRole(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the peer presented no certificate")
	}
	if !slices.Contains(cs.PeerCertificates[0].DNSNames, Role) {
		return fmt.Errorf("the peer's certificate does not name %s", Role)
	}
	return nil
}

// Server is the tls.Config the cluster port accepts with: a client certificate the
// CA issued for the role, or no connection.
func (c *Config) Server() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        c.pool,
		GetCertificate:   func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cert.Load(), nil },
		VerifyConnection: verifyRole,
	}
}

// Client is the tls.Config the node dials peers with: their certificate must be the
// CA's, for the role (checked as the server name: peers are dialed by IP).
func (c *Config) Client() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              c.pool,
		ServerName:           Role,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.cert.Load(), nil },
	}
}

// APIServer is the tls.Config the HTTP API serves with (--http-tls): the node's
// certificate, the very one Reload replaces, so a SIGHUP renews the API's too. No
// client certificate is asked for: browsers, curl and the CLI authenticate with
// the API's bearer token. TLS 1.2 at least, for the clients that lack 1.3.
func (c *Config) APIServer() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cert.Load(), nil },
	}
}

// APIClient is the tls.Config a client of the HTTP API verifies an agent with: a
// chain to the cluster CA in caFile, for a certificate that names the role. Agents
// are called by IP, and a certificate need not name every address its node has, so
// the role is the name checked, whatever the address dialed (as Consul checks
// server.<dc>.consul); every node certificate names it, and Reload refuses one that
// does not.
func APIClient(caFile string) (*tls.Config, error) {
	pool, err := loadCA(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: Role}, nil
}
