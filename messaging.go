package clusterer

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"

	"go.uber.org/zap"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/core"
	"github.com/clusterer-go/clusterer/internal/wire"
)

// Generic messages (GENERIC_MSG, spec §12): nodes ask each other questions
// ("where is user X registered?") and answer them, correlated by a tag.
// OpenSIPS scripts send them with cluster_send_req, cluster_broadcast_req
// and cluster_send_rpl and receive them as E_CLUSTERER_REQ_RECEIVED and
// E_CLUSTERER_RPL_RECEIVED; the Go API adds blocking calls that wait for
// the answers. Tags have OpenSIPS's form, so either side may be OpenSIPS.

// Message is a generic message received from a node (or, for a broadcast
// that includes the local node, from the local node itself).
type Message struct {
	Cluster int
	// Src is the node that sent it.
	Src int
	// Request is true for a request, false for a reply.
	Request bool
	// Tag correlates a reply with its request: "<cluster>-<node>-<random>".
	Tag string
	// Body is the message text. Go nodes may carry a msgpack value in it
	// (see Encode and Message.Decode); OpenSIPS scripts see a string.
	Body string
}

// inbound is a request for the handler and the connection it arrived on
// (0: local, or through the protocol loop).
type inbound struct {
	req  Message
	conn uint64
}

// Decode unmarshals a body made by Encode into v.
func (m Message) Decode(v any) error { return Decode(m.Body, v) }

// Reply is one node's answer to a request.
type Reply struct {
	Node int
	// Body is the reply text when Err is nil.
	Body string
	// Err says why there is no reply: ErrDestDown (the node was or became
	// unreachable), a send error, or the context's error.
	Err error
}

// RequestHandler answers requests: it returns the reply text and true to
// reply, or false to send nothing (the host may reply later with
// SendReply). It runs on a goroutine of its own, one request at a time.
type RequestHandler func(req Message) (reply string, ok bool)

// CommandFunc runs a remote command (MI_CMD) with its string parameters.
// As in OpenSIPS, nothing is sent back.
type CommandFunc func(cmd Command)

// Command is a remote command to run.
type Command struct {
	Cluster int
	// Src is the node that sent it (the local node for the local run of a
	// broadcast).
	Src    int
	Name   string
	Params []string
}

// MaxCommandParams bounds the parameters of a remote command, as OpenSIPS
// receivers do.
const MaxCommandParams = wire.MaxMIParams

// ErrUnknownCommand: a command name that is not registered.
var ErrUnknownCommand = errors.New("clusterer: unknown command")

// ErrNoHandler: the local node was asked (IncludeLocal) but has no
// request handler to answer.
var ErrNoHandler = errors.New("clusterer: no request handler")

// ErrPayload wraps failures to encode or decode a message body.
var ErrPayload = errors.New("clusterer: bad message payload")

// messaging holds the requests in flight and the host's handlers.
type messaging struct {
	c *Cluster

	mu       sync.Mutex
	rng      *rand.ChaCha8 // tag randomness
	calls    map[string]*call
	reqBox   *mailbox[inbound]
	reqFn    RequestHandler
	commands map[string]CommandFunc
	cmdBox   *mailbox[Command]
	closed   bool
}

// call is a Request or Broadcast waiting for replies.
type call struct {
	cluster int32
	waiting map[int32]int // node -> index in replies
	replies []Reply
	done    chan struct{}
}

func newMessaging(c *Cluster) *messaging {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand panics instead)
	return &messaging{c: c, rng: rand.NewChaCha8(seed), calls: map[string]*call{}, commands: map[string]CommandFunc{}}
}

// tagAlphabet is what OpenSIPS draws its tags' random part from.
const tagAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxy123456"

// newTag makes a fresh tag; the caller holds mu.
func (g *messaging) newTag(cluster int32) string {
	b := make([]byte, 0, 40)
	b = strconv.AppendInt(b, int64(cluster), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(g.c.me), 10)
	b = append(b, '-')
	for range 24 {
		b = append(b, tagAlphabet[g.rng.Uint64()%uint64(len(tagAlphabet))])
	}
	return string(b)
}

func (g *messaging) tag(cluster int32) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.newTag(cluster)
}

