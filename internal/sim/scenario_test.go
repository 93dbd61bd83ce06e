package sim

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/wire"
)

const cl = 1

func newSim(t *testing.T, seed uint64, configs ...core.Config) *Sim {
	t.Helper()
	s := New(seed)
	if testing.Verbose() && seed == 0 {
		s.Trace = func(line string) { t.Log(line) }
	}
	for _, c := range configs {
		_, err := s.Add(c)
		require.NoError(t, err)
	}
	return s
}

// converge runs until the views match the network, lets in-flight floods
// settle, and checks again.
func converge(t *testing.T, s *Sim, max time.Duration) {
	t.Helper()
	var last error
	ok := s.RunUntil(max, func() bool { last = s.CheckConverged(cl); return last == nil })
	require.True(t, ok, "not converged after %v: %v", max, last)
	s.Run(time.Second)
	require.NoError(t, s.CheckConverged(cl), "converged, then diverged")
}

// knowAll waits until every node knows n-1 others.
func knowAll(t *testing.T, s *Sim, max time.Duration) {
	t.Helper()
	n := len(s.IDs())
	ok := s.RunUntil(max, func() bool {
		for _, id := range s.IDs() {
			if len(s.Node(id).M.View().Cluster(cl).Nodes) != n-1 {
				return false
			}
		}
		return true
	})
	require.True(t, ok, "nodes did not learn each other in %v", max)
}

func all(ids ...int32) []int32 { return ids }

func TestJoinViaOneNeighbour(t *testing.T) {
	s := newSim(t, 0,
		Config(1, cl, true),
		Config(2, cl, true, 1),
		Config(3, cl, true, 1),
	)
	s.Start(1)
	s.Start(2)
	s.Run(2 * time.Second)
	s.Start(3)
	knowAll(t, s, 5*time.Second)
	converge(t, s, 5*time.Second)
	for _, id := range s.IDs() {
		cv := s.Node(id).M.View().Cluster(cl)
		for _, nv := range cv.Nodes {
			require.Equal(t, core.Up, nv.State, "node %d link to %d", id, nv.ID)
			require.Equal(t, nv.ID, nv.NextHop)
		}
		require.Len(t, cv.Nodes, 2, "node %d knows everyone", id)
	}
	// Node 2 learned node 3 from node 1 and raised events for both.
	require.Len(t, s.Node(2).EventsOf(core.NodeAdded, 3), 1)
	require.Len(t, s.Node(2).EventsOf(core.NodeUp, 3), 1)
	require.Len(t, s.Node(3).EventsOf(core.NodeUp, 2), 1)
	require.Empty(t, s.Node(3).EventsOf(core.NodeDown, 2))
}

func TestJoinHandshakeOrder(t *testing.T) {
	// The messages of a join, as OpenSIPS sends them (spec §7.2).
	s := newSim(t, 0, Config(1, cl, true), Config(2, cl, true, 1))
	var got []string
	s.Trace = func(line string) {
		var at float64
		var from, to int32
		var rest string
		fmt.Sscanf(line, "%fs %d->%d %s", &at, &from, &to, &rest)
		got = append(got, fmt.Sprintf("%d->%d %s", from, to, rest))
	}
	s.Start(1)
	s.Start(2)
	s.Run(100 * time.Millisecond)
	require.Equal(t, []string{
		"2->1 PING", "1->2 UNKNOWN_ID", "2->1 NODE_DESCRIPTION",
		"2->1 PING",                         // we probe again at once after describing ourselves
		"1->2 PONG",                         // 1 knows 2 now
		"1->2 PING",                         // and probes it
		"2->1 FULL_TOP_UPDATE",              // 2's link is UP
		"2->1 PONG", "1->2 FULL_TOP_UPDATE", // and so is 1's
	}, got[:9])
}

func fullMesh(n int32, discovery bool) []core.Config {
	var cfgs []core.Config
	for id := int32(1); id <= n; id++ {
		var nb []int32
		for o := int32(1); o <= n; o++ {
			if o != id {
				nb = append(nb, o)
			}
		}
		cfgs = append(cfgs, Config(id, cl, discovery, nb...))
	}
	return cfgs
}

func TestFullMeshOfTen(t *testing.T) {
	s := newSim(t, 1, fullMesh(10, false)...)
	s.StartAll()
	converge(t, s, 3*time.Second)
	for _, id := range s.IDs() {
		require.Len(t, s.Reachable(cl, id), 9)
	}
	// Once the join's floods have settled, only keep-alives flow.
	s.Run(5 * time.Second)
	before := s.Sent[wire.TypeLSUpdate] + s.Sent[wire.TypeFullTopUpdate]
	s.Run(30 * time.Second)
	require.Equal(t, before, s.Sent[wire.TypeLSUpdate]+s.Sent[wire.TypeFullTopUpdate])
	require.NoError(t, s.CheckConverged(cl))
}

