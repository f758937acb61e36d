#!/usr/bin/env python3
"""sim_reference.py - an independent, deliberately simple cache simulator used to
check kvb-replay (tools/kvb-replay.c) hit for hit. Standard library only.

It shares no code with kvb-replay and models the same workloads from their
definitions (docs/replay.md):

  --format ids        one block id per line (lines starting with '*' and blank
                      lines skipped); every id is a one-block request.
  --format oracle     libCacheSim's oracleGeneral binary records
                      {u32 time; u64 id; u32 size; i64 next_access_vtime}; the
                      same one-block requests, but the optimal policy takes the
                      next use from the file (vtime is 1-based, -1 = never)
                      instead of computing it: an independent next-use source.
  --format mooncake   Mooncake JSON lines; the "prefix replay" of
                      ../shared/data/README.md through a model of a kvblock pool.

Policies:
  lru      least recently released first (hits do not count as a use until
           the block is released again, exactly like the pool)
  fifo     first registered first; a hit does not refresh the place
  optimal  Belady: evict the unheld cached block whose next use (the index of
           the next request containing it) is farthest; among blocks never used
           again, the deepest first. With prefix requests this choice is always
           a leaf of the cached prefix tree (a child is used whenever its parent
           is, so its next use is never earlier, and it is deeper), so no leaf
           bookkeeping is needed here: kvb-replay does keep leaves explicitly,
           and the two must agree.

The pool model (prefix replay, --window W as in kvb-replay):
  - C slots. A block is free, cached (unreferenced, evictable) or held.
  - Per request: k = longest prefix whose blocks are held or cached (hits);
    those blocks become held. The other n - k blocks need n - k new slots,
    taken all at once: free slots first, then evictions in policy order; if
    free + cached < n - k, the oldest window request is released and the
    allocation retried. Then each new block is registered: a hash already
    held gets a duplicate slot (released to free at the end), a hash still
    cached (not evicted by this very allocation) is resurrected and the new
    slot is a duplicate; otherwise the new slot holds the hash.
  - Release: the request's blocks, last block first; a hash whose last
    reference goes becomes cached (LRU: most recent; FIFO: keeps its first
    registration order). With --window W, the request is released once W
    newer requests have been processed.

Engines: one-block requests without a window run through textbook one-line
implementations (lru_ids, fifo_ids, belady_ids below); everything else through
the pool model. --engine pool forces the pool model (the two agree on
one-block traces, which checks the model itself).

Output: CSV lines "policy,capacity,requests,block_refs,hits,evictions".
"""
import argparse
import collections
import heapq
import json
import struct
import sys

NEVER = float("inf")


# --------------------------------------------------------------------------
# Traces: a list of requests, each a list of hashable block keys
# --------------------------------------------------------------------------

def load_ids(path):
    reqs = []
    with open(path, "rb") as f:
        for raw in f:
            s = raw.strip()
            if not s or s.startswith(b"*"):
                continue
            reqs.append([int(s)])
    return reqs, None


def load_oracle(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) % 24:
        sys.exit("%s: size is not a multiple of 24 bytes" % path)
    reqs, nxt = [], []
    for _t, oid, _size, vt in struct.iter_unpack("<IQIq", data):
        reqs.append([oid])
        nxt.append([NEVER if vt < 0 else vt - 1])
    return reqs, nxt


def load_mooncake(path):
    reqs = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            ids = json.loads(line)["hash_ids"]
            # the lineage key of kvb_hash_make(id, parent id, j > 0, j)
            reqs.append([(j, x, ids[j - 1] if j else None) for j, x in enumerate(ids)])
    return reqs, None


def next_uses(reqs):
    """nxt[r][j]: index of the next request after r containing reqs[r][j]."""
    last = {}
    nxt = [None] * len(reqs)
    for r in range(len(reqs) - 1, -1, -1):
        row = []
        for b in reqs[r]:
            row.append(last.get(b, NEVER))
        for b in reqs[r]:
            last[b] = r
        nxt[r] = row
    return nxt


# --------------------------------------------------------------------------
# Textbook policies for one-block requests (--format ids/oracle, no window):
# each function returns (hits, evictions) for a sequence of ids.
# --------------------------------------------------------------------------

