package admin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/clusterer-go/clusterer"
)

// CapList is the result of list_cap (OpenSIPS clusterer_list_cap).
type CapList struct {
	Clusters []ClusterCaps `json:"Clusters"`
}

// ClusterCaps is one cluster of a CapList.
type ClusterCaps struct {
	ClusterID int `json:"cluster_id"`
	// Capabilities are the local node's, in registration order.
	Capabilities []CapState `json:"Capabilities"`
	// Nodes are the other nodes' capabilities as announced to the local
	// node (CAP_UPDATE), by node id (not in OpenSIPS's output).
	Nodes []NodeCaps `json:"Nodes"`
}

// CapState is a local capability: OpenSIPS's fields (name, state,
// enabled), then ours.
type CapState struct {
	Name string `json:"name"`
	// State is "Ok" when synced, "not synced" otherwise, as OpenSIPS
	// reports it.
	State string `json:"state"`
	// Enabled is "yes" or "no" (clusterer_set_cap_status), as OpenSIPS
	// 3.1 and later report it.
	Enabled string `json:"enabled"`
	// SyncStatus is "synced", "sync pending", "sync in progress",
	// "not synced" or "disabled".
	SyncStatus string `json:"sync_status"`
	// Donor is the node a pending or running sync comes from (0: none).
	Donor int `json:"donor"`
	// Records and Bytes arrived in the current or last sync.
	Records int64 `json:"records"`
	Bytes   int64 `json:"bytes"`
	// ElapsedMs is how long the current or last sync has run, in
	// milliseconds (to the microsecond).
	ElapsedMs float64 `json:"elapsed_ms"`
	// Buffered is the number of ordinary packets held back until the
	// running sync ends.
	Buffered int `json:"buffered"`
	// LastError is why the last failed sync failed ("" if none did).
	LastError string `json:"last_error"`
	// SyncedNodes are the reachable nodes, the local one included, where
	// the capability is synced (Cluster.SyncedNodes).
	SyncedNodes []int `json:"synced_nodes"`
}

// NodeCaps is a remote node's capabilities.
type NodeCaps struct {
	NodeID int `json:"node_id"`
	// Reachable is false when the local node cannot reach the node now;
	// its states are then the last ones it announced.
	Reachable    bool          `json:"reachable"`
	Capabilities []RemoteState `json:"Capabilities"`
}

// RemoteState is a remote node's capability: "Ok" or "not synced".
type RemoteState struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

// SyncState is the result of sync_status: a local capability's sync
// progress.
type SyncState struct {
	ClusterID int `json:"cluster_id"`
	CapState
	// Started is when the current or last sync's data began (RFC 3339),
	// "" before the first one.
	Started string `json:"started"`
	// Index is the local node's position in SyncedNodes, -1 when it is
	// not synced.
	Index int `json:"index"`
}

// OpenSIPS's clusterer_list_cap states.
const (
	StateOk        = "Ok"
	StateNotSynced = "not synced"
)

func capCommands(c *clusterer.Cluster) []Command {
	return []Command{
		{Name: "list_cap", MI: "clusterer_list_cap", Help: "the capabilities of each cluster and their sync state",
			Run: func(context.Context, Params) (any, error) { return ListCap(c), nil }},
		{Name: "set_cap_status", MI: "clusterer_set_cap_status", Mutating: true, Params: []string{"cluster_id", "capability", "status"},
			Help: "enable (1) or disable (0) a capability on the local node",
			Run: func(ctx context.Context, p Params) (any, error) {
				cl, name, err := clusterCap(c, p)
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
				if err := c.SetCapabilityEnabled(ctx, cl, name, st == 1); err != nil {
					return nil, err
				}
				return OK, nil
			}},
		{Name: "cluster_sync", Mutating: true, Params: []string{"cluster_id", "capability"},
			Help: "pull a capability's data from a donor again (as dlg_cluster_sync, ul_cluster_sync)",
			Run: func(ctx context.Context, p Params) (any, error) {
				cl, name, err := clusterCap(c, p)
				if err != nil {
					return nil, err
				}
				if err := c.RequestSync(ctx, cl, name); err != nil {
					return nil, err
				}
				return OK, nil
			}},
		{Name: "sync_status", Params: []string{"cluster_id", "capability"},
			Help: "a capability's sync state and progress on the local node",
			Run: func(_ context.Context, p Params) (any, error) {
				cl, name, err := clusterCap(c, p)
				if err != nil {
					return nil, err
				}
				return SyncStatus(c, cl, name)
			}},
	}
}

