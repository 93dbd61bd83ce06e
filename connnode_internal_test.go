package clusterer

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/clustertest"
)

// The node tags of accepted connections go when the connections end, so
// reconnections do not pile them up.
func TestConnTagsFollowConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		var nodes []*Cluster
		for id := 1; id <= 2; id++ {
			other := 3 - id
			c, err := New(Config{NodeID: id, Transport: nw,
				PingInterval: 2 * time.Second, PingTimeout: 500 * time.Millisecond, NodeTimeout: 6 * time.Second,
				Clusters: []ClusterConfig{{ID: 1, Self: NodeInfo{URL: fmt.Sprintf("bin:127.0.0.%d:5555", id)},
					Nodes: []NodeInfo{{ClusterID: 1, ID: other, URL: fmt.Sprintf("bin:127.0.0.%d:5555", other)}}}}})
			require.NoError(t, err)
			require.NoError(t, c.Start(context.Background()))
			defer c.Close()
			nodes = append(nodes, c)
		}
		tags := func(c *Cluster) (n int) {
			c.connNode.Range(func(k, v any) bool { n++; return true })
			return n
		}
		for round := range 5 {
			time.Sleep(10 * time.Second) // up again (DOWN links are re-probed every 6 s)
			for _, c := range nodes {
				st, _ := c.Node(1, 3-c.MyID())
				require.Equal(t, LinkIsUp, st.Link, "round %d", round)
				require.Equal(t, 1, tags(c), "round %d: the peer's one connection", round)
			}
			nw.Cut("127.0.0.1", "127.0.0.2")
			synctest.Wait()
			for _, c := range nodes {
				require.Zero(t, tags(c), "round %d: its connection ended", round)
			}
			nw.HealAll()
		}
	})
}
