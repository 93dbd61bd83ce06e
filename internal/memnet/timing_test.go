package memnet_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/clusterer-go/clusterer/internal/memnet"
)

// A full buffer blocks the writer (durably, so synctest.Wait sees it) until
// the reader makes room.
func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(8))
		defer n.Close()
		l := listen(t, n, hostB+":1")
		c, s := connect(t, n, l, hostA)

		msg := "0123456789abcdefghij" // 20 bytes: 2.5 buffers
		w := async(time.Now(), func() (int, error) { return c.Write([]byte(msg)) })
		synctest.Wait()
		if !pending(w) {
			t.Fatal("Write of 20 bytes into an 8-byte buffer did not block")
		}
		got := readN(t, s, 8)
		synctest.Wait()
		if !pending(w) {
			t.Fatal("Write finished with 4 bytes still unsent")
		}
		got += readN(t, s, 8)
		synctest.Wait()
		if r := <-w; r.n != len(msg) || r.err != nil {
			t.Fatalf("Write = %d, %v", r.n, r.err)
		}
		got += readN(t, s, 4)
		if got != msg {
			t.Fatalf("read %q, want %q", got, msg)
		}
	})
}

func TestReadDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		l := listen(t, n, hostB+":1")
		c, s := connect(t, n, l, hostA)
		start := time.Now()

		// Expiry: the blocked Read returns exactly at the deadline.
		s.SetReadDeadline(start.Add(2 * time.Second))
		_, err := s.Read(make([]byte, 1))
		wantTimeout(t, "Read past deadline", err)
		if got := time.Since(start); got != 2*time.Second {
			t.Fatalf("Read timed out after %v, want 2s", got)
		}
		// Still expired: fails at once, even with data waiting.
		writeAll(t, c, "x")
		_, err = s.Read(make([]byte, 1))
		wantTimeout(t, "Read with an expired deadline", err)
		// Clearing the deadline makes the conn usable again.
		s.SetReadDeadline(time.Time{})
		if got := readN(t, s, 1); got != "x" {
			t.Fatalf("read %q", got)
		}

		// Extending a deadline while Read is blocked keeps it blocked until the
		// new deadline.
		start = time.Now()
		s.SetReadDeadline(start.Add(time.Second))
		r := async(start, func() (int, error) { return s.Read(make([]byte, 1)) })
		time.Sleep(500 * time.Millisecond)
		s.SetReadDeadline(start.Add(3 * time.Second))
		res := <-r
		wantTimeout(t, "Read after extended deadline", res.err)
		if res.at != 3*time.Second {
			t.Fatalf("extended deadline fired after %v, want 3s", res.at)
		}

		// Moving the deadline into the past wakes a Read blocked without one.
		s.SetReadDeadline(time.Time{})
		start = time.Now()
		r = async(start, func() (int, error) { return s.Read(make([]byte, 1)) })
		time.Sleep(time.Second)
		synctest.Wait()
		if !pending(r) {
			t.Fatal("Read without deadline returned")
		}
		s.SetDeadline(time.Now())
		res = <-r
		wantTimeout(t, "Read after deadline moved to the past", res.err)
		if res.at != time.Second {
			t.Fatalf("woken after %v, want 1s", res.at)
		}
	})
}

func TestWriteDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(4))
		defer n.Close()
		l := listen(t, n, hostB+":1")
		c, s := connect(t, n, l, hostA)
		start := time.Now()

		c.SetWriteDeadline(start.Add(time.Second))
		nw, err := c.Write([]byte("0123456789"))
		wantTimeout(t, "Write into a full buffer", err)
		if nw != 4 || time.Since(start) != time.Second {
			t.Fatalf("Write = %d after %v, want 4 bytes after 1s", nw, time.Since(start))
		}
		// A Write blocked for space and one queued behind it (waiting for the
		// first to finish) both obey a deadline set while they wait.
		c.SetWriteDeadline(time.Time{})
		start = time.Now()
		w1 := async(start, func() (int, error) { return c.Write([]byte("more")) })
		w2 := async(start, func() (int, error) { return c.Write([]byte("x")) })
		time.Sleep(time.Second)
		synctest.Wait()
		if !pending(w1) || !pending(w2) {
			t.Fatal("Writes into a full buffer returned")
		}
		c.SetWriteDeadline(time.Now().Add(time.Second))
		for _, w := range []<-chan result{w1, w2} {
			r := <-w
			wantTimeout(t, "blocked Write", r.err)
			if r.n != 0 || r.at != 2*time.Second {
				t.Fatalf("blocked Write = %d after %v, want 0 after 2s", r.n, r.at)
			}
		}
		// Draining and clearing the deadline makes writes work again.
		if got := readN(t, s, 4); got != "0123" {
			t.Fatalf("read %q", got)
		}
		c.SetWriteDeadline(time.Time{})
		writeAll(t, c, "ok")
		if got := readN(t, s, 2); got != "ok" {
			t.Fatalf("read %q", got)
		}
	})
}

func TestAcceptDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		l := listen(t, n, hostB+":1")
		start := time.Now()
		l.(interface{ SetDeadline(time.Time) error }).SetDeadline(start.Add(5 * time.Second))
		_, err := l.Accept()
		wantTimeout(t, "Accept past deadline", err)
		if time.Since(start) != 5*time.Second {
			t.Fatalf("Accept timed out after %v", time.Since(start))
		}
	})
}

// Delay is measured in fake time: bytes show up exactly d after their Write,
// in order, and only in the delayed direction.
func TestDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const d = 100 * time.Millisecond
		n := memnet.New()
		defer n.Close()
		l := listen(t, n, hostB+":1")
		n.Delay(hostA, hostB, d)

		start := time.Now()
		c, s := connect(t, n, l, hostA)
		if got := time.Since(start); got != d {
			t.Fatalf("Dial took %v, want the round trip %v", got, d)
		}

		start = time.Now()
		writeAll(t, c, "a")
		time.Sleep(30 * time.Millisecond)
		writeAll(t, c, "b")
		if got := readN(t, s, 1); got != "a" || time.Since(start) != d {
			t.Fatalf("read %q after %v, want \"a\" after %v", got, time.Since(start), d)
		}
		if got := readN(t, s, 1); got != "b" || time.Since(start) != d+30*time.Millisecond {
			t.Fatalf("read %q after %v, want \"b\" after %v", got, time.Since(start), d+30*time.Millisecond)
		}

		// The reverse direction is not delayed.
		start = time.Now()
		writeAll(t, s, "r")
		if got := readN(t, c, 1); got != "r" || time.Since(start) != 0 {
			t.Fatalf("reverse read %q after %v", got, time.Since(start))
		}

		// Removing the delay never lets later bytes overtake earlier ones.
		start = time.Now()
		writeAll(t, c, "1")
		n.Delay(hostA, hostB, 0)
		writeAll(t, c, "2")
		if got := readN(t, s, 2); got != "12" || time.Since(start) != d {
			t.Fatalf("read %q after %v, want \"12\" after %v", got, time.Since(start), d)
		}

		// EOF travels with the same delay as data.
		n.Delay(hostA, hostB, d)
		start = time.Now()
		c.Close()
		_, err := s.Read(make([]byte, 1))
		if err != io.EOF || time.Since(start) != d {
			t.Fatalf("Read after peer close = %v after %v, want EOF after %v", err, time.Since(start), d)
		}
		if st := n.Stats(hostA, hostB); st.DeliveredWrites != 4 || st.DroppedWrites != 0 {
			t.Errorf("Stats = %+v", st)
		}
	})
}

// Timers inside the bubble also drive the Dial context.
func TestDialContextTimeoutIsFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		listen(t, n, hostB+":1")
		n.Blackhole(hostA, hostB)
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		_, err := n.Dial(ctx, hostA, hostB+":1")
		if time.Since(start) != 30*time.Second {
			t.Fatalf("Dial gave up after %v, want 30s", time.Since(start))
		}
		wantErr(t, "Dial into a blackhole", err, context.DeadlineExceeded)
		wantErr(t, "Dial into a blackhole", err, os.ErrDeadlineExceeded)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%v is not a timeout", err)
		}
	})
}
