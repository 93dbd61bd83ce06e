package clusterer_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/internal/golden"
	"github.com/clusterer-go/clusterer/internal/wire"
)

const kvCap = "kv-repl"

// kv is a replicated key-value store: the host side of a capability that
// syncs. Records and updates are "key=value".
type kv struct {
	mu     sync.Mutex
	c      *clusterer.Cluster
	data   map[string]string
	log    []string // "sync:key" and "pkt:key", in delivery order
	events []clusterer.Event
	// donate, when set, replaces the default donor (every key, sorted).
	donate func(w *clusterer.SyncWriter) error
}

func newKV() *kv { return &kv{data: map[string]string{}} }

func (s *kv) set(k, v string) {
	s.mu.Lock()
	s.data[k] = v
	s.mu.Unlock()
}

func kvPacket(k, v string) bin.Packet {
	b := bin.NewBuilder(1, kvCap, 1)
	b.PushStr(k)
	b.PushStr(v)
	frame, _ := b.Finish()
	p, _ := bin.Parse(frame)
	return p
}

// update applies a change locally and replicates it, as a module does.
func (s *kv) update(k, v string) error {
	s.set(k, v)
	return s.c.SendAll(cl, kvPacket(k, v))
}

func (s *kv) HandlePacket(p clusterer.Packet) {
	r := p.Reader()
	k, v := r.PopStr(), r.PopStr()
	s.mu.Lock()
	s.data[k] = v
	s.log = append(s.log, "pkt:"+k)
	s.mu.Unlock()
}

func (s *kv) HandleEvent(e clusterer.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

type kvRecord struct{ K, V string }

func (s *kv) HandleSyncRecord(r clusterer.SyncRecord) {
	var rec kvRecord
	if err := r.Decode(&rec); err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.data[rec.K] = rec.V
	s.log = append(s.log, "sync:"+rec.K)
	s.mu.Unlock()
}

func (s *kv) WriteSync(w *clusterer.SyncWriter) error {
	if s.donate != nil {
		return s.donate(w)
	}
	for _, rec := range s.snapshot() {
		if err := w.WriteValue(rec); err != nil {
			return err
		}
	}
	return nil
}

func (s *kv) snapshot() []kvRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]kvRecord, 0, len(s.data))
	for k, v := range s.data {
		out = append(out, kvRecord{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].K < out[j].K })
	return out
}

func (s *kv) copyData() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps2(s.data)
}

func maps2(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *kv) kinds(kind clusterer.EventKind) []clusterer.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []clusterer.Event
	for _, e := range s.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func (s *kv) logCopy() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

type kvSpec struct {
	id        int
	neighbors []int
	cap       clusterer.CapabilityConfig
	noCap     bool // the node does not hold the capability at all
	seed      bool
	store     *kv
	tune      func(*clusterer.Config)
}

// startKV starts nodes holding the kv capability.
func startKV(t *testing.T, nw clusterer.Transport, specs ...kvSpec) map[int]*kv {
	t.Helper()
	out := map[int]*kv{}
	for _, sp := range specs {
		cfg := testConfig(sp.id, nw, sp.neighbors...)
		cfg.Clusters[0].Self.Seed = sp.seed
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
		if !sp.noCap {
			cc := sp.cap
			cc.Name, cc.Cluster = kvCap, cl
			require.NoError(t, c.RegisterCapability(cc, s))
		}
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		out[sp.id] = s
	}
	return out
}

func filled(n int) *kv {
	s := newKV()
	for i := range n {
		s.data[fmt.Sprintf("k%05d", i)] = fmt.Sprintf("v%d", i)
	}
	return s
}

