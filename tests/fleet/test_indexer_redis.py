#!/usr/bin/python3
"""End-to-end tests of kvb-indexer --redis URL --role relay|replica (FLEET.md
section 8): its own redis-server (free loopback port, temporary directory, AOF
on), vllm_pub.py publishers in process, and kvb-indexer child processes: two
relays (one active, one standby: the same command) and two replicas. After
every step both replicas' /v1/match answers equal the active relay's and the
truth (fleet_model.py), and every stream's entries and last_seq equal the
truth's on every node (nothing lost, doubled or stale).

Scenarios, in order (each starts from the state the previous one left):
  setup            relay A active, relay B standby (/healthz 503 "standby",
                   /v1/match 503), replicas P1, P2 synced; flags of section 8
                   (exit 2 on bad combinations)
  relay_kill       kill -9 of the active relay while a publisher streams: the
                   standby takes over within a few seconds (resuming every worker
                   by replay), answers converge; a new standby C is started
  replica_cold     two snapshots (POST /v1/snapshot on the active relay), kill -9
                   of replica P1, a cold start of replica P3 (snapshot + tail)
  redis_stop       SIGSTOP of redis-server past the lease while publishing: both
                   replicas keep answering with every stream "lagging" in
                   /v1/workers (and healthz 200 "lagging"); SIGCONT: converge to
                   live (a relay fenced meanwhile exits 3 and is restarted)
  split_brain      SIGSTOP of the active relay past its lease while publishing:
                   the standby takes over; SIGCONT: the woken relay exits with
                   status 3 (FENCED); the streams (XRANGE over a raw socket) hold
                   no entry of its incarnation after the new incarnation's first
  sigterm          SIGTERM of every node: exit 0

Every wait is a deadline-bounded poll; every child (and redis-server) is killed
at the end, even on failure. About 40 s on a quiet 2-vCPU machine.

usage: test_indexer_redis.py [--build DIR] [--redis-server PATH] [-v]   (prints "N passed, M failed")
"""
import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import msgpack  # noqa: F401
    import xxhash  # noqa: F401
    import zmq  # noqa: F401
except ImportError as e:
    print(f"check-indexer-redis: SKIPPED ({e}: apt-get install python3-zmq python3-msgpack "
          "python3-xxhash)")
    sys.exit(0)

import fleet_model as fm  # noqa: E402
import test_indexer as ti  # noqa: E402  (Daemon, Client, wait_for)
import vllm_pub as vp  # noqa: E402

BS = 16
LEASE_S = 2.0  # the relay's lease (FLEET.md section 8)
VERBOSE = False
REDIS_SERVER = "redis-server"


def log(msg):
    if VERBOSE:
        print(f"    {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a raw RESP client (the test reads the streams without the library) -------------

class Resp:
    def __init__(self, port, timeout=5):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"bad RESP line {line!r}")

    def close(self):
        self.f.close()
        self.s.close()


def read_streams(port, prefix="kvb:"):
    """{worker: [(id as a tuple, fields dict without the batch)]} of every stream."""
    r = Resp(port)
    try:
        keys, cursor = [], b"0"
        while True:
            cursor, batch = r.cmd("SCAN", cursor, "MATCH", prefix + "stream:*", "COUNT", 1000)
            keys += batch
            if cursor == b"0":
                break
        out = {}
        for k in keys:
            ents = []
            for eid, flat in r.cmd("XRANGE", k, "-", "+"):
                f = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
                f.pop("batch", None)
                ents.append((tuple(int(x) for x in eid.split(b"-")),
                             {a: int(b) for a, b in f.items()}))
            out[k.decode()[len(prefix) + len("stream:"):]] = ents
        return out
    finally:
        r.close()


# ---- the cluster ----------------------------------------------------------------------

