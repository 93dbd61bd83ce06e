package sim

import (
	"flag"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// Sharing tags on simulated clusters of Go nodes (spec §11 on the wire,
// plus the Go nodes' claims).

const vip = "vip"

// tagConfig is Config with sharing tags "name" (backup) or "name=active".
func tagConfig(id int32, neighbors []int32, tags ...string) core.Config {
	cfg := Config(id, cl, true, neighbors...)
	for _, t := range tags {
		name, state, _ := strings.Cut(t, "=")
		cfg.Clusters[0].ShTags = append(cfg.Clusters[0].ShTags, core.ShTagConfig{Name: name, Active: state == "active"})
	}
	return cfg
}

func activate(t *testing.T, s *Sim, id int32, name string) {
	t.Helper()
	n := s.Node(id)
	require.NoError(t, n.M.ActivateShTag(s.Now(), cl, name))
	s.flush(n)
}

func tagOf(s *Sim, id int32, name string) core.ShTagView {
	if t := s.Node(id).M.View().Cluster(cl).ShTag(name); t != nil {
		return *t
	}
	return core.ShTagView{Name: name}
}

// holders lists the live nodes holding the tag.
func holders(s *Sim, name string) []int32 {
	var out []int32
	for _, id := range s.IDs() {
		if s.Node(id).Alive && tagOf(s, id, name).State == core.ShTagActive {
			out = append(out, id)
		}
	}
	return out
}

// tagChanges lists a node's changes of one tag.
func tagChanges(s *Sim, id int32, name string) []core.ShTagChange {
	var out []core.ShTagChange
	for _, e := range s.Node(id).Events {
		if e.Kind == core.ShTagChanged && e.ShTag.Name == name {
			out = append(out, *e.ShTag)
		}
	}
	return out
}

var trailerRE = regexp.MustCompile(`Src:(\d+) Dst:(\d+)`)

// shtagActives records the SHTAG_ACTIVEs delivered to their destination,
// as "src->dst" (relays not counted).
func shtagActives(s *Sim) *[]string {
	var got []string
	s.Trace = func(line string) {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "SHTAG_ACTIVE" {
			return
		}
		m := trailerRE.FindStringSubmatch(line)
		if m != nil && strings.HasSuffix(f[1], "->"+m[2]) {
			got = append(got, m[1]+"->"+m[2])
		}
	}
	return &got
}

func mesh(t *testing.T, s *Sim) {
	t.Helper()
	s.StartAll()
	knowAll(t, s, 5*time.Second)
	converge(t, s, 5*time.Second)
}

// A tag configured active announces itself lazily: SHTAG_ACTIVE goes to
// each node when it comes UP, once (spec §11, observed in session 1).
// Go nodes also learn the holder from its claim, and a node that restarts
// learns it again although no SHTAG_ACTIVE is re-sent.
func TestShTagConfiguredActiveAnnouncesAtNodeUp(t *testing.T) {
	s := newSim(t, 1,
		tagConfig(1, nil, "vip=active"),
		tagConfig(2, []int32{1}),
		tagConfig(3, []int32{1}),
	)
	sent := shtagActives(s)
	s.Start(1)
	s.Run(time.Second)
	require.Empty(t, *sent, "nobody is UP yet: nothing announced")
	require.Equal(t, []core.ShTagChange{{Name: vip, Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagConfigured}},
		tagChanges(s, 1, vip))
	s.Start(2)
	s.Start(3)
	knowAll(t, s, 5*time.Second)
	converge(t, s, 5*time.Second)
	slices.Sort(*sent)
	require.Equal(t, []string{"1->2", "1->3"}, *sent)
	for _, id := range []int32{2, 3} {
		assert.Equal(t, core.ShTagView{Name: vip, State: core.ShTagBackup, Owner: 1}, tagOf(s, id, vip), "node %d", id)
		assert.Empty(t, tagChanges(s, id, vip), "node %d was backup all along", id)
	}

	*sent = nil
	s.Kill(3)
	s.Run(2 * time.Second)
	require.NoError(t, s.Restart(3))
	converge(t, s, 10*time.Second)
	require.Empty(t, *sent, "SHTAG_ACTIVE reached node 3 once: not again (as OpenSIPS)")
	require.Equal(t, core.ShTagView{Name: vip, State: core.ShTagBackup, Owner: 1}, tagOf(s, 3, vip),
		"the restarted node learned the holder from its claim")
	require.Equal(t, []int32{1}, holders(s, vip))
}

// ActivateShTag sends SHTAG_ACTIVE to every node of the node list; a node
// it could not reach gets it when it comes UP (spec §11).
func TestShTagActivationResentWhenFirstSendFailed(t *testing.T) {
	s := newSim(t, 2, tagConfig(1, nil), tagConfig(2, []int32{1}), tagConfig(3, []int32{1}))
	mesh(t, s)
	sent := shtagActives(s)
	s.Kill(3)
	require.True(t, s.RunUntil(5*time.Second, func() bool { return len(s.Reachable(cl, 2)) == 1 }))

	activate(t, s, 2, vip)
	s.Run(time.Second)
	require.Equal(t, []string{"2->1"}, *sent)
	require.Equal(t, []core.ShTagChange{{Name: vip, Old: core.ShTagBackup, New: core.ShTagActive,
		Reason: core.ShTagActivated, Term: 1}}, tagChanges(s, 2, vip), "no holder was known: no resync")

	require.NoError(t, s.Restart(3))
	converge(t, s, 10*time.Second)
	require.Equal(t, []string{"2->1", "2->3"}, *sent, "re-sent to node 3 once it came UP")
	require.Equal(t, core.ShTagView{Name: vip, State: core.ShTagBackup, Owner: 2, Term: 1}, tagOf(s, 3, vip))
	require.Equal(t, []int32{2}, holders(s, vip))

	// A handover: node 1 takes the tag. It knew node 2 held it: resync.
	activate(t, s, 1, vip)
	s.Run(time.Second)
	require.Equal(t, []int32{1}, holders(s, vip))
	c := tagChanges(s, 1, vip)
	require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagActivated,
		Node: 2, Term: 2, NeedsResync: true}, c[len(c)-1])
	c = tagChanges(s, 2, vip)
	require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagActive, New: core.ShTagBackup, Reason: core.ShTagTakenOver,
		Node: 1, Term: 2}, c[len(c)-1])
	require.Equal(t, core.ShTagView{Name: vip, State: core.ShTagBackup, Owner: 1, Term: 2}, tagOf(s, 3, vip))
}

