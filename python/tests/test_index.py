"""kvblock.Index and kvblock.Subscriber from Python (FLEET.md): keys checked against
an independent Python computation of the Dynamo-compatible chain (xxhash), the
match arithmetic of section 5, tiers, copies, LoRA and cache salts, engine streams
recomputing router hashes from tokens, wire decoding (vLLM map and array layouts,
SGLang), liveness, snapshots, errors, concurrency; then the C subscriber fed by a
Python vLLM-style publisher (gap replay, restart, clear) and by kvblock's own C
publisher behind a pool, matched from Python while its thread applies."""
import array
import errno
import hashlib
import os
import re
import struct
import threading
import time

import pytest

import kvblock
import kvblock.index as ki
from kvblock import Index, IndexEvent, KvbError, Subscriber
from kvblock._ffi import _Padded, ffi, lib

pytestmark = pytest.mark.skipif(
    not ki.available(),
    reason="the loaded libkvblock has no fleet index yet (lib/index.c): rebuild the library")

try:
    import xxhash
except ImportError:  # pragma: no cover - Debian: python3-xxhash
    xxhash = None
try:
    import msgpack
    import zmq
except ImportError:  # pragma: no cover - Debian: python3-zmq, python3-msgpack
    zmq = msgpack = None

BS = 4
U64 = (1 << 64) - 1
stored, removed, cleared = IndexEvent.stored, IndexEvent.removed, IndexEvent.cleared


def toks(n_blocks, base=1000):
    return list(range(base, base + n_blocks * BS))


def engine_hashes(n, tag="e"):
    """vLLM-like engine hashes: the low 64 bits of SHA-256 (mostly >= 2**63 half the time)."""
    return [int.from_bytes(hashlib.sha256(f"{tag}{i}".encode()).digest()[-8:], "little")
            for i in range(n)]


# ---- an independent computation of the router hashes ---------------------------------

needs_xxhash = pytest.mark.skipif(xxhash is None, reason="python3-xxhash not installed")


def ref_salt(b):
    return xxhash.xxh3_64_intdigest(b, seed=0) if b else 0


def ref_chain(parent, block):
    return xxhash.xxh3_64_intdigest(struct.pack("<QQ", parent, block), seed=1337)


def ref_salt_key(lora=None, salt=None):
    lo, sa = (lora or "").encode(), (salt or "").encode()
    if not lo and not sa:
        return 0
    return ref_chain(ref_salt(lo), ref_salt(sa)) | 1


def ref_seed(seed, salt_key):
    return seed if salt_key == 0 else ref_chain(seed, salt_key)


