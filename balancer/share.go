package balancer

import (
	"math/bits"
	"slices"
	"strings"
)

// Share is one member's weighted share of the shards: TotalShards·Weight/Σweight, of
// which the balancer guarantees the floor and the ceiling once the cluster is quiet.
type Share struct {
	ID     string
	Weight int
	Min    int // floor of the share
	Max    int // ceiling of the share; Max == Min when the share is whole
	// Target is the largest-remainder rounding (floors, then one more to the largest
	// remainders, ties to the smaller ID), which sums to TotalShards over all members.
	// It is what a fresh cluster ends up with; later the balancer accepts any load in
	// [Min, Max] rather than move a shard to reach Target exactly.
	Target int
}

// Shares returns the share of every member that may hold shards (Alive, weight > 0),
// sorted by ID: for a status page, or for a test of the invariant that every live
// node holds within ±1 of its weighted share. It validates as Compute does.
func Shares(totalShards int, members []Member) ([]Share, error) {
	if err := checkTotal(totalShards); err != nil {
		return nil, err
	}
	ms, _, err := readMembers(totalShards, members)
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	out := make([]Share, len(ms))
	order := make([]int, len(ms))
	left := totalShards
	for j, m := range ms {
		out[j] = Share{ID: m.id, Weight: int(m.weight), Min: m.floor, Max: m.ceil(), Target: m.floor}
		order[j] = j
		left -= m.floor
	}
	// ms is in ID order, so a stable sort keeps equal remainders in ID order.
	slices.SortStableFunc(order, func(a, b int) int {
		switch ra, rb := ms[a].rem, ms[b].rem; {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return 0
	})
	// The remainders add up to left·Σw, each below Σw, so at least left members have
	// one: the extra shards never go to a member whose share is whole.
	for _, j := range order[:left] {
		out[j].Target++
	}
	return out, nil
}

// share returns floor(total·w/sum) and its remainder, total·w mod sum. The product
// is taken in 128 bits, so any int weights work; the quotient fits because w <= sum.
func share(total, w, sum uint64) (floor int, rem uint64) {
	hi, lo := bits.Mul64(total, w)
	q, r := bits.Div64(hi, lo, sum)
	return int(q), r
}

// member is the working state of one member that may hold shards.
type member struct {
	id     string
	weight uint64
	// The share is floor + rem/Σw. Comparing (load-floor, -rem) orders members by
	// load − share exactly, without multiplying anything.
	floor int
	rem   uint64
	// load counts the shards the member holds or will hold once the plan so far is
	// applied, including Revoking shards expected to land here.
	load int
	// owned are the shards it holds Assigned, ascending; rebalancing gives from the end.
	// Shards placed by this plan are not in it, so none moves twice.
	owned []int32
}

func (m *member) ceil() int {
	if m.rem > 0 {
		return m.floor + 1
	}
	return m.floor
}

// over reports whether the member holds more than the ceiling of its share.
func (m *member) over() bool { return m.load > m.ceil() }

// under reports whether the member holds less than the floor of its share.
func (m *member) under() bool { return m.load < m.floor }

func sortByID(ms []member) {
	slices.SortFunc(ms, func(a, b member) int { return strings.Compare(a.id, b.id) })
}
