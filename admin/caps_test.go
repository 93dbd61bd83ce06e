package admin_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/admin"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/internal/kvtest"
)

const (
	kvCap  = "kv-repl"
	dlgCap = "dlg-repl"
)

// capFixture: node 1 (admin API) holds dlg-repl and kv-repl, which it
// syncs at start from node 2, the only other holder of kv-repl (100
// records, packed small so that they arrive in many packets); node 3
// holds dlg-repl only. Node 2's first donation stops before record 60
// until release is called.
type capFixture struct {
	nodes   map[int]*clusterer.Cluster
	stores  map[int]*kvtest.Store
	reached <-chan struct{}
	release func()
	client  *admin.Client
	do      func(t *testing.T, method, path, auth, body string) (int, string)
}

func newCapFixture(t *testing.T) *capFixture {
	nw := clustertest.NewNetwork()
	t.Cleanup(func() { nw.Close() })
	f := &capFixture{nodes: map[int]*clusterer.Cluster{}, stores: map[int]*kvtest.Store{
		1: kvtest.New(kvCap, 1, 0), 2: kvtest.New(kvCap, 1, 100)}}
	f.reached, f.release = f.stores[2].Hold(60)
	for _, id := range []int{2, 3, 1} {
		cc := clusterer.ClusterConfig{ID: 1, Self: clusterer.NodeInfo{URL: url(id)}}
		for _, n := range map[int][]int{1: {2, 3}, 2: {1}, 3: {1}}[id] {
			cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: 1, ID: n, URL: url(n)})
		}
		cfg := clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: nw,
			PingInterval: 100 * time.Millisecond, PingTimeout: 50 * time.Millisecond, NodeTimeout: time.Hour}
		if id == 2 {
			cfg.SyncPacketMaxSize = 64
		}
		c, err := clusterer.New(cfg)
		require.NoError(t, err)
		require.NoError(t, c.RegisterCapability(clusterer.CapabilityConfig{Name: dlgCap, Cluster: 1}, clusterer.HandlerFuncs{}))
		if s := f.stores[id]; s != nil {
			require.NoError(t, s.Register(c, clusterer.CapabilityConfig{RequireSync: id == 1}))
		}
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		f.nodes[id] = c
	}
	t.Cleanup(f.release) // before the nodes close: node 2's close waits for the donation
	h := admin.New(f.nodes[1], admin.Options{Token: token})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.client = &admin.Client{BaseURL: srv.URL, Token: token, HTTP: srv.Client()}
	raw := &fixture{srv: srv}
	f.do = raw.do
	return f
}

func (f *capFixture) status(t *testing.T, name string) admin.SyncState {
	t.Helper()
	st, err := f.client.SyncStatus(context.Background(), 1, name)
	require.NoError(t, err)
	return st
}

func (f *capFixture) waitSynced(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		st := f.status(t, kvCap)
		return st.SyncStatus == "synced" && len(st.SyncedNodes) == 2 // nodes 1 and 2
	}, 10*time.Second, 10*time.Millisecond)
}

