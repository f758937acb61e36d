"""The kvblock binding: pools, handles, batches, hashes, registry, errors.

Handles mirror the C value structs (kvb_mutable, kvb_complete, kvb_block,
kvb_weak) and obey the same rule: release each exactly once. Every handle is a
context manager that releases it on exit unless it was consumed or released
already (like KVB_SCOPED in C). Batch calls take a Hashes buffer (or a list of
Hash, or any buffer of 16-byte hashes) and return a batch object (Mutables,
Completes, Blocks) that holds the C handle array: indexing it gives handle
objects that are views into the array; releasing the batch releases every
handle still live in it with one C call. Hot loops can pass out= batches to
reuse their memory (no Python object per block).

Thread safety: as the C library's. Pool, Registry and the module functions may
be used from any thread (calls release the GIL); a handle or batch object must
not be used by two threads at once (as a C handle must not be released twice).
Callbacks (on_evict, on_reset, the event sink) run in whatever thread triggers
them, with no kvblock lock held, and may call back into the pool.

Arguments are checked: a wrong type raises TypeError, a wrong value ValueError,
each naming the call and the parameter (see kvblock._args); errors of the C
library raise KvbError.
"""
import collections
import errno

from . import _args
from ._args import U32, type_error
from ._ffi import LAYOUT, _Padded, ffi, lib

_BLOCK_SIZE = ffi.sizeof("kvb_block")
_HASH_SIZE = ffi.sizeof("kvb_hash")


# ---- errors -------------------------------------------------------------------


class KvbError(OSError):
    """A kvblock call failed. errno is the positive errno value, name its symbolic
    name (kvb_err_name: "ENOSPC", "ESTALE", ...), strerror kvb_strerror's text."""

    def __init__(self, rc, what=""):
        if type(rc) is not int:
            rc = _args.integer("KvbError", "rc", rc, -_args.INT_MAX, _args.INT_MAX)
        what = _args.string("KvbError", "what", what)
        msg = ffi.string(lib.kvb_strerror(rc)).decode()
        super().__init__(-rc, f"{what}: {msg}" if what else msg)
        self.name = ffi.string(lib.kvb_err_name(rc)).decode()
        self.rc = rc


def _check(rc, what):
    if rc < 0:
        raise KvbError(rc, what)
    return rc


def strerror(err):
    """kvb_strerror: the text of a (negative or positive) errno value."""
    err = _args.integer("strerror", "err", err, -_args.INT_MAX, _args.INT_MAX)
    return ffi.string(lib.kvb_strerror(-abs(err))).decode()


def err_name(err):
    """kvb_err_name: "ENOSPC" for ENOSPC or -ENOSPC."""
    err = _args.integer("err_name", "err", err, -_args.INT_MAX, _args.INT_MAX)
    return ffi.string(lib.kvb_err_name(-abs(err))).decode()


# ---- hashes -------------------------------------------------------------------


class Hash:
    """A 128-bit positional lineage hash (kvb_hash): immutable, hashable.
    Hash(hi, lo) takes the two 64-bit words (unsigned); Hash.make builds one."""

    __slots__ = ("hi", "lo")

    def __init__(self, hi, lo):
        if type(hi) is not int or type(lo) is not int or (hi | lo) >> 64:
            hi = _args.u64("Hash", "hi", hi)  # (hi | lo) >> 64: either < 0 or >= 2**64
            lo = _args.u64("Hash", "lo", lo)
        self.hi = hi
        self.lo = lo

    @classmethod
    def make(cls, current, parent=None, position=0):
        """kvb_hash_make(current, parent, parent is not None, position): current and
        parent are 64-bit sequence hashes (ints), position the block's index."""
        current = _args.u64("Hash.make", "current", current)
        if parent is not None:
            parent = _args.u64("Hash.make", "parent", parent)
        position = _args.u32("Hash.make", "position", position)
        out = ffi.new("kvb_hash *")
        _check(lib.kvb_hash_make(current, parent or 0, parent is not None, position, out),
               "kvb_hash_make")
        return cls(out.hi, out.lo)

    @classmethod
    def _from_c(cls, h):
        return cls(h.hi, h.lo)

    def _c(self):
        return (self.hi, self.lo)

    @property
    def position(self):
        return lib.kvb_hash_position(self._c())

    @property
    def current(self):
        """The 64-bit sequence hash: the projection routers use (vLLM events)."""
        return lib.kvb_hash_current(self._c())

    @property
    def parent_fragment(self):
        return lib.kvb_hash_parent_fragment(self._c())

    def is_parent_of(self, child):
        _args.instance("Hash.is_parent_of", "child", child, Hash)
        return bool(lib.kvb_hash_is_parent(self._c(), child._c()))

    def extend(self, current):
        """The child hash at the next position (kvb_hash_extend)."""
        current = _args.u64("Hash.extend", "current", current)
        out = ffi.new("kvb_hash *")
        _check(lib.kvb_hash_extend(self._c(), current, out), "kvb_hash_extend")
        return Hash(out.hi, out.lo)

    def __eq__(self, other):
        return isinstance(other, Hash) and self.hi == other.hi and self.lo == other.lo

    def __hash__(self):
        return hash((self.hi, self.lo))

    def __str__(self):
        buf = ffi.new("char[80]")
        lib.kvb_hash_format(self._c(), buf, 80)
        return ffi.string(buf).decode()

    def __repr__(self):
        return f"Hash({self})"


_HASHES_TEXT = "a kvblock.Hashes, a list of kvblock.Hash or a buffer of 16-byte hashes"


