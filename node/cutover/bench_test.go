package cutover

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// The payloads of the old generation's delivery path: Discord's documented
// MESSAGE_CREATE (testdata/gateway), the same with a 1.5 KB message and guild_id last
// (the scan's worst place for it), a message of escaped quotes, and a 64 KB GUILD_CREATE-like object with no
// top-level guild_id (the scan reads all of it).
func benchPayloads(b *testing.B) []struct {
	name string
	d    json.RawMessage
} {
	raw, err := os.ReadFile("../../testdata/gateway/message_create.json")
	if err != nil {
		b.Fatal(err)
	}
	var frame struct{ D json.RawMessage }
	if err := json.Unmarshal(raw, &frame); err != nil {
		b.Fatal(err)
	}
	long := fmt.Sprintf(`{"id":"334385199974967042","channel_id":"290926798999357250","author":{"id":"53908099506183680","username":"someone"},"member":{"roles":["1","2"],"joined_at":"2017-03-13T19:19:14.040000+00:00"},"content":%q,"embeds":[],"mentions":[],"guild_id":"290926798999357249"}`,
		strings.Repeat(`some words of a message, `, 60))
	// Every quote in a string is escaped and restarts the search for its end.
	quoted := fmt.Sprintf(`{"id":"334385199974967042","content":%q,"guild_id":"290926798999357249"}`, strings.Repeat(`a "quoted" word, `, 90))
	var members []string
	for i := range 400 {
		members = append(members, fmt.Sprintf(`{"user":{"id":"%d","username":"member%d","avatar":null},"roles":["%d"],"joined_at":"2020-01-01T00:00:00+00:00","deaf":false,"mute":false}`, 1e17+i, i, i))
	}
	guild := `{"id":"290926798999357249","name":"a guild","members":[` + strings.Join(members, ",") + `],"channels":[],"roles":[]}`
	return []struct {
		name string
		d    json.RawMessage
	}{
		{fmt.Sprintf("message_create_%dB", len(frame.D)), frame.D},
		{fmt.Sprintf("guild_id_last_%dB", len(long)), json.RawMessage(long)},
		{fmt.Sprintf("180_escaped_quotes_%dB", len(quoted)), json.RawMessage(quoted)},
		{fmt.Sprintf("guild_create_%dB", len(guild)), json.RawMessage(guild)},
	}
}

func BenchmarkKeyOf(b *testing.B) {
	for _, p := range benchPayloads(b) {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(p.d)))
			b.ReportAllocs()
			for b.Loop() {
				KeyOf("MESSAGE_CREATE", p.d)
			}
		})
	}
}

// Tracker.Delivered on a shard of 2,500 guilds, one event a millisecond, W = 30 s:
// the sweep runs every 30,000 events and is counted in.
func BenchmarkTrackerDelivered(b *testing.B) {
	tr, err := NewTracker(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]Key, 2500)
	for i := range keys {
		keys[i] = Key{Guild: uint64(i+1) << 22, Hash: uint64(i)}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tr.Delivered(keys[i%len(keys)], t0.Add(time.Duration(i)*time.Millisecond))
		i++
	}
}

// Holdback.Add before the switch in steady state: 30 s of events at one a
// millisecond held, one pruned for each one added.
func BenchmarkHoldbackAdd(b *testing.B) {
	h, err := NewHoldback(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	ev := testEvent("a1", 0)
	k := KeyOf(ev.Type, ev.Data)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ev.Seq = int64(i + 1)
		if _, err := h.Add(ev, k, t0.Add(time.Duration(i)*time.Millisecond)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
