/*
 * pool_acquire.c - kvb_pool_acquire: a request's blocks in one locked pass. The
 * call does what kvb_pool_match, kvb_pool_allocate, kvb_pool_stage and
 * kvb_pool_register (or _retained) do in sequence, with the same transitions
 * (pool_sm.h), generations, counters, event records and callbacks in the same
 * order, the same victims, and one lock instead of four: vLLM's block manager
 * registers a full prompt block's hash at allocation time too.
 *
 * Phases, all under the lock:
 *   1. prefix: look up hashes[0..) until the first miss (k hits). A PRIMARY hit
 *      takes its reference at once (a count only moves up; giving it back is
 *      exact); a cached (INACTIVE) hit, or a PRIMARY whose last release is on its
 *      way to the lock, waits for phase 2 and is only counted: a cached block is
 *      marked (KVB_F_MARK) so that a hash repeated in the prefix counts once. A
 *      PRIMARY at count 0 with reset-on-release ends the prefix (kvb_pool_match
 *      resets it and misses: phase 2 does that).
 *   2. room: the n - k misses must fit in the free list and in the cache that the
 *      prefix leaves (kvb__alloc_room_locked, the test kvb_pool_allocate would
 *      make after the match). Otherwise -ENOSPC, or -EOVERFLOW where register's
 *      saturation check would refuse: the references taken in phase 1 are given
 *      back, marks cleared, and nothing else has changed.
 *   3. match: the deferred hits are resurrected in prefix order (eager
 *      transitions first where a release is pending), each hit touches the
 *      frequency sketch, the pending reset-on-release block is reset; the match
 *      counters move as kvb_pool_match's.
 *   4. allocate + stage: the n - k blocks come off the free list, then from the
 *      victims in eviction order (kvb__alloc_take_locked), each going RESET or
 *      INACTIVE -> MUTABLE -> STAGED in one two-hop transition with its hash.
 *   5. register: each staged block in order, with one probe of the index
 *      (kvb__register_one_locked).
 * Only a custom backend that breaks its contract can make step 4 fail; the
 * selection is then undone, the hits are released again, last first (as the
 * caller of the four calls would), and the call returns -ENOSPC.
 */
#include "pool_sm.h"
#include <string.h>

/* Give back a reference this call took under the lock: its count drops by one and
 * at 0 the last-release transition follows (the lock is held, nobody can have
 * moved the word in between). */
static void kvb_acquire_untake_locked(kvb_pool *p, uint32_t id, struct kvb_cbq *q)
{
    _Atomic uint64_t *wp = &p->slots[id].word;
    /* acq_rel: as the decrement of a release (kvb_ref_dec), which this is */
    KVB_HB_BEFORE(wp);
    uint64_t w = atomic_fetch_sub_explicit(wp, 1, memory_order_acq_rel);
    if (kvb__word_rc(w) == 1) {
        KVB_HB_AFTER(wp);
        kvb__released_locked(p, id, q);
    }
}

/* The way back of a call that fails after phase 1 took out[0..k) (out[i].gen != 0:
 * a reference taken; 0: a block that waited, marked when cached). */
static int kvb_acquire_fail_locked(kvb_pool *p, struct kvb_cbq *q, kvb_block *out, uint32_t n,
                                   uint32_t k, int err)
{
    for (uint32_t i = k; i-- > 0;) {
        uint32_t id = out[i].id;
        if (out[i].gen)
            kvb_acquire_untake_locked(p, id, q);
        else
            p->slots[id].flags &= (uint8_t)~KVB_F_MARK;
    }
    kvb__pool_unlock_fire(p, q);
    memset(out, 0, (size_t)n * sizeof *out);
    return err;
}

/* Would registering the m hashes h[0..m) make a primary's count overflow
 * (kvb_pool_register's check)? Only asked once some count passed 2^31. */
static bool kvb_acquire_would_overflow(kvb_pool *p, const kvb_hash *h, uint32_t m)
{
    for (uint32_t i = 0; i < m; i++) {
        uint32_t pid = kvb__index_find(&p->ix, p->slots, h[i]);
        if (pid != KVB_NONE && p->slots[pid].state == KVB_S_PRIMARY &&
            kvb__word_rc(atomic_load_explicit(&p->slots[pid].word, memory_order_relaxed)) >
                KVB_RC_MAX - m)
            return true;
    }
    return false;
}

/* The call, in two instances like the allocation: `ext` (constant) says whether the
 * pool has hints or priorities; `ret` is NULL in the other instance. */
