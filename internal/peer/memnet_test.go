package peer_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clusterer-go/clusterer/internal/memnet"
	"github.com/clusterer-go/clusterer/internal/peer"
)

func TestExchangeBothWays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA)
		b := memNode(t, n, hostB)

		for i := range 3 {
			require.NoError(t, a.Send(b.addr, frame(1, uint32(i), 100)))
			require.NoError(t, b.Send(a.addr, frame(2, uint32(i), 200)))
		}
		synctest.Wait()

		check := func(to *node, fromIP string, sender uint32, size int) {
			t.Helper()
			got := to.rec.Frames()
			require.Len(t, got, 3)
			for i, r := range got {
				assert.Equal(t, frame(sender, uint32(i), size), r.frame)
				// Traffic arrives on the sender's own connection, from its IP.
				assert.False(t, r.info.Outgoing)
				assert.Equal(t, fromIP, r.info.Remote.Addr().String())
				assert.Empty(t, r.info.PeerAddr)
				assert.NotZero(t, r.info.ID)
			}
		}
		check(b, hostA, 1, 100)
		check(a, hostB, 2, 200)
		assert.Equal(t, 2, n.OpenConns(), "one connection per direction")

		s := a.Stats()
		assert.Equal(t, uint64(3), s.FramesSent)
		assert.Equal(t, uint64(300), s.BytesSent)
		assert.Equal(t, uint64(3), s.FramesRecv)
		assert.Equal(t, uint64(600), s.BytesRecv)
		assert.Equal(t, uint64(1), s.Dials)
		assert.Equal(t, uint64(1), s.Accepted)
		assert.Equal(t, map[string]int{b.addr: 0}, s.Queued)
		assert.Empty(t, a.rec.Failures())
		assert.Empty(t, b.rec.Failures())
	})
}

