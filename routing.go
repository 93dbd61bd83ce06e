package clusterer

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
)

// The data plane: sending module packets. A send reads the published
// snapshot, encodes into the next hop's queue and leaves the rest to the
// hop's writer; it never waits for the protocol loop or the network.

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// SendTo sends p to one node of a cluster (OpenSIPS send_to), through the
// current route if the direct link is down. p.Capability names the
// capability; p.Body is the module's body, to which the routing trailer is
// appended. The outcome is nil or one of ErrCurrentDisabled, ErrDestDown
// and ErrSend, OpenSIPS's four results (see SendCode). nil means queued
// for sending, not delivered. When the next hop's queue is full (the
// network or the peer is slower than the sender) the error is ErrSend
// and also ErrQueueFull: back-pressure, after which the caller may retry.
func (c *Cluster) SendTo(cluster, node int, p bin.Packet) error {
	if err := c.running(); err != nil {
		return err
	}
	cr, err := c.routes.Load().cluster(int32(cluster))
	if err != nil {
		return err
	}
	i := cr.index(int32(node))
	if i < 0 || !cr.cv.Nodes[i].Reachable {
		return ErrDestDown
	}
	return c.sendPacket(cr, i, p)
}

// SendAll sends p to every reachable node of the cluster (OpenSIPS
// send_all), one unicast each. It succeeds if at least one node took it;
// with no node reachable it returns ErrDestDown.
func (c *Cluster) SendAll(cluster int, p bin.Packet) error {
	if err := c.running(); err != nil {
		return err
	}
	cr, err := c.routes.Load().cluster(int32(cluster))
	if err != nil {
		return err
	}
	return c.sendToEach(cr.cv, false, func(n *core.NodeView) error {
		return c.sendPacket(cr, cr.index(n.ID), p)
	})
}

// sendToEach calls send for every reachable enabled node of cv, one
// unicast each, as OpenSIPS broadcasts. It succeeds when a send did (or
// done says a copy was already delivered locally); otherwise it returns
// the first error, or ErrDestDown with nobody to send to.
func (c *Cluster) sendToEach(cv *core.ClusterView, done bool, send func(n *core.NodeView) error) error {
	var firstErr error
	for i := range cv.Nodes {
		n := &cv.Nodes[i]
		if !n.Reachable || !n.Enabled {
			continue
		}
		if err := send(n); err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		done = true
	}
	switch {
	case done:
		return nil
	case firstErr != nil:
		return firstErr
	}
	return ErrDestDown
}

func (c *Cluster) sendable(cluster int) (*core.ClusterView, error) {
	if err := c.running(); err != nil {
		return nil, err
	}
	cv := c.view.Load().Cluster(int32(cluster))
	switch {
	case cv == nil:
		return nil, ErrUnknownCluster
	case !cv.Enabled:
		return nil, ErrCurrentDisabled
	}
	return cv, nil
}

// sendPacket sends p to node cr.cv.Nodes[i] through its next hop.
func (c *Cluster) sendPacket(cr *clusterRoutes, i int, p bin.Packet) error {
	hop := cr.hops[i]
	if hop.node == nil {
		return ErrDestDown
	}
	// The frame goes into the queue in three parts, the body copied once.
	var hb [64]byte
	hdr, err := bin.AppendHeader(hb[:0], bin.Packet{Version: p.Version, Capability: p.Capability, Type: p.Type,
		Body: p.Body}, bin.TrailerLen)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPacket, err)
	}
	var tb [bin.TrailerLen]byte
	trl := bin.Trailer{Cluster: cr.cv.ID, Src: c.me, Dst: cr.cv.Nodes[i].ID}.Append(tb[:0])
	if err := c.peers.SendParts(hop.node.Addr, hdr, p.Body, trl); err != nil {
		return c.sendFailed(hop.node.Addr, err)
	}
	hop.act.sent.Add(1)
	c.stats.sent.Add(1)
	return nil
}

