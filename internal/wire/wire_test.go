package wire

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/bin"
)

var tr = bin.Trailer{Cluster: 1, Src: 2, Dst: 3}

// allMessages holds one populated message of every type.
func allMessages() []Message {
	o := Origin{Cluster: 1, Src: 2}
	d := Description{URL: "bin:127.0.0.1:25562", SIPAddr: "127.0.0.1:5060", Priority: 3, PingRetries: 3}
	return []Message{
		&Ping{Origin: o, ReqNodeList: true},
		&Ping{Origin: o},
		&Pong{Origin: o, Nodes: []int32{1, 3, 4}},
		&Pong{Origin: o},
		&LSUpdate{Origin: o, Seq: 4, Timestamp: 1795312707, Neighbor: 3, State: LinkDown, Path: []int32{2, 1}},
		&FullTopUpdate{Origin: o, Seq: 0, Timestamp: 1795312707, Nodes: []TopEntry{
			{Node: 2, LSSeq: 3, Neighbors: []int32{1, 3}},
			{Node: 3, Desc: &d, LSSeq: -1, LSTimestamp: 0},
		}, Path: []int32{2}},
		&UnknownID{Origin: o},
		&NodeDescription{Origin: o, Desc: d, Path: []int32{2, 1}},
		&CapUpdate{Origin: o, Seq: 1, Timestamp: 5, Nodes: []CapNode{
			{Node: 2, Caps: []CapState{{Name: "dialog-dlg-repl", Synced: true}, {Name: "usrloc-contact-repl"}}},
			{Node: 4},
		}, RequireReply: true, Path: []int32{2}},
		&RemoveNode{Trailer: tr, Target: 4},
		&GenericMsg{Trailer: tr, Request: true, Tag: "1-2-abc", Msg: "WHEREIS alice"},
		&GenericMsg{Trailer: tr, Tag: "1-2-abc"},
		&MICmd{Trailer: tr, Command: "dlg_list", Params: []string{"a", "", "c"}},
		&MICmd{Trailer: tr, Command: "ps"},
		&SyncReq{Trailer: tr, Capability: "dialog-dlg-repl"},
		&Sync{Trailer: tr, Capability: "dialog-dlg-repl", DataVersion: 2, Chunks: [][]byte{[]byte("abc"), {}, []byte("de")}},
		&Sync{Trailer: tr, Capability: "dialog-dlg-repl", DataVersion: 2},
		&SyncEnd{Trailer: tr, Capability: "dialog-dlg-repl", Chunks: 3},
		&ShtagActive{Trailer: tr, Tag: "vip"},
	}
}

func TestRoundTripAllTypes(t *testing.T) {
	seen := map[Type]bool{}
	for _, m := range allMessages() {
		t.Run(m.MsgType().String(), func(t *testing.T) {
			frame, err := m.Append(nil)
			require.NoError(t, err)
			p, err := bin.Parse(frame)
			require.NoError(t, err)
			assert.Equal(t, m.MsgType().Capability(), p.Capability)
			got, err := Decode(p)
			require.NoError(t, err)
			assert.Equal(t, normalizeEmpty(m), normalizeEmpty(got))
			seen[m.MsgType()] = true
		})
	}
	assert.Len(t, seen, 14, "every message type is covered")
}

// normalizeEmpty maps empty slices to nil: the decoder returns nil for an
// empty list, whatever the encoder was given.
func normalizeEmpty(m Message) Message {
	if s, ok := m.(*Sync); ok {
		c := *s
		for i := range c.Chunks {
			if len(c.Chunks[i]) == 0 {
				c.Chunks[i] = []byte{}
			}
		}
		return &c
	}
	return m
}

