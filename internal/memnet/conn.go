package memnet

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	_ net.Conn     = (*conn)(nil)
	_ net.Listener = (*listener)(nil)
)

// pair is one connection: two ends and a pipe per direction.
type pair struct {
	n        *Network
	ends     [2]*conn // 0: dialling end, 1: accepting end
	closed   [2]bool  // guarded by n.mu
	dialPort netip.AddrPort
}

func (n *Network) newPairLocked(local, remote netip.AddrPort, fwd, rev *link) *pair {
	p := &pair{n: n, dialPort: local}
	a2b := &pipe{link: fwd, cap: n.cfg.bufSize}
	b2a := &pipe{link: rev, cap: n.cfg.bufSize}
	p.ends[0] = newConn(p, 0, local, remote, b2a, a2b)
	p.ends[1] = newConn(p, 1, remote, local, a2b, b2a)
	n.conns[p] = struct{}{}
	n.used[local] = struct{}{}
	return p
}

// reset aborts the connection like a TCP RST: buffered bytes are lost and both
// ends fail with ECONNRESET.
func (p *pair) reset() {
	for _, pp := range []*pipe{p.ends[0].tx, p.ends[1].tx} {
		pp.mu.Lock()
		pp.reset = true
		pp.segs, pp.buffered = nil, 0
		pp.sig.broadcast()
		pp.mu.Unlock()
	}
	p.n.unregister(p)
}

type segment struct {
	data    []byte
	readyAt time.Time // readable from this instant on (Delay)
}

// pipe carries one direction of a connection. The writer blocks while
// buffered == cap; the reader blocks while no segment is ready.
type pipe struct {
	link *link // faults and stats of the direction carried
	cap  int

	mu        sync.Mutex
	sig       signal // any state change: data, space, close, reset
	segs      []segment
	buffered  int
	lastReady time.Time // readyAt of the newest segment; keeps delayed bytes in order
	eof       bool      // writing end closed
	eofAt     time.Time // EOF shows after the delay, like a FIN on the wire
	rclosed   bool      // reading end closed; writes fail with EPIPE
	reset     bool
}

type conn struct {
	pair    *pair
	side    int
	localIP netip.Addr
	local   *net.TCPAddr
	remote  *net.TCPAddr
	rx, tx  *pipe

	// wlock serialises Writes so that one Write's bytes stay contiguous (as
	// with a real socket). It is a channel, not a mutex, so that a Write
	// queued behind a blocked one is durably blocked and obeys deadlines.
	wlock  chan struct{}
	done   chan struct{} // closed by Close
	closed atomic.Bool
	rd, wd deadline
}

