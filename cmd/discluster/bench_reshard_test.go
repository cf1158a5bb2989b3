package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// --check accepts the reshard scenario and says it would run.
func TestBenchCheckListsReshard(t *testing.T) {
	out, _, err := run(t, "bench", "--check", "--sizes", "10,100", "--runs", "3", "--scenarios", "moves,reshard")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "scenarios [moves reshard]") {
		t.Errorf("bench --check: %q, want it to list the reshard scenario", out)
	}
}

// The reshard scenario at the smallest size, once: 6 shards resharded to 12 while
// guild events flow. Its row says how long the switch took against the identify
// floor and what the switch delayed, with no violation, no guild event lost and
// none delivered twice.
func TestE2EBenchReshardSmallRun(t *testing.T) {
	rows, out := smallBench(t, "reshard")
	var row []string
	for name, f := range rows {
		if strings.HasPrefix(name, "reshard 6 → 12 shards") {
			row = f
		}
	}
	if row == nil {
		t.Fatalf("no reshard row in:\n%s", out)
	}
	if _, err := time.ParseDuration(row[2]); err != nil {
		t.Errorf("the median %q is not a duration: %v", row[2], err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`switch \S+ = [0-9.]+ × floor ceil\(12/16\)·200ms = 200ms \([0-9.]+ × with the \S+ safety margin per round\)`),
		regexp.MustCompile(`old generation gone \S+ \([0-9.]+ ×\)`),
		regexp.MustCompile(`held events at the switch: \d+ delivered then, longest held \S+, \d+ dropped as the old generation.s, the last given back \S+ after the request`),
		regexp.MustCompile(`[1-9]\d* guild events over 1 runs`),
	} {
		if !want.MatchString(row[3]) {
			t.Errorf("the split %q does not match %s", row[3], want)
		}
	}
	if row[4] != "0" || row[5] != "0" || row[6] != "0" {
		t.Errorf("violations %s, lost %s, duplicates %s: want 0, 0, 0", row[4], row[5], row[6])
	}
}
