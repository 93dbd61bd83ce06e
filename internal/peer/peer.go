package peer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Queue buffer sizes. A peer's queue is two buffers that trade places: Send
// appends to one while the writer writes the other, so in steady state no
// Send allocates. A buffer that grew past retainQueueBuf in a burst is freed
// once a small batch shows the burst is over.
const (
	initialQueueBuf = 16 << 10
	retainQueueBuf  = 1 << 20
)

// errPeerGone tells Send that Disconnect removed the peer it looked up.
var errPeerGone = errors.New("peer: peer removed")

// peer is the outgoing side towards one listener address: a byte queue, the
// current connection and the writer goroutine (run) that drains the queue.
type peer struct {
	m      *Manager
	addr   string
	wake   chan struct{}      // 1-buffered: "the queue became non-empty"
	ctx    context.Context    // cancelled by shutdown: aborts a dial
	cancel context.CancelFunc // and stops the writer

	mu            sync.Mutex
	pending       []byte // frames queued and not yet taken by the writer
	pendingFrames int
	inflight      int           // bytes of the batch being written
	cur           *conn         // current outgoing connection, nil if none
	backoff       time.Duration // base of the next backoff delay; 0 = BackoffMin
	backoffUntil  time.Time     // Send fails with ErrBackoff before this
	closed        bool          // shut down by Disconnect or Close
}

