// Package golden loads the captured OpenSIPS traffic in
// ../shared/testdata/opensips (real BIN packets from a three-node OpenSIPS
// 3.6.8 lab) for tests. The data is the oracle for wire compatibility, so a
// test that cannot find it fails instead of skipping.
package golden

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// EnvDir overrides where the captures are looked for.
const EnvDir = "CLUSTERER_OPENSIPS_TESTDATA"

// Dir returns the directory holding index.json, vectors/ and frames/. It
// looks in $CLUSTERER_OPENSIPS_TESTDATA, then in shared/testdata/opensips
// beside the module root (where CI places it).
func Dir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv(EnvDir); d != "" {
		return mustExist(tb, d)
	}
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatalf("golden: %v", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return mustExist(tb, filepath.Join(d, "..", "shared", "testdata", "opensips"))
		}
		if filepath.Dir(d) == d {
			tb.Fatalf("golden: no go.mod above %s", wd)
		}
	}
}

func mustExist(tb testing.TB, d string) string {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(d, "index.json")); err != nil {
		tb.Fatalf("golden: OpenSIPS captures not found (%v); they are required: place shared/ beside the checkout or set %s", err, EnvDir)
	}
	return d
}

// Vector is one annotated frame of vectors/.
type Vector struct {
	Name    string
	Frame   []byte
	Decoded map[string]any // the sidecar's "decoded" object
	Capture map[string]any // the sidecar's "capture" object
}

// Vectors loads every vectors/*.hex with its sidecar, sorted by name.
func Vectors(tb testing.TB) []Vector {
	tb.Helper()
	dir := filepath.Join(Dir(tb), "vectors")
	hexes, err := filepath.Glob(filepath.Join(dir, "*.hex"))
	if err != nil || len(hexes) == 0 {
		tb.Fatalf("golden: no vectors in %s (%v)", dir, err)
	}
	sort.Strings(hexes)
	var out []Vector
	for _, h := range hexes {
		name := strings.TrimSuffix(filepath.Base(h), ".hex")
		raw, err := os.ReadFile(h)
		if err != nil {
			tb.Fatalf("golden: %v", err)
		}
		frame, err := hex.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil {
			tb.Fatalf("golden: %s: %v", h, err)
		}
		var side struct {
			Decoded map[string]any `json:"decoded"`
			Capture map[string]any `json:"capture"`
		}
		readJSON(tb, filepath.Join(dir, name+".json"), &side)
		out = append(out, Vector{Name: name, Frame: frame, Decoded: side.Decoded, Capture: side.Capture})
	}
	return out
}

// Frame is one captured frame of frames/*.frames.jsonl.
type Frame struct {
	Session  string
	Index    int
	Time     float64 // unix seconds
	Rel      float64 // seconds from the session start
	SrcPort  int
	DstPort  int
	Listener int // node whose listener received it; 0 when it travelled back on the peer's connection
	Frame    []byte
	Decoded  map[string]any
}

// Sessions lists the captured sessions in order.
var Sessions = []string{"session1-mesh", "session2-routed", "session3-chunked-sync"}

// Frames loads every frame of one session, in capture order.
func Frames(tb testing.TB, session string) []Frame {
	tb.Helper()
	path := filepath.Join(Dir(tb), "frames", session+".frames.jsonl")
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("golden: %v", err)
	}
	defer f.Close()
	var out []Frame
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			I        int            `json:"i"`
			TS       float64        `json:"ts"`
			Rel      float64        `json:"rel"`
			Src      int            `json:"tcp_src_port"`
			Dst      int            `json:"tcp_dst_port"`
			Listener *int           `json:"to_listener_node"`
			Hex      string         `json:"hex"`
			Decoded  map[string]any `json:"decoded"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			tb.Fatalf("golden: %s: %v", path, err)
		}
		frame, err := hex.DecodeString(rec.Hex)
		if err != nil {
			tb.Fatalf("golden: %s frame %d: %v", path, rec.I, err)
		}
		fr := Frame{Session: session, Index: rec.I, Time: rec.TS, Rel: rec.Rel, SrcPort: rec.Src,
			DstPort: rec.Dst, Frame: frame, Decoded: rec.Decoded}
		if rec.Listener != nil {
			fr.Listener = *rec.Listener
		}
		out = append(out, fr)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("golden: %s: %v", path, err)
	}
	if len(out) == 0 {
		tb.Fatalf("golden: %s is empty", path)
	}
	return out
}

func readJSON(tb testing.TB, path string, v any) {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("golden: %v", err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		tb.Fatalf("golden: %s: %v", path, err)
	}
}
