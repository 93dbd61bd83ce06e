package clusterer_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
)

// A node that starts with RequireSync pulls the whole data set of the
// capability from a synced donor; RequestSync pulls it again on demand.
// The donor writes records (SyncWriter.WriteValue); the joiner receives
// them in order (SyncRecord.Decode), then SyncDone.
func ExampleCluster_RequestSync() {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	node := func(id int, neighbors ...clusterer.NodeInfo) *clusterer.Cluster {
		c, err := clusterer.New(clusterer.Config{NodeID: id, Transport: nw, Clusters: []clusterer.ClusterConfig{{
			ID: 1, Self: clusterer.NodeInfo{URL: fmt.Sprintf("bin:127.0.0.%d:5555", id)}, Nodes: neighbors,
		}}})
		if err != nil {
			panic(err)
		}
		return c
	}
	type contact struct{ User, Addr string }

	// The donor: its data is there from the start, so it needs no sync
	// and is synced at once.
	donor := node(1)
	var mu sync.Mutex // WriteSync runs on a goroutine of its own
	contacts := []contact{{"alice", "192.0.2.7:5060"}, {"bob", "203.0.113.40:5062"}}
	donor.RegisterCapability(clusterer.CapabilityConfig{Name: "usrloc-contact-repl", Cluster: 1}, clusterer.HandlerFuncs{
		Donate: func(w *clusterer.SyncWriter) error {
			mu.Lock()
			snapshot := slices.Clone(contacts)
			mu.Unlock()
			for _, ct := range snapshot {
				if err := w.WriteValue(ct); err != nil {
					return err
				}
			}
			return nil
		},
	})

	// The joiner starts empty and must not serve until it has the data.
	joiner := node(2, clusterer.NodeInfo{ClusterID: 1, ID: 1, URL: "bin:127.0.0.1:5555"})
	got := make(chan string, 16)
	joiner.RegisterCapability(clusterer.CapabilityConfig{Name: "usrloc-contact-repl", Cluster: 1, RequireSync: true},
		clusterer.HandlerFuncs{
			SyncRecord: func(r clusterer.SyncRecord) {
				var ct contact
				if err := r.Decode(&ct); err != nil {
					got <- err.Error()
					return
				}
				got <- fmt.Sprintf("record from node %d: %s at %s", r.Src, ct.User, ct.Addr)
			},
			Event: func(e clusterer.Event) {
				switch e.Kind {
				case clusterer.SyncStarted, clusterer.SyncDone:
					got <- fmt.Sprintf("%s from node %d", e.Kind, e.Node)
				case clusterer.SyncFailed: // retried by the library
					got <- fmt.Sprintf("%s from node %d: %v", e.Kind, e.Node, e.Err)
				}
			},
		})
	st, _ := joiner.SyncStatus(1, "usrloc-contact-repl")
	fmt.Println("before Start:", st.Status)

	ctx := context.Background()
	donor.Start(ctx)
	joiner.Start(ctx)
	defer donor.Close()
	defer joiner.Close()
	untilSynced := func() {
		for {
			select {
			case s := <-got:
				fmt.Println(s)
				if strings.HasPrefix(s, "sync-done") {
					return
				}
			case <-time.After(5 * time.Second):
				fmt.Println("timeout")
				return
			}
		}
	}
	untilSynced()
	st, _ = joiner.SyncStatus(1, "usrloc-contact-repl")
	nodes, _ := joiner.SyncedNodes(1, "usrloc-contact-repl")
	fmt.Println(st.Status, st.Records, "records; synced nodes:", nodes)

	// Pull everything again, as OpenSIPS's ul_cluster_sync does.
	mu.Lock()
	contacts = append(contacts, contact{"carol", "198.51.100.21:5060"})
	mu.Unlock()
	if err := joiner.RequestSync(ctx, 1, "usrloc-contact-repl"); err != nil {
		fmt.Println(err)
	}
	untilSynced()
	st, _ = joiner.SyncStatus(1, "usrloc-contact-repl")
	fmt.Println(st.Status, st.Records, "records")

	// Output:
	// before Start: sync pending
	// sync-started from node 1
	// record from node 1: alice at 192.0.2.7:5060
	// record from node 1: bob at 203.0.113.40:5062
	// sync-done from node 1
	// synced 2 records; synced nodes: [1 2]
	// sync-started from node 1
	// record from node 1: alice at 192.0.2.7:5060
	// record from node 1: bob at 203.0.113.40:5062
	// record from node 1: carol at 198.51.100.21:5060
	// sync-done from node 1
	// synced 3 records
}