// Two Go nodes activating the same tag at the same instant end with one
// holder, the lower id at equal terms; OpenSIPS nodes would both go BACKUP.
func TestShTagSimultaneousActivation(t *testing.T) {
	for _, pair := range [][2]int32{{2, 3}, {3, 2}} {
		t.Run(fmt.Sprint(pair), func(t *testing.T) {
			s := newSim(t, 3, tagConfig(1, nil), tagConfig(2, []int32{1}), tagConfig(3, []int32{1}))
			mesh(t, s)
			sent := shtagActives(s)
			activate(t, s, pair[0], vip)
			activate(t, s, pair[1], vip)
			s.Run(2 * time.Second)
			require.Len(t, *sent, 4, "both announced to both others, as OpenSIPS would")
			require.Equal(t, []int32{2}, holders(s, vip))
			for _, id := range s.IDs() {
				require.Equal(t, int32(2), tagOf(s, id, vip).Owner, "node %d", id)
			}
			c := tagChanges(s, 3, vip)
			require.Len(t, c, 2)
			require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagActive, New: core.ShTagBackup,
				Reason: core.ShTagTakenOver, Node: 2, Term: 1}, c[1])
			c = tagChanges(s, 2, vip)
			require.Len(t, c, 2)
			require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagActive, New: core.ShTagActive,
				Reason: core.ShTagConflictWon, Node: 3, Term: 1, NeedsResync: true}, c[1])
			require.Equal(t, uint64(2), s.Node(2).M.Stats().ShTagLeftToClaim+s.Node(3).M.Stats().ShTagLeftToClaim,
				"each SHTAG_ACTIVE between the two was left to its claim")
		})
	}
}

