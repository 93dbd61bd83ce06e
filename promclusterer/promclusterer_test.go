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
	"go.uber.org/goleak"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/promclusterer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startNode(t *testing.T, nw *clustertest.Network, id int, neighbors ...int) *clusterer.Cluster {
	t.Helper()
	cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: "bin:127.0.0." + string(rune('0'+id)) + ":5555"}}
	for _, n := range neighbors {
		cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: 1, ID: n, URL: "bin:127.0.0." + string(rune('0'+n)) + ":5555"})
	}
	c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: nw,
		PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond, NodeTimeout: time.Hour}) // a DOWN node stays DOWN until it speaks
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { c.Close() })
	return c
}

// scrape serves the registry on loopback and compares the named metrics.
func scrape(t *testing.T, url, want string, names ...string) {
	t.Helper()
	var err error
	for range 100 { // metrics follow the network: give it a moment
		if err = testutil.ScrapeAndCompare(url, strings.NewReader(want), names...); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, err)
}

func TestScrapeRunningCluster(t *testing.T) {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	nw.Delay("127.0.0.2", "127.0.0.1", 2*time.Millisecond)
	n1 := startNode(t, nw, 1, 2, 3)
	startNode(t, nw, 2, 1)
	require.NoError(t, n1.RegisterCapability(clusterer.CapabilityConfig{Name: "test-repl", Cluster: 1},
		clusterer.HandlerFuncs{}))

	reg := prometheus.NewRegistry()
	reg.MustRegister(promclusterer.New(n1))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	url := srv.URL + "/metrics"

	scrape(t, url, `
# HELP clusterer_link_state State of the direct link to the node: 1 for the current state.
# TYPE clusterer_link_state gauge
clusterer_link_state{cluster="1",node="2",state="down"} 0
clusterer_link_state{cluster="1",node="2",state="probe"} 0
clusterer_link_state{cluster="1",node="2",state="up"} 1
clusterer_link_state{cluster="1",node="3",state="down"} 1
clusterer_link_state{cluster="1",node="3",state="probe"} 0
clusterer_link_state{cluster="1",node="3",state="up"} 0
# HELP clusterer_node_reachable 1 when the node is reachable, directly or through other nodes.
# TYPE clusterer_node_reachable gauge
clusterer_node_reachable{cluster="1",node="2"} 1
clusterer_node_reachable{cluster="1",node="3"} 0
# HELP clusterer_node_hops Length of the route to a reachable node.
# TYPE clusterer_node_hops gauge
clusterer_node_hops{cluster="1",node="2"} 1
# HELP clusterer_local_enabled 1 while the local node is enabled in the cluster.
# TYPE clusterer_local_enabled gauge
clusterer_local_enabled{cluster="1"} 1
# HELP clusterer_node_enabled 1 unless the node is disabled locally.
# TYPE clusterer_node_enabled gauge
clusterer_node_enabled{cluster="1",node="2"} 1
clusterer_node_enabled{cluster="1",node="3"} 1
# HELP clusterer_handler_queue_depth Deliveries waiting for a handler goroutine.
# TYPE clusterer_handler_queue_depth gauge
clusterer_handler_queue_depth{capability="",cluster="",kind="commands"} 0
clusterer_handler_queue_depth{capability="",cluster="",kind="requests"} 0
clusterer_handler_queue_depth{capability="",cluster="",kind="subscribers"} 0
clusterer_handler_queue_depth{capability="test-repl",cluster="1",kind="capability"} 0
# HELP clusterer_inbox_capacity Inputs the protocol loop's queue holds before dropping.
# TYPE clusterer_inbox_capacity gauge
clusterer_inbox_capacity 1024
`, "clusterer_link_state", "clusterer_node_reachable", "clusterer_node_hops", "clusterer_local_enabled",
		"clusterer_node_enabled", "clusterer_handler_queue_depth", "clusterer_inbox_capacity")

	// Three packets for a capability node 2 does not have: sent here,
	// dropped there.
	b := bin.NewBuilder(1, "test-repl", 1)
	b.PushStr("x")
	frame, _ := b.Finish()
	p, _ := bin.Parse(frame)
	for range 3 {
		require.NoError(t, n1.SendTo(1, 2, p))
	}
	scrape(t, url, `
# HELP clusterer_module_packets_sent_total Capability packets queued by SendTo and SendAll.
# TYPE clusterer_module_packets_sent_total counter
clusterer_module_packets_sent_total 3
`, "clusterer_module_packets_sent_total")

	// The values that move: present and sane.
	mfs, err := reg.Gather()
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
	require.Greater(t, got["clusterer_packets_sent_total"], 3.0)
	require.Greater(t, got["clusterer_packets_received_total"], 0.0)
	require.Greater(t, got["clusterer_bytes_sent_total"], got["clusterer_packets_sent_total"])
	require.GreaterOrEqual(t, got["clusterer_ping_rtt_seconds,cluster=1,node=2"], 0.002)
	require.Less(t, got["clusterer_ping_rtt_seconds,cluster=1,node=2"], 1.0)
	require.NotContains(t, got, "clusterer_ping_rtt_seconds,cluster=1,node=3", "never answered")
	require.Contains(t, got, "clusterer_packets_dropped_total,reason=unknown_capability")
	require.Contains(t, got, "clusterer_peer_queue_bytes,peer=127.0.0.2:5555")
	require.Equal(t, 0.0, got["clusterer_inbox_depth"])

	// Node 1 leaves the cluster: everything it knew goes down.
	require.NoError(t, n1.SetState(context.Background(), 1, false))
	scrape(t, url, `
# HELP clusterer_local_enabled 1 while the local node is enabled in the cluster.
# TYPE clusterer_local_enabled gauge
clusterer_local_enabled{cluster="1"} 0
# HELP clusterer_node_reachable 1 when the node is reachable, directly or through other nodes.
# TYPE clusterer_node_reachable gauge
clusterer_node_reachable{cluster="1",node="2"} 0
clusterer_node_reachable{cluster="1",node="3"} 0
`, "clusterer_local_enabled", "clusterer_node_reachable")
}

