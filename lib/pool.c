/*
 * pool.c - the paths that move a pool's slots between states (allocate, stage,
 * register, lookups, release), the pool being the block store of one memory
 * tier. The transition function and the steps these paths share are in
 * pool_sm.h (static inline); the pool's other files (pool.h lists them) hold its
 * hash index, lifecycle, reference operations that change no state, retention
 * and hint glue, cache drain, checks and statistics.
 *
 * Model (DESIGN.md section 2). Every block slot is in one of six states:
 *   RESET      free list (FIFO)           MUTABLE   one kvb_mutable handle
 *   STAGED     one kvb_complete handle    PRIMARY   >= 1 kvb_block refs, in the hash index
 *   DUPLICATE  >= 1 kvb_block refs        INACTIVE  cached: hash index + inactive index
 * Every change of state goes through the transition function (pool_sm.h),
 * checked against the table of DESIGN.md section 2.2, under the pool mutex.
 *
 * Invariants after every public call (kvb_pool_check verifies them):
 *  - sum of the state gauges == block_count, each gauge == slots in that state;
 *  - the free list holds exactly the RESET slots;
 *  - the inactive index holds exactly the INACTIVE slots;
 *  - the hash index holds exactly the PRIMARY and INACTIVE slots, each under its
 *    own hash, and no hash twice;
 *  - reference counts are zero outside PRIMARY/DUPLICATE; a primary's `dups` equals
 *    the number of live duplicates holding it (kept apart from the handles' count).
 *
 * Reference counting. A slot's `word` packs (generation, count). The
 * generation changes on every transition, so one CAS validates a handle and
 * moves the count: clone and every release but the last are lock-free and a
 * stale handle (slot reused) can never touch the new life of the slot. The
 * last release (count 1 -> 0) takes the lock and performs the transition if
 * the word still holds (its generation, 0); otherwise a lookup got there first
 * (below) and the late release is a counted no-op (release_noops).
 * A lookup under the lock that meets a PRIMARY whose count already reached 0
 * performs that block's last-release transition itself (eager transition) and
 * then resurrects it; with reset-on-release set, the block is reset instead and
 * the lookup misses, exactly as if the release had completed first.
 *
 * Callbacks are queued under the lock (struct kvb_cbq, defer.h) and fired by the
 * calling thread after unlock, in order. Queue storage is bounded by the call's
 * batch size and reserved before the lock is taken, so no call fails half-way.
 */
#include "pool_sm.h"
#include <string.h>

/* ------------------------------------------------------------------------ */
/* misuse                                                                   */
/* ------------------------------------------------------------------------ */

int kvb__pool_misuse(kvb_pool *p, const char *what)
{
    if (p) {
        atomic_fetch_add_explicit(&p->misuse, 1, memory_order_relaxed);
        if (p->abort_on_misuse) {
            fprintf(stderr, "kvblock: handle misuse in %s (pool \"%s\"); aborting as configured\n",
                    what, p->name);
            abort();
        }
    }
    return -ESTALE;
}

/* Out of line, for the pool's files off the hot paths (the drain). */
uint32_t kvb__pool_transition_locked(kvb_pool *p, uint32_t id, enum kvb_state from,
                                     enum kvb_state to, uint32_t rc)
{
    return kvb__transition_locked(p, id, from, to, rc);
}

/* ------------------------------------------------------------------------ */
/* allocation                                                               */
/* ------------------------------------------------------------------------ */

/*
 * The allocation, in two instances: `ext` (constant at each call site, the branches
 * fold away) says whether the pool has hints or priorities. A pool with neither
 * runs exactly the code it ran before they existed: the backend alone, no filter.
 */
