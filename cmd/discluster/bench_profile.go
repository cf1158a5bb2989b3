package main

import (
	"cmp"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/google/pprof/profile"
)

// cpuComponents are what an agent spends its CPU on, each recognised by a function
// in a sampled stack; a stack counts for the first component that matches, in this
// order (the shards' inflate before their read loop, which calls it).
var cpuComponents = []struct {
	name string
	re   *regexp.Regexp
}{
	{"gossip", regexp.MustCompile(`hashicorp/(memberlist|serf)`)},
	{"Raft", regexp.MustCompile(`hashicorp/raft|raft-boltdb|go\.etcd\.io/bbolt`)},
	{"leader", regexp.MustCompile(`discluster/node/leader`)},
	{"shards' inflate", regexp.MustCompile(`compress/flate|klauspost/compress`)},
	{"shards' reads and heartbeats", regexp.MustCompile(`discluster/shard\.|coder/websocket`)},
	{"runner (checkpoints, lease, delivery)", regexp.MustCompile(`discluster/node/runner`)},
	{"sink", regexp.MustCompile(`discluster/node/sink`)},
	{"RPC and TLS", regexp.MustCompile(`discluster/node/rpc|crypto/tls|net/rpc`)},
	{"API and metrics", regexp.MustCompile(`discluster/node/api|discluster/node\.|prometheus|net/http`)},
	{"GC", regexp.MustCompile(`^runtime\.(gcBgMarkWorker|gcDrain|bgsweep|bgscavenge|gcAssist|markroot)`)},
	{"scheduler and netpoll", regexp.MustCompile(`^runtime\.(schedule|findRunnable|mcall|park_m|goexit0|netpoll|checkTimers|sysmon|mstart)`)},
}

// cpuByComponent reads CPU profiles and returns their sampled CPU time in all and the
// share of each component, largest first, as one line.
func cpuByComponent(paths []string) (string, error) {
	var total int64
	sum := make([]int64, len(cpuComponents)+1) // the last: other
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		p, err := profile.Parse(f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		cpu := -1
		for i, st := range p.SampleType {
			if st.Type == "cpu" {
				cpu = i
			}
		}
		if cpu < 0 {
			return "", fmt.Errorf("%s: not a CPU profile", path)
		}
		for _, s := range p.Sample {
			v := s.Value[cpu]
			total += v
			sum[component(s)] += v
		}
	}
	if total == 0 {
		return "", fmt.Errorf("no samples")
	}
	// Largest first; equal shares in the components' order.
	order := make([]int, len(sum))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(sum[b], sum[a]) })
	var parts []string
	for _, i := range order {
		if sum[i] == 0 {
			continue
		}
		name := "other"
		if i < len(cpuComponents) {
			name = cpuComponents[i].name
		}
		parts = append(parts, fmt.Sprintf("%s %.1f%%", name, 100*float64(sum[i])/float64(total)))
	}
	return fmt.Sprintf("%.2f CPU-s sampled: %s", float64(total)/1e9, strings.Join(parts, ", ")), nil
}

// component is the index in cpuComponents of the first component a function of the
// sample's stack belongs to, or len(cpuComponents) for none.
func component(s *profile.Sample) int {
	best := len(cpuComponents)
	for _, loc := range s.Location {
		for _, line := range loc.Line {
			if line.Function == nil {
				continue
			}
			for i := 0; i < best; i++ {
				if cpuComponents[i].re.MatchString(line.Function.Name) {
					best = i
					break
				}
			}
		}
	}
	return best
}
