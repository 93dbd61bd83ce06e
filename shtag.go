package clusterer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clusterer-go/clusterer/internal/core"
)

// Sharing tags decide which node of an active/backup pair (or group) owns a
// resource: a virtual IP, a gateway probe, dialog timers. A tag is a name
// within a cluster ("vip/1"); it is active on the node that owns the
// resource and backup on the others. The wire behaviour is OpenSIPS's (spec
// §11); see the package documentation's "Sharing tags" section for what Go
// nodes add among themselves.

// ShTagState is a sharing tag's state on the local node.
type ShTagState int

// Tag states, with OpenSIPS's values.
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
	return fmt.Sprintf("ShTagState(%d)", int(s))
}

// ShTagReason says why a ShTagChange was reported.
type ShTagReason int

// Reasons.
const (
	// ShTagConfigured: the tag's configured state, reported once when the
	// Cluster starts (also for tags configured backup).
	ShTagConfigured ShTagReason = iota + 1
	// ShTagActivated: ActivateShTag on the local node.
	ShTagActivated
	// ShTagTakenOver: another node (ShTagChange.Node) announced that it
	// holds the tag: an OpenSIPS node's SHTAG_ACTIVE, or a Go node's claim
	// that beats the local one.
	ShTagTakenOver
	// ShTagConflictWon: another Go node (ShTagChange.Node) held the tag at
	// the same time as the local node — after a partition healed, or by
	// simultaneous activations — and lost; the local node keeps it. The
	// state is unchanged (active to active).
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
	return fmt.Sprintf("ShTagReason(%d)", int(r))
}

// ShTagChange reports a change of a sharing tag on the local node: to
// WatchShTag's functions, and in ShTagChanged events.
type ShTagChange struct {
	Name    string
	Cluster int
	Old     ShTagState
	New     ShTagState
	Reason  ShTagReason
	// Node is the other node involved: the new holder (ShTagTakenOver),
	// the node whose claim lost (ShTagConflictWon), or the node known to
	// hold the tag before the local node took it (ShTagActivated); 0 when
	// there is none.
	Node int
	// Term orders Go nodes' claims on the tag (see ShTagInfo.Term).
	Term int
	// NeedsResync is set when the local node holds the tag and another
	// node held it before (a takeover) or at the same time (a conflict
	// won): the data the tag guards, as replicated here, may lack what that
	// node did. The new holder should re-sync it before relying on it, for
	// example by asking the previous holder for a sync of the capabilities
	// involved.
	NeedsResync bool
}

// ShTagInfo is a sharing tag as the local node knows it
// (clusterer_list_shtags).
type ShTagInfo struct {
	Name    string
	Cluster int
	State   ShTagState
	// Owner is the node the local node takes for the holder: itself when
	// active; when backup, the last node that announced it (SHTAG_ACTIVE
	// or claim) or that another Go node named; 0 when unknown. A holder
	// that has died stays named until another node takes the tag or a Go
	// node names a reachable holder.
	Owner int
	// Term is the holder's claim, which orders Go nodes' claims: it grows
	// with every activation (0 for a tag configured active). An OpenSIPS
	// node's announcement has no term; the local node counts it as one
	// above every term it knew.
	Term int
}

// ErrShTag is wrapped by errors about a sharing tag: a malformed
// "name/cluster=state" string, a bad name (1 to 255 bytes), or a cluster
// that holds too many tags (1024).
var ErrShTag = errors.New("clusterer: invalid sharing tag")

