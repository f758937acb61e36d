#!/usr/bin/env python3
"""Route requests to the engine that caches the longest prefix (FLEET.md).

    python3 python/examples/fleet_match.py                 # in-process index
    python3 python/examples/fleet_match.py --zmq           # + a C subscriber thread fed
                                                           #   by Python vLLM-style engines
    python3 python/examples/fleet_match.py --bench 20000   # Python cost of one match
    python3 python/examples/fleet_match.py --daemon http://127.0.0.1:8181   # ask kvb-indexer

Three engines: "vllm-a" and "vllm-b" send their own block hashes with token ids
(router hashes are recomputed from the tokens), "kvb-c" is a kvblock worker that
sends router hashes directly. Each caches part of a shared system prompt; the index
ranks them for a request by device / host / disk prefix and score.
"""
import argparse
import array
import hashlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import kvblock  # noqa: E402
from kvblock import Index, IndexEvent  # noqa: E402

BS = 16
SYSTEM = list(range(1000, 1000 + 8 * BS))            # 8 blocks shared by every request
REQUEST = SYSTEM + list(range(5000, 5000 + 4 * BS))  # 12 blocks


def engine_hashes(tag, n):
    """What vLLM sends: low 64 bits of a SHA-256 per block (opaque to the router)."""
    return [int.from_bytes(hashlib.sha256(f"{tag}/{i}".encode()).digest()[-8:], "little")
            for i in range(n)]


def events(idx):
    """(worker, dp_rank, hash kind, events) of the three engines."""
    ea, eb = engine_hashes("a", 12), engine_hashes("b", 8)
    return [
        ("vllm-a", 0, "engine", [  # the whole request: 10 blocks on GPU, 2 offloaded to CPU
            IndexEvent.stored(ea[:10], tokens=REQUEST[:10 * BS]),
            IndexEvent.stored(ea[10:], parent=ea[9], tokens=REQUEST[10 * BS:], tier="host")]),
        ("vllm-b", 1, "engine", [  # the system prompt only, on GPU
            IndexEvent.stored(eb, tokens=SYSTEM)]),
        ("kvb-c", None, "router", [  # a kvblock worker: router hashes, all 12 blocks on GPU,
            IndexEvent.stored(idx.hashes(REQUEST))]),  # then it evicts blocks 6..11
    ], idx.hashes(REQUEST)[6:]


def show(title, results, blocks):
    print(f"{title}: {blocks} blocks")
    for r in results:
        rank = "-" if r.dp_rank is None else r.dp_rank
        print(f"  {r.worker:8s} rank {rank}  device {r.device:2d}  host {r.host:2d}  "
              f"disk {r.disk:2d}  score {r.score:5.1f}  entries {r.entries}")


def in_process():
    with Index(block_size=BS) as idx:
        evs, evicted = events(idx)
        for worker, rank, kind, batch in evs:
            idx.apply(idx.add_stream(worker, rank, hashes=kind), batch, seq=0)
        show("request", idx.match_tokens(REQUEST), 12)
        idx.apply(("kvb-c", None), IndexEvent.removed(evicted), seq=1)
        best = idx.match_tokens(REQUEST, k=1)
        show("after kvb-c evicted 6 blocks, best", best, best.blocks)
        show("same tokens under a LoRA (no false positive)",
             idx.match_tokens(REQUEST, lora_name="sql-adapter"), 12)
        with tempfile.TemporaryDirectory() as d:
            size = idx.save(os.path.join(d, "fleet.snap"))
            with Index.load(os.path.join(d, "fleet.snap")) as again:
                same = again.match_tokens(REQUEST) == idx.match_tokens(REQUEST)
        print(f"snapshot: {size} bytes, same answers after load: {same}")


def over_zmq():
    import msgpack
    import zmq
    ctx = zmq.Context()
    d = tempfile.mkdtemp()
    with Index(block_size=BS) as idx, kvblock.Subscriber(idx) as sub:
        evs, _ = events(idx)
        pubs = []
        for worker, rank, kind, batch in evs:
            pub = ctx.socket(zmq.PUB)
            pub.bind(f"ipc://{d}/{worker}")
            pubs.append(pub)
            sub.add_worker(worker, f"ipc://{d}/{worker}",
                           kind="vllm" if kind == "engine" else "kvblock")
            wire = [{"type": "BlockStored", "block_hashes": list(e.hashes),
                     "parent_block_hash": e.parent, "token_ids": list(e.tokens or []),
                     "block_size": BS, "lora_id": None,
                     "medium": {"device": "GPU", "host": "CPU"}[e.tier]} for e in batch]
            payload = msgpack.packb([time.time(), wire, rank])
            # a PUB socket drops what it sends before the subscription reaches it (no
            # replay socket here): send batch 0 until it is applied; the subscriber
            # takes byte-identical copies of an applied batch as duplicates
            deadline = time.monotonic() + 10
            while sub.worker_info(worker)["expected_seq"] < 1:
                if time.monotonic() > deadline:
                    sys.exit(f"{worker}: no batch got through: {sub.worker_info(worker)}")
                pub.send_multipart([b"", (0).to_bytes(8, "big"), payload])
                time.sleep(0.05)
        sub.sync(5.0)
        show("request (applied by the subscriber thread)", idx.match_tokens(REQUEST), 12)
        for p in pubs:
            p.close(0)
    ctx.term()


