package core_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/golden"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// TestInteropSession1Join replays the join phase of the captured OpenSIPS
// session 1 (../shared/testdata/opensips, spec §7.2 and §17) against a Go
// machine standing in for OpenSIPS node 1, the seed, and checks that it
// answers as node 1 did.
//
// Inputs. Every frame that reached node 1 (its listener 25561, or node 1's
// own ephemeral connections to 25562/25563; the port owners are worked out
// from the capture) is given to the machine at its capture time, with Tick
// called at every deadline in between. Clusterer packets go to Receive;
// module packets (cachedb-local-repl) are reported with Activity(recv), and
// the data-plane packets node 1 itself sent (SHTAG_ACTIVE, SYNC, SYNC_END,
// GENERIC_MSG, module packets) with Activity(sent): the Go node's upper
// layers, which would send them, do not exist yet, and the runtime reports
// such traffic to the machine exactly that way. Those packets matter here
// because they suppress keep-alive pings, in OpenSIPS and in the machine.
//
// Window. From the first frame (node 2's first PING) until just before the
// first scripted action: the cluster_broadcast_mi MI_CMD (frame #193,
// +29.97 s), which precedes every entry of pcap/phase-marks.txt. Node 3's
// join (frames #34..#80, +9.01..+9.51 s) settles well inside it, and the
// rest of the window is the steady state, where only keep-alives and
// generic messages flow.
//
// Compared: the topology and probing messages PING, PONG, UNKNOWN_ID,
// NODE_DESCRIPTION, LS_UPDATE and FULL_TOP_UPDATE. CAP_UPDATE, SYNC*,
// SHTAG_ACTIVE, GENERIC_MSG, MI_CMD, REMOVE_NODE and module packets are the
// upper layers' business (later issues) and are not compared. Per
// destination node, the sequence of compared messages must be the same, in
// the same order, with the same fields (both sides decoded with wire.Parse
// and compared field by field), sequence numbers included; timestamps
// (LS_UPDATE and FULL_TOP_UPDATE message timestamps) are set aside, and a
// message whose timestamps agree must be byte-identical.
//
// What is accounted for explicitly rather than compared strictly:
//
//   - Keep-alive PINGs (req_node_list=0) depend on timer phase: OpenSIPS
//     checks its links on a 500 ms ticker (gcd of the lab timers), the Go
//     machine at the exact deadline (link.go: "timers fire at exact
//     deadlines"). They are left out of the strict sequences and checked
//     against the rule both follow (spec §6.2 row 5): a keep-alive is due
//     ping_interval after the later of the last ping and the last
//     data-plane send to that node; the machine sends it exactly then,
//     OpenSIPS at the first tick after (up to 500 ms, plus scheduling
//     jitter, later); and the counts per node may differ by the few pings
//     this phase shift adds up to over the window.
//     The peers' PONGs to OpenSIPS's keep-alives answered pings the Go node
//     sent at other times, so they are not replayed; each keep-alive PING
//     of the Go node is answered at once with the PONG an OpenSIPS peer
//     sends (nr_nodes=0). The PONGs the Go node sends in answer to the
//     peers' keep-alives are input-driven and are compared strictly.
//   - The same exact-deadline timers make the Go node send its first probe
//     to a newly learned node at once, not at the next tick (+0 ms instead
//     of +59 ms for node 2, +42 ms for node 3). Timestamps aside, the
//     order per destination is unchanged.
//   - link.go's other difference on this path, probing again at once after
//     answering UNKNOWN_ID, cannot show here: node 1 is the seed and is
//     never told UNKNOWN_ID. The test checks that it got none.
//   - The Go node re-announces its own links once they settle, a ping
//     timeout after a link or the reachable set changed (sendRefresh in
//     topology.go): a FULL_TOP_UPDATE holding only its own entry, to every
//     UP neighbour. OpenSIPS never sends it. These come from timers, are
//     left out of the strict sequences and checked in
//     GoOnlyTopologyRefresh. Each one takes a top_seq value, so a later
//     FULL_TOP_UPDATE originated by the Go node carries OpenSIPS's top_seq
//     plus the number of refreshes sent before it (frame #43: seq 1 in the
//     capture, 2 from the Go node). The strict comparison requires exactly
//     that offset, and logs it.
//
// Because the peers are a recording, they cannot react to anything the Go
// node does differently; every difference above leaves the peers' inputs
// valid (all of the Go node's probes are answered in time).
func TestInteropSession1Join(t *testing.T) {
	const self int32 = 1
	frames := golden.Frames(t, "session1-mesh")
	end := session1JoinEnd(t, frames)
	cfg := session1Config(t, frames, true)
	r := newReplay(t, self, frames, cfg, end)
	r.Run(frames)
	t.Logf("window: +0 .. +%.6fs; %d frames given to Receive, %d reported with Activity, %d keep-alive PONGs not replayed, %d made up",
		end.Sub(r.T0).Seconds(), len(r.Fed), len(r.Activity), len(r.SkippedPong), r.SynthPongs)
	checkSession1Join(t, r, frames, self)
}

