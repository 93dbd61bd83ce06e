package core_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/golden"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// TestShTagInteropSession1 replays session 1's join (see
// TestInteropSession1Join) with the Go node standing in for node 1 holding
// node 1's tag, "vip/1=active". OpenSIPS announced the tag lazily: one
// SHTAG_ACTIVE to node 2 right after node 2 came UP (frame #8) and one to
// node 3 right after node 3 did (#46). The Go node must send the same
// frames, byte for byte, each in the step that made its destination
// reachable, and nothing else of OpenSIPS's to them; its claims (the
// Go-only capability, which OpenSIPS drops) precede them. The topology
// conversation must be unchanged by the tag.
func TestShTagInteropSession1(t *testing.T) {
	const self int32 = 1
	frames := golden.Frames(t, "session1-mesh")
	end := session1JoinEnd(t, frames)
	cfg := session1Config(t, frames, true)
	cfg.Clusters[0].ShTags = []core.ShTagConfig{{Name: "vip", Active: true}}
	r := newReplay(t, self, frames, cfg, end)
	r.Run(frames)

	var captured []ioMsg
	for _, x := range r.Expected {
		if x.Type() == wire.TypeShtagActive {
			captured = append(captured, x)
		}
	}
	require.Len(t, captured, 2)
	require.Equal(t, []int{8, 46}, []int{captured[0].Index, captured[1].Index})

	var sent []ioMsg
	for i, x := range r.Got {
		switch x.Type() {
		case wire.TypeShtagActive:
			sent = append(sent, x)
			require.Positive(t, i)
			prev := r.Got[i-1]
			require.Equal(t, &wire.ShtagClaim{Trailer: bin.Trailer{Cluster: labCluster, Src: self, Dst: x.Dst},
				Tag: "vip", Term: 0, Owner: self, Active: true, Announce: true}, prev.Msg, "the claim goes first, on the same route")
		case wire.TypeShtagClaim:
			require.True(t, x.Msg.(*wire.ShtagClaim).Active)
			require.True(t, x.Msg.(*wire.ShtagClaim).Announce, "no claim without its SHTAG_ACTIVE here")
		}
	}
	require.Len(t, sent, 2)
	for i, x := range sent {
		exp := captured[i]
		assert.Equal(t, exp.Dst, x.Dst)
		assert.True(t, bytes.Equal(exp.Frame, x.Frame), "to node %d: %x, OpenSIPS sent %x", x.Dst, x.Frame, exp.Frame)
		// Sent in the step in which the node came UP.
		var up []timedEvent
		for _, e := range r.Events {
			if e.Kind == core.NodeUp && e.Node == x.Dst {
				up = append(up, e)
			}
		}
		require.Len(t, up, 1, "node %d came UP once", x.Dst)
		assert.Equal(t, up[0].At, x.At, "SHTAG_ACTIVE to node %d in the step that made it reachable", x.Dst)
		t.Logf("SHTAG_ACTIVE to node %d at +%.6fs (OpenSIPS: +%.6fs, frame #%d)", x.Dst, x.Rel.Seconds(), exp.Rel.Seconds(), exp.Index)
	}
	configured := 0
	for _, e := range r.Events {
		if e.Kind == core.ShTagChanged {
			configured++
			assert.Equal(t, &core.ShTagChange{Name: "vip", Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagConfigured}, e.ShTag)
		}
	}
	assert.Equal(t, 1, configured, "the configured state is reported once, and nothing changed it")
	checkSession1Join(t, r, frames, self)
}

// shtagNode is a machine standing in for a lab node, never started: what it
// receives is handled all the same (only probing waits for Start).
func shtagNode(t *testing.T, self int32, tags ...core.ShTagConfig) *core.Machine {
	t.Helper()
	cc := core.ClusterConfig{ID: labCluster, Self: core.NodeInfo{URL: "bin:" + labAddr(self)}, ShTags: tags}
	for n := int32(1); n <= 3; n++ {
		if n != self {
			cc.Nodes = append(cc.Nodes, core.NodeInfo{ID: n, URL: "bin:" + labAddr(n)})
		}
	}
	m, err := core.New(core.Config{NodeID: self, Discovery: true, Clusters: []core.ClusterConfig{cc}})
	require.NoError(t, err)
	return m
}

