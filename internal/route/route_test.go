package route

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

// want is the expected route to one destination; hop 0 means unreachable.
type want struct {
	hop  int32
	hops int
}

// undirected builds an adjacency map with both directions of every pair.
func undirected(pairs ...[2]int32) map[int32][]int32 {
	adj := map[int32][]int32{}
	for _, p := range pairs {
		adj[p[0]] = append(adj[p[0]], p[1])
		adj[p[1]] = append(adj[p[1]], p[0])
	}
	return adj
}

func checkTable(t *testing.T, tb *Table, routes map[int32]want) {
	t.Helper()
	var reach []int32
	for dst, w := range routes {
		hop, ok := tb.NextHop(dst)
		hops, hok := tb.Hops(dst)
		if w.hop == 0 {
			if ok || hok || tb.IsReachable(dst) {
				t.Errorf("dst %d: want unreachable, got next hop %d (ok=%v), hops %d (ok=%v), IsReachable=%v",
					dst, hop, ok, hops, hok, tb.IsReachable(dst))
			}
			continue
		}
		reach = append(reach, dst)
		if !ok || hop != w.hop {
			t.Errorf("dst %d: next hop %d (ok=%v), want %d", dst, hop, ok, w.hop)
		}
		if !hok || hops != w.hops {
			t.Errorf("dst %d: hops %d (ok=%v), want %d", dst, hops, hok, w.hops)
		}
		if !tb.IsReachable(dst) {
			t.Errorf("dst %d: IsReachable false", dst)
		}
	}
	// The expectations name every reachable node.
	slices.Sort(reach)
	if got := tb.Reachable(); !slices.Equal(got, reach) {
		t.Errorf("Reachable() = %v, want %v", got, reach)
	}
}

