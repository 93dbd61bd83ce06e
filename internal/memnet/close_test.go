package memnet_test

import (
	"context"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/clusterer-go/clusterer/internal/memnet"
)

func TestConnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(4))
		defer n.Close()
		l := listen(t, n, hostB+":1")
		c, s := connect(t, n, l, hostA)

		// The peer drains what was written, then reads EOF.
		writeAll(t, c, "data")
		c.Close()
		got, err := io.ReadAll(s)
		if string(got) != "data" || err != nil {
			t.Fatalf("ReadAll after peer close = %q, %v", got, err)
		}
		if _, err := s.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("second Read = %v, want io.EOF", err)
		}
		// Writing to a closed peer fails.
		_, err = s.Write([]byte("x"))
		wantErr(t, "Write to closed peer", err, syscall.EPIPE)

		// Own calls after Close fail with net.ErrClosed.
		_, err = c.Read(make([]byte, 1))
		wantErr(t, "Read after Close", err, net.ErrClosed)
		_, err = c.Write([]byte("x"))
		wantErr(t, "Write after Close", err, net.ErrClosed)
		wantErr(t, "second Close", c.Close(), net.ErrClosed)
		wantErr(t, "SetDeadline after Close", c.SetDeadline(time.Now()), net.ErrClosed)
		if got := n.OpenConns(); got != 1 {
			t.Errorf("OpenConns with one end open = %d, want 1", got)
		}
		s.Close()
		if got := n.OpenConns(); got != 0 {
			t.Errorf("OpenConns = %d, want 0", got)
		}

		// Close wakes this end's blocked Read and Write with net.ErrClosed...
		c, s = connect(t, n, l, hostA)
		start := time.Now()
		r := async(start, func() (int, error) { return c.Read(make([]byte, 1)) })
		w := async(start, func() (int, error) { return c.Write([]byte("0123456789")) })
		synctest.Wait()
		if !pending(r) || !pending(w) {
			t.Fatal("setup: calls did not block")
		}
		c.Close()
		wantErr(t, "blocked Read on Close", (<-r).err, net.ErrClosed)
		res := <-w
		wantErr(t, "blocked Write on Close", res.err, net.ErrClosed)
		if res.n != 4 {
			t.Errorf("blocked Write wrote %d, want 4", res.n)
		}
		// ...and the peer still gets the 4 bytes that made it, then EOF.
		if got, err := io.ReadAll(s); string(got) != "0123" || err != nil {
			t.Fatalf("peer ReadAll = %q, %v", got, err)
		}
		s.Close()

		// A Write blocked on a full buffer fails when the peer closes.
		c, s = connect(t, n, l, hostA)
		w = async(start, func() (int, error) { return c.Write([]byte("0123456789")) })
		synctest.Wait()
		s.Close()
		wantErr(t, "blocked Write on peer Close", (<-w).err, syscall.EPIPE)
		c.Close()
	})
}

func TestListenerClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		l := listen(t, n, hostB+":1")

		// A blocked Accept is woken by a dial...
		accepted := make(chan net.Conn, 1)
		a := async(time.Now(), func() (int, error) {
			c, err := l.Accept()
			accepted <- c
			return 0, err
		})
		synctest.Wait()
		if !pending(a) {
			t.Fatal("Accept did not block")
		}
		c := dial(t, n, hostA, hostB+":1")
		if err := (<-a).err; err != nil {
			t.Fatal(err)
		}
		s := <-accepted
		if s.RemoteAddr().String() != c.LocalAddr().String() {
			t.Fatalf("accepted the wrong conn: %v", s.RemoteAddr())
		}

		// ...and by Close, with net.ErrClosed.
		a = async(time.Now(), func() (int, error) { _, err := l.Accept(); return 0, err })
		synctest.Wait()
		if !pending(a) {
			t.Fatal("Accept did not block")
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "blocked Accept on Close", (<-a).err, net.ErrClosed)
		_, err := l.Accept()
		wantErr(t, "Accept after Close", err, net.ErrClosed)
		wantErr(t, "second Close", l.Close(), net.ErrClosed)
		_, err = n.Dial(context.Background(), hostA, hostB+":1")
		wantErr(t, "Dial after listener Close", err, syscall.ECONNREFUSED)

		// Accepted conns outlive their listener.
		writeAll(t, c, "still")
		if got := readN(t, s, 5); got != "still" {
			t.Fatalf("read %q", got)
		}

		// The address is free again.
		l = listen(t, n, hostB+":1")
		l.Close()
	})
}

