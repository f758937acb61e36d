#!/usr/bin/python3
"""End-to-end tests of kvb-indexer (FLEET.md section 7): the daemon as a child
process on a port the system picks, fed by real publishers over ZeroMQ, asked
over HTTP; every answer compared with the truth (fleet_model.py).

Publishers: vllm_pub.py in process (vLLM's map layout over ipc, the legacy
array layout over tcp with raw 32-byte digests, one without a replay socket,
an SGLang-kind one with signed hashes), vllm_pub.py as a child process (killed
with SIGKILL), and kvblock's own kvb-offload-demo (kind=kvblock, both tiers,
its final content dumped as the truth).

Scenarios: healthz before/after, catch-up of batches published before the
daemon started, tokens vs hashes (integers, decimal strings, two's complement),
sorting and ties, tiers and copies, LoRA, SGLang, kvblock's publisher, a gap
replayed (ipc/map and tcp/array), an unreplayable gap (no replay socket:
resyncing + cleared), a trimmed replay buffer, a restart (new publisher, seq
from 0), AllBlocksCleared of one rank, silence (idle publishers stay live), a
publisher killed (stale after --stale-after, dropped after --drop-after, then
back), malformed batches and frames (counted in /v1/workers), bad HTTP
requests (400/404/405/413 JSON, the daemon survives), /metrics parsing,
POST /v1/snapshot and a restart of the daemon from it (same answers), corrupt
and truncated snapshots refused (exit 1, file untouched), SIGTERM (exit 0,
snapshot written), flags and --config (exit 2 on bad usage), --help.
After every scripted fault the daemon's answers equal the truth exactly and
every stream's entries equal the model's: zero stale entries.

Every wait has a deadline (polling, no fixed sleeps except the silence
scenario's deliberate idle period). Ports come from the OS, files from a
temporary directory; every child is killed at the end, even on failure.

usage: test_indexer.py [--build DIR] [--only NAME[,NAME]] [-v]
       (DIR defaults to $KVB_BUILD or "build"); prints "N passed, M failed".
"""
import argparse
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import msgpack  # noqa: F401
    import xxhash  # noqa: F401
    import zmq  # noqa: F401
except ImportError as e:  # the only reason to skip
    print(f"check-indexer: SKIPPED ({e}: apt-get install python3-zmq python3-msgpack "
          "python3-xxhash)")
    sys.exit(0)

import fleet_model as fm  # noqa: E402
import vllm_pub as vp  # noqa: E402

BS = 16
STALE_AFTER, DROP_AFTER = 1.0, 2.0
VERBOSE = False


def log(msg):
    if VERBOSE:
        print(f"    {msg}", flush=True)


def wait_for(pred, timeout, what):
    """Poll pred() until it returns something true; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
        except AssertionError as e:
            v, last = None, e
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f" ({last})" if last else ""))
        time.sleep(0.01)


class LineReader:
    """Lines of a child's stdout without blocking past a deadline."""

    def __init__(self, f):
        self.fd, self.buf = f.fileno(), b""

    def line(self, timeout, what="a line"):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError(f"child closed its output waiting for {what}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def until(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.0, deadline - time.monotonic()), f"'{prefix}'")
            if line.startswith(prefix):
                return line


# ---- HTTP --------------------------------------------------------------------------

class Client:
    """Keep-alive HTTP/1.1 client (http.client, under urllib) of one daemon."""

    def __init__(self, port):
        self.port, self.conn = port, None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                if (r.getheader("Connection") or "").lower() == "close":
                    self.close()
                return r.status, r, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def json(self, method, path, obj=None, expect=200):
        body = None if obj is None else json.dumps(obj).encode()
        st, r, data = self.request(method, path, body,
                                   {"Content-Type": "application/json"} if body else None)
        assert st == expect, f"{method} {path}: HTTP {st} (wanted {expect}): {data[:300]!r}"
        assert (r.getheader("Content-Type") or "").startswith("application/json"), \
            r.getheader("Content-Type")
        return json.loads(data)


class Daemon:
    count = 0

    def __init__(self, ctx, args, expect_start=True):
        Daemon.count += 1
        self.ctx = ctx
        self.log = os.path.join(ctx.tmp, f"indexer.{Daemon.count}.log")
        self.args = list(args)
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([ctx.indexer, "--listen", "127.0.0.1:0", *args],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)
        ctx.children.append(self.proc)
        self.port = None
        if expect_start:
            def up():
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", self.log_text())
                if m:
                    return int(m.group(1))
                assert self.proc.poll() is None, \
                    f"kvb-indexer exited with {self.proc.returncode}: {self.log_text()}"
                return None
            self.port = wait_for(up, 15, "the daemon to listen")
            self.http = Client(self.port)

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def match(self, **body):
        return self.http.json("POST", "/v1/match", body)

    def workers(self):
        return self.http.json("GET", "/v1/workers")

    def stream(self, worker, rank):
        for s in self.workers()["workers"]:
            if s["worker"] == worker and s["dp_rank"] == (None if rank < 0 else rank):
                return s
        return None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.port:
            self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"kvb-indexer did not exit within {timeout} s of {sig!r}")


# ---- the fleet -----------------------------------------------------------------------

class Query:
    def __init__(self, tokens, lora=None):
        self.tokens, self.lora = tokens, lora