static inline __attribute__((always_inline)) int
kvb_allocate_impl(kvb_pool *p, uint32_t n, kvb_mutable *out, kvb_hash *evicted, uint32_t *n_evicted,
                  const bool ext)
{
    bool timed = ext && kvb__pool_timers_pending(p);
    uint64_t now = timed ? kvb__pool_clock_now(p) : 0;
    struct kvb_cbq q;
    int rc = kvb__batch_lock(p, &q, 3ull * n);
    if (rc)
        return rc;
    if (timed)
        kvb__expire_locked(p, now);
    int take = kvb__alloc_room_locked(p, n, 0, 0, ext)
                   ? kvb__alloc_take_locked(p, n, KVB_IDS(out), ext)
                   : -ENOSPC;
    if (take < 0) {
        kvb__pool_unlock(p);
        kvb__cbq_fini(&q);
        return take;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = out[i].id;
        struct kvb_slot *s = &p->slots[id];
        if (i >= (uint32_t)take) {
            if (evicted)
                evicted[i - take] = s->hash;
            kvb__evicted_locked(p, id, &q, ext);
            out[i].gen = kvb__transition_path_locked(p, id, KVB_S_INACTIVE, KVB_S_COUNT,
                                                     KVB_S_MUTABLE, 0, out[i].gen, 0);
        } else {
            p->c.allocations_from_reset++;
            out[i].gen = kvb__transition_locked(p, id, KVB_S_RESET, KVB_S_MUTABLE, 0);
        }
        out[i].pool = p;
        s->flags = 0;
        s->hash = (kvb_hash){0, 0};
    }
    p->c.allocations += n;
    if (n_evicted)
        *n_evicted = n - (uint32_t)take;
    kvb__pool_unlock_fire(p, &q);
    return 0;
}

int kvb_pool_allocate(kvb_pool *p, uint32_t n, kvb_mutable *out, kvb_hash *evicted,
                      uint32_t *n_evicted)
{
    if (n_evicted)
        *n_evicted = 0;
    if (!p || (n && !out))
        return -EINVAL;
    if (n == 0)
        return 0;
    if (n > p->block_count)
        return -ENOSPC;
    if (kvb_unlikely(p->ext))
        return kvb_allocate_impl(p, n, out, evicted, n_evicted, true);
    return kvb_allocate_impl(p, n, out, evicted, n_evicted, false);
}

/* ------------------------------------------------------------------------ */
/* mutable and complete handles                                             */
/* ------------------------------------------------------------------------ */

/* Lock held. Is (id, gen) a live handle of state st in p? */
static bool kvb_handle_ok_locked(const kvb_pool *p, uint32_t id, uint32_t gen, enum kvb_state st)
{
    if (id >= p->block_count)
        return false;
    const struct kvb_slot *s = &p->slots[id];
    return s->state == st &&
           kvb__word_gen(atomic_load_explicit(&s->word, memory_order_relaxed)) == gen;
}

int kvb_mutable_stage(kvb_mutable *m, kvb_hash hash, kvb_complete *out)
{
    if (!m || !out || !kvb__hash_valid(hash))
        return -EINVAL;
    kvb_pool *p = m->pool;
    if (!p)
        return -ESTALE;
    kvb__pool_lock(p);
    if (!kvb_handle_ok_locked(p, m->id, m->gen, KVB_S_MUTABLE)) {
        kvb__pool_unlock(p);
        return kvb__pool_misuse(p, "kvb_mutable_stage");
    }
    uint32_t id = m->id;
    p->slots[id].hash = hash;
    uint32_t gen = kvb__transition_locked(p, id, KVB_S_MUTABLE, KVB_S_STAGED, 0);
    p->c.stagings++;
    kvb__pool_unlock(p);
    memset(m, 0, sizeof *m);
    *out = (kvb_complete){.pool = p, .id = id, .gen = gen, .hash = hash};
    return 0;
}

int kvb_pool_stage(kvb_pool *p, kvb_mutable *in, const kvb_hash *hashes, uint32_t n,
                   kvb_complete *out)
{
    if (!p || (n && (!in || !hashes || !out)))
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (!kvb__hash_valid(hashes[i]))
            return -EINVAL;
    if (n == 0)
        return 0;
    kvb__pool_lock(p);
    uint32_t bad = n;
    for (uint32_t i = 0; i < n; i++) {
        if (in[i].pool != p || !kvb_handle_ok_locked(p, in[i].id, in[i].gen, KVB_S_MUTABLE) ||
            (p->slots[in[i].id].flags & KVB_F_MARK)) {
            bad = i;
            break;
        }
        p->slots[in[i].id].flags |= KVB_F_MARK;
    }
    if (bad < n) {
        for (uint32_t i = 0; i < bad; i++)
            p->slots[in[i].id].flags &= (uint8_t)~KVB_F_MARK;
        kvb__pool_unlock(p);
        return kvb__pool_misuse(p, "kvb_pool_stage");
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = in[i].id;
        struct kvb_slot *s = &p->slots[id];
        s->flags &= (uint8_t)~KVB_F_MARK;
        s->hash = hashes[i];
        uint32_t gen = kvb__transition_locked(p, id, KVB_S_MUTABLE, KVB_S_STAGED, 0);
        out[i] = (kvb_complete){.pool = p, .id = id, .gen = gen, .hash = hashes[i]};
        memset(&in[i], 0, sizeof in[i]);
    }
    p->c.stagings += n;
    kvb__pool_unlock(p);
    return 0;
}

