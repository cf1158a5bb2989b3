package sink

import (
	"context"
	"time"
)

// SetWebhookClock has a webhook sink made from cfg read the time from now and wait
// with sleep, so that a test moves its backoffs and Retry-After waits by hand.
func SetWebhookClock(cfg *WebhookConfig, now func() time.Time, sleep func(context.Context, time.Duration) bool) {
	cfg.now, cfg.sleep = now, sleep
}
