package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
)

// Scenario 6: full capability sync (issue 5, item 7). The donor holds a
// large data set and keeps replicating updates while a joiner started
// with RequireSync pulls everything; the joiner's data set must then
// equal the donor's (digest), with no record received twice. Baseline:
// the same records shipped as length-prefixed frames over one raw TCP
// connection, in the same run.

const (
	portSync = 27600
	syncCap  = "bench-sync"
	// Packet types of the capability's ordinary packets.
	typeUpdate = 1 // body: key || value
	typeFence  = 2 // the update stream stopped; everything before it was sent
)

type syncOptions struct {
	records    int     // initial records on the donor
	recordSize int     // bytes per record, key included
	keyLen     int     // bytes of the key at the start of each record
	updateRate float64 // updates per second on the donor during the sync
	insertFrac float64 // fraction of the updates that insert a new key
	rounds     int     // syncs, each to a new joiner
	raws       int     // raw baselines, run before the first and after each sync round
	packetMax  int     // Config.SyncPacketMaxSize (0: default)
	cpuProfile string  // profile of the sync rounds only
}

// entry is a stored value; gen is the sync session that last wrote it by
// a sync record (0: not written by a sync), to count duplicates.
type entry struct {
	val []byte
	gen uint32
}

// kvStore is a sharded map, as a host module would keep its data.
type kvStore struct {
	shards [256]struct {
		mu sync.Mutex
		m  map[string]entry
	}
}

func newStore(hint int) *kvStore {
	s := &kvStore{}
	for i := range s.shards {
		s.shards[i].m = make(map[string]entry, hint/len(s.shards))
	}
	return s
}

func shardOf(key []byte) uint8 {
	// FNV-1a over the key.
	h := uint32(2166136261)
	for _, c := range key {
		h = (h ^ uint32(c)) * 16777619
	}
	return uint8(h ^ h>>8 ^ h>>16 ^ h>>24)
}

func (s *kvStore) put(key string, e entry) {
	sh := &s.shards[shardOf([]byte(key))]
	sh.mu.Lock()
	sh.m[key] = e
	sh.mu.Unlock()
}

func (s *kvStore) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

type kvPair struct {
	key string
	val []byte
}

// each calls fn for every pair, one shard at a time: it copies the
// shard's pairs under the lock (values are never changed in place, an
// update replaces the slice) and calls fn without it, so updates go on
// meanwhile.
func (s *kvStore) each(fn func(key string, val []byte) error) error {
	var pairs []kvPair
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		pairs = pairs[:0]
		for k, e := range sh.m {
			pairs = append(pairs, kvPair{k, e.val})
		}
		sh.mu.Unlock()
		for _, p := range pairs {
			if err := fn(p.key, p.val); err != nil {
				return err
			}
		}
	}
	return nil
}

// storeDigest is an order-independent digest of a data set: the count,
// and the sum and the XOR of the first 16 bytes of SHA-256(key || value)
// of every pair.
type storeDigest struct {
	count    int
	sum, xor uint64
}

func (d storeDigest) String() string {
	return fmt.Sprintf("%d pairs, sum %016x, xor %016x", d.count, d.sum, d.xor)
}

func (s *kvStore) digest() storeDigest {
	var d storeDigest
	h := sha256.New()
	var out [sha256.Size]byte
	_ = s.each(func(k string, v []byte) error {
		h.Reset()
		io.WriteString(h, k)
		h.Write(v)
		sum := h.Sum(out[:0])
		d.count++
		d.sum += binary.LittleEndian.Uint64(sum[:8])
		d.xor ^= binary.LittleEndian.Uint64(sum[8:16])
		return nil
	})
	return d
}

// diff counts the keys only in s, only in o, and in both with other
// values (for the report when the digests differ).
func (s *kvStore) diff(o *kvStore) (onlyS, onlyO, differ int) {
	for i := range s.shards {
		a, b := &s.shards[i], &o.shards[i]
		a.mu.Lock()
		b.mu.Lock()
		for k, e := range a.m {
			if f, ok := b.m[k]; !ok {
				onlyS++
			} else if string(f.val) != string(e.val) {
				differ++
			}
		}
		for k := range b.m {
			if _, ok := a.m[k]; !ok {
				onlyO++
			}
		}
		b.mu.Unlock()
		a.mu.Unlock()
	}
	return
}

