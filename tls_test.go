package clusterer_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/internal/testcert"
)

func TestBinsWithoutTLSIsAConfigError(t *testing.T) {
	cfg := testConfig(1, nil, 2)
	cfg.Clusters[0].Nodes[0].URL = "bins:127.0.0.2:5555"
	_, err := clusterer.New(cfg)
	require.ErrorIs(t, err, clusterer.ErrConfig)
	require.ErrorContains(t, err, "Clusters[0].Nodes[0].URL")
	require.ErrorContains(t, err, "Config.TLS")

	cfg = testConfig(1, nil, 2)
	cfg.Clusters[0].Self.URL = "bins:127.0.0.1:5555"
	_, err = clusterer.New(cfg)
	require.ErrorIs(t, err, clusterer.ErrConfig)
	require.ErrorContains(t, err, "Clusters[0].Self.URL")

	cfg.TLS = &tls.Config{} // the listener has nothing to serve
	_, err = clusterer.New(cfg)
	require.ErrorIs(t, err, clusterer.ErrConfig)
	require.ErrorContains(t, err, "Certificates")

	cfg.TLS.Certificates = []tls.Certificate{testcert.NewCA(t, "CA").Issue(t, "127.0.0.1")}
	_, err = clusterer.New(cfg)
	require.NoError(t, err)
}

// Real TCP on loopback: nodes 1 and 2 listen with TLS (bins:), node 3 in
// plaintext (bin:); each dials the others by their own scheme. All come
// up and exchange packets. A node that does not trust the cluster's CA
// never gets a link up, and its failed handshakes are logged.
func TestTLSClusterOnLoopback(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	ports := freePorts(t, 4)
	urls := []string{"bins:127.0.0.1:" + ports[0], "bins:127.0.0.1:" + ports[1], "bin:127.0.0.1:" + ports[2]}
	start := func(id int, url string, tlsCfg *tls.Config, log *zap.Logger, neighbors ...int) (*clusterer.Cluster, *recorder) {
		cc := clusterer.ClusterConfig{ID: cl, Self: clusterer.NodeInfo{URL: url}}
		for _, n := range neighbors {
			cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: cl, ID: n, URL: urls[n-1]})
		}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc},
			PingInterval: time.Second, PingTimeout: 200 * time.Millisecond, TLS: tlsCfg, Logger: log})
		require.NoError(t, err)
		r := &recorder{}
		require.NoError(t, c.RegisterCapability(clusterer.CapabilityConfig{Name: "test-repl", Cluster: cl}, r))
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		return c, r
	}
	var nodes []*clusterer.Cluster
	var recs []*recorder
	for i, url := range urls {
		var others []int
		for j := range urls {
			if j != i {
				others = append(others, j+1)
			}
		}
		c, r := start(i+1, url, ca.Config(t, "127.0.0.1"), nil, others...)
		nodes, recs = append(nodes, c), append(recs, r)
	}
	// Every link up, not just every node reachable: each pair talks
	// directly, by the scheme of the node dialled.
	require.Eventually(t, func() bool {
		for _, c := range nodes {
			for _, n := range c.Nodes(cl) {
				if n.Link != clusterer.LinkIsUp {
					return false
				}
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond)
	for from, c := range nodes {
		for to := range nodes {
			if to != from {
				require.NoError(t, c.SendTo(cl, to+1, packet("over tls")))
			}
		}
	}
	require.Eventually(t, func() bool {
		for _, r := range recs {
			if p, _ := r.got(); len(p) != 2 {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond)

	// Node 4 trusts another CA: its handshakes with node 1 fail.
	rogue := testcert.NewCA(t, "rogue CA")
	obs, logs := observer.New(zapcore.InfoLevel)
	n4, _ := start(4, "bins:127.0.0.1:"+ports[3], rogue.Config(t, "127.0.0.1"), zap.New(obs), 1)
	require.Eventually(t, func() bool {
		for _, e := range logs.FilterMessage("peer: dial failed").All() {
			if err, ok := e.ContextMap()["error"].(string); ok && strings.Contains(err, "unknown authority") {
				return true
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond)
	time.Sleep(1500 * time.Millisecond) // pings and retries keep failing
	st, ok := n4.Node(cl, 1)
	require.True(t, ok)
	assert.NotEqual(t, clusterer.LinkIsUp, st.Link)
	assert.False(t, st.Reachable)
	_, known := nodes[0].Node(cl, 4)
	assert.False(t, known, "node 1 never heard from node 4")
}
