package clusterer_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
)

const vip = "vip"

// tagWatch records a node's tag changes, from WatchShTag and from
// Subscribe.
type tagWatch struct {
	mu      sync.Mutex
	changes []clusterer.ShTagChange
	events  []clusterer.Event
}

func (w *tagWatch) change(c clusterer.ShTagChange) {
	w.mu.Lock()
	w.changes = append(w.changes, c)
	w.mu.Unlock()
}
func (w *tagWatch) event(e clusterer.Event) {
	if e.Kind == clusterer.ShTagChanged {
		w.mu.Lock()
		w.events = append(w.events, e)
		w.mu.Unlock()
	}
}

func (w *tagWatch) got() ([]clusterer.ShTagChange, []clusterer.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]clusterer.ShTagChange(nil), w.changes...), append([]clusterer.Event(nil), w.events...)
}

func (w *tagWatch) last(t *testing.T) clusterer.ShTagChange {
	t.Helper()
	c, _ := w.got()
	require.NotEmpty(t, c)
	return c[len(c)-1]
}

// startTagNodes starts nodes with sharing tags configured, each watching
// "vip" (and subscribed) from before Start.
func startTagNodes(t *testing.T, nw clusterer.Transport, tags map[int][]string, neighbors map[int][]int, ids ...int) (map[int]*clusterer.Cluster, map[int]*tagWatch) {
	t.Helper()
	nodes, watches := map[int]*clusterer.Cluster{}, map[int]*tagWatch{}
	for _, id := range ids {
		cfg := testConfig(id, nw, neighbors[id]...)
		cfg.ShTags = tags[id]
		c, err := clusterer.New(cfg)
		require.NoError(t, err)
		w := &tagWatch{}
		stop, err := c.WatchShTag(vip, cl, w.change)
		require.NoError(t, err)
		t.Cleanup(stop)
		t.Cleanup(c.Subscribe(0, w.event))
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		nodes[id], watches[id] = c, w
	}
	return nodes, watches
}

func state(t *testing.T, c *clusterer.Cluster, name string) clusterer.ShTagState {
	t.Helper()
	s, err := c.ShTag(name, cl)
	require.NoError(t, err)
	return s
}

func tagInfo(c *clusterer.Cluster, name string) clusterer.ShTagInfo {
	for _, i := range c.ShTags() {
		if i.Name == name && i.Cluster == cl {
			return i
		}
	}
	return clusterer.ShTagInfo{}
}

// activeNodes lists the nodes holding the tag, in id order.
func activeNodes(t *testing.T, nodes map[int]*clusterer.Cluster, name string) []int {
	t.Helper()
	var out []int
	for id := 1; id <= 10; id++ {
		if c := nodes[id]; c != nil && state(t, c, name) == clusterer.ShTagActive {
			out = append(out, id)
		}
	}
	return out
}

func TestParseShTag(t *testing.T) {
	for s, want := range map[string]struct {
		name    string
		cluster int
		state   clusterer.ShTagState
	}{
		"vip/1=active":           {"vip", 1, clusterer.ShTagActive},
		"node/10=backup":         {"node", 10, clusterer.ShTagBackup},
		" vip1 / 2 = Active ":    {"vip1", 2, clusterer.ShTagActive},
		"gw/probe/3=backup":      {"gw/probe", 3, clusterer.ShTagBackup},
		"a=b/4=active":           {"a=b", 4, clusterer.ShTagActive},
		"dlg-pstn-out/7=backup ": {"dlg-pstn-out", 7, clusterer.ShTagBackup},
	} {
		name, cluster, st, err := clusterer.ParseShTag(s)
		require.NoError(t, err, s)
		assert.Equal(t, want.name, name, s)
		assert.Equal(t, want.cluster, cluster, s)
		assert.Equal(t, want.state, st, s)
	}
	for _, bad := range []string{"", "vip", "vip/1", "vip=active", "vip/x=active", "vip/0=active", "vip/1=standby",
		"/1=active", fmt.Sprintf("%0256d/1=active", 0)} {
		_, _, _, err := clusterer.ParseShTag(bad)
		require.ErrorIs(t, err, clusterer.ErrShTag, "%q", bad)
	}

	cfg := testConfig(1, nil)
	cfg.ShTags = []string{"vip/1=active", "gw/1=backup"}
	_, err := clusterer.New(cfg)
	require.NoError(t, err)
	for _, tags := range [][]string{{"vip/2=active"}, {"vip/1=active", "vip/1=backup"}, {"vip/1=on"}} {
		cfg.ShTags = tags
		_, err := clusterer.New(cfg)
		require.ErrorIs(t, err, clusterer.ErrConfig, "%v", tags)
		require.Contains(t, err.Error(), "ShTags[", "the error names the field")
	}
}