// ParseShTag parses OpenSIPS's sharing_tag syntax, "name/cluster_id=state"
// with state "active" or "backup" (spaces around the parts are ignored),
// as in "vip/1=active".
func ParseShTag(s string) (name string, cluster int, state ShTagState, err error) {
	fail := func(why string) (string, int, ShTagState, error) {
		return "", 0, 0, fmt.Errorf("%w: %q: %s (want name/cluster_id=active|backup)", ErrShTag, s, why)
	}
	left, st, ok := cutLast(s, "=")
	if !ok {
		return fail("no '='")
	}
	switch strings.ToLower(strings.TrimSpace(st)) {
	case "active":
		state = ShTagActive
	case "backup":
		state = ShTagBackup
	default:
		return fail("state is neither active nor backup")
	}
	name, cid, ok := cutLast(left, "/")
	if !ok {
		return fail("no '/'")
	}
	name = strings.TrimSpace(name)
	cluster, err = strconv.Atoi(strings.TrimSpace(cid))
	if err != nil || cluster < 1 {
		return fail("bad cluster id")
	}
	if core.CheckShTagName(name) != nil {
		return fail("the name must have 1 to 255 bytes")
	}
	return name, cluster, state, nil
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// shtagConfig adds Config.ShTags to the machine's configuration.
func (cfg *Config) shtagConfig(out *core.Config) error {
	for i, s := range cfg.ShTags {
		name, cluster, state, err := ParseShTag(s)
		if err != nil {
			return fmt.Errorf("%w: ShTags[%d]: %w", ErrConfig, i, err)
		}
		j := slices.IndexFunc(out.Clusters, func(cc core.ClusterConfig) bool { return int(cc.ID) == cluster })
		if j < 0 {
			return fmt.Errorf("%w: ShTags[%d] %q: %w: %d", ErrConfig, i, s, ErrUnknownCluster, cluster)
		}
		cc := &out.Clusters[j]
		if slices.ContainsFunc(cc.ShTags, func(t core.ShTagConfig) bool { return t.Name == name }) {
			return fmt.Errorf("%w: ShTags[%d] %q: tag configured twice", ErrConfig, i, s)
		}
		cc.ShTags = append(cc.ShTags, core.ShTagConfig{Name: name, Active: state == ShTagActive})
	}
	return nil
}

// tagCluster checks a tag reference and returns the cluster's view.
func (c *Cluster) tagCluster(name string, cluster int) (*core.ClusterView, error) {
	if err := core.CheckShTagName(name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrShTag, err)
	}
	cid, err := checkID("cluster", cluster)
	if err != nil {
		return nil, fmt.Errorf("%w: %d", ErrUnknownCluster, cluster)
	}
	cv := c.view.Load().Cluster(cid)
	if cv == nil {
		return nil, fmt.Errorf("%w: %d", ErrUnknownCluster, cluster)
	}
	return cv, nil
}

// ShTag returns the state of a sharing tag (OpenSIPS's $cluster.sh_tag
// read, the API's shtag_get). A tag the node has not heard of is backup
// and is created, as in OpenSIPS; it then appears in ShTags. ShTag reads
// the node's snapshot and never waits: it is meant for the hot path.
func (c *Cluster) ShTag(name string, cluster int) (ShTagState, error) {
	cv, err := c.tagCluster(name, cluster)
	if err != nil {
		return ShTagBackup, err
	}
	if t := cv.ShTag(name); t != nil {
		return ShTagState(t.State), nil
	}
	c.referShTag(cv.ID, name)
	return ShTagBackup, nil
}

// referShTag creates an unknown tag: at once before Start, else through
// the loop without waiting (if the loop is too busy to take it, the next
// reference tries again).
func (c *Cluster) referShTag(cluster int32, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateNew: // no loop yet: the machine is ours while we hold mu
		if c.m.ReferShTag(time.Now(), cluster, name) == nil {
			c.view.Store(c.m.View())
		}
	case stateStarted:
		select {
		case c.inbox <- input{kind: inCommand, result: make(chan error, 1), fn: func(m *core.Machine, now time.Time) error {
			return m.ReferShTag(now, cluster, name)
		}}:
		default:
		}
	}
}

// ShTags lists every sharing tag the local node knows, of every cluster,
// ordered by cluster and name (clusterer_list_shtags).
func (c *Cluster) ShTags() []ShTagInfo {
	var out []ShTagInfo
	for _, cv := range c.view.Load().Clusters {
		for _, t := range cv.ShTags {
			out = append(out, ShTagInfo{Name: t.Name, Cluster: int(cv.ID), State: ShTagState(t.State),
				Owner: int(t.Owner), Term: int(t.Term)})
		}
	}
	return out
}

