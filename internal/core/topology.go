package core

import (
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/internal/wire"
)

// Topology messages: LS_UPDATE, FULL_TOP_UPDATE, NODE_DESCRIPTION,
// UNKNOWN_ID and CAP_UPDATE (spec §4.2, §5, §7, §9.1, §10.2).

func (c *cluster) handleLSUpdate(now time.Time, from *node, msg *wire.LSUpdate) {
	if !accept(from.lsSeq, from.lsTS, msg.Seq, msg.Timestamp) {
		c.m.stats.StaleSeq++
		return
	}
	from.lsSeq, from.lsTS = msg.Seq, msg.Timestamp
	if msg.Neighbor == c.me() {
		// The sender's view of our own link disagrees with ours: probe.
		switch {
		case msg.State == wire.LinkUp && from.state == Down:
			c.revive(from)
		case msg.State == wire.LinkDown && from.state == Up:
			c.leaveUp(now, from)
			from.state = RestartPinging
		}
	} else {
		had := slices.Contains(from.adj, msg.Neighbor)
		switch {
		case msg.State == wire.LinkUp && !had:
			from.adj = slices.Insert(from.adj, 0, msg.Neighbor)
			c.topoDirty = true
		case msg.State == wire.LinkDown && had:
			from.adj = slices.DeleteFunc(from.adj, func(x int32) bool { return x == msg.Neighbor })
			c.topoDirty = true
		}
	}
	c.flood(msg.Path, func(path []int32) wire.Message {
		cp := *msg
		cp.Path = path
		return &cp
	})
}

