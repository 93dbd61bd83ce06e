package wire

import (
	"fmt"

	"github.com/clusterer-go/clusterer/bin"
)

// RemoveNode tells the destination to forget Target (or, if Target is the
// destination, to disable itself in the cluster).
type RemoveNode struct {
	bin.Trailer
	Target int32
}

// MsgType implements Message.
func (*RemoveNode) MsgType() Type { return TypeRemoveNode }

// Append implements Message.
func (m *RemoveNode) Append(dst []byte) ([]byte, error) {
	var b bin.Builder
	begin(&b, dst, TypeRemoveNode)
	b.PushInt(m.Target)
	b.PushTrailer(m.Trailer)
	return finish(&b, TypeRemoveNode)
}

// GenericMsg is a script-level request or reply (cluster_send_req,
// cluster_send_rpl, cluster_broadcast_req). A reply copies the request's
// Tag.
type GenericMsg struct {
	bin.Trailer
	Request bool
	Tag     string
	Msg     string
}

// MsgType implements Message.
func (*GenericMsg) MsgType() Type { return TypeGenericMsg }

// Append implements Message.
func (m *GenericMsg) Append(dst []byte) ([]byte, error) {
	var b bin.Builder
	begin(&b, dst, TypeGenericMsg)
	b.PushInt(boolInt(m.Request))
	b.PushStr(m.Tag)
	b.PushStr(m.Msg)
	b.PushTrailer(m.Trailer)
	return finish(&b, TypeGenericMsg)
}

// MICmd asks the destination to run a management command. No result
// travels back.
type MICmd struct {
	bin.Trailer
	Command string
	Params  []string
}

// MsgType implements Message.
func (*MICmd) MsgType() Type { return TypeMICmd }

// Append implements Message.
func (m *MICmd) Append(dst []byte) ([]byte, error) {
	if err := checkCount("MI_CMD no_params", len(m.Params), MaxMIParams); err != nil {
		return dst, err
	}
	var b bin.Builder
	begin(&b, dst, TypeMICmd)
	b.PushStr(m.Command)
	b.PushInt(int32(len(m.Params)))
	for _, p := range m.Params {
		b.PushStr(p)
	}
	b.PushTrailer(m.Trailer)
	return finish(&b, TypeMICmd)
}

// SyncReq asks a donor for the full data set of a capability.
type SyncReq struct {
	bin.Trailer
	Capability string
}

// MsgType implements Message.
func (*SyncReq) MsgType() Type { return TypeSyncReq }

// Append implements Message.
func (m *SyncReq) Append(dst []byte) ([]byte, error) {
	var b bin.Builder
	begin(&b, dst, TypeSyncReq)
	b.PushStr(m.Capability)
	b.PushTrailer(m.Trailer)
	return finish(&b, TypeSyncReq)
}

// Sync carries chunks of a capability's data from the donor. Each chunk is
// opaque module data; DataVersion is the module's own BIN version, which
// the receiver hands to the module with each chunk.
type Sync struct {
	bin.Trailer
	Capability  string
	DataVersion int32
	Chunks      [][]byte
}

// MsgType implements Message.
func (*Sync) MsgType() Type { return TypeSync }

// ChunkOverhead is what each chunk adds besides its data: size and marker.
const ChunkOverhead = 8

func decodeSync(tr bin.Trailer, r *bin.Reader) Message {
	m := &Sync{Trailer: tr}
	m.Capability = r.PopStr()
	m.DataVersion = r.PopInt()
	if r.Err() != nil {
		return m
	}
	// Copy all chunk data in one allocation, so the message does not alias
	// the packet and a packet of many small chunks costs two allocations.
	data := make([]byte, 0, r.Remaining())
	for r.Remaining() > 0 && r.Err() == nil {
		size := r.PopInt()
		if marker := r.PopInt(); r.Err() == nil && marker != SyncChunkMarker {
			r.Fail(fmt.Errorf("%w: %d", ErrChunkMarker, marker))
			break
		}
		if size < 0 {
			r.Fail(fmt.Errorf("%w: chunk size %d", ErrBound, size))
			break
		}
		chunk := r.PopRaw(int(size))
		if r.Err() != nil {
			break
		}
		start := len(data)
		data = append(data, chunk...)
		m.Chunks = append(m.Chunks, data[start:len(data):len(data)])
	}
	return m
}

// Append implements Message.
func (m *Sync) Append(dst []byte) ([]byte, error) {
	var b bin.Builder
	begin(&b, dst, TypeSync)
	b.PushStr(m.Capability)
	b.PushInt(m.DataVersion)
	for _, c := range m.Chunks {
		b.PushInt(int32(len(c)))
		b.PushInt(SyncChunkMarker)
		b.PushRaw(c)
	}
	b.PushTrailer(m.Trailer)
	return finish(&b, TypeSync)
}

// SyncEnd closes a sync; Chunks is the total number of chunks sent, so the
// receiver can tell when it has processed them all.
type SyncEnd struct {
	bin.Trailer
	Capability string
	Chunks     int32
}

// MsgType implements Message.
func (*SyncEnd) MsgType() Type { return TypeSyncEnd }

// Append implements Message.
func (m *SyncEnd) Append(dst []byte) ([]byte, error) {
	var b bin.Builder
	begin(&b, dst, TypeSyncEnd)
	b.PushStr(m.Capability)
	b.PushInt(m.Chunks)
	b.PushTrailer(m.Trailer)
	return finish(&b, TypeSyncEnd)
}

// ShtagActive announces that the sender took a sharing tag over; every
// receiver sets the tag to backup.
type ShtagActive struct {
	bin.Trailer
	Tag string // bare name; the cluster is the trailer's
}

// MsgType implements Message.
func (*ShtagActive) MsgType() Type { return TypeShtagActive }

// Append implements Message.
func (m *ShtagActive) Append(dst []byte) ([]byte, error) {
	var b bin.Builder
	begin(&b, dst, TypeShtagActive)
	b.PushStr(m.Tag)
	b.PushTrailer(m.Trailer)
	return finish(&b, TypeShtagActive)
}

// SplitTrailer separates a routed packet (clusterer-extra or a module
// capability) into its body and trailer.
func SplitTrailer(p bin.Packet) ([]byte, bin.Trailer, error) {
	t, err := bin.ParseTrailer(p.Body)
	if err != nil {
		return nil, t, err
	}
	return p.Body[:len(p.Body)-bin.TrailerLen], t, nil
}