// Many goroutines sending both ways at once: every frame arrives intact, in
// per-sender order, and the writer batches frames into fewer writes. This
// runs on the real clock, where the writer and the senders interleave
// freely (inside a bubble the senders tend to finish before the writer runs).
func TestConcurrentSendersOrderAndBatching(t *testing.T) {
	n := memnet.New()
	defer n.Close()
	big := func(c *peer.Config) { c.QueueBytes = 64 << 20 }
	a := memNode(t, n, hostA, big)
	b := memNode(t, n, hostB, big)

	const senders, perSender = 8, 2000
	var wg sync.WaitGroup
	for s := range senders {
		for _, dir := range []struct {
			from *node
			to   string
			id   uint32
		}{{a, b.addr, uint32(s)}, {b, a.addr, uint32(100 + s)}} {
			wg.Go(func() {
				for i := range perSender {
					size := 28 + (i*37+int(dir.id)*11)%700
					if err := dir.from.Send(dir.to, frame(dir.id, uint32(i), size)); err != nil {
						t.Errorf("Send: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range []*node{a, b} {
		for {
			nd.rec.mu.Lock()
			got := len(nd.rec.frames)
			nd.rec.mu.Unlock()
			if got == senders*perSender {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out: %d frames received\nA: %+v\nB: %+v", got, a.Stats(), b.Stats())
			}
			time.Sleep(time.Millisecond)
		}
	}

	for _, nd := range []*node{a, b} {
		next := map[uint32]uint32{}
		for _, r := range nd.rec.Frames() {
			sender, seq, ok := parseFrame(r.frame)
			require.True(t, ok, "corrupt frame")
			require.Equal(t, next[sender], seq, "sender %d out of order", sender)
			next[sender]++
		}
		s := nd.Stats()
		assert.Equal(t, uint64(senders*perSender), s.FramesSent)
		assert.Less(t, s.WriteBatches, s.FramesSent, "no batching")
		assert.Zero(t, s.DroppedConnFailure+s.DroppedQueueFull)
		t.Logf("%d frames in %d writes (%.1f frames/write)",
			s.FramesSent, s.WriteBatches, float64(s.FramesSent)/float64(s.WriteBatches))
	}
}

// Frames queued while the dial is in flight go out in a single write.
func TestBatchingWhileDialling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA)
		b := memNode(t, n, hostB)
		n.Delay(hostA, hostB, 10*time.Millisecond) // the handshake takes fake time

		for i := range 100 {
			require.NoError(t, a.Send(b.addr, frame(1, uint32(i), 256)))
		}
		time.Sleep(time.Second) // handshake and delivery, 10 ms each
		synctest.Wait()

		s := a.Stats()
		assert.Equal(t, uint64(100), s.FramesSent)
		assert.Equal(t, uint64(1), s.WriteBatches)
		assert.Equal(t, memnet.LinkStats{DeliveredWrites: 1, DeliveredBytes: 25600}, n.Stats(hostA, hostB))
		require.Len(t, b.rec.Frames(), 100)
	})
}

func TestQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		f := frame(1, 0, 100)
		a := memNode(t, n, hostA, func(c *peer.Config) {
			c.QueueBytes = 10 * len(f)
			c.DialTimeout = time.Second
		})
		n.Blackhole(hostA, hostB) // the dial hangs, so nothing drains the queue

		for range 10 {
			require.NoError(t, a.Send(addr(hostB), f))
		}
		err := a.Send(addr(hostB), f)
		assert.ErrorIs(t, err, peer.ErrQueueFull)
		assert.Equal(t, "peer: queue full", err.Error())
		// All or none.
		assert.ErrorIs(t, a.SendMany(addr(hostB), f[:20], f[:20]), peer.ErrQueueFull)
		s := a.Stats()
		assert.Equal(t, uint64(3), s.DroppedQueueFull)
		assert.Equal(t, 10*len(f), s.Queued[addr(hostB)])

		// The dial times out: the queue is discarded and the failure reported.
		start := time.Now()
		time.Sleep(time.Second)
		synctest.Wait()
		fails := a.rec.Failures()
		require.Len(t, fails, 1)
		assert.Equal(t, addr(hostB), fails[0].addr)
		assert.ErrorIs(t, fails[0].err, os.ErrDeadlineExceeded)
		assert.Equal(t, time.Second, fails[0].at.Sub(start))
		s = a.Stats()
		assert.Equal(t, uint64(10), s.Unsent, "handed back with the failure")
		assert.Zero(t, s.DroppedConnFailure)
		assert.Len(t, fails[0].unsent, 10*len(f))
		assert.Equal(t, 0, s.Queued[addr(hostB)])
		assert.Equal(t, uint64(1), s.DialFailures)
		assert.ErrorIs(t, a.Send(addr(hostB), f), peer.ErrBackoff)

		// A frame bigger than the whole queue never fits.
		big := frame(1, 0, 11*len(f))
		assert.ErrorIs(t, a.Send(addr(hostC), big), peer.ErrQueueFull)
	})
}