// replaceAdj is X's new list from a FULL_TOP_UPDATE entry sent by src: the
// entry's neighbours, except that src never lists itself in others' lists,
// so what we knew about X–src is kept. The local node is never stored.
func (c *cluster) replaceAdj(x *node, neigh []int32, src int32) {
	out := make([]int32, 0, len(neigh)+1)
	for _, id := range neigh {
		if id != c.me() && id != x.id && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if x.id != src && slices.Contains(x.adj, src) && !slices.Contains(out, src) {
		out = append(out, src)
	}
	if !slices.Equal(out, x.adj) {
		x.adj = out
		c.topoDirty = true
	}
}

func (c *cluster) handleFullTop(now time.Time, from *node, msg *wire.FullTopUpdate) {
	if !accept(from.topSeq, from.topTS, msg.Seq, msg.Timestamp) {
		c.m.stats.StaleSeq++
		return
	}
	from.topSeq, from.topTS = msg.Seq, msg.Timestamp
	for i, e := range msg.Nodes {
		if e.Node == c.me() {
			continue
		}
		listsMe := slices.Contains(e.Neighbors, c.me())
		if i == 0 && e.Node == from.id {
			// The sender's own entry is authoritative.
			c.replaceAdj(from, e.Neighbors, from.id)
			if e.LSSeq > from.lsSeq {
				from.lsSeq = e.LSSeq
			}
			if listsMe && from.state == Down {
				c.revive(from)
			}
			continue
		}
		x := c.nodes[e.Node]
		if x == nil {
			if e.Desc == nil || !c.m.cfg.Discovery {
				continue
			}
			if x = c.learn(e.Node, *e.Desc); x == nil {
				continue
			}
		}
		if !accept(x.lsSeq, x.lsTS, e.LSSeq, e.LSTimestamp) {
			continue
		}
		x.lsSeq, x.lsTS = e.LSSeq, e.LSTimestamp
		c.replaceAdj(x, e.Neighbors, from.id)
		if listsMe && x.state == Down {
			c.revive(x)
		}
	}
	c.flood(msg.Path, func(path []int32) wire.Message {
		cp := *msg
		cp.Path = path
		return &cp
	})
}

// learn adds a node announced by the network (discovery mode).
func (c *cluster) learn(id int32, d wire.Description) *node {
	if id < 1 || id == c.me() {
		return nil
	}
	n := c.addNode(id, d, false, true)
	if n != nil {
		c.m.events = append(c.m.events, Event{Kind: NodeAdded, Cluster: c.id, Node: id})
	}
	return n
}

// sendFullTop sends our whole view to a neighbour whose link just came UP,
// with descriptions of the nodes its PONG did not list.
func (c *cluster) sendFullTop(now time.Time, to *node) {
	c.topSeq++
	msg := &wire.FullTopUpdate{Origin: wire.Origin{Cluster: c.id, Src: c.me()}, Seq: c.topSeq,
		Timestamp: c.now32(now), Path: []int32{c.me()}}
	msg.Nodes = append(msg.Nodes, wire.TopEntry{Node: c.me(), LSSeq: c.lsSeq, Neighbors: c.upNeighbors()})
	for _, n := range c.list {
		if n == to {
			continue
		}
		e := wire.TopEntry{Node: n.id, LSSeq: n.lsSeq, LSTimestamp: n.lsTS, Neighbors: slices.Clone(n.adj)}
		if !slices.Contains(to.pongNodes, n.id) {
			d := n.desc
			e.Desc = &d
		}
		msg.Nodes = append(msg.Nodes, e)
	}
	c.send(to, msg)
}

func (c *cluster) handleUnknownID(now time.Time, n *node) {
	c.send(n, &wire.NodeDescription{Origin: wire.Origin{Cluster: c.id, Src: c.me()}, Desc: c.self, Path: []int32{c.me()}})
	if n.state == Restarted || n.state == Retrying {
		// It knows us now: probe again instead of waiting for the timeout.
		c.ping(now, n, true)
	}
}

func (c *cluster) learnFromDescription(now time.Time, src Source, msg *wire.NodeDescription) {
	if slices.Contains(msg.Path, c.me()) {
		return
	}
	u, err := ParseURL(msg.Desc.URL)
	if err != nil || !c.ipAllowed(src.IP, u.Addr.Addr()) {
		c.m.stats.SourceIP++
		return
	}
	if c.learn(msg.Src, msg.Desc) == nil {
		return
	}
	c.flood(msg.Path, func(path []int32) wire.Message {
		cp := *msg
		cp.Path = path
		return &cp
	})
}

// --- capabilities ---

func (c *cluster) handleCapUpdate(now time.Time, from *node, msg *wire.CapUpdate) {
	if !accept(from.capSeq, from.capTS, msg.Seq, msg.Timestamp) {
		c.m.stats.StaleSeq++
		return
	}
	for _, b := range msg.Nodes {
		if b.Node != c.me() && c.nodes[b.Node] == nil {
			// OpenSIPS aborts the whole message, unflooded.
			c.m.stats.UnknownCapNode++
			return
		}
	}
	from.capSeq, from.capTS = msg.Seq, msg.Timestamp
	for _, b := range msg.Nodes {
		x := c.nodes[b.Node]
		if x == nil {
			continue // our own block
		}
		for _, cs := range b.Caps {
			i := slices.IndexFunc(x.caps, func(s wire.CapState) bool { return s.Name == cs.Name })
			switch {
			case i < 0:
				x.caps = append(x.caps, cs)
			case x.caps[i].Synced != cs.Synced:
				x.caps[i].Synced = cs.Synced
			default:
				continue
			}
			cp := cs
			c.m.events = append(c.m.events, Event{Kind: CapabilityChanged, Cluster: c.id, Node: x.id, Cap: &cp})
		}
	}
	if msg.RequireReply {
		c.sendCapUpdateFull(now, from, false)
	}
	c.flood(msg.Path, func(path []int32) wire.Message {
		cp := *msg
		cp.RequireReply = false
		cp.Path = path
		return &cp
	})
}

// sendCapUpdateFull sends our own block and every other node's known
// capabilities, except the destination's. Nothing is sent if we know no
// capabilities at all, as OpenSIPS does.
func (c *cluster) sendCapUpdateFull(now time.Time, to *node, requireReply bool) {
	var blocks []wire.CapNode
	if len(c.caps) > 0 {
		blocks = append(blocks, wire.CapNode{Node: c.me(), Caps: slices.Clone(c.caps)})
	}
	for _, n := range c.list {
		if n != to && len(n.caps) > 0 {
			blocks = append(blocks, wire.CapNode{Node: n.id, Caps: slices.Clone(n.caps)})
		}
	}
	if len(blocks) == 0 {
		return
	}
	c.capSeq++
	c.send(to, &wire.CapUpdate{Origin: wire.Origin{Cluster: c.id, Src: c.me()}, Seq: c.capSeq,
		Timestamp: c.now32(now), Nodes: blocks, RequireReply: requireReply, Path: []int32{c.me()}})
}

// SetCapability sets the local state of a capability and floods the
// change as a single-block CAP_UPDATE.
func (m *Machine) SetCapability(now time.Time, clusterID int32, name string, synced bool) error {
	c, err := m.cluster(clusterID)
	if err != nil {
		return err
	}
	cs := wire.CapState{Name: name, Synced: synced}
	i := slices.IndexFunc(c.caps, func(s wire.CapState) bool { return s.Name == name })
	switch {
	case i < 0:
		c.caps = append(c.caps, cs)
	case c.caps[i].Synced == synced:
		return nil
	default:
		c.caps[i] = cs
	}
	if up := c.upNeighbors(); len(up) > 0 {
		c.capSeq++
		msg := &wire.CapUpdate{Origin: wire.Origin{Cluster: c.id, Src: c.me()}, Seq: c.capSeq,
			Timestamp: c.now32(now), Nodes: []wire.CapNode{{Node: c.me(), Caps: []wire.CapState{cs}}}, Path: []int32{c.me()}}
		for _, id := range up {
			c.send(c.nodes[id], msg)
		}
	}
	m.finishStep()
	return nil
}
