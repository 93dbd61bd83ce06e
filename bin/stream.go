package bin

import (
	"errors"
	"fmt"
	"io"
)

// StreamReader frames packets from a byte stream such as a TCP connection.
//
// A framing error (bad marker, length out of bounds) is permanent: the
// stream cannot be re-synchronised, so every later call returns the same
// error and the caller must close the connection, as OpenSIPS does.
//
// The reader keeps one buffer. It starts small and grows to hold a frame
// whose header passed the bounds check (so at most [MaxPacketLen] bytes),
// and, while the stream keeps filling it to the brim (bulk traffic), up to
// 256 KiB, so that a read carries many frames; after a long run of small
// reads it starts small again. Each read fills as much of the buffer as the
// stream offers, so one syscall usually yields many small frames.
type StreamReader struct {
	r          io.Reader
	buf        []byte
	start, end int // buffered, unconsumed bytes are buf[start:end]
	err        error
	brim       bool // the last read filled the buffer: more was waiting
	kept       bool // the caller keeps frames in buf: read into a new one
	small      int  // consecutive reads that used little of a grown buffer
}

// initialStreamBuf suits the clusterer's control traffic (pings, updates of
// a few hundred bytes); a stream that keeps the buffer full grows it up to
// maxStreamBuf, so bulk traffic costs fewer reads (each read of a TCP
// socket has a fixed cost, acknowledgement included, of several
// microseconds). Reads of bulkStreamBuf and more that fill the buffer are
// bulk (see [StreamReader.Bulk]). A buffer grown past initialStreamBuf is
// given up after shrinkReads reads that each used less than a sixteenth of
// it.
const (
	initialStreamBuf = 16 << 10
	bulkStreamBuf    = 64 << 10
	maxStreamBuf     = 256 << 10
	shrinkReads      = 64
)

// NewStreamReader returns a reader that frames packets from r.
func NewStreamReader(r io.Reader) *StreamReader {
	return &StreamReader{r: r}
}

// Buffered is the number of bytes read from the stream but not yet returned.
func (s *StreamReader) Buffered() int { return s.end - s.start }

// Ready reports whether [StreamReader.Next] would return without reading
// from the stream: a complete frame (or a framing error) is buffered.
func (s *StreamReader) Ready() bool {
	if s.err != nil {
		return true
	}
	if s.end-s.start < HeaderLen {
		return false
	}
	n, err := FrameLen(s.buf[s.start:s.end])
	return err != nil || s.end-s.start >= n
}

// Bulk reports whether the buffer holding the frames being returned was
// filled to the brim by the stream at its full size: the stream is
// carrying bulk traffic and the buffer is packed with frames.
func (s *StreamReader) Bulk() bool { return s.brim && len(s.buf) >= bulkStreamBuf }

// Keep hands the buffer holding the frames returned so far to the caller:
// they, and the frames returned until the next read, stay valid for good,
// and the reader continues in a new buffer. Keeping the frames of a bulk
// read (see [StreamReader.Bulk]) costs an allocation per read instead of a
// copy per frame.
func (s *StreamReader) Keep() { s.kept = true }

// Next returns the next complete frame. The frame aliases the reader's
// buffer and is valid only until the next call, unless kept (see
// [StreamReader.Keep]). At a clean end of stream
// between frames it returns io.EOF; inside a frame, io.ErrUnexpectedEOF.
func (s *StreamReader) Next() ([]byte, error) {
	if s.err != nil {
		return nil, s.err
	}
	if err := s.fill(HeaderLen); err != nil {
		return nil, err
	}
	n, err := FrameLen(s.buf[s.start:s.end])
	if err != nil {
		s.err = err
		return nil, err
	}
	if err := s.fill(n); err != nil {
		return nil, err
	}
	frame := s.buf[s.start : s.start+n : s.start+n]
	s.start += n
	return frame, nil
}

// NextPacket returns the next frame, parsed. Body aliases the reader's
// buffer and is valid only until the next call.
func (s *StreamReader) NextPacket() (Packet, error) {
	frame, err := s.Next()
	if err != nil {
		return Packet{}, err
	}
	p, err := Parse(frame)
	if err != nil {
		s.err = err // the header was bad in a way framing could not see
	}
	return p, err
}

// fill makes at least n bytes available at buf[start:].
func (s *StreamReader) fill(n int) error {
	if s.end-s.start >= n {
		return nil
	}
	if s.kept {
		s.kept = false
		s.buf = append(make([]byte, 0, len(s.buf)), s.buf[s.start:s.end]...)[:len(s.buf)]
		s.start, s.end = 0, s.end-s.start
	}
	if s.start == s.end {
		s.start, s.end = 0, 0 // nothing pending: reuse the whole buffer
		if s.small >= shrinkReads {
			s.buf, s.small = nil, 0 // the bulk is over: start small again
		}
	}
	if grow := s.brim && len(s.buf) < maxStreamBuf; grow || len(s.buf)-s.start < n {
		size := n
		if grow {
			size = max(n, min(2*len(s.buf), maxStreamBuf))
		}
		s.makeRoom(size)
	}
	for s.end-s.start < n {
		space := s.buf[s.end:]
		m, err := s.r.Read(space)
		s.end += m
		// Bulk: a read offered at least half the buffer took all of it.
		s.brim = m == len(space) && 2*len(space) >= len(s.buf)
		if s.brim || len(s.buf) <= initialStreamBuf || m >= len(s.buf)/16 {
			s.small = 0
		} else {
			s.small++
		}
		if s.end-s.start >= n {
			return nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if s.end == s.start {
					err = io.EOF
				} else {
					err = fmt.Errorf("bin: stream ended inside a packet: %w", io.ErrUnexpectedEOF)
				}
			}
			s.err = err
			return err
		}
		if m == 0 {
			// io.Reader allows (0, nil); treat a run of them as the stream
			// being stuck rather than spinning forever.
			if err := s.zeroRead(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *StreamReader) zeroRead() error {
	for range 100 {
		m, err := s.r.Read(s.buf[s.end:])
		s.end += m
		if m > 0 || err != nil {
			if err != nil {
				s.err = err
				return err
			}
			return nil
		}
	}
	s.err = io.ErrNoProgress
	return s.err
}

// makeRoom moves the unconsumed bytes to the front, growing the buffer to
// n bytes if it is smaller (n has already been bounds-checked).
func (s *StreamReader) makeRoom(n int) {
	size := max(len(s.buf), initialStreamBuf, n)
	buf := s.buf
	if len(buf) < size {
		buf = make([]byte, size)
	}
	copy(buf, s.buf[s.start:s.end])
	s.end -= s.start
	s.start = 0
	s.buf = buf
}
