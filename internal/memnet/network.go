package memnet

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// DefaultBufferSize is the per-direction buffer of a connection unless
// [WithBufferSize] says otherwise.
const DefaultBufferSize = 256 << 10

// Ephemeral ports are taken from the IANA dynamic range, like most kernels.
const (
	ephemeralFirst = 49152
	ephemeralLast  = 65535
)

// Option configures a [Network].
type Option func(*config)

type config struct {
	seed    int64
	bufSize int
}

// WithSeed seeds the randomness used by [Network.Drop]. Each directed link gets
// its own generator derived from the seed and the two IPs, so the drop pattern
// on one link does not depend on traffic on other links. The default seed is 1,
// so runs are reproducible unless a test asks otherwise.
func WithSeed(seed int64) Option { return func(c *config) { c.seed = seed } }

// WithBufferSize sets how many bytes each direction of a connection buffers
// before Write blocks. Values below 1 are ignored.
func WithBufferSize(bytes int) Option {
	return func(c *config) {
		if bytes > 0 {
			c.bufSize = bytes
		}
	}
}

// Network is an in-memory network of hosts identified by IP. The zero value is
// not usable; call [New]. All methods are safe for concurrent use.
type Network struct {
	cfg  config
	done chan struct{} // closed by Close; wakes hanging dials

	mu        sync.Mutex
	closed    bool
	listeners map[netip.AddrPort]*listener
	used      map[netip.AddrPort]struct{} // ephemeral ports held by dialling ends
	nextPort  map[netip.Addr]int
	links     map[linkKey]*link
	conns     map[*pair]struct{}
	faultSig  signal // broadcast on every fault change so hanging dials re-check
}

// New returns an empty network.
func New(opts ...Option) *Network {
	cfg := config{seed: 1, bufSize: DefaultBufferSize}
	for _, o := range opts {
		o(&cfg)
	}
	return &Network{
		cfg:       cfg,
		done:      make(chan struct{}),
		listeners: make(map[netip.AddrPort]*listener),
		used:      make(map[netip.AddrPort]struct{}),
		nextPort:  make(map[netip.Addr]int),
		links:     make(map[linkKey]*link),
		conns:     make(map[*pair]struct{}),
	}
}

// Listen listens on addr, "IP:PORT". An empty or unspecified IP (":7000",
// "0.0.0.0:7000") accepts dials to any IP on that port; port 0 picks a free
// port. A taken address yields an error satisfying
// errors.Is(err, syscall.EADDRINUSE).
func (n *Network) Listen(addr string) (net.Listener, error) {
	ap, err := parseListenAddr(addr)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Err: err}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: tcpAddr(ap), Err: net.ErrClosed}
	}
	if ap.Port() == 0 {
		port, ok := n.freePortLocked(ap.Addr())
		if !ok {
			return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: tcpAddr(ap), Err: os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)}
		}
		ap = netip.AddrPortFrom(ap.Addr(), port)
	} else if !n.portFreeLocked(ap) {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: tcpAddr(ap), Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	}
	l := &listener{n: n, key: ap, addr: tcpAddr(ap), done: make(chan struct{})}
	l.dl.init()
	n.listeners[ap] = l
	return l, nil
}

