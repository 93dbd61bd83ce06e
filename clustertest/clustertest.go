// Package clustertest runs clusters in memory, for tests of code that
// uses package clusterer, as net/http/httptest does for HTTP.
//
// A Network is a TCP-like network without sockets. Give it to each node as
// Config.Transport, give every node its own 127.0.0.x address, and break
// links between them at will:
//
//	nw := clustertest.NewNetwork()
//	defer nw.Close()
//	cfg.Transport = nw
//	...
//	nw.Cut("127.0.0.1", "127.0.0.3")
//
// Everything works inside testing/synctest bubbles (create the Network
// inside the bubble), so timeouts of seconds take no time.
package clustertest

import (
	"context"
	"net"
	"time"

	"github.com/clusterer-go/clusterer/internal/memnet"
)

// Network is an in-memory network. Hosts are IP addresses.
type Network struct{ n *memnet.Network }

// NewNetwork returns an empty network. Random packet loss (Drop) draws
// from seed.
func NewNetwork(seed ...int64) *Network {
	var opts []memnet.Option
	if len(seed) > 0 {
		opts = append(opts, memnet.WithSeed(seed[0]))
	}
	return &Network{n: memnet.New(opts...)}
}

// Listen implements clusterer.Transport.
func (nw *Network) Listen(addr string) (net.Listener, error) { return nw.n.Listen(addr) }

// Dial implements clusterer.Transport.
func (nw *Network) Dial(ctx context.Context, localIP, addr string) (net.Conn, error) {
	return nw.n.Dial(ctx, localIP, addr)
}

// Close closes every listener and connection.
func (nw *Network) Close() error { return nw.n.Close() }

// Cut breaks both directions between hosts a and b: connections are reset
// and new ones refused, as when a process dies or a firewall rejects.
func (nw *Network) Cut(a, b string) { nw.n.Cut(a, b); nw.n.Cut(b, a) }

// Blackhole silently drops everything from one host to another, as a
// dead link that sends no reset.
func (nw *Network) Blackhole(from, to string) { nw.n.Blackhole(from, to) }

// Refuse refuses new connections from one host to another.
func (nw *Network) Refuse(from, to string) { nw.n.Refuse(from, to) }

// Delay adds latency from one host to another.
func (nw *Network) Delay(from, to string, d time.Duration) { nw.n.Delay(from, to, d) }

// Drop loses each write from one host to another with probability p.
func (nw *Network) Drop(from, to string, p float64) { nw.n.Drop(from, to, p) }

// Heal removes every fault between a and b, both directions.
func (nw *Network) Heal(a, b string) { nw.n.Heal(a, b); nw.n.Heal(b, a) }

// HealAll removes every fault.
func (nw *Network) HealAll() { nw.n.HealAll() }
