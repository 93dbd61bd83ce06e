package peer

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// tlsTransport wraps a Transport with TLS (OpenSIPS's bins: scheme): the
// listener if listen is set, and each dial whose address secure accepts.
// Both sides bound the handshake by timeout, so neither a dead server nor
// a silent client holds a goroutine.
type tlsTransport struct {
	base    Transport
	cfg     *tls.Config // nil: a secure dial fails with ErrNoTLS
	listen  bool
	secure  func(addr string) bool
	timeout time.Duration // accept-side handshake; dials use their ctx
	write   time.Duration // WriteTimeout, applied below TLS (see progressConn)
}

func (t *tlsTransport) Listen(addr string) (net.Listener, error) {
	ln, err := t.base.Listen(addr)
	if err != nil || !t.listen {
		return ln, err
	}
	return &tlsListener{Listener: ln, t: t}, nil
}

func (t *tlsTransport) Dial(ctx context.Context, localIP, addr string) (net.Conn, error) {
	if t.secure == nil || !t.secure(addr) {
		return t.base.Dial(ctx, localIP, addr)
	}
	if t.cfg == nil {
		return nil, fmt.Errorf("%w (dialling %s)", ErrNoTLS, addr)
	}
	raw, err := t.base.Dial(ctx, localIP, addr)
	if err != nil {
		return nil, err
	}
	cfg := t.cfg
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		// As tls.Dial does: verify the certificate against the host dialled
		// (an IP here, matched against the certificate's IP SANs).
		host, _, _ := net.SplitHostPort(addr)
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	c := t.wrap(raw, func(pc net.Conn) *tls.Conn { return tls.Client(pc, cfg) })
	// ctx carries DialTimeout; on expiry the handshake closes raw.
	if err := c.Conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("peer: TLS handshake with %s: %w", addr, err)
	}
	c.ready.Store(true)
	return c, nil
}

func (t *tlsTransport) wrap(raw net.Conn, side func(net.Conn) *tls.Conn) *tlsConn {
	return &tlsConn{Conn: side(&progressConn{Conn: raw, timeout: t.write}), raw: raw, timeout: t.timeout}
}

type tlsListener struct {
	net.Listener
	t *tlsTransport
}

// Accept does not handshake: that would let one silent client stall the
// accept loop. The handshake runs on the connection's first Read or Write,
// on the goroutine reading it, bounded by the timeout.
func (l *tlsListener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	setNoDelay(raw)
	return l.t.wrap(raw, func(pc net.Conn) *tls.Conn { return tls.Server(pc, l.t.cfg) }), nil
}

// tlsConn is a TLS connection as the Manager needs it.
type tlsConn struct {
	*tls.Conn
	raw     net.Conn
	timeout time.Duration
	ready   atomic.Bool // handshake done
}

func (c *tlsConn) handshake() error {
	if c.ready.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := c.Conn.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("peer: TLS handshake: %w", err)
	}
	c.ready.Store(true)
	return nil
}

func (c *tlsConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *tlsConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// Close closes the socket without a close_notify alert: sending one may
// block for seconds on a peer that stopped reading, and BIN framing already
// detects a truncated stream.
func (c *tlsConn) Close() error { return c.raw.Close() }

// SetWriteDeadline and SetDeadline leave writes to progressConn: a TLS
// write that times out poisons the connection for good, which would turn a
// slow but live peer into a failure.
func (c *tlsConn) SetWriteDeadline(time.Time) error { return nil }

func (c *tlsConn) SetDeadline(t time.Time) error { return c.raw.SetReadDeadline(t) }

// progressConn is the socket under TLS: its writes fail only when no byte
// moves for timeout, the Manager's rule for plain connections too.
type progressConn struct {
	net.Conn
	timeout time.Duration
}

func (c *progressConn) Write(b []byte) (int, error) { return writeProgress(c.Conn, b, c.timeout) }
