// Package clusterer organises Go services (typically SIP proxies) into clusters
// that speak OpenSIPS's clusterer protocol over BIN, byte for byte, so Go nodes
// and OpenSIPS 3.3+ nodes can be members of the same cluster.
//
// Nodes find each other from one neighbour, probe their links, flood link state,
// route packets around broken links, keep shared data in sync through
// capabilities and hand resources over between active and backup nodes with
// sharing tags.
//
// The wire codec lives in package [github.com/clusterer-go/clusterer/bin];
// package [github.com/clusterer-go/clusterer/clustertest] runs clusters in
// memory for tests.
//
// # Concurrency
//
// A Cluster is safe for concurrent use. One goroutine owns the protocol
// state (probing, topology, routing) and publishes an immutable snapshot
// after every change; sends, relaying and queries read the snapshot and
// never wait for that goroutine. Every capability handler and every
// subscriber runs on a goroutine of its own behind a bounded queue:
// deliveries to one are in order, a slow one delays nobody else, and what
// overflows its queue is dropped and counted in Stats. Close waits for
// handlers to return.
//
// # Compatibility
//
// The wire format and behaviour follow OpenSIPS 3.3 to 3.6 (and 4.x for
// everything but cluster bridges). Where OpenSIPS misbehaves the library
// does better without changing what goes on the wire: every received
// count and length is bounded, duplicate floods cannot storm, restarted
// nodes are recognised even when their first update is missed, stale link
// state of dead nodes creates no routes, and a TCP reset takes a link down
// at once.
package clusterer
