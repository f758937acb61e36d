#!/usr/bin/env python3
"""A scripted vLLM-format KV-event publisher for tests/redis/run.py.

One worker endpoint: a PUB socket ([topic, 8-byte big-endian seq, msgpack
payload]) and a replay ROUTER socket (vLLM's protocol: a DEALER sends
["", 8-byte start]; the answer is ["", seq, payload] per buffered batch with
seq >= start, then ["", -1, ""]). Payloads are vLLM EventBatch arrays
[ts, [event, ...], data_parallel_rank] with events as tagged maps; block hashes
are arbitrary u64 (kind=kvblock on the subscriber side: they are router hashes).

The publisher is deterministic for a seed. It keeps, per data-parallel rank,
the copies it holds per (hash, tier) (an engine may store a block twice and
remove it twice), so its final state is the ground truth a relay's and every
replica's index must show: per hash the best tier held (device > host > disk).

Control on stdin, one command per line: `go` starts publishing (`--batches` at
`--rate` per second); when done it writes the truth (JSON) to --truth and
prints `done` on stdout. `quit` (or end of input) exits. Replay requests are
served the whole time.

The events, the batch encoding and the replay answers are tests/fleet/kv_events.py
(shared with the kvb-indexer tests' publisher, tests/fleet/vllm_pub.py).
"""
import argparse
import json
import os
import random
import sys
import time

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fleet"))
import kv_events  # noqa: E402