// ActivateShTag makes the local node the holder of a sharing tag
// (clusterer_shtag_set_active name/cluster): the tag becomes active here
// and SHTAG_ACTIVE goes to every node of the cluster, routed if needed;
// nodes unreachable now get it when they come up. It returns once the tag
// is active locally and the announcements are queued, not when they have
// arrived. Activating a tag that is already active announces it again,
// with a new term.
//
// OpenSIPS nodes that receive the announcement go backup. A Go node that
// holds the tag goes backup too, unless its own claim is newer (it was
// activated after the local node last heard of the tag) or, at equal
// terms, its node id is lower: then the local node goes back to backup
// (ShTagTakenOver).
func (c *Cluster) ActivateShTag(ctx context.Context, name string, cluster int) error {
	if _, err := c.tagCluster(name, cluster); err != nil {
		return err
	}
	return c.do(ctx, func(m *core.Machine, now time.Time) error {
		return mapShTagErr(m.ActivateShTag(now, int32(cluster), name))
	})
}

func mapShTagErr(err error) error {
	switch {
	case errors.Is(err, core.ErrShTagName), errors.Is(err, core.ErrShTagFull):
		return fmt.Errorf("%w: %v", ErrShTag, err)
	}
	return mapCoreErr(err)
}

// WatchShTag calls fn with every change of a sharing tag (name "" watches
// every tag of the cluster), in order, from a goroutine of its own, until
// the returned function is called or the Cluster is closed. It never
// delays the protocol: at most Config.HandlerQueue changes wait for fn,
// more are dropped and counted in Stats.HandlerDrops. Watching a tag
// creates it, like ShTag. Register before Start to hear the configured
// states (ShTagConfigured).
//
// The changes are also published to Subscribe as ShTagChanged events.
func (c *Cluster) WatchShTag(name string, cluster int, fn func(ShTagChange)) (stop func(), err error) {
	if fn == nil {
		return nil, fmt.Errorf("%w: WatchShTag needs a function", ErrConfig)
	}
	all := name == ""
	var cv *core.ClusterView
	if all {
		cid, _ := checkID("cluster", cluster)
		if cv = c.view.Load().Cluster(cid); cv == nil {
			return nil, fmt.Errorf("%w: %d", ErrUnknownCluster, cluster)
		}
	} else if cv, err = c.tagCluster(name, cluster); err != nil {
		return nil, err
	}
	s := &subscriber{
		box: newMailbox[Event](c.cfg.HandlerQueue, &c.stats.handlerDrops),
		filter: func(e Event) bool {
			return e.Kind == ShTagChanged && e.Cluster == cluster && (all || e.ShTag.Name == name)
		},
	}
	s.box.start(func(e Event) { fn(*e.ShTag) })
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		s.box.close()
		return func() {}, ErrClosed
	}
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	if !all && cv.ShTag(name) == nil {
		c.referShTag(cv.ID, name)
	}
	return func() {
		c.mu.Lock()
		delete(c.subs, s)
		c.mu.Unlock()
		s.box.close()
	}, nil
}

// shtagEvent publishes a tag change from the loop; it never blocks.
func (c *Cluster) shtagEvent(e core.Event) {
	t := e.ShTag
	chg := &ShTagChange{Name: t.Name, Cluster: int(e.Cluster), Old: ShTagState(t.Old), New: ShTagState(t.New),
		Reason: ShTagReason(t.Reason), Node: int(t.Node), Term: int(t.Term), NeedsResync: t.NeedsResync}
	c.log.Info("sharing tag "+chg.New.String(), zap.Int("cluster", chg.Cluster), zap.String("shtag", chg.Name),
		zap.Stringer("reason", chg.Reason), zap.Int("peer", chg.Node), zap.Int("term", chg.Term),
		zap.Bool("resync", chg.NeedsResync))
	c.publish(Event{Kind: ShTagChanged, Cluster: chg.Cluster, Node: chg.Node, ShTag: chg})
}
