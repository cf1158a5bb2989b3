package gatewaytest

import (
	"fmt"
)

// liveConnsLocked are the connections that currently speak for shard.
func (s *Server) liveConnsLocked(shard int) []*conn {
	var out []*conn
	for c := range s.conns {
		if c.counted && c.shard == shard && !c.closing {
			out = append(out, c)
		}
	}
	return out
}

// inject runs fn on every live connection of shard under s.mu.
func (s *Server) inject(shard int, fn func(c *conn)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	conns := s.liveConnsLocked(shard)
	if len(conns) == 0 {
		return fmt.Errorf("shard %d: %w", shard, ErrNoLiveConnection)
	}
	for _, c := range conns {
		fn(c)
	}
	s.changed.notify()
	return nil
}

// SendReconnect sends op 7 (Reconnect) to the shard's live connections.
// The session stays as it is: the client should reconnect and RESUME.
func (s *Server) SendReconnect(shardID int) error {
	return s.inject(shardID, func(c *conn) {
		if c.sendRaw(payloadReconnect) {
			s.cnt.reconnectsSent++
		}
	})
}

// InvalidateSession sends op 9 with d=resumable to the shard's live
// connections and unhooks their sessions. With resumable, the session stays
// resumable (on this socket or another); without, it ends, and a later
// RESUME of it gets op 9 false. The connection stays open and
// unauthenticated, so the client may IDENTIFY or RESUME on it.
func (s *Server) InvalidateSession(shardID int, resumable bool) error {
	return s.inject(shardID, func(c *conn) {
		if sess := c.sess; sess != nil {
			c.sess = nil
			if resumable {
				sess.detach(c)
			} else {
				sess.end("invalidated by the fake")
			}
		}
		s.sendInvalidLocked(c, resumable)
	})
}

// CloseShard closes the shard's live connections with code (after any
// payloads already queued). The session stays resumable unless the code
// means otherwise: 4004, 4007, 4009 and 4010-4014 end it.
func (s *Server) CloseShard(shardID int, code int) error {
	if code < 1000 || code > 4999 || code == 1004 || code == 1005 || code == 1006 || code == 1015 {
		return fmt.Errorf("gatewaytest: close code %d cannot be sent in a close frame", code)
	}
	reason := closeReasons[code]
	if reason == "" {
		reason = "Closed by the fake."
	}
	return s.inject(shardID, func(c *conn) { s.closeConnLocked(c, code, reason) })
}

// DropShard cuts the TCP connections of the shard's live connections with
// no close frame. Their sessions stay resumable.
func (s *Server) DropShard(shardID int) error {
	var dropped []*conn
	err := s.inject(shardID, func(c *conn) {
		s.dropConnLocked(c)
		s.cnt.drops++
		dropped = append(dropped, c)
	})
	for _, c := range dropped {
		c.kill()
	}
	return err
}

// RequestHeartbeat sends op 1 to the shard's live connections; the client
// must answer with a heartbeat at once (HeartbeatRequestsAnswered counts
// the answers).
func (s *Server) RequestHeartbeat(shardID int) error {
	return s.inject(shardID, func(c *conn) {
		if c.sendRaw(payloadHeartbeatRequest) {
			c.hbRequested = true
			s.cnt.hbRequests++
		}
	})
}

// SetHeartbeatACKs turns op 11 replies on or off. Off makes every
// connection a zombie from the client's point of view.
func (s *Server) SetHeartbeatACKs(enabled bool) {
	s.mu.Lock()
	s.acks = enabled
	s.mu.Unlock()
	s.changed.notify()
}
