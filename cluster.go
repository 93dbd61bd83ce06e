package clusterer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/peer"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// Cluster is the local node's membership of one or more clusters.
//
// One goroutine owns the protocol state; everything else (sending,
// relaying, queries) reads an immutable snapshot of it, so a Cluster is
// safe for concurrent use and a send never waits for the protocol.
type Cluster struct {
	cfg  Config
	core core.Config
	log  *zap.Logger
	m    *core.Machine // owned by the loop goroutine once started
	me   int32

	peers *peer.Manager
	view  atomic.Pointer[core.View]
	// routes is view indexed for sending (see setView).
	routes atomic.Pointer[routes]

	inbox chan input
	quit  chan struct{}
	wg    sync.WaitGroup

	mu    sync.Mutex // guards state, caps and subs
	state int        // stateNew, stateStarted, stateClosed
	// runState is state for the data plane, which reads it on every send
	// without the lock (written under mu).
	runState atomic.Int32
	caps     map[capKey]*capability
	subs     map[*subscriber]struct{}
	closeErr error

	// capsSnap is caps for the data plane, replaced on registration.
	capsSnap atomic.Pointer[map[capKey]*capability]

	// acts holds the activity counters, replaced (under actMu) when one
	// is added, so that looking one up takes no lock.
	acts  atomic.Pointer[map[actKey]*activity]
	actMu sync.Mutex

	// connNode remembers which node sends on an accepted connection
	// (learned from header-addressed packets), to refuse relaying a packet
	// back to the node it came from. Entries go when the connection ends.
	connNode sync.Map // uint64 -> int32

	// tlsAddrs are the addresses of bins: nodes, for the dialler; replaced
	// by the loop when the view changes.
	tlsAddrs atomic.Pointer[map[string]bool]
	// Loop only: the view the address sets were computed from, the
	// addresses some enabled node of an enabled cluster still has, and
	// when idle peers were last looked for.
	addrView  *core.View
	inUse     map[string]bool
	lastSweep time.Time
	// unsent holds frames of broken connections, rerouted by the loop
	// once the failure has been processed.
	unsent [][]byte

	msgs   *messaging // generic messages and remote commands
	donors donors     // sync jobs serving other nodes
	// syncPacketMax is the size SYNC packets are packed to.
	syncPacketMax int
	closeDone     chan struct{} // closed when Close has finished

	done      []cmdResult // command results to deliver after the next flush (loop only)
	stats     counters
	coreStats atomic.Pointer[core.Stats] // the machine's, copied by the loop

	meta atomic.Pointer[nodeMeta] // descriptions and row ids of provisioned nodes (provision.go)
}

const (
	stateNew = iota
	stateStarted
	stateClosed
)

// input is one thing for the loop goroutine to do.
type input struct {
	kind   inputKind
	src    core.Source
	frame  []byte // owned copy
	addr   string
	fn     func(m *core.Machine, now time.Time) error
	result chan error
}

type cmdResult struct {
	ch  chan error
	err error
}

type inputKind uint8

const (
	inFrame inputKind = iota
	inFailure
	inCommand
	inRevive
)

type actKey struct{ cluster, node int32 }

// activity counts data-plane traffic per node. The hot paths only bump a
// counter (reading the clock per packet cost a tenth of the receive path);
// the loop, before each timer run, stamps whatever changed with the current
// time. Sending suppresses keep-alive pings and receiving counts as
// liveness; a stamp later than the truth by at most one timer period only
// postpones a keep-alive, and a probe is never counted as answered by
// traffic from before it (see feedActivity).
type activity struct {
	sent, recv         atomic.Uint64
	sentSeen, recvSeen uint64 // counts already reported (loop only)
}

