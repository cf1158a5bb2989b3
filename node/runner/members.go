package runner

import (
	"bytes"
	"encoding/json"
	"sync"
	"time"

	"github.com/discluster/discluster/node/api"
)

// allMembersWindow is Discord's limit on requests for all of a guild's members (op 8
// with query "" and limit 0): one per guild per 30 s, past which it answers with a
// RATE_LIMITED dispatch instead of the members.
const allMembersWindow = 30 * time.Second

// memberRequests remembers, by guild, when this node last asked for all its members.
// Every command for a guild goes to its shard's owner, so the owner sees every such
// request of the cluster; a new owner after a failover starts afresh, and at worst
// one request in its first 30 s gets Discord's RATE_LIMITED answer.
type memberRequests struct {
	mu   sync.Mutex
	last map[uint64]time.Time
}

// reserve records an all-members request for guild at now, or says how long until
// one is allowed.
func (m *memberRequests) reserve(guild uint64, now time.Time) (wait time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if last, ok := m.last[guild]; ok {
		if left := allMembersWindow - now.Sub(last); left > 0 {
			return left
		}
	}
	if m.last == nil {
		m.last = map[uint64]time.Time{}
	}
	if len(m.last) >= 1024 {
		for g, t := range m.last { // forget what no longer limits anything
			if now.Sub(t) >= allMembersWindow {
				delete(m.last, g)
			}
		}
	}
	m.last[guild] = now
	return 0
}

// release forgets the request reserved at at: it was never sent.
func (m *memberRequests) release(guild uint64, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last[guild].Equal(at) {
		delete(m.last, guild)
	}
}

// allMembersGuild is the guild an op 8 payload's d asks all members of, or false
// when it asks for some (a query prefix with a limit, or user ids).
func allMembersGuild(d json.RawMessage) (uint64, bool) {
	var r struct {
		GuildID json.RawMessage `json:"guild_id"`
		Query   *string         `json:"query"`
		Limit   *int64          `json:"limit"`
		UserIDs json.RawMessage `json:"user_ids"`
	}
	if json.Unmarshal(d, &r) != nil {
		return 0, false
	}
	if ids := bytes.TrimSpace(r.UserIDs); len(ids) > 0 && string(ids) != "null" {
		return 0, false
	}
	if r.Query == nil || *r.Query != "" || r.Limit != nil && *r.Limit != 0 {
		return 0, false
	}
	return api.ParseSnowflake(r.GuildID)
}