func TestDialFailureBackoffAndRedial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) {
			c.BackoffMin = 100 * time.Millisecond
			c.BackoffMax = time.Second
		})
		bAddr := addr(hostB)

		// Nothing listens on B: the dial is refused and reported at once.
		start := time.Now()
		require.NoError(t, a.Send(bAddr, frame(1, 0, 50)), "the first Send only queues")
		synctest.Wait()
		fails := a.rec.Failures()
		require.Len(t, fails, 1)
		assert.Equal(t, bAddr, fails[0].addr)
		assert.ErrorIs(t, fails[0].err, syscall.ECONNREFUSED)
		assert.Equal(t, start, fails[0].at)

		// Backoff: at least BackoffMin, at most 1.5×BackoffMin (jitter).
		err := a.Send(bAddr, frame(1, 1, 50))
		assert.ErrorIs(t, err, peer.ErrBackoff)
		time.Sleep(100*time.Millisecond - time.Nanosecond)
		assert.ErrorIs(t, a.Send(bAddr, frame(1, 2, 50)), peer.ErrBackoff)
		time.Sleep(50*time.Millisecond + time.Nanosecond)

		// Second attempt, still refused; the backoff base has doubled.
		require.NoError(t, a.Send(bAddr, frame(1, 3, 50)))
		synctest.Wait()
		require.Len(t, a.rec.Failures(), 2)
		time.Sleep(200*time.Millisecond - time.Nanosecond)
		assert.ErrorIs(t, a.Send(bAddr, frame(1, 4, 50)), peer.ErrBackoff)

		// B comes up; once the backoff has passed the redial succeeds.
		b := memNode(t, n, hostB)
		time.Sleep(100*time.Millisecond + time.Nanosecond)
		require.NoError(t, a.Send(bAddr, frame(1, 5, 50)))
		synctest.Wait()
		got := b.rec.Frames()
		require.Len(t, got, 1)
		assert.Equal(t, frame(1, 5, 50), got[0].frame)

		s := a.Stats()
		assert.Equal(t, uint64(3), s.Dials)
		assert.Equal(t, uint64(2), s.DialFailures)
		assert.Equal(t, uint64(2), s.Unsent)
		assert.Equal(t, uint64(3), s.DroppedBackoff)
		assert.Len(t, a.rec.Failures(), 2)

		// A successful connect resets the backoff. B crashes: the reader
		// reports it, the next Send dials at once (no backoff after a
		// broken connection), is refused, and backs off by BackoffMin again.
		require.NoError(t, b.Close())
		synctest.Wait()
		fails = a.rec.Failures()
		require.Len(t, fails, 3)
		assert.ErrorIs(t, fails[2].err, io.EOF)
		require.NoError(t, a.Send(bAddr, frame(1, 6, 50)))
		synctest.Wait()
		require.Len(t, a.rec.Failures(), 4)
		time.Sleep(150*time.Millisecond + time.Nanosecond)
		assert.NoError(t, a.Send(bAddr, frame(1, 7, 50)))
		synctest.Wait()
	})
}

// Redial ends a backoff at once (the peer was heard from), so the next Send
// dials without waiting; the backoff base starts over.
func TestRedialEndsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) {
			c.BackoffMin = 100 * time.Millisecond
			c.BackoffMax = 5 * time.Second
		})
		bAddr := addr(hostB)
		a.Redial(bAddr) // unknown peer: nothing to do

		// Five refused dials, each sent as soon as the backoff allows: the
		// backoff has grown to 1.6–2.4 s.
		for i := range 5 {
			for a.Send(bAddr, frame(1, uint32(i), 50)) == peer.ErrBackoff {
				time.Sleep(10 * time.Millisecond)
			}
			synctest.Wait()
			require.Len(t, a.rec.Failures(), i+1)
		}
		require.ErrorIs(t, a.Send(bAddr, frame(1, 100, 50)), peer.ErrBackoff)

		b := memNode(t, n, hostB)
		a.Redial(bAddr)
		start := time.Now()
		require.NoError(t, a.Send(bAddr, frame(1, 101, 50)))
		synctest.Wait()
		assert.Equal(t, start, time.Now(), "no waiting")
		got := b.rec.Frames()
		require.Len(t, got, 1)
		assert.Equal(t, frame(1, 101, 50), got[0].frame)
		assert.Equal(t, uint64(1), a.Stats().Redials)

		a.Redial(bAddr) // connected: no backoff to end
		assert.Equal(t, uint64(1), a.Stats().Redials)

		// The base starts over: after B goes away the first backoff is
		// BackoffMin again.
		require.NoError(t, b.Close())
		synctest.Wait()
		require.NoError(t, a.Send(bAddr, frame(1, 102, 50)))
		synctest.Wait()
		require.ErrorIs(t, a.Send(bAddr, frame(1, 103, 50)), peer.ErrBackoff)
		time.Sleep(150*time.Millisecond + time.Nanosecond)
		require.NoError(t, a.Send(bAddr, frame(1, 104, 50)))
	})
}

