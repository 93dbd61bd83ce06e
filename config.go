package clusterer

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/route"
)

// DefaultSyncPacketMaxSize is OpenSIPS's sync_packet_max_size.
const DefaultSyncPacketMaxSize = 32768

// Config configures a Cluster. The zero value of every field means
// OpenSIPS's default; only NodeID and Clusters are required.
type Config struct {
	// NodeID is the local node's id (OpenSIPS my_node_id), >= 1.
	NodeID int
	// Clusters the local node belongs to.
	Clusters []ClusterConfig

	// PingInterval: an UP link is probed after this long without traffic
	// (default 4 s).
	PingInterval time.Duration
	// PingTimeout: a probe not answered within it has failed; retries are
	// this far apart (default 1 s).
	PingTimeout time.Duration
	// NodeTimeout: a DOWN link is probed again this often (default 60 s).
	NodeTimeout time.Duration

	// Provisioned accepts only the configured nodes, as OpenSIPS does with
	// a database (db_mode=1). By default unknown nodes are learned from
	// the network, as with script provisioning (db_mode=0).
	Provisioned bool
	// Routing selects next hops. The default, RouteShortest, takes the
	// fewest hops (ties: lower priority, then lower node id) over links
	// both ends report UP; RouteOpenSIPS reproduces OpenSIPS's choices.
	Routing RouteMode
	// DisableRerouting sends only over direct links (OpenSIPS
	// enable_rerouting=0).
	DisableRerouting bool
	// OpenSIPSFlooding floods topology updates as OpenSIPS does. By
	// default the node sends the same messages, fewer of them: links that
	// come UP while a refresh of its links is due (within a ping timeout)
	// are announced together, and a FULL_TOP_UPDATE is flooded on only
	// when it teaches the receiver a node or a route (a refresh, which
	// repairs missed updates, always is). A 100-node full mesh then joins
	// with about a million messages instead of about a hundred million.
	OpenSIPSFlooding bool

	// Transport carries the BIN connections; nil means TCP. Tests use an
	// in-memory network (package clustertest).
	Transport Transport
	// ListenAddr overrides the address the BIN listener binds to (for
	// example "0.0.0.0:5555" behind NAT); by default the host and port of
	// the first cluster's URL.
	ListenAddr string
	// QueueBytes bounds the bytes queued for one peer (default 4 MiB);
	// a send beyond it fails.
	QueueBytes int
	// WriteTimeout bounds each write to a peer (default 1 s); expiry
	// breaks the link.
	WriteTimeout time.Duration
	// TLS carries BIN over TLS for bins: URLs (OpenSIPS proto_bins). It is
	// used for the listener when the local node's URL (the first
	// cluster's Self.URL) is bins:, and for dialling every node whose URL
	// is bins:; bin: nodes are dialled in plaintext, so one cluster may
	// mix both. The listener needs Certificates (or GetCertificate); the
	// dialling side verifies with RootCAs, against ServerName or else the
	// node's IP, unless the host sets InsecureSkipVerify. Setting
	// ClientAuth and ClientCAs makes it mutual TLS. A bins: URL in the
	// configuration with a nil TLS is a configuration error; a bins: node
	// learned from the network then cannot be dialled.
	TLS *tls.Config
	// HandlerQueue is the default bound of each capability's and each
	// subscriber's queue of pending deliveries (default 4096); deliveries
	// beyond it are dropped and counted. The handler takes what is queued
	// in batches, so up to twice this many may be held at once.
	HandlerQueue int

	// SyncTimeout abandons a capability sync that receives nothing for
	// this long, and one whose donor never answers (default 15 s); the
	// sync is then requested again.
	SyncTimeout time.Duration
	// SeedFallbackInterval is how long a seed node (Self.Seed) waits for
	// a donor before declaring a capability synced with its own data
	// (default 5 s). It counts from the request or from Start, whichever
	// is later.
	SeedFallbackInterval time.Duration
	// SyncPacketMaxSize is the size sync data is packed to (default
	// 32768, at most 65515); a packet may exceed it by about one record,
	// as in OpenSIPS.
	SyncPacketMaxSize int
	// ShTags are the sharing tags with a configured state, in OpenSIPS's
	// sharing_tag syntax "name/cluster_id=active|backup", e.g.
	// "vip/1=active" (see ParseShTag). Other tags are learned when first
	// referenced or heard of, backup.
	ShTags []string

	// Logger receives the library's logs; nil means no logging.
	Logger *zap.Logger
}

