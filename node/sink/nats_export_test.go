package sink

import "time"

// SetNATSCommandTimings shortens the NATS command reader's waits for a test: block
// is one fetch's wait, ackWait how long a command may be held unacknowledged.
func SetNATSCommandTimings(block, ackWait time.Duration) (restore func()) {
	oldBlock, oldWait := commandsBlock, natsCommandsAckWait
	commandsBlock, natsCommandsAckWait = block, ackWait
	return func() { commandsBlock, natsCommandsAckWait = oldBlock, oldWait }
}
