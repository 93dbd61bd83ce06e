package memnet_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/clusterer-go/clusterer/internal/memnet"
)

func TestCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New(memnet.WithBufferSize(8))
		defer n.Close()
		la := listen(t, n, hostA+":1")
		lb := listen(t, n, hostB+":1")
		lc := listen(t, n, hostC+":1")

		ab, ba := connect(t, n, lb, hostA) // dialled A→B
		xb, xa := connect(t, n, la, hostB) // dialled B→A
		ac, ca := connect(t, n, lc, hostA) // A→C: must survive
		writeAll(t, ba, "lost")            // still unread when the cut hits: lost

		start := time.Now()
		blockedRead := async(start, func() (int, error) { return ba.Read(make([]byte, 1)) })
		blockedWrite := async(start, func() (int, error) { return xa.Write([]byte("0123456789abcdef")) })
		synctest.Wait()
		if !pending(blockedRead) || !pending(blockedWrite) {
			t.Fatal("setup: calls did not block")
		}

		n.Cut(hostA, hostB)
		wantErr(t, "pending Read", (<-blockedRead).err, syscall.ECONNRESET)
		wantErr(t, "pending Write", (<-blockedWrite).err, syscall.ECONNRESET)
		for _, c := range []struct {
			name string
			rw   io.ReadWriter
		}{{"A→B dialler", ab}, {"A→B acceptor", ba}, {"B→A dialler", xb}, {"B→A acceptor", xa}} {
			_, err := c.rw.Read(make([]byte, 1))
			wantErr(t, c.name+" Read", err, syscall.ECONNRESET)
			_, err = c.rw.Write([]byte("x"))
			wantErr(t, c.name+" Write", err, syscall.ECONNRESET)
		}
		if got := n.OpenConns(); got != 1 {
			t.Errorf("OpenConns after cut = %d, want 1 (A→C)", got)
		}

		// Other hosts are unaffected.
		writeAll(t, ac, "ok")
		if got := readN(t, ca, 2); got != "ok" {
			t.Fatalf("A→C read %q", got)
		}

		// New dials from→to are refused at once; to→from still connects.
		_, err := n.Dial(context.Background(), hostA, hostB+":1")
		wantErr(t, "Dial across a cut", err, syscall.ECONNREFUSED)
		if time.Since(start) != 0 {
			t.Errorf("refused dial took %v", time.Since(start))
		}
		rb, ra := connect(t, n, la, hostB)
		writeAll(t, rb, "b2a")
		if got := readN(t, ra, 3); got != "b2a" {
			t.Fatalf("read %q", got)
		}
		// ...but bytes sent across the cut reset that conn too.
		_, err = ra.Write([]byte("a→b"))
		wantErr(t, "Write across a cut", err, syscall.ECONNRESET)
		_, err = rb.Read(make([]byte, 1))
		wantErr(t, "Read on a conn reset by a Write across the cut", err, syscall.ECONNRESET)

		n.Heal(hostA, hostB)
		hb, hs := connect(t, n, lb, hostA)
		writeAll(t, hb, "healed")
		if got := readN(t, hs, 6); got != "healed" {
			t.Fatalf("read %q", got)
		}
		// Close still works (and is not an error) on a conn that was reset.
		if err := ab.Close(); err != nil {
			t.Errorf("Close of a reset conn: %v", err)
		}
	})
}

func TestBlackhole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		lb := listen(t, n, hostB+":1")
		c, s := connect(t, n, lb, hostA)

		n.Blackhole(hostA, hostB)
		writeAll(t, c, "vanishes") // Write succeeds
		s.SetReadDeadline(time.Now().Add(time.Minute))
		_, err := s.Read(make([]byte, 1))
		wantTimeout(t, "Read of blackholed bytes", err)
		s.SetReadDeadline(time.Time{})

		// The reverse direction still flows.
		writeAll(t, s, "back")
		if got := readN(t, c, 4); got != "back" {
			t.Fatalf("reverse read %q", got)
		}
		if st := n.Stats(hostA, hostB); st.DroppedWrites != 1 || st.DroppedBytes != 8 || st.DeliveredWrites != 0 {
			t.Errorf("Stats(A, B) = %+v", st)
		}

		// New dials hang until their context ends...
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err = n.Dial(ctx, hostA, hostB+":1")
		cancel()
		wantErr(t, "Dial into a blackhole", err, context.DeadlineExceeded)
		if time.Since(start) != 5*time.Second {
			t.Fatalf("Dial gave up after %v, want 5s", time.Since(start))
		}
		ctx, cancel = context.WithCancel(t.Context())
		d := async(time.Now(), func() (int, error) {
			_, err := n.Dial(ctx, hostA, hostB+":1")
			return 0, err
		})
		synctest.Wait()
		cancel()
		wantErr(t, "canceled Dial", (<-d).err, context.Canceled)

		// ...or until the blackhole is healed, when they connect.
		start = time.Now()
		d = async(start, func() (int, error) {
			c, err := n.Dial(context.Background(), hostA, hostB+":1")
			if err == nil {
				c.Close()
			}
			return 0, err
		})
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if !pending(d) {
			t.Fatal("Dial into a blackhole returned")
		}
		n.Heal(hostA, hostB)
		if r := <-d; r.err != nil || r.at != 3*time.Second {
			t.Fatalf("Dial after heal = %v at %v", r.err, r.at)
		}
		accept(t, lb).Close()

		writeAll(t, c, "arrives")
		if got := readN(t, s, 7); got != "arrives" {
			t.Fatalf("read after heal %q", got)
		}
	})
}

