// Command clusterd runs a clusterer node on its own: provisioned from the
// clusterer table of a database (a local SQLite file by default,
// PostgreSQL or MySQL/MariaDB too), serving the admin API (package admin,
// for clusterctl) under /admin/ and Prometheus metrics under /metrics.
//
//	clusterd -node-id 1 -db /var/lib/clusterd/clusterer.db -admin-token-file /etc/clusterd/token
//
// A new node's table can be bootstrapped from the command line:
//
//	clusterd -node-id 1 -db clusterer.db -db-init \
//		-db-add-node "cluster_id=1, node_id=1, url=bin:10.0.0.1:5555" \
//		-db-add-node "cluster_id=1, node_id=2, url=bin:10.0.0.2:5555"
//
// (-db-add-node adds a row only if the table has none for that node).
//
// Nodes with bins: URLs (BIN over TLS, OpenSIPS proto_bins) need
// -tls-cert and -tls-key, and usually -tls-ca (the CA that signs the
// nodes' certificates, which name their IPs); -tls-client-auth makes it
// mutual TLS.
//
// Every flag may also come from a JSON file given with -config, whose keys
// are the flag names ({"node-id": 1, "db": "clusterer.db", "db-add-node":
// ["cluster_id=1, node_id=1, url=bin:10.0.0.1:5555"]}); flags on the
// command line win. SIGHUP re-reads the table (as clusterctl reload does);
// SIGINT and SIGTERM stop the node cleanly.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	_ "modernc.org/sqlite"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/admin"
	"github.com/clusterer-go/clusterer/dbprov"
	"github.com/clusterer-go/clusterer/promclusterer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv, hup); err != nil {
		fmt.Fprintf(os.Stderr, "clusterd: %v\n", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// config is the daemon's configuration, from flags and the config file.
type config struct {
	nodeID                     int
	driver, dsn                string
	table, versionTable        string
	skipVersion, initDB        bool
	adminAddr, token           string
	tokenFile                  string
	listen                     string
	pingInterval, pingTimeout  time.Duration
	nodeTimeout                time.Duration
	logLevel                   string
	routeOpenSIPS, noRerouting bool
	addNodes                   []clusterer.NodeInfo
	tlsCert, tlsKey, tlsCA     string
	tlsServerName              string
	tlsClientAuth              bool
}

func parseConfig(args []string, getenv func(string) string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("clusterd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configFile := fs.String("config", "", "JSON file with flag values (keys are flag names)")
	fs.IntVar(&c.nodeID, "node-id", 0, "the local node's id (OpenSIPS my_node_id); required")
	fs.StringVar(&c.driver, "db-driver", "sqlite", "database driver: sqlite, pgx (PostgreSQL) or mysql")
	fs.StringVar(&c.dsn, "db", "clusterer.db", "database: an SQLite file, or the driver's DSN")
	fs.StringVar(&c.table, "db-table", "clusterer", "the clusterer table (OpenSIPS db_table)")
	fs.StringVar(&c.versionTable, "db-version-table", "version", "the table holding table versions")
	fs.BoolVar(&c.skipVersion, "db-skip-version-check", false, "do not check the table version")
	fs.BoolVar(&c.initDB, "db-init", false, "create the tables if they do not exist")
	fs.Func("db-add-node", "add a row unless the table has the node, in OpenSIPS's syntax\n"+
		"(\"cluster_id=1, node_id=2, url=bin:IP:PORT, ...\"); repeatable", func(s string) error {
		n, err := clusterer.ParseNodeInfo(s)
		if err == nil {
			c.addNodes = append(c.addNodes, n)
		}
		return err
	})
	fs.StringVar(&c.adminAddr, "admin-addr", "127.0.0.1:8080", "address of the admin API and metrics (empty: none)")
	fs.StringVar(&c.token, "admin-token", getenv("CLUSTERD_ADMIN_TOKEN"), "bearer token for mutating admin commands (or $CLUSTERD_ADMIN_TOKEN)")
	fs.StringVar(&c.tokenFile, "admin-token-file", "", "file holding the admin token")
	fs.StringVar(&c.listen, "listen", "", "BIN listen address (default: the node's URL)")
	fs.DurationVar(&c.pingInterval, "ping-interval", 0, "keep-alive ping interval (default 4s)")
	fs.DurationVar(&c.pingTimeout, "ping-timeout", 0, "ping timeout (default 1s)")
	fs.DurationVar(&c.nodeTimeout, "node-timeout", 0, "re-probe period of DOWN nodes (default 60s)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.routeOpenSIPS, "route-opensips", false, "choose next hops exactly as OpenSIPS does")
	fs.BoolVar(&c.noRerouting, "no-rerouting", false, "never relay (OpenSIPS enable_rerouting=0)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate (chain) of this node, for bins: URLs (OpenSIPS proto_bins)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of -tls-cert")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM bundle of the CAs that sign the other nodes' certificates (default: the system's)")
	fs.StringVar(&c.tlsServerName, "tls-server-name", "", "name to verify in the other nodes' certificates (default: their IP)")
	fs.BoolVar(&c.tlsClientAuth, "tls-client-auth", false, "mutual TLS: require nodes dialling us to present a certificate signed by -tls-ca")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *configFile != "" {
		if err := applyFile(fs, *configFile); err != nil {
			return nil, err
		}
	}
	if c.nodeID < 1 {
		return nil, fmt.Errorf("%w: -node-id is required (>= 1)", errUsage)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, fmt.Errorf("%w: -tls-cert and -tls-key go together", errUsage)
	}
	if c.tlsClientAuth && c.tlsCA == "" {
		return nil, fmt.Errorf("%w: -tls-client-auth needs -tls-ca", errUsage)
	}
	if c.tlsCert == "" && (c.tlsCA != "" || c.tlsServerName != "" || c.tlsClientAuth) {
		return nil, fmt.Errorf("%w: the -tls-* flags need -tls-cert and -tls-key", errUsage)
	}
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
	}
	return &c, nil
}

// applyFile sets, from a JSON object, the flags not given on the command
// line.
func applyFile(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var vals map[string]any
	if err := json.Unmarshal(b, &vals); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for k, v := range vals {
		if k == "config" || fs.Lookup(k) == nil {
			return fmt.Errorf("config %s: unknown key %q (keys are flag names)", path, k)
		}
		if given[k] {
			continue
		}
		if list, ok := v.([]any); ok { // a repeatable flag
			for _, x := range list {
				if err := fs.Set(k, fmt.Sprint(x)); err != nil {
					return fmt.Errorf("config %s: %s: %w", path, k, err)
				}
			}
			continue
		}
		s := fmt.Sprint(v)
		if f, ok := v.(float64); ok {
			s = fmt.Sprintf("%.0f", f)
		}
		if err := fs.Set(k, s); err != nil {
			return fmt.Errorf("config %s: %s: %w", path, k, err)
		}
	}
	return nil
}

func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("%w: -log-level: %v", errUsage, err)
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
}