// HandleRequests sets the function that answers generic requests (nil
// removes it). Requests also reach Subscribe as RequestReceived events,
// whether or not a handler is set (without one, they are counted in
// Stats.Unanswered). Requests are handled one at a time, in order; a
// handler that needs long (a database lookup) should return false and
// answer with SendReply from a goroutine of its own. At most
// Config.HandlerQueue requests wait for the handler; more are dropped and
// counted.
func (c *Cluster) HandleRequests(fn RequestHandler) {
	g := c.msgs
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reqFn = fn
	if fn != nil && g.reqBox == nil && !g.closed {
		g.reqBox = newMailbox[inbound](c.cfg.HandlerQueue, &c.stats.handlerDrops)
		g.reqBox.start(g.answer)
	}
}

// answer runs on the request handler's goroutine.
func (g *messaging) answer(in inbound) {
	req := in.req
	g.mu.Lock()
	fn := g.reqFn
	g.mu.Unlock()
	if fn == nil {
		return
	}
	reply, ok := fn(req)
	if !ok {
		return
	}
	err := g.c.SendReply(req.Cluster, req.Src, req.Tag, reply)
	if errors.Is(err, ErrDestDown) && in.conn != 0 {
		// The asker reached us before we knew a route back (it is
		// joining): answer on the connection the request came in on.
		err = g.c.replyOnConn(in.conn, req, reply)
	}
	if err != nil {
		g.c.stats.replyDropped.Add(1)
		g.c.log.Debug("reply not sent", zap.Int("cluster", req.Cluster), zap.Int("peer", req.Src),
			zap.String("tag", req.Tag), zap.Error(err))
	}
}

// replyOnConn sends a reply straight back on the request's connection.
func (c *Cluster) replyOnConn(conn uint64, req Message, reply string) error {
	m := genericMsg(false, req.Tag, reply)(bin.Trailer{Cluster: int32(req.Cluster), Src: c.me, Dst: int32(req.Src)})
	frame, err := m.Append(nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPacket, err)
	}
	if err := c.peers.Reply(conn, frame); err != nil {
		return fmt.Errorf("%w: %w", ErrSend, err)
	}
	return nil
}

// SendRequest sends a request to one node without waiting for the reply
// (cluster_send_req) and returns its tag. Replies arrive as ReplyReceived
// events. Errors are those of SendTo.
func (c *Cluster) SendRequest(cluster, node int, msg string) (tag string, err error) {
	tag = c.msgs.tag(int32(cluster))
	return tag, c.sendGeneric(cluster, node, true, tag, msg)
}

// SendReply answers a request (cluster_send_rpl): tag is the request's.
func (c *Cluster) SendReply(cluster, node int, tag, msg string) error {
	return c.sendGeneric(cluster, node, false, tag, msg)
}

// BroadcastRequest sends a request to every reachable enabled node of the
// cluster (cluster_broadcast_req) without waiting for replies, and to the
// local node too when includeLocal is set (OpenSIPS 3.6's "all"; that copy
// never touches the wire). It fails only when no copy went out.
func (c *Cluster) BroadcastRequest(cluster int, msg string, includeLocal bool) (tag string, err error) {
	cv, err := c.sendable(cluster)
	if err != nil {
		return "", err
	}
	tag = c.msgs.tag(cv.ID)
	if includeLocal {
		c.msgs.received(Message{Cluster: cluster, Src: int(c.me), Request: true, Tag: tag, Body: msg}, 0)
	}
	return tag, c.sendToEach(cv, includeLocal, func(n *core.NodeView) error {
		return c.sendExtra(cv, n, genericMsg(true, tag, msg))
	})
}

// Request sends a request to one node and waits for its reply, the node
// becoming unreachable (ErrDestDown), or the end of ctx. A node that is
// unreachable when called fails at once, with SendTo's errors.
func (c *Cluster) Request(ctx context.Context, cluster, node int, msg string) (string, error) {
	if node == int(c.me) {
		return "", fmt.Errorf("%w: a request to the local node", ErrUnknownNode)
	}
	replies, err := c.request(ctx, cluster, []int{node}, msg, false)
	if err != nil {
		return "", err
	}
	r := replies[0]
	return r.Body, r.Err
}

