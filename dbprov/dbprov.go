// Package dbprov provisions a clusterer node from a database, as OpenSIPS
// does with db_mode=1: the nodes of every cluster the local node belongs
// to are the rows of the clusterer table (OpenSIPS table version 4), and
// only they are accepted (Config.Provisioned). Reload re-reads the table
// into a running node, as the MI command clusterer_reload does.
//
// Any database/sql driver works; the host imports the one it wants. Three
// are tested against real servers: SQLite through modernc.org/sqlite
// (pure Go, so a single binary works with a local file), PostgreSQL
// through github.com/jackc/pgx/v5/stdlib and MySQL/MariaDB through
// github.com/go-sql-driver/mysql. CreateTable writes OpenSIPS's schema in
// each of their dialects.
//
// The table, as OpenSIPS defines it (column names are configurable, see
// Columns):
//
//	id               integer, primary key   shown as db_id by admin tools
//	cluster_id       integer, not null      > 0
//	node_id          integer, not null      > 0; unique with cluster_id
//	url              string, not null       bin:IP:PORT or bins:IP:PORT
//	state            integer, default 1     1 enabled, 0 disabled
//	no_ping_retries  integer, default 3     >= 0
//	priority         integer, default 50    routing tie-break, lower first; not 0 (read as "default")
//	sip_addr         string, null
//	flags            string, null           "seed" or empty
//	description      string, null
//
// The local node's own row in a cluster gives its URL, SIP address and
// state there (state 0: it starts disabled in that cluster); it must have
// one in each cluster it belongs to, and belongs to no other. A bad row
// (ids not positive, a bad URL, an unknown flag, a duplicate node) fails
// the whole load with a *RowError naming the row; nothing is applied.
package dbprov

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/internal/core"
)

// TableVersion is the clusterer table version this package reads, as
// OpenSIPS 3.x records it in its version table.
const TableVersion = 4

// Limits of OpenSIPS, checked on load.
const (
	MaxNodes    = 128 // per cluster, the local node included
	MaxClusters = 64  // per node
)

// Errors. Test them with errors.Is.
var (
	// ErrOptions: a bad table or column name, or a bad node id.
	ErrOptions = errors.New("dbprov: invalid options")
	// ErrQuery: the database could not be read (no such table, a column
	// missing, connection lost...); the error wraps the driver's.
	ErrQuery = errors.New("dbprov: query failed")
	// ErrVersion: the version table does not say the clusterer table is
	// version 4.
	ErrVersion = errors.New("dbprov: wrong table version")
	// ErrRow is wrapped by every *RowError.
	ErrRow = errors.New("dbprov: bad row")
	// ErrNoSelf: the local node has no row, so it belongs to no cluster.
	ErrNoSelf = errors.New("dbprov: no row for the local node")
)

// RowError is a row that cannot be used. It wraps ErrRow.
type RowError struct {
	ID      int64 // the row's id column
	Cluster int64
	Node    int64
	Column  string // the offending column, if one
	Reason  string
}

func (e *RowError) Error() string {
	col := ""
	if e.Column != "" {
		col = " " + e.Column + ":"
	}
	return fmt.Sprintf("dbprov: row id=%d (cluster_id=%d, node_id=%d):%s %s", e.ID, e.Cluster, e.Node, col, e.Reason)
}

// Unwrap makes errors.Is(err, ErrRow) true.
func (e *RowError) Unwrap() error { return ErrRow }

// Columns names the table's columns (OpenSIPS's *_col parameters). Empty
// fields take OpenSIPS's defaults, which are the field names in snake case.
type Columns struct {
	ID, ClusterID, NodeID, URL, State, NoPingRetries, Priority, SIPAddr, Flags, Description string
}

// Options tells where the nodes are. The zero value reads OpenSIPS's
// default table.
type Options struct {
	// Table is the clusterer table (OpenSIPS db_table), "clusterer" by
	// default. It may be schema-qualified ("opensips.clusterer").
	Table string
	// Columns renames columns.
	Columns Columns
	// VersionTable is where the table's version is checked, as OpenSIPS
	// does at startup: a row (table_name, table_version) = (Table, 4).
	// "version" by default.
	VersionTable string
	// SkipVersionCheck reads the table without looking for its version
	// (for a table created by hand, without OpenSIPS's version table).
	SkipVersionCheck bool
}

