package clusterer

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// A capability is a named channel of module traffic in one cluster (OpenSIPS
// modules register e.g. "dialog-dlg-repl" or "usrloc-contact-repl"). Its
// packets are BIN packets whose capability field is the name; the cluster
// appends the routing trailer, routes them, and delivers those for this
// node to the capability's Handler.

// Packet is a module packet received for a capability.
type Packet struct {
	Cluster int
	// Src is the node that sent it (not the relay it came through).
	Src     int
	Version int16
	Type    int32
	// Body is the module's body, trailer removed. It belongs to the
	// handler. Bodies received together share the memory they were read
	// into (up to 256 KiB), so a handler that keeps a few bodies for long,
	// out of many, keeps that memory too: it should keep copies.
	Body []byte
}

// Reader returns a reader over the body.
func (p Packet) Reader() bin.Reader { return bin.NewReader(p.Body) }

// EventKind tells what happened to a node.
type EventKind int

// Event kinds.
const (
	// NodeUp: the node became reachable, directly or through others.
	NodeUp EventKind = iota + 1
	// NodeDown: the node is no longer reachable.
	NodeDown
	// LinkUp and LinkDown: the direct link to the node changed; the node
	// may still be reachable through others.
	LinkUp
	LinkDown
	// NodeAdded: a node was learned from the network.
	NodeAdded
	// NodeRemoved: a node was removed (REMOVE_NODE).
	NodeRemoved
	// LocalDisabled: another node removed the local node from the cluster,
	// which disabled it.
	LocalDisabled
	// RequestReceived and ReplyReceived: a generic message arrived
	// (OpenSIPS's E_CLUSTERER_REQ_RECEIVED and E_CLUSTERER_RPL_RECEIVED);
	// Node is the sender, Tag and Msg are set.
	RequestReceived
	ReplyReceived
	// CapabilityChanged: a remote node's capability changed state
	// (Capability and Synced are set), as learned from CAP_UPDATE.
	CapabilityChanged
	// SyncStarted: a full sync of Capability from donor Node began.
	SyncStarted
	// SyncDone: Capability is synced; Node is the donor, 0 when a seed
	// node gave up waiting for one (Config.SeedFallbackInterval).
	SyncDone
	// SyncFailed: the sync from Node failed (Err says why); another is
	// requested as soon as a donor qualifies.
	SyncFailed
	// ShTagChanged: a sharing tag changed on the local node (OpenSIPS's
	// E_CLUSTERER_SHARING_TAG_CHANGED); ShTag says how, Node is
	// ShTag.Node.
	ShTagChanged
)

