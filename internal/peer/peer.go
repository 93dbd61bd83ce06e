package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/clusterer-go/clusterer/bin"
)

// Queue buffer sizes. A peer's queue is two buffers that trade places: Send
// appends to one while the writer writes the other, so in steady state no
// Send allocates. A buffer that grew past retainQueueBuf in a burst is freed
// once the batches have stayed small for burstOver: a sustained load that
// only now and then lets the writer catch up keeps its buffers, rather than
// growing them again from scratch, copies and all, after every small batch.
const (
	initialQueueBuf = 16 << 10
	retainQueueBuf  = 1 << 20
	burstOver       = time.Second
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
	writing       *conn         // the connection a batch is being written to
	deferred      *failure      // cur's failure, seen by its reader while writing
	backoff       time.Duration // base of the next backoff delay; 0 = BackoffMin
	backoffUntil  time.Time     // Send fails with ErrBackoff before this
	closed        bool          // shut down by Disconnect, Close or retirement
	retiring      bool          // Retire: write what is queued, then shut down

	lastBig time.Time // when the writer last took a big batch (writer only)
}

// failure is one failed dial or broken connection, to be reported once.
type failure struct {
	c      *conn // nil for a failed dial
	err    error
	keep   bool   // OnFailure takes the unwritten frames
	unsent []byte // the unwritten frames, if kept
	frames int    // how many frames are unwritten
	bytes  int
}

func newPeer(m *Manager, addr string) *peer {
	ctx, cancel := context.WithCancel(m.ctx)
	return &peer{m: m, addr: addr, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
}

// enqueue copies nframes frames, concatenated in parts, into the queue,
// all or none, and wakes the writer.
func (p *peer) enqueue(nframes int, parts ...[]byte) error {
	size := 0
	for _, f := range parts {
		size += len(f)
	}
	st := &p.m.stats
	p.mu.Lock()
	if p.closed || p.retiring {
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
			st.dropBackoff.Add(uint64(nframes))
			st.dropBytes.Add(uint64(size))
			return ErrBackoff
		}
		p.backoffUntil = time.Time{}
	}
	if len(p.pending)+p.inflight+size > p.m.cfg.QueueBytes {
		p.mu.Unlock()
		st.dropQueueFull.Add(uint64(nframes))
		st.dropBytes.Add(uint64(size))
		return ErrQueueFull
	}
	n := len(p.pending)
	wasEmpty := n == 0
	if need := n + size; need > cap(p.pending) {
		// Double (append grows big slices by only 1.25x): a burst then
		// costs a few allocations, and none once both buffers have grown.
		buf := make([]byte, n, max(initialQueueBuf, 2*cap(p.pending), need))
		copy(buf, p.pending)
		p.pending = buf
	}
	p.pending = p.pending[:n+size] // no pointer written: no write barrier
	for _, f := range parts {
		n += copy(p.pending[n:], f)
	}
	p.pendingFrames += nframes
	p.mu.Unlock()
	// The writer re-checks the queue after every write, so it needs waking
	// only when the queue goes from empty to non-empty.
	if wasEmpty {
		p.poke()
	}
	return nil
}

func (p *peer) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run is the writer goroutine.
func (p *peer) run() {
	defer p.m.wg.Done()
	defer p.m.forgetRetired(p)
	var spare []byte
	for {
		select {
		case <-p.wake:
			spare = p.drain(spare)
			if p.retireIfIdle() {
				return
			}
		case <-p.ctx.Done():
			return
		}
	}
}

// drain writes batches until the queue is empty, dialling first if there is
// no connection, and returns the buffer to reuse for the next swap. It stops
// early when a dial fails (the queue is then handed back or discarded) or
// the peer is shut down.
func (p *peer) drain(spare []byte) []byte {
	m := p.m
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
		p.writing = c
		p.mu.Unlock()

		m.stats.writeBatches.Add(1)
		n, err := c.write(batch, m.cfg.WriteTimeout)
		p.written(c, batch, frames, n, err)
		spare = batch[:0]
		if cap(spare) > retainQueueBuf {
			if now := time.Now(); len(batch) > retainQueueBuf/4 {
				p.lastBig = now
			} else if now.Sub(p.lastBig) > burstOver {
				spare = nil // the burst is over; give the memory back
			}
		}
	}
}

// written accounts for a batch write on c that wrote n bytes. On error the
// frames not fully written go back to the owner with the failure, ahead of
// whatever was queued meanwhile, so their order is kept.
func (p *peer) written(c *conn, batch []byte, frames, n int, err error) {
	st := &p.m.stats
	var rest []byte
	restFrames, sentFrames, sentBytes := 0, frames, len(batch)
	if err != nil {
		var ok bool
		if rest, restFrames, ok = unwritten(batch, n); ok {
			sentFrames, sentBytes = frames-restFrames, len(batch)-len(rest)
		} else {
			// Not a sequence of BIN frames (which the receiver could not
			// frame either): lost, rather than handed back as such.
			st.dropConn.Add(uint64(frames))
			st.dropBytes.Add(uint64(len(batch)))
			sentFrames, sentBytes = 0, 0
		}
	}
	st.framesSent.Add(uint64(sentFrames))
	st.bytesSent.Add(uint64(sentBytes))

	p.mu.Lock()
	p.writing = nil
	f := p.deferred // the reader saw c fail while we wrote
	p.deferred = nil
	if err != nil && f == nil && p.cur == c {
		p.cur = nil
		f = p.failureLocked(c, fmt.Errorf("peer: write to %s: %w", p.addr, err))
	}
	p.mu.Unlock()

	switch {
	case f != nil:
		if restFrames > 0 {
			if f.keep {
				f.unsent = append(append(make([]byte, 0, len(rest)+len(f.unsent)), rest...), f.unsent...)
			}
			f.frames += restFrames
			f.bytes += len(rest)
		}
		p.report(f)
	case err != nil:
		// Shut down while writing: Disconnect or Close closed c.
		c.close()
		st.dropClosed.Add(uint64(restFrames))
		st.dropBytes.Add(uint64(len(rest)))
	}
}

