// Package wire defines the clusterer's messages as typed structs, with their
// exact OpenSIPS 3.3+ encodings (see the wire spec §4).
//
// Two addressing forms exist. Messages of the "clusterer-internal"
// capability (probing and topology) start with cluster_id and src_node_id
// and always travel between direct neighbours: they embed [Origin]. Messages
// of "clusterer-extra" and of every module capability end with a 12-byte
// trailer (cluster, src, dst) and may be relayed: they embed [bin.Trailer].
//
// Decoding is strict where OpenSIPS is lax: every count is bounded before it
// is used, every field must be present and the packet must be consumed
// exactly. A hostile packet yields an error, never a panic or an allocation
// larger than the packet itself.
package wire

import (
	"errors"
	"fmt"

	"github.com/clusterer-go/clusterer/bin"
)

// Capability names of the clusterer's own traffic.
const (
	CapInternal = "clusterer-internal"
	CapExtra    = "clusterer-extra"
)

// BIN versions used by the 3.3+ profile.
const (
	// Version is the BIN version of every clusterer packet except the sync
	// messages. OpenSIPS does not check it on receipt.
	Version int16 = 1
	// SyncVersion is the version of SYNC_REQ, SYNC and SYNC_END. OpenSIPS
	// discards SYNC and SYNC_END of any other version.
	SyncVersion int16 = 3
)

// Bounds from the spec. OpenSIPS rejects larger counts (or, in old builds,
// overflows fixed arrays with them).
const (
	MaxNodes    = 128 // nodes per cluster; bounds PONG, FULL_TOP_UPDATE and neighbour lists
	MaxPathLen  = 25  // flood path length (UPDATE_MAX_PATH_LEN)
	MaxMIParams = 10  // MI_CMD parameters
	// SyncChunkMarker starts every chunk of a SYNC packet.
	SyncChunkMarker int32 = 101010101
)

// Type is a clusterer message type (3.2+ numbering).
type Type int32

// Message types. Types 0–5 and CAP_UPDATE belong to [CapInternal], the
// others to [CapExtra].
const (
	TypePing            Type = 0
	TypePong            Type = 1
	TypeLSUpdate        Type = 2
	TypeFullTopUpdate   Type = 3
	TypeUnknownID       Type = 4
	TypeNodeDescription Type = 5
	TypeRemoveNode      Type = 6
	TypeGenericMsg      Type = 7
	TypeMICmd           Type = 8
	TypeCapUpdate       Type = 9
	TypeSyncReq         Type = 10
	TypeSync            Type = 11
	TypeSyncEnd         Type = 12
	TypeShtagActive     Type = 13
)

var typeNames = [...]string{
	"PING", "PONG", "LS_UPDATE", "FULL_TOP_UPDATE", "UNKNOWN_ID", "NODE_DESCRIPTION", "REMOVE_NODE",
	"GENERIC_MSG", "MI_CMD", "CAP_UPDATE", "SYNC_REQ", "SYNC", "SYNC_END", "SHTAG_ACTIVE",
}

func (t Type) String() string {
	if t == TypeShtagClaim {
		return "SHTAG_CLAIM"
	}
	if t >= 0 && int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("TYPE_%d", int32(t))
}

// Capability reports which capability carries messages of type t.
func (t Type) Capability() string {
	switch t {
	case TypePing, TypePong, TypeLSUpdate, TypeFullTopUpdate, TypeUnknownID, TypeNodeDescription, TypeCapUpdate:
		return CapInternal
	case TypeShtagClaim:
		return CapShtag
	}
	return CapExtra
}

// Errors of message decoding, wrapped with details; test with errors.Is.
var (
	ErrUnknownType  = errors.New("wire: unknown message type")
	ErrBound        = errors.New("wire: count out of bounds")
	ErrSyncVersion  = errors.New("wire: wrong sync version")
	ErrChunkMarker  = errors.New("wire: bad sync chunk marker")
	ErrNotClusterer = errors.New("wire: not a clusterer capability")
	ErrBadLinkState = errors.New("wire: bad link state")
)

// Message is one decoded clusterer message.
type Message interface {
	// MsgType is the message's type code.
	MsgType() Type
	// Append appends the complete encoded packet to dst.
	Append(dst []byte) ([]byte, error)
}

// Origin addresses a clusterer-internal message.
type Origin struct {
	Cluster int32
	Src     int32
}

// Decode decodes a clusterer packet (capability [CapInternal] or
// [CapExtra], or the Go-only [CapShtag]). Strings are copied; slices of
// ints are freshly allocated, so the message does not alias p.
func Decode(p bin.Packet) (Message, error) {
	var m Message
	r := p.Reader()
	t := Type(p.Type)
	switch p.Capability {
	case CapInternal:
		if t.Capability() != CapInternal || t < 0 || int(t) >= len(typeNames) {
			return nil, fmt.Errorf("%w: %d in %s", ErrUnknownType, p.Type, CapInternal)
		}
		o := Origin{Cluster: r.PopInt(), Src: r.PopInt()}
		m = decodeInternal(t, o, &r)
	case CapExtra:
		if t.Capability() != CapExtra || t < 0 || int(t) >= len(typeNames) {
			return nil, fmt.Errorf("%w: %d in %s", ErrUnknownType, p.Type, CapExtra)
		}
		if (t == TypeSync || t == TypeSyncEnd) && p.Version != SyncVersion {
			return nil, fmt.Errorf("%w: %s has version %d, want %d", ErrSyncVersion, t, p.Version, SyncVersion)
		}
		tr := r.PopTrailer()
		m = decodeExtra(t, tr, &r)
	case CapShtag:
		if t != TypeShtagClaim {
			return nil, fmt.Errorf("%w: %d in %s", ErrUnknownType, p.Type, CapShtag)
		}
		if p.Version != ShtagVersion {
			return nil, fmt.Errorf("%w: %s version %d, want %d", ErrUnknownType, t, p.Version, ShtagVersion)
		}
		m = decodeShtagClaim(r.PopTrailer(), &r)
	default:
		return nil, fmt.Errorf("%w: %q", ErrNotClusterer, p.Capability)
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("wire: decoding %s: %w", t, err)
	}
	return m, nil
}

