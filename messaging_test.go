package clusterer_test

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/clustertest"
	"github.com/clusterer-go/clusterer/internal/golden"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// echo answers every request with "<node>:<msg>".
func echo(id int) clusterer.RequestHandler {
	return func(req clusterer.Message) (string, bool) {
		return fmt.Sprintf("%d:%s", id, req.Body), true
	}
}

// events collects a node's events.
type events struct {
	mu  sync.Mutex
	all []clusterer.Event
}

func (e *events) add(ev clusterer.Event) { e.mu.Lock(); e.all = append(e.all, ev); e.mu.Unlock() }
func (e *events) of(kind clusterer.EventKind) []clusterer.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []clusterer.Event
	for _, ev := range e.all {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func TestRequestReplyAndEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		evs := map[int]*events{}
		for id, c := range nodes {
			evs[id] = &events{}
			cancel := c.Subscribe(0, evs[id].add)
			t.Cleanup(cancel)
			c.HandleRequests(echo(id))
		}
		time.Sleep(3 * time.Second)
		ctx := context.Background()

		got, err := nodes[1].Request(ctx, cl, 3, "ping")
		require.NoError(t, err)
		require.Equal(t, "3:ping", got)
		synctest.Wait()
		req := evs[3].of(clusterer.RequestReceived)
		require.Len(t, req, 1)
		assert.Equal(t, 1, req[0].Node)
		assert.Equal(t, "ping", req[0].Msg)
		assert.Regexp(t, regexp.MustCompile(`^1-1-[A-Za-y1-6]{24}$`), req[0].Tag, "OpenSIPS's tag format")
		rpl := evs[1].of(clusterer.ReplyReceived)
		require.Len(t, rpl, 1)
		assert.Equal(t, clusterer.Event{Kind: clusterer.ReplyReceived, Cluster: cl, Node: 3, Tag: req[0].Tag, Msg: "3:ping"}, rpl[0])

		// Fire-and-forget forms: the tag ties the reply to the request.
		tag, err := nodes[2].SendRequest(cl, 1, "hello")
		require.NoError(t, err)
		synctest.Wait()
		rpl = evs[2].of(clusterer.ReplyReceived)
		require.Len(t, rpl, 1)
		assert.Equal(t, tag, rpl[0].Tag)
		assert.Equal(t, "1:hello", rpl[0].Msg)

		// A request to an unreachable or unknown node fails at once.
		_, err = nodes[1].Request(ctx, cl, 9, "x")
		require.ErrorIs(t, err, clusterer.ErrDestDown)
		_, err = nodes[1].Request(ctx, 7, 3, "x")
		require.ErrorIs(t, err, clusterer.ErrUnknownCluster)
	})
}

func TestRequestRoutedThroughRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		for id, c := range nodes {
			c.HandleRequests(echo(id))
		}
		time.Sleep(3 * time.Second)
		nw.Cut(ip(1), ip(3))
		time.Sleep(time.Second)
		hop, ok := nodes[1].NextHop(cl, 3)
		require.True(t, ok)
		require.Equal(t, 2, hop)
		relayed := nodes[2].Stats().Relayed
		got, err := nodes[1].Request(context.Background(), cl, 3, "around")
		require.NoError(t, err)
		require.Equal(t, "3:around", got)
		require.Equal(t, relayed+2, nodes[2].Stats().Relayed, "request and reply both crossed node 2")
		require.NoError(t, nodes[1].SendCommand(cl, 3, "noop"))
	})
}

