package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/admin"
)

// Mount the admin API under /admin/ and call it with a Client.
func Example() {
	node, err := clusterer.New(clusterer.Config{NodeID: 1, Clusters: []clusterer.ClusterConfig{{
		ID:    1,
		Self:  clusterer.NodeInfo{URL: "bin:127.0.0.1:5555"},
		Nodes: []clusterer.NodeInfo{{ClusterID: 1, ID: 2, URL: "bin:127.0.0.2:5555", Description: "Node B"}},
	}}})
	if err != nil {
		panic(err)
	}
	defer node.Close()

	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", admin.New(node, admin.Options{Token: "s3cret"})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	client := &admin.Client{BaseURL: srv.URL + "/admin", Token: "s3cret", HTTP: srv.Client()}
	list, err := client.List(context.Background())
	if err != nil {
		panic(err)
	}
	for _, cl := range list.Clusters {
		for _, n := range cl.Nodes {
			fmt.Printf("cluster %d node %d %s link=%s next_hop=%s %q\n", cl.ClusterID, n.NodeID, n.URL, n.LinkState, n.NextHop, n.Description)
		}
	}
	// Output:
	// cluster 1 node 2 bin:127.0.0.2:5555 link=Probe next_hop=none "Node B"
}
