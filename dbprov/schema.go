package dbprov

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
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