// The whole life of a tag on three nodes: configured active on node 1,
// learned by the others, read, listed, handed over, watched.
func TestShTagLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, w := startTagNodes(t, nw, map[int][]string{1: {"vip/1=active"}},
			map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		time.Sleep(3 * time.Second)

		require.Equal(t, []int{1}, activeNodes(t, nodes, vip))
		for _, id := range []int{2, 3} {
			assert.Equal(t, clusterer.ShTagInfo{Name: vip, Cluster: cl, State: clusterer.ShTagBackup, Owner: 1}, tagInfo(nodes[id], vip),
				"node %d learned the tag and its holder", id)
		}
		configured := clusterer.ShTagChange{Name: vip, Cluster: cl, Old: clusterer.ShTagBackup, New: clusterer.ShTagActive,
			Reason: clusterer.ShTagConfigured}
		ch, ev := w[1].got()
		require.Equal(t, []clusterer.ShTagChange{configured}, ch)
		require.Equal(t, []clusterer.Event{{Kind: clusterer.ShTagChanged, Cluster: cl, ShTag: &configured}}, ev)
		for _, id := range []int{2, 3} {
			ch, ev := w[id].got()
			assert.Empty(t, ch, "node %d: backup all along", id)
			assert.Empty(t, ev, "node %d", id)
		}

		// A handover to node 3.
		require.NoError(t, nodes[3].ActivateShTag(context.Background(), vip, cl))
		require.Equal(t, clusterer.ShTagActive, state(t, nodes[3], vip), "active once ActivateShTag returns")
		synctest.Wait()
		require.Equal(t, []int{3}, activeNodes(t, nodes, vip))
		require.Equal(t, clusterer.ShTagChange{Name: vip, Cluster: cl, Old: clusterer.ShTagBackup, New: clusterer.ShTagActive,
			Reason: clusterer.ShTagActivated, Node: 1, Term: 1, NeedsResync: true}, w[3].last(t))
		taken := clusterer.ShTagChange{Name: vip, Cluster: cl, Old: clusterer.ShTagActive, New: clusterer.ShTagBackup,
			Reason: clusterer.ShTagTakenOver, Node: 3, Term: 1}
		require.Equal(t, taken, w[1].last(t))
		_, ev = w[1].got()
		require.Equal(t, clusterer.Event{Kind: clusterer.ShTagChanged, Cluster: cl, Node: 3, ShTag: &taken}, ev[len(ev)-1])
		require.Equal(t, clusterer.ShTagInfo{Name: vip, Cluster: cl, State: clusterer.ShTagBackup, Owner: 3, Term: 1}, tagInfo(nodes[2], vip))

		// Unknown tags are backup and created when referenced.
		require.Equal(t, clusterer.ShTagBackup, state(t, nodes[2], "gw"))
		synctest.Wait()
		require.Equal(t, []clusterer.ShTagInfo{
			{Name: "gw", Cluster: cl, State: clusterer.ShTagBackup},
			{Name: vip, Cluster: cl, State: clusterer.ShTagBackup, Owner: 3, Term: 1},
		}, nodes[2].ShTags())

		// A watcher of every tag of the cluster.
		all := &tagWatch{}
		stop, err := nodes[2].WatchShTag("", cl, all.change)
		require.NoError(t, err)
		defer stop()
		require.NoError(t, nodes[2].ActivateShTag(context.Background(), "gw", cl))
		synctest.Wait()
		require.Equal(t, "gw", all.last(t).Name)
		require.Equal(t, clusterer.ShTagActivated, all.last(t).Reason)
		require.False(t, all.last(t).NeedsResync, "nobody held it before")
		c, _ := w[2].got()
		require.Empty(t, c, "node 2's watcher of vip did not hear about gw")

		// Errors.
		_, err = nodes[1].ShTag("", cl)
		require.ErrorIs(t, err, clusterer.ErrShTag)
		_, err = nodes[1].ShTag(vip, 9)
		require.ErrorIs(t, err, clusterer.ErrUnknownCluster)
		require.ErrorIs(t, nodes[1].ActivateShTag(context.Background(), vip, 9), clusterer.ErrUnknownCluster)
		_, err = nodes[1].WatchShTag(vip, cl, nil)
		require.ErrorIs(t, err, clusterer.ErrConfig)
		_, err = nodes[1].WatchShTag("", 9, func(clusterer.ShTagChange) {})
		require.ErrorIs(t, err, clusterer.ErrUnknownCluster)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.ErrorIs(t, nodes[1].ActivateShTag(ctx, vip, cl), context.Canceled)
		require.NoError(t, nodes[1].Close())
		require.ErrorIs(t, nodes[1].ActivateShTag(context.Background(), vip, cl), clusterer.ErrClosed)
		_, err = nodes[1].WatchShTag(vip, cl, func(clusterer.ShTagChange) {})
		require.ErrorIs(t, err, clusterer.ErrClosed)
	})
}

