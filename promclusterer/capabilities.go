package promclusterer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterer-go/clusterer"
)

// --- capabilities ---

type capGroup struct {
	status, synced, records, bytes, seconds, buffered, syncedNodes, remote *prometheus.Desc
}

func newCapGroup(d descFunc) *capGroup {
	return &capGroup{
		status: d("capability_status", "Sync status of a local capability: 1 for the current one.",
			"cluster", "capability", "status"),
		synced:   d("capability_synced", "1 while a local capability is synced (OpenSIPS's state Ok).", "cluster", "capability"),
		records:  d("capability_sync_records", "Records received by the current or last sync of a local capability.", "cluster", "capability"),
		bytes:    d("capability_sync_bytes", "Record bytes received by the current or last sync of a local capability.", "cluster", "capability"),
		seconds:  d("capability_sync_seconds", "How long the current or last sync of a local capability has run.", "cluster", "capability"),
		buffered: d("capability_sync_buffered_packets", "Packets of a local capability held back until its running sync ends.", "cluster", "capability"),
		syncedNodes: d("capability_synced_nodes", "Reachable nodes, the local one included, where the capability is synced.",
			"cluster", "capability"),
		remote: d("node_capability_synced", "1 while another node announces the capability synced.", "cluster", "node", "capability"),
	}
}

func (g *capGroup) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.status, g.synced, g.records, g.bytes, g.seconds, g.buffered, g.syncedNodes, g.remote} {
		ch <- d
	}
}

// capStatuses are the status label's values.
var capStatuses = []struct {
	s     clusterer.CapabilityStatus
	label string
}{
	{clusterer.NotSynced, "not_synced"},
	{clusterer.SyncPending, "sync_pending"},
	{clusterer.SyncInProgress, "sync_in_progress"},
	{clusterer.Synced, "synced"},
	{clusterer.CapabilityDisabled, "disabled"},
}

func (g *capGroup) collect(c *clusterer.Cluster, ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	me := c.MyID()
	for _, m := range c.Memberships() {
		cl := itoa(m.Cluster)
		for _, ci := range c.Capabilities(m.Cluster) {
			if ci.Node != me {
				gauge(g.remote, b2f(ci.Status == clusterer.Synced), cl, itoa(ci.Node), ci.Name)
				continue
			}
			p, err := c.SyncStatus(m.Cluster, ci.Name)
			if err != nil {
				p = clusterer.SyncProgress{Status: ci.Status} // registered between the two reads
			}
			for _, s := range capStatuses {
				gauge(g.status, b2f(p.Status == s.s), cl, ci.Name, s.label)
			}
			gauge(g.synced, b2f(p.Status == clusterer.Synced), cl, ci.Name)
			gauge(g.records, float64(p.Records), cl, ci.Name)
			gauge(g.bytes, float64(p.Bytes), cl, ci.Name)
			gauge(g.seconds, p.Elapsed.Seconds(), cl, ci.Name)
			gauge(g.buffered, float64(p.Buffered), cl, ci.Name)
			nodes, _ := c.SyncedNodes(m.Cluster, ci.Name)
			gauge(g.syncedNodes, float64(len(nodes)), cl, ci.Name)
		}
	}
}
