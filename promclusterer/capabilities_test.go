package promclusterer_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/internal/kvtest"
	"github.com/clusterer-go/clusterer/promclusterer"
)

const kvCap = "kv-repl"

// Node 1 syncs kv-repl from node 2 (100 records, 790 bytes), which stops
// halfway until released: the metrics follow the sync from in progress to
// done.
func TestScrapeCapabilitySync(t *testing.T) {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	donor, joiner := kvtest.New(kvCap, 1, 100), kvtest.New(kvCap, 1, 0)
	reached, release := donor.Hold(60)
	start := func(id int, s *kvtest.Store, cfg clusterer.CapabilityConfig, neighbors ...int) *clusterer.Cluster {
		cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: "bin:127.0.0." + itoa(id) + ":5555"}}
		for _, n := range neighbors {
			cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: 1, ID: n, URL: "bin:127.0.0." + itoa(n) + ":5555"})
		}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: nw,
			PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond, NodeTimeout: time.Hour,
			SyncPacketMaxSize: 64})
		require.NoError(t, err)
		require.NoError(t, s.Register(c, cfg))
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		return c
	}
	n2 := start(2, donor, clusterer.CapabilityConfig{}, 1)
	n1 := start(1, joiner, clusterer.CapabilityConfig{RequireSync: true}, 2)
	t.Cleanup(release) // before the nodes close (cleanups run last first)

	reg := prometheus.NewRegistry()
	reg.MustRegister(promclusterer.New(n1))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	url := srv.URL + "/metrics"

	<-reached
	require.NoError(t, donor.Update("k001", "changed")) // held back by node 1
	scrape(t, url, `
# HELP clusterer_capability_status Sync status of a local capability: 1 for the current one.
# TYPE clusterer_capability_status gauge
clusterer_capability_status{capability="kv-repl",cluster="1",status="disabled"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="not_synced"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="sync_in_progress"} 1
clusterer_capability_status{capability="kv-repl",cluster="1",status="sync_pending"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="synced"} 0
# HELP clusterer_capability_synced 1 while a local capability is synced (OpenSIPS's state Ok).
# TYPE clusterer_capability_synced gauge
clusterer_capability_synced{capability="kv-repl",cluster="1"} 0
# HELP clusterer_capability_sync_buffered_packets Packets of a local capability held back until its running sync ends.
# TYPE clusterer_capability_sync_buffered_packets gauge
clusterer_capability_sync_buffered_packets{capability="kv-repl",cluster="1"} 1
# HELP clusterer_capability_synced_nodes Reachable nodes, the local one included, where the capability is synced.
# TYPE clusterer_capability_synced_nodes gauge
clusterer_capability_synced_nodes{capability="kv-repl",cluster="1"} 1
# HELP clusterer_node_capability_synced 1 while another node announces the capability synced.
# TYPE clusterer_node_capability_synced gauge
clusterer_node_capability_synced{capability="kv-repl",cluster="1",node="2"} 1
`, "clusterer_capability_status", "clusterer_capability_synced", "clusterer_capability_sync_buffered_packets",
		"clusterer_capability_synced_nodes", "clusterer_node_capability_synced")
	records := gather(t, reg)[`clusterer_capability_sync_records,capability=kv-repl,cluster=1`]
	require.Greater(t, records, 0.0)
	require.Less(t, records, 60.0)

	release()
	scrape(t, url, `
# HELP clusterer_capability_status Sync status of a local capability: 1 for the current one.
# TYPE clusterer_capability_status gauge
clusterer_capability_status{capability="kv-repl",cluster="1",status="disabled"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="not_synced"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="sync_in_progress"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="sync_pending"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="synced"} 1
# HELP clusterer_capability_synced 1 while a local capability is synced (OpenSIPS's state Ok).
# TYPE clusterer_capability_synced gauge
clusterer_capability_synced{capability="kv-repl",cluster="1"} 1
# HELP clusterer_capability_sync_records Records received by the current or last sync of a local capability.
# TYPE clusterer_capability_sync_records gauge
clusterer_capability_sync_records{capability="kv-repl",cluster="1"} 100
# HELP clusterer_capability_sync_bytes Record bytes received by the current or last sync of a local capability.
# TYPE clusterer_capability_sync_bytes gauge
clusterer_capability_sync_bytes{capability="kv-repl",cluster="1"} 790
# HELP clusterer_capability_sync_buffered_packets Packets of a local capability held back until its running sync ends.
# TYPE clusterer_capability_sync_buffered_packets gauge
clusterer_capability_sync_buffered_packets{capability="kv-repl",cluster="1"} 0
# HELP clusterer_capability_synced_nodes Reachable nodes, the local one included, where the capability is synced.
# TYPE clusterer_capability_synced_nodes gauge
clusterer_capability_synced_nodes{capability="kv-repl",cluster="1"} 2
# HELP clusterer_packets_dropped_total Packets dropped, by reason.
# TYPE clusterer_packets_dropped_total counter
clusterer_packets_dropped_total{reason="disabled"} 0
clusterer_packets_dropped_total{reason="handler_queue"} 0
clusterer_packets_dropped_total{reason="inbox_full"} 0
clusterer_packets_dropped_total{reason="malformed"} 0
clusterer_packets_dropped_total{reason="own_id"} 0
clusterer_packets_dropped_total{reason="relay_failed"} 0
clusterer_packets_dropped_total{reason="relay_loop"} 0
clusterer_packets_dropped_total{reason="relay_no_route"} 0
clusterer_packets_dropped_total{reason="relay_refused"} 0
clusterer_packets_dropped_total{reason="reply_dropped"} 0
clusterer_packets_dropped_total{reason="reroute_failed"} 0
clusterer_packets_dropped_total{reason="send_error"} 0
clusterer_packets_dropped_total{reason="send_queue"} 0
clusterer_packets_dropped_total{reason="source_ip"} 0
clusterer_packets_dropped_total{reason="sync_lost"} 0
clusterer_packets_dropped_total{reason="sync_request_refused"} 0
clusterer_packets_dropped_total{reason="sync_stale"} 0
clusterer_packets_dropped_total{reason="too_many_nodes"} 0
clusterer_packets_dropped_total{reason="unanswered_request"} 0
clusterer_packets_dropped_total{reason="unhandled"} 0
clusterer_packets_dropped_total{reason="unknown_capability"} 0
clusterer_packets_dropped_total{reason="unknown_cluster"} 0
clusterer_packets_dropped_total{reason="unknown_command"} 0
clusterer_packets_dropped_total{reason="unknown_node"} 0
`, "clusterer_capability_status", "clusterer_capability_synced", "clusterer_capability_sync_records",
		"clusterer_capability_sync_bytes", "clusterer_capability_sync_buffered_packets", "clusterer_capability_synced_nodes",
		"clusterer_packets_dropped_total")
	require.Equal(t, "changed", joiner.Data()["k001"], "the update applied after the record")
	got := gather(t, reg)
	require.Greater(t, got["clusterer_capability_sync_seconds,capability=kv-repl,cluster=1"], 0.0)
	// 100 records of 7 or 8 bytes in packets of about 64: many packets,
	// then SYNC_END.
	require.Greater(t, got["clusterer_sync_packets_received_total"], 10.0)
	require.Zero(t, got["clusterer_sync_packets_sent_total"])

	// The donor's side: the sync it served, and the same packets sent.
	donorCol := promclusterer.New(n2)
	require.NoError(t, testutil.CollectAndCompare(donorCol, strings.NewReader(`
# HELP clusterer_syncs_served_total Full syncs donated to other nodes completely.
# TYPE clusterer_syncs_served_total counter
clusterer_syncs_served_total 1
# HELP clusterer_syncs_serve_failed_total Full syncs to other nodes abandoned before the end.
# TYPE clusterer_syncs_serve_failed_total counter
clusterer_syncs_serve_failed_total 0
# HELP clusterer_sync_overflows_total Syncs failed (and repeated) because more packets arrived meanwhile than the sync buffer holds.
# TYPE clusterer_sync_overflows_total counter
clusterer_sync_overflows_total 0
# HELP clusterer_capability_synced 1 while a local capability is synced (OpenSIPS's state Ok).
# TYPE clusterer_capability_synced gauge
clusterer_capability_synced{capability="kv-repl",cluster="1"} 1
# HELP clusterer_node_capability_synced 1 while another node announces the capability synced.
# TYPE clusterer_node_capability_synced gauge
clusterer_node_capability_synced{capability="kv-repl",cluster="1",node="1"} 1
`), "clusterer_syncs_served_total", "clusterer_syncs_serve_failed_total", "clusterer_sync_overflows_total",
		"clusterer_capability_synced", "clusterer_node_capability_synced"))
	sent := gatherCol(t, donorCol)["clusterer_sync_packets_sent_total"]
	require.Equal(t, got["clusterer_sync_packets_received_total"], sent)

	// Disabled on node 1: the status says so, and node 2 hears of it.
	require.NoError(t, n1.SetCapabilityEnabled(context.Background(), 1, kvCap, false))
	scrape(t, url, `
# HELP clusterer_capability_status Sync status of a local capability: 1 for the current one.
# TYPE clusterer_capability_status gauge
clusterer_capability_status{capability="kv-repl",cluster="1",status="disabled"} 1
clusterer_capability_status{capability="kv-repl",cluster="1",status="not_synced"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="sync_in_progress"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="sync_pending"} 0
clusterer_capability_status{capability="kv-repl",cluster="1",status="synced"} 0
`, "clusterer_capability_status")
	require.Eventually(t, func() bool {
		return gatherCol(t, donorCol)["clusterer_node_capability_synced,capability=kv-repl,cluster=1,node=1"] == 0
	}, 5*time.Second, 10*time.Millisecond)

	problems, err := testutil.CollectAndLint(promclusterer.New(n1))
	require.NoError(t, err)
	require.Empty(t, problems)
}

func itoa(i int) string { return string(rune('0' + i)) }

// gather returns every sample as "name,label=value,…" → value.
func gather(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[key] = m.GetGauge().GetValue()
			}
		}
	}
	return got
}

func gatherCol(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	return gather(t, reg)
}
