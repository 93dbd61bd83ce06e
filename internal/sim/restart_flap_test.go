package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer/internal/core"
)

// restartFlap kills the last node of an n-node full mesh, restarts it
// once the others have it DOWN, and returns, per surviving node, the
// NodeUp/NodeDown events about it raised after the restart, and the
// restart detections of each (core Stats.Restarts) before the kill and
// after the restart.
func restartFlap(t *testing.T, n int32, seed uint64) (map[int32][]string, [2]map[int32]uint64, error) {
	t.Helper()
	s := New(seed)
	s.Jitter = time.Millisecond
	for _, c := range fullMesh(n, true) {
		if _, err := s.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	s.StartAll()
	var err error
	var detected [2]map[int32]uint64
	if !s.RunPolling(3*time.Second, 50*time.Millisecond, func() bool { err = s.CheckConverged(cl); return err == nil }) {
		return nil, detected, fmt.Errorf("initial convergence: %w", err)
	}
	s.Run(2 * time.Second)
	detected[0] = restarts(s)
	s.Kill(n)
	s.Run(7 * time.Second) // DOWN, and a node-timeout re-probe
	mark := map[int32]int{}
	for id := int32(1); id < n; id++ {
		mark[id] = len(s.Node(id).Events)
	}
	if err := s.Restart(n); err != nil {
		t.Fatal(err)
	}
	s.Run(5 * time.Second)
	got := map[int32][]string{}
	for id := int32(1); id < n; id++ {
		for _, e := range s.Node(id).Events[mark[id]:] {
			if e.Node == n && (e.Kind == core.NodeUp || e.Kind == core.NodeDown) {
				got[id] = append(got[id], fmt.Sprintf("%v@%v", e.Kind, e.At.Sub(Epoch)))
			}
		}
	}
	detected[1] = restarts(s)
	for id := int32(1); id < n; id++ {
		detected[1][id] -= detected[0][id]
	}
	delete(detected[1], n)
	return got, detected, s.CheckConverged(cl)
}

// TestRestartNoFlap: when a killed node comes back with the same id, each
// survivor sees it come up exactly once, never up, down, up again. A
// spurious NodeDown makes telephony users fail over (drop the node's
// calls, take over its sharing tags). The flap depended on the order in
// which a survivor heard the other survivors' links to the restarted node
// and the restarted node's first snapshots of its own links (see
// core's cluster.restarted); with 1 ms of jitter that order varies with
// the seed. Before the fix: 4 of 300 seeds flapped with 3 nodes, 35 of
// 200 with 5.
func TestRestartNoFlap(t *testing.T) {
	for _, tc := range []struct {
		nodes int32
		seeds uint64
	}{{3, 300}, {5, 200}} {
		t.Run(fmt.Sprintf("%d-nodes", tc.nodes), func(t *testing.T) {
			bad := 0
			for seed := uint64(1); seed <= tc.seeds; seed++ {
				got, detected, err := restartFlap(t, tc.nodes, seed)
				ok := err == nil
				for id := int32(1); id < tc.nodes; id++ {
					ok = ok && len(got[id]) == 1 && got[id][0][:len("node-up@")] == "node-up@"
				}
				if !ok {
					bad++
					t.Errorf("seed %d: events about node %d after its restart: %v (convergence: %v)", seed, tc.nodes, got, err)
				}
				// No restart at the start; then each survivor sees the
				// one restart once, although the restarted node's updates
				// reach it both directly and flooded, in either order.
				for id := int32(1); id < tc.nodes; id++ {
					if detected[0][id] != 0 || detected[1][id] != 1 {
						t.Errorf("seed %d: restart detections before the kill %v, after the restart %v; want none, then one each", seed, detected[0], detected[1])
						break
					}
				}
			}
			if bad > 0 {
				t.Logf("%d of %d seeds flapped", bad, tc.seeds)
			}
		})
	}
}