// encoder returns a function that marshals a message, failing t if it
// cannot.
func encoder(t *testing.T) func(wire.Message) []byte {
	return func(msg wire.Message) []byte {
		t.Helper()
		f, err := msg.Append(nil)
		require.NoError(t, err)
		return f
	}
}

func receive(t *testing.T, m *core.Machine, frame []byte) []core.Event {
	t.Helper()
	p, err := bin.Parse(frame)
	require.NoError(t, err)
	m.Receive(time.Unix(1795312700, 0), core.Source{IP: labIP}, p)
	_, ev := m.Drain()
	return ev
}

// The captured OpenSIPS SHTAG_ACTIVEs make a Go node holding the tag go
// backup: node 1's to node 2 (session 1) and node 1's to node 3, relayed
// by node 2 (session 2).
func TestShTagCapturedAnnouncementForcesBackup(t *testing.T) {
	for _, tc := range []struct {
		vector string
		self   int32
	}{{"shtag_active", 2}, {"routed_shtag_active_hop1", 3}} {
		t.Run(tc.vector, func(t *testing.T) {
			m := shtagNode(t, tc.self, core.ShTagConfig{Name: "vip", Active: true})
			m.Start(time.Unix(1795312699, 0))
			m.Drain()
			require.Equal(t, core.ShTagActive, m.View().Cluster(labCluster).ShTag("vip").State)
			ev := receive(t, m, vector(t, tc.vector))
			require.Len(t, ev, 1)
			assert.Equal(t, core.Event{Kind: core.ShTagChanged, Cluster: labCluster, Node: 1, ShTag: &core.ShTagChange{
				Name: "vip", Old: core.ShTagActive, New: core.ShTagBackup, Reason: core.ShTagTakenOver, Node: 1, Term: 1}}, ev[0])
			assert.Equal(t, core.ShTagView{Name: "vip", State: core.ShTagBackup, Owner: 1, Term: 1},
				*m.View().Cluster(labCluster).ShTag("vip"))
			assert.Zero(t, m.Stats().Malformed)

			// Again: already backup, nothing to report.
			require.Empty(t, receive(t, m, vector(t, tc.vector)))
		})
	}
}

func vector(t *testing.T, name string) []byte {
	t.Helper()
	for _, v := range golden.Vectors(t) {
		if v.Name == name {
			return v.Frame
		}
	}
	t.Fatalf("no vector %s", name)
	return nil
}

// An unknown tag named by a SHTAG_ACTIVE or a claim is learned, backup.
func TestShTagLearnedFromMessages(t *testing.T) {
	m := shtagNode(t, 2)
	require.Nil(t, m.View().Cluster(labCluster).ShTag("vip"))
	require.Empty(t, receive(t, m, vector(t, "shtag_active")), "learned backup: no change to report")
	assert.Equal(t, core.ShTagView{Name: "vip", State: core.ShTagBackup, Owner: 1, Term: 1}, *m.View().Cluster(labCluster).ShTag("vip"))

	claim, err := (&wire.ShtagClaim{Trailer: bin.Trailer{Cluster: labCluster, Src: 3, Dst: 2}, Tag: "gw", Term: 4, Owner: 3, Active: true}).Append(nil)
	require.NoError(t, err)
	require.Empty(t, receive(t, m, claim))
	assert.Equal(t, core.ShTagView{Name: "gw", State: core.ShTagBackup, Owner: 3, Term: 4}, *m.View().Cluster(labCluster).ShTag("gw"))

	require.NoError(t, m.ReferShTag(time.Unix(1795312700, 0), labCluster, "dlg"))
	var names []string
	for _, tv := range m.View().Cluster(labCluster).ShTags {
		names = append(names, tv.Name)
	}
	require.Equal(t, []string{"dlg", "gw", "vip"}, names, "sorted by name")
}

