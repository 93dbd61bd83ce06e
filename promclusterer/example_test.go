package promclusterer_test

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/promclusterer"
)

// Register a node's collector; serve the registry with promhttp.
func Example() {
	node, err := clusterer.New(clusterer.Config{NodeID: 1, Clusters: []clusterer.ClusterConfig{{
		ID:    1,
		Self:  clusterer.NodeInfo{URL: "bin:127.0.0.1:5555"},
		Nodes: []clusterer.NodeInfo{{ClusterID: 1, ID: 2, URL: "bin:127.0.0.2:5555"}},
	}}})
	if err != nil {
		panic(err)
	}
	defer node.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(promclusterer.New(node))
	// http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "clusterer_link_state" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := m.GetLabel() // sorted: cluster, node, state
			fmt.Printf("%s{node=%s,state=%s} %v\n", mf.GetName(), l[1].GetValue(), l[2].GetValue(), m.GetGauge().GetValue())
		}
	}
	// Output:
	// clusterer_link_state{node=2,state=down} 0
	// clusterer_link_state{node=2,state=probe} 1
	// clusterer_link_state{node=2,state=up} 0
}
