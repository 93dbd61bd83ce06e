package core

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/clusterer-go/clusterer/internal/route"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// OpenSIPS defaults (clusterer module parameters).
const (
	DefaultPingInterval = 4 * time.Second
	DefaultPingTimeout  = 1000 * time.Millisecond
	DefaultNodeTimeout  = 60 * time.Second
	DefaultPingRetries  = 3
	// DefaultPriority is OpenSIPS's default for script-provisioned nodes
	// (the database default is 50).
	DefaultPriority = 3
	// DefaultBINPort is used for URLs without a port.
	DefaultBINPort = 5555
)

// Config configures a Machine. Zero durations take OpenSIPS's defaults.
type Config struct {
	NodeID       int32
	PingInterval time.Duration
	PingTimeout  time.Duration
	NodeTimeout  time.Duration
	// Discovery learns unknown nodes from the network (OpenSIPS db_mode=0).
	// Without it only provisioned nodes are accepted.
	Discovery bool
	// RouteMode picks next hops; see package route.
	RouteMode route.Mode
	// NoRerouting uses direct links only (OpenSIPS enable_rerouting=0).
	NoRerouting bool
	// OpenSIPSFlooding floods topology updates exactly as OpenSIPS does:
	// every link change at once, to every UP neighbour not on the path.
	// By default (false) the machine floods less; see flood and
	// announceLink. The messages are the same either way.
	OpenSIPSFlooding bool
	// SyncTimeout abandons a sync that receives nothing for this long;
	// SeedFallback is how long a seed waits for a donor. Zero: OpenSIPS's
	// defaults.
	SyncTimeout, SeedFallback time.Duration
	Clusters                  []ClusterConfig
}

// ClusterConfig is one cluster the local node belongs to.
type ClusterConfig struct {
	ID int32
	// Self describes the local node in this cluster; Self.ID is ignored
	// (the machine's NodeID is used).
	Self NodeInfo
	// Nodes are the provisioned other nodes (neighbours to start probing).
	Nodes []NodeInfo
	// Capabilities the local node holds in this cluster and whether each is
	// synced; announced in CAP_UPDATE.
	Capabilities []wire.CapState
	// ShTags are the configured sharing tags.
	ShTags []ShTagConfig
}

// NodeInfo describes a node.
type NodeInfo struct {
	ID          int32
	URL         string // "bin:IP:PORT" (or "bins:")
	SIPAddr     string
	Priority    int32
	PingRetries int32
	Seed        bool
	Disabled    bool
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("core: invalid configuration")

func (c *Config) withDefaults() Config {
	out := *c
	if out.PingInterval <= 0 {
		out.PingInterval = DefaultPingInterval
	}
	if out.PingTimeout <= 0 {
		out.PingTimeout = DefaultPingTimeout
	}
	if out.NodeTimeout <= 0 {
		out.NodeTimeout = DefaultNodeTimeout
	}
	if out.SyncTimeout <= 0 {
		out.SyncTimeout = DefaultSyncTimeout
	}
	if out.SeedFallback <= 0 {
		out.SeedFallback = DefaultSeedFallback
	}
	return out
}

func (c *Config) validate() error {
	if c.NodeID < 1 {
		return fmt.Errorf("%w: NodeID %d must be >= 1", ErrConfig, c.NodeID)
	}
	if len(c.Clusters) == 0 {
		return fmt.Errorf("%w: no clusters", ErrConfig)
	}
	seen := map[int32]bool{}
	for i, cl := range c.Clusters {
		if cl.ID < 1 {
			return fmt.Errorf("%w: Clusters[%d].ID %d must be >= 1", ErrConfig, i, cl.ID)
		}
		if seen[cl.ID] {
			return fmt.Errorf("%w: cluster %d configured twice", ErrConfig, cl.ID)
		}
		seen[cl.ID] = true
		if _, err := ParseURL(cl.Self.URL); err != nil {
			return fmt.Errorf("%w: cluster %d: own URL: %v", ErrConfig, cl.ID, err)
		}
		if err := checkShTagConfig(cl); err != nil {
			return err
		}
		if len(cl.Nodes)+1 > wire.MaxNodes {
			return fmt.Errorf("%w: cluster %d has %d nodes (max %d)", ErrConfig, cl.ID, len(cl.Nodes)+1, wire.MaxNodes)
		}
		ids := map[int32]bool{c.NodeID: true}
		for j, n := range cl.Nodes {
			if n.ID < 1 {
				return fmt.Errorf("%w: cluster %d node[%d]: id %d must be >= 1", ErrConfig, cl.ID, j, n.ID)
			}
			if ids[n.ID] {
				return fmt.Errorf("%w: cluster %d: node id %d is duplicated or is the local node", ErrConfig, cl.ID, n.ID)
			}
			ids[n.ID] = true
			if _, err := ParseURL(n.URL); err != nil {
				return fmt.Errorf("%w: cluster %d node %d: %v", ErrConfig, cl.ID, n.ID, err)
			}
		}
	}
	return nil
}

// URL is a parsed node URL.
type URL struct {
	TLS  bool // "bins:"
	Addr netip.AddrPort
}

// String renders the URL as OpenSIPS writes it.
func (u URL) String() string {
	s := "bin:"
	if u.TLS {
		s = "bins:"
	}
	return s + u.Addr.String()
}

// ErrBadURL is wrapped by URL parsing errors.
var ErrBadURL = errors.New("bad node URL")

// ParseURL parses "bin:IP:PORT", "bins:IP:PORT", "IP:PORT" or "IP" (port
// 5555). IPv6 addresses are bracketed: "bin:[::1]:5555". Host names are not
// accepted: the source-address check needs IPs.
func ParseURL(s string) (URL, error) {
	var u URL
	rest := s
	switch {
	case strings.HasPrefix(rest, "bins:"):
		u.TLS = true
		rest = rest[len("bins:"):]
	case strings.HasPrefix(rest, "bin:"):
		rest = rest[len("bin:"):]
	}
	if rest == "" {
		return u, fmt.Errorf("%w %q: empty", ErrBadURL, s)
	}
	if ap, err := netip.ParseAddrPort(rest); err == nil {
		if ap.Port() == 0 {
			return u, fmt.Errorf("%w %q: port 0", ErrBadURL, s)
		}
		u.Addr = ap
		return u, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")
	if ip, err := netip.ParseAddr(host); err == nil {
		u.Addr = netip.AddrPortFrom(ip, DefaultBINPort)
		return u, nil
	}
	if i := strings.LastIndexByte(rest, ':'); i > 0 {
		if _, err := strconv.Atoi(rest[i+1:]); err == nil {
			return u, fmt.Errorf("%w %q: host must be an IP address", ErrBadURL, s)
		}
	}
	return u, fmt.Errorf("%w %q: want bin:IP:PORT", ErrBadURL, s)
}