// TestInteropSession1JoinReducedFlooding replays the same join with the
// default flooding (not OpenSIPSFlooding). The only differences allowed
// are sends left out: FULL_TOP_UPDATEs flooded on that brought nothing a
// flood is needed for, and LS_UPDATE(UP)s coalesced into the refresh.
func TestInteropSession1JoinReducedFlooding(t *testing.T) {
	const self int32 = 1
	frames := golden.Frames(t, "session1-mesh")
	end := session1JoinEnd(t, frames)
	compat := newReplay(t, self, frames, session1Config(t, frames, true), end)
	compat.Run(frames)
	reduced := newReplay(t, self, frames, session1Config(t, frames, false), end)
	reduced.Run(frames)
	omitted := 0
	for _, dst := range []int32{2, 3} {
		want, got := strictMsgs(compat.Got, dst), strictMsgs(reduced.Got, dst)
		j := 0
		for _, w := range want {
			if j < len(got) && w.Type() == got[j].Type() {
				assert.Equal(t, normalize(w.Msg, 0), normalize(got[j].Msg, 0), "to node %d: %s", dst, w)
				j++
				continue
			}
			omitted++
			switch m := w.Msg.(type) {
			case *wire.FullTopUpdate:
				assert.Greater(t, len(m.Path), 1, "to node %d: the Go node's own FULL_TOP_UPDATE left out: %s", dst, w)
			case *wire.LSUpdate:
				assert.Equal(t, wire.LinkUp, m.State, "to node %d: LS_UPDATE(DOWN) left out: %s", dst, w)
			default:
				t.Errorf("to node %d: %s left out", dst, w)
			}
		}
		assert.Equal(t, len(got), j, "to node %d: the reduced node sent messages the compatible one did not:\n%s", dst, listing(got[j:]))
	}
	st := reduced.M.Stats()
	t.Logf("left out %d sends (FULL_TOP_UPDATEs not flooded on %d, links UP coalesced %d)", omitted, st.TopSuppressed, st.UpCoalesced)
}

func session1Config(t *testing.T, frames []golden.Frame, opensipsFlooding bool) core.Config {
	const self int32 = 1
	return core.Config{
		NodeID:           self,
		OpenSIPSFlooding: opensipsFlooding,
		PingInterval:     labPingInterval,
		PingTimeout:      labPingTimeout,
		NodeTimeout:      labNodeTimeout,
		Discovery:        true,
		Clusters: []core.ClusterConfig{{
			ID:   labCluster,
			Self: selfInfo(t, frames, self),
			// Node 1 had fallen back to synced (seed_fallback_interval 3 s)
			// long before node 2 arrived (node1.log 01:58:12).
			Capabilities: []wire.CapState{{Name: "cachedb-local-repl", Synced: true}},
		}},
	}
}

