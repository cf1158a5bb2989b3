// Package transport carries everything nodes say to each other over one TCP port.
//
// A connection's first byte names its protocol: ProtoRaft hands the connection to
// hashicorp/raft (through the raft.StreamLayer that Mux.Raft returns), ProtoRPC to the
// node's RPC server. This is the pattern of Consul's RaftLayer: one port to open in a
// firewall, one address to advertise, and a node's Raft address is its RPC address.
//
// Filter exists for fault injection: a test cuts a node off by blocking addresses, and
// every connection dialed to them is closed at once and refused from then on.
package transport