func TestSyncVersions(t *testing.T) {
	for _, m := range []Message{&SyncReq{Trailer: tr, Capability: "c"}, &Sync{Trailer: tr, Capability: "c"}, &SyncEnd{Trailer: tr, Capability: "c"}} {
		frame, err := m.Append(nil)
		require.NoError(t, err)
		p, _ := bin.Parse(frame)
		assert.Equal(t, SyncVersion, p.Version, m.MsgType().String())
	}
	// SYNC and SYNC_END of another version are discarded, as OpenSIPS does.
	for _, m := range []Message{&Sync{Trailer: tr, Capability: "c"}, &SyncEnd{Trailer: tr, Capability: "c"}} {
		frame, _ := m.Append(nil)
		binary.LittleEndian.PutUint16(frame[8:], 2)
		_, err := Parse(frame)
		require.ErrorIs(t, err, ErrSyncVersion)
	}
	// Other messages' versions are not checked.
	frame, _ := (&Ping{Origin: Origin{1, 2}}).Append(nil)
	binary.LittleEndian.PutUint16(frame[8:], 9)
	_, err := Parse(frame)
	require.NoError(t, err)
}

// body builds a frame of the given type from raw ints and strs.
func frameOf(t *testing.T, typ Type, fields ...any) []byte {
	t.Helper()
	v := Version
	if typ == TypeSync || typ == TypeSyncEnd || typ == TypeSyncReq {
		v = SyncVersion
	}
	b := bin.NewBuilder(v, typ.Capability(), int32(typ))
	for _, f := range fields {
		switch f := f.(type) {
		case int:
			b.PushInt(int32(f))
		case string:
			b.PushStr(f)
		case []byte:
			b.PushRaw(f)
		default:
			t.Fatalf("bad field %T", f)
		}
	}
	out, err := b.Finish()
	require.NoError(t, err)
	return out
}

func TestDecodeRejectsHostileInput(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"pong count huge", frameOf(t, TypePong, 1, 2, 1<<30), ErrBound},
		{"pong count negative", frameOf(t, TypePong, 1, 2, -1), ErrBound},
		{"pong count over 128", frameOf(t, TypePong, 1, 2, 129), ErrBound},
		{"pong count beyond bytes", frameOf(t, TypePong, 1, 2, 100, 5), bin.ErrTruncated},
		{"ping missing field", frameOf(t, TypePing, 1, 2), bin.ErrTruncated},
		{"ping trailing bytes", frameOf(t, TypePing, 1, 2, 1, 0), bin.ErrTrailingBytes},
		{"ls bad state", frameOf(t, TypeLSUpdate, 1, 2, 0, 0, 3, 7, 1, 2), ErrBadLinkState},
		{"ls path too long", frameOf(t, TypeLSUpdate, 1, 2, 0, 0, 3, 1, 26), ErrBound},
		{"full top nodes over 128", frameOf(t, TypeFullTopUpdate, 1, 2, 0, 0, 129), ErrBound},
		{"full top neighbours over 128", frameOf(t, TypeFullTopUpdate, 1, 2, 0, 0, 1, 2, 0, 0, 0, 129), ErrBound},
		{"full top descr truncated", frameOf(t, TypeFullTopUpdate, 1, 2, 0, 0, 1, 2, 1, 0, 0, 0, 0, 0), bin.ErrTruncated},
		{"node description str overrun", frameOf(t, TypeNodeDescription, 1, 2, []byte{0xff, 0xff}), bin.ErrTruncated},
		{"cap nodes over 128", frameOf(t, TypeCapUpdate, 1, 2, 0, 0, 129), ErrBound},
		{"cap caps beyond bytes", frameOf(t, TypeCapUpdate, 1, 2, 0, 0, 1, 2, 1000, 0, 0), bin.ErrTruncated},
		{"cap caps negative", frameOf(t, TypeCapUpdate, 1, 2, 0, 0, 1, 2, -5, 0, 0), ErrBound},
		{"mi params over 10", frameOf(t, TypeMICmd, "cmd", 11, strings.Repeat("\x00\x00", 11), 1, 2, 3), ErrBound},
		{"no trailer", frameOf(t, TypeRemoveNode, 1, 2), bin.ErrTruncated},
		{"generic msg truncated str", frameOf(t, TypeGenericMsg, 1, []byte{9, 0}, 1, 2, 3), bin.ErrTruncated},
		{"sync bad marker", frameOf(t, TypeSync, "c", 1, 3, 7, []byte("abc"), 1, 2, 3), ErrChunkMarker},
		{"sync negative chunk", frameOf(t, TypeSync, "c", 1, -3, int(SyncChunkMarker), 1, 2, 3), ErrBound},
		{"sync chunk overrun", frameOf(t, TypeSync, "c", 1, 300, int(SyncChunkMarker), []byte("abc"), 1, 2, 3), bin.ErrTruncated},
		{"sync half chunk header", frameOf(t, TypeSync, "c", 1, []byte{1, 0}, 1, 2, 3), bin.ErrTruncated},
		{"sync end missing count", frameOf(t, TypeSyncEnd, "c", 1, 2, 3), bin.ErrTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.frame)
			require.ErrorIs(t, err, c.want)
		})
	}
}

