package clusterer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/peer"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// Full data sync (OpenSIPS's capability sync, spec §10). A node that
// starts empty asks a synced donor for the whole data set of a capability;
// the donor's handler writes its records to a SyncWriter, which packs them
// into SYNC packets (one record per chunk, as OpenSIPS modules do) and ends
// with SYNC_END and the record count; the joiner's handler receives the
// records in order, while ordinary packets of the capability that arrive
// meanwhile, and node events, wait in a bounded buffer and are delivered
// after the last record in the order they came. Then the capability is
// synced and says so to the cluster.

// Errors of the sync layer. Sync failures reach the handler as SyncFailed
// events whose Err wraps one of them.
var (
	// ErrUnknownCapability: no such capability is registered here.
	ErrUnknownCapability = errors.New("clusterer: unknown capability")
	// ErrCapabilityDisabled: the capability is disabled
	// (SetCapabilityEnabled).
	ErrCapabilityDisabled = errors.New("clusterer: capability disabled")
	// ErrSyncTimeout: a sync received nothing for Config.SyncTimeout.
	ErrSyncTimeout = errors.New("clusterer: sync timed out")
	// ErrDonorDown: the donor became unreachable during the sync.
	ErrDonorDown = errors.New("clusterer: sync donor unreachable")
	// ErrSyncOverflow: more ordinary packets arrived during the sync than
	// CapabilityConfig.SyncBuffer holds, or the handler fell so far
	// behind that sync data could not be queued. The sync is repeated.
	ErrSyncOverflow = errors.New("clusterer: sync buffer overflow")
	// ErrSyncIncomplete: SYNC_END announced another number of records
	// than arrived. The sync is repeated.
	ErrSyncIncomplete = errors.New("clusterer: sync incomplete")
	// ErrSyncRestarted: a new sync was requested while one was running.
	ErrSyncRestarted = errors.New("clusterer: sync restarted")
	// ErrSyncAborted: the donor's stream ended early (the requester
	// became unreachable, the node is closing, or the handler failed).
	ErrSyncAborted = errors.New("clusterer: sync aborted")
	// ErrRecordTooLarge: a sync record does not fit in one BIN packet.
	ErrRecordTooLarge = errors.New("clusterer: sync record too large")
)

var coreSyncErrs = map[error]error{
	core.ErrSyncTimeout: ErrSyncTimeout, core.ErrDonorDown: ErrDonorDown,
	core.ErrCapDisabled: ErrCapabilityDisabled, core.ErrSyncRestarted: ErrSyncRestarted,
	core.ErrUnknownCapability: ErrUnknownCapability,
}

func mapSyncErr(err error) error {
	for ce, pe := range coreSyncErrs {
		if errors.Is(err, ce) {
			if err == ce {
				return pe
			}
			// The core's detail (a name, a cluster) after the public
			// sentinel, without the core's own wording of the same error.
			return fmt.Errorf("%w%s", pe, strings.TrimPrefix(err.Error(), ce.Error()))
		}
	}
	return err
}

// DonorCondition restricts which nodes may donate a capability's data
// (OpenSIPS's sync_cond).
type DonorCondition int

// Donor conditions.
const (
	DonorAny          DonorCondition = iota // any synced node
	DonorSameSIPAddr                        // only nodes with the local node's SIP address
	DonorOtherSIPAddr                       // only nodes with another SIP address
)

// CapabilityStatus is a capability's state on one node.
type CapabilityStatus int

// Capability states, as OpenSIPS's clusterer_list_cap reports them.
const (
	NotSynced CapabilityStatus = iota
	SyncPending
	SyncInProgress
	Synced
	CapabilityDisabled
)

func (s CapabilityStatus) String() string {
	switch s {
	case NotSynced:
		return "not synced"
	case SyncPending:
		return "sync pending"
	case SyncInProgress:
		return "sync in progress"
	case Synced:
		return "synced"
	case CapabilityDisabled:
		return "disabled"
	}
	return fmt.Sprintf("CapabilityStatus(%d)", int(s))
}

