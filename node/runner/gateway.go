package runner

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard"
)

// closeAuthenticationFailed is the gateway's close code for a token it rejects.
const closeAuthenticationFailed = 4004

// closeShardingRequired is the gateway's close code for a shard with too many guilds
// for the shard count.
const closeShardingRequired = 4011

// gateway is what this node knows of Discord's gateway for all its shards: the URL
// from one GET /gateway/bot per node, and whether Discord accepts the bot token. A
// node whose token is rejected runs no shard (each would be refused, and every
// refusal counts against the bot's invalid-request limit, whose penalty is an IP
// ban) and tells the leader so with each lease renewal, so that the leader gives it
// none.
type gateway struct {
	mu       sync.Mutex
	url      string
	rejected bool
	reason   string
	since    time.Time
	lastErr  string    // the last failure to reach Discord, logged once per kind
	check    chan bool // asks the watcher to verify the token now
}

func newGateway(url string) *gateway { return &gateway{url: url, check: make(chan bool, 1)} }

// ready reports the gateway URL, or why shards cannot start now.
func (g *gateway) ready() (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.rejected:
		return "", errors.New(g.reason)
	case g.url == "":
		return "", errors.New("waiting for GET /gateway/bot")
	}
	return g.url, nil
}

// unfit is why this node should hold no shards, "" when it may.
func (g *gateway) unfit() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rejected {
		return g.reason
	}
	return ""
}

// reject records that Discord refused the token; it reports whether that is news.
func (g *gateway) reject(why string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rejected {
		return false
	}
	g.rejected, g.reason, g.since = true, why, now
	select {
	case g.check <- true:
	default:
	}
	return true
}

// watchGateway fetches GET /gateway/bot until it has the URL, and, while the token
// is rejected, asks again with a capped exponential backoff until Discord accepts
// it: one request per node, whatever its number of shards.
func (r *Runner) watchGateway() {
	g := r.gw
	bo := backoff.Backoff{Min: time.Second, Max: r.cfg.TokenRetryMax, Jitter: 0.2}
	for {
		g.mu.Lock()
		need := g.url == "" || g.rejected
		g.mu.Unlock()
		if !need {
			select {
			case <-r.ctx.Done():
				return
			case <-g.check:
				bo.Reset()
				continue
			}
		}
		gb, err := r.deps.GatewayBot(r.ctx)
		if r.ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			g.mu.Lock()
			was := g.rejected
			if r.cfg.GatewayURL == "" {
				g.url = gb.URL
			}
			g.rejected, g.reason, g.lastErr = false, "", ""
			g.mu.Unlock()
			if was {
				r.log.Info("Discord accepts the bot token again: this node takes shards again")
			}
			bo.Reset()
			r.Poke()
			continue
		case errors.Is(err, shard.ErrUnauthorized):
			if g.reject("Discord rejected the bot token (401 on GET /gateway/bot): this node holds no shards until it is accepted; check --token or DISCLUSTER_TOKEN on this node", r.now()) {
				r.log.Error("DISCORD REJECTED THE BOT TOKEN: this node holds no shards and asks Discord again with backoff; the other nodes keep theirs",
					"retry_max", r.cfg.TokenRetryMax)
				r.Poke()
			}
		default:
			g.mu.Lock()
			first := g.lastErr != err.Error()
			g.lastErr = err.Error()
			g.mu.Unlock()
			if first {
				r.log.Warn("cannot reach Discord for GET /gateway/bot; retrying with backoff", "err", err)
			}
		}
		if !bo.Wait(r.ctx) {
			return
		}
	}
}

// fatalClose is a shard's fatal close: 4004 means the token, which every shard of
// this node shares, was rejected; 4011 that the cluster needs more shards, which the
// event tells the leader (with the node's lease renewals), and the leader reshards.
func (r *Runner) fatalClose(g *generation, l shard.Lifecycle) {
	var fe *shard.FatalError
	if !errors.As(l.Err, &fe) {
		return
	}
	if fe.Code == closeShardingRequired {
		r.log.Error("DISCORD REQUIRES MORE SHARDS (close 4011): the leader starts a reshard", "shard", l.ShardID, "generation", g.gen)
		r.deps.Notify.Notify(event.Event{Kind: event.ShardingRequired, Shards: event.Shards{l.ShardID}, Gen: g.gen, Cause: fe.Cause})
		return
	}
	if fe.Code != closeAuthenticationFailed {
		return
	}
	why := fmt.Sprintf("Discord rejected the bot token (close %d at the gateway, shard %d): this node holds no shards until it is accepted; check --token or DISCLUSTER_TOKEN on this node", fe.Code, l.ShardID)
	if r.gw.reject(why, r.now()) {
		r.log.Error("DISCORD REJECTED THE BOT TOKEN: this node stops its shards, holds none, and asks Discord again with backoff; the other nodes keep theirs",
			"shard", l.ShardID, "code", fe.Code)
		r.Poke()
	}
}

// Unfit is why this node should hold no shards ("" when it may): the leader gives
// it none meanwhile.
func (r *Runner) Unfit() string { return r.gw.unfit() }
