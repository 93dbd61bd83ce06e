// Package route turns the link-state topology a clusterer node knows into a
// routing table: for every other node of a cluster, which directly linked
// neighbour a message has to be handed to, and how many hops the chosen route
// is long.
//
// # Why
//
// In OpenSIPS's clusterer protocol every node probes its links with pings and
// floods the list of its UP neighbours to the whole cluster. A node that has
// to send a message to a node it has no UP link with therefore relays it
// through a neighbour, chosen from that flooded link state. The choice must
// be the same every time the topology is the same (so that caches keyed by a
// topology version stay valid) and must never send a message back to the
// sender. This package makes that choice, and nothing else: it does no I/O,
// starts no goroutines, reads no clock and keeps no state between calls.
//
// # What
//
// The input is a [Graph]: the local node's id, the adjacency lists known
// locally (Adj[x] is the list of nodes that x reports an UP link with; links
// are directed, "x says x→y is UP") and the nodes' routing priorities (lower
// is preferred). [Compute] evaluates every destination at once and returns an
// immutable [*Table], which callers cache per topology version and may share
// between goroutines without locking.
//
// Two route selection rules are available:
//
//   - [Shortest] (the default) picks, for each destination, the neighbour of
//     the local node that lies on a shortest path (hop count over directed
//     UP links, never passing back through the local node), breaking ties by
//     the neighbour's priority and then by its id. A destination the local
//     node has a direct UP link with is always its own next hop. All
//     destinations are labelled by a single multi-source breadth-first search
//     seeded with the neighbours in (priority, id) order: within each BFS
//     level the queue stays sorted by that order, so the first label to reach
//     a node is the best one among all neighbours at minimal distance.
//
//   - [OpenSIPSCompat] reproduces the search OpenSIPS itself runs: a
//     best-first search from the local node whose queue is ordered, across
//     all levels, by (priority, id); the first node to reach another becomes
//     its parent for good and the route is read back along parents. It can
//     pick longer routes than Shortest (a low priority value deep in the graph
//     is expanded before a shallower node), which is exactly what an OpenSIPS
//     node in the same cluster would do. Use it when Go and OpenSIPS nodes
//     must agree on relay paths.
//
// Both rules reach the same set of destinations; they differ only in the
// route chosen. Malformed input (ids < 1, self-loops, duplicate entries,
// edges into the local node, lists of unknown nodes) is tolerated and never
// causes a panic.
package route
