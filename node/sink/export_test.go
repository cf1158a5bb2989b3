package sink

import "time"

// SetCommandTimings shortens the command reader's waits for a test.
func SetCommandTimings(block, claimIdle time.Duration) (restore func()) {
	oldBlock, oldIdle := commandsBlock, commandsClaimIdle
	commandsBlock, commandsClaimIdle = block, claimIdle
	return func() { commandsBlock, commandsClaimIdle = oldBlock, oldIdle }
}