// Both sides of a partition hold the tag; when it heals, the newer claim
// keeps it and the other side steps down, and the winner learns that the
// loser held the tag meanwhile whichever of their claims arrives first
// (here node 1's; for the other orders see TestShTagPartitionHealsAnyOrder
// and TestShTagLoserStepsDownUnheard).
func TestShTagPartitionHeals(t *testing.T) {
	s := newSim(t, 4, tagConfig(1, nil, "vip=active"), tagConfig(2, []int32{1}), tagConfig(3, []int32{1}))
	mesh(t, s)
	s.Cut(1, 2)
	s.Cut(1, 3)
	require.True(t, s.RunUntil(5*time.Second, func() bool { return len(s.Reachable(cl, 2)) == 1 }))
	activate(t, s, 2, vip) // node 2 takes over from the unreachable holder
	s.Run(time.Second)
	require.Equal(t, []int32{1, 2}, holders(s, vip), "split brain")

	s.HealAll()
	converge(t, s, 20*time.Second)
	s.Run(time.Second)
	require.Equal(t, []int32{2}, holders(s, vip))
	for _, id := range s.IDs() {
		require.Equal(t, core.ShTagView{Name: vip, State: tagOf(s, id, vip).State, Owner: 2, Term: 1}, tagOf(s, id, vip), "node %d", id)
	}
	c := tagChanges(s, 1, vip)
	require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagActive, New: core.ShTagBackup, Reason: core.ShTagTakenOver,
		Node: 2, Term: 1}, c[len(c)-1])
	c = tagChanges(s, 2, vip)
	require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagActivated,
		Node: 1, Term: 1, NeedsResync: true}, c[0], "took over from node 1")
	require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagActive, New: core.ShTagActive, Reason: core.ShTagConflictWon,
		Node: 1, Term: 1, NeedsResync: true}, c[len(c)-1], "node 1 had kept it meanwhile")
}

// Two nodes configured active meet: the lower id keeps the tag (OpenSIPS
// nodes would both go BACKUP). A node configured active that restarts
// does not take the tag back from the node that took it over meanwhile.
func TestShTagConfiguredActiveNodesMeetAndRestart(t *testing.T) {
	s := newSim(t, 5, tagConfig(1, nil, "vip=active"), tagConfig(2, []int32{1}, "vip=active"), tagConfig(3, []int32{1}))
	mesh(t, s)
	s.Run(time.Second)
	require.Equal(t, []int32{1}, holders(s, vip))
	require.Equal(t, int32(1), tagOf(s, 3, vip).Owner)

	activate(t, s, 3, vip)
	s.Run(time.Second)
	require.Equal(t, []int32{3}, holders(s, vip))
	s.Kill(1)
	s.Run(2 * time.Second)
	require.NoError(t, s.Restart(1))
	require.Equal(t, []int32{1, 3}, holders(s, vip), "alone, the restarted node holds its configured tag")
	converge(t, s, 10*time.Second)
	s.Run(time.Second)
	require.Equal(t, []int32{3}, holders(s, vip), "the newer claim of node 3 wins")
	c := tagChanges(s, 1, vip)
	require.Equal(t, core.ShTagTakenOver, c[len(c)-1].Reason)
	require.Equal(t, int32(3), c[len(c)-1].Node)
}

