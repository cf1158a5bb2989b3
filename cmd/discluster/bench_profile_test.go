package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/pprof/profile"
)

// A profile's samples are counted for the first component any function of their
// stack belongs to: the shards' inflate before the read loop that calls it.
func TestCPUByComponent(t *testing.T) {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     10_000_000,
	}
	fn := map[string]*profile.Function{}
	stack := func(names ...string) []*profile.Location {
		var locs []*profile.Location
		for _, n := range names {
			f := fn[n]
			if f == nil {
				f = &profile.Function{ID: uint64(len(fn) + 1), Name: n}
				fn[n] = f
				p.Function = append(p.Function, f)
			}
			l := &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: f}}}
			p.Location = append(p.Location, l)
			locs = append(locs, l)
		}
		return locs
	}
	add := func(ms int64, names ...string) {
		p.Sample = append(p.Sample, &profile.Sample{Value: []int64{ms / 10, ms * 1_000_000}, Location: stack(names...)})
	}
	add(500, "github.com/klauspost/compress/flate.(*decompressor).huffSym", "github.com/discluster/discluster/shard.(*streamReader).next")
	add(200, "syscall.Syscall6", "github.com/coder/websocket.(*Conn).Reader", "github.com/discluster/discluster/shard.(*Shard).readLoop")
	add(150, "github.com/hashicorp/raft.(*Raft).runLeader")
	add(100, "runtime.scanobject", "runtime.gcDrain", "runtime.gcBgMarkWorker")
	add(50, "main.somethingElse")
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	got, err := cpuByComponent([]string{path, path})
	if err != nil {
		t.Fatal(err)
	}
	want := "2.00 CPU-s sampled: shards' inflate 50.0%, shards' reads and heartbeats 20.0%, Raft 15.0%, GC 10.0%, other 5.0%"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if _, err := cpuByComponent([]string{filepath.Join(t.TempDir(), "missing.pprof")}); err == nil {
		t.Error("a missing profile read without an error")
	}
}
