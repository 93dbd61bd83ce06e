package memnet

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

type listener struct {
	n    *Network
	key  netip.AddrPort
	addr *net.TCPAddr
	done chan struct{} // closed by Close
	dl   deadline

	mu      sync.Mutex
	sig     signal // a conn was queued
	backlog []*conn
	closed  bool
}

// Accept waits for the next connection. It returns an error wrapping
// net.ErrClosed once the listener (or the Network) is closed, and one wrapping
// os.ErrDeadlineExceeded when a deadline set with SetDeadline passes.
func (l *listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		switch {
		case l.closed:
			l.mu.Unlock()
			return nil, l.opErr("accept", net.ErrClosed)
		case isClosed(l.dl.wait()):
			l.mu.Unlock()
			return nil, l.opErr("accept", os.ErrDeadlineExceeded)
		case len(l.backlog) > 0:
			c := l.backlog[0]
			l.backlog[0] = nil
			l.backlog = l.backlog[1:]
			l.mu.Unlock()
			return c, nil
		}
		queued := l.sig.wait()
		l.mu.Unlock()
		select {
		case <-queued:
		case <-l.done:
		case <-l.dl.wait():
		}
	}
}

// Close stops listening: blocked and later Accepts fail with net.ErrClosed,
// dials to the address are refused, and connections queued but not accepted
// are reset (their diallers see ECONNRESET).
func (l *listener) Close() error {
	// Leave the address table first so no dial can queue on a closed listener.
	l.n.mu.Lock()
	if l.n.listeners[l.key] == l {
		delete(l.n.listeners, l.key)
	}
	l.n.mu.Unlock()

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.opErr("close", net.ErrClosed)
	}
	l.closed = true
	pending := l.backlog
	l.backlog = nil
	close(l.done)
	l.sig.broadcast()
	l.mu.Unlock()

	l.dl.stop()
	for _, c := range pending {
		c.pair.reset()
	}
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

// SetDeadline sets the deadline for Accept, as on *net.TCPListener.
func (l *listener) SetDeadline(t time.Time) error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return l.opErr("set", net.ErrClosed)
	}
	l.dl.set(t)
	return nil
}

func (l *listener) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Addr: l.addr, Err: err}
}