// New validates cfg and prepares a Cluster; nothing touches the network
// before Start.
func New(cfg Config) (*Cluster, error) {
	cc, err := cfg.coreConfig()
	if err != nil {
		return nil, err
	}
	m, err := core.New(cc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.HandlerQueue == 0 {
		cfg.HandlerQueue = 4096
	}
	c := &Cluster{
		cfg: cfg, core: m.Config(), log: log.With(zap.Int("node", cfg.NodeID)), m: m, me: int32(cfg.NodeID),
		inbox: make(chan input, 1024), quit: make(chan struct{}),
		caps: map[capKey]*capability{}, subs: map[*subscriber]struct{}{},
	}
	c.msgs = newMessaging(c)
	c.donors.init()
	c.syncPacketMax = cmp.Or(cfg.SyncPacketMaxSize, DefaultSyncPacketMaxSize)
	c.meta.Store(newNodeMeta(cfg.Clusters))
	c.closeDone = make(chan struct{})
	c.setView(m.View())
	c.syncAddrs(m.View())
	return c, nil
}

// MyID is the local node's id.
func (c *Cluster) MyID() int { return int(c.me) }

// Start listens on the local node's BIN address and starts probing the
// provisioned nodes. It returns once the listener is up; the context
// bounds only the start itself. Close stops everything.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateStarted:
		return ErrStarted
	case stateClosed:
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	selfURL, _ := core.ParseURL(c.core.Clusters[0].Self.URL)
	listen := c.cfg.ListenAddr
	if listen == "" {
		listen = selfURL.Addr.String()
	}
	var tr peer.Transport
	if c.cfg.Transport != nil {
		tr = c.cfg.Transport
	}
	pm, err := peer.New(peer.Config{
		Transport: tr, ListenAddr: listen, LocalIP: selfURL.Addr.Addr().String(),
		QueueBytes: c.cfg.QueueBytes, WriteTimeout: c.cfg.WriteTimeout,
		TLS: c.cfg.TLS, ListenTLS: selfURL.TLS, DialTLS: c.dialTLS,
		NewReceiver: c.newReceiver, OnFailure: c.onFailure, OnConnClosed: c.onConnClosed, Logger: c.log,
	})
	if err != nil {
		return fmt.Errorf("clusterer: %w", err)
	}
	if err := pm.Start(ctx); err != nil {
		return fmt.Errorf("clusterer: listening on %s: %w", listen, err)
	}
	c.peers = pm
	c.state = stateStarted
	c.runState.Store(stateStarted)
	c.wg.Add(1)
	go c.loop()
	c.log.Info("cluster node started", zap.String("listen", listen))
	return nil
}

// Close stops the node: connections, timers and handler goroutines.
// It is idempotent and returns once nothing the Cluster started is left,
// also when called concurrently.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		<-c.closeDone
		return c.closeErr
	}
	defer close(c.closeDone)
	started := c.state == stateStarted
	c.state = stateClosed
	c.runState.Store(stateClosed)
	c.mu.Unlock()
	if started {
		close(c.quit)
		c.wg.Wait() // the loop is gone: no more dispatches
		c.donors.cancel()
		c.donors.wg.Wait() // sync jobs end at their next send
		c.closeErr = c.peers.Close()
	}
	c.msgs.close()
	c.mu.Lock()
	caps := c.caps
	subs := c.subs
	c.mu.Unlock()
	for _, cp := range caps {
		cp.box.close()
	}
	for s := range subs {
		s.box.close()
	}
	return c.closeErr
}

func (c *Cluster) started() bool { return c.running() == nil }

// running is nil for a started Cluster, else ErrNotStarted or ErrClosed.
func (c *Cluster) running() error {
	switch c.runState.Load() {
	case stateNew:
		return ErrNotStarted
	case stateClosed:
		return ErrClosed
	}
	return nil
}

// enqueue hands an input to the loop without ever blocking a network
// goroutine for long: if the loop is stuck the input is dropped and
// counted (the protocol recovers through its timers).
func (c *Cluster) enqueue(in input) bool {
	select {
	case c.inbox <- in:
		return true
	case <-c.quit:
		return false
	default:
	}
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case c.inbox <- in:
		return true
	case <-c.quit:
	case <-t.C:
		c.stats.inboxFull.Add(1)
	}
	return false
}