func TestDecodeRejectsWrongCapabilityOrType(t *testing.T) {
	b := bin.NewBuilder(1, CapInternal, int32(TypeGenericMsg))
	b.PushInt(1)
	frame, _ := b.Finish()
	_, err := Parse(frame)
	require.ErrorIs(t, err, ErrUnknownType)

	b = bin.NewBuilder(1, CapExtra, int32(TypePing))
	b.PushInt(1)
	frame, _ = b.Finish()
	_, err = Parse(frame)
	require.ErrorIs(t, err, ErrUnknownType)

	for _, typ := range []int32{-1, 14, 1 << 20} {
		b = bin.NewBuilder(1, CapExtra, typ)
		b.PushTrailer(tr)
		frame, _ = b.Finish()
		_, err = Parse(frame)
		require.ErrorIs(t, err, ErrUnknownType)
	}

	b = bin.NewBuilder(1, "dialog-dlg-repl", 1)
	b.PushTrailer(tr)
	frame, _ = b.Finish()
	_, err = Parse(frame)
	require.ErrorIs(t, err, ErrNotClusterer)
	p, _ := bin.Parse(frame)
	body, got, err := SplitTrailer(p)
	require.NoError(t, err)
	assert.Empty(t, body)
	assert.Equal(t, tr, got)
}

func TestEncodeRefusesWhatOpenSIPSWouldReject(t *testing.T) {
	many := make([]int32, MaxNodes+1)
	path := make([]int32, MaxPathLen+1)
	for _, m := range []Message{
		&Pong{Nodes: many},
		&LSUpdate{Path: path},
		&NodeDescription{Path: path},
		&FullTopUpdate{Nodes: make([]TopEntry, MaxNodes+1)},
		&FullTopUpdate{Nodes: []TopEntry{{Neighbors: many}}},
		&FullTopUpdate{Path: path},
		&CapUpdate{Nodes: make([]CapNode, MaxNodes+1)},
		&CapUpdate{Path: path},
		&MICmd{Params: make([]string, MaxMIParams+1)},
	} {
		_, err := m.Append(nil)
		require.ErrorIs(t, err, ErrBound, "%T", m)
	}
	_, err := (&GenericMsg{Msg: strings.Repeat("x", bin.MaxStrLen+1)}).Append(nil)
	require.ErrorIs(t, err, bin.ErrStrTooLong)
	_, err = (&Sync{Chunks: [][]byte{make([]byte, bin.MaxSendLen)}}).Append(nil)
	require.ErrorIs(t, err, bin.ErrTooLarge)

	// The bounds themselves are fine.
	_, err = (&Pong{Nodes: many[:MaxNodes]}).Append(nil)
	require.NoError(t, err)
	_, err = (&MICmd{Params: make([]string, MaxMIParams)}).Append(nil)
	require.NoError(t, err)
}

func TestAppendKeepsPrefix(t *testing.T) {
	prefix := []byte("xyz")
	out, err := (&Ping{Origin: Origin{1, 2}}).Append(prefix)
	require.NoError(t, err)
	assert.Equal(t, "xyz", string(out[:3]))
	_, err = Parse(out[3:])
	require.NoError(t, err)
	// A failed append returns dst unchanged.
	out, err = (&Pong{Nodes: make([]int32, 200)}).Append(prefix)
	require.Error(t, err)
	assert.Equal(t, prefix, out)
}

func TestTypeNames(t *testing.T) {
	assert.Equal(t, "SHTAG_ACTIVE", TypeShtagActive.String())
	assert.Equal(t, "TYPE_99", Type(99).String())
	assert.Equal(t, "TYPE_-1", Type(-1).String())
	assert.Equal(t, "DOWN", LinkDown.String())
	assert.Equal(t, "LinkState(5)", LinkState(5).String())
}
