package membership

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadIdentity: whatever node.json holds, the node gets its identity or a clear
// error, never a panic, and a file it refuses stays as it was.
func FuzzLoadIdentity(f *testing.F) {
	for _, s := range []string{`{"name":"n1","nonce":"abcd"}`, `{"name":"n1","nonce":"abcd","cluster":"c"}`, `{}`, `null`, `[`, ``, "\x00\xff", `{"name":"other","nonce":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, IdentityFile)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		id, err := LoadIdentity(dir, "n1")
		if err == nil && (id.Name != "n1" || id.Nonce == "") {
			t.Fatalf("accepted %q as %+v", b, id)
		}
		if err != nil {
			after, _ := os.ReadFile(path)
			if string(after) != string(b) {
				t.Fatalf("a refused identity file was changed")
			}
		}
	})
}
