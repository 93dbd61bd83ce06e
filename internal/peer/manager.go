package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Errors returned by the Manager; test them with errors.Is.
var (
	// ErrQueueFull: the frame would take the peer's queue past QueueBytes.
	ErrQueueFull = errors.New("peer: queue full")
	// ErrBackoff: the last dial to the peer failed and the backoff delay has
	// not passed yet; the frame was not queued.
	ErrBackoff = errors.New("peer: connection down, in reconnect backoff")
	// ErrClosed: the Manager is closed.
	ErrClosed = errors.New("peer: manager closed")
	// ErrNoConn: Reply named a connection that does not exist (any more).
	ErrNoConn = errors.New("peer: no such connection")
	// ErrNoTLS: an address must be dialled with TLS but Config.TLS is nil.
	ErrNoTLS = errors.New("peer: TLS required but not configured")
)

// Defaults for zero Config fields.
const (
	DefaultQueueBytes   = 4 << 20
	DefaultWriteTimeout = time.Second
	DefaultDialTimeout  = time.Second
	DefaultBackoffMin   = 100 * time.Millisecond
	DefaultBackoffMax   = 5 * time.Second
)

// Config configures a [Manager]. Zero values take the defaults above.
type Config struct {
	// Transport reaches the network; nil means TCP().
	Transport Transport
	// ListenAddr is the "IP:PORT" to listen on (port 0 picks a free one).
	ListenAddr string
	// LocalIP is the source IP of outgoing connections ("" = any). OpenSIPS
	// receivers check it, so it must be the IP the node advertises.
	LocalIP string
	// QueueBytes bounds, per peer, the bytes queued and not yet written
	// (including the batch being written). A Send that would exceed it
	// fails with ErrQueueFull.
	QueueBytes int
	// WriteTimeout bounds how long a write may make no progress; expiry is
	// a connection failure. (A large batch to a slow peer may take longer as
	// a whole as long as bytes keep moving.)
	WriteTimeout time.Duration
	// DialTimeout bounds a dial, TLS handshake included, and the TLS
	// handshake of an accepted connection.
	DialTimeout time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay after a failed
	// dial; it doubles per consecutive failure, with jitter, and resets
	// on a successful connect.
	BackoffMin, BackoffMax time.Duration
	// OnFrame is called on the connection's read goroutine for every
	// received frame, in order. frame is valid only during the call. It must
	// not block for long: the connection is not read meanwhile.
	OnFrame func(c ConnInfo, frame []byte)
	// NewReceiver, if set, takes the place of OnFrame: it is called on the
	// reader goroutine of every connection before its first frame, and the
	// Receiver it returns gets that connection's frames, so it may keep
	// per-connection state (caches, batches) without locks.
	NewReceiver func(c ConnInfo) Receiver
	// OnFailure is called when an outgoing connection to addr fails: a
	// dial error or timeout, a write error or timeout, a reset or a close
	// by the peer. unsent holds, concatenated in queue order, the frames
	// queued for addr that were not fully written (a frame cut short is
	// lost to the receiver too); the callee owns it, and it is nil if there
	// were none. They are no longer queued: the owner may send them another
	// way (without OnFailure they are dropped and counted). Frames of a
	// write that completed are not in unsent even if the peer never read
	// them. It is called once per failed dial and once per broken
	// connection, from library goroutines, never with the Manager's locks
	// held, never after Close returns. It must not call Close.
	OnFailure func(addr string, err error, unsent []byte)
	// OnConnClosed is called once for every connection, accepted or
	// dialled, that had a reader, after its last OnFrame and on the same
	// goroutine, when it ends for any reason (Close included). Owners that
	// keep state per ConnInfo.ID drop it here.
	OnConnClosed func(c ConnInfo)
	// TLS secures connections (OpenSIPS's bins:): the listener when
	// ListenTLS is set (TLS then needs a certificate), and each outgoing
	// connection to an address for which DialTLS returns true (a nil
	// DialTLS secures none). The handshake is bounded by DialTimeout on
	// both sides.
	TLS       *tls.Config
	ListenTLS bool
	DialTLS   func(addr string) bool
	// Logger receives connection events at Debug and Info; nil = no logging.
	Logger *zap.Logger
}