// tlsConfig builds the TLS configuration of the -tls-* flags, or nil
// without them (then a bins: URL in the table is a provisioning error).
func tlsConfig(c *config) (*tls.Config, error) {
	if c.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ServerName: c.tlsServerName, MinVersion: tls.VersionTLS12}
	if c.tlsCA != "" {
		pem, err := os.ReadFile(c.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-tls-ca: no PEM certificate in %s", c.tlsCA)
		}
		cfg.RootCAs, cfg.ClientCAs = pool, pool
	}
	if c.tlsClientAuth {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func openDB(c *config) (*sql.DB, dbprov.Dialect, error) {
	d, err := dbprov.DialectOf(c.driver)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: -db-driver: %v", errUsage, err)
	}
	dsn := c.dsn
	if d == dbprov.SQLite && !strings.HasPrefix(dsn, "file:") {
		dsn = "file:" + dsn + "?_pragma=busy_timeout(5000)"
	}
	db, err := sql.Open(c.driver, dsn)
	if err != nil {
		return nil, 0, fmt.Errorf("database: %w", err)
	}
	return db, d, nil
}

// run is the daemon: it returns when ctx ends (nil) or on a startup error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, hup <-chan os.Signal) error {
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.logLevel, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	tlsCfg, err := tlsConfig(cfg)
	if err != nil {
		return err
	}
	db, dialect, err := openDB(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	opts := dbprov.Options{Table: cfg.table, VersionTable: cfg.versionTable, SkipVersionCheck: cfg.skipVersion}
	if cfg.initDB {
		if err := dbprov.CreateTable(ctx, db, dialect, opts); err != nil {
			return err
		}
	}
	for _, n := range cfg.addNodes {
		if _, err := dbprov.EnsureNode(ctx, db, dialect, opts, n); err != nil {
			return fmt.Errorf("-db-add-node %s: %w", n, err)
		}
	}
	prov, err := dbprov.New(db, cfg.nodeID, opts)
	if err != nil {
		return err
	}
	base := clusterer.Config{ListenAddr: cfg.listen, PingInterval: cfg.pingInterval, PingTimeout: cfg.pingTimeout,
		NodeTimeout: cfg.nodeTimeout, DisableRerouting: cfg.noRerouting, Logger: log, TLS: tlsCfg}
	if cfg.routeOpenSIPS {
		base.Routing = clusterer.RouteOpenSIPS
	}
	ccfg, err := prov.Config(ctx, base)
	if err != nil {
		return fmt.Errorf("provisioning node %d from %s: %w", cfg.nodeID, cfg.table, err)
	}
	node, err := clusterer.New(ccfg)
	if err != nil {
		return err
	}
	defer node.Close()
	reload := func(ctx context.Context) error {
		err := prov.Reload(ctx, node)
		if err != nil {
			log.Warn("reload failed", zap.Error(err))
		} else {
			log.Info("reloaded the provisioned nodes")
		}
		return err
	}
	// Made before Start, so that it sees the configured sharing tags'
	// first states.
	adminHandler := admin.New(node, admin.Options{Token: cfg.token, Reload: reload})
	if err := node.Start(ctx); err != nil {
		return err
	}

	var srv *http.Server
	srvDone := make(chan error, 1)
	if cfg.adminAddr != "" {
		ln, err := net.Listen("tcp", cfg.adminAddr)
		if err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(promclusterer.New(node), collectors.NewGoCollector())
		mux := http.NewServeMux()
		mux.Handle("/admin/", http.StripPrefix("/admin", adminHandler))
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { srvDone <- srv.Serve(ln) }()
		if cfg.token == "" {
			log.Warn("no admin token: mutating admin commands are refused")
		}
		fmt.Fprintf(stdout, "clusterd: node %d up; admin API on http://%s/admin, metrics on http://%s/metrics\n", cfg.nodeID, ln.Addr(), ln.Addr())
	} else {
		fmt.Fprintf(stdout, "clusterd: node %d up\n", cfg.nodeID)
	}

wait:
	for {
		select {
		case <-hup:
			_ = reload(ctx)
		case err := <-srvDone:
			return fmt.Errorf("admin API: %w", err)
		case <-ctx.Done():
			break wait
		}
	}
	log.Info("shutting down")
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
	}
	return node.Close()
}
