package memnet_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: the package starts none of its
// own, and Close must release every blocked caller.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