func TestSyncFromDonor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		donor := filled(1000)
		nodes := startKV(t, nw,
			kvSpec{id: 1, store: donor},
			kvSpec{id: 2, neighbors: []int{1}, cap: clusterer.CapabilityConfig{RequireSync: true}})
		joiner := nodes[2]
		st, err := joiner.c.SyncStatus(cl, kvCap)
		require.NoError(t, err)
		require.Equal(t, clusterer.SyncPending, st.Status, "no donor before the link is up")

		time.Sleep(5 * time.Second)
		synctest.Wait()
		require.Equal(t, donor.copyData(), joiner.copyData())
		log := joiner.logCopy()
		require.Len(t, log, 1000)
		require.True(t, slices.IsSorted(log), "records arrive in the donor's order")

		st, err = joiner.c.SyncStatus(cl, kvCap)
		require.NoError(t, err)
		assert.Equal(t, clusterer.Synced, st.Status)
		assert.EqualValues(t, 1000, st.Records)
		assert.NoError(t, st.LastErr)
		require.Len(t, joiner.kinds(clusterer.SyncStarted), 1)
		done := joiner.kinds(clusterer.SyncDone)
		require.Len(t, done, 1)
		assert.Equal(t, clusterer.Event{Kind: clusterer.SyncDone, Cluster: cl, Node: 1, Capability: kvCap}, done[0])

		// Both nodes now see each other synced, and agree on who shares the work.
		for id, s := range nodes {
			got, idx := s.c.SyncedNodes(cl, kvCap)
			assert.Equal(t, []int{1, 2}, got, "node %d", id)
			assert.Equal(t, id-1, idx, "node %d", id)
		}
		caps := donor.c.Capabilities(cl)
		assert.Contains(t, caps, clusterer.CapabilityInfo{Name: kvCap, Node: 2, Status: clusterer.Synced, Reachable: true})
		assert.Equal(t, uint64(1), donor.c.Stats().SyncServed)
		assert.Zero(t, joiner.c.Stats().SyncLost+joiner.c.Stats().SyncStale)

		// A re-sync on demand pulls everything again.
		require.NoError(t, joiner.c.RequestSync(context.Background(), cl, kvCap))
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Len(t, joiner.logCopy(), 2000)
		assert.Len(t, joiner.kinds(clusterer.SyncDone), 2)
		require.ErrorIs(t, joiner.c.RequestSync(context.Background(), cl, "nope"), clusterer.ErrUnknownCapability)
	})
}

// Updates the donor replicates during the sync are held back and applied
// after the last record, so they win over the records they changed.
func TestSyncBuffersPacketsUntilTheEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		donor := filled(300)
		donor.donate = func(w *clusterer.SyncWriter) error {
			for i, rec := range donor.snapshot() {
				if err := w.WriteValue(rec); err != nil {
					return err
				}
				if i%100 == 50 {
					// A change while the sync runs, replicated at once.
					if err := donor.update(fmt.Sprintf("k%05d", i/2), "changed"); err != nil {
						return err
					}
				}
			}
			return nil
		}
		nodes := startKV(t, nw,
			kvSpec{id: 1, store: donor, tune: func(c *clusterer.Config) { c.SyncPacketMaxSize = 1000 }},
			kvSpec{id: 2, neighbors: []int{1}, cap: clusterer.CapabilityConfig{RequireSync: true}})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		joiner := nodes[2]
		require.Equal(t, donor.copyData(), joiner.copyData())
		log := joiner.logCopy()
		require.Len(t, log, 303)
		for _, e := range log[:300] {
			require.Regexp(t, "^sync:", e)
		}
		require.Equal(t, []string{"pkt:k00025", "pkt:k00075", "pkt:k00125"}, log[300:])
	})
}

func TestSyncBufferOverflowFailsAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		donor := filled(50)
		first := true
		donor.donate = func(w *clusterer.SyncWriter) error {
			for _, rec := range donor.snapshot() {
				if err := w.WriteValue(rec); err != nil {
					return err
				}
			}
			if first {
				first = false
				for i := range 10 {
					if err := donor.update(fmt.Sprintf("x%d", i), "new"); err != nil {
						return err
					}
				}
			}
			return nil
		}
		nodes := startKV(t, nw,
			kvSpec{id: 1, store: donor},
			kvSpec{id: 2, neighbors: []int{1}, cap: clusterer.CapabilityConfig{RequireSync: true, SyncBuffer: 4}})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		joiner := nodes[2]
		failed := joiner.kinds(clusterer.SyncFailed)
		require.Len(t, failed, 1)
		require.ErrorIs(t, failed[0].Err, clusterer.ErrSyncOverflow)
		require.Len(t, joiner.kinds(clusterer.SyncDone), 1, "the second sync succeeds")
		require.Equal(t, donor.copyData(), joiner.copyData(), "nothing lost")
		st, _ := joiner.c.SyncStatus(cl, kvCap)
		require.Equal(t, clusterer.Synced, st.Status)
		require.EqualValues(t, 1, joiner.c.Stats().SyncOverflow)
	})
}

