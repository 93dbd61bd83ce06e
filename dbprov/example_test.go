package dbprov_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/dbprov"
)

// A node provisioned from a local SQLite file, as OpenSIPS with
// db_mode=1: the rows of example 1.30 of the OpenSIPS manual.
func Example() {
	dir, _ := os.MkdirTemp("", "dbprov")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "clusterer.db"))
	if err != nil {
		panic(err)
	}
	defer db.Close()
	ctx := context.Background()
	if err := dbprov.CreateTable(ctx, db, dbprov.SQLite, dbprov.Options{}); err != nil {
		panic(err)
	}
	_, err = db.Exec(`INSERT INTO clusterer (id, cluster_id, node_id, url, description) VALUES
		(10, 1, 1, 'bin:192.168.0.5:5566', 'Node A'),
		(20, 1, 2, 'bin:192.168.0.6:5566', 'Node B')`)
	if err != nil {
		panic(err)
	}

	p, err := dbprov.New(db, 1, dbprov.Options{}) // my_node_id = 1
	if err != nil {
		panic(err)
	}
	cfg, err := p.Config(ctx, clusterer.Config{})
	if err != nil {
		panic(err)
	}
	for _, cc := range cfg.Clusters {
		fmt.Println("cluster", cc.ID, "self", cc.Self.URL)
		for _, n := range cc.Nodes {
			fmt.Println(" ", n)
		}
	}
	// The host then starts the node (clusterer.New(cfg), Start) and calls
	// p.Reload(ctx, node) whenever the table has changed.

	// Output:
	// cluster 1 self bin:192.168.0.5:5566
	//   cluster_id=1, node_id=2, url=bin:192.168.0.6:5566, priority=50, no_ping_retries=3, description=Node B
}