// Receiver takes the frames of one connection, on its reader goroutine.
type Receiver interface {
	// Frame is called for every frame, in order. frame is valid only during
	// the call, unless lend is set and Frame returns true: then frame's
	// bytes are the Receiver's for good (the reader reads on into a new
	// buffer). lend is set when the read buffer is packed with frames
	// (bulk traffic), so that keeping frames costs an allocation per read
	// of many frames rather than a copy of each. Frame must not block for
	// long: the connection is not read meanwhile.
	Frame(frame []byte, lend bool) (keep bool)
	// Flush is called whenever no complete frame is buffered, before the
	// reader reads from the connection again (and before it ends): what
	// Frame put off to handle a whole read at once is done here, so nothing
	// waits for more bytes to arrive.
	Flush()
}

// frameFunc adapts Config.OnFrame to a Receiver.
type frameFunc struct {
	ci ConnInfo
	fn func(ConnInfo, []byte)
}

func (f frameFunc) Frame(frame []byte, _ bool) bool {
	if f.fn != nil {
		f.fn(f.ci, frame)
	}
	return false
}

func (frameFunc) Flush() {}

// ConnInfo identifies the connection a frame arrived on.
type ConnInfo struct {
	// ID is unique per connection within a Manager (never 0); see Reply.
	ID uint64
	// Outgoing is true for connections this Manager dialled.
	Outgoing bool
	// Remote is the other end: for an accepted connection the dialler's
	// source IP and ephemeral port, for an outgoing one the listener.
	Remote netip.AddrPort
	// PeerAddr is, for an outgoing connection, the address passed to Send.
	PeerAddr string
}

// Stats are the Manager's counters since New.
type Stats struct {
	FramesSent    uint64 // frames written successfully (Send and Reply)
	BytesSent     uint64
	WriteBatches  uint64 // Write calls, each a batch of frames (or one Reply)
	FramesRecv    uint64 // frames handed to OnFrame
	BytesRecv     uint64
	FramingErrors uint64 // connections closed because their stream could not be framed

	DroppedQueueFull   uint64 // frames refused by Send with ErrQueueFull
	DroppedBackoff     uint64 // frames refused by Send with ErrBackoff
	DroppedConnFailure uint64 // queued frames discarded by a failed dial or connection (no OnFailure)
	DroppedClosed      uint64 // queued frames discarded by Disconnect, Retire's failures or Close
	DroppedBytes       uint64 // bytes of the frames counted in the four above

	// Unsent counts queued frames a failed dial or connection kept from
	// being written, handed back through OnFailure.
	Unsent uint64

	Dials        uint64 // dial attempts
	DialFailures uint64
	Redials      uint64 // backoffs ended early by Redial
	ConnFailures uint64 // established outgoing connections that broke
	Accepted     uint64 // connections accepted

	// Queued is, per peer address, the bytes currently queued and unwritten.
	Queued map[string]int
	// Writers is the number of peers with a writer goroutine: those in
	// Queued plus those still finishing after Retire.
	Writers int
}

// counters are updated with atomics so the hot paths take no shared lock.
type counters struct {
	framesSent, bytesSent, writeBatches        atomic.Uint64
	framesRecv, bytesRecv, framingErrors       atomic.Uint64
	dropQueueFull, dropBackoff, dropConn       atomic.Uint64
	dropClosed, dropBytes, returned            atomic.Uint64
	dials, dialFailures, connFailures, accepts atomic.Uint64
	redials                                    atomic.Uint64
}

// Manager owns a listener, the outgoing connection and write queue of every
// peer it sends to, and every accepted connection. It is safe for concurrent
// use.
type Manager struct {
	cfg    Config
	log    *zap.Logger
	ctx    context.Context // cancelled by Close: aborts dials
	cancel context.CancelFunc
	nextID atomic.Uint64
	stats  counters
	wg     sync.WaitGroup // every goroutine the Manager started
	done   chan struct{}  // closed when Close has finished

	// lookup is peers for Send, replaced (under mu) whenever peers
	// changes, so that sending takes no shared lock; nil once closed.
	lookup atomic.Pointer[map[string]*peer]

	mu      sync.RWMutex
	closed  bool
	ln      net.Listener
	peers   map[string]*peer
	retired map[*peer]struct{} // removed by Retire, still writing
	conns   map[uint64]*conn   // live connections, accepted and outgoing
}

