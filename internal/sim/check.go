package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/internal/core"
)

// Config is a node configuration for simulations: one cluster, the given
// neighbours provisioned, lab-like timers (ping every 1 s, 200 ms timeout,
// 3 s re-probe of DOWN nodes).
func Config(id int32, cluster int32, discovery bool, neighbors ...int32) core.Config {
	cc := core.ClusterConfig{ID: cluster, Self: core.NodeInfo{URL: URL(id)}}
	for _, nb := range neighbors {
		cc.Nodes = append(cc.Nodes, core.NodeInfo{ID: nb, URL: URL(nb)})
	}
	return core.Config{
		NodeID: id, Discovery: discovery,
		PingInterval: time.Second, PingTimeout: 200 * time.Millisecond, NodeTimeout: 3 * time.Second,
		Clusters: []core.ClusterConfig{cc},
	}
}

// CheckRoutes verifies, for every live node, that each next hop is an
// enabled neighbour whose link is UP. It holds at every instant.
func (s *Sim) CheckRoutes(cluster int32) error {
	for _, id := range s.IDs() {
		n := s.nodes[id]
		if !n.Alive {
			continue
		}
		cv := n.M.View().Cluster(cluster)
		for _, nv := range cv.Nodes {
			if !nv.Reachable {
				continue
			}
			hop := cv.Node(nv.NextHop)
			if hop == nil || hop.State != core.Up || !hop.Enabled {
				return fmt.Errorf("node %d: next hop %d to %d is not an UP neighbour (%+v)", id, nv.NextHop, nv.ID, hop)
			}
		}
	}
	return nil
}

// Component returns the live, enabled nodes reachable from id over
// working links between nodes that both know each other, sorted.
func (s *Sim) Component(cluster, id int32) []int32 {
	seen := map[int32]bool{id: true}
	queue := []int32{id}
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		cx := s.nodes[x].M.View().Cluster(cluster)
		if !cx.Enabled {
			continue
		}
		for _, y := range s.IDs() {
			if seen[y] || !s.Linked(x, y) {
				continue
			}
			cy := s.nodes[y].M.View().Cluster(cluster)
			nx, ny := cx.Node(y), cy.Node(x)
			if !cy.Enabled || nx == nil || ny == nil || !nx.Enabled || !ny.Enabled {
				continue
			}
			seen[y] = true
			queue = append(queue, y)
		}
	}
	delete(seen, id)
	out := make([]int32, 0, len(seen))
	for y := range seen {
		out = append(out, y)
	}
	slices.Sort(out)
	return out
}

// Reachable lists the nodes id currently considers reachable.
func (s *Sim) Reachable(cluster, id int32) []int32 {
	var out []int32
	for _, nv := range s.nodes[id].M.View().Cluster(cluster).Nodes {
		if nv.Reachable {
			out = append(out, nv.ID)
		}
	}
	return out
}

// CheckConverged verifies the steady state: every live node's reachable set
// is exactly its component of the real network (no phantom nodes, nobody
// missing), and following next hops node by node reaches every destination
// without a loop.
func (s *Sim) CheckConverged(cluster int32) error {
	if err := s.CheckRoutes(cluster); err != nil {
		return err
	}
	for _, id := range s.IDs() {
		n := s.nodes[id]
		if !n.Alive || !n.M.View().Cluster(cluster).Enabled {
			continue
		}
		want, got := s.Component(cluster, id), s.Reachable(cluster, id)
		if !slices.Equal(want, got) {
			return fmt.Errorf("node %d reaches %v, the network connects it to %v", id, got, want)
		}
		for _, dst := range got {
			if err := s.follow(cluster, id, dst); err != nil {
				return err
			}
		}
		if err := s.checkTopology(cluster, id); err != nil && StrictTopology {
			return err
		}
	}
	return nil
}

// StrictTopology makes CheckConverged also compare every node's topology
// database with the truth.
var StrictTopology = false

// checkTopology compares what node id believes each reachable node's UP
// links are with what that node itself has, minus id (never stored).
func (s *Sim) checkTopology(cluster, id int32) error {
	cv := s.nodes[id].M.View().Cluster(cluster)
	for _, nv := range cv.Nodes {
		if !nv.Reachable {
			continue
		}
		var truth []int32
		for _, o := range s.nodes[nv.ID].M.View().Cluster(cluster).Nodes {
			if o.State == core.Up && o.Enabled && o.ID != id {
				truth = append(truth, o.ID)
			}
		}
		got := slices.Clone(nv.Neighbors)
		slices.Sort(got)
		if !slices.Equal(got, truth) {
			return fmt.Errorf("node %d believes %d's links are %v, they are %v", id, nv.ID, got, truth)
		}
	}
	return nil
}

// follow walks next hops from src to dst, each step using the current
// node's own view.
func (s *Sim) follow(cluster, src, dst int32) error {
	path := []int32{src}
	at := src
	for at != dst {
		nv := s.nodes[at].M.View().Cluster(cluster).Node(dst)
		if nv == nil || !nv.Reachable {
			return fmt.Errorf("route %d->%d dead-ends at %d (path %v)", src, dst, at, path)
		}
		at = nv.NextHop
		if slices.Contains(path, at) {
			return fmt.Errorf("route %d->%d loops: %v then %d", src, dst, path, at)
		}
		path = append(path, at)
	}
	return nil
}

// EventsOf returns the node's events of one kind about one node.
func (n *Node) EventsOf(kind core.EventKind, about int32) []TimedEvent {
	var out []TimedEvent
	for _, e := range n.Events {
		if e.Kind == kind && e.Node == about {
			out = append(out, e)
		}
	}
	return out
}
