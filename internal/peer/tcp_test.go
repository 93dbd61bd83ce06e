package peer_test

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/internal/peer"
)

// tcpNode starts a node on real loopback TCP, listening on a free port of ip
// and dialling from ip.
func tcpNode(t testing.TB, ip string, opts ...func(*peer.Config)) *node {
	t.Helper()
	return startNode(t, peer.TCP(), ip+":0", ip, opts...)
}

func TestTCPExchange(t *testing.T) {
	a := tcpNode(t, "127.0.0.1")
	b := tcpNode(t, "127.0.0.1")
	const count = 500
	for i := range count {
		require.NoError(t, a.Send(b.addr, frame(1, uint32(i), 28+i%500)))
		require.NoError(t, b.Send(a.addr, frame(2, uint32(i), 28+i%300)))
	}
	for _, nd := range []*node{a, b} {
		eventually(t, "frames", 5*time.Second, func() bool { return len(nd.rec.Frames()) == count })
	}
	for _, x := range []struct {
		nd     *node
		sender uint32
		mod    int
	}{{b, 1, 500}, {a, 2, 300}} {
		for i, r := range x.nd.rec.Frames() {
			require.Equal(t, frame(x.sender, uint32(i), 28+i%x.mod), r.frame)
			assert.False(t, r.info.Outgoing)
			assert.Equal(t, "127.0.0.1", r.info.Remote.Addr().String())
		}
	}

	// Reply on the accepted connection reaches the dialler's reader.
	in := b.rec.Frames()[0].info
	require.NoError(t, b.Reply(in.ID, typed(typeUnknownID)))
	eventually(t, "reply", 5*time.Second, func() bool { return len(a.rec.Frames()) == count+1 })
	last := a.rec.Frames()[count]
	assert.Equal(t, int32(typeUnknownID), typeOf(t, last.frame))
	assert.True(t, last.info.Outgoing)
	assert.Equal(t, b.addr, last.info.PeerAddr)
	assert.Equal(t, b.addr, last.info.Remote.String())
	assert.Empty(t, a.rec.Failures())
	assert.Empty(t, b.rec.Failures())
}

// A peer process that dies is noticed by the reader of the outgoing
// connection as soon as the kernel closes its socket, without sending.
func TestTCPCrashDetected(t *testing.T) {
	a := tcpNode(t, "127.0.0.1")
	b := tcpNode(t, "127.0.0.1")
	require.NoError(t, a.Send(b.addr, frame(1, 0, 64)))
	eventually(t, "delivery", 5*time.Second, func() bool { return len(b.rec.Frames()) == 1 })

	start := time.Now()
	require.NoError(t, b.Close())
	eventually(t, "OnFailure", 5*time.Second, func() bool { return len(a.rec.Failures()) == 1 })
	f := a.rec.Failures()[0]
	took := f.at.Sub(start)
	t.Logf("crash reported after %v: %v", took, f.err)
	assert.Less(t, took, time.Second)
	assert.Equal(t, b.addr, f.addr)

	// The next Send redials at once; the refusal is reported and backoff
	// starts.
	require.NoError(t, a.Send(b.addr, frame(1, 1, 64)))
	eventually(t, "refused dial", 5*time.Second, func() bool { return len(a.rec.Failures()) == 2 })
	assert.ErrorIs(t, a.rec.Failures()[1].err, syscall.ECONNREFUSED)
	assert.ErrorIs(t, a.Send(b.addr, frame(1, 2, 64)), peer.ErrBackoff)
}

// Outgoing connections come from LocalIP, which OpenSIPS receivers check.
func TestTCPLocalIP(t *testing.T) {
	b := tcpNode(t, "127.0.0.1")
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		t.Run(ip, func(t *testing.T) {
			l, err := net.Listen("tcp", ip+":0")
			if err != nil {
				t.Skipf("cannot bind %s here: %v", ip, err)
			}
			l.Close()
			before := len(b.rec.Frames())
			a := tcpNode(t, ip)
			require.NoError(t, a.Send(b.addr, frame(1, 0, 64)))
			eventually(t, "delivery", 5*time.Second, func() bool { return len(b.rec.Frames()) == before+1 })
			assert.Equal(t, ip, b.rec.Frames()[before].info.Remote.Addr().String())
		})
	}
}

func TestTCPAddrInUse(t *testing.T) {
	a := tcpNode(t, "127.0.0.1")
	m, err := peer.New(peer.Config{ListenAddr: a.addr})
	require.NoError(t, err)
	assert.ErrorIs(t, m.Start(t.Context()), syscall.EADDRINUSE)
	require.NoError(t, m.Close())
}
