"""A client of the kvb-indexer daemon (FLEET.md section 7), standard library only.

    from kvblock.fleet_client import FleetClient
    fleet = FleetClient("http://127.0.0.1:8181")
    if fleet.healthz():
        answer = fleet.match(tokens=prompt_tokens, lora_name=None, top_k=4)
        # {"blocks": 12, "workers": [{"worker": "w1", "dp_rank": 0, "device": 12,
        #                             "host": 0, "disk": 0, "score": 12.0}, ...]}
        best = answer["workers"][0]["worker"] if answer["workers"] else None

Requests and answers are the daemon's JSON, returned as parsed (dicts and
lists); nothing is renamed. Hashes are u64 router hashes sent as JSON integers
(Python's json module writes any int exactly, 2**64-1 included; negative
signed values, as SGLang prints them, are converted to their u64). A 4xx or 5xx
answer raises FleetError carrying the HTTP status and the daemon's "error" text;
a daemon that cannot be reached raises FleetError with status None.

The module imports nothing from kvblock: it can be copied alone into a router
that does not load libkvblock. Each call opens one HTTP connection (urllib);
a FleetClient may be shared by threads.
"""
import json
import operator
import urllib.error
import urllib.request

__all__ = ["FleetClient", "FleetError"]

_U64 = (1 << 64) - 1


class FleetError(Exception):
    """A request to kvb-indexer failed: status is the HTTP status (None when the
    daemon could not be reached), error the daemon's {"error": ...} text (or the
    body, or the transport error), body the raw answer."""

    def __init__(self, status, error, body=None, url=None):
        where = f" ({url})" if url else ""
        head = f"HTTP {status}" if status is not None else "unreachable"
        super().__init__(f"kvb-indexer {head}{where}: {error}")
        self.status = status
        self.error = error
        self.body = body
        self.url = url


def _u64(h):
    if isinstance(h, bool):
        raise TypeError(f"hash {h!r} is not an integer")
    if not isinstance(h, int):
        h = operator.index(h)  # numpy integers and the like; floats (lossy) raise TypeError
    if -(1 << 63) <= h < 0:
        return h & _U64
    if not 0 <= h <= _U64:
        raise ValueError(f"hash {h} does not fit in 64 bits")
    return h


class FleetClient:
    """FleetClient(base_url="http://127.0.0.1:8181", timeout=5.0)."""

    def __init__(self, base_url="http://127.0.0.1:8181", timeout=5.0):
        if "://" not in base_url:
            base_url = "http://" + base_url
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self):
        return f"FleetClient({self.base_url!r})"

    # -- transport --

    def _request(self, method, path, body=None, ok=(200,)):
        url = self.base_url + path
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raw = e.read() if e.fp is not None else b""
            if e.code in ok:
                return e.code, raw, e.headers.get("Content-Type", "")
            raise FleetError(e.code, _error_text(raw, e.reason), raw, url) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise FleetError(None, str(reason), None, url) from None

    def _json(self, method, path, body=None):
        status, raw, _ = self._request(method, path, body)
        try:
            return json.loads(raw)
        except ValueError:
            raise FleetError(status, "the answer is not JSON", raw,
                             self.base_url + path) from None

    # -- API --

    def match(self, tokens=None, hashes=None, lora_name=None, cache_salt=None,
              block_size=None, top_k=None):
        """POST /v1/match with either tokens (the daemon hashes them with its block
        size, or block_size when given, the LoRA name and the cache salt) or hashes
        (u64 router hashes). Returns {"blocks": n, "workers": [{"worker", "dp_rank",
        "device", "host", "disk", "score", ...}, ...]}, best first."""
        if (tokens is None) == (hashes is None):
            raise ValueError("match: pass tokens or hashes (exactly one)")
        body = {}
        if tokens is not None:
            body["tokens"] = [int(t) for t in tokens]
            if lora_name is not None:
                body["lora_name"] = lora_name
            if cache_salt is not None:
                body["cache_salt"] = cache_salt
            if block_size is not None:
                body["block_size"] = int(block_size)
        else:
            if lora_name is not None or cache_salt is not None:
                raise ValueError("match: lora_name and cache_salt go with tokens (hashes "
                                 "already carry them)")
            body["hashes"] = [_u64(h) for h in hashes]
        if top_k is not None:
            body["top_k"] = int(top_k)
        return self._json("POST", "/v1/match", body)

    def workers(self):
        """GET /v1/workers: {"workers": [per stream: worker, dp_rank, state, last_seq,
        batches, events, gaps, replays, restarts, clears, dropped {reason: n},
        entries, ...], "endpoints": [per configured worker: name, endpoint,
        connected, heard, expected_seq, ...]}."""
        return self._json("GET", "/v1/workers")

    def snapshot(self):
        """POST /v1/snapshot: {"path": ..., "bytes": ...}."""
        return self._json("POST", "/v1/snapshot", {})

    def metrics(self):
        """GET /metrics: the Prometheus text."""
        _, raw, _ = self._request("GET", "/metrics")
        return raw.decode()

    def healthz(self):
        """GET /healthz: True once every configured worker has been heard from or
        marked stale (200), False while not (503: {"status": "waiting", "waiting":
        [names]}; health() gives that body)."""
        return self.health()[0]

    def health(self):
        """GET /healthz as (ready, parsed body)."""
        status, raw, _ = self._request("GET", "/healthz", ok=(200, 503))
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw.decode(errors="replace")}
        return status == 200, body


def _error_text(raw, fallback):
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])
    except ValueError:
        pass
    text = raw.decode(errors="replace").strip() if raw else ""
    return text or str(fallback)
