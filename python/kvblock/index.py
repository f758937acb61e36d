"""The fleet index (kvblock/index.h) and its ZeroMQ subscriber (kvblock/subscriber.h).

    import kvblock
    with kvblock.Index(block_size=16) as idx:
        s = idx.add_stream("w1", hashes="engine")          # a vLLM engine
        idx.apply(s, [{"type": "stored", "hashes": [0xE1], "tokens": tokens[:16]}], seq=0)
        for r in idx.match_tokens(tokens, k=4):            # best workers first
            print(r.worker, r.dp_rank, r.device, r.host, r.disk, r.score)

    with kvblock.Index() as idx, kvblock.Subscriber(idx) as sub:
        sub.add_worker("w1", "tcp://10.0.0.1:5557", replay="tcp://10.0.0.1:5558")
        ...                                                 # C threads apply events
        best = idx.match_tokens(tokens, k=1)                # concurrent with them

Model (FLEET.md). A *stream* is one engine's cache: a worker name and a
data-parallel rank (None when the engine sends none). A stream either sends
router hashes directly ("router": kvblock publishers) or its own hashes plus
token ids ("engine": vLLM, SGLang), from which the index recomputes router hashes
(kvb_hash_current of kvblock's Dynamo-compatible chain at the index's block size
and seed; Index.hashes() computes a request's). match() returns, per stream that
holds a prefix, the longest prefix on device, the extra prefix on host, the extra
prefix on disk and a weighted score, best first.

Values. Hashes are Python ints in [0, 2**64) (negative ints down to -2**63, as
SGLang sends them, are taken as their two's-complement u64). Anything taking a
sequence of hashes or tokens also takes a buffer of u64 (array('Q')) or u32
(array('I')) used in place, which is the cheap way to pass long requests. Tiers
are "device", "host", "disk" (media "GPU", "CPU", "DISK", "STORAGE" accepted);
stream states "live", "resyncing", "lagging", "stale".

Errors raise KvbError (an OSError, see kvblock.core) whose .name is the errno
name of the C call: EEXIST, ENOENT, EINVAL, EBADMSG, ETIMEDOUT, ENOTSUP...;
closing an Index while a Subscriber on it is open raises EBUSY. A wrong argument
raises TypeError (wrong type) or ValueError (wrong value) naming the call and the
parameter, before anything reaches the C library; a closed Index or Subscriber
raises ValueError.

Threads. Every C call releases the GIL. Index methods may be called from any
thread, concurrently (matches run in parallel with the subscriber's C thread
and with apply() from other Python threads), except close(), which must not
race other calls on the same Index (as kvb_index_destroy). A Subscriber keeps
its Index alive; the Index refuses to close while one is open. An Index or
Subscriber dropped without close() is closed by the garbage collector; an Index
collected (in a reference cycle) while a Subscriber on it is still open is freed
by that Subscriber's close, never under its running thread. Do not drop the last
reference to a Subscriber inside its own callback.
"""
import collections
import collections.abc
import errno
import operator
import os
import struct
import threading
from array import array as _array

from . import _args
from ._args import I64_MAX, U32, type_error
from ._ffi import _Padded, ffi, lib
from .core import KvbError

DYNAMO_SEED = 1337  # KVB_HASH_DYNAMO_SEED: the default seed of unsalted blocks
NO_RANK = -1        # KVB_INDEX_NO_RANK
NAME_MAX = 64       # KVB_INDEX_NAME_MAX, terminating NUL included

TIERS = ("device", "host", "disk")
STATES = ("live", "resyncing", "lagging", "stale")
DROP_REASONS = ("malformed", "unknown_type", "group", "medium", "multimodal",
                "unknown_parent", "no_tokens", "block_size", "capacity", "unknown_block",
                "duplicate")
COUNTERS = ("gaps", "replays", "restarts", "clears")
EVENT_TYPES = ("stored", "removed", "cleared")
WIRE_KINDS = ("vllm", "sglang", "kvblock")
HASH_KINDS = ("router", "engine")
NOTES = ("batch", "clear", "stale", "live")

_U64 = (1 << 64) - 1
_from_buffer = ffi.from_buffer
_EMPTY_U64 = ffi.new("uint64_t[1]")
_EMPTY_U32 = ffi.new("uint32_t[1]")
_TIER = {"device": 0, "host": 1, "disk": 2, "gpu": 0, "cpu": 1, "storage": 2}
_STATE = {s: i for i, s in enumerate(STATES)}
_EVTYPE = {"stored": 1, "removed": 2, "cleared": 3, "blockstored": 1, "blockremoved": 2,
           "allblockscleared": 3}
_EVNAME = {1: "stored", 2: "removed", 3: "cleared"}
_WIRE = {k: i for i, k in enumerate(WIRE_KINDS)}
_HASHKIND = {k: i for i, k in enumerate(HASH_KINDS)}
_COUNTER = {c: i for i, c in enumerate(COUNTERS)}
_DROP = {r: i for i, r in enumerate(DROP_REASONS)}


def _error(rc, what):
    """KvbError for rc; errno values libkvblock's own tables do not name (EBADMSG,
    ETIMEDOUT, EADDRINUSE... from the fleet code: kvb_err_name says "EUNKNOWN") get
    their name and text from the C library's errno (Python's errno module)."""
    e = KvbError(rc, what)
    if e.name == "EUNKNOWN" and -rc in errno.errorcode:
        e.name = errno.errorcode[-rc]
        e.strerror = f"{what}: {e.name}: {os.strerror(-rc)}"
    return e


def _check(rc, what):
    if rc < 0:
        raise _error(rc, what)
    return rc


def available():
    """Whether the loaded libkvblock has the fleet index (kvb_index_*)."""
    try:
        lib.kvb_index_create
        return True
    except AttributeError:
        return False


def subscriber_available():
    """Whether the loaded libkvblock has the ZeroMQ subscriber (built with libzmq
    and msgpack-c); Subscriber() raises KvbError ENOTSUP otherwise."""
    try:
        return bool(lib.kvb_subscriber_available())
    except AttributeError:
        return False


# ---- value conversion -------------------------------------------------------------


_HASHES_TEXT = "a list of int hashes or a u64 buffer (array('Q'))"
_TOKENS_TEXT = "a list of int token ids or a u32 buffer (array('I'))"


