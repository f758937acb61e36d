"""Overhead of the Python binding: match + release of a cached 16-block prefix, ns per
block; the same loop as bindings/bench/match16.c (best of 5 runs after a warm-up).
Two ways: `with pool.match(h) as hit` (a new Blocks per call) and a reused Blocks
(`pool.match(h, out=buf)`, then buf.release()). Usage: match16.py [iters]"""
import sys
import time

import kvblock

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
pool = kvblock.Pool(1024, block_size=16)
h = kvblock.hash_tokens(list(range(256)), 16)
with pool.put(h):
    pass  # cached


def with_new():
    for _ in range(iters):
        with pool.match(h) as hit:
            assert len(hit) == 16


buf = kvblock.Blocks(pool, 16)


def reused():
    for _ in range(iters):
        pool.match(h, out=buf)
        buf.release()


for name, fn in (("python  match+release 16 blocks (with)", with_new),
                 ("python  match+release 16 blocks (out=)", reused)):
    best = 1e300
    for run in range(-1, 5):
        t0 = time.perf_counter_ns()
        fn()
        ns = (time.perf_counter_ns() - t0) / (iters * 16)
        if run >= 0:
            best = min(best, ns)
    print(f"{name}: {best:6.1f} ns per block (best of 5 x {iters})")
pool.close()
