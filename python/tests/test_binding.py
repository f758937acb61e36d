"""The binding through its public surface: hashes, handles, batches, errors,
context managers, stats and metrics, registry presence, events."""
import array
import errno
import gc
import threading

import pytest

import kvblock
from kvblock import Hash, Hashes, KvbError, Pool, Registry


def chain(base, n):
    return Hashes.from_lineage(list(range(base, base + n)))


# ---- hashes -----------------------------------------------------------------


def test_hash_make_and_accessors():
    h = Hash.make(0x1234, parent=0xABCD << 48, position=3)
    assert h.position == 3
    assert h.current == 0x1234
    assert h.parent_fragment == (0xABCD << 48) & ((1 << 54) - 1)
    c = h.extend(0x99)
    assert c.position == 4 and h.is_parent_of(c) and not c.is_parent_of(h)
    assert Hash.make(5) == Hash.make(5) and Hash.make(5) != Hash.make(6)
    assert len({Hash.make(5), Hash.make(5)}) == 1
    assert str(h).startswith("3:")
    with pytest.raises(KvbError) as e:
        Hash.make(1, position=1 << 24)
    assert e.value.name == "EOVERFLOW" and e.value.errno == errno.EOVERFLOW


def test_token_hashing_agrees_with_block_and_chain():
    tokens = list(range(100, 164))  # 4 blocks of 16
    hs = kvblock.hash_tokens(tokens, 16)
    assert len(hs) == 4
    seq = None
    for i in range(4):
        b = kvblock.hash_block(tokens[16 * i:16 * (i + 1)])
        seq = b if i == 0 else kvblock.hash_chain(seq, b)
        assert hs[i].current == seq and hs[i].position == i
        if i:
            assert hs[i - 1].is_parent_of(hs[i])
    # buffers are used in place, lists converted: same answer
    assert kvblock.hash_tokens(array.array("I", tokens), 16).currents() == hs.currents()
    # trailing partial block: no hash; a salt changes everything
    assert len(kvblock.hash_tokens(tokens[:40], 16)) == 2
    salted = kvblock.hash_tokens(tokens, 16, kvblock.hash_salt(b"lora-7"))
    assert salted.currents() != hs.currents()
    assert kvblock.hash_salt(b"") == 0


def test_hashes_views_and_buffers():
    hs = chain(1000, 10)
    v = hs[3:7]
    assert len(v) == 4 and v[0] == hs[3] and list(v)[-1] == hs[6]
    with pytest.raises(ValueError):
        hs[::2]
    raw = bytes(kvblock.ffi.buffer(hs._ptr, 16 * 10))
    again = Hashes.from_buffer(raw)
    assert list(again) == list(hs)
    assert Hashes([hs[1], hs[2]])[1] == hs[2]


# ---- handles and batches -------------------------------------------------------


def test_single_handle_lifecycle_and_context_managers():
    with Pool(4, name="t") as p:
        h = chain(1, 1)[0]
        with p.allocate(1) as ms:
            m = ms[0]
            c = m.stage(h)
            assert not m.live and c.live and c.hash == h
            with c.register() as b:
                assert not c.live
                assert b.hash == h and b.use_count == 1
                with b.clone() as b2:
                    assert b.use_count == 2
                    assert b2.address[0] == p.id
                assert b.use_count == 1
                w = b.downgrade()
            assert not b.live  # released on exit
        # the mutable batch exits with nothing live: fine
        with w.upgrade() as b3:  # resurrected from the cache
            assert b3.id == b.id
        assert p.stats()["resurrections"] == 1
        p.check()
    # pool closed by the with-block (nothing outstanding)


