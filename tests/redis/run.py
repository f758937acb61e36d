#!/usr/bin/env python3
"""End-to-end fault scenarios of the Redis replica setup (FLEET.md section 8).

Every scenario starts its own redis-server (a free loopback port, a temporary
directory, --appendonly yes --save ''), three scripted vLLM-format publishers
(tests/redis/publisher.py: worker w0 with dp ranks 0 and 1, w1 without a rank,
w2 with rank 0), two relays (kvb-redis-node relay: the first takes the lease,
the second is a standby running the very same command) and two replicas
(kvb-redis-node replica), all as processes. Publishers run while the fault is
injected; afterwards the harness waits (bounded) until every node has applied
each rank's last batch, then checks:

  - nothing lost, nothing doubled: each stream's batch count and last sequence
    equal the publisher's (a batch applied twice or skipped shows here);
  - no stale entry, nothing missing: for every hash any publisher ever used,
    the holders each node's prefix match reports (worker/rank/best tier) equal
    the publisher's final state (a REMOVED applied twice, skipped, or a clear
    not applied shows here), on the active relay and on every replica;
  - the streams themselves (kvb-redis-node dump): per stream, ordinals n
    contiguous, positions strictly increasing, no entry of an incarnation older
    than one already seen.

Scenarios:
  1 kill -9 of the active relay mid-stream: the standby takes the lease within
    3 s of its lapse and resumes from the streams' last sequences by replay.
  2 kill -9 of a replica, and a cold start of a new one (snapshot + tail) while
    the fleet publishes; snapshots and trims happen meanwhile.
  3 redis-server killed (-9) mid-stream and restarted from its AOF.
  4 SIGSTOP of redis-server past the lease: replicas keep answering, their
    streams LAGGING; SIGCONT: everything converges.
  5 SIGSTOP of the active relay past its lease (split brain attempt): the
    standby takes over; after SIGCONT the woken relay must not append: no
    entry of its incarnation after the standby's first entry, in any stream.

Every wait has a deadline; a failure prints the nodes' logs and exits 1.
"""
import argparse
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
LEASE_S = 2.0
TAKEOVER_LIMIT_S = 20.0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fail(Exception):
    pass


def deadline_loop(timeout, what, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        yield
        time.sleep(step)
    raise Fail("timed out (%.0f s) waiting for %s" % (timeout, what))


class Proc:
    """A child with line-oriented stdin/stdout; stderr goes to a log file."""

    def __init__(self, name, argv, logdir):
        self.name = name
        self.log = os.path.join(logdir, name + ".log")
        self.logf = open(self.log, "w")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.logf, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def readline(self, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise Fail("%s: no answer within %.0f s" % (self.name, timeout))

    def alive(self):
        return self.p.poll() is None

    def kill9(self):
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=10)

    def stop(self, timeout=10):
        if self.alive():
            try:
                self.send("quit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.logf.close()


class Node(Proc):
    def cmd(self, line, timeout=20):
        self.send(line)
        while True:
            out = self.readline(timeout)
            if out is None:
                raise Fail("%s exited (see %s)" % (self.name, self.log))
            try:
                return json.loads(out)
            except ValueError:
                continue

    def state(self):
        return self.cmd("state")

    def role_state(self):
        s = self.state()
        return (s.get("relay") or s.get("replica"))["state"], s


class Redis:
    def __init__(self, binary, workdir):
        self.binary = binary
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.p = None
        self.logf = open(os.path.join(workdir, "redis-server.log"), "a")

    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def start(self):
        self.p = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "no"],
            stdout=self.logf, stderr=self.logf)
        for _ in deadline_loop(10, "redis-server to listen"):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.p.poll() is not None:
                raise Fail("redis-server exited")

    def signal(self, sig):
        self.p.send_signal(sig)

    def save_copy(self):
        """Copy the data directory (the AOF) as it is now."""
        self.copy = self.dir + ".copy"
        shutil.rmtree(self.copy, ignore_errors=True)
        shutil.copytree(self.dir, self.copy)

    def restore_copy(self):
        """Put the copied data directory back (the server must be down)."""
        shutil.rmtree(self.dir)
        shutil.copytree(self.copy, self.dir)

    def kill9(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=10)

    def stop(self):
        if self.p and self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGCONT)
            except OSError:
                pass
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()


