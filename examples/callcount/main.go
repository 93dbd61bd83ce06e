// Command callcount runs distributed dialog profiles — Kamailio's "how many
// calls are active in this profile, cluster-wide?" (sr-dev, "rfc:
// distributing dialog profiles", 2014) — on a real three-node cluster on
// loopback TCP.
//
// Each node is a SIP proxy that counts its active calls per profile
// ("inbound", "outbound", "trunk-A"; a call may be in several). A call
// belongs to the node that handles it. The owner replicates its call
// starts and ends to the other nodes as packets of the capability
// "dialog-profiles", registered with RequireSync: a node that starts pulls
// every node's calls from a synced donor, and it neither answers "how many
// calls?" nor admits a call against a limit until that sync is done
// (SyncDone). Node 1 is a seed, so a cold start of the whole cluster, with
// no donor anywhere, still becomes synced after Config.SeedFallbackInterval.
//
// The run: a cold start; calls start on every node (trunk-A is limited to
// 5 calls, so a sixth is refused cluster-wide); some end; node 3 dies and
// the others drop its calls; calls change while it is down; node 3 restarts
// (Close, then a new Cluster with the same id), is refused an answer until
// its sync is done, then answers with the counts it pulled. Every count is
// checked; the command exits 0 when all were right.
//
// # Whose calls count
//
// Only the owner knows whether its calls are still up, so only the
// owner's word counts about them:
//
//   - Calls of an owner that becomes unreachable (NodeDown) are dropped by
//     every other node. A proxy that died took its dialogs with it; one
//     that is only cut off cannot end its calls on our side either, so we
//     stop counting them rather than count them forever.
//   - When a node comes up (NodeUp), every node sends it the snapshot of its
//     own calls, which replaces whatever the receiver held for that owner.
//     So an owner that comes back converges everywhere to its own truth:
//     a restarted one (Close and a new process) announces none — its old
//     calls died with it — and one that was only cut off re-announces the
//     calls it still has.
//   - Every message about an owner's calls carries a stamp: the owner's
//     incarnation (fixed at its start, larger after a restart) and a
//     sequence number it increments with every change. A node applies a
//     message only when its stamp is newer than what it holds for that
//     owner, so an older view — a donor's sync record, or a message of the
//     owner's previous life — never undoes a newer change, in whatever
//     order they arrive. A new incarnation's message first drops the
//     previous incarnation's calls.
//   - A sync record is one owner's snapshot as the donor knows it. The
//     donor leaves out the joiner's own calls and the joiner ignores any
//     about itself (it is their owner). Packets and NodeUp/NodeDown events
//     that arrive during the sync reach the handler after the records, in
//     the order they came, so an owner that dies during the sync is
//     dropped after the donor's records and its own last packets, not
//     before.
//
// A lost update without a NodeDown (no route for a moment) leaves a gap in
// the owner's sequence numbers; this example does not repair it (a real
// module would ask the owner for a snapshot, or have owners send one
// periodically, as OpenSIPS's dialog profile replication does).
package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
)

const (
	clusterID = 1
	capName   = "dialog-profiles"
	basePort  = 25760 // quickstart uses 25560+, whereis 25660+, the bench 27100+

	// Packet types of the capability.
	typeStart    = 1 // a call started: callStart
	typeEnd      = 2 // a call ended: callEnd
	typeSnapshot = 3 // all the sender's calls: snapshot

	seedFallback = time.Second
	stepTimeout  = 5 * time.Second
)

// profiles, in the order they are printed.
var profiles = []string{"inbound", "outbound", "trunk-A"}

// limits are cluster-wide limits of concurrent calls per profile.
var limits = map[string]int{"trunk-A": 5}

var errNotSynced = errors.New("call counts not synced yet")

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "callcount: FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("\ncallcount: all counts verified")
}

func host(id int) string { return fmt.Sprintf("127.0.0.%d", id) }
func url(id int) string  { return fmt.Sprintf("bin:%s:%d", host(id), basePort+id) }

// stamp orders the messages about one owner's calls.
type stamp struct {
	Inc uint64 `msgpack:"i"` // the owner's incarnation
	Seq uint64 `msgpack:"s"` // its change counter
}

