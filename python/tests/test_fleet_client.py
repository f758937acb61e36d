"""kvblock.FleetClient: first against a stdlib HTTP server that records what the
client sends (u64 hashes as exact JSON integers, error texts, healthz), then against
the real kvb-indexer daemon ($KVBLOCK_INDEXER_BIN, set by make check-python) fed by a
Python vLLM-style publisher on ipc: every answer compared with an in-process
kvblock.Index given the same events and with an independent hash computation."""
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from kvblock.fleet_client import FleetClient, FleetError

U64 = (1 << 64) - 1


# ---- against a recording stub -------------------------------------------------------------


class _Stub(http.server.BaseHTTPRequestHandler):
    seen = []
    answers = {}

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        _Stub.seen.append((self.command, self.path, body))
        status, ctype, payload = _Stub.answers.get((self.command, self.path),
                                                   (404, "application/json",
                                                    b'{"error": "no such endpoint"}'))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *a):
        pass


@pytest.fixture
def stub():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _Stub.seen, _Stub.answers = [], {}
    yield srv, FleetClient(f"127.0.0.1:{srv.server_address[1]}", timeout=5)
    srv.shutdown()
    srv.server_close()


def test_client_sends_u64_hashes_as_exact_json_integers(stub):
    srv, fc = stub
    _Stub.answers[("POST", "/v1/match")] = (200, "application/json",
                                            b'{"blocks": 3, "workers": []}')
    hashes = [0, (1 << 63) - 1, 1 << 63, U64, -1, -(1 << 63)]
    assert fc.match(hashes=hashes) == {"blocks": 3, "workers": []}
    method, path, body = _Stub.seen[-1]
    assert (method, path) == ("POST", "/v1/match")
    # the literal digits, never a float or a quoted string
    assert body == b'{"hashes":[0,9223372036854775807,9223372036854775808,' \
                   b'18446744073709551615,18446744073709551615,9223372036854775808]}'
    fc.match(tokens=[1, 2, 3], lora_name="sql", cache_salt="t", block_size=16, top_k=2)
    assert json.loads(_Stub.seen[-1][2]) == {"tokens": [1, 2, 3], "lora_name": "sql",
                                             "cache_salt": "t", "block_size": 16, "top_k": 2}
    fc.match(tokens=[5])
    assert json.loads(_Stub.seen[-1][2]) == {"tokens": [5]}
    for bad in ({"hashes": [1 << 64]}, {"hashes": [-(1 << 63) - 1]}, {"hashes": [1.5e19]},
                {}, {"tokens": [1], "hashes": [1]}, {"hashes": [1], "lora_name": "x"}):
        with pytest.raises((ValueError, TypeError)):
            fc.match(**bad)


def test_client_errors_carry_the_daemons_json_text(stub):
    srv, fc = stub
    _Stub.answers[("POST", "/v1/match")] = (400, "application/json",
                                            b'{"error": "\\"tokens\\" must be an array"}')
    with pytest.raises(FleetError) as e:
        fc.match(tokens=[1])
    assert e.value.status == 400 and e.value.error == '"tokens" must be an array'
    assert "HTTP 400" in str(e.value) and "/v1/match" in str(e.value)
    _Stub.answers[("POST", "/v1/snapshot")] = (500, "text/plain", b"disk full")
    with pytest.raises(FleetError) as e:
        fc.snapshot()
    assert e.value.status == 500 and e.value.error == "disk full"
    _Stub.answers[("GET", "/v1/workers")] = (200, "application/json", b"not json")
    with pytest.raises(FleetError):
        fc.workers()
    # healthz: 503 is an answer, not an error
    _Stub.answers[("GET", "/healthz")] = (503, "application/json",
                                          b'{"status": "waiting", "waiting": ["w1"]}')
    assert fc.healthz() is False
    assert fc.health() == (False, {"status": "waiting", "waiting": ["w1"]})
    _Stub.answers[("GET", "/healthz")] = (200, "application/json", b'{"status": "ok"}')
    assert fc.healthz() is True
    _Stub.answers[("GET", "/metrics")] = (200, "text/plain", b"kvb_x 1\n")
    assert fc.metrics() == "kvb_x 1\n"
    # nobody listening
    port = srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    with pytest.raises(FleetError) as e:
        FleetClient(f"http://127.0.0.1:{port}", timeout=2).healthz()
    assert e.value.status is None