func fillValue(v []byte, rng *rand.Rand) {
	for i := 0; i < len(v); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(v[i:], w[:])
	}
}

func keyOf(i, keyLen int) string {
	return fmt.Sprintf("k%0*d", keyLen-1, i)
}

// --- the donor's handler ---

type syncDonor struct {
	st      *kvStore
	keyLen  int
	recSize int
	began   atomic.Int64 // unix ns of the last WriteSync call
}

func (d *syncDonor) HandlePacket(clusterer.Packet) {}
func (d *syncDonor) HandleEvent(clusterer.Event)   {}

func (d *syncDonor) WriteSync(w *clusterer.SyncWriter) error {
	d.began.Store(time.Now().UnixNano())
	rec := make([]byte, 0, d.recSize)
	return d.st.each(func(k string, v []byte) error {
		rec = append(append(rec[:0], k...), v...)
		return w.Write(rec)
	})
}

// --- the joiner's handler ---

type syncJoiner struct {
	st     *kvStore
	keyLen int

	// The capability's goroutine only (HandleSyncRecord, HandlePacket and
	// HandleEvent are all called from it, in order).
	gen                  uint32 // sync session (SyncStarted events seen)
	recs                 int    // records of the current session
	dups                 int    // records of the current session for a key it already sent
	outside              int    // records outside any session
	packets              int    // updates applied (directly or after the sync)
	started, first, last time.Time

	mu             sync.Mutex
	sessions       []joinSession
	outsideAtFence int
	packetsAtFence int
	done           chan struct{} // closed at the first SyncDone
	fence          chan struct{}
}

type joinSession struct {
	started, first, last, done time.Time
	records, dups              int
	err                        error
}

func newSyncJoiner(keyLen, hint int) *syncJoiner {
	return &syncJoiner{st: newStore(hint), keyLen: keyLen, done: make(chan struct{}), fence: make(chan struct{})}
}

func (j *syncJoiner) HandleSyncRecord(r clusterer.SyncRecord) {
	if j.gen == 0 {
		j.outside++
	}
	j.last = time.Now()
	if j.recs == 0 {
		j.first = j.last
	}
	j.recs++
	if len(r.Data) < j.keyLen {
		panic(fmt.Sprintf("sync record of %d bytes", len(r.Data)))
	}
	sh := &j.st.shards[shardOf(r.Data[:j.keyLen])]
	key := string(r.Data[:j.keyLen])
	sh.mu.Lock()
	if e, ok := sh.m[key]; ok && e.gen == j.gen {
		j.dups++
	}
	// The record's data belongs to the handler: keep the value in place.
	sh.m[key] = entry{val: r.Data[j.keyLen:], gen: j.gen}
	sh.mu.Unlock()
}

func (j *syncJoiner) HandlePacket(p clusterer.Packet) {
	switch p.Type {
	case typeUpdate:
		if len(p.Body) < j.keyLen {
			panic(fmt.Sprintf("update of %d bytes", len(p.Body)))
		}
		sh := &j.st.shards[shardOf(p.Body[:j.keyLen])]
		sh.mu.Lock()
		sh.m[string(p.Body[:j.keyLen])] = entry{val: p.Body[j.keyLen:]}
		sh.mu.Unlock()
		j.packets++
	case typeFence:
		j.mu.Lock()
		j.packetsAtFence, j.outsideAtFence = j.packets, j.outside
		j.mu.Unlock()
		close(j.fence) // sent once
	}
}

func (j *syncJoiner) HandleEvent(e clusterer.Event) {
	if e.Capability != syncCap {
		return
	}
	now := time.Now()
	switch e.Kind {
	case clusterer.SyncStarted:
		j.gen++
		j.recs, j.dups = 0, 0
		j.started, j.first, j.last = now, time.Time{}, time.Time{}
	case clusterer.SyncDone, clusterer.SyncFailed:
		j.mu.Lock()
		j.sessions = append(j.sessions, joinSession{started: j.started, first: j.first, last: j.last, done: now,
			records: j.recs, dups: j.dups, err: e.Err})
		first := e.Kind == clusterer.SyncDone && !slices.ContainsFunc(j.sessions[:len(j.sessions)-1],
			func(s joinSession) bool { return s.err == nil })
		j.mu.Unlock()
		if first {
			close(j.done)
		}
	}
}

// --- the update stream ---