func (s stamp) newer(than stamp) bool {
	return s.Inc > than.Inc || s.Inc == than.Inc && s.Seq > than.Seq
}

type callStart struct {
	Stamp    stamp    `msgpack:"st"`
	Call     string   `msgpack:"call"`
	Profiles []string `msgpack:"prof"`
}

type callEnd struct {
	Stamp stamp  `msgpack:"st"`
	Call  string `msgpack:"call"`
}

// snapshot is every call of one owner: a packet from the owner, or a sync
// record written by a donor.
type snapshot struct {
	Owner int                 `msgpack:"owner"`
	Stamp stamp               `msgpack:"st"`
	Calls map[string][]string `msgpack:"calls"` // call id -> profiles
}

// owned is what a node holds about one owner's calls.
type owned struct {
	stamp stamp
	calls map[string][]string
}

// proxy is one node. Its handler methods (HandlePacket, HandleEvent,
// HandleSyncRecord, WriteSync) are the capability's handler.
type proxy struct {
	id  int
	c   *clusterer.Cluster
	inc uint64
	// syncEvents carries the capability's sync events to the narrative.
	syncEvents chan clusterer.Event

	mu     sync.Mutex
	synced bool           // SyncDone seen: the counts may be answered
	owners map[int]*owned // by owner; the local node's own calls included
	// dropped counts the calls dropped per owner at its NodeDown.
	dropped map[int]int
	// records describes the sync records received, for the narrative.
	records []string
}

