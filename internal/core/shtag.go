package core

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// Sharing tags (spec §11): a tag (name, cluster) is ACTIVE on the node that
// owns a resource (a virtual IP, a gateway probe, dialog timers) and BACKUP
// on the others.
//
// What OpenSIPS does, and this machine does on the wire exactly alike:
//   - a tag configured active starts ACTIVE and owes SHTAG_ACTIVE to every
//     node, sent to each when it comes UP (reachable);
//   - activating a tag makes it ACTIVE and sends SHTAG_ACTIVE to every node
//     of the node list, routed if needed; the nodes it could not be sent to
//     get it when they come UP;
//   - a received SHTAG_ACTIVE makes the tag BACKUP and cancels what the tag
//     still owed;
//   - a tag first named by a message or a local reference is created
//     BACKUP.
//
// OpenSIPS has no arbitration: the last announcement wins, two crossing
// announcements leave both nodes BACKUP, and after a partition heals both
// sides stay ACTIVE. Go nodes do better among themselves with claims
// (wire.ShtagClaim, a capability OpenSIPS drops): a claim is a term and the
// claimant's id, and a claim beats another if its term is higher or, with
// equal terms, its node id lower. Activating takes a term above every term
// the node has heard of.
//   - A node that holds a tag sends its claim with every SHTAG_ACTIVE and
//     to every node that comes UP. A holder that hears a better claim steps
//     down; one that hears a worse one keeps the tag and answers with its
//     own. The best claim's holder never steps down and everyone it reaches
//     does, so after a partition heals, or after simultaneous activations,
//     exactly one Go node holds each tag, the same one whatever the order
//     of the messages.
//   - A holder that steps down for a better claim sends the winner a
//     yield notice (an active claim with its old term, naming the winner
//     as owner), at once or when the winner becomes reachable. Without
//     it, a loser whose own claim had not reached the winner (the
//     winner's claim came first, before the loser's routes reached the
//     winner, or the loser never saw the partition) stepped down unheard,
//     and the winner never reported the conflict nor the resync it needs.
//     The winner reports each conflict once, whichever of the loser's
//     claim and notice it gets, and none for a holder its own activation
//     reached (a handover).
//   - A node that does not hold the tag sends the holder it knows of, and
//     that holder's term, to every node that comes UP; so a node that
//     restarts learns both. A holder that hears such a report naming
//     another node (or an older claim of its own) sends its claim to the
//     reporter and to the node named: two holders whose claims were both
//     lost (a relay whose routes were changing) still meet.
//
// Go nodes still send SHTAG_ACTIVE exactly as OpenSIPS does, so OpenSIPS
// nodes follow them. Each SHTAG_ACTIVE is sent just after a claim marked
// as announcing it, to the same next hop; a SHTAG_ACTIVE so announced is
// left to its claim, any other forces BACKUP as in OpenSIPS. That is also
// what happens when the claim was lost on the way: an OpenSIPS relay
// forwards the SHTAG_ACTIVE but drops the claim.
//   - The claims that announce are counted, not flagged: packets of one
//     node taking different routes overtake each other, so other claims
//     of the node, and other announcing claims, may arrive between a
//     claim and its SHTAG_ACTIVE. A flag cleared by a claim that did not
//     announce (or spent by the SHTAG_ACTIVE of another) left the late
//     SHTAG_ACTIVE to force BACKUP under a made-up newest term: a node
//     stepped down for, or named, a former holder for good. Without
//     losses, each SHTAG_ACTIVE finds its claim counted, whatever arrived
//     in between.
//   - A SHTAG_ACTIVE can even overtake its own claim: a relay whose route
//     changes between the two forwards them by different paths. One from
//     a node that sends claims, found with no claim counted, waits for
//     its claim a ping timeout (the time a packet is given to arrive)
//     before it forces BACKUP; the claim that comes meanwhile decides.
//     When it times out, it forces BACKUP with the term it would have
//     had on arrival (one above every term then known), unless a claim
//     that beats that one, or a local activation, came meanwhile: as if
//     it had been applied on arrival and then overruled. SHTAG_ACTIVEs
//     from nodes that never sent a claim (OpenSIPS nodes) apply at once.
//
// A holder that steps down for a SHTAG_ACTIVE whose claim it never got
// (from a node not yet known as a Go node, or a claim lost by a relay)
// names its sender with a made-up term, while the sender may have stepped
// down in turn for that holder's better claim: both backup, each naming
// the other, and no claim left to settle it (seeds 1612 to 4497 of
// TestShTagRandomPartitionsJitter, 100-5099). So among Go nodes:
//   - such a holder is unconfirmed, and the node that stepped down for it
//     asks it (a probe: its report, naming it): a holder answers with its
//     claim (the term differs), a Go node that does not hold the tag
//     answers a report naming it with its own report;
//   - a report from the node named as holder denies it holds the tag,
//     unless it is older than the claim credited to it (a node activating
//     takes a term above every term it knows, so a report sent since
//     names a term at least as high); the node it names is named instead,
//     and asked in turn;
//   - if that report names the local node, or the named holder's yield
//     notice does, the two nodes each took the other for the holder:
//     the local node activates the tag again. Activating is as safe as an
//     operator's activation: the new claim beats every claim known here,
//     and a holder with a better one makes it step down as usual. Both
//     nodes may do so (a probe and a yield notice crossing); the claims
//     then settle it like simultaneous activations.
//   - a backup node that names a worse claim only because the better
//     claim's holder was not reachable yet (its packets, relayed, came
//     before the topology said so) names that holder again when it comes
//     UP, unless its own word or a claim beating it came meanwhile: the
//     report it sends then, naming the worse holder, could be lost, and
//     nothing else would correct it.

