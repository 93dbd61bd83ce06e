package main

import (
	"testing"

	"go.uber.org/goleak"
)

// The example closes every node it starts: nothing may be left running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun runs the whole demo, as `go run ./examples/vip` does.
func TestRun(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