// Dial connects from host localIP (an ephemeral port is assigned) to addr,
// "IP:PORT". It returns once the connection is queued on the listener, before
// Accept, like a TCP connect.
//
//   - link(localIP→IP) refused or cut: an immediate error satisfying
//     errors.Is(err, syscall.ECONNREFUSED).
//   - Nothing listening: the same error, at once (after the round trip if the
//     link is delayed, as a real RST would take).
//   - link(localIP→IP) blackholed: Dial hangs until ctx ends (error wraps
//     ctx.Err()), the blackhole is healed (Dial proceeds), or the network is
//     closed (net.ErrClosed).
//   - Delay on either direction: Dial takes the round trip, delay(A→B)+delay(B→A).
//   - Drop does not affect dials (think of SYNs as retransmitted).
func (n *Network) Dial(ctx context.Context, localIP, addr string) (net.Conn, error) {
	src, err := parseIP(localIP)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	dst, err := parseDialAddr(addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Source: &net.TCPAddr{IP: src.AsSlice()}, Err: err}
	}
	fail := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Source: &net.TCPAddr{IP: src.AsSlice()}, Addr: tcpAddr(dst), Err: err}
	}
	ctxDone := ctx.Done()
	handshaken := false
	for {
		if err := ctx.Err(); err != nil {
			return nil, fail(ctxError(err))
		}
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			return nil, fail(net.ErrClosed)
		}
		fwd := n.linkLocked(src, dst.Addr())
		rev := n.linkLocked(dst.Addr(), src)
		fwd.mu.Lock()
		refused, hang, rtt := fwd.cut || fwd.refuse, fwd.blackhole, fwd.delay
		fwd.mu.Unlock()
		rev.mu.Lock()
		rtt += rev.delay
		rev.mu.Unlock()

		switch {
		case refused:
			n.mu.Unlock()
			return nil, fail(os.NewSyscallError("connect", syscall.ECONNREFUSED))
		case hang:
			// No answer ever comes; wait for a fault change, ctx or Close.
			changed := n.faultSig.wait()
			n.mu.Unlock()
			select {
			case <-changed:
			case <-ctxDone:
			case <-n.done:
			}
			continue
		case rtt > 0 && !handshaken:
			n.mu.Unlock()
			t := time.NewTimer(rtt)
			select {
			case <-t.C:
				handshaken = true
			case <-ctxDone:
			case <-n.done:
			}
			t.Stop()
			continue // faults may have changed meanwhile
		}

		l := n.lookupLocked(dst)
		if l == nil {
			n.mu.Unlock()
			return nil, fail(os.NewSyscallError("connect", syscall.ECONNREFUSED))
		}
		port, ok := n.freePortLocked(src)
		if !ok {
			n.mu.Unlock()
			return nil, fail(os.NewSyscallError("connect", syscall.EADDRNOTAVAIL))
		}
		local := netip.AddrPortFrom(src, port)
		p := n.newPairLocked(local, dst, fwd, rev)
		// Lock order n.mu → l.mu; Listener.Close removes l from n.listeners
		// under n.mu before marking it closed, so l is open here.
		l.mu.Lock()
		l.backlog = append(l.backlog, p.ends[1])
		l.sig.broadcast()
		l.mu.Unlock()
		n.mu.Unlock()
		return p.ends[0], nil
	}
}

// DialFunc returns a dial function bound to source IP localIP, shaped like
// net.Dialer.DialContext so it can be injected where a dialler is expected.
// network must be "tcp", "tcp4" or "tcp6".
func (n *Network) DialFunc(localIP string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		switch network {
		case "tcp", "tcp4", "tcp6":
		default:
			return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
		}
		return n.Dial(ctx, localIP, addr)
	}
}

// Close closes every listener and every connection (their pending and future
// calls return net.ErrClosed), wakes hanging dials, and makes later Listen and
// Dial fail. It is idempotent and always returns nil.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.done)
	n.faultSig.broadcast()
	ls := make([]*listener, 0, len(n.listeners))
	for _, l := range n.listeners {
		ls = append(ls, l)
	}
	n.mu.Unlock()

	// Listeners first: that resets their unaccepted conns.
	for _, l := range ls {
		l.Close()
	}
	n.mu.Lock()
	ps := make([]*pair, 0, len(n.conns))
	for p := range n.conns {
		ps = append(ps, p)
	}
	n.mu.Unlock()
	for _, p := range ps {
		p.ends[0].Close()
		p.ends[1].Close()
	}
	return nil
}

// Cut breaks the directed link from→to: connections between the two hosts
// (dialled either way) are reset, so both ends' pending and future Read and
// Write fail with an error satisfying errors.Is(err, syscall.ECONNRESET); new
// dials from→to are refused (syscall.ECONNREFUSED). While the cut lasts, a
// Write that would carry bytes from→to over a connection dialled later from
// to→from also resets that connection.
func (n *Network) Cut(from, to string) {
	a, b := mustIP(from), mustIP(to)
	n.setFault(a, b, func(l *link) { l.cut = true })

	n.mu.Lock()
	var victims []*pair
	for p := range n.conns {
		x, y := p.ends[0].localIP, p.ends[1].localIP
		if (x == a && y == b) || (x == b && y == a) {
			victims = append(victims, p)
		}
	}
	n.mu.Unlock()
	for _, p := range victims {
		p.reset()
	}
}

