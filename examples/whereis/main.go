// Command whereis runs the "WHEREIS" pattern of SIP proxies sharing user
// locations over the cluster itself, on a real four-node cluster on
// loopback TCP.
//
// Three proxies hold registered users (user -> contact). A fourth proxy
// joins knowing only one neighbour, discovers the others, then receives a
// call for a user it has never heard of: it broadcasts WHEREIS to the
// cluster, the proxy holding the user answers, and the call is relayed
// there. A call for a user registered nowhere ends as soon as every proxy
// has said "not here". Finally a remote command flushes every proxy's
// location table. It exits 0 when every step worked.
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
)

const (
	clusterID = 1
	basePort  = 25660 // quickstart uses 25560+, the bench 27100+
	// callTimeout bounds each WHEREIS broadcast and each relayed call.
	callTimeout = 2 * time.Second
	// flushCmd is the remote command that empties a proxy's location table.
	flushCmd = "usrloc-flush"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "whereis: FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("\nwhereis: all steps passed")
}

func host(id int) string { return fmt.Sprintf("127.0.0.%d", id) }
func url(id int) string  { return fmt.Sprintf("bin:%s:%d", host(id), basePort+id) }

// query is a WHEREIS request, carried msgpack-encoded in the message body
// (clusterer.Encode); OpenSIPS would send the text "WHEREIS:<user>".
type query struct {
	Op   string `msgpack:"op"`
	User string `msgpack:"user"`
}

// location is the answer to a WHEREIS.
type location struct {
	Found   bool   `msgpack:"found"`
	User    string `msgpack:"user"`
	Contact string `msgpack:"contact,omitempty"`
}

// proxy is one node: a cluster member with a location table.
type proxy struct {
	id int
	c  *clusterer.Cluster

	mu    sync.Mutex
	users map[string]string // user -> contact
}

// registered users at the start, per node; node 4 (the newcomer) has none.
var registrations = map[int]map[string]string{
	1: {"carol": "sip:carol@198.51.100.21:5060", "dave": "sip:dave@198.51.100.22:5060"},
	2: {"bob": "sip:bob@203.0.113.40:5062;transport=tcp", "erin": "sip:erin@203.0.113.41:5060"},
	3: {"alice": "sip:alice@192.0.2.7:5060"},
	4: {},
}

func (p *proxy) lookup(user string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	contact, ok := p.users[user]
	return contact, ok
}

// answer is the request handler: WHEREIS queries (msgpack) and relayed
// calls (plain text "INVITE <user>").
func (p *proxy) answer(req clusterer.Message) (string, bool) {
	if user, ok := strings.CutPrefix(req.Body, "INVITE "); ok {
		contact, found := p.lookup(user)
		if !found {
			fmt.Printf("    [node %d] INVITE %s relayed by node %d: not registered here\n", p.id, user, req.Src)
			return fmt.Sprintf("404 Not Found at node %d", p.id), true
		}
		fmt.Printf("    [node %d] INVITE %s relayed by node %d: forwarding to %s\n", p.id, user, req.Src, contact)
		return fmt.Sprintf("200 OK from node %d (%s at %s)", p.id, user, contact), true
	}
	var q query
	if err := req.Decode(&q); err != nil || q.Op != "WHEREIS" {
		fmt.Printf("    [node %d] unintelligible request from node %d: %v\n", p.id, req.Src, err)
		return "400 Bad Request", true
	}
	contact, found := p.lookup(q.User)
	if found {
		fmt.Printf("    [node %d] WHEREIS %s from node %d: registered here\n", p.id, q.User, req.Src)
	} else {
		fmt.Printf("    [node %d] WHEREIS %s from node %d: not here\n", p.id, q.User, req.Src)
	}
	body, err := clusterer.Encode(location{Found: found, User: q.User, Contact: contact})
	if err != nil {
		return "500 Server Error", true
	}
	return body, true
}

// flushed reports one run of the flush command.
type flushed struct {
	node, from, dropped int
}