class Fleet:
    # name, dp ranks, kind: kvblock publishers send router hashes; the vllm one sends
    # engine hashes with token ids (the index computes router hashes and keeps an
    # engine -> router map, which snapshots and replicas must carry)
    WORKERS = [("w0", "0,1", "kvblock"), ("w1", "none", "kvblock"), ("w2", "0", "kvblock"),
               ("w3", "0", "vllm")]

    def __init__(self, args, workdir, seed, batches, rate):
        self.snapshot_args = ["--snapshot-entries", "300", "--snapshot-ms", "1000"]
        self.relay_args = []
        self.node_args = []
        self.args = args
        self.workdir = workdir
        self.redis = Redis(args.redis_server, workdir)
        self.pubs = {}
        self.nodes = {}
        self.seed = seed
        self.batches = batches
        self.rate = rate
        self.specs = []
        self.truth = {}

    def start(self):
        self.redis.start()
        for i, (name, ranks, kind) in enumerate(self.WORKERS):
            pp, rp = free_port(), free_port()
            truth = os.path.join(self.workdir, name + ".truth.json")
            argv = [PY, os.path.join(HERE, "publisher.py"), "--name", name,
                    "--pub", "tcp://127.0.0.1:%d" % pp, "--replay", "tcp://127.0.0.1:%d" % rp,
                    "--ranks", ranks, "--seed", str(self.seed * 100 + i),
                    "--batches", str(self.batches), "--rate", str(self.rate), "--truth", truth,
                    "--layout", "map" if i != 1 else "array", "--kind", kind]
            self.pubs[name] = (Proc("pub-" + name, argv, self.workdir), truth)
            self.specs.append("%s=tcp://127.0.0.1:%d,replay=tcp://127.0.0.1:%d,kind=%s%s"
                              % (name, pp, rp, kind, ",block-size=16" if kind == "vllm" else ""))

    def node(self, name, role):
        argv = ([self.args.node, role, "--redis", self.redis.url()] + self.snapshot_args +
                self.node_args)
        if role == "relay":
            argv += self.relay_args
            for s in self.specs:
                argv += ["--worker", s]
        n = Node(name, argv, self.workdir)
        self.nodes[name] = n
        return n

    def go(self):
        for p, _ in self.pubs.values():
            p.send("go")

    def wait_published(self, timeout=60):
        for name, (p, truth) in self.pubs.items():
            line = p.readline(timeout)
            if line != "done":
                raise Fail("publisher %s: %r" % (name, line))
            with open(truth) as f:
                self.truth[name] = json.load(f)

    def stop(self):
        for n in self.nodes.values():
            if n.alive():
                try:
                    n.stop()
                except Fail:
                    pass
        for p, _ in self.pubs.values():
            p.stop()
        self.redis.stop()


def wait_role(node, want, timeout, what=None):
    for _ in deadline_loop(timeout, what or "%s to be %s" % (node.name, want)):
        st, s = node.role_state()
        if st in want and (st != "active" or s["relay"].get("subscribed") == 1):
            return s


def active_relay(fleet, timeout=10):
    for _ in deadline_loop(timeout, "an active relay"):
        for n in fleet.nodes.values():
            if not n.alive():
                continue
            st, s = n.role_state()
            if "relay" in s and st == "active" and s["relay"]["subscribed"] == 1:
                return n


def expected_streams(fleet):
    exp = {}
    for name, t in fleet.truth.items():
        for rank, r in t["ranks"].items():
            exp[(name, int(rank))] = r
    return exp


def caught_up(node, exp):
    s = node.state()
    got = {(x["worker"], x["dp_rank"]): x for x in s["streams"]}
    for key, r in exp.items():
        x = got.get(key)
        if not x or x["last_seq"] != r["last_seq"]:
            return False, s
    if "replica" in s and s["replica"]["lag_entries"] != 0:
        return False, s
    return True, s