// SyncRecord is one record of a full sync (a chunk on the wire).
type SyncRecord struct {
	Cluster int
	Src     int // the donor
	// Version is the donor's data version (CapabilityConfig.DataVersion;
	// OpenSIPS modules send their BIN version).
	Version int16
	// Data is the record as the donor wrote it; it belongs to the handler.
	Data []byte
}

// Reader returns a reader over the record, for OpenSIPS modules' fields.
func (r SyncRecord) Reader() bin.Reader { return bin.NewReader(r.Data) }

// Decode unmarshals a record written with SyncWriter.WriteValue.
func (r SyncRecord) Decode(v any) error {
	if err := bin.DecodeValue(r.Data, v); err != nil {
		return fmt.Errorf("%w: %w", ErrPayload, err)
	}
	return nil
}

// SyncReceiver is implemented by handlers of capabilities that receive
// full syncs. HandleSyncRecord is called in order, from the capability's
// goroutine, before any packet or node event (NodeUp, NodeDown) that
// arrived during the sync, so that a NodeDown during the sync comes after
// the records and the node's own held-back packets: a handler dropping a
// node's data at its NodeDown is not undone by them.
//
// Packets are held back from the moment the sync is requested, so every
// update the donor sent after the records it changed is applied after
// them. An update that reached this node before the request and the
// donor only later (it came from a third node) can still be overwritten
// by the donor's older record: hosts whose data is written on several
// nodes should stamp records (owner, version) and keep the newest, as
// examples/callcount does, or restrict donors (CapabilityConfig.Donor).
type SyncReceiver interface {
	HandleSyncRecord(r SyncRecord)
}

// SyncSource is implemented by handlers of capabilities that donate their
// data. WriteSync runs on a goroutine of its own for each requester and
// writes every record; a record written while the data changes is fine,
// as long as each change is also sent as an ordinary packet after it is
// applied (the joiner applies those after the sync). An error from a
// Write means the sync was abandoned; return it.
type SyncSource interface {
	WriteSync(w *SyncWriter) error
}

// SyncWriter packs a donor's records into SYNC packets for one requester.
// It is not safe for concurrent use.
type SyncWriter struct {
	c        *Cluster
	ctx      context.Context
	cluster  int32
	dst      int32
	capName  string
	version  int16
	maxSize  int
	b        bin.Builder
	buf      []byte
	open     bool
	prevSize int
	records  int
	bytes    int64
	err      error
}

// Node is the requester.
func (w *SyncWriter) Node() int { return int(w.dst) }

// Records is the number of records written so far.
func (w *SyncWriter) Records() int { return w.records }

// Write adds one record. Records are packed into packets of about
// Config.SyncPacketMaxSize bytes; a full packet is queued for sending,
// waiting while the requester's queue is full.
func (w *SyncWriter) Write(rec []byte) error {
	if w.err != nil {
		return w.err
	}
	need := wire.ChunkOverhead + len(rec)
	if w.open && (w.b.Len()+w.prevSize > w.maxSize || w.b.Len()+need+bin.TrailerLen > bin.MaxSendLen) {
		// OpenSIPS's packing rule (spec §10.4), plus the hard bound.
		if err := w.flush(); err != nil {
			return err
		}
	}
	if !w.open {
		w.start()
		if w.b.Len()+need+bin.TrailerLen > bin.MaxSendLen {
			w.open = false
			return fmt.Errorf("%w: %d bytes", ErrRecordTooLarge, len(rec))
		}
	}
	w.b.PushInt(int32(len(rec)))
	w.b.PushInt(wire.SyncChunkMarker)
	w.b.PushRaw(rec)
	w.prevSize = len(rec)
	w.records++
	w.bytes += int64(len(rec))
	return nil
}

// WriteValue adds one record holding v, msgpack-encoded (read it with
// SyncRecord.Decode).
func (w *SyncWriter) WriteValue(v any) error {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPayload, err)
	}
	return w.Write(b)
}

