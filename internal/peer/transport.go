package peer

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Transport abstracts the network so tests can run on an in-memory one.
type Transport interface {
	// Listen listens on addr, "IP:PORT".
	Listen(addr string) (net.Listener, error)
	// Dial connects to addr from localIP ("" lets the system choose). It
	// must honour ctx's deadline and cancellation.
	Dial(ctx context.Context, localIP, addr string) (net.Conn, error)
}

// TCP returns the Transport of real TCP sockets. Outgoing connections are
// bound to the local IP (with an ephemeral port) because OpenSIPS receivers
// accept a node's packets only from its advertised IP. Nagle's algorithm is
// off on every connection: the writer already coalesces frames, and a delayed
// ping would skew link probing.
func TCP() Transport { return tcpTransport{} }

type tcpTransport struct{}

func (tcpTransport) Listen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(context.Background(), "tcp", addr)
}

func (tcpTransport) Dial(ctx context.Context, localIP, addr string) (net.Conn, error) {
	var d net.Dialer
	if localIP != "" {
		ip, err := netip.ParseAddr(localIP)
		if err != nil {
			return nil, fmt.Errorf("peer: local IP %q: %w", localIP, err)
		}
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	setNoDelay(c)
	return c, nil
}

// setNoDelay disables Nagle's algorithm where the conn supports it (Go's
// default already does for TCP; saying so keeps it independent of that).
func setNoDelay(c net.Conn) {
	if tc, ok := c.(interface{ SetNoDelay(bool) error }); ok {
		_ = tc.SetNoDelay(true)
	}
}