// SHTAG_ACTIVE and the claim travel through a relay when the direct link
// is broken, and a holder behind the relay steps down.
func TestShTagActivationThroughRelay(t *testing.T) {
	s := newSim(t, 6, tagConfig(1, nil), tagConfig(2, []int32{1}), tagConfig(3, []int32{1}, "vip=active"))
	mesh(t, s)
	s.Cut(1, 3)
	converge(t, s, 10*time.Second)
	require.Equal(t, int32(2), s.Node(1).M.View().Cluster(cl).Node(3).NextHop)
	sent := shtagActives(s)
	relayed := s.Relayed.OK
	activate(t, s, 1, vip)
	s.Run(time.Second)
	require.Equal(t, []int32{1}, holders(s, vip))
	require.Equal(t, []string{"1->2", "1->3"}, *sent, "to node 2, and to node 3 through node 2")
	require.Equal(t, 3, s.Relayed.OK-relayed, "node 2 relayed the claim and SHTAG_ACTIVE, and node 3's yield notice back")
	c := tagChanges(s, 3, vip)
	require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagActive, New: core.ShTagBackup, Reason: core.ShTagTakenOver,
		Node: 1, Term: 1}, c[len(c)-1])
	require.Equal(t, []core.ShTagChange{{Name: vip, Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagActivated,
		Node: 3, Term: 1, NeedsResync: true}}, tagChanges(s, 1, vip), "a handover: node 3's yield is no conflict")
}

// An SHTAG_ACTIVE from a node that never sent a claim (an OpenSIPS node)
// forces BACKUP whatever the local claim, and cancels the announcements
// the tag still owed (spec §11).
func TestShTagOpenSIPSAnnouncementForcesBackup(t *testing.T) {
	// Node 4 stands for an OpenSIPS node: node 2 knows it, it never runs
	// here, and its announcement is handed to node 2 as it would arrive.
	s := newSim(t, 7, tagConfig(1, nil), tagConfig(2, []int32{1, 4}, "vip=active"), tagConfig(3, []int32{1}))
	s.Start(1)
	s.Start(2)
	sent := shtagActives(s)
	require.True(t, s.RunUntil(5*time.Second, func() bool { return len(s.Reachable(cl, 2)) == 1 }))
	s.Run(time.Second)
	require.Equal(t, []string{"2->1"}, *sent, "the configured tag announced to node 1 at node-UP")
	*sent = nil

	inject(t, s, &wire.ShtagActive{Trailer: bin.Trailer{Cluster: cl, Src: 4, Dst: 2}, Tag: vip}, 4, 2)
	require.Equal(t, core.ShTagView{Name: vip, State: core.ShTagBackup, Owner: 4, Term: 1}, tagOf(s, 2, vip))
	c := tagChanges(s, 2, vip)
	require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagActive, New: core.ShTagBackup, Reason: core.ShTagTakenOver,
		Node: 4, Term: 1}, c[len(c)-1])

	s.Start(3)
	converge(t, s, 10*time.Second)
	require.Empty(t, *sent, "node 3 came UP after the announcement was cancelled")
	require.Empty(t, holders(s, vip))
}

var shtagSeeds = flag.Int("sim.shtagseeds", 0, "seeds of the jittered random-partition schedules (0: the default range)")

// TestShTagRandomPartitions: random partitions of five nodes and
// activations on random nodes; once healed, exactly one node holds the
// tag and every node names it.
func TestShTagRandomPartitions(t *testing.T) {
	for seed := uint64(100); seed < 140; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomPartitions(t, seed, 0) })
	}
}

// TestShTagRandomPartitionsJitter: the same with 1 ms of link jitter, so
// that packets sent by different routes (a relay and a direct link, say)
// overtake each other: a claim can arrive before the claim and
// SHTAG_ACTIVE sent earlier by another route. -sim.shtagseeds=N runs N
// seeds from 100 (the default range is kept short for CI).
func TestShTagRandomPartitionsJitter(t *testing.T) {
	n := 300
	if *shtagSeeds > 0 {
		n = *shtagSeeds
	}
	for seed := uint64(100); seed < 100+uint64(n); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { randomPartitions(t, seed, time.Millisecond) })
	}
}

