package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterer-go/clusterer"
)

// Scenario 3: failure detection on a 20-node provisioned full mesh on
// loopback TCP. (a) crash: a node is closed (its sockets close); (b) silent
// blackhole: a host stops exchanging traffic, sockets stay open. Measured:
// time from the fault to the LAST other node's NodeDown event about the
// victim.

type failOptions struct {
	nodes           int
	crashTrials     int
	blackholeTrials int
	timing          timing
	retries         int           // PingRetries default (documented), for the bound
	stagger         time.Duration // delay between the initial Starts
	restartTrials   int
	downtime        time.Duration // outage before a restart in (c)
}

// recorder keeps, per observer, the first event of each kind about the
// armed target since it was armed.
type recorder struct {
	mu     sync.Mutex
	target int
	since  time.Time
	first  map[clusterer.EventKind]map[int]time.Time // kind -> observer -> time
}

func (r *recorder) arm(target int) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target, r.since = target, time.Now()
	r.first = map[clusterer.EventKind]map[int]time.Time{}
	return r.since
}

func (r *recorder) disarm() {
	r.mu.Lock()
	r.target = 0
	r.mu.Unlock()
}

func (r *recorder) observe(observer int, e clusterer.Event) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.target == 0 || e.Node != r.target || observer == r.target {
		return
	}
	m := r.first[e.Kind]
	if m == nil {
		m = map[int]time.Time{}
		r.first[e.Kind] = m
	}
	if _, ok := m[observer]; !ok {
		m[observer] = now
	}
}

// span returns how many observers raised kind, and the first and last
// times relative to the arming.
func (r *recorder) span(kind clusterer.EventKind) (n int, first, last time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	first = -1
	for _, t := range r.first[kind] {
		d := t.Sub(r.since)
		if first < 0 || d < first {
			first = d
		}
		last = max(last, d)
		n++
	}
	return n, first, last
}

// missing lists the observers (of all) without an event of kind.
func (r *recorder) missing(kind clusterer.EventKind, all []int) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, o := range all {
		if _, ok := r.first[kind][o]; !ok && o != r.target {
			out = append(out, o)
		}
	}
	return out
}

// slowest lists the n observers with the latest events of kind.
func (r *recorder) slowest(kind clusterer.EventKind, n int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	type ot struct {
		o int
		d time.Duration
	}
	var l []ot
	for o, t := range r.first[kind] {
		l = append(l, ot{o, t.Sub(r.since)})
	}
	slices.SortFunc(l, func(a, b ot) int { return int(b.d - a.d) })
	var parts []string
	for _, x := range l[:min(n, len(l))] {
		parts = append(parts, fmt.Sprintf("node %d %s", x.o, ms(x.d)))
	}
	return strings.Join(parts, ", ")
}

// notUp describes the links that keep the mesh from being complete.
func notUp(nodes map[int]*clusterer.Cluster, max int) string {
	var parts []string
	ids := slices.Sorted(maps.Keys(nodes))
	for _, id := range ids {
		for _, st := range nodes[id].Nodes(benchCluster) {
			if _, ok := nodes[st.ID]; ok && (st.Link != clusterer.LinkIsUp || !st.Reachable) {
				parts = append(parts, fmt.Sprintf("%d->%d link %s reachable %v", id, st.ID, st.Link, st.Reachable))
			}
		}
	}
	if len(parts) > max {
		parts = append(parts[:max], fmt.Sprintf("... %d more", len(parts)-max))
	}
	return strings.Join(parts, "; ")
}

type trial struct {
	victim            int
	nodeDowns         int
	first, last       time.Duration
	linkFirst, linkLs time.Duration
	linkDowns         int
	noLinkDown        []int  // observers that raised no LinkDown
	slowest           string // the observers with the latest NodeDowns
	stuck             string // links not UP when the rejoin wait gave up
	closeTook         time.Duration
	rejoin            time.Duration
	rejoined          bool
}