func (k EventKind) String() string {
	switch k {
	case NodeUp:
		return "node-up"
	case NodeDown:
		return "node-down"
	case LinkUp:
		return "link-up"
	case LinkDown:
		return "link-down"
	case NodeAdded:
		return "node-added"
	case NodeRemoved:
		return "node-removed"
	case LocalDisabled:
		return "local-disabled"
	case RequestReceived:
		return "request-received"
	case ReplyReceived:
		return "reply-received"
	case CapabilityChanged:
		return "capability-changed"
	case SyncStarted:
		return "sync-started"
	case SyncDone:
		return "sync-done"
	case SyncFailed:
		return "sync-failed"
	case ShTagChanged:
		return "shtag-changed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a change of a node as seen from the local node, or a
// generic message received. NodeUp and NodeDown are OpenSIPS's
// E_CLUSTERER_NODE_STATE_CHANGED.
type Event struct {
	Kind    EventKind
	Cluster int
	Node    int
	// Tag and Msg are set for RequestReceived and ReplyReceived.
	Tag, Msg string
	// Capability is set for CapabilityChanged and the sync events; Synced
	// for CapabilityChanged, Err for SyncFailed.
	Capability string
	Synced     bool
	Err        error
	// ShTag is set for ShTagChanged.
	ShTag *ShTagChange
}

// Handler receives a capability's traffic. Calls for one capability are
// made in order from one goroutine of the library's, never from the
// protocol's own; a slow handler delays only its own capability, whose
// queue is bounded (see Config.HandlerQueue).
type Handler interface {
	// HandlePacket is called for every packet of the capability addressed
	// to the local node.
	HandlePacket(p Packet)
	// HandleEvent is called when a node of the capability's cluster comes
	// up or goes down (reachability), as OpenSIPS's capability callbacks.
	// During a full sync these events are held back with the packets and
	// delivered after the records, in the order they happened; the sync's
	// own events (SyncStarted, SyncDone, SyncFailed) come at once.
	HandleEvent(e Event)
}

// HandlerFuncs adapts functions to Handler, SyncReceiver and SyncSource;
// nil fields ignore the call (a nil Donate donates no records).
type HandlerFuncs struct {
	Packet     func(Packet)
	Event      func(Event)
	SyncRecord func(SyncRecord)
	// Donate writes the records of a full sync (SyncSource.WriteSync).
	Donate func(*SyncWriter) error
}

// HandleSyncRecord implements SyncReceiver.
func (h HandlerFuncs) HandleSyncRecord(r SyncRecord) {
	if h.SyncRecord != nil {
		h.SyncRecord(r)
	}
}

// WriteSync implements SyncSource.
func (h HandlerFuncs) WriteSync(w *SyncWriter) error {
	if h.Donate != nil {
		return h.Donate(w)
	}
	return nil
}

// HandlePacket implements Handler.
func (h HandlerFuncs) HandlePacket(p Packet) {
	if h.Packet != nil {
		h.Packet(p)
	}
}

// HandleEvent implements Handler.
func (h HandlerFuncs) HandleEvent(e Event) {
	if h.Event != nil {
		h.Event(e)
	}
}

// CapabilityConfig registers a capability.
type CapabilityConfig struct {
	// Name is the capability as it appears on the wire.
	Name string
	// Cluster is the cluster id it works in.
	Cluster int
	// QueueLen bounds pending deliveries to the handler; 0 means
	// Config.HandlerQueue.
	QueueLen int

	// RequireSync pulls the whole data set from a synced donor when the
	// node starts (OpenSIPS's cluster_persistency=sync-from-cluster); the
	// capability is synced once it arrives. Without it the capability is
	// synced at once. Either way the handler may serve syncs to others
	// (SyncSource) and receive them (SyncReceiver, RequestSync).
	RequireSync bool
	// Donor restricts which nodes may donate (OpenSIPS's sync_cond).
	Donor DonorCondition
	// DataVersion is sent with this node's sync data as the data version
	// (OpenSIPS modules send their BIN version).
	DataVersion int16
	// SyncBuffer bounds the ordinary packets (and node events) held back
	// while a sync runs (default 65536). More make the sync fail with ErrSyncOverflow and
	// start again, instead of holding unbounded memory.
	SyncBuffer int
}

type capKey struct {
	cluster int32
	name    string
}

type capability struct {
	c       *Cluster
	key     capKey
	cfg     CapabilityConfig
	handler Handler
	box     *mailbox[delivery]
	recv    syncRecv
}

// bodySlab copies packet bodies for handlers into shared chunks: one
// allocation per chunk instead of one per packet. Each body is capped at
// its length, so a handler appending to it gets a copy; a chunk is freed
// when the last body in it is. Each connection's receiver has its own, so
// copying takes no lock.
type bodySlab struct {
	free []byte
}

const slabSize = 32 << 10

func (s *bodySlab) copy(b []byte) []byte {
	if len(b) > slabSize/8 {
		return clone(b)
	}
	if len(s.free) < len(b) {
		s.free = make([]byte, slabSize)
	}
	out := s.free[:len(b):len(b)]
	s.free = s.free[len(b):]
	copy(out, b)
	return out
}

// delivery is a packet or an event for a capability's handler; a struct,
// not an interface, so queuing a packet does not allocate (events, rare,
// are pointers, to keep the struct small to copy).
type delivery struct {
	pkt  Packet
	ev   *Event
	sync *syncItem
}

// RegisterCapability registers a capability and its handler. It may be
// called before or after Start. Traffic for capabilities nobody
// registered is dropped (and counted), as OpenSIPS does.
func (c *Cluster) RegisterCapability(cfg CapabilityConfig, h Handler) error {
	if cfg.Name == "" || len(cfg.Name) > 255 || cfg.Name == wire.CapInternal || cfg.Name == wire.CapExtra {
		return fmt.Errorf("%w: name %q", ErrCapability, cfg.Name)
	}
	if h == nil {
		return fmt.Errorf("%w: %q has no handler", ErrCapability, cfg.Name)
	}
	cid, err := checkID("cluster", cfg.Cluster)
	if err != nil || c.view.Load().Cluster(cid) == nil {
		return fmt.Errorf("%w: %q: %w: %d", ErrCapability, cfg.Name, ErrUnknownCluster, cfg.Cluster)
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = c.cfg.HandlerQueue
	}
	if cfg.SyncBuffer <= 0 {
		cfg.SyncBuffer = 1 << 16
	}
	cond, ok := map[DonorCondition]core.SyncCond{DonorAny: core.DonorAny, DonorSameSIPAddr: core.DonorSameSIP,
		DonorOtherSIPAddr: core.DonorOtherSIP}[cfg.Donor]
	if !ok {
		return fmt.Errorf("%w: %q: Donor %d unknown", ErrCapability, cfg.Name, cfg.Donor)
	}
	ccfg := core.CapConfig{Name: cfg.Name, RequireSync: cfg.RequireSync, Cond: cond}
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return ErrClosed
	}
	key := capKey{cid, cfg.Name}
	if _, dup := c.caps[key]; dup {
		c.mu.Unlock()
		return fmt.Errorf("%w: %q already registered in cluster %d", ErrCapability, cfg.Name, cfg.Cluster)
	}
	bin.InternCapability(cfg.Name)
	cp := &capability{c: c, key: key, cfg: cfg, handler: h, box: newMailbox[delivery](cfg.QueueLen, &c.stats.handlerDrops)}
	cp.recv.skip = map[int32]bool{}
	cp.box.start(func(d delivery) {
		switch {
		case d.sync != nil:
			cp.handleSync(d.sync)
		case d.ev != nil:
			cp.event(*d.ev)
		default:
			cp.packet(d.pkt)
		}
	})
	caps := make(map[capKey]*capability, len(c.caps)+1)
	for k, v := range c.caps {
		caps[k] = v
	}
	caps[key] = cp
	c.caps = caps
	c.capsSnap.Store(&caps)
	if c.state == stateNew {
		// The loop does not run yet: the machine is ours (Start waits for
		// c.mu).
		defer c.mu.Unlock()
		if err := c.m.AddCapability(time.Now(), cid, ccfg); err != nil {
			return fmt.Errorf("%w: %w", ErrCapability, mapSyncErr(err))
		}
		c.view.Store(c.m.View())
		return nil
	}
	c.mu.Unlock()
	err = c.do(context.Background(), func(m *core.Machine, now time.Time) error {
		return m.AddCapability(now, cid, ccfg)
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCapability, mapSyncErr(err))
	}
	return nil
}

// Subscribe calls fn with every event of every cluster, in order, from a
// goroutine of its own, until the returned function is called or the
// Cluster is closed. At most queueLen events wait (0: Config.HandlerQueue);
// more are dropped and counted.
func (c *Cluster) Subscribe(queueLen int, fn func(Event)) (cancel func()) {
	if queueLen <= 0 {
		queueLen = c.cfg.HandlerQueue
	}
	s := &subscriber{box: newMailbox[Event](queueLen, &c.stats.handlerDrops)}
	s.box.start(fn)
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		s.box.close()
		return func() {}
	}
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.subs, s)
		c.mu.Unlock()
		s.box.close()
	}
}

