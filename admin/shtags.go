package admin

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/clusterer-go/clusterer"
)

// ShTag is one sharing tag of list_shtags (OpenSIPS clusterer_list_shtags,
// whose result is an array of them): OpenSIPS's fields (Tag, Cluster,
// State), then ours.
type ShTag struct {
	Tag     string `json:"Tag"`
	Cluster int    `json:"Cluster"`
	// State is "active" or "backup".
	State string `json:"State"`
	// Holder is the node the local node takes for the tag's holder: itself
	// when active, the last node known to hold it when backup, 0 when
	// unknown (clusterer.ShTagInfo.Owner).
	Holder int `json:"holder"`
	// Term is the holder's claim, which orders Go nodes' claims.
	Term int `json:"term"`
	// LastReason is why the tag last changed, as the Handler saw it:
	// "configured", "activated", "taken-over" or "conflict-won"; "" when
	// it has seen no change of the tag since it was created (a Handler
	// created before Cluster.Start sees the configured states).
	LastReason string `json:"last_reason"`
	// LastNode is the other node of that change (clusterer.ShTagChange.Node),
	// 0 if none.
	LastNode int `json:"last_node"`
}

// shtagKey names a tag.
type shtagKey struct {
	cluster int
	name    string
}

// shtagTracker remembers each tag's last change from the node's
// ShTagChanged events. Its subscription ends when the node is closed.
type shtagTracker struct {
	mu   sync.Mutex
	last map[shtagKey]clusterer.ShTagChange
}

func newShTagTracker(c *clusterer.Cluster) *shtagTracker {
	tr := &shtagTracker{last: map[shtagKey]clusterer.ShTagChange{}}
	c.Subscribe(0, func(e clusterer.Event) {
		if e.Kind != clusterer.ShTagChanged || e.ShTag == nil {
			return
		}
		tr.mu.Lock()
		tr.last[shtagKey{e.ShTag.Cluster, e.ShTag.Name}] = *e.ShTag
		tr.mu.Unlock()
	})
	return tr
}

func (tr *shtagTracker) get(cluster int, name string) (clusterer.ShTagChange, bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	chg, ok := tr.last[shtagKey{cluster, name}]
	return chg, ok
}

func shtagCommands(c *clusterer.Cluster, tr *shtagTracker) []Command {
	return []Command{
		{Name: "list_shtags", MI: "clusterer_list_shtags", Help: "the sharing tags the node knows, their state and holder",
			Run: func(context.Context, Params) (any, error) { return listShTags(c, tr), nil }},
		{Name: "shtag_set_active", MI: "clusterer_shtag_set_active", Mutating: true, Params: []string{"tag"},
			Help: "make the node the holder of a sharing tag (tag: name/cluster_id); the others go backup",
			Run: func(ctx context.Context, p Params) (any, error) {
				s, err := p.String("tag")
				if err != nil {
					return nil, err
				}
				name, cluster, err := ParseTagRef(s)
				if err != nil {
					return nil, err
				}
				if err := c.ActivateShTag(ctx, name, cluster); err != nil {
					return nil, err
				}
				return OK, nil
			}},
	}
}

// ParseTagRef parses a tag reference as clusterer_shtag_set_active takes
// it, "name/cluster_id" (as "vip/1"). A malformed one is an error wrapping
// clusterer.ErrShTag (400 from the Handler).
func ParseTagRef(s string) (name string, cluster int, err error) {
	i := strings.LastIndex(s, "/")
	if i < 0 {
		return "", 0, fmt.Errorf("%w: %q: no '/' (want name/cluster_id)", clusterer.ErrShTag, s)
	}
	name = strings.TrimSpace(s[:i])
	cluster, err = strconv.Atoi(strings.TrimSpace(s[i+1:]))
	if err != nil || cluster < 1 {
		return "", 0, fmt.Errorf("%w: %q: bad cluster id (want name/cluster_id)", clusterer.ErrShTag, s)
	}
	if name == "" {
		return "", 0, fmt.Errorf("%w: %q: empty name (want name/cluster_id)", clusterer.ErrShTag, s)
	}
	return name, cluster, nil
}

// ListShTags builds clusterer_list_shtags's result, by cluster and name,
// without the reasons of the last changes (a Handler adds them).
func ListShTags(c *clusterer.Cluster) []ShTag { return listShTags(c, nil) }

func listShTags(c *clusterer.Cluster, tr *shtagTracker) []ShTag {
	out := []ShTag{}
	for _, t := range c.ShTags() {
		st := ShTag{Tag: t.Name, Cluster: t.Cluster, State: t.State.String(), Holder: t.Owner, Term: t.Term}
		if tr != nil {
			if chg, ok := tr.get(t.Cluster, t.Name); ok {
				st.LastReason, st.LastNode = chg.Reason.String(), chg.Node
			}
		}
		out = append(out, st)
	}
	return out
}
