package clusterer_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/internal/wire"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	good := testConfig(1, nil, 2)
	cases := map[string]func(c *clusterer.Config){
		"NodeID":                   func(c *clusterer.Config) { c.NodeID = 0 },
		"Clusters is empty":        func(c *clusterer.Config) { c.Clusters = nil },
		"Clusters[0].ID":           func(c *clusterer.Config) { c.Clusters[0].ID = -1 },
		"Clusters[0].Self.URL":     func(c *clusterer.Config) { c.Clusters[0].Self.URL = "bin:example.com:5555" },
		"Clusters[0].Nodes[0].ID":  func(c *clusterer.Config) { c.Clusters[0].Nodes[0].ID = 0 },
		"Clusters[0].Nodes[0].URL": func(c *clusterer.Config) { c.Clusters[0].Nodes[0].URL = "" },
		"PingTimeout":              func(c *clusterer.Config) { c.PingTimeout = -time.Second },
		"Routing":                  func(c *clusterer.Config) { c.Routing = 7 },
		"duplicated":               func(c *clusterer.Config) { c.Clusters[0].Nodes = append(c.Clusters[0].Nodes, c.Clusters[0].Nodes[0]) },
	}
	for want, mutate := range cases {
		t.Run(want, func(t *testing.T) {
			cfg := good
			cfg.Clusters = []clusterer.ClusterConfig{good.Clusters[0]}
			cfg.Clusters[0].Nodes = append([]clusterer.NodeInfo(nil), good.Clusters[0].Nodes...)
			mutate(&cfg)
			_, err := clusterer.New(cfg)
			require.ErrorIs(t, err, clusterer.ErrConfig)
			require.Contains(t, err.Error(), want)
		})
	}
	_, err := clusterer.New(good)
	require.NoError(t, err)
}

func TestParseNodeInfo(t *testing.T) {
	n, err := clusterer.ParseNodeInfo("cluster_id=1, node_id=2, url=bin:127.0.0.1:25562, sip_addr=127.0.0.1:25062, flags=seed, priority=7, no_ping_retries=0")
	require.NoError(t, err)
	require.Equal(t, clusterer.NodeInfo{ClusterID: 1, ID: 2, URL: "bin:127.0.0.1:25562", SIPAddr: "127.0.0.1:25062",
		Seed: true, Priority: 7, PingRetries: clusterer.NoRetries}, n)
	again, err := clusterer.ParseNodeInfo(n.String())
	require.NoError(t, err)
	require.Equal(t, n, again)

	for _, bad := range []string{
		"node_id=2, url=bin:1.2.3.4", "cluster_id=1, url=bin:1.2.3.4", "cluster_id=1, node_id=2",
		"cluster_id=x, node_id=2, url=bin:1.2.3.4", "cluster_id=1, node_id=2, url=bin:1.2.3.4, flags=bogus",
		"cluster_id=1, node_id=2, url=bin:1.2.3.4, colour=red", "cluster_id=1, cluster_id=2, node_id=2, url=u", "garbage",
	} {
		_, err := clusterer.ParseNodeInfo(bad)
		require.ErrorIs(t, err, clusterer.ErrConfig, bad)
	}

	cfg, err := clusterer.ConfigFromOpenSIPS(2,
		[]string{"cluster_id=1, node_id=2, url=bin:127.0.0.2:5555"},
		[]string{"cluster_id=1, node_id=1, url=bin:127.0.0.1:5555", "cluster_id=1, node_id=3, url=bin:127.0.0.3:5555"})
	require.NoError(t, err)
	require.Len(t, cfg.Clusters, 1)
	require.Len(t, cfg.Clusters[0].Nodes, 2)
	_, err = clusterer.ConfigFromOpenSIPS(2, []string{"cluster_id=1, node_id=2, url=bin:127.0.0.2"},
		[]string{"cluster_id=9, node_id=1, url=bin:127.0.0.1"})
	require.ErrorIs(t, err, clusterer.ErrConfig)
	_, err = clusterer.ConfigFromOpenSIPS(2, []string{"cluster_id=1, node_id=3, url=bin:127.0.0.2"}, nil)
	require.ErrorIs(t, err, clusterer.ErrConfig)
}

