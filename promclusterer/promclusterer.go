// Package promclusterer exports a clusterer node's state as Prometheus
// metrics: the link to every node, reachability and ping round trips, the
// packets sent, received, relayed and dropped (by reason), the depth of
// every queue, the capabilities' sync state and the sharing tags' states.
// It lives apart from package clusterer so that the library itself does
// not depend on Prometheus.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(promclusterer.New(node))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Values are read from the node at each scrape (Cluster.Nodes, Stats,
// Queues, Capabilities, SyncStatus, SyncedNodes, ShTags); nothing runs between
// scrapes.
//
// # Metrics
//
// Per cluster and node (labels cluster, node):
//
//	clusterer_local_enabled{cluster}            1 while the local node is enabled in the cluster
//	clusterer_node_enabled                      1 unless the node is disabled locally
//	clusterer_link_state{state="up|down|probe"} 1 for the direct link's current state, 0 for the others
//	clusterer_node_reachable                    1 when a route exists, direct or relayed
//	clusterer_node_hops                         route length, for reachable nodes
//	clusterer_ping_rtt_seconds                  round trip of the last answered probe
//
// Counters of the node:
//
//	clusterer_packets_sent_total, clusterer_packets_received_total   BIN packets on the wire (all kinds)
//	clusterer_bytes_sent_total, clusterer_bytes_received_total
//	clusterer_module_packets_sent_total         packets of capabilities (SendTo, SendAll)
//	clusterer_packets_relayed_total             packets relayed for other nodes
//	clusterer_packets_rerouted_total            packets a broken link left unsent, sent again by another route
//	clusterer_packets_dropped_total{reason}     see Stats in package clusterer; reasons below
//	clusterer_stale_updates_total               duplicate topology updates ignored (normal flooding)
//	clusterer_write_batches_total, clusterer_framing_errors_total
//	clusterer_sync_packets_sent_total, clusterer_sync_packets_received_total   SYNC and SYNC_END packets
//	clusterer_syncs_served_total, clusterer_syncs_serve_failed_total   full syncs donated, completely or not
//	clusterer_sync_overflows_total              syncs failed for want of buffer room (then repeated)
//	clusterer_shtags_not_created_total          sharing tags not created: their cluster holds 1024 (Stats.TooManyShTags)
//	clusterer_dial_failures_total               failed connection attempts to other nodes
//	clusterer_redials_total                     reconnect backoffs cut short because the node pinged us
//
// Drop reasons: malformed, unknown_cluster, unknown_node, own_id,
// source_ip, disabled, unknown_capability, relay_no_route, relay_loop,
// relay_refused, relay_failed, send_error, reroute_failed, send_queue,
// handler_queue, inbox_full, unhandled, unknown_command,
// unanswered_request, reply_dropped, too_many_nodes, sync_lost (sync data
// a stuck handler could not take), sync_stale (sync data of abandoned
// sessions), sync_request_refused (sync requests for capabilities absent
// or disabled here).
//
// Gauges of the queues:
//
//	clusterer_peers                             peers with a send queue
//	clusterer_peer_queue_bytes{peer}            bytes queued and unwritten per peer address
//	clusterer_inbox_depth, clusterer_inbox_capacity   the protocol loop's input queue
//	clusterer_handler_queue_depth{kind,cluster,capability}   deliveries waiting per handler goroutine
//
// Per local capability (labels cluster, capability), as
// Cluster.SyncStatus and SyncedNodes report them:
//
//	clusterer_capability_status{status}         1 for the current status: not_synced, sync_pending, sync_in_progress, synced, disabled
//	clusterer_capability_synced                 1 while synced (OpenSIPS's state "Ok")
//	clusterer_capability_sync_records           records received by the current or last sync
//	clusterer_capability_sync_bytes             their bytes
//	clusterer_capability_sync_seconds           how long that sync has run
//	clusterer_capability_sync_buffered_packets  packets held back until the running sync ends
//	clusterer_capability_synced_nodes           reachable nodes, this one included, where it is synced
//
// and per capability another node announced (labels cluster, node,
// capability):
//
//	clusterer_node_capability_synced            1 while the node announces it synced
//
// Per sharing tag the node knows (labels cluster, tag), as Cluster.ShTags
// reports them:
//
//	clusterer_shtag_active                      1 while active on the local node, 0 while backup
//	clusterer_shtag_term                        the holder's term (grows with every activation)
//	clusterer_shtag_holder                      the node taken for the holder, 0 when unknown
//
// The node counts no tag changes; a change shows as shtag_active flipping
// (or, among Go nodes, shtag_term growing).
//
// # Extending
//
// The metrics come in groups, each a type with describe and collect
// methods listed by defaultGroups; the capabilities' and the sharing tags'
// are in files of their own.
package promclusterer

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterer-go/clusterer"
)

