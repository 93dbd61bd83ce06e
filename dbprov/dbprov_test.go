package dbprov_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/dbprov"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend is a database the tests run against.
type backend struct {
	name    string
	driver  string
	dialect dbprov.Dialect
	dsn     string // empty: skipped
	envVar  string
}

func backends(t *testing.T) []backend {
	return []backend{
		{name: "sqlite", driver: "sqlite", dialect: dbprov.SQLite,
			dsn: "file:" + filepath.Join(t.TempDir(), "clusterer.db") + "?_pragma=busy_timeout(5000)"},
		{name: "postgresql", driver: "pgx", dialect: dbprov.PostgreSQL,
			dsn: os.Getenv("CLUSTERER_TEST_POSTGRES_DSN"), envVar: "CLUSTERER_TEST_POSTGRES_DSN"},
		{name: "mysql", driver: "mysql", dialect: dbprov.MySQL,
			dsn: os.Getenv("CLUSTERER_TEST_MYSQL_DSN"), envVar: "CLUSTERER_TEST_MYSQL_DSN"},
	}
}

// table is a fresh clusterer table of its own in one backend.
type table struct {
	t    *testing.T
	db   *sql.DB
	opts dbprov.Options
}

// eachBackend runs fn against every backend, each with a new table.
func eachBackend(t *testing.T, fn func(t *testing.T, tb *table)) {
	for _, b := range backends(t) {
		eachBackendOne(t, b, fn)
	}
}

// eachBackendOne runs fn as a subtest against backend b with a new table.
func eachBackendOne(t *testing.T, b backend, fn func(t *testing.T, tb *table)) {
	t.Run(b.name, func(t *testing.T) {
		if b.dsn == "" {
			msg := fmt.Sprintf("%s is not set: no %s server to test against (.ci/run starts one; see .ci/dbservers)", b.envVar, b.name)
			if os.Getenv("CI") != "" {
				t.Fatal(msg) // CI must test every backend
			}
			t.Skip(msg)
		}
		db, err := sql.Open(b.driver, b.dsn)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, db.PingContext(ctx), "%s at %s", b.name, b.dsn)
		name := fmt.Sprintf("clusterer_t%d", rand.Uint32())
		tb := &table{t: t, db: db, opts: dbprov.Options{Table: name, VersionTable: name + "_version"}}
		require.NoError(t, dbprov.CreateTable(ctx, db, b.dialect, tb.opts))
		t.Cleanup(func() {
			tb.exec("DROP TABLE %s", name)
			tb.exec("DROP TABLE %s_version", name)
		})
		fn(t, tb)
	})
}

func (tb *table) exec(format string, args ...any) {
	tb.t.Helper()
	_, err := tb.db.Exec(strings.ReplaceAll(fmt.Sprintf(format, args...), "$T", tb.opts.Table))
	require.NoError(tb.t, err)
}

// insert adds a row, leaving unnamed columns to their defaults.
func (tb *table) insert(id, cluster, node int, url string, more ...string) {
	tb.t.Helper()
	cols, vals := "id, cluster_id, node_id, url", fmt.Sprintf("%d, %d, %d, '%s'", id, cluster, node, url)
	for _, kv := range more {
		k, v, _ := strings.Cut(kv, "=")
		cols += ", " + k
		vals += ", " + v
	}
	tb.exec("INSERT INTO $T (%s) VALUES (%s)", cols, vals)
}

func (tb *table) provisioner(node int) *dbprov.Provisioner {
	p, err := dbprov.New(tb.db, node, tb.opts)
	require.NoError(tb.t, err)
	return p
}