def _u64(hashes, where="", name="hashes"):
    """(uint64_t pointer, count, keepalive) for a list of ints or a u64 buffer.
    Lists go through array('Q') (a C loop, faster than cffi's own conversion);
    array('Q') and other u64 buffers are used in place."""
    tp = type(hashes)
    if tp is _array and hashes.typecode == "Q":
        return _from_buffer("uint64_t[]", hashes), len(hashes), hashes
    if tp is not list:
        try:
            mv = memoryview(hashes)
        except TypeError:
            mv = None
        if mv is not None:
            if mv.itemsize != 8 or mv.format not in ("Q", "=Q", "<Q", "@Q", "L", "@L"):
                raise TypeError(f"{where}: {name}: a hash buffer must hold unsigned 64-bit "
                                f"integers (array('Q')), not format {mv.format!r}")
            mv = mv.cast("B").cast("Q")
            return _from_buffer("uint64_t[]", mv, require_writable=False), len(mv), mv
        if isinstance(hashes, (str, float, dict)):
            raise type_error(where, name, _HASHES_TEXT, hashes)
        try:
            hashes = list(hashes)
        except TypeError:
            raise type_error(where, name, _HASHES_TEXT, hashes) from None
    if not hashes:
        return _EMPTY_U64, 0, None
    try:
        a = _array("Q", hashes)
    except (OverflowError, TypeError):
        # signed (SGLang) hashes, numpy integers, or wrong values: one by one
        a = _array("Q", [_hash_int(h, where, f"{name}[{i}]") for i, h in enumerate(hashes)])
    return _from_buffer("uint64_t[]", a), len(a), a


def _hash_int(h, where="", name="hash"):
    """h as a u64: ints in [0, 2**64), or negative down to -2**63 (two's complement)."""
    if isinstance(h, float) or not isinstance(h, int):
        try:
            if isinstance(h, float):
                raise TypeError
            h = operator.index(h)
        except TypeError:
            raise type_error(where, name, "an int hash (u64, or i64 as SGLang sends it)",
                             h) from None
    if -(1 << 63) <= h < 0:
        return h & _U64
    if not 0 <= h <= _U64:
        raise ValueError(f"{where}: {name} = {h} does not fit in 64 bits")
    return h


def _u32(tokens, where="", name="tokens"):
    """(uint32_t pointer, count, keepalive) for a list of ints or a u32 buffer."""
    tp = type(tokens)
    if tp is _array and tokens.typecode == "I":
        return _from_buffer("uint32_t[]", tokens), len(tokens), tokens
    if tp is not list:
        try:
            mv = memoryview(tokens)
        except TypeError:
            mv = None
        if mv is not None:
            if mv.itemsize != 4 or mv.format not in ("I", "=I", "<I", "@I"):
                raise TypeError(f"{where}: {name}: a token buffer must hold unsigned 32-bit "
                                f"integers (array('I')), not format {mv.format!r}")
            mv = mv.cast("B").cast("I")
            return _from_buffer("uint32_t[]", mv, require_writable=False), len(mv), mv
        if isinstance(tokens, (str, float, dict)):
            raise type_error(where, name, _TOKENS_TEXT, tokens)
        try:
            tokens = list(tokens)
        except TypeError:
            raise type_error(where, name, _TOKENS_TEXT, tokens) from None
    if not tokens:
        return _EMPTY_U32, 0, None
    try:
        a = _array("I", tokens)
    except (OverflowError, TypeError):  # numpy integers and the like, or wrong values
        a = _array("I", [_args.u32(where, f"{name}[{i}]", t) for i, t in enumerate(tokens)])
    return _from_buffer("uint32_t[]", a), len(a), a


def _cstr(s, where="", name="string"):
    """NULL for None, else NUL-terminated bytes (cffi passes bytes as char *)."""
    if s is None:
        return ffi.NULL
    if isinstance(s, str):
        return s.encode()
    if isinstance(s, (bytes, bytearray)):
        return bytes(s)
    raise type_error(where, name, "a str, bytes or None", s)


def _lora(lora_name, where):
    """A LoRA name as _cstr: a str, bytes, or a numeric id (named by its decimal text)."""
    if isinstance(lora_name, int) and not isinstance(lora_name, bool):
        lora_name = str(lora_name)
    elif not (lora_name is None or isinstance(lora_name, (str, bytes, bytearray))):
        raise type_error(where, "lora_name", "a str, bytes, an int LoRA id or None", lora_name)
    return _cstr(lora_name, where, "lora_name")


def _name_arg(v, where, name="worker"):
    """A worker (or subscription) name as NUL-terminated bytes."""
    if isinstance(v, str):
        return v.encode()
    raise type_error(where, name, "a str", v)


def _rank(dp_rank, where=""):
    if dp_rank is None:
        return NO_RANK
    return _args.integer(where, "dp_rank", dp_rank, NO_RANK, I64_MAX,
                         "None or an integer >= 0 (-1: no rank)")


def _tier(t, where="", name="tier"):
    if isinstance(t, int):
        if not 0 <= t < 3:
            raise ValueError(f"{where}: {name} {t} is not a tier (0, 1, 2 or one of {TIERS})")
        return t
    if not isinstance(t, str):
        raise type_error(where, name, f"one of {TIERS} (or GPU, CPU, DISK, STORAGE)", t)
    try:
        return _TIER[t.lower()]
    except KeyError:
        raise ValueError(f"{where}: unknown {name} {t!r}: one of {TIERS} (or GPU, CPU, DISK, "
                         f"STORAGE)") from None


def _state(s, where="", name="state"):
    if isinstance(s, int):
        if not 0 <= s < len(STATES):
            raise ValueError(f"{where}: {name} {s} is not a state (0-3 or one of {STATES})")
        return s
    if not isinstance(s, str):
        raise type_error(where, name, f"one of {STATES}", s)
    try:
        return _STATE[s]
    except KeyError:
        raise ValueError(f"{where}: unknown {name} {s!r}: one of {STATES}") from None


def _lookup(table, key, what, where=""):
    if isinstance(key, int):
        if key not in table.values():
            raise ValueError(f"{where}: {what} {key} is not one of "
                             f"{sorted(set(table.values()))} (or {tuple(table)})")
        return key
    if not isinstance(key, str):
        raise type_error(where, what, f"one of {tuple(table)}", key)
    try:
        return table[key.lower()]
    except KeyError:
        raise ValueError(f"{where}: unknown {what} {key!r}: one of {tuple(table)}") from None


def _name(v, table):
    return table[v] if 0 <= v < len(table) else f"unknown({v})"


