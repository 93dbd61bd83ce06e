package bin

import (
	"bytes"
	"io"
	"testing"

	"github.com/clusterer-go/clusterer/internal/golden"
)

func seedFrames(f *testing.F) [][]byte {
	var frames [][]byte
	for _, v := range golden.Vectors(f) {
		frames = append(frames, v.Frame)
	}
	return frames
}

// FuzzParse: a frame that parses re-marshals to the same bytes, and its
// body can be popped in any way without panicking.
func FuzzParse(f *testing.F) {
	for _, fr := range seedFrames(f) {
		f.Add(fr)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, err := Parse(frame)
		if err != nil {
			return
		}
		out, err := AppendPacket(nil, p)
		if err != nil {
			if len(frame) > MaxSendLen {
				return
			}
			t.Fatalf("parsed packet does not marshal: %v", err)
		}
		if !bytes.Equal(out, frame) {
			t.Fatalf("re-marshal differs:\n% x\n% x", frame, out)
		}
		// Pop the body with a pattern derived from it; only errors may result.
		r := p.Reader()
		for i := 0; r.Err() == nil && r.Remaining() > 0; i++ {
			switch p.Body[i%len(p.Body)] % 5 {
			case 0:
				r.PopInt()
			case 1:
				r.PopBytes()
			case 2:
				r.PopTrailerInt()
			case 3:
				var v any
				_ = r.PopValue(&v)
			case 4:
				r.PopRaw(int(p.Body[0]))
			}
		}
	})
}

// FuzzStream: any byte stream frames into packets that are exactly the
// bytes consumed, or ends in an error; never a panic or a buffer past the
// bound.
func FuzzStream(f *testing.F) {
	frames := seedFrames(f)
	f.Add(bytes.Join(frames, nil), uint8(7))
	f.Add(frames[0], uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		s := NewStreamReader(&chunkReader{data: stream, n: int(chunk) + 1})
		consumed := 0
		for {
			fr, err := s.Next()
			if err != nil {
				break
			}
			if !bytes.Equal(fr, stream[consumed:consumed+len(fr)]) {
				t.Fatalf("frame at %d is not the stream's bytes", consumed)
			}
			consumed += len(fr)
		}
		if cap(s.buf) > MaxPacketLen+initialStreamBuf {
			t.Fatalf("buffer grew to %d", cap(s.buf))
		}
	})
}

type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.n, len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}