func TestLoadOpenSIPSTable(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb *table) {
		ctx := context.Background()
		tb.insert(10, 1, 1, "bin:127.0.0.1:5566", "description='Node A'")
		tb.insert(20, 1, 2, "bin:127.0.0.2:5566", "description='Node B'", "flags='seed'", "sip_addr='127.0.0.2:5060'")
		tb.insert(30, 1, 3, "bin:127.0.0.3", "state=0", "no_ping_retries=0", "priority=7")
		tb.insert(40, 2, 1, "bin:127.0.0.1:5566", "state=0")
		tb.insert(50, 2, 4, "bin:127.0.0.4:5566")
		tb.insert(60, 3, 2, "bin:127.0.0.2:5566") // a cluster node 1 is not in
		tb.insert(70, 4, 0, "bin:nowhere")        // nor here: not checked

		got, err := tb.provisioner(1).Clusters(ctx)
		require.NoError(t, err)
		require.Equal(t, []clusterer.ClusterConfig{
			{ID: 1,
				Self: clusterer.NodeInfo{ClusterID: 1, ID: 1, URL: "bin:127.0.0.1:5566", Priority: 50, PingRetries: 3, Description: "Node A", DBID: 10},
				Nodes: []clusterer.NodeInfo{
					{ClusterID: 1, ID: 2, URL: "bin:127.0.0.2:5566", SIPAddr: "127.0.0.2:5060", Priority: 50, PingRetries: 3, Seed: true, Description: "Node B", DBID: 20},
					{ClusterID: 1, ID: 3, URL: "bin:127.0.0.3", Priority: 7, PingRetries: clusterer.NoRetries, Disabled: true, DBID: 30},
				}},
			{ID: 2,
				Self:  clusterer.NodeInfo{ClusterID: 2, ID: 1, URL: "bin:127.0.0.1:5566", Priority: 50, PingRetries: 3, Disabled: true, DBID: 40},
				Nodes: []clusterer.NodeInfo{{ClusterID: 2, ID: 4, URL: "bin:127.0.0.4:5566", Priority: 50, PingRetries: 3, DBID: 50}}},
		}, got)

		cfg, err := tb.provisioner(1).Config(ctx, clusterer.Config{PingInterval: time.Second})
		require.NoError(t, err)
		require.True(t, cfg.Provisioned)
		require.Equal(t, 1, cfg.NodeID)
		require.Equal(t, time.Second, cfg.PingInterval)
		require.Len(t, cfg.Clusters, 2)
		_, err = clusterer.New(cfg)
		require.NoError(t, err, "a loaded configuration is valid")

		_, err = tb.provisioner(9).Clusters(ctx)
		require.ErrorIs(t, err, dbprov.ErrNoSelf)
	})
}

func TestBadRowsNameTheRow(t *testing.T) {
	cases := []struct {
		row  func(tb *table)
		want string
	}{
		{func(tb *table) { tb.insert(5, 1, 0, "bin:127.0.0.9") }, "row id=5 (cluster_id=1, node_id=0): node_id: 0 must be"},
		{func(tb *table) { tb.insert(5, 1, -3, "bin:127.0.0.9") }, "node_id: -3 must be"},
		{func(tb *table) { tb.insert(5, 1, 3, "bin:example.com:5555") }, "row id=5 (cluster_id=1, node_id=3): url: bad node URL"},
		{func(tb *table) { tb.insert(5, 1, 3, "") }, "url: bad node URL"},
		{func(tb *table) { tb.insert(5, 1, 3, "bin:127.0.0.3", "state=2") }, "state: 2 must be 0 (disabled) or 1"},
		{func(tb *table) { tb.insert(5, 1, 3, "bin:127.0.0.3", "flags='primary'") }, `flags: unknown flag "primary"`},
		{func(tb *table) { tb.insert(5, 1, 3, "bin:127.0.0.3", "priority=0") }, "priority: 0 is not supported"},
		{func(tb *table) { tb.insert(5, 1, 3, "bin:127.0.0.3", "no_ping_retries=-1") }, "no_ping_retries: -1 must be"},
		{func(tb *table) { tb.insert(5, 1, 3, "bin:127.0.0.3", "sip_addr=NULL", "priority=-2") }, ""}, // fine
	}
	eachBackend(t, func(t *testing.T, tb *table) {
		ctx := context.Background()
		for _, tc := range cases {
			tb.exec("DELETE FROM $T")
			tb.insert(1, 1, 1, "bin:127.0.0.1")
			tc.row(tb)
			_, err := tb.provisioner(1).Clusters(ctx)
			if tc.want == "" {
				require.NoError(t, err)
				continue
			}
			require.ErrorIs(t, err, dbprov.ErrRow)
			var re *dbprov.RowError
			require.True(t, errors.As(err, &re))
			require.Equal(t, int64(5), re.ID)
			require.Contains(t, err.Error(), tc.want)
		}
	})
}

