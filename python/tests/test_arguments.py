"""Wrong arguments to the public calls of the binding raise TypeError (wrong type)
or ValueError (wrong value) whose message starts with the call ("Pool.match: ...")
and names the parameter, never an AttributeError or KeyError from inside the
binding, an OverflowError from cffi, or a write past a buffer; and a refused call
changes nothing (the pool's and the index's counters, every handle, the pools
close cleanly afterwards).

Each row: (call, exception type, the call's name the message starts with, the
parameter the message names)."""
import array
import types

import pytest

import kvblock
import kvblock.index as ki
from kvblock import (Blocks, Completes, FleetClient, Hash, Hashes, Index, IndexEvent, KvbError,
                     Mutables, Pool, Registry, Subscriber)


def expect(exc, where, name, fn, *args):
    with pytest.raises(Exception) as e:
        fn(*args)
    msg = str(e.value)
    assert type(e.value) is exc, f"{type(e.value).__name__}: {msg}"
    assert msg.startswith(where), msg
    assert name in msg, msg


def closed_pool():
    p = Pool(4)
    p.close()
    return p


def closed_index():
    i = Index()
    i.close()
    return i


def closed_registry():
    r = Registry()
    r.close()
    return r


# ---- module functions, hashes, registry ------------------------------------------------

HASHING = [
    ("strerror", lambda e: kvblock.strerror("x"), TypeError, "strerror", "err"),
    ("err_name", lambda e: kvblock.err_name(None), TypeError, "err_name", "err"),
    ("KvbError", lambda e: KvbError("ENOSPC"), TypeError, "KvbError", "rc"),
    ("hash_salt", lambda e: kvblock.hash_salt(5), TypeError, "hash_salt", "salt"),
    ("hash_block str", lambda e: kvblock.hash_block("ab"), TypeError, "hash_block", "tokens"),
    ("hash_block negative", lambda e: kvblock.hash_block([1, -1]), ValueError, "hash_block",
     "tokens[1]"),
    ("hash_block salt", lambda e: kvblock.hash_block([1], salt_hash=-1), ValueError,
     "hash_block", "salt_hash"),
    ("hash_chain type", lambda e: kvblock.hash_chain("a", 1), TypeError, "hash_chain",
     "parent_seq"),
    ("hash_chain range", lambda e: kvblock.hash_chain(1, 1 << 64), ValueError, "hash_chain",
     "block_hash"),
    ("hash_tokens int", lambda e: kvblock.hash_tokens(5), TypeError, "hash_tokens", "tokens"),
    ("hash_tokens float", lambda e: kvblock.hash_tokens([1.5]), TypeError, "hash_tokens",
     "tokens[0]"),
    ("hash_tokens block_size", lambda e: kvblock.hash_tokens([1] * 32, 0), ValueError,
     "hash_tokens", "block_size"),
    ("Hash type", lambda e: Hash("a", 1), TypeError, "Hash", "hi"),
    ("Hash range", lambda e: Hash(1, -1), ValueError, "Hash", "lo"),
    ("Hash.make current", lambda e: Hash.make("x"), TypeError, "Hash.make", "current"),
    ("Hash.make parent", lambda e: Hash.make(1, parent=1 << 64), ValueError, "Hash.make",
     "parent"),
    ("Hash.make position", lambda e: Hash.make(1, position=-1), ValueError, "Hash.make",
     "position"),
    ("Hash.is_parent_of", lambda e: e.hs[0].is_parent_of(3), TypeError, "Hash.is_parent_of",
     "child"),
    ("Hash.extend", lambda e: e.hs[0].extend("x"), TypeError, "Hash.extend", "current"),
    ("Hashes negative", lambda e: Hashes(-1), ValueError, "Hashes", "n_or_iterable"),
    ("Hashes of ints", lambda e: Hashes([1, 2]), TypeError, "Hashes", "n_or_iterable[0]"),
    ("Hashes None", lambda e: Hashes(None), TypeError, "Hashes", "n_or_iterable"),
    ("Hashes index", lambda e: e.hs["a"], TypeError, "Hashes indices", "str"),
    ("from_buffer type", lambda e: Hashes.from_buffer([1]), TypeError, "Hashes.from_buffer",
     "data"),
    ("from_buffer size", lambda e: Hashes.from_buffer(b"x" * 17), ValueError,
     "Hashes.from_buffer", "data"),
    ("from_tokens token", lambda e: Hashes.from_tokens(["a"]), TypeError, "Hashes.from_tokens",
     "tokens[0]"),
    ("from_tokens block_size", lambda e: Hashes.from_tokens([1], block_size="16"), TypeError,
     "Hashes.from_tokens", "block_size"),
    ("from_tokens salt", lambda e: Hashes.from_tokens([1], salt_hash=1.0), TypeError,
     "Hashes.from_tokens", "salt_hash"),
    ("from_lineage ids", lambda e: Hashes.from_lineage(5), TypeError, "Hashes.from_lineage",
     "ids"),
    ("from_lineage id type", lambda e: Hashes.from_lineage([1, "a"]), TypeError,
     "Hashes.from_lineage", "ids[1]"),
    ("from_lineage id range", lambda e: Hashes.from_lineage([1, -2]), ValueError,
     "Hashes.from_lineage", "ids[1]"),
    ("from_lineage out type", lambda e: Hashes.from_lineage([1, 2], out=[0, 0]), TypeError,
     "Hashes.from_lineage", "out"),
    # the old code wrote past out's buffer here
    ("from_lineage out short", lambda e: Hashes.from_lineage([1, 2], out=Hashes(1)),
     ValueError, "Hashes.from_lineage", "out"),
    ("from_lineage offset", lambda e: Hashes.from_lineage([1, 2], out=Hashes(4), offset=3),
     ValueError, "Hashes.from_lineage", "offset"),
    ("from_lineage offset no out", lambda e: Hashes.from_lineage([1], offset=1), ValueError,
     "Hashes.from_lineage", "offset"),
    ("Registry type", lambda e: Registry("a"), TypeError, "Registry", "capacity"),
    ("Registry range", lambda e: Registry(-1), ValueError, "Registry", "capacity"),
    ("Registry.present pool", lambda e: e.reg.present(e.hs, 5), TypeError, "Registry.present",
     "pool"),
    ("Registry.present hashes", lambda e: e.reg.present([1], e.pool), TypeError,
     "Registry.present", "hashes[0]"),
    ("Registry.frequency", lambda e: e.reg.frequency(5), TypeError, "Registry.frequency",
     "hash"),
    ("Registry.touch", lambda e: e.reg.touch("x"), TypeError, "Registry.touch", "hash"),
    ("Registry closed", lambda e: closed_registry().touch(e.hs[0]), ValueError,
     "Registry.touch", "closed"),
]