func TestShTagBeforeStart(t *testing.T) {
	c, err := clusterer.New(testConfig(1, clustertest.NewNetwork()))
	require.NoError(t, err)
	defer c.Close()
	require.ErrorIs(t, c.ActivateShTag(context.Background(), vip, cl), clusterer.ErrNotStarted)
	st, err := c.ShTag(vip, cl)
	require.NoError(t, err)
	require.Equal(t, clusterer.ShTagBackup, st)
	require.Equal(t, []clusterer.ShTagInfo{{Name: vip, Cluster: cl}}, c.ShTags(), "referenced before Start: created")
}

// The announcement reaches a node behind a relay: SHTAG_ACTIVE and the
// claim both cross node 2, the holder there steps down, and its yield
// notice crosses node 2 back (a handover: no conflict for node 1).
func TestShTagActivationThroughRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, w := startTagNodes(t, nw, map[int][]string{3: {"vip/1=active"}}, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		time.Sleep(3 * time.Second)
		nw.Cut(ip(1), ip(3))
		time.Sleep(time.Second)
		hop, ok := nodes[1].NextHop(cl, 3)
		require.True(t, ok)
		require.Equal(t, 2, hop)

		relayed := nodes[2].Stats().Relayed
		require.NoError(t, nodes[1].ActivateShTag(context.Background(), vip, cl))
		synctest.Wait()
		require.Equal(t, relayed+3, nodes[2].Stats().Relayed, "the claim and SHTAG_ACTIVE crossed node 2, and node 3's yield notice back")
		require.Equal(t, []int{1}, activeNodes(t, nodes, vip))
		require.Equal(t, clusterer.ShTagChange{Name: vip, Cluster: cl, Old: clusterer.ShTagActive, New: clusterer.ShTagBackup,
			Reason: clusterer.ShTagTakenOver, Node: 1, Term: 1}, w[3].last(t))
		require.Equal(t, clusterer.ShTagActivated, w[1].last(t).Reason, "node 1 took the tag over from node 3: no conflict")
	})
}