class Ctx:
    """What test_indexer.Daemon needs (tmp, children, indexer) plus the fleet."""

    def __init__(self, build, tmp):
        self.tmp = tmp
        self.indexer = os.path.join(build, "tools", "kvb-indexer")
        if not os.access(self.indexer, os.X_OK):
            raise SystemExit(f"check-indexer-redis: {self.indexer} not built")
        self.children = []
        self.redis = None
        self.redis_port = free_port()
        self.pubs, self.engines = {}, {}
        self.model = fm.Model(BS)
        self.rng = random.Random(20250101)
        self.queries = []
        self.stored = {}  # (worker, rank) -> [tokens] still stored (for removals)
        self.last_seq = {}  # (worker, rank) -> last seq published on that rank
        self.lock = threading.Lock()
        self.relays, self.replicas = [], []
        self.worker_args = []

    # -- redis-server
    def start_redis(self):
        d = os.path.join(self.tmp, "redis")
        os.makedirs(d, exist_ok=True)
        logf = open(os.path.join(self.tmp, "redis-server.log"), "a")
        self.redis = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", d,
             "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "no"],
            stdout=logf, stderr=logf)
        self.children.append(self.redis)

        def up():
            try:
                r = Resp(self.redis_port, 0.5)
                try:
                    return r.cmd("PING") == b"PONG"
                finally:
                    r.close()
            except OSError:
                assert self.redis.poll() is None, "redis-server exited"
                return False
        ti.wait_for(up, 10, "redis-server to answer PING")

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.redis_port}"

    # -- nodes
    def relay(self, name):
        d = ti.Daemon(self, ["--redis", self.url, "--role", "relay", *self.worker_args,
                             "--snapshot-every-batches", "0", "--snapshot-every", "0"])
        d.name = name
        self.relays.append(d)
        log(f"relay {name}: pid {d.proc.pid}, port {d.port}")
        return d

    def replica(self, name):
        d = ti.Daemon(self, ["--redis", self.url, "--role", "replica"])
        d.name = name
        self.replicas.append(d)
        log(f"replica {name}: pid {d.proc.pid}, port {d.port}")
        return d

    def alive(self, nodes):
        return [d for d in nodes if d.proc.poll() is None]

    def relay_state(self, d):
        """The relay's state; "gone" when it does not answer (exited, exiting)."""
        if d.proc.poll() is not None:
            return "gone"
        try:
            return d.workers()["relay"]["state"]
        except (OSError, ConnectionError):
            return "gone"

    def active_relay(self, timeout=10):
        def one():
            act = [d for d in self.alive(self.relays) if self.relay_state(d) == "active"]
            assert len(act) <= 1, f"{len(act)} active relays"
            return act[0] if act else None
        return ti.wait_for(one, timeout, "an active relay")

    # -- publishing (any thread; the model is updated under the lock)
    def tokens(self, n_blocks, partial=0):
        return [self.rng.randrange(1, 60000) for _ in range(n_blocks * BS + partial)]

    def publish_one(self, name, rank):
        """One batch on (name, rank): a new sequence stored on device or host, or the
        tail of an older one removed (so a batch applied twice would leave a stale
        copy behind), or both."""
        with self.lock:
            eng = self.engines[name]
            held = self.stored.setdefault((name, rank), [])
            events = []
            if held and self.rng.random() < 0.4:
                toks, medium = held.pop(self.rng.randrange(len(held)))
                nb = len(toks) // BS
                first = self.rng.randrange(nb)
                events.append(eng.removed(toks, first, medium=medium))
                if first > 0:
                    held.append((toks[:first * BS], medium))
            if not events or self.rng.random() < 0.7:
                toks = self.tokens(self.rng.randrange(2, 7), self.rng.randrange(0, 5))
                medium = self.rng.choice(["GPU", "GPU", "CPU"])
                events.append(eng.stored(toks, medium=medium))
                held.append((toks, medium))
                if len(self.queries) < 4000:
                    self.queries.append(toks)
                    self.queries.append(toks[:BS + 3])
            seq = self.pubs[name].publish(events, rank)
            self.model.apply_batch(name, rank, events)
            self.last_seq[(name, rank)] = seq
            return seq

    def publish_some(self, n):
        keys = [("wa", 0), ("wb", 0), ("wb", 1)]
        for i in range(n):
            self.publish_one(*keys[i % len(keys)])

    def stream_publisher(self, n, rate):
        """A thread publishing n batches at about rate per second."""
        def run():
            for _ in range(n):
                self.publish_some(1)
                time.sleep(1.0 / rate)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    # -- checks
    def sample_queries(self, k=40):
        with self.lock:
            qs = list(self.queries)
        if len(qs) <= 2 * k:
            return qs
        return qs[-k:] + random.Random(len(qs)).sample(qs[:-k], k)

    def node_state(self, d):
        """(stream -> (entries, last_seq, state)) of one node."""
        out = {}
        for s in d.workers()["workers"]:
            key = (s["worker"], -1 if s["dp_rank"] is None else s["dp_rank"])
            out[key] = (s["entries"], s["last_seq"], s["state"])
        return out

    def check_node(self, d, queries, states=("live",)):
        """d's streams and answers equal the truth."""
        with self.lock:
            want_streams = {k: (st.entries(), self.last_seq.get(k))
                            for k, st in self.model.streams.items()}
        got = self.node_state(d)
        for k, (n, seq) in want_streams.items():
            assert k in got, f"{d.name}: no stream {k}"
            assert got[k][:2] == (n, seq), \
                f"{d.name}: stream {k}: entries/last_seq {got[k][:2]}, truth {(n, seq)}"
            assert got[k][2] in states, f"{d.name}: stream {k} is {got[k][2]}, wanted {states}"
        for toks in queries:
            with self.lock:
                want = self.model.match(fm.router_hashes(toks, BS))
            ans = d.match(tokens=toks)
            assert fm.same_answer(ans["workers"], want), \
                f"{d.name}: {len(toks) // BS} blocks answered {ans['workers']}, truth {want}"

    def converge(self, nodes, what, timeout=25, states=("live",)):
        """Every node equals the truth (and so each other) within the deadline."""
        qs = self.sample_queries()
        t0 = time.monotonic()

        def ok():
            for d in nodes:
                self.check_node(d, qs, states)
            return True
        ti.wait_for(ok, timeout, f"{', '.join(d.name for d in nodes)} to equal the truth "
                                 f"({what})")
        # the relay's and the replicas' answers, all queries, once more side by side
        ref = nodes[0]
        for toks in qs:
            a = ref.match(tokens=toks)
            for d in nodes[1:]:
                b = d.match(tokens=toks)
                assert a == b, f"{d.name} answers {b}, {ref.name} answers {a}"
        log(f"converged ({what}) in {time.monotonic() - t0:.2f} s: "
            f"{', '.join(d.name for d in nodes)}, {len(qs)} queries")

    def close(self):
        for p in self.pubs.values():
            try:
                p.close()
            except Exception:
                pass
        for c in self.children:
            if c.poll() is None:
                try:
                    c.send_signal(signal.SIGCONT)
                    c.kill()
                except OSError:
                    pass
        for c in self.children:
            try:
                c.wait(5)
            except Exception:
                pass