// ClusterConfig is the local node's membership of one cluster.
type ClusterConfig struct {
	// ID is the cluster id, >= 1.
	ID int
	// Self describes the local node (OpenSIPS my_node_info); its
	// ClusterID and ID are ignored. Self.Disabled starts the local node
	// disabled in the cluster, as its own row's state=0 does in OpenSIPS.
	Self NodeInfo
	// Nodes are the provisioned other nodes (neighbor_node_info, or the
	// database's rows).
	Nodes []NodeInfo
}

// RouteMode selects how next hops are chosen.
type RouteMode int

// Route modes.
const (
	RouteShortest RouteMode = iota
	RouteOpenSIPS
)

// Transport is what the Cluster needs from the network.
type Transport interface {
	Listen(addr string) (net.Listener, error)
	Dial(ctx context.Context, localIP, addr string) (net.Conn, error)
}

// ConfigFromOpenSIPS builds a Config from OpenSIPS's script parameters:
// my_node_id, one my_node_info per cluster and any number of
// neighbor_node_info strings (see ParseNodeInfo).
func ConfigFromOpenSIPS(myNodeID int, myNodeInfo []string, neighborNodeInfo []string) (Config, error) {
	cfg := Config{NodeID: myNodeID}
	idx := map[int]int{}
	for i, s := range myNodeInfo {
		n, err := ParseNodeInfo(s)
		if err != nil {
			return cfg, fmt.Errorf("my_node_info[%d]: %w", i, err)
		}
		if n.ID != myNodeID {
			return cfg, fmt.Errorf("%w: my_node_info[%d]: node_id %d differs from my_node_id %d", ErrConfig, i, n.ID, myNodeID)
		}
		if _, dup := idx[n.ClusterID]; dup {
			return cfg, fmt.Errorf("%w: my_node_info[%d]: cluster %d described twice", ErrConfig, i, n.ClusterID)
		}
		idx[n.ClusterID] = len(cfg.Clusters)
		cfg.Clusters = append(cfg.Clusters, ClusterConfig{ID: n.ClusterID, Self: n})
	}
	for i, s := range neighborNodeInfo {
		n, err := ParseNodeInfo(s)
		if err != nil {
			return cfg, fmt.Errorf("neighbor_node_info[%d]: %w", i, err)
		}
		j, ok := idx[n.ClusterID]
		if !ok {
			return cfg, fmt.Errorf("%w: neighbor_node_info[%d]: cluster %d has no my_node_info", ErrConfig, i, n.ClusterID)
		}
		cfg.Clusters[j].Nodes = append(cfg.Clusters[j].Nodes, n)
	}
	return cfg, nil
}

func checkID(what string, v int) (int32, error) {
	if v < 1 || v > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %s %d must be between 1 and %d", ErrConfig, what, v, math.MaxInt32)
	}
	return int32(v), nil
}

func checkSmall(what string, v int) (int32, error) {
	if v < math.MinInt32 || v > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %s %d out of range", ErrConfig, what, v)
	}
	return int32(v), nil
}

