#!/usr/bin/env python3
"""kvb-replay --publish end to end: a ZeroMQ subscriber (Debian's python3-zmq and
python3-msgpack) reads the replay's KV events on the vLLM wire format (events as
tagged maps, kvblock's default layout; legacy tagged arrays are accepted too) and
checks their shape and sequence numbers. Bounded in time; no timing assertions.

usage: test_replay_publish.py BUILD/tools/kvb-replay
"""
import subprocess
import sys
import time

import msgpack
import zmq

# vLLM's field names in declaration order (the legacy array layout's order)
FIELDS = {
    "BlockStored": ["block_hashes", "parent_block_hash", "token_ids", "block_size",
                    "lora_id", "medium"],
    "BlockRemoved": ["block_hashes", "medium"],
    "AllBlocksCleared": [],
}


def event_fields(e):
    """(tag, {field: value}) of a tagged-map or tagged-array event."""
    if isinstance(e, dict):
        tag = e["type"]
        extra = {"lora_name"} if tag == "BlockStored" else set()
        assert set(e) == {"type", *FIELDS[tag], *extra}, e
        return tag, e
    assert len(e) == 1 + len(FIELDS[e[0]]), e
    return e[0], dict(zip(FIELDS[e[0]], e[1:]))


def main() -> int:
    replay = sys.argv[1]
    if True:  # one scope for the sockets and the child
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        # bound first on a free loopback port; the replay's PUB connects to it
        # (a tcp endpoint without '*' is connected, vLLM's rule)
        port = sub.bind_to_random_port("tcp://127.0.0.1")
        ep = f"tcp://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [replay, "--requests", "12000", "--capacity", "2000", "--publish", ep, "--topic", "t1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        batches, stored, removed, last_seq = 0, 0, 0, None
        maps, events_seen = 0, 0
        deadline = time.monotonic() + 120
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        done_at = None
        while time.monotonic() < deadline:
            if done_at is None and proc.poll() is not None:
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at > 2:
                break
            if not poller.poll(200):
                continue
            topic, seq, payload = sub.recv_multipart()
            assert topic == b"t1", topic
            assert len(seq) == 8, len(seq)
            seq = int.from_bytes(seq, "big", signed=True)
            if last_seq is not None:  # the first batches may precede the subscription
                assert seq == last_seq + 1, (last_seq, seq)
            last_seq = seq
            ts, events, rank = msgpack.unpackb(payload, raw=False)
            assert isinstance(ts, float) and rank is None and events
            for e in events:
                tag, f = event_fields(e)
                maps += isinstance(e, dict)
                if tag == "BlockStored":
                    hashes, parent = f["block_hashes"], f["parent_block_hash"]
                    assert hashes and all(isinstance(h, int) and 0 <= h < 2**64 for h in hashes)
                    assert parent is None or 0 <= parent < 2**64
                    assert isinstance(f["token_ids"], list) and f["block_size"] == 16
                    assert f["lora_id"] is None and f.get("lora_name") is None
                    assert f["medium"] == "GPU", f["medium"]
                    stored += len(hashes)
                elif tag == "BlockRemoved":
                    assert f["block_hashes"] and f["medium"] == "GPU"
                    removed += len(f["block_hashes"])
                events_seen += 1
            batches += 1
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (proc.returncode, err)
        assert batches > 0 and stored > 0 and removed > 0, (batches, stored, removed)
        assert maps == events_seen, f"default layout is tagged maps: {maps}/{events_seen}"
        print(f"check-replay-publish: {batches} batches, {stored} stored, {removed} removed "
              f"block hashes received in order; {err.strip().splitlines()[-1]}")
        print("check-replay-publish: 1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
