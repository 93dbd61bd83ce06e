package wire

import (
	"testing"

	"github.com/clusterer-go/clusterer/bin"
)

// benchMessages are the packets the issue names: PING, LS_UPDATE,
// FULL_TOP_UPDATE (a 16-node view) and a 1 KiB module packet.
func benchMessages(b *testing.B) map[string][]byte {
	out := map[string][]byte{}
	ping, _ := (&Ping{Origin: Origin{1, 2}, ReqNodeList: true}).Append(nil)
	out["ping"] = ping
	ls, _ := (&LSUpdate{Origin: Origin{1, 2}, Seq: 7, Timestamp: 1795312707, Neighbor: 3, State: LinkUp, Path: []int32{2, 1}}).Append(nil)
	out["ls_update"] = ls
	ft := &FullTopUpdate{Origin: Origin{1, 1}, Seq: 3, Timestamp: 1795312707, Path: []int32{1}}
	for n := int32(1); n <= 16; n++ {
		e := TopEntry{Node: n, LSSeq: n, LSTimestamp: 1795312700}
		for m := int32(1); m <= 16; m++ {
			if m != n {
				e.Neighbors = append(e.Neighbors, m)
			}
		}
		if n%4 == 0 {
			e.Desc = &Description{URL: "bin:10.0.0.1:5555", SIPAddr: "10.0.0.1:5060", Priority: 50, PingRetries: 3}
		}
		ft.Nodes = append(ft.Nodes, e)
	}
	full, err := ft.Append(nil)
	if err != nil {
		b.Fatal(err)
	}
	out["full_top_update"] = full
	mb := bin.NewBuilder(1, "dialog-dlg-repl", 1)
	mb.PushStr("callid-0123456789@example.com")
	mb.PushRaw(make([]byte, 1024-mb.Len()-bin.TrailerLen))
	mb.PushTrailer(bin.Trailer{Cluster: 1, Src: 1, Dst: 2})
	mod, err := mb.Finish()
	if err != nil || len(mod) != 1024 {
		b.Fatal(err, len(mod))
	}
	out["module_1k"] = mod
	return out
}

var order = []string{"ping", "ls_update", "full_top_update", "module_1k"}

// BenchmarkParse frames a packet and walks its body with a Reader: the
// receive path before any typed decoding. It must not allocate.
func BenchmarkParse(b *testing.B) {
	bin.InternCapability("dialog-dlg-repl")
	msgs := benchMessages(b)
	for _, name := range order {
		frame := msgs[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				p, err := bin.Parse(frame)
				if err != nil {
					b.Fatal(err)
				}
				r := p.Reader()
				if p.Capability == CapInternal {
					r.PopInt()
					r.PopInt()
				} else {
					r.PopTrailer()
					r.PopBytes()
				}
				if r.Err() != nil {
					b.Fatal(r.Err())
				}
			}
		})
	}
}

// BenchmarkDecode decodes into the typed message (the control plane).
func BenchmarkDecode(b *testing.B) {
	msgs := benchMessages(b)
	for _, name := range order[:3] {
		frame := msgs[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMarshal encodes into a reused buffer, as the send path does.
func BenchmarkMarshal(b *testing.B) {
	msgs := benchMessages(b)
	for _, name := range order[:3] {
		m, err := Parse(msgs[name])
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.SetBytes(int64(len(msgs[name])))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Append(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("module_1k", func(b *testing.B) {
		p, _ := bin.Parse(msgs["module_1k"])
		r := p.Reader()
		r.PopTrailer()
		callID := r.PopStr()
		payload := r.Rest()
		buf := make([]byte, 0, 4096)
		b.SetBytes(1024)
		b.ReportAllocs()
		var bld bin.Builder
		for b.Loop() {
			bld.Reset(buf[:0], 1, "dialog-dlg-repl", 1)
			bld.PushStr(callID)
			bld.PushRaw(payload)
			bld.PushTrailer(bin.Trailer{Cluster: 1, Src: 1, Dst: 2})
			if _, err := bld.Finish(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
