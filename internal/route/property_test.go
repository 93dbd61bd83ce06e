package route

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

const (
	propGraphs   = 500
	propBaseSeed = 0x5eedc105 // arbitrary; each graph i uses propBaseSeed+i
)

func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
}

// rgraph is a random Graph plus the ids of its nodes.
type rgraph struct {
	Graph
	nodes []int32
}

// randomGraph builds a graph of n nodes with sparse, non-contiguous ids, where
// each ordered pair is linked with probability p. It sprinkles in the
// irregularities Compute must tolerate: unknown lists, duplicates,
// self-loops, invalid ids, edges into Self, missing priorities and ties.
func randomGraph(r *rand.Rand, n int, p float64) rgraph {
	perm := r.Perm(3 * n)
	nodes := make([]int32, n)
	for i := range nodes {
		nodes[i] = int32(perm[i]) + 1
	}
	g := rgraph{nodes: nodes, Graph: Graph{
		Self:     nodes[r.IntN(n)],
		Adj:      map[int32][]int32{},
		Priority: map[int32]int32{},
	}}

	symmetric := r.IntN(2) == 0
	known := make(map[int32]bool, n)
	for _, u := range nodes {
		known[u] = r.Float64() < 0.9
	}
	known[g.Self] = r.Float64() < 0.97
	add := func(u, v int32) {
		if known[u] {
			g.Adj[u] = append(g.Adj[u], v)
		}
	}
	for i, u := range nodes {
		for j, v := range nodes {
			if i == j || (symmetric && j < i) || r.Float64() >= p {
				continue
			}
			add(u, v)
			if symmetric {
				add(v, u)
			}
		}
	}
	// Irregularities.
	for _, u := range nodes {
		if !known[u] {
			continue
		}
		if r.IntN(8) == 0 {
			g.Adj[u] = append(g.Adj[u], u) // self-loop
		}
		if r.IntN(8) == 0 {
			g.Adj[u] = append(g.Adj[u], 0, -int32(r.IntN(5))) // invalid ids
		}
		if l := g.Adj[u]; len(l) > 0 && r.IntN(5) == 0 {
			g.Adj[u] = append(l, l[r.IntN(len(l))]) // duplicate
		}
		r.Shuffle(len(g.Adj[u]), func(a, b int) {
			g.Adj[u][a], g.Adj[u][b] = g.Adj[u][b], g.Adj[u][a]
		})
	}
	if r.IntN(4) == 0 {
		g.Adj[0] = []int32{nodes[0]}
		g.Adj[-1] = []int32{nodes[0]}
	}
	if r.IntN(4) == 0 && n > 1 {
		// a list mentioning an id that is no node of the graph
		g.Adj[nodes[0]] = append(g.Adj[nodes[0]], int32(3*n+7))
	}

	prioKind := r.IntN(3)
	for _, u := range nodes {
		if r.IntN(10) == 0 {
			continue // missing: DefaultPriority
		}
		switch prioKind {
		case 0:
			g.Priority[u] = 0
		case 1:
			g.Priority[u] = int32(r.IntN(3))
		default:
			g.Priority[u] = int32(r.IntN(2001)) - 1000
		}
	}
	return g
}

// cleanAdj returns the valid directed edges of g as a map of sets, without
// self-loops and ids < 1.
func cleanAdj(g Graph) map[int32]map[int32]bool {
	out := map[int32]map[int32]bool{}
	for u, l := range g.Adj {
		if u < 1 {
			continue
		}
		out[u] = map[int32]bool{}
		for _, v := range l {
			if v >= 1 && v != u {
				out[u][v] = true
			}
		}
	}
	return out
}

