package core

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// The capability layer (spec §10): the local node's capabilities, their
// sync state, donor selection and the SYNC_REQ side of the sync protocol.
// The data itself (SYNC and SYNC_END packets) flows on the runtime's data
// plane, in order with the capability's ordinary packets; the runtime
// reports here when data arrives (SyncData) and when a sync ended
// (SyncFinished), and learns from events when to serve a requester
// (SyncServe), when a request went out (SyncStart) and when to give a
// session up (SyncAbort).

// Sync defaults.
const (
	// DefaultSyncTimeout: a sync that receives nothing for this long is
	// abandoned (OpenSIPS's sync_timeout).
	DefaultSyncTimeout = 15 * time.Second
	// DefaultSeedFallback: a seed node waiting this long for a donor
	// declares itself synced (seed_fallback_interval).
	DefaultSeedFallback = 5 * time.Second
)

// Errors of the capability layer.
var (
	ErrUnknownCapability = errors.New("core: unknown capability")
	ErrCapabilityExists  = errors.New("core: capability already registered")
	// Reasons a sync session ends without success.
	ErrSyncTimeout   = errors.New("core: sync timed out")
	ErrDonorDown     = errors.New("core: sync donor became unreachable")
	ErrCapDisabled   = errors.New("core: capability disabled")
	ErrSyncRestarted = errors.New("core: sync requested again")
)

// SyncCond restricts which nodes may donate a capability's data.
type SyncCond uint8

// Donor conditions (OpenSIPS's sync_cond).
const (
	DonorAny      SyncCond = iota // any node
	DonorSameSIP                  // only nodes with the local node's sip_addr
	DonorOtherSIP                 // only nodes with a different sip_addr
)

// CapConfig registers a local capability.
type CapConfig struct {
	Name string
	// RequireSync pulls the data set from a donor at startup; without it
	// the capability starts synced.
	RequireSync bool
	Cond        SyncCond
}

// CapStatus is a local capability's state as reported to operators.
type CapStatus uint8

// Capability states.
const (
	CapNotSynced CapStatus = iota
	CapSyncPending
	CapSyncInProgress
	CapSynced
	CapDisabled
)

func (s CapStatus) String() string {
	switch s {
	case CapNotSynced:
		return "not synced"
	case CapSyncPending:
		return "sync pending"
	case CapSyncInProgress:
		return "sync in progress"
	case CapSynced:
		return "synced"
	case CapDisabled:
		return "disabled"
	}
	return fmt.Sprintf("CapStatus(%d)", uint8(s))
}

// CapView is a local capability in a ClusterView.
type CapView struct {
	Name        string
	Status      CapStatus
	RequireSync bool
	Cond        SyncCond
	// Donor is the node a sync was requested from, while one is running.
	Donor int32
}

type syncPhase uint8

const (
	phaseIdle      syncPhase = iota
	phasePending             // wants a sync, no donor yet
	phaseRequested           // SYNC_REQ sent, no data yet
	phaseReceiving           // data arriving
)

// localCap is a capability of the local node.
type localCap struct {
	name        string
	requireSync bool
	cond        SyncCond
	enabled     bool
	ok          bool

	phase syncPhase
	donor int32
	// gen numbers the sessions (SyncStart events carry it) so that the
	// end of an abandoned session, reported late, is not taken for the
	// end of the one that replaced it; unasked: the session began with
	// data nobody requested, whose end the runtime reports with gen 0.
	gen     uint64
	unasked bool
	// since is when the pending request began (for the seed fallback) or
	// when data last arrived, or the request was sent (for the timeout).
	since time.Time
	// waiting are nodes whose SYNC_REQ arrived while they were
	// unreachable (donor side): they are served when they come up.
	waiting []int32
}

func (lc *localCap) status() CapStatus {
	switch {
	case !lc.enabled:
		return CapDisabled
	case lc.phase == phaseReceiving:
		return CapSyncInProgress
	case lc.phase != phaseIdle:
		return CapSyncPending
	case lc.ok:
		return CapSynced
	}
	return CapNotSynced
}

func (c *cluster) localCap(name string) *localCap {
	for _, lc := range c.lcaps {
		if lc.name == name {
			return lc
		}
	}
	return nil
}

