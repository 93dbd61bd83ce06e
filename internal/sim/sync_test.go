package sim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// The control plane of capability sync on simulated nodes: donor choice,
// CAP_UPDATE propagation, pending requests, donor loss, seed fallback. The
// data itself travels on the runtime's data plane; here a test plays the
// runtime's part (SyncData, SyncFinished).

const capName = "dlg-repl"

func addCap(t *testing.T, n *Node, requireSync bool, cond core.SyncCond) {
	t.Helper()
	require.NoError(t, n.M.AddCapability(n.sim.Now(), cl, core.CapConfig{Name: capName, RequireSync: requireSync, Cond: cond}))
	n.sim.flush(n)
}

func capStatus(n *Node) core.CapStatus {
	for _, c := range n.M.View().Cluster(cl).LocalCaps {
		if c.Name == capName {
			return c.Status
		}
	}
	return 255
}

// eventsOf returns n's events of a kind, from index from on.
func eventsOf(n *Node, kind core.EventKind) []core.Event {
	var out []core.Event
	for _, e := range n.Events {
		if e.Kind == kind {
			out = append(out, e.Event)
		}
	}
	return out
}

// serveAll plays the runtimes: every SyncServe a donor raised completes at
// the requester, once.
func serveAll(s *Sim, served map[[2]int32]int) {
	for _, id := range s.IDs() {
		d := s.Node(id)
		n := 0
		for _, e := range eventsOf(d, core.SyncServe) {
			n++
			k := [2]int32{id, e.Node}
			if served[k] >= n {
				continue
			}
			served[k] = n
			j := s.Node(e.Node)
			var gen uint64
			for _, st := range eventsOf(j, core.SyncStart) {
				if st.Node == id && st.CapName == e.CapName {
					gen = st.Gen
				}
			}
			j.M.SyncData(s.Now(), cl, e.CapName, id)
			j.M.SyncFinished(s.Now(), cl, e.CapName, id, gen, nil)
			s.flush(j)
		}
	}
}

func remoteSynced(n *Node, of int32) bool {
	nv := n.M.View().Cluster(cl).Node(of)
	if nv == nil {
		return false
	}
	for _, c := range nv.Capabilities {
		if c.Name == capName {
			return c.Synced
		}
	}
	return false
}

func TestSyncDonorIsMostRecentlyAddedSyncedNode(t *testing.T) {
	s := newSim(t, 0, fullMesh(4, false)...)
	for id := int32(1); id <= 3; id++ {
		addCap(t, s.Node(id), false, core.DonorAny)
	}
	addCap(t, s.Node(4), true, core.DonorAny)
	require.Equal(t, core.CapSyncPending, capStatus(s.Node(4)))
	s.StartAll()
	served := map[[2]int32]int{}
	ok := s.RunPolling(10*time.Second, 10*time.Millisecond, func() bool {
		serveAll(s, served)
		return capStatus(s.Node(4)) == core.CapSynced
	})
	require.True(t, ok)
	// Node 4 provisioned 1, 2, 3 in that order: 3 is the most recent.
	require.Equal(t, map[[2]int32]int{{3, 4}: 1}, served)
	start := eventsOf(s.Node(4), core.SyncStart)
	require.Len(t, start, 1)
	require.Equal(t, int32(3), start[0].Node)
	require.Len(t, eventsOf(s.Node(4), core.SyncDone), 1)
	// Its new state reached everyone (a single CAP_UPDATE, flooded).
	s.Run(time.Second)
	for id := int32(1); id <= 3; id++ {
		require.True(t, remoteSynced(s.Node(id), 4), "node %d sees 4 synced", id)
	}
}

func TestSyncDonorCondition(t *testing.T) {
	cfgs := fullMesh(3, false)
	sip := map[int32]string{1: "10.0.0.1:5060", 2: "10.0.0.9:5060", 3: "10.0.0.9:5060"}
	for i := range cfgs {
		cc := &cfgs[i].Clusters[0]
		cc.Self.SIPAddr = sip[cfgs[i].NodeID]
		for j := range cc.Nodes {
			cc.Nodes[j].SIPAddr = sip[cc.Nodes[j].ID]
		}
	}
	for _, tc := range []struct {
		cond  core.SyncCond
		donor int32
	}{{core.DonorSameSIP, 2}, {core.DonorOtherSIP, 1}, {core.DonorAny, 2}} {
		s := newSim(t, 1, cfgs...)
		addCap(t, s.Node(1), false, core.DonorAny)
		addCap(t, s.Node(2), false, core.DonorAny)
		addCap(t, s.Node(3), true, tc.cond)
		s.StartAll()
		require.True(t, s.RunUntil(10*time.Second, func() bool { return len(eventsOf(s.Node(3), core.SyncStart)) > 0 }))
		require.Equal(t, tc.donor, eventsOf(s.Node(3), core.SyncStart)[0].Node, "cond %d", tc.cond)
	}
}

