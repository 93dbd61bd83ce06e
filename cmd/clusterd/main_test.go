package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/clusterer-go/clusterer/admin"
	"github.com/clusterer-go/clusterer/dbprov"
	"github.com/clusterer-go/clusterer/internal/testcert"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is an io.Writer safe for the daemon and the test together.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a TCP port free on ip just now.
func freePort(t *testing.T, ip string) int {
	ln, err := net.Listen("tcp", ip+":0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// daemon is one clusterd running in-process.
type daemon struct {
	cancel context.CancelFunc
	done   chan error
	out    *syncBuffer
	errOut *syncBuffer
	hup    chan os.Signal
	admin  string // base URL of the admin API
}

var adminRE = regexp.MustCompile(`admin API on (http://\S+/admin)`)

func start(t *testing.T, args ...string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan error, 1), out: &syncBuffer{}, errOut: &syncBuffer{}, hup: make(chan os.Signal, 1)}
	env := map[string]string{"CLUSTERD_ADMIN_TOKEN": "t0ken"}
	go func() { d.done <- run(ctx, args, d.out, d.errOut, func(k string) string { return env[k] }, d.hup) }()
	t.Cleanup(func() { d.stop(t) })
	require.Eventually(t, func() bool {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("clusterd exited: %v\n%s", err, d.errOut)
		default:
		}
		m := adminRE.FindStringSubmatch(d.out.String())
		if m != nil {
			d.admin = m[1]
		}
		return m != nil
	}, 10*time.Second, 10*time.Millisecond)
	return d
}

// stop cancels the daemon and waits for a clean exit.
func (d *daemon) stop(t *testing.T) {
	d.cancel()
	select {
	case err := <-d.done:
		require.NoError(t, err)
		d.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("clusterd did not stop within 10 s")
	}
}

// newDB makes an SQLite clusterer table with the given rows.
func newDB(t *testing.T, rows ...string) string {
	path := filepath.Join(t.TempDir(), "clusterer.db")
	db, err := sql.Open("sqlite", "file:"+path)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, dbprov.CreateTable(context.Background(), db, dbprov.SQLite, dbprov.Options{}))
	for _, r := range rows {
		_, err := db.Exec("INSERT INTO clusterer (id, cluster_id, node_id, url, description) VALUES " + r)
		require.NoError(t, err)
	}
	return path
}

func execDB(t *testing.T, path, stmt string) {
	db, err := sql.Open("sqlite", "file:"+path)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(stmt)
	require.NoError(t, err)
}

func get(t *testing.T, url string) string {
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode, string(b))
	return string(b)
}

// Two daemons provisioned from one SQLite file find each other on
// loopback; the admin API, the metrics, a reload (API and SIGHUP) and a
// clean shutdown work.
func TestTwoDaemons(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	p1, p2, p3 := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	db := newDB(t,
		fmt.Sprintf("(10, 1, 1, 'bin:127.0.0.1:%d', 'Node A')", p1),
		fmt.Sprintf("(20, 1, 2, 'bin:127.0.0.2:%d', 'Node B')", p2))
	common := []string{"-db", db, "-admin-addr", "127.0.0.1:0", "-ping-interval", "200ms", "-ping-timeout", "100ms", "-node-timeout", "300ms"}
	cfgFile := filepath.Join(t.TempDir(), "clusterd.json")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`{"node-id": 1, "log-level": "debug"}`), 0o600))
	d1 := start(t, append([]string{"-config", cfgFile}, common...)...)
	d2 := start(t, append([]string{"-node-id", "2", "-log-level", "warn"}, common...)...)

	c1 := &admin.Client{BaseURL: d1.admin, Token: "t0ken"}
	ctx := context.Background()
	require.Eventually(t, func() bool {
		l, err := c1.List(ctx)
		return err == nil && len(l.Clusters) == 1 && len(l.Clusters[0].Nodes) == 1 && l.Clusters[0].Nodes[0].LinkState == "Up"
	}, 10*time.Second, 20*time.Millisecond)
	l, err := c1.List(ctx)
	require.NoError(t, err)
	require.Equal(t, 20, l.Clusters[0].Nodes[0].DBID)
	require.Equal(t, "Node B", l.Clusters[0].Nodes[0].Description)

	metrics := get(t, strings.TrimSuffix(d1.admin, "/admin")+"/metrics")
	require.Contains(t, metrics, `clusterer_link_state{cluster="1",node="2",state="up"} 1`)
	require.Contains(t, metrics, "go_goroutines")

	// Node 3 joins the table; node 1 reloads through the API, node 2 on SIGHUP.
	execDB(t, db, fmt.Sprintf("INSERT INTO clusterer (id, cluster_id, node_id, url) VALUES (30, 1, 3, 'bin:127.0.0.3:%d')", p3))
	require.NoError(t, c1.Reload(ctx))
	d2.hup <- syscall.SIGHUP
	c2 := &admin.Client{BaseURL: d2.admin}
	require.Eventually(t, func() bool {
		l, err := c2.List(ctx)
		return err == nil && len(l.Clusters[0].Nodes) == 2
	}, 10*time.Second, 20*time.Millisecond)
	d3 := start(t, append([]string{"-node-id", "3"}, common...)...)
	for _, d := range []*daemon{d1, d2, d3} {
		c := &admin.Client{BaseURL: d.admin}
		require.Eventually(t, func() bool {
			top, err := c.Topology(ctx)
			return err == nil && len(top.Clusters[0].Nodes) == 3 && len(top.Clusters[0].Nodes[0].Neighbours) == 2 &&
				len(top.Clusters[0].Nodes[1].Neighbours) == 2 && len(top.Clusters[0].Nodes[2].Neighbours) == 2
		}, 10*time.Second, 20*time.Millisecond, d.admin)
	}

	// A bad row: the reload fails and says which row.
	execDB(t, db, "UPDATE clusterer SET url = 'bin:somewhere' WHERE id = 30")
	var e *admin.Error
	require.ErrorAs(t, c1.Reload(ctx), &e)
	require.Contains(t, e.Message, "row id=30")

	d3.stop(t)
	d2.stop(t)
	d1.stop(t)
	require.Contains(t, d1.errOut.String(), `"msg":"shutting down"`)
	require.Contains(t, d1.errOut.String(), `"level":"debug"`, "log level from the config file")
	require.NotContains(t, d2.errOut.String(), `"level":"info"`)
}

