package core_test

// Replay machinery for interop_test.go: it drives one core.Machine with the
// frames a captured OpenSIPS node received, at their capture times, and
// records what the machine sends next to what the OpenSIPS node sent.

import (
	"bufio"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/golden"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// The lab (spec §17.1): node N listens on 127.0.0.1:2556N, cluster 1.
const (
	labCluster      int32 = 1
	labPingInterval       = 2 * time.Second
	labPingTimeout        = 500 * time.Millisecond
	labNodeTimeout        = 6 * time.Second
)

var labIP = netip.MustParseAddr("127.0.0.1")

func labListenerPort(node int32) int { return 25560 + int(node) }

func labAddr(node int32) string { return fmt.Sprintf("127.0.0.1:%d", labListenerPort(node)) }

// captureTime turns a capture timestamp (unix seconds, microsecond
// precision) into a time.Time without float rounding noise.
func captureTime(ts float64) time.Time { return time.UnixMicro(int64(math.Round(ts * 1e6))) }

// ioMsg is one clusterer message on the wire: sent by the captured
// OpenSIPS node (Index >= 0) or by the Go machine (Index < 0).
type ioMsg struct {
	Index int // capture frame index; -1 for the Go node's sends
	At    time.Time
	Rel   time.Duration // since the first frame of the session
	Dst   int32         // the node it went to
	Frame []byte
	Msg   wire.Message
	// For the Go node's sends: the input that produced it, and whether it
	// came from a timer (Tick) rather than from a received packet.
	Step string
	Tick bool
	// For PONGs: whether the PING they answer asked for the node list.
	// For PINGs: whether it is a keep-alive (req_node_list=0).
	KeepAlive bool
}

type timedEvent struct {
	At time.Time
	core.Event
}

func (x ioMsg) Type() wire.Type { return x.Msg.MsgType() }

func (x ioMsg) String() string {
	who := "go"
	if x.Index >= 0 {
		who = fmt.Sprintf("#%d", x.Index)
	}
	s := fmt.Sprintf("%-5s %9.6fs ->%d %s", who, x.Rel.Seconds(), x.Dst, describeMsg(x.Msg))
	if x.Step != "" {
		s += "  [" + x.Step + "]"
	}
	return s
}

// describeMsg is a one-line summary of the fields that matter here.
func describeMsg(m wire.Message) string {
	switch m := m.(type) {
	case *wire.Ping:
		return fmt.Sprintf("PING req_node_list=%v", m.ReqNodeList)
	case *wire.Pong:
		return fmt.Sprintf("PONG nodes=%v", m.Nodes)
	case *wire.LSUpdate:
		return fmt.Sprintf("LS_UPDATE src=%d seq=%d ts=%d neigh=%d %s path=%v", m.Src, m.Seq, m.Timestamp, m.Neighbor, m.State, m.Path)
	case *wire.FullTopUpdate:
		var es []string
		for _, e := range m.Nodes {
			d := ""
			if e.Desc != nil {
				d = fmt.Sprintf(" descr{%s %s prio=%d retries=%d}", e.Desc.URL, e.Desc.SIPAddr, e.Desc.Priority, e.Desc.PingRetries)
			}
			es = append(es, fmt.Sprintf("{%d%s ls=%d/%d neigh=%v}", e.Node, d, e.LSSeq, e.LSTimestamp, e.Neighbors))
		}
		return fmt.Sprintf("FULL_TOP_UPDATE src=%d seq=%d ts=%d %s path=%v", m.Src, m.Seq, m.Timestamp, strings.Join(es, " "), m.Path)
	case *wire.UnknownID:
		return "UNKNOWN_ID"
	case *wire.NodeDescription:
		return fmt.Sprintf("NODE_DESCRIPTION src=%d %s %s prio=%d retries=%d path=%v", m.Src, m.Desc.URL, m.Desc.SIPAddr, m.Desc.Priority, m.Desc.PingRetries, m.Path)
	case *wire.CapUpdate:
		return fmt.Sprintf("CAP_UPDATE src=%d seq=%d nodes=%v reply=%v path=%v", m.Src, m.Seq, m.Nodes, m.RequireReply, m.Path)
	}
	return m.MsgType().String()
}

// portOwners maps every TCP port of a session to the node that owns it:
// listener ports by the lab layout, ephemeral ports by the
// clusterer-internal frames sent from them to a listener (internal
// messages always travel between direct neighbours; see hopSender).
func portOwners(tb testing.TB, frames []golden.Frame) map[int]int32 {
	tb.Helper()
	owner := map[int]int32{}
	for n := int32(1); n <= 3; n++ {
		owner[labListenerPort(n)] = n
	}
	for _, f := range frames {
		if f.Listener == 0 {
			continue
		}
		p, err := bin.Parse(f.Frame)
		if err != nil {
			tb.Fatalf("frame #%d: %v", f.Index, err)
		}
		if p.Capability != wire.CapInternal {
			continue
		}
		msg, err := wire.Decode(p)
		if err != nil {
			tb.Fatalf("frame #%d: %v", f.Index, err)
		}
		src := hopSender(msg)
		if o, ok := owner[f.SrcPort]; ok && o != src {
			tb.Fatalf("frame #%d: port %d used by nodes %d and %d", f.Index, f.SrcPort, o, src)
		}
		owner[f.SrcPort] = src
	}
	return owner
}

// hopSender is the node that put a clusterer-internal message on this TCP
// hop: the last node of the path of a flooded update (its src_node_id is
// the originator), otherwise src_node_id.
func hopSender(m wire.Message) int32 {
	switch m := m.(type) {
	case *wire.LSUpdate:
		return m.Path[len(m.Path)-1]
	case *wire.FullTopUpdate:
		return m.Path[len(m.Path)-1]
	case *wire.NodeDescription:
		return m.Path[len(m.Path)-1]
	case *wire.CapUpdate:
		return m.Path[len(m.Path)-1]
	}
	return originOf(m)
}

func originOf(m wire.Message) int32 {
	switch m := m.(type) {
	case *wire.Ping:
		return m.Src
	case *wire.Pong:
		return m.Src
	case *wire.LSUpdate:
		return m.Src
	case *wire.FullTopUpdate:
		return m.Src
	case *wire.UnknownID:
		return m.Src
	case *wire.NodeDescription:
		return m.Src
	case *wire.CapUpdate:
		return m.Src
	}
	return 0
}

// phaseMarks reads pcap/phase-marks.txt: action name -> unix time.
func phaseMarks(tb testing.TB) map[string]time.Time {
	tb.Helper()
	f, err := os.Open(filepath.Join(golden.Dir(tb), "pcap", "phase-marks.txt"))
	if err != nil {
		tb.Fatalf("phase marks: %v", err)
	}
	defer f.Close()
	out := map[string]time.Time{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 2 {
			continue
		}
		ts, err := strconv.ParseFloat(fs[1], 64)
		if err != nil {
			tb.Fatalf("phase marks: %q: %v", sc.Text(), err)
		}
		out[fs[0]] = captureTime(ts)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("phase marks: %v", err)
	}
	return out
}

// replay is one run of a Go machine standing in for captured node Self.
type replay struct {
	tb   testing.TB
	Self int32
	M    *core.Machine
	T0   time.Time // first frame of the session
	End  time.Time // frames at or after End are not replayed

	owner map[int]int32
	// selfConn is Self's own (ephemeral) port to each peer's listener in
	// the capture: the connection on which keep-alive PONGs come back.
	selfConn map[int32]int
	connPeer map[uint64]int32 // ConnID given to the machine -> peer node

	now    time.Time
	inPing *bool // while receiving a PING: is it a keep-alive?

	Expected []ioMsg // what the OpenSIPS node sent (clusterer messages)
	Got      []ioMsg // what the Go machine sent
	Events   []timedEvent
	// DataSent are the times Self sent data-plane packets (clusterer-extra
	// or module) to each peer in the capture, reported with Activity.
	DataSent map[int32][]time.Time

	Fed         []int // capture frames given to Receive
	Activity    []int // capture frames reported with Activity
	SkippedPong []int // PONGs answering the OpenSIPS node's keep-alives
	SynthPongs  int   // PONGs made up for the Go node's keep-alives
}

func newReplay(tb testing.TB, self int32, frames []golden.Frame, cfg core.Config, end time.Time) *replay {
	tb.Helper()
	m, err := core.New(cfg)
	if err != nil {
		tb.Fatalf("core.New: %v", err)
	}
	r := &replay{tb: tb, Self: self, M: m, T0: captureTime(frames[0].Time), End: end,
		owner: portOwners(tb, frames), selfConn: map[int32]int{}, connPeer: map[uint64]int32{},
		DataSent: map[int32][]time.Time{}}
	for _, f := range frames {
		if r.owner[f.SrcPort] == self && f.Listener != 0 && f.Listener != int(self) {
			if _, ok := r.selfConn[int32(f.Listener)]; !ok {
				r.selfConn[int32(f.Listener)] = f.SrcPort
			}
		}
	}
	return r
}

// advance runs every timer due up to t, as the runtime does: a deadline in
// the past ("as soon as possible") fires at the current time.
func (r *replay) advance(t time.Time) {
	for range 10000 {
		d := r.M.Deadline()
		if d.IsZero() || d.After(t) {
			return
		}
		if d.Before(r.now) {
			d = r.now
		}
		r.now = d
		r.M.Tick(d)
		r.collect(d, "tick", true)
	}
	r.tb.Fatalf("replay: timers keep firing before %v", t)
}

// collect drains the machine and records its sends. A keep-alive PING is
// answered at once with the PONG the OpenSIPS peer would send (see the
// test's comment on keep-alives).
func (r *replay) collect(at time.Time, step string, tick bool) {
	sends, events := r.M.Drain()
	for _, e := range events {
		r.Events = append(r.Events, timedEvent{At: at, Event: e})
	}
	var keepAlives []int32
	for _, s := range sends {
		msg, err := wire.Parse(s.Frame)
		if err != nil {
			r.tb.Errorf("go node sent an unparseable frame at %v (%s): %v", at.Sub(r.T0), step, err)
			continue
		}
		dst := s.Node
		if s.ConnID != 0 {
			p, ok := r.connPeer[s.ConnID]
			if !ok {
				r.tb.Errorf("go node replied on unknown connection %d: %s", s.ConnID, describeMsg(msg))
				continue
			}
			if s.Addr != "" {
				r.tb.Errorf("go node reply on connection %d also names address %q", s.ConnID, s.Addr)
			}
			dst = p
		} else if want := labAddr(s.Node); s.Addr != want {
			r.tb.Errorf("go node sent %s to node %d at %q, want %q", describeMsg(msg), s.Node, s.Addr, want)
		}
		if s.Cluster != labCluster {
			r.tb.Errorf("go node sent %s in cluster %d", describeMsg(msg), s.Cluster)
		}
		x := ioMsg{Index: -1, At: at, Rel: at.Sub(r.T0), Dst: dst, Frame: s.Frame, Msg: msg, Step: step, Tick: tick}
		if p, ok := msg.(*wire.Ping); ok && !p.ReqNodeList {
			x.KeepAlive = true
			keepAlives = append(keepAlives, dst)
		}
		if _, ok := msg.(*wire.Pong); ok && r.inPing != nil {
			x.KeepAlive = *r.inPing
		}
		r.Got = append(r.Got, x)
	}
	for _, peer := range keepAlives {
		r.SynthPongs++
		frame, err := (&wire.Pong{Origin: wire.Origin{Cluster: labCluster, Src: peer}}).Append(nil)
		if err != nil {
			r.tb.Fatal(err)
		}
		r.receive(at, r.ownConnID(peer), frame, fmt.Sprintf("made-up PONG from %d", peer))
	}
}

// ownConnID is the ConnID of Self's own connection to peer.
func (r *replay) ownConnID(peer int32) uint64 {
	port, ok := r.selfConn[peer]
	if !ok {
		port = 1000 + int(peer) // a connection the capture never saw
	}
	id := uint64(port)
	r.connPeer[id] = peer
	return id
}

func (r *replay) receive(at time.Time, conn uint64, frame []byte, step string) {
	p, err := bin.Parse(frame)
	if err != nil {
		r.tb.Fatalf("replay: %s: %v", step, err)
	}
	r.now = at
	r.inPing = nil
	if p.Capability == wire.CapInternal && wire.Type(p.Type) == wire.TypePing {
		if m, err := wire.Decode(p); err == nil {
			keepAlive := !m.(*wire.Ping).ReqNodeList
			r.inPing = &keepAlive
		}
	}
	r.M.Receive(at, core.Source{ConnID: conn, IP: labIP}, p)
	r.collect(at, step, false)
	r.inPing = nil
}

// Run replays the frames before End. Frames sent by Self are recorded as
// the expectation (clusterer messages) and reported to the machine as
// data-plane sends when they are clusterer-extra or module packets, as the
// runtime does with Activity. Frames received by Self are given to Receive
// (clusterer messages) or reported with Activity (module packets), except
// PONGs answering Self's keep-alive PINGs.
func (r *replay) Run(frames []golden.Frame) {
	r.now = r.T0
	r.M.Start(r.T0)
	r.collect(r.T0, "start", true)
	pendingPings := map[int32][]bool{} // Self's pings per peer, oldest first: keep-alive?
	for _, f := range frames {
		at := captureTime(f.Time)
		if !at.Before(r.End) {
			break
		}
		from, okFrom := r.owner[f.SrcPort]
		to, okTo := r.owner[f.DstPort]
		if !okFrom || !okTo {
			r.tb.Fatalf("frame #%d: unknown port owner (%d -> %d)", f.Index, f.SrcPort, f.DstPort)
		}
		if from != r.Self && to != r.Self {
			continue
		}
		p, err := bin.Parse(f.Frame)
		if err != nil {
			r.tb.Fatalf("frame #%d: %v", f.Index, err)
		}
		clusterer := p.Capability == wire.CapInternal || p.Capability == wire.CapExtra
		r.advance(at)
		if r.now.Before(at) {
			r.now = at
		}
		step := fmt.Sprintf("#%d from %d", f.Index, from)
		if from == r.Self {
			if clusterer {
				msg, err := wire.Decode(p)
				if err != nil {
					r.tb.Fatalf("frame #%d: %v", f.Index, err)
				}
				x := ioMsg{Index: f.Index, At: at, Rel: at.Sub(r.T0), Dst: to, Frame: f.Frame, Msg: msg}
				switch m := msg.(type) {
				case *wire.Ping:
					x.KeepAlive = !m.ReqNodeList
					pendingPings[to] = append(pendingPings[to], x.KeepAlive)
				case *wire.Pong:
					// Answers one of the peer's pings; marked below.
				}
				r.Expected = append(r.Expected, x)
			}
			if p.Capability != wire.CapInternal {
				// Data-plane traffic (sharing tags, sync, generic
				// messages, module replication): the Go node's upper
				// layers would send it; the machine only hears of it.
				r.Activity = append(r.Activity, f.Index)
				r.DataSent[to] = append(r.DataSent[to], at)
				r.M.Activity(labCluster, to, at, time.Time{})
				r.collect(at, step+" (activity: sent)", false)
			}
			continue
		}
		// Received by Self.
		var conn uint64
		if f.DstPort == labListenerPort(r.Self) {
			conn = uint64(f.SrcPort) // the peer's connection, accepted by Self
		} else {
			conn = uint64(f.DstPort) // back on Self's own connection
		}
		r.connPeer[conn] = from
		if p.Capability == wire.CapInternal && wire.Type(p.Type) == wire.TypePong {
			q := pendingPings[from]
			if len(q) == 0 {
				r.tb.Fatalf("frame #%d: PONG from %d answers no ping", f.Index, from)
			}
			keepAlive := q[0]
			pendingPings[from] = q[1:]
			if keepAlive {
				r.SkippedPong = append(r.SkippedPong, f.Index)
				continue
			}
		}
		if !clusterer {
			r.Activity = append(r.Activity, f.Index)
			r.M.Activity(labCluster, from, time.Time{}, at)
			r.collect(at, step+" (activity: received)", false)
			continue
		}
		r.Fed = append(r.Fed, f.Index)
		r.receive(at, conn, f.Frame, step)
	}
	r.advance(r.End.Add(-time.Nanosecond))
	// Mark which PONGs answer keep-alives, on both sides: a PONG answers
	// the oldest unanswered PING from that peer.
	markPongs(r.Expected, frames, r.Self, r.owner, r.End)
}

// markPongs sets KeepAlive on the PONGs Self sent (in xs) that answer a
// keep-alive PING of the peer.
func markPongs(xs []ioMsg, frames []golden.Frame, self int32, owner map[int]int32, end time.Time) {
	pings := map[int32][]bool{}
	byIndex := map[int]*ioMsg{}
	for i := range xs {
		if xs[i].Index >= 0 {
			byIndex[xs[i].Index] = &xs[i]
		}
	}
	for _, f := range frames {
		if !captureTime(f.Time).Before(end) {
			break
		}
		p, err := bin.Parse(f.Frame)
		if err != nil || p.Capability != wire.CapInternal {
			continue
		}
		from, to := owner[f.SrcPort], owner[f.DstPort]
		switch wire.Type(p.Type) {
		case wire.TypePing:
			if to == self {
				m, _ := wire.Decode(p)
				pings[from] = append(pings[from], !m.(*wire.Ping).ReqNodeList)
			}
		case wire.TypePong:
			if from == self {
				if q := pings[to]; len(q) > 0 {
					if x := byIndex[f.Index]; x != nil {
						x.KeepAlive = q[0]
					}
					pings[to] = q[1:]
				}
			}
		}
	}
}