// Row is one row of the table, NULL strings read as "".
type Row struct {
	ID            int64
	ClusterID     int64
	NodeID        int64
	URL           string
	State         int64
	NoPingRetries int64
	Priority      int64
	SIPAddr       string
	Flags         string
	Description   string
}

// Provisioner reads one node's clusters from a database. It is safe for
// concurrent use.
type Provisioner struct {
	db     *sql.DB
	nodeID int
	opts   Options
	query  string
	verQ   string
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// resolved fills the defaults and checks every name; names are written
// into SQL as they are, so only plain identifiers are accepted.
func (o Options) resolved() (Options, error) {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.Table, "clusterer")
	def(&o.VersionTable, "version")
	c := &o.Columns
	def(&c.ID, "id")
	def(&c.ClusterID, "cluster_id")
	def(&c.NodeID, "node_id")
	def(&c.URL, "url")
	def(&c.State, "state")
	def(&c.NoPingRetries, "no_ping_retries")
	def(&c.Priority, "priority")
	def(&c.SIPAddr, "sip_addr")
	def(&c.Flags, "flags")
	def(&c.Description, "description")
	for _, n := range append([]string{o.Table, o.VersionTable}, c.list()...) {
		if !identRE.MatchString(n) {
			return o, fmt.Errorf("%w: %q is not a plain SQL identifier", ErrOptions, n)
		}
	}
	return o, nil
}

// bareTable is the table name without its schema, as the version table
// records it.
func (o Options) bareTable() string {
	_, name, ok := strings.Cut(o.Table, ".")
	if !ok {
		return o.Table
	}
	return name
}

func (c Columns) list() []string {
	return []string{c.ID, c.ClusterID, c.NodeID, c.URL, c.State, c.NoPingRetries, c.Priority, c.SIPAddr, c.Flags, c.Description}
}

// New prepares a Provisioner for the local node nodeID (OpenSIPS
// my_node_id). It does not touch the database.
func New(db *sql.DB, nodeID int, opts Options) (*Provisioner, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: nil database", ErrOptions)
	}
	if nodeID < 1 || nodeID > 1<<31-1 {
		return nil, fmt.Errorf("%w: node id %d must be between 1 and %d", ErrOptions, nodeID, 1<<31-1)
	}
	o, err := opts.resolved()
	if err != nil {
		return nil, err
	}
	p := &Provisioner{db: db, nodeID: nodeID, opts: o}
	// Every row is read and filtered here rather than with a WHERE: the
	// table is small, and no placeholder syntax (?, $1) is needed.
	p.query = fmt.Sprintf("SELECT %s FROM %s ORDER BY %s", strings.Join(o.Columns.list(), ", "), o.Table, o.Columns.ID)
	p.verQ = fmt.Sprintf("SELECT table_version FROM %s WHERE table_name = '%s'", o.VersionTable, o.bareTable())
	return p, nil
}

// NodeID is the local node's id.
func (p *Provisioner) NodeID() int { return p.nodeID }

// Rows reads the rows of the clusters the local node belongs to, checked,
// ordered by id.
func (p *Provisioner) Rows(ctx context.Context) ([]Row, error) {
	if !p.opts.SkipVersionCheck {
		if err := p.checkVersion(ctx); err != nil {
			return nil, err
		}
	}
	rs, err := p.db.QueryContext(ctx, p.query)
	if err != nil {
		return nil, fmt.Errorf("%w: table %s: %w", ErrQuery, p.opts.Table, err)
	}
	defer rs.Close()
	var all []Row
	for n := 1; rs.Next(); n++ {
		r, err := scanRow(rs, n, p.opts.Columns)
		if err != nil {
			return nil, err
		}
		all = append(all, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("%w: table %s: %w", ErrQuery, p.opts.Table, err)
	}
	return p.filter(all)
}

func (p *Provisioner) checkVersion(ctx context.Context) error {
	var v sql.NullInt64
	err := p.db.QueryRowContext(ctx, p.verQ).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: %s has no row for table %s (want version %d; or set SkipVersionCheck)", ErrVersion, p.opts.VersionTable, p.opts.Table, TableVersion)
	case err != nil:
		return fmt.Errorf("%w: reading %s: %w (or set SkipVersionCheck)", ErrVersion, p.opts.VersionTable, err)
	case !v.Valid || v.Int64 != TableVersion:
		return fmt.Errorf("%w: %s says table %s is version %v, want %d", ErrVersion, p.opts.VersionTable, p.opts.Table, nullInt(v), TableVersion)
	}
	return nil
}

