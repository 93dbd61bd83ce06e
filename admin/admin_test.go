package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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

const token = "s3cret"

func url(id int) string { return fmt.Sprintf("bin:127.0.0.%d:5555", id) }

func startNode(t *testing.T, nw *clustertest.Network, id int, neighbors ...int) *clusterer.Cluster {
	t.Helper()
	cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: url(id)}}
	for _, n := range neighbors {
		cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: 1, ID: n, URL: url(n), Description: fmt.Sprintf("node %d", n)})
	}
	c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: nw,
		PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond, NodeTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { c.Close() })
	return c
}

func reachable(c *clusterer.Cluster) []int {
	out := []int{}
	for _, n := range c.Nodes(1) {
		if n.Reachable {
			out = append(out, n.ID)
		}
	}
	return out
}

// recorder remembers the remote commands a node ran.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) run(cmd clusterer.Command) {
	r.mu.Lock()
	r.got = append(r.got, fmt.Sprintf("%d:%s%v", cmd.Src, cmd.Name, cmd.Params))
	r.mu.Unlock()
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string{}, r.got...)
}

type fixture struct {
	nodes  map[int]*clusterer.Cluster
	srv    *httptest.Server
	client *admin.Client
	reload func(ctx context.Context) error
}

// newFixture: three nodes on the in-memory network, node 1's admin API on
// loopback.
func newFixture(t *testing.T) *fixture {
	nw := clustertest.NewNetwork()
	t.Cleanup(func() { nw.Close() })
	f := &fixture{nodes: map[int]*clusterer.Cluster{
		1: startNode(t, nw, 1, 2, 3),
		2: startNode(t, nw, 2, 1),
		3: startNode(t, nw, 3, 1),
	}}
	for id, c := range f.nodes {
		require.Eventually(t, func() bool { return len(reachable(c)) == 2 }, 10*time.Second, 10*time.Millisecond, "node %d", id)
	}
	require.Eventually(t, func() bool { // a full mesh, as node 1 knows it
		top := f.nodes[1].Topology(1)
		return len(top[2]) == 2 && len(top[3]) == 2
	}, 10*time.Second, 10*time.Millisecond)
	h := admin.New(f.nodes[1], admin.Options{Token: token, Reload: func(ctx context.Context) error { return f.reload(ctx) }})
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	f.client = &admin.Client{BaseURL: f.srv.URL, Token: token, HTTP: f.srv.Client()}
	return f
}

// do sends a raw request and returns the status and body.
func (f *fixture) do(t *testing.T, method, path, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := f.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestListAndTopologyShapes(t *testing.T) {
	f := newFixture(t)
	code, body := f.do(t, "GET", "/list", "", "")
	require.Equal(t, 200, code)
	var raw map[string][]map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &raw))
	node := raw["Clusters"][0]["Nodes"].([]any)[0].(map[string]any)
	for _, k := range []string{"node_id", "db_id", "url", "link_state", "next_hop", "description"} {
		require.Contains(t, node, k, "OpenSIPS's clusterer_list field")
	}

	list, err := f.client.List(context.Background())
	require.NoError(t, err)
	for i := range list.Clusters[0].Nodes {
		require.Greater(t, list.Clusters[0].Nodes[i].RTTms, -1.0)
		list.Clusters[0].Nodes[i].RTTms = 0
	}
	require.Equal(t, admin.NodeList{Clusters: []admin.ClusterNodes{{ClusterID: 1, Enabled: 1, Nodes: []admin.NodeInfo{
		{NodeID: 2, DBID: -1, URL: url(2), LinkState: "Up", NextHop: "2", Description: "node 2", Enabled: 1},
		{NodeID: 3, DBID: -1, URL: url(3), LinkState: "Up", NextHop: "3", Description: "node 3", Enabled: 1},
	}}}}, list)

	top, err := f.client.Topology(context.Background())
	require.NoError(t, err)
	require.Equal(t, admin.Topology{Clusters: []admin.ClusterTopology{{ClusterID: 1, Nodes: []admin.TopologyNode{
		{NodeID: 1, Neighbours: []int{2, 3}}, {NodeID: 2, Neighbours: []int{1, 3}}, {NodeID: 3, Neighbours: []int{1, 2}},
	}}}}, top)

	// GET with a query string works for reads too; the index lists the commands.
	code, _ = f.do(t, "GET", "/list_topology", "", "")
	require.Equal(t, 200, code)
	code, body = f.do(t, "GET", "/", "", "")
	require.Equal(t, 200, code)
	require.Contains(t, body, `"mi": "clusterer_remove_node"`)
}

