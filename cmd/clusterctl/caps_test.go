package main

import (
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/admin"
	"github.com/clusterer-go/clusterer/internal/kvtest"
)

const kvCap = "kv-repl"

// withCaps adds capabilities to the fixture's running nodes: dlg-repl on
// nodes 1, 2 and 3; kv-repl on node 2 (100 records) and on node 1, which
// syncs it from node 2. It returns node 1's store once that is done.
func withCaps(t *testing.T, f *fixture) *kvtest.Store {
	for _, id := range []int{2, 3, 1} {
		require.NoError(t, f.nodes[id].RegisterCapability(clusterer.CapabilityConfig{Name: "dlg-repl", Cluster: 1}, clusterer.HandlerFuncs{}))
	}
	require.NoError(t, kvtest.New(kvCap, 1, 100).Register(f.nodes[2], clusterer.CapabilityConfig{}))
	joiner := kvtest.New(kvCap, 1, 0)
	require.NoError(t, joiner.Register(f.nodes[1], clusterer.CapabilityConfig{RequireSync: true}))
	waitSynced(t, f)
	return joiner
}

func waitSynced(t *testing.T, f *fixture) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, err := f.nodes[1].SyncStatus(1, kvCap)
		kv, _ := f.nodes[1].SyncedNodes(1, kvCap)
		dlg, _ := f.nodes[1].SyncedNodes(1, "dlg-repl")
		return err == nil && st.Status == clusterer.Synced && len(kv) == 2 && len(dlg) == 3
	}, 10*time.Second, 10*time.Millisecond)
}

var timesRE = regexp.MustCompile(`(?m)^(started: +|elapsed: +)\S+$`)

func TestCapCommands(t *testing.T) {
	f := newFixture(t)
	joiner := withCaps(t, f)

	code, out, errOut := f.ctl("caps")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, `CLUSTER  CAPABILITY  STATE  SYNC_STATUS  DONOR  RECORDS  SYNCED_NODES
1        dlg-repl    Ok     synced       -      0        1,2,3
1        kv-repl     Ok     synced       -      100      1,2

CLUSTER  NODE  CAPABILITY  STATE  REACHABLE
1        2     dlg-repl    Ok     yes
1        2     kv-repl     Ok     yes
1        3     dlg-repl    Ok     yes
`, out)

	code, out, errOut = f.ctl("sync-status", "1", kvCap)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^started: +20\d\d-\d\d-\d\dT[\d:.]+Z$`, out)
	require.Regexp(t, `(?m)^elapsed: +\d+(\.\d+)?(ms|s|µs)$`, out)
	require.Equal(t, `cluster:      1
capability:   kv-repl
state:        Ok
enabled:      yes
sync status:  synced
donor:        -
records:      100
bytes:        790
buffered:     0
started:      T
elapsed:      T
last error:   -
synced nodes: 1,2 (this node is #0)
`, timesRE.ReplaceAllString(out, "${1}T"))
	require.EqualValues(t, 790, kvtest.New(kvCap, 1, 100).Bytes())

	// Disabled: not synced, and node 1 no longer counts itself in.
	code, out, errOut = f.ctl("set-cap-status", "1", kvCap, "0")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "OK\n", out)
	code, out, _ = f.ctl("caps")
	require.Equal(t, 0, code)
	require.Contains(t, out, "1        kv-repl     not synced  disabled     -      100      2\n")
	code, _, errOut = f.ctl("sync", "1", kvCap)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "clusterctl: admin: 409: clusterer: capability disabled")

	code, out, errOut = f.ctl("--json", "set-cap-status", "1", kvCap, "1")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "\"OK\"\n", out)
	waitSynced(t, f)

	// A re-sync pulls every record again.
	code, out, errOut = f.ctl("sync", "1", kvCap)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "OK\n", out)
	require.Eventually(t, func() bool { return joiner.SyncedRecords() == 200 }, 10*time.Second, 10*time.Millisecond)
	waitSynced(t, f)

	code, out, errOut = f.ctl("--json", "sync-status", "1", kvCap)
	require.Equal(t, 0, code, errOut)
	var st admin.SyncState
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	st.Started, st.ElapsedMs = "", 0
	require.Equal(t, admin.SyncState{ClusterID: 1, CapState: admin.CapState{Name: kvCap, State: "Ok", Enabled: "yes",
		SyncStatus: "synced", Records: 100, Bytes: 790, SyncedNodes: []int{1, 2}}}, st)

	code, out, errOut = f.ctl("--json", "caps")
	require.Equal(t, 0, code, errOut)
	var l admin.CapList
	require.NoError(t, json.Unmarshal([]byte(out), &l))
	require.Len(t, l.Clusters, 2)
	require.Equal(t, admin.ClusterCaps{ClusterID: 2, Capabilities: []admin.CapState{}, Nodes: []admin.NodeCaps{}}, l.Clusters[1])
	require.Len(t, l.Clusters[0].Capabilities, 2)
	require.Regexp(t, `"name": "dlg-repl",\s+"state": "Ok",\s+"enabled": "yes"`, out)

	code, out, errOut = f.ctl("--json", "sync", "1", kvCap)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "\"OK\"\n", out)
}

// Without capabilities the local table is only a header.
func TestCapsEmpty(t *testing.T) {
	f := newFixture(t)
	code, out, errOut := f.ctl("caps")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "CLUSTER  CAPABILITY  STATE  SYNC_STATUS  DONOR  RECORDS  SYNCED_NODES\n", out)
}

func TestCapErrors(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"caps", "1"}, 2, "caps takes no arguments"},
		{[]string{"set-cap-status", "1", kvCap}, 2, "set-cap-status CLUSTER CAP 0|1"},
		{[]string{"set-cap-status", "1", kvCap, "yes"}, 2, `status "yes" must be 0 or 1`},
		{[]string{"set-cap-status", "x", kvCap, "1"}, 2, `CLUSTER "x" is not a number`},
		{[]string{"sync", "1"}, 2, "sync CLUSTER CAP"},
		{[]string{"sync-status", "1", kvCap, "x"}, 2, "sync-status CLUSTER CAP"},
		{[]string{"sync-status", "1", "nope"}, 1, `admin: 404: clusterer: unknown capability: "nope" in cluster 1`},
		{[]string{"sync", "1", "nope"}, 1, "admin: 404: clusterer: unknown capability"},
		{[]string{"sync", "9", kvCap}, 1, "admin: 404: clusterer: unknown cluster: 9"},
		{[]string{"set-cap-status", "1", "nope", "0"}, 1, "admin: 404: clusterer: unknown capability"},
		{[]string{"--token", "", "sync", "1", kvCap}, 1, "admin: 401: cluster_sync needs a valid bearer token"},
	} {
		code, out, errOut := f.ctl(tc.args...)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, errOut)
		require.Empty(t, out, "%v", tc.args)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
	}
}
