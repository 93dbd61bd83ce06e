package clusterer_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
)

// orderedKV is a kv whose node events go into the same log as its records
// and packets, to check the order the handler sees them in.
type orderedKV struct{ *kv }

func (s orderedKV) HandleEvent(e clusterer.Event) {
	s.kv.HandleEvent(e)
	if e.Kind == clusterer.NodeUp || e.Kind == clusterer.NodeDown || e.Kind == clusterer.SyncDone {
		s.mu.Lock()
		s.log = append(s.log, fmt.Sprintf("%s:%d", e.Kind, e.Node))
		s.mu.Unlock()
	}
}

// A node that goes down during a sync, after sending packets that were
// held back, must not come back to life in the handler: its NodeDown
// reaches the handler after the records and after its held-back packets,
// in the order things happened. A handler that drops a node's data at its
// NodeDown then ends without that data, whatever the donor's records held.
func TestSyncHoldsNodeEventsBackWithPackets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		release := make(chan struct{})
		var once sync.Once
		unblock := func() { once.Do(func() { close(release) }) }
		defer unblock()
		donor := filled(3)
		donor.donate = func(w *clusterer.SyncWriter) error {
			<-release
			for _, rec := range donor.snapshot() {
				if err := w.WriteValue(rec); err != nil {
					return err
				}
			}
			return nil
		}
		nodes := startKV(t, nw, kvSpec{id: 1, store: donor}, kvSpec{id: 3, neighbors: []int{1}, noCap: true})
		time.Sleep(3 * time.Second) // 1 and 3 up

		joiner := orderedKV{newKV()}
		cfg := testConfig(2, nw, 1, 3)
		c, err := clusterer.New(cfg)
		require.NoError(t, err)
		joiner.c = c
		require.NoError(t, c.RegisterCapability(clusterer.CapabilityConfig{Name: kvCap, Cluster: cl, RequireSync: true}, joiner))
		require.NoError(t, c.Start(t.Context()))
		defer c.Close()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		require.Len(t, joiner.kinds(clusterer.SyncStarted), 1, "the sync from node 1 is running")
		before := joiner.logCopy()

		// Node 3 sends an update (held back), then dies.
		require.NoError(t, nodes[3].c.SendTo(cl, 2, kvPacket("from3", "x")))
		time.Sleep(100 * time.Millisecond)
		nodes[3].c.Close()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.Equal(t, before, joiner.logCopy(), "nothing reaches the handler before the records")

		unblock()
		time.Sleep(time.Second)
		synctest.Wait()
		// Node 3 may have come up during the sync too: that NodeUp is held
		// back as well, and comes before its packet.
		log := slices.DeleteFunc(joiner.logCopy()[len(before):], func(s string) bool { return s == "node-up:1" })
		if i := slices.Index(log, "node-up:3"); i >= 0 {
			require.Equal(t, 3, i, "held back after the records: %v", log)
			log = slices.Delete(log, i, i+1)
		}
		require.Equal(t, []string{"sync:k00000", "sync:k00001", "sync:k00002", "pkt:from3", "node-down:3", "sync-done:1"}, log)
		require.Contains(t, joiner.logCopy(), "node-up:1")
	})
}

// The requester is unreachable for a moment when the donor starts (its
// route flapped, say): the donor waits for it rather than drop the sync,
// which the requester would wait Config.SyncTimeout to notice.
func TestSyncDonorWaitsOutAnUnreachableMoment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		donor := filled(10)
		var flapped sync.Once
		donor.donate = func(w *clusterer.SyncWriter) error {
			flapped.Do(func() {
				ctx := context.Background()
				// On the donor's goroutine: assert, not require.
				assert.NoError(t, donor.c.SetNodeState(ctx, cl, w.Node(), false))
				n, _ := donor.c.Node(cl, w.Node())
				assert.False(t, n.Reachable)
				go func() {
					time.Sleep(100 * time.Millisecond)
					donor.c.SetNodeState(ctx, cl, w.Node(), true)
				}()
			})
			for _, rec := range donor.snapshot() {
				if err := w.WriteValue(rec); err != nil {
					return err
				}
			}
			return nil
		}
		nodes := startKV(t, nw,
			kvSpec{id: 1, store: donor},
			kvSpec{id: 2, neighbors: []int{1}, cap: clusterer.CapabilityConfig{RequireSync: true}})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		joiner := nodes[2]
		require.Empty(t, joiner.kinds(clusterer.SyncFailed))
		require.Len(t, joiner.kinds(clusterer.SyncDone), 1)
		require.Equal(t, donor.copyData(), joiner.copyData())
		require.Zero(t, donor.c.Stats().SyncServeFailed)
	})
}
