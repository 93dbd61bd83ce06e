package core

import (
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/route"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// Errors of local commands.
var (
	ErrUnknownCluster = errors.New("core: unknown cluster")
	ErrUnknownNode    = errors.New("core: unknown node")
	ErrOwnNode        = errors.New("core: operation not allowed on the local node")
)

// node is a remote node as known in one cluster.
type node struct {
	id      int32
	desc    wire.Description
	url     URL
	addr    string // url.Addr as "IP:PORT", the peer key
	seed    bool
	enabled bool

	state     LinkState
	retries   int32     // probes left in the current retry sequence
	lastPing  time.Time // last probe written
	pingOK    bool      // the last probe was not reported failed
	lastPong  time.Time
	lastRecv  time.Time // any packet but PONG
	lastSent  time.Time // data-plane and routed traffic sent to it
	pongNodes []int32   // node list of its last PONG: what it already knows

	rtt time.Duration // of the last probe answered in time (see notePong)

	// What the node told us, per update kind: last accepted (seq, ts).
	ls, top, capSt seqState
	// directTop and directLS are the highest FULL_TOP_UPDATE sequence and
	// LS version (of an LS_UPDATE, or of its own entry in a
	// FULL_TOP_UPDATE) received straight from the node, not flooded, in
	// its current incarnation; -1 if none. Its updates straight to us
	// arrive in the order it sent them, so they only go back on a counter
	// if it restarted (see handleFullTop).
	directTop, directLS int32

	adj []int32 // its UP neighbours as known here (never the local node)
	// Versions of adj, in the node's LS counter: adjVer per neighbour
	// (set by LS_UPDATE and entries), listVer of the last whole list
	// applied from a FULL_TOP_UPDATE entry (noList if none).
	adjVer  map[int32]int32
	listVer int32
	listTS  int32 // latest time the LS update listVer can have been sent
	bornTS  int32 // entries stamped earlier describe a previous incarnation
	// held are links of the node's previous incarnation that were in use
	// (the other end also listed them) when its restart was detected.
	// They count for routes until the node's own word on them, or until
	// heldUntil (see restarted); they are never sent on.
	held      []int32
	heldUntil time.Time
	caps      []wire.CapState

	reachable bool
	hop       int32 // next hop when reachable
	hops      int   // route length when reachable
}

// cluster is the local node's state in one cluster.
type cluster struct {
	m       *Machine
	id      int32
	self    wire.Description
	selfURL URL
	enabled bool

	nodes map[int32]*node
	list  []*node // most recently added first, as OpenSIPS orders its node list

	lsSeq, topSeq, capSeq int32           // own counters; the first value sent is 0
	caps                  []wire.CapState // local capabilities as announced
	lcaps                 []*localCap     // registered local capabilities (sync.go)
	selfSeed              bool

	table     *route.Table
	topoDirty bool
	gained    bool // a node became reachable in the last recompute

	// A refresh re-floods our own links a little after they or our
	// reachable set changed (see sendRefresh).
	refreshWanted bool
	refreshAt     time.Time

	sh shtags // sharing tags
}

func newCluster(m *Machine, cc ClusterConfig) *cluster {
	u, _ := ParseURL(cc.Self.URL) // validated
	c := &cluster{
		m:       m,
		id:      cc.ID,
		selfURL: u,
		self: wire.Description{URL: u.String(), SIPAddr: cc.Self.SIPAddr,
			Priority: defaultInt(cc.Self.Priority, DefaultPriority), PingRetries: defaultInt(cc.Self.PingRetries, DefaultPingRetries)},
		enabled: !cc.Self.Disabled, // a disabled own row (state=0) starts the node disabled
		nodes:   map[int32]*node{},
		lsSeq:   -1, topSeq: -1, capSeq: -1,
		caps:     slices.Clone(cc.Capabilities),
		selfSeed: cc.Self.Seed,
	}
	for _, ni := range cc.Nodes {
		c.addNode(ni.ID, wire.Description{URL: ni.URL, SIPAddr: ni.SIPAddr,
			Priority: defaultInt(ni.Priority, DefaultPriority), PingRetries: defaultInt(ni.PingRetries, DefaultPingRetries)},
			ni.Seed, !ni.Disabled)
	}
	c.initShTags(cc.ShTags)
	return c
}

func defaultInt(v, d int32) int32 {
	if v == 0 {
		return d
	}
	return v
}

// addNode inserts a node at the front of the list. It returns nil if the
// URL is bad or the cluster is full.
func (c *cluster) addNode(id int32, d wire.Description, seed, enabled bool) *node {
	u, err := ParseURL(d.URL)
	if err != nil {
		c.m.stats.Malformed++
		return nil
	}
	if len(c.nodes)+1 >= wire.MaxNodes {
		c.m.stats.TooManyNodes++
		return nil
	}
	if d.PingRetries < 0 {
		d.PingRetries = 0
	}
	n := &node{
		id: id, desc: d, url: u, addr: u.Addr.String(), seed: seed, enabled: enabled,
		state: RestartPinging,
		ls:    newSeqState(), top: newSeqState(), capSt: newSeqState(),
		directTop: -1, directLS: -1,
		listVer: noList,
	}
	c.nodes[id] = n
	c.list = slices.Insert(c.list, 0, n)
	c.topoDirty = true
	return n
}

func (c *cluster) removeNode(now time.Time, n *node) {
	if n.state == Up {
		c.leaveUp(now, n)
	}
	delete(c.nodes, n.id)
	c.list = slices.DeleteFunc(c.list, func(x *node) bool { return x == n })
	for _, o := range c.list {
		o.adj = slices.DeleteFunc(o.adj, func(x int32) bool { return x == n.id })
	}
	c.topoDirty = true
	c.shtagForget(n.id)
	c.m.events = append(c.m.events, Event{Kind: NodeRemoved, Cluster: c.id, Node: n.id})
}

// ipAllowed is OpenSIPS's source check: the connection must come from the
// node's own IP or from the IP of any node of the cluster (ports are not
// checked, since outgoing connections use ephemeral ports).
func (c *cluster) ipAllowed(ip netip.Addr, own netip.Addr) bool {
	if !ip.IsValid() {
		return true // the caller has no address to check (tests, replays)
	}
	ip = ip.Unmap()
	if ip == own.Unmap() || ip == c.selfURL.Addr.Addr().Unmap() {
		return true
	}
	for _, n := range c.list {
		if n.url.Addr.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}

func (c *cluster) me() int32 { return c.m.cfg.NodeID }

func (c *cluster) now32(now time.Time) int32 { return int32(now.Unix()) }

// send queues a message to a direct neighbour.
func (c *cluster) send(n *node, msg wire.Message) {
	if !c.enabled || !n.enabled {
		return
	}
	frame, err := msg.Append(nil)
	if err != nil {
		c.m.stats.Malformed++ // our own message out of bounds: a bug, but never a panic
		return
	}
	c.m.sends = append(c.m.sends, Send{Cluster: c.id, Node: n.id, Addr: n.addr, Frame: frame})
}

// sendRouted sends a trailer-addressed message to dst through its next
// hop. It reports whether a route existed.
func (c *cluster) sendRouted(now time.Time, dst int32, msg wire.Message) bool {
	n := c.nodes[dst]
	if n == nil || !n.reachable {
		return false
	}
	hop := c.nodes[n.hop]
	if hop == nil {
		return false
	}
	hop.lastSent = now
	c.send(hop, msg)
	return true
}

func (c *cluster) replyUnknownID(src Source) {
	frame, err := (&wire.UnknownID{Origin: wire.Origin{Cluster: c.id, Src: c.me()}}).Append(nil)
	if err == nil && src.ConnID != 0 {
		c.m.sends = append(c.m.sends, Send{Cluster: c.id, ConnID: src.ConnID, Frame: frame})
	}
}

// upNeighbors lists the enabled nodes whose link is UP, in list order.
func (c *cluster) upNeighbors() []int32 {
	var out []int32
	for _, n := range c.list {
		if n.enabled && n.state == Up {
			out = append(out, n.id)
		}
	}
	return out
}

// reachesMore brings the routes up to date and reports whether a node
// became reachable since they were last computed.
func (c *cluster) reachesMore() bool {
	if !c.topoDirty {
		return false
	}
	c.gained = false
	c.recompute()
	return c.gained
}

// recompute rebuilds the routing table and raises reachability events.
func (c *cluster) recompute() {
	c.topoDirty = false
	defer func() {
		if c.refreshWanted && c.refreshAt.IsZero() && c.enabled {
			c.refreshAt = c.m.now.Add(c.m.cfg.PingTimeout)
		}
		c.refreshWanted = false
	}()
	c.table = route.Compute(c.routeGraph(), c.m.cfg.RouteMode)
	for _, n := range c.list {
		hop, ok := c.table.NextHop(n.id)
		if !c.enabled {
			ok = false
		}
		hops, _ := c.table.Hops(n.id)
		was := n.reachable
		n.reachable, n.hop, n.hops = ok, hop, hops
		if !ok {
			n.hop, n.hops = 0, 0
		}
		switch {
		case ok && !was:
			c.refreshWanted, c.gained = true, true
			c.m.events = append(c.m.events, Event{Kind: NodeUp, Cluster: c.id, Node: n.id})
			c.shtagNodeUp(n.id)
		case !ok && was:
			c.m.events = append(c.m.events, Event{Kind: NodeDown, Cluster: c.id, Node: n.id})
			c.forgetCapStates(n)
			c.shtagNodeGone(n.id)
		}
	}
}

// noList is the listVer of a node whose list no entry has described yet.
const noList = -2

// forgetIncarnation drops what we know of a node's link state when it
// restarted (or may have): its counters start over.
func (n *node) forgetIncarnation() {
	n.adj = nil
	n.adjVer = nil
	n.held = nil
	n.listVer, n.listTS = noList, 0
	n.directTop, n.directLS = -1, -1
}

// seqState is the last accepted (seq, ts) of one update kind from one node.
// floor, after a restart was detected, rejects the old incarnation's
// updates still in flight.
type seqState struct{ seq, ts, floor int32 }

func newSeqState() seqState { return seqState{seq: -1} }

// accept applies the sequence rule (spec §5.1) and records an accepted
// update. It reports whether the update is accepted and whether it shows
// that the node restarted.
//
// OpenSIPS accepts a growing number, and any 0 unless it repeats a stored 0
// with no newer timestamp. Two flaws follow. Copies of a node's first update
// travel the flood on many paths, and a copy arriving after later updates
// rewinds the stored number, so that every later copy is accepted and
// flooded again: a storm that feeds itself whenever several updates share
// a second, as they do during every join. And a node that missed a
// restarted node's 0 (no flood path reached it at that moment) rejects
// all its updates until the new sequence outgrows the old one.
//
// Here the timestamp decides what the number cannot: an update that does
// not grow the sequence but is stamped later than the stored one can only
// come from a new incarnation (within one, numbers and time grow
// together), so it is accepted as a restart, whether it is the 0 or a
// later one; anything else that does not grow the sequence is a
// duplicate. The cost: a restart within the same second as the node's last
// update is noticed only in a later second, or, for a neighbour, by an
// update straight from it that goes back on a counter (see handleFullTop).
func (st *seqState) accept(seq, ts int32) (ok, restart bool) {
	switch {
	case seq < 0 || ts < st.floor:
		return false, false
	case seq > st.seq:
	case ts > st.ts:
		restart = true
	default:
		return false, false
	}
	st.seq, st.ts = seq, ts
	return true, restart
}

// flood forwards an accepted update to every UP neighbour not on its path,
// with the local node appended to the path (spec §5.2).
func (c *cluster) flood(path []int32, build func(path []int32) wire.Message) {
	if len(path) >= wire.MaxPathLen {
		c.m.stats.PathTooLong++
		return
	}
	var ext []int32
	var msg wire.Message
	for _, n := range c.list {
		if !n.enabled || n.state != Up || slices.Contains(path, n.id) {
			continue
		}
		if ext == nil {
			ext = append(slices.Clip(path), c.me())
			msg = build(ext)
		}
		c.send(n, msg)
	}
}

// --- local commands ---

// SetNodeEnabled enables or disables a remote node (clusterer_set_status
// for another node): a disabled node is not probed, its packets are
// dropped and nothing is sent to it.
func (m *Machine) SetNodeEnabled(now time.Time, clusterID, nodeID int32, enabled bool) error {
	c, err := m.cluster(clusterID)
	if err != nil {
		return err
	}
	if nodeID == m.cfg.NodeID {
		return m.SetLocalEnabled(now, clusterID, enabled)
	}
	n := c.nodes[nodeID]
	if n == nil {
		return ErrUnknownNode
	}
	if n.enabled == enabled {
		return nil
	}
	if !enabled {
		if n.state == Up {
			c.leaveUp(now, n)
		}
		n.state = Down
		n.enabled = false
	} else {
		n.enabled = true
		n.state = RestartPinging
	}
	c.topoDirty = true
	if m.started {
		c.tick(now)
	}
	m.finishStep(now)
	return nil
}

// SetLocalEnabled enables or disables the local node in a cluster. While
// disabled it sends nothing and ignores everything. Before going silent it
// tells its neighbours its links are DOWN, so they notice at once instead
// of after their ping timeouts.
func (m *Machine) SetLocalEnabled(now time.Time, clusterID int32, enabled bool) error {
	c, err := m.cluster(clusterID)
	if err != nil {
		return err
	}
	c.setEnabled(now, enabled)
	m.finishStep(now)
	return nil
}

func (c *cluster) setEnabled(now time.Time, enabled bool) {
	if c.enabled == enabled {
		return
	}
	if !enabled {
		// Say goodbye: every UP neighbour hears that each of our links is
		// DOWN, including the one to itself, which makes it drop the link
		// at once (spec §6.6) instead of waiting for its pings to time out.
		up := c.upNeighbors()
		for _, id := range up {
			c.lsSeq++
			msg := &wire.LSUpdate{Origin: wire.Origin{Cluster: c.id, Src: c.me()}, Seq: c.lsSeq,
				Timestamp: c.now32(now), Neighbor: id, State: wire.LinkDown, Path: []int32{c.me()}}
			for _, to := range up {
				c.send(c.nodes[to], msg)
			}
		}
		for _, n := range c.list {
			if n.state == Up {
				c.m.events = append(c.m.events, Event{Kind: LinkDown, Cluster: c.id, Node: n.id})
			}
			n.state = Down
			n.lastPing = now
		}
		c.enabled = false
		c.refreshAt = time.Time{}
	} else {
		c.enabled = true
		for _, n := range c.list {
			n.state = RestartPinging
		}
		if c.m.started {
			c.tick(now)
		}
	}
	c.topoDirty = true
}

// RemoveNode tells every reachable enabled node to forget nodeID (REMOVE_NODE,
// one unicast each) and forgets it locally.
func (m *Machine) RemoveNode(now time.Time, clusterID, nodeID int32) error {
	c, err := m.cluster(clusterID)
	if err != nil {
		return err
	}
	if nodeID == m.cfg.NodeID {
		return ErrOwnNode
	}
	target := c.nodes[nodeID]
	if target == nil {
		return ErrUnknownNode
	}
	for _, n := range slices.Clone(c.list) {
		if n.enabled && n.reachable {
			c.sendRouted(now, n.id, &wire.RemoveNode{
				Trailer: bin.Trailer{Cluster: c.id, Src: c.me(), Dst: n.id}, Target: nodeID})
		}
	}
	c.removeNode(now, target)
	m.finishStep(now)
	return nil
}

func (c *cluster) handleRemoveNode(now time.Time, from *node, msg *wire.RemoveNode) {
	if !c.m.cfg.Discovery {
		return // provisioned clusters ignore it (spec §8)
	}
	if msg.Target == c.me() {
		c.setEnabled(now, false)
		c.m.events = append(c.m.events, Event{Kind: LocalDisabled, Cluster: c.id, Node: from.id})
		return
	}
	if t := c.nodes[msg.Target]; t != nil {
		c.removeNode(now, t)
	}
}

// SendRouted sends an already-built clusterer-extra message to dst through
// the current route, as the upper layers (messaging, sync, sharing tags)
// need. It reports false when dst is unreachable.
func (m *Machine) SendRouted(now time.Time, clusterID, dst int32, msg wire.Message) bool {
	c := m.clusters[clusterID]
	if c == nil || !c.enabled {
		return false
	}
	ok := c.sendRouted(now, dst, msg)
	m.finishStep(now)
	return ok
}