func TestLifecycle(t *testing.T) {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	c, err := clusterer.New(testConfig(1, nw, 2))
	require.NoError(t, err)
	require.ErrorIs(t, c.SendTo(cl, 2, packet("x")), clusterer.ErrNotStarted)
	require.ErrorIs(t, c.SetState(context.Background(), cl, false), clusterer.ErrNotStarted)
	require.NoError(t, c.Start(context.Background()))
	require.ErrorIs(t, c.Start(context.Background()), clusterer.ErrStarted)
	require.ErrorIs(t, c.SendTo(9, 2, packet("x")), clusterer.ErrUnknownCluster)
	require.ErrorIs(t, c.SendTo(cl, 2, packet("x")), clusterer.ErrDestDown)
	require.ErrorIs(t, c.SetNodeState(context.Background(), cl, 42, false), clusterer.ErrUnknownNode)
	require.ErrorIs(t, c.RegisterCapability(clusterer.CapabilityConfig{Name: "", Cluster: cl}, &recorder{}), clusterer.ErrCapability)
	require.ErrorIs(t, c.RegisterCapability(clusterer.CapabilityConfig{Name: "x", Cluster: 5}, &recorder{}), clusterer.ErrUnknownCluster)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	require.ErrorIs(t, c.SendTo(cl, 2, packet("x")), clusterer.ErrClosed)
	require.ErrorIs(t, c.Start(context.Background()), clusterer.ErrClosed)

	// Another node can take the address at once: nothing was left behind.
	c2, err := clusterer.New(testConfig(1, nw))
	require.NoError(t, err)
	require.NoError(t, c2.Start(context.Background()))
	require.NoError(t, c2.Close())
}

func TestSetStateAndRemoveNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		time.Sleep(3 * time.Second)
		ctx := context.Background()

		require.NoError(t, nodes[2].SetState(ctx, cl, false))
		require.ErrorIs(t, nodes[2].SendTo(cl, 1, packet("x")), clusterer.ErrCurrentDisabled)
		require.Equal(t, clusterer.SendCurrentDisabled, clusterer.SendCode(nodes[2].SendTo(cl, 1, packet("x"))))
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, []int{3}, reachable(nodes[1]), "the disabled node said goodbye")
		require.NoError(t, nodes[2].SetState(ctx, cl, true))
		time.Sleep(8 * time.Second)
		require.Equal(t, []int{2, 3}, reachable(nodes[1]))

		require.NoError(t, nodes[1].SetNodeState(ctx, cl, 3, false))
		st, ok := nodes[1].Node(cl, 3)
		require.True(t, ok)
		require.True(t, st.Disabled)
		require.ErrorIs(t, nodes[1].SendTo(cl, 3, packet("x")), clusterer.ErrDestDown)
		require.NoError(t, nodes[1].SetNodeState(ctx, cl, 3, true))
		time.Sleep(3 * time.Second) // linked again, so that node 3 hears its removal

		require.NoError(t, nodes[1].RemoveNode(ctx, cl, 3))
		time.Sleep(100 * time.Millisecond)
		_, known := nodes[1].Node(cl, 3)
		require.False(t, known)
		_, known = nodes[2].Node(cl, 3)
		require.False(t, known)
		require.ErrorIs(t, nodes[3].SendTo(cl, 1, packet("x")), clusterer.ErrCurrentDisabled, "the removed node disabled itself")
	})
}

// rawFrame builds a module packet with an arbitrary trailer.
func rawFrame(t *testing.T, capability string, tr bin.Trailer) []byte {
	b := bin.NewBuilder(1, capability, 1)
	b.PushStr("spoof")
	b.PushTrailer(tr)
	f, err := b.Finish()
	require.NoError(t, err)
	return f
}

func TestBadInputIsDroppedAndCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, recs := startNodes(t, nw, map[int][]int{2: {1}}, 1, 2)
		time.Sleep(3 * time.Second)
		n1 := nodes[1]

		send := func(fromIP string, frames ...[]byte) {
			conn, err := nw.Dial(context.Background(), fromIP, "127.0.0.1:5555")
			require.NoError(t, err)
			for _, f := range frames {
				_, err = conn.Write(f)
				require.NoError(t, err)
			}
			time.Sleep(10 * time.Millisecond)
			conn.Close()
		}
		before := n1.Stats()
		send(ip(2),
			rawFrame(t, "test-repl", bin.Trailer{Cluster: cl, Src: 1, Dst: 1}),  // our own id
			rawFrame(t, "test-repl", bin.Trailer{Cluster: cl, Src: 77, Dst: 1}), // unknown node
			rawFrame(t, "test-repl", bin.Trailer{Cluster: 9, Src: 2, Dst: 1}),   // unknown cluster
			rawFrame(t, "other-repl", bin.Trailer{Cluster: cl, Src: 2, Dst: 1}), // nobody registered it
		)
		send("127.0.0.99", rawFrame(t, "test-repl", bin.Trailer{Cluster: cl, Src: 2, Dst: 1})) // not a cluster address
		ping, _ := (&wire.Ping{Origin: wire.Origin{Cluster: cl, Src: 1}}).Append(nil)
		send(ip(2), ping) // topology traffic claiming our id
		truncated := rawFrame(t, "test-repl", bin.Trailer{Cluster: cl, Src: 2, Dst: 1})
		binary.LittleEndian.PutUint16(truncated[10:], 200) // capability length past the packet
		send(ip(2), truncated)
		garbage := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		send(ip(2), garbage)
		huge := []byte("P4CK\xff\xff\xff\x7f\x01\x00")
		send(ip(2), huge)

		after := n1.Stats()
		assert.Equal(t, before.OwnID+2, after.OwnID)
		assert.Equal(t, before.UnknownNode+1, after.UnknownNode)
		assert.Equal(t, before.UnknownCluster+1, after.UnknownCluster)
		assert.Equal(t, before.UnknownCapability+1, after.UnknownCapability)
		assert.Equal(t, before.SourceIP+1, after.SourceIP)
		assert.Equal(t, before.FramingErrors+2, after.FramingErrors, "bad marker and oversize length close the connection")
		assert.GreaterOrEqual(t, after.Malformed, before.Malformed+1)
		pk, _ := recs[1].got()
		assert.Empty(t, pk, "nothing spoofed reached the handler")

		// The node is unharmed.
		require.NoError(t, nodes[2].SendTo(cl, 1, packet("still here")))
		synctest.Wait()
		pk, _ = recs[1].got()
		require.Len(t, pk, 1)
		require.Equal(t, []int{2}, reachable(n1))
	})
}

