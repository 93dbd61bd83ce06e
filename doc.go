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
//
// # Sharing tags
//
// A sharing tag ("vip/1": a name in a cluster) marks which node owns a
// resource — a virtual IP, a gateway probe, dialog timers: it is active on
// the owner and backup elsewhere. Tags are configured with OpenSIPS's
// sharing_tag strings (Config.ShTags, "vip/1=active"), read on the hot
// path with ShTag, listed with ShTags, taken with ActivateShTag and
// watched with WatchShTag or Subscribe (ShTagChanged events). On the wire
// a Go node does exactly what OpenSIPS does: a tag configured active sends
// SHTAG_ACTIVE to each node when it comes up; ActivateShTag sends it to
// every node, and again, when it comes up, to any node it could not reach;
// a SHTAG_ACTIVE received makes the tag backup.
//
// OpenSIPS has no arbitration: the last announcement wins, two
// announcements that cross leave both nodes backup, and after a partition
// heals both sides stay active, their data diverged. Go nodes add claims:
// each activation carries a term one above every term the node has heard
// of, and a claim beats another with a higher term or, at equal terms, a
// lower node id. Claims travel in a capability of their own
// ("clusterer-go-shtag"), which OpenSIPS nodes drop as unknown, just ahead
// of each SHTAG_ACTIVE; holders exchange them whenever nodes come up. Among
// Go nodes therefore:
//   - after a partition heals, exactly one node holds each tag: the one
//     with the best claim, normally the last activated;
//   - simultaneous activations end with one holder, the lower node id;
//   - a node that restarts (configured active or not) does not take the
//     tag back from the node that took it over meanwhile, and learns who
//     holds it;
//   - the new holder is told to re-sync: ShTagChange.NeedsResync is set
//     when the local node holds the tag and another held it before (a
//     takeover) or at the same time (ShTagConflictWon, a conflict won).
//
// # Mixed clusters
//
// Between a Go node and an OpenSIPS node, OpenSIPS's rules hold, because
// OpenSIPS sees only SHTAG_ACTIVE: an OpenSIPS node's SHTAG_ACTIVE makes
// every Go node backup (whatever its claim), a Go node's makes OpenSIPS
// nodes backup, announcements that cross between a Go and an OpenSIPS
// node leave both backup, and a partition healed between a Go holder and an
// OpenSIPS holder is not reconciled until someone announces again (the
// side whose announcement could not be delivered re-sends it when the
// other comes up, as OpenSIPS does). The Go-only guarantees above hold for
// the Go nodes among themselves, provided claims can travel between them:
// an OpenSIPS node never relays the claims' capability, so two Go nodes
// whose only route crosses an OpenSIPS node fall back to OpenSIPS's rules.
// The recommendation of OpenSIPS's maintainers, configuring every tag
// backup and letting one controller activate, works unchanged.
package clusterer