class Hashes:
    """A compact array of kvb_hash (16 bytes each), the input of batch calls.
    Slicing with step 1 gives a view sharing the memory (no copy).

    Hashes(n) is n zero hashes (to be filled, e.g. by from_lineage(out=...));
    Hashes(iterable of Hash) copies them."""

    __slots__ = ("_buf", "_ptr", "_n")

    def __init__(self, n_or_iterable=0):
        if isinstance(n_or_iterable, int):
            n = _args.u32("Hashes", "n_or_iterable", n_or_iterable)
            self._buf = ffi.new("kvb_hash[]", max(n, 1))
            self._ptr = self._buf
            self._n = n
        else:
            self._fill(n_or_iterable, "Hashes", "n_or_iterable",
                       "a count or an iterable of kvblock.Hash")

    def _fill(self, iterable, where, name, expected=_HASHES_TEXT):
        if isinstance(iterable, (str, bytes, bytearray, float)):
            raise _not_hashes(where, name, iterable, expected)
        try:
            items = list(iterable)
        except TypeError:
            raise _not_hashes(where, name, iterable, expected) from None
        buf = ffi.new("kvb_hash[]", max(len(items), 1))
        try:
            for i, h in enumerate(items):
                buf[i].hi = h.hi
                buf[i].lo = h.lo
        except (AttributeError, TypeError, OverflowError):
            _bad_hash_item(where, name, items)
            raise
        self._buf = buf
        self._ptr = buf
        self._n = len(items)

    @classmethod
    def _view(cls, buf, ptr, n):
        self = cls.__new__(cls)
        self._buf = buf
        self._ptr = ptr
        self._n = n
        return self

    @classmethod
    def from_buffer(cls, data):
        """A view of any buffer holding 16-byte hashes (hi, lo as native u64)."""
        return cls._of_buffer(data, "Hashes.from_buffer", "data",
                              "a buffer of 16-byte hashes (bytes, bytearray, memoryview...)")

    @classmethod
    def _of_buffer(cls, data, where, name, expected=_HASHES_TEXT):
        try:
            mv = memoryview(data).cast("B")
        except TypeError:
            raise _not_hashes(where, name, data, expected) from None
        if len(mv) % _HASH_SIZE:
            raise ValueError(f"{where}: {name} is a buffer of {len(mv)} bytes, not a "
                             f"multiple of {_HASH_SIZE} (one kvb_hash)")
        buf = ffi.from_buffer("kvb_hash[]", mv, require_writable=False)
        return cls._view((buf, data), buf, len(mv) // _HASH_SIZE)

    @classmethod
    def from_tokens(cls, tokens, block_size=16, salt_hash=0):
        """Lineage hashes of the full blocks of a token sequence (kvb_hash_tokens)."""
        return cls._of_tokens(tokens, block_size, salt_hash, "Hashes.from_tokens")

    @classmethod
    def _of_tokens(cls, tokens, block_size, salt_hash, where):
        block_size = _args.u32(where, "block_size", block_size, lo=1)
        salt_hash = _args.u64(where, "salt_hash", salt_hash)
        tptr, n_tok, keep = _u32(tokens, where, "tokens")
        cap = n_tok // block_size
        out = cls(cap)
        k = _check(lib.kvb_hash_tokens(tptr, n_tok, block_size, salt_hash, out._ptr, cap),
                   "kvb_hash_tokens")
        out._n = k
        return out

    @classmethod
    def from_lineage(cls, ids, out=None, offset=0):
        """The prefix-replay convention: id ids[j] after ids[j-1] at position j
        (kvb_hash_make(ids[j], ids[j-1], j > 0, j)). Writes into out at offset
        when given (and returns out): out must hold offset + len(ids) hashes."""
        where = "Hashes.from_lineage"
        if isinstance(ids, (str, bytes, bytearray)):
            raise type_error(where, "ids", "a sequence of int ids", ids)
        try:
            n = len(ids)
        except TypeError:
            raise type_error(where, "ids", "a sequence of int ids", ids) from None
        if out is None:
            if offset != 0:
                raise ValueError(f"{where}: offset {offset!r} given without out")
            out = cls(n)
        else:
            _args.instance(where, "out", out, Hashes)
            offset = _args.u32(where, "offset", offset)
            if offset + n > out._n:
                raise ValueError(f"{where}: out holds {out._n} hashes, too few for "
                                 f"{n} ids at offset {offset}")
        make = lib.kvb_hash_make
        p = out._ptr + offset
        prev = 0
        j = 0
        try:
            for j, x in enumerate(ids):
                rc = make(x, prev, j > 0, j, p + j)
                if rc < 0:
                    raise KvbError(rc, "kvb_hash_make")
                prev = x
        except (TypeError, OverflowError):
            _args.u64(where, f"ids[{j}]", ids[j])
            raise
        return out

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if step != 1:
                raise ValueError("Hashes slices must be contiguous")
            return Hashes._view(self._buf, self._ptr + start, max(0, stop - start))
        h = self._ptr[_args.index_of("Hashes", i, self._n)]
        return Hash(h.hi, h.lo)

    def __iter__(self):
        for i in range(self._n):
            h = self._ptr[i]
            yield Hash(h.hi, h.lo)

    def currents(self):
        """The 64-bit projections (kvb_hash_current) of every hash."""
        return [lib.kvb_hash_current(self._ptr[i]) for i in range(self._n)]

    def __repr__(self):
        return f"Hashes({self._n})"


def _not_hashes(where, name, x, expected=_HASHES_TEXT):
    hint = ""
    if isinstance(x, int):
        hint = " (make hashes with kvblock.hash_tokens, Hashes.from_lineage or Hash.make)"
    return type_error(where, name, expected, x, hint)


def _bad_hash_item(where, name, items):
    """Raise the error of the first item of items that is not a usable Hash."""
    for i, h in enumerate(items):
        if not (hasattr(h, "hi") and hasattr(h, "lo")):
            hint = ""
            if isinstance(h, int):
                hint = (" (make hashes with kvblock.hash_tokens, Hashes.from_lineage or "
                        "Hash.make)")
            raise type_error(where, f"{name}[{i}]",
                             "a kvblock.Hash (or an object with int .hi and .lo)", h, hint)
        _args.u64(where, f"{name}[{i}].hi", h.hi)
        _args.u64(where, f"{name}[{i}].lo", h.lo)


def _hashes(x, where, name="hashes"):
    """(pointer, n, keepalive) for a Hashes, a list of Hash or a buffer."""
    if isinstance(x, Hashes):
        return x._ptr, x._n, x
    if isinstance(x, (list, tuple)):
        h = Hashes.__new__(Hashes)
        h._fill(x, where, name)
        return h._ptr, h._n, h
    if isinstance(x, Hash):
        h = Hashes([x])
        return h._ptr, 1, h
    h = Hashes._of_buffer(x, where, name)
    return h._ptr, h._n, h


def _u32(tokens, where, name):
    """(uint32_t pointer, count, keepalive) for a list of ints or a uint32 buffer
    (array('I'), memoryview...): buffers are used in place."""
    try:
        mv = memoryview(tokens)
    except TypeError:
        mv = None
    if mv is not None and mv.itemsize == 4 and mv.format in ("I", "=I", "<I", "@I"):
        mv = mv.cast("B").cast("I")
        return ffi.from_buffer("uint32_t[]", mv, require_writable=False), len(mv), mv
    expected = "a list of int token ids or a uint32 buffer (array('I'))"
    if isinstance(tokens, (str, float)):
        raise type_error(where, name, expected, tokens)
    try:
        lst = list(tokens)
    except TypeError:
        raise type_error(where, name, expected, tokens) from None
    arr = ffi.new("uint32_t[]", max(len(lst), 1))
    try:
        for i, t in enumerate(lst):
            arr[i] = t
    except (TypeError, OverflowError):
        for i, t in enumerate(lst):
            _args.u32(where, f"{name}[{i}]", t)
        raise
    return arr, len(lst), arr


def hash_salt(salt):
    """XXH3-64 of the salt bytes (seed 0); b"" gives 0. salt: str (UTF-8) or bytes."""
    if isinstance(salt, str):
        salt = salt.encode()
    elif not isinstance(salt, bytes):
        try:
            salt = memoryview(salt).tobytes()
        except TypeError:
            raise type_error("hash_salt", "salt", "a str or bytes", salt) from None
    return lib.kvb_hash_salt(salt, len(salt))


def hash_block(tokens, salt_hash=0):
    """XXH3-64 of the tokens as little-endian u32, seeded with salt_hash."""
    salt_hash = _args.u64("hash_block", "salt_hash", salt_hash)
    ptr, n, keep = _u32(tokens, "hash_block", "tokens")
    return lib.kvb_hash_block(ptr, n, salt_hash)


def hash_chain(parent_seq, block_hash):
    """One sequence-hash chain step (XXH3-64, seed 1337, of the two u64)."""
    return lib.kvb_hash_chain(_args.u64("hash_chain", "parent_seq", parent_seq),
                              _args.u64("hash_chain", "block_hash", block_hash))


def hash_tokens(tokens, block_size=16, salt_hash=0):
    """Lineage hashes of the full blocks of tokens, as a Hashes buffer."""
    return Hashes._of_tokens(tokens, block_size, salt_hash, "hash_tokens")


# ---- handles --------------------------------------------------------------------


class _Handle:
    """Common part: a pointer to one C handle (own storage or a slot of a batch)."""

    __slots__ = ("_pool", "_ptr", "_keep")
    _ctype = None

    def __init__(self, pool, ptr=None, keep=None):
        self._pool = pool
        if ptr is None:
            keep = ffi.new(self._ctype + " *")
            ptr = keep
        self._ptr = ptr
        self._keep = keep

    @property
    def live(self):
        """False once released or consumed (the C handle is zero-filled)."""
        return self._ptr.pool != ffi.NULL

    @property
    def id(self):
        return self._ptr.id

    @property
    def pool(self):
        return self._pool

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.live:
            self.release()
        return False

    def __repr__(self):
        state = f"id={self._ptr.id}" if self.live else "released"
        return f"{type(self).__name__}({state})"


class Mutable(_Handle):
    """A MUTABLE block being filled by its one owner: stage or release it."""

    __slots__ = ()
    _ctype = "kvb_mutable"

    def stage(self, hash):
        """MUTABLE -> STAGED with its content hash; consumes self."""
        _args.instance("Mutable.stage", "hash", hash, Hash)
        c = Complete(self._pool)
        _check(lib.kvb_mutable_stage(self._ptr, hash._c(), c._ptr), "kvb_mutable_stage")
        return c

    def release(self):
        _check(lib.kvb_mutable_release(self._ptr), "kvb_mutable_release")


class Complete(_Handle):
    """A STAGED block (full, hashed, not registered): register, reset or release."""

    __slots__ = ()
    _ctype = "kvb_complete"

    @property
    def hash(self):
        return Hash._from_c(self._ptr.hash)

    def register(self):
        """Register this one block; consumes self, returns a Block."""
        b = Block(self._pool)
        _check(lib.kvb_pool_register(self._pool._h("Complete.register"), self._ptr, 1, b._ptr),
               "kvb_pool_register")
        return b

    def reset(self):
        """STAGED -> MUTABLE; consumes self."""
        m = Mutable(self._pool)
        _check(lib.kvb_complete_reset(self._ptr, m._ptr), "kvb_complete_reset")
        return m

    def release(self):
        _check(lib.kvb_complete_release(self._ptr), "kvb_complete_release")


class Block(_Handle):
    """One counted reference to a PRIMARY or DUPLICATE block. Release it once."""

    __slots__ = ()
    _ctype = "kvb_block"

    @property
    def hash(self):
        return Hash._from_c(self._ptr.hash)

    @property
    def use_count(self):
        return lib.kvb_block_use_count(self._ptr)

    @property
    def address(self):
        """(pool id, block id, hash): unique across the pools of the process."""
        a = ffi.new("kvb_block_addr *")
        _check(lib.kvb_block_address(self._ptr, a), "kvb_block_address")
        return (a.pool_id, a.block_id, Hash._from_c(a.hash))

    def clone(self):
        """One more reference (lock-free)."""
        b = Block(self._pool)
        _check(lib.kvb_block_clone(self._ptr, b._ptr), "kvb_block_clone")
        return b

    def downgrade(self):
        w = Weak(self._pool)
        lib.kvb_block_downgrade(self._ptr, w._ptr)
        return w

    def set_reset_on_release(self, on=True):
        _check(lib.kvb_block_set_reset_on_release(self._ptr, bool(on)),
               "kvb_block_set_reset_on_release")

    def release(self):
        _check(lib.kvb_block_release(self._ptr), "kvb_block_release")


class Weak(_Handle):
    """A weak reference: keeps nothing alive, needs no release."""

    __slots__ = ()
    _ctype = "kvb_weak"

    @property
    def hash(self):
        return Hash._from_c(self._ptr.hash)

    def upgrade(self):
        """A live reference (resurrecting from the cache if needed); KvbError ENOENT
        when the content is gone."""
        b = Block(self._pool)
        _check(lib.kvb_weak_upgrade(self._ptr, b._ptr), "kvb_weak_upgrade")
        return b

    def release(self):
        pass

    def __exit__(self, *exc):
        return False


# ---- batches ------------------------------------------------------------------------


_new_object = object.__new__


class _Batch:
    """An array of C handles; len() is how many are meaningful."""

    __slots__ = ("_pool", "_arr", "_cap", "_n", "hit")
    _ctype = None
    _item = None

    def __init__(self, pool, capacity):
        if type(capacity) is not int or not 0 <= capacity <= U32 or type(pool) is not Pool:
            where = type(self).__name__
            _args.instance(where, "pool", pool, Pool)
            capacity = _args.u32(where, "capacity", capacity)
        self._pool = pool
        self._cap = capacity
        self._arr = ffi.new(self._ctype + "[]", max(capacity, 1))
        self._n = 0
        self.hit = None

    @classmethod
    def _new(cls, pool, capacity):
        """A batch for the binding's own calls, whose pool and capacity are right
        already (no checks, one Python frame)."""
        self = _new_object(cls)
        self._pool = pool
        self._cap = capacity
        self._arr = ffi.new(cls._ctype + "[]", max(capacity, 1))
        self._n = 0
        self.hit = None
        if cls is Blocks:
            self._scratch = None
        return self

    def _reserve(self, n, where="", name="out"):
        if n > self._cap:
            raise ValueError(f"{where + ': ' if where else ''}{name} is a "
                             f"{type(self).__name__} of capacity {self._cap}: it cannot hold "
                             f"{n} handles")

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        return self._item(self._pool, self._arr + _args.index_of(type(self).__name__, i, self._n),
                          self)

    def __iter__(self):
        for i in range(self._n):
            yield self._item(self._pool, self._arr + i, self)

    def live(self):
        """Number of handles not yet released or consumed."""
        return sum(1 for i in range(self._n) if self._arr[i].pool != ffi.NULL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __repr__(self):
        return f"{type(self).__name__}({self._n})"


class Mutables(_Batch):
    """Mutable blocks from Pool.allocate."""

    __slots__ = ()
    _ctype = "kvb_mutable"
    _item = Mutable

    def stage(self, hashes, out=None):
        """Stage every block with hashes[i] (one lock): consumes the batch."""
        return self._pool.stage(self, hashes, out=out)

    def release(self):
        """Release every mutable handle still live."""
        for i in range(self._n):
            if self._arr[i].pool != ffi.NULL:
                _check(lib.kvb_mutable_release(self._arr + i), "kvb_mutable_release")


class Completes(_Batch):
    """Staged blocks from Pool.stage."""

    __slots__ = ()
    _ctype = "kvb_complete"
    _item = Complete

    def register(self, out=None, offset=0):
        return self._pool.register(self, out=out, offset=offset)

    def release(self):
        for i in range(self._n):
            if self._arr[i].pool != ffi.NULL:
                _check(lib.kvb_complete_release(self._arr + i), "kvb_complete_release")


class Blocks(_Batch):
    """Block references from match, scan, register. For match_scattered and scan,
    hit[i] says whether entry i holds a reference (misses are zero-filled)."""

    __slots__ = ("_scratch", "_mv_arr", "_mv_sc")
    _ctype = "kvb_block"
    _item = Block

    def __init__(self, pool, capacity):
        super().__init__(pool, capacity)
        self._scratch = None

    def hashes(self):
        return [Hash._from_c(self._arr[i].hash) for i in range(self._n)]

    def ids(self):
        return [self._arr[i].id for i in range(self._n)]

    def release(self, reverse=False):
        """Release every live reference with one kvb_block_release_n (one lock).
        reverse=True releases them last-first (deeper blocks of a prefix leave the
        cache after their prefixes: what recency policies want)."""
        n = self._n
        if n == 0:
            return
        arr = self._arr
        if reverse and n > 1:
            if self._scratch is None:
                cap = max(self._cap, 1)
                self._scratch = ffi.new("kvb_block[]", cap)
                self._mv_arr = memoryview(ffi.buffer(arr, cap * _BLOCK_SIZE)).cast("Q")
                self._mv_sc = memoryview(ffi.buffer(self._scratch, cap * _BLOCK_SIZE)).cast("Q")
            sc, src, dst = self._scratch, self._mv_arr, self._mv_sc
            # reverse the 32-byte records with four strided 8-byte lane copies (C speed)
            last, end = 4 * (n - 1), 4 * n
            dst[0:end:4] = src[last::-4]
            dst[1:end:4] = src[last + 1::-4]
            dst[2:end:4] = src[last + 2::-4]
            dst[3:end:4] = src[last + 3::-4]
            rc = lib.kvb_block_release_n(sc, n)
            if rc == 0:  # every entry released (the scratch copies are cleared)
                self._n = 0
                return
            ffi.memmove(arr, sc, n * _BLOCK_SIZE)  # what is left, reversed: checked below
        else:
            rc = lib.kvb_block_release_n(arr, n)
        if rc == -_ESTALE:
            # cleared entries (misses, handles released one by one) are fine;
            # anything else still named a pool: a real stale handle
            if any(arr[i].pool != ffi.NULL for i in range(n)):
                raise KvbError(rc, "kvb_block_release_n")
        elif rc < 0:
            raise KvbError(rc, "kvb_block_release_n")
        self._n = 0


_ESTALE = errno.ESTALE


# ---- registry -----------------------------------------------------------------------


class Registry:
    """A registry shared by the pools of several tiers: presence and frequency.
    Registry(capacity=0): capacity 0 takes the C default."""

    def __init__(self, capacity=0):
        self._r = None
        capacity = _args.u32("Registry", "capacity", capacity)
        cfg = _Padded("kvb_registry_config")
        lib.kvb_registry_config_init(cfg.ptr)
        if capacity:
            cfg.ptr.capacity = capacity
        out = ffi.new("kvb_registry **")
        _check(lib.kvb_registry_create(cfg.ptr, out), "kvb_registry_create")
        self._r = out[0]

    def _h(self, where):
        r = self._r
        if r is None:
            raise ValueError(f"{where}: the Registry is closed")
        return r

    def present(self, hashes, pool):
        """[bool]: is each hash present (held or cached) in pool?"""
        r = self._h("Registry.present")
        ptr, n, keep = _hashes(hashes, "Registry.present")
        p = _args.instance("Registry.present", "pool", pool, Pool)._h("Registry.present")
        out = ffi.new("bool[]", max(n, 1))
        _check(lib.kvb_registry_present(r, ptr, n, p, out), "kvb_registry_present")
        return [bool(out[i]) for i in range(n)]

    def frequency(self, hash):
        _args.instance("Registry.frequency", "hash", hash, Hash)
        return lib.kvb_registry_frequency(self._h("Registry.frequency"), hash._c())

    def touch(self, hash):
        _args.instance("Registry.touch", "hash", hash, Hash)
        lib.kvb_registry_touch(self._h("Registry.touch"), hash._c())

    def close(self):
        if self._r is not None:
            _check(lib.kvb_registry_destroy(self._r), "kvb_registry_destroy")
            self._r = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---- pools -----------------------------------------------------------------------------

_EVICT = {"lru": 0, "fifo": 1, "multi_lru": 2, "tinylfu": 3, "lineage": 4, "lineage_arc": 5,
          "adaptive": 6}
_DUP = {"allow": 0, "reject": 1}
_EMIT = {"all": 0, "pow2": 1}
_EVTYPE = {1: "stored", 2: "removed", 3: "cleared"}

Event = collections.namedtuple(
    "Event", "type seq hashes block_ids parent block_size token_ids medium")
Event.__doc__ = """One KV event: type is "stored", "removed" or "cleared"; parent is a
Hash or None; token_ids a list or None; hashes a list of Hash."""


def _to_event(e):
    n = e.n
    hashes = [Hash(e.hashes[i].hi, e.hashes[i].lo) for i in range(n)]
    ids = [e.block_ids[i] for i in range(n)] if n else []
    toks = None
    if e.token_ids != ffi.NULL:
        toks = list(ffi.unpack(e.token_ids, n * e.block_size))
    return Event(_EVTYPE.get(e.type, str(e.type)), e.seq, hashes, ids,
                 Hash(e.parent.hi, e.parent.lo) if e.has_parent else None, e.block_size,
                 toks, ffi.string(e.medium).decode() if e.medium != ffi.NULL else None)


class Pool:
    """A kvblock pool: the blocks of one memory tier.

    Pool(block_count, block_size=16, evict="lru", dup="allow",
         reset_on_release=False, name=None, registry=None,
         on_evict=None, on_reset=None,
         events=None, events_emit="all", pow2_range=(0, 0),
         events_batch_max=0, events_delay_ms=0, events_medium=None)

    on_evict(hash, block_id), on_reset(block_id) and events(list_of_Event) are
    called outside the pool lock, from whatever thread caused them (events: from
    the thread that delivers, possibly the event timer thread).
    Close it (or use it as a context manager) when every handle is released.
    """

    def __init__(self, block_count, block_size=16, evict="lru", dup="allow",
                 reset_on_release=False, name=None, registry=None, on_evict=None,
                 on_reset=None, events=None, events_emit="all", pow2_range=(0, 0),
                 events_batch_max=0, events_delay_ms=0, events_medium=None):
        self._p = None
        w = "Pool"
        block_count = _args.u32(w, "block_count", block_count)
        block_size = _args.u32(w, "block_size", block_size)
        evict = _args.choice(w, "evict", evict, _EVICT)
        dup = _args.choice(w, "dup", dup, _DUP)
        _args.string(w, "name", name, none_ok=True)
        if registry is not None:
            _args.instance(w, "registry", registry, Registry, "a kvblock.Registry or None")
            registry._h(w)
        _args.callback(w, "on_evict", on_evict)
        _args.callback(w, "on_reset", on_reset)
        _args.callback(w, "events", events)
        emit = _args.choice(w, "events_emit", events_emit, _EMIT)
        if isinstance(pow2_range, (str, bytes)):
            raise type_error(w, "pow2_range", "a pair of ints (min, max)", pow2_range)
        try:
            pow2_min, pow2_max = pow2_range
        except (TypeError, ValueError):
            raise type_error(w, "pow2_range", "a pair of ints (min, max)", pow2_range) from None
        pow2_min = _args.u32(w, "pow2_range[0]", pow2_min)
        pow2_max = _args.u32(w, "pow2_range[1]", pow2_max)
        events_batch_max = _args.u32(w, "events_batch_max", events_batch_max)
        events_delay_ms = _args.u32(w, "events_delay_ms", events_delay_ms)
        _args.string(w, "events_medium", events_medium, none_ok=True)
        cfg = _Padded("kvb_pool_config")
        c = cfg.ptr
        lib.kvb_pool_config_init(c)
        c.block_count = block_count
        c.block_size = block_size
        c.evict = evict
        c.dup_policy = dup
        c.reset_on_release = bool(reset_on_release)
        keep = []
        if name is not None:
            nm = ffi.new("char[]", name.encode())
            keep.append(nm)
            c.name = nm
        self._registry = registry
        if registry is not None:
            c.registry = registry._r
        self._cbs = []
        if on_evict is not None:
            def _ev(user, h, bid, f=on_evict):
                f(Hash(h.hi, h.lo), bid)
            cb = ffi.callback("void(void *, kvb_hash, uint32_t)", _ev)
            self._cbs.append(cb)
            c.callbacks.on_evict = cb
        if on_reset is not None:
            cb = ffi.callback("void(void *, uint32_t)", lambda user, bid, f=on_reset: f(bid))
            self._cbs.append(cb)
            c.callbacks.on_reset = cb
        if events is not None:
            ec = _Padded("kvb_event_config")
            lib.kvb_event_config_init(ec.ptr)

            def _sink(user, pool, evs, n, f=events):
                f([_to_event(evs[i]) for i in range(n)])

            cb = ffi.callback("void(void *, const kvb_pool *, const kvb_event *, uint32_t)",
                              _sink)
            self._cbs.append(cb)
            ec.ptr.sink = cb
            ec.ptr.emit = emit
            ec.ptr.pow2_min, ec.ptr.pow2_max = pow2_min, pow2_max
            ec.ptr.batch_max = events_batch_max
            ec.ptr.batch_delay_ms = events_delay_ms
            if events_medium is not None:
                md = ffi.new("char[]", events_medium.encode())
                keep.append(md)
                ec.ptr.medium = md
            keep.append(ec)
            c.events = ec.ptr
        out = ffi.new("kvb_pool **")
        _check(lib.kvb_pool_create(c, out), "kvb_pool_create")
        self._p = out[0]

    # -- lifetime --

    def _h(self, where):
        """The C pool; ValueError once closed."""
        p = self._p
        if p is None:
            raise ValueError(f"{where}: the Pool is closed")
        return p

    def close(self):
        """kvb_pool_destroy: KvbError EBUSY (pool unchanged) while handles are out."""
        if self._p is not None:
            _check(lib.kvb_pool_destroy(self._p), "kvb_pool_destroy")
            self._p = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        p = getattr(self, "_p", None)
        if p is not None:
            try:
                lib.kvb_pool_destroy(p)  # best effort: a pool with handles out stays
            except Exception:
                pass

    # -- properties --

    @property
    def id(self):
        return lib.kvb_pool_id(self._h("Pool.id"))

    @property
    def block_count(self):
        return lib.kvb_pool_block_count(self._h("Pool.block_count"))

    @property
    def block_size(self):
        return lib.kvb_pool_block_size(self._h("Pool.block_size"))

    @property
    def name(self):
        return ffi.string(lib.kvb_pool_name(self._h("Pool.name"))).decode()

    @property
    def policy(self):
        return ffi.string(lib.kvb_pool_policy_name(self._h("Pool.policy"))).decode()

    @property
    def available(self):
        return lib.kvb_pool_available(self._h("Pool.available"))

    # -- argument errors of the batch calls (called only once a call has failed) --

    def _bad_out(self, where, out, cls, need, name="out"):
        """Raise why out (not None) cannot take need handles of this pool."""
        _args.instance(where, name, out, cls, f"a kvblock.{cls.__name__} or None")
        if out._pool is not self:
            raise ValueError(f"{where}: {name} is a {cls.__name__} of another Pool")
        out._reserve(need, where, name)

    def _bad_args(self, where, hashes=None, out=None, cls=None, batch=None, bcls=None,
                  bname=None):
        """Find the wrong argument of a batch call that raised TypeError,
        AttributeError or OverflowError inside cffi, and raise a clear error."""
        self._h(where)
        if batch is not None or bcls is not None:
            _args.instance(where, bname, batch, bcls)
        if hashes is not None:
            _hashes(hashes, where)
        if out is not None:
            self._bad_out(where, out, cls, 0)

    # -- batch calls --

    def allocate(self, n, out=None, evicted=None):
        """n mutable blocks, all or nothing (KvbError ENOSPC). evicted: a Hashes of
        capacity >= n to receive the evicted hashes (its length is set)."""
        try:
            if out is None:
                if type(n) is not int or not 0 <= n <= U32:
                    n = _args.u32("Pool.allocate", "n", n)
                out = Mutables._new(self, n)
            elif out._pool is not self or n > out._cap:
                self._bad_out("Pool.allocate", out, Mutables, n)
            ev, nev = ffi.NULL, ffi.NULL
            if evicted is not None:
                if type(evicted) is not Hashes:
                    raise type_error("Pool.allocate", "evicted", "a kvblock.Hashes or None",
                                     evicted)
                if len(evicted) < n:
                    raise ValueError(f"Pool.allocate: evicted must be a Hashes of length >= n "
                                     f"({n}), not {len(evicted)}")
                ev = evicted._ptr
                nev = ffi.new("uint32_t *")
            rc = lib.kvb_pool_allocate(self._p, n, out._arr, ev, nev)
        except (TypeError, AttributeError, OverflowError):
            self._h("Pool.allocate")
            _args.u32("Pool.allocate", "n", n)
            if out is not None:
                self._bad_out("Pool.allocate", out, Mutables, 0)
            raise
        if rc < 0:
            raise KvbError(rc, "kvb_pool_allocate")
        out._n = n
        if evicted is not None:
            evicted._n = nev[0]
        return out

    def stage(self, mutables, hashes, out=None, offset=0):
        """Stage mutables[i] with hashes[offset + i] under one lock: consumes mutables."""
        try:
            if type(hashes) is Hashes:
                ptr, n, keep = hashes._ptr, hashes._n, None
            else:
                ptr, n, keep = _hashes(hashes, "Pool.stage")
            if offset:
                if offset < 0:  # (past the end: n < 0, refused below)
                    _args.u32("Pool.stage", "offset", offset)
                n -= offset
                ptr += offset
            if n != mutables._n:
                self._bad_args("Pool.stage", batch=mutables, bcls=Mutables, bname="mutables")
                if n < 0:
                    raise ValueError(f"Pool.stage: offset {offset} is past the end of "
                                     f"hashes ({n + offset})")
                raise ValueError(f"Pool.stage: {mutables._n} mutable blocks but {n} hashes"
                                 + (f" from offset {offset}" if offset else ""))
            if out is None:
                out = Completes._new(self, n)
            elif out._pool is not self or n > out._cap:
                self._bad_out("Pool.stage", out, Completes, n)
            rc = lib.kvb_pool_stage(self._p, mutables._arr, ptr, n, out._arr)
        except (TypeError, AttributeError, OverflowError):
            _args.u32("Pool.stage", "offset", offset)
            self._bad_args("Pool.stage", out=out, cls=Completes, batch=mutables, bcls=Mutables,
                           bname="mutables")
            raise
        if rc < 0:
            raise KvbError(rc, "kvb_pool_stage")
        out._n = n
        return out

    def register(self, completes, out=None, offset=0):
        """Register the staged blocks under one lock: consumes them, returns Blocks
        (written into out at offset when given; out's length becomes offset + n)."""
        try:
            n = completes._n
            if out is None:
                if offset != 0:
                    raise ValueError(f"Pool.register: offset {offset!r} given without out")
                out = Blocks._new(self, n)
            elif out._pool is not self or not 0 <= offset <= out._cap - n:
                self._bad_out("Pool.register", out, Blocks, 0)
                offset = _args.u32("Pool.register", "offset", offset)
                raise ValueError(f"Pool.register: out (a Blocks of capacity {out._cap}) cannot "
                                 f"hold {n} blocks at offset {offset}")
            rc = lib.kvb_pool_register(self._p, completes._arr, n, out._arr + offset)
        except (TypeError, AttributeError, OverflowError):
            _args.u32("Pool.register", "offset", offset)
            self._bad_args("Pool.register", out=out, cls=Blocks, batch=completes,
                           bcls=Completes, bname="completes")
            raise
        if rc < 0:
            raise KvbError(rc, "kvb_pool_register")
        out._n = offset + n
        completes._n = 0
        return out

    def _hashes_out(self, where, hashes, out):
        """A batch call's input hashes as (pointer, count, keepalive: hold it until the
        call returns) and its out Blocks, made or checked to have room for them."""
        if type(hashes) is Hashes:
            ptr, n, keep = hashes._ptr, hashes._n, None
        else:
            ptr, n, keep = _hashes(hashes, where)
        if out is None:
            out = Blocks._new(self, n)
        elif out._pool is not self or n > out._cap:
            self._bad_out(where, out, Blocks, n)
        return ptr, n, keep, out

    def match(self, hashes, out=None):
        """Prefix match under one lock: Blocks for the leading hashes found (active or
        cached); len(result) is the prefix length."""
        try:
            if type(hashes) is Hashes and out is not None and out._pool is self and \
                    hashes._n <= out._cap:  # the hot loop's case, inline
                ptr, n, keep = hashes._ptr, hashes._n, None
            else:
                ptr, n, keep, out = self._hashes_out("Pool.match", hashes, out)
            rc = lib.kvb_pool_match(self._p, ptr, n, out._arr)
        except (TypeError, AttributeError, OverflowError):
            self._bad_args("Pool.match", hashes=hashes, out=out, cls=Blocks)
            raise
        if rc < 0:
            raise KvbError(rc, "kvb_pool_match")
        out._n = rc
        return out

    def acquire(self, hashes, out=None, evicted=None):
        """A request's blocks in one call under one lock (kvb_pool_acquire): the
        prefix match, then the rest allocated, staged and registered, with the hits,
        victims, counters, events and callbacks of match + allocate + stage + register
        in sequence; all or nothing (KvbError ENOSPC / EOVERFLOW: nothing taken).
        Returns (blocks, hits): blocks holds len(hashes) references, blocks[0:hits]
        the prefix found, the rest the newly registered ones. evicted: a Hashes of
        capacity >= len(hashes) to receive the evicted hashes (its length is set)."""
        try:
            if type(hashes) is Hashes and out is not None and out._pool is self and \
                    hashes._n <= out._cap:  # the hot loop's case, inline
                ptr, n, keep = hashes._ptr, hashes._n, None
            else:
                ptr, n, keep, out = self._hashes_out("Pool.acquire", hashes, out)
            if evicted is None:
                rc = lib.kvb_pool_acquire(self._p, ptr, n, ffi.NULL, out._arr, ffi.NULL,
                                          ffi.NULL)
            else:
                if type(evicted) is not Hashes:
                    raise type_error("Pool.acquire", "evicted", "a kvblock.Hashes or None",
                                     evicted)
                if len(evicted) < n:
                    raise ValueError(f"Pool.acquire: evicted must be a Hashes of length >= "
                                     f"len(hashes) ({n}), not {len(evicted)}")
                nev = ffi.new("uint32_t *")
                rc = lib.kvb_pool_acquire(self._p, ptr, n, ffi.NULL, out._arr, evicted._ptr,
                                          nev)
                if rc >= 0:
                    evicted._n = nev[0]
        except (TypeError, AttributeError, OverflowError):
            self._bad_args("Pool.acquire", hashes=hashes, out=out, cls=Blocks)
            raise
        if rc < 0:
            raise KvbError(rc, "kvb_pool_acquire")
        out._n = n
        return out, rc

    def _scattered(self, hashes, out, touch, scan):
        where = "Pool.scan" if scan else "Pool.match_scattered"
        p = self._h(where)
        ptr, n, keep = _hashes(hashes, where)
        if out is None:
            out = Blocks._new(self, n)
        else:
            self._bad_out(where, out, Blocks, n)
        hit = ffi.new("bool[]", max(n, 1))
        if scan:
            rc = lib.kvb_pool_scan(p, ptr, n, bool(touch), out._arr, hit)
        else:
            rc = lib.kvb_pool_match_scattered(p, ptr, n, out._arr, hit)
        _check(rc, "kvb_pool_scan" if scan else "kvb_pool_match_scattered")
        out._n = n
        out.hit = [bool(hit[i]) for i in range(n)]
        return out

    def match_scattered(self, hashes, out=None):
        """Every hash independently; result.hit[i] says whether result[i] is valid."""
        return self._scattered(hashes, out, False, False)

    def scan(self, hashes, touch=False, out=None):
        """Like match_scattered, counted as a scan; touch: count the hits as accesses."""
        return self._scattered(hashes, out, touch, True)

    def put(self, hashes):
        """allocate + stage + register in three batch calls: Blocks for hashes."""
        self._h("Pool.put")
        ptr, n, keep = _hashes(hashes, "Pool.put")
        h = keep if isinstance(keep, Hashes) else Hashes._view(keep, ptr, n)
        return self.register(self.stage(self.allocate(n), h))

    # -- maintenance and statistics --

    def reset_inactive(self):
        return _check(lib.kvb_pool_reset_inactive(self._h("Pool.reset_inactive")),
                      "kvb_pool_reset_inactive")

    def check(self):
        _check(lib.kvb_pool_check(self._h("Pool.check")), "kvb_pool_check")

    def stats(self):
        """A coherent snapshot of gauges and counters, as a dict."""
        s = _Padded("kvb_stats")
        _check(lib.kvb_pool_stats(self._h("Pool.stats"), s.ptr), "kvb_pool_stats")
        return {f: getattr(s.ptr, f) for f in LAYOUT["kvb_stats"]}

    def metrics_text(self):
        """Prometheus text exposition of the stats."""
        p = self._h("Pool.metrics_text")
        need = _check(lib.kvb_pool_metrics_text(p, ffi.NULL, 0), "kvb_pool_metrics_text")
        buf = ffi.new("char[]", need + 1)
        _check(lib.kvb_pool_metrics_text(p, buf, need + 1), "kvb_pool_metrics_text")
        return ffi.string(buf).decode()

    def events_flush(self):
        _check(lib.kvb_pool_events_flush(self._h("Pool.events_flush")), "kvb_pool_events_flush")

    def events_stats(self):
        s = _Padded("kvb_event_stats")
        _check(lib.kvb_pool_events_stats(self._h("Pool.events_stats"), s.ptr),
               "kvb_pool_events_stats")
        return {f: getattr(s.ptr, f) for f in LAYOUT["kvb_event_stats"]}

    def __repr__(self):
        if self._p is None:
            return "Pool(closed)"
        return f"Pool({self.name!r}, {self.block_count} blocks, {self.policy})"
