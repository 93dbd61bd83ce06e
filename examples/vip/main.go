// Command vip runs virtual-IP failover with a sharing tag on a real
// three-node cluster on loopback TCP.
//
// The tag "vip/1" says which node owns the virtual IP 10.0.0.100: the node
// where it is active brings the address up, the others keep it down. Every
// node is configured with the tag backup (as OpenSIPS's maintainers
// recommend) and runs the same small failover policy: when the holder
// becomes unreachable, the lowest-numbered node still reachable takes the
// tag over. The demo
//
//  1. starts three nodes and makes node 1 the holder;
//  2. kills node 1: node 2 takes over within the failure detection time;
//  3. restarts node 1: it rejoins as backup, learns that node 2 holds the
//     tag, and at no moment are two nodes active;
//  4. activates the tag on nodes 1 and 3 at the same instant: the Go
//     nodes' claims leave exactly one holder (OpenSIPS nodes would both
//     end backup).
//
// Nothing is really configured on the network interfaces: the demo prints
// what it would do. It exits 0 when every step behaved.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterer-go/clusterer"
)

const (
	clusterID = 1
	tag       = "vip"
	vipAddr   = "10.0.0.100"
	basePort  = 25860 // quickstart uses 25560+, whereis 25660+, callcount 25760+, the bench 27100+

	pingInterval = 500 * time.Millisecond
	pingTimeout  = 200 * time.Millisecond
	// detection bounds how long a silent failure takes to notice: an idle
	// link is probed after pingInterval and declared DOWN after four
	// unanswered probes (the first and three retries). A closed process is
	// noticed at once, by its connections' reset.
	detection = pingInterval + 4*pingTimeout
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vip: FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("\nvip: all steps passed")
}

func host(id int) string { return fmt.Sprintf("127.0.0.%d", id) }
func url(id int) string  { return fmt.Sprintf("bin:%s:%d", host(id), basePort+id) }

// node is one cluster member with its virtual-IP handling.
type node struct {
	id         int
	c          *clusterer.Cluster
	stopPolicy func() // ends the failover policy's subscription

	mu        sync.Mutex
	log       []string // what happened to the address here
	lastClaim int      // the term of the last local activation
}

func (n *node) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	n.mu.Lock()
	n.log = append(n.log, s)
	n.mu.Unlock()
	fmt.Printf("    [node %d] %s\n", n.id, s)
}

// onChange is the tag watcher: it moves the address.
func (n *node) onChange(ch clusterer.ShTagChange) {
	switch {
	case ch.Reason == clusterer.ShTagConfigured:
		n.note("%s starts %s (configured): %s stays down", tag, ch.New, vipAddr)
		return
	case ch.New == clusterer.ShTagActive && ch.Old == clusterer.ShTagBackup:
		n.mu.Lock()
		n.lastClaim = ch.Term
		n.mu.Unlock()
		n.note("%s backup -> active (%s%s): ip addr add %s", tag, ch.Reason, who(ch.Node, "holder before"), vipAddr)
	case ch.New == clusterer.ShTagBackup && ch.Old == clusterer.ShTagActive:
		n.note("%s active -> backup (%s%s): ip addr del %s", tag, ch.Reason, who(ch.Node, "new holder"), vipAddr)
	case ch.Reason == clusterer.ShTagConflictWon:
		n.note("%s kept: node %d held it at the same time and lost", tag, ch.Node)
	}
	if ch.NeedsResync {
		n.note("re-syncing the state %s guards (node %d may have changed it)", tag, ch.Node)
	}
}

func who(id int, what string) string {
	if id == 0 {
		return ""
	}
	return fmt.Sprintf("; %s: node %d", what, id)
}

// failover is the policy every node runs: when the holder becomes
// unreachable, the lowest-numbered node left takes the tag.
func (n *node) failover(ev clusterer.Event) {
	if ev.Kind != clusterer.NodeDown || ev.Cluster != clusterID {
		return
	}
	info := tagInfo(n.c)
	if info.State == clusterer.ShTagActive || info.Owner != ev.Node {
		return
	}
	if lowest := slices.Min(append(reachable(n.c), n.id)); lowest != n.id {
		return
	}
	n.note("holder node %d is unreachable and I am the lowest node left: taking %s over", ev.Node, tag)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := n.c.ActivateShTag(ctx, tag, clusterID); err != nil && !errors.Is(err, clusterer.ErrClosed) {
		n.note("taking over failed: %v", err)
	}
}