def salt_key(lora_name=None, cache_salt=None):
    """kvb_index_salt_key: the salt key of a LoRA adapter (a name, or a numeric id,
    named by its decimal text) and a cache salt; 0 for plain text (both absent or
    empty), otherwise kvb_hash_chain(kvb_hash_salt(lora), kvb_hash_salt(salt)) | 1."""
    lo = b"" if lora_name is None else _lora(lora_name, "salt_key")
    sa = b"" if cache_salt is None else _cstr(cache_salt, "salt_key", "cache_salt")
    return lib.kvb_index_salt_key(lo, len(lo), sa, len(sa))


# ---- events and batches -----------------------------------------------------------


class IndexEvent(collections.namedtuple(
        "IndexEvent", "type tier hashes parent tokens block_size salt_key",
        defaults=("device", (), None, None, 0, 0))):
    """One normalized event (kvb_index_event).

    type      "stored", "removed" or "cleared"
    tier      "device", "host" or "disk"
    hashes    block hashes (engine hashes on "engine" streams, router hashes on
              "router" streams)
    parent    STORED: engine hash of the first block's parent, or None
    tokens    STORED on engine streams: len(hashes) * block_size token ids
    block_size  the event's block size (0: the stream's)
    salt_key  salt_key(lora_name, cache_salt) of the blocks; 0 for plain text

    apply() also takes dicts with these keys, or vLLM's own names
    ("BlockStored", "block_hashes", "parent_block_hash", "token_ids", "medium"),
    plus "lora_name" / "cache_salt" in place of salt_key.
    """

    __slots__ = ()

    @classmethod
    def stored(cls, hashes, parent=None, tokens=None, tier="device", block_size=0,
               salt_key=0):
        return cls("stored", tier, hashes, parent, tokens, block_size, salt_key)

    @classmethod
    def removed(cls, hashes, tier="device"):
        return cls("removed", tier, hashes)

    @classmethod
    def cleared(cls):
        return cls("cleared")


Batch = collections.namedtuple("Batch", "ts dp_rank events dropped")
Batch.__doc__ = """A decoded batch (decode()): ts (seconds), dp_rank (None when absent),
events (a list of IndexEvent), dropped (dict reason -> count of what the decoder
skipped, only non-zero reasons). apply(stream, batch) applies the events and adds
the drops to the stream's counters."""


def _event_from_dict(d, where="", name="event"):
    g = d.get
    t = g("type")
    if t is None:
        raise ValueError(f"{where}: {name} has no type: {d!r}")
    tier = g("tier")
    if tier is None:
        tier = g("medium") or "device"
    hashes = g("hashes")
    if hashes is None:
        hashes = g("block_hashes", ())
    parent = g("parent", g("parent_block_hash"))
    tokens = g("tokens")
    if tokens is None:
        tokens = g("token_ids")
    sk = g("salt_key")
    if sk is None:
        lora = g("lora_name")
        if lora is None and g("lora_id") is not None:
            lora = str(g("lora_id"))
        if lora is not None and (isinstance(lora, bool) or
                                 not isinstance(lora, (str, bytes, bytearray, int))):
            raise type_error(where, f"{name}['lora_name']", "a str, bytes or an int id", lora)
        cs = g("cache_salt")
        if cs is not None and not isinstance(cs, (str, bytes, bytearray)):
            raise type_error(where, f"{name}['cache_salt']", "a str or bytes", cs)
        sk = salt_key(lora, cs)
    return IndexEvent(t, tier, hashes, parent, tokens, g("block_size") or 0, sk)


def _c_events(events, where):
    """A kvb_index_event[] for a list of IndexEvent / dicts, and what keeps it alive."""
    n = len(events)
    arr = ffi.new("kvb_index_event[]", max(n, 1))
    keep = [arr]
    for i, e in enumerate(events):
        name = f"events[{i}]"
        if isinstance(e, dict):
            e = _event_from_dict(e, where, name)
        elif not isinstance(e, IndexEvent):
            if not isinstance(e, (tuple, list)) or not 1 <= len(e) <= len(IndexEvent._fields):
                raise type_error(where, name, "an IndexEvent, a dict or a tuple "
                                 "(type, tier, hashes, parent, tokens, block_size, salt_key)", e)
            e = IndexEvent(*e)
        c = arr[i]
        c.type = _lookup(_EVTYPE, e.type, f"{name}.type", where)
        c.tier = _tier(e.tier if e.tier is not None else 0, where, f"{name}.tier")
        if e.hashes is not None:
            hp, hn, hk = _u64(e.hashes, where, f"{name}.hashes")
            if hn:
                keep.append(hk)
                c.hashes = hp
                c.n_hashes = hn
        if e.parent is not None:
            c.has_parent = True
            c.parent = _hash_int(e.parent, where, f"{name}.parent")
        if e.tokens is not None:
            tp, tn, tk = _u32(e.tokens, where, f"{name}.tokens")
            if tn:
                keep.append(tk)
                c.tokens = tp
                c.n_tokens = tn
        c.block_size = _args.u32(where, f"{name}.block_size", e.block_size or 0)
        c.salt_key = _args.u64(where, f"{name}.salt_key", e.salt_key or 0)
    return arr, n, keep


def _py_event(e):
    n = e.n_hashes
    hashes = list(ffi.unpack(e.hashes, n)) if n and e.hashes != ffi.NULL else []
    tokens = None
    if e.tokens != ffi.NULL and e.n_tokens:
        tokens = list(ffi.unpack(e.tokens, e.n_tokens))
    return IndexEvent(_EVNAME.get(e.type, str(e.type)), _name(e.tier, TIERS), hashes,
                      e.parent if e.has_parent else None, tokens, e.block_size, e.salt_key)


def _py_batch(b):
    dropped = {DROP_REASONS[i]: b.dropped[i] for i in range(len(DROP_REASONS))
               if b.dropped[i]}
    return Batch(b.ts, None if b.dp_rank == NO_RANK else b.dp_rank,
                 [_py_event(b.events[i]) for i in range(b.n_events)], dropped)


def decode(payload, kind="vllm"):
    """kvb_index_decode: one raw KV-event payload (the msgpack frame) as a Batch.
    kind: "vllm" (map or legacy array layout), "sglang" or "kvblock".
    KvbError EBADMSG when it is not a batch of any known layout."""
    k = _lookup(_WIRE, kind, "kind", "decode")
    buf = _payload(payload, "decode")
    b = _Padded("kvb_index_batch")
    _check(lib.kvb_index_decode(buf, len(buf), k, b.ptr), "kvb_index_decode")
    try:
        return _py_batch(b.ptr)
    finally:
        lib.kvb_index_batch_fini(b.ptr)


