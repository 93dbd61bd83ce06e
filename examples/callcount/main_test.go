package main

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The example closes every node it starts: nothing may be left running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun runs the whole demo, as `go run ./examples/callcount` does, and
// bounds it: it takes about a second and a half.
func TestRun(t *testing.T) {
	done := make(chan error, 1)
	go func() { done <- run() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not finish within 30 s")
	}
}
