package bin

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pingHex is the worked example of the wire spec (§2.3): a PING from node 2
// in cluster 1 asking for the node list.
const pingHex = "5034434b2e00000001001200636c757374657265722d696e7465726e616c00000000010000000200000001000000"

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

func TestParseWorkedExample(t *testing.T) {
	frame := mustHex(t, pingHex)
	p, err := Parse(frame)
	require.NoError(t, err)
	assert.Equal(t, int16(1), p.Version)
	assert.Equal(t, "clusterer-internal", p.Capability)
	assert.Equal(t, int32(0), p.Type)
	assert.Equal(t, 46, p.Len())
	r := p.Reader()
	assert.Equal(t, int32(1), r.PopInt())
	assert.Equal(t, int32(2), r.PopInt())
	assert.Equal(t, int32(1), r.PopInt())
	require.NoError(t, r.Done())

	again, err := AppendPacket(nil, p)
	require.NoError(t, err)
	assert.Equal(t, frame, again)
}

func TestBuilderMatchesWorkedExample(t *testing.T) {
	b := NewBuilder(1, "clusterer-internal", 0)
	b.PushInt(1)
	b.PushInt(2)
	b.PushInt(1)
	out, err := b.Finish()
	require.NoError(t, err)
	assert.Equal(t, mustHex(t, pingHex), out)
}

func TestParseErrors(t *testing.T) {
	good := mustHex(t, pingHex)
	mod := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	setLen := func(b []byte, n uint32) []byte { binary.LittleEndian.PutUint32(b[4:], n); return b }
	cases := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrTruncated},
		{"short header", good[:9], ErrTruncated},
		{"bad marker", mod(func(b []byte) []byte { b[0] = 'X'; return b }), ErrBadMarker},
		{"len below minimum", mod(func(b []byte) []byte { return setLen(b, 16) }), ErrBadLength},
		{"len above maximum", mod(func(b []byte) []byte { return setLen(b, 65536) }), ErrBadLength},
		{"len huge", mod(func(b []byte) []byte { return setLen(b, 0xffffffff) }), ErrBadLength},
		{"frame shorter than declared", good[:45], ErrTruncated},
		{"frame longer than declared", append(append([]byte(nil), good...), 0), ErrTrailingBytes},
		{"capability overruns", mod(func(b []byte) []byte { b[10] = 0xff; return b }), ErrBadCapability},
		{"empty capability", mod(func(b []byte) []byte { b[10], b[11] = 0, 0; return b }), ErrBadCapability},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.frame)
			require.ErrorIs(t, err, c.want)
		})
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	frame := mustHex(t, pingHex)
	InternCapability("usrloc-contact-repl")
	mod := NewBuilder(2, "usrloc-contact-repl", 3)
	mod.PushInt(1)
	mod.PushStr("aor")
	modFrame, err := mod.Finish()
	require.NoError(t, err)
	frames := [][]byte{frame, modFrame}
	var failed error
	allocs := testing.AllocsPerRun(100, func() {
		for _, f := range frames {
			p, err := Parse(f)
			if err != nil {
				failed = err
			}
			r := p.Reader()
			r.PopInt()
			_ = r.PopBytes()
			if r.Err() != nil {
				failed = r.Err()
			}
		}
	})
	require.NoError(t, failed)
	assert.Zero(t, allocs)
}

func TestReaderStickyErrorAndTrailer(t *testing.T) {
	b := NewBuilder(1, "clusterer-extra", 7)
	b.PushInt(1)
	b.PushStr("tag")
	b.PushBytes([]byte("msg"))
	b.PushTrailer(Trailer{Cluster: 1, Src: 2, Dst: 3})
	frame, err := b.Finish()
	require.NoError(t, err)

	tr, err := ParseTrailer(frame)
	require.NoError(t, err)
	assert.Equal(t, Trailer{1, 2, 3}, tr)

	p, err := Parse(frame)
	require.NoError(t, err)
	r := p.Reader()
	assert.Equal(t, Trailer{1, 2, 3}, r.PopTrailer())
	assert.Equal(t, int32(1), r.PopInt())
	assert.Equal(t, "tag", r.PopStr())
	assert.Equal(t, []byte("msg"), r.PopBytes())
	require.NoError(t, r.Done())

	// Popping past the end fails once and stays failed.
	assert.Zero(t, r.PopInt())
	require.ErrorIs(t, r.Err(), ErrTruncated)
	assert.Equal(t, "", r.PopStr())
	assert.Nil(t, r.PopRaw(0))
	require.ErrorIs(t, r.Done(), ErrTruncated)

	require.NoError(t, SetTrailerDst(frame, 9))
	tr, _ = ParseTrailer(frame)
	assert.Equal(t, int32(9), tr.Dst)
}