func (w *SyncWriter) start() {
	w.b.Reset(w.buf[:0], wire.SyncVersion, wire.CapExtra, int32(wire.TypeSync))
	w.b.PushStr(w.capName)
	w.b.PushInt(int32(w.version))
	w.open, w.prevSize = true, 0
}

// flush sends the open packet.
func (w *SyncWriter) flush() error {
	if !w.open {
		return nil
	}
	w.open = false
	w.b.PushTrailer(bin.Trailer{Cluster: w.cluster, Src: w.c.me, Dst: w.dst})
	frame, err := w.b.Finish()
	if err != nil {
		w.err = fmt.Errorf("%w: %w", ErrPacket, err)
		return w.err
	}
	w.buf = frame
	if err := w.c.sendSyncFrame(w.ctx, w.cluster, w.dst, frame); err != nil {
		w.err = err
	}
	return w.err
}

// end flushes and sends SYNC_END with the record count.
func (w *SyncWriter) end() error {
	if err := w.flush(); err != nil {
		return err
	}
	frame, err := (&wire.SyncEnd{Trailer: bin.Trailer{Cluster: w.cluster, Src: w.c.me, Dst: w.dst},
		Capability: w.capName, Chunks: int32(w.records)}).Append(nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPacket, err)
	}
	return w.c.sendSyncFrame(w.ctx, w.cluster, w.dst, frame)
}

// errSyncRoom: the hop's queue has no room for sync data now.
var errSyncRoom = fmt.Errorf("%w: sync data waits for room", peer.ErrQueueFull)

// sendSyncFrame queues a sync frame for dst through its current next hop,
// waiting while the hop's queue is full: a sync is bulk data, and pacing it
// to the network beats failing it. It gives up when ctx ends, after the
// sync timeout without room, and when dst stays unreachable for a ping
// timeout: a route that flaps while topology updates spread comes back
// sooner, and the requester, which may never have seen the donor down,
// would otherwise wait for its sync timeout to ask again.
func (c *Cluster) sendSyncFrame(ctx context.Context, cluster, dst int32, frame []byte) error {
	pause := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrSyncAborted, ctx.Err())
		case <-t.C:
			return nil
		}
	}
	wait := 50 * time.Microsecond
	var waited time.Duration
	var downSince time.Time
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrSyncAborted, err)
		}
		cv := c.view.Load().Cluster(cluster)
		n := cv.Node(dst)
		if cv == nil || !cv.Enabled || n == nil {
			return fmt.Errorf("%w: %w", ErrSyncAborted, ErrDestDown)
		}
		var hop *core.NodeView
		if n.Reachable {
			hop = cv.Node(n.NextHop)
		}
		if hop == nil {
			if downSince.IsZero() {
				downSince = time.Now()
			} else if time.Since(downSince) >= c.core.PingTimeout {
				return fmt.Errorf("%w: %w", ErrSyncAborted, ErrDestDown)
			}
			if err := pause(2 * time.Millisecond); err != nil {
				return err
			}
			continue
		}
		downSince = time.Time{}
		// Sync data takes at most half of the hop's queue, so the
		// capability's ordinary replication, sent meanwhile by the host,
		// still finds room (a full queue would refuse it).
		err := errSyncRoom
		if q, bound := c.peers.Queued(hop.Addr); q+len(frame) <= bound/2 || q == 0 {
			err = c.peers.Send(hop.Addr, frame)
		}
		if err == nil {
			c.act(cluster, hop.ID).sent.Add(1)
			c.stats.syncFramesSent.Add(1)
			return nil
		}
		if err != errSyncRoom && linkBroken(err) {
			c.enqueue(input{kind: inFailure, addr: hop.Addr})
			// The loop reroutes or declares dst down; try again then.
		}
		if waited > c.core.SyncTimeout {
			return fmt.Errorf("%w: %w", ErrSyncAborted, sendErr(err))
		}
		if err := pause(wait); err != nil {
			return err
		}
		waited += wait
		wait = min(wait*2, 5*time.Millisecond)
	}
}

