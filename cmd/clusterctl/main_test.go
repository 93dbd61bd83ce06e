package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/admin"
	"github.com/clusterer-go/clusterer/clustertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "t0ken"

type fixture struct {
	nodes   map[int]*clusterer.Cluster
	addr    string
	mu      sync.Mutex
	reloads int
	ran     []string
}

func url(id int) string { return fmt.Sprintf("bin:127.0.0.%d:5555", id) }

// newFixture: nodes 1, 2 and 3 in cluster 1 (a full mesh), node 1 in
// cluster 2 with node 4 (never started), node 1's admin API on loopback.
func newFixture(t *testing.T) *fixture {
	nw := clustertest.NewNetwork()
	t.Cleanup(func() { nw.Close() })
	f := &fixture{nodes: map[int]*clusterer.Cluster{}}
	for id, nb := range map[int][]int{1: {2, 3}, 2: {1}, 3: {1}} {
		cc := []clusterer.ClusterConfig{{ID: 1, Self: clusterer.NodeInfo{URL: url(id)}}}
		for _, n := range nb {
			cc[0].Nodes = append(cc[0].Nodes, clusterer.NodeInfo{ClusterID: 1, ID: n, URL: url(n), DBID: 10 * n, Description: fmt.Sprintf("Node %c", 'A'+n-1)})
		}
		if id == 1 {
			cc = append(cc, clusterer.ClusterConfig{ID: 2, Self: clusterer.NodeInfo{URL: url(1)},
				Nodes: []clusterer.NodeInfo{{ClusterID: 2, ID: 4, URL: url(4)}}})
		}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: cc, Transport: nw,
			PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond, NodeTimeout: time.Hour})
		require.NoError(t, err)
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		f.nodes[id] = c
	}
	require.Eventually(t, func() bool {
		top := f.nodes[1].Topology(1)
		n4, _ := f.nodes[1].Node(2, 4)
		return len(top[1]) == 2 && len(top[2]) == 2 && len(top[3]) == 2 && n4.Link == clusterer.LinkIsDown
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, f.nodes[3].RegisterCommand("lb_reload", func(cmd clusterer.Command) {
		f.mu.Lock()
		f.ran = append(f.ran, fmt.Sprint(cmd.Name, cmd.Params))
		f.mu.Unlock()
	}))
	h := admin.New(f.nodes[1], admin.Options{Token: token, Reload: func(context.Context) error {
		f.mu.Lock()
		f.reloads++
		f.mu.Unlock()
		return nil
	}})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.addr = srv.URL
	return f
}

// ctl runs clusterctl against the fixture and returns the exit code,
// stdout and stderr.
func (f *fixture) ctl(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	env := map[string]string{"CLUSTERCTL_ADDR": f.addr, "CLUSTERCTL_TOKEN": token}
	code := run(context.Background(), args, &out, &errOut, func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

var rttRE = regexp.MustCompile(`\d+\.\dms`)

// fields normalises a table: RTTs as "RTT", columns single-spaced.
func fields(s string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		lines = append(lines, strings.Join(strings.Fields(rttRE.ReplaceAllString(l, "RTT")), " "))
	}
	return strings.Join(lines, "\n")
}

func TestListTable(t *testing.T) {
	f := newFixture(t)
	code, out, errOut := f.ctl("list")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, `cluster 1 (local node enabled)
NODE DB_ID URL LINK NEXT_HOP STATE RTT DESCRIPTION
2 20 bin:127.0.0.2:5555 Up 2 enabled RTT Node B
3 30 bin:127.0.0.3:5555 Up 3 enabled RTT Node C

cluster 2 (local node enabled)
NODE DB_ID URL LINK NEXT_HOP STATE RTT DESCRIPTION
4 -1 bin:127.0.0.4:5555 Down none enabled - none`, fields(out))

	code, out, _ = f.ctl("--json", "list")
	require.Equal(t, 0, code)
	var l admin.NodeList
	require.NoError(t, json.Unmarshal([]byte(out), &l))
	require.Len(t, l.Clusters, 2)
	require.Equal(t, "Up", l.Clusters[0].Nodes[0].LinkState)
}

