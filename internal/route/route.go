package route

import (
	"slices"
	"strconv"
)

// Mode selects the rule used to choose among several routes to a destination.
type Mode int

const (
	// Shortest routes over a minimum-hop path, preferring the first hop
	// with the lowest (priority, id). It is the default (zero) Mode.
	Shortest Mode = iota
	// OpenSIPSCompat reproduces OpenSIPS's priority-ordered best-first
	// search, so that Go nodes relay exactly like OpenSIPS nodes do.
	OpenSIPSCompat
)

// String returns "shortest", "opensips-compat" or "Mode(n)".
func (m Mode) String() string {
	switch m {
	case Shortest:
		return "shortest"
	case OpenSIPSCompat:
		return "opensips-compat"
	default:
		return "Mode(" + strconv.Itoa(int(m)) + ")"
	}
}

// DefaultPriority is the priority of a node that has no entry in
// Graph.Priority. It is the zero value, so a missing entry behaves exactly
// like an explicit 0 (the most preferred value unless negative priorities
// are used). Callers that want OpenSIPS's database default (50) for nodes
// without a known description must put it in the map themselves.
const DefaultPriority int32 = 0

// Graph is the locally known topology of one cluster, the input of Compute.
// Compute only reads it; the caller may reuse or modify it afterwards.
type Graph struct {
	// Self is the id of the local node. An id < 1 yields an empty Table.
	Self int32
	// Adj[x] lists the nodes that x reports an UP link with, as known
	// locally; Adj[Self] is the list of the local node's own UP links.
	// Links are directed: y in Adj[x] lets a route go x→y only.
	// A node may appear in lists without being a key of Adj: it can then
	// be reached, but no route passes through it. Order and duplicates
	// within a list do not matter; self-loops, ids < 1, keys < 1 and
	// entries naming Self in other nodes' lists are ignored.
	Adj map[int32][]int32
	// Priority holds the nodes' routing priorities; lower is preferred.
	// Missing entries count as DefaultPriority.
	Priority map[int32]int32
}

// Table is the routing table of one node for one topology, as computed by
// Compute. It is immutable, so any number of goroutines may read it
// concurrently. A nil *Table is valid and routes nowhere.
type Table struct {
	self    int32
	mode    Mode
	entries []entry // one per reachable destination, sorted by dst
}

// entry is the route to one destination.
type entry struct {
	dst  int32
	hop  int32 // first hop: a member of Adj[Self]
	hops int32 // length of the chosen route in links (1 for a direct link)
}

// Compute builds the routing table of g.Self for every destination known in
// g, choosing routes according to mode (any value other than OpenSIPSCompat
// means Shortest). It never panics and never retains g or its maps.
//
// Cost: O((V+E)·log V) time for V distinct ids and E adjacency entries,
// dominated by translating ids to dense indices; the searches themselves are
// linear (Shortest) or O(E + V·log V) (OpenSIPSCompat).
func Compute(g Graph, mode Mode) *Table {
	t := &Table{self: g.Self, mode: mode}
	if g.Self < 1 || len(g.Adj[g.Self]) == 0 {
		return t
	}
	d := newDense(g)
	var r result
	if mode == OpenSIPSCompat {
		r = d.bestFirst()
	} else {
		r = d.shortest()
	}
	n := 0
	for i := range d.ids {
		if int32(i) != d.self && r.first[i] >= 0 {
			n++
		}
	}
	t.entries = make([]entry, 0, n)
	for i, id := range d.ids { // ascending ids, so entries end up sorted
		if int32(i) == d.self || r.first[i] < 0 {
			continue
		}
		t.entries = append(t.entries, entry{
			dst:  id,
			hop:  d.ids[r.first[i]],
			hops: r.hops[i],
		})
	}
	return t
}

// lookup returns the entry for dst, or nil when dst is unreachable.
func (t *Table) lookup(dst int32) *entry {
	if t == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(t.entries, dst, func(e entry, id int32) int {
		switch {
		case e.dst < id:
			return -1
		case e.dst > id:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return &t.entries[i]
}

// NextHop returns the neighbour of Self that a message for dst must be sent
// to. It is dst itself when Self has a direct UP link with dst. ok is false
// when dst is unreachable, unknown, < 1 or Self.
func (t *Table) NextHop(dst int32) (hop int32, ok bool) {
	if e := t.lookup(dst); e != nil {
		return e.hop, true
	}
	return 0, false
}

// Hops returns the number of links of the chosen route to dst (1 for a
// direct link). ok is false exactly when NextHop reports false.
func (t *Table) Hops(dst int32) (int, bool) {
	if e := t.lookup(dst); e != nil {
		return int(e.hops), true
	}
	return 0, false
}

// IsReachable reports whether a route to dst exists.
func (t *Table) IsReachable(dst int32) bool {
	return t.lookup(dst) != nil
}

// Reachable returns the ids of all destinations with a next hop, sorted
// ascending, Self excluded. The slice is freshly allocated for the caller.
func (t *Table) Reachable() []int32 {
	if t == nil || len(t.entries) == 0 {
		return nil
	}
	out := make([]int32, len(t.entries))
	for i, e := range t.entries {
		out[i] = e.dst
	}
	return out
}

// Self returns the id of the node the table was computed for.
func (t *Table) Self() int32 {
	if t == nil {
		return 0
	}
	return t.self
}

// Mode returns the mode the table was computed with, as passed to Compute.
func (t *Table) Mode() Mode {
	if t == nil {
		return Shortest
	}
	return t.mode
}
