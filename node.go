package clusterer

import (
	"fmt"
	"strconv"
	"strings"
)

// NodeInfo describes a node as provisioned: OpenSIPS's my_node_info and
// neighbor_node_info parameters, or a row of its clusterer table.
type NodeInfo struct {
	ClusterID int
	ID        int
	// URL is the node's BIN address, "bin:IP:PORT" ("bins:" for TLS; a
	// missing port means 5555). Host names are not accepted: receivers
	// check source addresses against it.
	URL string
	// SIPAddr is the node's SIP address, used by CheckAddr and by
	// capabilities that pick donors by SIP address. Optional.
	SIPAddr string
	// Priority breaks routing ties; lower is preferred. 0 means OpenSIPS's
	// default for script-provisioned nodes (3).
	Priority int
	// PingRetries is how many probes follow a failed one before the link
	// is declared DOWN. 0 means the default (3); use NoRetries for none.
	PingRetries int
	// Seed marks a node that may declare its data synced on its own when
	// no donor appears (OpenSIPS flags=seed).
	Seed bool
	// Disabled starts the node disabled (OpenSIPS state=0).
	Disabled bool
	// Description is free text about the node (OpenSIPS description),
	// shown by admin tools; it never goes on the wire.
	Description string
	// DBID is the node's row id in a clusterer table (OpenSIPS db_id); 0
	// for a node not provisioned from a database.
	DBID int
}

// NoRetries as NodeInfo.PingRetries means a single failed probe declares
// the link DOWN.
const NoRetries = -1

// ParseNodeInfo parses OpenSIPS's node description syntax:
//
//	cluster_id=1, node_id=2, url=bin:10.0.0.2:5555, sip_addr=10.0.0.2:5060, flags=seed, priority=3, no_ping_retries=3
//
// cluster_id, node_id and url are required. Errors name the field.
func ParseNodeInfo(s string) (NodeInfo, error) {
	var n NodeInfo
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return n, fmt.Errorf("%w: node info %q: %q is not key=value", ErrConfig, s, part)
		}
		k, v = strings.TrimSpace(strings.ToLower(k)), strings.TrimSpace(v)
		if seen[k] {
			return n, fmt.Errorf("%w: node info %q: %s given twice", ErrConfig, s, k)
		}
		seen[k] = true
		num := func() (int, error) {
			x, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("%w: node info %q: %s=%q is not a number", ErrConfig, s, k, v)
			}
			return x, nil
		}
		var err error
		switch k {
		case "cluster_id":
			n.ClusterID, err = num()
		case "node_id":
			n.ID, err = num()
		case "url":
			n.URL = v
		case "sip_addr":
			n.SIPAddr = v
		case "priority":
			n.Priority, err = num()
		case "no_ping_retries":
			n.PingRetries, err = num()
			if err == nil && n.PingRetries == 0 {
				n.PingRetries = NoRetries
			}
		case "flags":
			for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == '|' || r == ' ' }) {
				if !strings.EqualFold(f, "seed") {
					return n, fmt.Errorf("%w: node info %q: unknown flag %q", ErrConfig, s, f)
				}
				n.Seed = true
			}
		case "state":
			var st int
			st, err = num()
			n.Disabled = err == nil && st == 0
		case "description":
			n.Description = v
		default:
			return n, fmt.Errorf("%w: node info %q: unknown field %q", ErrConfig, s, k)
		}
		if err != nil {
			return n, err
		}
	}
	for _, k := range []string{"cluster_id", "node_id", "url"} {
		if !seen[k] {
			return n, fmt.Errorf("%w: node info %q: %s is required", ErrConfig, s, k)
		}
	}
	return n, nil
}

// String renders the node in ParseNodeInfo's syntax.
func (n NodeInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster_id=%d, node_id=%d, url=%s", n.ClusterID, n.ID, n.URL)
	if n.SIPAddr != "" {
		fmt.Fprintf(&b, ", sip_addr=%s", n.SIPAddr)
	}
	if n.Seed {
		b.WriteString(", flags=seed")
	}
	if n.Priority != 0 {
		fmt.Fprintf(&b, ", priority=%d", n.Priority)
	}
	switch {
	case n.PingRetries == NoRetries:
		b.WriteString(", no_ping_retries=0")
	case n.PingRetries != 0:
		fmt.Fprintf(&b, ", no_ping_retries=%d", n.PingRetries)
	}
	if n.Description != "" {
		fmt.Fprintf(&b, ", description=%s", n.Description)
	}
	return b.String()
}