// BroadcastOption changes a Broadcast.
type BroadcastOption func(*broadcastOptions)

type broadcastOptions struct{ local bool }

// IncludeLocal makes Broadcast ask the local node too, through its own
// request handler (OpenSIPS 3.6's "all" flag).
func IncludeLocal() BroadcastOption { return func(o *broadcastOptions) { o.local = true } }

// Broadcast sends a request to every node of the cluster reachable and
// enabled when it is called and collects the replies. It returns as soon
// as each of those nodes has answered or become unreachable, or when ctx
// ends: then the nodes still silent have ctx's error, which Broadcast also
// returns. Replies are ordered by node id. With no node to ask it returns
// ErrDestDown.
func (c *Cluster) Broadcast(ctx context.Context, cluster int, msg string, opts ...BroadcastOption) ([]Reply, error) {
	var o broadcastOptions
	for _, fn := range opts {
		fn(&o)
	}
	cv, err := c.sendable(cluster)
	if err != nil {
		return nil, err
	}
	var nodes []int
	for i := range cv.Nodes {
		if n := &cv.Nodes[i]; n.Reachable && n.Enabled {
			nodes = append(nodes, int(n.ID))
		}
	}
	if len(nodes) == 0 && !o.local {
		return nil, ErrDestDown
	}
	return c.request(ctx, cluster, nodes, msg, o.local)
}

// request sends msg to nodes (and locally) under one tag and waits.
func (c *Cluster) request(ctx context.Context, cluster int, nodes []int, msg string, local bool) ([]Reply, error) {
	g := c.msgs
	k := &call{cluster: int32(cluster), waiting: map[int32]int{}, done: make(chan struct{})}
	all := nodes
	if local {
		all = append(append([]int(nil), nodes...), int(c.me))
	}
	slices.Sort(all)
	for i, id := range all {
		k.replies = append(k.replies, Reply{Node: id})
		k.waiting[int32(id)] = i
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, ErrClosed
	}
	tag := g.newTag(k.cluster)
	g.calls[tag] = k
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.calls, tag)
		g.mu.Unlock()
	}()

	// Read the view only once the call is registered: a node that goes
	// down later ends its wait through unreachable, one that went down
	// before is seen down here (the view is published before events).
	cv, err := c.sendable(cluster)
	if err != nil {
		return nil, err
	}
	for _, id := range nodes {
		n := cv.Node(int32(id))
		if n == nil || !n.Reachable || !n.Enabled {
			g.finish(k, int32(id), Reply{Err: ErrDestDown})
			continue
		}
		if err := c.sendExtra(cv, n, genericMsg(true, tag, msg)); err != nil {
			g.finish(k, int32(id), Reply{Err: err})
		}
	}
	if local {
		g.mu.Lock()
		none := g.reqFn == nil
		g.mu.Unlock()
		if none {
			g.finish(k, c.me, Reply{Err: ErrNoHandler})
		}
		g.received(Message{Cluster: cluster, Src: int(c.me), Request: true, Tag: tag, Body: msg}, 0)
	}
	select {
	case <-k.done:
		return k.replies, nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(k.waiting) == 0 {
		return k.replies, nil // completed meanwhile
	}
	for id := range k.waiting {
		g.finishLocked(k, id, Reply{Err: ctx.Err()})
	}
	return k.replies, ctx.Err()
}

// finish records one node's outcome of a call, unless it already has one.
func (g *messaging) finish(k *call, node int32, r Reply) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.finishLocked(k, node, r)
}

func (g *messaging) finishLocked(k *call, node int32, r Reply) {
	i, ok := k.waiting[node]
	if !ok {
		return
	}
	r.Node = int(node)
	k.replies[i] = r
	delete(k.waiting, node)
	if len(k.waiting) == 0 {
		close(k.done)
	}
}

