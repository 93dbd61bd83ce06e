package clusterer

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/internal/core"
)

// The send routes find every node of a view, by direct index for small
// ids and by search for sparse ones, with the next hop of each.
func TestRoutesIndexNodes(t *testing.T) {
	for _, ids := range [][]int32{{2, 3, 9}, {5, 70000, 2000000000}} {
		cv := &core.ClusterView{ID: 7, Enabled: true}
		for _, id := range ids {
			cv.Nodes = append(cv.Nodes, core.NodeView{ID: id, Reachable: true, NextHop: ids[0]})
		}
		c := &Cluster{}
		r := c.newRoutes(&core.View{Clusters: []*core.ClusterView{cv, {ID: 8}}})
		cr, err := r.cluster(7)
		require.NoError(t, err)
		for i, id := range ids {
			require.Equal(t, i, cr.index(id), "node %d", id)
			require.Equal(t, ids[0], cr.hops[i].node.ID)
			require.Same(t, c.act(7, ids[0]), cr.hops[i].act)
		}
		for _, id := range []int32{0, 1, 4, -3, 1 << 30} {
			require.Equal(t, -1, cr.index(id), "node %d", id)
		}
		_, err = r.cluster(8)
		require.ErrorIs(t, err, ErrCurrentDisabled)
		_, err = r.cluster(9)
		require.ErrorIs(t, err, ErrUnknownCluster)
	}
}
