package balancer

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// ErrInvalidInput is what every *InputError matches with errors.Is.
var ErrInvalidInput = errors.New("invalid balancer input")

// InputError names the first bad field of an Input. The leader builds the Input from
// replicated state that the fsm has already validated, so this signals a bug or a
// corrupt state, and the message has to say exactly where.
type InputError struct {
	Field   string // a Go expression on Input, e.g. "Members[2].Weight"
	Value   string // the field's value as Go would print it; strings are quoted
	Problem string // what is wrong with it
}

func (e *InputError) Error() string {
	return fmt.Sprintf("%v: %s = %s: %s", ErrInvalidInput, e.Field, e.Value, e.Problem)
}

func (e *InputError) Unwrap() error { return ErrInvalidInput }

func badField(slice string, i int, field string, value any, problem string, args ...any) *InputError {
	name := field
	if slice != "" {
		name = slice + "[" + strconv.Itoa(i) + "]." + field
	}
	v := fmt.Sprint(value)
	if s, ok := value.(string); ok {
		v = strconv.Quote(s)
	}
	return &InputError{Field: name, Value: v, Problem: fmt.Sprintf(problem, args...)}
}

func checkTotal(total int) error {
	if total < 0 || total > MaxShards {
		return badField("", 0, "TotalShards", total, "must be in [0, %d]", MaxShards)
	}
	return nil
}

// readMembers validates members and returns those that may hold shards, sorted by ID,
// with their shares of total, and an index from every member's ID to its position in
// that slice (-1 for a member that may not hold shards).
func readMembers(total int, in []Member) ([]member, map[string]int32, error) {
	index := make(map[string]int32, len(in))
	n := 0
	var sum uint64
	for i, m := range in {
		switch first, dup := index[m.ID]; {
		case m.ID == "":
			return nil, nil, badField("Members", i, "ID", m.ID, "must not be empty: \"\" means unassigned in a Move")
		case dup:
			return nil, nil, badField("Members", i, "ID", m.ID, "duplicates Members[%d].ID", first)
		case m.Weight < 0:
			return nil, nil, badField("Members", i, "Weight", m.Weight, "must not be negative")
		case m.State > Left:
			return nil, nil, badField("Members", i, "State", m.State, "unknown member state")
		}
		index[m.ID] = int32(i)
		if holds(m) {
			// Each share is computed in 128 bits, but Σw is their common divisor and
			// must not wrap around.
			if uint64(m.Weight) > math.MaxInt64-sum {
				return nil, nil, badField("Members", i, "Weight", m.Weight, "the weights of the alive members add up to more than %d", int64(math.MaxInt64))
			}
			sum += uint64(m.Weight)
			n++
		}
	}
	ms := make([]member, 0, n)
	for _, m := range in {
		index[m.ID] = -1
		if holds(m) {
			ms = append(ms, member{id: m.ID, weight: uint64(m.Weight)})
		}
	}
	sortByID(ms)
	for j := range ms {
		index[ms[j].id] = int32(j)
		ms[j].floor, ms[j].rem = share(uint64(total), ms[j].weight, sum)
	}
	return ms, index, nil
}

// holds reports whether a member may hold shards.
func holds(m Member) bool { return m.State == Alive && m.Weight > 0 }
