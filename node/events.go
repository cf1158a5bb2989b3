package node

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Event is one thing that happened in the cluster, for status and the demo's live view:
// a node joined, failed or left, a failover and how long it took, a leader elected.
type Event struct {
	At   time.Time `json:"at"`
	Node string    `json:"node"` // the node that saw it
	Text string    `json:"text"`
}

// recentEvents keeps the last few events of this node.
type recentEvents struct {
	mu  sync.Mutex
	buf []Event
}

const keepEvents = 32

func (r *recentEvents) add(node, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, Event{At: time.Now(), Node: node, Text: fmt.Sprintf(format, args...)})
	if len(r.buf) > keepEvents {
		r.buf = slices.Delete(r.buf, 0, len(r.buf)-keepEvents)
	}
}

func (r *recentEvents) list() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.buf)
}

// mergeEvents merges the events of several nodes, newest last, keeping the last n.
func mergeEvents(lists [][]Event, n int) []Event {
	var all []Event
	for _, l := range lists {
		all = append(all, l...)
	}
	slices.SortStableFunc(all, func(a, b Event) int { return a.At.Compare(b.At) })
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}