// --- donor side ---

type donorKey struct {
	cap  capKey
	node int32
}

// donors runs the donor jobs: one at a time per capability and requester;
// a request arriving during a job runs again after it (the requester has
// given the first one up).
type donors struct {
	mu      sync.Mutex
	running map[donorKey]bool // value: run again when done
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func (d *donors) init() {
	d.running = map[donorKey]bool{}
	d.ctx, d.cancel = context.WithCancel(context.Background())
}

// serve starts (or schedules) a sync for node; loop only.
func (c *Cluster) serve(cp *capability, node int32) {
	d := &c.donors
	k := donorKey{cp.key, node}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx.Err() != nil {
		return
	}
	if _, busy := d.running[k]; busy {
		d.running[k] = true
		return
	}
	d.running[k] = false
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			c.donate(d.ctx, cp, node)
			d.mu.Lock()
			again := d.running[k] && d.ctx.Err() == nil
			if !again {
				delete(d.running, k)
				d.mu.Unlock()
				return
			}
			d.running[k] = false
			d.mu.Unlock()
		}
	}()
}

// donate streams one full sync to node.
func (c *Cluster) donate(ctx context.Context, cp *capability, node int32) {
	w := &SyncWriter{c: c, ctx: ctx, cluster: cp.key.cluster, dst: node, capName: cp.key.name,
		version: cp.cfg.DataVersion, maxSize: c.syncPacketMax, buf: make([]byte, 0, c.syncPacketMax+1024)}
	began := time.Now()
	var err error
	if src, ok := cp.handler.(SyncSource); ok {
		err = src.WriteSync(w)
	}
	if err == nil {
		err = w.end()
	}
	log := c.log.With(zap.Int("cluster", int(cp.key.cluster)), zap.String("capability", cp.key.name), zap.Int("peer", int(node)))
	if err != nil {
		c.stats.syncServeFailed.Add(1)
		log.Warn("sync to requester failed", zap.Int("records", w.records), zap.Error(err))
		return
	}
	c.stats.syncServed.Add(1)
	log.Info("sync sent", zap.Int("records", w.records), zap.Int64("bytes", w.bytes), zap.Duration("took", time.Since(began)))
}

// --- receiving side ---

// syncItem is SYNC data, SYNC_END or a control order for the capability's
// goroutine, which owns the receiving side of a sync.
type syncItem struct {
	op      syncOp
	src     int32
	version int16
	chunks  [][]byte
	total   int32
	err     error
	gen     uint64 // opCheck: the session it checks
}

type syncOp uint8

const (
	opData  syncOp = iota + 1 // SYNC
	opEnd                     // SYNC_END
	opAbort                   // the machine gave the session up
	opStart                   // the machine asked a donor: hold packets back from now on
	opCheck                   // SYNC_END came before all records: are they in now?
)

// syncEndGrace is how long records announced by SYNC_END may still arrive
// after it (reordered by a route change). Past it, the sync failed: a
// packet of it was lost (say, dropped by a relay that had no route yet),
// and waiting for the sync timeout would only delay the retry.
const syncEndGrace = time.Second

// syncRecv is the receiving state of a capability; fields without atomics
// belong to the capability's goroutine.
type syncRecv struct {
	active   bool
	donor    int32
	gotData  bool   // something of the session's stream arrived
	gen      uint64 // session number (receiving side)
	coreGen  uint64 // the machine's number of the session; 0 if it began unasked
	count    int64  // records received in the session
	total    int64  // announced by SYNC_END; -1 before it
	buffered []delivery
	// skip: donors whose abandoned stream is still arriving; their data
	// is dropped until their SYNC_END.
	skip map[int32]bool

	// Progress, read by SyncStatus and the loop.
	records, bytes atomic.Int64
	bufLen         atomic.Int64
	startNs        atomic.Int64 // unix ns of the session's first packet
	endNs          atomic.Int64 // unix ns when it ended (0: running)
	activity       atomic.Uint64
	donorID        atomic.Int32 // donor of the running session, 0 if none
	lost           atomic.Bool  // sync data could not be queued
	lastErr        atomic.Pointer[error]
	seen           uint64 // activity reported to the machine (loop only)
}

