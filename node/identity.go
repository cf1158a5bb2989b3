package node

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// identity is what a data dir remembers about its node, beside Raft's own files.
type identity struct {
	Name string `json:"name"`
	// Nonce is random, made on first start: two clusters bootstrapped from nodes of
	// the same names still get different cluster IDs.
	Nonce string `json:"nonce"`
	// Cluster is the ID of the Raft cluster this data dir belongs to; empty until the
	// node bootstraps one or is added to one.
	Cluster string `json:"cluster,omitempty"`
}

const identityFile = "node.json"

// loadIdentity reads the data dir's identity, creating it on first start. A data dir
// made for another node name is refused: its Raft log speaks for that node.
func loadIdentity(dir, name string) (identity, error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		id := identity{Name: name, Nonce: randomHex(8)}
		return id, saveIdentity(dir, id)
	case err != nil:
		return identity{}, fmt.Errorf("data dir: %w", err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil || id.Name == "" || id.Nonce == "" {
		return identity{}, fmt.Errorf("data dir: %s is corrupt (%v); move the data dir away to start this node afresh", path, err)
	}
	if id.Name != name {
		return identity{}, fmt.Errorf("data dir %s belongs to node %q, not %q: start with --name %s, or use another --data-dir", dir, id.Name, name, id.Name)
	}
	return id, nil
}

func saveIdentity(dir string, id identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	tmp := filepath.Join(dir, identityFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, identityFile)); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
