package main

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// bhTransport is real TCP (clusterer.Transport) that can silently
// blackhole a host: while a host is blackholed, nothing is delivered
// between it and anyone, in either direction, and no socket is closed —
// as when a machine freezes or a switch port dies without a reset.
//
//   - Write on a connection touching the host succeeds and discards the
//     bytes (whole writes only: the peer writer writes whole frames, so
//     the stream framing survives the blackhole).
//   - Read blocks until the blackhole is lifted or the connection closed.
//   - Dial from or to the host hangs until the dial context ends, as an
//     unanswered SYN does.
type bhTransport struct {
	mu      sync.Mutex
	holes   map[string]bool
	changed chan struct{} // closed and replaced on every change
}

func newBHTransport() *bhTransport {
	return &bhTransport{holes: map[string]bool{}, changed: make(chan struct{})}
}

func (t *bhTransport) set(host string, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.holes[host] = on
	close(t.changed)
	t.changed = make(chan struct{})
}

// holed reports whether traffic between a and b is blackholed, and a
// channel closed at the next change.
func (t *bhTransport) holed(a, b string) (bool, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.holes[a] || t.holes[b], t.changed
}

func (t *bhTransport) Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &bhListener{Listener: ln, t: t}, nil
}

func (t *bhTransport) Dial(ctx context.Context, localIP, addr string) (net.Conn, error) {
	rh, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if on, _ := t.holed(localIP, rh); on {
		<-ctx.Done()
		return nil, fmt.Errorf("dial %s from %s: blackholed: %w", addr, localIP, ctx.Err())
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return t.wrap(c), nil
}

func (t *bhTransport) wrap(c net.Conn) net.Conn {
	lh, _, _ := net.SplitHostPort(c.LocalAddr().String())
	rh, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	return &bhConn{Conn: c, t: t, lh: lh, rh: rh, closed: make(chan struct{})}
}

type bhListener struct {
	net.Listener
	t *bhTransport
}

func (l *bhListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.t.wrap(c), nil
}

type bhConn struct {
	net.Conn
	t      *bhTransport
	lh, rh string
	once   sync.Once
	closed chan struct{}
}

func (c *bhConn) Read(b []byte) (int, error) {
	for {
		on, ch := c.t.holed(c.lh, c.rh)
		if !on {
			break
		}
		select {
		case <-ch:
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	return c.Conn.Read(b)
}

func (c *bhConn) Write(b []byte) (int, error) {
	if on, _ := c.t.holed(c.lh, c.rh); on {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *bhConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