func TestStartupErrors(t *testing.T) {
	db := newDB(t, "(10, 1, 1, 'bin:127.0.0.1:5555', 'Node A')")
	bad := filepath.Join(t.TempDir(), "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"node-id": 1, "colour": "red"}`), 0o600))
	tlsDB := newDB(t, "(10, 1, 1, 'bins:127.0.0.1:5555', 'Node A')")
	for _, tc := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{}, true, "-node-id is required"},
		{[]string{"-node-id", "1", "extra"}, true, `unexpected argument "extra"`},
		{[]string{"-node-id", "x"}, true, "invalid value"},
		{[]string{"-node-id", "1", "-db-driver", "oracle"}, true, "no known SQL dialect"},
		{[]string{"-node-id", "1", "-log-level", "loud"}, true, "-log-level"},
		{[]string{"-config", bad}, false, `unknown key "colour"`},
		{[]string{"-config", "/nonexistent.json"}, false, "no such file"},
		{[]string{"-node-id", "7", "-db", db}, false, "no row for the local node"},
		{[]string{"-node-id", "1", "-db", filepath.Join(t.TempDir(), "empty.db")}, false, "wrong table version"},
		{[]string{"-node-id", "1", "-db", db, "-admin-addr", "256.0.0.1:1"}, false, "admin API"},
		{[]string{"-node-id", "1", "-tls-cert", "c.pem"}, true, "-tls-cert and -tls-key go together"},
		{[]string{"-node-id", "1", "-tls-ca", "ca.pem"}, true, "need -tls-cert and -tls-key"},
		{[]string{"-node-id", "1", "-tls-cert", "c.pem", "-tls-key", "k.pem", "-tls-client-auth"}, true, "needs -tls-ca"},
		{[]string{"-node-id", "1", "-db", db, "-tls-cert", "/nonexistent.pem", "-tls-key", "/nonexistent.key"}, false, "-tls-cert/-tls-key"},
		{[]string{"-node-id", "1", "-db", tlsDB}, false, "TLS"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut, func(string) string { return "" }, nil)
		require.Error(t, err, "%v", tc.args)
		require.Equal(t, tc.usage, errors.Is(err, errUsage), "%v: %v", tc.args, err)
		require.Contains(t, err.Error(), tc.want, "%v", tc.args)
	}
}

