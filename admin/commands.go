package admin

import (
	"context"
	"net/http"
	"slices"
	"strconv"

	"github.com/clusterer-go/clusterer"
)

// OK is the result of a command that returns nothing else, as OpenSIPS's
// MI answers.
const OK = "OK"

// NodeList is the result of list (OpenSIPS clusterer_list).
type NodeList struct {
	Clusters []ClusterNodes `json:"Clusters"`
}

// ClusterNodes is one cluster of a NodeList.
type ClusterNodes struct {
	ClusterID int `json:"cluster_id"`
	// Enabled is the local node's state in the cluster, 1 or 0 (not in
	// OpenSIPS's output).
	Enabled int        `json:"enabled"`
	Nodes   []NodeInfo `json:"Nodes"`
}

// NodeInfo is one node of a NodeList: OpenSIPS's fields, then ours.
type NodeInfo struct {
	NodeID int `json:"node_id"`
	// DBID is the node's row id; -1 if not provisioned from a database.
	DBID      int    `json:"db_id"`
	URL       string `json:"url"`
	LinkState string `json:"link_state"` // "Up", "Down" or "Probe"
	// NextHop is the next hop's id, or "none" when unreachable.
	NextHop string `json:"next_hop"`
	// Description is the provisioned description, or "none".
	Description string `json:"description"`
	// Enabled is the node's state here, 1 or 0 (not in OpenSIPS's
	// output).
	Enabled int `json:"enabled"`
	// RTTms is the last ping round trip in milliseconds, 0 if none
	// (not in OpenSIPS's output).
	RTTms float64 `json:"rtt_ms"`
}

// Topology is the result of list_topology (clusterer_list_topology).
type Topology struct {
	Clusters []ClusterTopology `json:"Clusters"`
}

// ClusterTopology is one cluster of a Topology: every node, the local one
// included, with its UP links.
type ClusterTopology struct {
	ClusterID int            `json:"cluster_id"`
	Nodes     []TopologyNode `json:"Nodes"`
}

// TopologyNode is a node and its neighbours.
type TopologyNode struct {
	NodeID     int   `json:"node_id"`
	Neighbours []int `json:"Neighbours"`
}

// builtinCommands are the node's commands: the nodes' (here), the
// capabilities' (capCommands) and the sharing tags' (shtagCommands).
func builtinCommands(c *clusterer.Cluster, opts Options, tr *shtagTracker) []Command {
	return slices.Concat(nodeCommands(c, opts), capCommands(c), shtagCommands(c, tr))
}

func nodeCommands(c *clusterer.Cluster, opts Options) []Command {
	return []Command{
		{Name: "list", MI: "clusterer_list", Help: "the nodes of each cluster and the links to them",
			Run: func(context.Context, Params) (any, error) { return List(c), nil }},
		{Name: "list_topology", MI: "clusterer_list_topology", Help: "each cluster's links as known locally",
			Run: func(context.Context, Params) (any, error) { return ListTopology(c), nil }},
		{Name: "set_status", MI: "clusterer_set_status", Mutating: true, Params: []string{"cluster_id", "node_id?", "status"},
			Help: "enable (1) or disable (0) the local node, or another node locally, in a cluster",
			Run:  func(ctx context.Context, p Params) (any, error) { return setStatus(ctx, c, p) }},
		{Name: "send_mi", MI: "cluster_send_mi", Mutating: true, Params: []string{"cluster_id", "destination", "cmd_name", "cmd_params?"},
			Help: "run a command on one node",
			Run:  func(ctx context.Context, p Params) (any, error) { return sendMI(c, p, false) }},
		{Name: "broadcast_mi", MI: "cluster_broadcast_mi", Mutating: true, Params: []string{"cluster_id", "cmd_name", "cmd_params?"},
			Help: "run a command on every node of a cluster, the local one included",
			Run:  func(ctx context.Context, p Params) (any, error) { return sendMI(c, p, true) }},
		{Name: "remove_node", MI: "clusterer_remove_node", Mutating: true, Params: []string{"cluster_id", "node_id"},
			Help: "make every node of a cluster forget a node",
			Run: func(ctx context.Context, p Params) (any, error) {
				cl, node, err := clusterNode(p, "node_id")
				if err != nil {
					return nil, err
				}
				if node == c.MyID() {
					return nil, errorf(http.StatusBadRequest, "node %d is the local node: disable it with set_status instead", node)
				}
				if err := c.RemoveNode(ctx, cl, node); err != nil {
					return nil, err
				}
				return OK, nil
			}},
		{Name: "reload", MI: "clusterer_reload", Mutating: true, Help: "re-read the provisioned nodes",
			Run: func(ctx context.Context, _ Params) (any, error) {
				if opts.Reload == nil {
					return nil, errorf(http.StatusBadRequest, "Database mode is not enabled")
				}
				if err := opts.Reload(ctx); err != nil {
					return nil, err
				}
				return OK, nil
			}},
	}
}

