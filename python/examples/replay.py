#!/usr/bin/python3
"""Prefix replay of a Mooncake trace through the kvblock Python binding.

The same workload as the C tool kvb-replay (and as the vLLM BlockPool figure the
README compares with): for each request, in trace order,

    hashes: id x at index j, after id y, is kvb_hash_make(x, y, j > 0, j)
    blocks, k = pool.acquire(hashes)            prefix hits, then the other n - k
                                                blocks allocated, staged and registered
                                                (one kvb_pool_acquire, one lock)
    release the n blocks, last block first      (one kvb_block_release_n)

(--api calls: pool.match, then allocate, stage and register the other n - k, four
batch calls with one lock each; the same hits and evictions.)

through the binding's batch path: Hashes views (no copy) in, reusable
Mutables/Completes/Blocks batches out, so no Python object is made per block.
The hashes are computed before the clock starts (a runtime computes them when a
request arrives, outside its block manager); the timed loop is the replay only.

    /usr/bin/python3 python/examples/replay.py \
        --trace ../shared/data/mooncake/mooncake_conversation_trace.jsonl --capacity 8000

prints the hit ratio, evictions and ns per block reference (best of --repeat).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import kvblock  # noqa: E402

DEFAULT_TRACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                             "shared", "data", "mooncake", "mooncake_conversation_trace.jsonl")


def load(path, limit):
    reqs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            reqs.append(json.loads(line)["hash_ids"])
            if limit and len(reqs) == limit:
                break
    return reqs


def synthetic(n, seed):
    """A small prefix-sharing workload when no trace is at hand: a few shared
    system prompts, sessions whose turns extend their previous prompt."""
    import random
    rnd = random.Random(seed)
    next_id = [0]

    def fresh(k):
        ids = list(range(next_id[0], next_id[0] + k))
        next_id[0] += k
        return ids

    systems = [fresh(rnd.randint(1, 3)) for _ in range(8)]
    sessions, reqs = [], []
    for _ in range(n):
        if sessions and rnd.random() < 0.6:
            s = rnd.choice(sessions)
            s.extend(fresh(rnd.randint(1, 6)))
            prompt = list(s)
        else:
            prompt = list(rnd.choice(systems)) + fresh(rnd.randint(1, 24))
            sessions.append(prompt)
            if len(sessions) > 200:
                sessions.pop(0)
        reqs.append(prompt[:192])
    return reqs


def replay_once(reqs, views, capacity, policy, api):
    maxn = max(len(r) for r in reqs)
    pool = kvblock.Pool(capacity, evict=policy, name="replay")
    mut, comp, blk = (kvblock.Mutables(pool, maxn), kvblock.Completes(pool, maxn),
                      kvblock.Blocks(pool, maxn))
    match, allocate, stage, register = pool.match, pool.allocate, pool.stage, pool.register
    acquire, release = pool.acquire, blk.release
    hits = 0
    if api == "acquire":
        t0 = time.perf_counter_ns()
        for h in views:
            hits += acquire(h, blk)[1]
            release(True)
        t1 = time.perf_counter_ns()
    else:
        t0 = time.perf_counter_ns()
        for h in views:
            n = len(h)
            k = len(match(h, out=blk))
            hits += k
            if k < n:
                allocate(n - k, out=mut)
                stage(mut, h, out=comp, offset=k)
                register(comp, out=blk, offset=k)
            release(reverse=True)
        t1 = time.perf_counter_ns()
    st = pool.stats()
    pool.check()
    assert st["primary"] == st["mutable_"] == st["staged"] == st["duplicate"] == 0
    pool.close()
    return hits, st["evictions"], t1 - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=None, help="Mooncake JSON lines (default: the "
                    "conversation trace when present, else a small synthetic workload)")
    ap.add_argument("--limit", type=int, default=0, help="first N requests only")
    ap.add_argument("--capacity", type=int, default=8000)
    ap.add_argument("--policy", default="lru")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    ap.add_argument("--api", choices=("acquire", "calls"), default="acquire",
                    help="acquire: one Pool.acquire per request (default); calls: match, "
                    "allocate, stage, register")
    ap.add_argument("--synthetic", type=int, default=0, metavar="N",
                    help="replay N synthetic requests instead of a trace")
    args = ap.parse_args()

    if args.synthetic:
        reqs, name = synthetic(args.synthetic, 1), f"synthetic ({args.synthetic} requests)"
    else:
        path = args.trace or DEFAULT_TRACE
        if not os.path.exists(path):
            reqs, name = synthetic(2000, 1), "synthetic (2000 requests; no trace found)"
        else:
            reqs, name = load(path, args.limit), os.path.basename(path)
    reqs = [r for r in reqs if r]
    refs = sum(len(r) for r in reqs)
    maxn = max(len(r) for r in reqs)
    if maxn > args.capacity:
        sys.exit(f"--capacity {args.capacity} cannot hold the longest request ({maxn} blocks)")
    # all lineage hashes in one buffer, one Hashes view per request (outside the clock)
    hashes = kvblock.Hashes(refs)
    views, off = [], 0
    for r in reqs:
        kvblock.Hashes.from_lineage(r, out=hashes, offset=off)
        views.append(hashes[off:off + len(r)])
        off += len(r)

    best = None
    for _ in range(max(1, args.repeat)):
        res = replay_once(reqs, views, args.capacity, args.policy, args.api)
        if best is not None and res[:2] != best[:2]:
            sys.exit("runs disagree: the replay is not deterministic")
        if best is None or res[2] < best[2]:
            best = res
    hits, evictions, ns = best
    print(f"trace: {name}: {len(reqs)} requests, {refs} block refs")
    print(f"binding: kvblock (cffi ABI mode) over {kvblock.LIBRARY_PATH}")
    print(f"policy {args.policy}, capacity {args.capacity}: hit ratio {100.0 * hits / refs:.2f}%, "
          f"evictions {evictions}")
    print(f"python batch path ({args.api}): {ns / refs:.0f} ns per block ref "
          f"({ns / 1e6:.1f} ms, best of {max(1, args.repeat)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