# ---- pools, handles, batches -----------------------------------------------------------

POOLS = [
    ("Pool block_count type", lambda e: Pool("a"), TypeError, "Pool", "block_count"),
    ("Pool block_count range", lambda e: Pool(-1), ValueError, "Pool", "block_count"),
    ("Pool block_size", lambda e: Pool(8, block_size=1.5), TypeError, "Pool", "block_size"),
    ("Pool evict type", lambda e: Pool(8, evict=[]), TypeError, "Pool", "evict"),
    ("Pool evict value", lambda e: Pool(8, evict="nope"), ValueError, "Pool", "evict"),
    ("Pool dup", lambda e: Pool(8, dup=0), TypeError, "Pool", "dup"),
    ("Pool name", lambda e: Pool(8, name=5), TypeError, "Pool", "name"),
    ("Pool registry", lambda e: Pool(8, registry=5), TypeError, "Pool", "registry"),
    ("Pool registry closed", lambda e: Pool(8, registry=closed_registry()), ValueError, "Pool",
     "Registry is closed"),
    ("Pool on_evict", lambda e: Pool(8, on_evict=5), TypeError, "Pool", "on_evict"),
    ("Pool on_reset", lambda e: Pool(8, on_reset="x"), TypeError, "Pool", "on_reset"),
    ("Pool events", lambda e: Pool(8, events=5), TypeError, "Pool", "events"),
    ("Pool events_emit", lambda e: Pool(8, events=print, events_emit="x"), ValueError, "Pool",
     "events_emit"),
    ("Pool pow2_range type", lambda e: Pool(8, events=print, pow2_range=3), TypeError, "Pool",
     "pow2_range"),
    ("Pool pow2_range value", lambda e: Pool(8, events=print, pow2_range=(1, -1)), ValueError,
     "Pool", "pow2_range[1]"),
    ("Pool events_batch_max", lambda e: Pool(8, events_batch_max=-1), ValueError, "Pool",
     "events_batch_max"),
    ("Pool events_delay_ms", lambda e: Pool(8, events_delay_ms="x"), TypeError, "Pool",
     "events_delay_ms"),
    ("Pool events_medium", lambda e: Pool(8, events_medium=5), TypeError, "Pool",
     "events_medium"),
    # the example: a list of ints where Hash objects are expected
    ("match ints", lambda e: e.pool.match([1, 2, 3]), TypeError, "Pool.match", "hashes[0]"),
    ("match str", lambda e: e.pool.match("abc"), TypeError, "Pool.match", "hashes"),
    ("match out type", lambda e: e.pool.match(e.hs, out=3), TypeError, "Pool.match", "out"),
    ("match out batch type", lambda e: e.pool.match(e.hs, out=Mutables(e.pool, 3)), TypeError,
     "Pool.match", "out"),
    ("match out other pool", lambda e: e.pool.match(e.hs, out=Blocks(e.other, 3)), ValueError,
     "Pool.match", "another Pool"),
    ("match out small", lambda e: e.pool.match(e.hs, out=Blocks(e.pool, 1)), ValueError,
     "Pool.match", "out"),
    ("match_scattered", lambda e: e.pool.match_scattered([1]), TypeError,
     "Pool.match_scattered", "hashes[0]"),
    ("match_scattered out", lambda e: e.pool.match_scattered(e.hs, out="x"), TypeError,
     "Pool.match_scattered", "out"),
    ("scan", lambda e: e.pool.scan(5), TypeError, "Pool.scan", "hashes"),
    ("scan out other pool", lambda e: e.pool.scan(e.hs, out=Blocks(e.other, 3)), ValueError,
     "Pool.scan", "another Pool"),
    ("allocate str", lambda e: e.pool.allocate("2"), TypeError, "Pool.allocate", "n"),
    ("allocate negative", lambda e: e.pool.allocate(-1), ValueError, "Pool.allocate", "n"),
    ("allocate float", lambda e: e.pool.allocate(1.0), TypeError, "Pool.allocate", "n"),
    ("allocate huge", lambda e: e.pool.allocate(1 << 40), ValueError, "Pool.allocate", "n"),
    ("allocate negative into out", lambda e: e.pool.allocate(-1, out=Mutables(e.pool, 2)),
     ValueError, "Pool.allocate", "n"),
    ("allocate out type", lambda e: e.pool.allocate(1, out=Blocks(e.pool, 1)), TypeError,
     "Pool.allocate", "out"),
    ("allocate out other pool", lambda e: e.pool.allocate(1, out=Mutables(e.other, 1)),
     ValueError, "Pool.allocate", "another Pool"),
    ("allocate out small", lambda e: e.pool.allocate(2, out=Mutables(e.pool, 1)), ValueError,
     "Pool.allocate", "out"),
    ("allocate evicted type", lambda e: e.pool.allocate(1, evicted=[]), TypeError,
     "Pool.allocate", "evicted"),
    ("allocate evicted short", lambda e: e.pool.allocate(2, evicted=Hashes(1)), ValueError,
     "Pool.allocate", "evicted"),
    ("stage mutables", lambda e: e.pool.stage([1], e.hs), TypeError, "Pool.stage", "mutables"),
    ("stage Blocks as mutables", lambda e: e.pool.stage(e.blk, e.hs), TypeError, "Pool.stage",
     "mutables"),
    ("stage hashes", lambda e: e.pool.stage(e.mut, [1, 2, 3]), TypeError, "Pool.stage",
     "hashes[0]"),
    ("stage offset type", lambda e: e.pool.stage(e.mut, e.hs, offset="a"), TypeError,
     "Pool.stage", "offset"),
    ("stage offset negative", lambda e: e.pool.stage(e.mut, e.hs4, offset=-1), ValueError,
     "Pool.stage", "offset"),
    ("stage offset past", lambda e: e.pool.stage(e.mut, e.hs, offset=4), ValueError,
     "Pool.stage", "offset"),
    ("stage count", lambda e: e.pool.stage(e.mut, e.hs[:2]), ValueError, "Pool.stage",
     "hashes"),
    ("stage out type", lambda e: e.pool.stage(e.mut, e.hs, out=Blocks(e.pool, 3)), TypeError,
     "Pool.stage", "out"),
    ("stage out other pool", lambda e: e.pool.stage(e.mut, e.hs, out=Completes(e.other, 3)),
     ValueError, "Pool.stage", "another Pool"),
    ("Mutables.stage out", lambda e: e.mut.stage(e.hs, out=5), TypeError, "Pool.stage", "out"),
    ("register completes", lambda e: e.pool.register([1]), TypeError, "Pool.register",
     "completes"),
    ("register out type", lambda e: e.pool.register(e.comp, out=Mutables(e.pool, 3)),
     TypeError, "Pool.register", "out"),
    # the old code wrote before out's buffer here
    ("register offset negative", lambda e: e.pool.register(e.comp, out=Blocks(e.pool, 8),
                                                           offset=-1),
     ValueError, "Pool.register", "offset"),
    ("register offset past", lambda e: e.pool.register(e.comp, out=Blocks(e.pool, 4),
                                                       offset=2),
     ValueError, "Pool.register", "offset"),
    ("register offset type", lambda e: e.pool.register(e.comp, out=Blocks(e.pool, 4),
                                                       offset=0.5),
     TypeError, "Pool.register", "offset"),
    ("register offset no out", lambda e: e.pool.register(e.comp, offset=1), ValueError,
     "Pool.register", "offset"),
    ("register out other pool", lambda e: e.pool.register(e.comp, out=Blocks(e.other, 3)),
     ValueError, "Pool.register", "another Pool"),
    ("Completes.register out", lambda e: e.comp.register(out=5), TypeError, "Pool.register",
     "out"),
    ("put", lambda e: e.pool.put(5), TypeError, "Pool.put", "hashes"),
    ("put item", lambda e: e.pool.put([e.hs[0], 3]), TypeError, "Pool.put", "hashes[1]"),
    ("Mutable.stage", lambda e: e.mut[0].stage(3), TypeError, "Mutable.stage", "hash"),
    ("Blocks pool", lambda e: Blocks(5, 1), TypeError, "Blocks", "pool"),
    ("Blocks capacity", lambda e: Blocks(e.pool, -1), ValueError, "Blocks", "capacity"),
    ("Mutables capacity", lambda e: Mutables(e.pool, "a"), TypeError, "Mutables", "capacity"),
    ("Completes capacity", lambda e: Completes(e.pool, 1.5), TypeError, "Completes",
     "capacity"),
    ("Blocks index", lambda e: e.blk["x"], TypeError, "Blocks indices", "str"),
] + [
    # a closed pool: ValueError, not a cffi TypeError about NoneType
    (f"closed {what}", fn, ValueError, f"Pool.{what}", "closed")
    for what, fn in (
        ("match", lambda e: closed_pool().match(e.hs)),
        ("allocate", lambda e: closed_pool().allocate(1)),
        ("stage", lambda e: closed_pool().stage(e.mut, e.hs)),
        ("register", lambda e: closed_pool().register(e.comp)),
        ("put", lambda e: closed_pool().put(e.hs)),
        ("scan", lambda e: closed_pool().scan(e.hs)),
        ("stats", lambda e: closed_pool().stats()),
        ("check", lambda e: closed_pool().check()),
        ("reset_inactive", lambda e: closed_pool().reset_inactive()),
        ("metrics_text", lambda e: closed_pool().metrics_text()),
        ("events_flush", lambda e: closed_pool().events_flush()),
        ("events_stats", lambda e: closed_pool().events_stats()),
        ("available", lambda e: closed_pool().available),
        ("id", lambda e: closed_pool().id),
    )
]