type subscriber struct {
	box    *mailbox[Event]
	filter func(Event) bool // nil: every event
}

// publicKind maps the machine's node events to the API's.
var publicKind = map[core.EventKind]EventKind{
	core.NodeUp: NodeUp, core.NodeDown: NodeDown, core.LinkUp: LinkUp, core.LinkDown: LinkDown,
	core.NodeAdded: NodeAdded, core.NodeRemoved: NodeRemoved, core.LocalDisabled: LocalDisabled,
	core.CapabilityChanged: CapabilityChanged,
}

// syncKinds are the machine's sync events, handled by syncEvent.
var syncKinds = map[core.EventKind]bool{
	core.SyncServe: true, core.SyncStart: true, core.SyncAbort: true, core.SyncFailed: true, core.SyncDone: true,
}

// dispatch runs on the loop goroutine: it only queues.
func (c *Cluster) dispatch(e core.Event) {
	switch e.Kind {
	case core.Message:
		c.extraMessage(0, bin.Trailer{Cluster: e.Cluster, Src: e.Node, Dst: c.me}, e.Msg)
		return
	case core.ShTagChanged:
		c.shtagEvent(e)
		return
	}
	if syncKinds[e.Kind] {
		c.syncEvent(e)
		return
	}
	kind, ok := publicKind[e.Kind]
	if !ok {
		c.stats.unhandledMessages.Add(1)
		return
	}
	switch kind {
	case NodeDown, NodeRemoved:
		c.msgs.unreachable(e.Cluster, e.Node)
	case LocalDisabled:
		c.msgs.unreachable(e.Cluster, 0)
	}
	ev := Event{Kind: kind, Cluster: int(e.Cluster), Node: int(e.Node)}
	if e.Cap != nil {
		ev.Capability, ev.Synced = e.Cap.Name, e.Cap.Synced
	}
	switch kind {
	case CapabilityChanged:
		c.log.Debug(kind.String(), zap.Int("cluster", ev.Cluster), zap.Int("peer", ev.Node),
			zap.String("capability", ev.Capability), zap.Bool("synced", ev.Synced))
	case LinkUp, LinkDown:
		c.log.Debug(kind.String(), zap.Int("cluster", ev.Cluster), zap.Int("peer", ev.Node))
	default:
		c.log.Info(kind.String(), zap.Int("cluster", ev.Cluster), zap.Int("peer", ev.Node))
	}
	c.publish(ev)
	c.mu.Lock()
	defer c.mu.Unlock()
	if kind == NodeUp || kind == NodeDown {
		for k, cp := range c.caps {
			if k.cluster == e.Cluster {
				cp.box.put(delivery{ev: &ev})
			}
		}
	}
}

