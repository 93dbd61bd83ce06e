package clusterer

import (
	"net/netip"
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/internal/core"
)

// LinkState is the state of the direct link to a node.
type LinkState int

// Link states, as OpenSIPS's clusterer_list shows them.
const (
	LinkProbing LinkState = iota // being probed (OpenSIPS "Probe")
	LinkIsUp                     // "Up"
	LinkIsDown                   // "Down"
)

func (s LinkState) String() string {
	switch s {
	case LinkIsUp:
		return "Up"
	case LinkIsDown:
		return "Down"
	}
	return "Probe"
}

// NodeStatus is a remote node as the local node sees it.
type NodeStatus struct {
	NodeInfo
	// Link is the state of the direct link.
	Link LinkState
	// Reachable: a route exists, direct or through other nodes.
	Reachable bool
	// NextHop is the neighbour packets for the node go to, if reachable.
	NextHop int
	// Hops is the length of that route.
	Hops int
	// Neighbors are the node's UP links as known locally (the local node
	// excluded).
	Neighbors []int
	// RTT is the round trip of the last keep-alive or probe answered (0
	// before any); probes are sent only when the link is idle, so under
	// traffic it is the last one measured.
	RTT time.Duration
}

// Nodes lists the nodes of a cluster, by id. It returns nil for an
// unknown cluster.
func (c *Cluster) Nodes(cluster int) []NodeStatus {
	cv := c.view.Load().Cluster(int32(cluster))
	if cv == nil {
		return nil
	}
	out := make([]NodeStatus, 0, len(cv.Nodes))
	for i := range cv.Nodes {
		out = append(out, c.describe(nodeStatus(cv.ID, &cv.Nodes[i])))
	}
	return out
}

// Node returns one node of a cluster.
func (c *Cluster) Node(cluster, node int) (NodeStatus, bool) {
	cv := c.view.Load().Cluster(int32(cluster))
	n := cv.Node(int32(node))
	if n == nil {
		return NodeStatus{}, false
	}
	return c.describe(nodeStatus(cv.ID, n)), true
}

func nodeStatus(cluster int32, n *core.NodeView) NodeStatus {
	s := NodeStatus{
		NodeInfo: NodeInfo{ClusterID: int(cluster), ID: int(n.ID), URL: n.URL, SIPAddr: n.SIPAddr,
			Priority: int(n.Priority), PingRetries: int(n.PingRetries), Seed: n.Seed, Disabled: !n.Enabled},
		Reachable: n.Reachable, Hops: n.Hops, RTT: n.RTT,
	}
	if n.PingRetries == 0 {
		s.PingRetries = NoRetries
	}
	switch n.State {
	case core.Up:
		s.Link = LinkIsUp
	case core.Down:
		s.Link = LinkIsDown
	}
	if n.Reachable {
		s.NextHop = int(n.NextHop)
	}
	for _, x := range n.Neighbors {
		s.Neighbors = append(s.Neighbors, int(x))
	}
	return s
}

// Topology returns the cluster's link graph as known locally: for each
// node (the local one included), its UP links.
func (c *Cluster) Topology(cluster int) map[int][]int {
	cv := c.view.Load().Cluster(int32(cluster))
	if cv == nil {
		return nil
	}
	out := map[int][]int{}
	var mine []int
	for _, n := range cv.Nodes {
		if n.State == core.Up && n.Enabled {
			mine = append(mine, int(n.ID))
		}
		l := make([]int, 0, len(n.Neighbors)+1)
		for _, x := range n.Neighbors {
			l = append(l, int(x))
		}
		if n.State == core.Up && n.Enabled {
			l = append(l, int(c.me)) // a link UP on our side is UP on theirs too, as far as we know
		}
		slices.Sort(l)
		out[int(n.ID)] = l
	}
	slices.Sort(mine)
	out[int(c.me)] = mine
	return out
}

// AddrType selects which address of the nodes CheckAddr compares.
type AddrType int

// Address types.
const (
	AddrBIN AddrType = iota // the node's BIN URL
	AddrSIP                 // the node's SIP address
)

// CheckAddr reports whether ip ("IP" or "IP:PORT") belongs to a node of
// the cluster (OpenSIPS cluster_check_addr), comparing the nodes' BIN or
// SIP addresses; the local node counts.
func (c *Cluster) CheckAddr(cluster int, ip string, kind AddrType) bool {
	a, err := addrOf(ip)
	if err != nil {
		return false
	}
	cv := c.view.Load().Cluster(int32(cluster))
	if cv == nil {
		return false
	}
	match := func(url, sip string) bool {
		var s string
		if kind == AddrSIP {
			s = sip
		} else {
			u, err := core.ParseURL(url)
			if err != nil {
				return false
			}
			return u.Addr.Addr().Unmap() == a
		}
		host := sipHost(s)
		b, err := netip.ParseAddr(host)
		return err == nil && b.Unmap() == a
	}
	if match(cv.Self.URL, cv.Self.SIPAddr) {
		return true
	}
	for _, n := range cv.Nodes {
		if match(n.URL, n.SIPAddr) {
			return true
		}
	}
	return false
}

// sipHost extracts the host of a SIP address such as "sip:10.0.0.1:5060",
// "udp:10.0.0.1:5060" or "[::1]:5060".
func sipHost(s string) string {
	for _, p := range []string{"sip:", "sips:", "udp:", "tcp:", "tls:", "ws:", "wss:", "sctp:"} {
		if len(s) > len(p) && s[:len(p)] == p {
			s = s[len(p):]
			break
		}
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String()
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	if i := lastColon(s); i > 0 {
		if _, err := netip.ParseAddr(s); err != nil {
			return s[:i]
		}
	}
	return s
}

func lastColon(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return i
		}
	}
	return -1
}
