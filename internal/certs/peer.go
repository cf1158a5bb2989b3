package certs

import "crypto/tls"

// PeerNode is the node a verified peer's certificate names: its common name, as
// `discluster tls cert NAME` writes it. "" for no certificate, or one made for the
// cluster role alone, which may speak for any member.
func PeerNode(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	if cn := cs.PeerCertificates[0].Subject.CommonName; cn != Role {
		return cn
	}
	return ""
}