/* MUTABLE or STAGED -> RESET for a handle {pool, id, gen}. */
static int kvb_drop_unregistered(kvb_pool *p, uint32_t id, uint32_t gen, enum kvb_state st,
                                 const char *what)
{
    struct kvb_cbq q;
    kvb__cbq_init(&q, &p->sinks);
    kvb__pool_lock(p);
    if (!kvb_handle_ok_locked(p, id, gen, st)) {
        kvb__pool_unlock(p);
        return kvb__pool_misuse(p, what);
    }
    if (st == KVB_S_MUTABLE)
        kvb__transition_locked(p, id, KVB_S_MUTABLE, KVB_S_RESET, 0);
    else
        kvb__transition_locked(p, id, KVB_S_STAGED, KVB_S_RESET, 0);
    kvb__cbq_push(&q, KVB_CB_RESET, id, p->slots[id].hash);
    kvb__pool_unlock_fire(p, &q);
    return 0;
}

int kvb_mutable_release(kvb_mutable *m)
{
    if (!m)
        return -EINVAL;
    if (!m->pool)
        return -ESTALE;
    int rc = kvb_drop_unregistered(m->pool, m->id, m->gen, KVB_S_MUTABLE, "kvb_mutable_release");
    if (rc == 0)
        memset(m, 0, sizeof *m);
    return rc;
}

int kvb_complete_release(kvb_complete *c)
{
    if (!c)
        return -EINVAL;
    if (!c->pool)
        return -ESTALE;
    int rc = kvb_drop_unregistered(c->pool, c->id, c->gen, KVB_S_STAGED, "kvb_complete_release");
    if (rc == 0)
        memset(c, 0, sizeof *c);
    return rc;
}

int kvb_complete_reset(kvb_complete *c, kvb_mutable *out)
{
    if (!c || !out)
        return -EINVAL;
    kvb_pool *p = c->pool;
    if (!p)
        return -ESTALE;
    kvb__pool_lock(p);
    if (!kvb_handle_ok_locked(p, c->id, c->gen, KVB_S_STAGED)) {
        kvb__pool_unlock(p);
        return kvb__pool_misuse(p, "kvb_complete_reset");
    }
    uint32_t id = c->id;
    uint32_t gen = kvb__transition_locked(p, id, KVB_S_STAGED, KVB_S_MUTABLE, 0);
    p->slots[id].hash = (kvb_hash){0, 0};
    kvb__pool_unlock(p);
    memset(c, 0, sizeof *c);
    *out = (kvb_mutable){.pool = p, .id = id, .gen = gen};
    return 0;
}

/* ------------------------------------------------------------------------ */
/* registration                                                             */
/* ------------------------------------------------------------------------ */

/* Always inlined: kvb_pool_register passes ret = NULL and pays nothing for retention. */
static inline __attribute__((always_inline)) int
kvb_register(kvb_pool *p, kvb_complete *in, uint32_t n, const kvb_retention *ret, kvb_block *out)
{
    if (!p || (n && (!in || !out)))
        return -EINVAL;
    if (ret && !kvb__retention_valid(ret))
        return -EINVAL;
    if (ret && !p->prio)
        return -ENOTSUP;
    if (n == 0)
        return 0;
    bool timed = false;
    uint64_t now = ret ? kvb__pool_clock_if(p, true, &timed) : 0;
    struct kvb_cbq q;
    int rc = kvb__batch_lock(p, &q, 4ull * n);
    if (rc)
        return rc;
    if (timed)
        kvb__expire_locked(p, now);
    /* Validate the whole batch first (a failed call changes nothing); MARK catches
     * the same slot passed twice (each is cleared as its block is registered). */
    uint32_t bad = n;
    for (uint32_t i = 0; i < n; i++) {
        if (in[i].pool != p || !kvb_handle_ok_locked(p, in[i].id, in[i].gen, KVB_S_STAGED) ||
            (p->slots[in[i].id].flags & KVB_F_MARK)) {
            bad = i;
            break;
        }
        p->slots[in[i].id].flags |= KVB_F_MARK;
        /* start loading the index cell the lookup below needs (a cold line for new
         * content, whatever the pool size) */
        kvb__index_prefetch(&p->ix, p->slots[in[i].id].hash);
    }
    /* A primary that could not take n more references would make registration
     * fail half-way: refuse the batch up front instead. Only looked at once some
     * count in the pool ever passed half the range (never, in practice). */
    bool full = false;
    if (kvb_unlikely(bad == n && atomic_load_explicit(&p->rc_high, memory_order_relaxed))) {
        for (uint32_t i = 0; i < n && !full; i++) {
            uint32_t pid = kvb__index_find(&p->ix, p->slots, p->slots[in[i].id].hash);
            if (pid != KVB_NONE && p->slots[pid].state == KVB_S_PRIMARY &&
                kvb__word_rc(atomic_load_explicit(&p->slots[pid].word, memory_order_relaxed)) >
                    KVB_RC_MAX - n)
                full = true;
        }
    }
    if (kvb_unlikely(bad < n || full)) {
        for (uint32_t i = 0; i < bad; i++)
            p->slots[in[i].id].flags &= (uint8_t)~KVB_F_MARK;
        kvb__pool_unlock(p);
        kvb__cbq_fini(&q);
        return bad < n ? kvb__pool_misuse(p, "kvb_pool_register") : -EOVERFLOW;
    }

    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = in[i].id;
        struct kvb_slot *s = &p->slots[id];
        s->flags &= (uint8_t)~KVB_F_MARK;
        kvb_hash h = s->hash;
        kvb__register_one_locked(p, id, h, kvb__index_home(&p->ix, h), &q, ret, now, &out[i]);
        memset(&in[i], 0, sizeof in[i]);
    }
    kvb__pool_unlock_fire(p, &q);
    return 0;
}