func newPeer(m *Manager, addr string) *peer {
	ctx, cancel := context.WithCancel(m.ctx)
	return &peer{m: m, addr: addr, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
}

// enqueue copies frames into the queue, all or none, and wakes the writer.
func (p *peer) enqueue(frames ...[]byte) error {
	size := 0
	for _, f := range frames {
		size += len(f)
	}
	st := &p.m.stats
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errPeerGone
	}
	if size == 0 { // nothing to write; do not dial for it either
		p.mu.Unlock()
		return nil
	}
	if !p.backoffUntil.IsZero() {
		if time.Now().Before(p.backoffUntil) {
			p.mu.Unlock()
			st.dropBackoff.Add(uint64(len(frames)))
			st.dropBytes.Add(uint64(size))
			return ErrBackoff
		}
		p.backoffUntil = time.Time{}
	}
	if len(p.pending)+p.inflight+size > p.m.cfg.QueueBytes {
		p.mu.Unlock()
		st.dropQueueFull.Add(uint64(len(frames)))
		st.dropBytes.Add(uint64(size))
		return ErrQueueFull
	}
	wasEmpty := len(p.pending) == 0
	if need := len(p.pending) + size; need > cap(p.pending) {
		// Double (append grows big slices by only 1.25x): a burst then
		// costs a few allocations, and none once both buffers have grown.
		buf := make([]byte, len(p.pending), max(initialQueueBuf, 2*cap(p.pending), need))
		copy(buf, p.pending)
		p.pending = buf
	}
	for _, f := range frames {
		p.pending = append(p.pending, f...)
	}
	p.pendingFrames += len(frames)
	p.mu.Unlock()
	// The writer re-checks the queue after every write, so it needs waking
	// only when the queue goes from empty to non-empty.
	if wasEmpty {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// run is the writer goroutine.
func (p *peer) run() {
	defer p.m.wg.Done()
	var spare []byte
	for {
		select {
		case <-p.wake:
			spare = p.drain(spare)
		case <-p.ctx.Done():
			return
		}
	}
}

// drain writes batches until the queue is empty, dialling first if there is
// no connection, and returns the buffer to reuse for the next swap. It stops
// early when a dial fails (the queue is then discarded) or the peer is shut
// down.
func (p *peer) drain(spare []byte) []byte {
	m := p.m
	st := &m.stats
	for {
		p.mu.Lock()
		p.inflight = 0
		if p.closed || len(p.pending) == 0 {
			p.mu.Unlock()
			return spare
		}
		c := p.cur
		if c == nil {
			p.mu.Unlock()
			if !p.connect() {
				return spare
			}
			continue
		}
		// Take everything queued so far; producers continue into spare.
		batch, frames := p.pending, p.pendingFrames
		p.pending, p.pendingFrames = spare[:0], 0
		p.inflight = len(batch)
		p.mu.Unlock()

		st.writeBatches.Add(1)
		if err := c.write(batch, m.cfg.WriteTimeout); err != nil {
			if p.isClosed() {
				st.dropClosed.Add(uint64(frames))
			} else {
				st.dropConn.Add(uint64(frames))
			}
			st.dropBytes.Add(uint64(len(batch)))
			p.fail(c, fmt.Errorf("peer: write to %s: %w", p.addr, err))
		} else {
			st.framesSent.Add(uint64(frames))
			st.bytesSent.Add(uint64(len(batch)))
		}
		spare = batch[:0]
		if cap(spare) > retainQueueBuf && len(batch) <= retainQueueBuf/4 {
			spare = nil // the burst is over; give the memory back
		}
	}
}

// connect dials the peer. On success the connection becomes current and its
// reader starts; on failure the queue is discarded, backoff begins and the
// failure is reported.
func (p *peer) connect() bool {
	m := p.m
	m.stats.dials.Add(1)
	ctx, cancel := context.WithTimeout(p.ctx, m.cfg.DialTimeout)
	nc, err := m.cfg.Transport.Dial(ctx, m.cfg.LocalIP, p.addr)
	cancel()
	if err != nil {
		m.stats.dialFailures.Add(1)
		p.mu.Lock()
		// Disconnect or Close aborted the dial: not a failure. (Close
		// cancels p.ctx before it marks the peer closed.)
		if p.closed || p.ctx.Err() != nil {
			p.mu.Unlock()
			return false
		}
		frames, bytes := p.discardLocked()
		first := p.backoff == 0
		wait := p.nextBackoffLocked()
		p.backoffUntil = time.Now().Add(wait)
		p.mu.Unlock()
		m.stats.dropConn.Add(uint64(frames))
		m.stats.dropBytes.Add(uint64(bytes))
		lvl := zap.DebugLevel
		if first { // later failures of a streak are routine retries
			lvl = zap.InfoLevel
		}
		m.log.Log(lvl, "peer: dial failed", zap.String("peer", p.addr), zap.Error(err),
			zap.Duration("backoff", wait), zap.Int("dropped_frames", frames))
		m.onFailure(p.addr, fmt.Errorf("peer: dial %s: %w", p.addr, err))
		return false
	}
	c := m.newConn(nc, p)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return false
	}
	// Current before its reader starts, so a reset seen at once is reported.
	p.cur = c
	p.backoff = 0
	p.mu.Unlock()
	if !m.track(c) { // Close is running and will not wait for a reader
		p.mu.Lock()
		if p.cur == c {
			p.cur = nil
		}
		p.mu.Unlock()
		c.close()
		return false
	}
	m.log.Info("peer: connected", zap.String("peer", p.addr), zap.Uint64("conn", c.info.ID),
		zap.Stringer("local", nc.LocalAddr()))
	return true
}

// nextBackoffLocked returns the delay before the next dial: the current base
// plus up to half of it in jitter (so nodes that lost the same peer do not
// redial in step), within [BackoffMin, BackoffMax]. The base doubles.
func (p *peer) nextBackoffLocked() time.Duration {
	lo, hi := p.m.cfg.BackoffMin, p.m.cfg.BackoffMax
	base := max(p.backoff, lo)
	wait := min(base+rand.N(base/2+1), hi)
	p.backoff = min(2*base, hi)
	return wait
}

// fail handles the failure of connection c, seen by its reader, the writer or
// Reply. Only the first report for the current connection counts: the
// connection is closed, the queue discarded and OnFailure called. Reports
// about a connection that is no longer current just make sure it is closed.
func (p *peer) fail(c *conn, err error) {
	p.mu.Lock()
	if p.cur != c {
		p.mu.Unlock()
		c.close()
		return
	}
	p.cur = nil
	frames, bytes := p.discardLocked()
	p.mu.Unlock()
	c.close()
	if cause := c.cause.Load(); cause != nil {
		err = *cause // we closed it (a failed Reply): report why
	}

	m := p.m
	m.untrack(c) // Reply must not find it any more
	m.stats.connFailures.Add(1)
	m.stats.dropConn.Add(uint64(frames))
	m.stats.dropBytes.Add(uint64(bytes))
	m.log.Info("peer: connection lost", zap.String("peer", p.addr), zap.Uint64("conn", c.info.ID),
		zap.Error(err), zap.Int("dropped_frames", frames))
	m.onFailure(p.addr, err)
}

// shutdown stops the peer for Disconnect or Close: no failure is reported,
// the queue is dropped, the connection closed and the writer stopped.
func (p *peer) shutdown() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	c := p.cur
	p.cur = nil
	frames, bytes := p.discardLocked()
	p.mu.Unlock()
	p.cancel()
	if c != nil {
		c.close()
	}
	p.m.stats.dropClosed.Add(uint64(frames))
	p.m.stats.dropBytes.Add(uint64(bytes))
}

// discardLocked empties the queue and returns what it held.
func (p *peer) discardLocked() (frames, bytes int) {
	frames, bytes = p.pendingFrames, len(p.pending)
	p.pendingFrames = 0
	if cap(p.pending) > retainQueueBuf {
		p.pending = nil
	} else {
		p.pending = p.pending[:0]
	}
	return frames, bytes
}

func (p *peer) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}
