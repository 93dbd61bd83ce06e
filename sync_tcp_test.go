package clusterer_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
)

// Full syncs over real TCP on loopback: the kv store of sync_test.go on
// nodes that listen on 127.0.0.1 with free ports.

// tcpKVNode describes one node of a loopback cluster.
type tcpKVNode struct {
	id    int
	sip   string // SIP address, for donor conditions
	store *kv    // nil: empty
	cap   clusterer.CapabilityConfig
	tune  func(*clusterer.Config)
}

// tcpTopo is a loopback cluster: every node on 127.0.0.1 with a free
// port, each provisioned with all the others.
type tcpTopo []clusterer.NodeInfo

func newTCPTopo(t *testing.T, specs ...tcpKVNode) tcpTopo {
	t.Helper()
	ports := freePorts(t, len(specs))
	tp := make(tcpTopo, len(specs))
	for i, sp := range specs {
		tp[i] = clusterer.NodeInfo{ClusterID: cl, ID: sp.id, URL: "bin:127.0.0.1:" + ports[i], SIPAddr: sp.sip}
	}
	return tp
}

// start starts node sp (which must be in the topology) with the kv
// capability, and closes it when the test ends.
func (tp tcpTopo) start(t *testing.T, sp tcpKVNode) *kv {
	t.Helper()
	var cc clusterer.ClusterConfig
	for _, ni := range tp {
		if ni.ID == sp.id {
			cc = clusterer.ClusterConfig{ID: cl, Self: ni}
		}
	}
	require.NotEmpty(t, cc.Self.URL, "node %d is not in the topology", sp.id)
	for _, ni := range tp {
		if ni.ID != sp.id {
			cc.Nodes = append(cc.Nodes, ni)
		}
	}
	cfg := clusterer.Config{NodeID: sp.id, Clusters: []clusterer.ClusterConfig{cc},
		PingInterval: time.Second, PingTimeout: 200 * time.Millisecond}
	if sp.tune != nil {
		sp.tune(&cfg)
	}
	c, err := clusterer.New(cfg)
	require.NoError(t, err)
	s := sp.store
	if s == nil {
		s = newKV()
	}
	s.c = c
	capCfg := sp.cap
	capCfg.Name, capCfg.Cluster = kvCap, cl
	require.NoError(t, c.RegisterCapability(capCfg, s))
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { c.Close() })
	return s
}

// startTCPKV starts all the nodes of a new topology, in order.
func startTCPKV(t *testing.T, specs ...tcpKVNode) map[int]*kv {
	t.Helper()
	tp := newTCPTopo(t, specs...)
	out := map[int]*kv{}
	for _, sp := range specs {
		out[sp.id] = tp.start(t, sp)
	}
	return out
}

// kvDigest is an order-independent digest of a data set: the count, and
// the sum and the XOR of the first 16 bytes of SHA-256(key, value).
type kvDigest struct {
	n        int
	sum, xor uint64
}

func digestOf(m map[string]string) kvDigest {
	d := kvDigest{n: len(m)}
	for k, v := range m {
		h := sha256.Sum256([]byte(k + "\x00" + v))
		d.sum += binary.LittleEndian.Uint64(h[:8])
		d.xor ^= binary.LittleEndian.Uint64(h[8:16])
	}
	return d
}

// diffKV names up to five keys on which a and b differ.
func diffKV(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, fmt.Sprintf("%s: %q vs %q (present %v)", k, v, w, ok))
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s: missing vs %q", k, w))
		}
	}
	sort.Strings(out)
	return fmt.Sprintf("%d differences: %s", len(out), strings.Join(out[:min(5, len(out))], "; "))
}

// replicate sends an update to every reachable node, retrying while a
// node's queue is full. SendAll would not do here: it succeeds when any
// node took the packet, and during a sync it is the joiner's queue, shared
// with the sync stream, that fills.
func replicate(c *clusterer.Cluster, k, v string) error {
	p := kvPacket(k, v)
	for _, n := range c.Nodes(cl) {
		if !n.Reachable {
			continue // its sync, later, takes the change
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := c.SendTo(cl, n.ID, p)
			if errors.Is(err, clusterer.ErrQueueFull) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			if err != nil && !errors.Is(err, clusterer.ErrDestDown) {
				return fmt.Errorf("update %s to node %d: %w", k, n.ID, err)
			}
			break
		}
	}
	return nil
}