def _pool_state(p):
    s = p.stats()
    return {k: v for k, v in s.items() if not k.startswith("lock_")}


@pytest.fixture
def env():
    """A pool holding a Mutables (3), a Completes (3) and a Blocks (3), another pool,
    a registry, hashes; checks that the call under test changed none of it."""
    e = types.SimpleNamespace()
    e.reg = Registry()
    e.pool = Pool(16, registry=e.reg)
    e.other = Pool(16)
    e.hs = Hashes.from_lineage([1, 2, 3])
    e.hs4 = Hashes.from_lineage([1, 2, 3, 4])[1:]
    e.blk = e.pool.put(Hashes.from_lineage([7, 8, 9]))
    e.mut = e.pool.allocate(3)
    e.comp = e.pool.stage(e.pool.allocate(3), Hashes.from_lineage([4, 5, 6]))
    before = _pool_state(e.pool), _pool_state(e.other)
    handles = [(b, b.live, b.id) for batch in (e.blk, e.mut, e.comp) for b in batch]
    yield e
    assert (_pool_state(e.pool), _pool_state(e.other)) == before, "a refused call changed a pool"
    assert [(b, b.live, b.id) for b, _, _ in handles] == handles
    assert len(e.mut) == len(e.comp) == len(e.blk) == 3
    e.pool.check()
    e.other.check()
    e.mut.release()
    e.comp.release()
    e.blk.release()
    e.pool.close()  # KvbError EBUSY if a refused call had left a handle out
    e.other.close()
    e.reg.close()