class Fleet:
    """Publishers, the model of what the daemon must hold, the daemon."""

    def __init__(self, build, tmp):
        self.tmp = tmp
        self.indexer = os.path.join(build, "tools", "kvb-indexer")
        self.demo = os.path.join(build, "tools", "kvb-offload-demo")
        for b in (self.indexer, self.demo):
            if not os.access(b, os.X_OK):
                raise SystemExit(f"check-indexer: {b} not built")
        self.children = []
        self.pubs, self.engines = {}, {}
        self.model = fm.Model(BS)
        self.queries = []
        self.rng = random.Random(20240607)
        self.daemon = None
        self.snapshot = os.path.join(tmp, "main.snap")

    # token sequences the tests store and query
    def tokens(self, n_blocks, partial=0):
        return [self.rng.randrange(1, 60000) for _ in range(n_blocks * BS + partial)]

    def remember(self, tokens, lora=None):
        """Query this sequence, a prefix of it and an extension of it at every check."""
        nb = len(tokens) // BS
        self.queries.append(Query(tokens, lora))
        if nb > 1:
            self.queries.append(Query(tokens[:(nb // 2) * BS + 3], lora))
        self.queries.append(Query(tokens[:nb * BS] + self.tokens(2, 5), lora))
        return tokens

    def add_pub(self, name, kind, pub, engine):
        self.pubs[name], self.engines[name] = pub, engine
        self.model.add_worker(name, kind)

    def publish(self, name, events, rank=0, lose=False, model=True):
        seq = self.pubs[name].publish(events, rank, lose=lose)
        if model:
            self.model.apply_batch(name, rank, events)
        log(f"{name} rank {rank}: batch {seq}{' (lost on the wire)' if lose else ''}: "
            f"{[e['type'] for e in events]}")
        return seq

    def settle(self, name, rank, seq, timeout=10, state=None):
        """Wait until the daemon applied batch seq of (name, rank)."""
        def ok():
            s = self.daemon.stream(name, rank)
            assert s is not None, f"no stream {name}/{rank} yet"
            assert s["last_seq"] == seq, f"{name}/{rank} last_seq {s['last_seq']} != {seq}"
            assert state is None or s["state"] == state, f"{name}/{rank} state {s['state']}"
            return s
        return wait_for(ok, timeout, f"{name}/{rank} to apply batch {seq}")

    def check_truth(self, streams=True, hashes=True):
        """Every remembered query, by tokens and by hashes, equals the model; every
        stream's entries equal the model's."""
        d = self.daemon
        for q in self.queries:
            rh = fm.router_hashes(q.tokens, BS, lora_name=q.lora)
            want = self.model.match(rh)
            body = {"tokens": q.tokens, "block_size": BS}
            if q.lora:
                body["lora_name"] = q.lora
            got = d.match(**body)
            assert got["blocks"] == len(q.tokens) // BS, (got["blocks"], len(q.tokens))
            if not fm.same_answer(got["workers"], want):
                raise AssertionError(f"stale or missing entries: query of {len(rh)} blocks "
                                     f"(lora {q.lora}) answered {got['workers']}, truth {want}")
            if hashes:
                # the hash rule: plain integers, decimal strings, two's complement
                mixed = [str(h) if i % 3 == 0 else (h - (1 << 64) if h >= 1 << 63 and i % 3 == 1
                                                     else h) for i, h in enumerate(rh)]
                got2 = d.match(hashes=mixed)
                assert got2 == got, f"hashes answer {got2} != tokens answer {got}"
        if streams:
            self.check_entries()

    def check_entries(self):
        ws = {(s["worker"], -1 if s["dp_rank"] is None else s["dp_rank"]): s
              for s in self.daemon.workers()["workers"]}
        for key, st in self.model.streams.items():
            s = ws.get(key)
            n = s["entries"] if s else 0
            assert n == st.entries(), f"stream {key}: {n} entries, truth {st.entries()}"
            if s:
                assert (s["state"] == "stale") == (not st.matchable), (key, s["state"])

    def close(self):
        for p in self.pubs.values():
            if p is not None and not isinstance(p, Child):
                try:
                    p.close()
                except Exception:
                    pass
        for c in self.children:
            if c.poll() is None:
                c.kill()
        for c in self.children:
            try:
                c.wait(5)
            except Exception:
                pass


class Child:
    """vllm_pub.py as a child process (a publisher that can be killed)."""

    def __init__(self, fleet, pub, replay, layout="map"):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "vllm_pub.py"), "--pub", pub, "--replay", replay,
             "--layout", layout], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        fleet.children.append(self.proc)
        self.out = LineReader(self.proc.stdout)
        ready = json.loads(self.out.line(15, "vllm_pub.py to bind"))
        self.pub, self.replay = ready["pub"], ready["replay"]

    def cmd(self, **c):
        self.proc.stdin.write((json.dumps(c) + "\n").encode())
        self.proc.stdin.flush()
        return json.loads(self.out.line(30, f"an answer to {c['cmd']}"))

    def wait_subscribed(self, timeout=10):
        return self.cmd(cmd="wait_subscribed", timeout=timeout)["ok"]

    def publish(self, events, rank=0, lose=False):
        return self.cmd(cmd="publish", events=events, dp_rank=rank, lose=lose)["seq"]

    def kill(self):
        self.proc.kill()
        self.proc.wait(5)


# ---- scenarios ----------------------------------------------------------------------

SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


@scenario
def start_fleet(F):
    """Publishers first (some with batches already sent), then the daemon."""
    t = F.tmp
    F.add_pub("vmap", "vllm", vp.Publisher(f"ipc://{t}/vmap.pub", f"ipc://{t}/vmap.rep",
                                           layout="map"), vp.FakeEngine(BS, "u64", b"m"))
    F.add_pub("varr", "vllm", vp.Publisher("tcp://127.0.0.1:0", "tcp://127.0.0.1:0",
                                           layout="array"), vp.FakeEngine(BS, "bytes", b"a"))
    F.add_pub("vnorep", "vllm", vp.Publisher("tcp://127.0.0.1:0", None, layout="map"),
              vp.FakeEngine(BS, "u64", b"n"))
    F.add_pub("sgl", "sglang", vp.Publisher(f"ipc://{t}/sgl.pub", f"ipc://{t}/sgl.rep",
                                            layout="array"), vp.FakeEngine(BS, "signed", b"s"))
    child = Child(F, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    F.add_pub("vkill", "vllm", child, vp.FakeEngine(BS, "u64", b"k"))
    F.model.add_worker("kvb", "kvblock")

    # kvblock's own publisher: bound, waiting for "GO" on stdin
    F.demo_proc = subprocess.Popen(
        [F.demo, "--requests", "1500", "--gpu", "256", "--host", "1024", "--show-moves", "0",
         "--publish", f"ipc://{t}/kvb.pub", "--replay", f"ipc://{t}/kvb.rep", "--topic", "kv",
         "--dump-final", f"{t}/kvb.dump", "--wait-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    F.children.append(F.demo_proc)
    F.demo_out = LineReader(F.demo_proc.stdout)
    F.demo_out.until("READY", 30)

    # batches published before the daemon exists: recovered by its catch-up replay
    e = F.engines
    a1, a2, a3 = F.remember(F.tokens(6)), F.remember(F.tokens(5, 7)), F.remember(F.tokens(8))
    F.shared = a1
    F.publish("vmap", [e["vmap"].stored(a1)])
    F.publish("vmap", [e["vmap"].stored(a2, 0, 3), e["vmap"].stored(a2, 3)])
    F.publish("vmap", [e["vmap"].stored(a3)])
    F.publish("vmap", [e["vmap"].removed(a3, 6)])
    b1 = F.remember(a1[:3 * BS] + F.tokens(4))  # shares 3 blocks with a1
    F.publish("varr", [e["varr"].stored(b1)])
    F.publish("varr", [e["varr"].stored(a2)])  # a2 held whole by vmap and varr: a tie
    F.publish("sgl", [e["sgl"].stored(F.remember(F.tokens(7)))])
    F.sgl_seq = F.publish("sgl", [e["sgl"].stored(a1, 0, 2)])
    F.a2 = a2

    args = ["--block-size", str(BS), "--seed", "1337", "--snapshot", F.snapshot,
            "--stale-after", str(STALE_AFTER), "--drop-after", str(DROP_AFTER),
            "--worker", f"vmap={F.pubs['vmap'].pub},replay={F.pubs['vmap'].replay}",
            "--worker", f"varr={F.pubs['varr'].pub},replay={F.pubs['varr'].replay},kind=vllm,"
                        f"block-size={BS}",
            "--worker", f"vnorep={F.pubs['vnorep'].pub}",
            "--worker", f"sgl={F.pubs['sgl'].pub},replay={F.pubs['sgl'].replay},kind=sglang,"
                        "topic=kv",
            "--worker", f"vkill={child.pub},replay={child.replay}",
            "--worker", f"kvb=ipc://{t}/kvb.pub,replay=ipc://{t}/kvb.rep,kind=kvblock"]
    F.daemon_args = args
    F.daemon = Daemon(F, args)
    log(f"daemon on port {F.daemon.port}")


@scenario
def healthz_before(F):
    """503 while a configured worker (vnorep: no replay socket, nothing sent yet)
    has not been heard from; JSON says which."""
    st, _, data = F.daemon.http.request("GET", "/healthz")
    assert st == 503, (st, data)
    ans = json.loads(data)
    assert ans["status"] != "ok" and "vnorep" in ans["waiting"], ans


@scenario
def catch_up_on_connect(F):
    """Batches published before the daemon started are replayed on connect."""
    F.settle("vmap", 0, 3)
    F.settle("varr", 0, 1)
    F.settle("sgl", 0, F.sgl_seq)
    assert F.pubs["vmap"].wait_subscribed(10) and F.pubs["varr"].wait_subscribed(10)
    assert F.pubs["sgl"].wait_subscribed(10)
    F.check_truth()


@scenario
def healthz_after(F):
    """vnorep publishes; then every worker was heard from: 200 {"status": "ok"}."""
    p = F.pubs["vnorep"]
    assert p.wait_subscribed(10), "vnorep: no subscription"
    seq = F.publish("vnorep", [F.engines["vnorep"].stored(F.remember(F.tokens(4)))])
    F.settle("vnorep", 0, seq)
    child = F.pubs["vkill"]
    assert child.wait_subscribed(10), "vkill: no subscription"
    ev = [F.engines["vkill"].stored(F.remember(F.tokens(5)))]
    F.model.apply_batch("vkill", 0, ev)
    F.settle("vkill", 0, child.publish(ev))

    def ok():
        st, _, data = F.daemon.http.request("GET", "/healthz")
        return st == 200 and json.loads(data) == {"status": "ok"}
    wait_for(ok, 10, "/healthz 200")
    F.check_truth()


@scenario
def tokens_and_hashes(F):
    """The same prefix asked by tokens, by u64 integers above 2^63, by decimal
    strings and by two's complement gives one answer; top_k cuts the list;
    block_size equal to the index's is accepted; workers sorted (a tie on score
    goes to the fewest entries, then the name)."""
    d = F.daemon
    rh = fm.router_hashes(F.a2, BS)
    by_tokens = d.match(tokens=F.a2, block_size=BS, lora_name=None, cache_salt=None)
    want = F.model.match(rh)
    assert fm.same_answer(by_tokens["workers"], want), (by_tokens, want)
    assert len(want) >= 2 and want[0]["score"] == want[1]["score"], want  # the tie
    for form in (rh, [str(h) for h in rh], [h - (1 << 64) if h >= 1 << 63 else h for h in rh]):
        assert d.match(hashes=form) == by_tokens
    # literal integers above 2^63 - 1, as Python's json writes them
    big = [h for h in rh if h >= 1 << 63]
    assert big, "no router hash above 2^63 in this sequence (pick another seed)"
    st, _, data = d.http.request("POST", "/v1/match", json.dumps({"hashes": rh}).encode())
    assert st == 200 and json.loads(data) == by_tokens, (st, data)
    # the big-literal pass leaves strings alone (escaped quotes, digits in keys)
    tricky = ('{"note": "\\\"12345678901234567890 \\\\", "k\\"99999999999999999999": 1, '
              '"hashes": [%s]}' % ", ".join(str(h) for h in rh))
    st, _, data = d.http.request("POST", "/v1/match", tricky.encode())
    assert st == 200 and json.loads(data) == by_tokens, (st, data, tricky)
    top1 = d.match(tokens=F.a2, top_k=1)
    assert top1["workers"] == by_tokens["workers"][:1], top1
    assert d.match(hashes=[]) == {"blocks": 0, "workers": []}
    assert d.match(tokens=F.a2[:BS - 1]) == {"blocks": 0, "workers": []}
    unknown = d.match(hashes=[0, 1, (1 << 64) - 1])
    assert unknown == {"blocks": 3, "workers": []}, unknown


@scenario
def kvblock_publisher(F):
    """kvb-offload-demo (kind=kvblock, router hashes, GPU and CPU tiers) replays a
    workload live; the index equals the demo's final content, hash by hash."""
    F.demo_proc.stdin.write(b"GO\n")
    F.demo_proc.stdin.flush()
    done = F.demo_out.until("DONE ", 90)
    fields = dict(kv.split("=") for kv in done.split()[1:])
    assert int(fields["dropped"]) == 0, done
    last = int(fields["last_seq"])
    F.settle("kvb", -1, last, timeout=30)
    with open(os.path.join(F.tmp, "kvb.dump")) as f:
        lines = dict((ln.split()[0], [int(x) for x in ln.split()[1:]]) for ln in f if ln.strip())
    st = F.model.stream("kvb", -1)
    st.clear()
    for h in lines.get("GPU", []):
        st.tiers[fm.DEVICE][h] += 1
    for h in lines.get("CPU", []):
        st.tiers[fm.HOST][h] += 1
    log(f"kvb: last_seq {last}, {len(lines.get('GPU', []))} GPU + {len(lines.get('CPU', []))} "
        "CPU blocks")
    assert lines.get("GPU") and lines.get("CPU"), lines.keys()
    for h in sorted(set(lines["GPU"]) | set(lines["CPU"])):
        got = F.daemon.match(hashes=[h])
        want = F.model.match([h])
        assert fm.same_answer(got["workers"], want), (h, got, want)
    F.check_entries()


@scenario
def tiers_and_copies(F):
    """device/host/disk arithmetic; two copies of a block survive one REMOVED;
    REMOVED of a block nobody holds is harmless (counted)."""
    e = F.engines["varr"]
    s = F.remember(F.tokens(8))
    F.publish("varr", [e.stored(s, 0, 4, medium="GPU"), e.stored(s, 0, 6, medium="CPU"),
                       e.stored(s, 0, 8, medium="DISK")])
    seq = F.publish("varr", [e.stored(s, 0, 2, medium="GPU")])  # second copies of 0, 1
    F.settle("varr", 0, seq)
    got = F.daemon.match(tokens=s)["workers"]
    mine = [w for w in got if w["worker"] == "varr"]
    assert mine and (mine[0]["device"], mine[0]["host"], mine[0]["disk"]) == (4, 2, 2), got
    assert abs(mine[0]["score"] - (4 + 0.8 * 2 + 0.5 * 2)) < 1e-9, mine
    F.check_truth()
    seq = F.publish("varr", [e.removed(s, 0, 2, medium="GPU"), e.removed(s, 3, 1, medium="GPU"),
                             e.removed(F.tokens(2), medium="GPU")])
    F.settle("varr", 0, seq)
    F.check_truth()
    s2 = F.daemon.stream("varr", 0)
    assert s2["dropped"]["unknown_block"] >= 2, s2["dropped"]


@scenario
def lora(F):
    """A LoRA block matches only a request with the same LoRA (by name, or by the
    decimal id when the event has no name); never a plain-text request."""
    e = F.engines["vmap"]
    s1, s2 = F.tokens(4), F.tokens(3)
    F.remember(s1, "adapter-1")
    F.remember(s1)
    F.remember(s2, "7")
    F.remember(s2)
    seq = F.publish("vmap", [e.stored(s1, lora_name="adapter-1", lora_id=1),
                             e.stored(s2, lora_id=7)])
    F.settle("vmap", 0, seq)
    assert F.daemon.match(tokens=s1, lora_name="adapter-1")["workers"], "LoRA block not found"
    assert not [w for w in F.daemon.match(tokens=s1)["workers"] if w["worker"] == "vmap"]
    assert not F.daemon.match(tokens=s1, lora_name="adapter-1", cache_salt="x")["workers"]
    F.check_truth()


@scenario
def sglang_signed_hashes(F):
    """SGLang kind: signed 64-bit engine hashes, stored and removed."""
    e = F.engines["sgl"]
    s = F.remember(F.tokens(6))
    F.publish("sgl", [e.stored(s)])
    seq = F.publish("sgl", [e.removed(s, 4)])
    F.settle("sgl", 0, seq)
    F.check_truth()


def gap_replayed(F, name):
    e = F.engines[name]
    q1, q2 = F.remember(F.tokens(3)), F.remember(F.tokens(4))
    ext = F.remember(q1 + F.tokens(2))
    before = F.daemon.stream(name, 0)
    F.publish(name, [e.stored(q1)], lose=True)
    # the trigger extends q1: applied before the lost batch it would lack its parent
    seq = F.publish(name, [e.stored(q2), e.stored(ext, 3)])
    s = F.settle(name, 0, seq)
    assert s["gaps"] > before["gaps"] and s["replays"] > before["replays"], (before, s)
    assert s["state"] == "live" and s["dropped"]["unknown_parent"] == \
        before["dropped"]["unknown_parent"], s
    F.check_truth()


@scenario
def gap_replayed_ipc_map(F):
    """A batch lost on the wire (ipc, map layout) is replayed before its successor."""
    gap_replayed(F, "vmap")


@scenario
def gap_replayed_tcp_array(F):
    """The same over tcp with the legacy array layout and 32-byte digests."""
    gap_replayed(F, "varr")


@scenario
def gap_unreplayable(F):
    """No replay socket: the worker is cleared, marked resyncing, the trigger batch
    applied; the next batch in order makes it live again."""
    e = F.engines["vnorep"]
    before = F.daemon.stream("vnorep", 0)
    F.publish("vnorep", [e.stored(F.remember(F.tokens(3)))], lose=True, model=False)
    trig = [e.stored(F.remember(F.tokens(2)))]
    F.model.clear_worker("vnorep")
    seq = F.publish("vnorep", trig)
    s = F.settle("vnorep", 0, seq, state="resyncing")
    assert s["clears"] > before["clears"] and s["gaps"] > before["gaps"], (before, s)
    F.check_truth()
    seq = F.publish("vnorep", [e.stored(F.remember(F.tokens(2)))])
    F.settle("vnorep", 0, seq, state="live")
    F.check_truth()


@scenario
def gap_buffer_trimmed(F):
    """The replay buffer no longer holds the first missing batch: the worker is
    cleared and the run restarts at the first batch it still holds (whose parent
    is now unknown: dropped, counted)."""
    e = F.engines["vmap"]
    before = F.daemon.stream("vmap", 0)
    p1 = F.remember(F.tokens(3))
    p2 = F.remember(p1 + F.tokens(2))
    p3 = F.remember(F.tokens(3))
    F.publish("vmap", [e.stored(p1)], lose=True, model=False)
    l2 = [e.stored(p2, 3)]
    l2_seq = F.publish("vmap", l2, lose=True, model=False)
    F.pubs["vmap"].trim(l2_seq)
    F.model.clear_worker("vmap")
    F.model.apply_batch("vmap", 0, l2)  # unknown parent after the clear: nothing
    seq = F.publish("vmap", [e.stored(p3)])
    s = F.settle("vmap", 0, seq)
    assert s["clears"] > before["clears"], (before, s)
    assert s["dropped"]["unknown_parent"] > before["dropped"]["unknown_parent"], s["dropped"]
    F.check_truth()


@scenario
def restart(F):
    """A new publisher on the same endpoints, seq from 0 (tcp): the worker is
    cleared, the new incarnation read from 0."""
    old = F.pubs["varr"]
    before = F.daemon.stream("varr", 0)
    pub, rep = old.pub, old.replay
    old.close()
    F.pubs["varr"] = vp.Publisher(pub, rep, layout="array")
    F.model.clear_worker("varr")
    assert F.pubs["varr"].wait_subscribed(10), "no subscription after the restart"
    e = F.engines["varr"]
    F.publish("varr", [e.stored(F.remember(F.tokens(2)))])
    seq = F.publish("varr", [e.stored(F.shared)])
    assert seq == 1

    def restarted():
        s = F.daemon.stream("varr", 0)
        return s["last_seq"] == seq and s["restarts"] > before["restarts"] and s
    wait_for(restarted, 10, "varr to restart and apply batch 1")
    F.check_truth()


@scenario
def all_blocks_cleared_one_rank(F):
    """AllBlocksCleared clears that rank only (rank 1 of the same endpoint stays)."""
    e = F.engines["vmap"]
    r1 = F.remember(F.tokens(3))
    s1 = F.publish("vmap", [e.stored(r1), e.stored(F.shared, 0, 2)], rank=1)
    F.settle("vmap", 1, s1)
    F.check_truth()
    seq = F.publish("vmap", [vp.all_blocks_cleared()])
    F.settle("vmap", 0, seq)
    F.check_truth()
    seq = F.publish("vmap", [e.stored(F.remember(F.tokens(2))), e.stored(F.shared)])
    F.settle("vmap", 0, seq)
    F.check_truth()
    assert F.daemon.stream("vmap", 1)["entries"] > 0


@scenario
def malformed_batches(F):
    """Garbage payloads, a batch of the wrong shape, a malformed event, frames of
    the wrong shape and an unknown event type: counted, skipped, nothing else
    changes; the stream goes on."""
    p, e = F.pubs["vmap"], F.engines["vmap"]
    before = F.daemon.workers()
    ep_before = [x for x in before["endpoints"] if x["name"] == "vmap"][0]
    mal_before = sum(s["dropped"]["malformed"] for s in before["workers"]
                     if s["worker"] == "vmap")
    p.publish(None, payload=b"\xc1 not msgpack")
    p.publish(None, payload=vp.msgpack.packb({"what": 1}))
    p.publish(None, payload=vp.encode_batch([{"type": "BlockStored", "block_hashes": "x",
                                              "parent_block_hash": [], "token_ids": 5}], 0))
    p.send_frames([b"kv", b"\x00\x01", b"payload"])  # a 2-byte seq
    p.send_frames([b"kv", (p.seq).to_bytes(8, "big")])  # no payload
    unk = {"type": "BlockFrobbed", "block_hashes": [1, 2]}
    ok = [e.stored(F.remember(F.tokens(3)))]
    seq = F.publish("vmap", [unk] + ok)
    s = F.settle("vmap", 0, seq)
    after = F.daemon.workers()
    mal = sum(x["dropped"]["malformed"] for x in after["workers"] if x["worker"] == "vmap")
    ep = [x for x in after["endpoints"] if x["name"] == "vmap"][0]
    assert mal >= mal_before + 2, (mal_before, mal)
    assert s["dropped"]["unknown_type"] >= 1, s["dropped"]
    assert ep["bad_messages"] >= ep_before["bad_messages"] + 2, (ep_before, ep)
    assert s["state"] == "live", s
    F.check_truth()


@scenario
def silence(F):
    """Idle publishers (nothing sent for longer than --stale-after) stay live."""
    time.sleep(STALE_AFTER * 1.6)  # deliberate: the silence is the scenario
    for name, rank in (("vmap", 0), ("sgl", 0), ("vnorep", 0), ("vkill", 0), ("kvb", -1),
                       ("varr", 0)):
        s = F.daemon.stream(name, rank)
        assert s and s["state"] == "live", (name, s)
    F.check_truth()


@scenario
def publisher_killed(F):
    """SIGKILL of a publisher: stale (not matched) after --stale-after, entries
    freed after --drop-after; a new publisher on its endpoints brings it back
    with only what the new one published."""
    child = F.pubs["vkill"]
    probe = F.remember(F.tokens(4))
    ev = [F.engines["vkill"].stored(probe)]
    F.model.apply_batch("vkill", 0, ev)
    F.settle("vkill", 0, child.publish(ev))
    assert [w for w in F.daemon.match(tokens=probe)["workers"] if w["worker"] == "vkill"]
    t0 = time.monotonic()
    child.kill()
    wait_for(lambda: F.daemon.stream("vkill", 0)["state"] == "stale", STALE_AFTER + 5,
             "vkill to be marked stale")
    t_stale = time.monotonic() - t0
    assert not [w for w in F.daemon.match(tokens=probe)["workers"] if w["worker"] == "vkill"], \
        "a stale worker was matched"
    F.model.set_matchable("vkill", False)
    wait_for(lambda: F.daemon.stream("vkill", 0)["entries"] == 0, DROP_AFTER + 5,
             "vkill's entries to be dropped")
    t_drop = time.monotonic() - t0
    log(f"vkill stale after {t_stale:.2f} s, dropped after {t_drop:.2f} s")
    assert t_stale >= STALE_AFTER * 0.9 and t_drop >= DROP_AFTER * 0.9, (t_stale, t_drop)
    F.model.clear_worker("vkill")
    F.check_truth()
    # back: a new engine process on the same endpoints, seq from 0
    new = Child(F, child.pub, child.replay)
    F.pubs["vkill"] = new
    assert new.wait_subscribed(10), "vkill: no subscription after the restart"
    ev = [F.engines["vkill"].stored(F.remember(F.tokens(3)))]
    seq = new.publish(ev)
    F.model.set_matchable("vkill", True)
    F.model.apply_batch("vkill", 0, ev)
    F.settle("vkill", 0, seq, state="live")
    F.check_truth()


@scenario
def concurrent_clients(F):
    """Four clients match (tokens and hashes) while a publisher streams 200
    batches of stores and removals: every answer is well formed, none fails,
    and the end state equals the truth."""
    import threading
    e = F.engines["sgl"]
    seqs = [F.tokens(6) for _ in range(20)]
    errors, answers = [], [0]
    stop = threading.Event()

    def client(k):
        c = Client(F.daemon.port)
        rng = random.Random(k)
        try:
            while not stop.is_set():
                q = rng.choice(seqs)
                body = {"tokens": q} if k % 2 else {"hashes": fm.router_hashes(q, BS)}
                ans = c.json("POST", "/v1/match", body)
                assert ans["blocks"] == 6 and isinstance(ans["workers"], list), ans
                for w in ans["workers"]:
                    assert w["device"] + w["host"] + w["disk"] <= 6, w
                answers[0] += 1
        except Exception as ex:
            errors.append(ex)
        finally:
            c.close()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        seq = None
        for i in range(200):
            q = seqs[i % len(seqs)]
            ev = [e.stored(q)] if (i // len(seqs)) % 2 == 0 else [e.removed(q)]
            seq = F.publish("sgl", ev)
        F.settle("sgl", 0, seq, timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    assert answers[0] > 0
    for q in seqs:
        F.remember(q)
    F.check_truth()


@scenario
def bad_requests(F):
    """Bad input gets a JSON error with the right status; the daemon survives."""
    h = F.daemon.http
    cases = [
        ("GET", "/nope", None, 404), ("POST", "/v1/workers", b"{}", 405),
        ("GET", "/v1/match", None, 405), ("DELETE", "/v1/snapshot", None, 405),
        ("POST", "/metrics", b"", 405), ("GET", "/v1/match/", None, 404),
        ("POST", "/v1/match", b"", 400), ("POST", "/v1/match", b"not json", 400),
        ("POST", "/v1/match", b"[1, 2]", 400), ("POST", "/v1/match", b"{}", 400),
        ("POST", "/v1/match", b'{"tokens": "abc"}', 400),
        ("POST", "/v1/match", b'{"tokens": [1, -2]}', 400),
        ("POST", "/v1/match", b'{"tokens": [4294967296]}', 400),
        ("POST", "/v1/match", b'{"tokens": [1.5]}', 400),
        ("POST", "/v1/match", b'{"tokens": [true]}', 400),
        ("POST", "/v1/match", b'{"tokens": [1], "block_size": 8}', 400),
        ("POST", "/v1/match", b'{"tokens": [1], "block_size": -16}', 400),
        ("POST", "/v1/match", b'{"tokens": [1], "block_size": "16"}', 400),
        ("POST", "/v1/match", b'{"tokens": [1], "top_k": 0}', 400),
        ("POST", "/v1/match", b'{"tokens": [1], "top_k": -1}', 400),
        ("POST", "/v1/match", b'{"tokens": [1], "top_k": 99999999999}', 400),
        ("POST", "/v1/match", b'{"tokens": [1], "lora_name": 5}', 400),
        ("POST", "/v1/match", b'{"tokens": [1], "cache_salt": []}', 400),
        ("POST", "/v1/match", b'{"tokens": [1], "hashes": [1]}', 400),
        ("POST", "/v1/match", b'{"hashes": [1], "lora_name": "x"}', 400),
        ("POST", "/v1/match", b'{"hashes": [18446744073709551616]}', 400),
        ("POST", "/v1/match", b'{"hashes": [-9223372036854775809]}', 400),
        ("POST", "/v1/match", b'{"hashes": ["18446744073709551616"]}', 400),
        ("POST", "/v1/match", b'{"hashes": ["-1"]}', 400),
        ("POST", "/v1/match", b'{"hashes": [" 1"]}', 400),
        ("POST", "/v1/match", b'{"hashes": ["0x10"]}', 400),
        ("POST", "/v1/match", b'{"hashes": [1e3]}', 400),
        ("POST", "/v1/match", b'{"hashes": [null]}', 400),
        ("POST", "/v1/match", b'{"hashes": {"a": 1}}', 400),
        ("POST", "/v1/match", b'{"hashes": [1], "hashes": [2]}', 400),
        ("POST", "/v1/match", b'{"tokens": [1]', 400),
        ("POST", "/v1/match", b'{"tokens": [1]} trailing', 400),
        ("POST", "/v1/match", b'{"a": "\xff\xfe"}', 400),
        ("POST", "/v1/match", b'{"a": "\\u0000"}', 400),
        ("POST", "/v1/match", b"[" * 100000 + b"]" * 100000, 400),
        ("POST", "/v1/match", os.urandom(4096), 400),
    ]
    for method, path, body, want in cases:
        st, r, data = h.request(method, path, body)
        assert st == want, (method, path, body[:60] if body else body, st, data[:200])
        ans = json.loads(data)
        assert isinstance(ans.get("error"), str) and ans["error"], ans
        assert (r.getheader("Content-Type") or "").startswith("application/json")
        if st == 405:
            assert r.getheader("Allow"), "405 without Allow"
    # bodies over the cap: announced (413 before the body is read) and chunked
    # (read and discarded, then 413)
    import socket
    s = socket.create_connection(("127.0.0.1", F.daemon.port), timeout=10)
    s.sendall(b"POST /v1/match HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{"
              % (9 << 20))
    resp = b""
    while b"\r\n\r\n" not in resp or not resp.rstrip().endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        resp += chunk
    s.close()
    assert resp.startswith(b"HTTP/1.1 413") and b'"error"' in resp, resp[:200]

    s = socket.create_connection(("127.0.0.1", F.daemon.port), timeout=10)
    s.sendall(b"POST /v1/match HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(9):
        s.sendall(b"100000\r\n" + b" " * (1 << 20) + b"\r\n")
    s.sendall(b"0\r\n\r\n")
    resp = b""
    while not resp.rstrip().endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        resp += chunk
    s.close()
    assert resp.startswith(b"HTTP/1.1 413") and b'"error"' in resp, resp[:200]
    # memory across connections: 9 bodies of 8 MiB held at once pass the 64 MiB
    # budget; what does not fit is read, discarded and answered 503 (JSON)
    held = []
    n = (8 << 20) - 16
    for _ in range(9):
        s = socket.create_connection(("127.0.0.1", F.daemon.port), timeout=20)
        s.sendall(b"POST /v1/match HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
        s.sendall(b'{"tokens": [' + b" " * (n - 16))
        held.append(s)
    codes = []
    for s in held:
        s.sendall(b"1]}\n")
        resp = b""
        while not resp.rstrip().endswith(b"}") or b"\r\n\r\n" not in resp:
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
        s.close()
        codes.append(int(resp[9:12]))
        assert b'"' in resp.split(b"\r\n\r\n", 1)[1], resp[:200]
    assert 503 in codes and set(codes) <= {200, 503}, codes
    # a connection that sends half a request and goes away
    s = socket.create_connection(("127.0.0.1", F.daemon.port))
    s.sendall(b"POST /v1/match HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"tok")
    s.close()
    s = socket.create_connection(("127.0.0.1", F.daemon.port))
    s.sendall(b"GARBAGE\r\n\r\n")
    s.recv(4096)
    s.close()
    assert F.daemon.proc.poll() is None, "the daemon died"
    st, _, data = h.request("GET", "/healthz")
    assert st in (200, 503) and "status" in json.loads(data), (st, data)
    F.check_truth(streams=False, hashes=False)


@scenario
def fuzzed_bodies(F):
    """600 seeded mutations of valid /v1/match bodies (byte flips, insertions,
    deletions, truncations, splices): each answered 200 or 400 with JSON, the
    daemon alive afterwards."""
    rng = random.Random(7)
    seeds = [json.dumps({"tokens": F.a2, "block_size": BS, "lora_name": None,
                         "cache_salt": "s", "top_k": 3}).encode(),
             json.dumps({"hashes": fm.router_hashes(F.a2, BS)}).encode(),
             json.dumps({"hashes": [str(h) for h in fm.router_hashes(F.shared, BS)],
                         "top_k": None}).encode()]
    alphabet = b'{}[]",:0123456789-+.eE \\nulltruefalse\x00\xff"'
    codes = {}
    for i in range(600):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            op = rng.randrange(5)
            pos = rng.randrange(len(b) + 1)
            if op == 0 and b:
                b[min(pos, len(b) - 1)] = rng.choice(alphabet)
            elif op == 1:
                b[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 24)))
            elif op == 2:
                del b[pos:pos + rng.randrange(1, 16)]
            elif op == 3:
                b = b[:pos]
            else:
                other = rng.choice(seeds)
                q = rng.randrange(len(other))
                b[pos:pos] = other[q:q + rng.randrange(1, 64)]
        st, r, data = F.daemon.http.request("POST", "/v1/match", bytes(b))
        codes[st] = codes.get(st, 0) + 1
        assert st in (200, 400), (st, bytes(b)[:200], data[:200])
        ans = json.loads(data)
        assert ("error" in ans) == (st == 400), ans
    log(f"fuzzed bodies: {codes}")
    assert F.daemon.proc.poll() is None
    F.check_truth(streams=False, hashes=False)


PROM_LINE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
    r'[-+]?([0-9.]+([eE][-+]?[0-9]+)?|Inf|NaN)$')


@scenario
def metrics(F):
    """/metrics is Prometheus text: every sample line parses; the HTTP counters,
    the latency histogram and the index's metrics are there."""
    st, r, data = F.daemon.http.request("GET", "/metrics")
    assert st == 200 and (r.getheader("Content-Type") or "").startswith("text/plain"), st
    text = data.decode()
    samples = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            assert not ln or ln.startswith("# HELP ") or ln.startswith("# TYPE "), ln
            continue
        assert PROM_LINE.match(ln), f"not a Prometheus sample: {ln!r}"
        name, value = ln.rsplit(" ", 1)
        samples[name] = float(value)
    def count(code, endpoint="/v1/match"):
        return samples.get(f'kvb_http_requests_total{{endpoint="{endpoint}",code="{code}"}}', 0)
    assert samples.get('kvb_http_request_duration_seconds_count{endpoint="/v1/match"}', 0) >= \
        count(200) + count(400)
    assert samples.get('kvb_http_request_duration_seconds_bucket{endpoint="/v1/match",'
                       'le="+Inf"}', -1) == \
        samples.get('kvb_http_request_duration_seconds_count{endpoint="/v1/match"}', -2)
    # the counters move: one more 200 and one more 400
    m200, m400 = count(200), count(400)
    F.daemon.match(hashes=[1])
    F.daemon.http.request("POST", "/v1/match", b"{")
    text = F.daemon.http.request("GET", "/metrics")[2].decode()
    samples = dict(ln.rsplit(" ", 1) for ln in text.splitlines() if ln and ln[0] != "#")
    samples = {k: float(v) for k, v in samples.items()}
    assert (count(200), count(400)) == (m200 + 1, m400 + 1), (m200, m400)
    assert any(k.startswith("kvblock_index_") for k in samples), "no index metrics"
    assert any(k.startswith("kvb_subscriber_messages_total") for k in samples)


@scenario
def snapshot_and_restart(F):
    """POST /v1/snapshot, SIGTERM (exit 0, snapshot written), restart from the
    snapshot: the same answers before any publisher speaks; then it resumes."""
    d = F.daemon
    ans = d.http.json("POST", "/v1/snapshot")
    assert ans["path"] == F.snapshot and ans["bytes"] == os.path.getsize(F.snapshot), ans
    before = [d.match(tokens=q.tokens, lora_name=q.lora) for q in F.queries]
    kvb_hashes = sorted(F.model.stream("kvb", -1).tiers[fm.DEVICE])[:200]
    kvb_before = [d.match(hashes=[h]) for h in kvb_hashes]
    w_before = {(s["worker"], s["dp_rank"]): s for s in d.workers()["workers"]}
    os.unlink(F.snapshot)  # SIGTERM must write it again
    rc = d.stop(signal.SIGTERM)
    assert rc == 0, f"exit status {rc} after SIGTERM: {d.log_text()}"
    assert os.path.exists(F.snapshot) and "written" in d.log_text(), d.log_text()
    F.daemon = Daemon(F, F.daemon_args)
    assert "loaded" in F.daemon.log_text(), F.daemon.log_text()
    after = [F.daemon.match(tokens=q.tokens, lora_name=q.lora) for q in F.queries]
    assert after == before, "answers differ after the restart from the snapshot"
    assert [F.daemon.match(hashes=[h]) for h in kvb_hashes] == kvb_before
    for s in F.daemon.workers()["workers"]:
        b = w_before[(s["worker"], s["dp_rank"])]
        assert (s["last_seq"], s["entries"]) == (b["last_seq"], b["entries"]), (b, s)
    F.check_truth()
    # the streams resume from the watermarks
    e = F.engines["vmap"]
    seq = F.publish("vmap", [e.stored(F.remember(F.tokens(2)))])
    F.settle("vmap", 0, seq)
    seq = F.publish("vnorep", [F.engines["vnorep"].stored(F.remember(F.tokens(2)))])
    F.settle("vnorep", 0, seq)
    F.check_truth()


@scenario
def corrupt_snapshot_refused(F):
    """A corrupt, truncated, bit-flipped or empty snapshot: exit 1 with a clear
    message, nothing served, the file left as it was."""
    src = open(F.snapshot, "rb").read()
    flipped = bytearray(src)
    flipped[len(src) // 2] ^= 0x10
    for what, data in (("truncated", src[:len(src) // 2]), ("bit-flipped", bytes(flipped)),
                       ("random", os.urandom(4096)), ("empty", b"")):
        path = os.path.join(F.tmp, f"{what}.snap")
        with open(path, "wb") as f:
            f.write(data)
        d = Daemon(F, ["--snapshot", path, "--worker", f"x=ipc://{F.tmp}/nobody"],
                   expect_start=False)
        try:
            rc = d.proc.wait(15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{what} snapshot: the daemon started: {d.log_text()}")
        text = d.log_text()
        assert rc == 1, f"{what} snapshot: exit status {rc}: {text}"
        assert path in text and "refusing" in text and "listening" not in text, text
        assert open(path, "rb").read() == data, f"{what} snapshot was modified"
    # a snapshot that could never be written is refused at start, not at shutdown
    rc, _, err = run_cli(F, ["--listen", "127.0.0.1:0", "--snapshot",
                             os.path.join(F.tmp, "no", "such", "dir.snap")])
    assert rc == 1 and "not writable" in err, (rc, err)


def run_cli(F, args, timeout=10):
    p = subprocess.run([F.indexer, *args], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


@scenario
def flags_and_help(F):
    """--help is a manual; bad usage exits 2 with a message; --redis without --role
    and --role without --redis exit 2."""
    rc, out, _ = run_cli(F, ["--help"])
    assert rc == 0, rc
    for sec in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENDPOINTS", "EXAMPLES",
                "EXIT STATUS"):
        assert re.search(rf"^{sec}$", out, re.M), f"--help lacks {sec}"
    for flag in ("--listen", "--worker", "--config", "--block-size", "--seed", "--snapshot",
                 "--stale-after", "--drop-after", "two's", "decimal string"):
        assert flag in out, f"--help does not mention {flag}"
    rc, out, _ = run_cli(F, ["-h"])
    assert rc == 0 and "SYNOPSIS" in out
    bad = [["--bogus"], ["--block-size", "3"], ["--block-size", "2048"], ["--block-size", "x"],
           ["--seed", "-1"], ["--seed", "18446744073709551616"], ["--listen", "nohost"],
           ["--listen", "127.0.0.1:70000"], ["--stale-after", "0"], ["--stale-after", "x"],
           ["--drop-after", "-3"], ["--stale-after", "10", "--drop-after", "5"],
           ["--worker", "noequals"], ["--worker", "=tcp://h:1"], ["--worker", "w=notanendpoint"],
           ["--worker", "w=tcp://h:1,kind=other"], ["--worker", "w=tcp://h:1,block-size=3"],
           ["--worker", "w=tcp://h:1,block-size=32"], ["--worker", "w=tcp://h:1,color=red"],
           ["--worker", "w=tcp://h:1", "--worker", "w=tcp://h:2"],
           ["--worker", "w" * 64 + "=tcp://h:1"], ["--redis", "redis://127.0.0.1:6379"],
           ["--role", "relay"], ["--role", "replica"], ["--listen"], ["positional"],
           ["--config", os.path.join(F.tmp, "missing.conf")]]
    for args in bad:
        rc, out, err = run_cli(F, args)
        assert rc == 2, f"{args}: exit {rc} (wanted 2): {err}"
        assert err.strip() and "kvb-indexer" in err, (args, err)
    # --redis and --role go together (test_indexer_redis.py runs them)
    rc, _, err = run_cli(F, ["--redis", "redis://127.0.0.1:1"])
    assert rc == 2 and "needs --role" in err, (rc, err)
    rc, _, err = run_cli(F, ["--role", "replica"])
    assert rc == 2 and "needs --redis" in err, (rc, err)
    # an address in use: a runtime error (1), never a second daemon on the port
    rc, _, err = run_cli(F, ["--listen", f"127.0.0.1:{F.daemon.port}"])
    assert rc == 1 and "cannot listen" in err, (rc, err)


@scenario
def config_file(F):
    """--config: `name value` and `--name value` lines, comments; the command line
    applies after the file (its --listen wins, workers accumulate)."""
    t = F.tmp
    conf = os.path.join(t, "indexer.conf")
    with open(conf, "w") as f:
        f.write(f"# a fleet\n\nlisten 127.0.0.1:1\n--block-size 16   # comment\n"
                f"worker fa=ipc://{t}/fa.pub,kind=kvblock,topic=kv\n"
                f"  --worker fb=tcp://127.0.0.1:1,replay=tcp://127.0.0.1:2\n"
                f"stale-after 5\n")
    d = Daemon(F, ["--config", conf, "--worker", f"fc=ipc://{t}/fc.pub"])
    try:
        eps = {e["name"]: e for e in d.workers()["endpoints"]}
        assert sorted(eps) == ["fa", "fb", "fc"], eps
        assert eps["fa"]["kind"] == "kvblock" and eps["fa"]["topic"] == "kv", eps["fa"]
        assert eps["fb"]["replay"] == "tcp://127.0.0.1:2" and eps["fb"]["kind"] == "vllm"
        st, _, _ = d.http.request("GET", "/healthz")
        assert st == 503, st
    finally:
        rc = d.stop(signal.SIGINT)
    assert rc == 0, f"exit status {rc} after SIGINT"
    for text, why in (("bogus 1\n", "unknown option"), ("worker\n", "needs a value"),
                      ("config other.conf\n", "unknown option"), ("help x\n", "unknown")):
        with open(conf, "w") as f:
            f.write(text)
        rc, _, err = run_cli(F, ["--config", conf])
        assert rc == 2 and f"{conf}:1" in err and why in err, (text, rc, err)


@scenario
def sigterm_exit_zero(F):
    """SIGTERM with a request in flight (headers in, half its body sent): new
    connections are refused at once, the request in flight is answered in full,
    the snapshot is written, exit status 0."""
    import socket
    d = F.daemon
    if os.path.exists(F.snapshot):
        os.unlink(F.snapshot)
    body = json.dumps({"tokens": F.shared}).encode()
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.sendall(b"POST /v1/match HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body))
    resp = b""
    while b"\r\n\r\n" not in resp:  # "100 Continue": the daemon holds the request
        chunk = s.recv(4096)
        assert chunk, "connection closed before 100 Continue"
        resp += chunk
    assert resp.startswith(b"HTTP/1.1 100"), resp
    s.sendall(body[:10])
    d.proc.send_signal(signal.SIGTERM)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", d.port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            # queued on the listening socket just before the daemon closed it: not
            # refused yet, ask again (only ECONNREFUSED counts)
            return False
    wait_for(refused, 5, "new connections to be refused after SIGTERM")
    s.sendall(body[10:])
    resp = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        resp += chunk
        head, _, rest = resp.partition(b"\r\n\r\n")
        m = re.search(rb"Content-Length: (\d+)", head, re.I)
        if m and len(rest) >= int(m.group(1)):
            break
    s.close()
    head, _, rest = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), resp[:300]
    want = F.model.match(fm.router_hashes(F.shared, BS))
    assert fm.same_answer(json.loads(rest)["workers"], want), (rest, want)
    rc = d.stop(signal.SIGTERM)
    assert rc == 0, (rc, d.log_text())
    assert os.path.getsize(F.snapshot) > 0 and "written" in d.log_text(), d.log_text()


# ---- main ----------------------------------------------------------------------------

def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description="kvb-indexer end-to-end tests")
    ap.add_argument("--build", default=os.environ.get("KVB_BUILD", "build"))
    ap.add_argument("--only", help="comma-separated scenario names (start_fleet always runs)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    VERBOSE = a.verbose
    only = set(a.only.split(",")) if a.only else None
    tmp = tempfile.mkdtemp(prefix="kvb-indexer-test-")
    F = Fleet(a.build, tmp)
    passed = failed = 0
    t_all = time.monotonic()
    try:
        for fn in SCENARIOS:
            if only and fn.__name__ not in only and fn is not start_fleet:
                continue
            t0 = time.monotonic()
            try:
                fn(F)
                passed += 1
                print(f"  ok    {fn.__name__} ({time.monotonic() - t0:.2f} s)", flush=True)
            except Exception as e:
                failed += 1
                print(f"  FAIL  {fn.__name__} ({time.monotonic() - t0:.2f} s): {e}", flush=True)
                if VERBOSE or not isinstance(e, AssertionError):
                    traceback.print_exc()
                if F.daemon is not None and VERBOSE:
                    print(F.daemon.log_text()[-3000:])
                if fn is start_fleet:
                    break
    finally:
        F.close()
        if failed and F.daemon is not None:
            print("---- daemon log (tail) ----")
            print(F.daemon.log_text()[-2000:])
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"check-indexer: {time.monotonic() - t_all:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
