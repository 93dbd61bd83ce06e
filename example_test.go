package clusterer_test

import (
	"context"
	"fmt"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/clustertest"
)

// Two nodes on an in-memory network: node 2 knows only node 1's address,
// they find each other, and node 1 sends node 2 a packet of a capability.
func Example() {
	nw := clustertest.NewNetwork()
	defer nw.Close()

	node := func(id int, neighbors ...clusterer.NodeInfo) *clusterer.Cluster {
		c, err := clusterer.New(clusterer.Config{
			NodeID:    id,
			Transport: nw, // omit for real TCP
			Clusters: []clusterer.ClusterConfig{{
				ID:    1,
				Self:  clusterer.NodeInfo{URL: fmt.Sprintf("bin:127.0.0.%d:5555", id)},
				Nodes: neighbors,
			}},
		})
		if err != nil {
			panic(err)
		}
		return c
	}
	n1 := node(1)
	n2 := node(2, clusterer.NodeInfo{ClusterID: 1, ID: 1, URL: "bin:127.0.0.1:5555"})

	got := make(chan string, 1)
	n2.RegisterCapability(clusterer.CapabilityConfig{Name: "usrloc-contact-repl", Cluster: 1}, clusterer.HandlerFuncs{
		Packet: func(p clusterer.Packet) {
			r := p.Reader()
			got <- fmt.Sprintf("node %d says %s", p.Src, r.PopStr())
		},
	})
	up := make(chan struct{})
	n1.Subscribe(0, func(e clusterer.Event) {
		if e.Kind == clusterer.NodeUp && e.Node == 2 {
			close(up)
		}
	})
	ctx := context.Background()
	n1.Start(ctx)
	n2.Start(ctx)
	defer n1.Close()
	defer n2.Close()

	<-up
	b := bin.NewBuilder(1, "usrloc-contact-repl", 1)
	b.PushStr("alice is at 10.0.0.7")
	frame, _ := b.Finish()
	p, _ := bin.Parse(frame)
	if err := n1.SendTo(1, 2, p); err != nil {
		fmt.Println(err)
	}
	select {
	case s := <-got:
		fmt.Println(s)
	case <-time.After(5 * time.Second):
		fmt.Println("timeout")
	}
	// Output: node 1 says alice is at 10.0.0.7
}

// OpenSIPS-style node descriptions parse into the configuration.
func ExampleConfigFromOpenSIPS() {
	cfg, err := clusterer.ConfigFromOpenSIPS(1,
		[]string{"cluster_id=1, node_id=1, url=bin:10.0.0.1:5555, sip_addr=10.0.0.1:5060, flags=seed"},
		[]string{"cluster_id=1, node_id=2, url=bin:10.0.0.2:5555, priority=10"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Clusters[0].Self)
	fmt.Println(cfg.Clusters[0].Nodes[0])
	// Output:
	// cluster_id=1, node_id=1, url=bin:10.0.0.1:5555, sip_addr=10.0.0.1:5060, flags=seed
	// cluster_id=1, node_id=2, url=bin:10.0.0.2:5555, priority=10
}

// SendCode maps errors to OpenSIPS's numeric send results.
func ExampleSendCode() {
	fmt.Println(clusterer.SendCode(nil), clusterer.SendCode(clusterer.ErrCurrentDisabled),
		clusterer.SendCode(clusterer.ErrDestDown), clusterer.SendCode(clusterer.ErrSend))
	// Output: 0 1 -1 -2
}
