// Package sink is where the events a node's shards receive leave the node: the
// delivery contract and its implementations.
//
// A sink must never acknowledge an event it has not stored or passed on: the node
// checkpoints a shard's position only after Deliver returned nil, so an event a sink
// dropped after accepting it is lost for good, while one it refused is replayed.
package sink

import (
	"bufio"
	"encoding/json"
	"io"
	"sync"

	"github.com/discluster/discluster/shard"
)

// Delivery is one dispatch leaving the node.
type Delivery struct {
	Node    string
	Cluster int
	Event   shard.Event
}

// Sink receives every dispatch the node's shards deliver, in order per shard. Deliver
// is called from one goroutine per local cluster; a slow sink slows those shards down
// (back-pressure up to Discord), it never loses events.
type Sink interface {
	Deliver(Delivery) error
}

// NDJSON writes one JSON line per dispatch.
type NDJSON struct {
	mu      sync.Mutex
	w       *bufio.Writer
	flush   bool
	payload bool
}

// NewNDJSON writes to w; with payload set, each line carries the event's d. Each
// line is flushed before Deliver returns, so a line that was written survives a crash
// of the process.
func NewNDJSON(w io.Writer, payload bool) *NDJSON {
	return &NDJSON{w: bufio.NewWriterSize(w, 64<<10), flush: true, payload: payload}
}

type ndjsonLine struct {
	Node    string          `json:"node"`
	Cluster int             `json:"cluster"`
	Shard   int             `json:"shard"`
	Session string          `json:"session"`
	Seq     int64           `json:"seq"`
	Type    string          `json:"t"`
	D       json.RawMessage `json:"d,omitempty"`
}

// Deliver implements Sink.
func (s *NDJSON) Deliver(d Delivery) error {
	line := ndjsonLine{Node: d.Node, Cluster: d.Cluster, Shard: d.Event.ShardID, Session: d.Event.SessionID,
		Seq: d.Event.Seq, Type: d.Event.Type}
	if s.payload {
		line.D = d.Event.Data
	}
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w.Write(b)
	s.w.WriteByte('\n')
	if s.flush {
		return s.w.Flush()
	}
	return nil
}
