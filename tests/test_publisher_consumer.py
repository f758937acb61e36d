#!/usr/bin/python3
"""End-to-end check of kvblock's ZeroMQ KV-event publisher with a real subscriber.

A vLLM-style consumer (Debian's python3-zmq and python3-msgpack, nothing of
kvblock's) subscribes to the PUB socket, then starts tools/kvb-offload-demo
publishing both tiers' events (medium "GPU" and "CPU") live while it replays a
workload. The consumer rebuilds a per-medium index from the stream:
BlockStored adds, BlockRemoved removes, AllBlocksCleared empties. It deliberately
throws away a run of batches (a simulated gap), detects the gap from the
sequence numbers and recovers the missing batches through the replay (ROUTER)
socket, as it also does for the batches sent before its subscription reached
the publisher (ZeroMQ's "slow joiner"). At the end the demo dumps each tier's
content; the rebuilt index must equal it exactly.

The payload is decoded the way vLLM's msgspec structs (tag=True,
omit_defaults=True) lay it out: [ts, [events...], data_parallel_rank] with each
event a tagged map, kvblock's default layout and current vLLM's:
{"type": "BlockStored", "block_hashes", "parent_block_hash", "token_ids",
"block_size", "lora_id", "medium", "lora_name"}, {"type": "BlockRemoved",
"block_hashes", "medium"}, {"type": "AllBlocksCleared"}; the legacy tagged
arrays ["BlockStored", hashes, parent, token_ids, block_size, lora_id, medium],
["BlockRemoved", hashes, medium], ["AllBlocksCleared"] are read too (the C
tests, tests/test_publisher.c and tests/test_wire.c, cover that layout).

Every wait is bounded (no timing assertions); exit 0 on success.
"""
import argparse
import collections
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq
import zmq.utils.monitor

END_SEQ = (-1).to_bytes(8, "big", signed=True)

# vLLM's field names in declaration order (the legacy array layout's order)
FIELDS = {
    "BlockStored": ["block_hashes", "parent_block_hash", "token_ids", "block_size",
                    "lora_id", "medium"],
    "BlockRemoved": ["block_hashes", "medium"],
    "AllBlocksCleared": [],
}


def event_fields(ev):
    """(tag, {field: value}) of a tagged-map or tagged-array event; every field
    of vLLM's struct must be there (the map layout also has lora_name = nil)."""
    if isinstance(ev, dict):
        tag = ev["type"]
        names = FIELDS[tag] + (["lora_name"] if tag == "BlockStored" else [])
        assert set(ev) == {"type", *names}, ev
        assert ev.get("lora_name") is None, ev
        return tag, ev
    assert isinstance(ev, list) and ev, ev
    tag = ev[0]
    assert len(ev) == 1 + len(FIELDS[tag]), ev
    return tag, dict(zip(FIELDS[tag], ev[1:]))


class Index:
    """Per-medium multiset of 64-bit block hashes, rebuilt from events."""

    def __init__(self):
        self.by_medium = collections.defaultdict(collections.Counter)
        self.events = 0
        self.layouts = collections.Counter()  # "dict" (map layout) / "list" (array)
        self.applied = -1  # sequence number of the last batch applied

    def apply(self, seq, payload):
        assert seq == self.applied + 1, f"batch {seq} applied after {self.applied}"
        batch = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        assert isinstance(batch, list) and len(batch) == 3, batch
        ts, events, rank = batch
        assert isinstance(ts, float) and ts > 1e9, ts
        assert rank is None or isinstance(rank, int)
        for ev in events:
            tag, f = event_fields(ev)
            self.layouts[type(ev).__name__] += 1
            if tag == "BlockStored":
                hashes, parent = f["block_hashes"], f["parent_block_hash"]
                assert all(isinstance(h, int) and 0 <= h < 2**64 for h in hashes)
                assert parent is None or isinstance(parent, int)
                assert isinstance(f["token_ids"], list) and isinstance(f["block_size"], int)
                self.by_medium[f["medium"]].update(hashes)
            elif tag == "BlockRemoved":
                medium = f["medium"]
                idx = self.by_medium[medium]
                for h in f["block_hashes"]:
                    assert idx[h] > 0, f"removed {h} not stored in {medium}"
                    idx[h] -= 1
                    if not idx[h]:
                        del idx[h]
            else:
                self.by_medium.clear()
            self.events += 1
        self.applied = seq