type updater struct {
	c          *clusterer.Cluster
	st         *kvStore
	keyLen     int
	valLen     int
	rate       float64
	insertFrac float64
	rng        *rand.Rand
	nextKey    int // next new key

	stop    chan struct{}
	wg      sync.WaitGroup
	applied atomic.Int64 // read while it runs
	n       updateCounts // the updater goroutine's; read after stop
}

type updateCounts struct {
	applied, sent, noDest, queueFull, otherErr int
	maxStall                                   time.Duration
	firstErr                                   error
}

// run applies and replicates updates at the rate until stop; it is the
// only writer of the donor's store, so replicated updates leave in the
// order they were applied. A send refused with a full queue (the sync
// shares the connection) is retried until taken, so that no update is
// lost; with no reachable node there is nobody to replicate to.
func (u *updater) run() {
	defer u.wg.Done()
	begin := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-tick.C:
		}
		due := int(time.Since(begin).Seconds() * u.rate)
		for u.n.applied < due {
			u.one()
			select {
			case <-u.stop:
				return
			default:
			}
		}
	}
}

func (u *updater) one() {
	var key string
	if u.rng.Float64() < u.insertFrac {
		key = keyOf(u.nextKey, u.keyLen)
		u.nextKey++
	} else {
		key = keyOf(u.rng.IntN(u.nextKey), u.keyLen)
	}
	val := make([]byte, u.valLen)
	fillValue(val, u.rng)
	u.st.put(key, entry{val: val})
	u.n.applied++
	u.applied.Add(1)
	b := bin.NewBuilder(1, syncCap, typeUpdate)
	b.PushRaw(append([]byte(key), val...))
	frame, err := b.Finish()
	if err == nil {
		var p bin.Packet
		if p, err = bin.Parse(frame); err == nil {
			err = u.send(p)
		}
	}
	if err != nil && u.n.firstErr == nil {
		u.n.firstErr = err
	}
}

// send replicates p, retrying while the queue is full.
func (u *updater) send(p bin.Packet) error {
	t0 := time.Now()
	defer func() { u.n.maxStall = max(u.n.maxStall, time.Since(t0)) }()
	for {
		err := u.c.SendAll(benchCluster, p)
		switch {
		case err == nil:
			u.n.sent++
			return nil
		case errors.Is(err, clusterer.ErrDestDown):
			u.n.noDest++
			return nil
		case errors.Is(err, clusterer.ErrQueueFull):
			u.n.queueFull++
			if time.Since(t0) > 10*time.Second {
				u.n.otherErr++
				return err
			}
			time.Sleep(50 * time.Microsecond)
		default:
			u.n.otherErr++
			return err
		}
	}
}

// --- the scenario ---

