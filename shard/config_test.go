package shard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const secret = "MTIz.secret-token-value"

func TestTokenNeverPrints(t *testing.T) {
	tok := Token(secret)
	cfg := Config{Token: tok, ShardCount: 1}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("cfg", "token", tok, "config", cfg)
	js, err := json.Marshal(map[string]any{"token": tok, "nested": struct{ T Token }{tok}})
	if err != nil {
		t.Fatal(err)
	}
	outputs := []string{
		fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %q %x %s", tok, cfg, cfg, tok, tok, tok),
		logged.String(), string(js),
	}
	for _, out := range outputs {
		if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
			t.Fatalf("token leaked: %s", out)
		}
	}
	if tok.Reveal() != secret {
		t.Fatal("Reveal lost the token")
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	gate, _ := NewLocalGate(1, DefaultIdentifyWindow)
	nop := DispatchFunc(func(context.Context, Event) error { return nil })
	good := Config{Token: "t", ShardCount: 2, Gate: gate, Dispatch: nop}
	tests := []struct {
		field string
		mod   func(*Config)
	}{
		{"Token", func(c *Config) { c.Token = "" }},
		{"ShardCount", func(c *Config) { c.ShardCount = 0 }},
		{"ShardID", func(c *Config) { c.ShardID = 2 }},
		{"ShardID", func(c *Config) { c.ShardID = -1 }},
		{"Dispatch", func(c *Config) { c.Dispatch = nil }},
		{"Gate", func(c *Config) { c.Gate = nil }},
		{"LargeThreshold", func(c *Config) { c.LargeThreshold = 251 }},
		{"Compression", func(c *Config) { c.Compression = "gzip" }},
		{"Presence", func(c *Config) { c.Presence = json.RawMessage(`{`) }},
		{"InvalidSessionDelayMax", func(c *Config) { c.InvalidSessionDelayMin, c.InvalidSessionDelayMax = 5, 1 }},
	}
	if _, err := New(good); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	for _, tt := range tests {
		c := good
		tt.mod(&c)
		_, err := New(c)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: got %v, want an ErrInvalidConfig naming %s", tt.field, err, tt.field)
		}
	}
	// A shard that only ever resumes needs no gate.
	c := good
	c.Gate, c.Resume = nil, ResumeState{SessionID: "abc", Seq: 3}
	if _, err := New(c); err != nil {
		t.Fatalf("resume-only config refused: %v", err)
	}
}