func TestMissingTableAndVersion(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb *table) {
		ctx := context.Background()
		tb.insert(1, 1, 1, "bin:127.0.0.1")

		opts := tb.opts
		opts.Table = tb.opts.Table + "_missing"
		p, err := dbprov.New(tb.db, 1, opts)
		require.NoError(t, err)
		_, err = p.Clusters(ctx)
		require.ErrorIs(t, err, dbprov.ErrVersion, "no version row for the missing table")

		opts.SkipVersionCheck = true
		p, err = dbprov.New(tb.db, 1, opts)
		require.NoError(t, err)
		_, err = p.Clusters(ctx)
		require.ErrorIs(t, err, dbprov.ErrQuery)
		require.Contains(t, err.Error(), opts.Table)

		tb.exec("UPDATE %s SET table_version = 3", tb.opts.VersionTable)
		_, err = tb.provisioner(1).Clusters(ctx)
		require.ErrorIs(t, err, dbprov.ErrVersion)
		require.Contains(t, err.Error(), "version 3, want 4")
		opts = tb.opts
		opts.SkipVersionCheck = true
		p, err = dbprov.New(tb.db, 1, opts)
		require.NoError(t, err)
		_, err = p.Clusters(ctx)
		require.NoError(t, err)

		opts.VersionTable = tb.opts.Table + "_noversion"
		opts.SkipVersionCheck = false
		p, err = dbprov.New(tb.db, 1, opts)
		require.NoError(t, err)
		_, err = p.Clusters(ctx)
		require.ErrorIs(t, err, dbprov.ErrVersion)
	})
}

func TestOptionsRefuseInjection(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "x.db"))
	require.NoError(t, err)
	defer db.Close()
	for _, o := range []dbprov.Options{
		{Table: "clusterer; DROP TABLE version"},
		{Columns: dbprov.Columns{URL: "url--"}},
		{VersionTable: "v'x"},
		{Table: "a.b.c"},
	} {
		_, err := dbprov.New(db, 1, o)
		require.ErrorIs(t, err, dbprov.ErrOptions)
		require.ErrorIs(t, dbprov.CreateTable(context.Background(), db, dbprov.SQLite, o), dbprov.ErrOptions)
	}
	_, err = dbprov.New(db, 0, dbprov.Options{})
	require.ErrorIs(t, err, dbprov.ErrOptions)
	_, err = dbprov.New(nil, 1, dbprov.Options{})
	require.ErrorIs(t, err, dbprov.ErrOptions)
	_, err = dbprov.DialectOf("oracle")
	require.ErrorIs(t, err, dbprov.ErrOptions)
}

// Renamed columns, as OpenSIPS's *_col parameters allow.
func TestRenamedColumns(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "x.db"))
	require.NoError(t, err)
	defer db.Close()
	opts := dbprov.Options{Table: "nodes", SkipVersionCheck: true,
		Columns: dbprov.Columns{NodeID: "instance", URL: "bin_url"}}
	require.NoError(t, dbprov.CreateTable(context.Background(), db, dbprov.SQLite, opts))
	_, err = db.Exec(`INSERT INTO nodes (cluster_id, instance, bin_url) VALUES (1, 1, 'bin:127.0.0.1'), (1, 2, 'bin:127.0.0.2')`)
	require.NoError(t, err)
	p, err := dbprov.New(db, 2, opts)
	require.NoError(t, err)
	cc, err := p.Clusters(context.Background())
	require.NoError(t, err)
	require.Len(t, cc, 1)
	require.Equal(t, "bin:127.0.0.2", cc[0].Self.URL)
	require.Equal(t, 1, cc[0].Nodes[0].ID)
	require.Equal(t, 1, cc[0].Nodes[0].DBID)
}

