package memnet_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer/internal/memnet"
)

const (
	hostA = "10.0.0.1"
	hostB = "10.0.0.2"
	hostC = "10.0.0.3"
)

// guard bounds tests that run on the real clock so a bug fails instead of
// hanging; synctest tests need no guard (a deadlock panics there).
const guard = 10 * time.Second

func listen(t *testing.T, n *memnet.Network, addr string) net.Listener {
	t.Helper()
	l, err := n.Listen(addr)
	if err != nil {
		t.Fatalf("Listen(%q): %v", addr, err)
	}
	return l
}

func dial(t *testing.T, n *memnet.Network, from, addr string) net.Conn {
	t.Helper()
	c, err := n.Dial(context.Background(), from, addr)
	if err != nil {
		t.Fatalf("Dial(%s -> %s): %v", from, addr, err)
	}
	return c
}

func accept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	return c
}

// connect dials from host to addr (where l listens) and returns both ends.
// Dial completes before Accept, so no goroutine is needed.
func connect(t *testing.T, n *memnet.Network, l net.Listener, from string) (client, server net.Conn) {
	t.Helper()
	client = dial(t, n, from, l.Addr().String())
	server = accept(t, l)
	return client, server
}

func writeAll(t *testing.T, c net.Conn, s string) {
	t.Helper()
	n, err := c.Write([]byte(s))
	if err != nil || n != len(s) {
		t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}

func readN(t *testing.T, c net.Conn, size int) string {
	t.Helper()
	b := make([]byte, size)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("ReadFull(%d): %v", size, err)
	}
	return string(b)
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one matching %v", what, err, target)
	}
}

func wantTimeout(t *testing.T, what string, err error) {
	t.Helper()
	wantErr(t, what, err, os.ErrDeadlineExceeded)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s: %v is not a net.Error timeout", what, err)
	}
}

// waitDone waits on the real clock for ch, failing after guard.
func waitDone[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		t.Fatalf("%s: still blocked after %v", what, guard)
		panic("unreachable")
	}
}

type result struct {
	n   int
	err error
	at  time.Duration // when the call returned, since the test's start
}

// async runs f in a goroutine and delivers its result, stamped with the time
// elapsed since start, on the returned channel.
func async(start time.Time, f func() (int, error)) <-chan result {
	ch := make(chan result, 1)
	go func() {
		n, err := f()
		ch <- result{n, err, time.Since(start)}
	}()
	return ch
}

// pending reports whether ch has no value yet (after synctest.Wait, this
// means the call is durably blocked).
func pending(ch <-chan result) bool { return len(ch) == 0 }