// coreConfig validates cfg and translates it for the protocol machine.
func (cfg *Config) coreConfig() (core.Config, error) {
	var out core.Config
	id, err := checkID("NodeID", cfg.NodeID)
	if err != nil {
		return out, err
	}
	for name, d := range map[string]time.Duration{"PingInterval": cfg.PingInterval, "PingTimeout": cfg.PingTimeout, "NodeTimeout": cfg.NodeTimeout, "WriteTimeout": cfg.WriteTimeout} {
		if d < 0 {
			return out, fmt.Errorf("%w: %s %v is negative", ErrConfig, name, d)
		}
	}
	if cfg.QueueBytes < 0 || cfg.HandlerQueue < 0 {
		return out, fmt.Errorf("%w: QueueBytes and HandlerQueue must not be negative", ErrConfig)
	}
	if len(cfg.Clusters) == 0 {
		return out, fmt.Errorf("%w: Clusters is empty", ErrConfig)
	}
	out = core.Config{
		NodeID: id, PingInterval: cfg.PingInterval, PingTimeout: cfg.PingTimeout, NodeTimeout: cfg.NodeTimeout,
		Discovery: !cfg.Provisioned, NoRerouting: cfg.DisableRerouting, OpenSIPSFlooding: cfg.OpenSIPSFlooding,
		SyncTimeout: cfg.SyncTimeout, SeedFallback: cfg.SeedFallbackInterval,
	}
	if cfg.SyncPacketMaxSize < 0 || cfg.SyncPacketMaxSize > bin.MaxSendLen {
		return out, fmt.Errorf("%w: SyncPacketMaxSize %d out of range (0..%d)", ErrConfig, cfg.SyncPacketMaxSize, bin.MaxSendLen)
	}
	if cfg.SyncTimeout < 0 || cfg.SeedFallbackInterval < 0 {
		return out, fmt.Errorf("%w: SyncTimeout and SeedFallbackInterval must not be negative", ErrConfig)
	}
	switch cfg.Routing {
	case RouteShortest:
		out.RouteMode = route.Shortest
	case RouteOpenSIPS:
		out.RouteMode = route.OpenSIPSCompat
	default:
		return out, fmt.Errorf("%w: Routing %d unknown", ErrConfig, cfg.Routing)
	}
	for i, cc := range cfg.Clusters {
		cid, err := checkID(fmt.Sprintf("Clusters[%d].ID", i), cc.ID)
		if err != nil {
			return out, err
		}
		self, err := nodeInfo(fmt.Sprintf("Clusters[%d].Self", i), cc.Self, false)
		if err != nil {
			return out, err
		}
		if err := cfg.checkTLS(fmt.Sprintf("Clusters[%d].Self", i), self.URL); err != nil {
			return out, err
		}
		if u, _ := core.ParseURL(self.URL); i == 0 && u.TLS && !hasCert(cfg.TLS) {
			return out, fmt.Errorf("%w: Clusters[0].Self.URL is bins: but Config.TLS has no Certificates for the listener", ErrConfig)
		}
		ccfg := core.ClusterConfig{ID: cid, Self: self}
		for j, n := range cc.Nodes {
			field := fmt.Sprintf("Clusters[%d].Nodes[%d]", i, j)
			ni, err := nodeInfo(field, n, true)
			if err != nil {
				return out, err
			}
			if err := cfg.checkTLS(field, ni.URL); err != nil {
				return out, err
			}
			ccfg.Nodes = append(ccfg.Nodes, ni)
		}
		out.Clusters = append(out.Clusters, ccfg)
	}
	if err := cfg.shtagConfig(&out); err != nil {
		return out, err
	}
	return out, nil
}

// checkTLS refuses a bins: URL without a TLS configuration to serve it.
func (cfg *Config) checkTLS(field, url string) error {
	if u, _ := core.ParseURL(url); u.TLS && cfg.TLS == nil {
		return fmt.Errorf("%w: %s.URL %q is bins: but Config.TLS is nil", ErrConfig, field, url)
	}
	return nil
}

func hasCert(c *tls.Config) bool {
	return len(c.Certificates) > 0 || c.GetCertificate != nil || c.GetConfigForClient != nil
}

func nodeInfo(field string, n NodeInfo, needID bool) (core.NodeInfo, error) {
	var out core.NodeInfo
	if needID {
		id, err := checkID(field+".ID", n.ID)
		if err != nil {
			return out, err
		}
		out.ID = id
	}
	if _, err := core.ParseURL(n.URL); err != nil {
		return out, fmt.Errorf("%w: %s.URL: %v", ErrConfig, field, err)
	}
	prio, err := checkSmall(field+".Priority", n.Priority)
	if err != nil {
		return out, err
	}
	retries, err := checkSmall(field+".PingRetries", n.PingRetries)
	if err != nil {
		return out, err
	}
	if retries < NoRetries {
		return out, fmt.Errorf("%w: %s.PingRetries %d is negative", ErrConfig, field, retries)
	}
	out.URL, out.SIPAddr, out.Priority, out.PingRetries = n.URL, n.SIPAddr, prio, retries
	out.Seed, out.Disabled = n.Seed, n.Disabled
	return out, nil
}
