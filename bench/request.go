package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterer-go/clusterer"
)

// Scenario 5: generic messages with replies (Request, Broadcast), the
// "WHEREIS" pattern: (a) sequential Request round trips between two nodes
// against the raw-TCP ping-pong of the latency scenario, (b) concurrent
// Requests against as many raw ping-pong connections in parallel, (c) a
// Broadcast answered by every node of a larger cluster against a raw
// fan-out over one connection per responder.

const (
	portRequest   = 27400 // the two nodes of (a) and (b)
	portBroadcast = 27500 // the asker and the responders of (c)
)

type reqOptions struct {
	rtts        int // (a) sequential round trips per side
	rounds      int // (a), (c) alternating raw/library chunks
	payload     int // request body bytes, echoed back
	warmup      int // (a), (c) unmeasured operations per side first
	concurrency int // (b) goroutines issuing requests
	window      time.Duration
	responders  int // (c) nodes answering a broadcast
	bcasts      int // (c) broadcasts per side
}

// reqTimeout bounds each Request and Broadcast; one not done by then is
// counted as lost.
const reqTimeout = 2 * time.Second

// sideResult is one side's measurements.
type sideResult struct {
	samples []time.Duration
	wall    time.Duration // time spent in the measured operations' loops
	lost    int
}

func (s *sideResult) rate() float64 {
	if s.wall <= 0 {
		return 0
	}
	return float64(len(s.samples)) / s.wall.Seconds()
}

func (s *sideResult) pct(p ...float64) []time.Duration {
	sorted := slices.Clone(s.samples)
	slices.Sort(sorted)
	out := make([]time.Duration, len(p))
	for i, q := range p {
		out[i] = percentile(sorted, q)
	}
	return out
}

// alternate runs total operations of raw and of lib, sequentially, in
// rounds alternating chunks (raw first), after warmup unmeasured ones of
// each, so that machine noise hits both sides. A raw error ends the run; a
// lib error counts as lost.
func alternate(total, rounds, warmup int, raw, lib func() (time.Duration, error)) (r, l sideResult, libErr error, err error) {
	for range warmup {
		if _, err := raw(); err != nil {
			return r, l, nil, fmt.Errorf("raw TCP baseline: %w", err)
		}
		_, _ = lib()
	}
	per := total / rounds
	for i := range rounds {
		n := per
		if i == rounds-1 {
			n = total - per*(rounds-1)
		}
		t := time.Now()
		for range n {
			d, err := raw()
			if err != nil {
				return r, l, libErr, fmt.Errorf("raw TCP baseline: %w", err)
			}
			r.samples = append(r.samples, d)
		}
		r.wall += time.Since(t)
		t = time.Now()
		for range n {
			d, err := lib()
			if err != nil {
				l.lost++
				libErr = cmp.Or(libErr, err)
				continue
			}
			l.samples = append(l.samples, d)
		}
		l.wall += time.Since(t)
	}
	return r, l, libErr, nil
}

// concurrently runs op on n goroutines for warm+window and keeps what
// completed within the window. op's argument is the goroutine's index.
func concurrently(n int, warm, window time.Duration, op func(w int) (time.Duration, error)) (res sideResult, firstErr error) {
	begin := time.Now().Add(warm)
	end := begin.Add(window)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := range n {
		wg.Go(func() {
			var mine []time.Duration
			lost := 0
			var errSeen error
			for {
				d, err := op(w)
				now := time.Now()
				if now.After(end) {
					break
				}
				if now.Before(begin) {
					continue
				}
				if err != nil {
					lost++
					errSeen = cmp.Or(errSeen, err)
					if errors.Is(err, clusterer.ErrClosed) || errors.Is(err, io.EOF) {
						break
					}
					continue
				}
				mine = append(mine, d)
			}
			mu.Lock()
			res.samples = append(res.samples, mine...)
			res.lost += lost
			firstErr = cmp.Or(firstErr, errSeen)
			mu.Unlock()
		})
	}
	wg.Wait()
	res.wall = window
	return res, firstErr
}

// body is a printable request body of n bytes (generic messages are
// strings; OpenSIPS scripts would see it as text).
func body(n int) string {
	const alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b strings.Builder
	for i := range n {
		b.WriteByte(alpha[i%len(alpha)])
	}
	return b.String()
}

