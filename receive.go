package clusterer

import (
	"sync/atomic"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/peer"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// receiver is the data plane of one connection (a peer.Receiver): it runs
// on the connection's reader goroutine, so its state needs no lock.
// Topology traffic goes to the protocol loop; routed traffic is checked
// against the published view and relayed or delivered right here.
//
// What the checks of a routed packet depend on — the cluster, the source
// node, the connection's source IP and the view — is cached per (cluster,
// source) until the view changes, and the capabilities' handlers until a
// registration. Deliveries are queued for their handlers once per read
// (Flush), not once per packet, and so are the activity counts.
type receiver struct {
	c   *Cluster
	ci  peer.ConnInfo
	src core.Source

	view *core.View // the view srcs were computed from
	srcs []srcEntry

	caps *map[capKey]*capability // the registrations capc was taken from
	capc []capEntry

	slab    bodySlab
	pending bool   // deliveries or counts wait for Flush
	lastCap string // the capability of the previous frame
}

// maxSrcEntries bounds the per-connection cache of sources; a connection
// normally carries the traffic of one node (more through a relay).
const maxSrcEntries = 16

// srcEntry is the verdict on the packets of one (cluster, source node) on
// this connection, for one view.
type srcEntry struct {
	cluster, node int32
	cv            *core.ClusterView
	sn            *core.NodeView
	drop          *atomic.Uint64 // the counter of the reason to drop; nil to accept
	act           *activity
	recv          uint64 // packets accepted since the last flush
}

// capEntry is a registered capability and its deliveries waiting for
// Flush.
type capEntry struct {
	key  capKey
	cp   *capability
	pend []delivery
}

func (c *Cluster) newReceiver(ci peer.ConnInfo) peer.Receiver {
	return &receiver{c: c, ci: ci, src: core.Source{ConnID: ci.ID, IP: ci.Remote.Addr()}}
}

// Frame handles one frame. It keeps a lent frame whose body it delivers;
// other bodies are copied.
func (r *receiver) Frame(frame []byte, lend bool) (keep bool) {
	c := r.c
	p, err := bin.ParseHint(frame, r.lastCap)
	if err != nil {
		c.stats.malformed.Add(1)
		return false
	}
	r.lastCap = p.Capability
	if p.Capability == wire.CapInternal {
		// PING and PONG come from the node at the other end (updates are
		// flooded with their originator's id): they say whose connection
		// this is.
		if t := wire.Type(p.Type); !r.ci.Outgoing && (t == wire.TypePing || t == wire.TypePong) && len(p.Body) >= 8 {
			rd := p.Reader()
			rd.PopInt()
			if id := rd.PopInt(); id > 0 {
				c.connNode.Store(r.ci.ID, id)
			}
		}
		r.toLoop(input{kind: inFrame, src: r.src, frame: clone(frame)})
		return false
	}
	if len(p.Body) < bin.TrailerLen {
		c.stats.malformed.Add(1)
		return false
	}
	t, _ := bin.ParseTrailer(p.Body)
	e := r.source(t.Cluster, t.Src)
	if e.drop != nil {
		e.drop.Add(1)
		return false
	}
	e.recv++
	r.pending = true
	if e.sn.State == core.Down {
		r.toLoop(input{kind: inRevive})
	}
	if t.Dst != c.me {
		c.relay(r.ci, e.cv, t, frame)
		return false
	}
	if p.Capability == wire.CapExtra {
		// Sync data joins its capability's queue behind the packets of
		// this read handled before it.
		r.Flush()
		if c.onExtra(r.ci.ID, t, p) {
			return false
		}
		r.toLoop(input{kind: inFrame, src: r.src, frame: clone(frame)})
		return false
	}
	if p.Capability == wire.CapShtag { // Go nodes' sharing-tag claims
		r.toLoop(input{kind: inFrame, src: r.src, frame: clone(frame)})
		return false
	}
	ce := r.capability(t.Cluster, p.Capability)
	if ce == nil {
		c.stats.unknownCapability.Add(1)
		return false
	}
	n := len(p.Body) - bin.TrailerLen
	body := p.Body[:n:n] // capped: a handler appending to it gets a copy
	if !lend {
		body = r.slab.copy(body)
	}
	ce.pend = append(ce.pend, delivery{pkt: Packet{Cluster: int(t.Cluster), Src: int(t.Src), Version: p.Version,
		Type: p.Type, Body: body}})
	r.pending = true
	return lend
}

// toLoop hands an input to the protocol loop, after what arrived before
// it: the loop's reaction (an event for the handlers, the activity it
// reads) must not overtake it.
func (r *receiver) toLoop(in input) {
	r.Flush()
	r.c.enqueue(in)
}

// Flush queues the deliveries of the frames handled since the last call for
// their handlers and publishes the activity counts.
func (r *receiver) Flush() {
	if !r.pending {
		return
	}
	r.pending = false
	for i := range r.srcs {
		if e := &r.srcs[i]; e.recv > 0 {
			e.act.recv.Add(e.recv)
			e.recv = 0
		}
	}
	for i := range r.capc {
		if ce := &r.capc[i]; len(ce.pend) > 0 {
			ce.cp.box.putBatch(&ce.pend)
		}
	}
}

// source returns the cached verdict on packets of (cluster, node) on this
// connection, computing it if the view changed or it is not cached.
func (r *receiver) source(cluster, node int32) *srcEntry {
	if v := r.c.view.Load(); v != r.view {
		r.Flush() // the counts of the old entries
		r.view = v
		r.srcs = r.srcs[:0]
	}
	for i := range r.srcs {
		if e := &r.srcs[i]; e.cluster == cluster && e.node == node {
			return e
		}
	}
	if len(r.srcs) == maxSrcEntries {
		r.Flush()
		r.srcs = r.srcs[:0]
	}
	r.srcs = append(r.srcs, r.verdict(cluster, node))
	return &r.srcs[len(r.srcs)-1]
}

// verdict checks packets of (cluster, node) against r.view and the
// connection's source IP.
func (r *receiver) verdict(cluster, node int32) srcEntry {
	c := r.c
	e := srcEntry{cluster: cluster, node: node}
	cv := r.view.Cluster(cluster)
	switch {
	case cv == nil:
		e.drop = &c.stats.unknownCluster
		return e
	case node == c.me:
		e.drop = &c.stats.ownID
		return e
	case !cv.Enabled:
		e.drop = &c.stats.disabled
		return e
	}
	sn := cv.Node(node)
	switch {
	case sn == nil:
		e.drop = &c.stats.unknownNode
	case !cv.IPAllowed(r.src.IP):
		e.drop = &c.stats.sourceIP
	case !sn.Enabled:
		e.drop = &c.stats.disabled
	default:
		e.cv, e.sn, e.act = cv, sn, c.act(cluster, node)
	}
	return e
}

// capability returns the registered capability of (cluster, name) with its
// pending deliveries, or nil.
func (r *receiver) capability(cluster int32, name string) *capEntry {
	if caps := r.c.capsSnap.Load(); caps != r.caps {
		r.Flush()
		r.caps = caps
		r.capc = r.capc[:0]
	}
	for i := range r.capc {
		if ce := &r.capc[i]; ce.key.cluster == cluster && ce.key.name == name {
			return ce
		}
	}
	if r.caps == nil {
		return nil
	}
	cp := (*r.caps)[capKey{cluster, name}]
	if cp == nil {
		return nil // not cached: names come from the network
	}
	r.capc = append(r.capc, capEntry{key: cp.key, cp: cp})
	return &r.capc[len(r.capc)-1]
}