def converge(fleet, nodes, timeout=60):
    exp = expected_streams(fleet)
    pending = list(nodes)
    last = {}
    for _ in deadline_loop(timeout, "convergence of " + ",".join(n.name for n in nodes), 0.2):
        still = []
        for n in pending:
            ok, s = caught_up(n, exp)
            last[n.name] = s
            if not ok:
                still.append(n)
        pending = still
        if not pending:
            return last
    raise Fail("unreachable")


def check_counts(fleet, node, state, skip=()):
    exp = expected_streams(fleet)
    for k in list(exp):
        if k[0] in skip:
            del exp[k]
    got = {(x["worker"], x["dp_rank"]): x for x in state["streams"]}
    bad = []
    for key, r in exp.items():
        x = got[key]
        if x["batches"] != r["batches"]:
            bad.append("%s/%d: %d batches applied, %d published" % (key[0], key[1], x["batches"],
                                                                    r["batches"]))
        if x["state"] not in ("live",):
            bad.append("%s/%d: state %s" % (key[0], key[1], x["state"]))
    if bad:
        raise Fail("%s: %s" % (node.name, "; ".join(bad)))


def truth_lines(fleet):
    hashes = set()
    for t in fleet.truth.values():
        hashes.update(t["hashes"])
    hashes = sorted(hashes)
    holders = {h: [] for h in hashes}
    fleet.tiers = {}  # "hash worker/rank" -> every tier held (for subset checks)
    for name, t in fleet.truth.items():
        for rank, r in t["ranks"].items():
            for h, tier in r["best"].items():
                holders[int(h)].append("%s/%s/%s" % (name, rank, tier))
            for h, tiers in r["tiers"].items():
                fleet.tiers["%s %s/%s" % (h, name, rank)] = tiers
    return hashes, {h: sorted(v) for h, v in holders.items()}


def check_probe(fleet, node, hashes, truth, subset=False):
    pin = os.path.join(fleet.workdir, "probe.in")
    pout = os.path.join(fleet.workdir, "probe-%s.out" % node.name)
    with open(pin, "w") as f:
        for h in hashes:
            f.write("%d\n" % h)
    r = node.cmd("probe %s %s" % (pin, pout), timeout=60)
    if not r.get("ok"):
        raise Fail("%s: probe failed: %s" % (node.name, r))
    stale = missing = 0
    examples = []
    with open(pout) as f:
        for line in f:
            parts = line.split()
            h = int(parts[0])
            got = sorted(parts[1:])
            want = truth[h]
            if got != want:
                extra = set(got) - set(want)
                lack = set(want) - set(got)
                if subset:
                    # a holder whose better copy was cleared reports a lower tier: that
                    # is a missed opportunity, not a stale entry, if the worker holds it
                    ok = set()
                    for x in extra:
                        wr, tier = x.rsplit("/", 1)
                        if tier in fleet.tiers.get("%d %s" % (h, wr), ""):
                            ok.add(x)
                            lack = {y for y in lack if y.rsplit("/", 1)[0] != wr}
                    extra -= ok
                stale += len(extra)
                missing += len(lack)
                if len(examples) < 5 and (extra or not subset):
                    examples.append("%d: got %s want %s" % (h, got, want))
    held = sum(len(v) for v in truth.values())
    if subset and not stale:
        return held - missing
    if stale or missing:
        raise Fail("%s: %d stale holder entries, %d missing, of %d held (%d hashes probed): %s"
                   % (node.name, stale, missing, held, len(hashes), "; ".join(examples)))
    return held


