// Command quickstart is the README's first command.
//
// Until the cluster runtime lands it replays the captured join of a real
// three-node OpenSIPS cluster (../shared/testdata/opensips) through this
// library's decoder and prints every message, showing that Go reads
// OpenSIPS's BIN traffic field for field.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/clusterer-go/clusterer/bin"
	"github.com/clusterer-go/clusterer/internal/wire"
)

func main() {
	dir := flag.String("captures", "../shared/testdata/opensips", "directory of the OpenSIPS captures")
	n := flag.Int("n", 40, "number of frames to print")
	flag.Parse()
	if err := run(*dir, *n); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// port → node id in the lab (node N listens on 2556N).
func nodeOf(port int) string {
	if port >= 25561 && port <= 25563 {
		return fmt.Sprint(port - 25560)
	}
	return "?"
}

func run(dir string, limit int) error {
	path := filepath.Join(dir, "frames", "session1-mesh.frames.jsonl")
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w (run from the repository root, with shared/ beside it)", err)
	}
	defer f.Close()
	fmt.Println("Replaying the captured join of a 3-node OpenSIPS 3.6.8 cluster through the Go decoder:")
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	counts := map[string]int{}
	total := 0
	for sc.Scan() {
		var rec struct {
			Rel float64 `json:"rel"`
			Src int     `json:"tcp_src_port"`
			Dst int     `json:"tcp_dst_port"`
			Hex string  `json:"hex"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return err
		}
		frame, err := hex.DecodeString(rec.Hex)
		if err != nil {
			return err
		}
		p, err := bin.Parse(frame)
		if err != nil {
			return fmt.Errorf("frame %d: %w", total, err)
		}
		desc := fmt.Sprintf("%s type %d (module packet, %d-byte body)", p.Capability, p.Type, len(p.Body))
		name := p.Capability
		if m, err := wire.Decode(p); err == nil {
			name = m.MsgType().String()
			desc = fmt.Sprintf("%-16s %+v", name, m)
		} else if p.Capability == wire.CapInternal || p.Capability == wire.CapExtra {
			return fmt.Errorf("frame %d: %w", total, err)
		}
		counts[name]++
		if total < limit {
			// Frames go to a node's listener, except UNKNOWN_ID, which
			// travels back on the pinger's own connection.
			to := "node " + nodeOf(rec.Dst)
			if nodeOf(rec.Dst) == "?" {
				to = "back to the pinger"
			}
			fmt.Printf("%8.3fs %-18s %3d bytes  %s\n", rec.Rel, to, len(frame), desc)
		}
		total++
	}
	if err := sc.Err(); err != nil {
		return err
	}
	fmt.Printf("\nDecoded all %d frames of the session; by type: %v\n", total, counts)
	return nil
}
