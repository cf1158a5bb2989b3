package node

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/sink"
)

// Handler is how a Go program that embeds the agent receives its events: the node
// calls it with batches of the dispatches its shards received, and with itself, so
// the handler can answer through Send and SendGuild. Set it as Config.Handler.
//
// Its contract is sink.Sink's. Events come in order per shard, in batches of one
// local cluster's queue, from one goroutine per local cluster (so concurrently).
// Nil accepts the whole batch; an error accepts none of it, and a
// *sink.PartialError the first Accepted events: the node delivers the rest again
// after a backoff (50 ms, doubling to 2 s), and meanwhile those shards stop reading
// and their positions hold. An event counts as delivered, and moves the checkpoint
// a failover resumes from, only once it was accepted, so a handler must not accept
// what it has not done. Delivery is at least once: after a crash of a node the
// events since its last checkpoint come again (see the README). ctx ends after 5 s
// (the attempt counts as failed) or when the node stops. The handler must not keep
// batch after it returns.
//
// The handler may run before Start has returned: n is the node it runs in.
type Handler func(ctx context.Context, n *Node, batch []sink.Delivery) error

// Each makes a Handler of a function of one event, called for the batch's events in
// order: the first error stops the batch there, with the events before it accepted
// and that one delivered again, with the rest, after a backoff. Return an error only
// for what a retry can mend (a refusal of Send worth retrying, an answer that could
// not be stored); an event the function can never handle is better logged and
// accepted, or it holds its shard forever.
func Each(f func(ctx context.Context, n *Node, d sink.Delivery) error) Handler {
	return func(ctx context.Context, n *Node, batch []sink.Delivery) error {
		for i, d := range batch {
			if err := f(ctx, n, d); err != nil {
				if i == 0 {
					return err
				}
				return &sink.PartialError{Accepted: i, Err: err}
			}
		}
		return nil
	}
}

// handlerSink delivers to a Handler.
type handlerSink struct {
	n *Node
	h Handler
}

func (s handlerSink) Deliver(ctx context.Context, batch []sink.Delivery) error {
	return s.h(ctx, s.n, batch)
}

// eventSink is where the runner delivers: the Handler, or the Sink.
func (n *Node) eventSink() sink.Sink {
	if n.cfg.Handler != nil {
		return handlerSink{n, n.cfg.Handler}
	}
	return n.cfg.Sink
}

// Send writes a gateway command, {"op": op, "d": d}, on shard's connection, wherever
// in the cluster the shard runs: the path of POST /v1/shards/{id}/send, with the same
// checks, limits and refusals. The node looks the owner up in its replica and
// forwards the command there (at most twice, with the assignment's epoch); the owner
// writes it within the connection's send limit while it holds its lease. d is
// encoded with encoding/json (a json.RawMessage as it is) and must be an object.
// The answer names the shard and the node that wrote the command.
//
// A refusal is tested with errors.Is against node/api's errors:
//
//   - api.ErrBadCommand: an op a bot may not send (api.CommandOps are allowed), d not
//     an object, or a guild's command (ops 4, 8, 43) for another shard than the
//     guild's;
//   - api.ErrUnknownShard: a shard the cluster does not run;
//   - api.ErrPayloadTooLarge: over Discord's 4096 bytes;
//   - api.ErrRateLimited: the connection's send limit is used up, or all of the
//     guild's members were asked for less than 30 s ago;
//   - api.ErrNotReady: the shard is connecting or resuming;
//   - api.ErrOwnerMoving: the shard is being handed off or failed over, or the
//     cluster has no shard count yet.
//
// The last three are an *api.RetryError (errors.As) whose After says when to try
// again. A command whose ctx ended may or may not have been written.
func (n *Node) Send(ctx context.Context, shard, op int, d any) (api.Sent, error) {
	return n.sendCommand(ctx, api.Target{Shard: shard}, op, d)
}

// SendGuild is Send to the shard of guild, (guild_id >> 22) % shards, the path of
// POST /v1/guilds/{guild_id}/send.
func (n *Node) SendGuild(ctx context.Context, guild uint64, op int, d any) (api.Sent, error) {
	return n.sendCommand(ctx, api.Target{Guild: guild, ByGuild: true}, op, d)
}

func (n *Node) sendCommand(ctx context.Context, t api.Target, op int, d any) (api.Sent, error) {
	raw, ok := d.(json.RawMessage)
	if !ok {
		b, err := json.Marshal(d)
		if err != nil {
			return api.Sent{}, fmt.Errorf("%w: d: %v", api.ErrBadCommand, err)
		}
		raw = b
	}
	c := api.Command{Op: op, D: raw}
	// Checked here as the API checks a request's body, before the owner is looked up.
	if err := c.Check(); err != nil {
		return api.Sent{}, err
	}
	return backend{n}.Send(ctx, t, c)
}
