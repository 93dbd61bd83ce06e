package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
)

// Scenario 1: SendTo throughput between two nodes on loopback, against a
// raw TCP baseline measured in the same run, plus allocations per SendTo.

type tpOptions struct {
	duration time.Duration // measured time per side, split over rounds
	rounds   int           // alternating raw/library rounds (noise)
	senders  int
	payload  int
	warmup   time.Duration
	credit   int // flow-controlled rounds' window (0: none)
}

type roundResult struct {
	delivered uint64
	elapsed   time.Duration
	ok, full  uint64        // sends accepted / refused with a full queue
	destDown  uint64        // refused: destination down
	other     uint64        // other send errors
	mallocs   uint64        // process-wide, during the window
	cpu       time.Duration // process CPU time (user+system) during the window
	// firstFull is when the first send was refused with a full queue,
	// relative to the round's start (-1: never).
	firstFull time.Duration
	downs     []time.Duration // LinkDown/NodeDown events at the sender, relative to the round's start
	remeshed  time.Duration   // time to get the link UP again after the round (0: it never went down)
	hdrops    uint64          // deliveries dropped by the receiver's full handler queue
}

func (r roundResult) rate() float64 { return float64(r.delivered) / r.elapsed.Seconds() }

func perMsg(r roundResult) float64 { return float64(r.cpu) / float64(max(r.delivered, 1)) }

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runThroughput(o tpOptions, rep *report) error {
	section("1. throughput: SendTo between two nodes vs raw TCP")
	fmt.Printf("payload %d B, %d concurrent senders, %d alternating rounds of %v per side (+%v warm-up each), GOMAXPROCS=%d\n",
		o.payload, o.senders, o.rounds, o.duration/time.Duration(o.rounds), o.warmup, runtime.GOMAXPROCS(0))

	ids := []int{1, 2}
	tm := timing{pingInterval: time.Second, pingTimeout: time.Second, nodeTimeout: 5 * time.Second}
	nodes := map[int]*clusterer.Cluster{}
	defer func() {
		for _, c := range nodes {
			c.Close()
		}
	}()
	var recv atomic.Uint64
	ev := &eventLog{}
	for _, id := range ids {
		c, err := clusterer.New(nodeConfig(id, ids, portThroughput, nil, tm))
		if err != nil {
			return err
		}
		if id == 2 {
			err = c.RegisterCapability(clusterer.CapabilityConfig{Name: "bench-repl", Cluster: benchCluster},
				clusterer.HandlerFuncs{Packet: func(clusterer.Packet) { recv.Add(1) }})
			if err != nil {
				c.Close()
				return err
			}
		} else {
			c.Subscribe(0, ev.add)
		}
		c2, err := startWith(c)
		if err != nil {
			return err
		}
		nodes[id] = c2
	}
	if !waitFor(10*time.Second, 10*time.Millisecond, func() bool { return meshUp(nodes) }) {
		return errors.New("throughput: the two nodes did not link up within 10 s")
	}
	pkt, err := packet("bench-repl", o.payload)
	if err != nil {
		return err
	}
	a, b := nodes[1], nodes[2]
	window := o.duration / time.Duration(o.rounds)
	var raw, open, paced []roundResult
	for i := range o.rounds {
		r, err := rawRound(o.senders, o.payload, o.warmup, window)
		if err != nil {
			return fmt.Errorf("raw TCP baseline: %w", err)
		}
		raw = append(raw, r)
		fmt.Printf("  round %d raw TCP          : %9.0f msgs/s  (%d frames in %v)\n", i+1, r.rate(), r.delivered, r.elapsed.Round(time.Millisecond))
		l := libRound(a, b, pkt, &recv, ev, o.senders, 0, o.warmup, window)
		open = append(open, l)
		fmt.Printf("  round %d SendTo open loop : %9.0f msgs/s  (%d delivered in %v)\n      %s\n",
			i+1, l.rate(), l.delivered, l.elapsed.Round(time.Millisecond), l.describe())
		if o.credit > 0 {
			p := libRound(a, b, pkt, &recv, ev, o.senders, o.credit, o.warmup, window)
			paced = append(paced, p)
			fmt.Printf("  round %d SendTo credit %d: %9.0f msgs/s  (%d delivered in %v)\n      %s\n",
				i+1, o.credit, p.rate(), p.delivered, p.elapsed.Round(time.Millisecond), p.describe())
		}
	}
	sum := func(rs []roundResult) (t roundResult) {
		for _, r := range rs {
			t.delivered += r.delivered
			t.elapsed += r.elapsed
			t.ok += r.ok
			t.full += r.full
			t.destDown += r.destDown
			t.other += r.other
			t.mallocs += r.mallocs
			t.cpu += r.cpu
			t.downs = append(t.downs, r.downs...)
			t.hdrops += r.hdrops
		}
		return t
	}
	rt, lt, pt := sum(raw), sum(open), sum(paced)
	ratio := lt.rate() / rt.rate()
	sa, sb := a.Stats(), b.Stats()
	fmt.Printf("raw TCP baseline           : %10.0f msgs/s (%.1f MB/s of payload)\n", rt.rate(), rt.rate()*float64(o.payload)/1e6)
	fmt.Printf("SendTo, open loop          : %10.0f msgs/s (%.1f MB/s) = %.1f%% of raw TCP (target >= 50%%: %s)\n",
		lt.rate(), lt.rate()*float64(o.payload)/1e6, 100*ratio, verdict(ratio >= 0.5))
	pratio := 0.0
	if o.credit > 0 {
		pratio = pt.rate() / rt.rate()
		fmt.Printf("SendTo, credit window %-5d: %10.0f msgs/s (%.1f MB/s) = %.1f%% of raw TCP\n",
			o.credit, pt.rate(), pt.rate()*float64(o.payload)/1e6, 100*pratio)
	}
	fmt.Printf("sender node  : %d frames in %d write batches (%.1f frames/batch), frames dropped by the transport %d\n",
		sa.FramesSent, sa.WriteBatches, float64(sa.FramesSent)/float64(max(sa.WriteBatches, 1)), sa.QueueDrops)
	fmt.Printf("receiver node: %d frames received, %d dropped by the full handler queue (HandlerQueue 4096), inbox full %d\n",
		sb.FramesReceived, sb.HandlerDrops, sb.InboxFull)
	fmt.Printf("process-wide allocations per delivered message: SendTo %.2f, raw TCP %.3f\n",
		float64(lt.mallocs+pt.mallocs)/float64(max(lt.delivered+pt.delivered, 1)), float64(rt.mallocs)/float64(max(rt.delivered, 1)))
	// The machine may be shared: CPU time per message is what the work
	// costs, whatever share of the machine the process got.
	fmt.Printf("process CPU time per delivered message (both nodes, all goroutines): SendTo open loop %.0f ns, raw TCP %.0f ns = %.2fx\n",
		perMsg(lt), perMsg(rt), perMsg(lt)/perMsg(rt))
	rep.add("throughput   open loop: SendTo %.0f msgs/s vs raw TCP %.0f msgs/s = %.1f%% (target >= 50%%: %s); %d link-down events, %d handler drops",
		lt.rate(), rt.rate(), 100*ratio, verdict(ratio >= 0.5), len(lt.downs), sb.HandlerDrops)
	if o.credit > 0 {
		rep.add("throughput   credit window %d: SendTo %.0f msgs/s = %.1f%% of raw TCP; %d link-down events",
			o.credit, pt.rate(), 100*pratio, len(pt.downs))
	}

	// Allocations per SendTo, in steady state.
	return measureAllocs(a, b, o.payload, rep)
}

