package clusterer_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
)

// provConfig: a database-provisioned node (no discovery) knowing the given
// nodes, each described as a row would.
func provConfig(id int, tr clusterer.Transport, nodes ...int) clusterer.Config {
	cfg := testConfig(id, tr)
	cfg.Provisioned = true
	cfg.Clusters[0].Nodes = provNodes(nodes...)
	return cfg
}

func provNodes(ids ...int) []clusterer.NodeInfo {
	var out []clusterer.NodeInfo
	for _, n := range ids {
		out = append(out, clusterer.NodeInfo{ClusterID: cl, ID: n, URL: url(n), Description: "node " + ip(n), DBID: 10 * n})
	}
	return out
}

func TestReprovisionWhileRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nw.Delay(ip(2), ip(1), 5*time.Millisecond)
		ctx := context.Background()
		nodes := map[int]*clusterer.Cluster{}
		for id, known := range map[int][]int{1: {2}, 2: {1}, 3: {1, 2}} {
			c, err := clusterer.New(provConfig(id, nw, known...))
			require.NoError(t, err)
			require.NoError(t, c.Start(ctx))
			t.Cleanup(func() { c.Close() })
			nodes[id] = c
		}
		time.Sleep(3 * time.Second)
		require.Equal(t, []int{2}, reachable(nodes[1]))
		require.Empty(t, reachable(nodes[3]), "1 and 2 accept only provisioned nodes")

		n2, ok := nodes[1].Node(cl, 2)
		require.True(t, ok)
		require.Equal(t, "node 127.0.0.2", n2.Description)
		require.Equal(t, 20, n2.DBID)
		require.GreaterOrEqual(t, n2.RTT, 5*time.Millisecond, "the probes were answered")
		require.Less(t, n2.RTT, 50*time.Millisecond)

		// The table gains node 3.
		for _, id := range []int{1, 2} {
			cc := provConfig(id, nw).Clusters
			cc[0].Nodes = provNodes(3-id, 3)
			cc[0].Nodes[1].Description = "new"
			require.NoError(t, nodes[id].Reprovision(ctx, cc))
		}
		time.Sleep(3 * time.Second)
		for id, c := range nodes {
			require.Len(t, reachable(c), 2, "node %d", id)
		}
		n3, _ := nodes[1].Node(cl, 3)
		require.Equal(t, "new", n3.Description)

		// Node 1's table loses 2 and disables itself: it leaves the cluster.
		cc := provConfig(1, nw, 3).Clusters
		cc[0].Self.Disabled = true
		require.NoError(t, nodes[1].Reprovision(ctx, cc))
		require.Equal(t, []clusterer.Membership{{Cluster: cl, Enabled: false,
			Self: clusterer.NodeInfo{ClusterID: cl, ID: 1, URL: url(1), SIPAddr: ip(1) + ":5060", Priority: 3, PingRetries: 3}}},
			nodes[1].Memberships())
		_, ok = nodes[1].Node(cl, 2)
		require.False(t, ok)
		time.Sleep(time.Second)
		require.Equal(t, []int{3}, reachable(nodes[2]))
		require.ErrorIs(t, nodes[1].SendTo(cl, 3, packet("x")), clusterer.ErrCurrentDisabled)
	})
}

func TestReprovisionRefusesBadTables(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		c, err := clusterer.New(provConfig(1, nw, 2))
		require.NoError(t, err)
		defer c.Close()
		good := provConfig(1, nw, 2, 3).Clusters
		cases := map[string]func([]clusterer.ClusterConfig) []clusterer.ClusterConfig{
			"Nodes[1].ID": func(cc []clusterer.ClusterConfig) []clusterer.ClusterConfig { cc[0].Nodes[1].ID = 0; return cc },
			"Nodes[1].URL": func(cc []clusterer.ClusterConfig) []clusterer.ClusterConfig {
				cc[0].Nodes[1].URL = "bin:host"
				return cc
			},
			"duplicated":        func(cc []clusterer.ClusterConfig) []clusterer.ClusterConfig { cc[0].Nodes[1].ID = 2; return cc },
			"needs a restart":   func(cc []clusterer.ClusterConfig) []clusterer.ClusterConfig { cc[0].ID = 2; return cc },
			"own URL":           func(cc []clusterer.ClusterConfig) []clusterer.ClusterConfig { cc[0].Self.URL = url(9); return cc },
			"Clusters is empty": func([]clusterer.ClusterConfig) []clusterer.ClusterConfig { return nil },
		}
		check := func(stage string) {
			for name, mutate := range cases {
				cc := []clusterer.ClusterConfig{good[0]}
				cc[0].Nodes = append([]clusterer.NodeInfo(nil), good[0].Nodes...)
				err := c.Reprovision(context.Background(), mutate(cc))
				require.ErrorIs(t, err, clusterer.ErrConfig, stage+name)
				require.Contains(t, err.Error(), name, stage)
				ids := []int{}
				for _, n := range c.Nodes(cl) {
					ids = append(ids, n.ID)
				}
				require.Equal(t, []int{2}, ids, stage+name)
			}
		}
		check("before start: ")
		require.NoError(t, c.Start(context.Background()))
		check("running: ")
	})
}

func TestReprovisionBeforeStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		a, err := clusterer.New(provConfig(1, nw))
		require.NoError(t, err)
		defer a.Close()
		b, err := clusterer.New(provConfig(2, nw, 1))
		require.NoError(t, err)
		defer b.Close()
		require.NoError(t, a.Reprovision(context.Background(), provConfig(1, nw, 2).Clusters))
		require.NoError(t, a.Start(context.Background()))
		require.NoError(t, b.Start(context.Background()))
		time.Sleep(2 * time.Second)
		require.Equal(t, []int{2}, reachable(a))

		synctest.Wait() // a frame of the same instant may still be on its way to the loop
		q := a.Queues()
		require.Equal(t, 0, q.Inbox)
		require.Equal(t, 1024, q.InboxCap)
		require.Contains(t, q.Peers, ip(2)+":5555")
		require.Contains(t, q.Handlers, clusterer.HandlerQueue{Kind: "commands"})
	})
}