int kvb_pool_register(kvb_pool *p, kvb_complete *in, uint32_t n, kvb_block *out)
{
    return kvb_register(p, in, n, NULL, out);
}

int kvb_pool_register_retained(kvb_pool *p, kvb_complete *in, uint32_t n,
                               const kvb_retention *retention, kvb_block *out)
{
    return kvb_register(p, in, n, retention, out);
}

/* ------------------------------------------------------------------------ */
/* lookups                                                                  */
/* ------------------------------------------------------------------------ */

int kvb_pool_match(kvb_pool *p, const kvb_hash *hashes, uint32_t n, kvb_block *out)
{
    if (!p || (n && (!hashes || !out)))
        return -EINVAL;
    if (n == 0)
        return 0;
    struct kvb_cbq q;
    int rc = kvb__batch_lock(p, &q, 3ull * n);
    if (rc)
        return rc;
    uint32_t k = 0, home[KVB_PREFETCH];
    for (; k < n; k++) {
        uint32_t gen, j = k % KVB_PREFETCH;
        if (p->prefetch && j == 0)
            kvb__index_prepare(&p->ix, p->slots, hashes + k,
                               n - k < KVB_PREFETCH ? n - k : KVB_PREFETCH, home);
        uint32_t hm = p->prefetch ? home[j] : kvb__index_home(&p->ix, hashes[k]);
        uint32_t id = kvb__acquire_locked(p, hashes[k], hm, &q, &gen);
        if (id == KVB_NONE)
            break;
        kvb__fill_block(&out[k], p, id, gen);
        if (p->sketch)
            kvb__sketch_touch(p->sketch, hashes[k]);
    }
    p->c.match_requested += n;
    p->c.match_returned += k;
    kvb__pool_unlock_fire(p, &q);
    return (int)k;
}

/* Every hash independently, one lock; `scan` selects the scan counters and
 * `touch` whether hits count as accesses in the frequency sketch. */
static int kvb_lookup_each(kvb_pool *p, const kvb_hash *hashes, uint32_t n, kvb_block *out,
                           bool *hit, bool scan, bool touch)
{
    if (!p || (n && (!hashes || !out || !hit)))
        return -EINVAL;
    if (n == 0)
        return 0;
    struct kvb_cbq q;
    int rc = kvb__batch_lock(p, &q, 3ull * n);
    if (rc)
        return rc;
    uint32_t k = 0, home[KVB_PREFETCH];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t gen, j = i % KVB_PREFETCH;
        if (p->prefetch && j == 0)
            kvb__index_prepare(&p->ix, p->slots, hashes + i,
                               n - i < KVB_PREFETCH ? n - i : KVB_PREFETCH, home);
        uint32_t hm = p->prefetch ? home[j] : kvb__index_home(&p->ix, hashes[i]);
        uint32_t id = kvb__acquire_locked(p, hashes[i], hm, &q, &gen);
        hit[i] = id != KVB_NONE;
        if (hit[i]) {
            kvb__fill_block(&out[i], p, id, gen);
            if (touch && p->sketch)
                kvb__sketch_touch(p->sketch, hashes[i]);
            k++;
        } else {
            memset(&out[i], 0, sizeof out[i]);
        }
    }
    if (scan) {
        p->c.scan_requested += n;
        p->c.scan_returned += k;
    } else {
        p->c.match_requested += n;
        p->c.match_returned += k;
    }
    kvb__pool_unlock_fire(p, &q);
    return (int)k;
}