@pytest.mark.parametrize("fn, exc, where, name", [r[1:] for r in HASHING + POOLS],
                         ids=[r[0] for r in HASHING + POOLS])
def test_pool_and_hash_arguments(env, fn, exc, where, name):
    expect(exc, where, name, fn, env)


def test_the_checks_let_every_accepted_form_through():
    """The checks refuse nothing the binding accepted: Hashes, views, lists and tuples
    of Hash, a single Hash, 16-byte buffers; token lists, u32 buffers and bytes (and
    hash_salt now takes any bytes-like salt, a bytearray included)."""
    with Pool(16) as p:
        hs = Hashes.from_lineage([1, 2, 3, 4])
        with p.put(hs[:3]):
            raw = bytes(kvblock.ffi.buffer(hs._ptr, 16 * 4))
            for form in (hs, hs[0:4], list(hs), tuple(hs), raw, bytearray(raw)):
                with p.match(form) as hit:
                    assert len(hit) == 3
            with p.match(hs[1]) as hit:
                assert len(hit) == 1 and hit[0].hash == hs[1]
            out = Blocks(p, 8)
            assert len(p.match(hs, out=out)) == 3
            out.release()
        assert Hash(True, 0) == Hash(1, 0)
    tokens = list(range(64))
    assert kvblock.hash_tokens(array.array("I", tokens), 16).currents() == \
        kvblock.hash_tokens(tokens, 16).currents()
    assert kvblock.hash_block(b"ab") == kvblock.hash_block([97, 98])
    assert kvblock.hash_salt(bytearray(b"x")) == kvblock.hash_salt(b"x") == \
        kvblock.hash_salt("x")