// Collector is a prometheus.Collector for one node. It is safe for
// concurrent scrapes.
type Collector struct {
	c      *clusterer.Cluster
	groups []group
}

// Option changes a Collector.
type Option func(*options)

type options struct {
	namespace string
	labels    prometheus.Labels
}

// WithNamespace replaces the metric name prefix "clusterer".
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithConstLabels adds labels to every metric (for example the host's
// instance name when several nodes share a registry).
func WithConstLabels(l prometheus.Labels) Option { return func(o *options) { o.labels = l } }

// New returns a collector of c's metrics; register it with a registry.
func New(c *clusterer.Cluster, opts ...Option) *Collector {
	o := options{namespace: "clusterer"}
	for _, fn := range opts {
		fn(&o)
	}
	return &Collector{c: c, groups: defaultGroups(descBuilder(o))}
}

// group is a set of related metrics.
type group interface {
	describe(ch chan<- *prometheus.Desc)
	collect(c *clusterer.Cluster, ch chan<- prometheus.Metric)
}

// defaultGroups lists every group; new ones are added here.
func defaultGroups(d descFunc) []group {
	return []group{newNodeGroup(d), newStatsGroup(d), newQueueGroup(d), newCapGroup(d), newShTagGroup(d)}
}

// descFunc makes a Desc with the collector's namespace and const labels.
type descFunc func(name, help string, labels ...string) *prometheus.Desc

func descBuilder(o options) descFunc {
	return func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(o.namespace, "", name), help, labels, o.labels)
	}
}

