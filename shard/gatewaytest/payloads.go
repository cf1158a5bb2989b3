package gatewaytest

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// The payload shapes are recorded-style JSON files; ids that vary are
// placeholders inside strings ("{{guild_id+1}}"), so every file is valid JSON.
//
//go:embed testdata/message_create.json testdata/guild_create.json testdata/ready.json
var payloadFS embed.FS

// placeholder kinds a template can splice in.
type phKind uint8

const (
	phGuildID phKind = iota + 1
	phGuildIndex
	phMessageID
)

// renderArgs are the values that differ between two renderings of a template.
type renderArgs struct {
	guildID    uint64
	guildIndex uint64
	messageID  uint64
}

type tmplSeg struct {
	lit []byte // literal bytes before the placeholder
	ph  phKind
	off uint64 // added to the placeholder value: {{guild_id+3}} is a channel id
}

// template is a compact JSON body split once at its placeholders, so that
// rendering is appends only: the fake must stay far cheaper than any client.
type template struct {
	segs []tmplSeg
	tail []byte
}

func compileTemplate(src []byte) (*template, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, src); err != nil {
		return nil, err
	}
	s := buf.Bytes()
	t := &template{}
	for {
		i := bytes.Index(s, []byte("{{"))
		if i < 0 {
			t.tail = s
			return t, nil
		}
		j := bytes.Index(s[i:], []byte("}}"))
		if j < 0 {
			return nil, fmt.Errorf("unterminated placeholder at %q", s[i:])
		}
		name := string(s[i+2 : i+j])
		seg := tmplSeg{lit: s[:i]}
		if base, off, ok := strings.Cut(name, "+"); ok {
			n, err := strconv.ParseUint(off, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("placeholder %q: bad offset", name)
			}
			seg.off, name = n, base
		}
		switch name {
		case "guild_id":
			seg.ph = phGuildID
		case "guild_index":
			seg.ph = phGuildIndex
		case "message_id":
			seg.ph = phMessageID
		default:
			return nil, fmt.Errorf("unknown placeholder %q", name)
		}
		t.segs = append(t.segs, seg)
		s = s[i+j+2:]
	}
}

func (t *template) render(dst []byte, a *renderArgs) []byte {
	for i := range t.segs {
		sg := &t.segs[i]
		dst = append(dst, sg.lit...)
		var v uint64
		switch sg.ph {
		case phGuildID:
			v = a.guildID
		case phGuildIndex:
			v = a.guildIndex
		case phMessageID:
			v = a.messageID
		}
		dst = strconv.AppendUint(dst, v+sg.off, 10)
	}
	return append(dst, t.tail...)
}

// dispatchTemplate renders a whole op 0 payload. The key order
// t, s, op, d is the order Discord's gateway writes.
type dispatchTemplate struct {
	prefix []byte // {"t":"NAME","s":
	body   *template
}

func newDispatchTemplate(name string, body *template) *dispatchTemplate {
	return &dispatchTemplate{prefix: []byte(`{"t":"` + name + `","s":`), body: body}
}