class _Rude(_Stub):
    """HTTP/1.1 without "Connection: close" that still closes after each answer: the
    client's next request on that connection fails and must be sent again."""

    protocol_version = "HTTP/1.1"

    def _answer(self):
        super()._answer()
        self.close_connection = True

    do_GET = do_POST = _answer


def test_client_reopens_a_keep_alive_connection_the_server_closed():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Rude)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _Stub.seen, _Stub.answers = [], {}
    _Stub.answers[("GET", "/healthz")] = (200, "application/json", b'{"status": "ok"}')
    try:
        with FleetClient(f"http://127.0.0.1:{srv.server_address[1]}", timeout=5) as fc:
            for _ in range(5):
                assert fc.healthz()
            assert len(_Stub.seen) == 5  # each request answered once
        fc = FleetClient(f"http://127.0.0.1:{srv.server_address[1]}", keep_alive=False)
        assert fc.healthz() and fc.healthz()
    finally:
        srv.shutdown()
        srv.server_close()


# ---- against the real daemon -----------------------------------------------------------------


def _indexer_bin():
    exe = os.environ.get("KVBLOCK_INDEXER_BIN")
    if not exe:
        pytest.skip("KVBLOCK_INDEXER_BIN not set (make check-python sets it to "
                    "$(BUILD)/tools/kvb-indexer)")
    if not os.access(exe, os.X_OK):
        pytest.skip(f"kvb-indexer not built at {exe} (mk/indexer.mk: needs libmicrohttpd-dev, "
                    f"libjansson-dev and the fleet index sources)")
    return exe


