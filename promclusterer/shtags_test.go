package promclusterer_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/promclusterer"
)

var shtagMetrics = []string{"clusterer_shtag_active", "clusterer_shtag_term", "clusterer_shtag_holder"}

// Node 2 takes vip, then node 1 takes it over: node 1's metrics follow.
func TestScrapeShTags(t *testing.T) {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	n1 := startNode(t, nw, 1, 2)
	n2 := startNode(t, nw, 2, 1)
	require.Eventually(t, func() bool { _, ok := n1.NextHop(1, 2); return ok }, 5*time.Second, 10*time.Millisecond)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(promclusterer.New(n1))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	url := srv.URL + "/metrics"

	scrape(t, url, "", shtagMetrics...) // no tags, no series

	ctx := context.Background()
	require.NoError(t, n2.ActivateShTag(ctx, "vip", 1))
	scrape(t, url, `
# HELP clusterer_shtag_active 1 while the sharing tag is active on the local node, 0 while backup.
# TYPE clusterer_shtag_active gauge
clusterer_shtag_active{cluster="1",tag="vip"} 0
# HELP clusterer_shtag_holder The node taken for the sharing tag's holder (the local node's id when active), 0 when unknown.
# TYPE clusterer_shtag_holder gauge
clusterer_shtag_holder{cluster="1",tag="vip"} 2
# HELP clusterer_shtag_term The sharing tag holder's term, which grows with every activation.
# TYPE clusterer_shtag_term gauge
clusterer_shtag_term{cluster="1",tag="vip"} 1
`, shtagMetrics...)

	require.NoError(t, n1.ActivateShTag(ctx, "vip", 1))
	require.NoError(t, n1.ActivateShTag(ctx, "gw", 1))
	scrape(t, url, `
# HELP clusterer_shtag_active 1 while the sharing tag is active on the local node, 0 while backup.
# TYPE clusterer_shtag_active gauge
clusterer_shtag_active{cluster="1",tag="gw"} 1
clusterer_shtag_active{cluster="1",tag="vip"} 1
# HELP clusterer_shtag_holder The node taken for the sharing tag's holder (the local node's id when active), 0 when unknown.
# TYPE clusterer_shtag_holder gauge
clusterer_shtag_holder{cluster="1",tag="gw"} 1
clusterer_shtag_holder{cluster="1",tag="vip"} 1
# HELP clusterer_shtag_term The sharing tag holder's term, which grows with every activation.
# TYPE clusterer_shtag_term gauge
clusterer_shtag_term{cluster="1",tag="gw"} 1
clusterer_shtag_term{cluster="1",tag="vip"} 2
`, shtagMetrics...)
	require.Eventually(t, func() bool {
		st, _ := n2.ShTag("vip", 1)
		return st == clusterer.ShTagBackup
	}, 5*time.Second, 10*time.Millisecond)

	problems, err := testutil.CollectAndLint(promclusterer.New(n1))
	require.NoError(t, err)
	require.Empty(t, problems)
}

// A cluster holds 1024 tags: the 1025th named is counted, not created.
func TestShTagsNotCreated(t *testing.T) {
	nw := clustertest.NewNetwork()
	defer nw.Close()
	c, err := clusterer.New(clusterer.Config{NodeID: 1, Transport: nw,
		Clusters: []clusterer.ClusterConfig{{ID: 1, Self: clusterer.NodeInfo{URL: "bin:127.0.0.1:5555"}}}})
	require.NoError(t, err)
	defer c.Close()
	for i := range 1025 { // before Start, each reference creates its tag at once
		_, err := c.ShTag(fmt.Sprintf("t%04d", i), 1)
		require.NoError(t, err)
	}
	require.NoError(t, c.Start(context.Background()))
	require.Len(t, c.ShTags(), 1024)
	col := promclusterer.New(c)
	require.Eventually(t, func() bool {
		return testutil.CollectAndCompare(col, strings.NewReader(`
# HELP clusterer_shtags_not_created_total Sharing tags not created, named by a packet or locally, because their cluster holds 1024.
# TYPE clusterer_shtags_not_created_total counter
clusterer_shtags_not_created_total 1
`), "clusterer_shtags_not_created_total") == nil
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(1), c.Stats().TooManyShTags)
	require.Equal(t, 1024, testutil.CollectAndCount(col, "clusterer_shtag_active"))
}
