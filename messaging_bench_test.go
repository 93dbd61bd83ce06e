package clusterer_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer"
)

// Request/reply benchmarks over real loopback TCP, each beside its raw-TCP
// baseline (run both in the same invocation and compare the ratios, not
// the absolute numbers: the machines are shared):
//
//	go test -run '^$' -bench 'Request|RawPingPong|Broadcast' -benchtime 20000x
//
// Besides ns/op they report p50-ns and p99-ns of the individual round trips.
// The target is Request p99 within 3× of BenchmarkRawPingPong's p99.

const benchBody = 64 // request body bytes, echoed back

// benchCluster starts n nodes of cluster 1 on 127.0.0.1 (free ports), full
// mesh, each answering requests with their body, and waits until node 1
// reaches all of them.
func benchCluster(b *testing.B, n int) []*clusterer.Cluster {
	b.Helper()
	ports := make([]string, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		_, ports[i], _ = net.SplitHostPort(l.Addr().String())
		l.Close()
	}
	urlOf := func(i int) string { return "bin:127.0.0.1:" + ports[i] }
	nodes := make([]*clusterer.Cluster, n)
	for i := range n {
		cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: urlOf(i)}}
		for j := range n {
			if j != i {
				cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: 1, ID: j + 1, URL: urlOf(j)})
			}
		}
		c, err := clusterer.New(clusterer.Config{NodeID: i + 1, Clusters: []clusterer.ClusterConfig{cc}})
		if err != nil {
			b.Fatal(err)
		}
		c.HandleRequests(func(req clusterer.Message) (string, bool) { return req.Body, true })
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		nodes[i] = c
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(reachable(nodes[0])) < n-1 {
		if time.Now().After(deadline) {
			b.Fatalf("node 1 reaches %d of %d nodes", len(reachable(nodes[0])), n-1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nodes
}

// reportLatency reports the 50th and 99th percentiles of samples.
func reportLatency(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(q float64) float64 { return float64(samples[int(q*float64(len(samples)-1))]) }
	b.ReportMetric(at(0.50), "p50-ns")
	b.ReportMetric(at(0.99), "p99-ns")
}

// BenchmarkRequest: sequential Request round trips, node 1 -> node 2, the
// handler echoing a 64-byte body.
func BenchmarkRequest(b *testing.B) {
	nodes := benchCluster(b, 2)
	body := strings.Repeat("r", benchBody)
	ctx := context.Background()
	for range 1000 { // warm up: connections, buffers, the scheduler
		if _, err := nodes[0].Request(ctx, 1, 2, body); err != nil {
			b.Fatal(err)
		}
	}
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		reply, err := nodes[0].Request(ctx, 1, 2, body)
		samples = append(samples, time.Since(t0))
		if err != nil || reply != body {
			b.Fatalf("reply %q, %v", reply, err)
		}
	}
	b.StopTimer()
	reportLatency(b, samples)
}

// BenchmarkRawPingPong is Request's baseline: one loopback TCP connection,
// a length-prefixed 64-byte frame each way, an echo goroutine.
func BenchmarkRawPingPong(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		buf := make([]byte, 4+benchBody)
		for {
			if _, err := io.ReadFull(r, buf[:4]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(buf[:4])
			if _, err := io.ReadFull(r, buf[4:4+n]); err != nil {
				return
			}
			if _, err := c.Write(buf[:4+n]); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		c.Close()
		ln.Close()
		<-done
	}()
	frame := make([]byte, 4+benchBody)
	binary.BigEndian.PutUint32(frame, benchBody)
	in := make([]byte, len(frame))
	r := bufio.NewReader(c)
	pingPong := func() error {
		if _, err := c.Write(frame); err != nil {
			return err
		}
		_, err := io.ReadFull(r, in)
		return err
	}
	for range 1000 {
		if err := pingPong(); err != nil {
			b.Fatal(err)
		}
	}
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		err := pingPong()
		samples = append(samples, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportLatency(b, samples)
}

// BenchmarkBroadcast: one Broadcast from node 1 answered by the 20 other
// nodes of a 21-node full mesh; an op is a complete broadcast (20 replies).
func BenchmarkBroadcast(b *testing.B) {
	const responders = 20
	nodes := benchCluster(b, responders+1)
	body := strings.Repeat("w", benchBody)
	ctx := context.Background()
	check := func(replies []clusterer.Reply, err error) {
		if err != nil {
			b.Fatal(err)
		}
		if len(replies) != responders {
			b.Fatalf("%d replies", len(replies))
		}
		for _, r := range replies {
			if r.Err != nil || r.Body != body {
				b.Fatalf("node %d: %q, %v", r.Node, r.Body, r.Err)
			}
		}
	}
	for range 100 {
		check(nodes[0].Broadcast(ctx, 1, body))
	}
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		replies, err := nodes[0].Broadcast(ctx, 1, body)
		samples = append(samples, time.Since(t0))
		check(replies, err)
	}
	b.StopTimer()
	reportLatency(b, samples)
}