func TestRefuse(t *testing.T) {
	n := memnet.New()
	defer n.Close()
	la := listen(t, n, hostA+":1")
	lb := listen(t, n, hostB+":1")
	c, s := connect(t, n, lb, hostA)

	n.Refuse(hostA, hostB)
	_, err := n.Dial(context.Background(), hostA, hostB+":1")
	wantErr(t, "refused Dial", err, syscall.ECONNREFUSED)

	// Existing conns work both ways; the reverse direction still dials.
	writeAll(t, c, "ping")
	if got := readN(t, s, 4); got != "ping" {
		t.Fatalf("read %q", got)
	}
	writeAll(t, s, "pong")
	if got := readN(t, c, 4); got != "pong" {
		t.Fatalf("read %q", got)
	}
	connect(t, n, la, hostB)

	n.HealAll()
	connect(t, n, lb, hostA)
}

// frames writes count 4-byte sequence numbers, one Write each, closes, and
// returns the sequence numbers that arrived.
func sendFrames(t *testing.T, n *memnet.Network, count int) []uint32 {
	t.Helper()
	l := listen(t, n, hostB+":0")
	c, s := connect(t, n, l, hostA)
	defer l.Close()
	defer s.Close()
	for i := range count {
		var f [4]byte
		binary.BigEndian.PutUint32(f[:], uint32(i))
		if nw, err := c.Write(f[:]); nw != 4 || err != nil {
			t.Fatalf("Write = %d, %v", nw, err)
		}
	}
	c.Close()
	s.SetReadDeadline(time.Now().Add(guard))
	data, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)%4 != 0 {
		t.Fatalf("received %d bytes: a frame was split", len(data))
	}
	var got []uint32
	for i := 0; i < len(data); i += 4 {
		got = append(got, binary.BigEndian.Uint32(data[i:]))
	}
	return got
}

func TestDrop(t *testing.T) {
	const frames = 2000

	t.Run("p=1", func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		n.Drop(hostA, hostB, 1)
		if got := sendFrames(t, n, frames); len(got) != 0 {
			t.Fatalf("%d frames arrived", len(got))
		}
		st := n.Stats(hostA, hostB)
		if st.DroppedWrites != frames || st.DroppedBytes != 4*frames || st.DeliveredWrites != 0 {
			t.Errorf("Stats = %+v", st)
		}
	})

	t.Run("p=0", func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		n.Drop(hostA, hostB, 0)
		if got := sendFrames(t, n, frames); len(got) != frames {
			t.Fatalf("%d of %d frames arrived", len(got), frames)
		}
		if st := n.Stats(hostA, hostB); st.DeliveredWrites != frames || st.DroppedWrites != 0 {
			t.Errorf("Stats = %+v", st)
		}
	})

	t.Run("seeded fraction", func(t *testing.T) {
		run := func(seed int64) []uint32 {
			n := memnet.New(memnet.WithSeed(seed))
			defer n.Close()
			n.Drop(hostA, hostB, 0.25)
			got := sendFrames(t, n, frames)
			st := n.Stats(hostA, hostB)
			if st.DroppedWrites+st.DeliveredWrites != frames || st.DeliveredWrites != int64(len(got)) {
				t.Errorf("Stats = %+v with %d frames received", st, len(got))
			}
			return got
		}
		got := run(42)
		if !slices.IsSorted(got) {
			t.Error("surviving frames arrived out of order")
		}
		if dropped := frames - len(got); dropped < 400 || dropped > 600 {
			t.Errorf("dropped %d of %d at p=0.25", dropped, frames)
		}
		if again := run(42); !slices.Equal(got, again) {
			t.Error("the same seed dropped different frames")
		}
		if other := run(43); slices.Equal(got, other) {
			t.Error("a different seed dropped the same frames")
		}
	})

	t.Run("other links unaffected", func(t *testing.T) {
		n := memnet.New()
		defer n.Close()
		n.Drop(hostB, hostA, 1) // the reverse link
		if got := sendFrames(t, n, 100); len(got) != 100 {
			t.Fatalf("%d of 100 frames arrived", len(got))
		}
	})
}

// Faults are per directed link and keyed by host only.
func TestFaultErrorsAreTyped(t *testing.T) {
	n := memnet.New()
	defer n.Close()
	listen(t, n, hostB+":1")
	n.Cut(hostA, hostB)
	_, err := n.Dial(context.Background(), hostA, hostB+":1")
	var errno syscall.Errno
	if !errors.As(err, &errno) || errno != syscall.ECONNREFUSED {
		t.Fatalf("Dial across a cut: %v", err)
	}
	// Only the named direction is cut.
	if _, err := n.Dial(context.Background(), hostC, hostB+":1"); err != nil {
		t.Fatalf("C→B: %v", err)
	}
}