def _payload(payload, where, name="payload"):
    """A cffi view of a bytes-like payload."""
    if isinstance(payload, str):
        raise type_error(where, name, "bytes (a raw msgpack payload)", payload)
    try:
        return ffi.from_buffer(payload)
    except TypeError:
        raise type_error(where, name, "bytes (a raw msgpack payload)", payload) from None


# ---- results ----------------------------------------------------------------------


class MatchResult(collections.namedtuple(
        "MatchResult", "worker dp_rank device host disk score entries state stream")):
    """One stream's answer to a match (kvb_index_result): device = blocks of the
    longest prefix held on device; host = the longest prefix on device or host minus
    device; disk = the longest prefix on any tier minus device + host; score = the
    tier-weighted sum; entries = the stream's entries (the tie-break); state its
    state name; stream its id. dp_rank is None for a stream without a rank."""

    __slots__ = ()

    @property
    def blocks(self):
        """The length of the stream's matched prefix, any tier."""
        return self.device + self.host + self.disk


class Matches(list):
    """The list of MatchResult of a match, best first, with two attributes: total,
    the number of streams holding a non-empty prefix (may exceed len(self) when k
    cut it), and blocks, the number of full blocks of the request."""

    __slots__ = ("total", "blocks")


def _result_struct():
    """A struct.Struct reading one kvb_index_result at the offsets cffi was declared
    with (themselves checked against the C compiler by test_layout.py)."""
    fields = (("stream", "I"), ("dp_rank", "q"), ("device", "I"), ("host", "I"),
              ("disk", "I"), ("score", "d"), ("entries", "Q"), ("state", "I"),
              ("worker", f"{NAME_MAX}s"))
    fmt, at = "=", 0
    for name, code in fields:
        off = ffi.offsetof("kvb_index_result", name)
        fmt += "x" * (off - at) + code
        at = off + struct.calcsize("=" + code)
    fmt += "x" * (ffi.sizeof("kvb_index_result") - at)
    st = struct.Struct(fmt)
    assert st.size == ffi.sizeof("kvb_index_result")
    return st


_RESULT = _result_struct()
_RESULT_SIZE = _RESULT.size
_names = {}  # raw worker[] bytes -> str: a router sees the same few names again and again


def _results(mv, n, total, blocks):
    """Matches from the first n results of a result buffer, given as a memoryview of
    it (struct unpacking of a bytes copy: several times faster than reading cffi
    struct fields one by one)."""
    out = Matches()
    out.total = total
    out.blocks = blocks
    if n <= 0:
        return out
    names = _names
    new = tuple.__new__
    append = out.append
    for stream, rank, dev, host, disk, score, entries, state, raw in \
            _RESULT.iter_unpack(mv[:n * _RESULT_SIZE].tobytes()):
        name = names.get(raw)
        if name is None:
            if len(names) >= 65536:
                names.clear()
            name = names[raw] = raw.split(b"\0", 1)[0].decode()
        append(new(MatchResult, (name, None if rank == NO_RANK else rank, dev, host, disk,
                                 score, entries, STATES[state] if state < 4 else str(state),
                                 stream)))
    return out


def _info_dict(s):
    return {
        "stream": s.stream,
        "worker": ffi.string(s.worker).decode(),
        "dp_rank": None if s.dp_rank == NO_RANK else s.dp_rank,
        "hashes": _name(s.hashes, HASH_KINDS),
        "block_size": s.block_size,
        "state": _name(s.state, STATES),
        "last_seq": s.last_seq,
        "batches": s.batches,
        "events": s.events,
        **{c: s.counters[i] for i, c in enumerate(COUNTERS)},
        "dropped": {r: s.dropped[i] for i, r in enumerate(DROP_REASONS)},
        "entries": s.entries,
        "engine_map": s.engine_map,
        "last_heard_ns": s.last_heard_ns,
    }


# ---- the index ----------------------------------------------------------------------


def _config(block_size, seed, tier_weights, stale_after, drop_after, max_streams,
            max_entries_per_stream, shards, where="Index"):
    cfg = _Padded("kvb_index_config")
    c = cfg.ptr
    lib.kvb_index_config_init(c)
    if block_size is not None:
        c.block_size = _args.u32(where, "block_size", block_size)
    if seed is not None:
        c.seed = _args.u64(where, "seed", seed)
    if tier_weights is not None:
        if isinstance(tier_weights, (str, bytes)):
            raise type_error(where, "tier_weights", "three numbers (device, host, disk)",
                             tier_weights)
        try:
            w = list(tier_weights)
        except TypeError:
            raise type_error(where, "tier_weights", "three numbers (device, host, disk)",
                             tier_weights) from None
        if len(w) != 3:
            raise ValueError(f"{where}: tier_weights: three weights (device, host, disk), "
                             f"not {len(w)}")
        for i in range(3):
            c.tier_weight[i] = _args.number(where, f"tier_weights[{i}]", w[i])
    if stale_after is not None:
        c.stale_after_s = _args.number(where, "stale_after", stale_after)
    if drop_after is not None:
        c.drop_after_s = _args.number(where, "drop_after", drop_after)
    if max_streams is not None:
        c.max_streams = _args.u32(where, "max_streams", max_streams)
    if max_entries_per_stream is not None:
        c.max_entries_per_stream = _args.u32(where, "max_entries_per_stream",
                                             max_entries_per_stream)
    if shards is not None:
        c.shards = _args.u32(where, "shards", shards)
    return cfg


