package clusterer_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/internal/memnet"
)

// A node that is removed or disabled is no longer sent to: its peer (queue,
// writer goroutine, connection) goes once what was queued for it — the
// REMOVE_NODE telling it — is written. Enabling it again brings it back.
func TestRemovedAndDisabledNodesAreDisconnected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		time.Sleep(3 * time.Second)
		ctx := context.Background()
		for id, c := range nodes {
			require.Equal(t, 2, c.Stats().Peers, "node %d sends to both others", id)
		}

		require.NoError(t, nodes[1].RemoveNode(ctx, cl, 3))
		time.Sleep(100 * time.Millisecond)
		require.ErrorIs(t, nodes[3].SendTo(cl, 1, packet("x")), clusterer.ErrCurrentDisabled,
			"node 3 heard its removal before the connection went")
		assert.Equal(t, 1, nodes[1].Stats().Peers, "node 1 forgot node 3's address")
		assert.Equal(t, 1, nodes[2].Stats().Peers, "so did node 2, told by node 1")
		assert.Zero(t, nodes[3].Stats().Peers, "node 3, disabled in its only cluster, sends to no one")

		require.NoError(t, nodes[1].SetNodeState(ctx, cl, 2, false))
		time.Sleep(100 * time.Millisecond)
		assert.Zero(t, nodes[1].Stats().Peers)
		require.NoError(t, nodes[1].SetNodeState(ctx, cl, 2, true))
		time.Sleep(3 * time.Second)
		assert.Equal(t, []int{2}, reachable(nodes[1]))
		assert.Equal(t, 1, nodes[1].Stats().Peers)
	})
}

// Packets queued for a connection that breaks are not lost: once node 1
// has processed the failure, they go to node 3 through node 2. The 4 KiB
// the connection had already taken are lost with it, as on TCP.
func TestQueuedPacketsAreReroutedWhenTheConnectionBreaks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := memnet.New(memnet.WithBufferSize(4096))
		defer nw.Close()
		nodes, recs := startNodes(t, nw, map[int][]int{1: {2, 3}, 2: {1, 3}, 3: {1, 2}}, 1, 2, 3)
		// An instant no protocol timer falls on: only our packets are queued.
		time.Sleep(3*time.Second + 77*time.Millisecond)
		for id, c := range nodes {
			require.Len(t, reachable(c), 2, "node %d", id)
		}
		hop, _ := nodes[1].NextHop(cl, 3)
		require.Equal(t, 3, hop)

		// Bytes to node 3 stay in flight: 4 KiB fill the connection and the
		// writer blocks, the rest waits in node 1's queue.
		nw.Delay(ip(1), ip(3), time.Hour)
		const count = 200
		body := func(i int) string { return fmt.Sprintf("%04d%s", i, make([]byte, 80)) }
		for i := range count {
			require.NoError(t, nodes[1].SendTo(cl, 3, packet(body(i))))
		}
		synctest.Wait()
		nw.Cut(ip(1), ip(3)) // no time has passed: no ping noticed anything
		synctest.Wait()

		pk, _ := recs[3].got()
		require.NotEmpty(t, pk)
		first := count - len(pk)
		for i, p := range pk {
			r := p.Reader()
			assert.Equal(t, body(first+i), r.PopStr(), "packet %d", i)
			assert.Equal(t, 1, p.Src)
		}
		frameLen := packet(body(0)).Len() + bin.TrailerLen
		assert.Equal(t, 4096/frameLen, first, "exactly the packets already in the connection were lost")
		s1 := nodes[1].Stats()
		// (RerouteDropped may count a ping or two: the protocol probes node
		// 3 again at once, the redial is refused and hands the ping back.)
		assert.Equal(t, uint64(len(pk)), s1.Rerouted)
		assert.Equal(t, uint64(len(pk)), nodes[2].Stats().Relayed)
		hop, _ = nodes[1].NextHop(cl, 3)
		assert.Equal(t, 2, hop)
	})
}