func TestListenerCloseResetsQueuedConns(t *testing.T) {
	n := memnet.New()
	defer n.Close()
	l := listen(t, n, hostB+":1")
	c := dial(t, n, hostA, hostB+":1") // queued, never accepted
	if got := n.OpenConns(); got != 1 {
		t.Errorf("OpenConns with a queued conn = %d, want 1", got)
	}
	l.Close()
	_, err := c.Read(make([]byte, 1))
	wantErr(t, "Read on a conn its listener dropped", err, syscall.ECONNRESET)
	if got := n.OpenConns(); got != 0 {
		t.Errorf("OpenConns = %d, want 0", got)
	}
	c.Close()
}

// Network.Close releases every blocked caller and leaves no goroutine behind.
func TestNetworkClose(t *testing.T) {
	defer goleak.VerifyNone(t)

	n := memnet.New(memnet.WithBufferSize(4))
	l := listen(t, n, hostB+":1")
	c, _ := connect(t, n, l, hostA)
	listen(t, n, hostC+":1")
	n.Blackhole(hostA, hostC)

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	call := func(f func() error) { wg.Go(func() { errs <- f() }) }
	call(func() error { _, err := l.Accept(); return err })
	call(func() error { _, err := c.Read(make([]byte, 1)); return err })
	call(func() error { _, err := c.Write(make([]byte, 100)); return err })
	call(func() error { _, err := n.Dial(context.Background(), hostA, hostC+":1"); return err })

	time.Sleep(10 * time.Millisecond) // let them block; correctness does not depend on it
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	waitDone(t, "blocked calls after Network.Close", done)
	close(errs)
	for err := range errs {
		wantErr(t, "blocked call after Network.Close", err, net.ErrClosed)
	}
	if got := n.OpenConns(); got != 0 {
		t.Errorf("OpenConns = %d, want 0", got)
	}
	_, err := n.Listen(hostB + ":2")
	wantErr(t, "Listen after Close", err, net.ErrClosed)
	_, err = n.Dial(context.Background(), hostA, hostB+":1")
	wantErr(t, "Dial after Close", err, net.ErrClosed)
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// The same in a bubble: synctest.Test itself fails if any goroutine is left.
func TestNetworkCloseInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(4))
		l := listen(t, n, hostB+":1")
		c, s := connect(t, n, l, hostA)
		c.SetReadDeadline(time.Now().Add(time.Hour)) // a pending timer
		n.Delay(hostA, hostB, time.Second)
		writeAll(t, c, "late") // a pending delivery

		start := time.Now()
		calls := []<-chan result{
			async(start, func() (int, error) { _, err := l.Accept(); return 0, err }),
			async(start, func() (int, error) { return c.Read(make([]byte, 1)) }),
			async(start, func() (int, error) { return s.Read(make([]byte, 1)) }),
			async(start, func() (int, error) { return c.Write(make([]byte, 100)) }),
			async(start, func() (int, error) {
				_, err := n.Dial(t.Context(), hostA, hostB+":1") // waits out the delay
				return 0, err
			}),
		}
		synctest.Wait()
		n.Close()
		for _, ch := range calls {
			r := <-ch
			wantErr(t, "blocked call after Network.Close", r.err, net.ErrClosed)
			if r.at != 0 {
				t.Errorf("returned after %v, want at once", r.at)
			}
		}
	})
}