// startWith starts an already configured Cluster.
func startWith(c *clusterer.Cluster) (*clusterer.Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("node %d: %w", c.MyID(), err)
	}
	return c, nil
}

// libRound runs senders calling SendTo in a loop and counts deliveries at
// the receiver's handler over the window (after a warm-up). SendTo never
// blocks: a send refused with a full queue is retried after a 50 µs sleep,
// one refused because the destination is down after 1 ms.
//
// credit > 0 adds end-to-end flow control, as an application would with
// acknowledgements: a sender waits while more than credit messages are
// sent and neither delivered nor dropped (it reads the receiver's counters,
// which it can here because both nodes live in this process).
func libRound(a, b *clusterer.Cluster, pkt bin.Packet, recv *atomic.Uint64, ev *eventLog, senders, credit int,
	warm, window time.Duration) roundResult {
	var stop atomic.Bool
	var wg sync.WaitGroup
	res := roundResult{firstFull: -1}
	var mu sync.Mutex
	var sent, dropped atomic.Uint64
	begin := time.Now()
	var firstFull atomic.Int64
	if credit > 0 {
		sent.Store(recv.Load())
		base := b.Stats().HandlerDrops
		wg.Add(1)
		go func() { // the receiver's drop counter, polled
			defer wg.Done()
			for !stop.Load() {
				dropped.Store(b.Stats().HandlerDrops - base)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	ev.reset(begin)
	drops0 := b.Stats().HandlerDrops
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ok, full, down, other uint64
			for !stop.Load() {
				if credit > 0 && int64(sent.Load())-int64(recv.Load())-int64(dropped.Load()) > int64(credit) {
					time.Sleep(20 * time.Microsecond)
					continue
				}
				err := a.SendTo(benchCluster, 2, pkt)
				switch {
				case err == nil:
					ok++
					if credit > 0 {
						sent.Add(1)
					}
				case errors.Is(err, clusterer.ErrQueueFull):
					full++
					firstFull.CompareAndSwap(0, int64(time.Since(begin)))
					time.Sleep(50 * time.Microsecond)
				case errors.Is(err, clusterer.ErrDestDown):
					down++
					time.Sleep(time.Millisecond)
				default:
					other++
					time.Sleep(time.Millisecond)
				}
			}
			mu.Lock()
			res.ok += ok
			res.full += full
			res.destDown += down
			res.other += other
			mu.Unlock()
		}()
	}
	time.Sleep(warm)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	c0, t0, cpu0 := recv.Load(), time.Now(), cpuTime()
	time.Sleep(window)
	c1, t1, cpu1 := recv.Load(), time.Now(), cpuTime()
	runtime.ReadMemStats(&m1)
	res.cpu = cpu1 - cpu0
	stop.Store(true)
	wg.Wait()
	// Let the queue drain so that the next round starts idle.
	last := recv.Load()
	waitFor(5*time.Second, 100*time.Millisecond, func() bool {
		n := recv.Load()
		done := n == last
		last = n
		return done
	})
	res.delivered, res.elapsed, res.mallocs = c1-c0, t1.Sub(t0), m1.Mallocs-m0.Mallocs
	if f := firstFull.Load(); f > 0 {
		res.firstFull = time.Duration(f)
	}
	res.downs = ev.since()
	res.hdrops = b.Stats().HandlerDrops - drops0
	if len(res.downs) > 0 {
		r0 := time.Now()
		waitFor(15*time.Second, 10*time.Millisecond, func() bool { return meshUp(map[int]*clusterer.Cluster{1: a, 2: b}) })
		res.remeshed = time.Since(r0)
	}
	return res
}

// eventLog records the sender's LinkDown and NodeDown events.
type eventLog struct {
	mu    sync.Mutex
	begin time.Time
	ts    []time.Duration
}

func (l *eventLog) reset(begin time.Time) {
	l.mu.Lock()
	l.begin, l.ts = begin, nil
	l.mu.Unlock()
}

func (l *eventLog) add(e clusterer.Event) {
	if e.Kind != clusterer.LinkDown && e.Kind != clusterer.NodeDown {
		return
	}
	l.mu.Lock()
	if !l.begin.IsZero() {
		l.ts = append(l.ts, time.Since(l.begin))
	}
	l.mu.Unlock()
}

func (l *eventLog) since() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ts)
}