def lru_ids(seq, cap):
    cache = collections.OrderedDict()  # least recently used first
    hits = evictions = 0
    for x in seq:
        if x in cache:
            hits += 1
            cache.move_to_end(x)
        else:
            if len(cache) >= cap:
                cache.popitem(last=False)
                evictions += 1
            cache[x] = None
    return hits, evictions


def fifo_ids(seq, cap):
    cache, queue = set(), collections.deque()  # queue: insertion order
    hits = evictions = 0
    for x in seq:
        if x in cache:
            hits += 1
        else:
            if len(cache) >= cap:
                cache.discard(queue.popleft())
                evictions += 1
            cache.add(x)
            queue.append(x)
    return hits, evictions


def belady_ids(seq, nxt, cap):
    """Belady's MIN: on a miss with a full cache, evict the id used farthest ahead.
    nxt[i] is the index of the next access to seq[i] (NEVER if none)."""
    cache = {}  # id -> its next use
    heap = []   # (-next use, id); stale entries skipped
    hits = evictions = 0
    for i, x in enumerate(seq):
        if x in cache:
            hits += 1
        else:
            if len(cache) >= cap:
                while True:
                    nn, y = heapq.heappop(heap)
                    if cache.get(y) == -nn:
                        break
                del cache[y]
                evictions += 1
        cache[x] = nxt[i]
        heapq.heappush(heap, (-nxt[i], x))
    return hits, evictions


# --------------------------------------------------------------------------
# The pool model (prefix replay, windows)
# --------------------------------------------------------------------------

class Sim:
    def __init__(self, policy, capacity, window, nxt, demote=False):
        self.policy = policy
        self.demote = demote               # lru: --demote one-off (window 0)
        self.low = collections.OrderedDict()  # demoted cached hashes, evicted first
        self.level0 = set()                # demoted hashes (priority 0)
        self.capacity = capacity
        self.window = window
        self.nxt = nxt
        self.free = capacity
        self.refs = collections.Counter()  # hash -> references (held)
        self.dups = 0                      # duplicate slots in use
        self.lru = collections.OrderedDict()  # cached hashes, eviction order (lru/fifo)
        self.arrival = {}                  # fifo: hash -> first registration number
        self.fifo_heap = []                # fifo: (arrival, hash), lazy
        self.cached = set()                # optimal: cached hashes
        self.key = {}                      # optimal: hash -> (next use, depth)
        self.opt_heap = []                 # optimal: (-next, -depth, seq, hash), lazy
        self.seq = 0
        self.arrivals = 0
        self.hits = 0
        self.evictions = 0
        self.held = collections.deque()    # window: hashes of held requests (+ dup counts)

    # ---- the cached (inactive) set, per policy ----
    def n_cached(self):
        return len(self.cached) if self.policy == "optimal" else len(self.lru) + len(self.low)

    def is_cached(self, h):
        return h in self.cached if self.policy == "optimal" else h in self.lru or h in self.low

    def uncache(self, h):
        if self.policy == "optimal":
            self.cached.discard(h)
        elif h in self.low:
            del self.low[h]
        else:
            del self.lru[h]

    def cache(self, h):
        if self.policy == "lru" and h in self.level0:
            self.low[h] = True
        elif self.policy == "lru":
            self.lru[h] = True
        elif self.policy == "fifo":
            self.lru[h] = True
            heapq.heappush(self.fifo_heap, (self.arrival[h], h))
        else:
            self.cached.add(h)
            nu, depth = self.key[h]
            self.seq += 1
            heapq.heappush(self.opt_heap, (-nu, -depth, self.seq, h))

    def evict_one(self):
        if self.policy == "lru" and self.low:
            h, _ = self.low.popitem(last=False)
        elif self.policy == "lru":
            h, _ = self.lru.popitem(last=False)
        elif self.policy == "fifo":
            while True:
                a, h = heapq.heappop(self.fifo_heap)
                if h in self.lru and self.arrival.get(h) == a:
                    break
            del self.lru[h]
        else:
            while True:
                nnu, nd, _s, h = heapq.heappop(self.opt_heap)
                if h in self.cached and self.key[h] == (-nnu, -nd):
                    break
            self.cached.discard(h)
        self.arrival.pop(h, None)
        self.evictions += 1

    # ---- references ----
    def take(self, h):
        if self.refs[h] == 0 and self.is_cached(h):
            self.uncache(h)
        self.refs[h] += 1

    def drop(self, h):
        self.refs[h] -= 1
        if self.refs[h] == 0:
            del self.refs[h]
            self.cache(h)

    def release(self, entry):
        hashes, dups = entry
        for h in reversed(hashes):  # last block first
            self.drop(h)
        self.free += dups
        self.dups -= dups

    # ---- one request ----
    def request(self, r, blocks):
        k = 0
        for h in blocks:
            if self.refs[h] > 0 or self.is_cached(h):
                k += 1
            else:
                break
        for h in blocks[:k]:
            self.take(h)
        self.hits += k
        if self.policy == "optimal":
            # next uses change now: a block of this request is next used after r
            for j, h in enumerate(blocks):
                self.key[h] = (self.nxt[r][j], j)
        m = len(blocks) - k
        while self.free + self.n_cached() < m:
            if not self.held:
                sys.exit("request %d needs %d blocks: capacity too small" % (r + 1, m))
            self.release(self.held.popleft())
        take_free = min(self.free, m)
        self.free -= take_free
        for _ in range(m - take_free):
            self.evict_one()
        dups = 0
        for h in blocks[k:]:
            if self.refs[h] > 0 or self.is_cached(h):
                dups += 1  # the new slot becomes a duplicate of a held or resurrected hash
            else:
                self.arrivals += 1
                self.arrival[h] = self.arrivals
            self.take(h)
        self.dups += dups
        if self.demote:  # hits back at the default, new blocks never used again at 0
            self.level0.difference_update(blocks[:k])
            for j in range(k, len(blocks)):
                if self.nxt[r][j] == NEVER:
                    self.level0.add(blocks[j])
        entry = (blocks, dups)
        if self.window == 0:
            self.release(entry)
        else:
            self.held.append(entry)
            if len(self.held) > self.window:
                self.release(self.held.popleft())

    def run(self, reqs):
        for r, blocks in enumerate(reqs):
            self.request(r, blocks)
        while self.held:
            self.release(self.held.popleft())
        return self.hits