// A dial to a blackholed host hangs until DialTimeout, then counts as a
// failed dial.
func TestDialTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) { c.DialTimeout = 300 * time.Millisecond })
		memNode(t, n, hostB)
		n.Blackhole(hostA, hostB)

		start := time.Now()
		require.NoError(t, a.Send(addr(hostB), frame(1, 0, 50)))
		time.Sleep(time.Second)
		fails := a.rec.Failures()
		require.Len(t, fails, 1)
		assert.Equal(t, 300*time.Millisecond, fails[0].at.Sub(start))
		var ne net.Error
		require.ErrorAs(t, fails[0].err, &ne)
		assert.True(t, ne.Timeout())
	})
}

// A reset (the peer crashed, the link was cut) is seen by the reader of the
// outgoing connection and reported at once, without any Send.
func TestCutReportedByReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA)
		b := memNode(t, n, hostB)
		require.NoError(t, a.Send(b.addr, frame(1, 0, 50)))
		require.NoError(t, b.Send(a.addr, frame(2, 0, 50)))
		synctest.Wait()
		time.Sleep(time.Second) // idle links

		start := time.Now()
		n.Cut(hostA, hostB)
		synctest.Wait()
		for _, x := range []struct {
			nd   *node
			peer string
		}{{a, b.addr}, {b, a.addr}} {
			fails := x.nd.rec.Failures()
			require.Len(t, fails, 1)
			assert.Equal(t, x.peer, fails[0].addr)
			// memnet resets the two directions of a connection one after
			// the other, so the far end may close its side in between and
			// a reader can see EOF instead of the reset; either is a
			// broken connection, reported at once.
			if !errors.Is(fails[0].err, syscall.ECONNRESET) {
				assert.ErrorIs(t, fails[0].err, io.EOF)
			}
			assert.Equal(t, start, fails[0].at, "reported without delay")
			assert.Equal(t, uint64(1), x.nd.Stats().ConnFailures)
		}

		// While cut, redials are refused; after healing they succeed.
		require.NoError(t, a.Send(b.addr, frame(1, 1, 50)))
		synctest.Wait()
		require.Len(t, a.rec.Failures(), 2)
		assert.ErrorIs(t, a.rec.Failures()[1].err, syscall.ECONNREFUSED)
		n.HealAll()
		time.Sleep(peer.DefaultBackoffMin * 3 / 2)
		require.NoError(t, a.Send(b.addr, frame(1, 2, 50)))
		synctest.Wait()
		got := b.rec.Frames()
		require.Len(t, got, 2)
		assert.Equal(t, frame(1, 2, 50), got[1].frame)
	})
}

// A peer that stops reading (hung process; on real TCP also a blackholed
// link, once the socket buffers are full) makes a write block until
// WriteTimeout, which is a connection failure. memnet's Blackhole discards
// bytes instead of holding them, so the stall is modelled by a listener that
// never reads.
func TestWriteTimeoutOnStalledPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(4096))
		defer n.Close()
		l, err := n.Listen(addr(hostB)) // never accepts, never reads
		require.NoError(t, err)
		defer l.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) { c.WriteTimeout = time.Second })

		start := time.Now()
		var sent int
		for len(a.rec.Failures()) == 0 && time.Since(start) < 5*time.Second {
			require.NoError(t, a.Send(addr(hostB), frame(1, uint32(sent), 512)))
			sent++
			time.Sleep(10 * time.Millisecond)
		}
		fails := a.rec.Failures()
		require.Len(t, fails, 1)
		assert.ErrorIs(t, fails[0].err, os.ErrDeadlineExceeded)
		// The buffer (4 KiB, 8 frames) filled after 80 ms; the next write
		// made no progress for WriteTimeout.
		took := fails[0].at.Sub(start)
		assert.Equal(t, 1080*time.Millisecond, took)
		s := a.Stats()
		assert.Equal(t, uint64(1), s.ConnFailures)
		assert.Positive(t, s.Unsent)
		assert.Equal(t, uint64(sent), s.FramesSent+s.Unsent)

		// No backoff after a broken connection: the next Send redials.
		require.NoError(t, a.Send(addr(hostB), frame(1, 0, 512)))
		synctest.Wait()
		assert.Equal(t, uint64(2), a.Stats().Dials)
	})
}