def test_batch_calls_and_prefix_match():
    with Pool(16) as p:
        hs = chain(10, 6)
        with p.put(hs) as blocks:
            assert len(blocks) == 6
            assert blocks.hashes() == list(hs)
        with p.match(chain(10, 8)) as m:
            assert len(m) == 6  # the prefix cached, then a miss
        s = p.match_scattered([hs[5], chain(99, 1)[0], hs[0]])
        assert s.hit == [True, False, True]
        s.release()  # the miss is zero-filled: skipped
        with p.scan(hs, touch=False) as sc:
            assert all(sc.hit)
        st = p.stats()
        assert st["scan_requested"] == 6 and st["scan_returned"] == 6
        assert st["inactive"] == 6 and st["primary"] == 0


def test_reverse_release_orders_the_cache():
    with Pool(3) as p:
        hs = chain(1, 3)
        p.put(hs).release(reverse=True)  # 2, 1, 0 enter the LRU in that order
        ev1, ev2 = Hashes(1), Hashes(1)
        with p.allocate(1, evicted=ev1), p.allocate(1, evicted=ev2):
            assert (ev1[0], ev2[0]) == (hs[2], hs[1])  # deepest evicted first
        fwd = chain(10, 3)
        p.reset_inactive()
        p.put(fwd).release()  # forward: 10 leaves first, is evicted first
        ev = Hashes(1)
        with p.allocate(1, evicted=ev):
            assert ev[0] == fwd[0]


def test_out_buffers_are_reused():
    with Pool(8) as p:
        mut = kvblock.Mutables(p, 8)
        comp = kvblock.Completes(p, 8)
        blk = kvblock.Blocks(p, 8)
        hs = chain(50, 5)
        for _ in range(3):
            k = len(p.match(hs, out=blk))
            if k < 5:
                p.allocate(5 - k, out=mut)
                p.stage(mut, hs[k:], out=comp)
                p.register(comp, out=blk, offset=k)
            assert len(blk) == 5
            blk.release(reverse=True)
        assert p.stats()["registrations"] == 5
        with pytest.raises(ValueError):
            p.allocate(9, out=mut)


def _four_calls(p, hs, mut, comp, blk, ev):
    """Pool.acquire's definition: match, then allocate + stage + register the rest."""
    k = len(p.match(hs, out=blk))
    if k < len(hs):
        p.allocate(len(hs) - k, out=mut, evicted=ev)
        p.stage(mut, hs[k:], out=comp)
        p.register(comp, out=blk, offset=k)
    return k


def test_acquire_agrees_with_the_four_calls_on_a_random_workload():
    import random
    rnd = random.Random(7)
    for policy in ("lru", "fifo", "lineage_arc", "adaptive"):
        a, b = Pool(48, evict=policy), Pool(48, evict=policy)
        ba, bb = kvblock.Blocks(a, 16), kvblock.Blocks(b, 16)
        mut, comp = kvblock.Mutables(b, 16), kvblock.Completes(b, 16)
        for _ in range(400):
            hs = chain(rnd.randrange(12), rnd.randint(1, 16))
            eva, evb = Hashes(16), Hashes(16)  # (a call sets the length: fresh ones)
            blocks, k = a.acquire(hs, out=ba, evicted=eva)
            assert blocks is ba and len(ba) == len(hs)
            assert k == _four_calls(b, hs, mut, comp, bb, evb)
            assert ba.hashes() == bb.hashes() == list(hs)
            assert list(eva) == (list(evb) if k < len(hs) else [])
            rev = rnd.random() < 0.7
            ba.release(reverse=rev)
            bb.release(reverse=rev)
        sa, sb = a.stats(), b.stats()
        for f in ("match_requested", "match_returned", "evictions", "registrations", "inactive",
                  "reset", "resurrections", "dedups", "allocations"):
            assert sa[f] == sb[f], (policy, f)
        a.check()
        b.check()
        a.close()
        b.close()


