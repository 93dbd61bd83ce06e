package clusterer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/internal/peer"
)

// benchPair starts nodes 1 and 2 of cluster 1 on an in-memory network,
// node 2 with capability "bench-repl" counted into got, and waits until
// they see each other.
func benchPair(b *testing.B, got *atomic.Uint64) (n1, n2 *Cluster) {
	b.Helper()
	nw := clustertest.NewNetwork()
	b.Cleanup(func() { nw.Close() })
	nodes := make([]*Cluster, 2)
	for i, id := range []int{1, 2} {
		other := 3 - id
		c, err := New(Config{NodeID: id, Transport: nw,
			PingInterval: time.Second, PingTimeout: time.Second, NodeTimeout: 5 * time.Second,
			Clusters: []ClusterConfig{{ID: 1, Self: NodeInfo{URL: fmt.Sprintf("bin:127.0.0.%d:5555", id)},
				Nodes: []NodeInfo{{ClusterID: 1, ID: other, URL: fmt.Sprintf("bin:127.0.0.%d:5555", other)}}}}})
		if err != nil {
			b.Fatal(err)
		}
		if id == 2 {
			err = c.RegisterCapability(CapabilityConfig{Name: "bench-repl", Cluster: 1},
				HandlerFuncs{Packet: func(Packet) { got.Add(1) }})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		nodes[i] = c
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := nodes[0].NextHop(1, 2)
		z, _ := nodes[1].NextHop(1, 1)
		if a == 2 && z == 1 {
			return nodes[0], nodes[1]
		}
		if time.Now().After(deadline) {
			b.Fatal("the nodes did not link up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cpuTime is the CPU time the process used so far (all goroutines, user
// and system): on a shared machine it measures the work better than the
// wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process CPU time per op since cpu0.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

func benchPacket(b *testing.B, payload int) bin.Packet {
	bl := bin.NewBuilder(1, "bench-repl", 1)
	bl.PushRaw(make([]byte, payload))
	frame, err := bl.Finish()
	if err != nil {
		b.Fatal(err)
	}
	p, err := bin.Parse(frame)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkReceive measures the receive path of a connection's reader:
// checking 256-byte module packets against the view and queuing them for
// the handler, in reads of 200 packets (a 64 KiB read buffer), without the
// network. The handler runs alongside on its own goroutine; the packets
// it could not take in time are counted as dropped. "lent": each read
// fills a new buffer, whose frames the receiver keeps (bulk traffic);
// "copied": one buffer is reused, and the bodies are copied.
func BenchmarkReceive(b *testing.B) {
	b.Run("lent", func(b *testing.B) { benchReceive(b, true) })
	b.Run("copied", func(b *testing.B) { benchReceive(b, false) })
}

func benchReceive(b *testing.B, lend bool) {
	var got atomic.Uint64
	_, n2 := benchPair(b, &got)
	p := benchPacket(b, 256)
	frame, err := bin.AppendPacket(nil, p)
	if err == nil {
		frame, err = bin.AppendTrailer(frame, bin.Trailer{Cluster: 1, Src: 1, Dst: 2})
	}
	if err != nil {
		b.Fatal(err)
	}
	const perRead = 200
	buf := make([]byte, 0, perRead*len(frame))
	r := n2.newReceiver(peer.ConnInfo{ID: 1 << 40, Remote: netip.MustParseAddrPort("127.0.0.1:40000")})
	drops0 := n2.stats.handlerDrops.Load()
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for done := 0; done < b.N; {
		// A read: the kernel copies the frames into the buffer.
		n := min(perRead, b.N-done)
		if lend {
			buf = make([]byte, 0, perRead*len(frame))
		}
		buf = buf[:0]
		for range n {
			buf = append(buf, frame...)
		}
		kept := false
		for f := range slices.Chunk(buf, len(frame)) {
			kept = r.Frame(f, lend) || kept
		}
		if kept != lend {
			b.Fatalf("kept %v, lent %v", kept, lend)
		}
		r.Flush()
		done += n
	}
	t0 := time.Now()
	for got.Load()+n2.stats.handlerDrops.Load()-drops0 < uint64(b.N) {
		if time.Since(t0) > 3*time.Second {
			b.Fatalf("packets lost: got %d, %+v", got.Load(), n2.Stats())
		}
		runtime.Gosched()
	}
	b.StopTimer()
	reportCPU(b, cpu0)
	b.ReportMetric(float64(n2.stats.handlerDrops.Load()-drops0)/float64(b.N), "drops/op")
}

// BenchmarkSendTo measures SendTo of a 256-byte payload from parallel
// senders: the snapshot lookups, encoding and queuing (the in-memory
// network carries the frames to node 2, whose handler counts them). A
// full queue is waited out.
func BenchmarkSendTo(b *testing.B) {
	var got atomic.Uint64
	n1, _ := benchPair(b, &got)
	p := benchPacket(b, 256)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for {
				err := n1.SendTo(1, 2, p)
				if err == nil {
					break
				}
				if !errors.Is(err, ErrQueueFull) {
					b.Fatal(err)
				}
				runtime.Gosched()
			}
		}
	})
	b.StopTimer()
	reportCPU(b, cpu0)
}