// The donor dies in the middle of the stream: the joiner gives the session
// up, applies what it held back, and syncs from the other donor.
func TestSyncDonorDiesMidSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		stall := make(chan struct{})
		var once sync.Once
		unstall := func() { once.Do(func() { close(stall) }) }
		defer unstall()
		dying := filled(500)
		dying.donate = func(w *clusterer.SyncWriter) error {
			for i, rec := range dying.snapshot() {
				if i == 250 {
					<-stall // never more
				}
				if err := w.WriteValue(rec); err != nil {
					return err
				}
			}
			return nil
		}
		healthy := filled(500)
		nodes := startKV(t, nw,
			kvSpec{id: 1, store: healthy},
			kvSpec{id: 3, neighbors: []int{1}, store: dying, tune: func(c *clusterer.Config) { c.SyncPacketMaxSize = 2000 }})
		ctx := context.Background()
		// Node 1 is not a donor until node 2 syncs from node 3.
		require.NoError(t, nodes[1].c.SetCapabilityEnabled(ctx, cl, kvCap, false))
		joiner := startKV(t, nw, kvSpec{id: 2, neighbors: []int{1, 3}})[2]
		time.Sleep(3 * time.Second)
		require.NoError(t, joiner.c.RequestSync(ctx, cl, kvCap))
		require.Eventually(t, func() bool {
			st, _ := joiner.c.SyncStatus(cl, kvCap)
			return st.Status == clusterer.SyncInProgress && st.Records > 100
		}, 10*time.Second, 10*time.Millisecond)
		st, _ := joiner.c.SyncStatus(cl, kvCap)
		require.Equal(t, 3, st.Donor)
		require.NoError(t, nodes[1].c.SetCapabilityEnabled(ctx, cl, kvCap, true))
		go nodes[3].c.Close() // waits for the stalled job
		time.Sleep(time.Millisecond)
		unstall()
		time.Sleep(5 * time.Second)
		synctest.Wait()

		failed := joiner.kinds(clusterer.SyncFailed)
		require.NotEmpty(t, failed)
		require.ErrorIs(t, failed[0].Err, clusterer.ErrDonorDown)
		done := joiner.kinds(clusterer.SyncDone)
		require.Len(t, done, 1)
		require.Equal(t, 1, done[0].Node)
		require.Equal(t, healthy.copyData(), joiner.copyData())
		st, _ = joiner.c.SyncStatus(cl, kvCap)
		require.Equal(t, clusterer.Synced, st.Status)
		require.EqualValues(t, 500, st.Records, "progress counts the successful session")
	})
}

func TestSyncTimesOutAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		release := make(chan struct{})
		defer close(release)
		donor := filled(20)
		calls := 0
		donor.donate = wrapDonate(donor, &calls, release)
		nodes := startKV(t, nw,
			kvSpec{id: 1, store: donor},
			kvSpec{id: 2, neighbors: []int{1}, cap: clusterer.CapabilityConfig{RequireSync: true},
				tune: func(c *clusterer.Config) { c.SyncTimeout = 4 * time.Second }})
		joiner := nodes[2]
		time.Sleep(3 * time.Second)
		st, _ := joiner.c.SyncStatus(cl, kvCap)
		require.Equal(t, clusterer.SyncPending, st.Status, "requested, nothing arrived")
		time.Sleep(3 * time.Second)
		synctest.Wait()
		failed := joiner.kinds(clusterer.SyncFailed)
		require.Len(t, failed, 1)
		require.ErrorIs(t, failed[0].Err, clusterer.ErrSyncTimeout)
		// The donor serves one request per requester at a time: the
		// retry runs once the stuck job ends.
		release <- struct{}{}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		require.Len(t, joiner.kinds(clusterer.SyncDone), 1)
		require.Equal(t, donor.copyData(), joiner.copyData())
	})
}

