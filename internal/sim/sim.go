// Package sim is a discrete-event simulator for core.Machines: many nodes,
// virtual time, and a network of TCP-like links that can be cut,
// blackholed, delayed or made lossy, and nodes that can be killed and
// restarted. Runs are deterministic for a given seed, so a failing random
// schedule is reproduced by its seed.
package sim

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// Epoch is the virtual time every simulation starts at.
var Epoch = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

// Sim is one simulated network of nodes.
type Sim struct {
	now     time.Time
	seq     uint64
	queue   eventQueue
	rng     *rand.Rand
	nodes   map[int32]*Node
	byAddr  map[string]*Node
	faults  map[[2]int32]*fault // directed: [from, to]
	conns   map[uint64]conn
	connSeq uint64
	// lastAt is the last delivery time scheduled on each direction of a
	// connection: jitter and delays never reorder a connection's packets,
	// as TCP never does.
	lastAt map[connDir]time.Time

	// Latency is the one-way delay of every link; Jitter adds up to that
	// much more, drawn from the seeded source, without reordering the
	// packets of a connection.
	Latency time.Duration
	Jitter  time.Duration
	// Trace, when set, receives one line per delivered message.
	Trace func(line string)
	// Sent counts messages by type, for load checks.
	Sent map[wire.Type]int
	// Relayed counts packets relayed for other nodes.
	Relayed struct{ OK, NoRoute int }
}

type fault struct {
	cut       bool // refused and reset
	blackhole bool // silently dropped
	delay     time.Duration
	drop      float64
}

type conn struct{ from, to int32 }

type connDir struct {
	conn uint64
	from int32
}

// Node is one simulated node.
type Node struct {
	ID     int32
	IP     netip.Addr
	Addr   string
	M      *core.Machine
	Alive  bool
	Events []TimedEvent
	Cfg    core.Config
	// Restarts counts the times the node was restarted (Restart).
	Restarts int

	sim       *Sim
	tickAt    time.Time
	tickGen   uint64
	connected map[int32]bool // outgoing connection established to the node
	connTo    map[int32]uint64
}

// TimedEvent is a core event with the time it was raised.
type TimedEvent struct {
	At time.Time
	core.Event
}

// New returns an empty simulation.
func New(seed uint64) *Sim {
	return &Sim{
		now:     Epoch,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		nodes:   map[int32]*Node{},
		byAddr:  map[string]*Node{},
		faults:  map[[2]int32]*fault{},
		conns:   map[uint64]conn{},
		lastAt:  map[connDir]time.Time{},
		Latency: 200 * time.Microsecond,
		Sent:    map[wire.Type]int{},
	}
}

// Now is the current virtual time.
func (s *Sim) Now() time.Time { return s.now }

// Rand is the simulation's seeded random source.
func (s *Sim) Rand() *rand.Rand { return s.rng }

// NodeAddr is the listener address of node id: 127.0.<id/250>.<id%250+1>:5555.
func NodeAddr(id int32) (netip.Addr, string) {
	ip := netip.AddrFrom4([4]byte{127, 0, byte(id / 250), byte(id%250 + 1)})
	return ip, netip.AddrPortFrom(ip, 5555).String()
}

// URL is node id's BIN URL.
func URL(id int32) string {
	_, a := NodeAddr(id)
	return "bin:" + a
}

// Add creates a node from cfg (which must name the node's own URL as
// URL(cfg.NodeID)); it is not started.
func (s *Sim) Add(cfg core.Config) (*Node, error) {
	m, err := core.New(cfg)
	if err != nil {
		return nil, err
	}
	ip, addr := NodeAddr(cfg.NodeID)
	n := &Node{ID: cfg.NodeID, IP: ip, Addr: addr, M: m, Cfg: cfg, sim: s,
		connected: map[int32]bool{}, connTo: map[int32]uint64{}}
	s.nodes[n.ID] = n
	s.byAddr[addr] = n
	return n, nil
}

// Node returns node id.
func (s *Sim) Node(id int32) *Node { return s.nodes[id] }