func start(id int) (*node, error) {
	cc := clusterer.ClusterConfig{ID: clusterID, Self: clusterer.NodeInfo{URL: url(id)}}
	for other := 1; other <= 3; other++ {
		if other != id {
			cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: clusterID, ID: other, URL: url(other)})
		}
	}
	c, err := clusterer.New(clusterer.Config{
		NodeID: id, Clusters: []clusterer.ClusterConfig{cc},
		ShTags:       []string{fmt.Sprintf("%s/%d=backup", tag, clusterID)},
		PingInterval: pingInterval, PingTimeout: pingTimeout, NodeTimeout: time.Second,
	})
	if err != nil {
		return nil, err
	}
	n := &node{id: id, c: c}
	if _, err := c.WatchShTag(tag, clusterID, n.onChange); err != nil {
		return nil, err
	}
	n.stopPolicy = c.Subscribe(0, n.failover)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("node %d: %w", id, err)
	}
	return n, nil
}

func run() error {
	began := time.Now()
	nodes := map[int]*node{}
	defer func() {
		// Policies first: nodes closing one after the other are no
		// failure to react to.
		for _, n := range nodes {
			n.stopPolicy()
		}
		for _, n := range nodes {
			n.c.Close()
		}
	}()

	step("1. Three nodes, " + tag + " configured backup everywhere; the operator makes node 1 the holder")
	for id := 1; id <= 3; id++ {
		n, err := start(id)
		if err != nil {
			return err
		}
		nodes[id] = n
		fmt.Printf("  node %d listening on %s\n", id, url(id))
	}
	if !waitFor(5*time.Second, func() bool { return fullMesh(nodes) }) {
		return errors.New("the nodes did not find each other")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[1].c.ActivateShTag(ctx, tag, clusterID); err != nil {
		return err
	}
	if !waitFor(2*time.Second, func() bool { return allName(nodes, 1) }) {
		return fmt.Errorf("not every node learned that node 1 holds %s: %s", tag, table(nodes))
	}
	fmt.Print(table(nodes))

	step("2. Node 1 dies (its process is closed)")
	killed := time.Now()
	nodes[1].stopPolicy()
	nodes[1].c.Close()
	delete(nodes, 1)
	if !waitFor(5*time.Second, func() bool { return allName(nodes, 2) && holders(nodes) == "2" }) {
		return fmt.Errorf("nobody took over: %s", table(nodes))
	}
	took := time.Since(killed)
	fmt.Printf("  => node 2 holds %s %v after node 1 died (failure detection bound %v)\n", tag, took.Round(100*time.Microsecond), detection)
	if took > detection {
		return fmt.Errorf("the takeover took %v, longer than the detection time %v", took, detection)
	}
	fmt.Print(table(nodes))

	step("3. Node 1 restarts with the same configuration; watching for two holders at once")
	var dual []string
	stopWatch := watchHolders(nodes, &dual)
	restarted := time.Now()
	n1, err := start(1)
	if err != nil {
		stopWatch()
		return err
	}
	addNode(nodes, n1)
	ok := waitFor(5*time.Second, func() bool { return fullMesh(snapshot(nodes)) && allName(snapshot(nodes), 2) })
	rejoined := since(restarted)
	time.Sleep(3 * pingInterval) // and a while longer
	stopWatch()
	if !ok {
		return fmt.Errorf("node 1 did not rejoin and learn the holder: %s", table(nodes))
	}
	if len(dual) > 0 {
		return fmt.Errorf("two holders at once after the restart: %v", dual)
	}
	fmt.Printf("  => node 1 rejoined as backup in %v and names node 2 as holder; never two holders\n", rejoined)
	if got := holders(nodes); got != "2" {
		return fmt.Errorf("holders after the restart: %q, want node 2", got)
	}
	fmt.Print(table(nodes))

	step("4. Operators activate " + tag + " on nodes 1 and 3 at the same instant")
	before := tagInfo(nodes[2].c).Term // the holder's term, before the activations
	var wg sync.WaitGroup
	for _, id := range []int{1, 3} {
		wg.Go(func() {
			if err := nodes[id].c.ActivateShTag(ctx, tag, clusterID); err != nil {
				nodes[id].note("ActivateShTag: %v", err)
			}
		})
	}
	wg.Wait()
	term := func(id int) int { nodes[id].mu.Lock(); defer nodes[id].mu.Unlock(); return nodes[id].lastClaim }
	settled := func() bool {
		h := holders(nodes) // the watchers have heard both activations, and the claims settled
		return term(1) > before && term(3) > before && (h == "1" || h == "3") && allName(nodes, int(h[0]-'0'))
	}
	if !waitFor(2*time.Second, settled) {
		return fmt.Errorf("the claims did not settle on one holder: %s", table(nodes))
	}
	winner, t1, t3 := int(holders(nodes)[0]-'0'), term(1), term(3)
	switch {
	case t1 == t3 && winner == 1:
		fmt.Printf("  => both claimed term %d: node 1, the lower id, keeps it\n", t1)
	case t1 != t3 && (winner == 1) == (t1 > t3):
		fmt.Printf("  => node 1 claimed term %d, node 3 term %d (one had heard of the other's claim first): node %d, the higher, keeps it\n",
			t1, t3, winner)
	default:
		return fmt.Errorf("node %d kept %s with terms %d (node 1) and %d (node 3)", winner, tag, t1, t3)
	}
	fmt.Print(table(nodes))

	fmt.Printf("\nDone in %v.\n", since(began))
	return nil
}

var nodesMu sync.Mutex // guards the nodes map while watchHolders reads it

func addNode(nodes map[int]*node, n *node) {
	nodesMu.Lock()
	nodes[n.id] = n
	nodesMu.Unlock()
}

func snapshot(nodes map[int]*node) map[int]*node {
	nodesMu.Lock()
	defer nodesMu.Unlock()
	out := make(map[int]*node, len(nodes))
	for id, n := range nodes {
		out[id] = n
	}
	return out
}

// watchHolders samples every node's state every millisecond and records
// any instant with more than one holder.
func watchHolders(nodes map[int]*node, dual *[]string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if h := holders(snapshot(nodes)); strings.Contains(h, ",") {
				*dual = append(*dual, h)
			}
		}
	}()
	return func() { close(done); <-finished }
}

