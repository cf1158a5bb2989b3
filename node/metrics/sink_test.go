package metrics

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

type fakeSink struct {
	err error
	got int
}

func (f *fakeSink) Deliver(_ context.Context, batch []sink.Delivery) error {
	f.got += len(batch)
	return f.err
}

func deliveries(types ...string) []sink.Delivery {
	out := make([]sink.Delivery, len(types))
	for i, t := range types {
		out[i] = sink.Delivery{Event: shard.Event{Type: t, Seq: int64(i + 1)}}
	}
	return out
}

func TestSinkCountsAcceptedEventsByType(t *testing.T) {
	m := newTest(&fakeRunner{}, nil, nil)
	inner := &fakeSink{}
	s := m.Sink(inner)
	ctx := context.Background()
	if err := s.Deliver(ctx, deliveries("MESSAGE_CREATE", "MESSAGE_CREATE", "GUILD_CREATE", "MESSAGE_CREATE", "bad type", "")); err != nil {
		t.Fatal(err)
	}
	// Only the first two of this batch were accepted.
	inner.err = &sink.PartialError{Accepted: 2, Err: errors.New("broker full")}
	if err := s.Deliver(ctx, deliveries("TYPING_START", "MESSAGE_CREATE", "GUILD_CREATE")); err == nil {
		t.Fatal("the inner sink's error was swallowed")
	}
	inner.err = errors.New("down")
	s.Deliver(ctx, deliveries("MESSAGE_CREATE"))
	compare(t, m, `
# HELP discluster_events_total Dispatches this node handled (accepted by the sink, or counted when there is none), by event type; types past the first 256 count as "other".
# TYPE discluster_events_total counter
discluster_events_total{type="GUILD_CREATE"} 1
discluster_events_total{type="MESSAGE_CREATE"} 4
discluster_events_total{type="TYPING_START"} 1
discluster_events_total{type="other"} 2
# HELP discluster_sink_errors_total Sink deliveries that failed (each is retried; the shards' positions hold).
# TYPE discluster_sink_errors_total counter
discluster_sink_errors_total 2
`, "discluster_events_total", "discluster_sink_errors_total")
	if n, _ := testutil.GatherAndCount(m.Registry(), "discluster_sink_deliver_seconds"); n != 1 {
		t.Errorf("sink_deliver_seconds: %d series", n)
	}

	// Without a sink every event is accepted and counted.
	none := m.Sink(nil)
	if err := none.Deliver(ctx, deliveries("READY")); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(m.events.WithLabelValues("READY")); v != 1 {
		t.Errorf("READY without a sink: %v", v)
	}

	// The type label is capped: past MaxEventTypes, the rest is "other".
	for i := range MaxEventTypes + 10 {
		none.Deliver(ctx, deliveries(fmt.Sprintf("T%d", i)))
	}
	if n, _ := testutil.GatherAndCount(m.Registry(), "discluster_events_total"); n != MaxEventTypes+1 {
		t.Errorf("%d event type series, want %d and other", n, MaxEventTypes)
	}
	lint(t, m)
}