// onSync queues received SYNC or SYNC_END packets for the capability's
// goroutine (data plane).
func (c *Cluster) onSync(t bin.Trailer, msg wire.Message) {
	var name string
	var it syncItem
	switch m := msg.(type) {
	case *wire.Sync:
		name = m.Capability
		it = syncItem{op: opData, src: t.Src, version: int16(m.DataVersion), chunks: m.Chunks}
	case *wire.SyncEnd:
		name = m.Capability
		it = syncItem{op: opEnd, src: t.Src, total: m.Chunks}
	}
	cp := c.capability(t.Cluster, name)
	if cp == nil {
		c.stats.unknownCapability.Add(1)
		return
	}
	c.stats.syncFramesReceived.Add(1)
	// Sync data waits for room rather than being dropped: this blocks the
	// connection it came on, which paces the donor (TCP back-pressure). A
	// handler stuck for longer loses the sync, which is then repeated.
	if !cp.box.putWait(delivery{sync: &it}, c.core.SyncTimeout) {
		cp.recv.lost.Store(true)
		c.stats.syncLost.Add(1)
	}
}

func (c *Cluster) capability(cluster int32, name string) *capability {
	caps := c.capsSnap.Load()
	if caps == nil {
		return nil
	}
	return (*caps)[capKey{cluster, name}]
}

// handleSync runs on the capability's goroutine.
func (cp *capability) handleSync(it *syncItem) {
	r := &cp.recv
	switch it.op {
	case opStart:
		// Packets are held back from the request on, not only from the
		// first SYNC: the donor packs records before sending them, so an
		// update it sends meanwhile may overtake the record it changed,
		// and must still be applied after it.
		if r.active && r.donor == it.src {
			r.coreGen = it.gen // the machine's number for a session begun unasked
			return
		}
		if r.active {
			cp.endSession(ErrSyncRestarted, false)
		}
		cp.begin(it.src, false)
		r.coreGen = it.gen
	case opAbort:
		if r.active && (it.src == 0 || it.src == r.donor) {
			if r.gotData && !errors.Is(it.err, ErrDonorDown) {
				r.skip[r.donor] = true // the rest of its stream may still come
			}
			cp.endSession(it.err, false)
		}
	case opCheck:
		if r.active && r.gen == it.gen && r.total >= 0 && r.count < r.total {
			cp.endSession(fmt.Errorf("%w: %d of %d records arrived", ErrSyncIncomplete, r.count, r.total), true)
		}
	case opData:
		if r.skip[it.src] {
			cp.c.stats.syncStale.Add(1)
			return
		}
		if !r.active && !cp.begin(it.src, true) {
			// A synced capability applies data without a session (spec
			// §10.5); a disabled one takes none.
			if st := cp.c.localCapView(cp.key); st != nil && st.Status == core.CapSynced {
				cp.records(it)
			}
			return
		}
		if it.src != r.donor {
			cp.c.stats.syncStale.Add(1)
			return
		}
		r.gotData = true
		cp.records(it)
		r.count += int64(len(it.chunks))
		cp.checkEnd()
	case opEnd:
		if r.skip[it.src] {
			delete(r.skip, it.src)
			return
		}
		if !r.active && !cp.begin(it.src, true) {
			return
		}
		if it.src != r.donor {
			cp.c.stats.syncStale.Add(1)
			return
		}
		r.gotData = true
		r.total = int64(it.total)
		if r.count < r.total {
			gen := r.gen
			time.AfterFunc(syncEndGrace, func() { cp.box.force(delivery{sync: &syncItem{op: opCheck, gen: gen}}) })
		}
		cp.checkEnd()
	}
}

