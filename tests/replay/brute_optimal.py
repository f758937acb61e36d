#!/usr/bin/env python3
"""brute_optimal.py - is the `optimal` reference really optimal?

The optimal reference of kvb-replay (tools/common/optimal.c) and of
tools/sim_reference.py evicts, when a request needs room, the unheld cached
block whose next use is farthest (Belady at request granularity). This script
compares it with an exhaustive search over EVERY possible choice of evicted
blocks (any blocks, not only leaves, not only the farthest) on small random
prefix-tree traces, under the same pool rules: a request holds all of its
blocks at once, hits are the cached prefix, the rest is allocated (evicting
only as much as needed), and a cached block met after the first miss is
resurrected (its new slot is a duplicate, freed at the end of the request).

Usage: brute_optimal.py [instances] [seed]   (default 1000 instances, seed 1)
Exit status 0 when the greedy reference equals the optimum on every instance.
It also reports how many instances needed evictions and on how many LRU
falls short of the optimum, to show that the instances can tell policies apart.
"""
import functools
import itertools
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import sim_reference as ref  # noqa: E402


def random_trace(rng, nodes, n_requests, max_len):
    """Requests are root paths (truncated to max_len) of a random forest."""
    parent = [None]
    for i in range(1, nodes):
        parent.append(rng.choice([None] + list(range(i))))

    def path(v):
        p = []
        while v is not None:
            p.append(v)
            v = parent[v]
        return p[::-1][:max_len]

    reqs = [path(rng.randrange(nodes)) for _ in range(n_requests)]
    # lineage keys, as kvb-replay hashes them: (position, id, parent id)
    return [[(j, x, p[j - 1] if j else None) for j, x in enumerate(p)] for p in reqs]


def exhaustive(reqs, cap):
    @functools.lru_cache(maxsize=None)
    def best(r, cached):
        if r == len(reqs):
            return 0
        blocks = reqs[r]
        k = 0
        while k < len(blocks) and blocks[k] in cached:
            k += 1
        need = max(0, (len(blocks) - k) - (cap - len(cached)))
        candidates = sorted((b for b in cached if b not in blocks[:k]), key=repr)
        result = -1
        for evicted in itertools.combinations(candidates, need):
            after = (cached - frozenset(evicted)) | frozenset(blocks)
            result = max(result, k + best(r + 1, after))
        return result

    return best(0, frozenset())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if len(argv) > 0 else 1000
    seed = int(argv[1]) if len(argv) > 1 else 1
    rng = random.Random(seed)
    bad = evicting = lru_short = 0
    for _ in range(n):
        cap = rng.randint(2, 5)
        reqs = random_trace(rng, rng.randint(3, 12), rng.randint(4, 16), rng.randint(1, cap))
        nxt = ref.next_uses(reqs)
        greedy, evictions = ref.simulate(reqs, nxt, "optimal", cap, engine="pool")
        lru, _ = ref.simulate(reqs, nxt, "lru", cap, engine="pool")
        best = exhaustive(reqs, cap)
        evicting += evictions > 0
        lru_short += lru < best
        if greedy != best:
            bad += 1
            print("MISMATCH: capacity %d, requests %r: reference %d hits, optimum %d"
                  % (cap, reqs, greedy, best))
    print("brute_optimal: %d random traces (seed %d; %d need evictions, LRU misses the optimum "
          "on %d): the reference %s the exhaustive optimum%s"
          % (n, seed, evicting, lru_short, "equals" if not bad else "differs from",
             "" if not bad else " on %d of them" % bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