func TestReaderErrors(t *testing.T) {
	// A str whose length runs past the body.
	r := NewReader([]byte{5, 0, 'a', 'b'})
	assert.Nil(t, r.PopBytes())
	require.ErrorIs(t, r.Err(), ErrTruncated)

	r = NewReader([]byte{1, 2, 3, 4, 5})
	r.PopInt()
	require.ErrorIs(t, r.Done(), ErrTrailingBytes)

	r = NewReader([]byte{1, 2})
	assert.Nil(t, r.PopRaw(-1))
	require.ErrorIs(t, r.Err(), ErrTruncated)

	r = NewReader(nil)
	r.Fail(io.ErrClosedPipe)
	r.Fail(io.EOF)
	require.ErrorIs(t, r.Err(), io.ErrClosedPipe, "first error wins")
}

func TestBuilderBounds(t *testing.T) {
	b := NewBuilder(1, "cap", 1)
	b.PushStr(strings.Repeat("x", MaxStrLen+1))
	_, err := b.Finish()
	require.ErrorIs(t, err, ErrStrTooLong)

	b = NewBuilder(1, "cap", 1)
	for range 3 {
		b.PushBytes(make([]byte, 30000))
	}
	b.PushInt(1) // ignored after the error
	out, err := b.Finish()
	require.ErrorIs(t, err, ErrTooLarge)
	assert.Empty(t, out)

	// Exactly MaxSendLen is fine.
	b = NewBuilder(1, "cap", 1)
	b.PushRaw(make([]byte, MaxSendLen-b.Len()))
	out, err = b.Finish()
	require.NoError(t, err)
	assert.Len(t, out, MaxSendLen)
	_, err = Parse(out)
	require.NoError(t, err)

	_, err = AppendPacket(nil, Packet{Capability: "cap", Body: make([]byte, MaxSendLen)})
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = AppendPacket(nil, Packet{Capability: ""})
	require.ErrorIs(t, err, ErrBadCapability)

	b = NewBuilder(1, "", 1)
	_, err = b.Finish()
	require.ErrorIs(t, err, ErrBadCapability)
}

func TestBuilderAppendsToExistingBuffer(t *testing.T) {
	var b Builder
	b.Reset([]byte("prefix"), 1, "clusterer-internal", 0)
	b.PushInt(1)
	b.PushInt(2)
	at := b.Len()
	b.PushInt(0)
	b.SetInt(at, 1)
	out, err := b.Finish()
	require.NoError(t, err)
	assert.Equal(t, "prefix", string(out[:6]))
	assert.Equal(t, mustHex(t, pingHex), out[6:])

	b.Reset(nil, 1, "c", 0)
	b.SetInt(b.Len()-2, 5)
	_, err = b.Finish()
	require.Error(t, err, "SetInt inside the header or past the end is refused")
}

type record struct {
	AOR      string   `msgpack:"aor"`
	Contacts []string `msgpack:"contacts"`
	Expires  int64    `msgpack:"expires"`
}

func TestValueRoundTrip(t *testing.T) {
	in := record{AOR: "sip:alice@example.com", Contacts: []string{"sip:a@10.0.0.1", "sip:a@10.0.0.2"}, Expires: 3600}
	b := NewBuilder(1, "usrloc-contact-repl", 1)
	b.PushValue(in)
	b.PushInt(7)
	frame, err := b.Finish()
	require.NoError(t, err)

	p, err := Parse(frame)
	require.NoError(t, err)
	r := p.Reader()
	var out record
	require.NoError(t, r.PopValue(&out))
	assert.Equal(t, int32(7), r.PopInt())
	require.NoError(t, r.Done())
	assert.Equal(t, in, out)

	// A value that does not fit a str field is refused.
	b = NewBuilder(1, "c", 1)
	b.PushValue(strings.Repeat("y", MaxStrLen))
	_, err = b.Finish()
	require.ErrorIs(t, err, ErrStrTooLong)

	// A value msgpack cannot encode is an error, not a panic.
	b = NewBuilder(1, "c", 1)
	b.PushValue(make(chan int))
	_, err = b.Finish()
	require.Error(t, err)
}