func TestChainRelaysAroundCut(t *testing.T) {
	s := newSim(t, 2, fullMesh(3, true)...)
	s.Cut(1, 3)
	s.StartAll()
	converge(t, s, 5*time.Second)
	n1 := s.Node(1).M.View().Cluster(cl).Node(3)
	require.True(t, n1.Reachable)
	require.Equal(t, int32(2), n1.NextHop)
	require.Equal(t, 2, n1.Hops)

	// A routed message from 1 reaches 3 through 2.
	msg := &wire.GenericMsg{Trailer: bin.Trailer{Cluster: cl, Src: 1, Dst: 3}, Request: true, Tag: "1-1-x", Msg: "hello"}
	require.True(t, s.Node(1).M.SendRouted(s.Now(), cl, 3, msg))
	s.flush(s.Node(1))
	s.Run(10 * time.Millisecond)
	require.Equal(t, 1, s.Relayed.OK)
	var got []core.Event
	for _, e := range s.Node(3).Events {
		if e.Kind == core.Message {
			got = append(got, e.Event)
		}
	}
	require.Len(t, got, 1)
	require.Equal(t, "hello", got[0].Msg.(*wire.GenericMsg).Msg)
	require.Equal(t, int32(1), got[0].Node)

	// Healing the link makes the route direct again.
	s.Heal(1, 3)
	s.RunUntil(10*time.Second, func() bool { return s.Node(1).M.View().Cluster(cl).Node(3).NextHop == 3 })
	require.Equal(t, int32(3), s.Node(1).M.View().Cluster(cl).Node(3).NextHop)
	require.Empty(t, s.Node(1).EventsOf(core.NodeDown, 3), "a route existed throughout")
}

func TestKillAndRestartSameID(t *testing.T) {
	s := newSim(t, 3, fullMesh(3, true)...)
	s.StartAll()
	converge(t, s, 3*time.Second)
	killed := s.Now()
	s.Kill(3)
	// The reset reaches the others at once.
	s.Run(10 * time.Millisecond)
	for _, id := range all(1, 2) {
		require.Len(t, s.Node(id).EventsOf(core.NodeDown, 3), 1, "node %d", id)
		require.Less(t, s.Node(id).EventsOf(core.NodeDown, 3)[0].At.Sub(killed), 5*time.Millisecond)
	}
	converge(t, s, 5*time.Second)
	s.Run(7 * time.Second) // long enough for DOWN and a re-probe
	require.NoError(t, s.Restart(3))
	converge(t, s, 8*time.Second)
	for _, id := range all(1, 2) {
		require.Len(t, s.Node(id).EventsOf(core.NodeUp, 3), 2, "node %d saw 3 come back", id)
	}
	require.Equal(t, map[int32]uint64{1: 1, 2: 1, 3: 0}, restarts(s), "the restart detected once by each survivor")
}

func TestPartitionAndHeal(t *testing.T) {
	s := newSim(t, 4, fullMesh(6, true)...)
	s.StartAll()
	converge(t, s, 3*time.Second)
	left, right := all(1, 2, 3), all(4, 5, 6)
	for _, a := range left {
		for _, b := range right {
			s.Cut(a, b)
		}
	}
	converge(t, s, 5*time.Second)
	require.Equal(t, all(2, 3), s.Reachable(cl, 1))
	require.Equal(t, all(5, 6), s.Reachable(cl, 4))
	s.HealAll()
	converge(t, s, 10*time.Second)
	require.Len(t, s.Reachable(cl, 1), 5)
}

func TestBlackholeDetectedByProbes(t *testing.T) {
	s := newSim(t, 5, fullMesh(2, true)...)
	s.StartAll()
	converge(t, s, 3*time.Second)
	start := s.Now()
	s.Blackhole(2, 1) // 1's pings reach 2, but nothing comes back
	s.Blackhole(1, 2)
	ok := s.RunUntil(5*time.Second, func() bool { return len(s.Node(1).EventsOf(core.NodeDown, 2)) > 0 })
	require.True(t, ok)
	took := s.Node(1).EventsOf(core.NodeDown, 2)[0].At.Sub(start)
	// Detection within ping_interval + ping_timeout (the first failed probe).
	require.LessOrEqual(t, took, time.Second+200*time.Millisecond+time.Millisecond)
	s.RunUntil(5*time.Second, func() bool {
		return s.Node(1).M.View().Cluster(cl).Node(2).State == core.Down
	})
	require.Equal(t, core.Down, s.Node(1).M.View().Cluster(cl).Node(2).State)
	require.LessOrEqual(t, s.Now().Sub(start), time.Second+4*200*time.Millisecond+time.Millisecond)
}

func TestFlappingLink(t *testing.T) {
	s := newSim(t, 6, fullMesh(4, true)...)
	s.StartAll()
	converge(t, s, 3*time.Second)
	for i := range 20 {
		s.Cut(1, 2)
		s.Run(time.Duration(50+i*37%300) * time.Millisecond)
		s.Heal(1, 2)
		s.Run(time.Duration(20+i*53%400) * time.Millisecond)
		require.NoError(t, s.CheckRoutes(cl))
	}
	// 1 and 2 stayed reachable through 3 and 4 throughout.
	require.Empty(t, s.Node(1).EventsOf(core.NodeDown, 2))
	converge(t, s, 10*time.Second)
	s.RunUntil(10*time.Second, func() bool { return s.Node(1).M.View().Cluster(cl).Node(2).State == core.Up })
	require.Equal(t, core.Up, s.Node(1).M.View().Cluster(cl).Node(2).State)
}