func tagInfo(c *clusterer.Cluster) clusterer.ShTagInfo {
	for _, t := range c.ShTags() {
		if t.Name == tag && t.Cluster == clusterID {
			return t
		}
	}
	return clusterer.ShTagInfo{}
}

// holders lists the nodes where the tag is active, "1,3" style.
func holders(nodes map[int]*node) string {
	var ids []string
	for id := 1; id <= 3; id++ {
		if n := nodes[id]; n != nil && tagInfo(n.c).State == clusterer.ShTagActive {
			ids = append(ids, fmt.Sprint(id))
		}
	}
	return strings.Join(ids, ",")
}

// allName reports whether every node takes holder for the holder.
func allName(nodes map[int]*node, holder int) bool {
	for _, n := range nodes {
		if tagInfo(n.c).Owner != holder {
			return false
		}
	}
	return true
}

func table(nodes map[int]*node) string {
	var b strings.Builder
	for id := 1; id <= 3; id++ {
		n := nodes[id]
		if n == nil {
			fmt.Fprintf(&b, "  node %d: (down)\n", id)
			continue
		}
		t := tagInfo(n.c)
		addr := "down"
		if t.State == clusterer.ShTagActive {
			addr = "UP"
		}
		fmt.Fprintf(&b, "  node %d: %s/%d %-6s holder=node %d term=%d   %s %s\n", id, tag, clusterID, t.State, t.Owner, t.Term, vipAddr, addr)
	}
	return b.String()
}

func fullMesh(nodes map[int]*node) bool {
	for _, n := range nodes {
		if len(reachable(n.c)) != len(nodes)-1 {
			return false
		}
	}
	return true
}

func reachable(c *clusterer.Cluster) []int {
	var out []int
	for _, n := range c.Nodes(clusterID) {
		if n.Reachable {
			out = append(out, n.ID)
		}
	}
	return out
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func waitFor(max time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return cond()
}
