package gatewaytest

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// maxMessageContent is Discord's limit on a message's content, in characters.
const maxMessageContent = 2000

// ErrNoMessages: the shard's session does not receive messages, because of the
// intents it identified with (GUILD_MESSAGES in a guild, DIRECT_MESSAGES for a DM).
var ErrNoMessages = errors.New("gatewaytest: the session's intents receive no messages")

// SendMessage has a user post content in the first guild the shard serves (in a DM
// on shard 0 of a bot in no guild): the shard's live session dispatches a
// MESSAGE_CREATE with the next seq, kept for RESUME replay like any other. It is
// the generated message's shape with content as typed (no embeds, attachments or
// mentions). As on Discord, content arrives empty without the MESSAGE_CONTENT
// intent, and nothing arrives without GUILD_MESSAGES (DIRECT_MESSAGES for a DM):
// ErrNoMessages.
func (s *Server) SendMessage(shardID int, content string) error {
	if n := utf8.RuneCountInString(content); n > maxMessageContent {
		return fmt.Errorf("gatewaytest: message content of %d characters is over Discord's %d", n, maxMessageContent)
	}
	var failed error
	err := s.inject(shardID, func(c *conn) {
		ss := c.sess
		switch {
		case ss == nil:
			failed = fmt.Errorf("shard %d: %w", shardID, ErrNoLiveConnection)
			return
		case ss.msgTmpl == nil:
			failed = fmt.Errorf("shard %d: %w", shardID, ErrNoMessages)
			return
		}
		body, err := ss.typedMessage(content, s.now())
		if err != nil {
			failed = err
			return
		}
		ss.dispatchLocked("MESSAGE_CREATE", body)
	})
	if err != nil {
		return err
	}
	return failed
}

// typedMessage renders the body of a message a user typed in the session's first
// guild (or its DM channel).
func (ss *session) typedMessage(content string, now time.Time) ([]byte, error) {
	ss.mu.Lock()
	// Worker id 3 in the snowflake, where generated messages have 2: the ids of the
	// two kinds never collide.
	id := uint64(now.UnixMilli()-discordEpochMS)<<22 | 3<<17 | (ss.idx&31)<<12 | uint64(ss.seq+1)&0xfff
	ss.mu.Unlock()
	args := renderArgs{messageID: id}
	if !ss.dm {
		args.guildID, args.guildIndex = guildID(ss.shardID), uint64(ss.shardID)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(ss.msgTmpl.body.render(nil, &args), &m); err != nil {
		return nil, fmt.Errorf("gatewaytest: message template: %w", err)
	}
	if ss.intents&intentMessageContent != 0 {
		text, _ := json.Marshal(content)
		m["content"] = text
	}
	for _, k := range []string{"mentions", "mention_roles", "embeds", "attachments", "components"} {
		m[k] = json.RawMessage(`[]`)
	}
	delete(m, "poll")
	return json.Marshal(m)
}
