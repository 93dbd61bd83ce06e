package peer_test

import (
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer/internal/peer"
)

// send retries while the queue is full, which is the benchmark's way of
// waiting for the writer; it counts the retries.
func send(b *testing.B, m *peer.Manager, to string, f []byte, retries *atomic.Int64) {
	for {
		err := m.Send(to, f)
		if err == nil {
			return
		}
		if !errors.Is(err, peer.ErrQueueFull) {
			b.Fatal(err)
		}
		retries.Add(1)
		runtime.Gosched()
	}
}

// benchTCP measures end-to-end throughput of 256-byte frames between two
// Managers on loopback TCP: the clock stops once the receiver has read every
// frame.
func benchTCP(b *testing.B, parallel bool) {
	var got atomic.Int64
	rx := tcpNode(b, "127.0.0.1", func(c *peer.Config) {
		c.OnFrame = func(peer.ConnInfo, []byte) { got.Add(1) }
	})
	tx := tcpNode(b, "127.0.0.1")
	f := frame(1, 0, 256)
	send(b, tx.Manager, rx.addr, f, new(atomic.Int64)) // connect outside the clock
	eventually(b, "warm-up frame", 5*time.Second, func() bool { return got.Load() == 1 })
	got.Store(0)
	before := tx.Stats()
	var retries atomic.Int64

	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				send(b, tx.Manager, rx.addr, f, &retries)
			}
		})
	} else {
		for range b.N {
			send(b, tx.Manager, rx.addr, f, &retries)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("received %d of %d frames", got.Load(), b.N)
		}
		runtime.Gosched()
	}
	b.StopTimer()

	after := tx.Stats()
	frames := after.FramesSent - before.FramesSent
	writes := after.WriteBatches - before.WriteBatches
	b.ReportMetric(float64(frames)/float64(writes), "frames/write")
	b.ReportMetric(float64(retries.Load())/float64(b.N), "full-retries/op")
	if d := after.DroppedConnFailure + after.DroppedBackoff; d > 0 {
		b.Fatalf("%d frames dropped", d)
	}
}

func BenchmarkSendTCP(b *testing.B)         { benchTCP(b, false) }
func BenchmarkSendTCPParallel(b *testing.B) { benchTCP(b, true) }

// BenchmarkSendSink measures Send alone: the writer swallows every batch.
func BenchmarkSendSink(b *testing.B) {
	m, err := peer.New(peer.Config{Transport: &sinkTransport{}})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	f := frame(1, 0, 256)
	var retries atomic.Int64
	send(b, m, "127.0.0.1:9", f, &retries)
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			send(b, m, "127.0.0.1:9", f, &retries)
		}
	})
}

// BenchmarkCrashDetectTCP measures how long after a peer's Manager closes
// (as when its process dies and the kernel closes its sockets) the other
// side's OnFailure runs, on loopback TCP. ns/op covers the peer's Close and
// the detection; detect-µs is from the start of Close to OnFailure.
func BenchmarkCrashDetectTCP(b *testing.B) {
	failed := make(chan time.Time, 1)
	a := tcpNode(b, "127.0.0.1", func(c *peer.Config) {
		c.OnFailure = func(string, error, []byte) {
			select {
			case failed <- time.Now():
			default:
			}
		}
	})
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var got atomic.Int64
		m, err := peer.New(peer.Config{
			ListenAddr: "127.0.0.1:0",
			LocalIP:    "127.0.0.1",
			OnFrame:    func(peer.ConnInfo, []byte) { got.Add(1) },
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Start(b.Context()); err != nil {
			b.Fatal(err)
		}
		to := m.Addr().String()
		if err := a.Send(to, frame(1, 0, 64)); err != nil {
			b.Fatal(err)
		}
		eventually(b, "delivery", 5*time.Second, func() bool { return got.Load() == 1 })
		b.StartTimer()

		start := time.Now()
		m.Close()
		select {
		case at := <-failed:
			total += at.Sub(start)
		case <-time.After(5 * time.Second):
			b.Fatal("crash not detected within 5 s")
		}

		b.StopTimer()
		a.Disconnect(to)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "detect-µs")
}
