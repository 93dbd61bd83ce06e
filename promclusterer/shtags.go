package promclusterer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterer-go/clusterer"
)

// --- sharing tags ---

// shtagGroup reports every sharing tag the node knows (Cluster.ShTags).
// The runtime counts no tag changes, so there is no changes counter:
// alert on the state gauge and the term instead (a term grows with every
// activation).
type shtagGroup struct {
	active, term, holder *prometheus.Desc
}

func newShTagGroup(d descFunc) *shtagGroup {
	return &shtagGroup{
		active: d("shtag_active", "1 while the sharing tag is active on the local node, 0 while backup.", "cluster", "tag"),
		term:   d("shtag_term", "The sharing tag holder's term, which grows with every activation.", "cluster", "tag"),
		holder: d("shtag_holder", "The node taken for the sharing tag's holder (the local node's id when active), 0 when unknown.",
			"cluster", "tag"),
	}
}

func (g *shtagGroup) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.active, g.term, g.holder} {
		ch <- d
	}
}

func (g *shtagGroup) collect(c *clusterer.Cluster, ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, t := range c.ShTags() {
		cl := itoa(t.Cluster)
		gauge(g.active, b2f(t.State == clusterer.ShTagActive), cl, t.Name)
		gauge(g.term, float64(t.Term), cl, t.Name)
		gauge(g.holder, float64(t.Owner), cl, t.Name)
	}
}