# ---- the fleet index and its subscriber ----------------------------------------------

needs_index = pytest.mark.skipif(not ki.available(),
                                 reason="the loaded libkvblock has no fleet index")
needs_sub = pytest.mark.skipif(not ki.subscriber_available(),
                               reason="libkvblock built without ZeroMQ (no subscriber)")

S = IndexEvent.stored

INDEX = [
    ("Index block_size", lambda e: Index(block_size="a"), TypeError, "Index", "block_size"),
    ("Index seed", lambda e: Index(seed=-1), ValueError, "Index", "seed"),
    ("Index tier_weights type", lambda e: Index(tier_weights=5), TypeError, "Index",
     "tier_weights"),
    ("Index tier_weights item", lambda e: Index(tier_weights=(1, "x", 2)), TypeError, "Index",
     "tier_weights[1]"),
    ("Index tier_weights count", lambda e: Index(tier_weights=(1, 2)), ValueError, "Index",
     "tier_weights"),
    ("Index stale_after", lambda e: Index(stale_after="x"), TypeError, "Index", "stale_after"),
    ("Index drop_after", lambda e: Index(drop_after=float("nan")), ValueError, "Index",
     "drop_after"),
    ("Index max_streams", lambda e: Index(max_streams=-1), ValueError, "Index", "max_streams"),
    ("Index max_entries", lambda e: Index(max_entries_per_stream=1.5), TypeError, "Index",
     "max_entries_per_stream"),
    ("Index shards", lambda e: Index(shards="2"), TypeError, "Index", "shards"),
    ("match type", lambda e: e.idx.match(5), TypeError, "Index.match", "hashes"),
    ("match item", lambda e: e.idx.match([1, "a"]), TypeError, "Index.match", "hashes[1]"),
    ("match float", lambda e: e.idx.match([1.5]), TypeError, "Index.match", "hashes[0]"),
    ("match range", lambda e: e.idx.match([1 << 64]), ValueError, "Index.match", "hashes[0]"),
    ("match u32 buffer", lambda e: e.idx.match(array.array("I", [1])), TypeError,
     "Index.match", "hashes"),
    ("match k type", lambda e: e.idx.match([1], k="a"), TypeError, "Index.match", "k"),
    ("match k range", lambda e: e.idx.match([1], k=-1), ValueError, "Index.match", "k"),
    ("match_tokens type", lambda e: e.idx.match_tokens(5), TypeError, "Index.match_tokens",
     "tokens"),
    ("match_tokens range", lambda e: e.idx.match_tokens([-1]), ValueError,
     "Index.match_tokens", "tokens[0]"),
    ("match_tokens cache_salt", lambda e: e.idx.match_tokens([1], cache_salt=5), TypeError,
     "Index.match_tokens", "cache_salt"),
    ("match_tokens lora_name", lambda e: e.idx.match_tokens([1], lora_name=1.5), TypeError,
     "Index.match_tokens", "lora_name"),
    ("match_tokens k", lambda e: e.idx.match_tokens([1], k=1.0), TypeError,
     "Index.match_tokens", "k"),
    ("hashes tokens", lambda e: e.idx.hashes("abc"), TypeError, "Index.hashes", "tokens"),
    ("hashes lora_name", lambda e: e.idx.hashes([1], lora_name=[1]), TypeError,
     "Index.hashes", "lora_name"),
    ("hashes cache_salt", lambda e: e.idx.hashes([1], cache_salt=5), TypeError,
     "Index.hashes", "cache_salt"),
    ("block_seed", lambda e: e.idx.block_seed("x"), TypeError, "Index.block_seed", "salt_key"),
    ("add_stream worker", lambda e: e.idx.add_stream(5), TypeError, "Index.add_stream",
     "worker"),
    ("add_stream dp_rank type", lambda e: e.idx.add_stream("x", dp_rank="1"), TypeError,
     "Index.add_stream", "dp_rank"),
    ("add_stream dp_rank range", lambda e: e.idx.add_stream("x", dp_rank=-2), ValueError,
     "Index.add_stream", "dp_rank"),
    ("add_stream hashes value", lambda e: e.idx.add_stream("x", hashes="x"), ValueError,
     "Index.add_stream", "hashes"),
    ("add_stream hashes type", lambda e: e.idx.add_stream("x", hashes=None), TypeError,
     "Index.add_stream", "hashes"),
    ("add_stream block_size", lambda e: e.idx.add_stream("x", block_size=-1), ValueError,
     "Index.add_stream", "block_size"),
    ("find_stream", lambda e: e.idx.find_stream(5), TypeError, "Index.find_stream", "worker"),
    ("remove_stream type", lambda e: e.idx.remove_stream(1.5), TypeError,
     "Index.remove_stream", "stream"),
    ("remove_stream range", lambda e: e.idx.remove_stream(-1), ValueError,
     "Index.remove_stream", "stream"),
    ("remove_stream tuple", lambda e: e.idx.remove_stream(("w",)), TypeError,
     "Index.remove_stream", "stream"),
    ("remove_worker", lambda e: e.idx.remove_worker(None), TypeError, "Index.remove_worker",
     "worker"),
    ("clear_stream state type", lambda e: e.idx.clear_stream(e.s, state=[]), TypeError,
     "Index.clear_stream", "state"),
    ("clear_stream state range", lambda e: e.idx.clear_stream(e.s, state=9), ValueError,
     "Index.clear_stream", "state"),
    ("set_state", lambda e: e.idx.set_state(e.s, "asleep"), ValueError, "Index.set_state",
     "state"),
    ("set_seq", lambda e: e.idx.set_seq(e.s, "x"), TypeError, "Index.set_seq", "last_seq"),
    ("count counter value", lambda e: e.idx.count(e.s, "bogus"), ValueError, "Index.count",
     "counter"),
    ("count counter type", lambda e: e.idx.count(e.s, 5.5), TypeError, "Index.count",
     "counter"),
    ("count delta", lambda e: e.idx.count(e.s, "gaps", -1), ValueError, "Index.count",
     "delta"),
    ("drop type", lambda e: e.idx.drop(e.s, 5), TypeError, "Index.drop", "dropped"),
    ("drop reason", lambda e: e.idx.drop(e.s, {"bogus": 1}), ValueError, "Index.drop",
     "drop reason"),
    ("drop count", lambda e: e.idx.drop(e.s, {"group": -1}), ValueError, "Index.drop",
     "dropped['group']"),
    ("heard", lambda e: e.idx.heard(e.s, now_ns="x"), TypeError, "Index.heard", "now_ns"),
    ("tick", lambda e: e.idx.tick("x"), TypeError, "Index.tick", "now_ns"),
    ("stream_info", lambda e: e.idx.stream_info(1.5), TypeError, "Index.stream_info",
     "stream"),
    ("apply events type", lambda e: e.idx.apply(e.s, 5), TypeError, "Index.apply", "events"),
    ("apply event type", lambda e: e.idx.apply(e.s, [5]), TypeError, "Index.apply",
     "events[0]"),
    ("apply event without type", lambda e: e.idx.apply(e.s, [{"hashes": [1]}]), ValueError,
     "Index.apply", "events[0]"),
    ("apply event kind", lambda e: e.idx.apply(e.s, [IndexEvent("bogus", "device", [1])]),
     ValueError, "Index.apply", "events[0].type"),
    ("apply hashes", lambda e: e.idx.apply(e.s, [{"type": "stored", "hashes": "x"}]),
     TypeError, "Index.apply", "events[0].hashes"),
    ("apply hash", lambda e: e.idx.apply(e.s, [S([1]), S([1, 1 << 64])]), ValueError,
     "Index.apply", "events[1].hashes[1]"),
    ("apply tier", lambda e: e.idx.apply(e.s, [S([1], tier=5.5)]), TypeError, "Index.apply",
     "events[0].tier"),
    ("apply parent", lambda e: e.idx.apply(e.s, [S([1], parent="p")]), TypeError,
     "Index.apply", "events[0].parent"),
    ("apply tokens", lambda e: e.idx.apply(e.s, [S([1], tokens=[-1])]), ValueError,
     "Index.apply", "events[0].tokens[0]"),
    ("apply block_size", lambda e: e.idx.apply(e.s, [S([1], block_size=-1)]), ValueError,
     "Index.apply", "events[0].block_size"),
    ("apply lora", lambda e: e.idx.apply(e.s, [{"type": "stored", "hashes": [1],
                                                "lora_name": 1.5}]),
     TypeError, "Index.apply", "events[0]['lora_name']"),
    ("apply seq", lambda e: e.idx.apply(e.s, [], seq="x"), TypeError, "Index.apply", "seq"),
    ("apply stream", lambda e: e.idx.apply(None, []), TypeError, "Index.apply", "stream"),
    ("apply_payload payload", lambda e: e.idx.apply_payload(e.s, 5), TypeError,
     "Index.apply_payload", "payload"),
    ("apply_payload kind", lambda e: e.idx.apply_payload(e.s, b"", kind=5.5), TypeError,
     "Index.apply_payload", "kind"),
    ("apply_payload seq", lambda e: e.idx.apply_payload(e.s, b"", seq=1.5), TypeError,
     "Index.apply_payload", "seq"),
    ("save", lambda e: e.idx.save(5.5), TypeError, "Index.save", "path"),
    ("load path", lambda e: Index.load(5.5), TypeError, "Index.load", "path"),
    ("load config", lambda e: Index.load("/nonexistent", bogus=1), TypeError, "Index.load",
     "bogus"),
    ("loads data", lambda e: Index.loads(5), TypeError, "Index.loads", "data"),
    ("loads config", lambda e: Index.loads(b"", block_size="x"), TypeError, "Index.loads",
     "block_size"),
    ("decode payload", lambda e: kvblock.decode(5), TypeError, "decode", "payload"),
    ("decode kind type", lambda e: kvblock.decode(b"", kind=5.5), TypeError, "decode", "kind"),
    ("decode kind number", lambda e: kvblock.decode(b"", kind=9), ValueError, "decode",
     "kind"),
    ("decode kind name", lambda e: kvblock.decode(b"", kind="x"), ValueError, "decode", "kind"),
    ("salt_key lora_name", lambda e: kvblock.salt_key(5.5), TypeError, "salt_key",
     "lora_name"),
    ("salt_key cache_salt", lambda e: kvblock.salt_key(cache_salt=5), TypeError, "salt_key",
     "cache_salt"),
    ("Subscriber index", lambda e: Subscriber(5), TypeError, "Subscriber", "index"),
    ("Subscriber callback", lambda e: Subscriber(e.idx, callback=5), TypeError, "Subscriber",
     "callback"),
    ("Subscriber tick_ms", lambda e: Subscriber(e.idx, tick_ms="x"), TypeError, "Subscriber",
     "tick_ms"),
    ("Subscriber replay_timeout_ms", lambda e: Subscriber(e.idx, replay_timeout_ms=-1),
     ValueError, "Subscriber", "replay_timeout_ms"),
    ("Subscriber closed index", lambda e: Subscriber(closed_index()), ValueError, "Subscriber",
     "closed"),
] + [
    (f"closed {what}", fn, ValueError, f"Index.{what}", "closed")
    for what, fn in (
        ("match", lambda e: closed_index().match([1])),
        ("match_tokens", lambda e: closed_index().match_tokens([1])),
        ("apply", lambda e: closed_index().apply(0, [])),
        ("add_stream", lambda e: closed_index().add_stream("w")),
        ("stats", lambda e: closed_index().stats()),
        ("streams", lambda e: closed_index().streams()),
        ("save", lambda e: closed_index().save("/nonexistent/x")),
    )
]