func nullInt(v sql.NullInt64) any {
	if !v.Valid {
		return "NULL"
	}
	return v.Int64
}

// scanRow reads the n-th row of the result.
func scanRow(rs *sql.Rows, n int, c Columns) (Row, error) {
	var (
		id, cluster, node, state, retries, prio sql.NullInt64
		url, sip, flags, desc                   sql.NullString
	)
	if err := rs.Scan(&id, &cluster, &node, &url, &state, &retries, &prio, &sip, &flags, &desc); err != nil {
		return Row{}, fmt.Errorf("%w: row %d of the result: %v", ErrRow, n, err)
	}
	r := Row{ID: id.Int64, ClusterID: cluster.Int64, NodeID: node.Int64, URL: url.String, State: state.Int64,
		NoPingRetries: retries.Int64, Priority: prio.Int64, SIPAddr: sip.String, Flags: flags.String, Description: desc.String}
	if !id.Valid {
		return r, fmt.Errorf("%w: row %d of the result: %s is NULL", ErrRow, n, c.ID)
	}
	for _, f := range []struct {
		col   string
		valid bool
	}{{c.ClusterID, cluster.Valid}, {c.NodeID, node.Valid}, {c.URL, url.Valid}, {c.State, state.Valid},
		{c.NoPingRetries, retries.Valid}, {c.Priority, prio.Valid}} {
		if !f.valid {
			return r, r.errf(f.col, "is NULL")
		}
	}
	return r, nil
}

func (r Row) errf(col, format string, args ...any) *RowError {
	return &RowError{ID: r.ID, Cluster: r.ClusterID, Node: r.NodeID, Column: col, Reason: fmt.Sprintf(format, args...)}
}

// filter keeps the rows of the local node's clusters and checks them.
func (p *Provisioner) filter(all []Row) ([]Row, error) {
	mine := map[int64]bool{}
	for _, r := range all {
		if r.NodeID == int64(p.nodeID) {
			mine[r.ClusterID] = true
		}
	}
	if len(mine) == 0 {
		return nil, fmt.Errorf("%w: node_id %d has no row in %s", ErrNoSelf, p.nodeID, p.opts.Table)
	}
	if len(mine) > MaxClusters {
		return nil, fmt.Errorf("%w: node_id %d is in %d clusters (at most %d)", ErrRow, p.nodeID, len(mine), MaxClusters)
	}
	var out []Row
	seen := map[[2]int64]int64{}
	count := map[int64]int{}
	for _, r := range all {
		if !mine[r.ClusterID] {
			continue
		}
		if err := p.check(r); err != nil {
			return nil, err
		}
		k := [2]int64{r.ClusterID, r.NodeID}
		if other, dup := seen[k]; dup {
			return nil, r.errf("", "duplicates row id=%d", other)
		}
		seen[k] = r.ID
		if count[r.ClusterID]++; count[r.ClusterID] > MaxNodes {
			return nil, r.errf("", "cluster %d has more than %d nodes", r.ClusterID, MaxNodes)
		}
		out = append(out, r)
	}
	return out, nil
}

