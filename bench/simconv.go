package main

import (
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/sim"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// Scenario 4: convergence of a large cluster on the deterministic
// simulator (virtual time, no sockets).

const simCluster = 1

type simResult struct {
	name       string
	nodes      int
	converged  bool
	aborted    string        // why the run stopped early (wall budget, panic)
	virtual    time.Duration // virtual time to the first converged check
	settled    bool          // still converged one virtual second later
	wall       time.Duration // wall time of the whole variant
	sentAtConv map[wire.Type]int
	sentTotal  map[wire.Type]int // after the quiet period
	quiet      time.Duration     // virtual time run after convergence
	maxKnown   int               // most nodes any node knows, itself included
	malformed  uint64            // own encode errors + undecodable receipts
	pathLong   uint64            // floods stopped at MaxPathLen
	tooMany    uint64            // nodes not learned: cluster full
	lastErr    string            // last convergence check failure (if not converged)
	links      int               // working links in the base topology
	relayedOK  int
	events     int // simulator events processed until convergence or abort
	minKnown   int // fewest nodes any node knows (itself included), at the end
	minReach   int // fewest nodes any node reaches, at the end
}

type simOptions struct {
	nodes   int
	seed    uint64
	maxVirt time.Duration
	budget  time.Duration // wall budget per variant
	maxHeap uint64        // abort a variant whose heap grows past this
}

func runSimScenario(o simOptions, scale []int, rep *report) error {
	sim.StrictTopology = true // convergence includes every topology database
	section(fmt.Sprintf("4. simulated convergence: %d nodes on internal/sim (virtual time)", o.nodes))
	fmt.Printf("sim.Config timers: ping_interval 1 s, ping_timeout 200 ms, node_timeout 3 s; link latency 200 µs; seed %d\n", o.seed)
	fmt.Printf("wire bounds: MaxNodes %d, MaxPathLen %d (the codec refuses to encode beyond them; core counts that as Malformed)\n",
		wire.MaxNodes, wire.MaxPathLen)

	// Small full meshes first: how the flooding cost grows with n.
	var pts []*simResult
	if len(scale) > 0 {
		fmt.Printf("\nfull-mesh discovery at smaller sizes (every node knows only node 1):\n")
		fmt.Printf("  %5s %10s %14s %14s %16s %10s\n", "nodes", "converged", "at (virtual)", "msgs to conv.", "msgs conv.+5 s", "wall")
		for _, n := range scale {
			so := o
			so.nodes = n
			r := simVariant(so, true)
			_, tot := fmtSent(r.sentAtConv)
			_, all := fmtSent(r.sentTotal)
			fmt.Printf("  %5d %10v %14v %14d %16d %10v %s\n", n, r.converged, r.virtual.Round(100*time.Microsecond), tot, all,
				r.wall.Round(time.Millisecond), r.aborted)
			if r.converged {
				pts = append(pts, r)
			}
		}
	}
	var expMsgs, expWall float64
	if len(pts) >= 2 {
		a, b := pts[len(pts)-2], pts[len(pts)-1]
		_, ma := fmtSent(a.sentTotal)
		_, mb := fmtSent(b.sentTotal)
		lr := math.Log(float64(b.nodes) / float64(a.nodes))
		expMsgs = math.Log(float64(mb)/float64(ma)) / lr
		expWall = math.Log(b.wall.Seconds()/a.wall.Seconds()) / lr
		f := float64(o.nodes) / float64(b.nodes)
		fmt.Printf("  growth between %d and %d nodes: messages ~ n^%.1f, wall ~ n^%.1f; extrapolated to %d nodes: ~%.2g messages, ~%v wall on this machine\n",
			a.nodes, b.nodes, expMsgs, expWall, o.nodes, float64(mb)*math.Pow(f, expMsgs),
			time.Duration(b.wall.Seconds()*math.Pow(f, expWall)*float64(time.Second)).Round(time.Second))
	}

	full := simVariant(o, true)
	printSim(full)
	summary := func(r *simResult) string {
		_, tot := fmtSent(r.sentAtConv)
		if r.converged {
			return fmt.Sprintf("converged at %v virtual, %d messages, wall %v, max known %d, bound violations %d",
				r.virtual.Round(100*time.Microsecond), tot, r.wall.Round(time.Millisecond), r.maxKnown, r.malformed)
		}
		return fmt.Sprintf("NOT converged (%s), %d messages so far, wall %v", r.aborted, tot, r.wall.Round(time.Millisecond))
	}
	rep.add("sim full    %s", summary(full))
	if !full.converged || full.wall > 90*time.Second {
		fmt.Printf("\nthe full-mesh discovery variant did not finish within its budget: running the provisioned sparse variant too\n")
		o.budget = max(o.budget, 60*time.Second)
		sparse := simVariant(o, false)
		printSim(sparse)
		rep.add("sim sparse  %s", summary(sparse))
	}
	return nil
}

func printSim(r *simResult) {
	fmt.Printf("\n%s\n", r.name)
	fmt.Printf("  working links      : %d\n", r.links)
	if r.converged {
		fmt.Printf("  converged          : yes, at %v virtual (checked every 1 ms up to 300 ms, then every 10 ms); still converged 1 s later: %v\n",
			r.virtual.Round(100*time.Microsecond), r.settled)
	} else {
		fmt.Printf("  converged          : NO — %s\n", r.aborted)
		fmt.Printf("  progress           : virtual %v, fewest nodes known %d/%d, fewest reachable %d/%d; last check: %s\n",
			r.virtual.Round(time.Millisecond), r.minKnown, r.nodes, r.minReach, r.nodes-1, clip(r.lastErr, 160))
	}
	if r.aborted != "" && r.converged {
		fmt.Printf("  note               : %s\n", r.aborted)
	}
	by, tot := fmtSent(r.sentAtConv)
	label := "messages to conv.  "
	if !r.converged {
		label = "messages so far    "
	}
	fmt.Printf("  %s: %d (%s)\n", label, tot, by)
	if r.quiet > 0 {
		by2, tot2 := fmtSent(r.sentTotal)
		fmt.Printf("  + %v quiet period : %d more (cumulative %s)\n", r.quiet, tot2-tot, by2)
	}
	fmt.Printf("  relayed data pkts  : %d; simulator events %d\n", r.relayedOK, r.events)
	fmt.Printf("  max nodes known    : %d incl. itself (bound %d: %s)\n", r.maxKnown, wire.MaxNodes, verdict(r.maxKnown <= wire.MaxNodes))
	fmt.Printf("  wire bounds        : encode/decode errors (core Malformed) %d, floods stopped at MaxPathLen %d, nodes refused (cluster full) %d\n",
		r.malformed, r.pathLong, r.tooMany)
	fmt.Printf("  wall time          : %v\n", r.wall.Round(time.Millisecond))
}

// simVariant builds and runs one cluster. discovery: every node knows only
// node 1 and the network is a full mesh. Otherwise every node is
// provisioned with all the others, but only a ring plus n/2 seeded random
// chords of links work (the rest are cut, as internal/sim/random_test.go
// does).
func simVariant(o simOptions, discovery bool) (res *simResult) {
	n := int32(o.nodes)
	res = &simResult{nodes: o.nodes}
	if discovery {
		res.name = fmt.Sprintf("discovery, full mesh, every node knows only node 1 (%d nodes)", n)
	} else {
		res.name = fmt.Sprintf("provisioned, sparse: ring + %d random chords (%d nodes)", n/2, n)
	}
	wallStart := time.Now()
	defer func() {
		res.wall = time.Since(wallStart)
		if r := recover(); r != nil {
			res.aborted = fmt.Sprintf("panic: %v", r)
			res.converged = false
		}
	}()

	s := sim.New(o.seed)
	r := s.Rand()
	edges := map[[2]int32]bool{}
	edge := func(a, b int32) {
		if a != b {
			edges[[2]int32{min(a, b), max(a, b)}] = true
		}
	}
	for id := int32(1); id <= n; id++ {
		var known []int32
		switch {
		case discovery && id > 1:
			known = []int32{1}
		case !discovery:
			for x := int32(1); x <= n; x++ {
				if x != id {
					known = append(known, x)
				}
			}
			edge(id, id%n+1)
		}
		if _, err := s.Add(sim.Config(id, simCluster, discovery, known...)); err != nil {
			res.aborted = fmt.Sprintf("setup: %v", err)
			return res
		}
	}
	if discovery {
		res.links = int(n) * int(n-1) / 2
	} else {
		for range n / 2 {
			edge(1+r.Int32N(n), 1+r.Int32N(n))
		}
		for a := int32(1); a <= n; a++ {
			for b := a + 1; b <= n; b++ {
				if !edges[[2]int32{a, b}] {
					s.Cut(a, b)
				}
			}
		}
		res.links = len(edges)
	}

	s.StartAll()
	// Converged means: every node knows every node, has exactly its
	// working links UP, reaches every node, along loop-free routes over UP
	// links, and its topology database matches every other node's real
	// links (sim.StrictTopology). Cheap checks first.
	want := int(n - 1)
	check := func() bool {
		for _, id := range s.IDs() {
			cv := s.Node(id).M.View().Cluster(simCluster)
			if len(cv.Nodes) < want {
				res.lastErr = fmt.Sprintf("node %d knows %d of %d nodes", id, len(cv.Nodes), want)
				return false
			}
			up, deg := 0, 0
			for _, nv := range cv.Nodes {
				linked := s.Linked(id, nv.ID)
				if linked {
					deg++
				}
				if nv.State == core.Up {
					if !linked {
						res.lastErr = fmt.Sprintf("node %d has its link to %d UP, the network has no such link", id, nv.ID)
						return false
					}
					up++
				}
			}
			if up != deg {
				res.lastErr = fmt.Sprintf("node %d has %d of its %d links UP", id, up, deg)
				return false
			}
			if got := len(s.Reachable(simCluster, id)); got != want {
				res.lastErr = fmt.Sprintf("node %d reaches %d of %d nodes", id, got, want)
				return false
			}
		}
		if err := s.CheckConverged(simCluster); err != nil {
			res.lastErr = err.Error()
			return false
		}
		res.lastErr = ""
		return true
	}
	// The run advances in steps of virtual time (RunUntil with a guard, so
	// a flood storm inside one step can still be cut short) and checks
	// convergence at each step's end: every 1 ms for the first 300 ms
	// (links join in about a millisecond at 200 µs latency), every 10 ms
	// after. The guard checks the wall budget and the heap every few
	// thousand events, and convergence every 2 s of wall time (a storm may
	// keep virtual time still for long).
	stepLen := func() time.Duration {
		if s.Now().Sub(sim.Epoch) < 300*time.Millisecond {
			return time.Millisecond
		}
		return 10 * time.Millisecond
	}
	lastWallCheck := time.Now()
	events := 0
	var mem runtime.MemStats
	guard := func() bool {
		events++
		if events%4096 == 0 {
			if time.Since(wallStart) > o.budget {
				res.aborted = fmt.Sprintf("wall budget %v exhausted at %v virtual", o.budget, s.Now().Sub(sim.Epoch).Round(time.Millisecond))
				return true
			}
			if events%(64*4096) == 0 {
				runtime.ReadMemStats(&mem)
				if mem.HeapAlloc > o.maxHeap {
					res.aborted = fmt.Sprintf("heap %d MiB over the %d MiB limit at %v virtual (event queue explosion)",
						mem.HeapAlloc>>20, o.maxHeap>>20, s.Now().Sub(sim.Epoch).Round(time.Millisecond))
					return true
				}
			}
		}
		return false
	}
	stop := func() bool {
		if guard() {
			return true
		}
		if time.Since(lastWallCheck) >= 2*time.Second {
			lastWallCheck = time.Now()
			if check() {
				res.converged = true
				return true
			}
		}
		return false
	}
	for res.aborted == "" && !res.converged {
		if check() {
			res.converged = true
			break
		}
		if s.Now().Sub(sim.Epoch) >= o.maxVirt {
			res.aborted = fmt.Sprintf("not converged within %v virtual", o.maxVirt)
			break
		}
		s.RunUntil(stepLen(), stop)
	}
	res.events = events
	res.virtual = s.Now().Sub(sim.Epoch)
	res.sentAtConv = maps.Clone(s.Sent)
	if res.converged {
		// Settle: still converged a virtual second later? Then a quiet
		// period shows whether the floods have stopped.
		guardOnly := func() bool { return guard() }
		s.RunUntil(time.Second, guardOnly)
		if res.aborted == "" {
			res.settled = s.CheckConverged(simCluster) == nil
			res.quiet = time.Second
			before := s.Now()
			s.RunUntil(4*time.Second, guardOnly)
			res.quiet += s.Now().Sub(before)
		}
	}
	res.sentTotal = maps.Clone(s.Sent)
	res.relayedOK = s.Relayed.OK
	for _, id := range s.IDs() {
		nd := s.Node(id)
		k := len(nd.M.View().Cluster(simCluster).Nodes) + 1
		res.maxKnown = max(res.maxKnown, k)
		reach := len(s.Reachable(simCluster, id))
		if id == 1 {
			res.minKnown, res.minReach = k, reach
		}
		res.minKnown, res.minReach = min(res.minKnown, k), min(res.minReach, reach)
		st := nd.M.Stats()
		res.malformed += st.Malformed
		res.pathLong += st.PathTooLong
		res.tooMany += st.TooManyNodes
	}
	return res
}

func fmtSent(m map[wire.Type]int) (string, int) {
	types := slices.Sorted(maps.Keys(m))
	var parts []string
	total := 0
	for _, t := range types {
		parts = append(parts, fmt.Sprintf("%s=%d", t, m[t]))
		total += m[t]
	}
	return strings.Join(parts, " "), total
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