func TestPopValueRejectsHostileValues(t *testing.T) {
	cases := map[string][]byte{
		"array32 claiming 4G elements": {0xdd, 0xff, 0xff, 0xff, 0xff},
		"map16 claiming 65535 pairs":   {0xde, 0xff, 0xff, 0x01},
		"str32 overrun":                {0xdb, 0x00, 0x10, 0x00, 0x00, 'a'},
		"bin8 overrun":                 {0xc4, 0x05, 'a'},
		"never-used byte":              {0xc1},
		"truncated float":              {0xcb, 0, 0},
		"trailing bytes":               {0x01, 0x02},
		"empty":                        {},
		"fixarray missing elements":    {0x93, 0x01},
		"ext32 overrun":                {0xc9, 0, 0, 0, 9, 1},
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			b := NewBuilder(1, "c", 1)
			b.PushBytes(v)
			frame, err := b.Finish()
			require.NoError(t, err)
			p, _ := Parse(frame)
			r := p.Reader()
			var out any
			require.ErrorIs(t, r.PopValue(&out), ErrBadValue)
		})
	}
	// Deep but well-formed nesting is accepted without recursion in the check.
	deep := bytes.Repeat([]byte{0x91}, 1000)
	deep = append(deep, 0xc0)
	require.NoError(t, checkMsgpack(deep))
}

func TestCheckMsgpackAcceptsEncoderOutput(t *testing.T) {
	values := []any{
		nil, true, 1, -1, -100, 1 << 40, 3.5, float32(1.5), "s", strings.Repeat("z", 300),
		[]byte{1, 2, 3}, []any{1, "a", []any{nil}}, map[string]any{"a": 1, "b": []int{1, 2}},
		record{AOR: "x", Contacts: []string{"y"}, Expires: -5},
	}
	for _, v := range values {
		b := NewBuilder(1, "c", 1)
		b.PushValue(v)
		frame, err := b.Finish()
		require.NoError(t, err)
		p, _ := Parse(frame)
		r := p.Reader()
		require.NoError(t, checkMsgpack(r.PopBytes()), "%#v", v)
	}
}

func concatFrames(t *testing.T, n int) ([]byte, [][]byte) {
	var all []byte
	var frames [][]byte
	for i := range n {
		b := NewBuilder(1, "clusterer-extra", 7)
		b.PushInt(int32(i))
		b.PushStr(strings.Repeat("p", i*37%500))
		b.PushTrailer(Trailer{1, 2, 3})
		f, err := b.Finish()
		require.NoError(t, err)
		frames = append(frames, f)
		all = append(all, f...)
	}
	return all, frames
}

func TestStreamReaderFraming(t *testing.T) {
	all, frames := concatFrames(t, 200)
	readers := map[string]io.Reader{
		"whole":         bytes.NewReader(all),
		"one byte":      iotest.OneByteReader(bytes.NewReader(all)),
		"half":          iotest.HalfReader(bytes.NewReader(all)),
		"data with EOF": iotest.DataErrReader(bytes.NewReader(all)),
	}
	for name, r := range readers {
		t.Run(name, func(t *testing.T) {
			s := NewStreamReader(r)
			for i, want := range frames {
				got, err := s.Next()
				require.NoError(t, err, "frame %d", i)
				require.Equal(t, want, got, "frame %d", i)
			}
			_, err := s.Next()
			require.ErrorIs(t, err, io.EOF)
			_, err = s.Next()
			require.ErrorIs(t, err, io.EOF, "errors are sticky")
		})
	}
}

