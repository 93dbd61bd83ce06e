// Package kvtest is a replicated key-value store for tests of the
// operations packages (admin, clusterctl, promclusterer): the host side of
// a capability that replicates updates and syncs its whole data set.
package kvtest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/clusterer-go/clusterer"
	"github.com/clusterer-go/clusterer/bin"
)

// Store holds key=value pairs. A sync record is "key=value"; an update
// packet carries the key and the value as two strings.
type Store struct {
	name    string
	cluster int

	mu      sync.Mutex
	c       *clusterer.Cluster
	data    map[string]string
	hold    chan struct{} // the next donation waits for it before holdAt
	holdAt  int
	reached chan struct{} // closed when that donation reaches holdAt
	synced  int           // records received by syncs
}

// New returns a store of capability name in cluster holding n pairs
// k000=v0, k001=v1…
func New(name string, cluster, n int) *Store {
	s := &Store{name: name, cluster: cluster, data: map[string]string{}}
	for i := range n {
		s.data[fmt.Sprintf("k%03d", i)] = fmt.Sprintf("v%d", i)
	}
	return s
}

// Register registers the store's capability on c.
func (s *Store) Register(c *clusterer.Cluster, cfg clusterer.CapabilityConfig) error {
	s.mu.Lock()
	s.c = c
	s.mu.Unlock()
	cfg.Name, cfg.Cluster = s.name, s.cluster
	return c.RegisterCapability(cfg, s)
}

// Hold makes the next donation stop before record i until release is
// called; reached is closed when it gets there. Call release before the
// node is closed (closing waits for the donation).
func (s *Store) Hold(i int) (reached <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hold := make(chan struct{})
	s.hold, s.holdAt, s.reached = hold, i, make(chan struct{})
	var once sync.Once
	return s.reached, func() { once.Do(func() { close(hold) }) }
}

// Update sets a pair and replicates it to every node.
func (s *Store) Update(k, v string) error {
	s.mu.Lock()
	s.data[k] = v
	c := s.c
	s.mu.Unlock()
	b := bin.NewBuilder(1, s.name, 1)
	b.PushStr(k)
	b.PushStr(v)
	frame, err := b.Finish()
	if err != nil {
		return err
	}
	p, err := bin.Parse(frame)
	if err != nil {
		return err
	}
	return c.SendAll(s.cluster, p)
}

// Data returns a copy of the pairs.
func (s *Store) Data() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.data)
}

// SyncedRecords is the number of records received by syncs so far.
func (s *Store) SyncedRecords() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// Records returns the records a full sync sends now, in order.
func (s *Store) Records() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.data))
	for _, k := range slices.Sorted(maps.Keys(s.data)) {
		out = append(out, k+"="+s.data[k])
	}
	return out
}

// Bytes is the number of record bytes a full sync sends now.
func (s *Store) Bytes() int64 {
	var n int64
	for _, r := range s.Records() {
		n += int64(len(r))
	}
	return n
}

// HandlePacket implements clusterer.Handler.
func (s *Store) HandlePacket(p clusterer.Packet) {
	r := p.Reader()
	k, v := r.PopStr(), r.PopStr()
	if r.Err() != nil {
		return
	}
	s.mu.Lock()
	s.data[k] = v
	s.mu.Unlock()
}

// HandleEvent implements clusterer.Handler.
func (s *Store) HandleEvent(clusterer.Event) {}

// HandleSyncRecord implements clusterer.SyncReceiver.
func (s *Store) HandleSyncRecord(r clusterer.SyncRecord) {
	k, v, ok := strings.Cut(string(r.Data), "=")
	if !ok {
		return
	}
	s.mu.Lock()
	s.data[k] = v
	s.synced++
	s.mu.Unlock()
}

// WriteSync implements clusterer.SyncSource.
func (s *Store) WriteSync(w *clusterer.SyncWriter) error {
	s.mu.Lock()
	hold, at, reached := s.hold, s.holdAt, s.reached
	s.hold = nil
	s.mu.Unlock()
	for i, rec := range s.Records() {
		if hold != nil && i == at {
			close(reached)
			<-hold
		}
		if err := w.Write([]byte(rec)); err != nil {
			return err
		}
	}
	return nil
}