// Parse frames, then decodes, one complete packet.
func Parse(frame []byte) (Message, error) {
	p, err := bin.Parse(frame)
	if err != nil {
		return nil, err
	}
	return Decode(p)
}

func decodeInternal(t Type, o Origin, r *bin.Reader) Message {
	switch t {
	case TypePing:
		return &Ping{Origin: o, ReqNodeList: r.PopInt() != 0}
	case TypePong:
		m := &Pong{Origin: o}
		m.Nodes = popIDs(r, "PONG nr_nodes", MaxNodes)
		return m
	case TypeLSUpdate:
		m := &LSUpdate{Origin: o}
		m.Seq, m.Timestamp = r.PopInt(), r.PopInt()
		m.Neighbor = r.PopInt()
		m.State = LinkState(r.PopInt())
		if r.Err() == nil && m.State != LinkUp && m.State != LinkDown {
			r.Fail(fmt.Errorf("%w: %d", ErrBadLinkState, m.State))
		}
		m.Path = popPath(r)
		return m
	case TypeFullTopUpdate:
		return decodeFullTop(o, r)
	case TypeUnknownID:
		return &UnknownID{Origin: o}
	case TypeNodeDescription:
		m := &NodeDescription{Origin: o}
		m.Desc = popDescription(r)
		m.Path = popPath(r)
		return m
	default: // TypeCapUpdate
		return decodeCapUpdate(o, r)
	}
}

func decodeExtra(t Type, tr bin.Trailer, r *bin.Reader) Message {
	switch t {
	case TypeRemoveNode:
		return &RemoveNode{Trailer: tr, Target: r.PopInt()}
	case TypeGenericMsg:
		m := &GenericMsg{Trailer: tr}
		m.Request = r.PopInt() != 0
		m.Tag = r.PopStr()
		m.Msg = r.PopStr()
		return m
	case TypeMICmd:
		m := &MICmd{Trailer: tr}
		m.Command = r.PopStr()
		n := popCount(r, "MI_CMD no_params", MaxMIParams, 2)
		if n > 0 {
			m.Params = make([]string, n)
			for i := range m.Params {
				m.Params[i] = r.PopStr()
			}
		}
		return m
	case TypeSyncReq:
		return &SyncReq{Trailer: tr, Capability: r.PopStr()}
	case TypeSync:
		return decodeSync(tr, r)
	case TypeSyncEnd:
		return &SyncEnd{Trailer: tr, Capability: r.PopStr(), Chunks: r.PopInt()}
	default: // TypeShtagActive
		return &ShtagActive{Trailer: tr, Tag: r.PopStr()}
	}
}

// popCount pops a count and checks it against max and against the bytes
// left (each element needs at least minSize), so the caller may allocate
// count elements safely.
func popCount(r *bin.Reader, what string, max, minSize int) int {
	n := int(r.PopInt())
	if r.Err() != nil {
		return 0
	}
	if n < 0 || n > max {
		r.Fail(fmt.Errorf("%w: %s = %d (max %d)", ErrBound, what, n, max))
		return 0
	}
	if n*minSize > r.Remaining() {
		r.Fail(fmt.Errorf("%w: %s = %d needs %d bytes, %d left", bin.ErrTruncated, what, n, n*minSize, r.Remaining()))
		return 0
	}
	return n
}

func popIDs(r *bin.Reader, what string, max int) []int32 {
	n := popCount(r, what, max, 4)
	if n == 0 {
		return nil
	}
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = r.PopInt()
	}
	return ids
}

func popPath(r *bin.Reader) []int32 { return popIDs(r, "path_len", MaxPathLen) }

func pushIDs(b *bin.Builder, ids []int32) {
	b.PushInt(int32(len(ids)))
	for _, id := range ids {
		b.PushInt(id)
	}
}

// checkCount is the encoder's side of the bounds: never send what an
// OpenSIPS node would reject.
func checkCount(what string, n, max int) error {
	if n > max {
		return fmt.Errorf("%w: %s = %d (max %d)", ErrBound, what, n, max)
	}
	return nil
}

func begin(b *bin.Builder, dst []byte, t Type) {
	v := Version
	if t == TypeSyncReq || t == TypeSync || t == TypeSyncEnd {
		v = SyncVersion
	}
	b.Reset(dst, v, t.Capability(), int32(t))
}

func pushOrigin(b *bin.Builder, o Origin) {
	b.PushInt(o.Cluster)
	b.PushInt(o.Src)
}

func finish(b *bin.Builder, t Type) ([]byte, error) {
	out, err := b.Finish()
	if err != nil {
		return out, fmt.Errorf("wire: encoding %s: %w", t, err)
	}
	return out, nil
}

func boolInt(v bool) int32 {
	if v {
		return 1
	}
	return 0
}