func randomPartitions(t *testing.T, seed uint64, jitter time.Duration) {
	s := New(seed)
	s.Jitter = jitter
	const n = 5
	for id := int32(1); id <= n; id++ {
		var nb []int32
		if id > 1 {
			nb = []int32{1}
		}
		_, err := s.Add(tagConfig(id, nb))
		require.NoError(t, err)
	}
	mesh(t, s)
	r := s.Rand()
	activated := false
	for range 6 {
		// Split the nodes in two at random, cutting every link across.
		side := map[int32]bool{}
		for id := int32(1); id <= n; id++ {
			side[id] = r.IntN(2) == 0
		}
		for a := int32(1); a <= n; a++ {
			for b := a + 1; b <= n; b++ {
				if side[a] != side[b] {
					s.Cut(a, b)
				}
			}
		}
		s.Run(time.Duration(r.IntN(2000)) * time.Millisecond)
		for range 1 + r.IntN(3) {
			activate(t, s, int32(1+r.IntN(n)), vip)
			activated = true
			s.Run(time.Duration(r.IntN(300)) * time.Millisecond)
		}
		s.Run(time.Duration(r.IntN(2000)) * time.Millisecond)
		if r.IntN(2) == 0 {
			s.HealAll()
		}
	}
	s.HealAll()
	converge(t, s, 30*time.Second)
	s.Run(2 * time.Second)
	require.True(t, activated)
	h := holders(s, vip)
	require.Len(t, h, 1, "holders %v", h)
	for _, id := range s.IDs() {
		require.Equal(t, h[0], tagOf(s, id, vip).Owner, "node %d names the holder", id)
	}
}

// TestShTagLoserStepsDownUnheard: node 2 stops hearing node 1, declares it
// DOWN and takes the tag over, while node 1 keeps it. When they hear each
// other again, node 2's claim reaches node 1 before node 1 sent node 2 a
// claim of its own: either node 1 never lost node 2 (it still heard node
// 2's probes), or it did but node 2's link came UP first. Node 1 steps
// down, and node 2 must still learn that node 1 held the tag meanwhile
// (ConflictWon, NeedsResync): node 1's yield notice tells it. Before the
// notice node 2 never knew, here and in TestShTagPartitionHeals whenever
// node 2's claim won the race (see TestShTagPartitionHealsAnyOrder).
func TestShTagLoserStepsDownUnheard(t *testing.T) {
	for _, tc := range []struct {
		name    string
		split   time.Duration // from the takeover to the heal
		reaches []int32       // node 1's reachable nodes at the heal
	}{{"one-sided", 500 * time.Millisecond, []int32{2}}, {"both-sides", 2 * time.Second, nil}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, 8, tagConfig(1, nil, "vip=active"), tagConfig(2, []int32{1}))
			mesh(t, s)
			s.Blackhole(1, 2)
			require.True(t, s.RunUntil(5*time.Second, func() bool { return len(s.Reachable(cl, 2)) == 0 }))
			activate(t, s, 2, vip)
			s.Run(tc.split)
			require.Equal(t, []int32{1, 2}, holders(s, vip), "split brain")
			require.Equal(t, tc.reaches, s.Reachable(cl, 1))

			s.HealAll()
			converge(t, s, 10*time.Second)
			s.Run(time.Second)
			require.Equal(t, []int32{2}, holders(s, vip))
			require.Equal(t, []core.ShTagChange{
				{Name: vip, Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagConfigured},
				{Name: vip, Old: core.ShTagActive, New: core.ShTagBackup, Reason: core.ShTagTakenOver, Node: 2, Term: 1},
			}, tagChanges(s, 1, vip))
			require.Equal(t, []core.ShTagChange{
				{Name: vip, Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagActivated, Node: 1, Term: 1, NeedsResync: true},
				{Name: vip, Old: core.ShTagActive, New: core.ShTagActive, Reason: core.ShTagConflictWon, Node: 1, Term: 1, NeedsResync: true},
			}, tagChanges(s, 2, vip), "node 1 had kept the tag meanwhile")
		})
	}
}

