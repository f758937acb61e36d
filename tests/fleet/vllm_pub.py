#!/usr/bin/python3
"""A small, scriptable publisher of vLLM's KV events, for the kvb-indexer tests.

vLLM's events and batches, and its ZmqEventPublisher protocol, are written once in
kv_events.py (shared with tests/redis/publisher.py); this module re-exports them.

This publisher binds an XPUB socket instead of a PUB (the same messages on the
wire) so that a test can wait until a subscription has arrived instead of
sleeping. It is scriptable: a batch can be lost on the wire but kept for replay
(a replayable gap), numbers can be skipped without buffering (an unreplayable
gap), the replay buffer trimmed, raw payloads and frames of any shape sent
(malformed input), and a publisher closed and re-created on the same endpoints
(a restart: seq from 0).

router_hashes() (from fleet_model.py) gives the router hashes the daemon computes
for the same tokens, so a test knows the truth. FakeEngine produces the events of
an engine caching token sequences: engine
block hashes from SHA-256 (vLLM: the low 64 bits as an unsigned int, or the raw
32-byte digest; SGLang: a signed 64-bit int), parents, token ids.

As a program (the tests kill it with SIGKILL to simulate a dead engine):

    vllm_pub.py --pub ENDPOINT [--replay ENDPOINT] [--topic T] [--layout map|array]

reads one JSON command per line on stdin and answers one JSON line on stdout:
    {"cmd": "wait_subscribed", "timeout": 5}        -> {"ok": true|false}
    {"cmd": "publish", "events": [...], "dp_rank": 0, "lose": false} -> {"seq": n}
    {"cmd": "exit"}
It prints {"ready": true, "pub": ENDPOINT, "replay": ENDPOINT} once bound.
"""
import argparse
import hashlib
import json
import sys
import threading
import time

import msgpack  # noqa: F401 (the tests use vp.msgpack)
import zmq

# The router hashes kvb-indexer computes for tokens (kvb_index_hashes), written
# independently of libkvblock: the tests' truth. Re-exported for publishers'
# users: vllm_pub.router_hashes(tokens, block_size, seed, lora_name, cache_salt).
from fleet_model import router_hashes  # noqa: F401
# vLLM's events, batches and replay protocol (re-exported: vllm_pub.block_stored, ...).
from kv_events import (all_blocks_cleared, block_removed, block_stored,  # noqa: F401
                       encode_batch, replay_answer, replay_request)


# ---- an engine's block hashes ----------------------------------------------------

