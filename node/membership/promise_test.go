package membership

import (
	"testing"
	"time"
)

// A node promises its bootstrap vote to one bootstrapper at a time; the promise lapses
// if that one goes quiet, and is freed when it gives up.
func TestBootstrapPromiseGoesToOneBootstrapper(t *testing.T) {
	var p promise
	if err := p.take("a"); err != nil {
		t.Fatal(err)
	}
	if err := p.take("a"); err != nil {
		t.Fatalf("the same bootstrapper asking again: %v", err)
	}
	if err := p.take("b"); err == nil {
		t.Fatal("promised to two bootstrappers")
	}
	p.release("b") // not b's to free
	if err := p.take("b"); err == nil {
		t.Fatal("a release by another freed the promise")
	}
	p.release("a")
	if err := p.take("b"); err != nil {
		t.Fatalf("after a's release: %v", err)
	}
	p.mu.Lock()
	p.until = time.Now().Add(-time.Millisecond)
	p.mu.Unlock()
	if err := p.take("c"); err != nil {
		t.Fatalf("after b's promise lapsed: %v", err)
	}
}
