// Package api is the agent's HTTP API: the JSON types of its answers, the routes
// over a small Backend the agent implements, and a Go client that the command line
// and a bot's own code can import.
//
// It must never reach into the agent's rooms (Raft, gossip, the supervisor): it
// knows only the Backend, so it stays importable by a bot without pulling them in,
// and every route can be tested with a stub backend.
package api