def bench(n, workers=1000, blocks=64, sequences=4000, dup=7, k=16):
    """CPU time per match from Python next to the bare C call, on the workload of
    kvb-index-bench (b): `sequences` random sequences of `blocks` blocks, each stored
    whole on `dup` of `workers` random workers; requests are stored sequences.
    Timed with the calling thread's CPU clock (robust to a busy machine), best of
    several rounds, the variants interleaved."""
    import random
    from kvblock import ffi, lib
    rng = random.Random(42)
    with Index(block_size=BS) as idx:
        ids = [idx.add_stream(f"worker-{w:04d}", 0) for w in range(workers)]
        seqs = []
        for _ in range(sequences):
            tokens = [rng.randrange(1 << 17) for _ in range(blocks * BS)]
            hashes = idx.hashes(tokens)
            for w in rng.sample(ids, dup):
                idx.apply(w, IndexEvent.stored(hashes))
            seqs.append((tokens, hashes))
        reqs = [seqs[rng.randrange(sequences)] for _ in range(1000)]
        hq = [array.array("Q", h) for _, h in reqs]
        tq = [array.array("I", t) for t, _ in reqs]
        hl = [list(h) for _, h in reqs]
        out = ffi.new("kvb_index_result[]", k)
        c_hq = [ffi.from_buffer("uint64_t[]", h) for h in hq]
        p = idx._h()
        cases = [
            (f"C kvb_index_match (one cffi call), k={k}",
             lambda i: lib.kvb_index_match(p, c_hq[i], blocks, out, k)),
            (f"Index.match(array('Q'), k={k})", lambda i: idx.match(hq[i], k=k)),
            (f"Index.match(list of {blocks} ints, k={k})", lambda i: idx.match(hl[i], k=k)),
            ("Index.match(array('Q'), k=1)", lambda i: idx.match(hq[i], k=1)),
            (f"Index.match_tokens(array('I'), k={k})", lambda i: idx.match_tokens(tq[i], k=k)),
            (f"Index.match_tokens(list of {blocks * BS} ints, k={k})",
             lambda i: idx.match_tokens(reqs[i][0], k=k)),
        ]
        assert len(idx.match(hq[0], k=k)) == dup
        best = [float("inf")] * len(cases)
        per = max(1, min(n, 1000))
        for _ in range(max(3, n // per)):
            for j, (_, f) in enumerate(cases):
                t0 = time.thread_time_ns()
                for i in range(per):
                    f(i)
                best[j] = min(best[j], (time.thread_time_ns() - t0) / per)
        print(f"{workers} workers, {sequences} sequences of {blocks} blocks held by {dup} "
              f"workers each; CPU ns per call, best of {max(3, n // per)} rounds of {per}")
        for (name, _), b in zip(cases, best):
            extra = "" if name.startswith("C ") else f"   (+{b - best[0]:.0f} ns over C)"
            print(f"{name:44s} {b:8.0f} ns/call{extra}")


def daemon(url):
    fc = kvblock.FleetClient(url)
    print("healthz:", fc.healthz())
    ans = fc.match(tokens=REQUEST, top_k=4)
    print(f"{ans['blocks']} blocks:", ans["workers"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zmq", action="store_true", help="feed the index through a Subscriber")
    ap.add_argument("--bench", type=int, default=0, metavar="N", help="time N matches")
    ap.add_argument("--sequences", type=int, default=4000, metavar="S",
                    help="--bench: distinct 64-block sequences (default 4000)")
    ap.add_argument("--daemon", metavar="URL", help="ask a running kvb-indexer instead")
    a = ap.parse_args()
    if a.daemon:
        daemon(a.daemon)
    elif a.bench:
        bench(a.bench, sequences=a.sequences)
    elif a.zmq:
        over_zmq()
    else:
        in_process()


if __name__ == "__main__":
    main()