# ---- scenarios ----------------------------------------------------------------------

SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


@scenario
def setup(C):
    """Flags; publishers; relay A (active), B (standby), replicas P1, P2."""
    bad = [["--redis", C.url], ["--role", "relay"], ["--role", "replica"],
           ["--redis", C.url, "--role", "replica", "--worker", "w=tcp://127.0.0.1:1"],
           ["--redis", C.url, "--role", "relay"],
           ["--redis", C.url, "--role", "relay", "--worker", "w=tcp://127.0.0.1:1",
            "--snapshot", os.path.join(C.tmp, "x.snap")],
           ["--redis", C.url, "--role", "replica", "--snapshot-every", "5"],
           ["--snapshot-every-batches", "5"], ["--redis", "http://x", "--role", "replica"],
           ["--redis", C.url, "--role", "leader"]]
    for args in bad:
        p = subprocess.run([C.indexer, *args], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=10)
        assert p.returncode == 2, f"{args}: exit {p.returncode} (wanted 2): {p.stderr}"
        assert "kvb-indexer" in p.stderr, (args, p.stderr)
    out = subprocess.run([C.indexer, "--help"], capture_output=True, text=True).stdout
    for s in ("--redis", "--role", "--snapshot-every-batches", "--snapshot-every",
              "--redis-prefix", "replica", "standby", "fenced", "lag_ms"):
        assert s in out, f"--help does not mention {s}"

    t = C.tmp
    C.pubs["wa"] = vp.Publisher("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", layout="map")
    C.engines["wa"] = vp.FakeEngine(BS, "u64", b"a")
    C.pubs["wb"] = vp.Publisher(f"ipc://{t}/wb.pub", f"ipc://{t}/wb.rep", layout="array")
    C.engines["wb"] = vp.FakeEngine(BS, "bytes", b"b")
    for n in ("wa", "wb"):
        C.model.add_worker(n, "vllm")
        p = C.pubs[n]
        C.worker_args += ["--worker", f"{n}={p.pub},replay={p.replay}"]
    C.start_redis()
    C.publish_some(6)  # before any relay: caught up by replay at the first subscription
    a = C.relay("A")
    ti.wait_for(lambda: C.relay_state(a) == "active", 10, "relay A to take the lease")
    b = C.relay("B")
    st, _, body = b.http.request("GET", "/healthz")
    assert st == 503 and b"standby" in body, (st, body)
    st, _, body = b.http.request("POST", "/v1/match", b'{"hashes": [1]}')
    assert st == 503, (st, body)
    ti.wait_for(lambda: a.http.request("GET", "/healthz")[0] == 200, 10, "relay A healthy")
    C.replica("P1")
    C.replica("P2")
    for d in C.replicas:
        ti.wait_for(lambda: d.http.request("GET", "/healthz")[0] == 200, 10,
                    f"{d.name} healthy")
    C.publish_some(12)
    C.converge([a] + C.replicas, "setup")
    assert C.relay_state(b) == "standby", C.relay_state(b)
    m = a.http.request("GET", "/metrics")[2].decode()
    assert 'kvb_redis_relay_state{state="active"} 1' in m, m[-2000:]
    m = C.replicas[0].http.request("GET", "/metrics")[2].decode()
    assert "kvb_redis_replica_applied_total" in m, m[-2000:]
    w = C.replicas[0].workers()
    assert w["replica"]["state"] == "synced" and w["endpoints"] == [], w
    assert all("lag_entries" in s and "lag_ms" in s for s in w["workers"]), w