// Hostile input is dropped and counted: malformed names and claims, more
// tags than the bound, claims from unknown nodes or addresses.
func TestShTagHostileInput(t *testing.T) {
	m := shtagNode(t, 2)
	tr := bin.Trailer{Cluster: labCluster, Src: 1, Dst: 2}
	frame := encoder(t)
	receive(t, m, frame(&wire.ShtagActive{Trailer: tr, Tag: ""}))
	assert.Equal(t, uint64(1), m.Stats().Malformed, "an empty name")

	bad := frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 1, Owner: 1})
	bad[len(bad)-13] = 0xff // the flags' high byte
	receive(t, m, bad)
	assert.Equal(t, uint64(2), m.Stats().Malformed, "a claim with undefined flags")
	require.Empty(t, m.View().Cluster(labCluster).ShTags)

	for i := range core.MaxShTags + 10 {
		receive(t, m, frame(&wire.ShtagActive{Trailer: tr, Tag: fmt.Sprintf("t%04d", i)}))
	}
	assert.Len(t, m.View().Cluster(labCluster).ShTags, core.MaxShTags)
	assert.Equal(t, uint64(10), m.Stats().ShTagsFull)
	require.ErrorIs(t, m.ActivateShTag(time.Unix(1795312700, 0), labCluster, "one-more"), core.ErrShTagFull)
	require.ErrorIs(t, m.ReferShTag(time.Unix(1795312700, 0), labCluster, "one-more"), core.ErrShTagFull)
	require.NoError(t, m.ActivateShTag(time.Unix(1795312700, 0), labCluster, "t0000"), "a known tag still works")

	m = shtagNode(t, 2)
	receive(t, m, frame(&wire.ShtagClaim{Trailer: bin.Trailer{Cluster: labCluster, Src: 9, Dst: 2}, Tag: "vip", Term: 1, Owner: 9, Active: true}))
	assert.Equal(t, uint64(1), m.Stats().UnknownNode)
	p, err := bin.Parse(frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 1, Owner: 1, Active: true}))
	require.NoError(t, err)
	m.Receive(time.Unix(1795312700, 0), core.Source{IP: netip.MustParseAddr("192.0.2.1")}, p)
	assert.Equal(t, uint64(1), m.Stats().SourceIP)
	require.Empty(t, m.View().Cluster(labCluster).ShTags)
}

func TestShTagCommandsAndConfig(t *testing.T) {
	m := shtagNode(t, 2)
	now := time.Unix(1795312700, 0)
	require.ErrorIs(t, m.ActivateShTag(now, 7, "vip"), core.ErrUnknownCluster)
	require.ErrorIs(t, m.ActivateShTag(now, labCluster, ""), core.ErrShTagName)
	require.ErrorIs(t, m.ReferShTag(now, labCluster, string(make([]byte, 256))), core.ErrShTagName)

	// Nobody is reachable: the announcements are owed to everyone.
	require.NoError(t, m.ActivateShTag(now, labCluster, "vip"))
	sends, ev := m.Drain()
	require.Empty(t, sends)
	require.Equal(t, []core.Event{{Kind: core.ShTagChanged, Cluster: labCluster, ShTag: &core.ShTagChange{
		Name: "vip", Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagActivated, Term: 1}}}, ev)
	require.NoError(t, m.ActivateShTag(now, labCluster, "vip"))
	_, ev = m.Drain()
	require.Empty(t, ev, "already the holder: announced again with a new term, no change")
	require.Equal(t, int32(2), m.View().Cluster(labCluster).ShTag("vip").Term)

	for _, tags := range [][]core.ShTagConfig{
		{{Name: ""}},
		{{Name: "vip"}, {Name: "vip", Active: true}},
	} {
		_, err := core.New(core.Config{NodeID: 1, Clusters: []core.ClusterConfig{{ID: 1, Self: core.NodeInfo{URL: "bin:127.0.0.1:1"}, ShTags: tags}}})
		require.ErrorIs(t, err, core.ErrConfig, "%+v", tags)
	}
}