@pytest.fixture
def ienv():
    e = types.SimpleNamespace()
    e.idx = Index(block_size=4)
    e.s = e.idx.add_stream("w", dp_rank=0)
    e.idx.apply(e.s, [S([11, 12])], seq=5)
    before = e.idx.stats(), e.idx.stream_info(e.s), e.idx.streams()
    yield e
    assert (e.idx.stats(), e.idx.stream_info(e.s), e.idx.streams()) == before, \
        "a refused call changed the index"
    e.idx.close()


@needs_index
@pytest.mark.parametrize("fn, exc, where, name", [r[1:] for r in INDEX],
                         ids=[r[0] for r in INDEX])
def test_index_arguments(ienv, fn, exc, where, name):
    expect(exc, where, name, fn, ienv)


SUBSCRIBER = [
    ("add_worker name", lambda s: s.add_worker(5, "ipc:///nonexistent/a"), TypeError,
     "Subscriber.add_worker", "name"),
    ("add_worker endpoint", lambda s: s.add_worker("w", 5), TypeError, "Subscriber.add_worker",
     "endpoint"),
    ("add_worker replay", lambda s: s.add_worker("w", "ipc:///nonexistent/a", replay=5),
     TypeError, "Subscriber.add_worker", "replay"),
    ("add_worker topic", lambda s: s.add_worker("w", "ipc:///nonexistent/a", topic=5),
     TypeError, "Subscriber.add_worker", "topic"),
    ("add_worker kind", lambda s: s.add_worker("w", "ipc:///nonexistent/a", kind="x"),
     ValueError, "Subscriber.add_worker", "kind"),
    ("add_worker block_size", lambda s: s.add_worker("w", "ipc:///nonexistent/a",
                                                     block_size=-1),
     ValueError, "Subscriber.add_worker", "block_size"),
    ("remove_worker", lambda s: s.remove_worker(5), TypeError, "Subscriber.remove_worker",
     "name"),
    ("worker_info", lambda s: s.worker_info(5), TypeError, "Subscriber.worker_info", "name"),
    ("sync type", lambda s: s.sync("x"), TypeError, "Subscriber.sync", "timeout"),
    ("sync negative", lambda s: s.sync(-1), ValueError, "Subscriber.sync", "timeout"),
    ("sync infinite", lambda s: s.sync(float("inf")), ValueError, "Subscriber.sync",
     "timeout"),
]