// publish queues ev for every subscriber; it never blocks.
func (c *Cluster) publish(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		if s.filter == nil || s.filter(ev) {
			s.box.put(ev)
		}
	}
}

// mailbox is a bounded queue drained by one goroutine. The goroutine takes
// everything queued at once and is woken only when the queue goes from
// empty to non-empty, so a burst costs one wake-up, not one per item.
type mailbox[T any] struct {
	mu      sync.Mutex
	cond    *sync.Cond
	space   *sync.Cond // signalled when the goroutine takes the queue
	items   []T
	max     int
	closed  bool
	woken   bool // signalled, and the goroutine has not taken the items yet
	done    chan struct{}
	dropped *atomic.Uint64
}

func newMailbox[T any](max int, dropped *atomic.Uint64) *mailbox[T] {
	b := &mailbox[T]{max: max, done: make(chan struct{}), dropped: dropped}
	b.cond = sync.NewCond(&b.mu)
	b.space = sync.NewCond(&b.mu)
	return b
}

func (b *mailbox[T]) start(fn func(T)) {
	go func() {
		defer close(b.done)
		var batch []T
		for {
			b.mu.Lock()
			for len(b.items) == 0 && !b.closed {
				b.cond.Wait()
			}
			b.woken = false
			if len(b.items) == 0 {
				b.mu.Unlock()
				return
			}
			batch, b.items = b.items, batch[:0]
			b.space.Broadcast()
			b.mu.Unlock()
			for i := range batch {
				fn(batch[i])
			}
			clear(batch) // let the handler's data go
		}
	}()
}