func TestSlowHandlerDoesNotBlockTheProtocol(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes := map[int]*clusterer.Cluster{}
		block := make(chan struct{})
		var handled atomic.Int64
		for _, id := range []int{1, 2} {
			cfg := testConfig(id, nw, 3-id)
			cfg.HandlerQueue = 10
			c, err := clusterer.New(cfg)
			require.NoError(t, err)
			require.NoError(t, c.RegisterCapability(clusterer.CapabilityConfig{Name: "test-repl", Cluster: cl},
				clusterer.HandlerFuncs{Packet: func(clusterer.Packet) { <-block; handled.Add(1) }}))
			require.NoError(t, c.Start(context.Background()))
			nodes[id] = c
		}
		defer func() {
			select {
			case <-block:
			default:
				close(block)
			}
			for _, c := range nodes {
				c.Close()
			}
		}()
		time.Sleep(3 * time.Second)
		for range 100 {
			require.NoError(t, nodes[1].SendTo(cl, 2, packet("x")))
		}
		time.Sleep(30 * time.Second) // pings keep flowing while the handler is stuck
		require.Equal(t, []int{1}, reachable(nodes[2]))
		drops := nodes[2].Stats().HandlerDrops
		require.GreaterOrEqual(t, drops, uint64(100-2*10), "bounded: ten waiting, at most ten more in the handler's batch")
		close(block)
		synctest.Wait()
		require.Equal(t, int64(100), handled.Load()+int64(drops), "every packet was handled or counted as dropped")
	})
}

// Real sockets on loopback: the reset of a closed node is noticed at once.
func TestTCPLoopback(t *testing.T) {
	ports := freePorts(t, 3)
	var nodes []*clusterer.Cluster
	recs := []*recorder{}
	for i := range 3 {
		id := i + 1
		cc := clusterer.ClusterConfig{ID: cl, Self: clusterer.NodeInfo{URL: "bin:127.0.0.1:" + ports[i]}}
		if id > 1 {
			cc.Nodes = []clusterer.NodeInfo{{ClusterID: cl, ID: 1, URL: "bin:127.0.0.1:" + ports[0]}}
		}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc},
			PingInterval: time.Second, PingTimeout: 200 * time.Millisecond})
		require.NoError(t, err)
		r := &recorder{}
		require.NoError(t, c.RegisterCapability(clusterer.CapabilityConfig{Name: "test-repl", Cluster: cl}, r))
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		nodes, recs = append(nodes, c), append(recs, r)
	}
	require.Eventually(t, func() bool {
		for _, c := range nodes {
			if len(reachable(c)) != 2 {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond)
	for i := range 100 {
		require.NoError(t, nodes[i%2].SendTo(cl, 3, packet("tcp")))
	}
	require.Eventually(t, func() bool { p, _ := recs[2].got(); return len(p) == 100 }, 5*time.Second, 5*time.Millisecond)

	closed := time.Now()
	require.NoError(t, nodes[2].Close())
	require.Eventually(t, func() bool { return len(reachable(nodes[0])) == 1 && len(reachable(nodes[1])) == 1 },
		2*time.Second, time.Millisecond)
	t.Logf("crash noticed by both survivors after %v", time.Since(closed))
	err := nodes[0].SendTo(cl, 3, packet("gone"))
	require.True(t, errors.Is(err, clusterer.ErrDestDown), "%v", err)
}

func freePorts(t *testing.T, n int) []string {
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		_, p, _ := net.SplitHostPort(l.Addr().String())
		ports = append(ports, p)
		l.Close()
	}
	return ports
}

// A full send queue is back-pressure on a working link, not a failure.
func TestQueueFullKeepsTheLinkUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes := map[int]*clusterer.Cluster{}
		for _, id := range []int{1, 2} {
			cfg := testConfig(id, nw, 3-id)
			cfg.QueueBytes = 64 << 10
			c, err := clusterer.New(cfg)
			require.NoError(t, err)
			require.NoError(t, c.Start(context.Background()))
			defer c.Close()
			nodes[id] = c
		}
		time.Sleep(3 * time.Second)
		nw.Delay(ip(1), ip(2), 300*time.Millisecond) // a slow path: bytes pile up in flight
		full := 0
		for range 20000 {
			err := nodes[1].SendTo(cl, 2, packet("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
			if errors.Is(err, clusterer.ErrQueueFull) {
				require.ErrorIs(t, err, clusterer.ErrSend)
				full++
			} else {
				require.NoError(t, err)
			}
		}
		require.Positive(t, full, "the queue filled")
		synctest.Wait()
		st, _ := nodes[1].Node(cl, 2)
		require.Equal(t, clusterer.LinkIsUp, st.Link)
		require.True(t, st.Reachable)
	})
}