def test_acquire_is_all_or_nothing_and_checks_its_arguments():
    with Pool(4) as p:
        held = p.put(chain(1, 2))
        before = p.stats()
        with pytest.raises(KvbError) as e:
            p.acquire(chain(2, 3))  # 3 new blocks, 2 free: nothing taken
        assert e.value.name == "ENOSPC"
        after = p.stats()
        lock = ("lock_acquisitions", "lock_contended", "lock_wait_ns")
        assert {f: v for f, v in after.items() if f not in lock} == \
            {f: v for f, v in before.items() if f not in lock}
        blocks, k = p.acquire(chain(1, 3))  # the 2 held + 1 new
        assert k == 2 and len(blocks) == 3 and blocks.hashes() == list(chain(1, 3))
        blocks.release()
        held.release()
        with pytest.raises(TypeError):
            p.acquire(42)
        with pytest.raises(TypeError):
            p.acquire(chain(1, 2), evicted=[])
        with pytest.raises(ValueError):
            p.acquire(chain(1, 3), evicted=Hashes(1))
        with pytest.raises(ValueError):
            p.acquire(chain(1, 3), out=kvblock.Blocks(p, 2))
        with Pool(4) as other, pytest.raises(ValueError):
            p.acquire(chain(1, 1), out=kvblock.Blocks(other, 4))
        assert p.stats()["primary"] == 0
    with pytest.raises(ValueError):
        p.acquire(chain(1, 1))  # a closed pool


def test_acquire_takes_hash_buffers_in_place_and_releases_in_one_call():
    """bytes, bytearray, memoryview and array('Q') (two 8-byte words per kvb_hash) are
    read in place; the result equals the Hashes call; one release drops every reference
    and leaves the blocks cached, so the next acquire finds them all."""
    hs = chain(10, 5)
    raw = bytes(kvblock.ffi.buffer(hs._ptr, 16 * len(hs)))
    forms = (raw, bytearray(raw), memoryview(raw), array.array("Q", raw))
    for i, form in enumerate(forms):
        with Pool(8) as p:
            blocks, k = p.acquire(form)
            assert (k, len(blocks), blocks.hashes()) == (0, 5, list(hs)), i
            assert p.stats()["primary"] == 5 and blocks[0].use_count == 1
            again, k2 = p.acquire(hs)  # all five active: hits, one more reference each
            assert k2 == 5 and blocks[0].use_count == 2
            again.release()
            assert len(again) == 0 and blocks[0].use_count == 1
            again.release()  # an empty batch: nothing to release, nothing changes
            blocks.release(reverse=True)
            assert len(blocks) == 0
            st = p.stats()
            assert st["primary"] == 0 and st["inactive"] == 5
            cached, k3 = p.acquire(form)  # every block resurrected from the cache
            assert k3 == 5 and cached.hashes() == list(hs)
            assert p.stats()["resurrections"] - st["resurrections"] == 5
            cached.release()
            p.check()
    with Pool(8) as p:
        with pytest.raises(ValueError):
            p.acquire(raw[:20])  # not a multiple of 16 bytes
        with pytest.raises(TypeError):
            p.acquire("not hashes")
        assert p.stats()["primary"] == 0


def test_errors_carry_the_errno_name_and_change_nothing():
    p = Pool(2)
    b = p.put(chain(1, 2))
    with pytest.raises(KvbError) as e:
        p.allocate(1)
    assert e.value.name == "ENOSPC" and e.value.errno == errno.ENOSPC
    assert "not enough" in e.value.strerror
    with pytest.raises(KvbError) as e:
        p.close()
    assert e.value.name == "EBUSY"
    one = b[0]
    one.release()
    with pytest.raises(KvbError) as e:
        one.release()
    assert e.value.name == "ESTALE"
    assert p.stats()["misuse"] == 0  # a cleared handle names no pool
    b.release()  # the remaining one; the cleared entry is skipped
    p.close()
    assert kvblock.err_name(errno.ENOENT) == "ENOENT"
    with pytest.raises(ValueError):
        Pool(4, evict="nope")
    with pytest.raises(KvbError) as e:
        Pool(0)
    assert e.value.name == "EINVAL"