func checkSession1Join(t *testing.T, r *replay, frames []golden.Frame, self int32) {
	peers := []int32{2, 3}

	t.Run("Inputs", func(t *testing.T) {
		st := r.M.Stats()
		t.Logf("machine stats: %+v", st)
		assert.Equal(t, uint64(len(r.Fed)+r.SynthPongs), st.Received)
		assert.Zero(t, st.Malformed, "malformed")
		assert.Zero(t, st.UnknownCluster, "unknown cluster")
		assert.Zero(t, st.OwnID, "own id")
		assert.Zero(t, st.UnknownNode, "unknown node")
		assert.Zero(t, st.SourceIP, "source IP")
		assert.Zero(t, st.Disabled, "disabled")
		// Node 1 is the seed: nobody answers it with UNKNOWN_ID, so the
		// early re-probe after UNKNOWN_ID (link.go) is not exercised.
		for _, i := range r.Fed {
			if m, err := wire.Parse(frames[i].Frame); err == nil && m.MsgType() == wire.TypeUnknownID {
				t.Errorf("frame #%d: node 1 was sent UNKNOWN_ID; the test assumes it never is", i)
			}
		}
	})

	t.Run("StrictSequence", func(t *testing.T) {
		shift := topSeqShift(r.Got, self)
		for _, dst := range peers {
			t.Run(fmt.Sprintf("to_node_%d", dst), func(t *testing.T) {
				exp := strictMsgs(r.Expected, dst)
				got := strictMsgs(r.Got, dst)
				t.Logf("OpenSIPS node 1 -> node %d (%d):\n%s", dst, len(exp), listing(exp))
				t.Logf("Go node 1 -> node %d (%d):\n%s", dst, len(got), listing(got))
				require.Equal(t, typeSeq(exp), typeSeq(got), "message types in order, node 1 -> node %d", dst)
				matched, identical := 0, 0
				for i := range exp {
					e, g := exp[i], got[i]
					sh := int32(0)
					if ft, ok := g.Msg.(*wire.FullTopUpdate); ok && ft.Src == self {
						sh = shift[g.At]
						if sh != 0 {
							t.Logf("frame #%d: FULL_TOP_UPDATE top_seq %d in the capture, %d from the Go node: %d Go-only refresh(es) sent before it took a value (see GoOnlyTopologyRefresh)",
								e.Index, e.Msg.(*wire.FullTopUpdate).Seq, ft.Seq, sh)
						}
					}
					if !assert.Equal(t, normalize(e.Msg, 0), normalize(g.Msg, sh),
						"frame #%d (+%.6fs) vs Go message %d (+%.6fs, %s): fields differ", e.Index, e.Rel.Seconds(), i, g.Rel.Seconds(), g.Step) {
						continue
					}
					matched++
					if sh == 0 && sameTimestamps(e.Msg, g.Msg) {
						if assert.True(t, bytes.Equal(e.Frame, g.Frame), "frame #%d: same fields but different bytes\n capture %x\n go      %x", e.Index, e.Frame, g.Frame) {
							identical++
						}
					} else if !sameTimestamps(e.Msg, g.Msg) {
						t.Logf("frame #%d: timestamps differ (set aside): capture %s, go %s", e.Index, describeMsg(e.Msg), describeMsg(g.Msg))
					}
				}
				t.Logf("node %d: %d of %d messages match field by field, %d of them byte for byte", dst, matched, len(exp), identical)
			})
		}
	})

	t.Run("GoOnlyTopologyRefresh", func(t *testing.T) {
		refreshes := goRefreshes(r.Got, self)
		if len(refreshes) == 0 {
			t.Log("the Go node sent no topology refresh")
			return
		}
		linkUps := map[time.Time]bool{}
		for _, e := range r.Events {
			if e.Kind == core.LinkUp || e.Kind == core.LinkDown || e.Kind == core.NodeUp || e.Kind == core.NodeDown {
				linkUps[e.At] = true
			}
		}
		bySeq := map[int32][]ioMsg{}
		var seqs []int32
		for _, x := range refreshes {
			m := x.Msg.(*wire.FullTopUpdate)
			if _, ok := bySeq[m.Seq]; !ok {
				seqs = append(seqs, m.Seq)
			}
			bySeq[m.Seq] = append(bySeq[m.Seq], x)
		}
		for _, seq := range seqs {
			xs := bySeq[seq]
			m := xs[0].Msg.(*wire.FullTopUpdate)
			var dsts []int32
			for _, x := range xs {
				dsts = append(dsts, x.Dst)
				assert.Equal(t, xs[0].At, x.At, "refresh seq %d sent at different times", seq)
				assert.Equal(t, m, x.Msg, "refresh seq %d differs between destinations", seq)
			}
			t.Logf("Go-only FULL_TOP_UPDATE at +%.6fs to %v (OpenSIPS sends nothing then): %s", xs[0].Rel.Seconds(), dsts, describeMsg(m))
			// Only our own entry, with our UP neighbours, sent to each of them.
			if assert.Len(t, m.Nodes, 1, "refresh seq %d", seq) {
				e := m.Nodes[0]
				assert.Equal(t, self, e.Node)
				assert.Nil(t, e.Desc)
				assert.Zero(t, e.LSTimestamp)
				assert.ElementsMatch(t, e.Neighbors, dsts, "refresh seq %d goes to every UP neighbour it lists", seq)
			}
			assert.Equal(t, []int32{self}, m.Path)
			// A ping timeout after a link or reachability change.
			assert.True(t, linkUps[xs[0].At.Add(-labPingTimeout)],
				"refresh seq %d at +%.6fs does not follow a link change by the ping timeout", seq, xs[0].Rel.Seconds())
		}
	})

	t.Run("KeepAlivePings", func(t *testing.T) {
		for _, dst := range peers {
			t.Run(fmt.Sprintf("to_node_%d", dst), func(t *testing.T) {
				data := r.DataSent[dst]
				// The machine: exactly at the deadline.
				goLags := keepAliveLags(t, r.Got, dst, data)
				for _, l := range goLags {
					assert.Equal(t, time.Duration(0), l.lag, "Go keep-alive at +%.6fs: not at its deadline (+%.6fs)", l.at.Sub(r.T0).Seconds(), l.due.Sub(r.T0).Seconds())
				}
				// OpenSIPS: at the first 500 ms tick at or after the
				// deadline; 100 ms more for scheduling jitter (the largest
				// observed lag is 527 ms, frame #181).
				capLags := keepAliveLags(t, r.Expected, dst, data)
				var worst time.Duration
				for _, l := range capLags {
					worst = max(worst, l.lag)
					assert.True(t, l.lag >= 0 && l.lag <= labPingTimeout+100*time.Millisecond,
						"OpenSIPS keep-alive #%d at +%.6fs is %v after its deadline: the rule does not describe it", l.index, l.at.Sub(r.T0).Seconds(), l.lag)
				}
				t.Logf("keep-alive PINGs to node %d: OpenSIPS %d at %s (largest lag after the deadline %v); Go %d at %s",
					dst, len(capLags), lagTimes(capLags, r.T0), worst, len(goLags), lagTimes(goLags, r.T0))
				// The Go node pings up to a tick earlier each time, which
				// adds up to a ping or two over the window.
				assert.InDelta(t, len(capLags), len(goLags), 2, "keep-alive PINGs to node %d over the window", dst)
				assert.NotEmpty(t, goLags, "no keep-alive to node %d", dst)
			})
		}
	})

	t.Run("Events", func(t *testing.T) {
		// node1.log: "node 1 sees node 2 cluster 1 new_state=1" (01:58:18),
		// then the same for node 3 (01:58:27); nothing goes down before the
		// kill at phaseB-kill3.
		var got []string
		for _, e := range r.Events {
			switch e.Kind {
			case core.NodeAdded, core.LinkUp, core.LinkDown, core.NodeUp, core.NodeDown, core.NodeRemoved:
				got = append(got, fmt.Sprintf("%s %d", e.Kind, e.Node))
			}
		}
		assert.Equal(t, []string{"node-added 2", "link-up 2", "node-up 2", "node-added 3", "link-up 3", "node-up 3"}, got)
		// The links came UP on the PONGs that brought them UP at OpenSIPS
		// node 1 (frames #4 and #39; spec §6.3).
		for _, c := range []struct {
			node  int32
			frame int
		}{{2, 4}, {3, 39}} {
			i := slices.IndexFunc(r.Events, func(e timedEvent) bool { return e.Kind == core.LinkUp && e.Node == c.node })
			if assert.GreaterOrEqual(t, i, 0) {
				assert.Equal(t, captureTime(frames[c.frame].Time), r.Events[i].At, "link to node %d UP", c.node)
			}
		}
	})

	t.Run("SettledView", func(t *testing.T) {
		// As node 3's own FULL_TOP_UPDATE (#71) and node 2's LS_UPDATE
		// (#50) describe the mesh: 2-3 UP, both linked to node 1.
		cv := r.M.View().Cluster(labCluster)
		require.NotNil(t, cv)
		require.Len(t, cv.Nodes, 2)
		for _, c := range []struct {
			id    int32
			neigh []int32
			sip   string
		}{{2, []int32{3}, "127.0.0.1:25062"}, {3, []int32{2}, "127.0.0.1:25063"}} {
			n := cv.Node(c.id)
			require.NotNil(t, n, "node %d", c.id)
			assert.Equal(t, core.Up, n.State, "node %d", c.id)
			assert.True(t, n.Reachable, "node %d", c.id)
			assert.Equal(t, c.id, n.NextHop, "node %d", c.id)
			assert.Equal(t, c.neigh, n.Neighbors, "node %d", c.id)
			assert.Equal(t, "bin:"+labAddr(c.id), n.URL, "node %d", c.id)
			assert.Equal(t, c.sip, n.SIPAddr, "node %d", c.id)
			assert.Equal(t, int32(3), n.Priority, "node %d", c.id)
			assert.Equal(t, int32(3), n.PingRetries, "node %d", c.id)
		}
	})
}