@scenario
def relay_kill(C):
    """kill -9 of the active relay mid-stream: the standby takes over, nothing lost,
    doubled or stale."""
    a = C.active_relay()
    b = [d for d in C.alive(C.relays) if d is not a][0]
    pub = C.stream_publisher(120, 60)
    time.sleep(0.5)
    a.proc.kill()
    a.proc.wait(5)
    t0 = time.monotonic()
    ti.wait_for(lambda: C.relay_state(b) == "active", 3 * LEASE_S + 6,
                "the standby to take over")
    took = time.monotonic() - t0
    pub.join(30)
    C.publish_some(6)  # removals after the takeover: a doubled store would show
    C.converge([b] + C.replicas, "after the relay's kill -9")
    rs = b.workers()["relay"]
    print(f"        standby B active {took:.2f} s after the kill (incarnation {rs['inc']}, "
          f"catch-up {rs['takeover_ms']:.1f} ms)", flush=True)
    assert took < 3 * LEASE_S + 4, f"takeover took {took:.1f} s"
    C.relay("C")  # the supervisor's restart: a new standby
    time.sleep(0.3)
    assert C.relay_state(C.relays[-1]) == "standby"


@scenario
def replica_cold(C):
    """Two snapshots, kill -9 of replica P1, cold start of P3 (snapshot + tail)."""
    act = C.active_relay()
    C.publish_some(9)
    ti.wait_for(lambda: act.http.json("POST", "/v1/snapshot")["bytes"] > 0, 10, "a snapshot")
    C.publish_some(9)
    snap = act.http.json("POST", "/v1/snapshot")
    assert snap["path"] == "kvb:snapshot" and snap["bytes"] > 0, snap
    C.publish_some(6)
    p1 = C.replicas[0]
    p1.proc.kill()
    p1.proc.wait(5)
    C.replicas.remove(p1)
    p3 = C.replica("P3")
    ti.wait_for(lambda: p3.http.request("GET", "/healthz")[0] == 200, 15, "P3 healthy")
    C.publish_some(6)
    C.converge([act] + C.replicas, "after a replica's cold start")
    rep = p3.workers()["replica"]
    assert rep["snapshot_loads"] >= 1, rep
    log(f"P3: snapshot of {rep['snapshot_bytes']} bytes, {rep['applied']} entries applied")


@scenario
def redis_stop(C):
    """SIGSTOP of redis-server past the lease: replicas serve, streams lagging;
    SIGCONT: back to live and equal."""
    act = C.active_relay()
    C.converge([act] + C.replicas, "before SIGSTOP")
    qs = C.sample_queries()
    C.redis.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        C.publish_some(6)  # the relay accepts and queues them meanwhile
        for d in C.replicas:
            def lagging():
                w = d.workers()
                return w["replica"]["state"] == "lagging" and w["workers"] and \
                    all(s["state"] == "lagging" for s in w["workers"])
            ti.wait_for(lagging, LEASE_S + 8, f"{d.name} to report lagging streams")
            st, _, body = d.http.request("GET", "/healthz")
            assert st == 200 and b"lagging" in body, (st, body)
        # still answering from memory (what it held before the stop: the truth then)
        for d in C.replicas:
            for toks in qs[:10]:
                d.match(tokens=toks)
        left = LEASE_S + 0.5 - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)
        held = time.monotonic() - t0
    finally:
        C.redis.send_signal(signal.SIGCONT)
    C.publish_some(6)
    # a relay fenced meanwhile exits 3; the supervisor restarts it as a standby
    act = C.active_relay(3 * LEASE_S + 8)
    for d in list(C.relays):
        if d is not act and d.proc.poll() is None:
            ti.wait_for(lambda: C.relay_state(d) in ("standby", "gone"), 10,
                        f"{d.name} to stand by or exit")
            if C.relay_state(d) == "gone":
                try:
                    d.proc.wait(10)
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"{d.name} did not exit: {d.log_text()[-1500:]}")
    for d in list(C.relays):
        if d.proc.poll() is not None and d.proc.returncode != -9:
            assert d.proc.returncode == 3, f"{d.name} exited {d.proc.returncode}"
            C.relays.remove(d)
            log(f"relay {d.name} was fenced (exit 3): restarted")
            C.relay(d.name + "'")
    C.converge([act] + C.replicas, "after SIGCONT of redis-server", timeout=30)
    print(f"        redis-server stopped {held:.1f} s: replicas answered, every stream lagging; "
          f"active relay now {act.name}", flush=True)