func TestTopologyOutputs(t *testing.T) {
	f := newFixture(t)
	code, out, _ := f.ctl("topology")
	require.Equal(t, 0, code)
	require.Equal(t, `cluster 1
  1: 2 3
  2: 1 3
  3: 1 2
cluster 2
  1: 
  4: 
`, out)

	code, out, _ = f.ctl("topology", "--dot")
	require.Equal(t, 0, code)
	require.Equal(t, `graph clusterer {
	node [shape=circle];
	subgraph cluster_1 {
		label="cluster 1";
		c1_n1 [label="1"];
		c1_n2 [label="2"];
		c1_n3 [label="3"];
		c1_n1 -- c1_n2;
		c1_n1 -- c1_n3;
		c1_n2 -- c1_n3;
	}
	subgraph cluster_2 {
		label="cluster 2";
		c2_n1 [label="1"];
		c2_n4 [label="4"];
	}
}
`, out)

	code, out, _ = f.ctl("--json", "topology")
	require.Equal(t, 0, code)
	require.JSONEq(t, `{"Clusters":[{"cluster_id":1,"Nodes":[{"node_id":1,"Neighbours":[2,3]},{"node_id":2,"Neighbours":[1,3]},{"node_id":3,"Neighbours":[1,2]}]},
		{"cluster_id":2,"Nodes":[{"node_id":1,"Neighbours":[]},{"node_id":4,"Neighbours":[]}]}]}`, out)
}

func TestMutatingCommands(t *testing.T) {
	f := newFixture(t)
	code, out, errOut := f.ctl("set-status", "1", "2", "0")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "OK\n", out)
	n2, _ := f.nodes[1].Node(1, 2)
	require.True(t, n2.Disabled)

	code, out, _ = f.ctl("--json", "set-status", "2", "0")
	require.Equal(t, 0, code)
	require.Equal(t, "\"OK\"\n", out)
	require.False(t, f.nodes[1].Memberships()[1].Enabled)

	code, _, errOut = f.ctl("send-mi", "1", "3", "lb_reload", "a", "b")
	require.Equal(t, 0, code, errOut)
	code, _, errOut = f.ctl("broadcast-mi", "1", "lb_reload")
	require.Equal(t, 0, code, errOut)
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.ran) == 2
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"lb_reload[a b]", "lb_reload[]"}, f.ran)

	code, _, errOut = f.ctl("reload")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, 1, f.reloads)

	code, _, errOut = f.ctl("remove-node", "1", "3")
	require.Equal(t, 0, code, errOut)
	_, ok := f.nodes[1].Node(1, 3)
	require.False(t, ok)
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: clusterctl"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"--bogus", "list"}, 2, "flag provided but not defined"},
		{[]string{"list", "extra"}, 2, "list takes no arguments"},
		{[]string{"topology", "--svg"}, 2, "topology takes only --dot"},
		{[]string{"set-status", "1"}, 2, "set-status CLUSTER [NODE] 0|1"},
		{[]string{"set-status", "one", "1"}, 2, `CLUSTER "one" is not a number`},
		{[]string{"set-status", "1", "2"}, 2, `status "2" must be 0 or 1`},
		{[]string{"remove-node", "1"}, 2, "remove-node CLUSTER NODE"},
		{[]string{"send-mi", "1", "2"}, 2, "send-mi CLUSTER NODE CMD"},
		{[]string{"remove-node", "1", "9"}, 1, "admin: 404: clusterer: unknown node"},
		{[]string{"set-status", "7", "1"}, 1, "admin: 404: clusterer: unknown cluster"},
		{[]string{"--token", "wrong", "reload"}, 1, "admin: 401: reload needs a valid bearer token"},
		{[]string{"--addr", "http://127.0.0.1:1/admin", "list"}, 1, "connection refused"},
	} {
		code, out, errOut := f.ctl(tc.args...)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, errOut)
		require.Empty(t, out, "%v", tc.args)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
	}
}
