// Package fakeclock is a clock that a test moves by hand, for the rules that depend
// on time (leases, grace, fencing): they are tested in microseconds, on the real code
// path, by injecting its Now.
//
// Only tests use it; production code takes time.Now.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a time that moves only when told to. Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock set at start.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now is the clock's time; pass the method value as a Now dependency.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Add moves the clock forward by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