func runSync(o syncOptions, rep *report) error {
	section("6. full sync: joiner pulls the donor's data set while it replicates updates")
	if o.recordSize <= o.keyLen {
		return fmt.Errorf("record size %d must exceed the key length %d", o.recordSize, o.keyLen)
	}
	valLen := o.recordSize - o.keyLen
	pmax := o.packetMax
	if pmax == 0 {
		pmax = clusterer.DefaultSyncPacketMaxSize
	}
	fmt.Printf("%d records of %d B (%d B key + %d B value) = %.1f MB; %.0f updates/s on the donor (%.0f%% new keys) during each sync; "+
		"SyncPacketMaxSize %d; %d round(s); GOMAXPROCS=%d\n",
		o.records, o.recordSize, o.keyLen, valLen, float64(o.records)*float64(o.recordSize)/1e6, o.updateRate, 100*o.insertFrac,
		pmax, o.rounds, runtime.GOMAXPROCS(0))

	// The donor's data set.
	t := time.Now()
	donorSt := newStore(o.records * 11 / 10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range o.records {
		v := make([]byte, valLen)
		fillValue(v, rng)
		donorSt.put(keyOf(i, o.keyLen), entry{val: v})
	}
	fmt.Printf("donor's store filled in %v\n", time.Since(t).Round(time.Millisecond))

	var raws, rawStores []rawShipResult
	raw := func() error {
		for range o.raws {
			r, err := rawShip(donorSt, o.recordSize, o.keyLen, nil)
			if err != nil {
				return fmt.Errorf("raw TCP baseline: %w", err)
			}
			raws = append(raws, r)
			fmt.Printf("  raw TCP        : %d frames, %.1f MB in %v = %.0f records/s (%.0f MB/s)\n",
				r.frames, float64(r.bytes)/1e6, r.elapsed.Round(time.Millisecond), r.rate(), float64(r.bytes)/1e6/r.elapsed.Seconds())
			into := newStore(o.records * 11 / 10)
			r, err = rawShip(donorSt, o.recordSize, o.keyLen, into)
			if err != nil {
				return fmt.Errorf("raw TCP baseline into a store: %w", err)
			}
			rawStores = append(rawStores, r)
			fmt.Printf("  raw TCP + store: %d frames, %.1f MB in %v = %.0f records/s (%.0f MB/s)\n",
				r.frames, float64(r.bytes)/1e6, r.elapsed.Round(time.Millisecond), r.rate(), float64(r.bytes)/1e6/r.elapsed.Seconds())
			runtime.GC() // the next measurement does not pay for this one's garbage
		}
		return nil
	}
	if err := raw(); err != nil {
		return err
	}

	// The donor, and one joiner id per round. Every node is provisioned
	// with all of them: with Provisioned set a node drops, as OpenSIPS
	// does, a whole CAP_UPDATE that names a node it does not know, so a
	// joiner that did not know an earlier one would never learn the
	// donor's capability.
	tm := timing{pingInterval: time.Second, pingTimeout: time.Second, nodeTimeout: 5 * time.Second}
	ids := []int{1}
	for r := range o.rounds {
		ids = append(ids, 2+r)
	}
	dcfg := nodeConfig(1, ids, portSync, nil, tm)
	dcfg.SyncPacketMaxSize = o.packetMax
	donor, err := clusterer.New(dcfg)
	if err != nil {
		return err
	}
	dh := &syncDonor{st: donorSt, keyLen: o.keyLen, recSize: o.recordSize}
	if err := donor.RegisterCapability(clusterer.CapabilityConfig{Name: syncCap, Cluster: benchCluster}, dh); err != nil {
		donor.Close()
		return err
	}
	if donor, err = startWith(donor); err != nil {
		return err
	}
	defer donor.Close()

	var results []syncRoundResult
	for r := range o.rounds {
		res, err := syncRound(o, donor, dh, ids, 2+r, valLen)
		if err != nil {
			return fmt.Errorf("round %d: %w", r+1, err)
		}
		results = append(results, res)
		res.print(r + 1)
		if err := raw(); err != nil {
			return err
		}
	}

	rates := func(rs []rawShipResult) []float64 {
		out := make([]float64, len(rs))
		for i, r := range rs {
			out[i] = r.rate()
		}
		return out
	}
	rawMed, rawStoreMed := medianF(rates(raws)), medianF(rates(rawStores))
	ok := true
	var fromStart, fromSync, fromServe []float64
	for _, res := range results {
		fromStart = append(fromStart, res.rateFromStart())
		fromSync = append(fromSync, res.rateFromSyncStarted())
		fromServe = append(fromServe, res.rateFromServe())
		ok = ok && res.correct()
	}
	fs, fy, fd := medianF(fromStart), medianF(fromSync), medianF(fromServe)
	fmt.Printf("medians of %d sync(s) and %d raw baselines of each kind:\n", len(results), len(raws))
	fmt.Printf("  raw TCP baseline                 : %10.0f records/s\n", rawMed)
	fmt.Printf("  raw TCP + store (context)        : %10.0f records/s\n", rawStoreMed)
	fmt.Printf("  sync, Start -> SyncDone          : %10.0f records/s = %5.1f%% of raw (%5.1f%% of raw + store)  target >= 100000: %s\n",
		fs, 100*fs/rawMed, 100*fs/rawStoreMed, verdict(fs >= 100000))
	fmt.Printf("  sync, SyncStarted -> SyncDone    : %10.0f records/s = %5.1f%% of raw (%5.1f%% of raw + store)  target >= 100000: %s\n",
		fy, 100*fy/rawMed, 100*fy/rawStoreMed, verdict(fy >= 100000))
	fmt.Printf("  sync, donor's WriteSync -> Done  : %10.0f records/s = %5.1f%% of raw (%5.1f%% of raw + store)\n",
		fd, 100*fd/rawMed, 100*fd/rawStoreMed)
	fmt.Printf("  data sets equal by digest, no duplicate, one session each: %s\n", verdict(ok))
	rep.add("sync         %d x %d B, %.0f updates/s: Start->SyncDone %.0f records/s, SyncStarted->SyncDone %.0f records/s "+
		"(target >= 100000: %s); data phase %.0f records/s; raw TCP %.0f records/s (+store %.0f): SyncStarted->SyncDone = %.1f%% of raw, "+
		"data phase = %.1f%% of raw; digest equal, 0 duplicates: %s",
		o.records, o.recordSize, o.updateRate, fs, fy, verdict(fs >= 100000 && fy >= 100000), fd, rawMed, rawStoreMed,
		100*fy/rawMed, 100*fd/rawMed, verdict(ok))
	if !ok {
		return errors.New("the joiner's data set differs from the donor's, or records were duplicated (see above)")
	}
	return nil
}

type syncRoundResult struct {
	records       int
	start         time.Time // joiner's Start called
	served        time.Time // the donor's WriteSync began (last session)
	settled       time.Duration
	linked        time.Duration
	sessions      []joinSession
	progress      clusterer.SyncProgress
	up            updateCounts
	duringSync    int // updates applied between Start and SyncDone
	donorDigest   storeDigest
	joinerDigest  storeDigest
	onlyD, onlyJ  int
	differ        int
	outside       int
	packets       int
	fenceWait     time.Duration
	jstats, dstat clusterer.Stats
}

func (r syncRoundResult) done() joinSession { return r.sessions[len(r.sessions)-1] }

func (r syncRoundResult) rateFromStart() float64 {
	s := r.done()
	return float64(s.records) / s.done.Sub(r.start).Seconds()
}

func (r syncRoundResult) rateFromSyncStarted() float64 {
	s := r.done()
	return float64(s.records) / s.done.Sub(s.started).Seconds()
}

// rateFromServe: from the donor's WriteSync call to SyncDone, the data
// phase without the time the donor took to see the joiner reachable.
func (r syncRoundResult) rateFromServe() float64 {
	s := r.done()
	return float64(s.records) / s.done.Sub(r.served).Seconds()
}

func (r syncRoundResult) correct() bool {
	d := r.done()
	return len(r.sessions) == 1 && d.err == nil && d.dups == 0 && r.outside == 0 &&
		r.donorDigest == r.joinerDigest && r.onlyD+r.onlyJ+r.differ == 0 && r.up.otherErr == 0 && r.up.firstErr == nil
}

func (r syncRoundResult) print(round int) {
	d := r.done()
	fmt.Printf("round %d (joiner started once the donor had its link to it Down, after %s):\n", round, ms(r.settled))
	for i, s := range r.sessions {
		fmt.Printf("  session %d: %d records, %d duplicates, err %v; SyncStarted +%s, first record +%s, last +%s, end +%s\n",
			i+1, s.records, s.dups, s.err, ms(s.started.Sub(r.start)), ms(s.first.Sub(r.start)), ms(s.last.Sub(r.start)), ms(s.done.Sub(r.start)))
	}
	fmt.Printf("  Start -> SyncDone       : %8s  %10.0f records/s\n", ms(d.done.Sub(r.start)), r.rateFromStart())
	fmt.Printf("  SyncStarted -> SyncDone : %8s  %10.0f records/s\n", ms(d.done.Sub(d.started)), r.rateFromSyncStarted())
	fmt.Printf("  WriteSync -> SyncDone   : %8s  %10.0f records/s (the donor's WriteSync ran from +%s: it serves once it sees the joiner reachable)\n",
		ms(d.done.Sub(r.served)), r.rateFromServe(), ms(r.served.Sub(r.start)))
	if !d.first.IsZero() {
		fmt.Printf("  first -> last record    : %8s  %10.0f records/s (SyncStatus: %d records, %.1f MB, elapsed %s)\n",
			ms(d.last.Sub(d.first)), float64(d.records)/d.last.Sub(d.first).Seconds(), r.progress.Records,
			float64(r.progress.Bytes)/1e6, ms(r.progress.Elapsed))
	}
	fmt.Printf("  link up after %s; updates: %d applied on the donor (%d while the sync ran), %d replicated, %d with nobody to send to, "+
		"%d queue-full retries, longest send %s, errors %d %v\n",
		ms(r.linked), r.up.applied, r.duringSync, r.up.sent, r.up.noDest, r.up.queueFull, ms(r.up.maxStall), r.up.otherErr, r.up.firstErr)
	fmt.Printf("  joiner applied %d updates (fence after %s); records outside a session %d\n", r.packets, ms(r.fenceWait), r.outside)
	fmt.Printf("  donor : %s\n  joiner: %s\n", r.donorDigest, r.joinerDigest)
	fmt.Printf("  digest equal: %v; keys only on the donor %d, only on the joiner %d, different values %d; duplicate sync records %d\n",
		r.donorDigest == r.joinerDigest, r.onlyD, r.onlyJ, r.differ, d.dups)
	fmt.Printf("  joiner: %d SYNC frames received, SyncLost %d, SyncStale %d, SyncOverflow %d, handler drops %d; donor: %d SYNC frames sent, "+
		"%d write batches, queue drops %d\n",
		r.jstats.SyncFramesReceived, r.jstats.SyncLost, r.jstats.SyncStale, r.jstats.SyncOverflow, r.jstats.HandlerDrops,
		r.dstat.SyncFramesSent, r.dstat.WriteBatches, r.dstat.QueueDrops)
}

func syncRound(o syncOptions, donor *clusterer.Cluster, dh *syncDonor, ids []int, id, valLen int) (syncRoundResult, error) {
	var res syncRoundResult
	donorSt := dh.st
	tm := timing{pingInterval: time.Second, pingTimeout: time.Second, nodeTimeout: 5 * time.Second}
	jcfg := nodeConfig(id, ids, portSync, nil, tm)
	j := newSyncJoiner(o.keyLen, o.records*11/10)
	joiner, err := clusterer.New(jcfg)
	if err != nil {
		return res, err
	}
	defer joiner.Close()
	if err := joiner.RegisterCapability(clusterer.CapabilityConfig{Name: syncCap, Cluster: benchCluster, RequireSync: true}, j); err != nil {
		return res, err
	}
	// A node joins a cluster that has been running: wait until the donor
	// has given the absent joiner up (link Down). A joiner that starts
	// while the donor still probes it waits for that probe cycle (about
	// a ping timeout) before the donor sees it and serves it.
	t := time.Now()
	if !waitFor(20*time.Second, 10*time.Millisecond, func() bool {
		st, ok := donor.Node(benchCluster, id)
		return ok && st.Link == clusterer.LinkIsDown
	}) {
		return res, fmt.Errorf("the donor's link to the absent node %d is not Down after 20 s", id)
	}
	res.settled = time.Since(t)
	d0 := donor.Stats()

	up := &updater{c: donor, st: donorSt, keyLen: o.keyLen, valLen: valLen, rate: o.updateRate, insertFrac: o.insertFrac,
		rng: rand.New(rand.NewPCG(uint64(id), 7)), nextKey: donorSt.len(), stop: make(chan struct{})}
	up.wg.Add(1)
	go up.run()
	stopUpdates := sync.OnceFunc(func() { close(up.stop); up.wg.Wait() })
	defer stopUpdates()
	time.Sleep(200 * time.Millisecond) // the stream is running before the joiner starts

	var linked atomic.Int64 // ns from Start to the joiner's link UP to the donor
	unsub := joiner.Subscribe(0, func(e clusterer.Event) {
		if e.Kind == clusterer.LinkUp && e.Node == 1 {
			linked.CompareAndSwap(0, int64(time.Since(res.start)))
		}
	})
	defer unsub()
	stopProf := func() {}
	if o.cpuProfile != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", o.cpuProfile, id-1))
		if err != nil {
			return res, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return res, err
		}
		stopProf = sync.OnceFunc(func() { pprof.StopCPUProfile(); f.Close() })
		defer stopProf()
	}
	appliedAtStart := up.applied.Load()
	res.start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = joiner.Start(ctx)
	cancel()
	if err != nil {
		return res, fmt.Errorf("joiner: %w", err)
	}
	select {
	case <-j.done:
	case <-time.After(5 * time.Minute):
		return res, errors.New("no SyncDone within 5 minutes")
	}
	stopProf()
	res.linked = time.Duration(linked.Load())
	res.served = time.Unix(0, dh.began.Load())
	res.duringSync = int(up.applied.Load() - appliedAtStart)
	time.Sleep(200 * time.Millisecond) // the stream goes on past the end
	stopUpdates()
	res.up = up.n

	// Drain: the fence follows every update on the same connection.
	fenceAt := time.Now()
	fb := bin.NewBuilder(1, syncCap, typeFence)
	frame, err := fb.Finish()
	if err != nil {
		return res, err
	}
	fp, err := bin.Parse(frame)
	if err != nil {
		return res, err
	}
	for {
		err := donor.SendTo(benchCluster, id, fp)
		if err == nil {
			break
		}
		if !errors.Is(err, clusterer.ErrQueueFull) || time.Since(fenceAt) > 10*time.Second {
			return res, fmt.Errorf("fence: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-j.fence:
	case <-time.After(30 * time.Second):
		return res, errors.New("the fence did not arrive within 30 s")
	}
	res.fenceWait = time.Since(fenceAt)
	res.progress, _ = joiner.SyncStatus(benchCluster, syncCap)
	res.jstats, res.dstat = joiner.Stats(), donor.Stats()
	res.dstat.SyncFramesSent -= d0.SyncFramesSent
	res.dstat.WriteBatches -= d0.WriteBatches
	res.dstat.QueueDrops -= d0.QueueDrops

	// The joiner's goroutine is idle now (the fence was its last packet).
	j.mu.Lock()
	res.sessions = slices.Clone(j.sessions)
	res.packets, res.outside = j.packetsAtFence, j.outsideAtFence
	j.mu.Unlock()
	res.donorDigest = donorSt.digest()
	res.joinerDigest = j.st.digest()
	if res.donorDigest != res.joinerDigest {
		res.onlyD, res.onlyJ, res.differ = donorSt.diff(j.st)
	}
	return res, nil
}

// rawShipResult is one raw-TCP shipping of the data set.
type rawShipResult struct {
	frames  int
	bytes   int64
	elapsed time.Duration
}

func (r rawShipResult) rate() float64 { return float64(r.frames) / r.elapsed.Seconds() }

// rawShip is the baseline: the donor's records, read from its store as
// the donor's WriteSync does, as length-prefixed frames on one loopback
// TCP connection (64 KiB bufio.Writer, flushed at the end); the receiver
// reads each frame through a 64 KiB bufio.Reader. Timed from the dial to
// the receiver's last frame. With into set, the receiver also keeps each
// record (copied into 64 KiB chunks, as the library's receive path copies
// packets) in that store, as the joiner's handler does: what a hand-made
// transfer of the same data set into the same store costs.
func rawShip(st *kvStore, recSize, keyLen int, into *kvStore) (rawShipResult, error) {
	var res rawShipResult
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer ln.Close()
	type recvResult struct {
		frames int
		bytes  int64
		end    time.Time
		err    error
	}
	recvDone := make(chan recvResult, 1)
	go func() {
		var r recvResult
		defer func() { recvDone <- r }()
		c, err := ln.Accept()
		if err != nil {
			r.err = err
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 64<<10)
		var hdr [4]byte
		buf := make([]byte, 64<<10)
		var chunk []byte
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				if err != io.EOF {
					r.err = err
				}
				r.end = time.Now()
				return
			}
			n := int(binary.LittleEndian.Uint32(hdr[:]))
			if n > len(buf) || into != nil && n < keyLen {
				r.err = fmt.Errorf("bad frame length %d", n)
				return
			}
			rec := buf[:n]
			if into != nil {
				if len(chunk) < n {
					chunk = make([]byte, 64<<10)
				}
				rec, chunk = chunk[:n:n], chunk[n:]
			}
			if _, err := io.ReadFull(br, rec); err != nil {
				r.err = err
				return
			}
			if into != nil {
				sh := &into.shards[shardOf(rec[:keyLen])]
				sh.mu.Lock()
				sh.m[string(rec[:keyLen])] = entry{val: rec[keyLen:]}
				sh.mu.Unlock()
			}
			r.frames++
			r.bytes += int64(n)
		}
	}()
	t0 := time.Now()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return res, err
	}
	bw := bufio.NewWriterSize(conn, 64<<10)
	rec := make([]byte, 4, 4+recSize)
	werr := st.each(func(k string, v []byte) error {
		rec = append(append(rec[:4], k...), v...)
		binary.LittleEndian.PutUint32(rec, uint32(len(rec)-4))
		_, err := bw.Write(rec)
		return err
	})
	if werr == nil {
		werr = bw.Flush()
	}
	conn.Close()
	r := <-recvDone
	if werr != nil {
		return res, werr
	}
	if r.err != nil {
		return res, r.err
	}
	res.frames, res.bytes, res.elapsed = r.frames, r.bytes, r.end.Sub(t0)
	return res, nil
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