// Both sides of a partition hold the tag; once it heals exactly one does,
// the one activated last, and it is told to resync.
func TestShTagPartitionHeals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, w := startTagNodes(t, nw, map[int][]string{1: {"vip/1=active"}}, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		time.Sleep(3 * time.Second)
		nw.Cut(ip(1), ip(2))
		nw.Cut(ip(1), ip(3))
		time.Sleep(time.Second)
		require.Equal(t, []int{3}, reachable(nodes[2]))
		require.NoError(t, nodes[2].ActivateShTag(context.Background(), vip, cl), "the survivors take over")
		synctest.Wait()
		require.Equal(t, []int{1, 2}, activeNodes(t, nodes, vip), "split brain while partitioned")

		nw.HealAll()
		time.Sleep(10 * time.Second) // DOWN nodes are probed every 6 s
		require.Equal(t, []int{2, 3}, reachable(nodes[1]))
		require.Equal(t, []int{2}, activeNodes(t, nodes, vip))
		for id, c := range nodes {
			assert.Equal(t, 2, tagInfo(c, vip).Owner, "node %d", id)
		}
		require.Equal(t, clusterer.ShTagChange{Name: vip, Cluster: cl, Old: clusterer.ShTagActive, New: clusterer.ShTagBackup,
			Reason: clusterer.ShTagTakenOver, Node: 2, Term: 1}, w[1].last(t))
		require.Equal(t, clusterer.ShTagChange{Name: vip, Cluster: cl, Old: clusterer.ShTagActive, New: clusterer.ShTagActive,
			Reason: clusterer.ShTagConflictWon, Node: 1, Term: 1, NeedsResync: true}, w[2].last(t))
	})
}

// Two operators activate the tag on two nodes at the same moment: one
// node ends active (OpenSIPS nodes would both be backup).
func TestShTagSimultaneousActivation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, w := startTagNodes(t, nw, nil, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		time.Sleep(3 * time.Second)
		var wg sync.WaitGroup
		for _, id := range []int{3, 2} {
			wg.Go(func() { assert.NoError(t, nodes[id].ActivateShTag(context.Background(), vip, cl)) })
		}
		wg.Wait()
		synctest.Wait()
		// The goroutines race: if both loops activate before hearing the
		// other, both take term 1 and the lower id (2) wins the conflict;
		// if one hears the other's claim first, it takes term 2 and simply
		// wins. Either way exactly one node holds the tag.
		active := activeNodes(t, nodes, vip)
		require.Len(t, active, 1)
		holder, loser := active[0], 5-active[0]
		require.Contains(t, []int{2, 3}, holder)
		require.Equal(t, clusterer.ShTagTakenOver, w[loser].last(t).Reason)
		switch last := w[holder].last(t); last.Reason {
		case clusterer.ShTagConflictWon:
			require.Equal(t, 2, holder, "equal terms: the lower id")
			require.True(t, last.NeedsResync)
		case clusterer.ShTagActivated:
			require.EqualValues(t, 2, last.Term, "it heard the other's term 1")
		default:
			t.Fatalf("holder %d's last change: %+v", holder, last)
		}
	})
}

// The captured OpenSIPS SHTAG_ACTIVE (node 1 to node 2, session 1) makes a
// Go node holding the tag go backup.
func TestShTagCapturedOpenSIPSAnnouncement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		// Node 2 knows node 1, which is OpenSIPS and whose frame we replay.
		nodes, w := startTagNodes(t, nw, map[int][]string{2: {"vip/1=active"}}, map[int][]int{2: {1}}, 2)
		time.Sleep(time.Second)
		require.Equal(t, clusterer.ShTagActive, state(t, nodes[2], vip))

		conn, err := nw.Dial(context.Background(), ip(1), ip(2)+":5555")
		require.NoError(t, err)
		_, err = conn.Write(vectorFrame(t, "shtag_active"))
		require.NoError(t, err)
		synctest.Wait()
		conn.Close()
		require.Equal(t, clusterer.ShTagBackup, state(t, nodes[2], vip))
		require.Equal(t, clusterer.ShTagInfo{Name: vip, Cluster: cl, State: clusterer.ShTagBackup, Owner: 1, Term: 1}, tagInfo(nodes[2], vip))
		require.Equal(t, clusterer.ShTagChange{Name: vip, Cluster: cl, Old: clusterer.ShTagActive, New: clusterer.ShTagBackup,
			Reason: clusterer.ShTagTakenOver, Node: 1, Term: 1}, w[2].last(t))
	})
}

