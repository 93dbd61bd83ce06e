package memnet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer/internal/memnet"
)

func TestEchoRoundTrip(t *testing.T) {
	n := memnet.New()
	defer n.Close()
	l := listen(t, n, hostB+":5000")

	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		_, err = io.Copy(c, c) // echo until the client closes
		c.Close()              // before reporting: the test counts open conns next
		served <- err
	}()

	c := dial(t, n, hostA, hostB+":5000")
	c.SetDeadline(time.Now().Add(guard))
	for _, msg := range []string{"hello", "", "world, a longer message"} {
		writeAll(t, c, msg)
		if got := readN(t, c, len(msg)); got != msg {
			t.Fatalf("echo = %q, want %q", got, msg)
		}
	}

	local := c.LocalAddr().(*net.TCPAddr)
	if local.IP.String() != hostA || local.Port < 49152 {
		t.Errorf("LocalAddr = %v, want %s with an ephemeral port", local, hostA)
	}
	if got := c.RemoteAddr().String(); got != hostB+":5000" {
		t.Errorf("RemoteAddr = %s", got)
	}
	if got := n.OpenConns(); got != 1 {
		t.Errorf("OpenConns = %d, want 1", got)
	}
	c.Close()
	if err := waitDone(t, "echo server", served); err != nil {
		t.Fatalf("echo server: %v", err)
	}
	if got := n.OpenConns(); got != 0 {
		t.Errorf("OpenConns after both ends closed = %d, want 0", got)
	}
	st := n.Stats(hostA, hostB)
	if st.DeliveredWrites != 2 || st.DeliveredBytes != int64(len("hello")+len("world, a longer message")) {
		t.Errorf("Stats(A, B) = %+v", st) // the empty Write carries nothing
	}
}

func TestAcceptedConnSeesDiallerAddress(t *testing.T) {
	n := memnet.New()
	defer n.Close()
	l := listen(t, n, hostB+":5000")
	c, s := connect(t, n, l, hostA)
	if s.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("accepted RemoteAddr = %v, dialler LocalAddr = %v", s.RemoteAddr(), c.LocalAddr())
	}
	if s.LocalAddr().String() != hostB+":5000" {
		t.Errorf("accepted LocalAddr = %v", s.LocalAddr())
	}
	// A second conn from the same host gets a different port.
	c2, _ := connect(t, n, l, hostA)
	if c2.LocalAddr().String() == c.LocalAddr().String() {
		t.Errorf("two conns share local address %v", c.LocalAddr())
	}
}

func TestManyConcurrentConns(t *testing.T) {
	const clients, frames = 64, 50
	n := memnet.New(memnet.WithBufferSize(512)) // small, so writers block often
	defer n.Close()
	l := listen(t, n, hostB+":6000")

	var servers sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // listener closed
			}
			servers.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	}()

	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			errs <- func() error {
				from := fmt.Sprintf("10.1.%d.%d", i/200, i%200+1)
				c, err := n.Dial(context.Background(), from, hostB+":6000")
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(guard))
				// Read concurrently with writing: the echo needs both.
				readErr := make(chan error, 1)
				var want bytes.Buffer
				for f := range frames {
					fmt.Fprintf(&want, "client %d frame %d|", i, f)
				}
				go func() {
					got := make([]byte, want.Len())
					_, err := io.ReadFull(c, got)
					if err == nil && !bytes.Equal(got, want.Bytes()) {
						err = fmt.Errorf("client %d: echo mismatch", i)
					}
					readErr <- err
				}()
				for f := range frames {
					if _, err := fmt.Fprintf(c, "client %d frame %d|", i, f); err != nil {
						return err
					}
				}
				return <-readErr
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	servers.Wait()
	if got := n.OpenConns(); got != 0 {
		t.Errorf("OpenConns = %d, want 0", got)
	}
}

// Concurrent Writes on one conn must not interleave, even when each has to
// wait for buffer space several times.
func TestConcurrentWritesStayContiguous(t *testing.T) {
	const writers, size = 8, 1000
	n := memnet.New(memnet.WithBufferSize(64))
	defer n.Close()
	l := listen(t, n, hostB+":1")
	c, s := connect(t, n, l, hostA)
	s.SetReadDeadline(time.Now().Add(guard))

	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			if _, err := c.Write(bytes.Repeat([]byte{byte('a' + i)}, size)); err != nil {
				t.Error(err)
			}
		})
	}
	got := readN(t, s, writers*size)
	wg.Wait()
	for i := 0; i < len(got); i += size {
		if run := got[i : i+size]; run != strings.Repeat(run[:1], size) {
			t.Fatalf("bytes %d..%d are interleaved", i, i+size)
		}
	}
}

func TestListenAddresses(t *testing.T) {
	n := memnet.New()
	defer n.Close()

	// A wildcard listener takes dials to any IP on its port.
	l := listen(t, n, ":7000")
	dial(t, n, hostA, "10.0.0.9:7000")
	s := accept(t, l)
	if got := s.LocalAddr().String(); got != "10.0.0.9:7000" {
		t.Errorf("accepted LocalAddr via wildcard = %s, want the dialled address", got)
	}

	_, err := n.Listen("10.0.0.9:7000")
	wantErr(t, "Listen on a port a wildcard listener holds", err, syscall.EADDRINUSE)
	_, err = n.Listen(":7000")
	wantErr(t, "Listen twice", err, syscall.EADDRINUSE)

	// Port 0 picks a free ephemeral port.
	l0 := listen(t, n, hostC+":0")
	ap := netip.MustParseAddrPort(l0.Addr().String())
	if ap.Addr().String() != hostC || ap.Port() < 49152 {
		t.Errorf("Listen(:0) address = %v", ap)
	}

	for _, bad := range []string{"nope", "host.example:80", "10.0.0.1:99999", "10.0.0.1:x"} {
		if _, err := n.Listen(bad); err == nil {
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
	for _, bad := range []string{"10.0.0.1", "name:80", "0.0.0.0:80", "10.0.0.1:0"} {
		if _, err := n.Dial(context.Background(), hostA, bad); err == nil {
			t.Errorf("Dial(%q) succeeded", bad)
		}
	}
	if _, err := n.Dial(context.Background(), "not-an-ip", hostB+":1"); err == nil {
		t.Error("Dial from a non-IP succeeded")
	}
}

func TestDialNothingListening(t *testing.T) {
	n := memnet.New()
	defer n.Close()
	_, err := n.Dial(context.Background(), hostA, hostB+":9")
	wantErr(t, "Dial with nothing listening", err, syscall.ECONNREFUSED)
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Errorf("error %v is not a dial *net.OpError", err)
	}
}

func TestDialFunc(t *testing.T) {
	n := memnet.New()
	defer n.Close()
	l := listen(t, n, hostB+":80")
	dialFn := n.DialFunc(hostA)
	c, err := dialFn(context.Background(), "tcp", hostB+":80")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != hostA {
		t.Errorf("DialFunc source IP = %s", got)
	}
	accept(t, l)
	if _, err := dialFn(context.Background(), "udp", hostB+":80"); err == nil {
		t.Error("DialFunc accepted udp")
	}
}
