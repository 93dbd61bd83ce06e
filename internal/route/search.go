package route

import (
	"cmp"
	"slices"
)

// dense is a Graph translated to indices 0..V-1, in ascending id order, with
// the adjacency lists cleaned up and stored in compressed sparse row form.
// Because indices follow id order, comparing indices compares ids.
type dense struct {
	ids   []int32 // ids[i] is the id of node i; strictly ascending, all >= 1
	prio  []int32 // prio[i] is the priority of node i
	self  int32   // index of Self
	off   []int32 // out-edges of node i are edges[off[i]:off[i+1]]
	edges []int32 // target indices: no self-loops, no duplicates, never Self
}

// keyedList is one valid key of Graph.Adj with its list.
type keyedList struct {
	id   int32
	list []int32
}

// newDense compacts g. g.Self must be >= 1.
func newDense(g Graph) *dense {
	// Valid keys, sorted, so that later passes need no map access.
	lists := make([]keyedList, 0, len(g.Adj))
	total := 0
	for k, l := range g.Adj {
		if k >= 1 {
			lists = append(lists, keyedList{k, l})
			total += len(l)
		}
	}
	slices.SortFunc(lists, func(a, b keyedList) int { return cmp.Compare(a.id, b.id) })

	// Node ids: Self, the keys, and targets that are not keys (usually
	// few, so sorting them separately is cheaper than sorting all targets).
	ids := make([]int32, 0, len(lists)+1)
	ids = append(ids, g.Self)
	for _, kl := range lists {
		ids = append(ids, kl.id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var extra []int32
	for _, kl := range lists {
		for _, v := range kl.list {
			if v < 1 {
				continue
			}
			if _, found := slices.BinarySearch(ids, v); !found {
				extra = append(extra, v)
			}
		}
	}
	if len(extra) > 0 {
		ids = append(ids, extra...)
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	ids = slices.Clip(ids)

	n := len(ids)
	index := func(id int32) int32 {
		i, _ := slices.BinarySearch(ids, id)
		return int32(i)
	}
	d := &dense{
		ids:   ids,
		prio:  make([]int32, n),
		self:  index(g.Self),
		off:   make([]int32, n+1),
		edges: make([]int32, 0, total),
	}
	for i, id := range ids {
		if p, ok := g.Priority[id]; ok {
			d.prio[i] = p
		} else {
			d.prio[i] = DefaultPriority
		}
	}

	// Both ids and lists are sorted: walk them together. seen[j] == i+1
	// marks j as already listed for node i (dedup).
	seen := make([]int32, n)
	next := 0
	for i, id := range ids {
		d.off[i] = int32(len(d.edges))
		if next >= len(lists) || lists[next].id != id {
			continue // no list known for this node
		}
		for _, v := range lists[next].list {
			if v < 1 || v == id || v == g.Self {
				continue // invalid, self-loop, or back into Self
			}
			j := index(v)
			if seen[j] == int32(i)+1 {
				continue
			}
			seen[j] = int32(i) + 1
			d.edges = append(d.edges, j)
		}
		next++
	}
	d.off[n] = int32(len(d.edges))
	return d
}

// out returns the out-neighbours of node i.
func (d *dense) out(i int32) []int32 {
	return d.edges[d.off[i]:d.off[i+1]]
}

// before reports whether node a precedes node b in (priority, id) order.
func (d *dense) before(a, b int32) bool {
	if d.prio[a] != d.prio[b] {
		return d.prio[a] < d.prio[b]
	}
	return a < b
}

// result holds, per node index, the index of the first hop (-1 when
// unreachable) and the length in links of the chosen route. The entries of
// Self are meaningless.
type result struct {
	first []int32
	hops  []int32
}

func newResult(n int) result {
	r := result{first: make([]int32, n), hops: make([]int32, n)}
	for i := range r.first {
		r.first[i] = -1
	}
	return r
}

// shortest labels every node with the best first hop under the Shortest rule.
//
// It is a breadth-first search over the graph without Self, started from all
// neighbours of Self at once (level 0), enqueued in (priority, id) order and
// each labelled with itself. A node takes the label of the node that
// discovers it. Level 0 is sorted by label rank; if level k is, the nodes of
// level k+1 are discovered in label-rank order too, so by induction every
// level is sorted, and a node at level k+1 receives the best label among its
// predecessors at level k, each of which carries the best label among the
// neighbours at distance k from it. Hence each node ends up with the
// neighbour minimising (distance, priority, id), in O(V+E).
func (d *dense) shortest() result {
	r := newResult(len(d.ids))
	r.first[d.self] = d.self // never enter Self

	queue := make([]int32, 0, len(d.ids))
	queue = append(queue, d.out(d.self)...)
	slices.SortFunc(queue, func(a, b int32) int {
		if c := cmp.Compare(d.prio[a], d.prio[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, s := range queue {
		r.first[s] = s
		r.hops[s] = 1
	}
	for h := 0; h < len(queue); h++ {
		u := queue[h]
		for _, v := range d.out(u) {
			if r.first[v] < 0 {
				r.first[v] = r.first[u]
				r.hops[v] = r.hops[u] + 1
				queue = append(queue, v)
			}
		}
	}
	return r
}

// bestFirst runs OpenSIPS's search once for all destinations.
//
// Self is expanded first; afterwards the queued node with the lowest
// (priority, id) over the whole queue is popped and expanded. The first node
// to reach another becomes its parent and is never replaced; Self is never
// re-entered. Whether OpenSIPS stops at the destination or not, the parent
// chain of that destination is the same, so one full search serves all of
// them. Nodes are popped after their parent, so first hops and route lengths
// are propagated in pop order.
func (d *dense) bestFirst() result {
	n := len(d.ids)
	r := newResult(n)
	parent := make([]int32, n)
	for i := range parent {
		parent[i] = -1
	}
	parent[d.self] = d.self

	h := minHeap{d: d, items: make([]int32, 0, n)}
	order := make([]int32, 0, n)
	expand := func(u int32) {
		for _, v := range d.out(u) {
			if parent[v] < 0 {
				parent[v] = u
				h.push(v)
			}
		}
	}
	expand(d.self)
	for len(h.items) > 0 {
		u := h.pop()
		order = append(order, u)
		expand(u)
	}
	for _, u := range order {
		if p := parent[u]; p == d.self {
			r.first[u] = u
			r.hops[u] = 1
		} else {
			r.first[u] = r.first[p]
			r.hops[u] = r.hops[p] + 1
		}
	}
	return r
}

// minHeap is a binary heap of node indices ordered by dense.before.
type minHeap struct {
	d     *dense
	items []int32
}

func (h *minHeap) push(v int32) {
	h.items = append(h.items, v)
	i := len(h.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h.d.before(h.items[i], h.items[p]) {
			break
		}
		h.items[i], h.items[p] = h.items[p], h.items[i]
		i = p
	}
}

func (h *minHeap) pop() int32 {
	top := h.items[0]
	last := len(h.items) - 1
	h.items[0] = h.items[last]
	h.items = h.items[:last]
	i := 0
	for {
		l, m := 2*i+1, i
		if l < last && h.d.before(h.items[l], h.items[m]) {
			m = l
		}
		if l+1 < last && h.d.before(h.items[l+1], h.items[m]) {
			m = l + 1
		}
		if m == i {
			return top
		}
		h.items[i], h.items[m] = h.items[m], h.items[i]
		i = m
	}
}