// Describe implements prometheus.Collector.
func (col *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range col.groups {
		g.describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (col *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range col.groups {
		g.collect(col.c, ch)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func itoa(i int) string { return strconv.Itoa(i) }

// --- nodes and links ---

type nodeGroup struct {
	localEnabled, enabled, linkState, reachable, hops, rtt *prometheus.Desc
}

func newNodeGroup(d descFunc) *nodeGroup {
	return &nodeGroup{
		localEnabled: d("local_enabled", "1 while the local node is enabled in the cluster.", "cluster"),
		enabled:      d("node_enabled", "1 unless the node is disabled locally.", "cluster", "node"),
		linkState:    d("link_state", "State of the direct link to the node: 1 for the current state.", "cluster", "node", "state"),
		reachable:    d("node_reachable", "1 when the node is reachable, directly or through other nodes.", "cluster", "node"),
		hops:         d("node_hops", "Length of the route to a reachable node.", "cluster", "node"),
		rtt:          d("ping_rtt_seconds", "Round trip of the last probe of the link the node answered.", "cluster", "node"),
	}
}

func (g *nodeGroup) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.localEnabled, g.enabled, g.linkState, g.reachable, g.hops, g.rtt} {
		ch <- d
	}
}

var linkStates = []clusterer.LinkState{clusterer.LinkIsUp, clusterer.LinkIsDown, clusterer.LinkProbing}

func (g *nodeGroup) collect(c *clusterer.Cluster, ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, m := range c.Memberships() {
		cl := itoa(m.Cluster)
		gauge(g.localEnabled, b2f(m.Enabled), cl)
		for _, n := range c.Nodes(m.Cluster) {
			id := itoa(n.ID)
			gauge(g.enabled, b2f(!n.Disabled), cl, id)
			for _, s := range linkStates {
				gauge(g.linkState, b2f(n.Link == s), cl, id, stateLabel(s))
			}
			gauge(g.reachable, b2f(n.Reachable), cl, id)
			if n.Reachable {
				gauge(g.hops, float64(n.Hops), cl, id)
			}
			if n.RTT > 0 {
				gauge(g.rtt, n.RTT.Seconds(), cl, id)
			}
		}
	}
}

func stateLabel(s clusterer.LinkState) string {
	switch s {
	case clusterer.LinkIsUp:
		return "up"
	case clusterer.LinkIsDown:
		return "down"
	}
	return "probe"
}

// --- counters ---

type statsGroup struct {
	sent, recv, bytesSent, bytesRecv, moduleSent, relayed, rerouted *prometheus.Desc
	dropped, stale, batches, framing                                *prometheus.Desc
	syncSent, syncRecv, syncServed, syncServeFailed, syncOverflow   *prometheus.Desc
	shtagsFull, dialFailures, redials                               *prometheus.Desc
}

func newStatsGroup(d descFunc) *statsGroup {
	return &statsGroup{
		sent:       d("packets_sent_total", "BIN packets written, of every kind."),
		recv:       d("packets_received_total", "BIN packets received, of every kind."),
		bytesSent:  d("bytes_sent_total", "Bytes of BIN packets written."),
		bytesRecv:  d("bytes_received_total", "Bytes of BIN packets received."),
		moduleSent: d("module_packets_sent_total", "Capability packets queued by SendTo and SendAll."),
		relayed:    d("packets_relayed_total", "Packets relayed for other nodes."),
		rerouted:   d("packets_rerouted_total", "Packets a broken connection left unsent that went out again through a new next hop."),
		dropped:    d("packets_dropped_total", "Packets dropped, by reason.", "reason"),
		stale:      d("stale_updates_total", "Topology updates already seen (flooding duplicates), ignored."),
		batches:    d("write_batches_total", "Writes to connections, each a batch of packets."),
		framing:    d("framing_errors_total", "Connections closed because their stream could not be framed."),

		syncSent:        d("sync_packets_sent_total", "SYNC and SYNC_END packets sent, donating capability data."),
		syncRecv:        d("sync_packets_received_total", "SYNC and SYNC_END packets received for local capabilities."),
		syncServed:      d("syncs_served_total", "Full syncs donated to other nodes completely."),
		syncServeFailed: d("syncs_serve_failed_total", "Full syncs to other nodes abandoned before the end."),
		syncOverflow:    d("sync_overflows_total", "Syncs failed (and repeated) because more packets arrived meanwhile than the sync buffer holds."),
		shtagsFull:      d("shtags_not_created_total", "Sharing tags not created, named by a packet or locally, because their cluster holds 1024."),
		dialFailures:    d("dial_failures_total", "Connection attempts to other nodes that failed."),
		redials:         d("redials_total", "Reconnect backoffs cut short because the node pinged us (it is back)."),
	}
}

func (g *statsGroup) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.sent, g.recv, g.bytesSent, g.bytesRecv, g.moduleSent, g.relayed,
		g.rerouted, g.dropped, g.stale, g.batches, g.framing, g.syncSent, g.syncRecv, g.syncServed, g.syncServeFailed, g.syncOverflow, g.shtagsFull, g.dialFailures, g.redials} {
		ch <- d
	}
}

