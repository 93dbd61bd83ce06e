package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

// shtags prints list_shtags: one line per tag, by cluster and name.
func (c *cli) shtags(ctx context.Context) error {
	l, err := c.c.ListShTags(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(l)
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tTAG\tSTATE\tHOLDER\tTERM\tLAST_CHANGE")
	for _, t := range l {
		last := dash(t.LastReason)
		if t.LastNode != 0 {
			last += fmt.Sprintf(" (node %d)", t.LastNode)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", t.Cluster, t.Tag, t.State, orDash(t.Holder), t.Term, last)
	}
	return tw.Flush()
}

// shtag runs "shtag set-active NAME/CLUSTER".
func (c *cli) shtag(ctx context.Context, args []string) error {
	if len(args) != 2 || args[0] != "set-active" {
		return usagef("shtag set-active NAME/CLUSTER")
	}
	return c.shtagSetActive(ctx, args[1])
}

func (c *cli) shtagSetActive(ctx context.Context, tag string) error {
	return c.ok(c.c.ShTagSetActive(ctx, tag))
}
