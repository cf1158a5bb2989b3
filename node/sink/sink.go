// Package sink is where the events a node's shards receive leave the node: the
// delivery contract and its implementations (NDJSON lines, Redis Streams in
// @discordjs/brokers' layout, NATS JetStream, signed webhook POSTs).
//
// A sink must never acknowledge an event it has not stored or passed on: the node
// checkpoints a shard's position only after the sink accepted the event, so an event
// a sink dropped after accepting it is lost for good, while one it refused is
// replayed.
package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/discluster/discluster/shard"
)

// Delivery is one dispatch leaving the node. Its Event carries the shard, session,
// seq and event type, by which a consumer can drop the duplicates that at-least-once
// delivery allows.
type Delivery struct {
	Node    string
	Cluster int
	Event   shard.Event
}

// Sink receives every dispatch the node's shards deliver, in order per shard, in
// batches: what one local cluster's queue held at the time, never held back to fill
// a batch. Deliver is called from one goroutine per local cluster, so concurrently.
//
// Nil means every event of the batch was accepted (stored or passed on, so that it
// survives a crash of this process). An error means the events from the first one on
// were not, unless it is a *PartialError, which says how many at the front were: the
// caller retries the rest (a slow or failing sink slows those shards down, up to
// Discord, and never loses an event). Deliver must not keep batch after it returns,
// and should return when ctx ends.
type Sink interface {
	Deliver(ctx context.Context, batch []Delivery) error
}

// PartialError is a failed Deliver that accepted the first Accepted events of the
// batch (0 ≤ Accepted < len(batch)) and not the rest.
type PartialError struct {
	Accepted int
	Err      error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("%d events accepted, the rest not: %v", e.Accepted, e.Err)
}

func (e *PartialError) Unwrap() error { return e.Err }

// Accepted returns how many events at the front of a batch of n a Deliver that
// returned err accepted: n for nil, a PartialError's count, else 0.
func Accepted(err error, n int) int {
	if err == nil {
		return n
	}
	var pe *PartialError
	if errors.As(err, &pe) {
		return min(max(pe.Accepted, 0), n)
	}
	return 0
}

// NDJSON writes one JSON line per dispatch.
type NDJSON struct {
	mu      sync.Mutex
	w       *bufio.Writer
	flush   bool
	payload bool
	buf     []byte // the batch's lines
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

// Deliver implements Sink: the batch is written, and flushed, as a whole.
func (s *NDJSON) Deliver(_ context.Context, batch []Delivery) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = s.buf[:0]
	for _, d := range batch {
		line := ndjsonLine{Node: d.Node, Cluster: d.Cluster, Shard: d.Event.ShardID, Session: d.Event.SessionID,
			Seq: d.Event.Seq, Type: d.Event.Type}
		if s.payload {
			line.D = d.Event.Data
		}
		b, err := json.Marshal(line)
		if err != nil {
			return fmt.Errorf("shard %d seq %d: %w", d.Event.ShardID, d.Event.Seq, err)
		}
		s.buf = append(append(s.buf, b...), '\n')
	}
	s.w.Write(s.buf)
	if s.flush {
		return s.w.Flush()
	}
	return nil
}
