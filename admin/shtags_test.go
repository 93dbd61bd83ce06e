package admin_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/admin"
	"github.com/clusterer-go/clusterer/clustertest"
)

// shtagFixture: nodes 1, 2 and 3 (node 1 linked to both), vip/1
// configured active on node 2 and backup on node 1, gw/1 backup on node 1.
// Node 1's admin API is created before node 1 starts, so it sees the
// configured states.
func newShTagFixture(t *testing.T) *fixture {
	nw := clustertest.NewNetwork()
	t.Cleanup(func() { nw.Close() })
	f := &fixture{nodes: map[int]*clusterer.Cluster{}}
	tags := map[int][]string{1: {"vip/1=backup", "gw/1=backup"}, 2: {"vip/1=active"}}
	var h *admin.Handler
	for _, id := range []int{2, 3, 1} {
		cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: url(id)}}
		for _, n := range map[int][]int{1: {2, 3}, 2: {1}, 3: {1}}[id] {
			cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: 1, ID: n, URL: url(n)})
		}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: nw,
			ShTags: tags[id], PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond, NodeTimeout: time.Hour})
		require.NoError(t, err)
		if id == 1 {
			h = admin.New(c, admin.Options{Token: token})
		}
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		f.nodes[id] = c
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	f.client = &admin.Client{BaseURL: f.srv.URL, Token: token, HTTP: f.srv.Client()}
	return f
}

func tagState(c *clusterer.Cluster, name string) clusterer.ShTagState {
	st, _ := c.ShTag(name, 1)
	return st
}