// AddCapability registers a local capability. One without RequireSync is
// synced at once; one with it asks a donor as soon as the node runs and one
// qualifies. The new state is announced to the UP neighbours.
func (m *Machine) AddCapability(now time.Time, clusterID int32, cfg CapConfig) error {
	c, err := m.cluster(clusterID)
	if err != nil {
		return err
	}
	if cfg.Name == "" || len(cfg.Name) > 0xffff {
		return fmt.Errorf("%w: bad name %q", ErrConfig, cfg.Name)
	}
	if c.localCap(cfg.Name) != nil {
		return fmt.Errorf("%w: %q", ErrCapabilityExists, cfg.Name)
	}
	lc := &localCap{name: cfg.Name, requireSync: cfg.RequireSync, cond: cfg.Cond, enabled: true, ok: !cfg.RequireSync}
	c.lcaps = append(c.lcaps, lc)
	if cfg.RequireSync {
		lc.phase, lc.since = phasePending, now
	}
	c.announceCap(now, lc.name, lc.ok)
	m.finishStep(now)
	return nil
}

// RequestSync asks for a full sync of a capability again (OpenSIPS's
// dlg_cluster_sync and friends): the capability stops being synced and a
// donor is looked for. A sync already running is abandoned.
func (m *Machine) RequestSync(now time.Time, clusterID int32, name string) error {
	c, lc, err := m.capOf(clusterID, name)
	if err != nil {
		return err
	}
	if !lc.enabled {
		return fmt.Errorf("%w: %q", ErrCapDisabled, name)
	}
	c.abortSync(lc, ErrSyncRestarted)
	lc.ok = false
	lc.phase, lc.since = phasePending, now
	c.announceCap(now, name, false)
	m.finishStep(now)
	return nil
}

// SetCapabilityEnabled enables or disables a local capability (OpenSIPS's
// clusterer_set_cap_status). A disabled capability reports state 0, serves
// no sync and abandons its own.
func (m *Machine) SetCapabilityEnabled(now time.Time, clusterID int32, name string, enabled bool) error {
	c, lc, err := m.capOf(clusterID, name)
	if err != nil {
		return err
	}
	if lc.enabled == enabled {
		return nil
	}
	lc.enabled = enabled
	if !enabled {
		c.abortSync(lc, ErrCapDisabled)
		lc.waiting = nil
	}
	c.announceCap(now, name, enabled && lc.ok)
	m.finishStep(now)
	return nil
}

// SyncData reports that SYNC data of a capability arrived from donor (the
// runtime reports the first packet of a session, then at most once per
// timer run). It keeps the session from timing out.
func (m *Machine) SyncData(now time.Time, clusterID int32, name string, donor int32) {
	_, lc, err := m.capOf(clusterID, name)
	if err != nil || !lc.enabled {
		return
	}
	switch {
	case lc.phase == phaseReceiving && lc.donor == donor:
	case lc.phase == phaseRequested && lc.donor == donor:
		lc.phase = phaseReceiving
	case lc.ok && lc.phase == phaseIdle:
		return // data for a synced capability is applied without a session
	default:
		lc.phase, lc.donor, lc.unasked = phaseReceiving, donor, true
		lc.gen++
		m.events = append(m.events, Event{Kind: SyncStart, Cluster: clusterID, Node: donor, CapName: name, Gen: lc.gen})
	}
	lc.since = now
	m.finishStep(now)
}

// SyncFinished reports the end of a sync session on the data plane: err is
// nil when every chunk SYNC_END announced was delivered. gen is the
// session's number from its SyncStart event, 0 for a session the runtime
// began on unasked data before that event reached it. On success the
// capability becomes synced and says so; otherwise another sync is
// requested.
func (m *Machine) SyncFinished(now time.Time, clusterID int32, name string, donor int32, gen uint64, err error) {
	c, lc, cerr := m.capOf(clusterID, name)
	if cerr != nil || !lc.enabled {
		return
	}
	if lc.phase == phaseIdle || lc.donor != donor || gen != lc.gen && !(gen == 0 && lc.unasked) {
		return // a session this machine already gave up
	}
	if err != nil {
		m.events = append(m.events, Event{Kind: SyncFailed, Cluster: clusterID, Node: donor, CapName: name, Err: err})
		lc.phase, lc.donor, lc.since = phasePending, 0, now
		m.finishStep(now)
		return
	}
	lc.phase, lc.donor, lc.ok = phaseIdle, 0, true
	c.announceCap(now, name, true)
	m.events = append(m.events, Event{Kind: SyncDone, Cluster: clusterID, Node: donor, CapName: name})
	m.finishStep(now)
}

