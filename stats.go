package clusterer

import "sync/atomic"

// Stats counts what the node did and dropped, by reason.
type Stats struct {
	Sent    uint64 // module packets queued by SendTo/SendAll
	Relayed uint64 // packets relayed for other nodes
	// Rerouted counts routed packets (module and clusterer-extra) that a
	// broken connection left unsent and that went out again through the
	// new next hop.
	Rerouted uint64
	// RerouteDropped counts the packets a broken connection left unsent
	// that could not be rerouted: protocol messages meant for that
	// neighbour (the protocol reacts to the loss itself), destinations
	// now unreachable, or a refused send.
	RerouteDropped uint64

	Malformed         uint64 // undecodable packets
	UnknownCluster    uint64
	UnknownNode       uint64
	OwnID             uint64 // packets claiming the local node as source
	SourceIP          uint64 // from an address outside the cluster
	Disabled          uint64 // to or from a disabled node
	UnknownCapability uint64 // module packets nobody registered
	RelayNoRoute      uint64
	RelayLoop         uint64 // would have gone back where they came from
	RelayRefused      uint64 // rerouting disabled
	RelayFailed       uint64
	SendErrors        uint64 // protocol messages the transport refused
	HandlerDrops      uint64 // deliveries dropped by full handler queues
	InboxFull         uint64 // inputs dropped because the protocol loop lagged
	Unhandled         uint64 // messages for layers not enabled on this node
	UnknownCommand    uint64 // remote commands not registered here
	Unanswered        uint64 // generic requests received with no request handler set
	ReplyDropped      uint64 // replies of the request handler that could not be sent
	StaleUpdates      uint64 // topology updates already seen (flood duplicates)
	TooManyNodes      uint64 // nodes not learned: the cluster holds 128
	TooManyShTags     uint64 // sharing tags not learned: the cluster holds 1024

	// Sync counters.
	SyncFramesSent, SyncFramesReceived uint64 // SYNC and SYNC_END packets
	SyncServed, SyncServeFailed        uint64 // syncs donated, completely or not
	SyncLost                           uint64 // sync packets a stuck handler could not take
	SyncStale                          uint64 // sync packets of abandoned or foreign sessions, dropped
	SyncOverflow                       uint64 // syncs failed: too many packets to hold back
	SyncReqDropped                     uint64 // sync requests for capabilities absent or disabled here

	// Transport counters.
	FramesSent, FramesReceived uint64
	BytesSent, BytesReceived   uint64
	WriteBatches               uint64
	FramingErrors              uint64
	QueueDrops                 uint64 // frames dropped: queue full, reconnect backoff, broken connection (RerouteDropped included)
	DialFailures               uint64 // connection attempts to other nodes that failed
	// Redials counts reconnect backoffs cut short because the node pinged
	// us: a restarted node is answered at once, not after the backoff.
	Redials uint64
	// Peers is the number of peer addresses with a send queue and a writer
	// goroutine, including ones finishing their queue after their node
	// was removed or disabled.
	Peers int
}

type counters struct {
	sent, relayed, rerouted, rerouteDropped                 atomic.Uint64
	malformed, unknownCluster, unknownNode, ownID, sourceIP atomic.Uint64
	disabled, unknownCapability                             atomic.Uint64
	relayNoRoute, relayLoop, relayRefused, relayFailed      atomic.Uint64
	sendErrors, handlerDrops, inboxFull, unhandledMessages  atomic.Uint64
	unknownCommand, unanswered, replyDropped                atomic.Uint64
	syncFramesSent, syncFramesReceived, syncServed          atomic.Uint64
	syncServeFailed, syncLost, syncStale, syncOverflow      atomic.Uint64
}

// Stats returns the node's counters.
func (c *Cluster) Stats() Stats {
	s := Stats{
		Sent: c.stats.sent.Load(), Relayed: c.stats.relayed.Load(),
		Rerouted: c.stats.rerouted.Load(), RerouteDropped: c.stats.rerouteDropped.Load(),
		Malformed: c.stats.malformed.Load(), UnknownCluster: c.stats.unknownCluster.Load(),
		UnknownNode: c.stats.unknownNode.Load(), OwnID: c.stats.ownID.Load(), SourceIP: c.stats.sourceIP.Load(),
		Disabled: c.stats.disabled.Load(), UnknownCapability: c.stats.unknownCapability.Load(),
		RelayNoRoute: c.stats.relayNoRoute.Load(), RelayLoop: c.stats.relayLoop.Load(),
		RelayRefused: c.stats.relayRefused.Load(), RelayFailed: c.stats.relayFailed.Load(),
		SendErrors: c.stats.sendErrors.Load(), HandlerDrops: c.stats.handlerDrops.Load(),
		InboxFull: c.stats.inboxFull.Load(), Unhandled: c.stats.unhandledMessages.Load(),
		UnknownCommand: c.stats.unknownCommand.Load(), Unanswered: c.stats.unanswered.Load(),
		ReplyDropped:   c.stats.replyDropped.Load(),
		SyncFramesSent: c.stats.syncFramesSent.Load(), SyncFramesReceived: c.stats.syncFramesReceived.Load(),
		SyncServed: c.stats.syncServed.Load(), SyncServeFailed: c.stats.syncServeFailed.Load(),
		SyncLost: c.stats.syncLost.Load(), SyncStale: c.stats.syncStale.Load(), SyncOverflow: c.stats.syncOverflow.Load(),
	}
	if cs := c.coreStats.Load(); cs != nil {
		s.Malformed += cs.Malformed
		s.UnknownCluster += cs.UnknownCluster
		s.UnknownNode += cs.UnknownNode
		s.OwnID += cs.OwnID
		s.SourceIP += cs.SourceIP
		s.Disabled += cs.Disabled
		s.StaleUpdates = cs.StaleSeq
		s.TooManyNodes = cs.TooManyNodes
		s.SyncReqDropped = cs.SyncReqDropped
		s.TooManyShTags = cs.ShTagsFull
	}
	c.mu.Lock()
	peers := c.peers
	c.mu.Unlock()
	if peers != nil {
		ps := peers.Stats()
		s.FramesSent, s.FramesReceived, s.BytesSent, s.BytesReceived = ps.FramesSent, ps.FramesRecv, ps.BytesSent, ps.BytesRecv
		s.WriteBatches, s.FramingErrors, s.Peers = ps.WriteBatches, ps.FramingErrors, ps.Writers
		s.DialFailures, s.Redials = ps.DialFailures, ps.Redials
		s.QueueDrops = ps.DroppedQueueFull + ps.DroppedBackoff + ps.DroppedConnFailure + s.RerouteDropped
	}
	return s
}