func TestManyConcurrentRequestsMatchByTag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		for id, c := range nodes {
			c.HandleRequests(echo(id))
		}
		time.Sleep(3 * time.Second)
		var wg sync.WaitGroup
		errs := make(chan error, 400)
		for i := range 400 {
			wg.Go(func() {
				dst := 2 + i%2
				msg := fmt.Sprintf("q%d", i)
				got, err := nodes[1].Request(context.Background(), cl, dst, msg)
				if err == nil && got != fmt.Sprintf("%d:%s", dst, msg) {
					err = fmt.Errorf("request %q to %d answered %q", msg, dst, got)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func TestBroadcastCompletesEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {1}, 3: {1}, 4: {1}}, 1, 2, 3, 4)
		for id, c := range nodes {
			if id != 4 {
				c.HandleRequests(echo(id))
			}
		}
		// Node 4 answers only after a delay, by hand.
		nodes[4].HandleRequests(func(req clusterer.Message) (string, bool) {
			go func() {
				time.Sleep(2 * time.Second)
				_ = nodes[4].SendReply(req.Cluster, req.Src, req.Tag, "late")
			}()
			return "", false
		})
		time.Sleep(3 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		start := time.Now()
		replies, err := nodes[1].Broadcast(ctx, cl, "who", clusterer.IncludeLocal())
		require.NoError(t, err)
		require.Equal(t, 2*time.Second, time.Since(start), "done when the last node answered, not at the deadline")
		require.Equal(t, []clusterer.Reply{{Node: 1, Body: "1:who"}, {Node: 2, Body: "2:who"}, {Node: 3, Body: "3:who"},
			{Node: 4, Body: "late"}}, replies)

		// A node that dies while asked counts as answered (unreachable).
		nodes[4].HandleRequests(func(clusterer.Message) (string, bool) { return "", false })
		go func() {
			time.Sleep(500 * time.Millisecond)
			nodes[4].Close()
		}()
		start = time.Now()
		replies, err = nodes[1].Broadcast(ctx, cl, "who")
		require.NoError(t, err)
		require.Less(t, time.Since(start), 2*time.Second)
		require.Len(t, replies, 3)
		require.ErrorIs(t, replies[2].Err, clusterer.ErrDestDown)
		require.Equal(t, "3:who", replies[1].Body)
	})
}

func TestRequestContextCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {1}}, 1, 2)
		nodes[2].HandleRequests(func(clusterer.Message) (string, bool) { return "", false }) // never answers
		time.Sleep(3 * time.Second)

		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := nodes[1].Request(ctx, cl, 2, "anyone?")
		require.ErrorIs(t, err, context.DeadlineExceeded)

		ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel2()
		replies, err := nodes[1].Broadcast(ctx2, cl, "anyone?", clusterer.IncludeLocal())
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, []clusterer.Reply{{Node: 1, Err: clusterer.ErrNoHandler}, {Node: 2, Err: context.DeadlineExceeded}}, replies,
			"the local node, without a handler, fails at once")
		require.Equal(t, uint64(1), nodes[1].Stats().Unanswered)

		// Close ends a wait at once.
		done := make(chan error)
		go func() {
			_, err := nodes[1].Request(context.Background(), cl, 2, "closing")
			done <- err
		}()
		synctest.Wait()
		require.NoError(t, nodes[1].Close())
		require.ErrorIs(t, <-done, clusterer.ErrClosed)
	})
}

func TestRemoteCommands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {1}, 3: {1}}, 1, 2, 3)
		var mu sync.Mutex
		ran := map[int][]clusterer.Command{}
		for id, c := range nodes {
			require.NoError(t, c.RegisterCommand("reload", func(cmd clusterer.Command) {
				mu.Lock()
				ran[id] = append(ran[id], cmd)
				mu.Unlock()
			}))
		}
		require.ErrorIs(t, nodes[1].RegisterCommand("reload", func(clusterer.Command) {}), clusterer.ErrConfig)
		time.Sleep(3 * time.Second)

		require.NoError(t, nodes[1].SendCommand(cl, 2, "reload", "dr", "full"))
		require.NoError(t, nodes[2].BroadcastCommand(cl, "reload", "all"))
		require.NoError(t, nodes[3].SendCommand(cl, 1, "unknown-here"))
		synctest.Wait()
		mu.Lock()
		assert.ElementsMatch(t, []clusterer.Command{{Cluster: cl, Src: 1, Name: "reload", Params: []string{"dr", "full"}},
			{Cluster: cl, Src: 2, Name: "reload", Params: []string{"all"}}}, ran[2], "broadcast runs locally too")
		assert.Equal(t, []clusterer.Command{{Cluster: cl, Src: 2, Name: "reload", Params: []string{"all"}}}, ran[1])
		assert.Equal(t, []clusterer.Command{{Cluster: cl, Src: 2, Name: "reload", Params: []string{"all"}}}, ran[3])
		mu.Unlock()
		assert.Equal(t, uint64(1), nodes[1].Stats().UnknownCommand)

		eleven := make([]string, 11)
		require.ErrorIs(t, nodes[1].SendCommand(cl, 2, "reload", eleven...), clusterer.ErrPacket)
		require.ErrorIs(t, nodes[1].BroadcastCommand(cl, "reload", eleven...), clusterer.ErrPacket)
		require.ErrorIs(t, nodes[1].SendCommand(cl, 9, "reload"), clusterer.ErrDestDown)
	})
}