// Blackhole makes bytes from→to vanish: Write succeeds but nothing arrives,
// and dials from→to hang with no answer until their ctx ends. The reverse
// direction is unaffected. Closing a connection still delivers EOF.
func (n *Network) Blackhole(from, to string) {
	n.setFault(mustIP(from), mustIP(to), func(l *link) { l.blackhole = true })
}

// Refuse makes new dials from→to fail at once with syscall.ECONNREFUSED;
// existing connections are unaffected.
func (n *Network) Refuse(from, to string) {
	n.setFault(mustIP(from), mustIP(to), func(l *link) { l.refuse = true })
}

// Delay makes bytes written from→to readable d after the Write that queued
// them, in order (a shorter delay set later never overtakes earlier bytes).
// EOF from a Close is delayed likewise. d <= 0 removes the delay.
func (n *Network) Delay(from, to string, d time.Duration) {
	n.setFault(mustIP(from), mustIP(to), func(l *link) { l.delay = max(d, 0) })
}

// Drop discards each Write call from→to whole with probability p (clamped to
// [0, 1]); the Write still reports success. Callers that write one frame per
// Write therefore lose whole frames, never parts.
func (n *Network) Drop(from, to string, p float64) {
	n.setFault(mustIP(from), mustIP(to), func(l *link) { l.dropP = min(max(p, 0), 1) })
}

// Heal clears every fault of the directed link from→to. Hanging dials re-check
// and proceed; connections reset by Cut stay reset.
func (n *Network) Heal(from, to string) {
	n.setFault(mustIP(from), mustIP(to), (*link).clearFaults)
}

// HealAll clears every fault on every link.
func (n *Network) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.links {
		l.mu.Lock()
		l.clearFaults()
		l.mu.Unlock()
	}
	n.faultSig.broadcast()
}

// LinkStats counts traffic on one directed link. Delivered counts Write calls
// (and their bytes) that went onto the link, to be read by the peer, possibly
// after a Delay; a Write cut short by an error adds its bytes but not a write.
// Dropped counts Write calls discarded by Drop or Blackhole.
type LinkStats struct {
	DeliveredWrites int64
	DeliveredBytes  int64
	DroppedWrites   int64
	DroppedBytes    int64
}

// Stats returns the traffic counters of the directed link from→to.
func (n *Network) Stats(from, to string) LinkStats {
	a, b := mustIP(from), mustIP(to)
	n.mu.Lock()
	l := n.linkLocked(a, b)
	n.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// OpenConns returns how many connections are open: dialled (accepted or still
// queued) and neither reset nor closed at both ends.
func (n *Network) OpenConns() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}

func (n *Network) setFault(from, to netip.Addr, f func(*link)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.linkLocked(from, to)
	l.mu.Lock()
	f(l)
	l.mu.Unlock()
	n.faultSig.broadcast()
}

func (n *Network) linkLocked(from, to netip.Addr) *link {
	k := linkKey{from, to}
	l := n.links[k]
	if l == nil {
		h := fnv.New64a()
		fmt.Fprintf(h, "%s>%s", from, to)
		l = &link{rng: rand.New(rand.NewPCG(uint64(n.cfg.seed), h.Sum64()))}
		n.links[k] = l
	}
	return l
}

// lookupLocked finds the listener for a dial: an exact match, else a
// wildcard listener on the same port.
func (n *Network) lookupLocked(dst netip.AddrPort) *listener {
	if l := n.listeners[dst]; l != nil {
		return l
	}
	if l := n.listeners[netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port())]; l != nil {
		return l
	}
	return n.listeners[netip.AddrPortFrom(netip.IPv6Unspecified(), dst.Port())]
}

