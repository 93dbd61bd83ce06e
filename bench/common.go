package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
	"go.uber.org/zap"
)

// Port bases, one range per scenario so that scenarios never collide
// (each node also has its own loopback IP, 127.0.0.<id>).
const (
	portThroughput = 27100
	portLatency    = 27200
	portFailure    = 27300
	benchCluster   = 1
)

func hostOf(id int) string          { return fmt.Sprintf("127.0.0.%d", id) }
func urlOf(id, basePort int) string { return fmt.Sprintf("bin:%s:%d", hostOf(id), basePort+id) }

// timing is the protocol timer set of a scenario.
type timing struct {
	pingInterval, pingTimeout, nodeTimeout time.Duration
}

// nodeConfig is node id of a provisioned full mesh of ids.
func nodeConfig(id int, ids []int, basePort int, tr clusterer.Transport, t timing) clusterer.Config {
	cc := clusterer.ClusterConfig{ID: benchCluster, Self: clusterer.NodeInfo{URL: urlOf(id, basePort)}}
	for _, o := range ids {
		if o != id {
			cc.Nodes = append(cc.Nodes, clusterer.NodeInfo{ClusterID: benchCluster, ID: o, URL: urlOf(o, basePort)})
		}
	}
	return clusterer.Config{
		NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Provisioned: true, Transport: tr,
		PingInterval: t.pingInterval, PingTimeout: t.pingTimeout, NodeTimeout: t.nodeTimeout,
		Logger: logger,
	}
}

// logger is the library's logger: nil (silent) unless -v.
var logger *zap.Logger

func setVerbose(on bool) {
	if !on {
		return
	}
	cfg := zap.NewDevelopmentConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	logger, _ = cfg.Build()
}

// packet builds a module packet of capability name with a payload of size
// bytes (the Cluster appends the 12-byte routing trailer).
func packet(name string, size int) (bin.Packet, error) {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i)
	}
	b := bin.NewBuilder(1, name, 1)
	b.PushRaw(payload)
	frame, err := b.Finish()
	if err != nil {
		return bin.Packet{}, err
	}
	return bin.Parse(frame)
}

// meshUp reports whether every node of cs has its direct link UP to, and
// a route to, every other node of cs.
func meshUp(cs map[int]*clusterer.Cluster) bool {
	for _, c := range cs {
		n := 0
		for _, st := range c.Nodes(benchCluster) {
			if _, ok := cs[st.ID]; ok && st.Link == clusterer.LinkIsUp && st.Reachable {
				n++
			}
		}
		if n != len(cs)-1 {
			return false
		}
	}
	return true
}

func waitFor(max, poll time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(poll)
	}
	return cond()
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }

// verdict formats a target check.
func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "MISSED"
}

// report collects the summary lines printed at the end.
type report struct {
	lines []string
}

func (r *report) add(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *report) String() string { return strings.Join(r.lines, "\n") }

func section(title string) {
	fmt.Printf("\n=== %s %s\n", title, strings.Repeat("=", max(0, 70-len(title))))
}