func (m *Machine) capOf(clusterID int32, name string) (*cluster, *localCap, error) {
	c, err := m.cluster(clusterID)
	if err != nil {
		return nil, nil, err
	}
	lc := c.localCap(name)
	if lc == nil {
		return nil, nil, fmt.Errorf("%w: %q in cluster %d", ErrUnknownCapability, name, clusterID)
	}
	return c, lc, nil
}

// abortSync ends a running session (the runtime replays what it buffered)
// and leaves the capability idle.
func (c *cluster) abortSync(lc *localCap, reason error) {
	if lc.phase == phaseRequested || lc.phase == phaseReceiving {
		c.m.events = append(c.m.events, Event{Kind: SyncAbort, Cluster: c.id, Node: lc.donor, CapName: lc.name, Err: reason})
	}
	lc.phase, lc.donor = phaseIdle, 0
}

// announceCap records a local capability's wire state and, if it changed,
// floods it as a single-block CAP_UPDATE.
func (c *cluster) announceCap(now time.Time, name string, synced bool) {
	cs := wire.CapState{Name: name, Synced: synced}
	i := slices.IndexFunc(c.caps, func(s wire.CapState) bool { return s.Name == name })
	switch {
	case i < 0:
		c.caps = append(c.caps, cs)
	case c.caps[i].Synced == synced:
		return
	default:
		c.caps[i] = cs
	}
	if up := c.upNeighbors(); len(up) > 0 {
		c.capSeq++
		msg := &wire.CapUpdate{Origin: wire.Origin{Cluster: c.id, Src: c.me()}, Seq: c.capSeq,
			Timestamp: c.now32(now), Nodes: []wire.CapNode{{Node: c.me(), Caps: []wire.CapState{cs}}}, Path: []int32{c.me()}}
		for _, id := range up {
			c.send(c.nodes[id], msg)
		}
	}
}

// handleSyncReq is the donor side of SYNC_REQ (spec §10.4).
func (c *cluster) handleSyncReq(from *node, msg *wire.SyncReq) {
	lc := c.localCap(msg.Capability)
	if lc == nil || !lc.enabled {
		c.m.stats.SyncReqDropped++
		return
	}
	if from.reachable {
		c.m.events = append(c.m.events, Event{Kind: SyncServe, Cluster: c.id, Node: from.id, CapName: lc.name})
		return
	}
	if !slices.Contains(lc.waiting, from.id) {
		lc.waiting = append(lc.waiting, from.id)
	}
}

// donorFor picks a donor (spec §10.3): the first node of the list (most
// recently added first) that is reachable, meets the condition and holds
// the capability synced.
func (c *cluster) donorFor(lc *localCap) *node {
	for _, n := range c.list {
		if !n.enabled || !n.reachable || !n.capSynced(lc.name) {
			continue
		}
		switch lc.cond {
		case DonorSameSIP:
			if n.desc.SIPAddr != c.self.SIPAddr {
				continue
			}
		case DonorOtherSIP:
			if n.desc.SIPAddr == c.self.SIPAddr {
				continue
			}
		}
		return n
	}
	return nil
}

// forgetCapStates marks an unreachable node's capabilities not synced: it
// may come back restarted and empty, and must not be asked for a sync on
// the strength of what it said before. Its CAP_UPDATE at the next link-up
// (flooded to every node) says again what it holds.
func (c *cluster) forgetCapStates(n *node) {
	for i := range n.caps {
		if n.caps[i].Synced {
			n.caps[i].Synced = false
			cp := n.caps[i]
			c.m.events = append(c.m.events, Event{Kind: CapabilityChanged, Cluster: c.id, Node: n.id, Cap: &cp})
		}
	}
}