// unwritten returns the frames of batch not completely written after n
// bytes went out. A frame cut short counts as unwritten: the receiver
// loses it with the connection. ok is false if batch is not a sequence of
// BIN frames.
func unwritten(batch []byte, n int) (rest []byte, frames int, ok bool) {
	start := -1
	for off := 0; off < len(batch); {
		l, err := bin.FrameLen(batch[off:])
		if err != nil || l > len(batch)-off {
			return nil, 0, false
		}
		if start < 0 && off+l > n {
			start = off
		}
		if start >= 0 {
			frames++
		}
		off += l
	}
	if start < 0 {
		return nil, 0, true
	}
	return batch[start:], frames, true
}

// connect dials the peer. On success the connection becomes current and its
// reader starts; on failure backoff begins and the failure is reported with
// the queue.
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
		f := p.failureLocked(nil, fmt.Errorf("peer: dial %s: %w", p.addr, err))
		first := p.backoff == 0
		wait := p.nextBackoffLocked()
		p.backoffUntil = time.Now().Add(wait)
		p.mu.Unlock()
		lvl := zap.DebugLevel
		if first { // later failures of a streak are routine retries
			lvl = zap.InfoLevel
		}
		m.log.Log(lvl, "peer: dial failed", zap.String("peer", p.addr), zap.Error(err),
			zap.Duration("backoff", wait), zap.Int("unsent_frames", f.frames))
		p.report(f)
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

// fail handles the failure of connection c seen by its reader (a reset, a
// close by the peer, or a failed Reply that closed c). Only the first report
// for the current connection counts; reports about a connection that is no
// longer current just make sure it is closed. If the writer is writing to c,
// closing c ends that write and the writer reports, so that the frames of
// its batch go back with the failure too.
func (p *peer) fail(c *conn, err error) {
	p.mu.Lock()
	if p.cur != c {
		p.mu.Unlock()
		c.close()
		return
	}
	p.cur = nil
	f := p.failureLocked(c, err)
	if p.writing == c {
		p.deferred = f
		p.mu.Unlock()
		c.close()
		return
	}
	p.mu.Unlock()
	p.report(f)
}

// failureLocked starts the report of a failure, taking the queue with it.
func (p *peer) failureLocked(c *conn, err error) *failure {
	f := &failure{c: c, err: err, keep: p.m.cfg.OnFailure != nil && !p.retiring,
		frames: p.pendingFrames, bytes: len(p.pending)}
	if f.keep && f.frames > 0 {
		f.unsent = bytes.Clone(p.pending) // the queue's buffer stays for reuse
	}
	p.discardLocked()
	return f
}

// report closes the failed connection and calls OnFailure with the frames
// it could not write. A peer being retired or shut down reports nothing:
// its owner has forgotten the address.
func (p *peer) report(f *failure) {
	m := p.m
	if f.c != nil {
		f.c.close()
		if cause := f.c.cause.Load(); cause != nil {
			f.err = *cause // we closed it (a failed Reply): report why
		}
		m.untrack(f.c) // Reply must not find it any more
		m.stats.connFailures.Add(1)
	}
	p.mu.Lock()
	quiet := p.closed || p.retiring
	p.mu.Unlock()
	switch {
	case quiet:
		m.stats.dropClosed.Add(uint64(f.frames))
		m.stats.dropBytes.Add(uint64(f.bytes))
		m.log.Debug("peer: retired peer failed", zap.String("peer", p.addr), zap.Error(f.err),
			zap.Int("dropped_frames", f.frames))
		return
	case m.cfg.OnFailure == nil:
		m.stats.dropConn.Add(uint64(f.frames))
		m.stats.dropBytes.Add(uint64(f.bytes))
	default:
		m.stats.returned.Add(uint64(f.frames))
	}
	if f.c != nil {
		m.log.Info("peer: connection lost", zap.String("peer", p.addr), zap.Uint64("conn", f.c.info.ID),
			zap.Error(f.err), zap.Int("unsent_frames", f.frames))
	}
	m.onFailure(p.addr, f.err, f.unsent)
}

// retire makes the writer shut the peer down once its queue is written.
func (p *peer) retire() {
	p.mu.Lock()
	p.retiring = true
	p.mu.Unlock()
	p.poke()
}

// retireIfIdle shuts a retiring peer down once nothing is left to write.
func (p *peer) retireIfIdle() bool {
	p.mu.Lock()
	idle := p.retiring && len(p.pending) == 0
	p.mu.Unlock()
	if idle {
		p.shutdown()
	}
	return idle
}

// shutdown stops the peer for Disconnect, Close or retirement: no failure
// is reported, the queue is dropped, the connection closed and the writer
// stopped.
func (p *peer) shutdown() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	c := p.cur
	p.cur = nil
	f := p.deferred
	p.deferred = nil
	frames, size := p.pendingFrames, len(p.pending)
	p.discardLocked()
	p.mu.Unlock()
	p.cancel()
	if c != nil {
		c.close()
	}
	if f != nil { // taken from the writer, which now reports nothing
		frames += f.frames
		size += f.bytes
	}
	p.m.stats.dropClosed.Add(uint64(frames))
	p.m.stats.dropBytes.Add(uint64(size))
}

// discardLocked empties the queue.
func (p *peer) discardLocked() {
	p.pendingFrames = 0
	if cap(p.pending) > retainQueueBuf {
		p.pending = nil
	} else {
		p.pending = p.pending[:0]
	}
}