func (r roundResult) describe() string {
	s := fmt.Sprintf("sends ok %d, queue-full %d, dest-down %d, other %d; handler-queue drops %d", r.ok, r.full, r.destDown, r.other, r.hdrops)
	if r.firstFull >= 0 {
		s += fmt.Sprintf("; first queue-full at +%s", ms(r.firstFull))
	}
	if len(r.downs) > 0 {
		s += fmt.Sprintf("; %d LinkDown/NodeDown events at the sender, first at +%s; link UP again %s after the round",
			len(r.downs), ms(r.downs[0]), ms(r.remeshed))
	}
	return s
}

// rawRound is the baseline: length-prefixed frames over one loopback TCP
// connection; senders hand frames to one writer goroutine through a
// channel, the writer batches them in a bufio.Writer flushed whenever the
// channel is empty; the receiver counts frames.
func rawRound(senders, payloadLen int, warm, window time.Duration) (roundResult, error) {
	var res roundResult
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer ln.Close()
	var count atomic.Uint64
	recvDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			recvDone <- err
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 64<<10)
		var hdr [4]byte
		buf := make([]byte, 64<<10)
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				recvDone <- nil
				return
			}
			n := binary.LittleEndian.Uint32(hdr[:])
			if int(n) > len(buf) {
				recvDone <- fmt.Errorf("bad frame length %d", n)
				return
			}
			if _, err := io.ReadFull(br, buf[:n]); err != nil {
				recvDone <- err
				return
			}
			count.Add(1)
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return res, err
	}
	payload := make([]byte, payloadLen)
	ch := make(chan []byte, 4096)
	writerDone := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(conn, 64<<10)
		var hdr [4]byte
		var werr error
		for f := range ch {
			if werr != nil {
				continue
			}
			binary.LittleEndian.PutUint32(hdr[:], uint32(len(f)))
			bw.Write(hdr[:])
			bw.Write(f)
			if len(ch) == 0 {
				werr = bw.Flush()
			}
		}
		if werr == nil {
			werr = bw.Flush()
		}
		conn.Close()
		writerDone <- werr
	}()
	var stop atomic.Bool
	var wg sync.WaitGroup
	var sent atomic.Uint64
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := uint64(0)
			for !stop.Load() {
				ch <- payload
				n++
			}
			sent.Add(n)
		}()
	}
	time.Sleep(warm)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	c0, t0, cpu0 := count.Load(), time.Now(), cpuTime()
	time.Sleep(window)
	c1, t1, cpu1 := count.Load(), time.Now(), cpuTime()
	runtime.ReadMemStats(&m1)
	res.cpu = cpu1 - cpu0
	stop.Store(true)
	wg.Wait()
	close(ch)
	if err := <-writerDone; err != nil {
		return res, err
	}
	if err := <-recvDone; err != nil {
		return res, err
	}
	res.delivered, res.elapsed, res.mallocs, res.ok = c1-c0, t1.Sub(t0), m1.Mallocs-m0.Mallocs, sent.Load()
	return res, nil
}