// The node that received the packets counts them as dropped by reason.
func TestDropReasons(t *testing.T) {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	n1 := startNode(t, nw, 1, 2)
	n2 := startNode(t, nw, 2, 1)
	require.Eventually(t, func() bool { _, ok := n1.NextHop(1, 2); return ok }, 5*time.Second, 10*time.Millisecond)
	b := bin.NewBuilder(1, "nobody-repl", 1)
	frame, _ := b.Finish()
	p, _ := bin.Parse(frame)
	require.NoError(t, n1.SendTo(1, 2, p))
	require.NoError(t, n1.SendTo(1, 2, p))
	col := promclusterer.New(n2, promclusterer.WithNamespace("sip"), promclusterer.WithConstLabels(prometheus.Labels{"instance": "b"}))
	require.Eventually(t, func() bool {
		return testutil.CollectAndCompare(col, strings.NewReader(`
# HELP sip_packets_dropped_total Packets dropped, by reason.
# TYPE sip_packets_dropped_total counter
sip_packets_dropped_total{instance="b",reason="disabled"} 0
sip_packets_dropped_total{instance="b",reason="handler_queue"} 0
sip_packets_dropped_total{instance="b",reason="inbox_full"} 0
sip_packets_dropped_total{instance="b",reason="malformed"} 0
sip_packets_dropped_total{instance="b",reason="own_id"} 0
sip_packets_dropped_total{instance="b",reason="relay_failed"} 0
sip_packets_dropped_total{instance="b",reason="relay_loop"} 0
sip_packets_dropped_total{instance="b",reason="relay_no_route"} 0
sip_packets_dropped_total{instance="b",reason="relay_refused"} 0
sip_packets_dropped_total{instance="b",reason="reply_dropped"} 0
sip_packets_dropped_total{instance="b",reason="reroute_failed"} 0
sip_packets_dropped_total{instance="b",reason="send_error"} 0
sip_packets_dropped_total{instance="b",reason="send_queue"} 0
sip_packets_dropped_total{instance="b",reason="source_ip"} 0
sip_packets_dropped_total{instance="b",reason="sync_lost"} 0
sip_packets_dropped_total{instance="b",reason="sync_request_refused"} 0
sip_packets_dropped_total{instance="b",reason="sync_stale"} 0
sip_packets_dropped_total{instance="b",reason="too_many_nodes"} 0
sip_packets_dropped_total{instance="b",reason="unanswered_request"} 0
sip_packets_dropped_total{instance="b",reason="unhandled"} 0
sip_packets_dropped_total{instance="b",reason="unknown_capability"} 2
sip_packets_dropped_total{instance="b",reason="unknown_cluster"} 0
sip_packets_dropped_total{instance="b",reason="unknown_command"} 0
sip_packets_dropped_total{instance="b",reason="unknown_node"} 0
`), "sip_packets_dropped_total") == nil
	}, 5*time.Second, 10*time.Millisecond)
	problems, err := testutil.CollectAndLint(col)
	require.NoError(t, err)
	require.Empty(t, problems)
}
