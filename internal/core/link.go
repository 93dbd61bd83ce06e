package core

import (
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/internal/wire"
)

// The link state machine (spec §6). Differences from OpenSIPS; the messages
// and their fields stay OpenSIPS's, only their timing changes:
//   - timers fire at exact deadlines instead of on a gcd-period ticker;
//   - send failures arrive asynchronously (SendFailed) and are applied as
//     OpenSIPS applies a failed synchronous send;
//   - an UP link's probe counts as answered by any packet received after
//     it, not only by its PONG, so a PONG queued behind bulk data does not
//     fail a busy link (spec §16.1);
//   - after answering UNKNOWN_ID with our description we probe again at
//     once instead of after a ping timeout, which shortens a join.

func (c *cluster) ping(now time.Time, n *node, reqList bool) {
	n.lastPing = now
	n.pingOK = true
	c.send(n, &wire.Ping{Origin: wire.Origin{Cluster: c.id, Src: c.me()}, ReqNodeList: reqList})
}

// answered reports whether the last probe got its answer: a PONG, or, for
// an UP link, any packet.
func (n *node) answered() bool {
	if n.lastPong.After(n.lastPing) || n.lastPong.Equal(n.lastPing) && !n.lastPing.IsZero() {
		return true
	}
	return n.state == Up && !n.lastRecv.Before(n.lastPing)
}

func (c *cluster) tick(now time.Time) {
	if !c.enabled {
		return
	}
	if !c.refreshAt.IsZero() && !now.Before(c.refreshAt) {
		c.refreshAt = time.Time{}
		c.sendRefresh(now)
	}
	cfg := &c.m.cfg
	for _, n := range c.list {
		if len(n.held) > 0 && !now.Before(n.heldUntil) {
			n.held = nil // see restarted
			c.topoDirty = true
		}
	}
	for _, n := range slices.Clone(c.list) {
		if !n.enabled || c.nodes[n.id] != n {
			continue
		}
		switch n.state {
		case RestartPinging:
			n.retries = n.desc.PingRetries
			c.ping(now, n, true)
			n.state = Restarted
		case RetrySendFail:
			if now.Sub(n.lastPing) >= cfg.PingTimeout {
				c.retry(now, n)
			}
		case Restarted, Retrying:
			if now.Sub(n.lastPing) >= cfg.PingTimeout && !n.answered() {
				c.retry(now, n)
			}
		case Up:
			switch {
			case !n.answered():
				if now.Sub(n.lastPing) >= cfg.PingTimeout {
					// The first failed probe takes the link out of UP;
					// retries only decide when it is declared DOWN.
					c.leaveUp(now, n)
					n.retries = n.desc.PingRetries
					n.state = Retrying
					c.retry(now, n)
				}
			case now.Sub(latest(n.lastSent, n.lastPing)) >= cfg.PingInterval:
				c.ping(now, n, false)
			}
		case Down:
			if now.Sub(n.lastPing) >= cfg.NodeTimeout {
				n.retries = n.desc.PingRetries
				c.ping(now, n, true)
				n.state = Restarted
			}
		}
	}
}

// retry sends the next probe of a retry sequence, or declares the link
// DOWN when none is left.
func (c *cluster) retry(now time.Time, n *node) {
	if n.retries <= 0 {
		c.setDown(n)
		return
	}
	n.retries--
	c.ping(now, n, true)
	n.state = Retrying
}