@pytest.fixture
def daemon_env(tmp_path):
    exe = _indexer_bin()
    ti = pytest.importorskip("test_index", reason="python/tests/test_index.py helpers")
    if ti.zmq is None or ti.msgpack is None or ti.xxhash is None:
        pytest.skip("python3-zmq, python3-msgpack and python3-xxhash are needed")
    import kvblock.index as ki
    if not ki.available() or not ki.subscriber_available():
        pytest.skip("libkvblock without the fleet index or its ZeroMQ subscriber")
    ctx = ti.zmq.Context()
    ep, rep = f"ipc://{tmp_path}/eng-pub", f"ipc://{tmp_path}/eng-replay"
    eng = ti.VllmEngine(ctx, ep, rep, dp_rank=0)
    log = open(tmp_path / "indexer.log", "w+")
    snap = tmp_path / "index.snap"
    proc = subprocess.Popen([exe, "--listen", "127.0.0.1:0", "--block-size", str(ti.BS),
                             "--worker", f"eng={ep},replay={rep},kind=vllm,block-size={ti.BS}",
                             "--snapshot", str(snap)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        port = None
        while port is None:
            assert proc.poll() is None, open(tmp_path / "indexer.log").read()
            assert time.monotonic() < deadline, open(tmp_path / "indexer.log").read()
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/",
                          open(tmp_path / "indexer.log").read())
            if m:
                port = int(m.group(1))
            else:
                time.sleep(0.02)
        yield ti, eng, proc, FleetClient(f"http://127.0.0.1:{port}"), snap, tmp_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        eng.close()
        ctx.term()


def _endpoint(fc, name):
    return next(e for e in fc.workers()["endpoints"] if e["name"] == name)


def _catch_up(eng, fc, name="eng", timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        e = _endpoint(fc, name)
        if e.get("expected_seq") == eng.seq:
            return e
        if e.get("connected"):
            eng.publish([])
        time.sleep(0.03)
    raise AssertionError(f"kvb-indexer did not catch up: {_endpoint(fc, name)}, "
                         f"engine at {eng.seq}")


def test_fleet_client_against_kvb_indexer(daemon_env):
    ti, eng, proc, fc, snap, tmp_path = daemon_env
    from kvblock import Index, IndexEvent
    bs = ti.BS
    reqs = [ti.toks(8, base=1000 * r) for r in range(3)]
    ehs = [ti.engine_hashes(8, f"fc{r}/") for r in range(3)]
    eng.publish([ti.vllm_stored(ehs[0], reqs[0])])
    eng.publish([ti.vllm_stored(ehs[1][:5], reqs[1][:5 * bs], medium="CPU"),
                 ti.vllm_stored(ehs[2][:3], reqs[2][:3 * bs], lora_name="sql")])
    eng.publish([ti.vllm_removed(ehs[0][6:])])
    _catch_up(eng, fc)
    assert fc.healthz()

    # the same events in an in-process index: the daemon must answer the same
    with Index(block_size=bs) as ref:
        s = ref.add_stream("eng", dp_rank=0, hashes="engine")
        ref.apply(s, [IndexEvent.stored(ehs[0], tokens=reqs[0]),
                      IndexEvent.stored(ehs[1][:5], tokens=reqs[1][:5 * bs], tier="host"),
                      IndexEvent.stored(ehs[2][:3], tokens=reqs[2][:3 * bs],
                                        salt_key=ti.kvblock.salt_key("sql")),
                      IndexEvent.removed(ehs[0][6:])])
        for t, lora in ((reqs[0], None), (reqs[1], None), (reqs[2], "sql"), (reqs[2], None)):
            want = ref.match_tokens(t, lora_name=lora)
            got = fc.match(tokens=t, lora_name=lora)
            assert got["blocks"] == want.blocks == 8
            assert [(w["worker"], w["dp_rank"], w["device"], w["host"], w["disk"])
                    for w in got["workers"]] == \
                [(m.worker, m.dp_rank, m.device, m.host, m.disk) for m in want]
            for w, m in zip(got["workers"], want):
                assert w["score"] == pytest.approx(m.score)
    # by router hashes, computed independently; most are >= 2**63
    rh = ti.ref_hashes(reqs[0])
    assert any(h >= 1 << 63 for h in rh + ti.ref_hashes(reqs[1]))
    got = fc.match(hashes=rh)
    assert [(w["worker"], w["device"]) for w in got["workers"]] == [("eng", 6)]
    assert fc.match(hashes=ti.ref_hashes(reqs[1]))["workers"][0]["host"] == 5
    assert fc.match(hashes=[U64, 0, 1 << 63])["workers"] == []
    assert fc.match(hashes=[h - (1 << 64) if h >= 1 << 63 else h for h in rh]) == got  # signed
    assert len(fc.match(tokens=reqs[0], top_k=1)["workers"]) == 1
    assert fc.match(tokens=[])["blocks"] == 0

    # bad requests: 400 with the daemon's text; the daemon lives on
    for body in ({"tokens": "nope"}, {"tokens": [-1]}, {"hashes": ["x"]},
                 {"tokens": [1], "block_size": 3 * bs}, {"tokens": [1], "top_k": 0}):
        with pytest.raises(FleetError) as e:
            fc._json("POST", "/v1/match", body)
        assert e.value.status == 400 and e.value.error, body
    with pytest.raises(FleetError) as e:
        fc._request("GET", "/v1/nothing-here")
    assert e.value.status == 404 and e.value.error
    with pytest.raises(FleetError) as e:
        fc._request("GET", "/v1/match")
    assert e.value.status == 405

    # one persistent connection per thread; answers identical from every thread
    answers = []

    def ask():
        for _ in range(20):
            answers.append(fc.match(tokens=reqs[0]))

    ths = [threading.Thread(target=ask) for _ in range(3)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert len(answers) == 60 and all(a == answers[0] for a in answers)
    assert FleetClient(fc.base_url, keep_alive=False).match(tokens=reqs[0]) == answers[0]

    # workers, metrics, snapshot
    ws = fc.workers()
    (st,) = [w for w in ws["workers"] if w["worker"] == "eng"]
    assert st["state"] == "live" and st["dp_rank"] == 0 and st["hashes"] == "engine"
    assert st["last_seq"] == eng.seq - 1 and st["entries"] == 6 + 5 + 3
    text = fc.metrics()
    assert "kvb_http_requests_total" in text and 'worker="eng"' in text
    ans = fc.snapshot()
    assert ans["path"] == str(snap) and ans["bytes"] == os.path.getsize(snap) > 0
    with Index.load(snap) as again:
        assert [m.device for m in again.match(rh)] == [6]

    # SIGTERM: exit 0, the snapshot written
    os.unlink(snap)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert os.path.getsize(snap) > 0