func (p *Provisioner) check(r Row) error {
	c := p.opts.Columns
	const maxID = 1<<31 - 1
	switch {
	case r.ClusterID < 1 || r.ClusterID > maxID:
		return r.errf(c.ClusterID, "%d must be between 1 and %d", r.ClusterID, maxID)
	case r.NodeID < 1 || r.NodeID > maxID:
		return r.errf(c.NodeID, "%d must be between 1 and %d", r.NodeID, maxID)
	case r.State != 0 && r.State != 1:
		return r.errf(c.State, "%d must be 0 (disabled) or 1 (enabled)", r.State)
	case r.NoPingRetries < 0 || r.NoPingRetries > maxID:
		return r.errf(c.NoPingRetries, "%d must be between 0 and %d", r.NoPingRetries, maxID)
	case r.Priority == 0:
		// The library reads 0 as "the default"; OpenSIPS's own default
		// in the table is 50.
		return r.errf(c.Priority, "0 is not supported (0 means the default); use 1 or more")
	case r.Priority < -maxID-1 || r.Priority > maxID:
		return r.errf(c.Priority, "%d out of range", r.Priority)
	}
	if _, err := core.ParseURL(r.URL); err != nil {
		return r.errf(c.URL, "%v", err)
	}
	if _, err := parseFlags(r.Flags); err != nil {
		return r.errf(c.Flags, "%v", err)
	}
	return nil
}

// parseFlags reads the flags column: empty, or "seed" (OpenSIPS knows no
// other flag).
func parseFlags(s string) (seed bool, err error) {
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '|' || r == ' ' }) {
		if !strings.EqualFold(f, "seed") {
			return false, fmt.Errorf("unknown flag %q (only \"seed\" is defined)", f)
		}
		seed = true
	}
	return seed, nil
}

// Clusters reads the table into the local node's cluster configurations,
// ordered by cluster id, their nodes by node id.
func (p *Provisioner) Clusters(ctx context.Context) ([]clusterer.ClusterConfig, error) {
	rows, err := p.Rows(ctx)
	if err != nil {
		return nil, err
	}
	return clusters(p.nodeID, rows), nil
}

// clusters groups checked rows into configurations.
func clusters(nodeID int, rows []Row) []clusterer.ClusterConfig {
	byID := map[int64]*clusterer.ClusterConfig{}
	var ids []int64
	for _, r := range rows {
		cc := byID[r.ClusterID]
		if cc == nil {
			cc = &clusterer.ClusterConfig{ID: int(r.ClusterID)}
			byID[r.ClusterID] = cc
			ids = append(ids, r.ClusterID)
		}
		seed, _ := parseFlags(r.Flags) // checked
		n := clusterer.NodeInfo{ClusterID: int(r.ClusterID), ID: int(r.NodeID), URL: r.URL, SIPAddr: r.SIPAddr,
			Priority: int(r.Priority), PingRetries: int(r.NoPingRetries), Seed: seed, Disabled: r.State == 0,
			Description: r.Description, DBID: int(r.ID)}
		if n.PingRetries == 0 {
			n.PingRetries = clusterer.NoRetries
		}
		if r.NodeID == int64(nodeID) {
			cc.Self = n
		} else {
			cc.Nodes = append(cc.Nodes, n)
		}
	}
	slices.Sort(ids)
	out := make([]clusterer.ClusterConfig, 0, len(ids))
	for _, id := range ids {
		cc := byID[id]
		slices.SortFunc(cc.Nodes, func(a, b clusterer.NodeInfo) int { return a.ID - b.ID })
		out = append(out, *cc)
	}
	return out
}

// Config reads the table into base: NodeID and Clusters are set, and
// Provisioned, so that only the table's nodes are accepted. Everything
// else of base (timers, TLS, transport, logger) is kept.
func (p *Provisioner) Config(ctx context.Context, base clusterer.Config) (clusterer.Config, error) {
	cc, err := p.Clusters(ctx)
	if err != nil {
		return base, err
	}
	base.NodeID = p.nodeID
	base.Clusters = cc
	base.Provisioned = true
	return base, nil
}

// Reload re-reads the table into a running node (OpenSIPS
// clusterer_reload); see clusterer.Cluster.Reprovision for what changes.
// A bad table changes nothing.
func (p *Provisioner) Reload(ctx context.Context, c *clusterer.Cluster) error {
	if c.MyID() != p.nodeID {
		return fmt.Errorf("%w: the provisioner reads node %d, the cluster is node %d", ErrOptions, p.nodeID, c.MyID())
	}
	cc, err := p.Clusters(ctx)
	if err != nil {
		return err
	}
	return c.Reprovision(ctx, cc)
}
