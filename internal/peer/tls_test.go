package peer_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/internal/memnet"
	"github.com/clusterer-go/clusterer/internal/peer"
	"github.com/clusterer-go/clusterer/internal/testcert"
)

// withTLS makes a node listen with TLS and dial every address with it.
func withTLS(cfg *tls.Config) func(*peer.Config) {
	return func(c *peer.Config) {
		c.TLS = cfg
		c.ListenTLS = true
		c.DialTLS = func(string) bool { return true }
	}
}

// Mutual TLS on loopback TCP: frames both ways, Reply on the accepted
// connection, and a plaintext client gets nothing through.
func TestTLSExchangeTCP(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	mutual := func(c *peer.Config) { c.TLS.ClientAuth = tls.RequireAndVerifyClientCert }
	a := tcpNode(t, "127.0.0.1", withTLS(ca.Config(t, "127.0.0.1")), mutual)
	b := tcpNode(t, "127.0.0.1", withTLS(ca.Config(t, "127.0.0.1")), mutual)

	const count = 200
	for i := range count {
		require.NoError(t, a.Send(b.addr, frame(1, uint32(i), 28+i)))
		require.NoError(t, b.Send(a.addr, frame(2, uint32(i), 28+2*i)))
	}
	for _, nd := range []*node{a, b} {
		eventually(t, "frames", 5*time.Second, func() bool { return len(nd.rec.Frames()) == count })
	}
	for i, r := range b.rec.Frames() {
		require.Equal(t, frame(1, uint32(i), 28+i), r.frame)
	}
	in := b.rec.Frames()[0].info
	require.NoError(t, b.Reply(in.ID, typed(typeUnknownID)))
	eventually(t, "reply", 5*time.Second, func() bool { return len(a.rec.Frames()) == count+1 })
	assert.True(t, a.rec.Frames()[count].info.Outgoing)

	// Plaintext BIN to a TLS listener: the handshake fails, the
	// connection is closed, nothing is delivered.
	raw, err := net.Dial("tcp", b.addr)
	require.NoError(t, err)
	defer raw.Close()
	_, err = raw.Write(frame(3, 0, 64))
	require.NoError(t, err)
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadAll(raw) // EOF or a reset: the server closed it
	var ne net.Error
	if errors.As(err, &ne) {
		assert.False(t, ne.Timeout(), "the server kept the connection open")
	}
	assert.Len(t, b.rec.Frames(), count)
	assert.Empty(t, a.rec.Failures())
	assert.Empty(t, b.rec.Failures())
}

// A dialler that does not trust the server's CA fails its handshake; that
// is a dial failure, reported with the verification error, and the frames
// come back unsent. A client without a certificate is refused by a server
// that requires one.
func TestTLSUntrustedFailsTCP(t *testing.T) {
	good := testcert.NewCA(t, "cluster CA")
	rogue := testcert.NewCA(t, "rogue CA")
	b := tcpNode(t, "127.0.0.1", withTLS(good.Config(t, "127.0.0.1")),
		func(c *peer.Config) { c.TLS.ClientAuth = tls.RequireAndVerifyClientCert })

	bad := rogue.Config(t, "127.0.0.1") // its own cert is fine, its trust is not
	a := tcpNode(t, "127.0.0.1", withTLS(bad))
	require.NoError(t, a.Send(b.addr, frame(1, 0, 64)))
	eventually(t, "dial failure", 5*time.Second, func() bool { return len(a.rec.Failures()) == 1 })
	f := a.rec.Failures()[0]
	var unknown x509.UnknownAuthorityError
	assert.ErrorAs(t, f.err, &unknown)
	assert.Equal(t, frame(1, 0, 64), f.unsent)
	s := a.Stats()
	assert.Equal(t, uint64(1), s.DialFailures)
	assert.Equal(t, uint64(1), s.Unsent)

	// Trusting the server but showing no certificate: TLS 1.3 lets the
	// client finish first, so the refusal breaks the connection just after.
	anon := &tls.Config{RootCAs: good.Pool}
	c := tcpNode(t, "127.0.0.1", withTLS(good.Config(t, "127.0.0.1")),
		func(c *peer.Config) { c.TLS = anon; c.ListenTLS = false })
	require.NoError(t, c.Send(b.addr, frame(3, 0, 64)))
	eventually(t, "refusal", 5*time.Second, func() bool { return len(c.rec.Failures()) == 1 })
	time.Sleep(50 * time.Millisecond)
	assert.Empty(t, b.rec.Frames(), "nothing got through")
	eventually(t, "server side closed", 5*time.Second, func() bool { return len(b.rec.Closed()) == 2 })
}