// ShTagState is a tag's local state (OpenSIPS SHTAG_STATE_BACKUP and
// SHTAG_STATE_ACTIVE).
type ShTagState uint8

// Tag states.
const (
	ShTagBackup ShTagState = 0
	ShTagActive ShTagState = 1
)

func (s ShTagState) String() string {
	switch s {
	case ShTagBackup:
		return "backup"
	case ShTagActive:
		return "active"
	}
	return fmt.Sprintf("ShTagState(%d)", uint8(s))
}

// ShTagReason says why a tag's state was reported.
type ShTagReason uint8

// Reasons.
const (
	// ShTagConfigured: the configured state, reported once at Start.
	ShTagConfigured ShTagReason = iota + 1
	// ShTagActivated: the local node activated the tag.
	ShTagActivated
	// ShTagTakenOver: another node announced that it holds the tag.
	ShTagTakenOver
	// ShTagConflictWon: another Go node held the tag at the same time (a
	// healed partition, simultaneous activations) and its claim lost; the
	// local node keeps the tag.
	ShTagConflictWon
)

func (r ShTagReason) String() string {
	switch r {
	case ShTagConfigured:
		return "configured"
	case ShTagActivated:
		return "activated"
	case ShTagTakenOver:
		return "taken-over"
	case ShTagConflictWon:
		return "conflict-won"
	}
	return fmt.Sprintf("ShTagReason(%d)", uint8(r))
}

// ShTagChange is what a ShTagChanged event reports.
type ShTagChange struct {
	Name     string
	Old, New ShTagState
	Reason   ShTagReason
	// Node is the other node involved: the new holder (TakenOver), the
	// node whose claim lost (ConflictWon), the holder before the local node
	// (Activated; 0 if none was known).
	Node int32
	// Term is the local node's claim when New is active, else the
	// holder's as known here.
	Term int32
	// NeedsResync: the local node holds the tag and another node held it
	// before or at the same time, so the data the tag guards may be behind
	// that node's copy.
	NeedsResync bool
}

// ShTagConfig is a tag of the configuration (OpenSIPS sharing_tag
// "name/cluster=active|backup").
type ShTagConfig struct {
	Name   string
	Active bool
}

// ShTagView is a tag in a ClusterView.
type ShTagView struct {
	Name  string
	State ShTagState
	// Owner is the node taken for the tag's holder: the local node when
	// active, 0 when unknown.
	Owner int32
	// Term is the holder's claim as known here (see ShTagChange.Term).
	Term int32
}

