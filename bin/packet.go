package bin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Framing constants.
const (
	// Marker opens every packet.
	Marker = "P4CK"
	// HeaderLen is the fixed part of a packet: marker, total_len, version.
	HeaderLen = 10
	// MinPacketLen is the smallest valid packet: header, a one-byte
	// capability with its u16 length, and the packet type.
	MinPacketLen = HeaderLen + 2 + 1 + 4
	// MaxPacketLen is the largest total_len accepted from the network
	// (OpenSIPS 2.4–3.6 BIN_MAX_BUF_LEN).
	MaxPacketLen = 65535
	// MaxSendLen is the largest packet this package builds: the OpenSIPS 4.x
	// limit, which both generations accept and which leaves room for a
	// relay to append a trailer.
	MaxSendLen = 65515
	// MaxStrLen is the longest str field the u16 length can describe.
	MaxStrLen = 65535
	// TrailerLen is the size of the routing trailer: cluster, src, dst.
	TrailerLen = 12
)

// Errors returned by the codec. They are wrapped with the offset or length
// that failed, so test them with errors.Is.
var (
	ErrBadMarker     = errors.New("bin: bad packet marker")
	ErrBadLength     = errors.New("bin: packet length out of bounds")
	ErrTruncated     = errors.New("bin: truncated packet")
	ErrBadCapability = errors.New("bin: bad capability name")
	ErrTooLarge      = errors.New("bin: packet too large")
	ErrStrTooLong    = errors.New("bin: string too long")
	ErrTrailingBytes = errors.New("bin: unconsumed bytes at end of packet")
	ErrBadValue      = errors.New("bin: malformed msgpack value")
)

// Packet is one BIN packet. On [Parse], Body aliases the parsed frame.
type Packet struct {
	Version    int16
	Capability string
	Type       int32
	Body       []byte
}

// Reader returns a reader over the packet body.
func (p Packet) Reader() Reader { return NewReader(p.Body) }

// Len is the encoded size of the packet.
func (p Packet) Len() int { return HeaderLen + 2 + len(p.Capability) + 4 + len(p.Body) }

// FrameLen validates the first [HeaderLen] bytes of a frame and returns its
// declared total length. It is what a stream reader needs before it knows
// how much to read.
func FrameLen(hdr []byte) (int, error) {
	if len(hdr) < HeaderLen {
		return 0, fmt.Errorf("%w: %d header bytes", ErrTruncated, len(hdr))
	}
	if string(hdr[:4]) != Marker {
		return 0, fmt.Errorf("%w: % x", ErrBadMarker, hdr[:4])
	}
	n := binary.LittleEndian.Uint32(hdr[4:8])
	if n < MinPacketLen || n > MaxPacketLen {
		return 0, fmt.Errorf("%w: total_len %d", ErrBadLength, n)
	}
	return int(n), nil
}

// Parse decodes one complete frame, which must be exactly as long as its
// header declares. The returned Body aliases frame; Parse does not allocate
// for the clusterer's own capabilities and for names passed to
// [InternCapability].
func Parse(frame []byte) (Packet, error) { return ParseHint(frame, "") }

// ParseHint is [Parse] for a reader that expects capability hint: when the
// frame's capability is hint, the packet's Capability is hint itself,
// without the intern table's lookup (a connection's reader passes the
// capability of its previous frame).
func ParseHint(frame []byte, hint string) (Packet, error) {
	n, err := FrameLen(frame)
	if err != nil {
		return Packet{}, err
	}
	if len(frame) != n {
		if len(frame) < n {
			return Packet{}, fmt.Errorf("%w: have %d of %d bytes", ErrTruncated, len(frame), n)
		}
		return Packet{}, fmt.Errorf("%w: %d bytes after a %d-byte packet", ErrTrailingBytes, len(frame)-n, n)
	}
	capLen := int(binary.LittleEndian.Uint16(frame[10:12]))
	if capLen == 0 || HeaderLen+2+capLen+4 > n {
		return Packet{}, fmt.Errorf("%w: length %d in a %d-byte packet", ErrBadCapability, capLen, n)
	}
	capEnd := 12 + capLen
	name := hint
	if string(frame[12:capEnd]) != hint {
		name = internCapability(frame[12:capEnd])
	}
	return Packet{
		Version:    int16(binary.LittleEndian.Uint16(frame[8:10])),
		Capability: name,
		Type:       int32(binary.LittleEndian.Uint32(frame[capEnd : capEnd+4])),
		Body:       frame[capEnd+4 : n],
	}, nil
}

// AppendPacket appends the encoding of p to dst.
func AppendPacket(dst []byte, p Packet) ([]byte, error) {
	if err := checkCapability(p.Capability); err != nil {
		return dst, err
	}
	if n := p.Len(); n > MaxSendLen {
		return dst, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, n, MaxSendLen)
	}
	dst = appendHeader(dst, p.Len(), p.Version, p.Capability, p.Type)
	return append(dst, p.Body...), nil
}

// AppendHeader appends what precedes p's body in its encoding, for a
// packet whose body is p.Body followed by extra more bytes (a trailer, say)
// that the caller writes after it: the header declares the total length.
// With the body and those bytes it is what [AppendPacket] would append,
// without copying the body first.
func AppendHeader(dst []byte, p Packet, extra int) ([]byte, error) {
	if err := checkCapability(p.Capability); err != nil {
		return dst, err
	}
	n := p.Len() + extra
	if n > MaxSendLen || extra < 0 {
		return dst, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, n, MaxSendLen)
	}
	return appendHeader(dst, n, p.Version, p.Capability, p.Type), nil
}

func checkCapability(name string) error {
	if len(name) == 0 || len(name) > MaxSendLen-MinPacketLen {
		return fmt.Errorf("%w: length %d", ErrBadCapability, len(name))
	}
	return nil
}

func appendHeader(dst []byte, total int, version int16, capability string, typ int32) []byte {
	dst = append(dst, Marker...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(total))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(version))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(capability)))
	dst = append(dst, capability...)
	return binary.LittleEndian.AppendUint32(dst, uint32(typ))
}

// Capability names are interned so that parsing a frame does not allocate a
// string per packet. Only names announced by the local process are interned:
// learning names from the network would let a hostile peer fill the table.
var (
	internMu    sync.Mutex
	internTable atomic.Pointer[map[string]string]
)

// maxInterned bounds the intern table; a process registers a handful of
// capabilities, so hitting it means misuse, and parsing still works (it just
// allocates).
const maxInterned = 1024

// InternCapability makes [Parse] return the given capability name without
// allocating. The runtime calls it for every capability it registers.
func InternCapability(name string) {
	internMu.Lock()
	defer internMu.Unlock()
	old := internTable.Load()
	if old != nil {
		if _, ok := (*old)[name]; ok || len(*old) >= maxInterned {
			return
		}
	}
	m := make(map[string]string, 1)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[name] = name
	internTable.Store(&m)
}

func internCapability(b []byte) string {
	if m := internTable.Load(); m != nil {
		if s, ok := (*m)[string(b)]; ok { // map lookup with string(b) does not allocate
			return s
		}
	}
	return string(b)
}

func init() {
	// The clusterer's own capabilities; kept here so the codec alone parses
	// all topology traffic without allocating.
	InternCapability("clusterer-internal")
	InternCapability("clusterer-extra")
}
