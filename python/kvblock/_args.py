"""Argument checks of the kvblock binding.

A wrong argument raises TypeError (wrong type) or ValueError (right type, value
out of range or not one of the choices) before it reaches cffi or the C library,
with a message that names the call, the parameter and what it expects:

    Pool.match: hashes[0] must be a kvblock.Hash (or an object with int .hi and
    .lo), not int 1 (make hashes with kvblock.hash_tokens, Hashes.from_lineage or
    Hash.make)

Hot paths (Pool.match, allocate, stage, register, Index.match, match_tokens) do
not call these when the arguments are right: they convert inside a try block
(free in CPython 3.11 when nothing is raised) and call a check only when cffi or
an attribute lookup failed, plus one cheap comparison for what would otherwise
pass silently (an offset past the end of a batch, an out= batch of another pool).
"""
import math
import operator

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
INT_MAX = (1 << 31) - 1


def describe(v):
    """"int 1", "str 'abc'", "NoneType None": what was passed, shortened."""
    r = repr(v)
    if len(r) > 48:
        r = r[:45] + "..."
    return f"{type(v).__name__} {r}"


def type_error(where, name, expected, v, hint=""):
    return TypeError(f"{where}: {name} must be {expected}, not {describe(v)}{hint}")


def value_error(where, name, expected, v):
    return ValueError(f"{where}: {name} must be {expected}, not {v!r}")


def _range_text(lo, hi):
    if lo == 0 and hi == U32:
        return "an integer in [0, 2**32)"
    if lo == 0 and hi == U64:
        return "an integer in [0, 2**64)"
    if lo == I64_MIN and hi == I64_MAX:
        return "a signed 64-bit integer"
    if lo == -INT_MAX and hi == INT_MAX:
        return "an int (an errno value)"
    if hi in (U32, U64, I64_MAX, INT_MAX):
        return f"an integer >= {lo}"
    return f"an integer in [{lo}, {hi}]"


def integer(where, name, v, lo, hi, expected=None):
    """v as an int in [lo, hi]: ints and integer-like objects (numpy integers);
    not floats (even integral ones: a count given as 2.0 is a bug), not strings."""
    if type(v) is not int:
        if isinstance(v, float):
            raise type_error(where, name, expected or _range_text(lo, hi), v)
        try:
            v = operator.index(v)
        except TypeError:
            raise type_error(where, name, expected or _range_text(lo, hi), v) from None
    if not lo <= v <= hi:
        raise value_error(where, name, expected or _range_text(lo, hi), v)
    return v


def u32(where, name, v, lo=0):
    return integer(where, name, v, lo, U32)


def u64(where, name, v):
    return integer(where, name, v, 0, U64)


def i64(where, name, v, lo=I64_MIN):
    return integer(where, name, v, lo, I64_MAX)


def number(where, name, v, lo=None):
    """v as a finite real number (int or float), >= lo when given."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(operator.index(v))
        except TypeError:
            raise type_error(where, name, "a number", v) from None
    if isinstance(v, float) and not math.isfinite(v):
        raise value_error(where, name, "a finite number", v)
    if lo is not None and v < lo:
        raise value_error(where, name, f"a number >= {lo}", v)
    return v


def string(where, name, v, none_ok=False, bytes_ok=False):
    """v itself when it is a str (or None / bytes when allowed)."""
    if isinstance(v, str) or (none_ok and v is None) or \
            (bytes_ok and isinstance(v, (bytes, bytearray))):
        return v
    expected = "a str" + (" or bytes" if bytes_ok else "") + (" or None" if none_ok else "")
    raise type_error(where, name, expected, v)


def callback(where, name, v):
    """v when it is None or callable."""
    if v is None or callable(v):
        return v
    raise type_error(where, name, "a callable or None", v)


def instance(where, name, v, cls, expected=None):
    if not isinstance(v, cls):
        raise type_error(where, name, expected or f"a kvblock.{cls.__name__}", v)
    return v


def choice(where, name, v, table):
    """table[v] for a str key (case-sensitive, as given), with the choices listed."""
    if not isinstance(v, str):
        raise type_error(where, name, f"one of {tuple(table)}", v)
    try:
        return table[v]
    except KeyError:
        raise value_error(where, name, f"one of {tuple(table)}", v) from None


def index_of(where, i, n):
    """i as an index into a sequence of length n (negative counts from the end)."""
    if type(i) is not int:
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"{where} indices must be integers or slices, not "
                            f"{type(i).__name__}") from None
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"{where} index out of range")
    return i