TIERS = [("GPU", "d"), ("CPU", "h"), ("DISK", "k")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--pub", required=True)
    ap.add_argument("--replay", required=True)
    ap.add_argument("--ranks", default="none", help="comma list of dp ranks, or none")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--layout", choices=["map", "array"], default="map")
    ap.add_argument("--kind", choices=["kvblock", "vllm"], default="kvblock",
                    help="kvblock: random u64 hashes that are router hashes; vllm: chains of "
                         "16-token blocks with engine hashes, parent hashes and token ids")
    a = ap.parse_args()

    rng = random.Random(a.seed)
    ranks = [None] if a.ranks == "none" else [int(x) for x in a.ranks.split(",")]
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 100000)
    pub.bind(a.pub)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.SNDHWM, 1000000)
    router.bind(a.replay)

    held = {r: {} for r in ranks}  # rank -> {(hash, tier): copies}
    pinned = set()  # hashes never removed: they must survive every fault until the end
    batches_of = {r: 0 for r in ranks}
    last_seq_of = {r: -1 for r in ranks}
    every_hash = set()
    buf = []  # payloads by seq
    seq = 0

    def encode(events, rank):
        """[ts, events, rank]: an array batch, the events in --layout."""
        return kv_events.encode_batch(events, rank, a.layout, batch_layout="array")

    # vllm kind: per rank a list of chains [tokens, engine hashes, held blocks, tier]
    chains = {r: [] for r in ranks}
    every_chain = {r: [] for r in ranks}

    def make_batch_vllm():
        rank = ranks[seq % len(ranks)]
        cs = chains[rank]
        events = []
        for _ in range(rng.randint(1, 4)):
            live = [c for c in cs if c[2] > 0]
            if not live or rng.random() < 0.65:
                grow = [c for c in live if c[2] < 64 and c[2] == len(c[1])]
                if not grow or rng.random() < 0.3:
                    c = [[], [], 0, rng.choice(["GPU", "GPU", "GPU", "CPU"]), []]
                    cs.append(c)
                    every_chain[rank].append(c)
                else:
                    c = rng.choice(grow)
                k = min(rng.randint(1, 4), 64 - c[2])
                parent = c[1][c[2] - 1] if c[2] else None
                toks, hs = [], []
                for _ in range(k):
                    bt = [rng.randrange(1, 50000) for _ in range(16)]
                    c[0].extend(bt)
                    eh = rng.getrandbits(64)
                    c[1].append(eh)
                    hs.append(eh)
                    toks.extend(bt)
                c[2] += k
                if len(c[0]) > len(c[4]):
                    c[4] = list(c[0])
                events.append(kv_events.block_stored(hs, parent, toks, 16, medium=c[3]))
            else:
                c = rng.choice(live)
                k = min(rng.randint(1, 3), c[2])
                hs = c[1][c[2] - k:c[2]]
                c[2] -= k
                # the chain may grow again only from its new tail: forget the removed
                del c[1][c[2]:]
                del c[0][16 * c[2]:]
                events.append(kv_events.block_removed(hs, c[3]))
        batches_of[rank] += 1
        last_seq_of[rank] = seq
        return encode(events, rank)

    def make_batch():
        if a.kind == "vllm":
            return make_batch_vllm()
        rank = ranks[seq % len(ranks)]
        h = held[rank]
        events = []
        for _ in range(rng.randint(1, 4)):
            x = rng.random()
            removable = [k for k in h if k[0] not in pinned] if x >= 0.60 else None
            if x < 0.0004:
                h.clear()  # rare: a whole rank's cache dropped
                events.append(kv_events.all_blocks_cleared())
            elif x < 0.60 or not removable or (x < 0.7 and len(removable) < 300):
                tier, _ = TIERS[0] if rng.random() < 0.7 else rng.choice(TIERS[1:])
                n = rng.randint(1, 4)
                hs = []
                for _ in range(n):
                    if h and rng.random() < 0.08:
                        hh = rng.choice(list(h.keys()))[0]  # a second copy
                    else:
                        hh = rng.getrandbits(64)
                    hs.append(hh)
                    every_hash.add(hh)
                    if rng.random() < 0.3:
                        pinned.add(hh)
                    h[(hh, tier)] = h.get((hh, tier), 0) + 1
                parent = rng.getrandbits(64) if rng.random() < 0.5 else None
                events.append(kv_events.block_stored(hs, parent, [], 16, medium=tier))
            else:
                keys = removable
                tier = rng.choice(keys)[1]
                same = [k for k in keys if k[1] == tier]
                pick = rng.sample(same, min(len(same), rng.randint(1, 3)))
                hs = []
                for k in pick:
                    hs.append(k[0])
                    h[k] -= 1
                    if h[k] == 0:
                        del h[k]
                if rng.random() < 0.05:
                    ghost = rng.getrandbits(64)  # a block it never held: harmless
                    hs.append(ghost)
                events.append(kv_events.block_removed(hs, tier))
        batches_of[rank] += 1
        last_seq_of[rank] = seq
        return encode(events, rank)

    def serve_replay():
        while True:
            try:
                msg = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            req = kv_events.replay_request(msg)
            if req is None:
                continue
            prefix, start = req
            kv_events.replay_answer(router, prefix, ((s, buf[s]) for s in range(start, len(buf))))

    def write_truth():
        truth = {"name": a.name, "last_seq": seq - 1, "ranks": {}, "hashes": sorted(every_hash)}
        order = {"d": 0, "h": 1, "k": 2}
        for r in ranks:
            best, tiers = {}, {}
            for (hh, tier), c in held[r].items():
                if c <= 0:
                    continue
                t = dict(TIERS)[tier]
                tiers[hh] = "".join(sorted(tiers.get(hh, "") + t, key=order.get))
                if hh not in best or order[t] < order[best[hh]]:
                    best[hh] = t
            key = "-1" if r is None else str(r)
            truth["ranks"][key] = {"batches": batches_of[r], "last_seq": last_seq_of[r],
                                   "best": {str(k): v for k, v in best.items()},
                                   "tiers": {str(k): v for k, v in tiers.items()}}
            if a.kind == "vllm":
                # every chain ever started: the tokens it had at its longest (a request)
                # and the blocks held now, in one tier
                reqs = []
                for c in every_chain[r]:
                    lcp = 0
                    while lcp < c[2] and c[0][16 * lcp:16 * lcp + 16] == c[4][16 * lcp:16 * lcp + 16]:
                        lcp += 1
                    reqs.append({"tokens": c[4], "held": lcp, "tier": dict(TIERS)[c[3]]})
                    if c[2] and len(c[0]) != len(c[4]):
                        reqs.append({"tokens": c[0][:16 * c[2]], "held": c[2],
                                     "tier": dict(TIERS)[c[3]]})
                truth["ranks"][key]["chains"] = reqs
        tmp = a.truth + ".tmp"
        with open(tmp, "w") as f:
            json.dump(truth, f)
        os.rename(tmp, a.truth)

    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    going = False
    done = False
    t0 = 0.0
    while True:
        timeout = 1 if going and not done else 200
        for sock, _ in poller.poll(timeout):
            if sock is router:
                serve_replay()
            else:
                line = sys.stdin.readline()
                if not line or line.strip() == "quit":
                    pub.close(0)
                    router.close(0)
                    ctx.term()
                    return
                if line.strip() == "go" and not going:
                    going = True
                    t0 = time.monotonic()
        if going and not done:
            due = int((time.monotonic() - t0) * a.rate) + 1
            while seq < min(due, a.batches):
                payload = make_batch()
                buf.append(payload)
                pub.send_multipart([b"", seq.to_bytes(8, "big"), payload])
                seq += 1
                if seq % 100 == 0:
                    write_truth()  # a recent truth survives a kill -9
            if seq >= a.batches:
                done = True
                write_truth()
                print("done", flush=True)


if __name__ == "__main__":
    main()
