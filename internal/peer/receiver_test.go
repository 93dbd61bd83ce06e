package peer_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/peer"
)

// keeper is a Receiver that keeps every lent frame (and copies the
// others) and records which frames each Flush covered.
type keeper struct {
	mu      sync.Mutex
	frames  [][]byte
	lent    int
	flushed int // frames covered by a Flush
	pending int
	closed  bool
}

func (k *keeper) Frame(f []byte, lend bool) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if lend {
		k.lent++
	} else {
		f = bytes.Clone(f)
	}
	k.frames = append(k.frames, f)
	k.pending++
	return lend
}

func (k *keeper) Flush() {
	k.mu.Lock()
	k.flushed += k.pending
	k.pending = 0
	k.mu.Unlock()
}

func (k *keeper) state() (frames [][]byte, lent, flushed int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([][]byte(nil), k.frames...), k.lent, k.flushed
}

// A Receiver's Flush runs before the reader waits for more bytes, so no
// frame waits for the next one; frames lent in a bulk stream and kept stay
// intact while the reader reads on.
func TestReceiverFlushAndLentFrames(t *testing.T) {
	var mu sync.Mutex
	var keepers []*keeper
	b := tcpNode(t, "127.0.0.1", func(c *peer.Config) {
		c.OnFrame = nil
		c.NewReceiver = func(peer.ConnInfo) peer.Receiver {
			k := &keeper{}
			mu.Lock()
			keepers = append(keepers, k)
			mu.Unlock()
			return k
		}
	})
	a := tcpNode(t, "127.0.0.1")
	recv := func() *keeper {
		mu.Lock()
		defer mu.Unlock()
		if len(keepers) == 0 {
			return nil
		}
		return keepers[0]
	}

	// One frame at a time: each is flushed without a next one.
	for i := range 3 {
		require.NoError(t, a.Send(b.addr, frame(1, uint32(i), 100)))
		eventually(t, "flush", 5*time.Second, func() bool {
			k := recv()
			if k == nil {
				return false
			}
			_, _, flushed := k.state()
			return flushed == i+1
		})
	}

	// A bulk stream: 20 MB in frames of 1 KiB.
	const count = 20000
	for i := 3; i < count; {
		err := a.SendParts(b.addr, frame(1, uint32(i), 1024))
		if err != nil {
			require.ErrorIs(t, err, peer.ErrQueueFull)
			time.Sleep(time.Millisecond)
			continue
		}
		i++
	}
	k := recv()
	eventually(t, "all frames flushed", 10*time.Second, func() bool {
		_, _, flushed := k.state()
		return flushed == count
	})
	frames, lent, _ := k.state()
	require.Positive(t, lent, "a bulk stream lends its frames")
	for i, f := range frames {
		size := 100
		if i >= 3 {
			size = 1024
		}
		require.Equal(t, frame(1, uint32(i), size), f, "frame %d", i)
	}
	require.Equal(t, uint64(count), b.Stats().FramesRecv)
}

// SendParts queues the parts as one frame.
func TestSendParts(t *testing.T) {
	a := tcpNode(t, "127.0.0.1")
	b := tcpNode(t, "127.0.0.1")
	f := frame(1, 7, 300)
	require.NoError(t, a.SendParts(b.addr, f[:10], f[10:11], nil, f[11:]))
	eventually(t, "frame", 5*time.Second, func() bool { return len(b.rec.Frames()) == 1 })
	require.Equal(t, f, b.rec.Frames()[0].frame)
	require.Equal(t, uint64(1), a.Stats().FramesSent)
	p, err := bin.Parse(b.rec.Frames()[0].frame)
	require.NoError(t, err)
	require.Equal(t, "test", p.Capability)
}
