package clusterer_test

import (
	"context"
	"fmt"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
)

// Two nodes share a virtual IP through the sharing tag "vip" of cluster 1:
// node 1 holds it from its configuration, then node 2 takes it over.
func ExampleCluster_ActivateShTag() {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	changes := make(chan clusterer.ShTagChange, 8)
	var nodes []*clusterer.Cluster
	for id := 1; id <= 2; id++ {
		cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: fmt.Sprintf("bin:127.0.0.%d:5555", id)}}
		if id == 2 {
			cc.Nodes = []clusterer.NodeInfo{{ClusterID: 1, ID: 1, URL: "bin:127.0.0.1:5555"}}
		}
		cfg := clusterer.Config{NodeID: id, Transport: nw, Clusters: []clusterer.ClusterConfig{cc},
			PingInterval: time.Second, PingTimeout: 200 * time.Millisecond}
		if id == 1 {
			cfg.ShTags = []string{"vip/1=active"} // OpenSIPS's sharing_tag syntax
		}
		c, err := clusterer.New(cfg)
		if err != nil {
			panic(err)
		}
		defer c.Close()
		if id == 1 {
			// The watcher brings the address up or down; it runs on a
			// goroutine of its own.
			if _, err := c.WatchShTag("vip", 1, func(ch clusterer.ShTagChange) { changes <- ch }); err != nil {
				panic(err)
			}
		}
		if err := c.Start(context.Background()); err != nil {
			panic(err)
		}
		nodes = append(nodes, c)
	}
	fmt.Printf("%+v\n", <-changes) // the configured state
	// Wait until node 2 knows who holds the tag.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if tags := nodes[1].ShTags(); len(tags) == 1 && tags[0].Owner == 1 {
			break
		}
	}
	fmt.Printf("node 2 sees %+v\n", nodes[1].ShTags()[0])

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[1].ActivateShTag(ctx, "vip", 1); err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", <-changes) // node 1 hears of it
	st, _ := nodes[0].ShTag("vip", 1)
	fmt.Println("node 1 is now", st)
	// Output:
	// {Name:vip Cluster:1 Old:backup New:active Reason:configured Node:0 Term:0 NeedsResync:false}
	// node 2 sees {Name:vip Cluster:1 State:backup Owner:1 Term:0}
	// {Name:vip Cluster:1 Old:active New:backup Reason:taken-over Node:2 Term:1 NeedsResync:false}
	// node 1 is now backup
}