// A request with no donor waits; the first CAP_UPDATE showing one sends it.
func TestSyncPendingUntilADonorAppears(t *testing.T) {
	s := newSim(t, 0, fullMesh(3, false)...)
	addCap(t, s.Node(1), true, core.DonorAny)
	addCap(t, s.Node(2), true, core.DonorAny)
	s.Start(1)
	s.Start(2)
	s.Run(5 * time.Second)
	require.Equal(t, core.CapSyncPending, capStatus(s.Node(1)), "neither is synced: nobody can donate")
	require.Empty(t, eventsOf(s.Node(1), core.SyncStart))
	addCap(t, s.Node(3), false, core.DonorAny)
	s.Start(3)
	served := map[[2]int32]int{}
	require.True(t, s.RunPolling(10*time.Second, 10*time.Millisecond, func() bool {
		serveAll(s, served)
		return capStatus(s.Node(1)) == core.CapSynced && capStatus(s.Node(2)) == core.CapSynced
	}))
}

// The donor dies during the sync: the session is abandoned and the
// request goes to the next donor.
func TestSyncDonorLostMidSync(t *testing.T) {
	s := newSim(t, 0, fullMesh(3, false)...)
	addCap(t, s.Node(1), false, core.DonorAny)
	addCap(t, s.Node(2), false, core.DonorAny)
	addCap(t, s.Node(3), true, core.DonorAny)
	s.StartAll()
	require.True(t, s.RunUntil(10*time.Second, func() bool { return len(eventsOf(s.Node(3), core.SyncStart)) > 0 }))
	require.Equal(t, int32(2), eventsOf(s.Node(3), core.SyncStart)[0].Node)
	j := s.Node(3)
	j.M.SyncData(s.Now(), cl, capName, 2) // data began
	s.flush(j)
	require.Equal(t, core.CapSyncInProgress, capStatus(j))
	s.Kill(2)
	require.True(t, s.RunUntil(10*time.Second, func() bool { return len(eventsOf(j, core.SyncStart)) > 1 }))
	abort := eventsOf(j, core.SyncAbort)
	require.Len(t, abort, 1)
	require.ErrorIs(t, abort[0].Err, core.ErrDonorDown)
	require.Equal(t, int32(1), eventsOf(j, core.SyncStart)[1].Node)
	// A late finish of the abandoned session changes nothing.
	first := eventsOf(j, core.SyncStart)[0].Gen
	j.M.SyncFinished(s.Now(), cl, capName, 2, first, nil)
	require.NotEqual(t, core.CapSynced, capStatus(j))
	// So does the late end of a session replaced by one from the same
	// donor (a route flap): only the current session's number counts.
	second := eventsOf(j, core.SyncStart)[1].Gen
	require.Greater(t, second, first)
	j.M.SyncFinished(s.Now(), cl, capName, 1, first, nil)
	require.NotEqual(t, core.CapSynced, capStatus(j))
	j.M.SyncFinished(s.Now(), cl, capName, 1, second, nil)
	require.Equal(t, core.CapSynced, capStatus(j))
}

// A session that receives nothing times out and is requested again.
func TestSyncTimeout(t *testing.T) {
	cfgs := fullMesh(2, false)
	for i := range cfgs {
		cfgs[i].SyncTimeout = 3 * time.Second
	}
	s := newSim(t, 0, cfgs...)
	addCap(t, s.Node(1), false, core.DonorAny)
	addCap(t, s.Node(2), true, core.DonorAny)
	s.StartAll()
	require.True(t, s.RunUntil(10*time.Second, func() bool { return len(eventsOf(s.Node(2), core.SyncStart)) > 0 }))
	asked := s.Now()
	require.True(t, s.RunUntil(10*time.Second, func() bool { return len(eventsOf(s.Node(2), core.SyncAbort)) > 0 }))
	require.InDelta(t, 3.0, s.Now().Sub(asked).Seconds(), 0.6)
	require.ErrorIs(t, eventsOf(s.Node(2), core.SyncAbort)[0].Err, core.ErrSyncTimeout)
	require.Len(t, eventsOf(s.Node(2), core.SyncStart), 2, "asked again at once")
	s.Run(10 * time.Millisecond)
	require.Len(t, eventsOf(s.Node(1), core.SyncServe), 2)
}