// echoNode starts a node of a provisioned full mesh whose request handler
// returns the request's body.
func echoNode(id int, ids []int, basePort int, tm timing) (*clusterer.Cluster, error) {
	c, err := clusterer.New(nodeConfig(id, ids, basePort, nil, tm))
	if err != nil {
		return nil, err
	}
	c.HandleRequests(func(req clusterer.Message) (string, bool) { return req.Body, true })
	return startWith(c)
}

func runRequest(o reqOptions, rep *report) error {
	section("5. request/reply: Request and Broadcast vs raw TCP")
	tm := timing{pingInterval: time.Second, pingTimeout: time.Second, nodeTimeout: 5 * time.Second}
	msg := body(o.payload)

	// --- (a) and (b): two nodes.
	pair := map[int]*clusterer.Cluster{}
	closeAll := func(m map[int]*clusterer.Cluster) {
		for id, c := range m {
			c.Close()
			delete(m, id)
		}
	}
	defer closeAll(pair)
	for _, id := range []int{1, 2} {
		c, err := echoNode(id, []int{1, 2}, portRequest, tm)
		if err != nil {
			return err
		}
		pair[id] = c
	}
	if !waitFor(10*time.Second, 10*time.Millisecond, func() bool { return meshUp(pair) }) {
		return errors.New("request: the two nodes did not link up within 10 s")
	}
	a := pair[1]
	request := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
		defer cancel()
		t := time.Now()
		got, err := a.Request(ctx, benchCluster, 2, msg)
		d := time.Since(t)
		if err == nil && got != msg {
			err = fmt.Errorf("reply of %d bytes differs from the request", len(got))
		}
		return d, err
	}

	fmt.Printf("\n(a) sequential Request round trips, node 1 -> node 2 (handler echoes the body), %d-byte body;\n", o.payload)
	fmt.Printf("    baseline: raw TCP ping-pong (latency scenario's), one connection, %d-byte frame each way\n", o.payload)
	fmt.Printf("    %d round trips per side in %d alternating chunks (+%d warm-up), each Request with a %v context\n",
		o.rtts, o.rounds, o.warmup, reqTimeout)
	rc, err := newRawPingPong(o.payload)
	if err != nil {
		return fmt.Errorf("raw TCP baseline: %w", err)
	}
	raw, lib, libErr, err := alternate(o.rtts, o.rounds, o.warmup, rc.rtt, request)
	rc.close()
	if err != nil {
		return err
	}
	rp := raw.pct(50, 90, 99, 99.9)
	lp := lib.pct(50, 90, 99, 99.9)
	fmt.Printf("%-22s %10s %10s %10s %10s %12s\n", "", "p50", "p90", "p99", "p99.9", "round trips/s")
	fmt.Printf("%-22s %10s %10s %10s %10s %12.0f\n", "raw TCP ping-pong", us(rp[0]), us(rp[1]), us(rp[2]), us(rp[3]), raw.rate())
	fmt.Printf("%-22s %10s %10s %10s %10s %12.0f\n", "clusterer Request", us(lp[0]), us(lp[1]), us(lp[2]), us(lp[3]), lib.rate())
	fmt.Printf("%-22s %9.2fx %9.2fx %9.2fx %9.2fx %11.2fx\n", "ratio (lib/raw)", ratioD(lp[0], rp[0]), ratioD(lp[1], rp[1]),
		ratioD(lp[2], rp[2]), ratioD(lp[3], rp[3]), lib.rate()/raw.rate())
	p99ok := lib.lost == 0 && lp[2] <= 3*rp[2]
	fmt.Printf("lost/failed Requests: %d%s\n", lib.lost, errNote(libErr))
	fmt.Printf("target: p99 within 3x raw TCP -> %s (%.2fx)\n", verdict(p99ok), ratioD(lp[2], rp[2]))
	rep.add("request      Request RTT p50 %s p99 %s vs raw TCP p50 %s p99 %s = %.2fx / %.2fx (target p99 <= 3x: %s); %.0f vs %.0f round trips/s; lost %d",
		us(lp[0]), us(lp[2]), us(rp[0]), us(rp[2]), ratioD(lp[0], rp[0]), ratioD(lp[2], rp[2]), verdict(p99ok),
		lib.rate(), raw.rate(), lib.lost)
	seqRate := lib.rate()

	// (b) concurrent.
	fmt.Printf("\n(b) %d goroutines issuing Requests node 1 -> node 2 for %v (after %v warm-up);\n", o.concurrency, o.window, o.window/4)
	fmt.Printf("    baseline: %d raw TCP ping-pong connections, one goroutine each (echo server goroutine per connection)\n", o.concurrency)
	raws := make([]*rawPingPong, 0, o.concurrency)
	defer func() {
		for _, r := range raws {
			r.close()
		}
	}()
	for range o.concurrency {
		r, err := newRawPingPong(o.payload)
		if err != nil {
			return fmt.Errorf("raw TCP baseline: %w", err)
		}
		raws = append(raws, r)
	}
	cRaw, rawErr := concurrently(o.concurrency, o.window/4, o.window, func(w int) (time.Duration, error) { return raws[w].rtt() })
	if rawErr != nil {
		return fmt.Errorf("raw TCP baseline: %w", rawErr)
	}
	cLib, cErr := concurrently(o.concurrency, o.window/4, o.window, func(int) (time.Duration, error) { return request() })
	crp := cRaw.pct(50, 99)
	clp := cLib.pct(50, 99)
	fmt.Printf("%-22s %12s %10s %10s\n", "", "requests/s", "p50", "p99")
	fmt.Printf("%-22s %12.0f %10s %10s\n", fmt.Sprintf("raw TCP x%d", o.concurrency), cRaw.rate(), us(crp[0]), us(crp[1]))
	fmt.Printf("%-22s %12.0f %10s %10s\n", fmt.Sprintf("clusterer Request x%d", o.concurrency), cLib.rate(), us(clp[0]), us(clp[1]))
	fmt.Printf("ratio lib/raw: %.2fx requests/s; %.1fx the sequential Request rate of (a); lost/failed %d%s\n",
		cLib.rate()/cRaw.rate(), cLib.rate()/seqRate, cLib.lost, errNote(cErr))
	rep.add("request      %d concurrent Requests: %.0f req/s (%.1fx sequential) vs %d raw ping-pong conns %.0f/s = %.2fx; p50 %s p99 %s; lost %d",
		o.concurrency, cLib.rate(), cLib.rate()/seqRate, o.concurrency, cRaw.rate(), cLib.rate()/cRaw.rate(), us(clp[0]), us(clp[1]), cLib.lost)
	for _, r := range raws {
		r.close()
	}
	raws = raws[:0]
	closeAll(pair)

	// --- (c) Broadcast to many nodes.
	return runBroadcast(o, msg, tm, rep)
}