// WriteTimeout bounds a write that makes no progress, not a large batch that
// a slow but live peer takes longer to read.
func TestSlowPeerIsNotAFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(4096))
		defer n.Close()
		l, err := n.Listen(addr(hostB))
		require.NoError(t, err)
		defer l.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) { c.WriteTimeout = time.Second })

		// 64 KiB in one batch; the peer reads 2 KiB every 600 ms, so the
		// write takes ~19 s in all but never stalls for a whole second.
		var want []byte
		var frames [][]byte
		for i := range 64 {
			f := frame(1, uint32(i), 1024)
			want = append(want, f...)
			frames = append(frames, f)
		}
		require.NoError(t, a.SendMany(addr(hostB), frames...))
		c, err := l.Accept()
		require.NoError(t, err)
		defer c.Close()
		var got []byte
		buf := make([]byte, 2048)
		for len(got) < len(want) {
			time.Sleep(600 * time.Millisecond)
			k, err := io.ReadFull(c, buf[:min(len(buf), len(want)-len(got))])
			require.NoError(t, err)
			got = append(got, buf[:k]...)
		}
		assert.Equal(t, want, got)
		assert.Empty(t, a.rec.Failures())
		s := a.Stats()
		assert.Equal(t, uint64(64), s.FramesSent)
		assert.Equal(t, uint64(1), s.WriteBatches)
	})
}

// Reply writes back on the accepted connection a frame came in on (as
// OpenSIPS does with UNKNOWN_ID); the dialler reads it on its outgoing one.
func TestReplyOnAcceptedConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA)
		var b *node
		b = memNode(t, n, hostB, func(c *peer.Config) {
			c.OnFrame = func(ci peer.ConnInfo, f []byte) {
				if typeOf(t, f) == typePing {
					assert.NoError(t, b.Reply(ci.ID, typed(typeUnknownID)))
				}
			}
		})

		require.NoError(t, a.Send(b.addr, typed(typePing)))
		synctest.Wait()
		got := a.rec.Frames()
		require.Len(t, got, 1)
		assert.Equal(t, int32(typeUnknownID), typeOf(t, got[0].frame))
		assert.True(t, got[0].info.Outgoing)
		assert.Equal(t, b.addr, got[0].info.PeerAddr)
		assert.Equal(t, b.addr, got[0].info.Remote.String())

		sb := b.Stats()
		assert.Equal(t, uint64(0), sb.Dials, "the reply used the accepted connection")
		assert.Equal(t, uint64(1), sb.FramesSent)
		assert.Equal(t, 1, n.OpenConns())

		// The dialler can Reply on its outgoing connection too.
		require.NoError(t, a.Reply(got[0].info.ID, typed(typeData)))
		synctest.Wait()

		assert.ErrorIs(t, b.Reply(12345, typed(typeData)), peer.ErrNoConn)
	})
}

// A Reply that fails on an outgoing connection breaks it like any write
// failure; OnFailure reports the reply's error, from the reader goroutine.
func TestReplyFailureOnOutgoingConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(4096))
		defer n.Close()
		l, err := n.Listen(addr(hostB))
		require.NoError(t, err)
		defer l.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) { c.WriteTimeout = time.Second })

		require.NoError(t, a.Send(addr(hostB), typed(typePing)))
		raw, err := l.Accept()
		require.NoError(t, err)
		defer raw.Close()
		_, err = raw.Write(typed(typeUnknownID)) // then never reads again
		require.NoError(t, err)
		synctest.Wait()
		got := a.rec.Frames()
		require.Len(t, got, 1)
		require.True(t, got[0].info.Outgoing)

		err = a.Reply(got[0].info.ID, frame(1, 0, 8000))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		synctest.Wait()
		fails := a.rec.Failures()
		require.Len(t, fails, 1)
		assert.Equal(t, err, fails[0].err)
		assert.ErrorIs(t, a.Reply(got[0].info.ID, typed(typeData)), peer.ErrNoConn)
		assert.Equal(t, uint64(1), a.Stats().ConnFailures)
	})
}