def check_tokens(fleet, node, subset=False):
    """Prefix matches of token requests (the vllm worker's chains, at their longest
    and as held now) against the publisher's chains."""
    reqs = []
    for name, t in fleet.truth.items():
        for rank, r in t["ranks"].items():
            for c in r.get("chains", []):
                reqs.append((name, rank, c))
    if not reqs:
        return 0
    pin = os.path.join(fleet.workdir, "tokens.in")
    pout = os.path.join(fleet.workdir, "tokens-%s.out" % node.name)
    with open(pin, "w") as f:
        for _, _, c in reqs:
            f.write(" ".join(map(str, c["tokens"])) + "\n")
    r = node.cmd("probe-tokens %s %s" % (pin, pout), timeout=60)
    if not r.get("ok"):
        raise Fail("%s: probe-tokens failed: %s" % (node.name, r))
    with open(pout) as f:
        got = [line.split() for line in f]
    bad = []
    blocks = 0
    for (name, rank, c), g in zip(reqs, got):
        held = c["held"]
        blocks += held
        want = []
        if held:
            d, h, k = (held, 0, 0) if c["tier"] == "d" else (0, held, 0) if c["tier"] == "h" \
                else (0, 0, held)
            want = ["%s/%s/%d,%d,%d" % (name, rank, d, h, k)]
        if g == want:
            continue
        if subset and len(g) <= 1:
            if not g:
                continue  # cleared: a missed opportunity
            wr, lens = g[0].rsplit("/", 1)
            d, h, k = map(int, lens.split(","))
            tier_ok = (c["tier"] == "d" and h == k == 0) or (c["tier"] == "h" and d == k == 0) \
                or (c["tier"] == "k" and d == h == 0)
            if wr == "%s/%s" % (name, rank) and tier_ok and d + h + k <= held:
                continue
        bad.append("%s: got %s want %s" % (" ".join(map(str, c["tokens"][:4])), g, want))
    if len(got) != len(reqs) or bad:
        raise Fail("%s: %d of %d token requests differ from the vllm worker's chains: %s"
                   % (node.name, len(bad), len(reqs), "; ".join(bad[:4])))
    return len(reqs)