// session1JoinEnd is the end of the replayed window: the first scripted
// action, i.e. the first MI_CMD on the wire or the first phase mark,
// whichever comes first.
func session1JoinEnd(t *testing.T, frames []golden.Frame) time.Time {
	t.Helper()
	var end time.Time
	for _, f := range frames {
		if m, err := wire.Parse(f.Frame); err == nil && m.MsgType() == wire.TypeMICmd {
			end = captureTime(f.Time)
			break
		}
	}
	require.False(t, end.IsZero(), "no MI_CMD in session 1")
	marks := phaseMarks(t)
	kill, ok := marks["phaseB-kill3"]
	require.True(t, ok, "phase mark phaseB-kill3 missing")
	for name, at := range marks {
		if strings.HasPrefix(name, "phase") && at.Before(end) {
			end = at
		}
	}
	require.True(t, end.Before(kill))
	// Node 3's join (spec §7.2: 47 frames, about 0.5 s) must be inside.
	require.True(t, captureTime(frames[80].Time).Before(end), "the window ends before node 3's join settled")
	return end
}

// selfInfo describes the stand-in node as the capture describes node self;
// node 1's description never travels in session 1 (it is the seed and is
// never asked for it), so its SIP address is the lab's pattern.
func selfInfo(t *testing.T, frames []golden.Frame, self int32) core.NodeInfo {
	t.Helper()
	info := core.NodeInfo{URL: "bin:" + labAddr(self), SIPAddr: fmt.Sprintf("127.0.0.1:%d", 25060+int(self)),
		Priority: 3, PingRetries: 3, Seed: true}
	for _, f := range frames {
		m, err := wire.Parse(f.Frame)
		if err != nil {
			continue
		}
		var d *wire.Description
		switch m := m.(type) {
		case *wire.NodeDescription:
			if m.Src == self {
				d = &m.Desc
			}
		case *wire.FullTopUpdate:
			for _, e := range m.Nodes {
				if e.Node == self && e.Desc != nil {
					d = e.Desc
				}
			}
		}
		if d != nil {
			require.Equal(t, info.URL, d.URL)
			info.SIPAddr, info.Priority, info.PingRetries = d.SIPAddr, d.Priority, d.PingRetries
			t.Logf("node %d's description from frame #%d: %+v", self, f.Index, *d)
			break
		}
	}
	return info
}