// allIDs returns every valid id mentioned in g (Self included), sorted.
func allIDs(g Graph) []int32 {
	set := map[int32]bool{g.Self: true}
	for u, vs := range cleanAdj(g) {
		set[u] = true
		for v := range vs {
			set[v] = true
		}
	}
	var ids []int32
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// refShortest is the naive reference for Shortest: Floyd–Warshall over the
// graph without Self, then the (distance, priority, id) minimum over the
// neighbours of Self, per destination.
func refShortest(g Graph) map[int32]want {
	adj := cleanAdj(g)
	ids := allIDs(g)
	const inf = 1 << 30
	idx := map[int32]int{}
	for i, id := range ids {
		idx[id] = i
	}
	n := len(ids)
	dist := make([][]int, n)
	for i := range dist {
		dist[i] = make([]int, n)
		for j := range dist[i] {
			dist[i][j] = inf
		}
		dist[i][i] = 0
	}
	for u, vs := range adj {
		for v := range vs {
			if u != g.Self && v != g.Self {
				dist[idx[u]][idx[v]] = 1
			}
		}
	}
	for k := range n {
		for i := range n {
			for j := range n {
				if d := dist[i][k] + dist[k][j]; d < dist[i][j] {
					dist[i][j] = d
				}
			}
		}
	}
	res := map[int32]want{}
	for _, dst := range ids {
		if dst == g.Self {
			continue
		}
		best, bestD := int32(0), inf
		for nb := range adj[g.Self] {
			d := dist[idx[nb]][idx[dst]]
			if d >= inf {
				continue
			}
			if best == 0 || d < bestD ||
				(d == bestD && (g.Priority[nb] < g.Priority[best] ||
					(g.Priority[nb] == g.Priority[best] && nb < best))) {
				best, bestD = nb, d
			}
		}
		if best != 0 {
			res[dst] = want{hop: best, hops: bestD + 1}
		}
	}
	return res
}

// bfsDistances returns the plain hop distance from Self to every node over
// all valid edges of g (edges into Self included: they can never shorten a
// path from Self).
func bfsDistances(g Graph) map[int32]int {
	adj := cleanAdj(g)
	d := map[int32]int{g.Self: 0}
	q := []int32{g.Self}
	for len(q) > 0 {
		u := q[0]
		q = q[1:]
		for v := range adj[u] {
			if _, ok := d[v]; !ok {
				d[v] = d[u] + 1
				q = append(q, v)
			}
		}
	}
	return d
}

// refCompatOne re-implements OpenSIPS's search literally for one
// destination: a direct link wins; otherwise the queue (a plain slice, sorted
// by (priority, id) before every pop) starts with Self, the first node to
// reach another becomes its parent, the search stops when dst is popped and
// the parents are walked back to Self. It works on the raw lists of g.
func refCompatOne(g Graph, dst int32) (hop int32, hops int, ok bool) {
	if dst < 1 || dst == g.Self || g.Self < 1 {
		return 0, 0, false
	}
	if slices.Contains(g.Adj[g.Self], dst) {
		return dst, 1, true
	}
	parent := map[int32]int32{}
	queue := []int32{g.Self}
	for len(queue) > 0 {
		slices.SortFunc(queue, func(a, b int32) int {
			if c := cmp.Compare(g.Priority[a], g.Priority[b]); c != 0 {
				return c
			}
			return cmp.Compare(a, b)
		})
		cur := queue[0]
		queue = queue[1:]
		if cur == dst {
			path := []int32{cur}
			for path[len(path)-1] != g.Self {
				path = append(path, parent[path[len(path)-1]])
			}
			// path is dst ... firstHop, Self
			if len(path) < 3 {
				return 0, 0, false // a route of one link is not accepted
			}
			return path[len(path)-2], len(path) - 1, true
		}
		if cur < 1 {
			continue
		}
		for _, v := range g.Adj[cur] {
			if v < 1 || v == g.Self {
				continue
			}
			if _, seen := parent[v]; !seen {
				parent[v] = cur
				queue = append(queue, v)
			}
		}
	}
	return 0, 0, false
}

func refCompat(g Graph) map[int32]want {
	res := map[int32]want{}
	for _, dst := range allIDs(g) {
		if hop, hops, ok := refCompatOne(g, dst); ok {
			res[dst] = want{hop: hop, hops: hops}
		}
	}
	return res
}

func describe(g Graph) string {
	return fmt.Sprintf("self=%d adj=%v prio=%v", g.Self, g.Adj, g.Priority)
}

// tableRoutes extracts every route of tb, probing all ids of g plus a few
// that are never valid.
func tableRoutes(t *testing.T, tb *Table, g Graph) map[int32]want {
	t.Helper()
	res := map[int32]want{}
	for _, id := range append(allIDs(g), 0, -1, g.Self) {
		hop, ok := tb.NextHop(id)
		hops, hok := tb.Hops(id)
		if ok != hok || ok != tb.IsReachable(id) {
			t.Fatalf("inconsistent answers for %d: NextHop ok=%v Hops ok=%v IsReachable=%v",
				id, ok, hok, tb.IsReachable(id))
		}
		if ok {
			res[id] = want{hop: hop, hops: hops}
		}
	}
	var keys []int32
	for k := range res {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if r := tb.Reachable(); !slices.Equal(r, keys) {
		t.Fatalf("Reachable()=%v, lookups give %v", r, keys)
	}
	return res
}

func TestPropertyShortest(t *testing.T) {
	for i := range uint64(propGraphs) {
		seed := propBaseSeed + i
		r := newRand(seed)
		g := randomGraph(r, 2+r.IntN(59), r.Float64()*r.Float64())
		tb := Compute(g.Graph, Shortest)
		got := tableRoutes(t, tb, g.Graph)
		exp := refShortest(g.Graph)
		if !mapsEqual(got, exp) {
			t.Fatalf("seed %d: Shortest differs from reference\n got %v\nwant %v\n%s",
				seed, got, exp, describe(g.Graph))
		}
		dist := bfsDistances(g.Graph)
		own := cleanAdj(g.Graph)[g.Self]
		for dst, w := range got {
			if !own[w.hop] {
				t.Fatalf("seed %d: next hop %d for %d is not a neighbour of self\n%s",
					seed, w.hop, dst, describe(g.Graph))
			}
			if d, ok := dist[dst]; !ok || d != w.hops {
				t.Fatalf("seed %d: hops to %d = %d, true distance %d (reachable %v)\n%s",
					seed, dst, w.hops, d, ok, describe(g.Graph))
			}
		}
		for dst := range dist {
			if _, ok := got[dst]; !ok && dst != g.Self {
				t.Fatalf("seed %d: %d reachable by BFS but not routed\n%s", seed, dst, describe(g.Graph))
			}
		}
	}
}

func TestPropertyCompat(t *testing.T) {
	for i := range uint64(propGraphs) {
		seed := propBaseSeed + i
		r := newRand(seed)
		g := randomGraph(r, 2+r.IntN(59), r.Float64()*r.Float64())
		got := tableRoutes(t, Compute(g.Graph, OpenSIPSCompat), g.Graph)
		exp := refCompat(g.Graph)
		if !mapsEqual(got, exp) {
			t.Fatalf("seed %d: OpenSIPSCompat differs from reference\n got %v\nwant %v\n%s",
				seed, got, exp, describe(g.Graph))
		}
		short := tableRoutes(t, Compute(g.Graph, Shortest), g.Graph)
		own := cleanAdj(g.Graph)[g.Self]
		for dst, w := range got {
			s, ok := short[dst]
			if !ok {
				t.Fatalf("seed %d: %d reachable in compat mode only\n%s", seed, dst, describe(g.Graph))
			}
			if w.hops < s.hops {
				t.Fatalf("seed %d: compat route to %d shorter (%d) than shortest (%d)\n%s",
					seed, dst, w.hops, s.hops, describe(g.Graph))
			}
			if !own[w.hop] {
				t.Fatalf("seed %d: next hop %d for %d is not a neighbour of self\n%s",
					seed, w.hop, dst, describe(g.Graph))
			}
		}
		if len(got) != len(short) {
			t.Fatalf("seed %d: modes reach %d vs %d nodes\n%s", seed, len(got), len(short), describe(g.Graph))
		}
	}
}

// TestPropertyListOrderIrrelevant checks determinism: reordering lists and
// adding duplicates changes no route in either mode.
func TestPropertyListOrderIrrelevant(t *testing.T) {
	for i := range uint64(propGraphs / 5) {
		seed := propBaseSeed + 10_000 + i
		r := newRand(seed)
		g := randomGraph(r, 2+r.IntN(59), r.Float64()*0.3)
		h := Graph{Self: g.Self, Priority: g.Priority, Adj: map[int32][]int32{}}
		for u, l := range g.Adj {
			l2 := slices.Clone(l)
			if len(l2) > 0 {
				l2 = append(l2, l2[r.IntN(len(l2))])
			}
			r.Shuffle(len(l2), func(a, b int) { l2[a], l2[b] = l2[b], l2[a] })
			h.Adj[u] = l2
		}
		for _, mode := range []Mode{Shortest, OpenSIPSCompat} {
			a := tableRoutes(t, Compute(g.Graph, mode), g.Graph)
			b := tableRoutes(t, Compute(h, mode), h)
			if !mapsEqual(a, b) {
				t.Fatalf("seed %d mode %v: routes depend on list order\n%v\n%v\n%s",
					seed, mode, a, b, describe(g.Graph))
			}
		}
	}
}

func mapsEqual(a, b map[int32]want) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
