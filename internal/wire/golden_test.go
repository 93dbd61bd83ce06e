package wire

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/golden"
)

// The captured packets must decode to exactly the fields the capture tool
// recorded, and re-encode to the same bytes.

func TestGoldenVectors(t *testing.T) {
	vs := golden.Vectors(t)
	require.Len(t, vs, 34, "the lab produced 34 vectors")
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			checkFrame(t, v.Frame, v.Decoded)
		})
	}
}

func TestGoldenFrames(t *testing.T) {
	total := 0
	for _, s := range golden.Sessions {
		frames := golden.Frames(t, s)
		for _, f := range frames {
			t.Run(fmt.Sprintf("%s/%d", s, f.Index), func(t *testing.T) {
				checkFrame(t, f.Frame, f.Decoded)
			})
		}
		total += len(frames)
	}
	require.Equal(t, 1217, total, "the three sessions hold 1,217 frames")
}

func checkFrame(t *testing.T, frame []byte, want map[string]any) {
	t.Helper()
	p, err := bin.Parse(frame)
	require.NoError(t, err)
	got, reencoded, err := sidecar(p)
	require.NoError(t, err)
	assert.Equal(t, normalize(t, want), normalize(t, got))
	assert.Equal(t, frame, reencoded, "re-encoding must reproduce the captured bytes")
}

// sidecar decodes p into the shape of the capture's "decoded" JSON and
// re-encodes it from the decoded form.
func sidecar(p bin.Packet) (map[string]any, []byte, error) {
	out := map[string]any{
		"marker":      bin.Marker,
		"total_len":   p.Len(),
		"version":     p.Version,
		"capability":  p.Capability,
		"type":        p.Type,
		"body_offset": bin.HeaderLen + 2 + len(p.Capability) + 4,
	}
	if p.Capability != CapInternal && p.Capability != CapExtra {
		return cachedbSidecar(p, out)
	}
	m, err := Decode(p)
	if err != nil {
		return nil, nil, err
	}
	out["type_name"] = m.MsgType().String()
	trailer := func(tr bin.Trailer) {
		out["trailer"] = map[string]any{"cluster_id": tr.Cluster, "src_node_id": tr.Src, "dst_node_id": tr.Dst}
	}
	origin := func(o Origin) {
		out["cluster_id"] = o.Cluster
		out["src_node_id"] = o.Src
	}
	ids := func(v []int32) []any {
		l := []any{}
		for _, x := range v {
			l = append(l, x)
		}
		return l
	}
	switch m := m.(type) {
	case *Ping:
		origin(m.Origin)
		out["req_node_list"] = boolInt(m.ReqNodeList)
	case *Pong:
		origin(m.Origin)
		out["nr_nodes"] = len(m.Nodes)
		out["node_ids"] = ids(m.Nodes)
	case *LSUpdate:
		origin(m.Origin)
		out["seq_no"], out["timestamp"], out["neigh_id"] = m.Seq, m.Timestamp, m.Neighbor
		out["new_ls"], out["new_ls_name"] = int32(m.State), m.State.String()
		out["path"] = ids(m.Path)
	case *FullTopUpdate:
		origin(m.Origin)
		out["seq_no"], out["timestamp"], out["no_nodes"] = m.Seq, m.Timestamp, len(m.Nodes)
		var nodes []any
		for _, e := range m.Nodes {
			n := map[string]any{"node_id": e.Node, "has_descr": 0, "ls_seq_no": e.LSSeq,
				"ls_timestamp": e.LSTimestamp, "neighbours": ids(e.Neighbors)}
			if e.Desc != nil {
				n["has_descr"] = 1
				n["url"], n["sip_addr"] = e.Desc.URL, e.Desc.SIPAddr
				n["priority"], n["no_ping_retries"] = e.Desc.Priority, e.Desc.PingRetries
			}
			nodes = append(nodes, n)
		}
		out["nodes"] = nodes
		out["path"] = ids(m.Path)
	case *UnknownID:
		origin(m.Origin)
	case *NodeDescription:
		origin(m.Origin)
		out["url"], out["sip_addr"] = m.Desc.URL, m.Desc.SIPAddr
		out["priority"], out["no_ping_retries"] = m.Desc.Priority, m.Desc.PingRetries
		out["path"] = ids(m.Path)
	case *CapUpdate:
		origin(m.Origin)
		out["seq_no"], out["timestamp"], out["nr_nodes"] = m.Seq, m.Timestamp, len(m.Nodes)
		var nodes []any
		for _, cn := range m.Nodes {
			var caps []any
			for _, c := range cn.Caps {
				caps = append(caps, map[string]any{"name": c.Name, "state": boolInt(c.Synced)})
			}
			nodes = append(nodes, map[string]any{"node_id": cn.Node, "caps": caps})
		}
		out["nodes"] = nodes
		out["require_reply"] = boolInt(m.RequireReply)
		out["path"] = ids(m.Path)
	case *RemoveNode:
		trailer(m.Trailer)
		out["target_node_id"] = m.Target
	case *GenericMsg:
		trailer(m.Trailer)
		out["req_like"], out["tag"], out["msg"] = boolInt(m.Request), m.Tag, m.Msg
	case *MICmd:
		trailer(m.Trailer)
		out["cmd_name"], out["no_params"] = m.Command, len(m.Params)
		params := []any{}
		for _, s := range m.Params {
			params = append(params, s)
		}
		out["params"] = params
	case *SyncReq:
		trailer(m.Trailer)
		out["sync_cap"] = m.Capability
	case *Sync:
		trailer(m.Trailer)
		out["sync_cap"], out["data_version"] = m.Capability, m.DataVersion
		var chunks []any
		for _, c := range m.Chunks {
			ch := map[string]any{"chunk_size": len(c), "start_marker": SyncChunkMarker}
			r := bin.NewReader(c)
			if err := popCachedbRecord(&r, ch); err != nil {
				return nil, nil, err
			}
			chunks = append(chunks, ch)
		}
		out["chunks"] = chunks
	case *SyncEnd:
		trailer(m.Trailer)
		out["sync_cap"], out["no_sync_chunks"] = m.Capability, m.Chunks
	case *ShtagActive:
		trailer(m.Trailer)
		out["shtag"] = m.Tag
	default:
		return nil, nil, fmt.Errorf("unexpected message %T", m)
	}
	enc, err := m.Append(nil)
	return out, enc, err
}