@scenario
def split_brain(C):
    """SIGSTOP of the active relay past its lease: the standby takes over; the woken
    relay is fenced (exit 3) and appended nothing after the new incarnation."""
    a = C.active_relay()
    a_inc = a.workers()["relay"]["inc"]
    b = [d for d in C.alive(C.relays) if d is not a][0]
    a.http.close()
    pub = C.stream_publisher(90, 40)
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        ti.wait_for(lambda: C.relay_state(b) == "active", 3 * LEASE_S + 6,
                    "the standby to take over")
        took = time.monotonic() - t0
        b_inc = b.workers()["relay"]["inc"]
        pub.join(30)
        ti.wait_for(lambda: b.workers()["relay"]["queued"] == 0, 10, "B to append")
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    try:
        rc = a.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the woken relay did not exit: {a.log_text()[-1500:]}")
    assert rc == 3, f"woken relay exited {rc} (wanted 3, FENCED): {a.log_text()[-1500:]}"
    assert "FENCED" in a.log_text(), a.log_text()[-1500:]
    C.relays.remove(a)
    C.publish_some(6)
    C.converge([b] + C.replicas, "after the split-brain attempt")
    streams = read_streams(C.redis_port)
    late = a_n = b_n = 0
    for w, ents in streams.items():
        seen_new = False
        for eid, f in ents:
            if f["inc"] >= b_inc:
                seen_new = True
                b_n += f["inc"] == b_inc
            elif seen_new:
                late += 1
            a_n += f["inc"] == a_inc
    assert b_n > 0, f"no entry of the new incarnation {b_inc} in the streams"
    assert late == 0, f"{late} entries of an older incarnation after the new one's first"
    print(f"        relay stopped past its lease: standby active after {took:.2f} s "
          f"(incarnation {a_inc} -> {b_inc}); woken relay exited 3 (FENCED); streams: {a_n} "
          f"entries of {a_inc}, {b_n} of {b_inc}, none of the old after the new", flush=True)


@scenario
def sigterm(C):
    """SIGTERM: every node exits 0."""
    for d in C.alive(C.replicas) + C.alive(C.relays):
        rc = d.stop(signal.SIGTERM, 15)
        assert rc == 0, f"{d.name} exited {rc}: {d.log_text()[-1500:]}"


def main():
    global VERBOSE, REDIS_SERVER
    ap = argparse.ArgumentParser(description="kvb-indexer --redis end-to-end tests")
    ap.add_argument("--build", default=os.environ.get("KVB_BUILD", "build"))
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    VERBOSE = a.verbose
    REDIS_SERVER = a.redis_server
    if not shutil.which(REDIS_SERVER):
        print("check-indexer-redis: SKIPPED (redis-server not found: apt-get install "
              "redis-server)")
        return 0
    tmp = tempfile.mkdtemp(prefix="kvb-indexer-redis-")
    C = Ctx(a.build, tmp)
    passed = failed = 0
    t_all = time.monotonic()
    try:
        for fn in SCENARIOS:
            t0 = time.monotonic()
            try:
                fn(C)
                passed += 1
                print(f"  ok    {fn.__name__} ({time.monotonic() - t0:.2f} s)", flush=True)
            except Exception as e:
                failed += 1
                print(f"  FAIL  {fn.__name__} ({time.monotonic() - t0:.2f} s): {e}", flush=True)
                if VERBOSE or not isinstance(e, AssertionError):
                    traceback.print_exc()
                for d in C.relays + C.replicas:
                    print(f"---- {d.name} log (tail) ----")
                    print(d.log_text()[-1500:])
                break  # every scenario builds on the previous one
    finally:
        C.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"check-indexer-redis: {time.monotonic() - t_all:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