def replay(dealer, start, upto, index, stats):
    """Ask for every buffered batch from start; apply those up to upto (inclusive)."""
    dealer.send_multipart([b"", start.to_bytes(8, "big")])
    while True:
        if not dealer.poll(30000):
            raise AssertionError("replay: no answer within 30 s")
        frames = dealer.recv_multipart()
        assert len(frames) == 3 and frames[0] == b"", frames[:1]
        seq_b, payload = frames[1], frames[2]
        if seq_b == END_SEQ:
            assert payload == b""
            return
        seq = int.from_bytes(seq_b, "big")
        if index.applied < seq <= upto:
            index.apply(seq, payload)
            stats["replayed"] += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", required=True, help="path to kvb-offload-demo")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--transport", choices=["ipc", "tcp"], default="ipc")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="kvb-e2e-")
    if args.transport == "ipc":
        pub_ep, rep_ep = f"ipc://{tmp}/pub", f"ipc://{tmp}/replay"
        sub_ep, req_ep = pub_ep, rep_ep
    else:
        # ephemeral ports, found by binding a probe socket and releasing it
        ctx0 = zmq.Context()
        ports = []
        for _ in range(2):
            s = ctx0.socket(zmq.REP)
            ports.append(s.bind_to_random_port("tcp://127.0.0.1"))
            s.close(0)
        ctx0.term()
        pub_ep, rep_ep = f"tcp://*:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}"
        sub_ep, req_ep = f"tcp://127.0.0.1:{ports[0]}", rep_ep
    dump = os.path.join(tmp, "final.txt")

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv")
    sub.connect(sub_ep)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVHWM, 0)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(req_ep)

    cmd = [args.demo, "--requests", str(args.requests), "--gpu", "256", "--host", "1024",
           "--show-moves", "0", "--publish", pub_ep, "--replay", rep_ep, "--topic", "kv",
           "--dump-final", dump, "--wait-stdin"]
    demo = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out_fd = demo.stdout.fileno()
    out_buf = b""
    out_lines = []

    def read_lines(timeout):
        """Lines the demo printed (non-blocking beyond timeout)."""
        nonlocal out_buf
        got = []
        r, _, _ = select.select([out_fd], [], [], timeout)
        if r:
            chunk = os.read(out_fd, 65536)
            if not chunk:
                raise AssertionError(f"demo exited early: rc={demo.wait()}\n"
                                     + "".join(out_lines))
            out_buf += chunk
            while b"\n" in out_buf:
                line, out_buf = out_buf.split(b"\n", 1)
                got.append(line.decode() + "\n")
        out_lines.extend(got)
        return got

    index = Index()
    stats = collections.Counter()
    gap_lo = gap_hi = None  # batches thrown away on purpose: the simulated gap
    last_seq = None
    deadline = time.monotonic() + 240
    try:
        # Handshake: the demo has bound its sockets; wait (bounded) until our SUB
        # socket is connected, so that most of the stream arrives live. What does
        # not (ZeroMQ's "slow joiner") is recovered through replay like any gap.
        while not any(l.startswith("READY") for l in out_lines):
            assert time.monotonic() < deadline, "demo never got ready"
            read_lines(1.0)
        mon = sub.get_monitor_socket(zmq.EVENT_CONNECTED)
        t_conn = time.monotonic() + 10
        while time.monotonic() < t_conn:
            if mon.poll(100):
                ev = zmq.utils.monitor.recv_monitor_message(mon)
                if ev["event"] == zmq.EVENT_CONNECTED:
                    break
        sub.disable_monitor()
        mon.close(0)
        time.sleep(0.05)  # let the subscription reach the publisher (not asserted on)
        demo.stdin.write(b"GO\n")
        demo.stdin.flush()

        idle_since = time.monotonic()
        while True:
            assert time.monotonic() < deadline, "no complete stream within 240 s"
            if last_seq is None:
                for line in read_lines(0):
                    if line.startswith("DONE "):
                        fields = dict(kv.split("=") for kv in line.split()[1:])
                        last_seq = int(fields["last_seq"])
                        assert int(fields["dropped"]) == 0, line
            if last_seq is not None and index.applied >= last_seq:
                break
            if sub.poll(100):
                topic, seq_b, payload = sub.recv_multipart()
                assert topic == b"kv" and len(seq_b) == 8
                seq = int.from_bytes(seq_b, "big")
                stats["received"] += 1
                idle_since = time.monotonic()
                if gap_lo is None:
                    gap_lo, gap_hi = seq + 50, seq + 110
                if gap_lo <= seq < gap_hi:
                    stats["thrown_away"] += 1
                    continue
                if seq <= index.applied:
                    continue
                if seq > index.applied + 1:
                    # a gap: the slow-joiner loss at the start, or the simulated one
                    stats["gaps"] += 1
                    replay(dealer, index.applied + 1, seq - 1, index, stats)
                index.apply(seq, payload)
            elif last_seq is not None and time.monotonic() - idle_since > 2:
                # quiet, but behind the end: the tail was lost or thrown away
                stats["gaps"] += 1
                replay(dealer, index.applied + 1, last_seq, index, stats)
                idle_since = time.monotonic()

        with open(dump) as f:
            final = {}
            for line in f:
                parts = line.split()
                final[parts[0]] = collections.Counter(int(x) for x in parts[1:])
        for medium in ("GPU", "CPU"):
            got = index.by_medium.get(medium, collections.Counter())
            want = final[medium]
            if got != want:
                missing = len(want - got)
                extra = len(got - want)
                raise AssertionError(f"{medium}: index differs from the pool "
                                     f"({missing} missing, {extra} extra)")
        if gap_lo is not None and last_seq >= gap_hi:
            assert stats["thrown_away"] > 0 and stats["replayed"] > 0, stats
        assert set(index.layouts) == {"dict"}, f"default layout is the map one: {index.layouts}"
        print(f"check-zmq ({args.transport}): {index.applied + 1} batches, {index.events} events "
              f"(tagged maps); "
              f"received {stats['received']} live, threw away {stats['thrown_away']}, "
              f"recovered {stats['replayed']} through replay in {stats['gaps']} gap(s); "
              f"index GPU {sum(index.by_medium['GPU'].values())} + "
              f"CPU {sum(index.by_medium['CPU'].values())} blocks == both pools: OK")
    finally:
        try:
            demo.stdin.close()
        except OSError:
            pass
        try:
            rc = demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            rc = demo.wait()
        sub.close(0)
        dealer.close(0)
        ctx.term()
        shutil.rmtree(tmp, ignore_errors=True)
    if rc != 0:
        sys.stderr.write("".join(out_lines))
        raise AssertionError(f"kvb-offload-demo exited with {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