// wrapDonate makes the first donation hang until release.
func wrapDonate(s *kv, calls *int, release chan struct{}) func(*clusterer.SyncWriter) error {
	return func(w *clusterer.SyncWriter) error {
		*calls++
		if *calls == 1 {
			<-release
			return errors.New("the donor's store failed")
		}
		for _, rec := range s.snapshot() {
			if err := w.WriteValue(rec); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestSyncRoutedThroughRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nw.Cut(ip(1), ip(3))
		donor := filled(400)
		nodes := startKV(t, nw,
			kvSpec{id: 1, store: donor},
			kvSpec{id: 2, neighbors: []int{1}, noCap: true},
			kvSpec{id: 3, neighbors: []int{1, 2}, cap: clusterer.CapabilityConfig{RequireSync: true}})
		time.Sleep(8 * time.Second)
		synctest.Wait()
		hop, ok := nodes[3].c.NextHop(cl, 1)
		require.True(t, ok)
		require.Equal(t, 2, hop)
		require.Equal(t, donor.copyData(), nodes[3].copyData())
		require.NotZero(t, nodes[2].c.Stats().Relayed)
		require.Len(t, nodes[3].kinds(clusterer.SyncDone), 1)
	})
}

func TestSeedFallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes := startKV(t, nw,
			kvSpec{id: 1, seed: true, cap: clusterer.CapabilityConfig{RequireSync: true}},
			kvSpec{id: 2, cap: clusterer.CapabilityConfig{RequireSync: true}})
		time.Sleep(4 * time.Second)
		st, _ := nodes[1].c.SyncStatus(cl, kvCap)
		require.Equal(t, clusterer.SyncPending, st.Status)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		st, _ = nodes[1].c.SyncStatus(cl, kvCap)
		require.Equal(t, clusterer.Synced, st.Status, "a seed falls back after 5 s")
		require.Equal(t, []clusterer.Event{{Kind: clusterer.SyncDone, Cluster: cl, Capability: kvCap}}, nodes[1].kinds(clusterer.SyncDone))
		st, _ = nodes[2].c.SyncStatus(cl, kvCap)
		require.Equal(t, clusterer.SyncPending, st.Status, "other nodes wait for a donor")
		_, idx := nodes[2].c.SyncedNodes(cl, kvCap)
		require.Equal(t, -1, idx)
	})
}

func TestCapabilityDisable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes := startKV(t, nw, kvSpec{id: 1, store: filled(10)}, kvSpec{id: 2, neighbors: []int{1}})
		time.Sleep(3 * time.Second)
		ctx := context.Background()
		require.Contains(t, nodes[2].c.Capabilities(cl), clusterer.CapabilityInfo{Name: kvCap, Node: 1, Status: clusterer.Synced, Reachable: true})
		require.NoError(t, nodes[1].c.SetCapabilityEnabled(ctx, cl, kvCap, false))
		time.Sleep(time.Second)
		st, _ := nodes[1].c.SyncStatus(cl, kvCap)
		require.Equal(t, clusterer.CapabilityDisabled, st.Status)
		require.Contains(t, nodes[2].c.Capabilities(cl), clusterer.CapabilityInfo{Name: kvCap, Node: 1, Status: clusterer.NotSynced, Reachable: true})
		changed := nodes[2].kinds(clusterer.CapabilityChanged)
		_ = changed
		// No donor now: a sync request waits.
		require.NoError(t, nodes[2].c.RequestSync(ctx, cl, kvCap))
		time.Sleep(time.Second)
		st, _ = nodes[2].c.SyncStatus(cl, kvCap)
		require.Equal(t, clusterer.SyncPending, st.Status)
		require.NoError(t, nodes[1].c.SetCapabilityEnabled(ctx, cl, kvCap, true))
		time.Sleep(time.Second)
		synctest.Wait()
		st, _ = nodes[2].c.SyncStatus(cl, kvCap)
		require.Equal(t, clusterer.Synced, st.Status)
		require.Len(t, nodes[2].copyData(), 10)
		require.ErrorIs(t, nodes[1].c.SetCapabilityEnabled(ctx, cl, "nope", false), clusterer.ErrUnknownCapability)
	})
}