// Packets of a bulk stream reach the handler in order and intact, and the
// bodies stay the handler's: none changes while later packets arrive.
// Changing the view (disabling the sender locally) takes effect at once
// on a connection that was delivering.
func TestBulkPacketsInOrderAndOwned(t *testing.T) {
	ports := freePorts(t, 2)
	var nodes []*clusterer.Cluster
	var mu sync.Mutex
	var bodies [][]byte
	for i := range 2 {
		id := i + 1
		cc := clusterer.ClusterConfig{ID: cl, Self: clusterer.NodeInfo{URL: "bin:127.0.0.1:" + ports[i]},
			Nodes: []clusterer.NodeInfo{{ClusterID: cl, ID: 2 - i, URL: "bin:127.0.0.1:" + ports[1-i]}}}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc},
			PingInterval: time.Second, PingTimeout: 500 * time.Millisecond})
		require.NoError(t, err)
		require.NoError(t, c.RegisterCapability(clusterer.CapabilityConfig{Name: "test-repl", Cluster: cl, QueueLen: 1 << 20},
			clusterer.HandlerFuncs{Packet: func(p clusterer.Packet) {
				mu.Lock()
				bodies = append(bodies, p.Body)
				mu.Unlock()
			}}))
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
	}
	require.Eventually(t, func() bool { return len(reachable(nodes[0])) == 1 && len(reachable(nodes[1])) == 1 },
		5*time.Second, 5*time.Millisecond)
	got := func() int { mu.Lock(); defer mu.Unlock(); return len(bodies) }

	const count = 50000
	body := func(seq int) []byte {
		b := make([]byte, 200+seq%300)
		binary.LittleEndian.PutUint32(b, uint32(seq))
		for i := 4; i < len(b); i++ {
			b[i] = byte(seq + i)
		}
		return b
	}
	send := func(from, seq int) error {
		bl := bin.NewBuilder(1, "test-repl", 1)
		bl.PushRaw(body(seq))
		f, err := bl.Finish()
		require.NoError(t, err)
		p, err := bin.Parse(f)
		require.NoError(t, err)
		return nodes[from].SendTo(cl, 2-from, p)
	}
	for seq := 0; seq < count; {
		if err := send(0, seq); err != nil {
			require.ErrorIs(t, err, clusterer.ErrQueueFull)
			time.Sleep(100 * time.Microsecond)
			continue
		}
		seq++
	}
	drops := func() int { return int(nodes[1].Stats().HandlerDrops) }
	require.Eventually(t, func() bool { return got()+drops() == count }, 10*time.Second, 5*time.Millisecond)
	require.Zero(t, drops())
	mu.Lock()
	for seq, b := range bodies {
		require.Equal(t, body(seq), b, "packet %d", seq)
		require.Equal(t, len(b), cap(b), "capped: appending copies")
	}
	mu.Unlock()

	// The receiving node disables the sender: its packets are refused now.
	require.NoError(t, nodes[1].SetNodeState(context.Background(), cl, 1, false))
	before := nodes[1].Stats().Disabled
	require.NoError(t, send(0, count))
	require.Eventually(t, func() bool { return nodes[1].Stats().Disabled > before }, 5*time.Second, time.Millisecond)
	require.Equal(t, count, got())
}
