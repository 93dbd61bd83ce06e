package route_test

import (
	"fmt"

	"github.com/clusterer-go/clusterer/internal/route"
)

func Example() {
	// 1 has UP links with 2 and 3; 2 and 3 both reach 4; 4 reaches 5.
	g := route.Graph{
		Self: 1,
		Adj: map[int32][]int32{
			1: {2, 3},
			2: {1, 4},
			3: {1, 4},
			4: {2, 3, 5},
			5: {4},
		},
		Priority: map[int32]int32{2: 20, 3: 10},
	}
	t := route.Compute(g, route.Shortest)
	for _, dst := range t.Reachable() {
		hop, _ := t.NextHop(dst)
		hops, _ := t.Hops(dst)
		fmt.Printf("to %d via %d (%d hops)\n", dst, hop, hops)
	}
	// Output:
	// to 2 via 2 (1 hops)
	// to 3 via 3 (1 hops)
	// to 4 via 3 (2 hops)
	// to 5 via 3 (3 hops)
}
