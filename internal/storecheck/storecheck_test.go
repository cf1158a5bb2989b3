package storecheck

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
)

// goodFile writes a bbolt file of a few hundred pages, as Raft's log would be.
func goodFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raft.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("logs"))
		if err != nil {
			return err
		}
		for i := range 3000 {
			if err := b.Put([]byte{byte(i >> 8), byte(i)}, make([]byte, 300)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	return path
}

func damage(t *testing.T, path string, f func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	if err := Check(filepath.Join(t.TempDir(), "absent.db")); err != nil {
		t.Fatalf("an absent file (a new node): %v", err)
	}
	if err := Check(goodFile(t)); err != nil {
		t.Fatalf("a good file: %v", err)
	}
	ps := os.Getpagesize()
	for _, tc := range []struct {
		name, want string
		damage     func(b []byte) []byte
	}{
		{"empty", "empty", func(b []byte) []byte { return nil }},
		{"truncated", "truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"random page", "consistency check", func(b []byte) []byte { rand.Read(b[40*ps : 43*ps]); return b }},
		{"both headers", "no valid header", func(b []byte) []byte { rand.Read(b[:2*ps]); return b }},
		{"not bbolt", "no valid header", func(b []byte) []byte { return []byte("hello, this is not a database\n") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := goodFile(t)
			damage(t, path, tc.damage)
			err := Check(path)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: %v, want ErrDamaged saying %q", err, tc.want)
			}
		})
	}
}