// syncSequence loads the captured OpenSIPS chunked sync: 6 SYNC packets
// of 5 records and SYNC_END, node 1 to node 2, sync_packet_size 300.
func syncSequence(t *testing.T) [][]byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(golden.Dir(t), "vectors", "sync_multi_packet_sequence.json"))
	require.NoError(t, err)
	var v struct {
		Frames []struct {
			Hex string `json:"hex"`
		} `json:"frames"`
	}
	require.NoError(t, json.Unmarshal(raw, &v))
	var out [][]byte
	for _, f := range v.Frames {
		b, err := hex.DecodeString(f.Hex)
		require.NoError(t, err)
		out = append(out, b)
	}
	require.Len(t, out, 7)
	return out
}

// cacheRecord renders a cachedb_local record as OpenSIPS does.
func cacheRecords(t *testing.T, frames [][]byte) [][]byte {
	var recs [][]byte
	for _, f := range frames {
		p, err := bin.Parse(f)
		require.NoError(t, err)
		msg, err := wire.Decode(p)
		require.NoError(t, err)
		if s, ok := msg.(*wire.Sync); ok {
			recs = append(recs, s.Chunks...)
		}
	}
	return recs
}

// A Go node receives OpenSIPS's chunked sync: 30 records, in order.
func TestSyncFromCapturedOpenSIPS(t *testing.T) {
	frames := syncSequence(t)
	want := cacheRecords(t, frames)
	require.Len(t, want, 30)
	synctest.Test(t, func(t *testing.T) {
		got, evs, st := replaySync(t, frames)
		require.Len(t, got, 30)
		for i, r := range got {
			require.Equal(t, want[i], r.Data, "record %d", i)
			require.Equal(t, int16(1), r.Version, "data_version")
			require.Equal(t, 1, r.Src)
		}
		// The first record's fields, as a module reads them.
		rd := got[0].Reader()
		assert.Equal(t, []any{"repl", "bulk-key-21", "bulk-value-21", int32(0)}, []any{rd.PopStr(), rd.PopStr(), rd.PopStr(), rd.PopInt()})
		require.Equal(t, clusterer.Synced, st.Status)
		require.Contains(t, evs, clusterer.Event{Kind: clusterer.SyncDone, Cluster: 1, Node: 1, Capability: "cachedb-local-repl"})
	})
}

// A SYNC packet lost on the way: SYNC_END announces more records than
// arrived, and the sync fails soon after instead of at the sync timeout.
func TestSyncMissingPacketFailsFast(t *testing.T) {
	frames := syncSequence(t)
	lossy := append(slices.Clone(frames[:2]), frames[3:]...)
	synctest.Test(t, func(t *testing.T) {
		got, evs, st := replaySync(t, lossy)
		require.Len(t, got, 25)
		require.NotEqual(t, clusterer.Synced, st.Status)
		require.ErrorIs(t, st.LastErr, clusterer.ErrSyncIncomplete)
		var failed []clusterer.Event
		for _, e := range evs {
			if e.Kind == clusterer.SyncFailed {
				failed = append(failed, e)
			}
		}
		require.Len(t, failed, 1)
		require.ErrorIs(t, failed[0].Err, clusterer.ErrSyncIncomplete)
	})
}

// replaySync plays captured sync frames from "node 1" into a Go node 2 and
// returns what its handler received and the sync state 2 s later.
func replaySync(t *testing.T, frames [][]byte) ([]clusterer.SyncRecord, []clusterer.Event, clusterer.SyncProgress) {
	{
		nw := clustertest.NewNetwork()
		defer nw.Close()
		// Node 1 runs (so it is reachable from 2) but does not hold the
		// capability; the captured stream then arrives from "node 1" on a
		// connection of its own, as OpenSIPS's would.
		mk := func(id int, nb ...int) clusterer.Config {
			cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: fmt.Sprintf("bin:127.0.0.1:2556%d", id)}}
			for _, n := range nb {
				cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: 1, ID: n, URL: fmt.Sprintf("bin:127.0.0.1:2556%d", n)})
			}
			return clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: nw}
		}
		n1, err := clusterer.New(mk(1))
		require.NoError(t, err)
		require.NoError(t, n1.Start(context.Background()))
		defer n1.Close()
		n2, err := clusterer.New(mk(2, 1))
		require.NoError(t, err)
		var mu sync.Mutex
		var got []clusterer.SyncRecord
		var evs []clusterer.Event
		require.NoError(t, n2.RegisterCapability(clusterer.CapabilityConfig{Name: "cachedb-local-repl", Cluster: 1, RequireSync: true},
			clusterer.HandlerFuncs{
				SyncRecord: func(r clusterer.SyncRecord) { mu.Lock(); got = append(got, r); mu.Unlock() },
				Event:      func(e clusterer.Event) { mu.Lock(); evs = append(evs, e); mu.Unlock() },
			}))
		require.NoError(t, n2.Start(context.Background()))
		defer n2.Close()
		time.Sleep(10 * time.Second)
		require.Equal(t, []int{1}, reachable(n2))

		conn, err := nw.Dial(context.Background(), "127.0.0.1", "127.0.0.1:25562")
		require.NoError(t, err)
		defer conn.Close()
		for _, f := range frames {
			_, err := conn.Write(f)
			require.NoError(t, err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		st, err := n2.SyncStatus(1, "cachedb-local-repl")
		require.NoError(t, err)
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got), slices.Clone(evs), st
	}
}