func TestCompute(t *testing.T) {
	type tc struct {
		name string
		g    Graph
		// expected routes per mode; unreachable nodes listed with hop 0
		shortest map[int32]want
		compat   map[int32]want // nil: same as shortest
	}
	cases := []tc{
		{
			name: "chain without A-C link",
			g: Graph{Self: 1, Adj: undirected(
				[2]int32{1, 2}, [2]int32{2, 3},
			)},
			shortest: map[int32]want{2: {2, 1}, 3: {2, 2}, 1: {}},
		},
		{
			name: "chain with direct link prefers it",
			g: Graph{Self: 1, Adj: undirected(
				[2]int32{1, 2}, [2]int32{2, 3}, [2]int32{1, 3},
			), Priority: map[int32]int32{2: -100}},
			shortest: map[int32]want{2: {2, 1}, 3: {3, 1}},
		},
		{
			name: "diamond priority tie-break",
			g: Graph{Self: 1, Adj: undirected(
				[2]int32{1, 2}, [2]int32{1, 3}, [2]int32{2, 4}, [2]int32{3, 4},
			), Priority: map[int32]int32{2: 10, 3: 5, 4: 0}},
			shortest: map[int32]want{2: {2, 1}, 3: {3, 1}, 4: {3, 2}},
		},
		{
			name: "diamond node-id tie-break",
			g: Graph{Self: 1, Adj: undirected(
				[2]int32{1, 7}, [2]int32{1, 3}, [2]int32{7, 4}, [2]int32{3, 4},
			), Priority: map[int32]int32{7: 5, 3: 5}},
			shortest: map[int32]want{7: {7, 1}, 3: {3, 1}, 4: {3, 2}},
		},
		{
			name: "missing priorities default to zero",
			g: Graph{Self: 1, Adj: undirected(
				[2]int32{1, 2}, [2]int32{1, 3}, [2]int32{2, 4}, [2]int32{3, 4},
			), Priority: map[int32]int32{2: 1}},
			shortest: map[int32]want{2: {2, 1}, 3: {3, 1}, 4: {3, 2}},
		},
		{
			name: "priority only breaks ties between equal distances",
			g: Graph{Self: 1, Adj: undirected(
				[2]int32{1, 2}, [2]int32{1, 3}, [2]int32{2, 5}, [2]int32{3, 4}, [2]int32{4, 5},
			), Priority: map[int32]int32{2: 100, 3: 0, 4: 0}},
			shortest: map[int32]want{2: {2, 1}, 3: {3, 1}, 4: {3, 2}, 5: {2, 2}},
			compat:   map[int32]want{2: {2, 1}, 3: {3, 1}, 4: {3, 2}, 5: {3, 3}},
		},
		{
			name: "unknown lists: reachable, not routed through",
			g: Graph{Self: 1, Adj: map[int32][]int32{
				1: {2, 3},
				2: {1, 4},
				// 3 and 4 have no list; 5 is only known through 6's list,
				// and 6 is never reached.
				6: {5},
			}},
			shortest: map[int32]want{2: {2, 1}, 3: {3, 1}, 4: {2, 2}, 5: {}, 6: {}},
		},
		{
			name: "neighbour without own list",
			g: Graph{Self: 1, Adj: map[int32][]int32{
				1: {2},
			}},
			shortest: map[int32]want{2: {2, 1}},
		},
		{
			name: "self-loops, duplicates, invalid ids",
			g: Graph{Self: 1, Adj: map[int32][]int32{
				1:  {1, 2, 2, 0, -3, 2},
				2:  {2, 2, 3, 3, 1, -1, 0},
				3:  {3, 4, 4},
				0:  {5},
				-1: {5},
				4:  {-7},
			}, Priority: map[int32]int32{0: -50, -1: -50}},
			shortest: map[int32]want{2: {2, 1}, 3: {2, 2}, 4: {2, 3}, 5: {}, 0: {}, -1: {}, -3: {}},
		},
		{
			name: "disconnected parts",
			g: Graph{Self: 1, Adj: map[int32][]int32{
				1: {2},
				2: {1},
				5: {6},
				6: {5, 7},
				7: {6},
			}},
			shortest: map[int32]want{2: {2, 1}, 5: {}, 6: {}, 7: {}},
		},
		{
			name: "links are directed",
			g: Graph{Self: 1, Adj: map[int32][]int32{
				1: {2},
				2: {3},
				4: {2}, // 4 says 4→2 is UP, nobody reports a link into 4
				3: {},
			}},
			shortest: map[int32]want{2: {2, 1}, 3: {2, 2}, 4: {}},
		},
		{
			name: "never routed back through self",
			g: Graph{Self: 1, Adj: map[int32][]int32{
				1: {2},
				2: {1},
				3: {1, 4}, // 1 lacks a link to 3: 3 is not reachable via 1
				4: {3},
			}},
			shortest: map[int32]want{2: {2, 1}, 3: {}, 4: {}},
		},
		{
			name: "self without links",
			g: Graph{Self: 1, Adj: map[int32][]int32{
				2: {3},
				3: {2},
			}},
			shortest: map[int32]want{2: {}, 3: {}, 1: {}},
		},
		{
			name: "invalid self",
			g: Graph{Self: 0, Adj: map[int32][]int32{
				0: {2},
				2: {0},
			}},
			shortest: map[int32]want{2: {}, 0: {}},
		},
		{
			name:     "nil maps",
			g:        Graph{Self: 3},
			shortest: map[int32]want{3: {}},
		},
		{
			// Deep low-priority-value nodes pull OpenSIPS's search away from
			// the shallow route: 2 (prio 10) is expanded before 3 (prio 20),
			// reaches 4 (prio 0), which is then expanded before 3 and so
			// on, so 6 gets parent 5 before 3 is ever expanded.
			name: "compat differs from shortest",
			g: Graph{Self: 1, Adj: undirected(
				[2]int32{1, 2}, [2]int32{1, 3},
				[2]int32{2, 4}, [2]int32{4, 5}, [2]int32{5, 6},
				[2]int32{3, 6},
			), Priority: map[int32]int32{2: 10, 3: 20, 4: 0, 5: 0, 6: 0}},
			shortest: map[int32]want{2: {2, 1}, 3: {3, 1}, 4: {2, 2}, 5: {2, 3}, 6: {3, 2}},
			compat:   map[int32]want{2: {2, 1}, 3: {3, 1}, 4: {2, 2}, 5: {2, 3}, 6: {2, 4}},
		},
		{
			// In OpenSIPS the whole queue is ordered, not each level: 5
			// (prio 0, found through 2) is expanded before 9 (prio 1), so 3
			// gets parent 5 and keeps it although 9, a neighbour of Self,
			// lists 3 as well.
			name: "compat first reach fixes the parent",
			g: Graph{Self: 1, Adj: map[int32][]int32{
				1: {2, 9},
				2: {5},
				5: {3},
				9: {3},
			}, Priority: map[int32]int32{2: 0, 5: 0, 9: 1, 3: 7}},
			shortest: map[int32]want{2: {2, 1}, 9: {9, 1}, 5: {2, 2}, 3: {9, 2}},
			compat:   map[int32]want{2: {2, 1}, 9: {9, 1}, 5: {2, 2}, 3: {2, 3}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Run("shortest", func(t *testing.T) {
				tb := Compute(c.g, Shortest)
				if tb.Mode() != Shortest || tb.Self() != c.g.Self {
					t.Errorf("Mode()=%v Self()=%d", tb.Mode(), tb.Self())
				}
				checkTable(t, tb, c.shortest)
			})
			t.Run("compat", func(t *testing.T) {
				exp := c.compat
				if exp == nil {
					exp = c.shortest
				}
				tb := Compute(c.g, OpenSIPSCompat)
				if tb.Mode() != OpenSIPSCompat {
					t.Errorf("Mode()=%v", tb.Mode())
				}
				checkTable(t, tb, exp)
			})
		})
	}
}