// dropReasons maps the reason label to the Stats counter.
var dropReasons = []struct {
	reason string
	get    func(s *clusterer.Stats) uint64
}{
	{"malformed", func(s *clusterer.Stats) uint64 { return s.Malformed }},
	{"unknown_cluster", func(s *clusterer.Stats) uint64 { return s.UnknownCluster }},
	{"unknown_node", func(s *clusterer.Stats) uint64 { return s.UnknownNode }},
	{"own_id", func(s *clusterer.Stats) uint64 { return s.OwnID }},
	{"source_ip", func(s *clusterer.Stats) uint64 { return s.SourceIP }},
	{"disabled", func(s *clusterer.Stats) uint64 { return s.Disabled }},
	{"unknown_capability", func(s *clusterer.Stats) uint64 { return s.UnknownCapability }},
	{"relay_no_route", func(s *clusterer.Stats) uint64 { return s.RelayNoRoute }},
	{"relay_loop", func(s *clusterer.Stats) uint64 { return s.RelayLoop }},
	{"relay_refused", func(s *clusterer.Stats) uint64 { return s.RelayRefused }},
	{"relay_failed", func(s *clusterer.Stats) uint64 { return s.RelayFailed }},
	{"send_error", func(s *clusterer.Stats) uint64 { return s.SendErrors }},
	{"reroute_failed", func(s *clusterer.Stats) uint64 { return s.RerouteDropped }},
	{"send_queue", func(s *clusterer.Stats) uint64 { return s.QueueDrops - min(s.QueueDrops, s.RerouteDropped) }},
	{"handler_queue", func(s *clusterer.Stats) uint64 { return s.HandlerDrops }},
	{"inbox_full", func(s *clusterer.Stats) uint64 { return s.InboxFull }},
	{"unhandled", func(s *clusterer.Stats) uint64 { return s.Unhandled }},
	{"unknown_command", func(s *clusterer.Stats) uint64 { return s.UnknownCommand }},
	{"unanswered_request", func(s *clusterer.Stats) uint64 { return s.Unanswered }},
	{"reply_dropped", func(s *clusterer.Stats) uint64 { return s.ReplyDropped }},
	{"too_many_nodes", func(s *clusterer.Stats) uint64 { return s.TooManyNodes }},
	{"sync_lost", func(s *clusterer.Stats) uint64 { return s.SyncLost }},
	{"sync_stale", func(s *clusterer.Stats) uint64 { return s.SyncStale }},
	{"sync_request_refused", func(s *clusterer.Stats) uint64 { return s.SyncReqDropped }},
}

func (g *statsGroup) collect(c *clusterer.Cluster, ch chan<- prometheus.Metric) {
	s := c.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(g.sent, s.FramesSent)
	counter(g.recv, s.FramesReceived)
	counter(g.bytesSent, s.BytesSent)
	counter(g.bytesRecv, s.BytesReceived)
	counter(g.moduleSent, s.Sent)
	counter(g.relayed, s.Relayed)
	counter(g.rerouted, s.Rerouted)
	for _, r := range dropReasons {
		counter(g.dropped, r.get(&s), r.reason)
	}
	counter(g.stale, s.StaleUpdates)
	counter(g.batches, s.WriteBatches)
	counter(g.framing, s.FramingErrors)
	counter(g.syncSent, s.SyncFramesSent)
	counter(g.syncRecv, s.SyncFramesReceived)
	counter(g.syncServed, s.SyncServed)
	counter(g.syncServeFailed, s.SyncServeFailed)
	counter(g.syncOverflow, s.SyncOverflow)
	counter(g.shtagsFull, s.TooManyShTags)
	counter(g.dialFailures, s.DialFailures)
	counter(g.redials, s.Redials)
}

// --- queues ---

type queueGroup struct {
	peers, peerQueue, inbox, inboxCap, handler *prometheus.Desc
}

func newQueueGroup(d descFunc) *queueGroup {
	return &queueGroup{
		peers:     d("peers", "Peer addresses with a send queue and a writer."),
		peerQueue: d("peer_queue_bytes", "Bytes queued for a peer and not yet written.", "peer"),
		inbox:     d("inbox_depth", "Inputs waiting for the protocol loop."),
		inboxCap:  d("inbox_capacity", "Inputs the protocol loop's queue holds before dropping."),
		handler:   d("handler_queue_depth", "Deliveries waiting for a handler goroutine.", "kind", "cluster", "capability"),
	}
}

func (g *queueGroup) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.peers, g.peerQueue, g.inbox, g.inboxCap, g.handler} {
		ch <- d
	}
}

func (g *queueGroup) collect(c *clusterer.Cluster, ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	q := c.Queues()
	gauge(g.peers, c.Stats().Peers)
	for addr, n := range q.Peers {
		gauge(g.peerQueue, n, addr)
	}
	gauge(g.inbox, q.Inbox)
	gauge(g.inboxCap, q.InboxCap)
	for _, h := range q.Handlers {
		cl := ""
		if h.Kind == "capability" {
			cl = itoa(h.Cluster)
		}
		gauge(g.handler, h.Pending, h.Kind, cl, h.Capability)
	}
}
