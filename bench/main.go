// Command bench measures the clusterer runtime on loopback: SendTo
// throughput and round-trip latency against raw TCP baselines measured in
// the same run, failure detection on a 20-node cluster (crash and silent
// blackhole), convergence of a 100-node cluster on the deterministic
// simulator, request/reply messaging (Request, Broadcast), and a full
// capability sync of a million records under a stream of updates.
//
//	go run ./bench -scenario all
//	go run ./bench -scenario throughput,latency
//	go run ./bench -scenario request
//	go run ./bench -scenario sync
//
// The machine may be small and noisy: every figure that matters is a
// ratio against a baseline taken in the same run.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"time"
)

var scenarios = []string{"throughput", "latency", "failure", "sim", "request", "sync"}

func main() {
	var (
		scenario   = flag.String("scenario", "all", "comma-separated: all, "+strings.Join(scenarios, ", "))
		tpDur      = flag.Duration("duration", 5*time.Second, "throughput: measured time per side (split over -rounds)")
		tpRounds   = flag.Int("rounds", 2, "throughput: alternating raw/library rounds")
		senders    = flag.Int("senders", 4, "throughput: concurrent senders")
		payload    = flag.Int("payload", 256, "throughput: payload bytes")
		credit     = flag.Int("credit", 2048, "throughput: in-flight window of the flow-controlled rounds (0: skip them)")
		rtts       = flag.Int("rtts", 20000, "latency: measured round trips per side")
		rttPayload = flag.Int("rtt-payload", 64, "latency: payload bytes each way")
		failNodes  = flag.Int("nodes", 20, "failure: cluster size")
		crashN     = flag.Int("crash-trials", 4, "failure: crash trials")
		restartN   = flag.Int("restart-trials", 2, "failure: restarts after a longer outage")
		downtime   = flag.Duration("downtime", 3*time.Second, "failure: outage before each restart trial")
		stagger    = flag.Duration("stagger", 0, "failure: delay between the initial node Starts")
		bhN        = flag.Int("blackhole-trials", 3, "failure: blackhole trials")
		simNodes   = flag.Int("sim-nodes", 100, "sim: cluster size")
		simBudget  = flag.Duration("sim-budget", 30*time.Second, "sim: wall-time budget of the full-mesh discovery variant")
		simSeed    = flag.Uint64("sim-seed", 1, "sim: seed")
		cpuProf    = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
		traceOut   = flag.String("trace", "", "write a runtime execution trace of the whole run to this file")
		verbose    = flag.Bool("v", false, "log the library's Info messages (connections, node up/down) to stderr")
		simScale   = flag.String("sim-scale", "10,20,30", "sim: smaller full-mesh discovery sizes run to show how the cost grows (empty: none)")
		reqRTTs    = flag.Int("req-rtts", 10000, "request: sequential Request round trips per side")
		reqPayload = flag.Int("req-payload", 64, "request: request body bytes (echoed back)")
		reqConc    = flag.Int("req-concurrency", 16, "request: goroutines issuing concurrent Requests")
		reqWindow  = flag.Duration("req-window", 2*time.Second, "request: measured time per side of the concurrent Requests")
		bcastNodes = flag.Int("bcast-nodes", 20, "request: nodes answering each Broadcast (plus the asker; at most 127)")
		bcasts     = flag.Int("bcasts", 2000, "request: Broadcasts per side")
		syncRecs   = flag.Int("sync-records", 1000000, "sync: records on the donor")
		syncSize   = flag.Int("sync-record-size", 200, "sync: bytes per record, key included")
		syncKey    = flag.Int("sync-key-len", 16, "sync: key bytes at the start of each record")
		syncRate   = flag.Float64("sync-update-rate", 1000, "sync: updates per second the donor applies and replicates during the sync")
		syncIns    = flag.Float64("sync-insert-frac", 0.1, "sync: fraction of the updates that add a new key (the others change one)")
		syncRounds = flag.Int("sync-rounds", 1, "sync: syncs, each to a new joiner")
		syncRaws   = flag.Int("sync-raws", 1, "sync: raw-TCP baselines before the first sync and after each")
		syncPkt    = flag.Int("sync-packet-max", 0, "sync: Config.SyncPacketMaxSize of the donor (0: the default, 32768)")
		syncProf   = flag.String("sync-cpuprofile", "", "sync: CPU profile of each sync (Start to SyncDone) to this file, suffixed .<round>")
	)
	flag.Parse()
	setVerbose(*verbose)
	if stop, err := startProfiling(*cpuProf, *traceOut); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	} else {
		defer stop()
	}

	want := map[string]bool{}
	for _, s := range strings.Split(*scenario, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "all":
			for _, x := range scenarios {
				want[x] = true
			}
		case slices.Contains(scenarios, s):
			want[s] = true
		default:
			fmt.Fprintf(os.Stderr, "bench: unknown scenario %q (want all or %s)\n", s, strings.Join(scenarios, ", "))
			os.Exit(2)
		}
	}
	if *failNodes < 2 || *failNodes > 250 || *tpRounds < 1 || *rtts < 4 || *senders < 1 ||
		*reqRTTs < 4 || *reqPayload < 1 || *reqConc < 1 || *reqWindow <= 0 || *bcastNodes < 1 || *bcastNodes > 127 || *bcasts < 4 ||
		*syncRecs < 1 || *syncKey < 8 || *syncSize <= *syncKey || *syncRate < 0 || *syncIns < 0 || *syncIns > 1 || *syncRounds < 1 || *syncRaws < 1 {
		fmt.Fprintln(os.Stderr, "bench: bad flag value")
		os.Exit(2)
	}

	start := time.Now()
	fmt.Printf("clusterer bench — %s, %s/%s, %d CPUs, GOMAXPROCS %d, %s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), runtime.GOMAXPROCS(0), start.Format(time.RFC3339))
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, mod string
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				rev = kv.Value
			case "vcs.modified":
				mod = kv.Value
			}
		}
		if rev != "" {
			fmt.Printf("library: revision %s, uncommitted changes: %s\n", rev, mod)
		}
	}
	rep := &report{}
	failed := false
	run := func(name string, f func() error) {
		if !want[name] {
			return
		}
		t := time.Now()
		if err := f(); err != nil {
			fmt.Printf("\n!!! scenario %s FAILED: %v\n", name, err)
			rep.add("%-12s FAILED: %v", name, err)
			failed = true
		}
		fmt.Printf("(%s took %v)\n", name, time.Since(t).Round(time.Millisecond))
	}
	run("throughput", func() error {
		return runThroughput(tpOptions{duration: *tpDur, rounds: *tpRounds, senders: *senders, payload: *payload,
			warmup: 300 * time.Millisecond, credit: *credit}, rep)
	})
	run("latency", func() error {
		return runLatency(latOptions{rtts: *rtts, rounds: 4, payload: max(*rttPayload, 8), warmup: 1000}, rep)
	})
	run("failure", func() error {
		return runFailure(failOptions{nodes: *failNodes, stagger: *stagger, restartTrials: *restartN, downtime: *downtime, crashTrials: *crashN, blackholeTrials: *bhN, retries: 3,
			timing: timing{pingInterval: time.Second, pingTimeout: 200 * time.Millisecond, nodeTimeout: 5 * time.Second}}, rep)
	})
	run("sim", func() error {
		var scale []int
		for _, f := range strings.Split(*simScale, ",") {
			var n int
			if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err == nil && n > 1 {
				scale = append(scale, n)
			}
		}
		return runSimScenario(simOptions{nodes: *simNodes, seed: *simSeed, maxVirt: 120 * time.Second,
			budget: *simBudget, maxHeap: 3 << 30}, scale, rep)
	})

	run("request", func() error {
		return runRequest(reqOptions{rtts: *reqRTTs, rounds: 4, payload: *reqPayload, warmup: 1000, concurrency: *reqConc,
			window: *reqWindow, responders: *bcastNodes, bcasts: *bcasts}, rep)
	})

	run("sync", func() error {
		return runSync(syncOptions{records: *syncRecs, recordSize: *syncSize, keyLen: *syncKey, updateRate: *syncRate,
			insertFrac: *syncIns, rounds: *syncRounds, raws: *syncRaws, packetMax: *syncPkt, cpuProfile: *syncProf}, rep)
	})

	section("summary")
	fmt.Println(rep)
	fmt.Printf("total wall time %v\n", time.Since(start).Round(time.Millisecond))
	if failed {
		exitCode = 1
	}
}

// exitCode is set by main and applied after its deferred calls ran.
var exitCode int

func startProfiling(cpu, tr string) (func(), error) {
	var stops []func()
	stop := func() {
		for _, f := range stops {
			f()
		}
		if exitCode != 0 {
			os.Exit(exitCode)
		}
	}
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if tr != "" {
		f, err := os.Create(tr)
		if err != nil {
			return nil, err
		}
		if err := trace.Start(f); err != nil {
			return nil, err
		}
		stops = append(stops, func() { trace.Stop(); f.Close() })
	}
	return stop, nil
}