// sendFrame queues a complete frame for hop and gives its pooled buffer
// back (the transport copies it).
func (c *Cluster) sendFrame(cv *core.ClusterView, hop *core.NodeView, bp *[]byte, frame []byte) error {
	err := c.peers.Send(hop.Addr, frame)
	*bp = frame
	framePool.Put(bp)
	if err != nil {
		return c.sendFailed(hop.Addr, err)
	}
	c.act(cv.ID, hop.ID).sent.Add(1)
	c.stats.sent.Add(1)
	return nil
}

// sendFailed reports a frame the transport refused for addr.
func (c *Cluster) sendFailed(addr string, err error) error {
	if linkBroken(err) {
		c.enqueue(input{kind: inFailure, addr: addr})
	}
	return sendErr(err)
}

// routes is the published view indexed for sending: for each node of each
// cluster its next hop and the hop's activity counters, found without a
// search. The loop rebuilds it with every view it publishes.
type routes struct {
	view     *core.View
	clusters []clusterRoutes // as view.Clusters
}

type clusterRoutes struct {
	cv   *core.ClusterView
	byID []int32    // node id -> 1 + its index in cv.Nodes (0: none); nil if the ids are too sparse
	hops []hopRoute // as cv.Nodes
}

type hopRoute struct {
	node *core.NodeView // the next hop; nil if none
	act  *activity      // the hop's, in this cluster
}

// maxDenseID bounds the node ids indexed directly; clusters with larger
// ids are searched.
const maxDenseID = 4096

func (c *Cluster) newRoutes(v *core.View) *routes {
	r := &routes{view: v, clusters: make([]clusterRoutes, len(v.Clusters))}
	for ci, cv := range v.Clusters {
		cr := &r.clusters[ci]
		cr.cv = cv
		cr.hops = make([]hopRoute, len(cv.Nodes))
		maxID := int32(0)
		for i := range cv.Nodes {
			n := &cv.Nodes[i]
			maxID = max(maxID, n.ID)
			if hop := cv.Node(n.NextHop); hop != nil {
				cr.hops[i] = hopRoute{node: hop, act: c.act(cv.ID, hop.ID)}
			}
		}
		if maxID < maxDenseID {
			cr.byID = make([]int32, maxID+1)
			for i := range cv.Nodes {
				cr.byID[cv.Nodes[i].ID] = int32(i + 1)
			}
		}
	}
	return r
}

// cluster returns the routes of a cluster the local node may send in.
func (r *routes) cluster(id int32) (*clusterRoutes, error) {
	var cr *clusterRoutes
	for i := range r.clusters { // a handful: a scan beats a search
		if r.clusters[i].cv.ID == id {
			cr = &r.clusters[i]
			break
		}
	}
	switch {
	case cr == nil:
		return nil, ErrUnknownCluster
	case !cr.cv.Enabled:
		return nil, ErrCurrentDisabled
	}
	return cr, nil
}

// index returns the index of node id in cr.cv.Nodes, or -1.
func (cr *clusterRoutes) index(id int32) int {
	if cr.byID != nil {
		if id < 0 || int(id) >= len(cr.byID) {
			return -1
		}
		return int(cr.byID[id]) - 1
	}
	i, ok := slices.BinarySearchFunc(cr.cv.Nodes, id, func(n core.NodeView, id int32) int { return cmp.Compare(n.ID, id) })
	if !ok {
		return -1
	}
	return i
}

// setView publishes v, and the routes built from it, to the data plane.
func (c *Cluster) setView(v *core.View) {
	if c.view.Load() == v {
		return
	}
	c.routes.Store(c.newRoutes(v))
	c.view.Store(v)
}

// NextHop returns the neighbour a packet for node goes to: the node itself
// when the direct link is up.
func (c *Cluster) NextHop(cluster, node int) (int, bool) {
	n := c.view.Load().Cluster(int32(cluster)).Node(int32(node))
	if n == nil || !n.Reachable {
		return 0, false
	}
	return int(n.NextHop), true
}