// do runs fn on the loop goroutine and waits for its result.
func (c *Cluster) do(ctx context.Context, fn func(m *core.Machine, now time.Time) error) error {
	if err := c.running(); err != nil {
		return err
	}
	res := make(chan error, 1)
	select {
	case c.inbox <- input{kind: inCommand, fn: fn, result: res}:
	case <-c.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-res:
		return err
	case <-c.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop owns the protocol machine.
func (c *Cluster) loop() {
	defer c.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	c.m.Start(time.Now())
	c.flush()
	for {
		c.armTimer(timer)
		select {
		case <-c.quit:
			return
		case in := <-c.inbox:
			c.handle(in)
			// Take whatever else is waiting before publishing, so bursts
			// cost one snapshot.
		drain:
			for range 256 {
				select {
				case in = <-c.inbox:
					c.handle(in)
				default:
					break drain
				}
			}
		case <-timer.C:
			now := time.Now()
			c.feedActivity(now)
			c.feedSync(now)
			c.m.Tick(now)
		}
		c.flush()
		c.reroute()
		// Commands complete only now, so that a caller returning from
		// SetState or RemoveNode already sees the result in every query
		// and send.
		for _, r := range c.done {
			if r.ch != nil { // nil: fire and forget
				r.ch <- r.err
			}
		}
		c.done = c.done[:0]
	}
}

func (c *Cluster) armTimer(t *time.Timer) {
	d := c.m.Deadline()
	wait := time.Hour
	if !d.IsZero() {
		wait = max(time.Until(d), 0)
	}
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(wait)
}

func (c *Cluster) handle(in input) {
	now := time.Now()
	switch in.kind {
	case inFrame:
		p, err := bin.Parse(in.frame)
		if err != nil {
			c.stats.malformed.Add(1)
			return
		}
		c.m.Receive(now, in.src, p)
	case inFailure:
		c.m.SendFailed(now, in.addr)
		if len(in.frame) > 0 {
			c.unsent = append(c.unsent, in.frame)
		}
	case inRevive:
		c.feedActivity(now)
	case inCommand:
		c.done = append(c.done, cmdResult{in.result, in.fn(c.m, now)})
	}
}

// feedActivity reports the data-plane traffic since the last call. It is
// stamped just before now, so that a probe sent by the Tick that follows
// is not taken as answered by it.
func (c *Cluster) feedActivity(now time.Time) {
	stamp := now.Add(-time.Nanosecond)
	acts := c.acts.Load()
	if acts == nil {
		return
	}
	for key, a := range *acts {
		var sent, recv time.Time
		if n := a.sent.Load(); n != a.sentSeen {
			a.sentSeen, sent = n, stamp
		}
		if n := a.recv.Load(); n != a.recvSeen {
			a.recvSeen, recv = n, stamp
		}
		if !sent.IsZero() || !recv.IsZero() {
			c.m.Activity(key.cluster, key.node, sent, recv)
		}
	}
}

func (c *Cluster) act(cluster, node int32) *activity {
	k := actKey{cluster, node}
	if m := c.acts.Load(); m != nil {
		if a := (*m)[k]; a != nil {
			return a
		}
	}
	c.actMu.Lock()
	defer c.actMu.Unlock()
	old := c.acts.Load()
	if old != nil {
		if a := (*old)[k]; a != nil {
			return a
		}
	}
	m := make(map[actKey]*activity, 1)
	if old != nil {
		m = maps.Clone(*old)
	}
	a := &activity{}
	m[k] = a
	c.acts.Store(&m)
	return a
}

// flush sends what the machine produced, dispatches its events and
// publishes its new state.
func (c *Cluster) flush() {
	for range 16 { // failures found while sending feed back in; bounded
		sends, events := c.m.Drain()
		if len(sends) == 0 && len(events) == 0 {
			break
		}
		c.syncAddrs(c.m.View()) // before sending: a new bins: node is dialled with TLS
		now := time.Now()
		for _, s := range sends {
			if s.ConnID != 0 {
				if err := c.peers.Reply(s.ConnID, s.Frame); err != nil {
					c.stats.sendErrors.Add(1)
				}
				continue
			}
			if s.Heard {
				c.peers.Redial(s.Addr)
			}
			if err := c.peers.Send(s.Addr, s.Frame); err != nil {
				c.stats.sendErrors.Add(1)
				if linkBroken(err) {
					c.m.SendFailed(now, s.Addr)
				}
			}
		}
		c.setView(c.m.View())
		for _, e := range events {
			c.dispatch(e)
		}
	}
	v := c.m.View()
	c.setView(v)
	c.syncAddrs(v)
	c.retireIdle()
	st := c.m.Stats()
	c.coreStats.Store(&st)
}

// syncAddrs recomputes, when the view has changed, the addresses to dial
// with TLS and those still in use.
func (c *Cluster) syncAddrs(v *core.View) {
	if v == c.addrView {
		return
	}
	c.addrView = v
	secure, inUse := map[string]bool{}, map[string]bool{}
	for _, cv := range v.Clusters {
		for i := range cv.Nodes {
			n := &cv.Nodes[i]
			if u, err := core.ParseURL(n.URL); err == nil && u.TLS {
				secure[n.Addr] = true
			}
			if cv.Enabled && n.Enabled {
				inUse[n.Addr] = true
			}
		}
	}
	if old := c.tlsAddrs.Load(); old == nil || !maps.Equal(*old, secure) {
		c.tlsAddrs.Store(&secure)
	}
	c.inUse = inUse
	c.lastSweep = time.Time{} // sweep now
}

// retireIdle retires the peers of addresses no enabled node of an enabled
// cluster has any more (removed or disabled nodes, or all of them when the
// local node is disabled), so their writers and connections go. It runs
// after the sends of the change, which the retiring peers still write (a
// REMOVE_NODE for the removed node itself, a disabled node's goodbyes). A
// send racing with the change may bring a peer back; the periodic sweep
// retires it again.
func (c *Cluster) retireIdle() {
	now := time.Now()
	if now.Sub(c.lastSweep) < sweepInterval {
		return
	}
	c.lastSweep = now
	for _, addr := range c.peers.Addrs() {
		if !c.inUse[addr] {
			c.peers.Retire(addr)
			c.log.Debug("peer retired: no node uses it", zap.String("peer", addr))
		}
	}
}

// sweepInterval spaces the looks for idle peers when the view is stable.
const sweepInterval = 5 * time.Second

// reroute re-sends, through the next hop of the view just published, the
// frames that broken connections left unsent: the module and
// clusterer-extra packets, which name their destination in the trailer
// (OpenSIPS retries a failed send through the next hop likewise).
// Protocol messages for the neighbour itself are not: they meant that
// link, and the protocol has already reacted to its loss.
func (c *Cluster) reroute() {
	if len(c.unsent) == 0 {
		return
	}
	v := c.view.Load()
	failed := false
	for _, buf := range c.unsent {
		for len(buf) > 0 {
			n, err := bin.FrameLen(buf)
			if err != nil || n > len(buf) {
				c.stats.rerouteDropped.Add(1) // the peer layer hands back whole frames; never seen
				break
			}
			frame := buf[:n]
			buf = buf[n:]
			addr, err := c.rerouteOne(v, frame)
			switch {
			case err == nil:
				c.stats.rerouted.Add(1)
			case addr != "" && linkBroken(err):
				c.m.SendFailed(time.Now(), addr)
				failed = true
				fallthrough
			default:
				c.stats.rerouteDropped.Add(1)
			}
		}
	}
	clear(c.unsent)
	c.unsent = c.unsent[:0]
	if failed {
		c.flush()
	}
}

// rerouteOne sends one unsent frame on, returning the next hop's address
// if it tried one.
func (c *Cluster) rerouteOne(v *core.View, frame []byte) (string, error) {
	p, err := bin.Parse(frame)
	if err != nil || p.Capability == wire.CapInternal || len(p.Body) < bin.TrailerLen {
		return "", errNotReroutable
	}
	t, err := bin.ParseTrailer(p.Body)
	if err != nil {
		return "", errNotReroutable
	}
	cv := v.Cluster(t.Cluster)
	if cv == nil || !cv.Enabled {
		return "", errNotReroutable
	}
	dst := cv.Node(t.Dst)
	if dst == nil || !dst.Enabled || !dst.Reachable || (c.core.NoRerouting && dst.NextHop != dst.ID) {
		return "", ErrDestDown
	}
	hop := cv.Node(dst.NextHop)
	if hop == nil {
		return "", ErrDestDown
	}
	if err := c.peers.Send(hop.Addr, frame); err != nil {
		return hop.Addr, err
	}
	c.act(cv.ID, hop.ID).sent.Add(1)
	return hop.Addr, nil
}

var errNotReroutable = errors.New("clusterer: not reroutable")

// dialTLS tells the peer layer which addresses are bins: nodes.
func (c *Cluster) dialTLS(addr string) bool {
	m := c.tlsAddrs.Load()
	return m != nil && (*m)[addr]
}

// onFailure is the transport telling us a connection broke; unsent are
// the frames it could not write, rerouted once the loop has processed the
// failure. If the loop lags so much that the failure is dropped, so are
// they (counted in InboxFull).
func (c *Cluster) onFailure(addr string, err error, unsent []byte) {
	c.log.Debug("connection failed", zap.String("peer", addr), zap.Error(err), zap.Int("unsent_bytes", len(unsent)))
	c.enqueue(input{kind: inFailure, addr: addr, frame: unsent})
}

// onConnClosed forgets what we learned about a connection that ended.
func (c *Cluster) onConnClosed(ci peer.ConnInfo) {
	if !ci.Outgoing {
		c.connNode.Delete(ci.ID)
	}
}

// relay forwards a packet for another node, byte for byte, through our
// own route to it.
func (c *Cluster) relay(ci peer.ConnInfo, cv *core.ClusterView, t bin.Trailer, frame []byte) {
	if c.core.NoRerouting {
		c.stats.relayRefused.Add(1)
		return
	}
	dst := cv.Node(t.Dst)
	if dst == nil || !dst.Reachable {
		c.stats.relayNoRoute.Add(1)
		return
	}
	if from, ok := c.connNode.Load(ci.ID); ok && from.(int32) == dst.NextHop {
		// Sending it back where it came from would loop until the views
		// agree again.
		c.stats.relayLoop.Add(1)
		return
	}
	hop := cv.Node(dst.NextHop)
	if err := c.peers.Send(hop.Addr, frame); err != nil {
		c.stats.relayFailed.Add(1)
		if linkBroken(err) {
			c.enqueue(input{kind: inFailure, addr: hop.Addr})
		}
		return
	}
	c.act(t.Cluster, hop.ID).sent.Add(1)
	c.stats.relayed.Add(1)
}

// linkBroken tells a failed connection (the link must leave UP, as
// OpenSIPS does on a send error) from a full queue, which is back-pressure
// on a working link: treating that as a failure would take healthy links
// down under load and flood the cluster with link-state updates.
func linkBroken(err error) bool {
	return !errors.Is(err, peer.ErrQueueFull)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// SetState enables or disables the local node in a cluster (OpenSIPS
// clusterer_set_status for the local node). A disabled node tells its
// neighbours its links are DOWN, then sends nothing and ignores all it
// receives in that cluster.
func (c *Cluster) SetState(ctx context.Context, cluster int, enabled bool) error {
	return c.do(ctx, func(m *core.Machine, now time.Time) error {
		return mapCoreErr(m.SetLocalEnabled(now, int32(cluster), enabled))
	})
}

// SetNodeState enables or disables a remote node locally (clusterer_set_status
// for another node): a disabled node is not probed, nothing is sent to it
// and its packets are dropped.
func (c *Cluster) SetNodeState(ctx context.Context, cluster, node int, enabled bool) error {
	return c.do(ctx, func(m *core.Machine, now time.Time) error {
		return mapCoreErr(m.SetNodeEnabled(now, int32(cluster), int32(node), enabled))
	})
}

// RemoveNode tells every reachable node of the cluster to forget node
// (REMOVE_NODE) and forgets it locally. A removed node that hears it
// disables itself in the cluster. Nodes of provisioned clusters ignore it.
func (c *Cluster) RemoveNode(ctx context.Context, cluster, node int) error {
	return c.do(ctx, func(m *core.Machine, now time.Time) error {
		return mapCoreErr(m.RemoveNode(now, int32(cluster), int32(node)))
	})
}

func mapCoreErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, core.ErrUnknownCluster):
		return fmt.Errorf("%w: %v", ErrUnknownCluster, err)
	case errors.Is(err, core.ErrUnknownNode):
		return fmt.Errorf("%w: %v", ErrUnknownNode, err)
	}
	return err
}

// addrOf parses "IP" or "IP:PORT".
func addrOf(s string) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	return a.Unmap(), err
}
