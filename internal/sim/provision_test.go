package sim

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/internal/core"
)

func provisioned(nodes ...int32) []core.NodeInfo {
	var out []core.NodeInfo
	for _, id := range nodes {
		out = append(out, core.NodeInfo{ID: id, URL: URL(id)})
	}
	return out
}

func reprovision(t *testing.T, s *Sim, id int32, mut func(cc *core.ClusterConfig)) {
	t.Helper()
	n := s.Node(id)
	cc := core.ClusterConfig{ID: cl, Self: core.NodeInfo{URL: URL(id)}}
	mut(&cc)
	require.NoError(t, n.M.Reprovision(s.Now(), []core.ClusterConfig{cc}))
	s.flush(n)
}

func nodeIDs(v *core.ClusterView) []int32 {
	var out []int32
	for _, n := range v.Nodes {
		out = append(out, n.ID)
	}
	return out
}

// Provisioned nodes (no discovery) learn a new node, forget a removed one
// and take a disabled one out of their routes when their tables are
// replaced while running; links they keep stay UP.
func TestReprovisionAddsRemovesAndDisables(t *testing.T) {
	s := newSim(t, 0,
		Config(1, cl, false, 2),
		Config(2, cl, false, 1),
		Config(3, cl, false, 1, 2))
	s.StartAll()
	s.Run(5 * time.Second)
	require.Equal(t, []int32{2}, s.Reachable(cl, 1), "3 is not provisioned at 1")
	require.Empty(t, s.Reachable(cl, 3), "1 and 2 ignore the unprovisioned 3")
	upSince := s.Node(1).EventsOf(core.LinkUp, 2)
	require.Len(t, upSince, 1)

	// 1 and 2 learn 3 from their tables.
	reprovision(t, s, 1, func(cc *core.ClusterConfig) { cc.Nodes = provisioned(2, 3) })
	reprovision(t, s, 2, func(cc *core.ClusterConfig) { cc.Nodes = provisioned(1, 3) })
	converge(t, s, 10*time.Second)
	require.Equal(t, []int32{2, 3}, s.Reachable(cl, 1))
	require.Len(t, s.Node(1).EventsOf(core.LinkUp, 2), 1, "the kept link to 2 never went down")

	// 1 disables 2 and priorities change: 2 unreachable from 1.
	reprovision(t, s, 1, func(cc *core.ClusterConfig) {
		cc.Nodes = provisioned(2, 3)
		cc.Nodes[0].Disabled = true
		cc.Nodes[1].Priority = 7
	})
	s.Run(3 * time.Second)
	v := s.Node(1).M.View().Cluster(cl)
	require.False(t, v.Node(2).Enabled)
	require.False(t, v.Node(2).Reachable)
	require.Equal(t, int32(7), v.Node(3).Priority)

	// 1 forgets 2 altogether.
	reprovision(t, s, 1, func(cc *core.ClusterConfig) { cc.Nodes = provisioned(3) })
	s.Run(3 * time.Second)
	require.Equal(t, []int32{3}, nodeIDs(s.Node(1).M.View().Cluster(cl)))
	require.Len(t, s.Node(1).EventsOf(core.NodeRemoved, 2), 1)
	require.Equal(t, []int32{3}, s.Reachable(cl, 1))

	// The local node's own row disabled: it leaves the cluster.
	reprovision(t, s, 1, func(cc *core.ClusterConfig) { cc.Nodes = provisioned(3); cc.Self.Disabled = true })
	s.Run(3 * time.Second)
	require.False(t, s.Node(1).M.View().Cluster(cl).Enabled)
	require.NotContains(t, s.Reachable(cl, 3), int32(1))
}

// A node whose URL changes is probed anew at the new address.
func TestReprovisionURLChange(t *testing.T) {
	s := newSim(t, 0, Config(1, cl, false, 2), Config(2, cl, false, 1), Config(3, cl, false, 1))
	s.StartAll()
	converge(t, s, 5*time.Second)
	// Node "2" is now the process at 3's address.
	reprovision(t, s, 1, func(cc *core.ClusterConfig) { cc.Nodes = []core.NodeInfo{{ID: 2, URL: URL(3)}} })
	s.Run(3 * time.Second)
	n := s.Node(1).M.View().Cluster(cl).Node(2)
	require.Equal(t, URL(3), n.URL)
	require.Len(t, s.Node(1).EventsOf(core.NodeRemoved, 2), 1, "replaced, not edited in place")
}

func TestReprovisionRefusesWithoutChanging(t *testing.T) {
	s := newSim(t, 0, Config(1, cl, false, 2), Config(2, cl, false, 1))
	s.StartAll()
	converge(t, s, 5*time.Second)
	m := s.Node(1).M
	before := nodeIDs(m.View().Cluster(cl))
	for name, ccs := range map[string][]core.ClusterConfig{
		"new cluster":     {{ID: cl, Self: core.NodeInfo{URL: URL(1)}}, {ID: 2, Self: core.NodeInfo{URL: URL(1)}}},
		"other cluster":   {{ID: 2, Self: core.NodeInfo{URL: URL(1)}}},
		"own url":         {{ID: cl, Self: core.NodeInfo{URL: URL(9)}}},
		"duplicate":       {{ID: cl, Self: core.NodeInfo{URL: URL(1)}, Nodes: append(provisioned(2, 3), provisioned(3)...)}},
		"bad url":         {{ID: cl, Self: core.NodeInfo{URL: URL(1)}, Nodes: []core.NodeInfo{{ID: 3, URL: "bin:nowhere"}}}},
		"local id":        {{ID: cl, Self: core.NodeInfo{URL: URL(1)}, Nodes: provisioned(1)}},
		"no cluster list": nil,
	} {
		err := m.Reprovision(s.Now(), ccs)
		require.ErrorIs(t, err, core.ErrConfig, name)
		require.Equal(t, before, nodeIDs(m.View().Cluster(cl)), name)
	}
}

// The round trip of the last answered probe shows in the view.
func TestRTTInView(t *testing.T) {
	s := newSim(t, 0, Config(1, cl, false, 2), Config(2, cl, false, 1))
	s.Delay(1, 2, 20*time.Millisecond)
	s.StartAll()
	converge(t, s, 5*time.Second)
	s.Run(3 * time.Second) // keep-alive probes
	rtt := s.Node(1).M.View().Cluster(cl).Node(2).RTT
	require.GreaterOrEqual(t, rtt, 20*time.Millisecond)
	require.Less(t, rtt, 25*time.Millisecond)
	require.True(t, slices.Contains(s.Reachable(cl, 2), 1))
}

// A local node provisioned disabled (its own row's state=0) stays silent
// until enabled.
func TestSelfDisabledAtStart(t *testing.T) {
	c1 := Config(1, cl, false, 2)
	c1.Clusters[0].Self.Disabled = true
	s := newSim(t, 0, c1, Config(2, cl, false, 1))
	s.StartAll()
	s.Run(5 * time.Second)
	require.False(t, s.Node(1).M.View().Cluster(cl).Enabled)
	require.Empty(t, s.Reachable(cl, 2))
	require.NoError(t, s.Node(1).M.SetLocalEnabled(s.Now(), cl, true))
	s.flush(s.Node(1))
	converge(t, s, 10*time.Second)
	require.Equal(t, []int32{1}, s.Reachable(cl, 2))
}