// begin starts a session from donor: asked for by the machine, or
// unasked, when data arrives for a capability that is not synced (then
// the machine hears of it).
func (cp *capability) begin(donor int32, unasked bool) bool {
	if unasked {
		st := cp.c.localCapView(cp.key)
		if st == nil || st.Status == core.CapDisabled || st.Status == core.CapSynced {
			return false
		}
	}
	r := &cp.recv
	r.active, r.donor, r.count, r.total, r.gotData = true, donor, 0, -1, false
	r.gen++
	r.coreGen = 0
	r.donorID.Store(donor)
	r.records.Store(0)
	r.bytes.Store(0)
	r.startNs.Store(time.Now().UnixNano())
	r.endNs.Store(0)
	r.lost.Store(false)
	if unasked {
		r.activity.Add(1)
		cp.c.enqueue(input{kind: inCommand, fn: func(m *core.Machine, now time.Time) error {
			m.SyncData(now, cp.key.cluster, cp.key.name, donor)
			return nil
		}})
	}
	return true
}

func (cp *capability) records(it *syncItem) {
	r := &cp.recv
	rcv, _ := cp.handler.(SyncReceiver)
	var n int64
	for _, ch := range it.chunks {
		n += int64(len(ch))
		if rcv != nil {
			rcv.HandleSyncRecord(SyncRecord{Cluster: int(cp.key.cluster), Src: int(it.src), Version: it.version, Data: ch})
		}
	}
	r.records.Add(int64(len(it.chunks)))
	r.bytes.Add(n)
	r.activity.Add(1)
}

func (cp *capability) checkEnd() {
	r := &cp.recv
	switch {
	case r.lost.Load():
		r.skip[r.donor] = true
		cp.endSession(ErrSyncOverflow, true)
	case r.total < 0:
	case r.count == r.total:
		cp.endSession(nil, true)
	case r.count > r.total:
		cp.endSession(fmt.Errorf("%w: %d records, SYNC_END says %d", ErrSyncIncomplete, r.count, r.total), true)
	}
}

// endSession delivers what was held back during the session and, when
// the data plane decided the outcome, tells the machine.
func (cp *capability) endSession(err error, report bool) {
	r := &cp.recv
	donor, gen := r.donor, r.coreGen
	buffered := r.buffered
	r.active, r.donor, r.buffered = false, 0, nil
	r.donorID.Store(0)
	r.bufLen.Store(0)
	r.endNs.Store(time.Now().UnixNano())
	if err != nil {
		r.lastErr.Store(&err)
	}
	for _, d := range buffered {
		if d.ev != nil {
			cp.handler.HandleEvent(*d.ev)
		} else {
			cp.handler.HandlePacket(d.pkt)
		}
	}
	if !report {
		return
	}
	key, d := cp.key, &cp.c.donors
	// A reliable hand-off on a goroutine of its own: the loop never waits
	// for a capability's goroutine, so neither may this one wait for it.
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx.Err() != nil {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		_ = cp.c.do(d.ctx, func(m *core.Machine, now time.Time) error {
			m.SyncFinished(now, key.cluster, key.name, donor, gen, err)
			return nil
		})
	}()
}

// packet delivers or, during a sync, holds back an ordinary packet.
func (cp *capability) packet(p Packet) {
	if !cp.hold(delivery{pkt: p}) {
		cp.handler.HandlePacket(p)
	}
}

// event delivers or, during a sync, holds back a node event, which must
// reach the handler in order with the packets held back: a NodeDown
// handled before them and before the records would be undone by them.
func (cp *capability) event(e Event) {
	if (e.Kind != NodeUp && e.Kind != NodeDown) || !cp.hold(delivery{ev: &e}) {
		cp.handler.HandleEvent(e)
	}
}