class Index:
    """The in-process fleet index (kvb_index).

    Index(block_size=16, seed=DYNAMO_SEED, tier_weights=(1.0, 0.8, 0.5),
          stale_after=30.0, drop_after=300.0, max_streams=4096,
          max_entries_per_stream=1 << 24, shards=0)

    Arguments left as None take the C defaults (kvb_index_config_init). Close it
    (or use it as a context manager); KvbError EINVAL for a bad configuration.
    """

    _KW = ("block_size", "seed", "tier_weights", "stale_after", "drop_after", "max_streams",
           "max_entries_per_stream", "shards")

    def __init__(self, block_size=None, seed=None, tier_weights=None, stale_after=None,
                 drop_after=None, max_streams=None, max_entries_per_stream=None,
                 shards=None):
        self._p = None
        self._subs = 0
        self._tls = threading.local()
        cfg = _config(block_size, seed, tier_weights, stale_after, drop_after, max_streams,
                      max_entries_per_stream, shards)
        out = ffi.new("kvb_index **")
        _check(lib.kvb_index_create(cfg.ptr, out), "kvb_index_create")
        self._p = out[0]
        self._cache_config()

    def _cache_config(self):
        c = self.config()
        self.block_size = c["block_size"]
        self.seed = c["seed"]

    @classmethod
    def _adopt(cls, p):
        self = cls.__new__(cls)
        self._p = p
        self._subs = 0
        self._tls = threading.local()
        self._cache_config()
        return self

    # -- lifetime --

    def _h(self, where="Index"):
        p = self._p
        if p is None:
            raise ValueError(f"{where}: the Index is closed")
        return p

    @property
    def closed(self):
        return self._p is None

    def close(self):
        """kvb_index_destroy. KvbError EBUSY (nothing freed) while a Subscriber on this
        index is open. Must not race other calls on this Index."""
        if self._p is None:
            return
        if self._subs:
            raise _error(-errno.EBUSY, f"Index.close: {self._subs} Subscriber(s) on this "
                                         f"index still open (close them first)")
        p, self._p = self._p, None
        _check(lib.kvb_index_destroy(p), "kvb_index_destroy")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        p = getattr(self, "_p", None)
        if p is None:
            return
        if getattr(self, "_subs", 0):
            # collected in a cycle with a Subscriber still open on it: the subscriber
            # thread may be applying into it; the last Subscriber.close() frees it
            self._orphaned = True
            return
        self._p = None
        try:
            lib.kvb_index_destroy(p)
        except Exception:
            pass

    def __repr__(self):
        if self._p is None:
            return "Index(closed)"
        return f"Index(block_size={self.block_size}, {len(self.streams())} streams)"

    def config(self):
        """The configuration the index runs with, defaults filled in, as a dict."""
        cfg = _Padded("kvb_index_config")
        _check(lib.kvb_index_config_get(self._h("Index.config"), cfg.ptr),
               "kvb_index_config_get")
        c = cfg.ptr
        return {"block_size": c.block_size, "seed": c.seed,
                "tier_weights": tuple(c.tier_weight[i] for i in range(3)),
                "stale_after": c.stale_after_s, "drop_after": c.drop_after_s,
                "max_streams": c.max_streams,
                "max_entries_per_stream": c.max_entries_per_stream, "shards": c.shards}

    # -- keys --

    def hashes(self, tokens, lora_name=None, cache_salt=None):
        """Router hashes of a request's full blocks (kvb_index_hashes), a list of int."""
        w = "Index.hashes"
        p = self._h(w)
        tp, n, keep = _u32(tokens, w)
        lo, sa = _lora(lora_name, w), _cstr(cache_salt, w, "cache_salt")
        cap = n // self.block_size
        out = ffi.new("uint64_t[]", max(cap, 1))
        k = _check(lib.kvb_index_hashes(p, tp, n, lo, sa, out, cap), "kvb_index_hashes")
        return list(ffi.unpack(out, k))

    def block_seed(self, salt_key=0):
        """The chain seed of blocks with this salt key (kvb_index_block_seed)."""
        return lib.kvb_index_block_seed(self._h("Index.block_seed"),
                                        _args.u64("Index.block_seed", "salt_key", salt_key))

    salt_key = staticmethod(salt_key)
    decode = staticmethod(decode)

    # -- streams --

    def add_stream(self, worker, dp_rank=None, hashes="router", block_size=0,
                   exist_ok=False):
        """Add a stream (worker, dp_rank); hashes: "router" (kvblock publishers) or
        "engine" (vLLM, SGLang: router hashes recomputed from token ids). Returns its
        id. KvbError EEXIST unless exist_ok (then the existing id is returned),
        EINVAL (bad name), ENOSPC (max_streams)."""
        w = "Index.add_stream"
        p = self._h(w)
        sc = _Padded("kvb_index_stream_config")
        nm = ffi.new("char[]", _name_arg(worker, w))
        sc.ptr.name = nm
        sc.ptr.dp_rank = _rank(dp_rank, w)
        sc.ptr.hashes = _lookup(_HASHKIND, hashes, "hashes", w)
        sc.ptr.block_size = _args.u32(w, "block_size", block_size)
        out = ffi.new("uint32_t *")
        rc = lib.kvb_index_stream_add(p, sc.ptr, out)
        if rc == -errno.EEXIST and exist_ok:
            return out[0]
        _check(rc, "kvb_index_stream_add")
        return out[0]

    def find_stream(self, worker, dp_rank=None):
        """The id of stream (worker, dp_rank), or None."""
        w = "Index.find_stream"
        out = ffi.new("uint32_t *")
        rc = lib.kvb_index_stream_find(self._h(w), _name_arg(worker, w), _rank(dp_rank, w), out)
        if rc == -errno.ENOENT:
            return None
        _check(rc, "kvb_index_stream_find")
        return out[0]

    def _sid(self, stream, where="Index"):
        """A stream id from an id, a worker name (no rank) or (worker, dp_rank)."""
        if type(stream) is int and 0 <= stream <= U32:
            return stream
        if isinstance(stream, int) and not isinstance(stream, bool):
            return _args.u32(where, "stream", stream)
        if isinstance(stream, str):
            name, rank = stream, None
        elif isinstance(stream, tuple) and len(stream) == 2:
            name, rank = stream
        else:
            raise type_error(where, "stream", "a stream id (int), a worker name (str) or "
                             "(worker, dp_rank)", stream)
        out = ffi.new("uint32_t *")
        _check(lib.kvb_index_stream_find(self._h(where), _name_arg(name, where, "stream"),
                                         _rank(rank, where), out),
               f"kvb_index_stream_find({name!r}, {rank})")
        return out[0]

    def remove_stream(self, stream):
        """Remove a stream and free its entries. KvbError ENOENT."""
        w = "Index.remove_stream"
        _check(lib.kvb_index_stream_remove(self._h(w), self._sid(stream, w)),
               "kvb_index_stream_remove")

    def remove_worker(self, worker):
        """Remove every stream (rank) of a worker; returns how many."""
        w = "Index.remove_worker"
        return _check(lib.kvb_index_worker_remove(self._h(w), _name_arg(worker, w)),
                      "kvb_index_worker_remove")

    def clear_stream(self, stream, state="live"):
        """Drop what the stream holds, count a clear, set its state."""
        w = "Index.clear_stream"
        st = _state(state, w)
        _check(lib.kvb_index_stream_clear(self._h(w), self._sid(stream, w), st),
               "kvb_index_stream_clear")

    def set_state(self, stream, state):
        w = "Index.set_state"
        st = _state(state, w)
        _check(lib.kvb_index_stream_set_state(self._h(w), self._sid(stream, w), st),
               "kvb_index_stream_set_state")

    def set_seq(self, stream, last_seq):
        w = "Index.set_seq"
        seq = _args.i64(w, "last_seq", last_seq)
        _check(lib.kvb_index_stream_set_seq(self._h(w), self._sid(stream, w), seq),
               "kvb_index_stream_set_seq")

    def count(self, stream, counter, delta=1):
        """Advance a caller-kept counter: "gaps", "replays", "restarts", "clears"."""
        w = "Index.count"
        c = _lookup(_COUNTER, counter, "counter", w)
        delta = _args.u64(w, "delta", delta)
        _check(lib.kvb_index_stream_count(self._h(w), self._sid(stream, w), c, delta),
               "kvb_index_stream_count")

    def drop(self, stream, dropped):
        """Count drops: a dict reason -> count (reasons of DROP_REASONS)."""
        w = "Index.drop"
        if not isinstance(dropped, collections.abc.Mapping):
            raise type_error(w, "dropped", "a dict reason -> count", dropped)
        arr = ffi.new("uint32_t[11]")
        for r, v in dropped.items():
            i = _lookup(_DROP, r, "drop reason", w)
            arr[i] = _args.u32(w, f"dropped[{r!r}] (with the other counts of that reason)",
                               arr[i] + _args.u32(w, f"dropped[{r!r}]", v))
        _check(lib.kvb_index_stream_drop(self._h(w), self._sid(stream, w), arr),
               "kvb_index_stream_drop")

    def heard(self, stream, connected=True, now_ns=None):
        """Liveness input: the stream's transport is up (True) or down (False)."""
        w = "Index.heard"
        if now_ns is None:
            now_ns = lib.kvb_index_now_ns()
        else:
            now_ns = _args.i64(w, "now_ns", now_ns)
        _check(lib.kvb_index_stream_heard(self._h(w), self._sid(stream, w), bool(connected),
                                          now_ns), "kvb_index_stream_heard")

    def tick(self, now_ns=None):
        """Apply the liveness timeouts; returns how many streams changed state."""
        if now_ns is None:
            now_ns = lib.kvb_index_now_ns()
        else:
            now_ns = _args.i64("Index.tick", "now_ns", now_ns)
        return _check(lib.kvb_index_tick(self._h("Index.tick"), now_ns), "kvb_index_tick")

    @staticmethod
    def now_ns():
        """The monotonic clock liveness uses (kvb_index_now_ns)."""
        return lib.kvb_index_now_ns()

    def streams(self):
        """Ids of the current streams, ascending."""
        p = self._h("Index.streams")
        cap = 64
        while True:
            ids = ffi.new("uint32_t[]", cap)
            n = _check(lib.kvb_index_streams(p, ids, cap), "kvb_index_streams")
            if n <= cap:
                return list(ffi.unpack(ids, n))
            cap = n + 16

    def stream_info(self, stream=None):
        """One stream's information and counters as a dict (worker, dp_rank, hashes,
        block_size, state, last_seq, batches, events, gaps, replays, restarts,
        clears, dropped {reason: n}, entries, engine_map, last_heard_ns); with no
        argument, a list of them for every stream."""
        if stream is None:
            out = []
            for s in self.streams():
                try:
                    out.append(self.stream_info(s))
                except KvbError as e:  # removed meanwhile
                    if e.name != "ENOENT":
                        raise
            return out
        w = "Index.stream_info"
        info = _Padded("kvb_index_stream_info")
        _check(lib.kvb_index_stream_info_get(self._h(w), self._sid(stream, w), info.ptr),
               "kvb_index_stream_info_get")
        return _info_dict(info.ptr)

    # -- events --

    def apply(self, stream, events, seq=-1):
        """Apply events (IndexEvent, dicts, or a Batch from decode()) to a stream, in
        order, recording seq as its last applied sequence number (seq < 0: keep it).
        A Batch's decoder drops are added to the stream's counters. Events or blocks
        the index cannot use are counted per reason (stream_info()["dropped"]), not
        raised. KvbError ENOENT (no such stream), EINVAL, ENOMEM (nothing applied)."""
        w = "Index.apply"
        sid = self._sid(stream, w)
        seq = _args.i64(w, "seq", seq)
        dropped = None
        if isinstance(events, Batch):
            dropped = events.dropped
            events = events.events
        elif isinstance(events, (IndexEvent, dict)):
            events = [events]
        elif not isinstance(events, (list, tuple)):
            if isinstance(events, (str, bytes, bytearray)):
                raise type_error(w, "events", "a list of IndexEvent or dicts, or a Batch",
                                 events)
            try:
                events = list(events)
            except TypeError:
                raise type_error(w, "events", "a list of IndexEvent or dicts, or a Batch",
                                 events) from None
        arr, n, keep = _c_events(events, w)
        _check(lib.kvb_index_apply(self._h(w), sid, arr, n, seq), "kvb_index_apply")
        if dropped:
            self.drop(sid, dropped)

    def apply_payload(self, stream, payload, kind="vllm", seq=-1):
        """Decode a raw payload and apply it in C (no Python objects per event), adding
        the decoder's drops to the stream. Returns the number of events applied.
        KvbError EBADMSG (nothing applied) when the payload is not a batch."""
        w = "Index.apply_payload"
        sid = self._sid(stream, w)
        p = self._h(w)
        k = _lookup(_WIRE, kind, "kind", w)
        seq = _args.i64(w, "seq", seq)
        buf = _payload(payload, w)
        b = _Padded("kvb_index_batch")
        _check(lib.kvb_index_decode(buf, len(buf), k, b.ptr), "kvb_index_decode")
        try:
            _check(lib.kvb_index_apply(p, sid, b.ptr.events, b.ptr.n_events, seq),
                   "kvb_index_apply")
            if any(b.ptr.dropped[i] for i in range(11)):
                _check(lib.kvb_index_stream_drop(p, sid, b.ptr.dropped),
                       "kvb_index_stream_drop")
            return b.ptr.n_events
        finally:
            lib.kvb_index_batch_fini(b.ptr)

    # -- queries --

    def _buf(self, k):
        """This thread's result buffer (at least k results) and a memoryview of it:
        matches from several threads never share one."""
        tls = self._tls
        bm = getattr(tls, "bm", None)
        if bm is None or bm[2] < k:
            cap = max(k, 64)
            buf = ffi.new("kvb_index_result[]", cap)
            bm = tls.bm = (buf, memoryview(ffi.buffer(buf)), cap)
        return bm

    def match(self, hashes, k=None):
        """Prefix match of a request's router hashes (a list of int or array('Q')):
        a Matches list of MatchResult, best first (score, then fewest entries, then
        name), streams with no prefix left out; at most k when k is given (.total
        says how many streams matched)."""
        hp, n, keep = _u64(hashes, "Index.match")
        p = self._p
        if p is None:
            self._h("Index.match")
        if k is not None:
            if type(k) is not int or not 0 <= k <= U32:
                k = _args.u32("Index.match", "k", k)
            buf, mv, cap = self._buf(k)
            total = lib.kvb_index_match(p, hp, n, buf, k)
            if total < 0:
                raise _error(total, "kvb_index_match")
            return _results(mv, total if total < k else k, total, n)
        while True:
            buf, mv, cap = self._buf(0)
            total = lib.kvb_index_match(p, hp, n, buf, cap)
            if total < 0:
                raise _error(total, "kvb_index_match")
            if total <= cap:
                return _results(mv, total, total, n)
            self._buf(total + 16)

    def match_tokens(self, tokens, lora_name=None, cache_salt=None, k=None):
        """kvb_index_match_tokens: hash a request (tokens as a list or array('I'),
        its LoRA name or id and cache salt) and match it. Returns Matches like
        match(); .blocks is the request's number of full blocks."""
        w = "Index.match_tokens"
        tp, n, keep = _u32(tokens, w)
        lo = ffi.NULL if lora_name is None else _lora(lora_name, w)
        sa = ffi.NULL if cache_salt is None else _cstr(cache_salt, w, "cache_salt")
        p = self._p
        if p is None:
            self._h(w)
        blocks = ffi.new("uint32_t *")
        if k is not None:
            if type(k) is not int or not 0 <= k <= U32:
                k = _args.u32(w, "k", k)
            buf, mv, cap = self._buf(k)
            total = lib.kvb_index_match_tokens(p, tp, n, lo, sa, buf, k, blocks)
            if total < 0:
                raise _error(total, "kvb_index_match_tokens")
            return _results(mv, total if total < k else k, total, blocks[0])
        while True:
            buf, mv, cap = self._buf(0)
            total = lib.kvb_index_match_tokens(p, tp, n, lo, sa, buf, cap, blocks)
            if total < 0:
                raise _error(total, "kvb_index_match_tokens")
            if total <= cap:
                return _results(mv, total, total, blocks[0])
            self._buf(total + 16)

    # -- snapshots --

    def save(self, path):
        """Write a snapshot atomically (write, fsync, rename); returns its size."""
        out = ffi.new("size_t *")
        _check(lib.kvb_index_save(self._h("Index.save"), _path(path, "Index.save"), out),
               "kvb_index_save")
        return out[0]

    def dumps(self):
        """The same snapshot as bytes (kvb_index_save_mem)."""
        buf = ffi.new("void **")
        n = ffi.new("size_t *")
        _check(lib.kvb_index_save_mem(self._h("Index.dumps"), buf, n), "kvb_index_save_mem")
        try:
            return ffi.buffer(buf[0], n[0])[:]
        finally:
            lib.free(buf[0])

    @classmethod
    def load(cls, path, **config):
        """An Index from a snapshot file. Keyword arguments as the constructor's; when
        given, block_size and seed must be the snapshot's (KvbError EINVAL otherwise).
        KvbError ENOENT (no file), EBADMSG (corrupt, truncated: nothing loaded)."""
        path = _path(path, "Index.load")
        cfg = cls._load_config(config, "Index.load")
        out = ffi.new("kvb_index **")
        _check(lib.kvb_index_load(path, cfg.ptr if cfg else ffi.NULL, out), "kvb_index_load")
        return cls._adopt(out[0])

    @classmethod
    def loads(cls, data, **config):
        """An Index from snapshot bytes (dumps())."""
        buf = _payload(data, "Index.loads", "data")
        cfg = cls._load_config(config, "Index.loads")
        out = ffi.new("kvb_index **")
        _check(lib.kvb_index_load_mem(buf, len(buf), cfg.ptr if cfg else ffi.NULL, out),
               "kvb_index_load_mem")
        return cls._adopt(out[0])

    @classmethod
    def _load_config(cls, config, where):
        if not config:
            return None
        bad = set(config) - set(cls._KW)
        if bad:
            raise TypeError(f"{where}: unknown configuration {sorted(bad)}: the keywords are "
                            f"{cls._KW}")
        return _config(*(config.get(k) for k in cls._KW), where=where)

    # -- stats --

    def stats(self):
        """Counters of the whole index (kvb_index_stats) as a dict."""
        s = _Padded("kvb_index_stats")
        _check(lib.kvb_index_stats_get(self._h("Index.stats"), s.ptr), "kvb_index_stats_get")
        return {f: getattr(s.ptr, f) for f in _STATS_FIELDS}

    def metrics_text(self):
        """Prometheus text exposition of the index and of every stream."""
        p = self._h("Index.metrics_text")
        cap = 1 << 14
        while True:
            buf = ffi.new("char[]", cap)
            need = _check(lib.kvb_index_metrics_text(p, buf, cap), "kvb_index_metrics_text")
            if need < cap:
                return ffi.string(buf, need).decode()
            cap = need + 4096  # streams may be added between the two calls