func (d *dispatchTemplate) render(dst []byte, seq int64, a *renderArgs) []byte {
	dst = append(dst, d.prefix...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"op":0,"d":`...)
	dst = d.body.render(dst, a)
	return append(dst, '}')
}

// rawDispatch renders a dispatch whose d is already encoded.
func rawDispatch(name string, seq int64, d []byte) []byte {
	b := make([]byte, 0, len(d)+len(name)+40)
	b = append(b, `{"t":"`...)
	b = append(b, name...)
	b = append(b, `","s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"op":0,"d":`...)
	b = append(b, d...)
	return append(b, '}')
}

// payloads holds every pre-rendered shape a server sends.
type payloads struct {
	guildCreate *dispatchTemplate
	// message[dm][content]: MESSAGE_CREATE in a guild or a DM, with or
	// without the MESSAGE_CONTENT intent.
	message [2][2]*dispatchTemplate
	ready   map[string]json.RawMessage
}

func loadPayloads() (*payloads, error) {
	read := func(name string) ([]byte, error) {
		b, err := payloadFS.ReadFile("testdata/" + name)
		if err != nil {
			return nil, fmt.Errorf("gatewaytest: payload %s: %w", name, err)
		}
		return b, nil
	}
	p := &payloads{}
	gc, err := read("guild_create.json")
	if err != nil {
		return nil, err
	}
	gt, err := compileTemplate(gc)
	if err != nil {
		return nil, fmt.Errorf("gatewaytest: guild_create.json: %w", err)
	}
	p.guildCreate = newDispatchTemplate("GUILD_CREATE", gt)

	mc, err := read("message_create.json")
	if err != nil {
		return nil, err
	}
	for dm := 0; dm < 2; dm++ {
		for content := 0; content < 2; content++ {
			body, err := messageVariant(mc, dm == 1, content == 1)
			if err != nil {
				return nil, fmt.Errorf("gatewaytest: message_create.json: %w", err)
			}
			t, err := compileTemplate(body)
			if err != nil {
				return nil, fmt.Errorf("gatewaytest: message_create.json: %w", err)
			}
			p.message[dm][content] = newDispatchTemplate("MESSAGE_CREATE", t)
		}
	}

	rd, err := read("ready.json")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(rd, &p.ready); err != nil {
		return nil, fmt.Errorf("gatewaytest: ready.json: %w", err)
	}
	return p, nil
}

// dmChannelID is the DM channel of every generated direct message.
const dmChannelID = "1100000000000000099"

// messageVariant derives the DM and no-MESSAGE_CONTENT shapes from the one
// recorded guild message, the way Discord differs them: a DM has no
// guild_id and no member; without the intent, content-like fields are empty.
func messageVariant(src []byte, dm, content bool) ([]byte, error) {
	if !dm && content {
		return src, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(src, &m); err != nil {
		return nil, err
	}
	if dm {
		delete(m, "guild_id")
		delete(m, "member")
		m["channel_type"] = json.RawMessage(`1`)
		m["channel_id"] = json.RawMessage(`"` + dmChannelID + `"`)
		m["mention_roles"] = json.RawMessage(`[]`)
	}
	if !content {
		m["content"] = json.RawMessage(`""`)
		m["embeds"] = json.RawMessage(`[]`)
		m["attachments"] = json.RawMessage(`[]`)
		m["components"] = json.RawMessage(`[]`)
		delete(m, "poll")
	}
	return json.Marshal(m)
}

// readyFields are the per-session parts of READY.
type readyFields struct {
	v         int
	sessionID string
	resumeURL string
	guildIDs  []uint64
	shard     []int // nil when the IDENTIFY had no shard field
}

func (p *payloads) renderReady(seq int64, f readyFields) ([]byte, error) {
	m := make(map[string]json.RawMessage, len(p.ready)+2)
	for k, v := range p.ready {
		m[k] = v
	}
	str := func(s string) json.RawMessage { b, _ := json.Marshal(s); return b }
	m["v"] = json.RawMessage(strconv.Itoa(f.v))
	m["session_id"] = str(f.sessionID)
	m["resume_gateway_url"] = str(f.resumeURL)
	g := make([]byte, 0, 48*len(f.guildIDs)+2)
	g = append(g, '[')
	for i, id := range f.guildIDs {
		if i > 0 {
			g = append(g, ',')
		}
		g = append(g, `{"unavailable":true,"id":"`...)
		g = strconv.AppendUint(g, id, 10)
		g = append(g, `"}`...)
	}
	m["guilds"] = append(g, ']')
	if f.shard != nil {
		sh, _ := json.Marshal(f.shard)
		m["shard"] = sh
	}
	d, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return rawDispatch("READY", seq, d), nil
}

// Fixed control payloads. HELLO, op 7 and op 9 carry t and s as null, as
// Discord writes them; the ACK is the bare {"op":11} of the docs' example,
// so clients that expect more fields fail here rather than in production.
var (
	payloadHeartbeatACK     = []byte(`{"op":11}`)
	payloadHeartbeatRequest = []byte(`{"t":null,"s":null,"op":1,"d":null}`)
	payloadReconnect        = []byte(`{"t":null,"s":null,"op":7,"d":null}`)
	payloadInvalidTrue      = []byte(`{"t":null,"s":null,"op":9,"d":true}`)
	payloadInvalidFalse     = []byte(`{"t":null,"s":null,"op":9,"d":false}`)
	resumedBody             = []byte(`{"_trace":["[\"gateway-prd-fake-0\",{\"micros\":211}]"]}`)
)

func helloPayload(intervalMS int64) []byte {
	b := []byte(`{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":`)
	b = strconv.AppendInt(b, intervalMS, 10)
	return append(b, `,"_trace":["[\"gateway-prd-fake-0\",{\"micros\":0.0}]"]}}`...)
}
