package bin

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// Builder assembles one packet field by field. Errors are sticky: after the
// first failure (a string over 65,535 bytes, a packet over [MaxSendLen]) the
// pushes do nothing and [Builder.Finish] reports the error, so callers check
// once at the end. Pushing never grows the buffer past MaxSendLen.
//
// The zero Builder is not usable; call [Builder.Reset] or [NewBuilder].
type Builder struct {
	buf   []byte
	start int // offset of this packet within buf (Reset may append to existing bytes)
	err   error
}

// NewBuilder starts a packet in a fresh buffer.
func NewBuilder(version int16, capability string, typ int32) *Builder {
	b := &Builder{}
	b.Reset(make([]byte, 0, 256), version, capability, typ)
	return b
}

// Reset starts a new packet appended to dst, reusing dst's storage. The
// packet's bytes are dst[len(dst):] of the slice Finish returns.
func (b *Builder) Reset(dst []byte, version int16, capability string, typ int32) {
	b.err = checkCapability(capability)
	b.start = len(dst)
	b.buf = appendHeader(dst, 0, version, capability, typ)
}

// Len is the number of bytes of the packet so far, header included.
func (b *Builder) Len() int { return len(b.buf) - b.start }

// Err returns the first error encountered.
func (b *Builder) Err() error { return b.err }

func (b *Builder) room(n int) bool {
	if b.err != nil {
		return false
	}
	if b.Len()+n > MaxSendLen {
		b.err = fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, b.Len()+n, MaxSendLen)
		return false
	}
	return true
}

// PushInt appends a 4-byte int.
func (b *Builder) PushInt(v int32) {
	if b.room(4) {
		b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(v))
	}
}

// PushStr appends a str field (u16 length, bytes).
func (b *Builder) PushStr(s string) {
	if len(s) > MaxStrLen {
		b.setErr(fmt.Errorf("%w: %d bytes", ErrStrTooLong, len(s)))
		return
	}
	if b.room(2 + len(s)) {
		b.buf = binary.LittleEndian.AppendUint16(b.buf, uint16(len(s)))
		b.buf = append(b.buf, s...)
	}
}

// PushBytes appends p as a str field.
func (b *Builder) PushBytes(p []byte) {
	if len(p) > MaxStrLen {
		b.setErr(fmt.Errorf("%w: %d bytes", ErrStrTooLong, len(p)))
		return
	}
	if b.room(2 + len(p)) {
		b.buf = binary.LittleEndian.AppendUint16(b.buf, uint16(len(p)))
		b.buf = append(b.buf, p...)
	}
}

// PushRaw appends p with no length prefix (a module body, sync chunk data).
func (b *Builder) PushRaw(p []byte) {
	if b.room(len(p)) {
		b.buf = append(b.buf, p...)
	}
}

// PushValue appends v encoded with msgpack as a str field, so OpenSIPS nodes
// see an ordinary string and Go nodes can decode it with [Reader.PopValue].
func (b *Builder) PushValue(v any) {
	if b.err != nil {
		return
	}
	vb := valueBufs.Get().(*valueBuf)
	vb.b = vb.b[:0]
	enc := msgpack.GetEncoder()
	enc.Reset(vb)
	err := enc.Encode(v)
	msgpack.PutEncoder(enc)
	if err != nil {
		b.setErr(fmt.Errorf("bin: encoding value: %w", err))
	} else {
		b.PushBytes(vb.b)
	}
	if cap(vb.b) <= 64<<10 { // do not pin oversized buffers in the pool
		valueBufs.Put(vb)
	}
}

// valueBuf is scratch space for msgpack encoding. Encoding through a pooled
// buffer (rather than straight into the packet) keeps Builder off the heap:
// handing the builder to the encoder's io.Writer would make every Builder
// escape.
type valueBuf struct{ b []byte }

func (w *valueBuf) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > MaxStrLen {
		return 0, fmt.Errorf("%w: value over %d bytes", ErrStrTooLong, MaxStrLen)
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

var valueBufs = sync.Pool{New: func() any { return new(valueBuf) }}

// PushTrailer appends the routing trailer.
func (b *Builder) PushTrailer(t Trailer) {
	b.PushInt(t.Cluster)
	b.PushInt(t.Src)
	b.PushInt(t.Dst)
}

// SetInt overwrites the int at offset off of the packet (as counted by
// [Builder.Len]), for fields whose value is known only later, such as a sync
// chunk's size.
func (b *Builder) SetInt(off int, v int32) {
	if b.err != nil {
		return
	}
	if off < HeaderLen || off+4 > b.Len() {
		b.err = fmt.Errorf("bin: SetInt at %d outside the %d-byte packet", off, b.Len())
		return
	}
	binary.LittleEndian.PutUint32(b.buf[b.start+off:], uint32(v))
}

func (b *Builder) setErr(err error) {
	if b.err == nil {
		b.err = err
	}
}

// Finish writes the total length into the header and returns the buffer
// given to Reset with the packet appended.
func (b *Builder) Finish() ([]byte, error) {
	if b.err != nil {
		return b.buf[:b.start], b.err
	}
	binary.LittleEndian.PutUint32(b.buf[b.start+4:], uint32(b.Len()))
	return b.buf, nil
}

// Trailer addresses a routed packet: every packet of the clusterer-extra
// capability and of module capabilities ends with it.
type Trailer struct {
	Cluster int32
	Src     int32
	Dst     int32
}

// ParseTrailer reads the trailer from the end of a frame or body.
func ParseTrailer(b []byte) (Trailer, error) {
	if len(b) < TrailerLen {
		return Trailer{}, fmt.Errorf("%w: no room for the trailer in %d bytes", ErrTruncated, len(b))
	}
	t := b[len(b)-TrailerLen:]
	return Trailer{
		Cluster: int32(binary.LittleEndian.Uint32(t[0:])),
		Src:     int32(binary.LittleEndian.Uint32(t[4:])),
		Dst:     int32(binary.LittleEndian.Uint32(t[8:])),
	}, nil
}

// Append appends the encoding of t.
func (t Trailer) Append(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(t.Cluster))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(t.Src))
	return binary.LittleEndian.AppendUint32(dst, uint32(t.Dst))
}

// AppendTrailer appends the routing trailer to a complete frame and fixes
// its length, for senders that encode a body once and address it later.
func AppendTrailer(frame []byte, t Trailer) ([]byte, error) {
	if len(frame) < MinPacketLen || string(frame[:4]) != Marker {
		return frame, fmt.Errorf("%w: not a frame", ErrTruncated)
	}
	if len(frame)+TrailerLen > MaxSendLen {
		return frame, fmt.Errorf("%w: %d bytes with the trailer (max %d)", ErrTooLarge, len(frame)+TrailerLen, MaxSendLen)
	}
	frame = t.Append(frame)
	binary.LittleEndian.PutUint32(frame[4:], uint32(len(frame)))
	return frame, nil
}

// SetTrailerDst overwrites the destination of a complete frame in place.
// Broadcasts build one packet and re-address it per destination, as
// OpenSIPS does.
func SetTrailerDst(frame []byte, dst int32) error {
	if len(frame) < MinPacketLen+TrailerLen {
		return fmt.Errorf("%w: no room for the trailer in %d bytes", ErrTruncated, len(frame))
	}
	binary.LittleEndian.PutUint32(frame[len(frame)-4:], uint32(dst))
	return nil
}