// portFreeLocked reports whether ap can be bound: no listener or dialling end
// holds it, and wildcard and specific listeners on one port exclude each other.
func (n *Network) portFreeLocked(ap netip.AddrPort) bool {
	if _, ok := n.used[ap]; ok {
		return false
	}
	if n.listeners[ap] != nil {
		return false
	}
	if ap.Addr().IsUnspecified() {
		for k := range n.listeners {
			if k.Port() == ap.Port() {
				return false
			}
		}
		for k := range n.used {
			if k.Port() == ap.Port() {
				return false
			}
		}
		return true
	}
	return n.lookupLocked(ap) == nil
}

func (n *Network) freePortLocked(ip netip.Addr) (uint16, bool) {
	next := n.nextPort[ip]
	if next == 0 {
		next = ephemeralFirst
	}
	const span = ephemeralLast - ephemeralFirst + 1
	for range span {
		port := uint16(next)
		next++
		if next > ephemeralLast {
			next = ephemeralFirst
		}
		if n.portFreeLocked(netip.AddrPortFrom(ip, port)) {
			n.nextPort[ip] = next
			return port, true
		}
	}
	return 0, false
}

// unregister forgets a connection and frees its ephemeral port.
func (n *Network) unregister(p *pair) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unregisterLocked(p)
}

func (n *Network) unregisterLocked(p *pair) {
	if _, ok := n.conns[p]; !ok {
		return
	}
	delete(n.conns, p)
	delete(n.used, p.dialPort)
}

// endClosed records that one end of p was closed; a connection closed at both
// ends is no longer open.
func (n *Network) endClosed(p *pair, side int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p.closed[side] = true
	if p.closed[0] && p.closed[1] {
		n.unregisterLocked(p)
	}
}

type linkKey struct{ from, to netip.Addr }

// link is the fault state and counters of one directed host pair. Pipes keep
// a pointer to their link, so the hot path never takes Network.mu.
type link struct {
	mu        sync.Mutex
	cut       bool
	refuse    bool
	blackhole bool
	delay     time.Duration
	dropP     float64
	rng       *rand.Rand
	stats     LinkStats
}

func (l *link) clearFaults() {
	l.cut, l.refuse, l.blackhole, l.delay, l.dropP = false, false, false, 0, 0
}

type verdict int

const (
	deliver verdict = iota
	discard
	resetConn
)

// admit decides the fate of one Write of size bytes and, if it is delivered,
// the delay to apply.
func (l *link) admit(size int) (verdict, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.cut:
		return resetConn, 0
	case l.blackhole, l.dropP > 0 && l.rng.Float64() < l.dropP:
		l.stats.DroppedWrites++
		l.stats.DroppedBytes += int64(size)
		return discard, 0
	}
	return deliver, l.delay
}

func (l *link) delivered(bytes int, whole bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.DeliveredBytes += int64(bytes)
	if whole {
		l.stats.DeliveredWrites++
	}
}

func (l *link) currentDelay() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.delay
}

// signal is a broadcast that waiters can select on together with deadlines
// and contexts, which sync.Cond cannot do. Both methods need the owner's lock.
type signal struct{ ch chan struct{} }

func (s *signal) wait() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) broadcast() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

func parseIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("memnet: host %q is not an IP address", s)
	}
	return ip.Unmap().WithZone(""), nil
}

func mustIP(s string) netip.Addr {
	ip, err := parseIP(s)
	if err != nil {
		panic(err)
	}
	return ip
}

func parseHostPort(s string, emptyHost bool) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var ip netip.Addr
	if host == "" && emptyHost {
		ip = netip.IPv4Unspecified()
	} else if ip, err = parseIP(host); err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("memnet: invalid port in %q", s)
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

func parseListenAddr(s string) (netip.AddrPort, error) { return parseHostPort(s, true) }

func parseDialAddr(s string) (netip.AddrPort, error) {
	ap, err := parseHostPort(s, false)
	if err != nil {
		return ap, err
	}
	if ap.Port() == 0 || ap.Addr().IsUnspecified() {
		return ap, fmt.Errorf("memnet: cannot dial %q", s)
	}
	return ap, nil
}

func tcpAddr(ap netip.AddrPort) *net.TCPAddr { return net.TCPAddrFromAddrPort(ap) }