// MaxShTags bounds the tags of one cluster: tags are created by names
// received from the network, and a hostile or broken peer must not grow
// the table without end. Names beyond it are dropped and counted.
const MaxShTags = 1024

// Errors of sharing-tag commands.
var (
	ErrShTagName = errors.New("core: invalid sharing tag name")
	ErrShTagFull = errors.New("core: too many sharing tags")
)

// CheckShTagName reports whether name can be a tag's name.
func CheckShTagName(name string) error {
	if name == "" || len(name) > wire.MaxShtagName {
		return fmt.Errorf("%w: %q (1 to %d bytes)", ErrShTagName, name, wire.MaxShtagName)
	}
	return nil
}

// shtag is one tag of one cluster.
type shtag struct {
	name  string
	state ShTagState
	// term is the local claim while active.
	term int32
	// maxTerm is the highest term heard of or used.
	maxTerm int32
	// owner and ownerTerm: the node taken for the holder and its claim.
	owner, ownerTerm int32
	// unconfirmed: owner was taken from a SHTAG_ACTIVE without its claim,
	// ownerTerm made up here; no claim of owner has confirmed it since.
	unconfirmed bool
	// alt and altTerm: a holder whose claim beats owner's, replaced only
	// because it was not reachable (its packets, relayed, can come before
	// the topology says it is); named again when it comes UP, unless a
	// word of its own or a claim beating it came meanwhile.
	alt, altTerm int32
	// announce is OpenSIPS's "send active message": SHTAG_ACTIVE is owed to
	// every node not in sent, and sent to each when it comes UP.
	announce bool
	sent     map[int32]bool
	// configured: the state came from the configuration.
	configured bool
	// announced counts, per node, its claims that said a SHTAG_ACTIVE
	// follows them and whose SHTAG_ACTIVE has not arrived yet.
	announced map[int32]int
	// conflicts are the nodes reported as ConflictWon while we hold the
	// tag, and reached the nodes our claim reached as we activated it
	// (their yield is our handover, not a conflict); both until the node
	// becomes unreachable or restarts (see recvShtagClaim).
	conflicts, reached map[int32]bool
	// yieldTo is the node whose claim made us step down, owed a yield
	// notice with yieldTerm, the claim we had (see recvShtagClaim).
	yieldTo, yieldTerm int32
	// waiting are SHTAG_ACTIVEs that came before any claim announcing
	// them, in arrival order (see recvShtagActive).
	waiting []unclaimed
}

// unclaimed is a SHTAG_ACTIVE waiting for its claim: from whom, when it
// stops waiting, and the term it forces BACKUP with. One applied at once
// (the tag was BACKUP) keeps the holder it replaced, restored if the
// claim comes.
type unclaimed struct {
	from           int32
	due            time.Time
	term           int32
	applied        bool
	prev, prevTerm int32
}

// shtags is a cluster's sharing-tag state.
type shtags struct {
	list []*shtag // sorted by name
	// up are the nodes that became reachable, not yet told.
	up []int32
	// claimers are the nodes that sent a claim since they last
	// restarted: Go nodes, whose SHTAG_ACTIVEs have claims.
	claimers map[int32]bool
	view     []ShTagView // cached for View; nil when stale
}

// beats reports whether claim (aTerm, a) wins over claim (bTerm, b).
func beats(aTerm, a, bTerm, b int32) bool {
	return aTerm > bTerm || aTerm == bTerm && a < b
}

func nextTerm(t int32) int32 {
	if t == math.MaxInt32 {
		return t // saturated: ties are broken by node id
	}
	return t + 1
}

func (c *cluster) initShTags(cfg []ShTagConfig) {
	for _, tc := range cfg {
		t, _ := c.shtag(tc.Name, true) // validated
		t.configured = true
		if tc.Active {
			t.state, t.owner = ShTagActive, c.me()
			t.announce, t.sent = true, map[int32]bool{}
		}
	}
}