// received takes a generic message for the local node: a reply completes
// its call; every message goes to the handler and the subscribers. It
// never blocks (it runs on connection readers and the protocol loop).
func (g *messaging) received(m Message, conn uint64) {
	g.mu.Lock()
	if !m.Request {
		if k := g.calls[m.Tag]; k != nil && k.cluster == int32(m.Cluster) {
			g.finishLocked(k, int32(m.Src), Reply{Body: m.Body})
		}
	}
	box := g.reqBox
	if !m.Request || g.reqFn == nil {
		box = nil
	}
	g.mu.Unlock()
	if box != nil {
		box.put(inbound{req: m, conn: conn})
	} else if m.Request {
		g.c.stats.unanswered.Add(1)
	}
	kind := ReplyReceived
	if m.Request {
		kind = RequestReceived
	}
	g.c.publish(Event{Kind: kind, Cluster: m.Cluster, Node: m.Src, Tag: m.Tag, Msg: m.Body})
}

// unreachable ends the waits on a node that became unreachable (or on
// every node of a cluster, node 0, when the local node left it).
func (g *messaging) unreachable(cluster, node int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range g.calls {
		if k.cluster != cluster {
			continue
		}
		for id := range k.waiting {
			if (node == 0 && id != g.c.me) || id == node {
				g.finishLocked(k, id, Reply{Err: ErrDestDown})
			}
		}
	}
}

// close fails every call in flight and stops the handlers' goroutines.
func (g *messaging) close() {
	g.mu.Lock()
	g.closed = true
	for _, k := range g.calls {
		for id := range k.waiting {
			g.finishLocked(k, id, Reply{Err: ErrClosed})
		}
	}
	boxes := []interface{ close() }{}
	if g.reqBox != nil {
		boxes = append(boxes, g.reqBox)
	}
	if g.cmdBox != nil {
		boxes = append(boxes, g.cmdBox)
	}
	g.mu.Unlock()
	for _, b := range boxes {
		b.close()
	}
}

// --- remote commands (MI_CMD) ---

// RegisterCommand makes name runnable by other nodes (cluster_send_mi,
// cluster_broadcast_mi, SendCommand, BroadcastCommand). Commands run one at
// a time, in order of arrival, on a goroutine of their own; at most
// Config.HandlerQueue wait, more are dropped and counted.
func (c *Cluster) RegisterCommand(name string, fn CommandFunc) error {
	if name == "" || fn == nil {
		return fmt.Errorf("%w: a command needs a name and a function", ErrConfig)
	}
	g := c.msgs
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	if _, dup := g.commands[name]; dup {
		return fmt.Errorf("%w: command %q registered twice", ErrConfig, name)
	}
	g.commands[name] = fn
	if g.cmdBox == nil {
		g.cmdBox = newMailbox[Command](c.cfg.HandlerQueue, &c.stats.handlerDrops)
		g.cmdBox.start(g.run)
	}
	return nil
}

func (g *messaging) run(cmd Command) {
	g.mu.Lock()
	fn := g.commands[cmd.Name]
	g.mu.Unlock()
	fn(cmd)
}

// command queues a command received (or broadcast locally) for its
// function; false if the name is not registered.
func (g *messaging) command(cmd Command) bool {
	g.mu.Lock()
	_, ok := g.commands[cmd.Name]
	box := g.cmdBox
	g.mu.Unlock()
	if !ok {
		return false
	}
	box.put(cmd)
	return true
}

func checkCommand(name string, params []string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty command name", ErrPacket)
	case len(params) > MaxCommandParams:
		return fmt.Errorf("%w: %d command parameters (at most %d)", ErrPacket, len(params), MaxCommandParams)
	}
	return nil
}

// SendCommand runs a command on one node (cluster_send_mi). Nothing comes
// back: nil means sent. Errors are those of SendTo, or ErrPacket for more
// than MaxCommandParams parameters.
func (c *Cluster) SendCommand(cluster, node int, name string, params ...string) error {
	if err := checkCommand(name, params); err != nil {
		return err
	}
	cv, err := c.sendable(cluster)
	if err != nil {
		return err
	}
	n := cv.Node(int32(node))
	if n == nil || !n.Reachable {
		return ErrDestDown
	}
	return c.sendExtra(cv, n, miCmd(name, params))
}

