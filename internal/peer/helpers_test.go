package peer_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/memnet"
	"github.com/clusterer-go/clusterer/internal/peer"
)

// *memnet.Network is a Transport as it is.
var _ peer.Transport = (*memnet.Network)(nil)

// Every test must leave no goroutine behind: Close waits for all of them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	hostA = "10.0.0.1"
	hostB = "10.0.0.2"
	hostC = "10.0.0.3"
	hostD = "10.0.0.4"
)

// addr is the BIN listener address of a memnet host.
func addr(ip string) string { return ip + ":5555" }

// Packet types used by the tests (values as in the clusterer protocol).
const (
	typePing      = 0
	typeUnknownID = 4
	typeData      = 100
)

// frame builds a BIN packet of exactly size bytes (at least 28) whose body
// starts with the sender and sequence number, then a pattern derived from
// them, so a receiver can check order and integrity.
func frame(sender, seq uint32, size int) []byte {
	const hdr = bin.HeaderLen + 2 + len("test") + 4
	body := make([]byte, size-hdr)
	binary.LittleEndian.PutUint32(body[0:], sender)
	binary.LittleEndian.PutUint32(body[4:], seq)
	for i := 8; i < len(body); i++ {
		body[i] = byte(sender*31 + seq + uint32(i))
	}
	f, err := bin.AppendPacket(nil, bin.Packet{Version: 1, Capability: "test", Type: typeData, Body: body})
	if err != nil {
		panic(err)
	}
	return f
}

// parseFrame returns what frame encoded and whether the frame is intact.
func parseFrame(f []byte) (sender, seq uint32, ok bool) {
	p, err := bin.Parse(f)
	if err != nil || len(p.Body) < 8 {
		return 0, 0, false
	}
	sender = binary.LittleEndian.Uint32(p.Body[0:])
	seq = binary.LittleEndian.Uint32(p.Body[4:])
	return sender, seq, bytes.Equal(f, frame(sender, seq, len(f)))
}

// typed builds a small packet of the given type.
func typed(typ int32) []byte {
	f, err := bin.AppendPacket(nil, bin.Packet{Version: 1, Capability: "test", Type: typ})
	if err != nil {
		panic(err)
	}
	return f
}

func typeOf(t testing.TB, f []byte) int32 {
	t.Helper()
	p, err := bin.Parse(f)
	require.NoError(t, err)
	return p.Type
}

type received struct {
	info  peer.ConnInfo
	frame []byte
}

type failure struct {
	addr   string
	err    error
	unsent []byte
	at     time.Time
}

// recorder keeps what a Manager's callbacks saw.
type recorder struct {
	mu       sync.Mutex
	frames   []received
	failures []failure
	closed   []peer.ConnInfo
}

func (r *recorder) onFrame(c peer.ConnInfo, f []byte) {
	r.mu.Lock()
	r.frames = append(r.frames, received{c, bytes.Clone(f)})
	r.mu.Unlock()
}

func (r *recorder) onFailure(addr string, err error, unsent []byte) {
	r.mu.Lock()
	r.failures = append(r.failures, failure{addr, err, unsent, time.Now()})
	r.mu.Unlock()
}

func (r *recorder) onConnClosed(c peer.ConnInfo) {
	r.mu.Lock()
	r.closed = append(r.closed, c)
	r.mu.Unlock()
}

func (r *recorder) Closed() []peer.ConnInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]peer.ConnInfo(nil), r.closed...)
}

func (r *recorder) Frames() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.frames...)
}

func (r *recorder) Failures() []failure {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]failure(nil), r.failures...)
}

type node struct {
	*peer.Manager
	rec  *recorder
	addr string // listening address
}

// startNode starts a Manager that records its callbacks; Close runs at
// cleanup.
func startNode(t testing.TB, tr peer.Transport, listen, localIP string, opts ...func(*peer.Config)) *node {
	t.Helper()
	rec := &recorder{}
	cfg := peer.Config{
		Transport:  tr,
		ListenAddr: listen,
		LocalIP:    localIP,
		OnFrame:    rec.onFrame,
		OnFailure:  rec.onFailure,

		OnConnClosed: rec.onConnClosed,
	}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := peer.New(cfg)
	require.NoError(t, err)
	require.NoError(t, m.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return &node{Manager: m, rec: rec, addr: m.Addr().String()}
}

// memNode starts a node on memnet host ip, listening on addr(ip).
func memNode(t testing.TB, n *memnet.Network, ip string, opts ...func(*peer.Config)) *node {
	t.Helper()
	return startNode(t, n, addr(ip), ip, opts...)
}

// eventually polls cond on the real clock.
func eventually(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(time.Millisecond)
	}
}
