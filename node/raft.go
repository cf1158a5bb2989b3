package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/discluster/discluster/internal/logbridge"
	"github.com/discluster/discluster/internal/storecheck"
	"github.com/discluster/discluster/node/membership"
)

func (n *Node) startRaft(notify chan bool) error {
	dir := filepath.Join(n.cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "raft.db")
	inUse := fmt.Errorf("data dir %s is in use by another discluster process", n.cfg.DataDir)
	// bbolt meets a damaged file with a SIGBUS or an assertion panic, often long after
	// the open; look at it first.
	if err := storecheck.Check(path); errors.Is(err, bbolt.ErrTimeout) {
		return inUse
	} else if err != nil {
		return fmt.Errorf("data dir: %s is %v. Move the data dir away (keep it for a post-mortem) and start this node with an empty one: it rejoins the cluster and the replicated state comes back from the others", path, err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return inUse
		}
		return fmt.Errorf("data dir: %s cannot be opened: %w", path, err)
	}
	n.store = store
	if cluster := n.identity.Cluster; cluster != "" && !n.hasRaftState() {
		return fmt.Errorf("data dir: %s says this node belongs to cluster %s, but its Raft log %s is empty or missing. Move the data dir away and start this node with an empty one: it rejoins the cluster and the replicated state comes back from the others",
			filepath.Join(n.cfg.DataDir, membership.IdentityFile), cluster, path)
	}
	// Raft's info lines (elections, snapshots) are worth having; its debug lines only
	// when the node logs at debug.
	floor := hclog.Info
	if n.log.Enabled(context.Background(), slog.LevelDebug) {
		floor = hclog.Debug
	}
	hl := logbridge.Hclog(n.log, "raft", floor)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hl)
	if err != nil {
		return fmt.Errorf("raft snapshots: %w", err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: n.mux.Raft(), MaxPool: 3, Timeout: 10 * time.Second, Logger: hl,
	})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.Logger = hl
	rc.NotifyCh = notify
	rc.HeartbeatTimeout = n.cfg.Timing.RaftHeartbeat
	rc.ElectionTimeout = n.cfg.Timing.RaftElection
	rc.LeaderLeaseTimeout = n.cfg.Timing.RaftLeaderLease
	rc.SnapshotThreshold = 4096
	rc.TrailingLogs = 4096
	// The leader removes and re-adds nodes as gossip sees them go and come back; a
	// node must not stop itself on reading an old removal while it catches up.
	rc.ShutdownOnRemove = false
	n.raft, err = raft.NewRaft(rc, n.fsm, store, store, snaps, trans)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	return nil
}

func (n *Node) hasRaftState() bool {
	idx, err := n.store.LastIndex()
	return err == nil && idx > 0
}