func TestListCapDuringAndAfterSync(t *testing.T) {
	f := newCapFixture(t)
	ctx := context.Background()
	<-f.reached
	// The donor stopped at record 60: the joiner has what was packed
	// before, and holds back the updates the donor replicates meanwhile.
	require.NoError(t, f.stores[2].Update("k005", "changed"))
	require.NoError(t, f.stores[2].Update("new", "value"))
	var last admin.SyncState
	require.Eventually(t, func() bool {
		last = f.status(t, kvCap)
		// Two updates held back, and maybe a node event (node 3 coming
		// up during the sync is held back with them).
		return last.SyncStatus == "sync in progress" && last.Buffered >= 2 && last.Records > 0
	}, 10*time.Second, 10*time.Millisecond, "last: %+v", &last)
	st := f.status(t, kvCap)
	require.Equal(t, 2, st.Donor)
	require.Equal(t, "not synced", st.State)
	require.Equal(t, "yes", st.Enabled)
	require.Less(t, st.Records, int64(60))
	require.Equal(t, []int{2}, st.SyncedNodes)
	require.Equal(t, -1, st.Index)
	require.NotEmpty(t, st.Started)
	_, err := time.Parse(time.RFC3339Nano, st.Started)
	require.NoError(t, err)
	require.NotContains(t, f.stores[1].Data(), "new", "held back until the last record")

	list, err := f.client.ListCap(ctx)
	require.NoError(t, err)
	require.Len(t, list.Clusters, 1)
	require.Equal(t, "sync in progress", list.Clusters[0].Capabilities[1].SyncStatus)
	require.Equal(t, 2, list.Clusters[0].Capabilities[1].Donor)

	time.Sleep(20 * time.Millisecond) // a sync that lasts measurably
	f.release()
	f.waitSynced(t)
	require.Equal(t, f.stores[2].Data(), f.stores[1].Data(), "the updates applied after the records they changed")
	require.Equal(t, "changed", f.stores[1].Data()["k005"])

	code, body := f.do(t, "GET", "/list_cap", "", "")
	require.Equal(t, 200, code, body)
	require.Regexp(t, `"name": "kv-repl",\s+"state": "Ok",\s+"enabled": "yes",\s+"sync_status": "synced"`, body,
		"OpenSIPS's fields first, in its order")
	list, err = f.client.ListCap(ctx)
	require.NoError(t, err)
	el := list.Clusters[0].Capabilities[1].ElapsedMs
	require.Greater(t, el, 20.0, "the sync took the hold")
	list.Clusters[0].Capabilities[1].ElapsedMs = 0
	require.Equal(t, admin.CapList{Clusters: []admin.ClusterCaps{{ClusterID: 1,
		Capabilities: []admin.CapState{
			{Name: dlgCap, State: "Ok", Enabled: "yes", SyncStatus: "synced", SyncedNodes: []int{1, 2, 3}},
			{Name: kvCap, State: "Ok", Enabled: "yes", SyncStatus: "synced", Records: 100, Bytes: kvBytes(100),
				SyncedNodes: []int{1, 2}},
		},
		Nodes: []admin.NodeCaps{
			{NodeID: 2, Reachable: true, Capabilities: []admin.RemoteState{{Name: dlgCap, State: "Ok"}, {Name: kvCap, State: "Ok"}}},
			{NodeID: 3, Reachable: true, Capabilities: []admin.RemoteState{{Name: dlgCap, State: "Ok"}}},
		},
	}}}, list)

	// sync_status, by JSON-RPC with positional params.
	code, body = f.do(t, "POST", "/", "", `{"jsonrpc":"2.0","method":"sync_status","params":[1,"kv-repl"],"id":4}`)
	require.Equal(t, 200, code, body)
	require.Contains(t, body, `"records": 100`)
	require.Contains(t, body, `"index": 0`)
	st = f.status(t, kvCap)
	require.Equal(t, fmt.Sprint(el), fmt.Sprint(st.ElapsedMs), "a finished sync's duration stays put")
}

// kvBytes is the size of n records k000=v0…
func kvBytes(n int) int64 { return kvtest.New(kvCap, 1, n).Bytes() }

