package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// natsCommandsAckWait is how long a command may be held unacknowledged before
// JetStream gives it to another reader: longer than the node spends retrying one
// command (30 s while its shard moves), so only a reader that died loses it. Tests
// shorten it.
var natsCommandsAckWait = 60 * time.Second

// NATSCommandsSubject is where workers publish gateway commands for the NATS sink whose
// event subject prefix is subject: <subject>_send.<shard>, outside the events'
// <subject>.>, so the two streams never overlap.
func NATSCommandsSubject(subject string) string { return subject + "_send" }

// NATSCommandsStream names the stream of the commands, beside the events' stream.
func NATSCommandsStream(stream string) string { return stream + "_SEND" }

// ReadCommands reads the workers' gateway commands until ctx ends: JSON
// {"shardId":N,"payload":{"op":3,"d":{…}}} (what @discordjs/brokers' gateway_send
// carries, in JSON) published to <subject>_send.<N>, stored in the stream
// <STREAM>_SEND (made when missing). Every node reads them through one durable pull
// consumer, CommandsGroup, so each command is handed to handle by one node, which
// sends it through the shard's owner; it is acknowledged once handle returns, and
// given to another node after natsCommandsAckWait if its reader died first. A
// command this node stops before handling is given back at once. A message that is
// not a command is terminated (never redelivered) and reported through bad. The
// consumer starts at the stream's end when first made: commands published while no
// node ran before are not sent.
func (s *NATS) ReadCommands(ctx context.Context, _ string, handle func(context.Context, Command), bad func(id string, err error)) error {
	js, err := s.connected(ctx)
	if err != nil {
		return err
	}
	subject, stream := NATSCommandsSubject(s.cfg.subject), NATSCommandsStream(s.cfg.stream)
	if err := ensureStream(ctx, js, s.streamConfig(stream, subject+".>", "gateway commands from the bot's workers")); err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       CommandsGroup,
		Description:   "discluster agents: each command once, sent through its shard's owner",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       natsCommandsAckWait,
		MaxAckPending: 1000,
		FilterSubject: subject + ".>",
	})
	if err != nil {
		return fmt.Errorf("nats: consumer %s of stream %s: %w", CommandsGroup, stream, err)
	}
	for ctx.Err() == nil {
		fetched, err := cons.Fetch(100, jetstream.FetchMaxWait(commandsBlock))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("nats: reading %s: %w", stream, err)
		}
		for m := range fetched.Messages() {
			if ctx.Err() != nil {
				m.Nak() // another node's now
				continue
			}
			c, err := decodeNATSCommand(m)
			if err != nil {
				m.Term()
				bad(c.ID, err)
				continue
			}
			handle(ctx, c)
			if ctx.Err() != nil {
				// The node stopped: handle may have given up before sending.
				m.Nak()
			} else {
				m.Ack()
			}
		}
		if err := fetched.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("nats: reading %s: %w", stream, err)
		}
	}
	return ctx.Err()
}

// decodeNATSCommand reads {"shardId":N,"payload":{"op":N,"d":…}}; the subject's
// last token, when it is a number, must be that shard.
func decodeNATSCommand(m jetstream.Msg) (Command, error) {
	c := Command{ID: m.Subject()}
	if md, err := m.Metadata(); err == nil {
		c.ID = md.Stream + "#" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	var blob struct {
		ShardID *int `json:"shardId"`
		Payload *struct {
			Op *int            `json:"op"`
			D  json.RawMessage `json:"d"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(m.Data(), &blob); err != nil {
		return c, fmt.Errorf("not JSON of {shardId, payload: {op, d}}: %w", err)
	}
	switch {
	case blob.ShardID == nil || blob.Payload == nil:
		return c, errors.New("not {shardId, payload}")
	case blob.Payload.Op == nil:
		return c, errors.New("payload.op is missing")
	}
	subj := m.Subject()
	if n, err := strconv.Atoi(subj[strings.LastIndexByte(subj, '.')+1:]); err == nil && n != *blob.ShardID {
		return c, fmt.Errorf("published to %s with shardId %d", subj, *blob.ShardID)
	}
	c.ShardID, c.Op, c.D = *blob.ShardID, *blob.Payload.Op, blob.Payload.D
	if len(c.D) == 0 {
		c.D = json.RawMessage("null")
	}
	return c, nil
}
