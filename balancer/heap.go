package balancer

// The balance order: member a comes before member b when a is further below its
// share (load − share is smaller), ties to the smaller ID (members are indexed in ID
// order). Receivers are taken from the front of this order and donors from the back,
// so one total order decides both, and a member can never be chosen as both.
func (s *solver) before(a, b int32) bool {
	ma, mb := &s.ms[a], &s.ms[b]
	// load − share = (load − floor) − rem/Σw with 0 <= rem < Σw: the whole parts
	// decide, then the larger remainder (larger share) is further below.
	if da, db := ma.load-ma.floor, mb.load-mb.floor; da != db {
		return da < db
	}
	if ma.rem != mb.rem {
		return ma.rem > mb.rem
	}
	return a < b
}

// memberHeap is a binary heap of member indices in the balance order: the least
// loaded on top for receivers, the most loaded for donors. Positions are tracked
// because a rebalancing move changes two members' loads and each may sit in both
// heaps; with it a move costs O(log members), however many members there are.
type memberHeap struct {
	s     *solver
	donor bool    // most loaded on top
	items []int32 // member indices
	pos   []int32 // pos[m] is m's index in items, or -1
}

func newHeap(s *solver, donor bool, items, pos []int32) memberHeap {
	h := memberHeap{s: s, donor: donor, items: items, pos: pos}
	for i := range h.pos {
		h.pos[i] = -1
	}
	for i, m := range h.items {
		h.pos[m] = int32(i)
	}
	for i := len(h.items)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
	return h
}

func (h *memberHeap) len() int { return len(h.items) }

func (h *memberHeap) top() int32 { return h.items[0] }

func (h *memberHeap) less(i, j int) bool {
	if h.donor {
		return h.s.before(h.items[j], h.items[i])
	}
	return h.s.before(h.items[i], h.items[j])
}

func (h *memberHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.pos[h.items[i]] = int32(i)
	h.pos[h.items[j]] = int32(j)
}

func (h *memberHeap) up(i int) bool {
	moved := false
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.swap(i, p)
		i, moved = p, true
	}
	return moved
}

func (h *memberHeap) down(i int) {
	n := len(h.items)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if r := c + 1; r < n && h.less(r, c) {
			c = r
		}
		if !h.less(c, i) {
			return
		}
		h.swap(i, c)
		i = c
	}
}

// fix restores the order after member m's load changed; m need not be in the heap.
func (h *memberHeap) fix(m int32) {
	if i := int(h.pos[m]); i >= 0 && !h.up(i) {
		h.down(i)
	}
}

// remove takes member m out of the heap.
func (h *memberHeap) remove(m int32) {
	i := int(h.pos[m])
	if i < 0 {
		return
	}
	last := len(h.items) - 1
	h.swap(i, last)
	h.items = h.items[:last]
	h.pos[m] = -1
	if i < last {
		h.fix(h.items[i])
	}
}