// A client that connects and says nothing is dropped after DialTimeout:
// the accept-side handshake is bounded like the dialling side's, which
// DialTimeout bounds too.
func TestTLSSilentClientTimesOut(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA, withTLS(ca.Config(t, hostA)),
			func(c *peer.Config) { c.DialTimeout = 2 * time.Second })

		raw, err := n.Dial(context.Background(), hostC, a.addr)
		require.NoError(t, err)
		defer raw.Close()
		start := time.Now()
		_, err = io.ReadAll(raw) // EOF when the server gives up
		require.NoError(t, err)
		assert.Equal(t, 2*time.Second, time.Since(start))
		synctest.Wait()
		closed := a.rec.Closed()
		require.Len(t, closed, 1)
		assert.False(t, closed[0].Outgoing)
		assert.Equal(t, hostC, closed[0].Remote.Addr().String())
		raw.Close()
		assert.Zero(t, n.OpenConns())

		// And a server that accepts but never answers the ClientHello: the
		// dial, handshake included, fails after DialTimeout.
		l, err := n.Listen(addr(hostB))
		require.NoError(t, err)
		defer l.Close()
		start = time.Now()
		require.NoError(t, a.Send(addr(hostB), frame(1, 0, 50)))
		srv, err := l.Accept()
		require.NoError(t, err)
		defer srv.Close()
		time.Sleep(3 * time.Second)
		fails := a.rec.Failures()
		require.Len(t, fails, 1)
		assert.Equal(t, 2*time.Second, fails[0].at.Sub(start))
		assert.ErrorIs(t, fails[0].err, context.DeadlineExceeded)
		assert.Equal(t, uint64(1), a.Stats().DialFailures)
	})
}

// One Manager dials some addresses with TLS and others in plaintext, as a
// node of a cluster mixing bin: and bins: URLs does.
func TestTLSPerDestination(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		secure := func(to string) bool { return to == addr(hostB) }
		a := memNode(t, n, hostA, func(c *peer.Config) {
			c.TLS = ca.Config(t, hostA)
			c.DialTLS = secure
		})
		b := memNode(t, n, hostB, withTLS(ca.Config(t, hostB)))
		c := memNode(t, n, hostC)

		require.NoError(t, a.Send(b.addr, frame(1, 0, 100)))
		require.NoError(t, a.Send(c.addr, frame(1, 1, 100)))
		synctest.Wait()
		require.Len(t, b.rec.Frames(), 1)
		require.Len(t, c.rec.Frames(), 1)
		assert.Equal(t, frame(1, 0, 100), b.rec.Frames()[0].frame)
		assert.Equal(t, frame(1, 1, 100), c.rec.Frames()[0].frame)
		// The TLS link carried more than the frame: handshake and records.
		assert.Greater(t, n.Stats(hostA, hostB).DeliveredBytes, int64(100))
		assert.Equal(t, int64(100), n.Stats(hostA, hostC).DeliveredBytes)

		// A node without TLS asked to dial securely fails at once.
		d := memNode(t, n, hostD, func(c *peer.Config) { c.DialTLS = secure })
		require.NoError(t, d.Send(b.addr, frame(4, 0, 100)))
		synctest.Wait()
		require.Len(t, d.rec.Failures(), 1)
		assert.ErrorIs(t, d.rec.Failures()[0].err, peer.ErrNoTLS)
	})
}

// slowConn lets a test read at most 2 KiB per 600 ms from a connection.
type slowConn struct{ net.Conn }

func (c slowConn) Read(b []byte) (int, error) {
	time.Sleep(600 * time.Millisecond)
	return c.Conn.Read(b[:min(len(b), 2048)])
}

// A TLS write that times out breaks the TLS state for good, so WriteTimeout
// is applied under TLS, per socket write: a big batch to a slow but live
// peer still goes through, as in plaintext.
func TestTLSSlowPeerIsNotAFailure(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(4096))
		defer n.Close()
		l, err := n.Listen(addr(hostB))
		require.NoError(t, err)
		defer l.Close()
		a := memNode(t, n, hostA, withTLS(ca.Config(t, hostA)),
			func(c *peer.Config) { c.WriteTimeout = time.Second; c.DialTimeout = 10 * time.Second })

		var want []byte
		var frames [][]byte
		for i := range 64 {
			f := frame(1, uint32(i), 1024)
			want = append(want, f...)
			frames = append(frames, f)
		}
		require.NoError(t, a.SendMany(addr(hostB), frames...))
		raw, err := l.Accept()
		require.NoError(t, err)
		srv := tls.Server(slowConn{raw}, ca.Config(t, hostB))
		defer srv.Close()
		got := make([]byte, len(want))
		_, err = io.ReadFull(srv, got)
		require.NoError(t, err)
		assert.Equal(t, want, got)
		assert.Empty(t, a.rec.Failures())
		assert.Equal(t, uint64(64), a.Stats().FramesSent)
	})
}

func TestTLSConfigChecked(t *testing.T) {
	_, err := peer.New(peer.Config{ListenTLS: true})
	assert.ErrorIs(t, err, peer.ErrNoTLS)
	_, err = peer.New(peer.Config{ListenTLS: true, TLS: &tls.Config{}})
	assert.ErrorContains(t, err, "certificate")
}