func newConn(p *pair, side int, local, remote netip.AddrPort, rx, tx *pipe) *conn {
	c := &conn{
		pair:    p,
		side:    side,
		localIP: local.Addr(),
		local:   tcpAddr(local),
		remote:  tcpAddr(remote),
		rx:      rx,
		tx:      tx,
		wlock:   make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	c.rd.init()
	c.wd.init()
	return c
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

func (c *conn) Read(b []byte) (int, error) {
	p := c.rx
	for {
		p.mu.Lock()
		switch {
		case c.closed.Load():
			p.mu.Unlock()
			return 0, c.opErr("read", net.ErrClosed)
		case p.reset:
			p.mu.Unlock()
			return 0, c.opErr("read", os.NewSyscallError("read", syscall.ECONNRESET))
		case isClosed(c.rd.wait()):
			p.mu.Unlock()
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		case len(b) == 0:
			p.mu.Unlock()
			return 0, nil
		}
		now := time.Now()
		n := 0
		for n < len(b) && len(p.segs) > 0 && !p.segs[0].readyAt.After(now) {
			k := copy(b[n:], p.segs[0].data)
			n += k
			if k == len(p.segs[0].data) {
				p.segs[0] = segment{}
				p.segs = p.segs[1:]
			} else {
				p.segs[0].data = p.segs[0].data[k:]
			}
		}
		if n > 0 {
			p.buffered -= n
			p.sig.broadcast() // room for the writer
			p.mu.Unlock()
			return n, nil
		}
		var wakeAt time.Time
		switch {
		case len(p.segs) > 0:
			wakeAt = p.segs[0].readyAt
		case p.eof && !p.eofAt.After(now):
			p.mu.Unlock()
			return 0, io.EOF
		case p.eof:
			wakeAt = p.eofAt
		}
		changed := p.sig.wait()
		p.mu.Unlock()

		var timer *time.Timer
		var ready <-chan time.Time
		if !wakeAt.IsZero() {
			timer = time.NewTimer(wakeAt.Sub(now))
			ready = timer.C
		}
		select {
		case <-changed:
		case <-ready:
		case <-c.rd.wait():
		case <-c.done:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func (c *conn) Write(b []byte) (int, error) {
	select {
	case c.wlock <- struct{}{}:
	default:
		select {
		case c.wlock <- struct{}{}:
		case <-c.wd.wait():
			return 0, c.opErr("write", os.ErrDeadlineExceeded)
		case <-c.done:
			return 0, c.opErr("write", net.ErrClosed)
		}
	}
	defer func() { <-c.wlock }()

	p := c.tx
	p.mu.Lock()
	err := c.writeErrLocked()
	p.mu.Unlock()
	if err != nil || len(b) == 0 {
		return 0, err
	}

	v, delay := p.link.admit(len(b))
	switch v {
	case discard:
		return len(b), nil
	case resetConn:
		c.pair.reset()
		return 0, c.opErr("write", os.NewSyscallError("write", syscall.ECONNRESET))
	}

	n := 0
	for n < len(b) {
		p.mu.Lock()
		if err := c.writeErrLocked(); err != nil {
			p.mu.Unlock()
			p.link.delivered(n, false)
			return n, err
		}
		if space := p.cap - p.buffered; space > 0 {
			k := min(space, len(b)-n)
			data := make([]byte, k) // the caller may reuse b after Write returns
			copy(data, b[n:n+k])
			readyAt := time.Now().Add(delay)
			if readyAt.Before(p.lastReady) {
				readyAt = p.lastReady
			}
			p.segs = append(p.segs, segment{data: data, readyAt: readyAt})
			p.buffered += k
			p.lastReady = readyAt
			n += k
			p.sig.broadcast()
			p.mu.Unlock()
			continue
		}
		changed := p.sig.wait()
		p.mu.Unlock()
		select {
		case <-changed:
		case <-c.wd.wait():
		case <-c.done:
		}
	}
	p.link.delivered(n, true)
	return n, nil
}

// writeErrLocked reports why a Write cannot proceed, if it cannot. c.tx.mu
// must be held.
func (c *conn) writeErrLocked() error {
	switch {
	case c.closed.Load():
		return c.opErr("write", net.ErrClosed)
	case c.tx.reset:
		return c.opErr("write", os.NewSyscallError("write", syscall.ECONNRESET))
	case c.tx.rclosed:
		return c.opErr("write", os.NewSyscallError("write", syscall.EPIPE))
	case isClosed(c.wd.wait()):
		return c.opErr("write", os.ErrDeadlineExceeded)
	}
	return nil
}

// Close closes this end. Unread incoming bytes are discarded and the peer's
// further Writes fail with EPIPE; the peer reads what this end wrote, then
// io.EOF. Pending calls on this end return net.ErrClosed.
func (c *conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.opErr("close", net.ErrClosed)
	}
	close(c.done)
	c.rd.stop()
	c.wd.stop()

	c.rx.mu.Lock()
	c.rx.rclosed = true
	c.rx.segs, c.rx.buffered = nil, 0
	c.rx.sig.broadcast()
	c.rx.mu.Unlock()

	delay := c.tx.link.currentDelay()
	c.tx.mu.Lock()
	if !c.tx.eof {
		c.tx.eof = true
		c.tx.eofAt = time.Now().Add(delay)
		if c.tx.eofAt.Before(c.tx.lastReady) {
			c.tx.eofAt = c.tx.lastReady
		}
	}
	c.tx.sig.broadcast()
	c.tx.mu.Unlock()

	c.pair.n.endClosed(c.pair, c.side)
	return nil
}

func (c *conn) SetDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

func (c *conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rd.set(t)
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.wd.set(t)
	return nil
}

func (c *conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}

// deadline is a channel closed when the deadline passes, so waiters can
// select on it. Extending a deadline keeps the same channel (blocked calls
// keep waiting for the new time); moving it to the past closes it (blocked
// calls return).
type deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	ch      chan struct{}
	stopped bool // owner closed: schedule nothing more
}

func (d *deadline) init() { d.ch = make(chan struct{}) }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the callback is running; let it close ch before judging it
	}
	d.timer = nil
	expired := isClosed(d.ch)
	if t.IsZero() {
		if expired {
			d.ch = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if expired {
			d.ch = make(chan struct{})
		}
		ch := d.ch
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !expired {
		close(d.ch)
	}
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// stop cancels a pending timer so a closed conn leaves nothing scheduled.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// dialTimeout is what a dial reports when its context deadline passes; like
// the net package's error it is a net.Error timeout and matches both
// context.DeadlineExceeded and os.ErrDeadlineExceeded.
type dialTimeout struct{}

func (dialTimeout) Error() string   { return "i/o timeout" }
func (dialTimeout) Timeout() bool   { return true }
func (dialTimeout) Temporary() bool { return true }
func (dialTimeout) Is(target error) bool {
	return target == context.DeadlineExceeded || target == os.ErrDeadlineExceeded
}

func ctxError(err error) error {
	if err == context.DeadlineExceeded {
		return dialTimeout{}
	}
	return err
}