// measureAllocs measures allocations per SendTo three ways. The packets go
// to a capability the receiver did not register, so the receiver drops
// them without copying (its delivery copy would otherwise count too: both
// nodes live in this process). The name is interned as registering it
// would, because parsing an unregistered capability's packet allocates its
// name (measured separately below).
func measureAllocs(a, b *clusterer.Cluster, payload int, rep *report) error {
	pkt, err := packet("bench-alloc", payload)
	if err != nil {
		return err
	}
	// Receiver side, for the record: Parse of a frame whose capability is
	// not interned allocates the name.
	unk, err := packet("bench-never-registered", 16)
	if err != nil {
		return err
	}
	unkFrame, _ := bin.AppendPacket(nil, unk)
	parseUnknown := testing.AllocsPerRun(1000, func() { bin.Parse(unkFrame) })
	bin.InternCapability("bench-alloc")
	if !waitFor(15*time.Second, 10*time.Millisecond, func() bool { return meshUp(map[int]*clusterer.Cluster{1: a, 2: b}) }) {
		return errors.New("allocations: the link did not come back up")
	}
	var full, down, other, sent uint64
	// send sends one packet; every 128 sends it sleeps 500 µs, a pace the
	// writer keeps up with easily, so the queue never fills (a full queue
	// takes the link down, see the throughput rounds). Pacing by asking
	// the receiver would allocate (Stats builds a map).
	calls := 0
	send := func() {
		calls++
		if calls%128 == 0 {
			time.Sleep(500 * time.Microsecond)
		}
		err := a.SendTo(benchCluster, 2, pkt)
		switch {
		case err == nil:
			sent++
		case errors.Is(err, clusterer.ErrQueueFull):
			full++
		case errors.Is(err, clusterer.ErrDestDown):
			down++
		default:
			other++
		}
	}
	// Warm up: grow the queue buffers and the frame pool.
	for range 50000 {
		send()
	}
	time.Sleep(200 * time.Millisecond)
	sent = 0

	// (1) testing.AllocsPerRun: process-wide mallocs / runs, integer
	// division as `go test -benchmem` reports (GOMAXPROCS=1 while it runs).
	perRun := testing.AllocsPerRun(5000, send)
	time.Sleep(100 * time.Millisecond)

	// (2) exact process-wide malloc delta over many sends.
	const n = 100000
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for range n {
		send()
	}
	runtime.ReadMemStats(&m1)
	exact := float64(m1.Mallocs-m0.Mallocs) / n

	// (3) attribution: with every allocation profiled, count those whose
	// stack contains SendTo, and name the top allocation sites.
	const profN = 20000
	sendTo, sites := profileAllocs(profN, send)

	fmt.Printf("allocations per SendTo (steady state, %d-byte payload, receiver drops the packets):\n", payload)
	fmt.Printf("  testing.AllocsPerRun(5000) (floors)       : %.0f\n", perRun)
	fmt.Printf("  process-wide MemStats delta / %d sends : %.4f (includes the writer, the receiver's reader and its drop path)\n", n, exact)
	fmt.Printf("  profiled allocations inside SendTo stacks : %.4f per call (MemProfileRate=1, %d calls)\n", sendTo, profN)
	if len(sites) > 0 {
		fmt.Printf("  top allocation sites during the profiled sends (allocs per send):\n")
		for _, s := range sites {
			fmt.Printf("    %8.4f  %s\n", s.perOp, s.name)
		}
	}
	fmt.Printf("  (receiver side: bin.Parse of a packet of a never-registered capability: %.0f allocs, the name)\n", parseUnknown)
	fmt.Printf("  sends: ok %d, queue-full %d, dest-down %d, other errors %d (paced: 128 sends per 0.5 ms)\n",
		sent, full, down, other)
	rep.add("allocs/send  AllocsPerRun %.0f, process-wide MemStats %.4f, profiled inside SendTo %.4f (target 0: %s)",
		perRun, exact, sendTo, verdict(sendTo < 0.01 && exact < 0.01))
	return nil
}