func TestComputeDoesNotModifyInput(t *testing.T) {
	g := Graph{Self: 1, Adj: map[int32][]int32{
		1: {3, 2, 2, 1},
		2: {4, 1},
		3: {4},
	}, Priority: map[int32]int32{2: 3}}
	before := fmt.Sprint(g.Adj, g.Priority)
	Compute(g, Shortest)
	Compute(g, OpenSIPSCompat)
	if after := fmt.Sprint(g.Adj, g.Priority); after != before {
		t.Fatalf("input modified: %s -> %s", before, after)
	}
}

func TestNilTable(t *testing.T) {
	var tb *Table
	if _, ok := tb.NextHop(1); ok {
		t.Error("NextHop ok on nil table")
	}
	if _, ok := tb.Hops(1); ok {
		t.Error("Hops ok on nil table")
	}
	if tb.IsReachable(1) || tb.Reachable() != nil || tb.Self() != 0 || tb.Mode() != Shortest {
		t.Error("nil table not empty")
	}
}

func TestUnknownModeIsShortest(t *testing.T) {
	g := Graph{Self: 1, Adj: undirected(
		[2]int32{1, 2}, [2]int32{1, 3},
		[2]int32{2, 4}, [2]int32{4, 5}, [2]int32{5, 6},
		[2]int32{3, 6},
	), Priority: map[int32]int32{2: 10, 3: 20}}
	tb := Compute(g, Mode(42))
	if hop, ok := tb.NextHop(6); !ok || hop != 3 {
		t.Errorf("NextHop(6) = %d, %v; want 3, true", hop, ok)
	}
	if tb.Mode() != Mode(42) {
		t.Errorf("Mode() = %v", tb.Mode())
	}
}

func TestModeString(t *testing.T) {
	for m, s := range map[Mode]string{Shortest: "shortest", OpenSIPSCompat: "opensips-compat", 7: "Mode(7)"} {
		if m.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(m), m.String(), s)
		}
	}
}

func TestReachableIsACopy(t *testing.T) {
	tb := Compute(Graph{Self: 1, Adj: undirected([2]int32{1, 2}, [2]int32{2, 3})}, Shortest)
	r := tb.Reachable()
	if !slices.Equal(r, []int32{2, 3}) {
		t.Fatalf("Reachable() = %v", r)
	}
	r[0] = 99
	if r2 := tb.Reachable(); !slices.Equal(r2, []int32{2, 3}) {
		t.Fatalf("table changed through Reachable(): %v", r2)
	}
}

func TestConcurrentReaders(t *testing.T) {
	g := randomGraph(newRand(7), 60, 0.1)
	for _, mode := range []Mode{Shortest, OpenSIPSCompat} {
		tb := Compute(g.Graph, mode)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for _, id := range g.nodes {
					if hop, ok := tb.NextHop(id); ok && !tb.IsReachable(hop) {
						t.Errorf("next hop %d of %d unreachable", hop, id)
					}
					tb.Hops(id)
				}
				tb.Reachable()
			})
		}
		wg.Wait()
	}
}

// FuzzCompute checks that arbitrary inputs never panic and that both modes
// agree on the set of reachable nodes. Under plain `go test` only the seed
// corpus runs.
func FuzzCompute(f *testing.F) {
	f.Add(int32(1), []byte{1, 2, 2, 3, 3, 1, 0, 0})
	f.Add(int32(0), []byte{0, 0, 255, 255, 1, 1})
	f.Add(int32(-4), []byte{})
	f.Add(int32(3), []byte{3, 3, 3, 4, 4, 3, 4, 5, 200, 3})
	f.Fuzz(func(t *testing.T, self int32, data []byte) {
		g := Graph{Self: self, Adj: map[int32][]int32{}, Priority: map[int32]int32{}}
		for i := 0; i+1 < len(data); i += 2 {
			// small signed ids so that invalid ones and collisions occur
			u, v := int32(int8(data[i]))/8, int32(int8(data[i+1]))/8
			g.Adj[u] = append(g.Adj[u], v)
			g.Priority[v] = int32(data[i]) - 128
		}
		s := Compute(g, Shortest)
		c := Compute(g, OpenSIPSCompat)
		if !slices.Equal(s.Reachable(), c.Reachable()) {
			t.Fatalf("reachable sets differ: %v vs %v", s.Reachable(), c.Reachable())
		}
		for _, dst := range s.Reachable() {
			sh, _ := s.NextHop(dst)
			ch, _ := c.NextHop(dst)
			if !slices.Contains(g.Adj[self], sh) || !slices.Contains(g.Adj[self], ch) {
				t.Fatalf("dst %d: next hops %d / %d not neighbours of self", dst, sh, ch)
			}
			sn, _ := s.Hops(dst)
			cn, _ := c.Hops(dst)
			if sn > cn {
				t.Fatalf("dst %d: shortest %d hops > compat %d hops", dst, sn, cn)
			}
		}
	})
}
