package wire

import (
	"fmt"

	"github.com/clusterer-go/clusterer/bin"
)

// LinkState is the link state carried by LS_UPDATE; only these two values
// are ever sent.
type LinkState int32

// Link states on the wire.
const (
	LinkUp   LinkState = 0
	LinkDown LinkState = 1
)

func (s LinkState) String() string {
	switch s {
	case LinkUp:
		return "UP"
	case LinkDown:
		return "DOWN"
	}
	return fmt.Sprintf("LinkState(%d)", int32(s))
}

// Ping probes a link. ReqNodeList asks the peer to list the nodes it knows
// in its PONG; it is set when the link is not (yet) UP.
type Ping struct {
	Origin
	ReqNodeList bool
}

// MsgType implements Message.
func (*Ping) MsgType() Type { return TypePing }

// Append implements Message.
func (m *Ping) Append(dst []byte) ([]byte, error) {
	var b bin.Builder
	begin(&b, dst, TypePing)
	pushOrigin(&b, m.Origin)
	b.PushInt(boolInt(m.ReqNodeList))
	return finish(&b, TypePing)
}

// Pong answers a Ping. Nodes lists every node the replier knows except the
// pinger, and is empty when the ping did not ask for it.
type Pong struct {
	Origin
	Nodes []int32
}

// MsgType implements Message.
func (*Pong) MsgType() Type { return TypePong }

// Append implements Message.
func (m *Pong) Append(dst []byte) ([]byte, error) {
	if err := checkCount("PONG nr_nodes", len(m.Nodes), MaxNodes); err != nil {
		return dst, err
	}
	var b bin.Builder
	begin(&b, dst, TypePong)
	pushOrigin(&b, m.Origin)
	pushIDs(&b, m.Nodes)
	return finish(&b, TypePong)
}

// LSUpdate announces that the link between the original sender (Path[0])
// and Neighbor changed state. It is flooded.
type LSUpdate struct {
	Origin
	Seq       int32
	Timestamp int32
	Neighbor  int32
	State     LinkState
	Path      []int32
}

// MsgType implements Message.
func (*LSUpdate) MsgType() Type { return TypeLSUpdate }

// Append implements Message.
func (m *LSUpdate) Append(dst []byte) ([]byte, error) {
	if err := checkCount("path_len", len(m.Path), MaxPathLen); err != nil {
		return dst, err
	}
	var b bin.Builder
	begin(&b, dst, TypeLSUpdate)
	pushOrigin(&b, m.Origin)
	b.PushInt(m.Seq)
	b.PushInt(m.Timestamp)
	b.PushInt(m.Neighbor)
	b.PushInt(int32(m.State))
	pushIDs(&b, m.Path)
	return finish(&b, TypeLSUpdate)
}

// Description is what a node says about itself: NODE_DESCRIPTION, and the
// optional part of a FULL_TOP_UPDATE entry.
type Description struct {
	URL         string // e.g. "bin:127.0.0.1:25562"
	SIPAddr     string // may be empty
	Priority    int32
	PingRetries int32
}

func popDescription(r *bin.Reader) Description {
	var d Description
	d.URL = r.PopStr()
	d.SIPAddr = r.PopStr()
	d.Priority = r.PopInt()
	d.PingRetries = r.PopInt()
	return d
}

func pushDescription(b *bin.Builder, d *Description) {
	b.PushStr(d.URL)
	b.PushStr(d.SIPAddr)
	b.PushInt(d.Priority)
	b.PushInt(d.PingRetries)
}

// TopEntry is one node of a FULL_TOP_UPDATE.
type TopEntry struct {
	Node int32
	// Desc is set for nodes the destination did not list in its PONG.
	Desc *Description
	// LSSeq and LSTimestamp are the last LS_UPDATE (seq, ts) the sender
	// accepted from Node; for the sender's own entry, its own counter and 0.
	LSSeq       int32
	LSTimestamp int32
	// Neighbors are Node's UP neighbours as the sender knows them.
	Neighbors []int32
}

// FullTopUpdate carries the sender's whole view of the topology to a
// neighbour whose link just came UP; the neighbour floods it.
type FullTopUpdate struct {
	Origin
	Seq       int32
	Timestamp int32
	Nodes     []TopEntry // Nodes[0] is the sender itself
	Path      []int32
}

// MsgType implements Message.
func (*FullTopUpdate) MsgType() Type { return TypeFullTopUpdate }

// minTopEntry is the smallest encoded entry: id, has_descr, ls_seq, ls_ts,
// no_neigh.
const minTopEntry = 5 * 4

func decodeFullTop(o Origin, r *bin.Reader) Message {
	m := &FullTopUpdate{Origin: o}
	m.Seq, m.Timestamp = r.PopInt(), r.PopInt()
	n := popCount(r, "FULL_TOP_UPDATE no_nodes", MaxNodes, minTopEntry)
	if n > 0 {
		m.Nodes = make([]TopEntry, n)
	}
	for i := range m.Nodes {
		e := &m.Nodes[i]
		e.Node = r.PopInt()
		if r.PopInt() != 0 {
			d := popDescription(r)
			e.Desc = &d
		}
		e.LSSeq, e.LSTimestamp = r.PopInt(), r.PopInt()
		e.Neighbors = popIDs(r, "FULL_TOP_UPDATE no_neigh", MaxNodes)
		if r.Err() != nil {
			return m
		}
	}
	m.Path = popPath(r)
	return m
}

