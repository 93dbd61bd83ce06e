package clusterer

import (
	"context"
	"fmt"
	"time"

	"github.com/clusterer-go/clusterer/internal/core"
)

// Operations: replacing the provisioned nodes while running (OpenSIPS
// clusterer_reload) and the read-only accessors that admin tools and
// metrics need beyond Nodes, Topology and Stats.

// Reprovision replaces the provisioned nodes of the local node's clusters
// while it runs, as OpenSIPS's clusterer_reload does once the clusterer
// table has changed (package dbprov reads the table and calls it).
//
// clusters must name exactly the clusters of Config.Clusters, each with
// the local node's URL unchanged: joining or leaving a cluster and moving
// the listener need a restart. Everything is validated as New does before
// anything changes, so a refused call leaves the node as it was; errors
// wrap ErrConfig and name the offending field.
//
// Nodes no longer listed are forgotten (their UP links announced DOWN, a
// NodeRemoved event each), new ones are probed at once, and a node whose
// URL changed is forgotten and probed anew. Nodes kept keep their links
// and take their new priority, retries, SIP address, seed flag,
// description and state (Disabled as SetNodeState). Self.Disabled sets
// the local node's state in the cluster as SetState does. Before Start,
// it simply replaces the configuration.
func (c *Cluster) Reprovision(ctx context.Context, clusters []ClusterConfig) error {
	cfg := c.cfg
	cfg.Clusters = clusters
	cc, err := cfg.coreConfig()
	if err != nil {
		return err
	}
	meta := newNodeMeta(clusters)
	apply := func(m *core.Machine, now time.Time) error {
		if err := m.Reprovision(now, cc.Clusters); err != nil {
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
		c.meta.Store(meta)
		return nil
	}
	c.mu.Lock()
	if c.state == stateNew {
		// Nothing runs yet: the machine is ours while mu is held (Start
		// takes it too). Events it raised are dispatched once started.
		defer c.mu.Unlock()
		if err := apply(c.m, time.Now()); err != nil {
			return err
		}
		c.view.Store(c.m.View())
		c.syncAddrs(c.m.View())
		return nil
	}
	c.mu.Unlock()
	return c.do(ctx, apply)
}

// Membership is the local node in one of its clusters.
type Membership struct {
	// Cluster is the cluster id.
	Cluster int
	// Self is the local node as it describes itself in the cluster.
	Self NodeInfo
	// Enabled is false while the local node is disabled in the cluster
	// (SetState, a REMOVE_NODE naming it, or provisioned disabled).
	Enabled bool
}

// Memberships lists the clusters the local node belongs to, by id.
func (c *Cluster) Memberships() []Membership {
	v := c.view.Load()
	out := make([]Membership, 0, len(v.Clusters))
	for _, cv := range v.Clusters {
		self := NodeInfo{ClusterID: int(cv.ID), ID: int(c.me), URL: cv.Self.URL, SIPAddr: cv.Self.SIPAddr,
			Priority: int(cv.Self.Priority), PingRetries: int(cv.Self.PingRetries)}
		if self.PingRetries == 0 {
			self.PingRetries = NoRetries
		}
		out = append(out, Membership{Cluster: int(cv.ID), Self: self, Enabled: cv.Enabled})
	}
	return out
}

// Queues is how much work is waiting inside the node.
type Queues struct {
	// Inbox is the inputs waiting for the protocol loop (it holds
	// InboxCap; beyond, inputs are dropped and counted in
	// Stats.InboxFull).
	Inbox, InboxCap int
	// Peers is, per peer address ("IP:PORT", as in the nodes' URLs),
	// the bytes queued and not yet written (bounded by
	// Config.QueueBytes).
	Peers map[string]int
	// Handlers are the deliveries waiting for each handler goroutine
	// (bounded by Config.HandlerQueue or the capability's QueueLen).
	Handlers []HandlerQueue
}

// HandlerQueue is the backlog of one handler goroutine.
type HandlerQueue struct {
	// Kind is "capability", "subscribers" (all Subscribe callers
	// together), "requests" (HandleRequests) or "commands"
	// (RegisterCommand).
	Kind string
	// Cluster and Capability name the capability (Kind "capability").
	Cluster    int
	Capability string
	Pending    int
}

// Queues reports the node's queue depths.
func (c *Cluster) Queues() Queues {
	q := Queues{Inbox: len(c.inbox), InboxCap: cap(c.inbox), Peers: map[string]int{}}
	c.mu.Lock()
	peers := c.peers
	subs := 0
	for s := range c.subs {
		subs += s.box.pending()
	}
	for k, cp := range c.caps {
		q.Handlers = append(q.Handlers, HandlerQueue{Kind: "capability", Cluster: int(k.cluster), Capability: k.name, Pending: cp.box.pending()})
	}
	c.mu.Unlock()
	q.Handlers = append(q.Handlers, HandlerQueue{Kind: "subscribers", Pending: subs})
	g := c.msgs
	g.mu.Lock()
	reqs, cmds := g.reqBox, g.cmdBox
	g.mu.Unlock()
	q.Handlers = append(q.Handlers, HandlerQueue{Kind: "requests", Pending: reqs.pending()},
		HandlerQueue{Kind: "commands", Pending: cmds.pending()})
	if peers != nil {
		for addr, n := range peers.Stats().Queued {
			q.Peers[addr] = n
		}
	}
	return q
}

// pending is the number of items waiting; 0 for a nil mailbox.
func (b *mailbox[T]) pending() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.items)
}

// nodeMeta keeps what the protocol does not need of provisioned nodes.
type nodeMeta map[metaKey]metaInfo

type metaKey struct{ cluster, node int }

type metaInfo struct {
	description string
	dbID        int
}

func newNodeMeta(clusters []ClusterConfig) *nodeMeta {
	m := nodeMeta{}
	for _, cc := range clusters {
		for _, n := range cc.Nodes {
			if n.Description != "" || n.DBID != 0 {
				m[metaKey{cc.ID, n.ID}] = metaInfo{n.Description, n.DBID}
			}
		}
	}
	return &m
}

// describe adds the description and row id provisioned for the node.
func (c *Cluster) describe(s NodeStatus) NodeStatus {
	if m := c.meta.Load(); m != nil {
		if i, ok := (*m)[metaKey{s.ClusterID, s.ID}]; ok {
			s.Description, s.DBID = i.description, i.dbID
		}
	}
	return s
}