// shtag finds a tag, creating it BACKUP if create is set; it returns false
// when the tag is unknown and cannot be created.
func (c *cluster) shtag(name string, create bool) (*shtag, bool) {
	i, ok := slices.BinarySearchFunc(c.sh.list, name, func(t *shtag, name string) int { return strings.Compare(t.name, name) })
	if ok {
		return c.sh.list[i], true
	}
	if !create || CheckShTagName(name) != nil {
		return nil, false
	}
	if len(c.sh.list) >= MaxShTags {
		c.m.stats.ShTagsFull++
		return nil, false
	}
	t := &shtag{name: name}
	c.sh.list = slices.Insert(c.sh.list, i, t)
	c.sh.view = nil
	return t, true
}

func (c *cluster) shtagChanged(t *shtag, old ShTagState, reason ShTagReason, other int32, resync bool) {
	c.sh.view = nil
	term := t.ownerTerm
	if t.state == ShTagActive {
		term = t.term
	}
	c.m.events = append(c.m.events, Event{Kind: ShTagChanged, Cluster: c.id, Node: other, ShTag: &ShTagChange{
		Name: t.name, Old: old, New: t.state, Reason: reason, Node: other, Term: term, NeedsResync: resync}})
}

// startShTags reports the configured tags.
func (c *cluster) startShTags() {
	for _, t := range c.sh.list {
		if t.configured {
			c.shtagChanged(t, ShTagBackup, ShTagConfigured, 0, false)
		}
	}
}

// shtagNodeUp notes a node that became reachable, for the step's end.
func (c *cluster) shtagNodeUp(id int32) { c.sh.up = append(c.sh.up, id) }

// shtagStep tells the nodes that became reachable in the step the local
// claims, and sends them the SHTAG_ACTIVEs they are owed.
func (c *cluster) shtagStep(now time.Time) {
	if len(c.sh.up) == 0 {
		return
	}
	up := c.sh.up
	c.sh.up = nil
	for _, id := range up {
		n := c.nodes[id]
		if n == nil || !n.reachable {
			continue
		}
		for _, t := range c.sh.list {
			if t.alt == id {
				if t.state == ShTagBackup && beats(t.altTerm, t.alt, t.ownerTerm, t.owner) {
					t.owner, t.ownerTerm, t.unconfirmed = t.alt, t.altTerm, false
					c.sh.view = nil
				}
				t.alt = 0
			}
			if t.yieldTo == id {
				c.sendYield(now, t)
			}
			owed := t.announce && !t.sent[id]
			informative := t.state == ShTagActive || t.maxTerm > 0 || t.owner != 0
			if !owed && !informative {
				continue
			}
			if c.shtagSend(now, t, n, owed) && owed {
				t.sent[id] = true
			}
		}
	}
}

// shtagForget drops what the tags hold about a removed node.
func (c *cluster) shtagForget(id int32) {
	for _, t := range c.sh.list {
		delete(t.sent, id)
		delete(t.announced, id)
		t.waiting = slices.DeleteFunc(t.waiting, func(u unclaimed) bool { return u.from == id })
		if t.yieldTo == id {
			t.yieldTo = 0
		}
	}
	delete(c.sh.claimers, id)
	c.shtagNodeGone(id)
}

// shtagRestarted notes a node that restarted: it may not be a Go node any
// more, and no claim or SHTAG_ACTIVE of its former life is on its way
// (a restart is noticed long after them).
func (c *cluster) shtagRestarted(id int32) {
	delete(c.sh.claimers, id)
	for _, t := range c.sh.list {
		delete(t.announced, id)
	}
	c.shtagNodeGone(id)
}

// shtagSend sends n the local claim about t and, if active is set,
// SHTAG_ACTIVE after it on the same route. It reports false when n is
// unreachable.
func (c *cluster) shtagSend(now time.Time, t *shtag, n *node, active bool) bool {
	if !n.enabled || !n.reachable {
		return false
	}
	tr := bin.Trailer{Cluster: c.id, Src: c.me(), Dst: n.id}
	// A node that does not hold the tag reports the holder it knows and
	// that holder's claim (its highest term if it knows of no holder): a
	// newcomer adopting the holder must get the holder's own term, not a
	// higher one that would make the holder's next claims look stale.
	owner, term := t.reportedOwner()
	claim := &wire.ShtagClaim{Trailer: tr, Tag: t.name, Term: term, Owner: owner, Announce: active}
	if owner == 0 {
		claim.Term = t.maxTerm
	}
	if t.state == ShTagActive {
		claim.Term, claim.Owner, claim.Active = t.term, c.me(), true
	}
	if !c.sendRouted(now, n.id, claim) {
		return false
	}
	if active {
		c.sendRouted(now, n.id, &wire.ShtagActive{Trailer: tr, Tag: t.name})
	}
	return true
}