func runBroadcast(o reqOptions, msg string, tm timing, rep *report) error {
	n := o.responders + 1
	fmt.Printf("\n(c) Broadcast from node 1 to %d responders (127.0.0.2..%d, provisioned full mesh, handlers echo), %d-byte body;\n",
		o.responders, n, o.payload)
	fmt.Printf("    baseline: raw TCP fan-out, one connection per responder to its own echo goroutine: write the frame on all %d,\n", o.responders)
	fmt.Printf("    then read the %d answers (what Broadcast does, minus routing, tags and handlers)\n", o.responders)
	fmt.Printf("    %d broadcasts per side in %d alternating chunks (+%d warm-up)\n", o.bcasts, o.rounds, o.warmup/10)
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i + 1
	}
	nodes := map[int]*clusterer.Cluster{}
	defer func() {
		for _, c := range nodes {
			c.Close()
		}
	}()
	t0 := time.Now()
	for _, id := range ids {
		c, err := echoNode(id, ids, portBroadcast, tm)
		if err != nil {
			return err
		}
		nodes[id] = c
	}
	if !waitFor(30*time.Second, 20*time.Millisecond, func() bool { return meshUp(nodes) }) {
		return fmt.Errorf("broadcast: the %d-node full mesh did not form within 30 s: %s", n, notUp(nodes, 12))
	}
	fmt.Printf("    full mesh of %d nodes after %v; settling 1 s\n", n, time.Since(t0).Round(time.Millisecond))
	time.Sleep(time.Second)

	asker := nodes[1]
	incomplete := 0
	broadcast := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
		defer cancel()
		t := time.Now()
		replies, err := asker.Broadcast(ctx, benchCluster, msg)
		d := time.Since(t)
		if err != nil {
			return d, err
		}
		if len(replies) != o.responders {
			incomplete++
			return d, fmt.Errorf("%d replies, want %d", len(replies), o.responders)
		}
		for _, r := range replies {
			if r.Err != nil || r.Body != msg {
				incomplete++
				return d, fmt.Errorf("node %d: %v (body %d bytes)", r.Node, r.Err, len(r.Body))
			}
		}
		return d, nil
	}

	fan := make([]*rawPingPong, 0, o.responders)
	defer func() {
		for _, r := range fan {
			r.close()
		}
	}()
	for range o.responders {
		r, err := newRawPingPong(o.payload)
		if err != nil {
			return fmt.Errorf("raw TCP baseline: %w", err)
		}
		fan = append(fan, r)
	}
	fanout := func() (time.Duration, error) {
		t := time.Now()
		for _, r := range fan {
			if _, err := r.conn.Write(r.frame); err != nil {
				return 0, err
			}
		}
		for _, r := range fan {
			if _, err := io.ReadFull(r.conn, r.resp); err != nil {
				return 0, err
			}
		}
		return time.Since(t), nil
	}
	raw, lib, libErr, err := alternate(o.bcasts, o.rounds, o.warmup/10, fanout, broadcast)
	if err != nil {
		return err
	}
	// Context: the same 20 exchanges one after the other.
	var seq sideResult
	t := time.Now()
	for range min(o.bcasts, 500) {
		var sum time.Duration
		for _, r := range fan {
			d, err := r.rtt()
			if err != nil {
				return fmt.Errorf("raw TCP baseline: %w", err)
			}
			sum += d
		}
		seq.samples = append(seq.samples, sum)
	}
	seq.wall = time.Since(t)

	rp, lp, sp := raw.pct(50, 90, 99), lib.pct(50, 90, 99), seq.pct(50, 90, 99)
	fmt.Printf("%-30s %10s %10s %10s %12s\n", "", "p50", "p90", "p99", "rounds/s")
	fmt.Printf("%-30s %10s %10s %10s %12.0f\n", fmt.Sprintf("raw TCP fan-out to %d", o.responders), us(rp[0]), us(rp[1]), us(rp[2]), raw.rate())
	fmt.Printf("%-30s %10s %10s %10s %12.0f\n", fmt.Sprintf("raw TCP %d ping-pongs in a row", o.responders), us(sp[0]), us(sp[1]), us(sp[2]), seq.rate())
	fmt.Printf("%-30s %10s %10s %10s %12.0f\n", fmt.Sprintf("clusterer Broadcast to %d", o.responders), us(lp[0]), us(lp[1]), us(lp[2]), lib.rate())
	fmt.Printf("%-30s %9.2fx %9.2fx %9.2fx %11.2fx\n", "ratio Broadcast/fan-out", ratioD(lp[0], rp[0]), ratioD(lp[1], rp[1]), ratioD(lp[2], rp[2]), lib.rate()/raw.rate())
	fmt.Printf("%-30s %9.2fx %9.2fx %9.2fx %11.2fx\n", "ratio Broadcast/in-a-row", ratioD(lp[0], sp[0]), ratioD(lp[1], sp[1]), ratioD(lp[2], sp[2]), lib.rate()/seq.rate())
	fmt.Printf("failed or incomplete broadcasts: %d (incomplete %d)%s\n", lib.lost, incomplete, errNote(libErr))
	rep.add("request      Broadcast to %d: %.0f/s, p50 %s p99 %s vs raw fan-out p50 %s p99 %s = %.2fx / %.2fx (no target; %.2fx / %.2fx of %d ping-pongs in a row); failed %d",
		o.responders, lib.rate(), us(lp[0]), us(lp[2]), us(rp[0]), us(rp[2]), ratioD(lp[0], rp[0]), ratioD(lp[2], rp[2]),
		ratioD(lp[0], sp[0]), ratioD(lp[2], sp[2]), o.responders, lib.lost)
	return nil
}

func errNote(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprintf(" (first error: %v)", err)
}