func run() error {
	start := time.Now()
	nodes := map[int]*proxy{}
	defer func() {
		for _, p := range nodes {
			p.c.Close()
		}
	}()
	flushes := make(chan flushed, 8)

	newNode := func(id int, neighbour int) error {
		cc := clusterer.ClusterConfig{ID: clusterID, Self: clusterer.NodeInfo{URL: url(id), SIPAddr: host(id) + ":5060"}}
		if neighbour != 0 {
			cc.Nodes = []clusterer.NodeInfo{{ClusterID: clusterID, ID: neighbour, URL: url(neighbour)}}
		}
		c, err := clusterer.New(clusterer.Config{
			NodeID: id, Clusters: []clusterer.ClusterConfig{cc},
			PingInterval: time.Second, PingTimeout: 300 * time.Millisecond, NodeTimeout: 5 * time.Second,
		})
		if err != nil {
			return err
		}
		p := &proxy{id: id, c: c, users: maps.Clone(registrations[id])}
		nodes[id] = p
		c.HandleRequests(p.answer)
		err = c.RegisterCommand(flushCmd, func(cmd clusterer.Command) {
			p.mu.Lock()
			n := len(p.users)
			clear(p.users)
			p.mu.Unlock()
			flushes <- flushed{node: id, from: cmd.Src, dropped: n}
		})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Start(ctx); err != nil {
			return fmt.Errorf("node %d: %w", id, err)
		}
		fmt.Printf("  node %d listening on %s, SIP on %s, knows %s; users: %s\n", id, url(id), host(id)+":5060",
			knows(neighbour), userList(p))
		return nil
	}

	step("Starting proxies 1, 2 and 3 with their registered users (2 and 3 know only node 1)")
	for _, id := range []int{1, 2, 3} {
		neighbour := 1
		if id == 1 {
			neighbour = 0
		}
		if err := newNode(id, neighbour); err != nil {
			return err
		}
	}
	if !waitFor(5*time.Second, func() bool { return fullMesh(nodes) }) {
		return errors.New("proxies 1-3 did not discover each other")
	}
	fmt.Printf("  full mesh after %v\n", since(start))

	step("Proxy 4 joins knowing only node 1; it has missed every registration")
	joined := time.Now()
	if err := newNode(4, 1); err != nil {
		return err
	}
	// Wait until the others see proxy 4 too, not only proxy 4 them: a
	// proxy answers a request only to a node it sees reachable (the reply
	// is dropped otherwise, and the asker waits for its timeout).
	if !waitFor(5*time.Second, func() bool { return fullMesh(nodes) }) {
		return fmt.Errorf("proxy 4 did not discover the cluster: it reaches %v", reachable(nodes[4].c))
	}
	fmt.Printf("  proxy 4 discovered nodes %v (and they it) in %v\n", reachable(nodes[4].c), since(joined))
	newcomer := nodes[4]

	step("A call for alice reaches proxy 4, which does not know her: it broadcasts WHEREIS alice")
	owner, contact, took, err := whereis(newcomer, "alice")
	if err != nil {
		return err
	}
	fmt.Printf("  Broadcast returned after %v\n", took.Round(10*time.Microsecond))
	if owner != 3 {
		return fmt.Errorf("WHEREIS alice answered by node %d, want node 3", owner)
	}
	st, _ := newcomer.c.Node(clusterID, owner)
	fmt.Printf("  => alice is registered at node %d (%s); relaying the call to its SIP address %s\n", owner, contact, st.SIPAddr)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	rpl, err := newcomer.c.Request(ctx, clusterID, owner, "INVITE alice")
	if err != nil {
		return fmt.Errorf("relaying the call to node %d: %w", owner, err)
	}
	fmt.Printf("  => node %d answered the relayed call: %q\n", owner, rpl)
	if !strings.HasPrefix(rpl, "200 OK") {
		return fmt.Errorf("relayed call answered %q, want 200 OK", rpl)
	}

	step("A call for mallory, registered nowhere: every proxy answers \"not here\"")
	owner, _, took, err = whereis(newcomer, "mallory")
	if err != nil {
		return err
	}
	if owner != 0 {
		return fmt.Errorf("WHEREIS mallory answered by node %d, want nobody", owner)
	}
	fmt.Printf("  => Broadcast returned after %v, as soon as all 3 proxies answered (its timeout was %v); the caller gets 404\n",
		took.Round(10*time.Microsecond), callTimeout)
	if took > callTimeout/2 {
		return fmt.Errorf("the not-found broadcast took %v: it waited for its timeout", took)
	}

	step("Proxy 4 runs the remote command " + flushCmd + " on every proxy (BroadcastCommand)")
	if err := newcomer.c.BroadcastCommand(clusterID, flushCmd); err != nil {
		return err
	}
	var runs []flushed
	timeout := time.After(3 * time.Second)
	for len(runs) < len(nodes) {
		select {
		case f := <-flushes:
			runs = append(runs, f)
		case <-timeout:
			return fmt.Errorf("%s ran on %d of %d proxies", flushCmd, len(runs), len(nodes))
		}
	}
	slices.SortFunc(runs, func(a, b flushed) int { return a.node - b.node })
	for _, f := range runs {
		fmt.Printf("  node %d ran %s (sent by node %d): dropped %d contact(s)\n", f.node, flushCmd, f.from, f.dropped)
	}
	fmt.Println("  check: WHEREIS alice again")
	owner, _, _, err = whereis(newcomer, "alice")
	if err != nil {
		return err
	}
	if owner != 0 {
		return fmt.Errorf("alice still registered at node %d after the flush", owner)
	}
	fmt.Println("  => nobody has alice any more")

	fmt.Printf("\nDone in %v.\n", since(start))
	return nil
}

