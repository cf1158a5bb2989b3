package leader

import (
	"context"
	"time"

	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/node/api"
)

// refreshBudget keeps the session start budget from Discord, whose count is the
// truth, and Discord's recommended shard count: a new leader asks at once, then
// every minute.
func (l *Leader) refreshBudget(ctx context.Context, t *term) {
	for {
		gb, err := l.gatewayBot(ctx)
		now := l.now()
		t.mu.Lock()
		if err != nil {
			t.budget.Note = "cannot read session_start_limit: " + err.Error()
		} else {
			s := gb.SessionStartLimit
			reserve := l.cfg.SessionReserve
			if reserve == 0 {
				reserve = max(10, s.Total/20)
			}
			t.budget = api.Budget{Known: true, Total: s.Total, Remaining: s.Remaining, Reserve: reserve,
				ResetsAt: now.Add(s.ResetIn()), FetchedAt: now}
			t.budget.Low = t.budget.Remaining <= 2*reserve
			t.recommended = gb.Shards
		}
		t.mu.Unlock()
		if !backoff.Sleep(ctx, time.Minute) {
			return
		}
	}
}
