/*
 * pool.c - the state machine of a pool, the block store of one memory tier: the
 * transition function and the paths that move slots between states (allocate,
 * stage, register, lookups, release). The pool's other files (pool.h lists
 * them) hold its hash index, lifecycle, reference operations that change no
 * state, retention and hint glue, cache drain, checks and statistics.
 *
 * Model (DESIGN.md section 2). Every block slot is in one of six states:
 *   RESET      free list (FIFO)           MUTABLE   one kvb_mutable handle
 *   STAGED     one kvb_complete handle    PRIMARY   >= 1 kvb_block refs, in the hash index
 *   DUPLICATE  >= 1 kvb_block refs        INACTIVE  cached: hash index + inactive index
 * Every change of state goes through kvb_transition_locked(), checked against
 * the table of DESIGN.md section 2.2, under the pool mutex.
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
#include "pool.h"
#include "annotate.h"
#include "pool_index.h"
#include "sketch.h"
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

/* ------------------------------------------------------------------------ */
/* deferred callbacks (defer.h): the start of a batch call                  */
/* ------------------------------------------------------------------------ */

/* Start of a batch call: room for `bound` queued records (reserved before the
 * lock, so the call cannot fail half-way), then the lock. */
static int kvb_batch_lock(kvb_pool *p, struct kvb_cbq *q, uint64_t bound)
{
    kvb__cbq_init(q, &p->sinks);
    int rc = kvb__cbq_reserve(q, bound);
    if (rc == 0)
        kvb__pool_lock(p);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* the transition function (the free list and the placement of cached       */
/* blocks it drives are static inline in pool.h)                            */
/* ------------------------------------------------------------------------ */

/* allowed[from] is a bit set of permitted destination states (DESIGN.md 2.2). */
#define B(s) (1u << (s))
static const uint8_t kvb_allowed[KVB_S_COUNT] = {
    [KVB_S_RESET] = B(KVB_S_MUTABLE),
    [KVB_S_MUTABLE] = B(KVB_S_RESET) | B(KVB_S_STAGED),
    [KVB_S_STAGED] = B(KVB_S_MUTABLE) | B(KVB_S_RESET) | B(KVB_S_PRIMARY) | B(KVB_S_DUPLICATE),
    [KVB_S_PRIMARY] = B(KVB_S_INACTIVE) | B(KVB_S_RESET),
    [KVB_S_DUPLICATE] = B(KVB_S_RESET),
    [KVB_S_INACTIVE] = B(KVB_S_MUTABLE) | B(KVB_S_RESET) | B(KVB_S_PRIMARY),
};
#undef B

/*
 * Move slot id from state `from` to state `to` with reference count rc; bump
 * its generation; keep the gauges and the membership structures in step:
 *   -> RESET           pushed on the free-list tail (callers that pop it later
 *                      or roll back use the free-list helpers directly)
 *   -> INACTIVE        inserted into the inactive index
 *   INACTIVE -> PRIMARY removed from the inactive index (a hit)
 *   STAGED -> PRIMARY  inserted into the hash index
 *   PRIMARY/INACTIVE -> RESET/MUTABLE  erased from the hash index
 * RESET -> MUTABLE (free-list pop) and INACTIVE -> MUTABLE/RESET (evict) are
 * already out of their lists when this is called. Returns the new generation.
 *
 * Callers pass `from` explicitly (debug builds check it against the slot):
 * always inlined, every call site has constant states and the branches below
 * fold away, which matters on the hot path (3-4 transitions per block).
 */
static inline __attribute__((always_inline)) uint32_t
kvb_transition_locked(kvb_pool *p, uint32_t id, enum kvb_state from, enum kvb_state to, uint32_t rc)
{
    struct kvb_slot *s = &p->slots[id];
    kvb_assert(s->state == from);
    kvb_assert(kvb_allowed[from] & (1u << to));
    kvb_assert(kvb__word_rc(atomic_load_explicit(&s->word, memory_order_relaxed)) == 0);
    kvb_assert(s->dups == 0);

    if ((from == KVB_S_PRIMARY || from == KVB_S_INACTIVE) &&
        (to == KVB_S_RESET || to == KVB_S_MUTABLE)) {
        kvb__index_erase(&p->ix, p->slots, id);
        if (kvb_unlikely(s->flags & KVB_F_PRIO)) { /* the content leaves: so does its priority */
            p->prio->level[id] = KVB_PRIORITY_DEFAULT;
            kvb__prio_timer_clear(p->prio, id);
            s->flags &= (uint8_t)~KVB_F_PRIO;
        }
    }
    if (from == KVB_S_INACTIVE && to == KVB_S_PRIMARY)
        kvb__unplace_locked(p, id);
    if (from == KVB_S_STAGED && to == KVB_S_PRIMARY)
        kvb__index_insert(&p->ix, p->slots, id);

    p->count[from]--;
    p->count[to]++;
    s->state = (uint8_t)to;

    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    uint32_t gen = kvb__word_gen(w) + 1;
    gen += gen == 0; /* 0 is never a live generation */
    /* Release: a lock-free CAS that later reads this word (clone, release,
     * upgrade) sees the slot's new life and everything written before it. Pairs
     * with the acquire in those CAS loops. */
    KVB_HB_BEFORE(&s->word);
    atomic_store_explicit(&s->word, kvb__word(gen, rc), memory_order_release);

    if (to == KVB_S_RESET) {
        s->flags = 0;
        kvb__free_push_tail(p, id);
    } else if (to == KVB_S_INACTIVE) {
        kvb__place_locked(p, id);
    }
    if ((from == KVB_S_RESET || from == KVB_S_INACTIVE) && to != KVB_S_RESET) {
        /* a block became held: the only way the high watermark can rise */
        uint32_t held = p->block_count - p->count[KVB_S_RESET] - p->count[KVB_S_INACTIVE];
        if (held > p->peak_in_use)
            p->peak_in_use = held;
    }
    return gen;
}

/* Out of line, for the pool's files off the hot paths (the drain). */
uint32_t kvb__pool_transition_locked(kvb_pool *p, uint32_t id, enum kvb_state from,
                                     enum kvb_state to, uint32_t rc)
{
    return kvb_transition_locked(p, id, from, to, rc);
}

/* ------------------------------------------------------------------------ */
/* reference helpers                                                        */
/* ------------------------------------------------------------------------ */

static void kvb_fill_block(kvb_block *b, kvb_pool *p, uint32_t id, uint32_t gen)
{
    b->pool = p;
    b->id = id;
    b->gen = gen;
    b->hash = p->slots[id].hash;
}

/*
 * The last reference of a PRIMARY or DUPLICATE with generation gen is gone:
 * perform its transition if nobody did it already. Lock held.
 */
static void kvb_last_release_locked(kvb_pool *p, uint32_t id, uint32_t gen, struct kvb_cbq *q)
{
    for (;;) {
        struct kvb_slot *s = &p->slots[id];
        uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
        KVB_HB_AFTER(&s->word);
        if (kvb__word_gen(w) != gen || kvb__word_rc(w) != 0) {
            /* a lookup performed this transition eagerly: we lost the race */
            p->c.release_noops++;
            return;
        }
        if (s->state == KVB_S_PRIMARY) {
            if (s->dups)
                return; /* still held by its duplicates: their last one moves it */
            if (s->flags & KVB_F_RESET_ON_RELEASE) {
                kvb_transition_locked(p, id, KVB_S_PRIMARY, KVB_S_RESET, 0);
                kvb__cbq_push(q, KVB_CB_RESET, id, s->hash);
                kvb__cbq_presence(q, s->hash, false);
                kvb__cbq_event(q, &p->ev_seq, KVB_CB_REMOVED, id, s->hash);
            } else {
                kvb_transition_locked(p, id, KVB_S_PRIMARY, KVB_S_INACTIVE, 0);
            }
            return;
        }
        kvb_assert(s->state == KVB_S_DUPLICATE);
        if (s->state != KVB_S_DUPLICATE)
            return;
        uint32_t pid = s->aux;
        kvb_transition_locked(p, id, KVB_S_DUPLICATE, KVB_S_RESET, 0);
        kvb__cbq_push(q, KVB_CB_RESET, id, s->hash);
        kvb__cbq_presence(q, s->hash, false);
        /* drop the duplicate's hold on its primary */
        struct kvb_slot *ps = &p->slots[pid];
        kvb_assert(ps->state == KVB_S_PRIMARY && ps->dups > 0);
        ps->dups--;
        uint64_t pw = atomic_load_explicit(&ps->word, memory_order_acquire);
        KVB_HB_AFTER(&ps->word);
        if (ps->dups || kvb__word_rc(pw) != 0)
            return;
        /* No handle and no duplicate left: the primary's transition is ours (a handle
         * release still on its way to the lock will find the generation moved on). */
        id = pid;
        gen = kvb__word_gen(pw);
    }
}

/*
 * Take one reference to the block holding hash h (PRIMARY: count + 1; INACTIVE:
 * resurrect; PRIMARY at count 0: eager transition first). Lock held.
 * Returns the block id and its generation, or KVB_NONE on a miss.
 */
static uint32_t kvb_acquire_locked(kvb_pool *p, kvb_hash h, uint32_t home, struct kvb_cbq *q,
                                   uint32_t *gen)
{
    uint32_t id = kvb__index_find_from(&p->ix, p->slots, h, home);
    if (id == KVB_NONE)
        return KVB_NONE;
    struct kvb_slot *s = &p->slots[id];
    if (s->state == KVB_S_PRIMARY) {
        uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
        while (kvb__word_rc(w) != 0) {
            if (kvb_unlikely(kvb__word_rc(w) >= KVB_RC_HIGH)) {
                if (kvb__word_rc(w) >= KVB_RC_MAX)
                    return KVB_NONE; /* saturated: cannot take another reference */
                atomic_store_explicit(&p->rc_high, true, memory_order_relaxed);
            }
            KVB_HB_BEFORE(&s->word);
            if (atomic_compare_exchange_weak_explicit(&s->word, &w, w + 1, memory_order_acq_rel,
                                                      memory_order_relaxed)) {
                KVB_HB_AFTER(&s->word);
                *gen = kvb__word_gen(w);
                return id;
            }
        }
        KVB_HB_AFTER(&s->word);
        if (s->dups) {
            /* held by duplicates only: no release is pending, just take a handle.
             * Nothing else moves a zero count (lock-free increments need it > 0). */
            KVB_HB_BEFORE(&s->word);
            atomic_store_explicit(&s->word, w + 1, memory_order_release);
            *gen = kvb__word_gen(w);
            return id;
        }
        /* Count already 0: a last release is on its way to the lock. Do its work. */
        p->c.eager_transitions++;
        if (s->flags & KVB_F_RESET_ON_RELEASE) {
            kvb_transition_locked(p, id, KVB_S_PRIMARY, KVB_S_RESET, 0);
            kvb__cbq_push(q, KVB_CB_RESET, id, h);
            kvb__cbq_presence(q, h, false);
            kvb__cbq_event(q, &p->ev_seq, KVB_CB_REMOVED, id, h);
            return KVB_NONE;
        }
        kvb_transition_locked(p, id, KVB_S_PRIMARY, KVB_S_INACTIVE, 0);
    }
    kvb_assert(s->state == KVB_S_INACTIVE);
    p->c.resurrections++;
    *gen = kvb_transition_locked(p, id, KVB_S_INACTIVE, KVB_S_PRIMARY, 1);
    return id;
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
    int rc = kvb_batch_lock(p, &q, 3ull * n);
    if (rc)
        return rc;
    if (timed)
        kvb__expire_locked(p, now);
    uint32_t nfree = p->count[KVB_S_RESET];
    uint32_t blen = p->ops->len(p->backend);
    uint32_t hlen = ext && p->hints ? p->hints->heap_len : 0;
    uint32_t llen = ext && p->prio ? p->prio->listed : 0;
    if ((ext ? (uint64_t)nfree + blen + hlen + llen < n : nfree + blen < n) ||
        nfree + p->count[KVB_S_INACTIVE] < n) {
        kvb__pool_unlock(p);
        kvb__cbq_fini(&q);
        return -ENOSPC;
    }
    uint32_t take = n < nfree ? n : nfree;
    for (uint32_t i = 0; i < take; i++)
        out[i].id = kvb__free_pop(p);

    /* Evict the rest: blocks below the default priority first (lists), then the
     * backend's blocks in policy order, then blocks above the default (lists), and
     * last the blocks that hints set apart. A candidate whose hash has outstanding
     * hints is set apart in the hint heap instead of being evicted (the pool filters
     * victims; no backend knows), and another is taken; the heap gives its blocks,
     * the one needed furthest ahead first, only when nothing else is left. The
     * backend's ids are validated (a custom backend may be wrong): INACTIVE,
     * distinct, and its own. */
    uint32_t got = 0, need = n - take;
    struct kvb_victims v; /* (filled where the rollback needs it) */
    bool bad = false, filter = ext && p->hints && p->hints->n_ent;
    kvb_mutable *vout = out + take;
    if (!ext) { /* the backend alone: the loop of a pool without hints or priorities */
        while (got < need && !bad) {
            uint32_t ids[64];
            uint32_t want = need - got < 64 ? need - got : 64;
            uint32_t k = p->ops->evict(p->backend, want, ids);
            if (k > want)
                k = want, bad = true;
            for (uint32_t j = 0; j < k; j++) {
                uint32_t id = ids[j];
                if (id >= p->block_count || p->slots[id].state != KVB_S_INACTIVE ||
                    (p->slots[id].flags & KVB_F_MARK)) {
                    bad = true;
                    continue;
                }
                p->slots[id].flags |= KVB_F_MARK;
                /* the eviction below erases its index cell: a cold line, start loading it */
                __builtin_prefetch(&p->ix.map[kvb__index_home(&p->ix, p->slots[id].hash)]);
                vout[got++].id = id;
            }
            if (k < want)
                bad = true;
        }
        goto evicted;
    }
    v.diverted_b = false;
    if (llen)
        kvb__evict_lists_locked(p, KVB_PRIORITY_MIN, KVB_PRIORITY_DEFAULT - 1, vout, &got, need,
                                filter);
    v.low = got;
    while (got < need && !bad && blen > 0) {
        uint32_t ids[64];
        uint32_t want = need - got < 64 ? need - got : 64;
        want = want < blen ? want : blen;
        uint32_t k = p->ops->evict(p->backend, want, ids);
        if (k > want)
            k = want, bad = true;
        blen -= k;
        for (uint32_t j = 0; j < k; j++) {
            uint32_t id = ids[j];
            if (id >= p->block_count || p->slots[id].state != KVB_S_INACTIVE ||
                (p->slots[id].flags & (KVB_F_MARK | KVB_F_HINTED | KVB_F_LISTED))) {
                bad = true;
                continue;
            }
            struct kvb_slot *s = &p->slots[id];
            if (ext && filter && kvb__set_apart_locked(p, id)) {
                v.diverted_b = true;
                continue;
            }
            s->flags |= KVB_F_MARK;
            /* the eviction below erases its index cell: a cold line, start loading it */
            kvb__index_prefetch(&p->ix, s->hash);
            vout[got++].id = id;
        }
        if (k < want)
            bad = true;
    }
    v.backend = got;
    if (llen && !bad)
        kvb__evict_lists_locked(p, KVB_PRIORITY_DEFAULT + 1, KVB_PRIORITY_MAX, vout, &got, need,
                                filter);
    v.high = got;
    while (got < need && !bad) { /* only protected blocks are left: furthest need first */
        uint32_t id = ext && p->hints ? kvb__hints_pop(p->hints) : KVB_HINT_NONE;
        if (id == KVB_HINT_NONE) {
            bad = true; /* the backend held less than its len() said */
            break;
        }
        p->slots[id].flags = (uint8_t)((p->slots[id].flags & ~KVB_F_HINTED) | KVB_F_MARK);
        vout[got++].id = id;
        p->c.hint_evictions++;
    }
    v.all = got;
evicted:
    for (uint32_t j = 0; j < got; j++)
        p->slots[vout[j].id].flags &= (uint8_t)~KVB_F_MARK;
    if (bad) {
        if (!ext)
            v = (struct kvb_victims){.low = 0, .backend = got, .high = got, .all = got};
        kvb__alloc_rollback_locked(p, out, take, &v);
        kvb__pool_unlock(p);
        kvb__cbq_fini(&q);
        return -ENOSPC;
    }

    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = out[i].id;
        struct kvb_slot *s = &p->slots[id];
        if (i >= take) {
            kvb_hash h = s->hash;
            if (evicted)
                evicted[i - take] = h;
            kvb__cbq_push(&q, KVB_CB_EVICT, id, h);
            kvb__cbq_presence(&q, h, false);
            kvb__cbq_event(&q, &p->ev_seq, KVB_CB_REMOVED, id, h);
            p->c.evictions++;
            if (ext && (s->flags & KVB_F_PRIO) && p->prio->level[id] > KVB_PRIORITY_DEFAULT)
                p->c.retained_evictions++;
        } else {
            p->c.allocations_from_reset++;
        }
        out[i].gen = i >= take ? kvb_transition_locked(p, id, KVB_S_INACTIVE, KVB_S_MUTABLE, 0)
                               : kvb_transition_locked(p, id, KVB_S_RESET, KVB_S_MUTABLE, 0);
        out[i].pool = p;
        s->flags = 0;
        s->hash = (kvb_hash){0, 0};
    }
    p->c.allocations += n;
    if (n_evicted)
        *n_evicted = need;
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
    uint32_t gen = kvb_transition_locked(p, id, KVB_S_MUTABLE, KVB_S_STAGED, 0);
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
        uint32_t gen = kvb_transition_locked(p, id, KVB_S_MUTABLE, KVB_S_STAGED, 0);
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
        kvb_transition_locked(p, id, KVB_S_MUTABLE, KVB_S_RESET, 0);
    else
        kvb_transition_locked(p, id, KVB_S_STAGED, KVB_S_RESET, 0);
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
    uint32_t gen = kvb_transition_locked(p, id, KVB_S_STAGED, KVB_S_MUTABLE, 0);
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
    int rc = kvb_batch_lock(p, &q, 4ull * n);
    if (rc)
        return rc;
    if (timed)
        kvb__expire_locked(p, now);
    /* Validate the whole batch first (a failed call changes nothing); MARK catches
     * the same slot passed twice. */
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
        __builtin_prefetch(&p->ix.map[kvb__index_home(&p->ix, p->slots[in[i].id].hash)]);
    }
    /* A primary that could not take n more references would make registration
     * fail half-way: refuse the batch up front instead. Only looked at once some
     * count in the pool ever passed half the range (never, in practice). */
    bool full = false;
    for (uint32_t i = 0;
         i < n && bad == n && !full && atomic_load_explicit(&p->rc_high, memory_order_relaxed);
         i++) {
        uint32_t pid = kvb__index_find(&p->ix, p->slots, p->slots[in[i].id].hash);
        if (pid != KVB_NONE && p->slots[pid].state == KVB_S_PRIMARY &&
            kvb__word_rc(atomic_load_explicit(&p->slots[pid].word, memory_order_relaxed)) >
                KVB_RC_MAX - n)
            full = true;
    }
    for (uint32_t i = 0; i < (bad < n ? bad : n); i++)
        p->slots[in[i].id].flags &= (uint8_t)~KVB_F_MARK;
    if (bad < n) {
        kvb__pool_unlock(p);
        kvb__cbq_fini(&q);
        return kvb__pool_misuse(p, "kvb_pool_register");
    }
    if (full) {
        kvb__pool_unlock(p);
        kvb__cbq_fini(&q);
        return -EOVERFLOW;
    }

    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = in[i].id;
        struct kvb_slot *s = &p->slots[id];
        kvb_hash h = s->hash;
        uint32_t pgen = 0;
        uint32_t pid = kvb_acquire_locked(p, h, kvb__index_home(&p->ix, h), &q, &pgen);
        p->c.registrations++;
        if (p->sketch)
            kvb__sketch_touch(p->sketch, h);
        if (pid != KVB_NONE &&
            (p->dup_policy == KVB_DUP_REJECT || p->slots[pid].dups == KVB_DUPS_MAX)) {
            kvb_transition_locked(p, id, KVB_S_STAGED, KVB_S_RESET, 0);
            kvb__cbq_push(&q, KVB_CB_RESET, id, h);
            kvb_fill_block(&out[i], p, pid, pgen);
            p->c.dedups++;
        } else if (pid == KVB_NONE) {
            s->aux = ++p->arrival_seq;
            s->flags = p->reset_default ? KVB_F_RESET_ON_RELEASE : 0;
            uint32_t gen = kvb_transition_locked(p, id, KVB_S_STAGED, KVB_S_PRIMARY, 1);
            kvb_fill_block(&out[i], p, id, gen);
            kvb__cbq_presence(&q, h, true);
            kvb__cbq_event(&q, &p->ev_seq, KVB_CB_STORED, id, h);
        } else {
            /* ALLOW: turn the reference just taken on the primary into the duplicate's
             * hold (dups, under the lock; the word counts handles only). The count may
             * reach 0 here: the primary stays PRIMARY while it has duplicates. */
            struct kvb_slot *ps = &p->slots[pid];
            ps->dups++;
            KVB_HB_BEFORE(&ps->word);
            atomic_fetch_sub_explicit(&ps->word, 1, memory_order_acq_rel);
            s->aux = pid;
            uint32_t gen = kvb_transition_locked(p, id, KVB_S_STAGED, KVB_S_DUPLICATE, 1);
            kvb_fill_block(&out[i], p, id, gen);
            kvb__cbq_presence(&q, h, true);
            p->c.duplicates++;
        }
        if (ret) { /* the content's block: the new primary, or the one it already had */
            uint32_t prio, dur;
            kvb__retention_get(ret, (uint64_t)kvb_hash_position(h) * p->block_size, &prio, &dur);
            kvb__set_priority_locked(p, pid != KVB_NONE ? pid : id, prio, dur, now);
        }
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
    int rc = kvb_batch_lock(p, &q, 3ull * n);
    if (rc)
        return rc;
    uint32_t k = 0, home[KVB_PREFETCH];
    for (; k < n; k++) {
        uint32_t gen, j = k % KVB_PREFETCH;
        if (p->prefetch && j == 0)
            kvb__index_prepare(&p->ix, p->slots, hashes + k,
                               n - k < KVB_PREFETCH ? n - k : KVB_PREFETCH, home);
        uint32_t hm = p->prefetch ? home[j] : kvb__index_home(&p->ix, hashes[k]);
        uint32_t id = kvb_acquire_locked(p, hashes[k], hm, &q, &gen);
        if (id == KVB_NONE)
            break;
        kvb_fill_block(&out[k], p, id, gen);
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
    int rc = kvb_batch_lock(p, &q, 3ull * n);
    if (rc)
        return rc;
    uint32_t k = 0, home[KVB_PREFETCH];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t gen, j = i % KVB_PREFETCH;
        if (p->prefetch && j == 0)
            kvb__index_prepare(&p->ix, p->slots, hashes + i,
                               n - i < KVB_PREFETCH ? n - i : KVB_PREFETCH, home);
        uint32_t hm = p->prefetch ? home[j] : kvb__index_home(&p->ix, hashes[i]);
        uint32_t id = kvb_acquire_locked(p, hashes[i], hm, &q, &gen);
        hit[i] = id != KVB_NONE;
        if (hit[i]) {
            kvb_fill_block(&out[i], p, id, gen);
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
static int kvb_ref_dec(kvb_pool *p, uint32_t id, uint32_t gen)
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
         * side here, acquire side in kvb_last_release_locked. */
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
        kvb_last_release_locked(p, id, gen, &q);
        kvb__pool_unlock_fire(p, &q);
    }
    return 0;
}

int kvb_block_release_n(kvb_block *blocks, uint32_t n)
{
    if (n && !blocks)
        return -EINVAL;
    int result = 0;
    kvb_pool *locked = NULL;
    struct kvb_cbq q;
    /* Chunks of 256 handles: pass 1 does every decrement lock-free (clearing the
     * handles that were not last); pass 2 performs the last releases under the
     * lock, which stays held across chunks and is only switched when the handles
     * change pool (never two pool locks at once) or the callback queue fills. */
    for (uint32_t base = 0; base < n; base += 256) {
        uint32_t m = n - base < 256 ? n - base : 256;
        bool last[256];
        uint32_t pending = 0;
        for (uint32_t j = 0; j < m; j++) {
            kvb_block *b = &blocks[base + j];
            last[j] = false;
            if (!b->pool) {
                result = -ESTALE;
                continue;
            }
            int rc = kvb_ref_dec(b->pool, b->id, b->gen);
            if (rc < 0) {
                result = kvb__pool_misuse(b->pool, "kvb_block_release_n");
            } else if (rc) {
                last[j] = true;
                pending++;
            } else {
                memset(b, 0, sizeof *b);
            }
        }
        for (uint32_t j = 0; j < m && pending; j++) {
            if (!last[j])
                continue;
            kvb_block *b = &blocks[base + j];
            if (locked != b->pool || kvb__cbq_full(&q, 5)) {
                if (locked)
                    kvb__pool_unlock_fire(locked, &q);
                locked = b->pool;
                KVB_TEST_LAST_RELEASE(locked, b->id);
                kvb__cbq_init(&q, &locked->sinks);
                kvb__pool_lock(locked);
            }
            kvb_last_release_locked(locked, b->id, b->gen, &q);
            memset(b, 0, sizeof *b);
            pending--;
        }
    }
    if (locked)
        kvb__pool_unlock_fire(locked, &q);
    return result;
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
    struct kvb_cbq q;
    kvb__cbq_init(&q, &p->sinks);
    kvb__pool_lock(p);
    uint32_t gen;
    uint32_t id = kvb_acquire_locked(p, w->hash, kvb__index_home(&p->ix, w->hash), &q, &gen);
    if (id != KVB_NONE)
        kvb_fill_block(out, p, id, gen);
    kvb__pool_unlock_fire(p, &q);
    return id == KVB_NONE ? -ENOENT : 0;
}