// Append implements Message.
func (m *FullTopUpdate) Append(dst []byte) ([]byte, error) {
	if err := checkCount("FULL_TOP_UPDATE no_nodes", len(m.Nodes), MaxNodes); err != nil {
		return dst, err
	}
	if err := checkCount("path_len", len(m.Path), MaxPathLen); err != nil {
		return dst, err
	}
	var b bin.Builder
	begin(&b, dst, TypeFullTopUpdate)
	pushOrigin(&b, m.Origin)
	b.PushInt(m.Seq)
	b.PushInt(m.Timestamp)
	b.PushInt(int32(len(m.Nodes)))
	for i := range m.Nodes {
		e := &m.Nodes[i]
		if err := checkCount("FULL_TOP_UPDATE no_neigh", len(e.Neighbors), MaxNodes); err != nil {
			return dst, err
		}
		b.PushInt(e.Node)
		if e.Desc != nil {
			b.PushInt(1)
			pushDescription(&b, e.Desc)
		} else {
			b.PushInt(0)
		}
		b.PushInt(e.LSSeq)
		b.PushInt(e.LSTimestamp)
		pushIDs(&b, e.Neighbors)
	}
	pushIDs(&b, m.Path)
	return finish(&b, TypeFullTopUpdate)
}

// UnknownID answers a Ping from a node id the receiver does not know; it
// travels back on the connection the ping came in on.
type UnknownID struct {
	Origin
}

// MsgType implements Message.
func (*UnknownID) MsgType() Type { return TypeUnknownID }

// Append implements Message.
func (m *UnknownID) Append(dst []byte) ([]byte, error) {
	var b bin.Builder
	begin(&b, dst, TypeUnknownID)
	pushOrigin(&b, m.Origin)
	return finish(&b, TypeUnknownID)
}

// NodeDescription introduces the sender (Path[0]) to a node that answered
// its ping with UnknownID; it is flooded to the rest of the cluster.
type NodeDescription struct {
	Origin
	Desc Description
	Path []int32
}

// MsgType implements Message.
func (*NodeDescription) MsgType() Type { return TypeNodeDescription }

// Append implements Message.
func (m *NodeDescription) Append(dst []byte) ([]byte, error) {
	if err := checkCount("path_len", len(m.Path), MaxPathLen); err != nil {
		return dst, err
	}
	var b bin.Builder
	begin(&b, dst, TypeNodeDescription)
	pushOrigin(&b, m.Origin)
	pushDescription(&b, &m.Desc)
	pushIDs(&b, m.Path)
	return finish(&b, TypeNodeDescription)
}

// CapState is one capability of a node and whether it is synced.
type CapState struct {
	Name   string
	Synced bool // wire state 1 ("OK"); 0 is not synced or disabled
}

// CapNode lists the capabilities of one node.
type CapNode struct {
	Node int32
	Caps []CapState
}

// CapUpdate floods capability states: either the sender's full view (at
// link-up, RequireReply set, or as that reply) or one changed capability of
// the sender.
type CapUpdate struct {
	Origin
	Seq          int32
	Timestamp    int32
	Nodes        []CapNode
	RequireReply bool
	Path         []int32
}

// MsgType implements Message.
func (*CapUpdate) MsgType() Type { return TypeCapUpdate }

func decodeCapUpdate(o Origin, r *bin.Reader) Message {
	m := &CapUpdate{Origin: o}
	m.Seq, m.Timestamp = r.PopInt(), r.PopInt()
	n := popCount(r, "CAP_UPDATE nr_nodes", MaxNodes, 8)
	if n > 0 {
		m.Nodes = make([]CapNode, n)
	}
	for i := range m.Nodes {
		cn := &m.Nodes[i]
		cn.Node = r.PopInt()
		// A capability is at least a name length and a state. There is no
		// spec limit on the count, so the bytes left are the bound.
		k := popCount(r, "CAP_UPDATE nr_caps", bin.MaxPacketLen, 6)
		if k > 0 {
			cn.Caps = make([]CapState, k)
		}
		for j := range cn.Caps {
			cn.Caps[j].Name = r.PopStr()
			cn.Caps[j].Synced = r.PopInt() != 0
		}
		if r.Err() != nil {
			return m
		}
	}
	m.RequireReply = r.PopInt() != 0
	m.Path = popPath(r)
	return m
}

// Append implements Message.
func (m *CapUpdate) Append(dst []byte) ([]byte, error) {
	if err := checkCount("CAP_UPDATE nr_nodes", len(m.Nodes), MaxNodes); err != nil {
		return dst, err
	}
	if err := checkCount("path_len", len(m.Path), MaxPathLen); err != nil {
		return dst, err
	}
	var b bin.Builder
	begin(&b, dst, TypeCapUpdate)
	pushOrigin(&b, m.Origin)
	b.PushInt(m.Seq)
	b.PushInt(m.Timestamp)
	b.PushInt(int32(len(m.Nodes)))
	for i := range m.Nodes {
		cn := &m.Nodes[i]
		b.PushInt(cn.Node)
		b.PushInt(int32(len(cn.Caps)))
		for _, c := range cn.Caps {
			b.PushStr(c.Name)
			b.PushInt(boolInt(c.Synced))
		}
	}
	b.PushInt(boolInt(m.RequireReply))
	pushIDs(&b, m.Path)
	return finish(&b, TypeCapUpdate)
}