// reportedOwner is the holder a BACKUP tag reports: the one named, unless
// a SHTAG_ACTIVE whose claim may still come named it, with a term made up
// here; that term is not passed on as a claim before its wait ends (it
// would beat real, newer claims at other nodes).
func (t *shtag) reportedOwner() (int32, int32) {
	owner, term := t.owner, t.ownerTerm
	for i := len(t.waiting) - 1; i >= 0; i-- {
		if u := t.waiting[i]; u.applied && owner == u.from && term == u.term {
			owner, term = u.prev, u.prevTerm
		}
	}
	return owner, term
}

// shtagConflictWon reports a conflict with loser, once: its claim and its
// yield notice may both arrive, in either order (by different routes).
func (c *cluster) shtagConflictWon(t *shtag, loser int32) {
	if t.conflicts[loser] {
		return
	}
	if t.conflicts == nil {
		t.conflicts = map[int32]bool{}
	}
	t.conflicts[loser] = true
	c.shtagChanged(t, ShTagActive, ShTagConflictWon, loser, true)
}

// shtagNodeGone notes a node that became unreachable or restarted: what
// it claims next is news.
func (c *cluster) shtagNodeGone(id int32) {
	for _, t := range c.sh.list {
		delete(t.conflicts, id)
		delete(t.reached, id)
	}
}

// sendYield sends the yield notice owed, if its node is reachable.
func (c *cluster) sendYield(now time.Time, t *shtag) {
	n := c.nodes[t.yieldTo]
	if n == nil {
		t.yieldTo = 0
		return
	}
	msg := &wire.ShtagClaim{Trailer: bin.Trailer{Cluster: c.id, Src: c.me(), Dst: n.id}, Tag: t.name,
		Term: t.yieldTerm, Owner: n.id, Active: true}
	if n.enabled && c.sendRouted(now, n.id, msg) {
		t.yieldTo = 0
	}
}

// activate makes the local node the tag's holder and announces it to every
// node.
func (c *cluster) activate(now time.Time, t *shtag) {
	old, prev := t.state, t.owner
	t.maxTerm = nextTerm(t.maxTerm)
	t.term = t.maxTerm
	t.state, t.owner, t.ownerTerm, t.unconfirmed, t.alt = ShTagActive, c.me(), t.term, false, 0
	t.announce, t.sent = true, map[int32]bool{}
	t.conflicts, t.yieldTo = nil, 0
	t.waiting = nil // announced before this activation: overruled by it
	for _, n := range c.list {
		if c.shtagSend(now, t, n, true) {
			t.sent[n.id] = true
		}
	}
	t.reached = maps.Clone(t.sent)
	c.sh.view = nil
	if prev == c.me() {
		prev = 0
	}
	if old != ShTagActive || prev != 0 {
		c.shtagChanged(t, old, ShTagActivated, prev, prev != 0)
	}
}

// stepDown makes the tag BACKUP because holder announced it.
func (c *cluster) stepDown(t *shtag, holder, term int32) {
	old := t.state
	t.state = ShTagBackup
	t.owner, t.ownerTerm, t.unconfirmed, t.alt = holder, term, false, 0
	t.announce, t.sent, t.conflicts, t.reached = false, nil, nil, nil
	c.sh.view = nil
	if old == ShTagActive {
		c.shtagChanged(t, old, ShTagTakenOver, holder, false)
	}
}