@needs_index
@needs_sub
@pytest.mark.parametrize("fn, exc, where, name", [r[1:] for r in SUBSCRIBER],
                         ids=[r[0] for r in SUBSCRIBER])
def test_subscriber_arguments(fn, exc, where, name):
    with Index(block_size=4) as idx:
        sub = Subscriber(idx)
        try:
            expect(exc, where, name, fn, sub)
            assert sub.workers() == [] and sub.worker_info() == {}
        finally:
            sub.close()
        with pytest.raises(ValueError, match="Subscriber.ready: the Subscriber is closed"):
            sub.ready()


# ---- the kvb-indexer client (the checks run before any request is sent) ------------------

FLEET = [
    ("FleetClient base_url", lambda f: FleetClient(5), TypeError, "FleetClient", "base_url"),
    ("FleetClient timeout type", lambda f: FleetClient("http://127.0.0.1:9", timeout="x"),
     TypeError, "FleetClient", "timeout"),
    ("FleetClient timeout value", lambda f: FleetClient("http://127.0.0.1:9", timeout=0),
     ValueError, "FleetClient", "timeout"),
    ("match neither", lambda f: f.match(), ValueError, "FleetClient.match", "tokens"),
    ("match tokens type", lambda f: f.match(tokens=5), TypeError, "FleetClient.match",
     "tokens"),
    ("match tokens str", lambda f: f.match(tokens="abc"), TypeError, "FleetClient.match",
     "tokens"),
    ("match token float", lambda f: f.match(tokens=[1, 1.5]), TypeError, "FleetClient.match",
     "tokens[1]"),
    ("match token range", lambda f: f.match(tokens=[-1]), ValueError, "FleetClient.match",
     "tokens[0]"),
    ("match lora_name", lambda f: f.match(tokens=[1], lora_name=5), TypeError,
     "FleetClient.match", "lora_name"),
    ("match cache_salt", lambda f: f.match(tokens=[1], cache_salt=b"x"), TypeError,
     "FleetClient.match", "cache_salt"),
    ("match block_size", lambda f: f.match(tokens=[1], block_size=0), ValueError,
     "FleetClient.match", "block_size"),
    ("match block_size with hashes", lambda f: f.match(hashes=[1], block_size=16), ValueError,
     "FleetClient.match", "block_size"),
    ("match top_k type", lambda f: f.match(tokens=[1], top_k="x"), TypeError,
     "FleetClient.match", "top_k"),
    ("match top_k range", lambda f: f.match(tokens=[1], top_k=-1), ValueError,
     "FleetClient.match", "top_k"),
    ("match hashes type", lambda f: f.match(hashes=5), TypeError, "FleetClient.match",
     "hashes"),
    ("match hash type", lambda f: f.match(hashes=["x"]), TypeError, "FleetClient.match",
     "hashes[0]"),
    ("match hash range", lambda f: f.match(hashes=[1, 1 << 64]), ValueError,
     "FleetClient.match", "hashes[1]"),
]


@pytest.mark.parametrize("fn, exc, where, name", [r[1:] for r in FLEET],
                         ids=[r[0] for r in FLEET])
def test_fleet_client_arguments(fn, exc, where, name):
    # nothing listens on port 9 (discard): a call that got past its checks would raise
    # FleetError, not the expected exception
    with FleetClient("http://127.0.0.1:9", timeout=2) as fc:
        expect(exc, where, name, fn, fc)
