package metrics

import (
	"context"
	"time"

	"github.com/discluster/discluster/node/sink"
)

// Sink wraps the node's sink so that every batch it accepts counts its events by
// type, and every call its time and failure. A nil inner sink (events are counted,
// not delivered) becomes one that accepts everything and only counts.
func (m *Metrics) Sink(inner sink.Sink) sink.Sink { return &countingSink{m: m, inner: inner} }

type countingSink struct {
	m     *Metrics
	inner sink.Sink
}

// Deliver implements sink.Sink: the events the inner sink accepted count once each,
// those it did not count when a retry delivers them.
func (s *countingSink) Deliver(ctx context.Context, batch []sink.Delivery) error {
	var err error
	if s.inner != nil {
		began := time.Now()
		err = s.inner.Deliver(ctx, batch)
		s.m.sinkSeconds.Observe(time.Since(began).Seconds())
		if err != nil {
			s.m.sinkErrors.Inc()
		}
	}
	s.countTypes(batch[:sink.Accepted(err, len(batch))])
	return err
}

// countTypes counts the events of batch by type, a run of one type at a time: a
// batch is mostly one shard's events, often of few types.
func (s *countingSink) countTypes(batch []sink.Delivery) {
	for i := 0; i < len(batch); {
		t := batch[i].Event.Type
		j := i + 1
		for j < len(batch) && batch[j].Event.Type == t {
			j++
		}
		s.m.countEvent(t, j-i)
		i = j
	}
}