def test_reset_on_release_and_reset_inactive():
    with Pool(4) as p:
        b = p.put(chain(1, 2))
        b[0].set_reset_on_release(True)
        b.release()
        st = p.stats()
        assert st["inactive"] == 1 and st["reset"] == 3
        assert p.reset_inactive() == 1
        assert p.available == 4


def test_stats_and_metrics_text():
    with Pool(8, name="gpu0") as p:
        p.put(chain(1, 3)).release()
        st = p.stats()
        assert st["block_count"] == 8 and st["registrations"] == 3
        txt = p.metrics_text()
        assert 'pool="gpu0"' in txt and "# TYPE" in txt
        assert p.name == "gpu0" and p.policy == "lru" and p.block_size == 16


def test_callbacks_fire_outside_the_lock_and_may_reenter():
    evicted, resets = [], []

    def on_evict(h, bid):
        evicted.append((h, bid))
        assert p.available >= 0  # calling back into the pool from the callback

    p = Pool(2, on_evict=on_evict, on_reset=resets.append)
    hs = chain(7, 2)
    p.put(hs).release()
    p.allocate(2).release()
    assert [h for h, _ in evicted] == list(hs)
    assert len(resets) == 2
    p.close()


# ---- registry (two tiers) ------------------------------------------------------


def test_registry_presence_across_two_pools():
    reg = Registry()
    gpu = Pool(4, registry=reg, name="gpu")
    host = Pool(8, registry=reg, name="host")
    hs = chain(100, 3)
    gpu.put(hs).release()
    host.put(hs[:1]).release()
    assert reg.present(hs, gpu) == [True, True, True]
    assert reg.present(hs, host) == [True, False, False]
    assert reg.frequency(hs[0]) >= 1
    gpu.close()
    host.close()
    reg.close()


# ---- events ------------------------------------------------------------------------


def test_event_sink_replays_into_the_pool_content():
    seen = []
    p = Pool(4, events=seen.extend, events_medium="GPU")
    hs = chain(1, 3)
    p.put(hs).release()
    p.allocate(2).release()  # evicts two
    p.events_flush()
    kinds = [e.type for e in seen]
    assert kinds == ["stored", "removed"]
    assert seen[0].hashes == list(hs) and seen[0].parent is None
    assert seen[0].medium == "GPU" and [e.seq for e in seen] == [1, 2]
    index = set()
    for e in seen:
        if e.type == "stored":
            index.update(e.hashes)
        elif e.type == "removed":
            index.difference_update(e.hashes)
        else:
            index.clear()
    with p.scan(hs) as sc:
        assert {h for h, hit in zip(hs, sc.hit) if hit} == index
    assert p.events_stats()["events"] == 2
    p.close()
    assert seen[-1].type == "cleared"


# ---- threads -------------------------------------------------------------------------


def test_four_threads_share_a_pool():
    p = Pool(64)
    errors = []

    def work(seed):
        try:
            import random
            rnd = random.Random(seed)
            mut, comp, blk = kvblock.Mutables(p, 8), kvblock.Completes(p, 8), kvblock.Blocks(p, 8)
            for _ in range(2000):
                hs = chain(1000 * rnd.randrange(6), 1 + rnd.randrange(8))
                k = len(p.match(hs, out=blk))
                if k < len(hs):
                    try:
                        p.allocate(len(hs) - k, out=mut)
                    except KvbError as e:
                        assert e.name == "ENOSPC"
                    else:
                        p.stage(mut, hs[k:], out=comp)
                        p.register(comp, out=blk, offset=k)
                blk.release(reverse=rnd.random() < 0.5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    p.check()
    st = p.stats()
    assert st["misuse"] == 0 and st["primary"] == 0 and st["mutable_"] == 0
    p.close()
    gc.collect()
