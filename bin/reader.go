package bin

import (
	"encoding/binary"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Reader pops fields from a packet body, front to back, and trailer ints
// from the back. Errors are sticky: after the first failure every pop
// returns a zero value and [Reader.Err] reports what failed, so a decoder
// checks once at the end. Slices returned by the Pop methods alias the body.
type Reader struct {
	buf      []byte
	off, end int // unread window buf[off:end]
	err      error
}

// NewReader returns a reader over body.
func NewReader(body []byte) Reader { return Reader{buf: body, end: len(body)} }

// Err returns the first error encountered.
func (r *Reader) Err() error { return r.err }

// Remaining is the number of unread bytes.
func (r *Reader) Remaining() int { return r.end - r.off }

// Done returns the first error, or [ErrTrailingBytes] if anything is unread:
// a decoder that knows its layout calls it to insist on consuming the packet
// exactly.
func (r *Reader) Done() error {
	if r.err == nil && r.off != r.end {
		r.err = fmt.Errorf("%w: %d bytes at offset %d", ErrTrailingBytes, r.end-r.off, r.off)
	}
	return r.err
}

// Fail records err as the reader's error unless one is already recorded.
// Decoders layered on top use it for semantic checks (a count over its
// bound), so one Err check at the end covers everything.
func (r *Reader) Fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *Reader) fail(what string, need int) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s needs %d bytes at offset %d, %d left", ErrTruncated, what, need, r.off, r.end-r.off)
	}
}

// PopInt pops a 4-byte int.
func (r *Reader) PopInt() int32 {
	if r.err != nil {
		return 0
	}
	if r.end-r.off < 4 {
		r.fail("int", 4)
		return 0
	}
	v := int32(binary.LittleEndian.Uint32(r.buf[r.off:]))
	r.off += 4
	return v
}

// PopBytes pops a str field and returns its bytes, aliasing the body.
func (r *Reader) PopBytes() []byte {
	if r.err != nil {
		return nil
	}
	if r.end-r.off < 2 {
		r.fail("str length", 2)
		return nil
	}
	n := int(binary.LittleEndian.Uint16(r.buf[r.off:]))
	if r.end-r.off-2 < n {
		r.fail("str", 2+n)
		return nil
	}
	p := r.buf[r.off+2 : r.off+2+n : r.off+2+n]
	r.off += 2 + n
	return p
}

// PopStr pops a str field as a string (a copy).
func (r *Reader) PopStr() string { return string(r.PopBytes()) }

// PopRaw pops n bytes with no length prefix, aliasing the body.
func (r *Reader) PopRaw(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || r.end-r.off < n {
		r.fail("raw bytes", n)
		return nil
	}
	p := r.buf[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

// Rest pops everything unread.
func (r *Reader) Rest() []byte { return r.PopRaw(r.Remaining()) }

// PopTrailerInt pops a 4-byte int from the end of the unread window. The
// routing trailer is read this way: dst first, then src, then cluster.
func (r *Reader) PopTrailerInt() int32 {
	if r.err != nil {
		return 0
	}
	if r.end-r.off < 4 {
		r.fail("trailer int", 4)
		return 0
	}
	r.end -= 4
	return int32(binary.LittleEndian.Uint32(r.buf[r.end:]))
}

// PopTrailer pops the 12-byte routing trailer from the end.
func (r *Reader) PopTrailer() Trailer {
	var t Trailer
	t.Dst = r.PopTrailerInt()
	t.Src = r.PopTrailerInt()
	t.Cluster = r.PopTrailerInt()
	return t
}

// PopValue pops a str field holding a msgpack value (see
// [Builder.PushValue]) and decodes it into v. The value is checked first so
// that declared lengths can never make the decoder allocate more than the
// field's size, and it must fill the field exactly.
func (r *Reader) PopValue(v any) error {
	p := r.PopBytes()
	if r.err != nil {
		return r.err
	}
	if err := DecodeValue(p, v); err != nil {
		r.err = err
		return err
	}
	return nil
}

// DecodeValue decodes one msgpack value that must fill p exactly into v,
// with the same guard as PopValue against hostile declared lengths. Errors
// wrap ErrBadValue.
func DecodeValue(p []byte, v any) error {
	if err := checkMsgpack(p); err != nil {
		return err
	}
	if err := msgpack.Unmarshal(p, v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadValue, err)
	}
	return nil
}

// checkMsgpack walks one msgpack value without decoding it. Every
// container's declared element count must fit in the bytes that remain (an
// element takes at least one byte), so a hostile count cannot drive an
// allocation larger than the input. The walk is iterative, so nesting
// depth costs no stack.
func checkMsgpack(p []byte) error {
	pending := 1 // values still to read
	i := 0
	for pending > 0 {
		if i >= len(p) {
			return fmt.Errorf("%w: truncated at byte %d", ErrBadValue, i)
		}
		c := p[i]
		i++
		pending--
		// skip: bytes to skip; count: values added. Sized items carry a
		// big-endian length of lw bytes, counting bytes (per = 0, plus
		// extra) or values (per = 1 for arrays, 2 for maps).
		var skip, count, lw, per, extra int
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			count = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			count = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			skip = int(c & 0x1f)
		case c >= 0xc4 && c <= 0xc6: // bin8/16/32
			lw = 1 << (c - 0xc4)
		case c >= 0xd9 && c <= 0xdb: // str8/16/32
			lw = 1 << (c - 0xd9)
		case c >= 0xc7 && c <= 0xc9: // ext8/16/32: length, type, data
			lw, extra = 1<<(c-0xc7), 1
		case c == 0xca:
			skip = 4
		case c == 0xcb:
			skip = 8
		case c >= 0xcc && c <= 0xcf: // uint8..64
			skip = 1 << (c - 0xcc)
		case c >= 0xd0 && c <= 0xd3: // int8..64
			skip = 1 << (c - 0xd0)
		case c >= 0xd4 && c <= 0xd8: // fixext1..16: type + data
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc, c == 0xdd: // array16/32
			lw, per = 2<<(c-0xdc), 1
		case c == 0xde, c == 0xdf: // map16/32
			lw, per = 2<<(c-0xde), 2
		default: // 0xc1 is never used
			return fmt.Errorf("%w: invalid type byte 0x%02x at %d", ErrBadValue, c, i-1)
		}
		if lw > 0 {
			n, ok := beUint(p, i, lw)
			if !ok {
				return fmt.Errorf("%w: truncated length at byte %d", ErrBadValue, i)
			}
			i += lw
			if per == 0 {
				skip = extra + n
			} else {
				count = per * n
			}
		}
		if skip > len(p)-i {
			return fmt.Errorf("%w: %d-byte item at %d overruns the value", ErrBadValue, skip, i)
		}
		i += skip
		if count > len(p)-i-pending {
			return fmt.Errorf("%w: %d elements at %d cannot fit", ErrBadValue, count, i)
		}
		pending += count
	}
	if i != len(p) {
		return fmt.Errorf("%w: %d bytes after the value", ErrBadValue, len(p)-i)
	}
	return nil
}

// beUint reads a big-endian (msgpack's order) unsigned int of w bytes at i.
func beUint(p []byte, i, w int) (int, bool) {
	if i+w > len(p) {
		return 0, false
	}
	n := 0
	for _, c := range p[i : i+w] {
		n = n<<8 | int(c)
	}
	return n, true
}