// Two daemons with bins: URLs link up over mutual TLS with certificates
// from PEM files; a third whose certificate another CA signed is refused.
func TestTLSDaemons(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	p1, p2, p3 := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	db := newDB(t,
		fmt.Sprintf("(10, 1, 1, 'bins:127.0.0.1:%d', 'Node A')", p1),
		fmt.Sprintf("(20, 1, 2, 'bins:127.0.0.2:%d', 'Node B')", p2),
		fmt.Sprintf("(30, 1, 3, 'bins:127.0.0.3:%d', 'Node C')", p3))
	ca := testcert.NewCA(t, "cluster CA")
	tlsArgs := func(ca *testcert.CA, ip string) []string {
		caFile, cert, key := ca.WriteFiles(t, t.TempDir(), ip)
		return []string{"-tls-cert", cert, "-tls-key", key, "-tls-ca", caFile, "-tls-client-auth"}
	}
	common := []string{"-db", db, "-admin-addr", "127.0.0.1:0", "-ping-interval", "200ms", "-ping-timeout", "100ms", "-node-timeout", "300ms"}
	d1 := start(t, append(append([]string{"-node-id", "1"}, common...), tlsArgs(ca, "127.0.0.1")...)...)
	d2 := start(t, append(append([]string{"-node-id", "2"}, common...), tlsArgs(ca, "127.0.0.2")...)...)
	d3 := start(t, append(append([]string{"-node-id", "3"}, common...), tlsArgs(testcert.NewCA(t, "rogue CA"), "127.0.0.3")...)...)

	ctx := context.Background()
	c1 := &admin.Client{BaseURL: d1.admin}
	linkState := func(l admin.NodeList, id int) string {
		for _, n := range l.Clusters[0].Nodes {
			if n.NodeID == id {
				return n.LinkState
			}
		}
		return ""
	}
	require.Eventually(t, func() bool {
		l, err := c1.List(ctx)
		return err == nil && linkState(l, 2) == "Up"
	}, 10*time.Second, 20*time.Millisecond)
	// Node 3 gets nowhere: 1 and 2 refuse its certificate, it refuses
	// theirs. Wait until it has failed a handshake with each.
	require.Eventually(t, func() bool {
		log := d3.errOut.String()
		return strings.Contains(log, fmt.Sprintf("TLS handshake with 127.0.0.1:%d: tls: failed to verify certificate", p1)) &&
			strings.Contains(log, fmt.Sprintf("TLS handshake with 127.0.0.2:%d: tls: failed to verify certificate", p2))
	}, 10*time.Second, 20*time.Millisecond, "node 3: %s", d3.errOut)
	l, err := c1.List(ctx)
	require.NoError(t, err)
	require.NotEqual(t, "Up", linkState(l, 3))
	d3.stop(t)
	d2.stop(t)
	d1.stop(t)
}

// -db-init and -db-add-node bootstrap a database from nothing, once.
func TestBootstrapDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	port := freePort(t, "127.0.0.1")
	cfgFile := filepath.Join(t.TempDir(), "c.json")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(`{"node-id": 1, "db": %q, "db-init": true, "admin-addr": "127.0.0.1:0",
		"db-add-node": ["cluster_id=1, node_id=1, url=bin:127.0.0.1:%d", "cluster_id=1, node_id=2, url=bin:127.0.0.2:5555, description=B"]}`, path, port)), 0o600))
	for range 2 { // the second start finds the rows there
		d := start(t, "-config", cfgFile)
		l, err := (&admin.Client{BaseURL: d.admin}).List(context.Background())
		require.NoError(t, err)
		require.Len(t, l.Clusters[0].Nodes, 1)
		require.Equal(t, "B", l.Clusters[0].Nodes[0].Description)
		d.stop(t)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-config", cfgFile, "-db-add-node", "cluster_id=1, node_id=3, url=bin:nowhere"},
		&out, &errOut, func(string) string { return "" }, nil)
	require.ErrorIs(t, err, dbprov.ErrRow)
	require.Contains(t, err.Error(), "-db-add-node cluster_id=1, node_id=3")
	err = run(context.Background(), []string{"-node-id", "1", "-db-add-node", "node_id=3"}, &out, &errOut, func(string) string { return "" }, nil)
	require.ErrorIs(t, err, errUsage)
}

// -db-init creates the tables of an empty database; the node then needs
// its row.
func TestInitEmptyDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-node-id", "1", "-db", path, "-db-init", "-admin-addr", ""}, &out, &errOut,
		func(string) string { return "" }, nil)
	require.ErrorIs(t, err, dbprov.ErrNoSelf)
	execDB(t, path, fmt.Sprintf("INSERT INTO clusterer (cluster_id, node_id, url) VALUES (1, 1, 'bin:127.0.0.1:%d')", freePort(t, "127.0.0.1")))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-node-id", "1", "-db", path, "-admin-addr", ""}, &out, &errOut,
			func(string) string { return "" }, nil)
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.Contains(t, out.String(), "clusterd: node 1 up\n")
}
