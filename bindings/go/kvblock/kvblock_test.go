package kvblock

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

func seq(lo, hi uint32) []uint32 {
	t := make([]uint32, 0, hi-lo)
	for i := lo; i < hi; i++ {
		t = append(t, i)
	}
	return t
}

func mustPool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	p, err := NewPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// examples/quickstart.c, in Go: the same pool, prompt, requests and expected numbers.
func TestQuickstart(t *testing.T) {
	pool := mustPool(t, Config{BlockCount: 1024})
	h, err := HashTokens(seq(1000, 1040), 16, 0)
	if err != nil || len(h) != 2 {
		t.Fatalf("hash: %v %d", err, len(h))
	}
	hit, _ := pool.Match(h)
	if hit.Len() != 0 {
		t.Fatal("hit on an empty pool")
	}
	hit.Release()
	m, err := pool.Allocate(2)
	if err != nil {
		t.Fatal(err)
	}
	ids := m.IDs()
	c, err := m.Stage(h)
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := c.Register()
	if err != nil {
		t.Fatal(err)
	}
	if got := blocks.IDs(); got[0] != ids[0] || got[1] != ids[1] {
		t.Fatalf("ids %v vs %v", got, ids)
	}
	if err := blocks.Release(); err != nil { // the blocks stay cached
		t.Fatal(err)
	}
	got, _ := pool.Match(h)
	if got.Len() != 2 || got.IDs()[0] != ids[0] {
		t.Fatalf("second request: %v", got.IDs())
	}
	one, _ := got.Clone(0)
	if one.UseCount() != 2 {
		t.Fatalf("use count %d", one.UseCount())
	}
	one.Release()
	got.Release()
	s := pool.Stats()
	if s.Inactive != 2 || s.Reset != 1022 || s.MatchReturned != 2 {
		t.Fatalf("stats %+v", s)
	}
	if err := pool.Check(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsAndMisuse(t *testing.T) {
	if _, err := NewPool(Config{BlockCount: 0}); !errors.Is(err, EINVAL) {
		t.Fatalf("block count 0: %v", err)
	}
	pool := mustPool(t, Config{BlockCount: 4, Evict: "lineage_arc", Name: "gpu"})
	_, err := pool.Allocate(5)
	var e Errno
	if !errors.As(err, &e) || e != ENOSPC || e.Name() != "ENOSPC" {
		t.Fatalf("allocate 5 of 4: %v", err)
	}
	if pool.Available() != 4 {
		t.Fatal("a failed allocate took blocks")
	}
	h, _ := HashTokens(seq(0, 32), 16, 0)
	b, err := pool.Put(h)
	if err != nil {
		t.Fatal(err)
	}
	// Close refuses while a handle is outstanding.
	if err := pool.Close(); !errors.Is(err, EBUSY) {
		t.Fatalf("close with a handle: %v", err)
	}
	if err := b.Release(); err != nil {
		t.Fatal(err)
	}
	// Double release: ESTALE from the binding, the C pool untouched.
	if err := b.Release(); !errors.Is(err, ESTALE) {
		t.Fatalf("second release: %v", err)
	}
	m, _ := pool.Allocate(2)
	if _, err := m.Stage(h[:1]); !errors.Is(err, EINVAL) {
		t.Fatalf("stage 1 hash for 2 blocks: %v", err)
	}
	m.Release()
	if _, err := m.Stage(h); !errors.Is(err, ESTALE) {
		t.Fatalf("stage after release: %v", err)
	}
	if s := pool.Stats(); s.Misuse != 0 || s.Inactive != 2 {
		t.Fatalf("stats %+v", s)
	}
	if err := pool.Check(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMatchIntoReusesAReleasedBatch(t *testing.T) {
	pool := mustPool(t, Config{BlockCount: 64})
	h, _ := HashTokens(seq(0, 64), 16, 0)
	b, _ := pool.Put(h)
	b.Release()
	out, err := pool.MatchInto(h[:2], nil)
	if err != nil || out.Len() != 2 {
		t.Fatalf("first: %v", err)
	}
	if _, err := pool.MatchInto(h, out); !errors.Is(err, ESTALE) {
		t.Fatalf("into a live batch: %v", err)
	}
	out.Release()
	again, err := pool.MatchInto(h, out)
	if err != nil || again != out || out.Len() != 4 || pool.Stats().Primary != 4 {
		t.Fatalf("reuse: %v %d", err, out.Len())
	}
	out.Release()
	if err := pool.Check(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWeakReferences(t *testing.T) {
	pool := mustPool(t, Config{BlockCount: 8})
	defer pool.Close()
	h, _ := HashTokens(seq(0, 16), 16, 0)
	b, _ := pool.Put(h)
	one, _ := b.Clone(0)
	w := one.Downgrade()
	one.Release()
	b.Release()
	up, err := w.Upgrade() // resurrected from the cache
	if err != nil || up.UseCount() != 1 {
		t.Fatalf("upgrade: %v", err)
	}
	up.Release()
}

// A handle dropped without Release is reported by its finalizer (logged, counted) and
// never released: the pool still holds it and Close says EBUSY.
func TestLeakIsReportedNotReleased(t *testing.T) {
	pool := mustPool(t, Config{BlockCount: 8})
	before := Leaks()
	t.Log("a leak report (log line) is expected next: the test drops a batch without Release")
	func() {
		h, _ := HashTokens(seq(0, 16), 16, 0)
		b, _ := pool.Put(h)
		_ = b // dropped without Release
	}()
	for i := 0; i < 50 && Leaks() == before; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if Leaks() != before+1 {
		t.Fatalf("leaks %d -> %d", before, Leaks())
	}
	if s := pool.Stats(); s.Primary != 1 {
		t.Fatalf("the leaked block was released: %+v", s)
	}
	if err := pool.Close(); !errors.Is(err, EBUSY) {
		t.Fatalf("close: %v", err)
	}
	pool.closed.Store(true) // leaked on purpose: keep its finalizer quiet
}

func TestGoroutinesShareAPool(t *testing.T) {
	pool := mustPool(t, Config{BlockCount: 256})
	shared, _ := HashTokens(seq(0, 64), 16, 0)
	b, _ := pool.Put(shared)
	b.Release()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g uint32) {
			defer wg.Done()
			for i := uint32(0); i < 500; i++ {
				hit, err := pool.Match(shared)
				if err != nil || hit.Len() != 4 {
					errs <- fmt.Errorf("match: %v", err)
					return
				}
				h, _ := HashTokens(seq(g*1000000+i*32, g*1000000+i*32+32), 16, 0)
				nb, err := pool.Put(h)
				if err == nil {
					nb.Release()
				} else if !errors.Is(err, ENOSPC) {
					errs <- err
					return
				}
				hit.Release()
			}
		}(uint32(g))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s := pool.Stats(); s.Primary != 0 || s.Misuse != 0 {
		t.Fatalf("stats %+v", s)
	}
	if err := pool.Check(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestIndexMatch(t *testing.T) {
	idx, err := NewIndex(16)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	tokens := seq(0, 100)
	h, err := idx.Hashes(tokens, "", "")
	if err != nil || len(h) != 6 {
		t.Fatalf("hashes: %v %d", err, len(h))
	}
	a, _ := idx.AddStream("worker-a", 0, Router)
	b, _ := idx.AddStream("worker-b", NoRank, Router)
	if _, err := idx.AddStream("worker-a", 0, Router); !errors.Is(err, EEXIST) {
		t.Fatalf("add twice: %v", err)
	}
	if err := idx.Apply(a, []Event{{Type: Stored, Tier: TierDevice, Hashes: h[:4]}}, 1); err != nil {
		t.Fatal(err)
	}
	if err := idx.Apply(b, []Event{{Type: Stored, Tier: TierDevice, Hashes: h[:2]},
		{Type: Stored, Tier: TierHost, Hashes: h[2:], HasParent: true, Parent: h[1]}}, 1); err != nil {
		t.Fatal(err)
	}
	m, blocks, err := idx.MatchTokens(tokens, "", "", 4)
	if err != nil || blocks != 6 || len(m) != 2 {
		t.Fatalf("match tokens: %v %d %+v", err, blocks, m)
	}
	if m[0].Worker != "worker-b" || m[0].Device != 2 || m[0].Host != 4 || m[0].DPRank != NoRank {
		t.Fatalf("best %+v", m[0])
	}
	if m[1].Worker != "worker-a" || m[1].Device != 4 || m[1].State != "live" {
		t.Fatalf("second %+v", m[1])
	}
	mh, _ := idx.MatchHashes(h, 1)
	if len(mh) != 1 || mh[0] != m[0] {
		t.Fatalf("match hashes %+v", mh)
	}
	idx.Apply(b, []Event{{Type: Removed, Tier: TierDevice, Hashes: h[:1]}}, -1)
	mh, _ = idx.MatchHashes(h, 4)
	if len(mh) != 1 || mh[0].Worker != "worker-a" {
		t.Fatalf("after remove %+v", mh)
	}
	idx.Apply(a, []Event{{Type: Cleared}}, -1)
	if mh, _ = idx.MatchHashes(h, 4); len(mh) != 0 {
		t.Fatalf("after clear %+v", mh)
	}
	if err := idx.RemoveStream(a); err != nil {
		t.Fatal(err)
	}
	if err := idx.RemoveStream(a); !errors.Is(err, ENOENT) {
		t.Fatalf("remove twice: %v", err)
	}
}

// KVBLOCK_BENCH=<iters>: the overhead figure of bindings/README.md, the same loop as
// bindings/bench/match16.c (match + release of a cached 16-block prefix, best of 5).
func TestOverheadReport(t *testing.T) {
	iters, _ := strconv.Atoi(os.Getenv("KVBLOCK_BENCH"))
	if iters <= 0 {
		t.Skip("set KVBLOCK_BENCH=<iterations> to measure")
	}
	pool := mustPool(t, Config{BlockCount: 1024})
	h, _ := HashTokens(seq(0, 256), 16, 0)
	b, _ := pool.Put(h)
	b.Release()
	best := [2]float64{1e300, 1e300}
	var reused *Blocks
	for run := -1; run < 5; run++ {
		t0 := time.Now()
		for i := 0; i < iters; i++ {
			hit, _ := pool.Match(h) // a new Blocks per call
			if hit.Len() != 16 {
				t.Fatal("miss")
			}
			hit.Release()
		}
		t1 := time.Now()
		for i := 0; i < iters; i++ {
			reused, _ = pool.MatchInto(h, reused) // the same storage every time
			if reused.Len() != 16 {
				t.Fatal("miss")
			}
			reused.Release()
		}
		t2 := time.Now()
		if run >= 0 {
			for j, d := range []time.Duration{t1.Sub(t0), t2.Sub(t1)} {
				if ns := float64(d.Nanoseconds()) / float64(iters*16); ns < best[j] {
					best[j] = ns
				}
			}
		}
	}
	fmt.Printf("go      match+release 16 blocks (new):  %6.1f ns per block (best of 5 x %d)\n", best[0], iters)
	fmt.Printf("go      match+release 16 blocks (into): %6.1f ns per block (best of 5 x %d)\n", best[1], iters)
	pool.Close()
}
