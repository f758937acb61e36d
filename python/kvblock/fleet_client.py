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
that does not load libkvblock. A FleetClient may be shared by threads: each keeps
its own persistent connection (http.client; keep_alive=False for one connection
per call).

A wrong argument raises TypeError (wrong type) or ValueError (wrong value),
naming the call and the parameter, before any request is sent.
"""
import http.client
import json
import operator
import threading
import urllib.parse
from array import array as _array

__all__ = ["FleetClient", "FleetError"]

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


def _type_error(where, name, expected, v):
    r = repr(v)
    if len(r) > 48:
        r = r[:45] + "..."
    return TypeError(f"{where}: {name} must be {expected}, not {type(v).__name__} {r}")


def _int(where, name, v, lo, hi, expected):
    """v as an int in [lo, hi] (ints and numpy integers; not floats, strings, bools)."""
    if isinstance(v, (bool, float)):
        raise _type_error(where, name, expected, v)
    try:
        v = operator.index(v)
    except TypeError:
        raise _type_error(where, name, expected, v) from None
    if not lo <= v <= hi:
        raise ValueError(f"{where}: {name} must be {expected}, not {v!r}")
    return v


def _str_or_none(where, name, v):
    if v is not None and not isinstance(v, str):
        raise _type_error(where, name, "a str or None", v)
    return v


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


def _u64(h, where="FleetClient.match", name="hash"):
    if isinstance(h, (bool, float)) or not isinstance(h, int):
        try:
            if isinstance(h, (bool, float)):
                raise TypeError
            h = operator.index(h)  # numpy integers and the like; floats (lossy) refused
        except TypeError:
            raise _type_error(where, name, "an int hash (u64, or i64 as SGLang prints it)",
                              h) from None
    if -(1 << 63) <= h < 0:
        return h & _U64
    if not 0 <= h <= _U64:
        raise ValueError(f"{where}: {name} = {h} does not fit in 64 bits")
    return h


def _list(where, name, v, expected):
    """list(v) for an iterable v that is not a str, bytes or dict."""
    if isinstance(v, (str, bytes, bytearray, dict)):
        raise _type_error(where, name, expected, v)
    try:
        return list(v)
    except TypeError:
        raise _type_error(where, name, expected, v) from None


def _tokens(where, tokens):
    """The token ids as a list of int, each in [0, 2**32)."""
    expected = "a list of int token ids"
    if type(tokens) is not _array:
        tokens = _list(where, "tokens", tokens, expected)
    try:
        return _array("I", tokens).tolist()  # one C loop; refuses floats, strings, < 0
    except (TypeError, OverflowError):
        return [_int(where, f"tokens[{i}]", t, 0, _U32, "an integer in [0, 2**32)")
                for i, t in enumerate(tokens)]


class FleetClient:
    """FleetClient(base_url="http://127.0.0.1:8181", timeout=5.0, keep_alive=True).

    keep_alive: one persistent HTTP/1.1 connection per calling thread (a router
    asking per request saves the TCP connect: the median round trip of a
    64-hash match on loopback halves, ~140 against ~280 us measured on a busy
    2-core machine); a connection the daemon closed meanwhile is reopened and
    the request sent again once. keep_alive=False opens one connection per call.
    """

    def __init__(self, base_url="http://127.0.0.1:8181", timeout=5.0, keep_alive=True):
        if not isinstance(base_url, str):
            raise _type_error("FleetClient", "base_url", "a str URL", base_url)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise _type_error("FleetClient", "timeout", "a number of seconds or None",
                                  timeout)
            if not timeout > 0:
                raise ValueError(f"FleetClient: timeout must be a number of seconds > 0 or "
                                 f"None, not {timeout!r}")
        if "://" not in base_url:
            base_url = "http://" + base_url
        self.base_url = base_url.rstrip("/")
        u = urllib.parse.urlsplit(self.base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"FleetClient: not an http(s) URL: {base_url!r}")
        self._conn_cls = (http.client.HTTPSConnection if u.scheme == "https"
                          else http.client.HTTPConnection)
        self._host = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"
        self._port = u.port
        self._prefix = u.path
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._tls = threading.local()

    def __repr__(self):
        return f"FleetClient({self.base_url!r})"

    def close(self):
        """Close this thread's persistent connection (others close when their
        threads end)."""
        c = getattr(self._tls, "conn", None)
        self._tls.conn = None
        if c is not None:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- transport --

    def _request(self, method, path, body=None, ok=(200,)):
        url = self.base_url + path
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if not self.keep_alive:
            headers["Connection"] = "close"
        for attempt in (0, 1):
            conn = getattr(self._tls, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self._conn_cls(self._host, self._port, timeout=self.timeout)
            try:
                conn.request(method, self._prefix + path, body=data, headers=headers)
                r = conn.getresponse()
                raw = r.read()
            except (http.client.RemoteDisconnected, http.client.BadStatusLine,
                    http.client.CannotSendRequest, ConnectionResetError,
                    BrokenPipeError) as e:
                conn.close()
                self._tls.conn = None
                if reused and attempt == 0:
                    continue  # the daemon closed an idle keep-alive connection
                raise FleetError(None, f"{type(e).__name__}: {e}", None, url) from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._tls.conn = None
                raise FleetError(None, f"{type(e).__name__}: {e}", None, url) from None
            if self.keep_alive and not r.will_close:
                self._tls.conn = conn
            else:
                conn.close()
                self._tls.conn = None
            break
        ctype = r.getheader("Content-Type", "")
        if r.status >= 400 and r.status not in ok:
            raise FleetError(r.status, _error_text(raw, r.reason), raw, url)
        return r.status, raw, ctype

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
        w = "FleetClient.match"
        if (tokens is None) == (hashes is None):
            raise ValueError(f"{w}: pass tokens or hashes (exactly one)")
        _str_or_none(w, "lora_name", lora_name)
        _str_or_none(w, "cache_salt", cache_salt)
        body = {}
        if tokens is not None:
            body["tokens"] = _tokens(w, tokens)
            if lora_name is not None:
                body["lora_name"] = lora_name
            if cache_salt is not None:
                body["cache_salt"] = cache_salt
            if block_size is not None:
                body["block_size"] = _int(w, "block_size", block_size, 1, _U32,
                                          "an integer in [1, 2**32) or None")
        else:
            if lora_name is not None or cache_salt is not None:
                raise ValueError(f"{w}: lora_name and cache_salt go with tokens (hashes "
                                 "already carry them)")
            if block_size is not None:
                raise ValueError(f"{w}: block_size goes with tokens (hashes are already "
                                 "computed)")
            body["hashes"] = [_u64(h, w, f"hashes[{i}]") for i, h in
                              enumerate(_list(w, "hashes", hashes, "a list of int hashes"))]
        if top_k is not None:
            body["top_k"] = _int(w, "top_k", top_k, 0, _U32, "an integer >= 0 or None")
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