type whereis struct {
	User string
	AOR  []string
}

func TestTypedPayloads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {1}}, 1, 2)
		nodes[2].HandleRequests(func(req clusterer.Message) (string, bool) {
			var q whereis
			if err := req.Decode(&q); err != nil {
				return "bad request", true
			}
			q.AOR = []string{"sip:" + q.User + "@10.0.0.2"}
			out, err := clusterer.Encode(q)
			return out, err == nil
		})
		time.Sleep(3 * time.Second)
		body, err := clusterer.Encode(whereis{User: "alice"})
		require.NoError(t, err)
		got, err := nodes[1].Request(context.Background(), cl, 2, body)
		require.NoError(t, err)
		var ans whereis
		require.NoError(t, clusterer.Decode(got, &ans))
		require.Equal(t, whereis{User: "alice", AOR: []string{"sip:alice@10.0.0.2"}}, ans)

		// A plain-text body is a clear error.
		got, err = nodes[1].Request(context.Background(), cl, 2, "alice")
		require.NoError(t, err)
		require.Equal(t, "bad request", got)
		require.ErrorIs(t, clusterer.Decode("alice", &ans), clusterer.ErrPayload)
		require.ErrorIs(t, clusterer.Decode("\xdd\xff\xff\xff\xff", &ans), clusterer.ErrPayload, "hostile array length")
	})
}

// TestOpenSIPSGenericAndMIFrames feeds the captured OpenSIPS GENERIC_MSG
// request and MI_CMD (node 2 to node 3 of session 1) to a Go node standing
// in as node 3, and its reply back through a captured-format check.
func TestOpenSIPSGenericAndMIFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{2: {3}}, 2, 3)
		got := make(chan clusterer.Message, 1)
		nodes[3].HandleRequests(func(req clusterer.Message) (string, bool) {
			got <- req
			return "rpl-from-3", true
		})
		var cmd []clusterer.Command
		require.NoError(t, nodes[3].RegisterCommand("cache_store", func(c clusterer.Command) { cmd = append(cmd, c) }))
		replies := &events{}
		t.Cleanup(nodes[2].Subscribe(0, replies.add))
		time.Sleep(3 * time.Second)

		// Send the captured frames as node 2 would: over node 2's own
		// connection, so that the source checks pass.
		for _, name := range []string{"generic_req_unicast", "mi_cmd"} {
			frame := vectorFrame(t, name)
			p, err := bin.Parse(frame)
			require.NoError(t, err)
			tr, err := bin.ParseTrailer(p.Body)
			require.NoError(t, err)
			require.Equal(t, bin.Trailer{Cluster: 1, Src: 2, Dst: 3}, tr)
			conn, err := nw.Dial(context.Background(), ip(2), ip(3)+":5555")
			require.NoError(t, err)
			_, err = conn.Write(frame)
			require.NoError(t, err)
			synctest.Wait()
			conn.Close()
		}
		req := <-got
		require.Equal(t, clusterer.Message{Cluster: 1, Src: 2, Request: true, Tag: "1-2-vAUncPTIyIWBqF2tfDLYiecK",
			Body: "req-from-2-to-3"}, req)
		synctest.Wait()
		require.Equal(t, []clusterer.Command{{Cluster: 1, Src: 2, Name: "cache_store", Params: []string{"local", "mi-key", "mi-val"}}}, cmd)
		rpl := replies.of(clusterer.ReplyReceived)
		require.Len(t, rpl, 1)
		require.Equal(t, clusterer.Event{Kind: clusterer.ReplyReceived, Cluster: 1, Node: 3, Tag: req.Tag, Msg: "rpl-from-3"}, rpl[0])
	})
}