// New checks cfg, fills in defaults and returns a Manager. It starts nothing:
// Send works before Start (it dials lazily), Start adds the listener.
func New(cfg Config) (*Manager, error) {
	if cfg.Transport == nil {
		cfg.Transport = TCP()
	}
	if cfg.LocalIP != "" {
		if _, err := netip.ParseAddr(cfg.LocalIP); err != nil {
			return nil, fmt.Errorf("peer: LocalIP %q is not an IP address", cfg.LocalIP)
		}
	}
	if cfg.QueueBytes < 0 || cfg.WriteTimeout < 0 || cfg.DialTimeout < 0 ||
		cfg.BackoffMin < 0 || cfg.BackoffMax < 0 {
		return nil, errors.New("peer: negative limit in Config")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if cfg.QueueBytes == 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	def(&cfg.WriteTimeout, DefaultWriteTimeout)
	def(&cfg.DialTimeout, DefaultDialTimeout)
	def(&cfg.BackoffMin, DefaultBackoffMin)
	def(&cfg.BackoffMax, DefaultBackoffMax)
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	if cfg.ListenTLS {
		if cfg.TLS == nil {
			return nil, fmt.Errorf("%w: ListenTLS without Config.TLS", ErrNoTLS)
		}
		if len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil {
			return nil, errors.New("peer: ListenTLS needs a certificate in Config.TLS")
		}
	}
	if cfg.ListenTLS || cfg.DialTLS != nil {
		cfg.Transport = &tlsTransport{base: cfg.Transport, cfg: cfg.TLS, listen: cfg.ListenTLS,
			secure: cfg.DialTLS, timeout: cfg.DialTimeout, write: cfg.WriteTimeout}
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		cfg:     cfg,
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		peers:   make(map[string]*peer),
		retired: make(map[*peer]struct{}),
		conns:   make(map[uint64]*conn),
	}, nil
}

// Start listens on Config.ListenAddr and returns once listening (an address
// in use is an error). The accept loop runs until Close. ctx bounds only the
// start itself; it is not retained.
func (m *Manager) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return ErrClosed
	case m.ln != nil:
		return errors.New("peer: already started")
	}
	ln, err := m.cfg.Transport.Listen(m.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("peer: listen on %s: %w", m.cfg.ListenAddr, err)
	}
	m.ln = ln
	m.wg.Add(1)
	go m.acceptLoop(ln)
	m.log.Info("peer: listening", zap.Stringer("addr", ln.Addr()))
	return nil
}

// Addr is the listening address, nil before Start.
func (m *Manager) Addr() net.Addr {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ln == nil {
		return nil
	}
	return m.ln.Addr()
}

// Send queues a copy of frame, one whole BIN packet, for addr (the peer's
// listener, "IP:PORT"); the caller may reuse frame at once. The first Send to an address starts its
// writer, which dials. Send never blocks on the network. A nil error means
// queued, not delivered: a later failure is reported through OnFailure.
func (m *Manager) Send(addr string, frame []byte) error {
	for {
		p, err := m.peerFor(addr)
		if err != nil {
			return err
		}
		if err := p.enqueue(1, frame); err != errPeerGone {
			return err
		}
		// Disconnect removed p meanwhile; the next lookup makes a new one.
	}
}

// SendParts is Send of the frame made of parts concatenated, which saves
// the caller assembling it first.
func (m *Manager) SendParts(addr string, parts ...[]byte) error {
	for {
		p, err := m.peerFor(addr)
		if err != nil {
			return err
		}
		if err := p.enqueue(1, parts...); err != errPeerGone {
			return err
		}
	}
}

// SendMany queues all frames for addr, or none of them if they do not fit
// (ErrQueueFull) or the peer is in backoff.
func (m *Manager) SendMany(addr string, frames ...[]byte) error {
	for {
		p, err := m.peerFor(addr)
		if err != nil {
			return err
		}
		if err := p.enqueue(len(frames), frames...); err != errPeerGone {
			return err
		}
	}
}

