// Command clusterctl manages a clusterer node through its admin API
// (package admin), as opensips-cli does with OpenSIPS's MI commands.
//
//	clusterctl [flags] list                                nodes and links, per cluster
//	clusterctl [flags] topology [--dot]                    adjacency lists, or Graphviz
//	clusterctl [flags] set-status CLUSTER [NODE] 0|1       disable/enable the local node (or NODE, locally)
//	clusterctl [flags] remove-node CLUSTER NODE            every node forgets NODE
//	clusterctl [flags] reload                              re-read the provisioning database
//	clusterctl [flags] send-mi CLUSTER NODE CMD [PARAM...] run a command on a node
//	clusterctl [flags] broadcast-mi CLUSTER CMD [PARAM...] run a command on every node
//	clusterctl [flags] caps                                capabilities and their sync state, per cluster
//	clusterctl [flags] set-cap-status CLUSTER CAP 0|1      disable/enable a capability of the node
//	clusterctl [flags] sync CLUSTER CAP                    pull a capability's data from a donor again
//	clusterctl [flags] sync-status CLUSTER CAP             a capability's sync progress
//	clusterctl [flags] shtags                              sharing tags: state, holder, last change
//	clusterctl [flags] shtag set-active NAME/CLUSTER       make the node a sharing tag's holder (also shtag-set-active)
//
// Flags: --addr (or $CLUSTERCTL_ADDR, default http://127.0.0.1:8080/admin),
// --token (or $CLUSTERCTL_TOKEN, needed by the commands that change
// something), --json (print the API's JSON instead of tables), --timeout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clusterer-go/clusterer/admin"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

const usage = `usage: clusterctl [--addr URL] [--token T] [--json] [--timeout D] COMMAND [ARGS]

commands:
  list                                  nodes of each cluster and the links to them
  topology [--dot]                      each cluster's links (--dot: Graphviz)
  set-status CLUSTER [NODE] 0|1         disable (0) or enable (1) the local node, or NODE locally
  remove-node CLUSTER NODE              make every node of CLUSTER forget NODE
  reload                                re-read the provisioned nodes
  send-mi CLUSTER NODE CMD [PARAM...]   run CMD on NODE
  broadcast-mi CLUSTER CMD [PARAM...]   run CMD on every node of CLUSTER
  caps                                  capabilities: local sync state, and the other nodes' states
  set-cap-status CLUSTER CAP 0|1        disable (0) or enable (1) capability CAP on the node
  sync CLUSTER CAP                      pull CAP's data from a donor again (re-sync)
  sync-status CLUSTER CAP               CAP's sync state and progress on the node
  shtags                                sharing tags: state, holder, term, last change
  shtag set-active NAME/CLUSTER         make the node the holder of a sharing tag (vip/1);
                                        the other nodes go backup (also: shtag-set-active)
`

// errUsage: bad command line (exit 2).
var errUsage = errors.New("usage")

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("clusterctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", envOr(getenv, "CLUSTERCTL_ADDR", "http://127.0.0.1:8080/admin"), "admin API URL")
	token := fs.String("token", getenv("CLUSTERCTL_TOKEN"), "bearer token")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "clusterctl: %v\n%s", err, usage)
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	cli := &cli{c: &admin.Client{BaseURL: *addr, Token: *token, HTTP: &http.Client{}}, out: stdout, json: *asJSON}
	defer cli.c.HTTP.CloseIdleConnections()
	err := cli.do(ctx, fs.Arg(0), fs.Args()[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "clusterctl: %v\n%s", err, usage)
		return 2
	}
	fmt.Fprintf(stderr, "clusterctl: %v\n", err)
	return 1
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}

type cli struct {
	c    *admin.Client
	out  io.Writer
	json bool
}

func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// ints parses the leading numeric arguments.
func ints(names []string, args []string) ([]int, error) {
	out := make([]int, len(names))
	for i, name := range names {
		n, err := strconv.Atoi(args[i])
		if err != nil {
			return nil, usagef("%s %q is not a number", name, args[i])
		}
		out[i] = n
	}
	return out, nil
}

