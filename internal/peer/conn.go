package peer

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/clusterer-go/clusterer/bin"
)

// conn is one connection, accepted or dialled, with its reader goroutine.
type conn struct {
	nc     net.Conn
	info   ConnInfo
	peer   *peer // the owning peer of an outgoing conn; nil if accepted
	closed atomic.Bool
	cause  atomic.Pointer[error] // why we closed it, for the reader to report

	// wmu serialises Writes (the peer's writer and Reply) so frames never
	// interleave and each Write gets its own deadline.
	wmu sync.Mutex
}

func (m *Manager) newConn(nc net.Conn, p *peer) *conn {
	c := &conn{nc: nc, peer: p}
	c.info = ConnInfo{
		ID:     m.nextID.Add(1),
		Remote: addrPort(nc.RemoteAddr()),
	}
	if p != nil {
		c.info.Outgoing = true
		c.info.PeerAddr = p.addr
	}
	return c
}

// write writes b, normally in one Write call, and returns how many bytes
// went out (a failed batch hands back only the frames not fully written).
func (c *conn) write(b []byte, timeout time.Duration) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return writeProgress(c.nc, b, timeout)
}

// writeProgress writes b to nc. timeout bounds how long the connection may
// accept no bytes at all: a big batch to a slow but live peer may take
// longer than timeout as a whole, and must not be mistaken for a dead one,
// so a Write that timed out after making progress is resumed with a fresh
// deadline. A stalled peer therefore fails after between one and two
// timeouts.
func writeProgress(nc net.Conn, b []byte, timeout time.Duration) (int, error) {
	written := 0
	for {
		if err := nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			return written, err
		}
		n, err := nc.Write(b)
		written += n
		if err == nil || n == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return written, err
		}
		b = b[n:]
	}
}

// closeWith closes the conn, recording err as the reason its reader reports.
func (c *conn) closeWith(err error) {
	c.cause.CompareAndSwap(nil, &err)
	c.close()
}

// close closes the network conn once; it unblocks the reader and any
// writer. It reports whether this call closed it.
func (c *conn) close() bool {
	if !c.closed.CompareAndSwap(false, true) {
		return false
	}
	_ = c.nc.Close()
	return true
}

// readLoop frames the connection's stream and hands frames to the
// connection's Receiver until the stream fails; then it closes the
// connection and, for an outgoing one, reports the failure at once (a
// crashed peer's reset is seen here first).
func (m *Manager) readLoop(c *conn) {
	defer m.wg.Done()
	sr := bin.NewStreamReader(c.nc)
	var recv Receiver = frameFunc{c.info, m.cfg.OnFrame}
	if m.cfg.NewReceiver != nil {
		recv = m.cfg.NewReceiver(c.info)
	}
	var frames, size uint64 // counted once per read, not per frame
	flush := func() {
		if frames > 0 {
			m.stats.framesRecv.Add(frames)
			m.stats.bytesRecv.Add(size)
			frames, size = 0, 0
		}
		recv.Flush()
	}
	for {
		if !sr.Ready() {
			flush()
		}
		frame, err := sr.Next()
		if err != nil {
			flush()
			m.readFailed(c, err)
			if m.cfg.OnConnClosed != nil {
				m.cfg.OnConnClosed(c.info)
			}
			return
		}
		frames++
		size += uint64(len(frame))
		if recv.Frame(frame, sr.Bulk()) {
			sr.Keep()
		}
	}
}

func (m *Manager) readFailed(c *conn, err error) {
	m.untrack(c)
	framing := errors.Is(err, bin.ErrBadMarker) || errors.Is(err, bin.ErrBadLength)
	if framing {
		m.stats.framingErrors.Add(1)
		m.log.Info("peer: framing error, closing connection",
			zap.Uint64("conn", c.info.ID), zap.Stringer("remote", c.info.Remote), zap.Error(err))
	}
	if c.peer != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("peer: connection to %s closed by peer: %w", c.peer.addr, err)
		} else {
			err = fmt.Errorf("peer: read from %s: %w", c.peer.addr, err)
		}
		c.peer.fail(c, err) // closes c; reports only if c is still current
		return
	}
	if c.close() && !framing { // not closed by us first: the dialler went away
		m.log.Debug("peer: accepted connection ended",
			zap.Uint64("conn", c.info.ID), zap.Stringer("remote", c.info.Remote), zap.Error(err))
	}
}

// addrPort converts a net.Addr to a netip.AddrPort (zero if it is not IP).
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
