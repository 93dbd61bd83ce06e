package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/admin"
)

func TestShTagCommands(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	code, out, errOut := f.ctl("shtags")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "CLUSTER  TAG  STATE  HOLDER  TERM  LAST_CHANGE\n", out, "no tags yet")

	// Node 2 takes vip; node 1 learns the tag and its holder.
	require.NoError(t, f.nodes[2].ActivateShTag(ctx, "vip", 1))
	require.Eventually(t, func() bool {
		l := f.nodes[1].ShTags()
		return len(l) == 1 && l[0].Owner == 2
	}, 10*time.Second, 10*time.Millisecond)
	code, out, errOut = f.ctl("shtags")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, `CLUSTER  TAG  STATE   HOLDER  TERM  LAST_CHANGE
1        vip  backup  2       1     -
`, out)

	// The syntax: node 1 takes it over.
	code, out, errOut = f.ctl("shtag", "set-active", "vip/1")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "OK\n", out)
	require.Eventually(t, func() bool {
		st, _ := f.nodes[2].ShTag("vip", 1)
		return st == clusterer.ShTagBackup
	}, 10*time.Second, 10*time.Millisecond, "node 2 steps down")
	require.Eventually(t, func() bool {
		_, out, _ = f.ctl("shtags")
		return out == `CLUSTER  TAG  STATE   HOLDER  TERM  LAST_CHANGE
1        vip  active  1       2     activated (node 2)
`
	}, 10*time.Second, 10*time.Millisecond, "%s", out)

	// The other spelling, and --json; a tag of cluster 2 whose only other
	// node is down.
	code, out, errOut = f.ctl("--json", "shtag-set-active", "gw/2")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "\"OK\"\n", out)
	require.Eventually(t, func() bool {
		_, out, _ = f.ctl("--json", "shtags")
		var l []admin.ShTag
		return json.Unmarshal([]byte(out), &l) == nil && len(l) == 2 && l[1].LastReason == "activated"
	}, 10*time.Second, 10*time.Millisecond, "%s", out)
	require.Equal(t, `[
  {
    "Tag": "vip",
    "Cluster": 1,
    "State": "active",
    "holder": 1,
    "term": 2,
    "last_reason": "activated",
    "last_node": 2
  },
  {
    "Tag": "gw",
    "Cluster": 2,
    "State": "active",
    "holder": 1,
    "term": 1,
    "last_reason": "activated",
    "last_node": 0
  }
]
`, out)
	code, out, errOut = f.ctl("shtags")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, `CLUSTER  TAG  STATE   HOLDER  TERM  LAST_CHANGE
1        vip  active  1       2     activated (node 2)
2        gw   active  1       1     activated
`, out)
}

func TestShTagErrors(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"shtags", "1"}, 2, "shtags takes no arguments"},
		{[]string{"shtag"}, 2, "shtag set-active NAME/CLUSTER"},
		{[]string{"shtag", "activate", "vip/1"}, 2, "shtag set-active NAME/CLUSTER"},
		{[]string{"shtag", "set-active"}, 2, "shtag set-active NAME/CLUSTER"},
		{[]string{"shtag-set-active"}, 2, "shtag-set-active NAME/CLUSTER"},
		{[]string{"shtag", "set-active", "vip"}, 1, `admin: 400: clusterer: invalid sharing tag: "vip": no '/' (want name/cluster_id)`},
		{[]string{"shtag-set-active", "vip/x"}, 1, "admin: 400: clusterer: invalid sharing tag"},
		{[]string{"shtag", "set-active", "vip/9"}, 1, "admin: 404: clusterer: unknown cluster: 9"},
		{[]string{"--token", "", "shtag", "set-active", "vip/1"}, 1, "admin: 401: shtag_set_active needs a valid bearer token"},
	} {
		code, out, errOut := f.ctl(tc.args...)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, errOut)
		require.Empty(t, out, "%v", tc.args)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
	}
	require.Empty(t, f.nodes[1].ShTags(), "nothing was created")
}