func vectorFrame(t *testing.T, name string) []byte {
	t.Helper()
	for _, v := range golden.Vectors(t) {
		if v.Name == name {
			return v.Frame
		}
	}
	t.Fatalf("no vector %s", name)
	return nil
}

func TestMessagingOverTCP(t *testing.T) {
	ports := freePorts(t, 3)
	var nodes []*clusterer.Cluster
	cmds := make(chan clusterer.Command, 8)
	for i := range 3 {
		id := i + 1
		cc := clusterer.ClusterConfig{ID: cl, Self: clusterer.NodeInfo{URL: "bin:127.0.0.1:" + ports[i]}}
		if id > 1 {
			cc.Nodes = []clusterer.NodeInfo{{ClusterID: cl, ID: 1, URL: "bin:127.0.0.1:" + ports[0]}}
		}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc},
			PingInterval: time.Second, PingTimeout: 200 * time.Millisecond})
		require.NoError(t, err)
		c.HandleRequests(echo(id))
		require.NoError(t, c.RegisterCommand("flush", func(cmd clusterer.Command) { cmds <- cmd }))
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
	}
	require.Eventually(t, func() bool {
		for _, c := range nodes {
			if len(reachable(c)) != 2 {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			dst := 2 + i%2
			got, err := nodes[0].Request(ctx, cl, dst, fmt.Sprint(i))
			assert.NoError(t, err)
			assert.Equal(t, fmt.Sprintf("%d:%d", dst, i), got)
		})
	}
	wg.Wait()
	replies, err := nodes[2].Broadcast(ctx, cl, "all", clusterer.IncludeLocal())
	require.NoError(t, err)
	require.Equal(t, []clusterer.Reply{{Node: 1, Body: "1:all"}, {Node: 2, Body: "2:all"}, {Node: 3, Body: "3:all"}}, replies)

	require.NoError(t, nodes[1].BroadcastCommand(cl, "flush", "now"))
	from := map[int]bool{}
	for range 3 {
		select {
		case cmd := <-cmds:
			require.Equal(t, []string{"now"}, cmd.Params)
			from[cmd.Src] = true
		case <-ctx.Done():
			t.Fatal("command not run everywhere")
		}
	}
	require.Equal(t, map[int]bool{2: true}, from)
}

// A request from a node the responder has no route to yet (a node that is
// joining: here node 2, known to node 3 but never reachable) is answered
// on the connection it came in on.
func TestReplyGoesBackOnTheRequestsConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := clustertest.NewNetwork()
		defer nw.Close()
		nodes, _ := startNodes(t, nw, map[int][]int{3: {2}}, 3)
		nodes[3].HandleRequests(echo(3))
		time.Sleep(3 * time.Second)
		require.Empty(t, reachable(nodes[3]))

		conn, err := nw.Dial(context.Background(), ip(2), ip(3)+":5555")
		require.NoError(t, err)
		defer conn.Close()
		req := &wire.GenericMsg{Trailer: bin.Trailer{Cluster: cl, Src: 2, Dst: 3}, Request: true, Tag: "1-2-abc", Msg: "hi"}
		frame, err := req.Append(nil)
		require.NoError(t, err)
		_, err = conn.Write(frame)
		require.NoError(t, err)

		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		sr := bin.NewStreamReader(conn)
		p, err := sr.NextPacket()
		require.NoError(t, err)
		msg, err := wire.Decode(p)
		require.NoError(t, err)
		require.Equal(t, &wire.GenericMsg{Trailer: bin.Trailer{Cluster: cl, Src: 3, Dst: 2}, Tag: "1-2-abc", Msg: "3:hi"}, msg)
		require.Zero(t, nodes[3].Stats().ReplyDropped)
	})
}