def dump_streams(fleet):
    out = subprocess.run([fleet.args.node, "dump", "--redis", fleet.redis.url()],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise Fail("dump failed: %s" % out.stderr)
    per = {}
    for line in out.stdout.splitlines():
        e = json.loads(line)
        per.setdefault(e["worker"], []).append(e)
    return per


def check_streams(fleet):
    """Ordinals contiguous, positions strictly increasing, incarnations never back."""
    per = dump_streams(fleet)
    total = 0
    for w, es in per.items():
        es.sort(key=lambda e: tuple(int(x) for x in e["id"].split("-")))
        prev = None
        max_inc = 0
        for e in es:
            if e["kind"] == "corrupt":
                raise Fail("stream %s: corrupt entry %s" % (w, e))
            pos = (e["ep"], e["seq"], e["sub"])
            if prev is not None:
                if e["n"] != prev["n"] + 1:
                    raise Fail("stream %s: n %d after %d" % (w, e["n"], prev["n"]))
                if pos <= (prev["ep"], prev["seq"], prev["sub"]):
                    raise Fail("stream %s: position %s after %s" % (w, pos, (prev["ep"], prev["seq"], prev["sub"])))
            if e["inc"] < max_inc:
                raise Fail("stream %s: incarnation %d after %d" % (w, e["inc"], max_inc))
            max_inc = max(max_inc, e["inc"])
            prev = e
        total += len(es)
    return per, total


def final_check(fleet, nodes, label, skip_counts=()):
    states = converge(fleet, nodes)
    hashes, truth = truth_lines(fleet)
    held = 0
    for n in nodes:
        check_counts(fleet, n, states[n.name], skip_counts)
        held = check_probe(fleet, n, hashes, truth)
        chains = check_tokens(fleet, n)
    per, total = check_streams(fleet)
    print("  %s: %d nodes agree with the ground truth: %d hashes probed, %d holder entries, "
          "%d token prefixes (vllm engine-hash worker), 0 stale, 0 missing; batches per "
          "stream exact; %d log entries in %d streams, ordinals contiguous"
          % (label, len(nodes), len(hashes), held, chains, total, len(per)))
    return per


def wait_flowing(nodes, timeout=40):
    """Until every node's index has the five streams and has applied some batches."""
    for n in nodes:
        s = None
        try:
            for _ in deadline_loop(timeout, "%s to receive the fleet's batches" % n.name):
                s = n.state()
                if len(s["streams"]) == 5 and all(x["batches"] >= 20 for x in s["streams"]):
                    break
        except Fail as e:
            raise Fail("%s; streams %s" % (e, s and [(x["worker"], x["dp_rank"], x["batches"],
                                                      x["state"]) for x in s["streams"]]))


def base_setup(fleet, replicas=("r1", "r2")):
    fleet.start()
    a = fleet.node("relayA", "relay")
    wait_role(a, ("active",), 15)
    b = fleet.node("relayB", "relay")
    wait_role(b, ("standby",), 10)
    reps = [fleet.node(r, "replica") for r in replicas]
    for r in reps:
        wait_role(r, ("synced",), 15)
    return a, b, reps


# ---- scenarios -----------------------------------------------------------------------------


def sc_relay_kill(fleet):
    a, b, reps = base_setup(fleet)
    fleet.go()
    wait_flowing([a] + reps)
    a_inc = a.state()["relay"]["inc"]
    t0 = time.monotonic()
    a.kill9()
    # the contract is a lease lapse (2 s after the last renewal) plus at most 3 s; the
    # time is reported, and only a standby that never takes over fails the test (wall
    # time is not asserted: on a saturated machine scheduling alone can take seconds)
    s = wait_role(b, ("active",), TAKEOVER_LIMIT_S, "the standby to take over")
    took = time.monotonic() - t0
    print("  relay A (incarnation %d) killed; standby B active and subscribed after %.2f s "
          "(lease %.0f s; incarnation %d, catch-up %.1f ms)%s"
          % (a_inc, took, LEASE_S, s["relay"]["inc"], s["relay"]["takeover_ms"],
             "" if took <= LEASE_S + 3 else "  [over lease + 3 s: machine load %.1f]"
             % os.getloadavg()[0]))
    fleet.wait_published()
    final_check(fleet, [b] + reps, "after failover")


def sc_replica_cold(fleet):
    a, b, reps = base_setup(fleet)
    fleet.go()
    wait_flowing([a] + reps)
    reps[0].kill9()
    time.sleep(0.5)
    r3 = fleet.node("r3", "replica")
    s = wait_role(r3, ("synced",), 15, "the cold replica to sync")
    rs = s["replica"]
    print("  replica r1 killed; cold r3 synced in %.0f ms (snapshot loads %d, %d bytes, "
          "%d entries of tail applied)" % (rs["synced_ms"], rs["snapshot_loads"],
                                           rs["snapshot_bytes"], rs["applied"]))
    fleet.wait_published()
    per = final_check(fleet, [a, reps[1], r3], "after the cold start")
    st = a.state()["relay"]
    if st["snapshots"] < 2 or st["trimmed"] == 0:
        raise Fail("expected snapshots and trims during the run: %s" % st)
    r3s = r3.state()["replica"]
    if r3s["snapshot_loads"] < 1:
        raise Fail("r3 did not load a snapshot: %s" % r3s)
    print("  relay wrote %d snapshots, trimmed %d entries; r3 loaded %d snapshot(s)"
          % (st["snapshots"], st["trimmed"], r3s["snapshot_loads"]))
    del per


def sc_redis_kill(fleet):
    a, b, reps = base_setup(fleet)
    fleet.go()
    wait_flowing([a] + reps)
    fleet.redis.kill9()
    time.sleep(1.0)
    fleet.redis.start()
    print("  redis-server killed (-9) and restarted from its AOF after 1 s")
    fleet.wait_published()
    act = active_relay(fleet, 15)
    final_check(fleet, [act] + reps, "after the Redis restart")
    other = b if act is a else a
    sa, so = act.state()["relay"], other.state()["relay"]
    print("  active: %s (incarnation %d, %d lease takes, %d reconnects); %s is %s"
          % (act.name, sa["inc"], sa["lease_acquired"], sa["reconnects"], other.name,
             so["state"]))
    for r in reps:
        rs = r.state()["replica"]
        if rs["reconnects"] < 1:
            raise Fail("%s did not reconnect: %s" % (r.name, rs))


def sc_redis_stop(fleet):
    a, b, reps = base_setup(fleet)
    fleet.go()
    wait_flowing([a] + reps)
    fleet.redis.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        time.sleep(LEASE_S + 0.5)
        for r in reps:
            s = None
            try:
                for _ in deadline_loop(5, "%s to report lagging" % r.name):
                    st, s = r.role_state()
                    if st == "lagging" and s["streams"] and all(x["state"] == "lagging"
                                                                for x in s["streams"]):
                        break
            except Fail as e:
                raise Fail("%s; last state %s" % (e, json.dumps(s)))
            # still answering matches from memory
            pin = os.path.join(fleet.workdir, "probe-stop.in")
            with open(pin, "w") as f:
                f.write("1\n2\n")
            ans = r.cmd("probe %s %s" % (pin, pin + ".out"), timeout=5)
            if not ans.get("ok"):
                raise Fail("%s does not answer while Redis is stopped" % r.name)
        held = time.monotonic() - t0
    finally:
        fleet.redis.signal(signal.SIGCONT)
    print("  redis-server stopped for %.1f s (lease %.1f s): replicas answered, every stream "
          "lagging" % (held, LEASE_S))
    fleet.wait_published()
    act = active_relay(fleet, 15)
    final_check(fleet, [act] + reps, "after SIGCONT")
    other = b if act is a else a
    sa, so = act.state()["relay"], other.state()["relay"]
    print("  active: %s (incarnation %d, lease lost %d times); %s is %s"
          % (act.name, sa["inc"], sa["lease_lost"], other.name, so["state"]))


def sc_split_brain(fleet):
    # no snapshots, hence no trims: the streams keep every entry for the check
    fleet.snapshot_args = ["--snapshot-entries", "0", "--snapshot-ms", "0"]
    a, b, reps = base_setup(fleet)
    fleet.go()
    wait_flowing([a] + reps)
    a_inc = a.state()["relay"]["inc"]
    os.kill(a.p.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        s = wait_role(b, ("active",), TAKEOVER_LIMIT_S, "the standby to take over")
        took = time.monotonic() - t0
        b_inc = s["relay"]["inc"]
        time.sleep(1.0)  # the standby appends
    finally:
        os.kill(a.p.pid, signal.SIGCONT)
    for _ in deadline_loop(10, "the woken relay to stand down"):
        st, sa = a.role_state()
        if st in ("fenced", "lost"):
            break
    print("  relay A (incarnation %d) stopped; B active after %.2f s (incarnation %d); A woke "
          "up %s" % (a_inc, took, b_inc, st))
    fleet.wait_published()
    time.sleep(1.0)
    per = final_check(fleet, [b] + reps, "after the split-brain attempt")
    st, sa = a.role_state()
    if st not in ("fenced", "lost"):
        raise Fail("woken relay is %s" % st)
    late = 0
    for w, es in per.items():
        es.sort(key=lambda e: tuple(int(x) for x in e["id"].split("-")))
        seen_b = False
        for e in es:
            if e["inc"] >= b_inc:
                seen_b = True
            elif seen_b:
                late += 1
    if late:
        raise Fail("%d entries of an older incarnation after the standby's first entry" % late)
    a_all = sum(1 for es in per.values() for e in es if e["inc"] == a_inc)
    b_all = sum(1 for es in per.values() for e in es if e["inc"] == b_inc)
    if a_all != sa["relay"]["appended"]:
        raise Fail("the streams hold %d entries of A's incarnation, A appended %d"
                   % (a_all, sa["relay"]["appended"]))
    print("  streams: %d entries of A's incarnation %d (all before B's first), %d of B's %d; "
          "woken A is %s: %d entries queued, %d appended, %d refused by the script"
          % (a_all, a_inc, b_all, b_inc, st, sa["relay"]["enqueued"], sa["relay"]["appended"],
             sa["relay"]["refused"]))


def sc_redis_lost_retained(fleet):
    """Redis comes back with less than it had acknowledged (restarted from a copy of its
    AOF taken a second earlier; appendfsync everysec allows that much loss on a host
    crash). The active relay appends the lost entries again from its retention, same
    positions and bytes; replicas see the ordinals go back, reload the snapshot and
    read again: every node equals the ground truth."""
    a, b, reps = base_setup(fleet)
    b.stop()  # the active relay itself must deal with the loss (no standby to take over)
    fleet.go()
    wait_flowing([a] + reps)
    fleet.redis.save_copy()
    time.sleep(1.0)
    fleet.redis.kill9()
    fleet.redis.restore_copy()
    fleet.redis.start()
    print("  redis-server killed and restarted from a copy of its AOF taken 1 s earlier")
    fleet.wait_published()
    act = active_relay(fleet, 20)
    final_check(fleet, [act] + reps, "after the loss")
    sa = act.state()["relay"]
    rs = [r.state()["replica"] for r in reps]
    if sa["reappended"] < 1 or sa["lost_clears"]:
        raise Fail("expected re-appended entries and no clears: %s" % sa)
    print("  %s (incarnation %d) appended %d lost entries again from its retention; replicas "
          "reloaded the snapshot %s times (regressions seen %s)"
          % (act.name, sa["inc"], sa["reappended"], [x["reloads"] for x in rs],
             [x["regressions"] for x in rs]))


def sc_redis_lost(fleet):
    """Redis comes back with less than it had acknowledged: restarted from a copy
    of its AOF taken a second earlier. The relay that resumes appends a clear for
    every worker whose logged entries vanished (or, when the standby wins the
    lease, replays them from the workers); replicas see the ordinals go back and
    reload the snapshot. The active relay must equal the ground truth; replicas may
    miss what was cleared but must hold nothing stale, and agree with each other."""
    fleet.relay_args = ["--retain-bytes", "0"]  # no retention: lost entries become clears
    a, b, reps = base_setup(fleet)
    b.stop()  # the active relay itself must deal with the loss (no standby to take over)
    fleet.go()
    wait_flowing([a] + reps)
    fleet.redis.save_copy()
    time.sleep(1.0)
    fleet.redis.kill9()
    fleet.redis.restore_copy()
    fleet.redis.start()
    print("  redis-server killed and restarted from a copy of its AOF taken 1 s earlier; "
          "relays retain nothing")
    fleet.wait_published()
    act = active_relay(fleet, 20)
    states = converge(fleet, [act] + reps)
    check_counts(fleet, act, states[act.name])
    hashes, truth = truth_lines(fleet)
    held = check_probe(fleet, act, hashes, truth)
    check_tokens(fleet, act)
    kept = [check_probe(fleet, r, hashes, truth, subset=True) for r in reps]
    for r in reps:
        check_tokens(fleet, r, subset=True)
    outs = []
    for r in reps:
        with open(os.path.join(fleet.workdir, "probe-%s.out" % r.name)) as f:
            outs.append(f.read())
    if outs[0] != outs[1]:
        raise Fail("the two replicas disagree")
    per, total = check_streams(fleet)
    lost = sum(1 for es in per.values() for e in es if e["kind"] == "clear")
    sa = act.state()["relay"]
    rs = [r.state()["replica"] for r in reps]
    if sa["lost_clears"] < 1:
        raise Fail("the relay wrote no clear for the lost entries: %s" % sa)
    print("  %s (incarnation %d) wrote %d clear entries for workers whose entries were lost; "
          "replicas reloaded the snapshot %s times (regressions seen %s)"
          % (act.name, sa["inc"], sa["lost_clears"], [x["reloads"] for x in rs],
             [x["regressions"] for x in rs]))
    print("  relay == ground truth (%d holder entries); replicas: 0 stale, %d of %d held "
          "(the rest cleared), identical; %d log entries, ordinals contiguous"
          % (held, kept[0], held, total))
    del lost


def sc_worker_down_restart(fleet):
    """A worker dies (kill -9 of its publisher): the relay logs it STALE after
    --stale-after and every replica stops matching it; the worker comes back as a
    new incarnation (sequence from 0, empty cache): the relay logs the restart clear
    and the new sequence space (a new ep), replicas drop the old blocks."""
    fleet.node_args = ["--stale-after", "1"]
    a, b, reps = base_setup(fleet)
    fleet.go()
    wait_flowing([a] + reps)
    pub, truth_path = fleet.pubs["w2"]
    time.sleep(0.5)
    pub.kill9()
    pub.stop()
    for n in [a] + reps:
        for _ in deadline_loop(10, "%s to mark w2 stale" % n.name):
            st = {x["worker"]: x["state"] for x in n.state()["streams"]}
            if st.get("w2") == "stale":
                break
    # not matched while stale: the blocks w2 held (its last periodic truth) are
    # reported by no node for w2
    with open(truth_path) as f:
        old = json.load(f)
    old_hashes = sorted(int(h) for r in old["ranks"].values() for h in r["best"])
    pin = os.path.join(fleet.workdir, "stale.in")
    with open(pin, "w") as f:
        f.write("".join("%d\n" % h for h in old_hashes))
    for n in [a] + reps:
        out = pin + "." + n.name
        r = n.cmd("probe %s %s" % (pin, out), timeout=30)
        with open(out) as f:
            seen = sum(1 for line in f if " w2/" in line)
        if not r.get("ok") or seen:
            raise Fail("%s matches stale w2 for %d of its blocks" % (n.name, seen))
    os.unlink(truth_path)
    print("  w2 killed: relay and replicas mark it stale; none matches any of the %d blocks it "
          "held" % len(old_hashes))
    # the worker restarts: same endpoints, new seed, sequence from 0
    argv = list(pub.p.args)
    argv[argv.index("--seed") + 1] = str(fleet.seed * 100 + 77)
    newpub = Proc("pub-w2-2", argv, fleet.workdir)
    fleet.pubs["w2"] = (newpub, truth_path)
    time.sleep(0.5)
    newpub.send("go")
    fleet.wait_published()
    final_check(fleet, [a] + reps, "after the restart of w2", skip_counts=("w2",))
    for n in [a] + reps:
        w2 = [x for x in n.state()["streams"] if x["worker"] == "w2"]
        if not w2 or w2[0]["restarts"] < 1 or w2[0]["state"] != "live":
            raise Fail("%s: w2 stream %s (want live, a restart counted)" % (n.name, w2))
    per = dump_streams(fleet)
    kinds = {}
    for e in per.get("w2", []):
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    print("  w2 restarted: every node counts the restart, holds only the new incarnation's "
          "blocks; w2's stream holds %s" % kinds)


SCENARIOS = {
    1: ("kill -9 of the active relay mid-stream", sc_relay_kill),
    2: ("kill -9 of a replica, cold start of a new one", sc_replica_cold),
    3: ("redis-server kill -9, restart from the AOF", sc_redis_kill),
    4: ("SIGSTOP of redis-server past the lease", sc_redis_stop),
    5: ("SIGSTOP of the active relay past its lease (split brain)", sc_split_brain),
    6: ("redis-server restarted from an older AOF (lost acknowledged entries)",
        sc_redis_lost_retained),
    7: ("the same without retention: lost entries become clears", sc_redis_lost),
    8: ("a worker dies (stale), then restarts with a new sequence", sc_worker_down_restart),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True)
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--scenarios", nargs="*", type=int, default=sorted(SCENARIOS))
    ap.add_argument("--batches", type=int, default=1200)
    ap.add_argument("--rate", type=float, default=250.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = ap.parse_args()
    failed = 0
    t_all = time.monotonic()
    for n in args.scenarios:
        title, fn = SCENARIOS[n]
        workdir = tempfile.mkdtemp(prefix="kvb-redis-%d-" % n)
        fleet = Fleet(args, workdir, args.seed + n, args.batches, args.rate)
        t0 = time.monotonic()
        print("scenario %d: %s" % (n, title), flush=True)
        ok = False
        try:
            fn(fleet)
            ok = True
        except Fail as e:
            print("  FAILED: %s" % e)
        except Exception as e:  # a harness bug is a failure too
            print("  FAILED (harness): %r" % e)
        finally:
            fleet.stop()
        if not ok:
            failed += 1
            for name in sorted(os.listdir(workdir)):
                if name.endswith(".log"):
                    with open(os.path.join(workdir, name)) as f:
                        tail = f.read()[-3000:]
                    print("  --- %s ---\n%s" % (name, tail))
        print("  %s in %.1f s" % ("ok" if ok else "FAILED", time.monotonic() - t0), flush=True)
        if not args.keep and ok:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            print("  (kept %s)" % workdir)
    print("check-redis: %d passed, %d failed (%.1f s)" % (len(args.scenarios) - failed, failed,
                                                         time.monotonic() - t_all))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