// Garbage on an accepted connection closes that connection only.
func TestFramingErrorClosesConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		core, logs := observer.New(zapcore.DebugLevel)
		a := memNode(t, n, hostA, func(c *peer.Config) { c.Logger = zap.New(core) })
		b := memNode(t, n, hostB)

		for _, junk := range [][]byte{
			[]byte("GET / HTTP/1.1\r\n\r\n"),                   // bad marker
			append([]byte("P4CK\xff\xff\xff\x00"), 1, 0, 0, 0), // length out of bounds
		} {
			raw, err := n.Dial(context.Background(), hostC, a.addr)
			require.NoError(t, err)
			// A valid frame first: delivered, then the garbage ends the stream.
			_, err = raw.Write(append(frame(3, 0, 40), junk...))
			require.NoError(t, err)
			_, err = io.ReadAll(raw) // the manager closes its end: EOF
			require.NoError(t, err)
			raw.Close()
		}
		synctest.Wait()
		s := a.Stats()
		assert.Equal(t, uint64(2), s.FramingErrors)
		assert.Equal(t, uint64(2), s.FramesRecv)
		for _, r := range a.rec.Frames() {
			assert.Equal(t, hostC, r.info.Remote.Addr().String())
			assert.ErrorIs(t, a.Reply(r.info.ID, typed(typeData)), peer.ErrNoConn, "conn is gone")
		}
		assert.Equal(t, 2, logs.FilterMessage("peer: framing error, closing connection").Len())

		// The manager keeps working.
		require.NoError(t, b.Send(a.addr, frame(2, 0, 40)))
		require.NoError(t, a.Send(b.addr, frame(1, 0, 40)))
		synctest.Wait()
		assert.Len(t, a.rec.Frames(), 3)
		assert.Len(t, b.rec.Frames(), 1)
		assert.Empty(t, a.rec.Failures())
		assert.Equal(t, 1, logs.FilterMessage("peer: connected").Len())
	})
}

func TestDisconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) { c.DialTimeout = time.Second })
		b := memNode(t, n, hostB)
		require.NoError(t, a.Send(b.addr, frame(1, 0, 50)))
		synctest.Wait()
		require.Equal(t, 1, n.OpenConns())

		// Closes the connection silently and forgets the peer.
		a.Disconnect(b.addr)
		synctest.Wait()
		assert.Equal(t, 0, n.OpenConns())
		assert.Empty(t, a.rec.Failures())
		assert.NotContains(t, a.Stats().Queued, b.addr)
		a.Disconnect(b.addr) // no-op

		// A later Send starts afresh.
		require.NoError(t, a.Send(b.addr, frame(1, 1, 50)))
		synctest.Wait()
		assert.Len(t, b.rec.Frames(), 2)
		assert.Equal(t, uint64(2), a.Stats().Dials)

		// It also forgets a backoff...
		require.NoError(t, a.Send(addr(hostC), frame(1, 0, 50)))
		synctest.Wait()
		require.ErrorIs(t, a.Send(addr(hostC), frame(1, 1, 50)), peer.ErrBackoff)
		a.Disconnect(addr(hostC))
		require.NoError(t, a.Send(addr(hostC), frame(1, 2, 50)))
		synctest.Wait()
		require.Len(t, a.rec.Failures(), 2)

		// ...and aborts a hanging dial, dropping its queue without a report.
		n.Blackhole(hostA, hostD)
		for i := range 5 {
			require.NoError(t, a.Send(addr(hostD), frame(1, uint32(i), 50)))
		}
		synctest.Wait()
		a.Disconnect(addr(hostD))
		time.Sleep(2 * time.Second)
		assert.Len(t, a.rec.Failures(), 2)
		assert.Equal(t, uint64(5), a.Stats().DroppedClosed)
	})
}