func TestShTagCommands(t *testing.T) {
	f := newShTagFixture(t)
	ctx := context.Background()
	// Node 2 announces vip when node 1 comes up: node 1 stays backup (no
	// change since the configured state) and knows node 2 holds it.
	want := []admin.ShTag{
		{Tag: "gw", Cluster: 1, State: "backup", LastReason: "configured"},
		{Tag: "vip", Cluster: 1, State: "backup", Holder: 2, LastReason: "configured"},
	}
	require.Eventually(t, func() bool {
		l, err := f.client.ListShTags(ctx)
		return err == nil && len(l) == 2 && l[1] == want[1]
	}, 10*time.Second, 10*time.Millisecond, "%+v", f.nodes[1].ShTags())
	l, err := f.client.ListShTags(ctx)
	require.NoError(t, err)
	require.Equal(t, want, l)

	// OpenSIPS's shape: a top-level array of {Tag, Cluster, State}.
	code, body := f.do(t, "GET", "/list_shtags", "", "")
	require.Equal(t, 200, code, body)
	var raw []map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &raw))
	require.Len(t, raw, 2)
	require.Equal(t, "vip", raw[1]["Tag"])
	require.EqualValues(t, 1, raw[1]["Cluster"])
	require.Equal(t, "backup", raw[1]["State"])
	code, body = f.do(t, "POST", "/", "", `{"jsonrpc":"2.0","method":"clusterer_list_shtags","id":1}`)
	require.Equal(t, 200, code, body)
	require.Contains(t, body, `"result": [`)

	// clusterer_shtag_set_active vip/1, by JSON-RPC with a positional
	// param: node 1 takes vip, node 2 steps down.
	code, body = f.do(t, "POST", "/", "Bearer "+token,
		`{"jsonrpc":"2.0","method":"clusterer_shtag_set_active","params":["vip/1"],"id":2}`)
	require.Equal(t, 200, code, body)
	require.JSONEq(t, `{"jsonrpc":"2.0","result":"OK","id":2}`, body)
	require.Equal(t, clusterer.ShTagActive, tagState(f.nodes[1], "vip"))
	require.Eventually(t, func() bool { return tagState(f.nodes[2], "vip") == clusterer.ShTagBackup }, 10*time.Second, 10*time.Millisecond)
	var vip admin.ShTag
	require.Eventually(t, func() bool {
		l, err := f.client.ListShTags(ctx)
		if err != nil || len(l) != 2 {
			return false
		}
		vip = l[1]
		return vip.LastReason == "activated"
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, admin.ShTag{Tag: "vip", Cluster: 1, State: "active", Holder: 1, Term: vip.Term,
		LastReason: "activated", LastNode: 2}, vip)
	require.Positive(t, vip.Term)
	info := f.nodes[2].ShTags()
	require.Equal(t, []clusterer.ShTagInfo{{Name: "vip", Cluster: 1, State: clusterer.ShTagBackup, Owner: 1, Term: vip.Term}}, info)

	// Node 2 takes vip back: node 1 hears it (taken-over).
	require.NoError(t, f.nodes[2].ActivateShTag(ctx, "vip", 1))
	require.Eventually(t, func() bool {
		l, err := f.client.ListShTags(ctx)
		if err != nil || len(l) != 2 {
			return false
		}
		vip = l[1]
		return vip.LastReason == "taken-over"
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, admin.ShTag{Tag: "vip", Cluster: 1, State: "backup", Holder: 2, Term: vip.Term,
		LastReason: "taken-over", LastNode: 2}, vip)

	// Through the client: node 1 activates gw, which node 2 never heard of.
	require.NoError(t, f.client.ShTagSetActive(ctx, "gw/1"))
	require.Equal(t, clusterer.ShTagActive, tagState(f.nodes[1], "gw"))
	require.Eventually(t, func() bool {
		return tagState(f.nodes[2], "gw") == clusterer.ShTagBackup && f.nodes[2].ShTags()[0].Owner == 1
	}, 10*time.Second, 10*time.Millisecond, "node 2 learns gw and its holder")
}

func TestShTagErrors(t *testing.T) {
	f := newShTagFixture(t)
	bearer := "Bearer " + token
	for _, tc := range []struct {
		method, path, auth, body string
		code                     int
		want                     string
	}{
		{"POST", "/shtag_set_active", bearer, `{"tag":"vip"}`, 400, `clusterer: invalid sharing tag: \"vip\": no '/'`},
		{"POST", "/shtag_set_active", bearer, `{"tag":"vip/x"}`, 400, "bad cluster id"},
		{"POST", "/shtag_set_active", bearer, `{"tag":"vip/0"}`, 400, "bad cluster id"},
		{"POST", "/shtag_set_active", bearer, `{"tag":"/1"}`, 400, "empty name"},
		{"POST", "/shtag_set_active", bearer, `{"tag":1}`, 400, `\"1\": no '/'`},
		{"POST", "/shtag_set_active", bearer, `{}`, 400, "parameter tag is required"},
		{"POST", "/shtag_set_active", bearer, `{"tag":"vip/9"}`, 404, "clusterer: unknown cluster: 9"},
		{"POST", "/shtag_set_active", "", `{"tag":"vip/1"}`, 401, "shtag_set_active needs a valid bearer token"},
		{"GET", "/shtag_set_active?tag=vip/1", bearer, "", 405, "shtag_set_active takes POST"},
		{"POST", "/", bearer, `{"jsonrpc":"2.0","method":"clusterer_shtag_set_active","params":["a/1","b/1"]}`, 400,
			"clusterer_shtag_set_active takes at most 1 params"},
	} {
		code, body := f.do(t, tc.method, tc.path, tc.auth, tc.body)
		require.Equal(t, tc.code, code, "%s %s %s: %s", tc.method, tc.path, tc.body, body)
		require.Contains(t, body, tc.want, "%s %s %s", tc.method, tc.path, tc.body)
	}
	require.Equal(t, clusterer.ShTagBackup, tagState(f.nodes[1], "vip"), "nothing was activated")

	var e *admin.Error
	require.ErrorAs(t, f.client.ShTagSetActive(context.Background(), "vip"), &e)
	require.Equal(t, 400, e.Code)
	_, _, err := admin.ParseTagRef("vip=active")
	require.ErrorIs(t, err, clusterer.ErrShTag)
	name, cl, err := admin.ParseTagRef(" vip / 3 ")
	require.NoError(t, err)
	require.Equal(t, "vip", name)
	require.Equal(t, 3, cl)

	// Without a Handler's events, ListShTags has no reasons.
	require.Equal(t, []admin.ShTag{{Tag: "gw", Cluster: 1, State: "backup"}, {Tag: "vip", Cluster: 1, State: "backup",
		Holder: f.nodes[1].ShTags()[1].Owner}}, admin.ListShTags(f.nodes[1]))
}