// clusterCap reads cluster_id and capability; an unknown cluster is
// ErrUnknownCluster rather than an unknown capability.
func clusterCap(c *clusterer.Cluster, p Params) (int, string, error) {
	cl, err := p.Int("cluster_id")
	if err != nil {
		return 0, "", err
	}
	name, err := p.String("capability")
	if err != nil {
		return 0, "", err
	}
	if !slices.ContainsFunc(c.Memberships(), func(m clusterer.Membership) bool { return m.Cluster == cl }) {
		return 0, "", fmt.Errorf("%w: %d", clusterer.ErrUnknownCluster, cl)
	}
	return cl, name, nil
}

// ListCap builds clusterer_list_cap's result.
func ListCap(c *clusterer.Cluster) CapList {
	out := CapList{Clusters: []ClusterCaps{}}
	for _, m := range c.Memberships() {
		cc := ClusterCaps{ClusterID: m.Cluster, Capabilities: []CapState{}, Nodes: []NodeCaps{}}
		for _, ci := range c.Capabilities(m.Cluster) {
			if ci.Node == c.MyID() {
				cc.Capabilities = append(cc.Capabilities, capState(c, m.Cluster, ci))
				continue
			}
			if n := len(cc.Nodes); n == 0 || cc.Nodes[n-1].NodeID != ci.Node {
				cc.Nodes = append(cc.Nodes, NodeCaps{NodeID: ci.Node, Reachable: ci.Reachable, Capabilities: []RemoteState{}})
			}
			nc := &cc.Nodes[len(cc.Nodes)-1]
			nc.Capabilities = append(nc.Capabilities, RemoteState{Name: ci.Name, State: okState(ci.Status)})
		}
		out.Clusters = append(out.Clusters, cc)
	}
	return out
}

// SyncStatus builds sync_status's result.
func SyncStatus(c *clusterer.Cluster, cluster int, name string) (SyncState, error) {
	p, err := c.SyncStatus(cluster, name)
	if err != nil {
		return SyncState{}, err
	}
	nodes, idx := c.SyncedNodes(cluster, name)
	out := SyncState{ClusterID: cluster, CapState: fromProgress(name, p, nodes), Index: idx}
	if !p.Started.IsZero() {
		out.Started = p.Started.UTC().Format(time.RFC3339Nano)
	}
	return out, nil
}

func capState(c *clusterer.Cluster, cluster int, ci clusterer.CapabilityInfo) CapState {
	nodes, _ := c.SyncedNodes(cluster, ci.Name)
	p, err := c.SyncStatus(cluster, ci.Name)
	if err != nil {
		// Registered between the two reads: what Capabilities said.
		p = clusterer.SyncProgress{Status: ci.Status}
	}
	return fromProgress(ci.Name, p, nodes)
}

func fromProgress(name string, p clusterer.SyncProgress, nodes []int) CapState {
	s := CapState{Name: name, State: okState(p.Status), Enabled: "yes", SyncStatus: p.Status.String(),
		Donor: p.Donor, Records: p.Records, Bytes: p.Bytes, ElapsedMs: float64(p.Elapsed.Microseconds()) / 1000,
		Buffered: p.Buffered, SyncedNodes: nodes}
	if p.Status == clusterer.CapabilityDisabled {
		s.Enabled = "no"
	}
	if p.LastErr != nil {
		s.LastError = p.LastErr.Error()
	}
	if s.SyncedNodes == nil {
		s.SyncedNodes = []int{}
	}
	return s
}

func okState(s clusterer.CapabilityStatus) string {
	if s == clusterer.Synced {
		return StateOk
	}
	return StateNotSynced
}
