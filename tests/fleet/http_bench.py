#!/usr/bin/python3
"""HTTP round trip of kvb-indexer's POST /v1/match on loopback (FLEET.md section 10:
target p99 <= 200 us for 64-block requests).

Starts the daemon on a port the system picks, feeds it a fleet through
vllm_pub.py publishers (--endpoints worker endpoints x --ranks data-parallel
ranks = streams; each stream caches a prefix, 16..64 blocks deep, of one of
--prompts 64-block prompts, so a request has about streams / prompts holders),
waits until every batch is applied, then times sequential requests from one
client over one keep-alive connection:

  raw     the request bytes prepared in advance, written to a socket, the answer
          read up to its Content-Length (the least client overhead Python allows)
  http    http.client (what urllib uses), request + response parsing
  for both: POST /v1/match by tokens (1024 tokens: the daemon hashes them) and by
  router hashes (64 u64), and GET /healthz as the floor of the HTTP round trip.

Warm-up requests are not timed. The daemon's own histogram (time from a
request's headers to its response sent) is read from /metrics at the end and
its mean printed next to the client-side figures; cpu_us is the daemon's CPU
time (user + system, /proc) per timed request, which a loaded machine moves far
less than wall time. Wall times, never asserted: a loaded machine moves them
(compare runs made side by side).

usage: http_bench.py [--build DIR] [--requests N] [--warmup N] [--endpoints E]
                     [--ranks R] [--prompts P] [--seed S]
"""
import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import fleet_model as fm
    import vllm_pub as vp
except ImportError as e:
    print(f"http_bench: SKIPPED ({e}: apt-get install python3-zmq python3-msgpack "
          "python3-xxhash)")
    sys.exit(0)

BS = 16


def cpu_s(pid):
    """utime + stime of a process, seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(sorted_ns, p):
    i = min(len(sorted_ns) - 1, max(0, int(round(p / 100.0 * len(sorted_ns) + 0.5)) - 1))
    return sorted_ns[i] / 1000.0


class Raw:
    """One keep-alive socket; request bytes built once; answers read by Content-Length."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, req):
        self.s.sendall(req)
        buf = self.buf
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                m = re.search(rb"\r\ncontent-length: *(\d+)", buf[:i], re.I)
                n = int(m.group(1))
                if len(buf) >= i + 4 + n:
                    status = int(buf[9:12])
                    body = buf[i + 4:i + 4 + n]
                    self.buf = buf[i + 4 + n:]
                    return status, body
            chunk = self.s.recv(262144)
            if not chunk:
                raise ConnectionError("daemon closed the connection")
            buf += chunk