// A table without the unique key can hold a node twice: refused, both
// rows named.
func TestDuplicateNode(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "x.db"))
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(`CREATE TABLE clusterer (id INTEGER, cluster_id INTEGER, node_id INTEGER, url TEXT, state INTEGER,
		no_ping_retries INTEGER, priority INTEGER, sip_addr TEXT, flags TEXT, description TEXT);
		INSERT INTO clusterer VALUES (1, 1, 1, 'bin:127.0.0.1', 1, 3, 50, NULL, NULL, NULL),
			(2, 1, 2, 'bin:127.0.0.2', 1, 3, 50, NULL, NULL, NULL),
			(3, 1, 2, 'bin:127.0.0.3', 1, 3, 50, NULL, NULL, NULL)`)
	require.NoError(t, err)
	p, err := dbprov.New(db, 1, dbprov.Options{SkipVersionCheck: true})
	require.NoError(t, err)
	_, err = p.Clusters(context.Background())
	require.ErrorIs(t, err, dbprov.ErrRow)
	require.Contains(t, err.Error(), "row id=3 (cluster_id=1, node_id=2): duplicates row id=2")

	_, err = db.Exec(`DELETE FROM clusterer WHERE id = 3; UPDATE clusterer SET state = NULL WHERE id = 2`)
	require.NoError(t, err)
	_, err = p.Clusters(context.Background())
	require.ErrorIs(t, err, dbprov.ErrRow)
	require.Contains(t, err.Error(), "row id=2 (cluster_id=1, node_id=2): state: is NULL")

	_, err = db.Exec(`UPDATE clusterer SET state = 'up' WHERE id = 2`)
	require.NoError(t, err)
	_, err = p.Clusters(context.Background())
	require.ErrorIs(t, err, dbprov.ErrRow)
	require.Contains(t, err.Error(), "row 2 of the result")
}

