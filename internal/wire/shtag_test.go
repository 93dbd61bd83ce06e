package wire

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/bin"
)

func shtagClaims() []*ShtagClaim {
	tr := bin.Trailer{Cluster: 1, Src: 2, Dst: 3}
	return []*ShtagClaim{
		{Trailer: tr, Tag: "vip", Term: 7, Owner: 2, Active: true},
		{Trailer: tr, Tag: "vip", Term: 8, Owner: 2, Active: true, Announce: true},
		{Trailer: tr, Tag: "gw-probe", Term: 0},
		{Trailer: tr, Tag: strings.Repeat("t", MaxShtagName), Term: 1<<31 - 1, Owner: 128},
	}
}

// The layout is pinned byte for byte: nodes of different builds must agree
// on it.
func TestShtagClaimLayout(t *testing.T) {
	m := &ShtagClaim{Trailer: bin.Trailer{Cluster: 1, Src: 2, Dst: 3}, Tag: "vip", Term: 7, Owner: 2, Active: true}
	frame, err := m.Append(nil)
	require.NoError(t, err)
	want := "5034434b" + "3f000000" + "0100" + // marker, length 63, version 1
		"1200" + hex.EncodeToString([]byte("clusterer-go-shtag")) + "64000000" + // capability, type 100
		"0300" + hex.EncodeToString([]byte("vip")) + "07000000" + "02000000" + "01000000" + // tag, term, owner, flags
		"01000000" + "02000000" + "03000000" // trailer
	require.Equal(t, want, hex.EncodeToString(frame))
	require.Equal(t, "SHTAG_CLAIM", m.MsgType().String())
	require.Equal(t, CapShtag, m.MsgType().Capability())
}

func TestShtagClaimRoundTrip(t *testing.T) {
	for _, m := range shtagClaims() {
		frame, err := m.Append(nil)
		require.NoError(t, err)
		got, err := Parse(frame)
		require.NoError(t, err)
		require.Equal(t, m, got)
		again, err := got.Append(nil)
		require.NoError(t, err)
		require.Equal(t, frame, again)
	}
}

func TestShtagClaimRefused(t *testing.T) {
	good := &ShtagClaim{Trailer: bin.Trailer{Cluster: 1, Src: 2, Dst: 3}, Tag: "vip", Term: 1, Owner: 2, Active: true}
	frame, err := good.Append(nil)
	require.NoError(t, err)
	body := func(tag string, ints ...int32) []byte {
		b := bin.NewBuilder(ShtagVersion, CapShtag, int32(TypeShtagClaim))
		b.PushStr(tag)
		for _, v := range ints {
			b.PushInt(v)
		}
		b.PushTrailer(good.Trailer)
		out, err := b.Finish()
		require.NoError(t, err)
		return out
	}
	wrongVersion := append([]byte(nil), frame...)
	wrongVersion[8] = 2
	wrongType := append([]byte(nil), frame...)
	wrongType[12+len(CapShtag)] = 101
	cases := map[string][]byte{
		"version":        wrongVersion,
		"type":           wrongType,
		"empty tag":      body("", 1, 2, 1),
		"long tag":       body(strings.Repeat("x", MaxShtagName+1), 1, 2, 1),
		"negative term":  body("vip", -1, 2, 1),
		"negative owner": body("vip", 1, -2, 1),
		"unknown flag":   body("vip", 1, 2, 5),
		"truncated":      body("vip", 1, 2),
		"trailing bytes": body("vip", 1, 2, 1, 0),
	}
	for name, f := range cases {
		_, err := Parse(f)
		assert.Error(t, err, name)
	}
	// The encoder refuses what the decoder would.
	for _, m := range []*ShtagClaim{{Tag: ""}, {Tag: "vip", Term: -1}, {Tag: "vip", Owner: -1}} {
		_, err := m.Append(nil)
		assert.ErrorIs(t, err, ErrBound)
	}
}

// FuzzShtagClaim: hostile claims never panic, and whatever decodes
// re-encodes identically.
func FuzzShtagClaim(f *testing.F) {
	for _, m := range shtagClaims() {
		frame, _ := m.Append(nil)
		p, _ := bin.Parse(frame)
		f.Add(p.Body)
	}
	fuzzType(f, TypeShtagClaim)
}