func (n *node) capSynced(name string) bool {
	i := slices.IndexFunc(n.caps, func(s wire.CapState) bool { return s.Name == name })
	return i >= 0 && n.caps[i].Synced
}

// syncStep moves the sync state along after every input: sessions whose
// donor became unreachable are abandoned, pending requests go to a donor
// that now qualifies, and requesters that came up are served.
func (c *cluster) syncStep(now time.Time) {
	if !c.m.started || !c.enabled {
		return
	}
	for _, lc := range c.lcaps {
		if !lc.enabled {
			continue
		}
		if lc.phase == phaseRequested || lc.phase == phaseReceiving {
			if d := c.nodes[lc.donor]; d == nil || !d.reachable || !d.enabled {
				c.abortSync(lc, ErrDonorDown)
				lc.phase, lc.since = phasePending, now
			}
		}
		if lc.phase == phasePending {
			if d := c.donorFor(lc); d != nil &&
				c.sendRouted(now, d.id, &wire.SyncReq{Trailer: bin.Trailer{Cluster: c.id, Src: c.me(), Dst: d.id}, Capability: lc.name}) {
				lc.phase, lc.donor, lc.since, lc.unasked = phaseRequested, d.id, now, false
				lc.gen++
				c.m.events = append(c.m.events, Event{Kind: SyncStart, Cluster: c.id, Node: d.id, CapName: lc.name, Gen: lc.gen})
			}
		}
		if len(lc.waiting) > 0 {
			keep := lc.waiting[:0]
			for _, id := range lc.waiting {
				n := c.nodes[id]
				switch {
				case n == nil || !n.enabled:
				case n.reachable:
					c.m.events = append(c.m.events, Event{Kind: SyncServe, Cluster: c.id, Node: id, CapName: lc.name})
				default:
					keep = append(keep, id)
				}
			}
			lc.waiting = keep
		}
	}
}

// syncTick applies the sync timeout and the seed fallback.
func (c *cluster) syncTick(now time.Time) {
	if !c.enabled {
		return
	}
	cfg := &c.m.cfg
	for _, lc := range c.lcaps {
		if !lc.enabled {
			continue
		}
		switch lc.phase {
		case phaseRequested, phaseReceiving:
			if !now.Before(lc.since.Add(cfg.SyncTimeout)) {
				c.abortSync(lc, ErrSyncTimeout)
				lc.phase, lc.since = phasePending, now
			}
		case phasePending:
			if c.selfSeed && !now.Before(c.fallbackAt(lc)) {
				// No donor in time: a seed starts the data set itself.
				lc.phase, lc.ok = phaseIdle, true
				c.announceCap(now, lc.name, true)
				c.m.events = append(c.m.events, Event{Kind: SyncDone, Cluster: c.id, CapName: lc.name})
			}
		}
	}
}

// fallbackAt is when a seed gives up waiting for a donor: the interval
// counts from the request or from the node's start, whichever is later.
// OpenSIPS adds the time spent before the node was ready, so a slow start
// can make a seed declare itself synced before it ever looked for a donor.
func (c *cluster) fallbackAt(lc *localCap) time.Time {
	from := lc.since
	if c.m.startedAt.After(from) {
		from = c.m.startedAt
	}
	return from.Add(c.m.cfg.SeedFallback)
}

func (c *cluster) syncDeadline() time.Time {
	var d time.Time
	for _, lc := range c.lcaps {
		var t time.Time
		switch {
		case !lc.enabled:
			continue
		case lc.phase == phaseRequested || lc.phase == phaseReceiving:
			t = lc.since.Add(c.m.cfg.SyncTimeout)
		case lc.phase == phasePending && c.selfSeed:
			t = c.fallbackAt(lc)
		default:
			continue
		}
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	return d
}

func (c *cluster) capViews() []CapView {
	if len(c.lcaps) == 0 {
		return nil
	}
	out := make([]CapView, 0, len(c.lcaps))
	for _, lc := range c.lcaps {
		out = append(out, CapView{Name: lc.name, Status: lc.status(), RequireSync: lc.requireSync, Cond: lc.cond, Donor: lc.donor})
	}
	return out
}
