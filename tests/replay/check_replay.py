#!/usr/bin/env python3
"""check_replay.py - `make check-replay`: kvb-replay against tools/sim_reference.py.

Every case runs kvb-replay once (--csv, several policies and capacities) and the
independent Python simulator on the same trace, and requires the same hits AND
the same evictions for every (policy, capacity): lru and fifo are deterministic,
and so is the hit count of the optimal reference.

  - every LIRS trace (--format ids): lru, fifo, optimal at 100..5000 blocks;
    the Python side is the textbook one-line simulators;
  - cloudphysics: kvb-replay reads cloudPhysicsIO.txt, the Python optimal takes
    its next uses from cloudPhysicsIO.oracleGeneral.bin (computed by others);
  - the Mooncake synthetic trace, prefix replay: lru, fifo, optimal, and the
    same with --window 16; the Python side is the pool model;
  - the optimal reference against an exhaustive search (brute_optimal.py);
  - kvb-replay against itself: --api acquire (one kvb_pool_acquire per request)
    and --api calls (match, allocate, stage, register) on the Mooncake
    conversation trace, every pool policy at 1000 and 8000 blocks.

Traces are read in place from ../shared/data (relative to the repository root;
override with KVB_DATA). Without them the check is skipped with a message.
Usage: check_replay.py [--replay build/tools/kvb-replay] [--data DIR]
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, HERE)
import brute_optimal  # noqa: E402
import sim_reference as ref  # noqa: E402

LIRS = ["2_pools", "cpp", "cs", "gli", "loop", "multi1", "multi2", "multi3", "ps", "sprite"]
LIRS_CAPACITIES = [100, 500, 1000, 2000, 5000]


def run_replay(replay, trace, fmt, policies, capacities, window=0, extra=()):
    cmd = [replay, "--trace", trace, "--format", fmt, "--policy", ",".join(policies),
           "--capacities", ",".join(str(c) for c in capacities), "--csv", "--quiet"]
    if window:
        cmd += ["--window", str(window)]
    cmd += list(extra)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    lines = out.strip().split("\n")
    head = lines[0].split(",")
    if head[:8] != ["policy", "capacity", "requests", "block_refs", "hits", "hit_ratio",
                    "seconds", "ns_per_block_ref"]:
        raise SystemExit("kvb-replay --csv: unexpected header %r" % lines[0])
    rows = {}
    for line in lines[1:]:
        f = dict(zip(head, line.split(",")))
        rows[(f["policy"], int(f["capacity"]))] = (int(f["hits"]), int(f["evictions"]))
    return " ".join(cmd), rows


def check(label, cmd, rows, expected, failures):
    bad = []
    for key, want in sorted(expected.items()):
        got = rows.get(key)
        if got != want:
            bad.append("%s @ %d: kvb-replay %s, reference %s (hits, evictions)"
                       % (key[0], key[1], got, want))
    status = "ok  " if not bad else "FAIL"
    print("%s %-34s %d configurations" % (status, label, len(expected)))
    if bad:
        failures.append((label, cmd, bad))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replay", default=os.environ.get("KVB_REPLAY", "build/tools/kvb-replay"))
    ap.add_argument("--data", default=os.environ.get("KVB_DATA",
                                                     os.path.join(ROOT, "..", "shared", "data")))
    a = ap.parse_args()
    data = os.path.normpath(a.data)
    if not os.path.isdir(os.path.join(data, "lirs")):
        print("check-replay: SKIPPED: no traces at %s (they are read in place from "
              "../shared/data; set KVB_DATA to point elsewhere)" % data)
        return 0

    t0 = time.time()
    failures = []
    policies = ["lru", "fifo", "optimal"]

    for name in LIRS:
        path = os.path.join(data, "lirs", name + ".trace")
        reqs, nxt = ref.load("ids", path)
        expected = {(p, c): ref.simulate(reqs, nxt, p, c)
                    for p in policies for c in LIRS_CAPACITIES}
        cmd, rows = run_replay(a.replay, path, "ids", policies, LIRS_CAPACITIES)
        check("lirs/%s.trace" % name, cmd, rows, expected, failures)

    cp = os.path.join(data, "cloudphysics")
    if os.path.isfile(os.path.join(cp, "cloudPhysicsIO.txt")):
        caps = [1000, 5000, 20000]
        reqs, nxt = ref.load("oracle", os.path.join(cp, "cloudPhysicsIO.oracleGeneral.bin"))
        expected = {(p, c): ref.simulate(reqs, nxt, p, c) for p in policies for c in caps}
        cmd, rows = run_replay(a.replay, os.path.join(cp, "cloudPhysicsIO.txt"), "ids",
                               policies, caps)
        check("cloudphysics (next use from .bin)", cmd, rows, expected, failures)

    mc = os.path.join(data, "mooncake", "mooncake_synthetic_trace.jsonl")
    if os.path.isfile(mc):
        reqs, nxt = ref.load("mooncake", mc)
        for window, caps in ((0, [1000, 8000]), (16, [4000])):
            expected = {(p, c): ref.simulate(reqs, nxt, p, c, window)
                        for p in policies for c in caps}
            cmd, rows = run_replay(a.replay, mc, "mooncake", policies, caps, window)
            check("mooncake synthetic, window %d" % window, cmd, rows, expected, failures)

        # --demote one-off: new blocks no later request uses at priority 0, evicted
        # before the rest (lru order within each level, the pool's priority levels)
        caps = [1000, 4000]
        expected = {("lru", c): ref.simulate(reqs, nxt, "lru", c, demote=True) for c in caps}
        cmd, rows = run_replay(a.replay, mc, "mooncake", ["lru"], caps,
                               extra=["--demote", "one-off"])
        check("mooncake synthetic, demote one-off", cmd, rows, expected, failures)

    conv = os.path.join(data, "mooncake", "mooncake_conversation_trace.jsonl")
    if os.path.isfile(conv):
        caps = [1000, 8000]
        _, calls = run_replay(a.replay, conv, "mooncake", ["all"], caps, extra=["--api", "calls"])
        expected = {key: v for key, v in calls.items()
                    if key[0] not in ("optimal", "belady_flat")}
        cmd, rows = run_replay(a.replay, conv, "mooncake", ["all"], caps, extra=["--api", "acquire"])
        check("conversation: acquire = the calls", cmd, rows, expected, failures)

    rc = brute_optimal.main(["1000", "1"])
    if rc:
        failures.append(("brute_optimal", "tests/replay/brute_optimal.py 1000 1", ["mismatch"]))

    for label, cmd, bad in failures:
        print("\n%s: kvb-replay disagrees with the reference\n  %s" % (label, cmd))
        for b in bad:
            print("  " + b)
    print("check-replay: %s in %.1f s" % ("FAILED" if failures else "all passed",
                                          time.time() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
