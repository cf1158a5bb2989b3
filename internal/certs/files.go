package certs

import (
	"net"
	"os"
	"path/filepath"
)

// IssueFiles issues node a certificate from the CA and writes the CA, the
// certificate and its key into dir, as ca.pem, NODE.pem and NODE-key.pem: what a node
// of a test cluster loads with Load.
func IssueFiles(dir string, caCert, caKey []byte, node string, ips []net.IP) (Files, error) {
	cert, key, err := NewNodeCert(caCert, caKey, node, ips, 1)
	if err != nil {
		return Files{}, err
	}
	f := Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, node+".pem"), Key: filepath.Join(dir, node+"-key.pem")}
	for path, b := range map[string][]byte{f.CA: caCert, f.Cert: cert, f.Key: key} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}
