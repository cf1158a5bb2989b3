// Package rpc is how nodes talk to each other on the cluster port: the messages, the
// error codes that survive the wire, a server over a Service the agent implements,
// a pool of one connection per peer, and the client that reaches the leader
// wherever it is (itself included).
//
// It must never decide anything: who may renew a lease or identify a shard is the
// leader's to say, and this package only carries the question and the answer.
package rpc