def ref_hashes(tokens, bs=BS, seed=1337):
    """Dynamo's chain: block = xxh3_64(tokens as LE u32, seed); seq(0) = block;
    seq(i) = xxh3_64(le64(seq(i-1)) + le64(block), 1337)."""
    out = []
    for i in range(len(tokens) // bs):
        blk = xxhash.xxh3_64_intdigest(struct.pack(f"<{bs}I", *tokens[i * bs:(i + 1) * bs]),
                                       seed=seed)
        out.append(blk if i == 0 else ref_chain(out[-1], blk))
    return out


@needs_xxhash
def test_router_hashes_are_dynamos_chain_computed_independently():
    t = toks(9) + [1, 2]  # a trailing partial block gets no hash
    with Index(block_size=BS) as idx:
        assert idx.seed == kvblock.DYNAMO_SEED == 1337
        h = idx.hashes(t)
        assert h == ref_hashes(t) and len(h) == 9
        assert h == kvblock.hash_tokens(t, BS, 1337).currents()
        assert idx.hashes(array.array("I", t)) == h  # buffers in place
        # salted: the chain seed is kvb_hash_chain(seed, salt_key), salt_key as documented
        for lora, salt in (("sql-lora", None), (None, "tenant-1"), ("sql-lora", "tenant-1")):
            sk = ref_salt_key(lora, salt)
            assert kvblock.salt_key(lora, salt) == sk != 0
            assert idx.block_seed(sk) == ref_seed(1337, sk)
            want = ref_hashes(t, seed=ref_seed(1337, sk))
            assert idx.hashes(t, lora_name=lora, cache_salt=salt) == want != h
        assert kvblock.salt_key() == kvblock.salt_key("", "") == 0
        assert idx.block_seed(0) == 1337
        # a LoRA known by id is named by its decimal text
        assert kvblock.salt_key(7) == kvblock.salt_key("7") == ref_salt_key("7")
        assert idx.hashes(t, lora_name=7) == idx.hashes(t, lora_name="7")
    with Index(block_size=16, seed=0) as idx:
        t = toks(3, base=5)
        assert idx.hashes(t) == ref_hashes(t, 16, seed=0)
        assert idx.config()["seed"] == 0 and idx.block_size == 16


# ---- the match arithmetic ------------------------------------------------------------


def test_match_arithmetic_of_fleet_md_section_5():
    t = toks(10)
    with Index(block_size=BS) as idx:
        h = idx.hashes(t)
        a = idx.add_stream("a")
        idx.apply(a, [stored(h[:4]), stored(h[:6], tier="host"), stored(h[:8], tier="disk")],
                  seq=0)
        b = idx.add_stream("b", dp_rank=0)
        idx.apply(b, [stored(h[:3], tier="CPU")], seq=0)  # media names work as tiers
        c = idx.add_stream("c")
        idx.apply(c, stored(h[:2] + h[3:5], tier="GPU"))  # a hole at block 2
        d = idx.add_stream("d")
        idx.apply(d, stored(idx.hashes(toks(4, base=7))))  # another prefix entirely

        r = idx.match(h)
        assert [(x.worker, x.dp_rank) for x in r] == [("a", None), ("b", 0), ("c", None)]
        assert r.total == 3 and r.blocks == 10
        assert (r[0].device, r[0].host, r[0].disk) == (4, 2, 2) and r[0].blocks == 8
        assert r[0].score == pytest.approx(4 + 0.8 * 2 + 0.5 * 2)
        assert (r[1].device, r[1].host, r[1].disk) == (0, 3, 0)
        assert r[1].score == pytest.approx(2.4)
        assert (r[2].device, r[2].host, r[2].disk) == (2, 0, 0)
        assert r[0].entries == 4 + 6 + 8 and r[0].state == "live" and r[0].stream == a
        assert all(isinstance(x, kvblock.MatchResult) for x in r)

        # k cuts the list, total still counts every holder
        top = idx.match(h, k=1)
        assert len(top) == 1 and top.total == 3 and top[0].worker == "a"
        assert idx.match(h, k=0) == [] and idx.match(h, k=0).total == 3
        # match_tokens = hashes + match; a request shorter than the held prefix
        assert idx.match_tokens(t) == r and idx.match_tokens(t).blocks == 10
        short = idx.match_tokens(t[:2 * BS + 3])
        # a and c tie on score 2: c has fewer entries (4 against 18)
        assert short.blocks == 2 and [(x.worker, x.device, x.host) for x in short] == \
            [("c", 2, 0), ("a", 2, 0), ("b", 0, 2)]
        # nothing held, nothing asked
        assert idx.match(idx.hashes(toks(3, base=99))) == []
        assert idx.match([]) == [] and idx.match_tokens([]).blocks == 0
        # u64 buffers are used in place
        assert idx.match(array.array("Q", h)) == r


def test_ties_fewest_entries_first_then_name():
    t = toks(3)
    with Index(block_size=BS) as idx:
        h = idx.hashes(t)
        other = idx.hashes(toks(5, base=50))
        for name, extra in (("q", 0), ("p", 0), ("a-busy", 5), ("z-idle", 0)):
            s = idx.add_stream(name)
            idx.apply(s, stored(h + other[:extra]))
        r = idx.match(h)
        assert [x.worker for x in r] == ["p", "q", "z-idle", "a-busy"]
        assert len({x.score for x in r}) == 1
        # custom weights change the order across tiers
    with Index(block_size=BS, tier_weights=(1.0, 2.0, 0.0)) as idx:
        h = idx.hashes(t)
        idx.apply(idx.add_stream("dev"), stored(h))
        idx.apply(idx.add_stream("host"), stored(h, tier="host"))
        idx.apply(idx.add_stream("disk"), stored(h, tier="disk"))
        r = idx.match(h)
        assert [(x.worker, x.score) for x in r] == [("host", 6.0), ("dev", 3.0), ("disk", 0.0)]
        assert idx.config()["tier_weights"] == (1.0, 2.0, 0.0)


def test_copies_tiers_removed_and_cleared():
    t = toks(4)
    with Index(block_size=BS) as idx:
        h = idx.hashes(t)
        s = idx.add_stream("w")
        idx.apply(s, [stored(h), stored(h[:2])])  # two physical copies of blocks 0, 1
        idx.apply(s, removed(h[:2]))
        assert [(x.device, x.host) for x in idx.match(h)] == [(4, 0)]  # one copy left
        idx.apply(s, removed(h[:2]))
        assert idx.match(h) == []  # last copy of block 0 gone: no prefix
        idx.apply(s, removed(h[:1]))  # not held: counted, harmless
        info = idx.stream_info(s)
        assert info["dropped"]["unknown_block"] == 1 and info["entries"] == 2
        # tiers are independent: the host copy survives the device removal
        idx.apply(s, [stored(h[:2]), stored(h, tier="host")])
        idx.apply(s, removed(h[:2]))
        assert [(x.device, x.host, x.disk) for x in idx.match(h)] == [(0, 4, 0)]
        # CLEARED drops everything the stream holds
        idx.apply(s, [cleared()], seq=9)
        assert idx.match(h) == [] and idx.stream_info(s)["entries"] == 0
        assert idx.stream_info(s)["last_seq"] == 9
        idx.apply(s, [], seq=-1)  # seq < 0 keeps it
        assert idx.stream_info(s)["last_seq"] == 9
        # clear_stream counts a clear and sets the state
        idx.apply(s, stored(h))
        idx.clear_stream(s, "resyncing")
        info = idx.stream_info(s)
        assert info["state"] == "resyncing" and info["clears"] >= 1 and info["entries"] == 0
        st = idx.stats()
        assert st["streams"] == 1 and st["keys"] == 0 and st["entries"] == 0
        assert st["block_ops"] > 0 and st["matches"] >= 4


def test_dict_events_in_vllm_spelling():
    t = toks(3)
    with Index(block_size=BS) as idx:
        h = idx.hashes(t)
        s = idx.add_stream("w")
        idx.apply(s, [{"type": "BlockStored", "block_hashes": h, "medium": "CPU"},
                      {"type": "stored", "hashes": h[:1]}], seq=3)
        assert [(x.device, x.host) for x in idx.match(h)] == [(1, 2)]
        idx.apply(s, [{"type": "AllBlocksCleared"}])
        assert idx.match(h) == []


def test_engine_streams_recompute_router_hashes_from_tokens():
    t = toks(8)
    eh = engine_hashes(8)
    assert any(x >= 1 << 63 for x in eh)
    with Index(block_size=BS) as idx:
        rh = idx.hashes(t)
        e = idx.add_stream("vllm", dp_rank=0, hashes="engine")
        idx.apply(e, stored(eh[:3], tokens=t[:3 * BS]), seq=0)
        idx.apply(e, stored(eh[3:6], parent=eh[2], tokens=array.array("I", t[3 * BS:6 * BS])),
                  seq=1)
        (r,) = idx.match(rh)
        assert (r.worker, r.dp_rank, r.device) == ("vllm", 0, 6)
        if xxhash is not None:
            (r2,) = idx.match(ref_hashes(t))
            assert r2.device == 6
        info = idx.stream_info(e)
        assert info["hashes"] == "engine" and info["engine_map"] == 6
        assert info["last_seq"] == 1 and info["batches"] == 2
        # REMOVED carries engine hashes only
        idx.apply(e, removed(eh[4:6]))
        assert idx.match(rh)[0].device == 4 and idx.stream_info(e)["engine_map"] == 4
        # a parent the stream does not know cannot be chained: dropped, counted
        idx.apply(e, stored(eh[6:7], parent=12345, tokens=t[6 * BS:7 * BS]))
        # STORED without tokens, or with another block size
        idx.apply(e, stored(eh[6:7], parent=eh[3], tokens=None))
        idx.apply(e, stored(eh[6:7], parent=eh[3], tokens=t[:8], block_size=8))
        d = idx.stream_info(e)["dropped"]
        assert d["unknown_parent"] == 1 and d["no_tokens"] == 1 and d["block_size"] == 1
        assert idx.match(rh)[0].device == 4
        # SGLang's signed hashes are taken as their u64
        s = idx.add_stream("sglang", hashes="engine")
        neg = [-5, -(1 << 63)]
        idx.apply(s, stored(neg, tokens=t[:2 * BS]))
        assert idx.match(rh[:2])[0].worker == "sglang"
        idx.apply(s, removed([(-5) & U64]))
        assert [x.worker for x in idx.match(rh[:2])] == ["vllm"]


def test_lora_and_cache_salt_never_match_plain_text():
    t = toks(4)
    with Index(block_size=BS) as idx:
        plain = idx.hashes(t)
        e = idx.add_stream("lora-engine", hashes="engine")
        idx.apply(e, stored(engine_hashes(4, "l"), tokens=t, salt_key=kvblock.salt_key("sql")))
        assert idx.match_tokens(t) == [] and idx.match(plain) == []
        assert [x.device for x in idx.match_tokens(t, lora_name="sql")] == [4]
        assert idx.match_tokens(t, lora_name="sql", cache_salt="x") == []
        # dicts: lora_name, or lora_id named by its decimal text, or cache_salt
        f = idx.add_stream("by-id", hashes="engine")
        idx.apply(f, {"type": "stored", "hashes": engine_hashes(4, "i"), "tokens": t,
                      "lora_id": 7})
        assert [x.worker for x in idx.match_tokens(t, lora_name=7)] == ["by-id"]
        assert [x.worker for x in idx.match_tokens(t, lora_name="7")] == ["by-id"]
        g = idx.add_stream("salted", hashes="engine")
        idx.apply(g, {"type": "stored", "hashes": engine_hashes(4, "s"), "tokens": t,
                      "cache_salt": "tenant-1"})
        assert [x.worker for x in idx.match_tokens(t, cache_salt="tenant-1")] == ["salted"]
        assert idx.match_tokens(t) == []
        # a router stream publishes salted router hashes directly
        r = idx.add_stream("kvblock-worker")
        idx.apply(r, stored(idx.hashes(t, lora_name="sql")))
        assert sorted(x.worker for x in idx.match_tokens(t, lora_name="sql")) == \
            ["kvblock-worker", "lora-engine"]


# ---- streams, states, liveness --------------------------------------------------------


def test_streams_states_and_liveness():
    t = toks(3)
    with Index(block_size=BS, stale_after=1.0, drop_after=5.0) as idx:
        h = idx.hashes(t)
        s0 = idx.add_stream("w", dp_rank=0)
        s1 = idx.add_stream("w", dp_rank=1, block_size=0)
        x = idx.add_stream("x")
        assert idx.streams() == sorted([s0, s1, x])
        assert idx.find_stream("w", 1) == s1 and idx.find_stream("w") is None
        assert idx.add_stream("w", dp_rank=1, exist_ok=True) == s1
        with pytest.raises(KvbError) as e:
            idx.add_stream("w", dp_rank=1)
        assert e.value.name == "EEXIST" and e.value.errno == errno.EEXIST
        # streams by id, by name (no rank) or by (name, rank)
        idx.apply(("w", 0), stored(h))
        idx.apply(("w", 1), stored(h[:1]))
        idx.apply("x", stored(h[:2]))
        assert [x.worker for x in idx.match(h)] == ["w", "x", "w"]
        infos = idx.stream_info()
        assert [i["stream"] for i in infos] == idx.streams()
        assert {(i["worker"], i["dp_rank"]) for i in infos} == {("w", 0), ("w", 1), ("x", None)}
        # a STALE stream is not matched; LAGGING and RESYNCING are
        idx.set_state(x, "stale")
        assert [m.worker for m in idx.match(h)] == ["w", "w"]
        idx.set_state(x, "lagging")
        assert [m.state for m in idx.match(h)] == ["live", "lagging", "live"]
        idx.set_state(x, "live")
        # liveness: transport down past stale_after -> stale; past drop_after -> freed
        now = idx.now_ns()
        idx.heard(x, connected=False, now_ns=now)
        assert idx.tick(now + 500_000_000) == 0
        assert idx.tick(now + 1_500_000_000) == 1 and idx.stream_info(x)["state"] == "stale"
        assert "x" not in [m.worker for m in idx.match(h)]
        idx.tick(now + 6_000_000_000)
        assert idx.stream_info(x)["entries"] == 0
        idx.heard(x, connected=True, now_ns=now + 7_000_000_000)
        assert idx.stream_info(x)["state"] == "live"
        # caller-kept counters, seq, drops
        idx.count(s0, "gaps", 2)
        idx.count(s0, "replays")
        idx.set_seq(s0, 41)
        idx.drop(s0, {"malformed": 3, "unknown_type": 1})
        i = idx.stream_info(s0)
        assert (i["gaps"], i["replays"], i["last_seq"]) == (2, 1, 41)
        assert i["dropped"]["malformed"] == 3 and i["dropped"]["unknown_type"] == 1
        # removal
        assert idx.remove_worker("w") == 2
        assert idx.streams() == [x] and idx.match(h) == []
        idx.remove_stream(x)
        with pytest.raises(KvbError) as e:
            idx.remove_stream(x)
        assert e.value.name == "ENOENT"
        assert idx.stats()["streams"] == 0


def test_metrics_text_and_stats():
    with Index(block_size=BS) as idx:
        s = idx.add_stream("w-metrics", dp_rank=3)
        idx.apply(s, stored(idx.hashes(toks(2))), seq=0)
        text = idx.metrics_text()
        assert 'worker="w-metrics"' in text and 'dp_rank="3"' in text
        st = idx.stats()
        assert st["keys"] == 2 and st["entries"] == 2 and st["batches"] == 1
        assert st["memory_bytes"] > 0
        assert repr(idx).startswith("Index(block_size=4")


# ---- errors ------------------------------------------------------------------------------


def test_errors_carry_the_errno_name():
    for kw in ({"block_size": 3}, {"shards": 3}, {"tier_weights": (1.0, -1.0, 0.5)},
               {"block_size": 4096}):
        with pytest.raises(KvbError) as e:
            Index(**kw)
        assert e.value.name == "EINVAL", kw
    with pytest.raises(ValueError):
        Index(tier_weights=(1.0, 0.5))
    with Index(block_size=BS) as idx:
        for bad in ("", "n" * 64):
            with pytest.raises(KvbError) as e:
                idx.add_stream(bad)
            assert e.value.name == "EINVAL"
        assert idx.add_stream("n" * 63) >= 0  # KVB_INDEX_NAME_MAX - 1 bytes fit
        s = idx.add_stream("w")
        idx.remove_stream(s)
        with pytest.raises(KvbError) as e:
            idx.apply(s, stored([1]))
        assert e.value.name == "ENOENT" and "kvb_index_apply" in str(e.value)
        with pytest.raises(KvbError) as e:
            idx.apply(("nobody", 0), stored([1]))
        assert e.value.name == "ENOENT"
        s = idx.add_stream("w2")
        with pytest.raises(ValueError):
            idx.apply(s, [IndexEvent("bogus", "device", [1])])
        with pytest.raises(ValueError):
            idx.apply(s, stored([1], tier="nvme"))
        with pytest.raises(ValueError):
            idx.apply(s, stored([1 << 64]))
        with pytest.raises(ValueError):
            idx.match([1 << 64])
        with pytest.raises(TypeError):
            idx.match(array.array("I", [1, 2]))  # u32 buffer where u64 hashes are expected
        with pytest.raises(ValueError):
            idx.set_state(s, "asleep")
        assert idx.stream_info(s)["entries"] == 0  # failed calls changed nothing
    with pytest.raises(ValueError):
        idx.match([1])  # closed
    idx.close()  # twice is fine


# ---- wire decoding ---------------------------------------------------------------------

needs_msgpack = pytest.mark.skipif(msgpack is None, reason="python3-msgpack not installed")


def vllm_stored(hashes, tokens, parent=None, medium=None, lora_name=None, lora_id=None,
                **extra):
    ev = {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent,
          "token_ids": tokens, "block_size": BS, "lora_id": lora_id, "medium": medium,
          "lora_name": lora_name}
    ev.update(extra)
    return ev


def vllm_removed(hashes, medium=None, **extra):
    return {"type": "BlockRemoved", "block_hashes": hashes, "medium": medium, **extra}


def vllm_batch(events, dp_rank=0, ts=None, as_map=False):
    ts = time.time() if ts is None else ts
    if as_map:
        return msgpack.packb({"ts": ts, "events": events, "data_parallel_rank": dp_rank})
    return msgpack.packb([ts, events, dp_rank])


@needs_msgpack
def test_decode_vllm_map_and_array_layouts():
    t = toks(4)
    eh = engine_hashes(4)
    events = [vllm_stored(eh[:2], t[:2 * BS]),
              vllm_stored(eh[2:], t[2 * BS:], parent=eh[1], medium="CPU", lora_name="sql"),
              vllm_removed(eh[:1], medium="GPU"), {"type": "AllBlocksCleared"}]
    for as_map in (False, True):
        b = kvblock.decode(vllm_batch(events, dp_rank=2, ts=12.5, as_map=as_map))
        assert (b.ts, b.dp_rank, b.dropped) == (12.5, 2, {})
        assert [e.type for e in b.events] == ["stored", "stored", "removed", "cleared"]
        e0, e1, e2, _ = b.events
        assert e0.hashes == eh[:2] and e0.tokens == t[:8] and e0.parent is None
        assert e0.tier == "device" and e0.salt_key == 0
        assert e1.parent == eh[1] and e1.tier == "host"
        assert e1.salt_key == kvblock.salt_key("sql")
        assert e2.hashes == eh[:1] and e2.tier == "device"
    # the legacy array layout of events (what kvblock's publisher sent first)
    legacy = [["BlockStored", eh[:2], None, t[:8], BS, None, None],
              ["BlockRemoved", eh[:1], "CPU"], ["AllBlocksCleared"]]
    b = kvblock.decode(msgpack.packb([1.0, legacy, None]))
    assert [e.type for e in b.events] == ["stored", "removed", "cleared"]
    assert b.dp_rank is None and b.events[0].hashes == eh[:2] and b.events[1].tier == "host"
    # vLLM's raw 32-byte digests: the last 8 bytes, big-endian
    digest = hashlib.sha256(b"x").digest()
    b = kvblock.decode(vllm_batch([vllm_stored([digest], t[:4])]))
    assert b.events[0].hashes == [int.from_bytes(digest[-8:], "big")]
    # SGLang: signed 64-bit hashes
    b = kvblock.decode(vllm_batch([vllm_stored([-5], t[:4])]), "sglang")
    assert b.events[0].hashes == [(-5) & U64]


@needs_msgpack
def test_decode_skips_and_counts_what_it_cannot_use():
    t = toks(2)
    eh = engine_hashes(2)
    events = [{"type": "SomethingNew", "x": 1},
              vllm_stored(eh, t, group_idx=1),
              vllm_stored(eh, t, medium="TAPE"),
              vllm_stored(eh, t, unknown_future_key=[1, 2]),
              vllm_removed(eh, group_idx=0)]
    b = kvblock.decode(vllm_batch(events))
    assert b.dropped == {"unknown_type": 1, "group": 1, "medium": 1}
    assert [e.type for e in b.events] == ["stored", "removed"]
    for junk in (b"", b"\xc1", msgpack.packb({"hello": "world"}), msgpack.packb(42)):
        with pytest.raises(KvbError) as e:
            kvblock.decode(junk)
        assert e.value.name == "EBADMSG"
    with pytest.raises(ValueError):
        kvblock.decode(b"", "bogus-kind")
    # applying a decoded batch adds its drops to the stream
    with Index(block_size=BS) as idx:
        s = idx.add_stream("w", dp_rank=0, hashes="engine")
        idx.apply(s, b, seq=0)
        info = idx.stream_info(s)
        assert info["dropped"]["unknown_type"] == 1 and info["dropped"]["group"] == 1
        assert idx.match(idx.hashes(t)) == []  # stored then removed
        # decode + apply in C
        payload = vllm_batch([vllm_stored(eh, t)])
        assert idx.apply_payload(s, payload, "vllm", seq=1) == 1
        assert idx.match(idx.hashes(t))[0].device == 2
        assert idx.stream_info(s)["last_seq"] == 1
        with pytest.raises(KvbError):
            idx.apply_payload(s, b"\xc1", seq=2)
        assert idx.stream_info(s)["last_seq"] == 1


# ---- snapshots -------------------------------------------------------------------------


def build_fleet(idx, n_workers=5, n_req=6):
    reqs = [toks(8, base=100 * r) for r in range(n_req)]
    for w in range(n_workers):
        s = idx.add_stream(f"w{w}", dp_rank=w % 2, hashes="engine" if w % 2 else "router")
        evs = []
        for r, t in enumerate(reqs):
            if (r + w) % 3 == 0:
                continue
            n = 1 + (r * 7 + w) % 8
            if w % 2:
                evs.append(stored(engine_hashes(n, f"{w}/{r}/"), tokens=t[:n * BS],
                                  tier=ki.TIERS[(r + w) % 3]))
            else:
                evs.append(stored(idx.hashes(t[:n * BS]), tier=ki.TIERS[r % 3]))
        idx.apply(s, evs, seq=10 + w)
    return reqs


def test_snapshot_round_trip_file_and_memory(tmp_path):
    path = tmp_path / "fleet.kvbi"
    with Index(block_size=BS) as idx:
        reqs = build_fleet(idx)
        want = [idx.match_tokens(t) for t in reqs]
        want_info = idx.stream_info()
        size = idx.save(path)
        assert size == os.path.getsize(path) > 0
        blob = idx.dumps()
    assert not [p for p in os.listdir(tmp_path) if p != "fleet.kvbi"]  # no temporary left
    def same(matches):  # stream ids are internal: compare everything else
        return [[m._replace(stream=0) for m in ms] for ms in matches]

    for again in (Index.load(path), Index.load(str(path), block_size=BS), Index.loads(blob)):
        with again:
            assert same(again.match_tokens(t) for t in reqs) == same(want)
            got = again.stream_info()
            for g, w in zip(got, want_info):
                for key in ("worker", "dp_rank", "hashes", "last_seq", "entries", "engine_map"):
                    assert g[key] == w[key], key
            # the engine map came back too: REMOVED by engine hash still works
            # (build_fleet: w1 stored 2 blocks of reqs[0] on host under "1/0/" hashes)
            assert "w1" in {m.worker for m in again.match_tokens(reqs[0])}
            again.apply(again.find_stream("w1", 1),
                        removed(engine_hashes(2, "1/0/"), tier="host"))
            assert "w1" not in {m.worker for m in again.match_tokens(reqs[0])}
            assert again.stats()["keys"] > 0


def test_snapshot_errors(tmp_path):
    with Index(block_size=BS) as idx:
        build_fleet(idx, 2, 2)
        blob = idx.dumps()
        idx.save(tmp_path / "ok")
    with pytest.raises(KvbError) as e:
        Index.load(tmp_path / "missing")
    assert e.value.name == "ENOENT"
    with pytest.raises(KvbError) as e:
        Index.load(tmp_path / "ok", block_size=BS * 2)  # the keys would not mean the same
    assert e.value.name == "EINVAL"
    with pytest.raises(KvbError) as e:
        Index.load(tmp_path / "ok", seed=7)
    assert e.value.name == "EINVAL"
    for bad in (blob[:len(blob) // 2], blob[:-1], b"", b"not a snapshot at all" * 10):
        with pytest.raises(KvbError) as e:
            Index.loads(bad)
        assert e.value.name == "EBADMSG", len(bad)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    with pytest.raises(KvbError) as e:
        Index.loads(bytes(flipped))
    assert e.value.name == "EBADMSG"
    with pytest.raises(KvbError) as e:  # a directory that does not exist: nothing written
        with Index(block_size=BS) as idx:
            idx.save(tmp_path / "no" / "such" / "dir" / "snap")
    assert e.value.name == "ENOENT"


# ---- concurrency ---------------------------------------------------------------------


def test_matches_from_python_threads_while_another_applies():
    """A held prefix that nobody removes stays matched while a writer churns other
    blocks; matches never see more than the request's blocks."""
    reqs = [toks(16, base=1000 * r) for r in range(8)]
    with Index(block_size=BS) as idx:
        hs = [idx.hashes(t) for t in reqs]
        anchor = idx.add_stream("anchor")
        idx.apply(anchor, stored(hs[0][:8]))
        churn = [idx.add_stream(f"c{i}") for i in range(4)]
        stop = threading.Event()
        errors = []
        counts = [0, 0]

        def writer():
            i = 0
            try:
                while not stop.is_set():
                    s = churn[i % 4]
                    h = hs[i % 8]
                    idx.apply(s, [stored(h), removed(h[8:])], seq=i)
                    idx.apply(s, [removed(h[:8])])
                    i += 1
            except Exception as e:  # pragma: no cover
                errors.append(e)

        def reader(slot):
            try:
                while not stop.is_set():
                    r = idx.match(hs[0])
                    a = [m for m in r if m.worker == "anchor"]
                    assert len(a) == 1 and a[0].device == 8, r
                    assert all(m.blocks <= 16 for m in r)
                    counts[slot] += 1
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=writer)] + \
            [threading.Thread(target=reader, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        time.sleep(1.0)
        stop.set()
        for th in threads:
            th.join()
        assert not errors, errors[0]
        assert min(counts) > 0
        assert [m.worker for m in idx.match(hs[0])] == ["anchor"]


# ---- the subscriber, fed by a Python vLLM-style publisher ---------------------------------

needs_zmq = pytest.mark.skipif(zmq is None or msgpack is None,
                               reason="python3-zmq and python3-msgpack not installed")
needs_sub = pytest.mark.skipif(not ki.subscriber_available(),
                               reason="libkvblock built without ZeroMQ (no subscriber)")

END_SEQ = (-1).to_bytes(8, "big", signed=True)


class VllmEngine:
    """What vLLM's ZmqEventPublisher does: PUB [topic, 8-byte BE seq, msgpack batch];
    a ROUTER replay socket answering [.., "", 8-byte start] with ["", seq, payload]
    per buffered batch >= start, then ["", -1, ""]. publish(skip=True) buffers a
    batch without sending it (a message lost on the way)."""

    def __init__(self, ctx, endpoint, replay_endpoint, dp_rank=0, topic=b""):
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(endpoint)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(replay_endpoint)
        self.dp_rank, self.topic = dp_rank, topic
        self.seq = 0
        self.buffer = []
        self.replay_requests = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(20):
                continue
            frames = self.router.recv_multipart()
            ident, start_b = frames[0], frames[-1]
            delim = [b""] if len(frames) == 3 else []
            start = int.from_bytes(start_b, "big")
            with self.lock:
                todo = [(s, p) for s, p in self.buffer if s >= start]
                self.replay_requests += 1
            for s, p in todo:
                self.router.send_multipart([ident, *delim, s.to_bytes(8, "big"), p])
            self.router.send_multipart([ident, *delim, END_SEQ, b""])

    def publish(self, events, skip=False, seq=None):
        payload = vllm_batch(events, self.dp_rank)
        with self.lock:
            if seq is not None:  # a restart: the sequence goes back
                self.seq = seq
                self.buffer = [(s, p) for s, p in self.buffer if s < seq]
            s = self.seq
            self.seq += 1
            self.buffer.append((s, payload))
        if not skip:
            self.pub.send_multipart([self.topic, s.to_bytes(8, "big"), payload])
        return s

    def close(self):
        self.stop.set()
        self.thread.join()
        self.pub.close()
        self.router.close()


def catch_up(engine, sub, name, timeout=10.0):
    """Publish empty batches until the subscriber has everything the engine sent
    (the first messages may be lost while the SUB socket joins: the gap they leave
    is replayed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sub.sync(5.0)
        if sub.worker_info(name)["expected_seq"] == engine.seq:
            return
        if sub.worker_info(name)["connected"]:
            engine.publish([])
        time.sleep(0.02)
    raise AssertionError(f"subscriber did not catch up: {sub.worker_info(name)} "
                         f"(engine at {engine.seq})")


@pytest.fixture
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.term()


@needs_zmq
@needs_sub
def test_subscriber_vllm_engine_gap_replay_restart_clear(tmp_path, zctx):
    ep, rep = f"ipc://{tmp_path}/pub", f"ipc://{tmp_path}/replay"
    eng = VllmEngine(zctx, ep, rep, dp_rank=0)
    notes = []
    reqs = [toks(6, base=100 * r) for r in range(4)]
    try:
        with Index(block_size=BS) as idx:
            with Subscriber(idx, replay_timeout_ms=2000,
                            callback=lambda *a: notes.append(a)) as sub:
                sub.add_worker("eng", ep, replay=rep, kind="vllm", block_size=BS)
                assert sub.workers() == ["eng"]
                with pytest.raises(KvbError) as e:
                    sub.add_worker("eng", ep)
                assert e.value.name == "EEXIST"
                eh = [engine_hashes(6, f"r{r}/") for r in range(4)]
                for r in range(2):
                    eng.publish([vllm_stored(eh[r], reqs[r])])
                catch_up(eng, sub, "eng")
                for r in range(2):
                    (m,) = idx.match_tokens(reqs[r])
                    assert (m.worker, m.dp_rank, m.device) == ("eng", 0, 6)
                assert idx.stream_info(("eng", 0))["hashes"] == "engine"
                assert sub.ready()

                # a lost batch: the next one triggers a replay of it
                eng.publish([vllm_stored(eh[2], reqs[2])], skip=True)
                eng.publish([vllm_removed(eh[0][3:])])
                catch_up(eng, sub, "eng")
                assert idx.match_tokens(reqs[2])[0].device == 6
                assert idx.match_tokens(reqs[0])[0].device == 3
                info = sub.worker_info("eng")
                assert info["gaps"] >= 1 and info["replays"] >= 1 and eng.replay_requests >= 1
                assert idx.stream_info(("eng", 0))["state"] == "live"

                # a restart (sequence back to 0): what the engine held before is gone
                eng.publish([vllm_stored(eh[3], reqs[3])], seq=0)
                catch_up(eng, sub, "eng")
                assert idx.match_tokens(reqs[1]) == []
                assert idx.match_tokens(reqs[3])[0].device == 6
                assert sub.worker_info("eng")["restarts"] >= 1

                # AllBlocksCleared
                eng.publish([{"type": "AllBlocksCleared"}])
                catch_up(eng, sub, "eng")
                assert all(idx.match_tokens(t) == [] for t in reqs)

                # the index cannot close under a running subscriber
                with pytest.raises(KvbError) as e:
                    idx.close()
                assert e.value.name == "EBUSY" and not idx.closed
                sub.remove_worker("eng", drop=True)
                assert sub.workers() == [] and idx.find_stream("eng", 0) is None
            assert sub.closed
        assert idx.closed
    finally:
        eng.close()
    kinds = {n[0] for n in notes}
    assert "batch" in kinds and "clear" in kinds
    batches = [n for n in notes if n[0] == "batch" and n[3] is not None and n[3].events]
    assert batches and batches[0][1] == "eng" and batches[0][3].events[0].type == "stored"


@needs_zmq
@needs_sub
def test_python_matches_run_while_the_subscriber_thread_applies(tmp_path, zctx):
    ep, rep = f"ipc://{tmp_path}/pub", f"ipc://{tmp_path}/replay"
    eng = VllmEngine(zctx, ep, rep, dp_rank=1)
    anchor_t = toks(8, base=7)
    try:
        with Index(block_size=BS) as idx, Subscriber(idx) as sub:
            sub.add_worker("eng", ep, replay=rep)
            anchor = engine_hashes(8, "anchor")
            eng.publish([vllm_stored(anchor, anchor_t)])
            catch_up(eng, sub, "eng")
            stop = threading.Event()
            seen, errors = [], []

            def reader():
                try:
                    while not stop.is_set():
                        r = idx.match_tokens(anchor_t)
                        assert [(m.worker, m.dp_rank, m.device) for m in r] == \
                            [("eng", 1, 8)], r
                        seen.append(len(r))
                except Exception as e:
                    errors.append(e)

            th = threading.Thread(target=reader)
            th.start()
            n = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.0:
                t = toks(8, base=10_000 + 100 * n)
                eh = engine_hashes(8, f"churn{n}/")
                eng.publish([vllm_stored(eh, t), vllm_removed(eh[4:])])
                n += 1
                time.sleep(0.001)
            catch_up(eng, sub, "eng")
            stop.set()
            th.join()
            assert not errors, errors[0]
            assert len(seen) > 10
            st = idx.stream_info(("eng", 1))
            assert st["batches"] >= n  # every churn batch applied by the C thread
            assert st["entries"] == 8 + 4 * n
    finally:
        eng.close()


@needs_sub
def test_garbage_collection_never_frees_an_index_under_its_subscriber():
    import gc
    import weakref
    for first in ("index", "subscriber"):
        idx = Index(block_size=BS)
        sub = Subscriber(idx)
        idx.add_stream("w")
        idx.peer, sub.peer = sub, idx  # a reference cycle: finalizers in any order
        wi, ws = weakref.ref(idx), weakref.ref(sub)
        if first == "index":
            del sub, idx
        else:
            del idx, sub
        gc.collect()
        assert wi() is None and ws() is None
    # without a cycle: the subscriber keeps the index alive until it goes
    idx = Index(block_size=BS)
    sub = Subscriber(idx)
    wi = weakref.ref(idx)
    del idx
    gc.collect()
    assert wi() is not None and wi().find_stream("x") is None
    sub.close()
    del sub
    gc.collect()
    assert wi() is None


# ---- the subscriber, fed by kvblock's C publisher behind a pool ----------------------------


class CPublisherPool:
    """A kvblock pool whose events go to kvblock's C publisher (kvb_publisher_sink):
    what a kvblock engine runs. Blocks are put with the Dynamo-seeded lineage hashes
    of their tokens, so the published kvb_hash_current values are router hashes."""

    def __init__(self, endpoint, replay_endpoint, blocks=64):
        cfg = _Padded("kvb_publisher_config")
        lib.kvb_publisher_config_init(cfg.ptr)
        self._keep = [ffi.new("char[]", endpoint.encode()),
                      ffi.new("char[]", replay_endpoint.encode())]
        cfg.ptr.endpoint, cfg.ptr.replay_endpoint = self._keep
        out = ffi.new("kvb_publisher **")
        rc = lib.kvb_publisher_create(cfg.ptr, out)
        if rc < 0:
            raise KvbError(rc, "kvb_publisher_create")
        self.pub = out[0]
        ec = _Padded("kvb_event_config")
        lib.kvb_event_config_init(ec.ptr)
        lib.kvb_publisher_event_config(self.pub, ec.ptr)
        pc = _Padded("kvb_pool_config")
        lib.kvb_pool_config_init(pc.ptr)
        pc.ptr.block_count = blocks
        pc.ptr.block_size = BS
        pc.ptr.events = ec.ptr
        self._keep.append(ec)
        po = ffi.new("kvb_pool **")
        rc = lib.kvb_pool_create(pc.ptr, po)
        if rc < 0:
            lib.kvb_publisher_destroy(self.pub)
            raise KvbError(rc, "kvb_pool_create")
        self.pool = po[0]
        self.held = []

    def put(self, tokens):
        """allocate + stage + register the full blocks of tokens; keeps the references."""
        hs = kvblock.hash_tokens(tokens, BS, kvblock.DYNAMO_SEED)
        n = len(hs)
        m = ffi.new("kvb_mutable[]", n)
        c = ffi.new("kvb_complete[]", n)
        b = ffi.new("kvb_block[]", n)
        for rc in (lib.kvb_pool_allocate(self.pool, n, m, ffi.NULL, ffi.NULL),
                   lib.kvb_pool_stage(self.pool, m, hs._ptr, n, c),
                   lib.kvb_pool_register(self.pool, c, n, b)):
            assert rc >= 0, kvblock.err_name(rc)
        self.held.append((b, n))
        return hs.currents()

    def flush(self):
        assert lib.kvb_pool_events_flush(self.pool) == 0
        assert lib.kvb_publisher_flush(self.pub, 5000) == 0

    def published(self):
        st = _Padded("kvb_publisher_stats")
        assert lib.kvb_publisher_stats_get(self.pub, st.ptr) == 0
        return st.ptr.last_seq + 1

    def close(self):
        for b, n in self.held:
            lib.kvb_block_release_n(b, n)
        self.held = []
        if self.pool is not None:
            assert lib.kvb_pool_destroy(self.pool) == 0  # publishes CLEARED
            self.pool = None
        if self.pub is not None:
            lib.kvb_publisher_flush(self.pub, 5000)
            lib.kvb_publisher_destroy(self.pub)
            self.pub = None


@needs_sub
def test_subscriber_fed_by_kvblocks_c_publisher(tmp_path):
    if not lib.kvb_publisher_available():
        pytest.skip("libkvblock built without the ZeroMQ publisher")
    ep, rep = f"ipc://{tmp_path}/kvb-pub", f"ipc://{tmp_path}/kvb-replay"
    eng = CPublisherPool(ep, rep)
    reqs = [toks(5, base=300 * r) for r in range(3)]
    try:
        with Index(block_size=BS) as idx, Subscriber(idx) as sub:
            sub.add_worker("kvb0", ep, replay=rep, kind="kvblock")
            deadline = time.monotonic() + 10
            while not sub.worker_info("kvb0")["connected"]:
                assert time.monotonic() < deadline, "subscriber never connected"
                time.sleep(0.02)
            router = eng.put(reqs[0])
            assert router == idx.hashes(reqs[0])  # kvblock publishes router hashes
            eng.put(reqs[1])
            eng.flush()
            # the first batches may be lost while joining: later ones trigger a replay
            k = 0
            while sub.worker_info("kvb0")["expected_seq"] < eng.published() or \
                    not idx.match_tokens(reqs[0]):
                assert time.monotonic() < deadline, sub.worker_info("kvb0")
                eng.put(toks(1, base=90_000 + k * BS))
                k += 1
                eng.flush()
                sub.sync(5.0)
                time.sleep(0.02)
            for t in reqs[:2]:
                (m,) = idx.match_tokens(t)
                assert (m.worker, m.dp_rank, m.device, m.host) == ("kvb0", None, 5, 0)
            assert idx.match_tokens(reqs[2]) == []
            assert idx.stream_info(("kvb0", None))["hashes"] == "router"
            # destroying the pool publishes CLEARED: nothing stale remains
            eng.close()
            deadline = time.monotonic() + 10
            while idx.match_tokens(reqs[0]):
                assert time.monotonic() < deadline, "CLEARED never applied"
                sub.sync(5.0)
                time.sleep(0.02)
    finally:
        eng.close()


# ---- the example ------------------------------------------------------------------------

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                       "fleet_match.py")


def run_example(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, EXAMPLE, *args], check=True, capture_output=True,
                          text=True, timeout=120).stdout


def test_fleet_match_example_in_process():
    out = run_example()
    first = out.split("after kvb-c")[0]
    # kvb-c holds all 12 blocks on device, vllm-a 10 + 2 on host, vllm-b the 8-block prompt
    assert first.index("kvb-c") < first.index("vllm-a") < first.index("vllm-b")
    assert "device 10  host  2" in first and "score  11.6" in first
    best = out.split("after kvb-c evicted 6 blocks, best")[1].split("same tokens")[0]
    assert "vllm-a" in best and "kvb-c" not in best
    lora = out.split("(no false positive)")[1].split("snapshot")[0]
    assert "device" not in lora
    assert "same answers after load: True" in out


@needs_zmq
@needs_sub
def test_fleet_match_example_over_the_subscriber():
    out = run_example("--zmq")
    assert out.index("kvb-c") < out.index("vllm-a") < out.index("vllm-b")
    assert "rank 1  device  8" in out


def test_fleet_match_example_bench_runs():
    out = run_example("--bench", "100", "--sequences", "100")
    assert re.search(r"C kvb_index_match .*\s\d+ ns/call", out)
    assert re.search(r"Index\.match\(array\('Q'\), k=16\)\s+\d+ ns/call\s+\(\+-?\d+ ns over C\)",
                     out)