func (c *cluster) recvShtagActive(now time.Time, from *node, msg *wire.ShtagActive) {
	t, ok := c.shtag(msg.Tag, true)
	if !ok {
		if CheckShTagName(msg.Tag) != nil {
			c.m.stats.Malformed++
		}
		return
	}
	if k := t.announced[from.id]; k > 0 {
		if k == 1 {
			delete(t.announced, from.id)
		} else {
			t.announced[from.id] = k - 1
		}
		c.m.stats.ShTagLeftToClaim++ // its claim, received before it, decided
		return
	}
	term := nextTerm(t.maxTerm) // newer than anything known here
	u := unclaimed{from: from.id, due: now.Add(c.m.cfg.PingTimeout), term: term}
	if t.state == ShTagActive && c.sh.claimers[from.id] {
		// A Go node's: its claim may be on its way by another route,
		// and giving the tag up for it cannot be undone.
		t.waiting = append(t.waiting, u)
		return
	}
	// An OpenSIPS node took the tag over, or so it seems. A BACKUP tag
	// only changes the holder it names, which the claim, if one comes
	// from a node never heard of as a Go node, puts back.
	wasActive := t.state == ShTagActive
	if !wasActive {
		u.applied, u.prev, u.prevTerm = true, t.owner, t.ownerTerm
		t.waiting = append(t.waiting, u)
	}
	t.maxTerm = term
	c.stepDown(t, from.id, term)
	t.unconfirmed = true
	if wasActive {
		c.shtagProbe(now, t)
	}
}

// shtagProbe sends the holder taken from a SHTAG_ACTIVE without its claim
// (see unconfirmed) the local report, naming it with the term made up
// here: a holder answers with its claim (it differs), a Go node that does
// not hold the tag with the holder it knows of, or by re-activating if it
// takes the local node for the holder (see shtagReport). An OpenSIPS node
// drops it, as it drops every claim.
func (c *cluster) shtagProbe(now time.Time, t *shtag) {
	if n := c.nodes[t.owner]; n != nil {
		c.shtagSend(now, t, n, false)
	}
}

// shtagTick applies the SHTAG_ACTIVEs whose claims did not come in time.
func (c *cluster) shtagTick(now time.Time) {
	for _, t := range c.sh.list {
		for len(t.waiting) > 0 && !now.Before(t.waiting[0].due) {
			u := t.waiting[0]
			t.waiting = t.waiting[1:]
			if u.applied {
				if t.state == ShTagBackup && t.owner == u.from && t.ownerTerm == u.term && c.sh.claimers[u.from] {
					c.shtagProbe(now, t) // its claim is lost: ask it
				}
				continue
			}
			best, holder := t.ownerTerm, t.owner
			if t.state == ShTagActive {
				best, holder = t.term, c.me()
			}
			if holder != 0 && !beats(u.term, u.from, best, holder) {
				continue // a better claim came meanwhile
			}
			t.maxTerm = max(t.maxTerm, u.term)
			c.stepDown(t, u.from, u.term)
			t.unconfirmed = true
			c.shtagProbe(now, t)
		}
		if len(t.waiting) == 0 {
			t.waiting = nil
		}
	}
}

// shtagDeadline is when shtagTick next has something to do.
func (c *cluster) shtagDeadline() time.Time {
	var d time.Time
	for _, t := range c.sh.list {
		if len(t.waiting) > 0 && (d.IsZero() || t.waiting[0].due.Before(d)) {
			d = t.waiting[0].due
		}
	}
	return d
}