func TestDisableEnable(t *testing.T) {
	s := newSim(t, 7, fullMesh(3, true)...)
	s.StartAll()
	converge(t, s, 3*time.Second)

	// Node 1 disables node 3: it stops talking to it; 3 stays reachable for 2.
	require.NoError(t, s.Node(1).M.SetNodeEnabled(s.Now(), cl, 3, false))
	s.flush(s.Node(1))
	s.Run(3 * time.Second)
	n3 := s.Node(1).M.View().Cluster(cl).Node(3)
	require.False(t, n3.Reachable)
	require.False(t, n3.Enabled)
	require.NoError(t, s.CheckRoutes(cl))
	require.NoError(t, s.Node(1).M.SetNodeEnabled(s.Now(), cl, 3, true))
	s.flush(s.Node(1))
	converge(t, s, 5*time.Second)

	// Node 2 disables itself: everyone loses it promptly, then gets it back.
	at := s.Now()
	require.NoError(t, s.Node(2).M.SetLocalEnabled(s.Now(), cl, false))
	s.flush(s.Node(2))
	s.Run(50 * time.Millisecond)
	for _, id := range all(1, 3) {
		ev := s.Node(id).EventsOf(core.NodeDown, 2)
		require.NotEmpty(t, ev, "node %d", id)
		require.Less(t, ev[len(ev)-1].At.Sub(at), 10*time.Millisecond, "the disabled node said goodbye")
	}
	converge(t, s, 5*time.Second)
	require.NoError(t, s.Node(2).M.SetLocalEnabled(s.Now(), cl, true))
	s.flush(s.Node(2))
	converge(t, s, 10*time.Second)
	require.Len(t, s.Reachable(cl, 1), 2)
}

func TestRemoveNode(t *testing.T) {
	s := newSim(t, 8, fullMesh(3, true)...)
	s.StartAll()
	converge(t, s, 3*time.Second)
	require.NoError(t, s.Node(1).M.RemoveNode(s.Now(), cl, 3))
	s.flush(s.Node(1))
	s.Run(100 * time.Millisecond)
	require.Nil(t, s.Node(1).M.View().Cluster(cl).Node(3))
	require.Nil(t, s.Node(2).M.View().Cluster(cl).Node(3))
	require.False(t, s.Node(3).M.View().Cluster(cl).Enabled, "the removed node disabled itself")
	require.Len(t, s.Node(3).EventsOf(core.LocalDisabled, 1), 1)
	s.Run(10 * time.Second)
	require.Equal(t, all(2), s.Reachable(cl, 1))
	require.Equal(t, all(1), s.Reachable(cl, 2))
}

func TestSameSeedSameTranscript(t *testing.T) {
	run := func() []string {
		s := newSim(t, 99, fullMesh(5, true)...)
		s.Jitter = time.Millisecond
		var lines []string
		s.Trace = func(l string) { lines = append(lines, l) }
		s.StartAll()
		s.Run(2 * time.Second)
		s.Kill(4)
		s.Cut(1, 2)
		s.Run(5 * time.Second)
		return lines
	}
	a, b := run(), run()
	require.NotEmpty(t, a)
	require.True(t, slices.Equal(a, b))
}

// TestJoinFloodCost joins a full mesh from one seed (every node knows only
// node 1) and bounds the topology messages it takes. OpenSIPS-style
// flooding costs about n⁴ (an update per link flooded over n² edges); the
// default flooding must stay within a small multiple of n³ and well below
// OpenSIPS's cost measured on the same cluster.
func TestJoinFloodCost(t *testing.T) {
	const n = 24
	topo := func(opensips bool) (int, *Sim) {
		var cfgs []core.Config
		for id := int32(1); id <= n; id++ {
			var known []int32
			if id > 1 {
				known = []int32{1}
			}
			c := Config(id, cl, true, known...)
			c.OpenSIPSFlooding = opensips
			cfgs = append(cfgs, c)
		}
		s := newSim(t, 7, cfgs...)
		s.StartAll()
		converge(t, s, 10*time.Second)
		s.Run(5 * time.Second) // let refreshes and late floods finish
		require.NoError(t, s.CheckConverged(cl))
		return s.Sent[wire.TypeLSUpdate] + s.Sent[wire.TypeFullTopUpdate], s
	}
	reduced, s := topo(false)
	compat, _ := topo(true)
	t.Logf("%d-node join: %d topology messages (OpenSIPS flooding: %d)", n, reduced, compat)
	require.Less(t, reduced, 2*n*n*n, "default flooding exceeds 2n³")
	require.Less(t, reduced*4, compat, "default flooding saves less than 4x")
	for _, id := range s.IDs() {
		require.Len(t, s.Reachable(cl, id), n-1)
	}
}