// A watcher that does not return delays nothing but itself: the protocol
// goes on, and changes beyond its queue are dropped and counted.
func TestShTagSlowWatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		var nodes []*clusterer.Cluster
		for _, id := range []int{1, 2} {
			cfg := testConfig(id, nw, 3-id)
			cfg.HandlerQueue = 4
			c, err := clusterer.New(cfg)
			require.NoError(t, err)
			require.NoError(t, c.Start(context.Background()))
			nodes = append(nodes, c)
		}
		block := make(chan struct{})
		stop, err := nodes[1].WatchShTag("", cl, func(clusterer.ShTagChange) { <-block })
		require.NoError(t, err)
		defer func() {
			close(block) // before stop and Close, which wait for the watcher
			stop()
			for _, c := range nodes {
				c.Close()
			}
		}()
		time.Sleep(3 * time.Second)
		for i := range 20 {
			require.NoError(t, nodes[1].ActivateShTag(context.Background(), fmt.Sprintf("t%02d", i), cl))
		}
		synctest.Wait()
		require.GreaterOrEqual(t, nodes[1].Stats().HandlerDrops, uint64(20-1-2*4))
		require.NoError(t, nodes[0].ActivateShTag(context.Background(), "t00", cl))
		synctest.Wait()
		require.Equal(t, clusterer.ShTagBackup, state(t, nodes[1], "t00"), "the protocol went on")
		time.Sleep(10 * time.Second)
		require.Equal(t, []int{1}, reachable(nodes[1]))
	})
}

// Real sockets: the holder dies, a survivor takes over, the restarted node
// rejoins as backup and learns who holds the tag.
func TestShTagOverTCP(t *testing.T) {
	ports := freePorts(t, 3)
	start := func(id int, tags ...string) *clusterer.Cluster {
		cc := clusterer.ClusterConfig{ID: cl, Self: clusterer.NodeInfo{URL: "bin:127.0.0.1:" + ports[id-1]}}
		for n := 1; n <= 3; n++ {
			if n != id {
				cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: cl, ID: n, URL: "bin:127.0.0.1:" + ports[n-1]})
			}
		}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, ShTags: tags,
			PingInterval: time.Second, PingTimeout: 200 * time.Millisecond, NodeTimeout: time.Second})
		require.NoError(t, err)
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		return c
	}
	nodes := map[int]*clusterer.Cluster{1: start(1, "vip/1=active"), 2: start(2), 3: start(3)}
	owner := func(want int) func() bool {
		return func() bool {
			for _, c := range nodes {
				if tagInfo(c, vip).Owner != want {
					return false
				}
			}
			return true
		}
	}
	require.Eventually(t, owner(1), 5*time.Second, 5*time.Millisecond)
	require.Equal(t, []int{1}, activeNodes(t, nodes, vip))

	closed := time.Now()
	require.NoError(t, nodes[1].Close())
	delete(nodes, 1)
	require.Eventually(t, func() bool { return len(reachable(nodes[2])) == 1 }, 2*time.Second, time.Millisecond)
	require.NoError(t, nodes[2].ActivateShTag(context.Background(), vip, cl))
	require.Eventually(t, owner(2), 2*time.Second, time.Millisecond)
	t.Logf("taken over %v after the holder died", time.Since(closed))

	nodes[1] = start(1) // restarted, configured backup this time
	require.Eventually(t, owner(2), 5*time.Second, 5*time.Millisecond)
	require.Equal(t, []int{2}, activeNodes(t, nodes, vip))
}