// Nodes provisioned from the table find each other, and Reload brings a
// node added to the table in, refuses a bad table without changing
// anything, and forgets a node deleted from it.
func TestReloadRunningNodes(t *testing.T) {
	eachBackend(t, func(t *testing.T, tb *table) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		nw := clustertest.NewNetwork()
		defer nw.Close()
		tb.insert(1, 1, 1, "bin:127.0.0.1:5555")
		tb.insert(2, 1, 2, "bin:127.0.0.2:5555")
		nodes := map[int]*clusterer.Cluster{}
		provs := map[int]*dbprov.Provisioner{}
		start := func(id int) {
			provs[id] = tb.provisioner(id)
			cfg, err := provs[id].Config(ctx, clusterer.Config{Transport: nw,
				PingInterval: 200 * time.Millisecond, PingTimeout: 100 * time.Millisecond, NodeTimeout: 300 * time.Millisecond})
			require.NoError(t, err)
			c, err := clusterer.New(cfg)
			require.NoError(t, err)
			require.NoError(t, c.Start(ctx))
			t.Cleanup(func() { c.Close() })
			nodes[id] = c
		}
		reachable := func(id int) []int {
			var out []int
			for _, n := range nodes[id].Nodes(1) {
				if n.Reachable {
					out = append(out, n.ID)
				}
			}
			return out
		}
		start(1)
		start(2)
		require.Eventually(t, func() bool { return len(reachable(1)) == 1 }, 10*time.Second, 10*time.Millisecond)

		tb.insert(3, 1, 3, "bin:127.0.0.3:5555", "description='added'")
		start(3)
		time.Sleep(500 * time.Millisecond)
		require.Equal(t, []int{2}, reachable(1), "3 is not in 1's table yet")
		require.Empty(t, reachable(3), "1 and 2 ignore 3")

		require.NoError(t, provs[1].Reload(ctx, nodes[1]))
		require.NoError(t, provs[2].Reload(ctx, nodes[2]))
		for _, id := range []int{1, 2, 3} {
			require.Eventually(t, func() bool { return len(reachable(id)) == 2 }, 10*time.Second, 10*time.Millisecond, "node %d", id)
		}
		n3, ok := nodes[1].Node(1, 3)
		require.True(t, ok)
		require.Equal(t, "added", n3.Description)
		require.Equal(t, 3, n3.DBID)

		// A bad row: nothing changes.
		tb.exec("UPDATE $T SET url = 'bin:nowhere' WHERE id = 3")
		err := provs[1].Reload(ctx, nodes[1])
		var re *dbprov.RowError
		require.ErrorAs(t, err, &re)
		require.Equal(t, int64(3), re.ID)
		n3, _ = nodes[1].Node(1, 3)
		require.Equal(t, "bin:127.0.0.3:5555", n3.URL)
		require.ErrorIs(t, provs[2].Reload(ctx, nodes[1]), dbprov.ErrOptions, "node 2's rows into node 1")

		// Node 2 leaves the table.
		tb.exec("UPDATE $T SET url = 'bin:127.0.0.3:5555' WHERE id = 3")
		tb.exec("DELETE FROM $T WHERE id = 2")
		require.NoError(t, provs[1].Reload(ctx, nodes[1]))
		_, ok = nodes[1].Node(1, 2)
		require.False(t, ok)
		require.Equal(t, []int{3}, reachable(1))
	})
}

// EnsureNode bootstraps a table from OpenSIPS-style node descriptions,
// once.
func TestEnsureNode(t *testing.T) {
	for _, b := range backends(t) {
		eachBackendOne(t, b, func(t *testing.T, tb *table) {
			ctx := context.Background()
			for _, s := range []string{
				"cluster_id=1, node_id=1, url=bin:127.0.0.1:5566, description=Node A",
				"cluster_id=1, node_id=2, url=bin:127.0.0.2:5566, sip_addr=127.0.0.2:5060, flags=seed, priority=7, no_ping_retries=0",
				"cluster_id=1, node_id=3, url=bin:127.0.0.3, state=0",
			} {
				n, err := clusterer.ParseNodeInfo(s)
				require.NoError(t, err)
				added, err := dbprov.EnsureNode(ctx, tb.db, b.dialect, tb.opts, n)
				require.NoError(t, err)
				require.True(t, added, s)
				added, err = dbprov.EnsureNode(ctx, tb.db, b.dialect, tb.opts, n)
				require.NoError(t, err)
				require.False(t, added, "already there: %s", s)
			}
			cc, err := tb.provisioner(1).Clusters(ctx)
			require.NoError(t, err)
			require.Len(t, cc, 1)
			require.Equal(t, "Node A", cc[0].Self.Description)
			require.Equal(t, 50, cc[0].Self.Priority)
			nodes := cc[0].Nodes
			for i := range nodes {
				require.Positive(t, nodes[i].DBID)
				nodes[i].DBID = 0
			}
			require.Equal(t, []clusterer.NodeInfo{
				{ClusterID: 1, ID: 2, URL: "bin:127.0.0.2:5566", SIPAddr: "127.0.0.2:5060", Seed: true, Priority: 7, PingRetries: clusterer.NoRetries},
				{ClusterID: 1, ID: 3, URL: "bin:127.0.0.3", Priority: 50, PingRetries: 3, Disabled: true},
			}, nodes)

			_, err = dbprov.EnsureNode(ctx, tb.db, b.dialect, tb.opts, clusterer.NodeInfo{ClusterID: 1, ID: 4, URL: "bin:host"})
			require.ErrorIs(t, err, dbprov.ErrRow)
		})
	}
}
