package membership

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// The gossip keyring: memberlist encrypts and authenticates every gossip message
// (AES-GCM) with the primary key and accepts any installed one. A node without a
// key of the ring can neither join nor read a message. The ring lives in the data
// dir, as serf writes it on every change, so a restarted node keeps the cluster's
// current keys whatever its --encrypt says.

// keyringFile is the ring's file in the data dir, in serf's format (a JSON list of
// base64 keys, the primary first).
const keyringFile = "local.keyring"

// ErrBadKey is the error of a key that is not base64 of 16, 24 or 32 bytes.
var ErrBadKey = errors.New("a gossip key is base64 of 16, 24 or 32 random bytes (discluster keygen makes one)")

// ParseKey decodes a gossip key.
func ParseKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(k) != 16 && len(k) != 24 && len(k) != 32 {
		return nil, ErrBadKey
	}
	return k, nil
}

// NewKey makes a gossip key: 32 random bytes, base64.
func NewKey() string {
	k := make([]byte, 32)
	rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

// loadKeyring reads the ring in dir (nil when there is none) and, when there is none
// and key is set, writes a ring of key. It reports when the ring on disk overrides
// key.
func loadKeyring(dir string, key []byte) (ring *memberlist.Keyring, path string, ignored bool, err error) {
	path = filepath.Join(dir, keyringFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && key == nil:
		return nil, path, false, nil
	case errors.Is(err, os.ErrNotExist):
		enc, _ := json.Marshal([]string{base64.StdEncoding.EncodeToString(key)})
		if err := os.WriteFile(path, enc, 0o600); err != nil {
			return nil, path, false, fmt.Errorf("data dir: %w", err)
		}
		r, err := memberlist.NewKeyring([][]byte{key}, key)
		return r, path, false, err
	case err != nil:
		return nil, path, false, fmt.Errorf("data dir: %w", err)
	}
	var encoded []string
	if err := json.Unmarshal(b, &encoded); err != nil || len(encoded) == 0 {
		return nil, path, false, fmt.Errorf("data dir: %s is not a keyring (a JSON list of base64 keys): move it away to use --encrypt", path)
	}
	var keys [][]byte
	for _, e := range encoded {
		k, err := ParseKey(e)
		if err != nil {
			return nil, path, false, fmt.Errorf("data dir: %s: %w", path, err)
		}
		keys = append(keys, k)
	}
	ignored = key != nil && !slices.ContainsFunc(keys, func(k []byte) bool { return string(k) == string(key) })
	r, err := memberlist.NewKeyring(keys, keys[0])
	return r, path, ignored, err
}

// Encrypted reports whether gossip is encrypted.
func (g *Gossip) Encrypted() bool { return g.serf.EncryptionEnabled() }

// KeyringOp is a change to the cluster's gossip keyring.
type KeyringOp string

// The changes, in the order of a rotation: install the new key everywhere, make it
// the primary everywhere, remove the old one.
const (
	KeyList    KeyringOp = "list"
	KeyInstall KeyringOp = "install"
	KeyUse     KeyringOp = "use"
	KeyRemove  KeyringOp = "remove"
)

// KeyringResult is what the members answered.
type KeyringResult struct {
	Nodes     int               // members gossip knows
	Responded int               // members that answered
	Failed    map[string]string // member → why, for those that refused
	Keys      map[string]int    // key → members holding it
	Primary   map[string]int    // key → members using it as primary
}

// Keyring makes op on every member's keyring (serf's key queries), or lists the
// keys. Removing the primary key is refused by each member.
func (g *Gossip) Keyring(op KeyringOp, key string) (KeyringResult, error) {
	if !g.Encrypted() {
		return KeyringResult{}, errors.New("gossip is not encrypted: start every agent with --encrypt first")
	}
	if op != KeyList {
		if _, err := ParseKey(key); err != nil {
			return KeyringResult{}, err
		}
	}
	km := g.serf.KeyManager()
	var resp *serf.KeyResponse
	var err error
	switch op {
	case KeyList:
		resp, err = km.ListKeys()
	case KeyInstall:
		resp, err = km.InstallKey(key)
	case KeyUse:
		resp, err = km.UseKey(key)
	case KeyRemove:
		resp, err = km.RemoveKey(key)
	default:
		return KeyringResult{}, fmt.Errorf("unknown keyring operation %q: list, install, use or remove", op)
	}
	if resp == nil {
		return KeyringResult{}, err
	}
	res := KeyringResult{Nodes: resp.NumNodes, Responded: resp.NumResp, Failed: map[string]string{},
		Keys: resp.Keys, Primary: resp.PrimaryKeys}
	for node, msg := range resp.Messages {
		if msg != "" {
			res.Failed[node] = msg
		}
	}
	if err != nil {
		return res, fmt.Errorf("%s: %d of %d members failed: %v", op, resp.NumErr, resp.NumNodes, err)
	}
	return res, nil
}