// List builds clusterer_list's result.
func List(c *clusterer.Cluster) NodeList {
	out := NodeList{Clusters: []ClusterNodes{}}
	for _, m := range c.Memberships() {
		cn := ClusterNodes{ClusterID: m.Cluster, Enabled: b2i(m.Enabled), Nodes: []NodeInfo{}}
		for _, n := range c.Nodes(m.Cluster) {
			ni := NodeInfo{NodeID: n.ID, DBID: n.DBID, URL: n.URL, LinkState: n.Link.String(), NextHop: "none",
				Description: n.Description, Enabled: b2i(!n.Disabled), RTTms: float64(n.RTT.Microseconds()) / 1000}
			if ni.DBID == 0 {
				ni.DBID = -1
			}
			if n.Reachable {
				ni.NextHop = strconv.Itoa(n.NextHop)
			}
			if ni.Description == "" {
				ni.Description = "none"
			}
			cn.Nodes = append(cn.Nodes, ni)
		}
		out.Clusters = append(out.Clusters, cn)
	}
	return out
}

// ListTopology builds clusterer_list_topology's result, nodes by id.
func ListTopology(c *clusterer.Cluster) Topology {
	out := Topology{Clusters: []ClusterTopology{}}
	for _, m := range c.Memberships() {
		ct := ClusterTopology{ClusterID: m.Cluster, Nodes: []TopologyNode{}}
		top := c.Topology(m.Cluster)
		ids := make([]int, 0, len(top))
		for id := range top {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			ct.Nodes = append(ct.Nodes, TopologyNode{NodeID: id, Neighbours: append([]int{}, top[id]...)})
		}
		out.Clusters = append(out.Clusters, ct)
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func clusterNode(p Params, nodeParam string) (int, int, error) {
	cl, err := p.Int("cluster_id")
	if err != nil {
		return 0, 0, err
	}
	node, err := p.Int(nodeParam)
	if err != nil {
		return 0, 0, err
	}
	return cl, node, nil
}

func setStatus(ctx context.Context, c *clusterer.Cluster, p Params) (any, error) {
	cl, err := p.Int("cluster_id")
	if err != nil {
		return nil, err
	}
	st, err := p.Int("status")
	if err != nil {
		return nil, err
	}
	if st != 0 && st != 1 {
		return nil, errorf(http.StatusBadRequest, "status must be 0 (disabled) or 1 (enabled), not %d", st)
	}
	node := c.MyID()
	if p.Has("node_id") {
		if node, err = p.Int("node_id"); err != nil {
			return nil, err
		}
	}
	if node == c.MyID() {
		err = c.SetState(ctx, cl, st == 1)
	} else {
		err = c.SetNodeState(ctx, cl, node, st == 1)
	}
	if err != nil {
		return nil, err
	}
	return OK, nil
}

func sendMI(c *clusterer.Cluster, p Params, broadcast bool) (any, error) {
	cl, err := p.Int("cluster_id")
	if err != nil {
		return nil, err
	}
	name, err := p.String("cmd_name")
	if err != nil {
		return nil, err
	}
	params, err := p.Strings("cmd_params")
	if err != nil {
		return nil, err
	}
	if broadcast {
		err = c.BroadcastCommand(cl, name, params...)
	} else {
		var dst int
		if dst, err = p.Int("destination"); err != nil {
			return nil, err
		}
		err = c.SendCommand(cl, dst, name, params...)
	}
	if err != nil {
		return nil, err
	}
	return OK, nil
}