// IDs lists the node ids in ascending order.
func (s *Sim) IDs() []int32 {
	ids := make([]int32, 0, len(s.nodes))
	for id := range s.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Start starts a node's machine.
func (s *Sim) Start(id int32) {
	n := s.nodes[id]
	n.Alive = true
	n.M.Start(s.now)
	s.flush(n)
}

// StartAll starts every node, in id order.
func (s *Sim) StartAll() {
	for _, id := range s.IDs() {
		s.Start(id)
	}
}

// Kill stops a node abruptly: its connections are reset, so peers that
// had one see the failure at once (as a TCP RST/FIN does).
func (s *Sim) Kill(id int32) {
	n := s.nodes[id]
	n.Alive = false
	n.tickGen++
	for _, pid := range s.IDs() {
		p := s.nodes[pid]
		if p.Alive && p.connected[id] {
			s.resetConn(p, n)
		}
	}
	n.connected = map[int32]bool{}
}

// Restart replaces a killed node with a fresh machine of the same
// configuration (a process restart: all state lost).
func (s *Sim) Restart(id int32) error {
	n := s.nodes[id]
	m, err := core.New(n.Cfg)
	if err != nil {
		return err
	}
	n.M = m
	n.connected = map[int32]bool{}
	n.Restarts++
	s.Start(id)
	return nil
}

// resetConn tears down from's outgoing connection to to and tells from.
func (s *Sim) resetConn(from, to *Node) {
	if !from.connected[to.ID] {
		return
	}
	delete(from.connected, to.ID)
	s.schedule(s.now.Add(s.Latency), func() {
		if from.Alive {
			from.M.SendFailed(s.now, to.Addr)
			s.flush(from)
		}
	})
}

func (s *Sim) faultOf(from, to int32) *fault {
	f := s.faults[[2]int32{from, to}]
	if f == nil {
		f = &fault{}
		s.faults[[2]int32{from, to}] = f
	}
	return f
}

// Cut breaks the link between a and b in both directions: existing
// connections are reset and new ones refused.
func (s *Sim) Cut(a, b int32) {
	s.faultOf(a, b).cut = true
	s.faultOf(b, a).cut = true
	s.resetConn(s.nodes[a], s.nodes[b])
	s.resetConn(s.nodes[b], s.nodes[a])
}

// Blackhole silently drops everything from a to b.
func (s *Sim) Blackhole(from, to int32) { s.faultOf(from, to).blackhole = true }

// Delay adds d to the latency from a to b.
func (s *Sim) Delay(from, to int32, d time.Duration) { s.faultOf(from, to).delay = d }

// Drop loses each message from a to b with probability p (without the
// connection noticing: a lossy middlebox, harsher than TCP).
func (s *Sim) Drop(from, to int32, p float64) { s.faultOf(from, to).drop = p }

// Heal removes every fault between a and b, both directions.
func (s *Sim) Heal(a, b int32) {
	delete(s.faults, [2]int32{a, b})
	delete(s.faults, [2]int32{b, a})
}

// HealAll removes every fault.
func (s *Sim) HealAll() { s.faults = map[[2]int32]*fault{} }

// Linked reports whether a can currently talk to b in both directions.
func (s *Sim) Linked(a, b int32) bool {
	na, nb := s.nodes[a], s.nodes[b]
	if na == nil || nb == nil || !na.Alive || !nb.Alive {
		return false
	}
	for _, k := range [][2]int32{{a, b}, {b, a}} {
		if f := s.faults[k]; f != nil && (f.cut || f.blackhole || f.drop >= 1) {
			return false
		}
	}
	return true
}

// flush collects a node's outputs after an input and reschedules its timer.
func (s *Sim) flush(n *Node) {
	if !n.Alive {
		return
	}
	sends, events := n.M.Drain()
	for _, e := range events {
		n.Events = append(n.Events, TimedEvent{At: s.now, Event: e})
	}
	for _, snd := range sends {
		s.transmit(n, snd)
	}
	if d := n.M.Deadline(); !d.IsZero() {
		if d.Before(s.now) {
			d = s.now
		}
		if n.tickAt.IsZero() || d.Before(n.tickAt) || !n.tickAt.After(s.now) {
			n.tickAt = d
			n.tickGen++
			gen := n.tickGen
			s.schedule(d, func() {
				if n.Alive && n.tickGen == gen {
					n.tickAt = time.Time{}
					n.M.Tick(s.now)
					s.flush(n)
				}
			})
		}
	}
}

func (s *Sim) transmit(from *Node, snd core.Send) {
	var to *Node
	var connID uint64
	if snd.ConnID != 0 {
		c, ok := s.conns[snd.ConnID]
		if !ok {
			return
		}
		to, connID = s.nodes[c.from], snd.ConnID // a reply goes back to the dialler
	} else {
		to = s.byAddr[snd.Addr]
		if to == nil {
			s.failLater(from, snd.Addr)
			return
		}
		if id, ok := from.connTo[to.ID]; ok {
			connID = id
		} else {
			s.connSeq++
			connID = s.connSeq
			from.connTo[to.ID] = connID
			s.conns[connID] = conn{from: from.ID, to: to.ID}
		}
	}
	if p, err := bin.Parse(snd.Frame); err == nil {
		s.Sent[wire.Type(p.Type)]++
	}
	f := s.faults[[2]int32{from.ID, to.ID}]
	if snd.ConnID == 0 {
		if !to.Alive || (f != nil && f.cut) {
			delete(from.connected, to.ID)
			s.failLater(from, snd.Addr)
			return
		}
		from.connected[to.ID] = true
	}
	if f != nil && (f.blackhole || f.cut || (f.drop > 0 && s.rng.Float64() < f.drop)) {
		return
	}
	at := s.now.Add(s.Latency)
	if s.Jitter > 0 {
		at = at.Add(time.Duration(s.rng.Int64N(int64(s.Jitter))))
	}
	if f != nil {
		at = at.Add(f.delay)
	}
	dir := connDir{connID, from.ID}
	if last := s.lastAt[dir]; at.Before(last) {
		at = last
	}
	s.lastAt[dir] = at
	frame := snd.Frame
	src := core.Source{ConnID: connID, IP: from.IP}
	s.schedule(at, func() {
		if !to.Alive {
			return
		}
		p, err := bin.Parse(frame)
		if err != nil {
			panic(fmt.Sprintf("sim: node %d sent an unparseable frame: %v", from.ID, err))
		}
		if s.Trace != nil {
			s.Trace(fmt.Sprintf("%9.4fs %d->%d %s", s.now.Sub(Epoch).Seconds(), from.ID, to.ID, describe(p)))
		}
		if p.Capability != wire.CapInternal {
			if t, err := bin.ParseTrailer(p.Body); err == nil && t.Dst != to.ID {
				s.relay(to, t, frame)
				return
			}
		}
		to.M.Receive(s.now, src, p)
		s.flush(to)
	})
}

// relay forwards a trailer-addressed packet for another node through the
// relay's current route, byte for byte, as the runtime's data plane does.
func (s *Sim) relay(n *Node, t bin.Trailer, frame []byte) {
	cv := n.M.View().Cluster(t.Cluster)
	if cv == nil {
		return
	}
	dst := cv.Node(t.Dst)
	if dst == nil || !dst.Reachable {
		s.Relayed.NoRoute++
		return
	}
	hop := cv.Node(dst.NextHop)
	s.Relayed.OK++
	s.transmit(n, core.Send{Cluster: t.Cluster, Node: hop.ID, Addr: hop.Addr, Frame: frame})
}

func (s *Sim) failLater(from *Node, addr string) {
	s.schedule(s.now.Add(s.Latency), func() {
		if from.Alive {
			from.M.SendFailed(s.now, addr)
			s.flush(from)
		}
	})
}

func describe(p bin.Packet) string {
	m, err := wire.Decode(p)
	if err != nil {
		return fmt.Sprintf("%s/%d", p.Capability, p.Type)
	}
	s := fmt.Sprintf("%+v", m)
	return m.MsgType().String() + " " + strings.TrimPrefix(s, "&")
}

// Run advances virtual time by d, processing every event due.
func (s *Sim) Run(d time.Duration) {
	end := s.now.Add(d)
	for s.queue.Len() > 0 && !s.queue[0].at.After(end) {
		e := heap.Pop(&s.queue).(*event)
		s.now = e.at
		e.fn()
	}
	s.now = end
}

// RunUntil advances until cond holds (checked after every event) or max
// elapses; it reports whether cond held.
func (s *Sim) RunUntil(max time.Duration, cond func() bool) bool {
	end := s.now.Add(max)
	if cond() {
		return true
	}
	for s.queue.Len() > 0 && !s.queue[0].at.After(end) {
		e := heap.Pop(&s.queue).(*event)
		s.now = e.at
		e.fn()
		if cond() {
			return true
		}
	}
	s.now = end
	return cond()
}

// RunPolling advances in steps of every until cond holds or max elapses;
// for conditions too costly to check after every event.
func (s *Sim) RunPolling(max, every time.Duration, cond func() bool) bool {
	end := s.now.Add(max)
	for {
		if cond() {
			return true
		}
		if !s.now.Before(end) {
			return false
		}
		s.Run(min(every, end.Sub(s.now)))
	}
}

func (s *Sim) schedule(at time.Time, fn func()) {
	s.seq++
	heap.Push(&s.queue, &event{at: at, seq: s.seq, fn: fn})
}

type event struct {
	at  time.Time
	seq uint64
	fn  func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at.Equal(q[j].at) {
		return q[i].seq < q[j].seq
	}
	return q[i].at.Before(q[j].at)
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}