// Reply writes frame on connection connID (typically an accepted one, as
// for UNKNOWN_ID), synchronously: it may block for up to about twice
// WriteTimeout if the peer does not read. It fails with ErrNoConn if the
// connection is gone. A write error closes the connection; for an outgoing
// one it is also reported through OnFailure, as any broken connection.
func (m *Manager) Reply(connID uint64, frame []byte) error {
	m.mu.RLock()
	c, closed := m.conns[connID], m.closed
	m.mu.RUnlock()
	switch {
	case closed:
		return ErrClosed
	case c == nil:
		return ErrNoConn
	}
	m.stats.writeBatches.Add(1)
	if _, err := c.write(frame, m.cfg.WriteTimeout); err != nil {
		err = fmt.Errorf("peer: reply on connection %d: %w", connID, err)
		// Closing wakes the reader, which reports an outgoing conn's
		// failure: OnFailure then runs on a library goroutine, not on the
		// caller's, which may hold its own locks.
		c.closeWith(err)
		return err
	}
	m.stats.framesSent.Add(1)
	m.stats.bytesSent.Add(uint64(len(frame)))
	return nil
}

// Redial ends a reconnect backoff towards addr, so that the next Send dials
// at once. The caller has just heard from the peer (it pinged us over its
// own connection): it is back, and waiting out a backoff of up to
// BackoffMax would only delay our answer. It does nothing if there is no
// backoff in progress.
func (m *Manager) Redial(addr string) {
	m.mu.RLock()
	p := m.peers[addr]
	m.mu.RUnlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	if !p.backoffUntil.IsZero() {
		p.backoffUntil = time.Time{}
		p.backoff = 0
		m.stats.redials.Add(1)
	}
	p.mu.Unlock()
}

// Disconnect closes the outgoing connection to addr, drops its queue and
// forgets its backoff, without reporting a failure (used when a node is
// disabled or removed). A later Send starts afresh. It does not wait for the
// peer's goroutines, so it may be called from callbacks.
func (m *Manager) Disconnect(addr string) {
	m.mu.Lock()
	p := m.peers[addr]
	if p != nil {
		delete(m.peers, addr)
		m.publishLocked()
	}
	m.mu.Unlock()
	if p != nil {
		p.shutdown()
		m.log.Debug("peer: disconnected", zap.String("peer", addr))
	}
}

// Retire is Disconnect for an address nothing will be sent to any more
// (its node was removed or disabled), except that what is already queued —
// typically the message telling the node so — is written first, bounded by
// DialTimeout and WriteTimeout; then the connection is closed and the
// writer ends. Failures on the way are not reported. A later Send to addr
// starts afresh alongside.
func (m *Manager) Retire(addr string) {
	m.mu.Lock()
	p := m.peers[addr]
	if p != nil {
		delete(m.peers, addr)
		m.retired[p] = struct{}{}
		m.publishLocked()
	}
	m.mu.Unlock()
	if p != nil {
		p.retire()
		m.log.Debug("peer: retiring", zap.String("peer", addr))
	}
}

// Addrs returns the addresses that have a peer (a queue and a writer):
// those sent to and not disconnected or retired since.
func (m *Manager) Addrs() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.peers))
	for addr := range m.peers {
		out = append(out, addr)
	}
	return out
}

