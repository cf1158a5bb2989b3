package membership

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Identity is what a data dir remembers about its node, beside Raft's own files.
type Identity struct {
	Name string `json:"name"`
	// Nonce is random, made on first start: two clusters bootstrapped from nodes of
	// the same names still get different cluster IDs.
	Nonce string `json:"nonce"`
	// Cluster is the ID of the Raft cluster this data dir belongs to; empty until the
	// node bootstraps one or is added to one.
	Cluster string `json:"cluster,omitempty"`
}

// IdentityFile is the identity's file in the data dir.
const IdentityFile = "node.json"

// LoadIdentity reads the data dir's identity, creating it on first start. A data dir
// made for another node name is refused: its Raft log speaks for that node.
func LoadIdentity(dir, name string) (Identity, error) {
	path := filepath.Join(dir, IdentityFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		id := Identity{Name: name, Nonce: randomHex(8)}
		return id, SaveIdentity(dir, id)
	case err != nil:
		return Identity{}, fmt.Errorf("data dir: %w", err)
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil || id.Name == "" || id.Nonce == "" {
		return Identity{}, fmt.Errorf("data dir: %s is corrupt (%v); move the data dir away to start this node afresh", path, err)
	}
	if id.Name != name {
		return Identity{}, fmt.Errorf("data dir %s belongs to node %q, not %q: start with --name %s, or use another --data-dir", dir, id.Name, name, id.Name)
	}
	return id, nil
}

// SaveIdentity writes id into dir, atomically.
func SaveIdentity(dir string, id Identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	tmp := filepath.Join(dir, IdentityFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, IdentityFile)); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
