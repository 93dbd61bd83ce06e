package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer/internal/core"
)

// restartFlap kills node 3 of a 3-node full mesh, restarts it once the
// others have it DOWN, and returns, for nodes 1 and 2, the NodeUp/NodeDown
// events about node 3 raised after the restart, as "up"/"down" strings.
func restartFlap(t *testing.T, seed uint64) (map[int32][]string, string) {
	t.Helper()
	s := New(seed)
	s.Jitter = time.Millisecond
	for _, c := range fullMesh(3, true) {
		if _, err := s.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	s.StartAll()
	if !s.RunPolling(3*time.Second, 50*time.Millisecond, func() bool { return s.CheckConverged(cl) == nil }) {
		return nil, "no initial convergence"
	}
	s.Run(2 * time.Second)
	s.Kill(3)
	s.Run(7 * time.Second) // DOWN, and a node-timeout re-probe
	mark := map[int32]int{}
	for _, id := range all(1, 2) {
		mark[id] = len(s.Node(id).Events)
	}
	if err := s.Restart(3); err != nil {
		t.Fatal(err)
	}
	s.Run(5 * time.Second)
	got := map[int32][]string{}
	for _, id := range all(1, 2) {
		for _, e := range s.Node(id).Events[mark[id]:] {
			if e.Node != 3 {
				continue
			}
			switch e.Kind {
			case core.NodeUp:
				got[id] = append(got[id], fmt.Sprintf("up@%v", e.At.Sub(Epoch)))
			case core.NodeDown:
				got[id] = append(got[id], fmt.Sprintf("down@%v", e.At.Sub(Epoch)))
			}
		}
	}
	if err := s.CheckConverged(cl); err != nil {
		return got, err.Error()
	}
	return got, ""
}

// TestRestartNoFlap: when a killed node comes back with the same id, each
// survivor sees it come up exactly once, never up-down-up. A spurious
// NodeDown makes telephony users fail over (drop the node's calls, take
// over its sharing tags).
func TestRestartNoFlap(t *testing.T) {
	bad := 0
	for seed := uint64(1); seed <= 300; seed++ {
		got, err := restartFlap(t, seed)
		ok := err == ""
		for _, id := range all(1, 2) {
			ok = ok && len(got[id]) == 1 && got[id][0][:3] == "up@"
		}
		if !ok {
			bad++
			t.Errorf("seed %d: events about node 3 after its restart: %v %s", seed, got, err)
		}
	}
	if bad > 0 {
		t.Logf("%d of 300 seeds flapped", bad)
	}
}