// putWait is put for items that must not be dropped lightly: it waits up
// to max for room, and reports whether the item was queued.
func (b *mailbox[T]) putWait(item T, max time.Duration) bool {
	b.mu.Lock()
	if len(b.items) >= b.max && !b.closed {
		deadline := time.Now().Add(max)
		t := time.AfterFunc(max, func() {
			b.mu.Lock()
			b.space.Broadcast()
			b.mu.Unlock()
		})
		for len(b.items) >= b.max && !b.closed && time.Now().Before(deadline) {
			b.space.Wait()
		}
		t.Stop()
	}
	if b.closed || len(b.items) >= b.max {
		b.mu.Unlock()
		return false
	}
	b.items = append(b.items, item)
	b.queued(1)
	return true
}

// force queues a control item past the bound: there are few of them, and
// losing one would leave the handler's state wrong.
func (b *mailbox[T]) force(item T) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.items = append(b.items, item)
	b.queued(1)
}

// put queues item; it never blocks: a full queue drops the item.
func (b *mailbox[T]) put(item T) {
	b.mu.Lock()
	if b.closed || len(b.items) >= b.max {
		b.mu.Unlock()
		b.dropped.Add(1)
		return
	}
	b.items = append(b.items, item)
	b.queued(1)
}

// putBatch queues *items in order, as many as fit, and empties *items; it
// never blocks: the rest are dropped. Into an empty queue the slices are
// swapped rather than copied: *items comes back as the queue's spare,
// already cleared, storage.
//
// If they do not all fit, the producer (a connection's reader) first
// yields its processor, a few times at most: a handler that keeps up but
// was preempted, or woken and queued behind busy goroutines, only waits for
// a processor, and would otherwise see its queue overflow. A yield never
// waits for the handler; a handler that is slow still fills its queue and
// drops.
func (b *mailbox[T]) putBatch(items *[]T) {
	in := *items
	b.mu.Lock()
	for range fullYields {
		if b.closed || len(in) <= b.max-len(b.items) {
			break
		}
		b.mu.Unlock()
		runtime.Gosched()
		b.mu.Lock()
	}
	n := 0
	if !b.closed {
		n = min(len(in), b.max-len(b.items))
	}
	if len(b.items) == 0 && n == len(in) && n > 0 {
		*items, b.items = b.items[:0], in
	} else {
		b.items = append(b.items, in[:n]...)
		clear(in) // what was copied belongs to the goroutine now; the rest is dropped
		*items = in[:0]
	}
	if d := len(in) - n; d > 0 {
		b.dropped.Add(uint64(d))
	}
	if n == 0 {
		b.mu.Unlock()
		return
	}
	b.queued(n)
}

// fullYields bounds the yields of a producer facing a full queue.
const fullYields = 16

// queued wakes the goroutine for the n items just added, and unlocks.
//
// When the queue is half full and the goroutine, already woken, has not
// even started on it, the producer (a connection's reader) yields its
// processor once: a goroutine just woken waits for a processor behind the
// producer, which on a busy machine keeps producing for a whole time slice
// and would fill the queue and drop while the handler is idle. Yielding
// never blocks the producer; a handler that is running but slow still
// fills its queue and drops.
func (b *mailbox[T]) queued(n int) {
	wake := len(b.items) == n
	if wake {
		b.woken = true
	}
	yield := !wake && b.woken && 2*len(b.items) >= b.max
	b.mu.Unlock()
	if wake {
		b.cond.Signal()
	}
	if yield {
		runtime.Gosched()
	}
}

// close stops accepting, lets the goroutine finish what is queued, and
// waits for it.
func (b *mailbox[T]) close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		b.cond.Broadcast()
		b.space.Broadcast()
	}
	b.mu.Unlock()
	<-b.done
}
