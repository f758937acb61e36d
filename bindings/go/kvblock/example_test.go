package kvblock_test

import (
	"fmt"

	"kvblock"
)

// The README's Go example (bindings/README.md): a pool, a request's hashes, a cached
// prefix on the second request, and the fleet index answering which worker holds it.
func Example() {
	pool, err := kvblock.NewPool(kvblock.Config{BlockCount: 1024, Evict: "lineage_arc"})
	if err != nil {
		panic(err)
	}
	tokens := make([]uint32, 100)
	for i := range tokens {
		tokens[i] = uint32(i)
	}
	h, _ := kvblock.HashTokens(tokens, 16, 0) // 6 full blocks
	for req := 1; req <= 2; req++ {
		hit, _ := pool.Match(h) // cached prefix, one lock
		rest, err := pool.Put(h[hit.Len():])
		if err != nil {
			panic(err)
		}
		fmt.Printf("request %d: %d cached, %d new\n", req, hit.Len(), rest.Len())
		hit.Release() // exactly once; the blocks stay cached
		rest.Release()
	}
	fmt.Println("close:", pool.Close())

	idx, _ := kvblock.NewIndex(16)
	defer idx.Close()
	w, _ := idx.AddStream("worker-1", kvblock.NoRank, kvblock.Router)
	rh, _ := idx.Hashes(tokens, "", "")
	idx.Apply(w, []kvblock.Event{{Type: kvblock.Stored, Tier: kvblock.TierDevice, Hashes: rh[:4]}}, 1)
	best, blocks, _ := idx.MatchTokens(tokens, "", "", 1)
	fmt.Printf("%s holds %d of %d blocks\n", best[0].Worker, best[0].Device, blocks)
	// Output:
	// request 1: 0 cached, 6 new
	// request 2: 6 cached, 0 new
	// close: <nil>
	// worker-1 holds 4 of 6 blocks
}
