package clusterer

import (
	"cmp"
	"fmt"
	"sync"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
)

// The data plane: sending module packets. A send reads the published
// snapshot, encodes into a pooled buffer and queues the frame for the next
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
	cv, err := c.sendable(cluster)
	if err != nil {
		return err
	}
	n := cv.Node(int32(node))
	if n == nil || !n.Reachable {
		return ErrDestDown
	}
	return c.sendVia(cv, n, p)
}

// SendAll sends p to every reachable node of the cluster (OpenSIPS
// send_all), one unicast each. It succeeds if at least one node took it;
// with no node reachable it returns ErrDestDown.
func (c *Cluster) SendAll(cluster int, p bin.Packet) error {
	cv, err := c.sendable(cluster)
	if err != nil {
		return err
	}
	return c.sendToEach(cv, false, func(n *core.NodeView) error { return c.sendVia(cv, n, p) })
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

func (c *Cluster) sendVia(cv *core.ClusterView, dst *core.NodeView, p bin.Packet) error {
	hop := cv.Node(dst.NextHop)
	if hop == nil {
		return ErrDestDown
	}
	bp := framePool.Get().(*[]byte)
	frame, err := bin.AppendPacket((*bp)[:0], bin.Packet{Version: p.Version, Capability: p.Capability, Type: p.Type,
		Body: p.Body})
	if err == nil {
		frame, err = bin.AppendTrailer(frame, bin.Trailer{Cluster: cv.ID, Src: c.me, Dst: dst.ID})
	}
	if err != nil {
		framePool.Put(bp)
		return fmt.Errorf("%w: %w", ErrPacket, err)
	}
	return c.sendFrame(cv, hop, bp, frame)
}

// sendFrame queues a complete frame for hop and gives its pooled buffer
// back (the transport copies it).
func (c *Cluster) sendFrame(cv *core.ClusterView, hop *core.NodeView, bp *[]byte, frame []byte) error {
	err := c.peers.Send(hop.Addr, frame)
	*bp = frame
	framePool.Put(bp)
	if err != nil {
		if linkBroken(err) {
			c.enqueue(input{kind: inFailure, addr: hop.Addr})
		}
		return sendErr(err)
	}
	c.act(cv.ID, hop.ID).sent.Add(1)
	c.stats.sent.Add(1)
	return nil
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