static inline __attribute__((always_inline)) int
kvb_acquire_impl(kvb_pool *p, const kvb_hash *hashes, uint32_t n, const kvb_retention *ret,
                 kvb_block *out, kvb_hash *evicted, uint32_t *n_evicted, const bool ext)
{
    bool timed = ext && kvb__pool_timers_pending(p);
    uint64_t now = ext && (timed || ret) ? kvb__pool_clock_now(p) : 0;
    struct kvb_cbq q;
    /* records: a reset at the end of the prefix (3); per missed block an eviction (3)
     * and a registration (at most 5: an eager reset, then a new primary) */
    int rc = kvb__batch_lock(p, &q, 3 + 8ull * n);
    if (rc)
        return rc;

    /* 1. the prefix */
    uint32_t k = 0, used = 0, pend = KVB_NONE, home[KVB_PREFETCH];
    for (; k < n; k++) {
        uint32_t j = k % KVB_PREFETCH;
        if (p->prefetch && j == 0)
            kvb__index_prepare(&p->ix, p->slots, hashes + k,
                               n - k < KVB_PREFETCH ? n - k : KVB_PREFETCH, home);
        uint32_t hm = p->prefetch ? home[j] : kvb__index_home(&p->ix, hashes[k]);
        uint32_t id = kvb__index_find_from(&p->ix, p->slots, hashes[k], hm);
        if (id == KVB_NONE)
            break;
        struct kvb_slot *s = &p->slots[id];
        uint32_t gen = 0;
        if (s->state == KVB_S_PRIMARY &&
            (kvb__word_rc(atomic_load_explicit(&s->word, memory_order_relaxed)) || s->dups)) {
            gen = kvb__take_locked(p, id, hashes[k], &q);
            if (!gen)
                break; /* saturated (or its count just reached 0 and it was reset) */
        } else if (s->state == KVB_S_PRIMARY) {
            if (s->flags & KVB_F_RESET_ON_RELEASE) {
                pend = id; /* reset in phase 3, and a miss */
                break;
            }
        } else if (!(s->flags & KVB_F_MARK)) {
            s->flags |= KVB_F_MARK;
            used++;
        }
        out[k].id = id;
        out[k].gen = gen;
    }

    /* 2. room for the rest */
    uint32_t m = n - k;
    if (m) {
        if (!kvb__alloc_room_locked(p, m, used, pend != KVB_NONE, ext))
            return kvb_acquire_fail_locked(p, &q, out, n, k, -ENOSPC);
        if (kvb_unlikely(atomic_load_explicit(&p->rc_high, memory_order_relaxed)) &&
            kvb_acquire_would_overflow(p, hashes + k, m))
            return kvb_acquire_fail_locked(p, &q, out, n, k, -EOVERFLOW);
    }

    /* 3. the match */
    for (uint32_t i = 0; i < k; i++) {
        uint32_t id = out[i].id, gen = out[i].gen;
        if (!gen) {
            p->slots[id].flags &= (uint8_t)~KVB_F_MARK;
            gen = kvb__take_locked(p, id, hashes[i], &q);
            kvb_assert(gen != 0);
        }
        kvb__fill_block(&out[i], p, id, gen);
        if (p->sketch)
            kvb__sketch_touch(p->sketch, hashes[i]);
    }
    if (pend != KVB_NONE) {
        uint32_t gen = kvb__take_locked(p, pend, hashes[k], &q);
        kvb_assert(gen == 0 && p->slots[pend].state == KVB_S_RESET);
        (void)gen;
    }
    p->c.match_requested += n;
    p->c.match_returned += k;
    if (m == 0) {
        kvb__pool_unlock_fire(p, &q);
        return (int)k;
    }

    /* 4. allocate and stage */
    if (timed)
        kvb__expire_locked(p, now);
    kvb_block *miss = out + k;
    const kvb_hash *mh = hashes + k;
    int take = kvb__alloc_take_locked(p, m, KVB_IDS(miss), ext);
    if (kvb_unlikely(take < 0)) {
        for (uint32_t i = k; i-- > 0;)
            kvb_acquire_untake_locked(p, out[i].id, &q);
        kvb__pool_unlock_fire(p, &q);
        memset(out, 0, (size_t)n * sizeof *out);
        return -ENOSPC;
    }
    for (uint32_t i = 0; i < m; i++) {
        uint32_t id = miss[i].id;
        struct kvb_slot *s = &p->slots[id];
        if (i >= (uint32_t)take) {
            if (evicted)
                evicted[i - take] = s->hash;
            kvb__evicted_locked(p, id, &q, ext);
            kvb__transition_path_locked(p, id, KVB_S_INACTIVE, KVB_S_MUTABLE, KVB_S_STAGED, 0,
                                        miss[i].gen, 0);
        } else {
            p->c.allocations_from_reset++;
            kvb__transition_path_locked(p, id, KVB_S_RESET, KVB_S_MUTABLE, KVB_S_STAGED, 0,
                                        KVB_NONE, 0);
        }
        s->flags = 0;
        s->hash = mh[i];
        if (p->prefetch) /* the registration below probes its index cell */
            kvb__index_prefetch(&p->ix, mh[i]);
    }
    p->c.allocations += m;
    p->c.stagings += m;
    if (n_evicted)
        *n_evicted = m - (uint32_t)take;

    /* 5. register */
    for (uint32_t i = 0; i < m; i++)
        kvb__register_one_locked(p, miss[i].id, mh[i], kvb__index_home(&p->ix, mh[i]), &q, ret, now,
                                 &miss[i]);
    kvb__pool_unlock_fire(p, &q);
    return (int)k;
}

int kvb_pool_acquire(kvb_pool *p, const kvb_hash *hashes, uint32_t n,
                     const kvb_retention *retention, kvb_block *out, kvb_hash *evicted,
                     uint32_t *n_evicted)
{
    if (n_evicted)
        *n_evicted = 0;
    if (!p || (n && (!hashes || !out)) || n > INT32_MAX)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (!kvb__hash_valid(hashes[i]))
            return -EINVAL;
    if (retention && !kvb__retention_valid(retention))
        return -EINVAL;
    if (retention && !p->prio)
        return -ENOTSUP;
    if (n == 0)
        return 0;
    if (kvb_unlikely(p->ext))
        return kvb_acquire_impl(p, hashes, n, retention, out, evicted, n_evicted, true);
    return kvb_acquire_impl(p, hashes, n, NULL, out, evicted, n_evicted, false);
}
