package clusterer

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSlabBodiesAreIndependent(t *testing.T) {
	var s bodySlab
	a := s.copy([]byte("first"))
	b := s.copy([]byte("second"))
	a = append(a, " grown"...) // capped: must not run into b
	require.Equal(t, "first grown", string(a))
	require.Equal(t, "second", string(b))
	big := make([]byte, slabSize)
	require.Equal(t, big, s.copy(big))
	for range 3 * slabSize / 100 {
		x := s.copy(make([]byte, 100))
		require.Len(t, x, 100)
		require.Equal(t, 100, cap(x))
	}
}