// hold keeps d for the end of the running sync. It returns false when no
// sync runs, and when there is no room left: then the sync fails (and is
// repeated) rather than hold unbounded memory or lose an update silently,
// and d is the caller's to deliver.
func (cp *capability) hold(d delivery) bool {
	r := &cp.recv
	if !r.active {
		return false
	}
	if len(r.buffered) < cp.cfg.SyncBuffer {
		r.buffered = append(r.buffered, d)
		r.bufLen.Store(int64(len(r.buffered)))
		return true
	}
	cp.c.stats.syncOverflow.Add(1)
	r.skip[r.donor] = true
	cp.endSession(fmt.Errorf("%w: more than %d packets buffered", ErrSyncOverflow, cp.cfg.SyncBuffer), true)
	return false
}

// localCapView returns the machine's view of a local capability.
func (c *Cluster) localCapView(k capKey) *core.CapView {
	cv := c.view.Load().Cluster(k.cluster)
	if cv == nil {
		return nil
	}
	for i := range cv.LocalCaps {
		if cv.LocalCaps[i].Name == k.name {
			return &cv.LocalCaps[i]
		}
	}
	return nil
}

// feedSync reports sync data that arrived since the last timer run, so a
// running sync does not time out (loop only).
func (c *Cluster) feedSync(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, cp := range c.caps {
		r := &cp.recv
		if n := r.activity.Load(); n != r.seen {
			r.seen = n
			if d := r.donorID.Load(); d != 0 {
				c.m.SyncData(now, k.cluster, k.name, d)
			}
		}
	}
}

// syncEvent handles the machine's sync events (loop only).
func (c *Cluster) syncEvent(e core.Event) {
	cp := c.capability(e.Cluster, e.CapName)
	if cp == nil {
		return
	}
	ev := Event{Cluster: int(e.Cluster), Node: int(e.Node), Capability: e.CapName}
	log := c.log.With(zap.Int("cluster", ev.Cluster), zap.String("capability", ev.Capability), zap.Int("peer", ev.Node))
	switch e.Kind {
	case core.SyncServe:
		c.serve(cp, e.Node)
		return
	case core.SyncStart:
		ev.Kind = SyncStarted
		cp.box.force(delivery{sync: &syncItem{op: opStart, src: e.Node, gen: e.Gen}})
		log.Info("sync started")
	case core.SyncDone:
		ev.Kind = SyncDone
		log.Info("sync done", zap.Int64("records", cp.recv.records.Load()))
	case core.SyncAbort:
		ev.Kind, ev.Err = SyncFailed, mapSyncErr(e.Err)
		cp.box.force(delivery{sync: &syncItem{op: opAbort, src: e.Node, err: ev.Err}})
		log.Warn("sync abandoned", zap.Error(ev.Err))
	case core.SyncFailed:
		ev.Kind, ev.Err = SyncFailed, e.Err
		log.Warn("sync failed", zap.Error(ev.Err))
	default:
		return
	}
	cp.box.force(delivery{ev: &ev})
	c.publish(ev)
}

// --- public API ---

// RequestSync pulls the capability's whole data set from a donor again
// (OpenSIPS's dlg_cluster_sync, ul_cluster_sync…). The capability stops
// being synced until the sync completes (a SyncDone event); a sync already
// running is abandoned.
func (c *Cluster) RequestSync(ctx context.Context, cluster int, name string) error {
	return c.do(ctx, func(m *core.Machine, now time.Time) error {
		return mapSyncErr(mapCoreErr(m.RequestSync(now, int32(cluster), name)))
	})
}

// SetCapabilityEnabled enables or disables a local capability (OpenSIPS's
// clusterer_set_cap_status). A disabled capability is announced as not
// synced, serves no syncs and abandons its own.
func (c *Cluster) SetCapabilityEnabled(ctx context.Context, cluster int, name string, enabled bool) error {
	return c.do(ctx, func(m *core.Machine, now time.Time) error {
		return mapSyncErr(mapCoreErr(m.SetCapabilityEnabled(now, int32(cluster), name, enabled)))
	})
}

// CapabilityInfo is a capability's state on one node.
type CapabilityInfo struct {
	Name   string
	Node   int
	Status CapabilityStatus
	// Reachable is false for remote nodes the local node cannot reach now.
	Reachable bool
}

