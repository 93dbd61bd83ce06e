// Package clusterer organises Go services (typically SIP proxies) into clusters
// that speak OpenSIPS's clusterer protocol over BIN, byte for byte, so Go nodes
// and OpenSIPS 3.3+ nodes can be members of the same cluster.
//
// Nodes find each other from one neighbour, probe their links, flood link state,
// route packets around broken links, keep shared data in sync through
// capabilities and hand resources over between active and backup nodes with
// sharing tags.
//
// The wire codec lives in package [github.com/clusterer-go/clusterer/bin].
package clusterer
