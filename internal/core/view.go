package core

import (
	"net/netip"
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/internal/route"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// View is an immutable snapshot of the machine's state, published for the
// data plane and the public API. Nothing in it may be modified.
type View struct {
	Version  uint64
	NodeID   int32
	Clusters []*ClusterView // sorted by ID
}

// Cluster returns the cluster with the given id, or nil.
func (v *View) Cluster(id int32) *ClusterView {
	if v == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(v.Clusters, id, func(c *ClusterView, id int32) int { return int(c.ID) - int(id) })
	if !ok {
		return nil
	}
	return v.Clusters[i]
}

// ClusterView is one cluster in a View.
type ClusterView struct {
	ID      int32
	Enabled bool
	Self    wire.Description
	Nodes   []NodeView // sorted by ID
	Routes  *route.Table
	// IPs are the addresses a packet of this cluster may come from.
	IPs          []netip.Addr
	Capabilities []wire.CapState // local ones, as announced
	// LocalCaps are the registered local capabilities and their sync state.
	LocalCaps []CapView
	ShTags    []ShTagView // sorted by name
}

// Node returns the node with the given id, or nil.
func (c *ClusterView) Node(id int32) *NodeView {
	if c == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(c.Nodes, id, func(n NodeView, id int32) int { return int(n.ID) - int(id) })
	if !ok {
		return nil
	}
	return &c.Nodes[i]
}

// IPAllowed reports whether a packet of this cluster may come from ip.
func (c *ClusterView) IPAllowed(ip netip.Addr) bool {
	if !ip.IsValid() {
		return true
	}
	_, ok := slices.BinarySearchFunc(c.IPs, ip.Unmap(), func(a, b netip.Addr) int { return a.Compare(b) })
	return ok
}

// NodeView is one remote node in a ClusterView.
type NodeView struct {
	ID           int32
	URL          string
	Addr         string // listener "IP:PORT"
	SIPAddr      string
	Priority     int32
	PingRetries  int32
	Seed         bool
	Enabled      bool
	State        LinkState
	Reachable    bool
	NextHop      int32
	Hops         int
	Neighbors    []int32 // its UP neighbours as known here
	Capabilities []wire.CapState
	// RTT is the round trip of the last probe answered within the ping
	// timeout; 0 before any.
	RTT time.Duration
}

// View returns the current snapshot; the same pointer until something
// visible changes.
func (m *Machine) View() *View {
	if m.view != nil {
		return m.view
	}
	v := &View{Version: m.version, NodeID: m.cfg.NodeID}
	for _, id := range m.order {
		c := m.clusters[id]
		cv := &ClusterView{ID: c.id, Enabled: c.enabled, Self: c.self, Routes: c.table,
			Capabilities: slices.Clone(c.caps), LocalCaps: c.capViews(), ShTags: c.shtagViews()}
		ips := []netip.Addr{c.selfURL.Addr.Addr().Unmap()}
		for _, n := range c.list {
			ips = append(ips, n.url.Addr.Addr().Unmap())
			cv.Nodes = append(cv.Nodes, NodeView{
				ID: n.id, URL: n.desc.URL, Addr: n.addr, SIPAddr: n.desc.SIPAddr, Priority: n.desc.Priority,
				PingRetries: n.desc.PingRetries, Seed: n.seed, Enabled: n.enabled, State: n.state,
				Reachable: n.reachable, NextHop: n.hop, Hops: n.hops,
				Neighbors: slices.Clone(n.adj), Capabilities: slices.Clone(n.caps), RTT: n.rtt,
			})
		}
		slices.SortFunc(cv.Nodes, func(a, b NodeView) int { return int(a.ID) - int(b.ID) })
		slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
		cv.IPs = slices.Compact(ips)
		v.Clusters = append(v.Clusters, cv)
	}
	m.view = v
	return v
}