func TestStreamReaderLargeFrame(t *testing.T) {
	b := NewBuilder(1, "big", 1)
	b.PushRaw(bytes.Repeat([]byte{0xab}, MaxSendLen-b.Len()))
	big, err := b.Finish()
	require.NoError(t, err)
	small := mustHex(t, pingHex)
	stream := append(append(append([]byte(nil), small...), big...), small...)
	s := NewStreamReader(iotest.HalfReader(bytes.NewReader(stream)))
	for _, want := range [][]byte{small, big, small} {
		p, err := s.NextPacket()
		require.NoError(t, err)
		got, err := AppendPacket(nil, p)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	assert.LessOrEqual(t, cap(s.buf), MaxPacketLen, "a big frame alone does not make a bulk stream")
}

func TestStreamReaderErrors(t *testing.T) {
	good := mustHex(t, pingHex)
	t.Run("bad marker closes the stream", func(t *testing.T) {
		bad := append([]byte("XXXX"), good[4:]...)
		s := NewStreamReader(bytes.NewReader(append(append([]byte(nil), good...), bad...)))
		_, err := s.Next()
		require.NoError(t, err)
		_, err = s.Next()
		require.ErrorIs(t, err, ErrBadMarker)
		_, err = s.Next()
		require.ErrorIs(t, err, ErrBadMarker)
	})
	t.Run("oversize length refused before reading the body", func(t *testing.T) {
		hdr := append([]byte(nil), good[:10]...)
		binary.LittleEndian.PutUint32(hdr[4:], 1<<30)
		s := NewStreamReader(io.MultiReader(bytes.NewReader(hdr), neverReader{}))
		_, err := s.Next()
		require.ErrorIs(t, err, ErrBadLength)
		assert.LessOrEqual(t, len(s.buf), initialStreamBuf)
	})
	t.Run("undersize length", func(t *testing.T) {
		hdr := append([]byte(nil), good...)
		binary.LittleEndian.PutUint32(hdr[4:], 12)
		_, err := NewStreamReader(bytes.NewReader(hdr)).Next()
		require.ErrorIs(t, err, ErrBadLength)
	})
	t.Run("eof inside a frame", func(t *testing.T) {
		_, err := NewStreamReader(bytes.NewReader(good[:30])).Next()
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		_, err = NewStreamReader(bytes.NewReader(good[:5])).Next()
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	})
	t.Run("read error is passed on", func(t *testing.T) {
		boom := errors.New("boom")
		_, err := NewStreamReader(iotest.ErrReader(boom)).Next()
		require.ErrorIs(t, err, boom)
	})
	t.Run("reader making no progress", func(t *testing.T) {
		_, err := NewStreamReader(zeroReader{}).Next()
		require.ErrorIs(t, err, io.ErrNoProgress)
	})
	t.Run("bad capability inside a well-framed packet", func(t *testing.T) {
		bad := append([]byte(nil), good...)
		bad[10] = 0xff
		_, err := NewStreamReader(bytes.NewReader(bad)).NextPacket()
		require.ErrorIs(t, err, ErrBadCapability)
	})
}

// neverReader fails the test if the stream reader reads past a bad header.
type neverReader struct{}

func (neverReader) Read([]byte) (int, error) { panic("read past a rejected header") }

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestAppendTrailer(t *testing.T) {
	b := NewBuilder(1, "m", 1)
	b.PushStr("x")
	frame, err := b.Finish()
	require.NoError(t, err)
	withT, err := AppendTrailer(frame, Trailer{1, 2, 3})
	require.NoError(t, err)
	p, err := Parse(withT)
	require.NoError(t, err)
	r := p.Reader()
	require.Equal(t, Trailer{1, 2, 3}, r.PopTrailer())
	require.Equal(t, "x", r.PopStr())
	require.NoError(t, r.Done())

	_, err = AppendTrailer([]byte("nope"), Trailer{})
	require.ErrorIs(t, err, ErrTruncated)
	big := NewBuilder(1, "m", 1)
	big.PushRaw(make([]byte, MaxSendLen-big.Len()))
	frame, err = big.Finish()
	require.NoError(t, err)
	_, err = AppendTrailer(frame, Trailer{})
	require.ErrorIs(t, err, ErrTooLarge)
}

// Kept frames stay intact while the reader goes on, and a stream that
// keeps the buffer full makes it grow to its bound and report bulk reads.
func TestStreamReaderKeepAndBulk(t *testing.T) {
	all, frames := concatFrames(t, 2000)
	s := NewStreamReader(bytes.NewReader(all))
	var kept [][]byte
	bulk := false
	for i, want := range frames {
		got, err := s.Next()
		require.NoError(t, err, "frame %d", i)
		require.Equal(t, want, got, "frame %d", i)
		bulk = bulk || s.Bulk()
		if i%3 == 0 {
			s.Keep()
			kept = append(kept, got)
		}
	}
	require.True(t, bulk, "a big in-memory stream fills the buffer")
	assert.Equal(t, maxStreamBuf, len(s.buf), "grown to its bound")
	for j, f := range kept {
		require.Equal(t, frames[3*j], f, "kept frame %d", 3*j)
	}
}

// chunks returns its chunks, one per Read.
type chunks [][]byte

func (c *chunks) Read(b []byte) (int, error) {
	if len(*c) == 0 {
		return 0, io.EOF
	}
	n := copy(b, (*c)[0])
	if (*c)[0] = (*c)[0][n:]; len((*c)[0]) == 0 {
		*c = (*c)[1:]
	}
	return n, nil
}

func TestStreamReaderReady(t *testing.T) {
	all, frames := concatFrames(t, 3)
	two := len(frames[0]) + len(frames[1])
	s := NewStreamReader(&chunks{all[:two+5], all[two+5:]})
	require.False(t, s.Ready(), "nothing buffered")
	_, err := s.Next()
	require.NoError(t, err)
	require.True(t, s.Ready(), "the second frame is buffered")
	_, err = s.Next()
	require.NoError(t, err)
	require.False(t, s.Ready(), "5 bytes of the third")
	require.Equal(t, 5, s.Buffered())
	got, err := s.Next()
	require.NoError(t, err)
	require.Equal(t, frames[2], got)

	// A framing error is ready at once, and stays.
	bad := NewStreamReader(&chunks{[]byte("GET / HTTP/1.1\r\n")})
	require.False(t, bad.Ready())
	_, err = bad.Next()
	require.ErrorIs(t, err, ErrBadMarker)
	require.True(t, bad.Ready())
}

func TestParseHintAndAppendHeader(t *testing.T) {
	b := NewBuilder(3, "hinted-repl", 9)
	b.PushStr("body")
	b.PushTrailer(Trailer{1, 2, 3})
	frame, err := b.Finish()
	require.NoError(t, err)
	for _, hint := range []string{"", "hinted-repl", "other", "hinted-rep"} {
		p, err := ParseHint(frame, hint)
		require.NoError(t, err)
		want, _ := Parse(frame)
		require.Equal(t, want, p, "hint %q", hint)
	}

	// Header, body and trailer written apart make the same frame.
	p, _ := Parse(frame)
	body := p.Body[:len(p.Body)-TrailerLen]
	hdr, err := AppendHeader(nil, Packet{Version: 3, Capability: "hinted-repl", Type: 9, Body: body}, TrailerLen)
	require.NoError(t, err)
	got := Trailer{1, 2, 3}.Append(append(hdr, body...))
	require.Equal(t, frame, got)
	_, err = AppendHeader(nil, Packet{Capability: "x", Body: make([]byte, MaxSendLen)}, 0)
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = AppendHeader(nil, Packet{Body: body}, 0)
	require.ErrorIs(t, err, ErrBadCapability)
}

// A buffer grown by bulk traffic is given up after a long run of small
// reads.
func TestStreamReaderShrinks(t *testing.T) {
	all, frames := concatFrames(t, 3000)
	size := 0
	for _, f := range frames[len(frames)-100:] {
		size += len(f)
	}
	// A bulk burst (the stream in big reads), then 100 small frames read
	// one per read.
	bulk, rest := all[:len(all)-size], all[len(all)-size:]
	ch := chunks{bulk}
	off := 0
	for _, f := range frames[len(frames)-100:] {
		ch = append(ch, rest[off:off+len(f)])
		off += len(f)
	}
	s := NewStreamReader(&ch)
	grown := 0
	for i := range frames {
		_, err := s.Next()
		require.NoError(t, err, "frame %d", i)
		grown = max(grown, len(s.buf))
	}
	require.Equal(t, maxStreamBuf, grown)
	_, err := s.Next()
	require.ErrorIs(t, err, io.EOF)
	require.Less(t, len(s.buf), maxStreamBuf, "small again after %d small reads", shrinkReads)
}