int kvb_pool_match_scattered(kvb_pool *p, const kvb_hash *hashes, uint32_t n, kvb_block *out,
                             bool *hit)
{
    return kvb_lookup_each(p, hashes, n, out, hit, false, true);
}

int kvb_pool_scan(kvb_pool *p, const kvb_hash *hashes, uint32_t n, bool touch, kvb_block *out,
                  bool *hit)
{
    return kvb_lookup_each(p, hashes, n, out, hit, true, touch);
}

/* ------------------------------------------------------------------------ */
/* releases and weak upgrades (clone and the other reference operations that */
/* change no state: pool_ref.c)                                             */
/* ------------------------------------------------------------------------ */

/* Lock-free: drop one reference. Returns 1 when it was the last (count now 0),
 * 0 otherwise, -ESTALE when (gen, count > 0) does not hold. */
static inline int kvb_ref_dec(kvb_pool *p, uint32_t id, uint32_t gen)
{
    if (id >= p->block_count)
        return -ESTALE;
    _Atomic uint64_t *wp = &p->slots[id].word;
    uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
    for (;;) {
        if (kvb__word_gen(w) != gen || kvb__word_rc(w) == 0)
            return -ESTALE;
        /* Every decrement publishes the releaser's prior writes (to the block's
         * memory, say) to whoever performs the last-release transition: release
         * side here, acquire side in kvb__last_release_locked. */
        KVB_HB_BEFORE(wp);
        if (atomic_compare_exchange_weak_explicit(wp, &w, w - 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    if (kvb__word_rc(w) == 1) {
        KVB_HB_AFTER(wp);
        return 1;
    }
    return 0;
}

int kvb_block_release(kvb_block *b)
{
    if (!b)
        return -EINVAL;
    kvb_pool *p = b->pool;
    if (!p)
        return -ESTALE;
    int last = kvb_ref_dec(p, b->id, b->gen);
    if (last < 0)
        return kvb__pool_misuse(p, "kvb_block_release");
    uint32_t id = b->id, gen = b->gen;
    memset(b, 0, sizeof *b);
    if (last) {
        KVB_TEST_LAST_RELEASE(p, id);
        struct kvb_cbq q;
        kvb__cbq_init(&q, &p->sinks); /* at most 5 records: fits the local buffer */
        kvb__pool_lock(p);
        kvb__last_release_locked(p, id, gen, &q);
        kvb__pool_unlock_fire(p, &q);
    }
    return 0;
}

/* What a handle that kvb_release_chunk_primary released ahead of its turn names as its
 * pool until the main loop reaches and clears it: an address no caller can hold. */
static const char kvb_released_ahead_obj;
#define KVB_RELEASED_AHEAD ((kvb_pool *)(uintptr_t)&kvb_released_ahead_obj)

/*
 * A duplicate released at chunk position j of a batch left its primary pid without
 * duplicates but with handles. The batch's contract (every decrement of a chunk of
 * 256 handles before any transition, see kvb_block_release_n) says: when the rest
 * of the chunk holds enough handles of pid to take its count to 0, the primary's
 * transition happens here, at the duplicate's turn, and the handle that took the
 * count to 0 finds its work done (release_noops). Do exactly that: decrement those
 * handles now (marked KVB_RELEASED_AHEAD; one past 0 would be a misuse, left to the
 * main loop, which finds the generation moved on, as the contract's first pass
 * would have). Lock held throughout: nobody else can move pid's word to 0 while we
 * hold valid handles of it. Rare: a duplicate and its primary released in one batch.
 */
static __attribute__((noinline)) void kvb_release_chunk_primary(kvb_pool *p, uint32_t pid,
                                                                kvb_block *chunk, uint32_t j,
                                                                uint32_t m, struct kvb_cbq *q)
{
    _Atomic uint64_t *wp = &p->slots[pid].word;
    uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
    uint32_t gen = kvb__word_gen(w), have = 0;
    for (uint32_t k = j + 1; k < m; k++)
        have += chunk[k].pool == p && chunk[k].id == pid && chunk[k].gen == gen;
    if (have < kvb__word_rc(w))
        return; /* its count stays above 0 through the chunk: nothing moves here */
    for (uint32_t k = j + 1; k < m; k++) {
        kvb_block *b = &chunk[k];
        if (b->pool != p || b->id != pid || b->gen != gen)
            continue;
        int rc = kvb_ref_dec(p, pid, gen);
        if (rc < 0)
            return; /* (only with more copies than references: the main loop counts them) */
        b->pool = KVB_RELEASED_AHEAD;
        if (rc) {
            p->c.release_noops++; /* that handle's release found its work done */
            kvb__released_locked(p, pid, q);
            return;
        }
    }
}

int kvb_block_release_n(kvb_block *blocks, uint32_t n)
{
    if (n && !blocks)
        return -EINVAL;
    int result = 0;
    kvb_pool *locked = NULL;
    struct kvb_cbq q;
    /* The contract, per chunk of 256 handles: every decrement (lock-free) before any
     * last-release transition (under the lock, in handle order), so that a duplicate
     * whose primary's handles are all in the chunk moves the primary at its turn. One
     * pass does it: a last release takes its pool's lock, which then stays held
     * (switched only when the handles change pool, never two pool locks at once, or
     * when the callback queue fills). A count that reaches 0 while its pool's lock is
     * already held cannot have been moved since (a transition needs the lock;
     * lock-free operations need a count > 0): its transition follows at once, without
     * the re-check of kvb__last_release_locked. The only way the order of decrements
     * and transitions could show is a duplicate released before handles of its
     * primary in the same chunk: kvb_release_chunk_primary applies the contract there. */
    for (uint32_t base = 0; base < n; base += 256) {
        uint32_t m = n - base < 256 ? n - base : 256;
        kvb_block *chunk = blocks + base;
        for (uint32_t j = 0; j < m; j++) {
            kvb_block *b = &chunk[j];
            kvb_pool *p = b->pool;
            if (!p) {
                result = -ESTALE;
                continue;
            }
            if (kvb_unlikely(p == KVB_RELEASED_AHEAD)) {
                memset(b, 0, sizeof *b);
                continue;
            }
            int rc = kvb_ref_dec(p, b->id, b->gen);
            if (kvb_unlikely(rc < 0)) {
                result = kvb__pool_misuse(p, "kvb_block_release_n");
                continue;
            }
            if (rc) {
                uint32_t pid;
                if (kvb_likely(p == locked && !kvb__cbq_full(&q, 5))) {
                    pid = kvb__released_locked(p, b->id, &q);
                } else {
                    if (locked)
                        kvb__pool_unlock_fire(locked, &q);
                    locked = p;
                    KVB_TEST_LAST_RELEASE(p, b->id);
                    kvb__cbq_init(&q, &p->sinks);
                    kvb__pool_lock(p);
                    pid = kvb__last_release_locked(p, b->id, b->gen, &q);
                }
                if (kvb_unlikely(pid != KVB_NONE))
                    kvb_release_chunk_primary(p, pid, chunk, j, m, &q);
            }
            memset(b, 0, sizeof *b);
        }
    }
    if (locked)
        kvb__pool_unlock_fire(locked, &q);
    return result;
}

/* kvb_weak_upgrade's slow path (the block was released, or reused): a lookup by
 * hash under the lock. Out of line, so that the lock-free fast path stays short. */
static __attribute__((noinline)) int kvb_weak_lookup(kvb_pool *p, const kvb_weak *w, kvb_block *out)
{
    struct kvb_cbq q;
    kvb__cbq_init(&q, &p->sinks);
    kvb__pool_lock(p);
    uint32_t gen;
    uint32_t id = kvb__acquire_locked(p, w->hash, kvb__index_home(&p->ix, w->hash), &q, &gen);
    if (id != KVB_NONE)
        kvb__fill_block(out, p, id, gen);
    kvb__pool_unlock_fire(p, &q);
    return id == KVB_NONE ? -ENOENT : 0;
}

int kvb_weak_upgrade(const kvb_weak *w, kvb_block *out)
{
    if (!w || !out || !w->pool)
        return -EINVAL;
    kvb_pool *p = w->pool;
    /* fast path: the same life of the same block is still referenced */
    if (kvb__ref_inc(p, w->id, w->gen) == 0) {
        *out = (kvb_block){.pool = p, .id = w->id, .gen = w->gen, .hash = w->hash};
        return 0;
    }
    return kvb_weak_lookup(p, w, out);
}
