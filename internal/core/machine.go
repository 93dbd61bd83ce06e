// Package core is the clusterer protocol as a deterministic state machine:
// node tables, the link-probing state machine, discovery, sequence-number
// acceptance and flooding, the topology database and reachability.
//
// A Machine does no I/O, reads no clock and starts no goroutines. The
// caller feeds it inputs stamped with the current time (Receive,
// SendFailed, Activity, Tick and local commands), then collects what it
// wants sent and the events it raised with Drain, and asks Deadline when
// to tick next. The same inputs always produce the same outputs, which is
// what lets the simulator run hundreds of nodes on virtual time.
//
// A Machine is not safe for concurrent use; the runtime owns it from one
// goroutine and publishes immutable Views for everyone else.
package core

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/route"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// LinkState is the local state of the link to a node (spec §6.1).
type LinkState uint8

// Link states. Only Up and Down ever appear on the wire.
const (
	// RestartPinging: start probing at the next tick; the initial state.
	RestartPinging LinkState = iota
	// Restarted: first probe sent, waiting for a PONG.
	Restarted
	// Retrying: retry probes sent.
	Retrying
	// RetrySendFail: the last probe could not be written.
	RetrySendFail
	// Up: link confirmed.
	Up
	// Down: failed; re-probed every node timeout.
	Down
)