func newProxy(id int, inc uint64) (*proxy, error) {
	cc := clusterer.ClusterConfig{ID: clusterID, Self: clusterer.NodeInfo{URL: url(id), SIPAddr: host(id) + ":5060"}}
	if id == 1 {
		cc.Self.Seed = true
	} else {
		cc.Nodes = []clusterer.NodeInfo{{ClusterID: clusterID, ID: 1, URL: url(1)}}
	}
	c, err := clusterer.New(clusterer.Config{
		NodeID: id, Clusters: []clusterer.ClusterConfig{cc},
		PingInterval: time.Second, PingTimeout: 300 * time.Millisecond, NodeTimeout: 5 * time.Second,
		SeedFallbackInterval: seedFallback, SyncTimeout: 3 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	p := &proxy{id: id, c: c, inc: inc, syncEvents: make(chan clusterer.Event, 16),
		owners:  map[int]*owned{id: {stamp: stamp{Inc: inc}, calls: map[string][]string{}}},
		dropped: map[int]int{}}
	err = c.RegisterCapability(clusterer.CapabilityConfig{Name: capName, Cluster: clusterID, RequireSync: true}, p)
	if err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

func packet(typ int32, v any) (bin.Packet, error) {
	b := bin.NewBuilder(1, capName, typ)
	b.PushValue(v)
	frame, err := b.Finish()
	if err != nil {
		return bin.Packet{}, err
	}
	return bin.Parse(frame)
}

// send replicates one of the local node's changes (p.mu held, so the
// changes leave in the order of their sequence numbers). Nobody reachable
// is fine: a lone node has nobody to tell.
func (p *proxy) send(typ int32, v any) error {
	pkt, err := packet(typ, v)
	if err != nil {
		return err
	}
	if err := p.c.SendAll(clusterID, pkt); err != nil && !errors.Is(err, clusterer.ErrDestDown) {
		return err
	}
	return nil
}

// --- the SIP side: calls handled by this node ---

// admit starts a call on this node if every profile's cluster-wide limit
// allows it, and replicates it.
func (p *proxy) admit(call string, profs ...string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.readyLocked(); err != nil {
		return err
	}
	counts := p.countsLocked()
	for _, prof := range profs {
		if lim, ok := limits[prof]; ok && counts[prof] >= lim {
			return fmt.Errorf("%s has %d of its %d calls cluster-wide", prof, counts[prof], lim)
		}
	}
	own := p.owners[p.id]
	own.stamp.Seq++
	own.calls[call] = profs
	return p.send(typeStart, callStart{Stamp: own.stamp, Call: call, Profiles: profs})
}

// hangup ends one of this node's calls and replicates it.
func (p *proxy) hangup(call string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	own := p.owners[p.id]
	if _, ok := own.calls[call]; !ok {
		return fmt.Errorf("node %d has no call %s", p.id, call)
	}
	own.stamp.Seq++
	delete(own.calls, call)
	return p.send(typeEnd, callEnd{Stamp: own.stamp, Call: call})
}

// count answers "how many calls in this profile, cluster-wide?", only once
// the capability's data is synced.
func (p *proxy) count(profile string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.readyLocked(); err != nil {
		return 0, err
	}
	return p.countsLocked()[profile], nil
}

func (p *proxy) readyLocked() error {
	if !p.synced {
		st, err := p.c.SyncStatus(clusterID, capName)
		if err != nil {
			return err
		}
		return fmt.Errorf("%w (%s: %s)", errNotSynced, capName, st.Status)
	}
	return nil
}

func (p *proxy) countsLocked() map[string]int {
	out := map[string]int{}
	for _, o := range p.owners {
		for _, profs := range o.calls {
			for _, prof := range profs {
				out[prof]++
			}
		}
	}
	return out
}

// state returns the counts (whether synced or not) and the number of
// calls held per owner, for the narrative and the checks.
func (p *proxy) state() (synced bool, counts map[string]int, perOwner map[int]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	perOwner = map[int]int{}
	for id, o := range p.owners {
		if len(o.calls) > 0 {
			perOwner[id] = len(o.calls)
		}
	}
	return p.synced, p.countsLocked(), perOwner
}

// --- the capability handler ---

// apply takes a message about owner's calls if its stamp is newer than
// what is held (p.mu held): a snapshot replaces, a start or an end
// changes one call.
func (p *proxy) apply(owner int, st stamp, snap map[string][]string, isSnap bool, change func(map[string][]string)) {
	if owner == p.id {
		return // nobody else knows better about our own calls
	}
	o := p.owners[owner]
	if o != nil && !st.newer(o.stamp) {
		return // older than what we hold, or a duplicate
	}
	if o == nil || st.Inc != o.stamp.Inc {
		// An owner we hold nothing about, or a new life of it: the calls
		// of its previous life are gone.
		o = &owned{calls: map[string][]string{}}
		p.owners[owner] = o
	}
	o.stamp = st
	if isSnap {
		o.calls = maps.Clone(snap)
		if o.calls == nil {
			o.calls = map[string][]string{}
		}
		return
	}
	change(o.calls)
}

// HandlePacket implements clusterer.Handler: replication from the owner.
func (p *proxy) HandlePacket(pkt clusterer.Packet) {
	r := pkt.Reader()
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	switch pkt.Type {
	case typeStart:
		var m callStart
		if err = r.PopValue(&m); err == nil {
			p.apply(pkt.Src, m.Stamp, nil, false, func(calls map[string][]string) { calls[m.Call] = m.Profiles })
		}
	case typeEnd:
		var m callEnd
		if err = r.PopValue(&m); err == nil {
			p.apply(pkt.Src, m.Stamp, nil, false, func(calls map[string][]string) { delete(calls, m.Call) })
		}
	case typeSnapshot:
		var m snapshot
		if err = r.PopValue(&m); err == nil {
			p.apply(pkt.Src, m.Stamp, m.Calls, true, nil)
		}
	default:
		err = fmt.Errorf("unknown packet type %d", pkt.Type)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "  [node %d] bad packet from node %d: %v\n", p.id, pkt.Src, err)
	}
}

// HandleEvent implements clusterer.Handler.
func (p *proxy) HandleEvent(e clusterer.Event) {
	switch e.Kind {
	case clusterer.NodeDown:
		p.mu.Lock()
		if o := p.owners[e.Node]; o != nil {
			p.dropped[e.Node] += len(o.calls)
			delete(p.owners, e.Node)
		}
		p.mu.Unlock()
	case clusterer.NodeUp:
		// Tell the node which calls are ours: it replaces whatever it
		// holds about us (nothing, or our previous life's calls).
		p.mu.Lock()
		own := p.owners[p.id]
		pkt, err := packet(typeSnapshot, snapshot{Owner: p.id, Stamp: own.stamp, Calls: own.calls})
		if err == nil {
			err = p.c.SendTo(clusterID, e.Node, pkt)
		}
		p.mu.Unlock()
		if err != nil && !errors.Is(err, clusterer.ErrDestDown) { // down again already: no matter
			fmt.Fprintf(os.Stderr, "  [node %d] snapshot to node %d: %v\n", p.id, e.Node, err)
		}
	case clusterer.SyncStarted:
		p.mu.Lock()
		p.synced, p.records = false, nil
		p.mu.Unlock()
		p.report(e)
	case clusterer.SyncDone:
		// The records, then what arrived meanwhile, have been handled.
		p.mu.Lock()
		p.synced = true
		p.mu.Unlock()
		p.report(e)
	case clusterer.SyncFailed:
		p.report(e)
	}
}

// report passes a sync event to the narrative, never blocking the
// capability's goroutine.
func (p *proxy) report(e clusterer.Event) {
	select {
	case p.syncEvents <- e:
	default:
	}
}

// HandleSyncRecord implements clusterer.SyncReceiver: one owner's calls as
// the donor knows them.
func (p *proxy) HandleSyncRecord(r clusterer.SyncRecord) {
	var s snapshot
	if err := r.Decode(&s); err != nil {
		fmt.Fprintf(os.Stderr, "  [node %d] bad sync record from node %d: %v\n", p.id, r.Src, err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.records = append(p.records, fmt.Sprintf("node %d's %d call(s)", s.Owner, len(s.Calls)))
	p.apply(s.Owner, s.Stamp, s.Calls, true, nil)
}

// WriteSync implements clusterer.SyncSource: one record per owner, the
// requester's own calls left out (it is their owner).
func (p *proxy) WriteSync(w *clusterer.SyncWriter) error {
	p.mu.Lock()
	var recs []snapshot
	for _, id := range slices.Sorted(maps.Keys(p.owners)) {
		if id != w.Node() {
			o := p.owners[id]
			recs = append(recs, snapshot{Owner: id, Stamp: o.stamp, Calls: maps.Clone(o.calls)})
		}
	}
	p.mu.Unlock()
	// Written outside the lock: a record may wait for room in the
	// requester's queue.
	for _, s := range recs {
		if err := w.WriteValue(s); err != nil {
			return err
		}
	}
	return nil
}

// --- the narrative ---

// truth is what the example did: every active call and its owner.
type truth struct {
	calls map[string]call
}

type call struct {
	owner    int
	profiles []string
}

func (t *truth) expected() map[string]int {
	out := map[string]int{}
	for _, c := range t.calls {
		for _, prof := range c.profiles {
			out[prof]++
		}
	}
	return out
}

func (t *truth) ownedBy(id int) int {
	n := 0
	for _, c := range t.calls {
		if c.owner == id {
			n++
		}
	}
	return n
}

func run() error {
	start := time.Now()
	nodes := map[int]*proxy{}
	defer func() {
		for _, p := range nodes {
			p.c.Close()
		}
	}()
	t := &truth{calls: map[string]call{}}
	inc := uint64(0)
	startNode := func(id int) (*proxy, error) {
		inc++ // a real proxy would take its start time
		p, err := newProxy(id, inc)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		if err := p.c.Start(ctx); err != nil {
			p.c.Close()
			return nil, fmt.Errorf("node %d: %w", id, err)
		}
		nodes[id] = p
		return p, nil
	}

	step("Cold start: nodes 1 (seed), 2 and 3 start together with no calls; nobody has data to donate")
	for _, id := range []int{1, 2, 3} {
		if _, err := startNode(id); err != nil {
			return err
		}
		role := "knows node 1"
		if id == 1 {
			role = "seed"
		}
		fmt.Printf("  node %d listening on %s (%s); %s requires sync\n", id, url(id), role, capName)
	}
	for _, id := range []int{1, 2, 3} {
		e, err := waitSync(nodes[id])
		if err != nil {
			return err
		}
		if e.Node == 0 {
			fmt.Printf("  node %d: synced without a donor — a seed falls back to its own (empty) data after %v\n", id, seedFallback)
		} else {
			fmt.Printf("  node %d: synced from node %d\n", id, e.Node)
		}
	}
	if !waitFor(stepTimeout, func() bool {
		for _, p := range nodes {
			if got, _ := p.c.SyncedNodes(clusterID, capName); len(got) != 3 {
				return false
			}
		}
		return true
	}) {
		return errors.New("the nodes do not all see each other synced")
	}
	synced, _ := nodes[1].c.SyncedNodes(clusterID, capName)
	fmt.Printf("  every node sees %s synced on nodes %v (+%v)\n", capName, synced, since(start))

	admit := func(id int, name string, profs ...string) error {
		if err := nodes[id].admit(name, profs...); err != nil {
			return err
		}
		t.calls[name] = call{owner: id, profiles: profs}
		fmt.Printf("  node %d: %s started  [%s]\n", id, name, strings.Join(profs, ", "))
		return nil
	}
	hangup := func(id int, name string) error {
		if err := nodes[id].hangup(name); err != nil {
			return err
		}
		delete(t.calls, name)
		fmt.Printf("  node %d: %s ended\n", id, name)
		return nil
	}

	step("Calls start on every node; each node replicates its own")
	for _, c := range []struct {
		node  int
		name  string
		profs []string
	}{
		{1, "call-1", []string{"inbound", "trunk-A"}},
		{1, "call-2", []string{"inbound", "trunk-A"}},
		{1, "call-3", []string{"outbound"}},
		{2, "call-4", []string{"inbound"}},
		{2, "call-5", []string{"outbound", "trunk-A"}},
		{2, "call-6", []string{"outbound", "trunk-A"}},
		{3, "call-7", []string{"inbound", "trunk-A"}},
		{3, "call-8", []string{"inbound"}},
		{3, "call-9", []string{"outbound"}},
	} {
		if err := admit(c.node, c.name, c.profs...); err != nil {
			return fmt.Errorf("node %d refused %s: %w", c.node, c.name, err)
		}
	}
	if err := converge(nodes, t); err != nil {
		return err
	}

	step(fmt.Sprintf("call-10 for trunk-A reaches node 2; trunk-A is limited to %d calls cluster-wide", limits["trunk-A"]))
	err := nodes[2].admit("call-10", "outbound", "trunk-A")
	if err == nil {
		return errors.New("node 2 admitted call-10 over trunk-A's limit")
	}
	fmt.Printf("  node 2 answers 503: %v\n", err)

	step("Calls end")
	if err := hangup(1, "call-1"); err != nil {
		return err
	}
	if err := hangup(2, "call-5"); err != nil {
		return err
	}
	if err := converge(nodes, t); err != nil {
		return err
	}

	step("Node 3 dies (Close): nodes 1 and 2 drop the calls it owned when they see it down")
	died := time.Now()
	owned3 := t.ownedBy(3)
	nodes[3].c.Close()
	delete(nodes, 3)
	for name, c := range t.calls {
		if c.owner == 3 {
			delete(t.calls, name)
		}
	}
	if err := converge(nodes, t); err != nil {
		return err
	}
	for _, id := range []int{1, 2} {
		p := nodes[id]
		p.mu.Lock()
		n := p.dropped[3]
		p.mu.Unlock()
		if n != owned3 {
			return fmt.Errorf("node %d dropped %d calls of node 3, want %d", id, n, owned3)
		}
		fmt.Printf("  node %d saw node 3 down and dropped its %d calls\n", id, n)
	}
	fmt.Printf("  (%v after the Close)\n", since(died))

	step("While node 3 is down, calls change on nodes 1 and 2")
	if err := admit(1, "call-11", "inbound", "trunk-A"); err != nil {
		return err
	}
	if err := hangup(2, "call-4"); err != nil {
		return err
	}
	if err := converge(nodes, t); err != nil {
		return err
	}

	step("Node 3 restarts: a new Cluster with the same id and no calls; it must pull the counts first")
	restarted := time.Now()
	var p3 *proxy
	p3, err = startNode(3)
	if err != nil {
		return err
	}
	fmt.Printf("  node 3 listening on %s again\n", url(3))
	if n, err := p3.count("trunk-A"); err != nil {
		fmt.Printf("  asked at once how many trunk-A calls there are, node 3 refuses: %v\n", err)
	} else {
		// Possible only if the whole sync ran between Start and this
		// question; the answer must then be right.
		fmt.Printf("  asked at once, node 3 was already synced: trunk-A has %d calls\n", n)
	}
	e, err := waitSync(p3)
	if err != nil {
		return err
	}
	st, _ := p3.c.SyncStatus(clusterID, capName)
	p3.mu.Lock()
	records := strings.Join(p3.records, ", ")
	p3.mu.Unlock()
	fmt.Printf("  node 3: synced from node %d %v after its start; %d records, one per other owner: %s\n",
		e.Node, since(restarted), st.Records, records)
	fmt.Printf("  SyncStatus: %s\n", st.Status)
	if st.Status != clusterer.Synced {
		return fmt.Errorf("node 3 status %s after SyncDone", st.Status)
	}
	if err := converge(nodes, t); err != nil {
		return err
	}
	want := t.expected()
	for _, prof := range profiles {
		n, err := p3.count(prof)
		if err != nil {
			return err
		}
		if n != want[prof] {
			return fmt.Errorf("node 3 answers %d %s calls, want %d", n, prof, want[prof])
		}
	}
	fmt.Printf("  node 3 now answers: trunk-A has %d calls cluster-wide (its own old calls are gone with its old life)\n", want["trunk-A"])

	step("Node 3 takes calls again")
	if err := admit(3, "call-12", "outbound", "trunk-A"); err != nil {
		return err
	}
	if err := converge(nodes, t); err != nil {
		return err
	}

	fmt.Printf("\nDone in %v.\n", since(start))
	return nil
}

// waitSync returns the next SyncDone of p, failing on a timeout. Failed
// syncs are retried by the library; they are reported.
func waitSync(p *proxy) (clusterer.Event, error) {
	timeout := time.After(stepTimeout)
	for {
		select {
		case e := <-p.syncEvents:
			switch e.Kind {
			case clusterer.SyncDone:
				return e, nil
			case clusterer.SyncFailed:
				fmt.Printf("  node %d: sync from node %d failed (%v); it will be retried\n", p.id, e.Node, e.Err)
			}
		case <-timeout:
			st, _ := p.c.SyncStatus(clusterID, capName)
			return clusterer.Event{}, fmt.Errorf("node %d not synced after %v: %s", p.id, stepTimeout, st.Status)
		}
	}
}

// converge waits until every node holds what the example did, then prints
// the counts.
func converge(nodes map[int]*proxy, t *truth) error {
	want := t.expected()
	ids := slices.Sorted(maps.Keys(nodes))
	wantOwners := map[int]int{}
	for _, c := range t.calls {
		wantOwners[c.owner]++
	}
	agree := func() bool {
		for _, id := range ids {
			synced, counts, perOwner := nodes[id].state()
			if !synced || !maps.Equal(counts, want) || !maps.Equal(perOwner, wantOwners) {
				return false
			}
		}
		return true
	}
	if !waitFor(stepTimeout, agree) {
		var b strings.Builder
		for _, id := range ids {
			synced, counts, perOwner := nodes[id].state()
			fmt.Fprintf(&b, "\n    node %d: synced=%v counts=%v calls per owner=%v", id, synced, counts, perOwner)
		}
		return fmt.Errorf("the nodes did not converge to %v:%s", want, b.String())
	}
	fmt.Printf("  %-26s", "cluster-wide calls")
	for _, prof := range profiles {
		fmt.Printf("%10s", prof)
	}
	fmt.Println()
	for _, id := range ids {
		_, counts, _ := nodes[id].state()
		fmt.Printf("  %-26s", fmt.Sprintf("as node %d counts (%d own)", id, t.ownedBy(id)))
		for _, prof := range profiles {
			fmt.Printf("%10d", counts[prof])
		}
		fmt.Println()
	}
	return nil
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func waitFor(max time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}
