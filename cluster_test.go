package clusterer_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/clustertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const cl = 1

func ip(id int) string  { return fmt.Sprintf("127.0.0.%d", id) }
func url(id int) string { return fmt.Sprintf("bin:127.0.0.%d:5555", id) }

// testConfig: lab timers (ping every 2 s, 500 ms timeout, re-probe DOWN
// nodes every 6 s), the node knowing only the given neighbours.
func testConfig(id int, tr clusterer.Transport, neighbors ...int) clusterer.Config {
	cc := clusterer.ClusterConfig{ID: cl, Self: clusterer.NodeInfo{URL: url(id), SIPAddr: ip(id) + ":5060"}}
	for _, n := range neighbors {
		cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: cl, ID: n, URL: url(n)})
	}
	return clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: tr,
		PingInterval: 2 * time.Second, PingTimeout: 500 * time.Millisecond, NodeTimeout: 6 * time.Second}
}

type recorder struct {
	mu      sync.Mutex
	packets []clusterer.Packet
	events  []clusterer.Event
}

func (r *recorder) HandlePacket(p clusterer.Packet) {
	r.mu.Lock()
	r.packets = append(r.packets, p)
	r.mu.Unlock()
}
func (r *recorder) HandleEvent(e clusterer.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}
func (r *recorder) got() ([]clusterer.Packet, []clusterer.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]clusterer.Packet(nil), r.packets...), append([]clusterer.Event(nil), r.events...)
}

// startNodes starts nodes on any transport, each knowing the given
// neighbours.
func startNodes(t *testing.T, nw clusterer.Transport, neighbors map[int][]int, ids ...int) (map[int]*clusterer.Cluster, map[int]*recorder) {
	t.Helper()
	nodes, recs := map[int]*clusterer.Cluster{}, map[int]*recorder{}
	for _, id := range ids {
		c, err := clusterer.New(testConfig(id, nw, neighbors[id]...))
		require.NoError(t, err)
		recs[id] = &recorder{}
		require.NoError(t, c.RegisterCapability(clusterer.CapabilityConfig{Name: "test-repl", Cluster: cl}, recs[id]))
		require.NoError(t, c.Start(context.Background()))
		nodes[id] = c
		t.Cleanup(func() { c.Close() })
	}
	return nodes, recs
}

func reachable(c *clusterer.Cluster) []int {
	var out []int
	for _, n := range c.Nodes(cl) {
		if n.Reachable {
			out = append(out, n.ID)
		}
	}
	return out
}

func packet(s string) bin.Packet {
	b := bin.NewBuilder(1, "test-repl", 1)
	b.PushStr(s)
	frame, _ := b.Finish()
	p, _ := bin.Parse(frame)
	return p
}

func TestRuntimeJoinSendRerouteKill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, recs := startNodes(t, nw, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		time.Sleep(3 * time.Second)
		for id, c := range nodes {
			require.Len(t, reachable(c), 2, "node %d", id)
		}

		// Direct send.
		require.NoError(t, nodes[1].SendTo(cl, 3, packet("hello")))
		synctest.Wait()
		pk, _ := recs[3].got()
		require.Len(t, pk, 1)
		require.Equal(t, 1, pk[0].Src)
		r := pk[0].Reader()
		require.Equal(t, "hello", r.PopStr())
		require.NoError(t, r.Done())

		// Cut 1-3: traffic is relayed by 2.
		nw.Cut(ip(1), ip(3))
		time.Sleep(time.Second)
		hop, ok := nodes[1].NextHop(cl, 3)
		require.True(t, ok)
		require.Equal(t, 2, hop)
		require.NoError(t, nodes[1].SendTo(cl, 3, packet("via 2")))
		synctest.Wait()
		pk, _ = recs[3].got()
		require.Len(t, pk, 2)
		require.Equal(t, 1, pk[1].Src)
		require.Equal(t, uint64(1), nodes[2].Stats().Relayed)

		// Kill 3: the others notice at once (the reset), then it is unreachable.
		require.NoError(t, nodes[3].Close())
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, []int{2}, reachable(nodes[1]))
		require.ErrorIs(t, nodes[1].SendTo(cl, 3, packet("x")), clusterer.ErrDestDown)
		require.Equal(t, clusterer.SendDestDown, clusterer.SendCode(nodes[1].SendTo(cl, 3, packet("x"))))
		_, ev := recs[1].got()
		require.Contains(t, ev, clusterer.Event{Kind: clusterer.NodeDown, Cluster: cl, Node: 3})
	})
}

// A node that comes back while its neighbour is waiting out a long reconnect
// backoff towards it is answered at once: its PING ends the backoff, so the
// link comes up within a round trip, not seconds later.
func TestRestartedNodeIsAnsweredDespiteBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{1: {2}, 2: {1}}, 1)

		// Node 2 is absent: node 1's probes fail until its backoff has
		// grown past a second (0.1 s doubling per failure, plus jitter).
		for nodes[1].Stats().DialFailures < 5 {
			time.Sleep(time.Millisecond)
		}
		// Start node 2 right after a failed dial: node 1 is now refusing
		// sends to it for at least 1.6 s.
		fails := nodes[1].Stats().DialFailures
		more, _ := startNodes(t, nw, map[int][]int{2: {1}}, 2)
		start := time.Now()
		for len(reachable(nodes[1])) == 0 || len(reachable(more[2])) == 0 {
			require.Less(t, time.Since(start), time.Second, "link not up")
			time.Sleep(time.Millisecond)
		}
		require.Less(t, time.Since(start), 50*time.Millisecond)
		require.Equal(t, fails, nodes[1].Stats().DialFailures, "no dial failed meanwhile")
		require.Equal(t, uint64(1), nodes[1].Stats().Redials)
	})
}