func (s LinkState) String() string {
	switch s {
	case RestartPinging:
		return "restart-pinging"
	case Restarted:
		return "restarted"
	case Retrying:
		return "retrying"
	case RetrySendFail:
		return "retry-send-fail"
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return fmt.Sprintf("LinkState(%d)", uint8(s))
}

// Source identifies where a received packet came from.
type Source struct {
	ConnID uint64     // for replies on the same connection (UNKNOWN_ID)
	IP     netip.Addr // the connection's remote IP, for the source check
}

// Send is a packet the caller must send.
type Send struct {
	Cluster int32
	// Node is the next hop (the node owning Addr); for a Reply, the
	// node the packet answers, if known.
	Node int32
	// Addr is the listener address of Node; empty for a Reply.
	Addr string
	// ConnID, when non-zero, means: write back on this connection
	// instead of our own connection to Addr.
	ConnID uint64
	Frame  []byte
	// Heard means Node has just pinged us while its link was not UP: it
	// is back, so a transport waiting out a reconnect backoff towards
	// Addr should dial now rather than drop this answer.
	Heard bool
}

// EventKind classifies events.
type EventKind uint8

// Event kinds.
const (
	// NodeUp: the node became reachable (directly or routed).
	NodeUp EventKind = iota + 1
	// NodeDown: the node is no longer reachable.
	NodeDown
	// LinkUp and LinkDown: the direct link to the node changed (no
	// reachability change is implied).
	LinkUp
	LinkDown
	// NodeAdded: a node was learned (discovery).
	NodeAdded
	// NodeRemoved: a node was removed (REMOVE_NODE).
	NodeRemoved
	// Message: a clusterer-extra message for the upper layers.
	Message
	// CapabilityChanged: a remote node's capability state changed.
	CapabilityChanged
	// LocalDisabled: the local node was disabled in the cluster by a
	// REMOVE_NODE naming it.
	LocalDisabled
	// SyncServe: Node asked for the data of capability CapName; the
	// runtime streams it (SYNC packets, then SYNC_END).
	SyncServe
	// SyncStart: a sync of CapName from donor Node began (request sent,
	// or data arrived unasked).
	SyncStart
	// SyncAbort: the session from Node was given up (Err says why); the
	// runtime replays what it buffered. Another request follows when a
	// donor qualifies.
	SyncAbort
	// SyncFailed: the runtime reported a failed session (Err).
	SyncFailed
	// SyncDone: CapName is synced, from donor Node (0: a seed fell back).
	SyncDone
	// ShTagChanged: a sharing tag's state changed (see ShTagChange).
	ShTagChanged
)

func (k EventKind) String() string {
	switch k {
	case NodeUp:
		return "node-up"
	case NodeDown:
		return "node-down"
	case LinkUp:
		return "link-up"
	case LinkDown:
		return "link-down"
	case NodeAdded:
		return "node-added"
	case NodeRemoved:
		return "node-removed"
	case Message:
		return "message"
	case CapabilityChanged:
		return "capability-changed"
	case LocalDisabled:
		return "local-disabled"
	case SyncServe:
		return "sync-serve"
	case SyncStart:
		return "sync-start"
	case SyncAbort:
		return "sync-abort"
	case SyncFailed:
		return "sync-failed"
	case SyncDone:
		return "sync-done"
	case ShTagChanged:
		return "shtag-changed"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is something the upper layers must hear about.
type Event struct {
	Kind    EventKind
	Cluster int32
	Node    int32
	Msg     wire.Message   // for Message
	Cap     *wire.CapState // for CapabilityChanged
	CapName string         // for the Sync events
	Gen     uint64         // for SyncStart: the session's number
	Err     error          // for SyncAbort and SyncFailed
	ShTag   *ShTagChange   // for ShTagChanged
}

// Machine is the protocol state of the local node.
type Machine struct {
	cfg      Config
	clusters map[int32]*cluster
	order    []int32 // cluster ids, ascending, for deterministic iteration
	started  bool
	// startedAt is when Start ran; a seed's fallback counts from it.
	startedAt time.Time

	sends  []Send
	events []Event

	version uint64    // bumped on every change visible in a View
	now     time.Time // latest time seen in an input
	view    *View
	stats   Stats
}

// Stats counts what the machine dropped and why.
type Stats struct {
	Received       uint64
	Malformed      uint64
	UnknownCluster uint64
	OwnID          uint64 // packets claiming our own id as source
	UnknownNode    uint64
	SourceIP       uint64 // source address not in the cluster
	Disabled       uint64 // local or source node disabled
	StaleSeq       uint64 // updates rejected by the sequence rule (duplicates)
	TooManyNodes   uint64 // nodes not learned because the cluster is full
	PathTooLong    uint64 // updates not flooded further
	UpCoalesced    uint64 // links UP announced by the next refresh, not an LS_UPDATE of their own
	TopSuppressed  uint64 // FULL_TOP_UPDATEs not flooded on: nothing new in them
	UnknownCapNode uint64 // CAP_UPDATEs naming unknown nodes
	SyncReqDropped uint64 // SYNC_REQs for capabilities absent or disabled here
	// ShTagsFull counts sharing tags not created: the cluster holds
	// MaxShTags. ShTagLeftToClaim counts SHTAG_ACTIVEs from Go nodes, left
	// to the claim that came with them. ShTagReactivated counts tags taken
	// back because nobody held them: the local node and the one it took
	// for the holder each took the other for it.
	ShTagsFull, ShTagLeftToClaim, ShTagReactivated uint64
	// Restarts counts restarts of other nodes detected (each time one's
	// previous incarnation was forgotten).
	Restarts uint64
}

// New validates cfg and builds a machine; nothing is sent before Start.
func New(cfg Config) (*Machine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &Machine{cfg: cfg, clusters: map[int32]*cluster{}}
	for _, cc := range cfg.Clusters {
		c := newCluster(m, cc)
		m.clusters[cc.ID] = c
		m.order = append(m.order, cc.ID)
	}
	slices.Sort(m.order)
	m.rebuildAll()
	return m, nil
}

// NodeID is the local node's id.
func (m *Machine) NodeID() int32 { return m.cfg.NodeID }

// Config returns the effective configuration (defaults applied).
func (m *Machine) Config() Config { return m.cfg }

// Start begins probing every provisioned node.
func (m *Machine) Start(now time.Time) {
	if m.started {
		return
	}
	m.started, m.startedAt = true, now
	for _, id := range m.order {
		m.clusters[id].startShTags()
	}
	m.Tick(now)
}

// Drain returns and clears the pending sends and events. The returned
// slices are owned by the caller.
func (m *Machine) Drain() ([]Send, []Event) {
	s, e := m.sends, m.events
	m.sends, m.events = nil, nil
	return s, e
}

// Stats returns the drop counters.
func (m *Machine) Stats() Stats { return m.stats }

// Receive handles one packet of the clusterer's own capabilities
// (clusterer-internal, or clusterer-extra addressed to this node). Module
// packets never come here: the runtime's data plane handles them with the
// View. p.Body may alias a buffer reused after the call.
func (m *Machine) Receive(now time.Time, src Source, p bin.Packet) {
	m.stats.Received++
	msg, err := wire.Decode(p)
	if err != nil {
		m.stats.Malformed++
		return
	}
	switch msg := msg.(type) {
	case *wire.Ping:
		m.recvInternal(now, src, msg.Origin, msg)
	case *wire.Pong:
		m.recvInternal(now, src, msg.Origin, msg)
	case *wire.LSUpdate:
		m.recvInternal(now, src, msg.Origin, msg)
	case *wire.FullTopUpdate:
		m.recvInternal(now, src, msg.Origin, msg)
	case *wire.UnknownID:
		m.recvInternal(now, src, msg.Origin, msg)
	case *wire.NodeDescription:
		m.recvInternal(now, src, msg.Origin, msg)
	case *wire.CapUpdate:
		m.recvInternal(now, src, msg.Origin, msg)
	case *wire.RemoveNode:
		m.recvExtra(now, src, msg.Trailer, msg)
	case *wire.GenericMsg:
		m.recvExtra(now, src, msg.Trailer, msg)
	case *wire.MICmd:
		m.recvExtra(now, src, msg.Trailer, msg)
	case *wire.SyncReq:
		m.recvExtra(now, src, msg.Trailer, msg)
	case *wire.Sync:
		m.recvExtra(now, src, msg.Trailer, msg)
	case *wire.SyncEnd:
		m.recvExtra(now, src, msg.Trailer, msg)
	case *wire.ShtagActive:
		m.recvExtra(now, src, msg.Trailer, msg)
	case *wire.ShtagClaim:
		m.recvExtra(now, src, msg.Trailer, msg)
	}
	m.finishStep(now)
}

// admit runs the receive-side checks of spec §3.2 that are common to both
// addressing forms and returns the source node, or nil to drop.
func (m *Machine) admit(now time.Time, src Source, clusterID, srcID int32, discoverable bool) (*cluster, *node, bool) {
	if srcID == m.cfg.NodeID {
		m.stats.OwnID++
		return nil, nil, false
	}
	c := m.clusters[clusterID]
	if c == nil {
		m.stats.UnknownCluster++
		return nil, nil, false
	}
	if !c.enabled {
		m.stats.Disabled++
		return c, nil, false
	}
	n := c.nodes[srcID]
	if n == nil {
		if discoverable && m.cfg.Discovery {
			return c, nil, true // the caller runs discovery
		}
		m.stats.UnknownNode++
		return c, nil, false
	}
	if !c.ipAllowed(src.IP, n.url.Addr.Addr()) {
		m.stats.SourceIP++
		return c, nil, false
	}
	if !n.enabled {
		m.stats.Disabled++
		return c, nil, false
	}
	return c, n, true
}

func (m *Machine) recvInternal(now time.Time, src Source, o wire.Origin, msg wire.Message) {
	_, isPing := msg.(*wire.Ping)
	_, isDesc := msg.(*wire.NodeDescription)
	c, n, ok := m.admit(now, src, o.Cluster, o.Src, isPing || isDesc)
	if !ok {
		return
	}
	if n == nil { // unknown node, discovery allowed
		switch msg := msg.(type) {
		case *wire.Ping:
			c.replyUnknownID(src)
		case *wire.NodeDescription:
			c.learnFromDescription(now, src, msg)
		}
		return
	}
	if _, isPong := msg.(*wire.Pong); isPong {
		n.notePong(now)
	} else {
		n.lastRecv = now
	}
	switch msg := msg.(type) {
	case *wire.Ping:
		c.handlePing(now, n, msg)
		return // handlePing revives a DOWN link itself
	case *wire.Pong:
		c.handlePong(now, n, msg)
		return
	}
	c.revive(n)
	switch msg := msg.(type) {
	case *wire.LSUpdate:
		c.handleLSUpdate(now, n, msg)
	case *wire.FullTopUpdate:
		c.handleFullTop(now, n, msg)
	case *wire.UnknownID:
		c.handleUnknownID(now, n)
	case *wire.NodeDescription:
		m.stats.StaleSeq++ // already known: dropped without flooding
	case *wire.CapUpdate:
		c.handleCapUpdate(now, n, msg)
	}
}

func (m *Machine) recvExtra(now time.Time, src Source, t bin.Trailer, msg wire.Message) {
	c, n, ok := m.admit(now, src, t.Cluster, t.Src, false)
	if !ok || n == nil {
		return
	}
	if t.Dst != m.cfg.NodeID {
		// Relaying is the data plane's job; a packet for someone else
		// reaching the machine is a caller bug or a spoof.
		m.stats.UnknownNode++
		return
	}
	n.lastRecv = now
	c.revive(n)
	switch msg := msg.(type) {
	case *wire.RemoveNode:
		c.handleRemoveNode(now, n, msg)
		return
	case *wire.SyncReq:
		c.handleSyncReq(n, msg)
		return
	case *wire.ShtagActive:
		c.recvShtagActive(now, n, msg)
		return
	case *wire.ShtagClaim:
		c.recvShtagClaim(now, n, msg)
		return
	}
	m.events = append(m.events, Event{Kind: Message, Cluster: c.id, Node: n.id, Msg: msg})
}

// SendFailed reports that the connection to addr failed (dial refused,
// write error, reset). Every link using that address leaves UP at once.
func (m *Machine) SendFailed(now time.Time, addr string) {
	for _, id := range m.order {
		c := m.clusters[id]
		for _, n := range c.list {
			if n.addr == addr {
				c.sendFailed(now, n)
			}
		}
	}
	m.finishStep(now)
}

// Activity reports data-plane traffic the machine did not see: the last
// time something was sent to and received from a node. Sends suppress
// keep-alive pings; receives count as liveness.
func (m *Machine) Activity(clusterID, nodeID int32, sent, recv time.Time) {
	c := m.clusters[clusterID]
	if c == nil {
		return
	}
	n := c.nodes[nodeID]
	if n == nil {
		return
	}
	if sent.After(n.lastSent) {
		n.lastSent = sent
	}
	if recv.After(n.lastRecv) {
		n.lastRecv = recv
		c.revive(n)
		m.finishStep(recv)
	}
}

// Tick runs the probing timers.
func (m *Machine) Tick(now time.Time) {
	if !m.started {
		return
	}
	for _, id := range m.order {
		m.clusters[id].tick(now)
		m.clusters[id].syncTick(now)
		m.clusters[id].shtagTick(now)
	}
	m.finishStep(now)
}

// Deadline is when Tick must next be called; the zero time means no timer
// is pending.
func (m *Machine) Deadline() time.Time {
	if !m.started {
		return time.Time{}
	}
	var d time.Time
	for _, id := range m.order {
		c := m.clusters[id]
		for _, t := range [3]time.Time{c.deadline(), c.syncDeadline(), c.shtagDeadline()} {
			if !t.IsZero() && (d.IsZero() || t.Before(d)) {
				d = t
			}
		}
	}
	return d
}

// finishStep recomputes routes where the topology changed and drops the
// cached view: the control plane is low-rate, so rebuilding the snapshot
// after each step is cheaper than tracking every field that changed.
func (m *Machine) finishStep(now time.Time) {
	if now.After(m.now) {
		m.now = now
	}
	for _, id := range m.order {
		if c := m.clusters[id]; c.topoDirty {
			c.recompute()
		}
	}
	for _, id := range m.order {
		m.clusters[id].syncStep(now)
		m.clusters[id].shtagStep(now)
	}
	m.version++
	m.view = nil
}

func (m *Machine) rebuildAll() {
	for _, id := range m.order {
		m.clusters[id].recompute()
	}
	m.finishStep(time.Time{})
}

func (m *Machine) cluster(id int32) (*cluster, error) {
	c := m.clusters[id]
	if c == nil {
		return nil, fmt.Errorf("%w: %d", ErrUnknownCluster, id)
	}
	return c, nil
}

// routeGraph builds the routing input of a cluster.
//
// By default a link between two other nodes is used only if both ends
// report it UP. A node that died keeps, in everyone's database, the list
// it last announced (nobody can speak for it any more); its live
// neighbours, though, report their side DOWN, so with both ends required
// its stale claims cannot create routes, neither to it nor through it.
// OpenSIPS trusts one end (and, in its own words, "sees phantom nodes");
// the OpenSIPSCompat mode does the same, for identical route choices.
func (c *cluster) routeGraph() route.Graph {
	g := route.Graph{
		Self:     c.m.cfg.NodeID,
		Adj:      make(map[int32][]int32, len(c.list)+1),
		Priority: make(map[int32]int32, len(c.list)),
	}
	var mine []int32
	for _, n := range c.list {
		if n.enabled && n.state == Up {
			mine = append(mine, n.id)
		}
	}
	g.Adj[g.Self] = mine
	if c.m.cfg.NoRerouting {
		return g
	}
	both := c.m.cfg.RouteMode != route.OpenSIPSCompat
	for _, n := range c.list {
		if !n.enabled {
			continue
		}
		g.Priority[n.id] = n.desc.Priority
		var l []int32
		link := func(x int32) {
			o := c.nodes[x]
			if o != nil && o.enabled && (!both || slices.Contains(o.adj, n.id) || slices.Contains(o.held, n.id)) {
				l = append(l, x)
			}
		}
		for _, x := range n.adj {
			link(x)
		}
		if both {
			// Links held over a restart (see restarted) count as the
			// node's own; OpenSIPS forgets them with the old list.
			for _, x := range n.held {
				if !slices.Contains(n.adj, x) {
					link(x)
				}
			}
		}
		g.Adj[n.id] = l
	}
	return g
}