func TestSetCapStatusAndClusterSync(t *testing.T) {
	f := newCapFixture(t)
	ctx := context.Background()
	f.release()
	f.waitSynced(t)

	// Disabled: announced as not synced, and not re-syncable.
	code, body := f.do(t, "POST", "/", "Bearer "+token,
		`{"jsonrpc":"2.0","method":"clusterer_set_cap_status","params":[1,"kv-repl",0],"id":1}`)
	require.Equal(t, 200, code, body)
	require.JSONEq(t, `{"jsonrpc":"2.0","result":"OK","id":1}`, body)
	st := f.status(t, kvCap)
	require.Equal(t, "disabled", st.SyncStatus)
	require.Equal(t, "not synced", st.State)
	require.Equal(t, "no", st.Enabled)
	require.Equal(t, []int{2}, st.SyncedNodes)
	require.Eventually(t, func() bool {
		return remoteStatus(f.nodes[2], 1, kvCap) == clusterer.NotSynced
	}, 5*time.Second, 10*time.Millisecond, "node 2 hears of it")
	var e *admin.Error
	require.ErrorAs(t, f.client.ClusterSync(ctx, 1, kvCap), &e)
	require.Equal(t, 409, e.Code, e.Message)
	require.Contains(t, e.Message, "capability disabled")

	require.NoError(t, f.client.SetCapStatus(ctx, 1, kvCap, true))
	f.waitSynced(t)

	// A re-sync on demand pulls every record again.
	before := f.stores[1].SyncedRecords()
	require.NoError(t, f.client.ClusterSync(ctx, 1, kvCap))
	require.Eventually(t, func() bool { return f.stores[1].SyncedRecords() == before+100 }, 10*time.Second, 10*time.Millisecond)
	f.waitSynced(t)
	st = f.status(t, kvCap)
	require.EqualValues(t, 100, st.Records)
	require.Empty(t, st.LastError)
	require.Equal(t, uint64(2), f.nodes[2].Stats().SyncServed)
}

func remoteStatus(c *clusterer.Cluster, node int, name string) clusterer.CapabilityStatus {
	for _, ci := range c.Capabilities(1) {
		if ci.Node == node && ci.Name == name {
			return ci.Status
		}
	}
	return -1
}

func TestCapErrors(t *testing.T) {
	f := newCapFixture(t)
	f.release()
	bearer := "Bearer " + token
	for _, tc := range []struct {
		method, path, auth, body string
		code                     int
		want                     string
	}{
		{"GET", "/sync_status?cluster_id=1&capability=nope", "", "", 404, `clusterer: unknown capability: \"nope\" in cluster 1`},
		{"GET", "/sync_status?cluster_id=7&capability=kv-repl", "", "", 404, "clusterer: unknown cluster: 7"},
		{"GET", "/sync_status?cluster_id=1", "", "", 400, "parameter capability is required"},
		{"POST", "/set_cap_status", bearer, `{"cluster_id":1,"capability":"nope","status":0}`, 404, "unknown capability"},
		{"POST", "/set_cap_status", bearer, `{"cluster_id":1,"capability":"kv-repl","status":2}`, 400, "status must be 0"},
		{"POST", "/set_cap_status", "", `{"cluster_id":1,"capability":"kv-repl","status":0}`, 401, "needs a valid bearer token"},
		{"POST", "/cluster_sync", bearer, `{"cluster_id":1,"capability":"nope"}`, 404, "unknown capability"},
		{"POST", "/cluster_sync", bearer, `{"cluster_id":3,"capability":"kv-repl"}`, 404, "unknown cluster"},
		{"POST", "/cluster_sync", "", `{"cluster_id":1,"capability":"kv-repl"}`, 401, "needs a valid bearer token"},
		{"GET", "/cluster_sync?cluster_id=1&capability=kv-repl", bearer, "", 405, "cluster_sync takes POST"},
		{"POST", "/", bearer, `{"jsonrpc":"2.0","method":"cluster_sync","params":[1,"kv-repl",3]}`, 400, "cluster_sync takes at most 2 params"},
	} {
		code, body := f.do(t, tc.method, tc.path, tc.auth, tc.body)
		require.Equal(t, tc.code, code, "%s %s %s: %s", tc.method, tc.path, tc.body, body)
		require.Contains(t, body, tc.want, "%s %s %s", tc.method, tc.path, tc.body)
	}
	var e *admin.Error
	_, err := f.client.SyncStatus(context.Background(), 1, "nope")
	require.ErrorAs(t, err, &e)
	require.Equal(t, 404, e.Code)
	// The index lists the new commands.
	code, body := f.do(t, "GET", "/", "", "")
	require.Equal(t, 200, code)
	require.Contains(t, body, `"mi": "clusterer_set_cap_status"`)
	require.Contains(t, body, `"name": "cluster_sync"`)
}
