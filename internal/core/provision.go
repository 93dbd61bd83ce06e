package core

import (
	"fmt"
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/internal/wire"
)

// notePong records a PONG from n: its time and, when it is the first answer
// to the latest probe, the round trip.
func (n *node) notePong(now time.Time) {
	if n.pingOK && !n.lastPing.IsZero() && n.lastPong.Before(n.lastPing) && !now.Before(n.lastPing) {
		n.rtt = now.Sub(n.lastPing)
	}
	n.lastPong = now
}

// Reprovision replaces the node tables of the local node's clusters with
// the given ones (OpenSIPS clusterer_reload). clusters must name exactly
// the clusters the machine was built with, each with the local node's URL
// unchanged; anything else is refused before a change is made.
//
// Nodes that are gone are removed (their UP links announced DOWN, a
// NodeRemoved event each); new nodes start being probed; nodes whose URL
// changed are removed and added again, so their links are probed anew.
// Nodes kept take their new priority, retries, SIP address and seed flag
// without losing their links, and their state (enabled or disabled) as
// SetNodeEnabled does. Self.Disabled sets the local node's state in the
// cluster as SetLocalEnabled does. Own sequence numbers go on, so
// neighbours accept the updates that follow.
func (m *Machine) Reprovision(now time.Time, clusters []ClusterConfig) error {
	check := Config{NodeID: m.cfg.NodeID, Clusters: clusters}
	if err := check.validate(); err != nil {
		return err
	}
	if len(clusters) != len(m.order) {
		return fmt.Errorf("%w: %d clusters given, the node is in %d; joining or leaving a cluster needs a restart", ErrConfig, len(clusters), len(m.order))
	}
	for _, cc := range clusters {
		c := m.clusters[cc.ID]
		if c == nil {
			return fmt.Errorf("%w: cluster %d is new; joining or leaving a cluster needs a restart", ErrConfig, cc.ID)
		}
		if u, _ := ParseURL(cc.Self.URL); u != c.selfURL {
			return fmt.Errorf("%w: cluster %d: own URL %s differs from %s; changing it needs a restart", ErrConfig, cc.ID, cc.Self.URL, c.selfURL)
		}
	}
	for _, cc := range clusters {
		m.clusters[cc.ID].reprovision(now, cc)
	}
	m.finishStep(now)
	return nil
}

func (c *cluster) reprovision(now time.Time, cc ClusterConfig) {
	c.self.SIPAddr = cc.Self.SIPAddr
	c.self.Priority = defaultInt(cc.Self.Priority, DefaultPriority)
	c.self.PingRetries = defaultInt(cc.Self.PingRetries, DefaultPingRetries)

	want := make(map[int32]NodeInfo, len(cc.Nodes))
	for _, ni := range cc.Nodes {
		want[ni.ID] = ni
	}
	for _, n := range slices.Clone(c.list) {
		ni, keep := want[n.id]
		if keep {
			u, _ := ParseURL(ni.URL) // validated
			keep = u == n.url
		}
		if !keep {
			c.removeNode(now, n)
		}
	}
	for _, ni := range cc.Nodes {
		d := wire.Description{URL: ni.URL, SIPAddr: ni.SIPAddr,
			Priority: defaultInt(ni.Priority, DefaultPriority), PingRetries: defaultInt(ni.PingRetries, DefaultPingRetries)}
		if d.PingRetries < 0 {
			d.PingRetries = 0
		}
		n := c.nodes[ni.ID]
		if n == nil {
			c.addNode(ni.ID, d, ni.Seed, !ni.Disabled)
			continue
		}
		d.URL = n.desc.URL // the same URL, as first written
		if d.Priority != n.desc.Priority {
			c.topoDirty = true
		}
		n.desc, n.seed = d, ni.Seed
		c.setNodeEnabled(now, n, !ni.Disabled)
	}
	c.setEnabled(now, !cc.Self.Disabled)
	if c.m.started {
		c.tick(now) // probe new nodes at once
	}
}

// setNodeEnabled is SetNodeEnabled for one node of the cluster.
func (c *cluster) setNodeEnabled(now time.Time, n *node, enabled bool) {
	if n.enabled == enabled {
		return
	}
	if !enabled {
		if n.state == Up {
			c.leaveUp(now, n)
		}
		n.state = Down
		n.enabled = false
	} else {
		n.enabled = true
		n.state = RestartPinging
	}
	c.topoDirty = true
}
