package sim

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"
)

var debugHook func(*Sim, map[[2]int32]bool)

var (
	randomNodes = flag.Int("sim.nodes", 0, "cluster size of random schedules (0: 30-50 drawn from the seed)")
	randomSeeds = flag.Int("sim.seeds", 4, "number of random fault schedules to run")
	randomSeed  = flag.Uint64("sim.seed", 0, "run only this random schedule (reproduce a failure)")
)

// TestRandomFaults runs seeded random fault schedules over clusters of
// 30–50 nodes that discover each other from a few neighbours each. At
// every step every next hop must be an UP neighbour; once the faults are
// healed, each node must reach exactly the nodes the network connects it
// to, along loop-free routes. A failure prints the seed to reproduce it
// with -sim.seed.
func TestRandomFaults(t *testing.T) {
	seeds := []uint64{}
	if *randomSeed != 0 {
		seeds = append(seeds, *randomSeed)
	} else {
		for i := range *randomSeeds {
			seeds = append(seeds, uint64(1000+i))
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if err := randomSchedule(seed, false, t.Logf); err != nil {
				t.Fatalf("seed %d: %v (reproduce with -sim.seed=%d)", seed, err, seed)
			}
		})
	}
}

// TestRandomFaultsDiscovery is the same on smaller clusters that learn
// each other from one or two neighbours each (a full mesh: the flooding
// cost grows with the fourth power of the size).
func TestRandomFaultsDiscovery(t *testing.T) {
	saved := *randomNodes
	defer func() { *randomNodes = saved }()
	if saved == 0 {
		*randomNodes = 12
	}
	for i := range max(1, *randomSeeds/2) {
		seed := uint64(2000 + i)
		if *randomSeed != 0 {
			seed = *randomSeed
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if err := randomSchedule(seed, true, t.Logf); err != nil {
				t.Fatalf("seed %d: %v (reproduce with -run TestRandomFaultsDiscovery -sim.seed=%d)", seed, err, seed)
			}
		})
		if *randomSeed != 0 {
			break
		}
	}
}

func randomSchedule(seed uint64, discovery bool, logf func(string, ...any)) error {
	s := New(seed)
	s.Jitter = 300 * time.Microsecond
	r := s.Rand()
	n := int32(30 + r.IntN(21))
	if *randomNodes > 0 {
		n = int32(*randomNodes)
	}
	// Discovery clusters learn everyone from one or two neighbours and end
	// up a full mesh. Provisioned clusters know every node (as from the
	// database) but only some links work: a ring plus random chords, so
	// that routes span several hops.
	known := make(map[int32][]int32)
	edges := map[[2]int32]bool{}
	edge := func(a, b int32) {
		if a != b {
			edges[[2]int32{min(a, b), max(a, b)}] = true
		}
	}
	for id := int32(1); id <= n; id++ {
		switch {
		case discovery && id > 1:
			known[id] = dedup([]int32{1 + r.Int32N(id-1), 1 + r.Int32N(id-1)})
		case !discovery:
			for o := int32(1); o <= n; o++ {
				if o != id {
					known[id] = append(known[id], o)
				}
			}
			edge(id, id%n+1)
		}
	}
	if !discovery {
		for range n / 2 {
			edge(1+r.Int32N(n), 1+r.Int32N(n))
		}
	}
	for id := int32(1); id <= n; id++ {
		if _, err := s.Add(Config(id, cl, discovery, known[id]...)); err != nil {
			return err
		}
	}
	// cutAbsent applies the base topology: links that do not exist.
	cutAbsent := func() {
		for a := int32(1); a <= n && !discovery; a++ {
			for b := a + 1; b <= n; b++ {
				if !edges[[2]int32{a, b}] {
					s.Cut(a, b)
				}
			}
		}
	}
	cutAbsent()
	if debugHook != nil {
		debugHook(s, edges)
	}
	s.StartAll()
	if err := s.settle(60 * time.Second); err != nil {
		return fmt.Errorf("initial convergence of %d nodes: %w", n, err)
	}
	if logf != nil {
		logf("%d nodes converged at %v; sent %v", n, s.Now().Sub(Epoch), s.Sent)
	}
	for _, id := range s.IDs() {
		if got := len(s.Node(id).M.View().Cluster(cl).Nodes); discovery && got != int(n-1) {
			return fmt.Errorf("node %d knows %d of %d nodes", id, got, n-1)
		}
	}
	pick := func() int32 { return 1 + r.Int32N(n) }
	dead := map[int32]bool{}
	for step := range 40 {
		a, b := pick(), pick()
		switch op := r.IntN(7); {
		case op <= 1 && a != b:
			s.Cut(a, b)
		case op == 2 && a != b:
			s.Blackhole(a, b)
		case op == 3:
			s.Heal(a, b)
		case op == 4 && !dead[a] && len(dead) < int(n)/4:
			s.Kill(a)
			dead[a] = true
		case op == 5 && dead[a]:
			if err := s.Restart(a); err != nil {
				return err
			}
			delete(dead, a)
		case op == 6 && a != b && s.Node(a).Alive:
			_ = s.Node(a).M.SetNodeEnabled(s.Now(), cl, b, r.IntN(2) == 0)
			s.flush(s.Node(a))
		}
		s.Run(time.Duration(r.IntN(2000)) * time.Millisecond)
		if err := s.CheckRoutes(cl); err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
	}
	if s.Trace != nil {
		s.Trace("=== healing")
	}
	s.HealAll()
	cutAbsent()
	for _, id := range slices.Sorted(maps.Keys(dead)) { // map order would break reproducibility
		if err := s.Restart(id); err != nil {
			return err
		}
	}
	for _, a := range s.IDs() {
		for _, b := range s.IDs() {
			if a != b {
				_ = s.Node(a).M.SetNodeEnabled(s.Now(), cl, b, true)
			}
		}
		s.flush(s.Node(a))
	}
	if err := s.settle(60 * time.Second); err != nil {
		return fmt.Errorf("after healing: %w", err)
	}
	// Each detection of a restart is a node's: a node detects each
	// restart of another at most once (a reordered update taken for one
	// made nodes forget their neighbours' links for nothing).
	var detected uint64
	bound := 0
	for _, id := range s.IDs() {
		detected += s.Node(id).M.Stats().Restarts
		bound += s.Node(id).Restarts * int(n-1)
	}
	if detected > uint64(bound) {
		return fmt.Errorf("%d restart detections, more than the %d possible", detected, bound)
	}
	for _, id := range s.IDs() {
		if got := len(s.Reachable(cl, id)); got != int(n-1) {
			return fmt.Errorf("after healing node %d reaches %d of %d", id, got, n-1)
		}
	}
	return nil
}

// settle runs until converged and still converged a second later.
func (s *Sim) settle(max time.Duration) error {
	var last error
	end := s.Now().Add(max)
	for s.Now().Before(end) {
		if s.RunPolling(end.Sub(s.Now()), 100*time.Millisecond, func() bool { last = s.CheckConverged(cl); return last == nil }) {
			s.Run(time.Second)
			if last = s.CheckConverged(cl); last == nil {
				return nil
			}
		}
	}
	return last
}

func dedup(ids []int32) []int32 {
	var out []int32
	for _, id := range ids {
		dup := false
		for _, o := range out {
			dup = dup || o == id
		}
		if !dup {
			out = append(out, id)
		}
	}
	return out
}
