package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/rpc"
	"github.com/discluster/discluster/node/sink"
)

// send writes a command on its shard's connection: here when this node owns the
// shard, else through the owner this node's replica names, one hop further each
// time (rpc.MaxSendHops). It returns the node that wrote it. The node a command
// was first asked of counts it in its metrics, sent or refused.
func (n *Node) send(ctx context.Context, args rpc.SendArgs) (node string, err error) {
	if args.Hops == 0 {
		defer func() { n.metrics.Command(err) }()
	}
	total := n.fsm.Config().TotalShards
	switch {
	case total <= 0:
		return "", &api.RetryError{Err: fmt.Errorf("%w: the cluster has no shard count yet (the leader sets it once elected)", api.ErrOwnerMoving), After: time.Second}
	case args.Shard < 0 || args.Shard >= total:
		return "", fmt.Errorf("%w: shard %d (the cluster runs %d)", api.ErrUnknownShard, args.Shard, total)
	}
	a, ok := n.fsm.Assignment(args.Shard)
	switch {
	case !ok || a.Node == "":
		return "", &api.RetryError{Err: fmt.Errorf("%w: no node holds shard %d yet", api.ErrOwnerMoving, args.Shard), After: time.Second}
	case a.Epoch < args.Epoch:
		return "", &api.RetryError{Err: fmt.Errorf("%w: %s has not caught up with shard %d's assignment at epoch %d yet", api.ErrOwnerMoving, n.cfg.Name, args.Shard, args.Epoch), After: time.Second}
	case a.Phase != fsm.Assigned:
		return "", &api.RetryError{Err: fmt.Errorf("%w: shard %d is being handed off from %s", api.ErrOwnerMoving, args.Shard, a.Node), After: time.Second}
	case a.Node == n.cfg.Name:
		return n.cfg.Name, n.runner.Send(ctx, args.Shard, a.Epoch, args.Op, json.RawMessage(args.D))
	case args.Hops >= rpc.MaxSendHops:
		return "", &api.RetryError{Err: fmt.Errorf("%w: shard %d was forwarded %d times without reaching its owner", api.ErrOwnerMoving, args.Shard, args.Hops), After: time.Second}
	}
	m, ok := n.fsm.Member(a.Node)
	if !ok {
		return "", &api.RetryError{Err: fmt.Errorf("%w: shard %d's owner %s is not a member", api.ErrOwnerMoving, args.Shard, a.Node), After: time.Second}
	}
	args.Epoch, args.Hops = a.Epoch, args.Hops+1
	return n.pool.Send(ctx, m.RaftAddr, args)
}

// Send implements api.Backend.
func (b backend) Send(ctx context.Context, t api.Target, c api.Command) (api.Sent, error) {
	n := b.n
	id := t.Shard
	if t.ByGuild {
		total := n.fsm.Config().TotalShards
		if total <= 0 {
			return api.Sent{}, &api.RetryError{Err: fmt.Errorf("%w: the cluster has no shard count yet (the leader sets it once elected)", api.ErrOwnerMoving), After: time.Second}
		}
		id = api.ShardOf(t.Guild, total)
	}
	if g, ok := c.Guild(); ok {
		// Discord acts on a guild's commands only on the guild's own shard.
		if total := n.fsm.Config().TotalShards; total > 0 && api.ShardOf(g, total) != id {
			return api.Sent{}, fmt.Errorf("%w: guild %d is on shard %d, not %d (send it with --guild, or to /v1/guilds/%d/send)", api.ErrBadCommand, g, api.ShardOf(g, total), id, g)
		}
	}
	node, err := n.send(ctx, rpc.SendArgs{Shard: id, Op: c.Op, D: c.D})
	if err != nil {
		return api.Sent{}, err
	}
	return api.Sent{Sent: true, Shard: id, Node: node}, nil
}

// CommandSource is where workers publish gateway commands: ReadCommands hands each to
// handle once, among all the nodes reading it (see sink.Redis.ReadCommands).
type CommandSource interface {
	ReadCommands(ctx context.Context, node string, handle func(context.Context, sink.Command), bad func(id string, err error)) error
}

// brokerRetryFor bounds how long a published command is retried while its shard is
// not ready, moving, or at its send limit; past it, it is dropped with a warning.
const brokerRetryFor = 30 * time.Second

// readCommands sends the commands workers publish until the node stops.
func (n *Node) readCommands() {
	bad := func(id string, err error) {
		n.log.Warn("a published gateway command is not {shardId, payload: {op, d}}; dropped", "entry", id, "err", err)
	}
	for n.ctx.Err() == nil {
		err := n.cfg.Commands.ReadCommands(n.ctx, n.cfg.Name, n.sendPublished, bad)
		if n.ctx.Err() != nil {
			return
		}
		n.log.Warn("cannot read the workers' gateway commands; retrying", "err", err)
		select {
		case <-n.ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// sendPublished sends one published command, waiting out a refusal worth retrying
// for at most brokerRetryFor. A worker has no one to answer it, so a command that
// cannot be sent is logged, never silently lost.
func (n *Node) sendPublished(ctx context.Context, c sink.Command) {
	cmd := api.Command{Op: c.Op, D: c.D}
	err := cmd.Check()
	deadline := time.Now().Add(brokerRetryFor)
	for err == nil {
		_, err = backend{n}.Send(ctx, api.Target{Shard: c.ShardID}, cmd)
		var retry *api.RetryError
		if !errors.As(err, &retry) || time.Now().Add(retry.After).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry.After):
		}
	}
	if err != nil {
		n.log.Warn("a published gateway command was not sent", "entry", c.ID, "shard", c.ShardID, "op", c.Op, "err", err)
	}
}