def _path(path, where):
    try:
        return os.fsencode(path)
    except TypeError:
        raise type_error(where, "path", "a str, bytes or os.PathLike path", path) from None


_STATS_FIELDS = ("streams", "keys", "entries", "memory_bytes", "batches", "events",
                 "block_ops", "matches", "matched_blocks")


# ---- the subscriber ---------------------------------------------------------------


class Subscriber:
    """ZeroMQ subscriber feeding an Index (kvb_subscriber): one C thread owns every
    socket, tracks sequences, replays gaps and applies batches; Python threads keep
    matching meanwhile.

    Subscriber(index, replay_timeout_ms=2000, heartbeat_ivl_ms=1000, tick_ms=100,
               max_message_bytes=64 MiB, max_replay_batches=100000,
               reconnect_ivl_ms=100, reconnect_ivl_max_ms=5000, callback=None)

    callback(note, worker, seq, batch, state), optional, runs on the subscriber's
    thread (with the GIL) after every applied batch (note "batch", batch a Batch),
    every clear it decided ("clear"; state "live" for a restart, "resyncing" for a
    gap it could not replay), and liveness changes ("stale", "live"); batch is None
    for notes other than "batch". It must not call this Subscriber's methods.
    KvbError ENOTSUP when libkvblock was built without ZeroMQ.
    """

    def __init__(self, index, replay_timeout_ms=None, heartbeat_ivl_ms=None, tick_ms=None,
                 max_message_bytes=None, max_replay_batches=None, reconnect_ivl_ms=None,
                 reconnect_ivl_max_ms=None, callback=None):
        self._s = None
        self._index = None
        self._workers = []
        w = "Subscriber"
        _args.instance(w, "index", index, Index)
        _args.callback(w, "callback", callback)
        cfg = _Padded("kvb_subscriber_config")
        c = cfg.ptr
        lib.kvb_subscriber_config_init(c)
        c.index = index._h(w)
        for name, v, hi in (("replay_timeout_ms", replay_timeout_ms, U32),
                            ("heartbeat_ivl_ms", heartbeat_ivl_ms, U32),
                            ("tick_ms", tick_ms, U32),
                            ("max_message_bytes", max_message_bytes, I64_MAX),
                            ("max_replay_batches", max_replay_batches, U32),
                            ("reconnect_ivl_ms", reconnect_ivl_ms, _args.INT_MAX),
                            ("reconnect_ivl_max_ms", reconnect_ivl_max_ms, _args.INT_MAX)):
            if v is not None:
                setattr(c, name, _args.integer(w, name, v, 0, hi))
        self._cb = None
        if callback is not None:
            def _note(user, note, worker, seq, batch, state, f=callback):
                f(_name(note, NOTES), ffi.string(worker).decode() if worker else None, seq,
                  _py_batch(batch) if batch != ffi.NULL else None, _name(state, STATES))

            # kept alive until the C subscriber is destroyed (close() or __del__)
            self._cb = ffi.callback("kvb_subscriber_cb", _note)
            c.callback = self._cb
        out = ffi.new("kvb_subscriber **")
        _check(lib.kvb_subscriber_create(c, out), "kvb_subscriber_create")
        self._s = out[0]
        self._index = index  # the C subscriber points at index's kvb_index: keep it
        index._subs += 1

    @property
    def index(self):
        return self._index

    def _h(self, where="Subscriber"):
        s = self._s
        if s is None:
            raise ValueError(f"{where}: the Subscriber is closed")
        return s

    def add_worker(self, name, endpoint, replay=None, kind="vllm", block_size=0, topic=""):
        """Subscribe to a worker's PUB endpoint (replay: its ROUTER endpoint for gaps).
        kind: "vllm" (events carry token ids: engine hashes), "sglang", or "kvblock"
        (block hashes are router hashes). KvbError EEXIST, EINVAL, or a connect error."""
        where = "Subscriber.add_worker"
        sub = self._h(where)
        w = _Padded("kvb_subscriber_worker")
        strs = [ffi.new("char[]", _name_arg(name, where, "name")),
                ffi.new("char[]", _name_arg(endpoint, where, "endpoint"))]
        w.ptr.name, w.ptr.endpoint = strs
        _args.string(where, "replay", replay, none_ok=True)
        _args.string(where, "topic", topic, none_ok=True)
        if replay:
            strs.append(ffi.new("char[]", replay.encode()))
            w.ptr.replay_endpoint = strs[-1]
        if topic:
            strs.append(ffi.new("char[]", topic.encode()))
            w.ptr.topic = strs[-1]
        w.ptr.kind = _lookup(_WIRE, kind, "kind", where)
        w.ptr.block_size = _args.u32(where, "block_size", block_size)
        _check(lib.kvb_subscriber_add_worker(sub, w.ptr), "kvb_subscriber_add_worker")
        self._workers.append(name)

    def remove_worker(self, name, drop=False):
        """Unsubscribe; drop=True also removes the worker's streams from the index."""
        w = "Subscriber.remove_worker"
        _check(lib.kvb_subscriber_remove_worker(self._h(w), _name_arg(name, w, "name"),
                                                bool(drop)),
               "kvb_subscriber_remove_worker")
        if name in self._workers:
            self._workers.remove(name)

    def workers(self):
        """Names of the workers subscribed through this object."""
        return list(self._workers)

    def worker_info(self, name=None):
        """A worker's subscription state as a dict (connected, heard, expected_seq,
        messages, bad_messages, gaps, replays, replay_failures, restarts,
        bad_payloads); with no
        name, a dict name -> that for every worker."""
        if name is None:
            return {n: self.worker_info(n) for n in self._workers}
        w = "Subscriber.worker_info"
        info = _Padded("kvb_subscriber_worker_info")
        _check(lib.kvb_subscriber_worker_info_get(self._h(w), _name_arg(name, w, "name"),
                                                  info.ptr),
               "kvb_subscriber_worker_info_get")
        i = info.ptr
        return {"name": ffi.string(i.name).decode(), "connected": bool(i.connected),
                "heard": bool(i.heard), "expected_seq": i.expected_seq,
                "messages": i.messages, "bad_messages": i.bad_messages, "gaps": i.gaps,
                "replays": i.replays, "replay_failures": i.replay_failures,
                "restarts": i.restarts, "bad_payloads": i.bad_payloads}

    def ready(self):
        """Whether every worker has been heard from or marked stale (/healthz)."""
        return bool(lib.kvb_subscriber_ready(self._h("Subscriber.ready")))

    def sync(self, timeout=5.0):
        """Wait until the subscriber thread has processed what had arrived on its
        sockets when called. KvbError ETIMEDOUT after timeout seconds."""
        w = "Subscriber.sync"
        ms = int(_args.number(w, "timeout", timeout, lo=0) * 1000)
        if ms > U32:
            raise ValueError(f"{w}: timeout must be at most {U32 // 1000} seconds, "
                             f"not {timeout!r}")
        _check(lib.kvb_subscriber_sync(self._h(w), ms), "kvb_subscriber_sync")

    def close(self):
        """Stop the thread and close the sockets (the index keeps its streams)."""
        s = self._s
        if s is None:
            return
        self._s = None
        try:
            _check(lib.kvb_subscriber_destroy(s), "kvb_subscriber_destroy")
        finally:
            idx = self._index
            idx._subs -= 1
            self._cb = None
            if not idx._subs and getattr(idx, "_orphaned", False):
                idx.__del__()  # its finalizer ran while this subscriber was open

    @property
    def closed(self):
        return self._s is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        if getattr(self, "_s", None) is not None:
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self):
        if self._s is None:
            return "Subscriber(closed)"
        return f"Subscriber({len(self._workers)} workers)"