func (c *cluster) recvShtagClaim(now time.Time, from *node, msg *wire.ShtagClaim) {
	t, ok := c.shtag(msg.Tag, true)
	if !ok {
		return
	}
	if c.sh.claimers == nil {
		c.sh.claimers = map[int32]bool{}
	}
	c.sh.claimers[from.id] = true
	if t.alt == from.id {
		t.alt = 0 // its own word replaces what we kept of it
	}
	// The node's own word on the tag settles its SHTAG_ACTIVEs still
	// waiting: this is the claim one of them overtook, or a later one
	// (they waited because they came first).
	waited := 0
	for i := len(t.waiting) - 1; i >= 0; i-- { // latest first: the oldest restores last
		u := t.waiting[i]
		if u.from != from.id {
			continue
		}
		waited++
		t.waiting = slices.Delete(t.waiting, i, i+1)
		if u.applied && t.state == ShTagBackup && t.owner == u.from && t.ownerTerm == u.term {
			t.owner, t.ownerTerm = u.prev, u.prevTerm
			c.sh.view = nil
		}
	}
	c.m.stats.ShTagLeftToClaim += uint64(waited)
	if msg.Active && msg.Owner != from.id {
		// A yield notice: from held the tag and stepped down for Owner.
		// A conflict, unless its claim reported it already or it
		// stepped down for the claim we sent it as we took the tag
		// over (a handover, reported as Activated). It says nothing of
		// a SHTAG_ACTIVE (announced): one sent before it by another
		// route may still be on its way.
		t.maxTerm = max(t.maxTerm, msg.Term)
		if t.state == ShTagActive && msg.Owner == c.me() && !t.reached[from.id] {
			c.shtagConflictWon(t, from.id)
		}
		if t.state == ShTagBackup && msg.Owner == c.me() && t.owner == from.id && (t.unconfirmed || t.ownerTerm <= msg.Term) {
			// from gave the tag up for our claim, while we gave it
			// up for from's: nobody holds it (see shtagReport).
			c.reactivate(now, t)
		}
		return
	}
	if msg.Announce && waited == 0 {
		if t.announced == nil {
			t.announced = map[int32]int{}
		}
		t.announced[from.id]++
	}
	c.sh.view = nil
	t.maxTerm = max(t.maxTerm, msg.Term)
	if !msg.Active {
		c.shtagReport(now, from, t, msg)
		return
	}
	if t.state == ShTagActive {
		if beats(msg.Term, from.id, t.term, c.me()) {
			t.yieldTo, t.yieldTerm = from.id, t.term
			c.stepDown(t, from.id, msg.Term)
			c.sendYield(now, t)
			return
		}
		// Both held the tag; ours wins. Tell the loser in case our
		// claim has not reached it.
		c.shtagSend(now, t, from, false)
		c.shtagConflictWon(t, from.id)
		return
	}
	if t.owner == from.id || !c.holderReachable(t) || beats(msg.Term, from.id, t.ownerTerm, t.owner) {
		c.nameHolder(t, from.id, msg.Term, true)
	}
}

// nameHolder makes owner, with its claim term, the holder a BACKUP tag
// names. keepAlt: the holder named so far said nothing against itself,
// so if it is replaced only for being unreachable it is kept as alt.
func (c *cluster) nameHolder(t *shtag, owner, term int32, keepAlt bool) {
	switch {
	case keepAlt && t.owner != 0 && t.owner != owner && !t.unconfirmed && !c.holderReachable(t) &&
		beats(t.ownerTerm, t.owner, term, owner):
		t.alt, t.altTerm = t.owner, t.ownerTerm
	case t.alt == owner || t.alt != 0 && !beats(t.altTerm, t.alt, term, owner):
		t.alt = 0
	}
	t.owner, t.ownerTerm, t.unconfirmed = owner, term, false
	c.sh.view = nil
}

// shtagReport takes a report from a node that does not hold the tag: the
// holder it knows of. A node that does not hold the tag either adopts the
// holder named if it is reachable and its claim beats the one known here
// (or the holder known here is unreachable). A node that holds the tag
// answers a reporter that names another holder, or an older claim, with
// its own claim, and sends it to the holder named too: if that node holds
// the tag as well (their claims crossed nobody's path, say both were lost
// by a relay whose routes were changing), the better claim wins as usual;
// if not, it learns who holds it.
func (c *cluster) shtagReport(now time.Time, from *node, t *shtag, msg *wire.ShtagClaim) {
	named := c.nodes[msg.Owner]
	if named != nil && !named.reachable {
		named = nil
	}
	if t.state == ShTagActive {
		if msg.Owner != c.me() || msg.Term != t.term {
			c.shtagSend(now, t, from, false)
		}
		if named != nil && named != from {
			c.shtagSend(now, t, named, false)
		}
		return
	}
	// A report from the node taken for the holder says it does not hold
	// the tag, unless it is older than the claim we credit it with (a
	// node activating takes a term above every term it knows, so a
	// report sent since names a term at least as high).
	denies := t.owner == from.id && (t.unconfirmed || msg.Term >= t.ownerTerm)
	if msg.Owner == c.me() {
		if denies {
			// Each took the other for the holder: nobody holds it.
			c.reactivate(now, t)
		} else if t.owner != 0 {
			// It takes us for the holder: tell it whom we know.
			c.shtagSend(now, t, from, false)
		}
		return
	}
	if named != nil && (denies || !c.holderReachable(t) || beats(msg.Term, msg.Owner, t.ownerTerm, t.owner)) {
		c.nameHolder(t, msg.Owner, msg.Term, !denies)
		if denies {
			// Second-hand, and the node named may have given the tag
			// up since: ask it as well.
			c.shtagProbe(now, t)
		}
	}
}

