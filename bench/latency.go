package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
)

// Scenario 2: request/response round trips. Node A sends to B, B's
// handler sends the body straight back, A's handler signals the waiting
// loop. Baseline: ping-pong of one frame each way over one TCP connection.

type latOptions struct {
	rtts    int // measured round trips per side
	rounds  int // alternating raw/library chunks
	payload int
	warmup  int // unmeasured round trips per side before the first round
}

type latStats struct {
	samples []time.Duration
	lost    int
}

func (l *latStats) summary() (p50, p90, p99, p999, mx time.Duration) {
	s := slices.Clone(l.samples)
	slices.Sort(s)
	if len(s) == 0 {
		return
	}
	return percentile(s, 50), percentile(s, 90), percentile(s, 99), percentile(s, 99.9), s[len(s)-1]
}

func runLatency(o latOptions, rep *report) error {
	section("2. latency: request/response round trips vs raw TCP ping-pong")
	fmt.Printf("%d sequential round trips per side in %d alternating chunks, %d-byte payload each way (+%d warm-up)\n",
		o.rtts, o.rounds, o.payload, o.warmup)

	ids := []int{1, 2}
	tm := timing{pingInterval: time.Second, pingTimeout: time.Second, nodeTimeout: 5 * time.Second}
	nodes := map[int]*clusterer.Cluster{}
	defer func() {
		for _, c := range nodes {
			c.Close()
		}
	}()
	replies := make(chan uint64, 64)
	var replyErrs atomic.Uint64
	for _, id := range ids {
		c, err := clusterer.New(nodeConfig(id, ids, portLatency, nil, tm))
		if err != nil {
			return err
		}
		var h clusterer.Handler
		if id == 1 {
			h = clusterer.HandlerFuncs{Packet: func(p clusterer.Packet) {
				if len(p.Body) >= 8 {
					select {
					case replies <- binary.LittleEndian.Uint64(p.Body):
					default:
					}
				}
			}}
		} else {
			// One goroutine calls the handler, so the builder is reused
			// safely; SendTo copies the frame.
			var b bin.Builder
			buf := make([]byte, 0, 512)
			h = clusterer.HandlerFuncs{Packet: func(p clusterer.Packet) {
				b.Reset(buf[:0], 1, "bench-rtt", 2)
				b.PushRaw(p.Body)
				frame, err := b.Finish()
				if err == nil {
					var rp bin.Packet
					if rp, err = bin.Parse(frame); err == nil {
						err = c.SendTo(benchCluster, 1, rp)
					}
				}
				if err != nil {
					replyErrs.Add(1)
				}
			}}
		}
		if err := c.RegisterCapability(clusterer.CapabilityConfig{Name: "bench-rtt", Cluster: benchCluster}, h); err != nil {
			c.Close()
			return err
		}
		c2, err := startWith(c)
		if err != nil {
			return err
		}
		nodes[id] = c2
	}
	if !waitFor(10*time.Second, 10*time.Millisecond, func() bool { return meshUp(nodes) }) {
		return errors.New("latency: the two nodes did not link up within 10 s")
	}

	// Library round trips.
	a := nodes[1]
	var b bin.Builder
	reqBuf := make([]byte, 0, 512)
	payload := make([]byte, o.payload)
	seq := uint64(0)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	libRTT := func() (time.Duration, bool) {
		seq++
		binary.LittleEndian.PutUint64(payload, seq)
		b.Reset(reqBuf[:0], 1, "bench-rtt", 1)
		b.PushRaw(payload)
		frame, _ := b.Finish()
		p, err := bin.Parse(frame)
		if err != nil {
			return 0, false
		}
		start := time.Now()
		if err := a.SendTo(benchCluster, 2, p); err != nil {
			return 0, false
		}
		timer.Reset(time.Second)
		for {
			select {
			case got := <-replies:
				if got == seq {
					d := time.Since(start)
					timer.Stop()
					return d, true
				}
			case <-timer.C:
				return 0, false
			}
		}
	}

	// Raw TCP ping-pong.
	rc, err := newRawPingPong(o.payload)
	if err != nil {
		return fmt.Errorf("raw TCP baseline: %w", err)
	}
	defer rc.close()

	var lib, raw latStats
	for range o.warmup {
		libRTT()
		rc.rtt()
	}
	per := o.rtts / o.rounds
	for r := range o.rounds {
		n := per
		if r == o.rounds-1 {
			n = o.rtts - per*(o.rounds-1)
		}
		for range n {
			d, err := rc.rtt()
			if err != nil {
				return fmt.Errorf("raw TCP baseline: %w", err)
			}
			raw.samples = append(raw.samples, d)
		}
		for range n {
			if d, ok := libRTT(); ok {
				lib.samples = append(lib.samples, d)
			} else {
				lib.lost++
			}
		}
	}
	rp50, rp90, rp99, rp999, rmax := raw.summary()
	lp50, lp90, lp99, lp999, lmax := lib.summary()
	fmt.Printf("%-18s %10s %10s %10s %10s %10s\n", "", "p50", "p90", "p99", "p99.9", "max")
	fmt.Printf("%-18s %10s %10s %10s %10s %10s\n", "raw TCP ping-pong", us(rp50), us(rp90), us(rp99), us(rp999), us(rmax))
	fmt.Printf("%-18s %10s %10s %10s %10s %10s\n", "clusterer SendTo", us(lp50), us(lp90), us(lp99), us(lp999), us(lmax))
	fmt.Printf("%-18s %9.2fx %9.2fx %9.2fx %9.2fx\n", "ratio (lib/raw)", ratioD(lp50, rp50), ratioD(lp90, rp90), ratioD(lp99, rp99), ratioD(lp999, rp999))
	fmt.Printf("round trips measured: raw %d, library %d (lost/timed out %d, reply send errors %d)\n",
		len(raw.samples), len(lib.samples), lib.lost, replyErrs.Load())
	rep.add("latency      SendTo RTT p50 %s p99 %s vs raw TCP p50 %s p99 %s = %.2fx / %.2fx; lost %d",
		us(lp50), us(lp99), us(rp50), us(rp99), ratioD(lp50, rp50), ratioD(lp99, rp99), lib.lost)
	return nil
}

func ratioD(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// rawPingPong is one TCP connection to an echo server that returns each
// length-prefixed frame as soon as it has read it.
type rawPingPong struct {
	ln    net.Listener
	conn  net.Conn
	frame []byte
	resp  []byte
	done  chan struct{}
}

func newRawPingPong(payload int) (*rawPingPong, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &rawPingPong{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			if _, err := io.ReadFull(c, buf[:4]); err != nil {
				return
			}
			n := int(binary.LittleEndian.Uint32(buf))
			if n > len(buf)-4 {
				return
			}
			if _, err := io.ReadFull(c, buf[4:4+n]); err != nil {
				return
			}
			if _, err := c.Write(buf[:4+n]); err != nil {
				return
			}
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, err
	}
	r.conn = conn
	r.frame = make([]byte, 4+payload)
	binary.LittleEndian.PutUint32(r.frame, uint32(payload))
	r.resp = make([]byte, 4+payload)
	return r, nil
}

func (r *rawPingPong) rtt() (time.Duration, error) {
	start := time.Now()
	if _, err := r.conn.Write(r.frame); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(r.conn, r.resp); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (r *rawPingPong) close() {
	r.conn.Close()
	r.ln.Close()
	<-r.done
}
