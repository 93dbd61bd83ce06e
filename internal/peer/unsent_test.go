package peer_test

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/memnet"
	"github.com/clusterer-go/clusterer/internal/peer"
)

// split cuts concatenated frames apart.
func split(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		n, err := bin.FrameLen(b)
		require.NoError(t, err)
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// When a connection breaks, the frames not fully written — the rest of the
// batch being written, then the queue — go back to the owner with the
// failure, in order, whichever goroutine saw the break first.
func TestBrokenConnHandsBackUnwrittenFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(4096))
		defer n.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) { c.WriteTimeout = time.Hour })
		b := memNode(t, n, hostB)
		require.NoError(t, a.Send(b.addr, frame(1, 0, 100)))
		synctest.Wait()
		require.Len(t, b.rec.Frames(), 1)

		// Bytes in flight fill the 4 KiB buffer: the writer blocks in the
		// middle of frame 41 (41×100 > 4096) and the rest stays queued.
		n.Delay(hostA, hostB, time.Hour)
		const count = 100
		for i := 1; i <= count; i++ {
			require.NoError(t, a.Send(b.addr, frame(1, uint32(i), 100)))
		}
		synctest.Wait()
		n.Cut(hostA, hostB)
		synctest.Wait()

		fails := a.rec.Failures()
		require.Len(t, fails, 1)
		if !errors.Is(fails[0].err, syscall.ECONNRESET) {
			assert.ErrorIs(t, fails[0].err, io.EOF)
		}
		got := split(t, fails[0].unsent)
		const written = 4096 / 100 // frames 1..40 went into the socket
		require.Len(t, got, count-written)
		for i, f := range got {
			assert.Equal(t, frame(1, uint32(written+1+i), 100), f)
		}
		s := a.Stats()
		assert.Equal(t, uint64(count-written), s.Unsent)
		assert.Equal(t, uint64(1+written), s.FramesSent)
		assert.Zero(t, s.DroppedConnFailure)
		assert.Equal(t, 0, s.Queued[b.addr])
	})
}

// Without OnFailure the frames are dropped and counted, as before.
func TestBrokenConnWithoutOnFailureDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) { c.OnFailure = nil })
		n.Blackhole(hostA, hostB)
		for i := range 3 {
			require.NoError(t, a.Send(addr(hostB), frame(1, uint32(i), 50)))
		}
		time.Sleep(peer.DefaultDialTimeout)
		synctest.Wait()
		s := a.Stats()
		assert.Equal(t, uint64(3), s.DroppedConnFailure)
		assert.Zero(t, s.Unsent)
	})
}

// Retire writes what is queued, then closes the connection and ends the
// writer, reporting nothing; a later Send starts a new peer.
func TestRetire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) { c.DialTimeout = time.Second })
		b := memNode(t, n, hostB)
		n.Delay(hostA, hostB, 10*time.Millisecond) // still dialling when retired

		for i := range 3 {
			require.NoError(t, a.Send(b.addr, frame(1, uint32(i), 50)))
		}
		a.Retire(b.addr)
		assert.NotContains(t, a.Stats().Queued, b.addr)
		assert.Equal(t, 1, a.Stats().Writers, "still writing")
		a.Retire(b.addr) // no-op
		time.Sleep(time.Second)
		synctest.Wait()
		require.Len(t, b.rec.Frames(), 3, "the queue was written first")
		assert.Zero(t, a.Stats().Writers)
		assert.Zero(t, n.OpenConns())
		assert.Empty(t, a.rec.Failures())

		require.NoError(t, a.Send(b.addr, frame(1, 3, 50)))
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Len(t, b.rec.Frames(), 4)
		assert.Equal(t, 1, a.Stats().Writers)
		assert.Equal(t, uint64(2), a.Stats().Dials)

		// A dial that cannot succeed ends within DialTimeout, silently.
		n.Blackhole(hostA, hostC)
		require.NoError(t, a.Send(addr(hostC), frame(1, 0, 50)))
		a.Retire(addr(hostC))
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, 1, a.Stats().Writers)
		assert.Empty(t, a.rec.Failures())
		assert.Equal(t, uint64(1), a.Stats().DroppedClosed)

		// Close ends a retiring peer too.
		require.NoError(t, a.Send(addr(hostC), frame(1, 1, 50)))
		a.Retire(addr(hostC))
		require.NoError(t, a.Close())
		assert.Zero(t, a.Stats().Writers)
	})
}

// OnConnClosed runs once per connection, after its last frame, for
// accepted and outgoing connections alike.
func TestOnConnClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA)
		b := memNode(t, n, hostB)
		require.NoError(t, a.Send(b.addr, frame(1, 0, 50)))
		require.NoError(t, b.Send(a.addr, frame(2, 0, 50)))
		synctest.Wait()
		in := b.rec.Frames()[0].info
		assert.Empty(t, b.rec.Closed())

		a.Disconnect(b.addr) // B's accepted connection from A ends
		synctest.Wait()
		closed := b.rec.Closed()
		require.Len(t, closed, 1)
		assert.Equal(t, in, closed[0])
		out := a.rec.Closed()
		require.Len(t, out, 1)
		assert.True(t, out[0].Outgoing)
		assert.Equal(t, b.addr, out[0].PeerAddr)

		// Close ends the rest: B's outgoing one, and A's side of it.
		require.NoError(t, b.Close())
		synctest.Wait()
		assert.Len(t, b.rec.Closed(), 2)
		assert.Len(t, a.rec.Closed(), 2)
		for _, nd := range []*node{a, b} {
			ids := map[uint64]bool{}
			for _, c := range nd.rec.Closed() {
				assert.False(t, ids[c.ID], "connection %d reported twice", c.ID)
				ids[c.ID] = true
			}
		}
	})
}
