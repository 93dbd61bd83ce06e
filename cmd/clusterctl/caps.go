package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// caps prints list_cap: the local capabilities, then what the other nodes
// announced.
func (c *cli) caps(ctx context.Context) error {
	l, err := c.c.ListCap(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(l)
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tCAPABILITY\tSTATE\tSYNC_STATUS\tDONOR\tRECORDS\tSYNCED_NODES")
	remote := false
	for _, cl := range l.Clusters {
		for _, cp := range cl.Capabilities {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", cl.ClusterID, cp.Name, cp.State, cp.SyncStatus,
				orDash(cp.Donor), cp.Records, joinInts(cp.SyncedNodes))
		}
		remote = remote || len(cl.Nodes) > 0
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !remote {
		return nil
	}
	fmt.Fprintln(c.out)
	tw = tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tNODE\tCAPABILITY\tSTATE\tREACHABLE")
	for _, cl := range l.Clusters {
		for _, n := range cl.Nodes {
			reach := "yes"
			if !n.Reachable {
				reach = "no"
			}
			for _, cp := range n.Capabilities {
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", cl.ClusterID, n.NodeID, cp.Name, cp.State, reach)
			}
		}
	}
	return tw.Flush()
}

// syncStatus prints sync_status as "field: value" lines.
func (c *cli) syncStatus(ctx context.Context, cluster int, capability string) error {
	st, err := c.c.SyncStatus(ctx, cluster, capability)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(st)
	}
	nodes := joinInts(st.SyncedNodes)
	if st.Index >= 0 {
		nodes += fmt.Sprintf(" (this node is #%d)", st.Index)
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 1, ' ', 0)
	for _, f := range [][2]string{
		{"cluster", strconv.Itoa(st.ClusterID)},
		{"capability", st.Name},
		{"state", st.State},
		{"enabled", st.Enabled},
		{"sync status", st.SyncStatus},
		{"donor", orDash(st.Donor)},
		{"records", strconv.FormatInt(st.Records, 10)},
		{"bytes", strconv.FormatInt(st.Bytes, 10)},
		{"buffered", strconv.Itoa(st.Buffered)},
		{"started", dash(st.Started)},
		{"elapsed", time.Duration(st.ElapsedMs * float64(time.Millisecond)).Round(time.Microsecond).String()},
		{"last error", dash(st.LastError)},
		{"synced nodes", nodes},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	return tw.Flush()
}

func orDash(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinInts(l []int) string {
	if len(l) == 0 {
		return "-"
	}
	s := make([]string, len(l))
	for i, n := range l {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
