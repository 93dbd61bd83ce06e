package core

import (
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/internal/wire"
)

// Topology messages: LS_UPDATE, FULL_TOP_UPDATE, NODE_DESCRIPTION,
// UNKNOWN_ID and CAP_UPDATE (spec §4.2, §5, §7, §9.1, §10.2).

func (c *cluster) handleLSUpdate(now time.Time, from *node, msg *wire.LSUpdate) {
	if c.olderIncarnation(from, msg.Seq, msg.Timestamp) {
		return
	}
	ok, restart := from.ls.accept(msg.Seq, msg.Timestamp)
	direct := len(msg.Path) == 1 && msg.Path[0] == from.id
	current := msg.Seq >= 0 && msg.Timestamp >= from.ls.floor
	if !ok && direct && current && msg.Seq <= from.directLS {
		// Straight from the node and not above its LS versions that came
		// straight before it: its counter started over (see handleFullTop).
		ok, restart = true, true
		from.ls.seq, from.ls.ts = msg.Seq, msg.Timestamp
	}
	if ok && (restart || msg.Seq < from.listVer && msg.Timestamp > from.listTS) {
		// The second case: the list we hold came from a later LS counter
		// of an earlier time, so the counter started over.
		c.restarted(now, from, &from.ls, msg.Timestamp)
	}
	if direct && current {
		from.directLS = max(from.directLS, msg.Seq)
	}
	if !ok {
		c.m.stats.StaleSeq++
		return
	}
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
		// Its own word on this link replaces what we held for it.
		from.held = slices.DeleteFunc(from.held, func(x int32) bool { return x == msg.Neighbor })
		if from.adjVer == nil {
			from.adjVer = map[int32]int32{}
		}
		from.adjVer[msg.Neighbor] = msg.Seq
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

// restarted forgets what a node's previous incarnation said about its
// links, and starts its other update kinds over, so that the new
// incarnation's updates of those kinds are taken as they come rather than
// each detecting the restart again. Updates stamped before the one that
// revealed the restart (less a second of slack) are the old incarnation's.
//
// Links of the old list that the other end still reports UP are held
// (n.held), not dropped, until the node itself tells us about them. The
// updates a restarted node sends first are snapshots, each taken as one
// of its links came UP (the FULL_TOP_UPDATE to that neighbour); the links
// it makes next are announced later, by LS_UPDATE or by the refresh they
// are coalesced into. Meanwhile a neighbour's LS_UPDATE saying its own
// link to the node is UP again pairs with the old list's half of that
// link, and the node becomes reachable through that neighbour, rightly:
// the neighbour's link is to the new incarnation. Dropping the old half
// on the first snapshot, which does not have that link yet, made the node
// unreachable until our own link came UP a moment later: a NodeDown and a
// NodeUp for a node that never went away, and failover of its calls and
// sharing tags for nothing. A held link ends with the node's word on it
// (an LS_UPDATE), with its refresh, which lists all its links and comes a
// ping timeout after the first came UP, and at the latest two ping
// timeouts after the restart was detected (OpenSIPS sends no refresh; it
// announces each link as it comes UP).
func (c *cluster) restarted(now time.Time, n *node, by *seqState, ts int32) {
	c.m.stats.Restarts++
	var held []int32
	for _, id := range slices.Concat(n.adj, n.held) {
		if o := c.nodes[id]; o != nil && slices.Contains(o.adj, n.id) && !slices.Contains(held, id) {
			held = append(held, id)
		}
	}
	n.forgetIncarnation()
	c.shtagRestarted(n.id)
	if len(held) > 0 {
		n.held, n.heldUntil = held, now.Add(2*c.m.cfg.PingTimeout)
	}
	n.bornTS = ts - 1
	for _, st := range []*seqState{&n.ls, &n.top, &n.capSt} {
		if st != by {
			*st = seqState{seq: -1, floor: ts - 1}
		}
	}
	c.topoDirty = true
}

// applyEntry applies a FULL_TOP_UPDATE entry: X's neighbours as of X's LS
// counter entrySeq, sent by src. LS_UPDATEs and FULL_TOP_UPDATEs travel
// separately and arrive out of order, and a third party's entry may be
// older than what we know, so versions decide, per list and per neighbour:
//   - an entry older than the last list applied is ignored;
//   - X's own entry at the same version replaces the list (X's counter
//     does not move when it had nobody to tell, and its own updates arrive
//     in order thanks to their own sequence);
//   - a third party's entry describes X's links except the one with
//     itself, which it never lists: at the same version it can only add
//     what we lack; when newer it replaces the list, keeping src as the
//     message's own first entry says (src lists X: the link is UP);
//   - a neighbour set by a newer LS_UPDATE keeps that state.
//
// The local node is never stored. OpenSIPS instead replaces the list
// whenever the entry's LS sequence passes its check, which can roll a link
// back, and loses the sender's own link for good.
//
// stamp bounds the time of X's LS update entrySeq: the entry's timestamp,
// or for X's own entry, which carries none, the message's. An entry older
// than the last list but stamped later comes from X's next incarnation.
func (c *cluster) applyEntry(now time.Time, x *node, neigh []int32, entrySeq, stamp, src int32, srcLinked bool) {
	own := x.id == src
	if stamp < x.bornTS {
		return // about an earlier incarnation
	}
	if entrySeq < x.listVer {
		if stamp <= x.listTS {
			return
		}
		c.restarted(now, x, nil, stamp)
	}
	if c.olderIncarnation(x, entrySeq, stamp) {
		return
	}
	merge := !own && entrySeq == x.listVer
	x.listVer, x.listTS = entrySeq, max(stamp, x.listTS)
	if x.adjVer == nil {
		x.adjVer = map[int32]int32{}
	}
	newer := func(id int32) bool {
		v, ok := x.adjVer[id]
		return ok && v > entrySeq
	}
	want := make([]int32, 0, len(neigh)+1)
	for _, id := range neigh {
		if id != c.me() && id != x.id && !slices.Contains(want, id) {
			want = append(want, id)
		}
	}
	if !own && srcLinked && !slices.Contains(want, src) {
		want = append(want, src)
	}
	out := make([]int32, 0, len(want)+len(x.adj))
	for _, id := range want {
		if newer(id) && !slices.Contains(x.adj, id) {
			continue
		}
		out = append(out, id)
		x.adjVer[id] = max(x.adjVer[id], entrySeq)
	}
	for _, id := range x.adj {
		switch {
		case slices.Contains(out, id):
		case merge || newer(id) || id == src && !own && !srcLinked:
			out = append(out, id)
		default:
			x.adjVer[id] = entrySeq // removed by this entry
		}
	}
	if !slices.Equal(out, x.adj) {
		x.adj = out
		c.topoDirty = true
	}
}

// olderIncarnation reports whether X's LS version v stamped ts comes from
// an incarnation before the one whose list we hold: within one
// incarnation a later version is never stamped before the list's time
// (the version was sent after the message that reported the list). It
// catches what the counters cannot, a third party still describing a
// restarted node's old links to a node that never saw the restart (it was
// down itself). A zero stamp tells nothing.
func (c *cluster) olderIncarnation(x *node, v, ts int32) bool {
	if x.listVer == noList || v <= x.listVer || ts == 0 || ts >= x.listTS {
		return false
	}
	c.m.stats.StaleSeq++
	return true
}

func (c *cluster) handleFullTop(now time.Time, from *node, msg *wire.FullTopUpdate) {
	ok, restart := from.top.accept(msg.Seq, msg.Timestamp)
	// A node's own updates straight to us (path: itself only) come on
	// one TCP connection, in the order it sent them: within one
	// incarnation each has a higher sequence than the one before, and its
	// own entry an LS version no lower than the ones before. One that goes
	// back comes from a node whose counters started over: a restart,
	// even within the second of its last update, which the timestamps
	// cannot show. Flooded copies prove nothing: one can overtake the
	// node's own, and an update straight from it that is not newer than a
	// flooded one is merely late (taking it for a restart made us forget
	// the node's links for nothing).
	direct := len(msg.Path) == 1 && msg.Path[0] == from.id
	current := msg.Seq >= 0 && msg.Timestamp >= from.top.floor // not a straggler of a forgotten incarnation
	ownLS, hasOwn := int32(0), len(msg.Nodes) > 0 && msg.Nodes[0].Node == from.id
	if hasOwn {
		ownLS = msg.Nodes[0].LSSeq
	}
	if direct && current && !restart && (msg.Seq <= from.directTop || hasOwn && ownLS < from.directLS) {
		if !ok {
			from.top.seq, from.top.ts = msg.Seq, msg.Timestamp
		}
		ok, restart = true, true
	}
	if restart {
		c.restarted(now, from, &from.top, msg.Timestamp)
	}
	if direct && current {
		from.directTop = max(from.directTop, msg.Seq)
		if hasOwn {
			from.directLS = max(from.directLS, ownLS)
		}
	}
	if !ok {
		c.m.stats.StaleSeq++
		return
	}
	// Whether to flood it on (see the end).
	fresh := restart || len(msg.Nodes) == 1 && msg.Nodes[0].Node == from.id
	for i, e := range msg.Nodes {
		if e.Node == c.me() {
			continue
		}
		listsMe := slices.Contains(e.Neighbors, c.me())
		if i == 0 && e.Node == from.id {
			// The sender's own entry is authoritative, as far as it is
			// not older than the LS_UPDATEs we applied (see applyEntry;
			// OpenSIPS applies it whole and can roll a link back). A
			// refresh (the sender's own entry only) lists all its links:
			// it ends the links held over its restart (see restarted).
			if !restart && len(msg.Nodes) == 1 {
				from.held = nil
			}
			c.applyEntry(now, from, e.Neighbors, e.LSSeq, msg.Timestamp, from.id, false)
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
			fresh = true
		}
		srcLinked := msg.Nodes[0].Node == from.id && slices.Contains(msg.Nodes[0].Neighbors, x.id)
		c.applyEntry(now, x, e.Neighbors, e.LSSeq, e.LSTimestamp, from.id, srcLinked)
		if listsMe && x.state == Down {
			c.revive(x)
		}
	}
	if !fresh && !c.m.cfg.OpenSIPSFlooding && !c.reachesMore() {
		// OpenSIPS floods every FULL_TOP_UPDATE on, including the one each
		// node sends to each new neighbour: with n entries each, n⁴
		// entries for a full mesh to join. What it says about each node's
		// links the nodes flood themselves (LS_UPDATE, refresh); what only
		// a flood of it can bring is nodes the far side could not reach,
		// after a partition heals or as a node joins. So it goes on when
		// it taught us a node, made one reachable, revealed a restart, or
		// is a refresh, which exists to repair views that missed updates.
		c.m.stats.TopSuppressed++
		return
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
		e := wire.TopEntry{Node: n.id, LSSeq: n.ls.seq, LSTimestamp: n.ls.ts, Neighbors: slices.Clone(n.adj)}
		if !slices.Contains(to.pongNodes, n.id) {
			d := n.desc
			e.Desc = &d
		}
		msg.Nodes = append(msg.Nodes, e)
	}
	c.send(to, msg)
}

// sendRefresh floods a FULL_TOP_UPDATE holding only our own entry to every
// UP neighbour. OpenSIPS sends its links only as they change (LS_UPDATE)
// and to a neighbour whose link comes UP (FULL_TOP_UPDATE), and an update
// is lost for good on the far side of a path that was down at that moment:
// views then differ, and routes can loop. Re-announcing our links once
// things settle (a ping timeout after our links or our reachable set last
// changed) repairs that; it costs one flood per change, nothing in a
// steady state, and OpenSIPS nodes take it as any FULL_TOP_UPDATE.
func (c *cluster) sendRefresh(now time.Time) {
	up := c.upNeighbors()
	if len(up) == 0 {
		return
	}
	c.topSeq++
	msg := &wire.FullTopUpdate{Origin: wire.Origin{Cluster: c.id, Src: c.me()}, Seq: c.topSeq,
		Timestamp: c.now32(now), Path: []int32{c.me()},
		Nodes: []wire.TopEntry{{Node: c.me(), LSSeq: c.lsSeq, Neighbors: up}}}
	for _, id := range up {
		c.send(c.nodes[id], msg)
	}
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
	st := from.capSt // applied only if every block names a known node
	ok, restart := st.accept(msg.Seq, msg.Timestamp)
	if !ok {
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
	from.capSt = st
	if restart {
		c.restarted(now, from, &from.capSt, msg.Timestamp)
	}
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

// SetCapability sets the announced state of a local capability that is
// not registered with AddCapability (the simulator's and the interop
// tests' fixed capabilities) and floods a change as a single-block
// CAP_UPDATE.
func (m *Machine) SetCapability(now time.Time, clusterID int32, name string, synced bool) error {
	c, err := m.cluster(clusterID)
	if err != nil {
		return err
	}
	c.announceCap(now, name, synced)
	m.finishStep(now)
	return nil
}