type allocSite struct {
	name  string
	perOp float64
}

const sendToFunc = "github.com/clusterer-go/clusterer.(*Cluster).SendTo"

func profileAllocs(n int, f func()) (sendTo float64, sites []allocSite) {
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	snap := func() map[string]runtime.MemProfileRecord {
		// The profile lags up to two GC cycles.
		for range 3 {
			runtime.GC()
		}
		var recs []runtime.MemProfileRecord
		for {
			k, ok := runtime.MemProfile(nil, true)
			recs = make([]runtime.MemProfileRecord, k+64)
			if k, ok = runtime.MemProfile(recs, true); ok {
				recs = recs[:k]
				break
			}
		}
		out := make(map[string]runtime.MemProfileRecord, len(recs))
		for _, r := range recs {
			out[fmt.Sprint(r.Stack())] = r
		}
		return out
	}
	before := snap()
	for range n {
		f()
	}
	time.Sleep(100 * time.Millisecond)
	after := snap()
	bySite := map[string]int64{}
	var inSendTo int64
	for k, r := range after {
		d := r.AllocObjects - before[k].AllocObjects
		if d <= 0 {
			continue
		}
		frames := runtime.CallersFrames(r.Stack())
		site, hasSendTo, ours := "", false, false
		for {
			fr, more := frames.Next()
			ours = ours || strings.HasPrefix(fr.Function, "main.profileAllocs")
			if site == "" && !strings.HasPrefix(fr.Function, "runtime.") {
				site = fmt.Sprintf("%s (%s:%d)", fr.Function, shortFile(fr.File), fr.Line)
			}
			if fr.Function == sendToFunc {
				hasSendTo = true
			}
			if !more {
				break
			}
		}
		if ours {
			continue // the profile snapshots themselves
		}
		if hasSendTo {
			inSendTo += d
		}
		bySite[site] += d
	}
	for s, d := range bySite {
		sites = append(sites, allocSite{name: s, perOp: float64(d) / float64(n)})
	}
	sort.Slice(sites, func(i, j int) bool { return sites[i].perOp > sites[j].perOp })
	if len(sites) > 6 {
		sites = sites[:6]
	}
	return float64(inSendTo) / float64(n), sites
}

func shortFile(f string) string {
	if i := strings.LastIndex(f, "/"); i >= 0 {
		if j := strings.LastIndex(f[:i], "/"); j >= 0 {
			return f[j+1:]
		}
	}
	return f
}