// syncRecords returns the keys of the sync records in the store's log, in
// the order received.
func syncRecords(s *kv) []string {
	var keys []string
	for _, e := range s.logCopy() {
		if k, ok := strings.CutPrefix(e, "sync:"); ok {
			keys = append(keys, k)
		}
	}
	return keys
}

// Two joiners sync at once from the donor over TCP while it keeps
// changing and replicating its data: both end with the donor's data set,
// every record once.
func TestSyncOverTCPWithConcurrentUpdates(t *testing.T) {
	const records = 20000
	donor := filled(records)
	var applied atomic.Int64 // updates the donor applied
	var during atomic.Int64  // of which while a WriteSync ran
	var serving atomic.Int32
	donor.donate = func(w *clusterer.SyncWriter) error {
		serving.Add(1)
		defer serving.Add(-1)
		for i, rec := range donor.snapshot() {
			if err := w.WriteValue(rec); err != nil {
				return err
			}
			if i%2000 == 1999 {
				// Let the update stream make progress in the middle of
				// the stream, whatever the scheduling.
				n := applied.Load()
				for deadline := time.Now().Add(5 * time.Second); applied.Load() == n && time.Now().Before(deadline); {
					time.Sleep(100 * time.Microsecond)
				}
			}
		}
		return nil
	}
	// The joiners may take only the donor's data (the other joiner has
	// another SIP address than the donor): a joiner that synced from the
	// other could miss an update the donor sent it before its sync began
	// and the other had not applied yet.
	joinCap := clusterer.CapabilityConfig{RequireSync: true, Donor: clusterer.DonorOtherSIPAddr}
	nodes := startTCPKV(t,
		tcpKVNode{id: 1, sip: "10.0.0.1:5060", store: donor},
		tcpKVNode{id: 2, sip: "10.0.0.2:5060", cap: joinCap},
		tcpKVNode{id: 3, sip: "10.0.0.2:5060", cap: joinCap})

	stop := make(chan struct{})
	updErr := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		next := records
		var err error
		defer func() { updErr <- err }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("k%05d", rng.IntN(records))
			if i%10 == 0 {
				k = fmt.Sprintf("k%05d", next)
				next++
			}
			v := fmt.Sprintf("u%d", i)
			donor.set(k, v)
			if serving.Load() > 0 {
				during.Add(1)
			}
			applied.Add(1)
			if err = replicate(donor.c, k, v); err != nil {
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	stopped := false
	stopUpdates := func() error {
		if stopped {
			return nil
		}
		stopped = true
		close(stop)
		return <-updErr
	}
	defer stopUpdates()

	synced := func(id int) bool {
		st, err := nodes[id].c.SyncStatus(cl, kvCap)
		return err == nil && st.Status == clusterer.Synced
	}
	require.Eventually(t, func() bool { return synced(2) && synced(3) }, 30*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond) // updates go on after the syncs
	require.NoError(t, stopUpdates())
	require.Positive(t, during.Load(), "updates were applied while the donor served")

	want := donor.copyData()
	for _, id := range []int{2, 3} {
		j := nodes[id]
		// The last updates may still be on their way.
		require.Eventually(t, func() bool { return digestOf(j.copyData()) == digestOf(want) }, 10*time.Second, 5*time.Millisecond,
			"node %d: %s", id, diffKV(want, j.copyData()))
		require.Len(t, j.kinds(clusterer.SyncStarted), 1, "node %d: one session", id)
		require.Empty(t, j.kinds(clusterer.SyncFailed), "node %d", id)
		done := j.kinds(clusterer.SyncDone)
		require.Len(t, done, 1, "node %d", id)
		assert.Equal(t, 1, done[0].Node, "node %d synced from the donor", id)

		log := j.logCopy()
		lastRec := 0
		for i, e := range log {
			if strings.HasPrefix(e, "sync:") {
				lastRec = i
			}
		}
		t.Logf("node %d: %d updates applied by the donor, %d while it served; %d sync records, %d updates before the last record, %d after",
			id, applied.Load(), during.Load(), len(syncRecords(j)), lastRec+1-len(syncRecords(j)), len(log)-lastRec-1)
		keys := syncRecords(j)
		seen := make(map[string]bool, len(keys))
		for _, k := range keys {
			require.False(t, seen[k], "node %d: record %s received twice", id, k)
			seen[k] = true
		}
		require.GreaterOrEqual(t, len(keys), records, "node %d", id)
		st, err := j.c.SyncStatus(cl, kvCap)
		require.NoError(t, err)
		assert.EqualValues(t, len(keys), st.Records, "node %d", id)
		assert.NoError(t, st.LastErr, "node %d", id)
		js := j.c.Stats()
		assert.Zero(t, js.SyncLost, "node %d", id)
		assert.Zero(t, js.SyncOverflow, "node %d", id)
		assert.Zero(t, js.SyncStale, "node %d", id)
	}
	assert.EqualValues(t, 2, donor.c.Stats().SyncServed)
	assert.Zero(t, donor.c.Stats().SyncServeFailed)
}

// The donor dies in the middle of the stream (its process gone: sockets
// closed): the joiner gives the session up and syncs again from the third
// node, which holds the same data.
func TestSyncOverTCPDonorKilledMidStream(t *testing.T) {
	const records = 40000
	dying := filled(records)
	reached := make(chan struct{})
	var wrote atomic.Int64
	dying.donate = func(w *clusterer.SyncWriter) error {
		for i, rec := range dying.snapshot() {
			if i == records/4 {
				close(reached)
			}
			if i >= records/4 {
				// From here on, a very slow store: the rest would take
				// half a minute, so the kill lands mid-stream.
				time.Sleep(time.Millisecond)
			}
			if err := w.WriteValue(rec); err != nil {
				return err
			}
			wrote.Add(1)
		}
		return nil
	}
	// Small packets: what was written is on the wire, not waiting in an
	// open packet.
	small := func(c *clusterer.Config) { c.SyncPacketMaxSize = 1000 }
	healthy := filled(records)
	specs := []tcpKVNode{{id: 1, store: dying, tune: small}, {id: 2, cap: clusterer.CapabilityConfig{RequireSync: true}},
		{id: 3, store: healthy}}
	tp := newTCPTopo(t, specs...)
	nodes := map[int]*kv{1: tp.start(t, specs[0]), 3: tp.start(t, specs[2])}
	ctx := context.Background()
	// Node 3 may not donate until the joiner's sync from node 1 runs.
	require.NoError(t, nodes[3].c.SetCapabilityEnabled(ctx, cl, kvCap, false))
	notSynced3 := clusterer.CapabilityInfo{Name: kvCap, Node: 3, Status: clusterer.NotSynced, Reachable: true}
	require.Eventually(t, func() bool {
		for _, ci := range nodes[1].c.Capabilities(cl) {
			if ci == notSynced3 {
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond, "node 1 learns that node 3 is not synced")

	joiner := tp.start(t, specs[1])
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the donor never reached the middle of its data")
	}
	require.Eventually(t, func() bool {
		st, _ := joiner.c.SyncStatus(cl, kvCap)
		return st.Status == clusterer.SyncInProgress && st.Donor == 1 && st.Records >= records/8
	}, 20*time.Second, time.Millisecond)
	require.NoError(t, nodes[3].c.SetCapabilityEnabled(ctx, cl, kvCap, true))
	require.NoError(t, nodes[1].c.Close())
	require.Less(t, wrote.Load(), int64(records), "killed mid-stream")

	require.Eventually(t, func() bool { return len(joiner.kinds(clusterer.SyncDone)) > 0 }, 30*time.Second, 5*time.Millisecond)
	failed := joiner.kinds(clusterer.SyncFailed)
	require.NotEmpty(t, failed)
	assert.Equal(t, 1, failed[0].Node)
	require.ErrorIs(t, failed[0].Err, clusterer.ErrDonorDown)
	done := joiner.kinds(clusterer.SyncDone)
	require.Len(t, done, 1)
	require.Equal(t, 3, done[0].Node, "finished from the third node")

	want := healthy.copyData()
	got := joiner.copyData()
	require.Equal(t, digestOf(want), digestOf(got), "%s", diffKV(want, got))
	st, err := joiner.c.SyncStatus(cl, kvCap)
	require.NoError(t, err)
	require.Equal(t, clusterer.Synced, st.Status)
	require.EqualValues(t, records, st.Records, "progress counts the successful session")
	require.Zero(t, joiner.c.Stats().SyncLost)
}
