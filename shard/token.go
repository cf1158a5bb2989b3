package shard

import (
	"fmt"
	"log/slog"
)

// Token is a Discord bot token. It prints, logs and marshals as "[redacted]" so that
// no format verb, slog call or JSON encoding of a config can leak it; the only place
// the real value leaves the process is the IDENTIFY/RESUME payload and the
// Authorization header, which use Reveal.
type Token string

const redacted = "[redacted]"

// Reveal returns the real token. Call it only where Discord needs it.
func (t Token) Reveal() string { return string(t) }

func (t Token) String() string   { return redacted }
func (t Token) GoString() string { return redacted }

// Format covers every verb, including %q and %x, which would otherwise bypass String.
func (t Token) Format(f fmt.State, _ rune) { fmt.Fprint(f, redacted) }

func (t Token) LogValue() slog.Value { return slog.StringValue(redacted) }

func (t Token) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

func (t Token) MarshalText() ([]byte, error) { return []byte(redacted), nil }
