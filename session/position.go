// Package session holds the one shape of a Discord gateway session's position: what
// a RESUME needs. The shard client reports it, the replicated state stores it, the
// runner checkpoints and hands it on; all of them use this type, so no position is
// converted by hand between layers.
//
// It must never grow behaviour beyond the position itself: it is the common word of
// packages that otherwise know nothing of each other.
package session

// Position is what another connection, process or node needs to continue a session:
// Discord's session id, the last sequence number the handler accepted, and the
// session's resume_gateway_url.
type Position struct {
	SessionID string `json:"session_id,omitempty"`
	Seq       int64  `json:"seq,omitempty"`
	ResumeURL string `json:"resume_url,omitempty"`
}

// Resumable reports whether the position names a session to RESUME.
func (p Position) Resumable() bool { return p.SessionID != "" }