def simulate(reqs, nxt, policy, cap, window=0, engine="auto", demote=False):
    """(hits, evictions) of one policy at one capacity."""
    one_block = all(len(b) == 1 for b in reqs)
    if engine == "textbook" or (engine == "auto" and one_block and window == 0):
        if not one_block or window:
            sys.exit("the textbook engine needs one-block requests and no window")
        seq = [b[0] for b in reqs]
        if policy == "lru":
            return lru_ids(seq, cap)
        if policy == "fifo":
            return fifo_ids(seq, cap)
        # next use as an index into seq (requests are one block each)
        return belady_ids(seq, [n[0] for n in nxt], cap)
    if demote and (policy != "lru" or window):
        sys.exit("the demote model is lru without a window")
    s = Sim(policy, cap, window, nxt, demote)
    return s.run(reqs), s.evictions


def load(fmt, path):
    loader = {"ids": load_ids, "oracle": load_oracle, "mooncake": load_mooncake}[fmt]
    reqs, nxt = loader(path)
    if nxt is None:
        nxt = next_uses(reqs)
    return reqs, nxt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--format", choices=["ids", "oracle", "mooncake"], default="ids")
    ap.add_argument("--policy", default="lru", help="comma-separated: lru,fifo,optimal")
    ap.add_argument("--capacities", default="1000")
    ap.add_argument("--window", type=int, default=0)
    ap.add_argument("--engine", choices=["auto", "textbook", "pool"], default="auto",
                    help="auto: textbook policies for one-block requests without a window, "
                         "the pool model otherwise")
    a = ap.parse_args()

    reqs, nxt = load(a.format, a.trace)
    refs = sum(len(b) for b in reqs)
    for policy in a.policy.split(","):
        if policy not in ("lru", "fifo", "optimal"):
            sys.exit("unknown policy %s" % policy)
        for cap in (int(c) for c in a.capacities.split(",")):
            hits, evictions = simulate(reqs, nxt, policy, cap, a.window, a.engine)
            print("%s,%d,%d,%d,%d,%d" % (policy, cap, len(reqs), refs, hits, evictions))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