// The lab replicated cachedb_local, whose packets (and sync chunks) hold
// collection, attribute, value and expiry.
func popCachedbRecord(r *bin.Reader, out map[string]any) error {
	out["collection"] = r.PopStr()
	out["attr"] = r.PopStr()
	out["value"] = r.PopStr()
	out["expires"] = r.PopInt()
	return r.Done()
}

func cachedbSidecar(p bin.Packet, out map[string]any) (map[string]any, []byte, error) {
	if p.Capability != "cachedb-local-repl" || p.Type != 1 {
		return nil, nil, fmt.Errorf("unexpected module packet %s/%d", p.Capability, p.Type)
	}
	body, tr, err := SplitTrailer(p)
	if err != nil {
		return nil, nil, err
	}
	out["type_name"] = "REPL_CACHE_INSERT"
	out["trailer"] = map[string]any{"cluster_id": tr.Cluster, "src_node_id": tr.Src, "dst_node_id": tr.Dst}
	r := bin.NewReader(body)
	if err := popCachedbRecord(&r, out); err != nil {
		return nil, nil, err
	}
	// Re-encode from the decoded fields.
	b := bin.NewBuilder(p.Version, p.Capability, p.Type)
	b.PushStr(out["collection"].(string))
	b.PushStr(out["attr"].(string))
	b.PushStr(out["value"].(string))
	b.PushInt(out["expires"].(int32))
	b.PushTrailer(tr)
	enc, err := b.Finish()
	return out, enc, err
}

// normalize turns both sides into plain JSON values so numbers compare
// regardless of their Go type.
func normalize(t *testing.T, v any) any {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(raw, &out))
	return out
}
