// Command quickstart runs a real four-node cluster on loopback TCP and
// shows what the library does: nodes discover each other from a single
// neighbour, exchange packets, route around a broken link and notice a
// node that dies. It exits 0 when every step worked.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	capName   = "quickstart-repl"
	basePort  = 25560
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart: FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("\nquickstart: all steps passed")
}

func host(id int) string { return fmt.Sprintf("127.0.0.%d", id) }
func url(id int) string  { return fmt.Sprintf("bin:%s:%d", host(id), basePort+id) }

type node struct {
	id  int
	c   *clusterer.Cluster
	mu  sync.Mutex
	got []string
}

func run() error {
	start := time.Now()
	fw := newFirewall()
	ids := []int{1, 2, 3, 4}
	nodes := map[int]*node{}
	defer func() {
		for _, n := range nodes {
			n.c.Close()
		}
	}()

	step("Starting 4 nodes on loopback TCP; nodes 2, 3 and 4 know only node 1")
	for _, id := range ids {
		self := clusterer.NodeInfo{URL: url(id), SIPAddr: fmt.Sprintf("%s:5060", host(id))}
		cc := clusterer.ClusterConfig{ID: clusterID, Self: self}
		if id != 1 {
			cc.Nodes = []clusterer.NodeInfo{{ClusterID: clusterID, ID: 1, URL: url(1)}}
		}
		c, err := clusterer.New(clusterer.Config{
			NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: fw,
			PingInterval: time.Second, PingTimeout: 300 * time.Millisecond, NodeTimeout: 5 * time.Second,
		})
		if err != nil {
			return err
		}
		n := &node{id: id, c: c}
		nodes[id] = n
		err = c.RegisterCapability(clusterer.CapabilityConfig{Name: capName, Cluster: clusterID}, clusterer.HandlerFuncs{
			Packet: func(p clusterer.Packet) {
				r := p.Reader()
				msg := r.PopStr()
				n.mu.Lock()
				n.got = append(n.got, fmt.Sprintf("%q from node %d", msg, p.Src))
				n.mu.Unlock()
			},
		})
		if err != nil {
			return err
		}
		if id == 1 {
			c.Subscribe(0, func(e clusterer.Event) {
				if e.Kind == clusterer.NodeUp || e.Kind == clusterer.NodeDown || e.Kind == clusterer.NodeAdded {
					fmt.Printf("    [node 1 event] %-10s node %d  (+%v)\n", e.Kind, e.Node, time.Since(start).Round(time.Millisecond))
				}
			})
		}
		if err := c.Start(context.Background()); err != nil {
			return err
		}
		fmt.Printf("  node %d listening on %s\n", id, url(id))
	}

	if !waitFor(5*time.Second, func() bool {
		for _, n := range nodes {
			if len(reachable(n.c)) != 3 {
				return false
			}
		}
		return true
	}) {
		return errors.New("nodes did not discover each other")
	}
	step(fmt.Sprintf("Full mesh formed after %v", time.Since(start).Round(time.Millisecond)))
	printTopology(nodes[2].c)

	step("Every node sends a packet to every other node")
	for _, a := range ids {
		for _, b := range ids {
			if a != b {
				if err := nodes[a].c.SendTo(clusterID, b, packet(fmt.Sprintf("hello %d->%d", a, b))); err != nil {
					return err
				}
			}
		}
	}
	if !waitFor(2*time.Second, func() bool { return countAll(nodes) == 12 }) {
		return fmt.Errorf("expected 12 deliveries, got %d", countAll(nodes))
	}
	for _, id := range ids {
		fmt.Printf("  node %d received %s\n", id, strings.Join(nodes[id].drain(), ", "))
	}

	step("Cutting the link between node 1 and node 3 (connections reset, new ones refused)")
	fw.block(host(1), host(3))
	if !waitFor(3*time.Second, func() bool {
		h13, ok13 := nodes[1].c.NextHop(clusterID, 3)
		h31, ok31 := nodes[3].c.NextHop(clusterID, 1)
		return ok13 && h13 != 3 && ok31 && h31 != 1
	}) {
		return errors.New("no route around the cut")
	}
	hop, _ := nodes[1].c.NextHop(clusterID, 3)
	st, _ := nodes[1].c.Node(clusterID, 3)
	fmt.Printf("  node 1 -> node 3: direct link %s, next hop now node %d (%d hops)\n", st.Link, hop, st.Hops)
	before := relayed(nodes)
	if err := nodes[1].c.SendTo(clusterID, 3, packet("rerouted 1->3")); err != nil {
		return err
	}
	if err := nodes[3].c.SendTo(clusterID, 1, packet("rerouted 3->1")); err != nil {
		return err
	}
	if !waitFor(2*time.Second, func() bool { return countAll(nodes) == 2 }) {
		return errors.New("rerouted packets were not delivered")
	}
	fmt.Printf("  node 3 received %s\n", strings.Join(nodes[3].drain(), ", "))
	fmt.Printf("  node 1 received %s\n", strings.Join(nodes[1].drain(), ", "))
	fmt.Printf("  packets relayed by the other nodes: %d\n", relayed(nodes)-before)
	printTopology(nodes[2].c)

	step("Killing node 4 (its process stops: sockets closed, no goodbye)")
	killed := time.Now()
	if err := nodes[4].c.Close(); err != nil {
		return err
	}
	delete(nodes, 4)
	if !waitFor(3*time.Second, func() bool {
		for _, n := range nodes {
			if slices.Contains(reachable(n.c), 4) {
				return false
			}
		}
		return true
	}) {
		return errors.New("node 4's death went unnoticed")
	}
	fmt.Printf("  every survivor sees node 4 unreachable %v after the kill\n", time.Since(killed).Round(time.Millisecond))
	err := nodes[1].c.SendTo(clusterID, 4, packet("anyone?"))
	fmt.Printf("  SendTo(node 4) now returns: %v (OpenSIPS code %d)\n", err, clusterer.SendCode(err))
	if !errors.Is(err, clusterer.ErrDestDown) {
		return fmt.Errorf("SendTo a dead node: %v", err)
	}
	fmt.Printf("\nDone in %v.\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

func packet(s string) bin.Packet {
	b := bin.NewBuilder(1, capName, 1)
	b.PushStr(s)
	frame, _ := b.Finish()
	p, _ := bin.Parse(frame)
	return p
}

func (n *node) drain() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.got
	n.got = nil
	slices.Sort(out)
	return out
}

func countAll(nodes map[int]*node) int {
	total := 0
	for _, n := range nodes {
		n.mu.Lock()
		total += len(n.got)
		n.mu.Unlock()
	}
	return total
}

func relayed(nodes map[int]*node) uint64 {
	var total uint64
	for _, n := range nodes {
		total += n.c.Stats().Relayed
	}
	return total
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

func printTopology(c *clusterer.Cluster) {
	fmt.Printf("  topology as node %d sees it:\n", c.MyID())
	top := c.Topology(clusterID)
	var ids []int
	for id := range top {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fmt.Printf("    node %d: links to %v\n", id, top[id])
	}
}

func waitFor(max time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// firewall is a TCP transport that can block traffic between two hosts:
// it resets their connections and refuses new ones, as a firewall or a
// broken switch port would.
type firewall struct {
	mu      sync.Mutex
	blocked map[[2]string]bool
	conns   map[net.Conn][2]string // conn -> (local host, remote host)
}

func newFirewall() *firewall {
	return &firewall{blocked: map[[2]string]bool{}, conns: map[net.Conn][2]string{}}
}

func (f *firewall) isBlocked(a, b string) bool {
	return f.blocked[[2]string{a, b}] || f.blocked[[2]string{b, a}]
}

func (f *firewall) block(a, b string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked[[2]string{a, b}] = true
	for c, ends := range f.conns {
		if f.isBlocked(ends[0], ends[1]) {
			c.Close()
			delete(f.conns, c)
		}
	}
}

func (f *firewall) track(c net.Conn) net.Conn {
	lh, _, _ := net.SplitHostPort(c.LocalAddr().String())
	rh, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isBlocked(lh, rh) {
		c.Close()
		return c
	}
	f.conns[c] = [2]string{lh, rh}
	return c
}

func (f *firewall) Dial(ctx context.Context, localIP, addr string) (net.Conn, error) {
	rh, _, _ := net.SplitHostPort(addr)
	f.mu.Lock()
	blocked := f.isBlocked(localIP, rh)
	f.mu.Unlock()
	if blocked {
		return nil, fmt.Errorf("dial %s: connection refused by the firewall", addr)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return f.track(c), nil
}

func (f *firewall) Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &fwListener{Listener: l, f: f}, nil
}

type fwListener struct {
	net.Listener
	f *firewall
}

func (l *fwListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.f.track(c), nil
}