func (c *cluster) setDown(n *node) {
	n.state = Down
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// deadline is when tick next has something to do in this cluster.
func (c *cluster) deadline() time.Time {
	if !c.enabled {
		return time.Time{}
	}
	cfg := &c.m.cfg
	var d time.Time
	min := func(t time.Time) {
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	if !c.refreshAt.IsZero() {
		min(c.refreshAt)
	}
	for _, n := range c.list {
		if len(n.held) > 0 {
			min(n.heldUntil)
		}
		if !n.enabled {
			continue
		}
		switch n.state {
		case RestartPinging:
			min(time.Unix(0, 1)) // as soon as possible: any past time will do
		case RetrySendFail:
			min(n.lastPing.Add(cfg.PingTimeout))
		case Restarted, Retrying:
			if !n.answered() {
				min(n.lastPing.Add(cfg.PingTimeout))
			}
		case Up:
			if !n.answered() {
				min(n.lastPing.Add(cfg.PingTimeout))
			} else {
				min(latest(n.lastSent, n.lastPing).Add(cfg.PingInterval))
			}
		case Down:
			min(n.lastPing.Add(cfg.NodeTimeout))
		}
	}
	return d
}

// sendFailed applies a failed send to the link (spec §6.4): an UP link
// leaves UP at once; a probing link moves to RETRY_SEND_FAIL or DOWN.
func (c *cluster) sendFailed(now time.Time, n *node) {
	if !n.enabled || n.state == Down {
		return
	}
	fresh := false
	switch n.state {
	case Up:
		c.leaveUp(now, n)
		fresh = true
	case RestartPinging, Restarted:
		fresh = true
	}
	if fresh {
		n.retries = n.desc.PingRetries
	}
	n.pingOK = false
	n.lastPing = now // the next attempt waits a ping timeout
	if n.retries <= 0 {
		c.setDown(n)
		return
	}
	if n.state != RetrySendFail {
		n.state = RetrySendFail
	}
}

// revive restarts probing of a DOWN node that sent us something (spec §3.2
// step 10).
func (c *cluster) revive(n *node) {
	if n.state == Down && n.enabled {
		n.state = RestartPinging
	}
}

func (c *cluster) handlePing(now time.Time, n *node, msg *wire.Ping) {
	pong := &wire.Pong{Origin: wire.Origin{Cluster: c.id, Src: c.me()}}
	if msg.ReqNodeList {
		for _, o := range c.list {
			if o != n {
				pong.Nodes = append(pong.Nodes, o.id)
			}
		}
	}
	c.send(n, pong)
	if n.state != Up {
		if k := len(c.m.sends) - 1; k >= 0 && c.m.sends[k].Cluster == c.id && c.m.sends[k].Node == n.id {
			c.m.sends[k].Heard = true
		}
	}
	if n.state == Down || n.state == RetrySendFail {
		// A node we gave up on, or could not reach, is back: probe it now
		// rather than at the next node-timeout re-probe or retry.
		n.retries = n.desc.PingRetries
		c.ping(now, n, true)
		n.state = Restarted
	}
}

func (c *cluster) handlePong(now time.Time, n *node, msg *wire.Pong) {
	switch n.state {
	case Restarted, Retrying:
		c.goUp(now, n, msg.Nodes)
	case Down, RestartPinging:
		if n.pingOK && now.Sub(n.lastPing) < c.m.cfg.PingTimeout {
			c.goUp(now, n, msg.Nodes)
		} else {
			c.revive(n)
		}
	}
}

// goUp brings a link UP and sends, in OpenSIPS's order: LS_UPDATE(UP) to
// the other neighbours, FULL_TOP_UPDATE to the new one, then our full
// CAP_UPDATE asking for its own.
func (c *cluster) goUp(now time.Time, n *node, pongNodes []int32) {
	n.state = Up
	n.retries = 0
	n.pongNodes = pongNodes
	c.topoDirty, c.refreshWanted = true, true
	c.m.events = append(c.m.events, Event{Kind: LinkUp, Cluster: c.id, Node: n.id})
	c.announceLink(now, n, wire.LinkUp)
	c.sendFullTop(now, n)
	c.sendCapUpdateFull(now, n, true)
}

// leaveUp takes an UP link out of the adjacency and tells the remaining
// neighbours (spec §6.4). The caller sets the new state.
func (c *cluster) leaveUp(now time.Time, n *node) {
	n.state = Retrying // no longer UP; callers refine it
	c.topoDirty, c.refreshWanted = true, true
	c.m.events = append(c.m.events, Event{Kind: LinkDown, Cluster: c.id, Node: n.id})
	c.announceLink(now, n, wire.LinkDown)
}

// announceLink sends LS_UPDATE about our link with n to every other UP
// neighbour. The counter moves only when someone is told, as in OpenSIPS.
//
// Unless OpenSIPSFlooding is set, a link that comes UP while a refresh of
// our links is already due (sendRefresh, at most a ping timeout away) is
// not announced on its own: the refresh carries it. A node joining a
// cluster of n brings n-1 links UP within milliseconds, and OpenSIPS floods
// an update for each, n² floods of n² messages for the whole cluster to
// join; coalesced, each node floods about twice. Only UP waits: a link
// going DOWN is announced at once, since routes through it are broken.
func (c *cluster) announceLink(now time.Time, n *node, state wire.LinkState) {
	if state == wire.LinkUp && !c.m.cfg.OpenSIPSFlooding && !c.refreshAt.IsZero() {
		c.m.stats.UpCoalesced++
		return
	}
	var to []*node
	for _, o := range c.list {
		if o != n && o.enabled && o.state == Up {
			to = append(to, o)
		}
	}
	if len(to) == 0 {
		return
	}
	c.lsSeq++
	msg := &wire.LSUpdate{Origin: wire.Origin{Cluster: c.id, Src: c.me()}, Seq: c.lsSeq,
		Timestamp: c.now32(now), Neighbor: n.id, State: state, Path: []int32{c.me()}}
	for _, o := range to {
		c.send(o, msg)
	}
}
