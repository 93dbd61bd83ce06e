package clusterer_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/clustertest"
)

// BenchmarkSyncRecords measures full syncs of 100 000 records of 200
// bytes from a donor to a joiner: each operation is one RequestSync and
// the whole data set until SyncDone. The joiner's handler only counts
// records (and checks their number), so the figure is the library's:
// packing, sending, receiving, unpacking and handing the records over.
// records/s is reported next to MB/s of record data.
//
//	go test -run '^$' -bench BenchmarkSyncRecords -benchtime 20x .
func BenchmarkSyncRecords(b *testing.B) {
	const records, size = 100000, 200
	b.Run("memnet", func(b *testing.B) {
		nw := clustertest.NewNetwork()
		b.Cleanup(func() { nw.Close() })
		benchSync(b, records, size, nw, url(1), url(2))
	})
	b.Run("tcp", func(b *testing.B) {
		var urls [2]string
		for i := range urls {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			urls[i] = "bin:" + l.Addr().String()
			l.Close()
		}
		benchSync(b, records, size, nil, urls[0], urls[1])
	})
}

func benchSync(b *testing.B, records, size int, tr clusterer.Transport, donorURL, joinerURL string) {
	// The donor's records: one buffer, written record by record.
	data := make([]byte, records*size)
	for i := range records {
		rec := data[i*size : (i+1)*size]
		copy(rec, fmt.Sprintf("key-%012d", i))
		for j := 16; j < size; j++ {
			rec[j] = byte(i + j)
		}
	}
	mk := func(id int, self, other string, otherID int) *clusterer.Cluster {
		cc := clusterer.ClusterConfig{ID: cl, Self: clusterer.NodeInfo{URL: self},
			Nodes: []clusterer.NodeInfo{{ClusterID: cl, ID: otherID, URL: other}}}
		c, err := clusterer.New(clusterer.Config{NodeID: id, Clusters: []clusterer.ClusterConfig{cc}, Transport: tr,
			PingInterval: time.Second, PingTimeout: 500 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	donor := mk(1, donorURL, joinerURL, 2)
	err := donor.RegisterCapability(clusterer.CapabilityConfig{Name: kvCap, Cluster: cl},
		clusterer.HandlerFuncs{Donate: func(w *clusterer.SyncWriter) error {
			for i := range records {
				if err := w.Write(data[i*size : (i+1)*size]); err != nil {
					return err
				}
			}
			return nil
		}})
	if err != nil {
		b.Fatal(err)
	}
	joiner := mk(2, joinerURL, donorURL, 1)
	got := 0 // records of the current session (the capability's goroutine)
	ends := make(chan error, 1)
	err = joiner.RegisterCapability(clusterer.CapabilityConfig{Name: kvCap, Cluster: cl, RequireSync: true},
		clusterer.HandlerFuncs{
			SyncRecord: func(r clusterer.SyncRecord) {
				if len(r.Data) != size {
					panic(fmt.Sprintf("record of %d bytes", len(r.Data)))
				}
				got++
			},
			Event: func(e clusterer.Event) {
				switch e.Kind {
				case clusterer.SyncStarted:
					got = 0
				case clusterer.SyncDone:
					if got != records {
						ends <- fmt.Errorf("SyncDone after %d records, want %d", got, records)
						return
					}
					ends <- nil
				case clusterer.SyncFailed:
					ends <- e.Err
				}
			},
		})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := donor.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if err := joiner.Start(ctx); err != nil {
		b.Fatal(err)
	}
	wait := func() {
		select {
		case err := <-ends:
			if err != nil {
				b.Fatal(err)
			}
		case <-time.After(time.Minute):
			b.Fatal("no SyncDone within a minute")
		}
	}
	wait() // the sync at start, with the link setup

	b.SetBytes(int64(records * size))
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := joiner.RequestSync(ctx, cl, kvCap); err != nil {
			b.Fatal(err)
		}
		wait()
	}
	b.ReportMetric(float64(records)*float64(b.N)/time.Since(start).Seconds(), "records/s")
}