class FakeEngine:
    """Engine-side block hashes for token sequences. fmt: "u64" (vLLM int hashes),
    "bytes" (vLLM's raw 32-byte digests), "signed" (SGLang's signed 64-bit ints)."""

    def __init__(self, block_size=16, fmt="u64", salt=b""):
        self.block_size, self.fmt, self.salt = block_size, fmt, salt

    def hashes(self, tokens, lora_name=None):
        out, parent = [], b"root"
        bs = self.block_size
        for i in range(len(tokens) // bs):
            blk = tokens[i * bs:(i + 1) * bs]
            d = hashlib.sha256(self.salt + parent + repr((blk, lora_name)).encode()).digest()
            parent = d
            if self.fmt == "bytes":
                out.append(d)
            elif self.fmt == "signed":
                out.append(int.from_bytes(d[:8], "big", signed=True))
            else:
                out.append(int.from_bytes(d[-8:], "big"))
        return out

    def stored(self, tokens, first=0, count=None, medium="GPU", lora_name=None, lora_id=None,
               **extra):
        """BlockStored of blocks [first, first + count) of tokens (parent: block
        first - 1)."""
        hs = self.hashes(tokens, lora_name)
        count = len(hs) - first if count is None else count
        bs = self.block_size
        parent = hs[first - 1] if first > 0 else None
        return block_stored(hs[first:first + count], parent,
                            tokens[first * bs:(first + count) * bs], bs, lora_id=lora_id,
                            medium=medium, lora_name=lora_name, **extra)

    def removed(self, tokens, first=0, count=None, medium="GPU", lora_name=None):
        hs = self.hashes(tokens, lora_name)
        count = len(hs) - first if count is None else count
        return block_removed(hs[first:first + count], medium)


# ---- the publisher ---------------------------------------------------------------

def _bind_retry(sock, endpoint, timeout=5.0):
    """Bind, retrying while a just-closed socket still holds the address."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
                port = sock.bind_to_random_port(endpoint[:-2])
                return f"{endpoint[:-2]}:{port}"
            sock.bind(endpoint)
            return endpoint
        except zmq.ZMQError as e:
            if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Publisher:
    """ZmqEventPublisher's behaviour, scriptable. pub / replay: bind endpoints
    ("tcp://127.0.0.1:0" picks a port: see .pub / .replay afterwards)."""

    def __init__(self, pub, replay=None, topic="kv", layout="map", buffer_steps=10000):
        self.topic = topic.encode()
        self.layout = layout
        self.buffer_steps = buffer_steps
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.pub = _bind_retry(self.sock, pub)
        self.seq = 0
        self.buffer = []  # (seq, payload), under self.lock
        self.lock = threading.Lock()
        self.replay = None
        self.replay_requests = 0
        self._stop = threading.Event()
        self._thread = None
        if replay:
            ready = threading.Event()
            err = []
            self._thread = threading.Thread(target=self._serve_replay, args=(replay, ready, err),
                                            daemon=True)
            self._thread.start()
            ready.wait(10)
            if err:
                raise err[0]

    # replay ROUTER, on its own thread (ZeroMQ sockets stay on the thread that made them)
    def _serve_replay(self, endpoint, ready, err):
        try:
            router = self.ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.SNDHWM, 0)
            self.replay = _bind_retry(router, endpoint)
        except Exception as e:  # reported to the constructor
            err.append(e)
            ready.set()
            return
        ready.set()
        try:
            while not self._stop.is_set():
                if not router.poll(50):
                    continue
                req = replay_request(router.recv_multipart())
                if req is None:
                    continue  # vLLM: "Invalid replay request"
                prefix, start = req
                self.replay_requests += 1
                with self.lock:
                    items = [(s, p) for s, p in self.buffer if s >= start]
                replay_answer(router, prefix, items)
        finally:
            router.close(0)

    def wait_subscribed(self, timeout=10.0):
        """True once a subscription message arrived (XPUB), False at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(50):
                msg = self.sock.recv()
                if msg[:1] == b"\x01":
                    return True
        return False

    def publish(self, events, dp_rank=0, lose=False, payload=None):
        """One batch; returns its seq. lose=True: buffered for replay but not sent
        (a message lost on the wire). payload: raw bytes instead of the encoding."""
        seq = self.seq
        self.seq += 1
        if payload is None:
            payload = encode_batch(events, dp_rank, self.layout)
        with self.lock:
            self.buffer.append((seq, payload))
            del self.buffer[:-self.buffer_steps]
        if not lose:
            self.sock.send_multipart([self.topic, seq.to_bytes(8, "big"), payload])
        return seq

    def skip(self, n=1):
        """Numbers that were never published nor buffered (an unreplayable gap)."""
        self.seq += n

    def trim(self, keep_from):
        """Forget buffered batches below keep_from (a replay buffer that moved on)."""
        with self.lock:
            self.buffer = [(s, p) for s, p in self.buffer if s >= keep_from]

    def send_frames(self, frames):
        """Any multipart message (malformed shapes)."""
        self.sock.send_multipart(frames)

    def close(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.sock.close(0)
        self.ctx.term()  # returns once every socket is closed: the addresses are free


# ---- as a program ----------------------------------------------------------------

def _jsonable_events(events):
    """JSON has no bytes: {"$bytes": hex} stands for a raw digest."""
    def conv(v):
        if isinstance(v, dict) and set(v) == {"$bytes"}:
            return bytes.fromhex(v["$bytes"])
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(events)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pub", required=True)
    ap.add_argument("--replay")
    ap.add_argument("--topic", default="kv")
    ap.add_argument("--layout", choices=["map", "array"], default="map")
    ap.add_argument("--buffer-steps", type=int, default=10000)
    a = ap.parse_args()
    p = Publisher(a.pub, a.replay, a.topic, a.layout, a.buffer_steps)

    def say(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    say({"ready": True, "pub": p.pub, "replay": p.replay})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        c = cmd.get("cmd")
        if c == "wait_subscribed":
            say({"ok": p.wait_subscribed(cmd.get("timeout", 10))})
        elif c == "publish":
            say({"seq": p.publish(_jsonable_events(cmd.get("events", [])),
                                  cmd.get("dp_rank", 0), cmd.get("lose", False))})
        elif c == "exit":
            break
        else:
            say({"error": f"unknown command {c!r}"})
    p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
