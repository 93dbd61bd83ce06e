package wire

import (
	"errors"
	"reflect"
	"testing"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/golden"
)

// Each message decoder is fuzzed on its own: the input is the packet body,
// wrapped in a header of the right capability, type and version, so the
// fuzzer spends its effort inside that decoder. The property: decoding
// never panics, and whatever decodes re-encodes to bytes that decode to
// the same message and re-encode identically.

func fuzzType(f *testing.F, typ Type) {
	for _, v := range golden.Vectors(f) {
		p, err := bin.Parse(v.Frame)
		if err == nil && p.Capability == typ.Capability() && Type(p.Type) == typ {
			f.Add(p.Body)
		}
	}
	for _, m := range allMessages() {
		if m.MsgType() == typ {
			frame, _ := m.Append(nil)
			p, _ := bin.Parse(frame)
			f.Add(p.Body)
		}
	}
	version := Version
	if typ == TypeSync || typ == TypeSyncEnd || typ == TypeSyncReq {
		version = SyncVersion
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		frame, err := bin.AppendPacket(nil, bin.Packet{Version: version, Capability: typ.Capability(), Type: int32(typ), Body: body})
		if err != nil {
			return // too large to be a packet at all
		}
		roundTrip(t, frame)
	})
}

func roundTrip(t *testing.T, frame []byte) {
	m1, err := Parse(frame)
	if err != nil {
		return
	}
	enc1, err := m1.Append(nil)
	if err != nil {
		if errors.Is(err, bin.ErrTooLarge) && len(frame) > bin.MaxSendLen {
			return // accepted from the network, but too large to send
		}
		t.Fatalf("decoded %s does not re-encode: %v", m1.MsgType(), err)
	}
	if len(enc1) > len(frame) {
		t.Fatalf("re-encoding grew the packet from %d to %d bytes", len(frame), len(enc1))
	}
	m2, err := Parse(enc1)
	if err != nil {
		t.Fatalf("re-encoded %s does not decode: %v", m1.MsgType(), err)
	}
	if !reflect.DeepEqual(m1, m2) {
		t.Fatalf("round trip changed the message:\n%#v\n%#v", m1, m2)
	}
	enc2, err := m2.Append(nil)
	if err != nil || string(enc1) != string(enc2) {
		t.Fatalf("encoding is not stable: %v", err)
	}
}

func FuzzPing(f *testing.F)            { fuzzType(f, TypePing) }
func FuzzPong(f *testing.F)            { fuzzType(f, TypePong) }
func FuzzLSUpdate(f *testing.F)        { fuzzType(f, TypeLSUpdate) }
func FuzzFullTopUpdate(f *testing.F)   { fuzzType(f, TypeFullTopUpdate) }
func FuzzUnknownID(f *testing.F)       { fuzzType(f, TypeUnknownID) }
func FuzzNodeDescription(f *testing.F) { fuzzType(f, TypeNodeDescription) }
func FuzzRemoveNode(f *testing.F)      { fuzzType(f, TypeRemoveNode) }
func FuzzGenericMsg(f *testing.F)      { fuzzType(f, TypeGenericMsg) }
func FuzzMICmd(f *testing.F)           { fuzzType(f, TypeMICmd) }
func FuzzCapUpdate(f *testing.F)       { fuzzType(f, TypeCapUpdate) }
func FuzzSyncReq(f *testing.F)         { fuzzType(f, TypeSyncReq) }
func FuzzSync(f *testing.F)            { fuzzType(f, TypeSync) }
func FuzzSyncEnd(f *testing.F)         { fuzzType(f, TypeSyncEnd) }
func FuzzShtagActive(f *testing.F)     { fuzzType(f, TypeShtagActive) }

// FuzzDecode feeds whole frames, so capability, type and version mutate too.
func FuzzDecode(f *testing.F) {
	for _, v := range golden.Vectors(f) {
		f.Add(v.Frame)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		roundTrip(t, frame)
	})
}
