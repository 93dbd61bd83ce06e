package clusterer_test

import (
	"context"
	"fmt"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
)

// exampleCluster starts n nodes on an in-memory network, each knowing only
// node 1, and waits until every node reaches every other.
func exampleCluster(nw *clustertest.Network, n int) []*clusterer.Cluster {
	var nodes []*clusterer.Cluster
	for id := 1; id <= n; id++ {
		cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: fmt.Sprintf("bin:127.0.0.%d:5555", id)}}
		if id > 1 {
			cc.Nodes = []clusterer.NodeInfo{{ClusterID: 1, ID: 1, URL: "bin:127.0.0.1:5555"}}
		}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Transport: nw, Clusters: []clusterer.ClusterConfig{cc},
			PingInterval: time.Second, PingTimeout: 200 * time.Millisecond})
		if err != nil {
			panic(err)
		}
		if err := c.Start(context.Background()); err != nil {
			panic(err)
		}
		nodes = append(nodes, c)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		all := true
		for _, c := range nodes {
			for _, nv := range c.Nodes(1) {
				all = all && nv.Reachable
			}
			all = all && len(c.Nodes(1)) == n-1
		}
		if all {
			break
		}
	}
	return nodes
}

func closeAll(nodes []*clusterer.Cluster) {
	for _, c := range nodes {
		c.Close()
	}
}

// One node asks another a question and waits for the answer.
func ExampleCluster_Request() {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	nodes := exampleCluster(nw, 2)
	defer closeAll(nodes)

	nodes[1].HandleRequests(func(req clusterer.Message) (string, bool) {
		return "pong to " + req.Body, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := nodes[0].Request(ctx, 1, 2, "ping")
	fmt.Println(reply, err)
	// Output: pong to ping <nil>
}

// A node asks every node of the cluster, itself included, and gets every
// answer as soon as the last one arrives.
func ExampleCluster_Broadcast() {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	nodes := exampleCluster(nw, 3)
	defer closeAll(nodes)

	for _, c := range nodes {
		c.HandleRequests(func(req clusterer.Message) (string, bool) {
			if req.Body == "whereis alice" && c.MyID() == 3 {
				return "here", true
			}
			return "not here", true
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	replies, err := nodes[0].Broadcast(ctx, 1, "whereis alice", clusterer.IncludeLocal())
	if err != nil {
		fmt.Println(err)
	}
	for _, r := range replies {
		fmt.Println(r.Node, r.Body, r.Err)
	}
	// Output:
	// 1 not here <nil>
	// 2 not here <nil>
	// 3 here <nil>
}

// Remote commands run on other nodes (and, broadcast, locally too), as
// OpenSIPS's cluster_broadcast_mi does.
func ExampleCluster_BroadcastCommand() {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	nodes := exampleCluster(nw, 2)
	defer closeAll(nodes)

	ran := make(chan string, 2)
	for _, c := range nodes {
		c.RegisterCommand("dr_reload", func(cmd clusterer.Command) {
			ran <- fmt.Sprintf("node %d ran %s %v (from node %d)", c.MyID(), cmd.Name, cmd.Params, cmd.Src)
		})
	}
	if err := nodes[0].BroadcastCommand(1, "dr_reload", "partition-a"); err != nil {
		fmt.Println(err)
	}
	a, b := <-ran, <-ran
	if a > b {
		a, b = b, a
	}
	fmt.Println(a)
	fmt.Println(b)
	// Output:
	// node 1 ran dr_reload [partition-a] (from node 1)
	// node 2 ran dr_reload [partition-a] (from node 1)
}

// Typed values travel inside message bodies.
func ExampleEncode() {
	type query struct {
		User string
		Max  int
	}
	body, _ := clusterer.Encode(query{User: "alice", Max: 3})
	var q query
	err := clusterer.Decode(body, &q)
	fmt.Println(q.User, q.Max, err)
	fmt.Println(clusterer.Decode("plain text", &q) != nil)
	// Output:
	// alice 3 <nil>
	// true
}
