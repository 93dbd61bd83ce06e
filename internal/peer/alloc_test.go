package peer_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/internal/peer"
)

// sinkTransport dials connections that swallow every write at once and
// never deliver anything: it isolates the Manager's own cost.
type sinkTransport struct{ writes, bytes atomic.Int64 }

func (*sinkTransport) Listen(string) (net.Listener, error) {
	return nil, errors.New("sink: cannot listen")
}

func (s *sinkTransport) Dial(context.Context, string, string) (net.Conn, error) {
	return &sinkConn{t: s, done: make(chan struct{})}, nil
}

type sinkConn struct {
	t    *sinkTransport
	once sync.Once
	done chan struct{}
}

var sinkAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}

func (c *sinkConn) Read([]byte) (int, error) { <-c.done; return 0, net.ErrClosed }
func (c *sinkConn) Write(b []byte) (int, error) {
	c.t.writes.Add(1)
	c.t.bytes.Add(int64(len(b)))
	return len(b), nil
}
func (c *sinkConn) Close() error                     { c.once.Do(func() { close(c.done) }); return nil }
func (c *sinkConn) LocalAddr() net.Addr              { return sinkAddr }
func (c *sinkConn) RemoteAddr() net.Addr             { return sinkAddr }
func (c *sinkConn) SetDeadline(time.Time) error      { return nil }
func (c *sinkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *sinkConn) SetWriteDeadline(time.Time) error { return nil }

func TestSendDoesNotAllocate(t *testing.T) {
	sink := &sinkTransport{}
	m, err := peer.New(peer.Config{Transport: sink})
	require.NoError(t, err)
	defer m.Close()
	f := frame(1, 0, 256)
	const to = "127.0.0.1:9"

	// The writer swallows each batch at once, but how many frames pile up
	// before it runs depends on scheduling, and a bigger pile grows the
	// queue buffers (once: they are reused). So every 32 frames the sender
	// waits, without allocating, for the writer to catch up: the queue then
	// never outgrows the buffers warmed up here, and what is measured is
	// Send itself.
	var written int64
	catchUp := func() {
		for sink.bytes.Load() < written {
			runtime.Gosched()
		}
	}
	var calls, frames int
	send := func() {
		if err := m.Send(to, f); err != nil {
			t.Fatal(err)
		}
		written += int64(len(f))
		frames++
		if calls++; calls%32 == 0 {
			catchUp()
		}
	}
	sendMany := func() {
		if err := m.SendMany(to, f, f); err != nil {
			t.Fatal(err)
		}
		written += 2 * int64(len(f))
		frames += 2
		if calls++; calls%16 == 0 {
			catchUp()
		}
	}
	for range 1000 { // warm-up: peer, writer, connection, both buffers
		send()
	}
	catchUp()

	assert.Zero(t, testing.AllocsPerRun(10000, send), "allocations per Send")
	assert.Zero(t, testing.AllocsPerRun(10000, sendMany), "allocations per SendMany")

	// AllocsPerRun rounds down; the exact count shows there is not even an
	// occasional allocation left in Send (the runtime may add a few of its
	// own, e.g. when it starts a thread, so this is logged, not asserted).
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10000 {
		send()
	}
	catchUp()
	runtime.ReadMemStats(&after)
	t.Logf("%d allocations in the process during 10000 Sends", after.Mallocs-before.Mallocs)
	eventually(t, "queue drained", 5*time.Second, func() bool { return m.Stats().Queued[to] == 0 })
	s := m.Stats()
	assert.Equal(t, uint64(frames), s.FramesSent)
	assert.Equal(t, uint64(sink.writes.Load()), s.WriteBatches)
}