// Close unblocks a hanging dial, a blocked write, blocked reads and the
// accept loop at once, reports nothing, and is idempotent.
func TestCloseUnblocksEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(1024))
		defer n.Close()
		a := memNode(t, n, hostA, func(c *peer.Config) {
			c.DialTimeout = time.Hour
			c.WriteTimeout = time.Hour
		})
		b := memNode(t, n, hostB)
		stalled, err := n.Listen(addr(hostC))
		require.NoError(t, err)
		defer stalled.Close()
		n.Blackhole(hostA, hostD)

		require.NoError(t, a.Send(b.addr, frame(1, 0, 50)))        // idle conn, reader blocked
		require.NoError(t, a.Send(addr(hostC), frame(1, 0, 4000))) // write blocked
		require.NoError(t, a.Send(addr(hostD), frame(1, 0, 50)))   // dial hanging
		require.NoError(t, b.Send(a.addr, frame(2, 0, 50)))        // accepted conn on A
		raw, err := n.Dial(context.Background(), hostD, a.addr)    // another one, silent
		require.NoError(t, err)
		defer raw.Close()
		synctest.Wait()

		start := time.Now()
		require.NoError(t, a.Close())
		assert.Equal(t, start, time.Now(), "Close waited for a timer")
		require.NoError(t, a.Close())
		assert.Empty(t, a.rec.Failures())

		assert.ErrorIs(t, a.Send(b.addr, frame(1, 1, 50)), peer.ErrClosed)
		assert.ErrorIs(t, a.Reply(1, frame(1, 1, 50)), peer.ErrClosed)
		assert.ErrorIs(t, a.Start(context.Background()), peer.ErrClosed)
		s := a.Stats()
		assert.Equal(t, uint64(2), s.DroppedClosed, "the blocked write and the hanging dial's queue")
		assert.Empty(t, s.Queued)

		// The peers see the connections end.
		_, err = raw.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF)
		synctest.Wait()
		fails := b.rec.Failures()
		require.Len(t, fails, 1)
		assert.Equal(t, a.addr, fails[0].addr)
	})
}

func TestConcurrentClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA)
		b := memNode(t, n, hostB)
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				for j := 0; ; j++ {
					if err := a.Send(b.addr, frame(uint32(i), uint32(j), 64)); errors.Is(err, peer.ErrClosed) {
						return
					}
					time.Sleep(time.Millisecond)
				}
			})
		}
		time.Sleep(50 * time.Millisecond)
		for range 3 {
			wg.Go(func() { assert.NoError(t, a.Close()) })
		}
		wg.Wait()
	})
}

func TestSendMany(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA)
		b := memNode(t, n, hostB)
		require.NoError(t, a.SendMany(b.addr, frame(1, 0, 30), frame(1, 1, 40), frame(1, 2, 50)))
		synctest.Wait()
		got := b.rec.Frames()
		require.Len(t, got, 3)
		for i, r := range got {
			assert.Equal(t, frame(1, uint32(i), 30+10*i), r.frame)
		}
		assert.Equal(t, uint64(1), a.Stats().WriteBatches)
	})
}

func TestStartErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		a := memNode(t, n, hostA)
		assert.Error(t, a.Start(context.Background()), "second Start")

		m, err := peer.New(peer.Config{Transport: n, ListenAddr: addr(hostA), LocalIP: hostA})
		require.NoError(t, err)
		err = m.Start(context.Background())
		assert.ErrorIs(t, err, syscall.EADDRINUSE)
		assert.Nil(t, m.Addr())
		require.NoError(t, m.Close())

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		m, err = peer.New(peer.Config{Transport: n, ListenAddr: addr(hostB)})
		require.NoError(t, err)
		assert.ErrorIs(t, m.Start(ctx), context.Canceled)
		require.NoError(t, m.Close())
	})
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []peer.Config{
		{LocalIP: "not-an-ip"},
		{QueueBytes: -1},
		{WriteTimeout: -time.Second},
		{BackoffMin: -1},
	} {
		_, err := peer.New(cfg)
		assert.Error(t, err, "%+v", cfg)
	}
	m, err := peer.New(peer.Config{})
	require.NoError(t, err)
	assert.Nil(t, m.Addr())
	require.NoError(t, m.Close())
}