// BroadcastCommand runs a command on every reachable enabled node of the
// cluster and, if it is registered here, on the local node too, as
// cluster_broadcast_mi does. It fails only when it ran nowhere.
func (c *Cluster) BroadcastCommand(cluster int, name string, params ...string) error {
	if err := checkCommand(name, params); err != nil {
		return err
	}
	cv, err := c.sendable(cluster)
	if err != nil {
		return err
	}
	ranLocally := c.msgs.command(Command{Cluster: cluster, Src: int(c.me), Name: name, Params: slices.Clone(params)})
	return c.sendToEach(cv, ranLocally, func(n *core.NodeView) error {
		return c.sendExtra(cv, n, miCmd(name, params))
	})
}

// --- receiving ---

// onExtra takes a clusterer-extra message for the local node on the data
// plane, and reports whether it was one of the messaging layer's
// (GENERIC_MSG, MI_CMD) or sync data (SYNC, SYNC_END), which must stay in
// order with the capability's packets; the others go to the protocol loop.
func (c *Cluster) onExtra(conn uint64, t bin.Trailer, p bin.Packet) bool {
	typ := wire.Type(p.Type)
	switch typ {
	case wire.TypeGenericMsg, wire.TypeMICmd, wire.TypeSync, wire.TypeSyncEnd:
	default:
		return false
	}
	msg, err := wire.Decode(p)
	if err != nil {
		c.stats.malformed.Add(1)
		return true
	}
	if typ == wire.TypeSync || typ == wire.TypeSyncEnd {
		c.onSync(t, msg)
		return true
	}
	c.extraMessage(conn, t, msg)
	return true
}

// extraMessage hands a decoded GENERIC_MSG or MI_CMD to the host.
func (c *Cluster) extraMessage(conn uint64, t bin.Trailer, msg wire.Message) {
	switch m := msg.(type) {
	case *wire.GenericMsg:
		c.msgs.received(Message{Cluster: int(t.Cluster), Src: int(t.Src), Request: m.Request, Tag: m.Tag, Body: m.Msg}, conn)
	case *wire.MICmd:
		if !c.msgs.command(Command{Cluster: int(t.Cluster), Src: int(t.Src), Name: m.Command, Params: m.Params}) {
			c.stats.unknownCommand.Add(1)
			c.log.Warn("remote command not registered", zap.Int("cluster", int(t.Cluster)), zap.Int("peer", int(t.Src)),
				zap.String("command", m.Command))
		}
	default:
		c.stats.unhandledMessages.Add(1)
	}
}

// sendExtra sends a clusterer-extra message, made by mk for the trailer
// addressing dst, through dst's next hop.
func (c *Cluster) sendExtra(cv *core.ClusterView, dst *core.NodeView, mk func(bin.Trailer) wire.Message) error {
	hop := cv.Node(dst.NextHop)
	if hop == nil {
		return ErrDestDown
	}
	m := mk(bin.Trailer{Cluster: cv.ID, Src: c.me, Dst: dst.ID})
	bp := framePool.Get().(*[]byte)
	frame, err := m.Append((*bp)[:0])
	if err != nil {
		framePool.Put(bp)
		return fmt.Errorf("%w: %w", ErrPacket, err)
	}
	return c.sendFrame(cv, hop, bp, frame)
}

func genericMsg(request bool, tag, msg string) func(bin.Trailer) wire.Message {
	return func(t bin.Trailer) wire.Message {
		return &wire.GenericMsg{Trailer: t, Request: request, Tag: tag, Msg: msg}
	}
}

func miCmd(name string, params []string) func(bin.Trailer) wire.Message {
	return func(t bin.Trailer) wire.Message {
		return &wire.MICmd{Trailer: t, Command: name, Params: params}
	}
}

// sendGeneric sends one GENERIC_MSG to a node.
func (c *Cluster) sendGeneric(cluster, node int, request bool, tag, msg string) error {
	cv, err := c.sendable(cluster)
	if err != nil {
		return err
	}
	n := cv.Node(int32(node))
	if n == nil || !n.Reachable {
		if node == int(c.me) && !request {
			// The reply to a request the local node broadcast to itself.
			c.msgs.received(Message{Cluster: cluster, Src: node, Tag: tag, Body: msg}, 0)
			return nil
		}
		return ErrDestDown
	}
	return c.sendExtra(cv, n, genericMsg(request, tag, msg))
}
