package wire

import (
	"fmt"

	"github.com/clusterer-go/clusterer/bin"
)

// The Go-only sharing-tag extension. OpenSIPS's SHTAG_ACTIVE carries no
// arbitration: the last announcement wins, two crossing announcements leave
// both nodes BACKUP and a healed partition keeps two ACTIVE nodes (spec
// §11). Go nodes additionally exchange claims in a capability of their own,
// which OpenSIPS nodes drop as an unknown capability (spec §1.2) and never
// relay, so the clusterer's own messages, SHTAG_ACTIVE included, stay
// exactly OpenSIPS's.
//
// Layout (module-packet form: body, then the 12-byte routing trailer):
//
//	capability "clusterer-go-shtag", BIN version 1, type 100 (SHTAG_CLAIM)
//	tag:str    the tag's name (1..255 bytes; the cluster is the trailer's)
//	term:i32   >= 0; with active set, the sender's claim; otherwise the
//	           highest term the sender knows
//	owner:i32  >= 0; the node the sender takes for the tag's holder (the
//	           sender itself when active; 0: unknown)
//	flags:i32  bit 0 (ShtagFlagActive): the sender holds the tag under
//	           term; bit 1 (ShtagFlagAnnounce): a SHTAG_ACTIVE for the tag
//	           follows on the same route, and is to be left to this
//	           claim; no other bit is defined
//	trailer    cluster_id, src_node_id, dst_node_id
//
// A claim beats another if its term is higher, or the terms are equal and
// its node id is lower.

// CapShtag is the capability of the Go-only sharing-tag claims.
const CapShtag = "clusterer-go-shtag"

// ShtagVersion is the BIN version of SHTAG_CLAIM; other versions are
// refused.
const ShtagVersion int16 = 1

// TypeShtagClaim is SHTAG_CLAIM's packet type in [CapShtag], numbered apart
// from the clusterer's types so the two never mix in one switch.
const TypeShtagClaim Type = 100

// Claim flags.
const (
	// ShtagFlagActive marks a claim whose sender holds the tag.
	ShtagFlagActive int32 = 1
	// ShtagFlagAnnounce says a SHTAG_ACTIVE follows the claim.
	ShtagFlagAnnounce int32 = 2
)

// MaxShtagName bounds a sharing tag's name. OpenSIPS sets none beyond the
// 16-bit string length; names are short words such as "vip".
const MaxShtagName = 255

// ShtagClaim is a Go node's statement about a sharing tag: that it holds
// the tag under Term (Active, Owner the sender), or, from a node that does
// not, the highest term it knows and whom it takes for the holder. Active
// with another Owner is a yield notice: the sender held the tag under Term
// and stepped down for Owner's claim.
type ShtagClaim struct {
	bin.Trailer
	Tag    string
	Term   int32
	Owner  int32
	Active bool
	// Announce: the sender's SHTAG_ACTIVE for the tag follows, on the
	// same route; the receiver leaves it to this claim.
	Announce bool
}

// MsgType implements Message.
func (*ShtagClaim) MsgType() Type { return TypeShtagClaim }

// Append implements Message.
func (m *ShtagClaim) Append(dst []byte) ([]byte, error) {
	if err := checkShtagClaim(m.Tag, m.Term, m.Owner); err != nil {
		return dst, fmt.Errorf("wire: encoding %s: %w", TypeShtagClaim, err)
	}
	var b bin.Builder
	b.Reset(dst, ShtagVersion, CapShtag, int32(TypeShtagClaim))
	b.PushStr(m.Tag)
	b.PushInt(m.Term)
	b.PushInt(m.Owner)
	b.PushInt(boolInt(m.Active)*ShtagFlagActive | boolInt(m.Announce)*ShtagFlagAnnounce)
	b.PushTrailer(m.Trailer)
	return finish(&b, TypeShtagClaim)
}

func decodeShtagClaim(tr bin.Trailer, r *bin.Reader) Message {
	m := &ShtagClaim{Trailer: tr}
	m.Tag = r.PopStr()
	m.Term = r.PopInt()
	m.Owner = r.PopInt()
	flags := r.PopInt()
	if r.Err() != nil {
		return m
	}
	if flags&^(ShtagFlagActive|ShtagFlagAnnounce) != 0 {
		r.Fail(fmt.Errorf("%w: SHTAG_CLAIM flags %#x", ErrBound, flags))
	}
	m.Active = flags&ShtagFlagActive != 0
	m.Announce = flags&ShtagFlagAnnounce != 0
	if err := checkShtagClaim(m.Tag, m.Term, m.Owner); err != nil {
		r.Fail(err)
	}
	return m
}

func checkShtagClaim(tag string, term, owner int32) error {
	switch {
	case tag == "" || len(tag) > MaxShtagName:
		return fmt.Errorf("%w: tag name of %d bytes (1..%d)", ErrBound, len(tag), MaxShtagName)
	case term < 0:
		return fmt.Errorf("%w: term %d", ErrBound, term)
	case owner < 0:
		return fmt.Errorf("%w: owner %d", ErrBound, owner)
	}
	return nil
}