// The fallback interval counts from Start, not from registration: a node
// that took long to start still looks for a donor first.
func TestSeedFallbackCountsFromStart(t *testing.T) {
	cfg := Config(1, cl, false, 2)
	cfg.Clusters[0].Self.Seed = true
	s := newSim(t, 0, cfg, Config(2, cl, false, 1))
	addCap(t, s.Node(1), true, core.DonorAny)
	s.Run(30 * time.Second) // a slow start
	s.Start(1)
	started := s.Now()
	require.True(t, s.RunUntil(20*time.Second, func() bool { return capStatus(s.Node(1)) == core.CapSynced }))
	require.InDelta(t, core.DefaultSeedFallback.Seconds(), s.Now().Sub(started).Seconds(), 0.3)
	done := eventsOf(s.Node(1), core.SyncDone)
	require.Len(t, done, 1)
	require.Zero(t, done[0].Node, "no donor")
	// Node 2 (not a seed) syncs from the seed once it is up.
	addCap(t, s.Node(2), true, core.DonorAny)
	s.Start(2)
	served := map[[2]int32]int{}
	require.True(t, s.RunPolling(10*time.Second, 10*time.Millisecond, func() bool {
		serveAll(s, served)
		return capStatus(s.Node(2)) == core.CapSynced
	}))
}

// A SYNC_REQ from a node the donor cannot reach yet is served once it can.
func TestSyncRequestFromUnreachableNodeWaits(t *testing.T) {
	s := newSim(t, 0, fullMesh(2, false)...)
	addCap(t, s.Node(1), false, core.DonorAny)
	s.Start(1)
	s.Run(time.Second)
	req := &wire.SyncReq{Trailer: bin.Trailer{Cluster: cl, Src: 2, Dst: 1}, Capability: capName}
	frame, err := req.Append(nil)
	require.NoError(t, err)
	p, err := bin.Parse(frame)
	require.NoError(t, err)
	d := s.Node(1)
	d.M.Receive(s.Now(), core.Source{IP: s.Node(2).IP}, p)
	s.flush(d)
	require.Empty(t, eventsOf(d, core.SyncServe), "2 is not reachable")
	s.Start(2)
	require.True(t, s.RunUntil(10*time.Second, func() bool { return len(eventsOf(d, core.SyncServe)) > 0 }))
	require.Equal(t, int32(2), eventsOf(d, core.SyncServe)[0].Node)

	// Requests for a capability the node does not hold, or holds disabled,
	// are dropped.
	req.Capability = "other"
	frame, _ = req.Append(nil)
	p, _ = bin.Parse(frame)
	d.M.Receive(s.Now(), core.Source{IP: s.Node(2).IP}, p)
	require.NoError(t, d.M.SetCapabilityEnabled(s.Now(), cl, capName, false))
	req.Capability = capName
	frame, _ = req.Append(nil)
	p, _ = bin.Parse(frame)
	d.M.Receive(s.Now(), core.Source{IP: s.Node(2).IP}, p)
	s.flush(d)
	require.Len(t, eventsOf(d, core.SyncServe), 1)
	require.Equal(t, uint64(2), d.M.Stats().SyncReqDropped)
}

func TestCapabilityDisableAnnouncesStateZero(t *testing.T) {
	s := newSim(t, 0, fullMesh(3, false)...)
	for id := int32(1); id <= 3; id++ {
		addCap(t, s.Node(id), false, core.DonorAny)
	}
	s.StartAll()
	s.Run(3 * time.Second)
	require.True(t, remoteSynced(s.Node(3), 1))
	require.NoError(t, s.Node(1).M.SetCapabilityEnabled(s.Now(), cl, capName, false))
	s.flush(s.Node(1))
	s.Run(time.Second)
	require.False(t, remoteSynced(s.Node(3), 1))
	require.Equal(t, core.CapDisabled, capStatus(s.Node(1)))
	require.ErrorIs(t, s.Node(1).M.RequestSync(s.Now(), cl, capName), core.ErrCapDisabled)
	require.ErrorIs(t, s.Node(1).M.RequestSync(s.Now(), cl, "nope"), core.ErrUnknownCapability)
	require.ErrorIs(t, s.Node(1).M.AddCapability(s.Now(), cl, core.CapConfig{Name: capName}), core.ErrCapabilityExists)
	require.NoError(t, s.Node(1).M.SetCapabilityEnabled(s.Now(), cl, capName, true))
	s.flush(s.Node(1))
	s.Run(time.Second)
	require.True(t, remoteSynced(s.Node(3), 1))
}

// A node that goes away is no donor until it says again what it holds: it
// may come back restarted and empty.
func TestCapStatesOfUnreachableNodesAreForgotten(t *testing.T) {
	s := newSim(t, 0, fullMesh(3, false)...)
	for id := int32(1); id <= 3; id++ {
		addCap(t, s.Node(id), false, core.DonorAny)
	}
	s.StartAll()
	s.Run(3 * time.Second)
	require.True(t, remoteSynced(s.Node(3), 2))
	s.Kill(2)
	require.True(t, s.RunUntil(10*time.Second, func() bool { return !remoteSynced(s.Node(3), 2) }))
	require.True(t, remoteSynced(s.Node(1), 3), "a reachable node's states are kept")
}