var comparedTypes = map[wire.Type]bool{
	wire.TypePing: true, wire.TypePong: true, wire.TypeUnknownID: true,
	wire.TypeNodeDescription: true, wire.TypeLSUpdate: true, wire.TypeFullTopUpdate: true,
}

// isGoRefresh reports a FULL_TOP_UPDATE the Go node sent from a timer: a
// link-up FULL_TOP_UPDATE is only ever sent on a PONG, and floods on
// received updates, so one sent from Tick is sendRefresh's.
func isGoRefresh(x ioMsg) bool {
	return x.Index < 0 && x.Tick && x.Type() == wire.TypeFullTopUpdate
}

// strictMsgs are the messages to dst compared in order.
func strictMsgs(xs []ioMsg, dst int32) []ioMsg {
	var out []ioMsg
	for _, x := range xs {
		if x.Dst != dst || !comparedTypes[x.Type()] {
			continue
		}
		if x.Type() == wire.TypePing && x.KeepAlive || isGoRefresh(x) {
			continue
		}
		out = append(out, x)
	}
	return out
}

func goRefreshes(xs []ioMsg, self int32) []ioMsg {
	var out []ioMsg
	for _, x := range xs {
		if isGoRefresh(x) && x.Msg.(*wire.FullTopUpdate).Src == self {
			out = append(out, x)
		}
	}
	return out
}