func TestMutationsNeedTheToken(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/set_status", "/send_mi", "/broadcast_mi", "/remove_node", "/reload", "/set_cap_status", "/cluster_sync"} {
		code, body := f.do(t, "POST", path, "", `{}`)
		require.Equal(t, 401, code, path)
		require.Contains(t, body, "needs a valid bearer token")
		code, _ = f.do(t, "POST", path, "Bearer wrong", `{}`)
		require.Equal(t, 401, code, path)
		code, _ = f.do(t, "POST", path, "Basic "+token, `{}`)
		require.Equal(t, 401, code, path)
		code, _ = f.do(t, "GET", path, "Bearer "+token, "")
		require.Equal(t, 405, code, path)
	}
	rpc := `{"jsonrpc":"2.0","method":"clusterer_set_status","params":[1,0],"id":7}`
	code, body := f.do(t, "POST", "/", "", rpc)
	require.Equal(t, 401, code)
	require.Contains(t, body, `"id": 7`)

	// No token configured: refused outright.
	open := httptest.NewServer(admin.New(f.nodes[1], admin.Options{}))
	defer open.Close()
	c := &admin.Client{BaseURL: open.URL, Token: "anything", HTTP: open.Client()}
	var e *admin.Error
	require.ErrorAs(t, c.SetStatus(context.Background(), 1, 0, false), &e)
	require.Equal(t, 403, e.Code)
	_, err := c.List(context.Background())
	require.NoError(t, err, "reads stay open")
	require.True(t, f.nodes[1].Memberships()[0].Enabled, "nothing changed")
}

func TestSetStatusAndRemoveNode(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	require.NoError(t, f.client.SetStatus(ctx, 1, 0, false))
	require.False(t, f.nodes[1].Memberships()[0].Enabled)
	require.Eventually(t, func() bool { return len(reachable(f.nodes[2])) == 1 }, 5*time.Second, 10*time.Millisecond)
	list, err := f.client.List(ctx)
	require.NoError(t, err)
	require.Equal(t, 0, list.Clusters[0].Enabled)
	require.NoError(t, f.client.SetStatus(ctx, 1, 1, true))
	require.Eventually(t, func() bool { return len(reachable(f.nodes[1])) == 2 }, 5*time.Second, 10*time.Millisecond)

	// Another node, disabled locally (JSON-RPC, positional, OpenSIPS's name).
	code, body := f.do(t, "POST", "/", "Bearer "+token, `{"jsonrpc":"2.0","method":"clusterer_set_status","params":[1,3,0],"id":1}`)
	require.Equal(t, 200, code, body)
	require.JSONEq(t, `{"jsonrpc":"2.0","result":"OK","id":1}`, body)
	n3, _ := f.nodes[1].Node(1, 3)
	require.True(t, n3.Disabled)
	// The manual's form: cluster_id and status only, for the local node.
	code, body = f.do(t, "POST", "/", "Bearer "+token, `{"jsonrpc":"2.0","method":"clusterer_set_status","params":[1,0],"id":2}`)
	require.Equal(t, 200, code, body)
	require.False(t, f.nodes[1].Memberships()[0].Enabled)
	code, body = f.do(t, "POST", "/", "Bearer "+token, `{"jsonrpc":"2.0","method":"clusterer_set_status","params":{"cluster_id":1,"status":1},"id":3}`)
	require.Equal(t, 200, code, body)
	require.True(t, f.nodes[1].Memberships()[0].Enabled)

	require.NoError(t, f.client.RemoveNode(ctx, 1, 2))
	_, ok := f.nodes[1].Node(1, 2)
	require.False(t, ok)
	var e *admin.Error
	require.ErrorAs(t, f.client.RemoveNode(ctx, 1, 2), &e)
	require.Equal(t, 404, e.Code, e.Message)
	require.ErrorAs(t, f.client.RemoveNode(ctx, 1, 1), &e)
	require.Equal(t, 400, e.Code)
}

func TestRemoteCommands(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	recs := map[int]*recorder{}
	for id, c := range f.nodes {
		recs[id] = &recorder{}
		require.NoError(t, c.RegisterCommand("dr_reload", recs[id].run))
	}
	require.NoError(t, f.client.SendMI(ctx, 1, 3, "dr_reload", "partition_5"))
	require.Eventually(t, func() bool { return len(recs[3].list()) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"1:dr_reload[partition_5]"}, recs[3].list())

	require.NoError(t, f.client.BroadcastMI(ctx, 1, "dr_reload"))
	for _, id := range []int{1, 2, 3} {
		require.Eventually(t, func() bool {
			l := recs[id].list()
			return len(l) > 0 && l[len(l)-1] == "1:dr_reload[]"
		}, 5*time.Second, 10*time.Millisecond, "node %d", id)
	}

	var e *admin.Error
	require.ErrorAs(t, f.client.SendMI(ctx, 1, 9, "dr_reload"), &e)
	require.Equal(t, 503, e.Code, e.Message)
	require.ErrorAs(t, f.client.SendMI(ctx, 7, 2, "dr_reload"), &e)
	require.Equal(t, 404, e.Code, e.Message)
}