func (m *Manager) forgetRetired(p *peer) {
	m.mu.Lock()
	delete(m.retired, p)
	m.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (m *Manager) Stats() Stats {
	c := &m.stats
	s := Stats{
		FramesSent:         c.framesSent.Load(),
		BytesSent:          c.bytesSent.Load(),
		WriteBatches:       c.writeBatches.Load(),
		FramesRecv:         c.framesRecv.Load(),
		BytesRecv:          c.bytesRecv.Load(),
		FramingErrors:      c.framingErrors.Load(),
		DroppedQueueFull:   c.dropQueueFull.Load(),
		DroppedBackoff:     c.dropBackoff.Load(),
		DroppedConnFailure: c.dropConn.Load(),
		DroppedClosed:      c.dropClosed.Load(),
		DroppedBytes:       c.dropBytes.Load(),
		Unsent:             c.returned.Load(),
		Dials:              c.dials.Load(),
		DialFailures:       c.dialFailures.Load(),
		Redials:            c.redials.Load(),
		ConnFailures:       c.connFailures.Load(),
		Accepted:           c.accepts.Load(),
	}
	m.mu.RLock()
	s.Queued = make(map[string]int, len(m.peers))
	for addr, p := range m.peers {
		p.mu.Lock()
		s.Queued[addr] = len(p.pending) + p.inflight
		p.mu.Unlock()
	}
	s.Writers = len(m.peers) + len(m.retired)
	m.mu.RUnlock()
	return s
}

// Close stops listening, closes every connection, aborts dials, discards
// queued frames and waits for every goroutine the Manager started. It is
// idempotent; concurrent calls all wait. It must not be called from
// OnFrame or OnFailure (it waits for the goroutines running them).
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.done
		return nil
	}
	m.closed = true
	m.cancel()
	ln := m.ln
	peers := make([]*peer, 0, len(m.peers)+len(m.retired))
	for _, p := range m.peers {
		peers = append(peers, p)
	}
	for p := range m.retired {
		peers = append(peers, p)
	}
	conns := make([]*conn, 0, len(m.conns))
	for _, c := range m.conns {
		conns = append(conns, c)
	}
	clear(m.peers)
	m.lookup.Store(nil)
	m.mu.Unlock()

	if ln != nil {
		_ = ln.Close()
	}
	// Peers first: clearing their current connection before it is closed
	// keeps its reader from reporting a failure.
	for _, p := range peers {
		p.shutdown()
	}
	for _, c := range conns {
		c.close()
	}
	m.wg.Wait()
	close(m.done)
	m.log.Info("peer: closed")
	return nil
}

// peerFor returns the peer for addr, creating it and its writer on first use.
func (m *Manager) peerFor(addr string) (*peer, error) {
	if l := m.lookup.Load(); l != nil {
		if p := (*l)[addr]; p != nil {
			return p, nil
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	p := m.peers[addr]
	if p == nil {
		p = newPeer(m, addr)
		m.peers[addr] = p
		m.publishLocked()
		m.wg.Add(1)
		go p.run()
	}
	return p, nil
}

// publishLocked replaces the lookup map with a copy of peers.
func (m *Manager) publishLocked() {
	l := maps.Clone(m.peers)
	m.lookup.Store(&l)
}

// track registers c and starts its reader, unless the Manager is closing;
// the closed check and wg.Add under one lock keep Close's Wait exact.
func (m *Manager) track(c *conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.conns[c.info.ID] = c
	m.wg.Add(1)
	go m.readLoop(c)
	return true
}

func (m *Manager) untrack(c *conn) {
	m.mu.Lock()
	if m.conns[c.info.ID] == c {
		delete(m.conns, c.info.ID)
	}
	m.mu.Unlock()
}

func (m *Manager) acceptLoop(ln net.Listener) {
	defer m.wg.Done()
	var pause time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (out of file descriptors, aborted handshake):
			// pause so a persistent condition does not spin the loop.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			m.log.Info("peer: accept failed", zap.Error(err), zap.Duration("retry_in", pause))
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-m.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		pause = 0
		setNoDelay(nc)
		c := m.newConn(nc, nil)
		if !m.track(c) {
			c.close()
			return
		}
		m.stats.accepts.Add(1)
		m.log.Debug("peer: accepted", zap.Uint64("conn", c.info.ID), zap.Stringer("remote", c.info.Remote))
	}
}

func (m *Manager) onFailure(addr string, err error, unsent []byte) {
	if m.cfg.OnFailure != nil {
		m.cfg.OnFailure(addr, err, unsent)
	}
}

// Queued returns the bytes queued for addr and not yet written, and the
// queue's bound. Bulk senders use it to leave room for other traffic.
func (m *Manager) Queued(addr string) (queued, bound int) {
	m.mu.RLock()
	p := m.peers[addr]
	m.mu.RUnlock()
	if p != nil {
		p.mu.Lock()
		queued = len(p.pending) + p.inflight
		p.mu.Unlock()
	}
	return queued, m.cfg.QueueBytes
}