// Capabilities lists the capabilities of every node of a cluster as the
// local node knows them (OpenSIPS's clusterer_list_cap shows the local
// ones): the local node's first, then by node id. Remote nodes report only
// synced or not synced.
func (c *Cluster) Capabilities(cluster int) []CapabilityInfo {
	cv := c.view.Load().Cluster(int32(cluster))
	if cv == nil {
		return nil
	}
	var out []CapabilityInfo
	for _, lc := range cv.LocalCaps {
		out = append(out, CapabilityInfo{Name: lc.Name, Node: int(c.me), Status: CapabilityStatus(lc.Status), Reachable: true})
	}
	for _, n := range cv.Nodes {
		for _, cs := range n.Capabilities {
			st := NotSynced
			if cs.Synced {
				st = Synced
			}
			out = append(out, CapabilityInfo{Name: cs.Name, Node: int(n.ID), Status: st, Reachable: n.Reachable})
		}
	}
	return out
}

// SyncProgress describes a capability's sync on the local node.
type SyncProgress struct {
	Status CapabilityStatus
	// Donor is the node the running sync comes from (0 if none).
	Donor int
	// Records and Bytes received in the current or last session.
	Records, Bytes int64
	// Buffered is the number of ordinary packets (and node events)
	// waiting for the sync.
	Buffered int
	// Started is when the current or last session's data began; Elapsed
	// how long it ran (so far, or in all).
	Started time.Time
	Elapsed time.Duration
	// LastErr is why the last failed session failed.
	LastErr error
}

// SyncStatus reports a local capability's sync state and progress.
func (c *Cluster) SyncStatus(cluster int, name string) (SyncProgress, error) {
	k := capKey{int32(cluster), name}
	st := c.localCapView(k)
	cp := c.capability(k.cluster, name)
	if st == nil || cp == nil {
		return SyncProgress{}, fmt.Errorf("%w: %q in cluster %d", ErrUnknownCapability, name, cluster)
	}
	r := &cp.recv
	p := SyncProgress{Status: CapabilityStatus(st.Status), Donor: int(st.Donor), Records: r.records.Load(),
		Bytes: r.bytes.Load(), Buffered: int(r.bufLen.Load())}
	if s := r.startNs.Load(); s != 0 {
		p.Started = time.Unix(0, s)
		if e := r.endNs.Load(); e != 0 {
			p.Elapsed = time.Duration(e - s)
		} else {
			p.Elapsed = time.Since(p.Started)
		}
	}
	if e := r.lastErr.Load(); e != nil {
		p.LastErr = *e
	}
	return p, nil
}

// SyncedNodes answers "which nodes share this work?": the ids, ascending,
// of the nodes of the cluster where the capability is synced and that the
// local node can reach — itself included when synced here — and the local
// node's index among them (-1 when it is not synced). Hosts partition work
// by it (e.g. item i belongs to nodes[hash(i) % len(nodes)]); nodes that
// see the same cluster compute the same partition.
func (c *Cluster) SyncedNodes(cluster int, name string) (nodes []int, index int) {
	index = -1
	cv := c.view.Load().Cluster(int32(cluster))
	if cv == nil {
		return nil, -1
	}
	self := false
	for _, lc := range cv.LocalCaps {
		if lc.Name == name && lc.Status == core.CapSynced {
			self = cv.Enabled
		}
	}
	for _, n := range cv.Nodes {
		if self && n.ID > c.me && index < 0 {
			index = len(nodes)
			nodes = append(nodes, int(c.me))
		}
		if !n.Reachable || !n.Enabled {
			continue
		}
		for _, cs := range n.Capabilities {
			if cs.Name == name && cs.Synced {
				nodes = append(nodes, int(n.ID))
			}
		}
	}
	if self && index < 0 {
		index = len(nodes)
		nodes = append(nodes, int(c.me))
	}
	return nodes, index
}