func TestReload(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	calls := 0
	f.reload = func(context.Context) error { calls++; return nil }
	require.NoError(t, f.client.Reload(ctx))
	require.Equal(t, 1, calls)
	f.reload = func(context.Context) error { return errors.New("dbprov: row id=3: url: bad") }
	var e *admin.Error
	require.ErrorAs(t, f.client.Reload(ctx), &e)
	require.Equal(t, 500, e.Code)
	require.Contains(t, e.Message, "row id=3")

	noDB := httptest.NewServer(admin.New(f.nodes[1], admin.Options{Token: token}))
	defer noDB.Close()
	c := &admin.Client{BaseURL: noDB.URL, Token: token, HTTP: noDB.Client()}
	require.ErrorAs(t, c.Reload(ctx), &e)
	require.Equal(t, admin.Error{Code: 400, Message: "Database mode is not enabled"}, *e)
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t)
	bearer := "Bearer " + token
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/nope", "", 404, `unknown command \"nope\"`},
		{"POST", "/set_status", `{"cluster_id":1`, 400, "request body"},
		{"POST", "/set_status", `[1,0]`, 400, "request body"},
		{"POST", "/set_status", `{"cluster_id":1}`, 400, "parameter status is required"},
		{"POST", "/set_status", `{"cluster_id":1,"status":1,"colour":"red"}`, 400, `unknown parameter \"colour\"`},
		{"POST", "/set_status", `{"cluster_id":"one","status":1}`, 400, `\"one\" is not an integer`},
		{"POST", "/set_status", `{"cluster_id":true,"status":1}`, 400, "must be an integer"},
		{"POST", "/set_status", `{"cluster_id":1,"status":2}`, 400, "status must be 0"},
		{"POST", "/set_status", `{"cluster_id":9,"status":1}`, 404, "unknown cluster"},
		{"POST", "/set_status", `{"cluster_id":1,"node_id":42,"status":1}`, 404, "unknown node"},
		{"POST", "/send_mi", `{"cluster_id":1,"destination":2,"cmd_name":"x","cmd_params":[{}]}`, 400, "cmd_params[0] must be a string"},
		{"POST", "/send_mi", `{"cluster_id":1,"destination":2,"cmd_name":""}`, 400, "empty command name"},
		{"POST", "/list", strings.Repeat(" ", 70<<10) + "{}", 400, "request body"},
		{"PUT", "/list", "", 405, "list takes GET, POST"},
		{"DELETE", "/", "", 405, "use GET or POST"},
		{"POST", "/", `not json`, 400, "parse error"},
		{"POST", "/", `{"method":"clusterer_list"}`, 400, "invalid request"},
		{"POST", "/", `{"jsonrpc":"2.0","method":"clusterer_nothing"}`, 404, "not found"},
		{"POST", "/", `{"jsonrpc":"2.0","method":"clusterer_set_status","params":[1,2,3,4]}`, 400, "at most 3 params"},
		{"POST", "/", `{"jsonrpc":"2.0","method":"clusterer_set_status","params":{"cluster_id":1}}`, 400, "status is required"},
	} {
		code, body := f.do(t, tc.method, tc.path, bearer, tc.body)
		require.Equal(t, tc.code, code, "%s %s %s: %s", tc.method, tc.path, tc.body, body)
		require.Contains(t, body, tc.want, "%s %s %s", tc.method, tc.path, tc.body)
	}
}

// The host adds a command of its own.
func TestHandleAddsCommands(t *testing.T) {
	f := newFixture(t)
	h := admin.New(f.nodes[1], admin.Options{Token: token})
	h.Handle(admin.Command{Name: "whoami", MI: "core_whoami", Params: []string{"verbose?"},
		Run: func(_ context.Context, p admin.Params) (any, error) {
			return map[string]any{"node": f.nodes[1].MyID(), "verbose": p.Has("verbose")}, nil
		}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := &admin.Client{BaseURL: srv.URL, HTTP: srv.Client()}
	var out map[string]any
	require.NoError(t, c.Call(context.Background(), "whoami", map[string]any{"verbose": 1}, &out))
	require.Equal(t, map[string]any{"node": 1.0, "verbose": true}, out)
}