// A SHTAG_ACTIVE is left to the claim that announced it, and only that
// one: without such a claim (lost, or dropped by an OpenSIPS relay, which
// forwards only SHTAG_ACTIVE) it forces backup as in OpenSIPS, even from a
// node known to send claims. From such a node it does so a ping timeout
// later, not at once as this test first expected: a SHTAG_ACTIVE relayed
// by a path other than its claim's can come first, and a holder that gave
// the tag up for it at once stepped down for a claim that loses
// (sim TestShTagRandomPartitionsJitter, seed 351).
func TestShTagAnnouncementLeftToItsClaim(t *testing.T) {
	m := shtagNode(t, 2, core.ShTagConfig{Name: "vip", Active: true})
	m.Start(time.Unix(1795312699, 0))
	m.Drain()
	tr := bin.Trailer{Cluster: labCluster, Src: 3, Dst: 2}
	frame := encoder(t)
	active := frame(&wire.ShtagActive{Trailer: tr, Tag: "vip"})
	// Node 3's claim loses (term 0, id 3 > 2): node 2 keeps the tag.
	ev := receive(t, m, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 0, Owner: 3, Active: true, Announce: true}))
	require.Len(t, ev, 1)
	require.Equal(t, core.ShTagConflictWon, ev[0].ShTag.Reason)
	require.Empty(t, receive(t, m, active), "left to the claim")
	require.Equal(t, uint64(1), m.Stats().ShTagLeftToClaim)
	require.Equal(t, core.ShTagActive, m.View().Cluster(labCluster).ShTag("vip").State)

	// Node 3 again, its claim lost on the way: OpenSIPS's rule, once
	// the claim had time to come.
	require.Empty(t, receive(t, m, active), "waits for its claim")
	ev = shtagEventsAt(t, m, time.Unix(1795312700, 0).Add(core.DefaultPingTimeout))
	require.Len(t, ev, 1)
	require.Equal(t, &core.ShTagChange{Name: "vip", Old: core.ShTagActive, New: core.ShTagBackup, Reason: core.ShTagTakenOver,
		Node: 3, Term: 1}, ev[0].ShTag)

	// A claim that announces nothing does not cover a later SHTAG_ACTIVE.
	require.NoError(t, m.ActivateShTag(time.Unix(1795312700, 0), labCluster, "vip"))
	m.Drain()
	receive(t, m, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 1, Owner: 3, Active: false}))
	require.Equal(t, core.ShTagActive, m.View().Cluster(labCluster).ShTag("vip").State)
	require.Empty(t, receive(t, m, active), "waits for its claim")
	ev = shtagEventsAt(t, m, time.Unix(1795312700, 0).Add(core.DefaultPingTimeout))
	require.Len(t, ev, 1)
	require.Equal(t, core.ShTagTakenOver, ev[0].ShTag.Reason)
}

// shtagEventsAt runs m's timers at now and returns its sharing-tag
// events.
func shtagEventsAt(t *testing.T, m *core.Machine, now time.Time) []core.Event {
	t.Helper()
	m.Tick(now)
	_, ev := m.Drain()
	var out []core.Event
	for _, e := range ev {
		if e.Kind == core.ShTagChanged {
			out = append(out, e)
		}
	}
	return out
}

// A SHTAG_ACTIVE from a Go node can come before its claim (a relay whose
// route changed between the two): the holder waits for the claim, which
// decides, instead of giving the tag up at once.
func TestShTagAnnouncementBeforeItsClaim(t *testing.T) {
	m := shtagNode(t, 2, core.ShTagConfig{Name: "vip", Active: true})
	m.Start(time.Unix(1795312699, 0))
	m.Drain()
	tr := bin.Trailer{Cluster: labCluster, Src: 3, Dst: 2}
	frame := encoder(t)
	// Node 3 is known to send claims: it reported node 2 as the holder.
	require.Empty(t, receive(t, m, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 0, Owner: 2})))
	require.Empty(t, receive(t, m, frame(&wire.ShtagActive{Trailer: tr, Tag: "vip"})), "waits for its claim")
	ev := receive(t, m, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 0, Owner: 3, Active: true, Announce: true}))
	require.Len(t, ev, 1)
	require.Equal(t, core.ShTagConflictWon, ev[0].ShTag.Reason, "node 3's claim loses (term 0, id 3 > 2)")
	require.Equal(t, uint64(1), m.Stats().ShTagLeftToClaim)
	require.Empty(t, shtagEventsAt(t, m, time.Unix(1795312700, 0).Add(2*core.DefaultPingTimeout)), "settled by its claim")
	require.Equal(t, core.ShTagActive, m.View().Cluster(labCluster).ShTag("vip").State)
}