// reactivate takes a tag nobody holds back: two nodes each took the
// other for the holder. Activating is as safe as an operator's
// activation: the new claim beats every claim known here, and a holder
// unknown here with a better one makes us step down as usual.
func (c *cluster) reactivate(now time.Time, t *shtag) {
	c.m.stats.ShTagReactivated++
	c.activate(now, t)
}

// holderReachable reports whether the holder known for a BACKUP tag is a
// reachable node.
func (c *cluster) holderReachable(t *shtag) bool {
	n := c.nodes[t.owner]
	return n != nil && n.reachable
}

func (c *cluster) shtagViews() []ShTagView {
	if c.sh.view == nil && len(c.sh.list) > 0 {
		v := make([]ShTagView, len(c.sh.list))
		for i, t := range c.sh.list {
			v[i] = ShTagView{Name: t.name, State: t.state, Owner: t.owner, Term: t.ownerTerm}
			if t.state == ShTagActive {
				v[i].Term = t.term
			}
		}
		c.sh.view = v
	}
	return c.sh.view
}

// ShTag returns the named tag, or nil.
func (c *ClusterView) ShTag(name string) *ShTagView {
	if c == nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(c.ShTags, name, func(t ShTagView, name string) int { return strings.Compare(t.Name, name) })
	if !ok {
		return nil
	}
	return &c.ShTags[i]
}

// --- local commands ---

// ActivateShTag makes the local node the tag's holder (OpenSIPS
// clusterer_shtag_set_active): the tag becomes ACTIVE and every node of the
// cluster is told, now or when it comes UP.
func (m *Machine) ActivateShTag(now time.Time, clusterID int32, name string) error {
	c, err := m.cluster(clusterID)
	if err != nil {
		return err
	}
	if err := CheckShTagName(name); err != nil {
		return err
	}
	t, ok := c.shtag(name, true)
	if !ok {
		return fmt.Errorf("%w: %d in cluster %d", ErrShTagFull, MaxShTags, clusterID)
	}
	c.activate(now, t)
	m.finishStep(now)
	return nil
}

// ReferShTag creates a tag BACKUP unless it exists, as a reference to an
// unknown tag does in OpenSIPS.
func (m *Machine) ReferShTag(now time.Time, clusterID int32, name string) error {
	c, err := m.cluster(clusterID)
	if err != nil {
		return err
	}
	if err := CheckShTagName(name); err != nil {
		return err
	}
	if _, ok := c.shtag(name, true); !ok {
		return fmt.Errorf("%w: %d in cluster %d", ErrShTagFull, MaxShTags, clusterID)
	}
	m.finishStep(now)
	return nil
}

func checkShTagConfig(cl ClusterConfig) error {
	seen := map[string]bool{}
	if len(cl.ShTags) > MaxShTags {
		return fmt.Errorf("%w: cluster %d has %d sharing tags (max %d)", ErrConfig, cl.ID, len(cl.ShTags), MaxShTags)
	}
	for _, t := range cl.ShTags {
		if err := CheckShTagName(t.Name); err != nil {
			return fmt.Errorf("%w: cluster %d: %v", ErrConfig, cl.ID, err)
		}
		if seen[t.Name] {
			return fmt.Errorf("%w: cluster %d: sharing tag %q configured twice", ErrConfig, cl.ID, t.Name)
		}
		seen[t.Name] = true
	}
	return nil
}