func runFailure(o failOptions, rep *report) error {
	section(fmt.Sprintf("3. failure detection: %d-node loopback full mesh", o.nodes))
	fmt.Printf("provisioned full mesh on 127.0.0.1..%d, ping_interval %v, ping_timeout %v, node_timeout %v, ping retries %d (default)\n",
		o.nodes, o.timing.pingInterval, o.timing.pingTimeout, o.timing.nodeTimeout, o.retries)

	tr := newBHTransport()
	rec := &recorder{}
	ids := make([]int, o.nodes)
	for i := range ids {
		ids[i] = i + 1
	}
	cfgs := map[int]clusterer.Config{}
	nodes := map[int]*clusterer.Cluster{}
	defer func() {
		for _, c := range nodes {
			c.Close()
		}
	}()
	start := func(id int) error {
		c, err := clusterer.New(cfgs[id])
		if err != nil {
			return err
		}
		c.Subscribe(0, func(e clusterer.Event) { rec.observe(id, e) })
		c, err = startWith(c)
		if err != nil {
			return err
		}
		nodes[id] = c
		return nil
	}
	t0 := time.Now()
	for _, id := range ids {
		cfgs[id] = nodeConfig(id, ids, portFailure, tr, o.timing)
		if err := start(id); err != nil {
			return fmt.Errorf("failure: starting: %w", err)
		}
		if o.stagger > 0 && id != ids[len(ids)-1] {
			time.Sleep(o.stagger)
		}
	}
	started := time.Since(t0)
	if !waitFor(2*time.Second, 20*time.Millisecond, func() bool { return meshUp(nodes) }) {
		fmt.Printf("  (slow start: %v after the first Start, not UP yet: %s)\n", time.Since(t0).Round(time.Millisecond), notUp(nodes, 16))
	}
	if !waitFor(30*time.Second, 20*time.Millisecond, func() bool { return meshUp(nodes) }) {
		return fmt.Errorf("failure: the full mesh did not form within 30 s: %s", notUp(nodes, 12))
	}
	fmt.Printf("full mesh of %d nodes formed %v after the first Start (all %d Start calls done in %v)\n",
		o.nodes, time.Since(t0).Round(time.Millisecond), o.nodes, started.Round(time.Millisecond))
	// Let the join's floods settle.
	time.Sleep(time.Second)

	others := o.nodes - 1
	const detectMax = 10 * time.Second
	rejoinMax := 3*o.timing.nodeTimeout + 5*time.Second
	victims := []int{o.nodes, 7, 13, 2, 17, 10, 4, 15}

	// (a) crash.
	var crash []trial
	fmt.Printf("\n(a) crash: Close() the victim (sockets closed, no goodbye); then restart it and wait for the full mesh\n")
	for i := range o.crashTrials {
		v := victims[i%len(victims)]
		t := trial{victim: v}
		at := rec.arm(v)
		if err := nodes[v].Close(); err != nil {
			fmt.Printf("  (close of node %d returned %v)\n", v, err)
		}
		t.closeTook = time.Since(at)
		delete(nodes, v)
		waitFor(detectMax, 2*time.Millisecond, func() bool { n, _, _ := rec.span(clusterer.NodeDown); return n == others })
		time.Sleep(50 * time.Millisecond) // collect late LinkDowns
		t.nodeDowns, t.first, t.last = rec.span(clusterer.NodeDown)
		t.linkDowns, t.linkFirst, t.linkLs = rec.span(clusterer.LinkDown)
		t.noLinkDown = rec.missing(clusterer.LinkDown, ids)
		t.slowest = rec.slowest(clusterer.NodeDown, 3)
		rec.disarm()
		r0 := time.Now()
		if err := start(v); err != nil {
			return fmt.Errorf("failure: restarting node %d: %w", v, err)
		}
		t.rejoined = waitFor(rejoinMax, 10*time.Millisecond, func() bool { return meshUp(nodes) })
		t.rejoin = time.Since(r0)
		if !t.rejoined {
			t.stuck = notUp(nodes, 12)
		}
		crash = append(crash, t)
		printTrial(i+1, t, others)
		if !t.rejoined {
			fmt.Printf("  node %d did not rejoin the full mesh within %v: stopping the crash trials\n", v, rejoinMax)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	crashOK := summarize("crash", crash, others, 200*time.Millisecond, rep)

	// (b) silent blackhole.
	bound := o.timing.pingInterval + time.Duration(o.retries+1)*o.timing.pingTimeout + 100*time.Millisecond
	var bh []trial
	fmt.Printf("\n(b) silent blackhole: the victim's traffic is dropped both ways, sockets stay open; then lifted\n")
	fmt.Printf("    bound = ping_interval + (retries+1) x ping_timeout + 100 ms = %v\n", bound)
	for i := range o.blackholeTrials {
		v := victims[(i+3)%len(victims)]
		t := trial{victim: v}
		rec.arm(v)
		tr.set(hostOf(v), true)
		waitFor(detectMax, 2*time.Millisecond, func() bool { n, _, _ := rec.span(clusterer.NodeDown); return n == others })
		time.Sleep(50 * time.Millisecond)
		t.nodeDowns, t.first, t.last = rec.span(clusterer.NodeDown)
		t.linkDowns, t.linkFirst, t.linkLs = rec.span(clusterer.LinkDown)
		t.noLinkDown = rec.missing(clusterer.LinkDown, ids)
		t.slowest = rec.slowest(clusterer.NodeDown, 3)
		rec.disarm()
		r0 := time.Now()
		tr.set(hostOf(v), false)
		t.rejoined = waitFor(rejoinMax, 10*time.Millisecond, func() bool { return meshUp(nodes) })
		t.rejoin = time.Since(r0)
		if !t.rejoined {
			t.stuck = notUp(nodes, 12)
		}
		bh = append(bh, t)
		printTrial(i+1, t, others)
		if !t.rejoined {
			fmt.Printf("  node %d did not rejoin the full mesh within %v: stopping the blackhole trials\n", v, rejoinMax)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	bhOK := summarize("blackhole", bh, others, bound, rep)
	_ = crashOK && bhOK

	// (c) restart after a longer outage: how long until the node is back
	// in the full mesh (no target; the reconnect backoff shows here).
	if o.restartTrials > 0 {
		fmt.Printf("\n(c) restart after %v down: Close() the victim, wait, start it again; time until the full mesh is back\n", o.downtime)
		var rejoins []time.Duration
		for i := range o.restartTrials {
			v := victims[(i+5)%len(victims)]
			if err := nodes[v].Close(); err != nil {
				fmt.Printf("  (close of node %d returned %v)\n", v, err)
			}
			delete(nodes, v)
			time.Sleep(o.downtime)
			r0 := time.Now()
			if err := start(v); err != nil {
				return fmt.Errorf("failure: restarting node %d: %w", v, err)
			}
			var selfUp time.Duration
			ok := waitFor(rejoinMax, 10*time.Millisecond, func() bool {
				if selfUp == 0 && meshUp(map[int]*clusterer.Cluster{v: nodes[v]}) {
					selfUp = time.Since(r0)
				}
				return meshUp(nodes)
			})
			d := time.Since(r0)
			if !ok {
				fmt.Printf("  trial %d victim %2d: NOT back in the full mesh after %s: %s\n", i+1, v, ms(d), notUp(nodes, 12))
				rep.add("restart      victim %d not back in the full mesh %v after a %v outage", v, rejoinMax, o.downtime)
				break
			}
			upCount := 0
			for _, st := range nodes[v].Nodes(benchCluster) {
				if st.Link == clusterer.LinkIsUp {
					upCount++
				}
			}
			fmt.Printf("  trial %d victim %2d: full mesh again %s after its Start\n", i+1, v, ms(d))
			rejoins = append(rejoins, d)
			time.Sleep(500 * time.Millisecond)
		}
		if len(rejoins) > 0 {
			rep.add("restart      after a %v outage, full mesh again after median %s, max %s (%d trials; no target; compare crash rejoin above)",
				o.downtime, ms(median(rejoins)), ms(slices.Max(rejoins)), len(rejoins))
		}
	}
	return nil
}

func printTrial(i int, t trial, others int) {
	last := ms(t.last)
	if t.nodeDowns < others {
		last = fmt.Sprintf("INCOMPLETE (%d/%d observers)", t.nodeDowns, others)
	}
	extra := ""
	if t.closeTook > 0 {
		extra = fmt.Sprintf(", Close() took %s", ms(t.closeTook))
	}
	rejoin := ms(t.rejoin)
	if !t.rejoined {
		rejoin = "NO"
	}
	fmt.Printf("  trial %d victim %2d: NodeDown first %s, LAST %s; LinkDown %d first %s last %s%s; full mesh again after %s\n",
		i, t.victim, ms(t.first), last, t.linkDowns, ms(t.linkFirst), ms(t.linkLs), extra, rejoin)
	if t.last > 200*time.Millisecond || t.nodeDowns < others || len(t.noLinkDown) > 0 {
		fmt.Printf("           latest NodeDowns: %s; observers with no LinkDown: %v\n", t.slowest, t.noLinkDown)
	}
	if t.stuck != "" {
		fmt.Printf("           links not UP at the end of the wait: %s\n", t.stuck)
	}
}

func summarize(name string, ts []trial, others int, target time.Duration, rep *report) bool {
	if len(ts) == 0 {
		rep.add("%-12s no trial ran", name)
		return false
	}
	var lasts, rejoins []time.Duration
	complete := true
	for _, t := range ts {
		if t.nodeDowns < others {
			complete = false
			continue
		}
		lasts = append(lasts, t.last)
		rejoins = append(rejoins, t.rejoin)
	}
	if len(lasts) == 0 {
		fmt.Printf("  %s: no trial completed\n", name)
		rep.add("%-12s detection incomplete in every trial (target <= %v: MISSED)", name, target)
		return false
	}
	mn, mx := slices.Min(lasts), slices.Max(lasts)
	med := median(lasts)
	ok := complete && mx <= target
	fmt.Printf("  %s, time to the LAST node's NodeDown over %d trials: min %s, median %s, max %s (target <= %v: %s)\n",
		name, len(ts), ms(mn), ms(med), ms(mx), target, verdict(ok))
	fmt.Printf("  %s, time to the full mesh again: median %s, max %s\n", name, ms(median(rejoins)), ms(slices.Max(rejoins)))
	inc := ""
	if !complete {
		inc = " (some trials incomplete)"
	}
	rep.add("%-12s last NodeDown min %s median %s max %s over %d trials%s (target <= %v: %s)",
		name, ms(mn), ms(med), ms(mx), len(ts), inc, target, verdict(ok))
	return ok
}