// Two nodes each taking the other for the holder (one stepped down for a
// SHTAG_ACTIVE whose claim was lost, the other for the first one's claim)
// leave the tag with no holder: the report of the node named, naming the
// local node, says so, and the local node takes the tag back. A report
// older than the claim it is credited with (a lower term) says nothing
// (sim TestShTagRandomPartitionsJitter, seeds 1891 and 2800 of 100-5099).
func TestShTagMutualBeliefReactivates(t *testing.T) {
	m := shtagNode(t, 2)
	m.Start(time.Unix(1795312699, 0))
	m.Drain()
	tr := bin.Trailer{Cluster: labCluster, Src: 3, Dst: 2}
	frame := encoder(t)
	require.Empty(t, receive(t, m, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 4, Owner: 3, Active: true})))
	require.Equal(t, int32(3), m.View().Cluster(labCluster).ShTag("vip").Owner)

	// Sent before node 3 took the tag with term 4: stale.
	require.Empty(t, receive(t, m, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 3, Owner: 2})))
	require.Equal(t, core.ShTagBackup, m.View().Cluster(labCluster).ShTag("vip").State)

	ev := receive(t, m, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 4, Owner: 2}))
	require.Len(t, ev, 1)
	require.Equal(t, &core.ShTagChange{Name: "vip", Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagActivated,
		Node: 3, Term: 5, NeedsResync: true}, ev[0].ShTag)
	require.Equal(t, uint64(1), m.Stats().ShTagReactivated)
}

// A holder that gave the tag up at once for the SHTAG_ACTIVE of a node
// not yet known as a Go node (its claim, by another route, came after)
// while that node stepped down for the holder's better claim: the
// loser's yield notice, naming the local node, tells it nobody holds the
// tag, and it takes it back (seed 1612).
func TestShTagYieldToFormerHolderReactivates(t *testing.T) {
	m := shtagNode(t, 2)
	m.Start(time.Unix(1795312699, 0))
	m.Drain()
	require.NoError(t, m.ActivateShTag(time.Unix(1795312699, 0), labCluster, "vip"))
	for range 6 { // term 7
		require.NoError(t, m.ActivateShTag(time.Unix(1795312699, 0), labCluster, "vip"))
	}
	m.Drain()
	require.Equal(t, int32(7), m.View().Cluster(labCluster).ShTag("vip").Term)
	tr := bin.Trailer{Cluster: labCluster, Src: 3, Dst: 2}
	frame := encoder(t)
	ev := receive(t, m, frame(&wire.ShtagActive{Trailer: tr, Tag: "vip"}))
	require.Len(t, ev, 1)
	require.Equal(t, core.ShTagTakenOver, ev[0].ShTag.Reason, "OpenSIPS's rule: node 3 never sent a claim")
	require.Empty(t, receive(t, m, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 3, Owner: 3, Active: true, Announce: true})))
	require.Equal(t, core.ShTagBackup, m.View().Cluster(labCluster).ShTag("vip").State)
	ev = receive(t, m, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 3, Owner: 2, Active: true})) // yield notice
	require.Len(t, ev, 1)
	require.Equal(t, &core.ShTagChange{Name: "vip", Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagActivated,
		Node: 3, Term: 9, NeedsResync: true}, ev[0].ShTag)

	// A yield notice from a node whose newer claim we name says nothing.
	m2 := shtagNode(t, 2)
	m2.Start(time.Unix(1795312699, 0))
	m2.Drain()
	require.Empty(t, receive(t, m2, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 5, Owner: 3, Active: true})))
	require.Empty(t, receive(t, m2, frame(&wire.ShtagClaim{Trailer: tr, Tag: "vip", Term: 4, Owner: 2, Active: true})))
	require.Equal(t, core.ShTagBackup, m2.View().Cluster(labCluster).ShTag("vip").State)
}