// topSeqShift maps the time of each FULL_TOP_UPDATE the Go node originated
// to the number of refreshes (distinct top_seq values) it sent before.
func topSeqShift(xs []ioMsg, self int32) map[time.Time]int32 {
	out := map[time.Time]int32{}
	seen := map[int32]bool{}
	for _, x := range xs {
		m, ok := x.Msg.(*wire.FullTopUpdate)
		if !ok || m.Src != self {
			continue
		}
		if isGoRefresh(x) {
			seen[m.Seq] = true
			continue
		}
		out[x.At] = int32(len(seen))
	}
	return out
}

func typeSeq(xs []ioMsg) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.Type().String()
	}
	return out
}

func listing(xs []ioMsg) string {
	var b strings.Builder
	for _, x := range xs {
		b.WriteString("    ")
		b.WriteString(x.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// normalize sets timestamps aside and takes away the top_seq values spent
// on refreshes. Both sides come from wire.Parse, so empty lists are nil on
// both.
func normalize(m wire.Message, topShift int32) wire.Message {
	switch m := m.(type) {
	case *wire.LSUpdate:
		c := *m
		c.Timestamp = 0
		return &c
	case *wire.FullTopUpdate:
		c := *m
		c.Timestamp = 0
		c.Seq -= topShift
		return &c
	}
	return m
}

func sameTimestamps(a, b wire.Message) bool {
	switch a := a.(type) {
	case *wire.LSUpdate:
		return a.Timestamp == b.(*wire.LSUpdate).Timestamp
	case *wire.FullTopUpdate:
		return a.Timestamp == b.(*wire.FullTopUpdate).Timestamp
	}
	return true
}

type keepAliveLag struct {
	index   int // capture frame, or -1
	at, due time.Time
	lag     time.Duration
}

// keepAliveLags computes, for each keep-alive PING to dst in xs, when it was
// due by spec §6.2 row 5: ping_interval after the later of the previous
// PING to dst and the last data-plane packet sent to dst.
func keepAliveLags(t *testing.T, xs []ioMsg, dst int32, dataSent []time.Time) []keepAliveLag {
	t.Helper()
	var out []keepAliveLag
	var lastPing time.Time
	for _, x := range xs {
		p, ok := x.Msg.(*wire.Ping)
		if !ok || x.Dst != dst {
			continue
		}
		if !p.ReqNodeList {
			last := lastPing
			for _, d := range dataSent {
				if d.Before(x.At) && d.After(last) {
					last = d
				}
			}
			if lastPing.IsZero() {
				t.Errorf("keep-alive to node %d at %v before any probe", dst, x.At)
			}
			due := last.Add(labPingInterval)
			out = append(out, keepAliveLag{index: x.Index, at: x.At, due: due, lag: x.At.Sub(due)})
		}
		lastPing = x.At
	}
	return out
}

func lagTimes(ls []keepAliveLag, t0 time.Time) string {
	var s []string
	for _, l := range ls {
		s = append(s, fmt.Sprintf("+%.3f", l.at.Sub(t0).Seconds()))
	}
	return "[" + strings.Join(s, " ") + "]"
}