def main():
    ap = argparse.ArgumentParser(description="kvb-indexer HTTP /v1/match round trip")
    ap.add_argument("--build", default=os.environ.get("KVB_BUILD", "build"))
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--endpoints", type=int, default=4)
    ap.add_argument("--ranks", type=int, default=250)
    ap.add_argument("--prompts", type=int, default=140)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    indexer = os.path.join(a.build, "tools", "kvb-indexer")
    tmp = tempfile.mkdtemp(prefix="kvb-http-bench-")
    pubs, procs = [], []
    try:
        prompts = [[rng.randrange(1, 60000) for _ in range(64 * BS)] for _ in range(a.prompts)]
        for e in range(a.endpoints):
            pubs.append(vp.Publisher(f"ipc://{tmp}/w{e}.pub", f"ipc://{tmp}/w{e}.rep"))
        args = [indexer, "--listen", "127.0.0.1:0"]
        for e, p in enumerate(pubs):
            args += ["--worker", f"w{e}={p.pub},replay={p.replay}"]
        logf = os.path.join(tmp, "indexer.log")
        with open(logf, "w") as err:
            d = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err)
        procs.append(d)
        deadline = time.monotonic() + 15
        port = None
        while port is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", open(logf).read())
            if m:
                port = int(m.group(1))
            elif d.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"http_bench: the daemon did not start: {open(logf).read()}")
            else:
                time.sleep(0.01)
        for p in pubs:
            if not p.wait_subscribed(10):
                raise SystemExit("http_bench: no subscription")
        # the fleet: every stream caches a prefix of one prompt
        batches = 0
        for e, p in enumerate(pubs):
            eng = vp.FakeEngine(BS, "u64", b"w%d" % e)
            for r in range(a.ranks):
                depth = rng.randrange(16, 65)
                p.publish([eng.stored(rng.choice(prompts), 0, depth)], dp_rank=r)
                batches += 1
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def get(path):
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()

        deadline = time.monotonic() + 60
        while True:
            ws = json.loads(get("/v1/workers")[1])["workers"]
            if sum(w["batches"] for w in ws) >= batches:
                break
            if time.monotonic() > deadline:
                raise SystemExit("http_bench: the fleet was not applied within 60 s")
            time.sleep(0.05)
        entries = sum(w["entries"] for w in ws)
        holders = []
        for q in prompts[:20]:
            c.request("POST", "/v1/match", json.dumps({"tokens": q}).encode())
            holders.append(len(json.loads(c.getresponse().read())["workers"]))
        print(f"kvb-indexer HTTP bench: {len(ws)} streams, {entries} entries, "
              f"{a.prompts} prompts of 64 blocks, {sum(holders) / len(holders):.1f} holders "
              f"per request on average; {a.requests} timed requests after {a.warmup} warm-up, "
              "one client, one keep-alive connection, loopback")

        def body_of(q, mode):
            if mode == "tokens":
                return json.dumps({"tokens": q}).encode()
            return json.dumps({"hashes": fm.router_hashes(q, BS)}).encode()

        reqs = {}
        for mode in ("tokens", "hashes"):
            reqs[mode] = []
            for q in prompts:
                b = body_of(q, mode)
                head = (b"POST /v1/match HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(b))
                reqs[mode].append((head + b, b))
        healthz = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        print(f"{'client':<7} {'request':<22} {'n':>7} {'p50_us':>8} {'p90_us':>8} "
              f"{'p99_us':>8} {'p99.9_us':>9} {'max_us':>8} {'mean_us':>8} {'cpu_us':>7}")
        raw = Raw(port)
        order = [rng.randrange(a.prompts) for _ in range(a.requests + a.warmup)]
        results = {}
        for client in ("raw", "http"):
            for what in ("healthz", "match tokens (64 blk)", "match hashes (64 blk)"):
                ns = []
                cpu0 = None
                for i, k in enumerate(order):
                    if i == a.warmup:
                        cpu0 = cpu_s(d.pid)
                    mode = "tokens" if "tokens" in what else "hashes"
                    t0 = time.perf_counter_ns()
                    if client == "raw":
                        st, _ = raw.call(healthz if what == "healthz" else reqs[mode][k][0])
                    elif what == "healthz":
                        st, _ = get("/healthz")
                    else:
                        c.request("POST", "/v1/match", reqs[mode][k][1],
                                  {"Content-Type": "application/json"})
                        r = c.getresponse()
                        st = r.status
                        r.read()
                    t1 = time.perf_counter_ns()
                    if st != 200:
                        raise SystemExit(f"http_bench: HTTP {st}")
                    if i >= a.warmup:
                        ns.append(t1 - t0)
                cpu = (cpu_s(d.pid) - cpu0) / len(ns) * 1e6
                ns.sort()
                results[(client, what)] = ns
                print(f"{client:<7} {what:<22} {len(ns):>7} {pct(ns, 50):>8.1f} "
                      f"{pct(ns, 90):>8.1f} {pct(ns, 99):>8.1f} {pct(ns, 99.9):>9.1f} "
                      f"{ns[-1] / 1000:>8.1f} {sum(ns) / len(ns) / 1000:>8.1f} {cpu:>7.1f}",
                      flush=True)
        text = get("/metrics")[1].decode()
        sm = {}
        for ln in text.splitlines():
            if ln.startswith("kvb_http_request_duration_seconds_"):
                k, v = ln.rsplit(" ", 1)
                sm[k] = float(v)
        for ep in ("/v1/match", "/healthz"):
            n = sm.get(f'kvb_http_request_duration_seconds_count{{endpoint="{ep}"}}', 0)
            s = sm.get(f'kvb_http_request_duration_seconds_sum{{endpoint="{ep}"}}', 0)
            le = sm.get(f'kvb_http_request_duration_seconds_bucket{{endpoint="{ep}",'
                        f'le="0.0002"}}', 0)
            if n:
                print(f"daemon-side {ep}: {int(n)} requests, mean {s / n * 1e6:.1f} us "
                      f"(headers in -> response sent), {le / n * 100:.2f}% <= 200 us")
        worst = max(pct(results[("raw", w)], 99) for w in
                    ("match tokens (64 blk)", "match hashes (64 blk)"))
        print(f"http_bench: raw-client p99 of /v1/match (64 blocks): {worst:.1f} us "
              f"(target <= 200 us: {'met' if worst <= 200 else 'NOT met'} on this run)")
        raw.s.close()
        c.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for p in pubs:
            p.close()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