func (c *cli) do(ctx context.Context, cmd string, args []string) error {
	switch cmd {
	case "list":
		if len(args) != 0 {
			return usagef("list takes no arguments")
		}
		return c.list(ctx)
	case "topology":
		fs := flag.NewFlagSet("topology", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		dot := fs.Bool("dot", false, "Graphviz output")
		if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
			return usagef("topology takes only --dot")
		}
		return c.topology(ctx, *dot)
	case "set-status":
		if len(args) != 2 && len(args) != 3 {
			return usagef("set-status CLUSTER [NODE] 0|1")
		}
		st := args[len(args)-1]
		if st != "0" && st != "1" {
			return usagef("status %q must be 0 or 1", st)
		}
		n, err := ints([]string{"CLUSTER", "NODE"}[:len(args)-1], args)
		if err != nil {
			return err
		}
		node := 0
		if len(n) == 2 {
			node = n[1]
		}
		return c.ok(c.c.SetStatus(ctx, n[0], node, st == "1"))
	case "remove-node":
		if len(args) != 2 {
			return usagef("remove-node CLUSTER NODE")
		}
		n, err := ints([]string{"CLUSTER", "NODE"}, args)
		if err != nil {
			return err
		}
		return c.ok(c.c.RemoveNode(ctx, n[0], n[1]))
	case "reload":
		if len(args) != 0 {
			return usagef("reload takes no arguments")
		}
		return c.ok(c.c.Reload(ctx))
	case "send-mi":
		if len(args) < 3 {
			return usagef("send-mi CLUSTER NODE CMD [PARAM...]")
		}
		n, err := ints([]string{"CLUSTER", "NODE"}, args)
		if err != nil {
			return err
		}
		return c.ok(c.c.SendMI(ctx, n[0], n[1], args[2], args[3:]...))
	case "broadcast-mi":
		if len(args) < 2 {
			return usagef("broadcast-mi CLUSTER CMD [PARAM...]")
		}
		n, err := ints([]string{"CLUSTER"}, args)
		if err != nil {
			return err
		}
		return c.ok(c.c.BroadcastMI(ctx, n[0], args[1], args[2:]...))
	case "caps":
		if len(args) != 0 {
			return usagef("caps takes no arguments")
		}
		return c.caps(ctx)
	case "set-cap-status":
		if len(args) != 3 {
			return usagef("set-cap-status CLUSTER CAP 0|1")
		}
		if st := args[2]; st != "0" && st != "1" {
			return usagef("status %q must be 0 or 1", st)
		}
		n, err := ints([]string{"CLUSTER"}, args)
		if err != nil {
			return err
		}
		return c.ok(c.c.SetCapStatus(ctx, n[0], args[1], args[2] == "1"))
	case "sync", "sync-status":
		if len(args) != 2 {
			return usagef("%s CLUSTER CAP", cmd)
		}
		n, err := ints([]string{"CLUSTER"}, args)
		if err != nil {
			return err
		}
		if cmd == "sync" {
			return c.ok(c.c.ClusterSync(ctx, n[0], args[1]))
		}
		return c.syncStatus(ctx, n[0], args[1])
	case "shtags":
		if len(args) != 0 {
			return usagef("shtags takes no arguments")
		}
		return c.shtags(ctx)
	case "shtag":
		return c.shtag(ctx, args)
	case "shtag-set-active":
		if len(args) != 1 {
			return usagef("shtag-set-active NAME/CLUSTER")
		}
		return c.shtagSetActive(ctx, args[0])
	}
	return usagef("unknown command %q", cmd)
}

// ok prints the result of a command that returns nothing else.
func (c *cli) ok(err error) error {
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(admin.OK)
	}
	fmt.Fprintln(c.out, admin.OK)
	return nil
}

func (c *cli) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.out, "%s\n", b)
	return err
}

func (c *cli) list(ctx context.Context) error {
	l, err := c.c.List(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(l)
	}
	for i, cl := range l.Clusters {
		if i > 0 {
			fmt.Fprintln(c.out)
		}
		state := "enabled"
		if cl.Enabled == 0 {
			state = "disabled"
		}
		fmt.Fprintf(c.out, "cluster %d (local node %s)\n", cl.ClusterID, state)
		tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tDB_ID\tURL\tLINK\tNEXT_HOP\tSTATE\tRTT\tDESCRIPTION")
		for _, n := range cl.Nodes {
			st := "enabled"
			if n.Enabled == 0 {
				st = "disabled"
			}
			rtt := "-"
			if n.RTTms > 0 {
				rtt = fmt.Sprintf("%.1fms", n.RTTms)
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", n.NodeID, n.DBID, n.URL, n.LinkState, n.NextHop, st, rtt, n.Description)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func (c *cli) topology(ctx context.Context, dot bool) error {
	t, err := c.c.Topology(ctx)
	if err != nil {
		return err
	}
	switch {
	case c.json:
		return c.printJSON(t)
	case dot:
		_, err := io.WriteString(c.out, Dot(t))
		return err
	}
	for _, cl := range t.Clusters {
		fmt.Fprintf(c.out, "cluster %d\n", cl.ClusterID)
		for _, n := range cl.Nodes {
			nb := make([]string, len(n.Neighbours))
			for i, x := range n.Neighbours {
				nb[i] = strconv.Itoa(x)
			}
			fmt.Fprintf(c.out, "  %d: %s\n", n.NodeID, strings.Join(nb, " "))
		}
	}
	return nil
}

// Dot renders a topology for Graphviz: one subgraph per cluster, one edge
// per link (a link reported by either end), nodes named cCLUSTER_nNODE.
func Dot(t admin.Topology) string {
	var b strings.Builder
	b.WriteString("graph clusterer {\n\tnode [shape=circle];\n")
	for _, cl := range t.Clusters {
		fmt.Fprintf(&b, "\tsubgraph cluster_%d {\n\t\tlabel=\"cluster %d\";\n", cl.ClusterID, cl.ClusterID)
		name := func(n int) string { return fmt.Sprintf("c%d_n%d", cl.ClusterID, n) }
		type edge struct{ a, b int }
		var edges []edge
		for _, n := range cl.Nodes {
			fmt.Fprintf(&b, "\t\t%s [label=\"%d\"];\n", name(n.NodeID), n.NodeID)
			for _, x := range n.Neighbours {
				e := edge{min(n.NodeID, x), max(n.NodeID, x)}
				if !slices.Contains(edges, e) {
					edges = append(edges, e)
				}
			}
		}
		slices.SortFunc(edges, func(x, y edge) int {
			if x.a != y.a {
				return x.a - y.a
			}
			return x.b - y.b
		})
		for _, e := range edges {
			fmt.Fprintf(&b, "\t\t%s -- %s;\n", name(e.a), name(e.b))
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
