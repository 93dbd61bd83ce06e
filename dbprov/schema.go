package dbprov

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/clusterer-go/clusterer"
)

// Dialect is a database's SQL flavour, for CreateTable.
type Dialect int

// Dialects.
const (
	SQLite Dialect = iota + 1
	PostgreSQL
	MySQL // and MariaDB
)

func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case PostgreSQL:
		return "postgresql"
	case MySQL:
		return "mysql"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// DialectOf tells the dialect from a database/sql driver name: "sqlite"
// (modernc.org/sqlite) or "sqlite3", "pgx" or "postgres", "mysql".
func DialectOf(driver string) (Dialect, error) {
	switch strings.ToLower(driver) {
	case "sqlite", "sqlite3":
		return SQLite, nil
	case "pgx", "postgres", "postgresql":
		return PostgreSQL, nil
	case "mysql", "mariadb":
		return MySQL, nil
	}
	return 0, fmt.Errorf("%w: no known SQL dialect for driver %q", ErrOptions, driver)
}

// CreateTable creates the clusterer table with OpenSIPS's schema (version
// 4: the same columns, types, defaults and unique (cluster_id, node_id)
// key) and the version table, unless they exist, and records the table's
// version as OpenSIPS's own creation scripts do.
func CreateTable(ctx context.Context, db *sql.DB, d Dialect, opts Options) error {
	o, err := opts.resolved()
	if err != nil {
		return err
	}
	c := o.Columns
	var serial, str, integer, tail string
	switch d {
	case SQLite:
		serial, str, integer = "INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL", "CHAR(64)", "INTEGER"
	case PostgreSQL:
		serial, str, integer = "SERIAL PRIMARY KEY NOT NULL", "VARCHAR(64)", "INTEGER"
	case MySQL:
		serial, str, integer, tail = "INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL", "CHAR(64)", "INT(10)", " ENGINE=InnoDB"
	default:
		return fmt.Errorf("%w: dialect %v", ErrOptions, d)
	}
	state := integer
	if d == MySQL {
		state = "INT(1)"
	}
	name := o.bareTable()
	stmts := []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    %s %s,
    %s %s NOT NULL,
    %s %s NOT NULL,
    %s %s NOT NULL,
    %s %s DEFAULT 1 NOT NULL,
    %s %s DEFAULT 3 NOT NULL,
    %s %s DEFAULT 50 NOT NULL,
    %s %s DEFAULT NULL,
    %s %s DEFAULT NULL,
    %s %s DEFAULT NULL,
    CONSTRAINT %s_idx UNIQUE (%s, %s)
)%s`, o.Table, c.ID, serial, c.ClusterID, integer, c.NodeID, integer, c.URL, str, c.State, state,
			c.NoPingRetries, integer, c.Priority, integer, c.SIPAddr, str, c.Flags, str, c.Description, str,
			name, c.ClusterID, c.NodeID, tail),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    table_name %s NOT NULL,
    table_version %s DEFAULT 0 NOT NULL,
    CONSTRAINT %s_t_name_idx UNIQUE (table_name)
)%s`, o.VersionTable, strings.Replace(str, "64", "32", 1), integer, strings.ReplaceAll(o.VersionTable, ".", "_"), tail),
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%w: creating tables: %w", ErrQuery, err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrQuery, err)
	}
	defer tx.Rollback()
	for _, s := range []string{
		fmt.Sprintf("DELETE FROM %s WHERE table_name = '%s'", o.VersionTable, name),
		fmt.Sprintf("INSERT INTO %s (table_name, table_version) VALUES ('%s', %d)", o.VersionTable, name, TableVersion),
	} {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%w: recording the table version: %w", ErrQuery, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: recording the table version: %w", ErrQuery, err)
	}
	return nil
}

// placeholders returns the dialect's n parameter markers.
func (d Dialect) placeholders(n int) []string {
	out := make([]string, n)
	for i := range out {
		if d == PostgreSQL {
			out[i] = fmt.Sprintf("$%d", i+1)
		} else {
			out[i] = "?"
		}
	}
	return out
}

// EnsureNode adds a row for n unless the table has one for its cluster
// and node already, and reports whether it added it; for bootstrapping a
// table from OpenSIPS-style node descriptions (clusterer.ParseNodeInfo).
// Zero Priority and PingRetries leave the table's defaults (50 and 3);
// NoRetries writes 0. The row's id comes from the database.
func EnsureNode(ctx context.Context, db *sql.DB, d Dialect, opts Options, n clusterer.NodeInfo) (bool, error) {
	o, err := opts.resolved()
	if err != nil {
		return false, err
	}
	if d != SQLite && d != PostgreSQL && d != MySQL {
		return false, fmt.Errorf("%w: dialect %v", ErrOptions, d)
	}
	c := o.Columns
	r := Row{ClusterID: int64(n.ClusterID), NodeID: int64(n.ID), URL: n.URL, State: 1, NoPingRetries: 3,
		Priority: int64(n.Priority), SIPAddr: n.SIPAddr, Description: n.Description}
	if n.Disabled {
		r.State = 0
	}
	switch {
	case n.PingRetries == clusterer.NoRetries:
		r.NoPingRetries = 0
	case n.PingRetries != 0:
		r.NoPingRetries = int64(n.PingRetries)
	}
	if n.Seed {
		r.Flags = "seed"
	}
	if r.Priority == 0 {
		r.Priority = 50
	}
	if err := (&Provisioner{opts: o}).check(r); err != nil {
		return false, err
	}
	ph := d.placeholders(9)
	var count int
	q := fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE %s = %s AND %s = %s", o.Table, c.ClusterID, ph[0], c.NodeID, ph[1])
	if err := db.QueryRowContext(ctx, q, r.ClusterID, r.NodeID).Scan(&count); err != nil {
		return false, fmt.Errorf("%w: table %s: %w", ErrQuery, o.Table, err)
	}
	if count > 0 {
		return false, nil
	}
	null := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	q = fmt.Sprintf("INSERT INTO %s (%s, %s, %s, %s, %s, %s, %s, %s, %s) VALUES (%s)", o.Table,
		c.ClusterID, c.NodeID, c.URL, c.State, c.NoPingRetries, c.Priority, c.SIPAddr, c.Flags, c.Description,
		strings.Join(ph, ", "))
	if _, err := db.ExecContext(ctx, q, r.ClusterID, r.NodeID, r.URL, r.State, r.NoPingRetries, r.Priority,
		null(r.SIPAddr), null(r.Flags), null(r.Description)); err != nil {
		return false, fmt.Errorf("%w: adding node %d to cluster %d: %w", ErrQuery, n.ID, n.ClusterID, err)
	}
	return true, nil
}