// tap records what a node's listener receives.
type tap struct {
	clusterer.Transport
	mu  sync.Mutex
	buf []byte
}

func (t *tap) Listen(addr string) (net.Listener, error) {
	ln, err := t.Transport.Listen(addr)
	if err != nil {
		return nil, err
	}
	return &tapListener{Listener: ln, t: t}, nil
}

type tapListener struct {
	net.Listener
	t *tap
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, t: l.t}, nil
}

type tapConn struct {
	net.Conn
	t *tap
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.t.mu.Lock()
	c.t.buf = append(c.t.buf, b[:n]...)
	c.t.mu.Unlock()
	return n, err
}

// A Go donor packs the same records into the same packets, byte for byte,
// as OpenSIPS did in the capture (sync_packet_size 300).
func TestGoDonorMatchesOpenSIPSPackets(t *testing.T) {
	frames := syncSequence(t)
	recs := cacheRecords(t, frames)
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		tp := &tap{Transport: nw}
		mk := func(id int, tr clusterer.Transport, nb ...int) clusterer.Config {
			cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: fmt.Sprintf("bin:127.0.0.1:2556%d", id)}}
			for _, n := range nb {
				cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: 1, ID: n, URL: fmt.Sprintf("bin:127.0.0.1:2556%d", n)})
			}
			return clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: tr, SyncPacketMaxSize: 300}
		}
		n1, err := clusterer.New(mk(1, nw))
		require.NoError(t, err)
		require.NoError(t, n1.RegisterCapability(clusterer.CapabilityConfig{Name: "cachedb-local-repl", Cluster: 1, DataVersion: 1},
			clusterer.HandlerFuncs{Donate: func(w *clusterer.SyncWriter) error {
				for _, r := range recs {
					if err := w.Write(r); err != nil {
						return err
					}
				}
				return nil
			}}))
		require.NoError(t, n1.Start(context.Background()))
		defer n1.Close()
		n2, err := clusterer.New(mk(2, tp, 1))
		require.NoError(t, err)
		var n int
		var mu sync.Mutex
		require.NoError(t, n2.RegisterCapability(clusterer.CapabilityConfig{Name: "cachedb-local-repl", Cluster: 1, RequireSync: true},
			clusterer.HandlerFuncs{SyncRecord: func(clusterer.SyncRecord) { mu.Lock(); n++; mu.Unlock() }}))
		require.NoError(t, n2.Start(context.Background()))
		defer n2.Close()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		mu.Lock()
		require.Equal(t, 30, n)
		mu.Unlock()

		tp.mu.Lock()
		stream := slices.Clone(tp.buf)
		tp.mu.Unlock()
		var sent [][]byte
		sr := bin.NewStreamReader(bytes.NewReader(stream))
		for {
			f, err := sr.Next()
			if err != nil {
				break
			}
			p, _ := bin.Parse(f)
			if p.Capability == wire.CapExtra && (wire.Type(p.Type) == wire.TypeSync || wire.Type(p.Type) == wire.TypeSyncEnd) {
				sent = append(sent, slices.Clone(f))
			}
		}
		require.Len(t, sent, len(frames))
		for i := range frames {
			require.Equal(t, hex.EncodeToString(frames[i]), hex.EncodeToString(sent[i]), "packet %d", i)
		}
	})
}