// whereis broadcasts WHEREIS user from p and returns the node holding the
// user (0: nobody), its contact and how long the Broadcast took. Every
// asked node must answer.
func whereis(p *proxy, user string) (node int, contact string, took time.Duration, err error) {
	body, err := clusterer.Encode(query{Op: "WHEREIS", User: user})
	if err != nil {
		return 0, "", 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	t0 := time.Now()
	replies, err := p.c.Broadcast(ctx, clusterID, body)
	took = time.Since(t0)
	if err != nil {
		return 0, "", 0, fmt.Errorf("WHEREIS %s: %w", user, err)
	}
	if len(replies) != 3 {
		return 0, "", 0, fmt.Errorf("WHEREIS %s: %d replies, want 3 (every other proxy)", user, len(replies))
	}
	for _, r := range replies {
		if r.Err != nil {
			return 0, "", 0, fmt.Errorf("WHEREIS %s: node %d did not answer: %w", user, r.Node, r.Err)
		}
		var loc location
		if err := clusterer.Decode(r.Body, &loc); err != nil {
			return 0, "", 0, fmt.Errorf("WHEREIS %s: node %d answered %q: %w", user, r.Node, r.Body, err)
		}
		if loc.Found {
			fmt.Printf("  reply from node %d: %s is here, contact %s\n", r.Node, loc.User, loc.Contact)
			if node != 0 {
				return 0, "", 0, fmt.Errorf("WHEREIS %s: both node %d and node %d hold the user", user, node, r.Node)
			}
			node, contact = r.Node, loc.Contact
		} else {
			fmt.Printf("  reply from node %d: not here\n", r.Node)
		}
	}
	return node, contact, took, nil
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func knows(neighbour int) string {
	if neighbour == 0 {
		return "nobody"
	}
	return fmt.Sprintf("node %d", neighbour)
}

func userList(p *proxy) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.users) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(p.users)), ", ")
}

// fullMesh reports whether every node reaches every other one.
func fullMesh(nodes map[int]*proxy) bool {
	for _, p := range nodes {
		if len(reachable(p.c)) != len(nodes)-1 {
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
