package route

import (
	"math/rand/v2"
	"testing"
)

// benchGraph is a 128-node graph (ids 1..128, Self = 1) in which every node
// links to 4 random others in both directions, for an average degree of
// about 8, with priorities in 0..9.
func benchGraph() Graph {
	const n = 128
	r := rand.New(rand.NewPCG(128, 8))
	g := Graph{Self: 1, Adj: map[int32][]int32{}, Priority: map[int32]int32{}}
	for u := int32(1); u <= n; u++ {
		g.Priority[u] = int32(r.IntN(10))
		for range 4 {
			v := int32(r.IntN(n)) + 1
			if v != u {
				g.Adj[u] = append(g.Adj[u], v)
				g.Adj[v] = append(g.Adj[v], u)
			}
		}
	}
	return g
}

func BenchmarkCompute(b *testing.B) {
	g := benchGraph()
	for _, mode := range []Mode{Shortest, OpenSIPSCompat} {
		b.Run(mode.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if t := Compute(g, mode); len(t.entries) != 127 {
					b.Fatalf("reached %d nodes", len(t.entries))
				}
			}
		})
	}
}

func BenchmarkNextHop(b *testing.B) {
	t := Compute(benchGraph(), Shortest)
	b.ReportAllocs()
	var dst int32
	for b.Loop() {
		dst = dst%128 + 1
		t.NextHop(dst)
	}
}
