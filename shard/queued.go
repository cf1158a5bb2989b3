package shard

// Queued is how many events the cluster's shards received that its handler has not
// taken yet: the backlog in front of a slow sink. It reads the queue's length, so
// it costs nothing to ask while events flow.
func (c *Cluster) Queued() int { return len(c.queue) }