// TestShTagPartitionHealsAnyOrder: TestShTagPartitionHeals with jitter, so
// that the claims meet in every order: the winner reports the conflict
// exactly once whichever arrives first, its claim at the loser or the
// loser's claim (or yield notice) at it, and by whichever routes.
func TestShTagPartitionHealsAnyOrder(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		s := New(seed)
		s.Jitter = time.Millisecond
		for _, c := range []core.Config{tagConfig(1, nil, "vip=active"), tagConfig(2, []int32{1}), tagConfig(3, []int32{1})} {
			_, err := s.Add(c)
			require.NoError(t, err)
		}
		mesh(t, s)
		s.Cut(1, 2)
		s.Cut(1, 3)
		require.True(t, s.RunUntil(5*time.Second, func() bool { return len(s.Reachable(cl, 2)) == 1 }))
		activate(t, s, 2, vip)
		s.Run(time.Second)
		s.HealAll()
		converge(t, s, 20*time.Second)
		s.Run(time.Second)
		require.Equal(t, []int32{2}, holders(s, vip), "seed %d", seed)
		c := tagChanges(s, 1, vip)
		require.Equal(t, core.ShTagChange{Name: vip, Old: core.ShTagActive, New: core.ShTagBackup, Reason: core.ShTagTakenOver,
			Node: 2, Term: 1}, c[len(c)-1], "seed %d", seed)
		require.Equal(t, []core.ShTagChange{
			{Name: vip, Old: core.ShTagBackup, New: core.ShTagActive, Reason: core.ShTagActivated, Node: 1, Term: 1, NeedsResync: true},
			{Name: vip, Old: core.ShTagActive, New: core.ShTagActive, Reason: core.ShTagConflictWon, Node: 1, Term: 1, NeedsResync: true},
		}, tagChanges(s, 2, vip), "seed %d: node 1 had kept the tag meanwhile", seed)
	}
}

// TestShTagYieldNoticeIsNoClaim: a yield notice (an active claim naming
// another owner) tells its destination that the sender held the tag; to
// any other node, and to a destination that no longer holds the tag, it
// says nothing: the sender does not hold the tag any more, whatever its
// term.
func TestShTagYieldNoticeIsNoClaim(t *testing.T) {
	s := newSim(t, 9, tagConfig(1, nil), tagConfig(2, []int32{1}), tagConfig(3, []int32{1}))
	mesh(t, s)
	activate(t, s, 1, vip)
	s.Run(time.Second)
	want := core.ShTagView{Name: vip, State: core.ShTagBackup, Owner: 1, Term: 1}
	require.Equal(t, want, tagOf(s, 3, vip))

	inject(t, s, &wire.ShtagClaim{Trailer: bin.Trailer{Cluster: cl, Src: 2, Dst: 3}, Tag: vip, Term: 5, Owner: 1, Active: true}, 2, 3)
	s.Run(time.Second)
	require.Equal(t, want, tagOf(s, 3, vip), "node 2's notice is no claim of node 2's")
	require.Empty(t, tagChanges(s, 3, vip))
	require.Equal(t, []int32{1}, holders(s, vip))
}

// inject hands node to msg now, as if it came straight from node from
// (which need not run here: an OpenSIPS node, or a crafted packet).
func inject(t *testing.T, s *Sim, msg wire.Message, from, to int32) {
	t.Helper()
	frame, err := msg.Append(nil)
	require.NoError(t, err)
	p, err := bin.Parse(frame)
	require.NoError(t, err)
	ip, _ := NodeAddr(from)
	n := s.Node(to)
	n.M.Receive(s.Now(), core.Source{IP: ip}, p)
	s.flush(n)
}
