/*
 * pool_sm.h - the pool's state machine, static inline: the transition function
 * (DESIGN.md section 2.2) and the steps built on it that the hot paths share,
 * kvb_pool_allocate / stage / register / match / release in pool.c and the
 * one-pass kvb_pool_acquire in pool_acquire.c. Private to the pool's files.
 *
 * Everything here runs under the pool lock (the _locked suffix) and is inlined
 * into each call site on purpose: the states of a transition are constants there,
 * so the membership branches below fold away, and a batch loop keeps its slot,
 * index cell and counters in registers instead of crossing a call per block.
 *
 * Transitions. Every change of a slot's state goes through
 * kvb__transition_path_locked, checked (debug builds) against the table of
 * DESIGN.md 2.2 hop by hop. A path of two hops (allocation straight to STAGED,
 * RESET/INACTIVE -> MUTABLE -> STAGED) applies each hop's membership changes and
 * bumps the generation once per hop, so the slot ends in exactly the state,
 * generation and structures the two single transitions would leave; the
 * intermediate state is never visible (the lock is held, no handle is issued).
 */
#ifndef KVB_POOL_SM_H
#define KVB_POOL_SM_H

#include "pool.h"
#include "annotate.h"
#include "pool_index.h"
#include "sketch.h"

/* Start of a batch call: room for `bound` queued records (reserved before the
 * lock, so the call cannot fail half-way), then the lock. 0 or -ENOMEM. */
static inline int kvb__batch_lock(kvb_pool *p, struct kvb_cbq *q, uint64_t bound)
{
    kvb__cbq_init(q, &p->sinks);
    int rc = kvb__cbq_reserve(q, bound);
    if (rc == 0)
        kvb__pool_lock(p);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* the transition function                                                  */
/* ------------------------------------------------------------------------ */

/* The bit set of states `from` may move to (DESIGN.md 2.2). */
static inline uint32_t kvb__sm_allowed(enum kvb_state from)
{
#define B(s) (1u << (s))
    static const uint8_t allowed[KVB_S_COUNT] = {
        [KVB_S_RESET] = B(KVB_S_MUTABLE),
        [KVB_S_MUTABLE] = B(KVB_S_RESET) | B(KVB_S_STAGED),
        [KVB_S_STAGED] = B(KVB_S_MUTABLE) | B(KVB_S_RESET) | B(KVB_S_PRIMARY) | B(KVB_S_DUPLICATE),
        [KVB_S_PRIMARY] = B(KVB_S_INACTIVE) | B(KVB_S_RESET),
        [KVB_S_DUPLICATE] = B(KVB_S_RESET),
        [KVB_S_INACTIVE] = B(KVB_S_MUTABLE) | B(KVB_S_RESET) | B(KVB_S_PRIMARY),
    };
#undef B
    return allowed[from];
}

/* The index and cache changes of leaving state a for b (one hop): content that
 * leaves (PRIMARY/INACTIVE -> RESET/MUTABLE) is erased from the hash index and
 * loses its priority; a hit (INACTIVE -> PRIMARY) leaves the cache's order; a
 * registration (STAGED -> PRIMARY) enters the index. `at` (KVB_NONE: computed
 * from the hash) is where the index operation starts: the home cell of the hash
 * an erase removes, or the cell where a probe for the hash an insert adds just
 * stopped (kvb__index_find_at) with its displacement at_d there. */
static inline __attribute__((always_inline)) void kvb__sm_hop_locked(kvb_pool *p, uint32_t id,
                                                                     enum kvb_state a,
                                                                     enum kvb_state b, uint32_t at,
                                                                     uint32_t at_d)
{
    struct kvb_slot *s = &p->slots[id];
    kvb_assert(kvb__sm_allowed(a) & (1u << b));
    if ((a == KVB_S_PRIMARY || a == KVB_S_INACTIVE) && (b == KVB_S_RESET || b == KVB_S_MUTABLE)) {
        if (at == KVB_NONE)
            kvb__index_erase(&p->ix, p->slots, id);
        else
            kvb__index_erase_at(&p->ix, p->slots, id, at);
        if (kvb_unlikely(s->flags & KVB_F_PRIO)) { /* the content leaves: so does its priority */
            p->prio->level[id] = KVB_PRIORITY_DEFAULT;
            kvb__prio_timer_clear(p->prio, id);
            s->flags &= (uint8_t)~KVB_F_PRIO;
        }
    }
    if (a == KVB_S_INACTIVE && b == KVB_S_PRIMARY)
        kvb__unplace_locked(p, id);
    if (a == KVB_S_STAGED && b == KVB_S_PRIMARY) {
        if (at == KVB_NONE)
            kvb__index_insert(&p->ix, p->slots, id);
        else
            kvb__index_insert_at(&p->ix, p->slots, id, at, at_d);
    }
}

/*
 * Move slot id from state `from` through `via` (KVB_S_COUNT: directly) to `to`,
 * with reference count rc; bump its generation once per hop; keep the gauges and
 * the membership structures in step:
 *   -> RESET            pushed on the free-list tail (callers that pop it later
 *                       or roll back use the free-list helpers directly)
 *   -> INACTIVE         inserted into the cache's order (kvb__place_locked)
 *   INACTIVE -> PRIMARY removed from it (a hit)
 *   STAGED -> PRIMARY   inserted into the hash index (at `at`, see above)
 *   PRIMARY/INACTIVE -> RESET/MUTABLE  erased from the hash index
 * RESET -> MUTABLE (free-list pop) and INACTIVE -> MUTABLE/RESET (evict) are
 * already out of their lists when this is called; `via` is never RESET or
 * INACTIVE. Returns the new generation.
 *
 * Callers pass the states as constants (debug builds check `from` against the
 * slot): always inlined, the branches fold away, which matters on the hot path
 * (2-4 transitions per block).
 */
static inline __attribute__((always_inline)) uint32_t
kvb__transition_path_locked(kvb_pool *p, uint32_t id, enum kvb_state from, enum kvb_state via,
                            enum kvb_state to, uint32_t rc, uint32_t at, uint32_t at_d)
{
    struct kvb_slot *s = &p->slots[id];
    const bool two = via != KVB_S_COUNT;
    kvb_assert(s->state == from);
    kvb_assert(!two || (via != KVB_S_RESET && via != KVB_S_INACTIVE));
    kvb_assert(kvb__word_rc(atomic_load_explicit(&s->word, memory_order_relaxed)) == 0);
    kvb_assert(s->dups == 0);

    if (two) { /* (no path both erases and inserts: `at` is the one operation's) */
        kvb__sm_hop_locked(p, id, from, via, at, at_d);
        kvb__sm_hop_locked(p, id, via, to, at, at_d);
    } else {
        kvb__sm_hop_locked(p, id, from, to, at, at_d);
    }

    p->count[from]--;
    p->count[to]++;
    s->state = (uint8_t)to;

    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    uint32_t gen = kvb__word_gen(w) + 1;
    gen += gen == 0; /* 0 is never a live generation */
    if (two) {
        gen++;
        gen += gen == 0;
    }
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
    if ((from == KVB_S_RESET || from == KVB_S_INACTIVE) &&
        (to != KVB_S_RESET && to != KVB_S_INACTIVE)) {
        /* a block became held: the only way the high watermark can rise */
        uint32_t held = p->block_count - p->count[KVB_S_RESET] - p->count[KVB_S_INACTIVE];
        if (held > p->peak_in_use)
            p->peak_in_use = held;
    }
    return gen;
}

/* One transition (one hop). */
static inline __attribute__((always_inline)) uint32_t
kvb__transition_locked(kvb_pool *p, uint32_t id, enum kvb_state from, enum kvb_state to,
                       uint32_t rc)
{
    return kvb__transition_path_locked(p, id, from, KVB_S_COUNT, to, rc, KVB_NONE, 0);
}

/* ------------------------------------------------------------------------ */
/* references                                                               */
/* ------------------------------------------------------------------------ */

static inline void kvb__fill_block(kvb_block *b, kvb_pool *p, uint32_t id, uint32_t gen)
{
    b->pool = p;
    b->id = id;
    b->gen = gen;
    b->hash = p->slots[id].hash;
}

/*
 * The last handle of block id (PRIMARY or DUPLICATE) is gone and nobody performed
 * its transition yet: its word is (generation, 0), and the lock has been held
 * since that was checked (kvb__last_release_locked). Perform it. A duplicate's
 * transition drops its hold on its primary, which may make that primary's
 * transition ours too. Returns the primary a duplicate released here left without
 * duplicates but with handles (KVB_NONE otherwise): a batch release may hold those
 * handles further on (kvb_block_release_n).
 */
static inline __attribute__((always_inline)) uint32_t kvb__released_locked(kvb_pool *p, uint32_t id,
                                                                           struct kvb_cbq *q)
{
    for (;;) {
        struct kvb_slot *s = &p->slots[id];
        if (kvb_likely(s->state == KVB_S_PRIMARY)) {
            if (s->dups)
                return KVB_NONE; /* still held by its duplicates: their last one moves it */
            if (s->flags & KVB_F_RESET_ON_RELEASE) {
                kvb__transition_locked(p, id, KVB_S_PRIMARY, KVB_S_RESET, 0);
                kvb__cbq_push(q, KVB_CB_RESET, id, s->hash);
                kvb__cbq_presence(q, s->hash, false);
                kvb__cbq_event(q, &p->ev_seq, KVB_CB_REMOVED, id, s->hash);
            } else {
                kvb__transition_locked(p, id, KVB_S_PRIMARY, KVB_S_INACTIVE, 0);
            }
            return KVB_NONE;
        }
        kvb_assert(s->state == KVB_S_DUPLICATE);
        if (s->state != KVB_S_DUPLICATE)
            return KVB_NONE;
        uint32_t pid = s->aux;
        kvb__transition_locked(p, id, KVB_S_DUPLICATE, KVB_S_RESET, 0);
        kvb__cbq_push(q, KVB_CB_RESET, id, s->hash);
        kvb__cbq_presence(q, s->hash, false);
        /* drop the duplicate's hold on its primary */
        struct kvb_slot *ps = &p->slots[pid];
        kvb_assert(ps->state == KVB_S_PRIMARY && ps->dups > 0);
        ps->dups--;
        uint64_t pw = atomic_load_explicit(&ps->word, memory_order_acquire);
        KVB_HB_AFTER(&ps->word);
        if (ps->dups)
            return KVB_NONE;
        if (kvb__word_rc(pw) != 0)
            return pid;
        /* No handle and no duplicate left: the primary's transition is ours (a handle
         * release still on its way to the lock will find the generation moved on). */
        id = pid;
    }
}

/*
 * The last reference of a PRIMARY or DUPLICATE with generation gen is gone, and the
 * lock was taken after that: perform its transition unless somebody did (a lookup
 * in between performs it eagerly, and the late release is a counted no-op).
 * Returns as kvb__released_locked.
 */
static inline __attribute__((always_inline)) uint32_t
kvb__last_release_locked(kvb_pool *p, uint32_t id, uint32_t gen, struct kvb_cbq *q)
{
    struct kvb_slot *s = &p->slots[id];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    KVB_HB_AFTER(&s->word);
    if (kvb__word_gen(w) != gen || kvb__word_rc(w) != 0) {
        /* a lookup performed this transition eagerly: we lost the race */
        p->c.release_noops++;
        return KVB_NONE;
    }
    return kvb__released_locked(p, id, q);
}

/*
 * Take one reference to block id, found in the hash index under hash h (PRIMARY:
 * count + 1; INACTIVE: resurrect; PRIMARY at count 0 with no duplicate: its last
 * release is on its way to the lock, so perform that transition eagerly first).
 * Returns the generation of the reference, or 0 for a miss: the count saturated,
 * or the eager transition reset the block (reset-on-release), exactly as if the
 * release had completed first.
 */
static inline __attribute__((always_inline)) uint32_t
kvb__take_locked(kvb_pool *p, uint32_t id, kvb_hash h, struct kvb_cbq *q)
{
    struct kvb_slot *s = &p->slots[id];
    if (s->state == KVB_S_PRIMARY) {
        uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
        while (kvb__word_rc(w) != 0) {
            if (kvb_unlikely(kvb__word_rc(w) >= KVB_RC_HIGH)) {
                if (kvb__word_rc(w) >= KVB_RC_MAX)
                    return 0; /* saturated: cannot take another reference */
                atomic_store_explicit(&p->rc_high, true, memory_order_relaxed);
            }
            KVB_HB_BEFORE(&s->word);
            if (atomic_compare_exchange_weak_explicit(&s->word, &w, w + 1, memory_order_acq_rel,
                                                      memory_order_relaxed)) {
                KVB_HB_AFTER(&s->word);
                return kvb__word_gen(w);
            }
        }
        KVB_HB_AFTER(&s->word);
        if (s->dups) {
            /* held by duplicates only: no release is pending, just take a handle.
             * Nothing else moves a zero count (lock-free increments need it > 0). */
            KVB_HB_BEFORE(&s->word);
            atomic_store_explicit(&s->word, w + 1, memory_order_release);
            return kvb__word_gen(w);
        }
        /* Count already 0: a last release is on its way to the lock. Do its work. */
        p->c.eager_transitions++;
        if (s->flags & KVB_F_RESET_ON_RELEASE) {
            kvb__transition_locked(p, id, KVB_S_PRIMARY, KVB_S_RESET, 0);
            kvb__cbq_push(q, KVB_CB_RESET, id, h);
            kvb__cbq_presence(q, h, false);
            kvb__cbq_event(q, &p->ev_seq, KVB_CB_REMOVED, id, h);
            return 0;
        }
        kvb__transition_locked(p, id, KVB_S_PRIMARY, KVB_S_INACTIVE, 0);
    }
    kvb_assert(s->state == KVB_S_INACTIVE);
    p->c.resurrections++;
    return kvb__transition_locked(p, id, KVB_S_INACTIVE, KVB_S_PRIMARY, 1);
}

/* kvb__take_locked out of line, for a lookup that rarely finds anything (the dedup
 * lookup of a registration: its inlined copy would crowd the miss path's registers). */
static __attribute__((noinline, unused)) uint32_t
kvb__take_cold_locked(kvb_pool *p, uint32_t id, kvb_hash h, struct kvb_cbq *q)
{
    return kvb__take_locked(p, id, h, q);
}

/* Find hash h (home: its home cell) and take a reference (kvb__take_locked).
 * Returns the block id and its generation, or KVB_NONE on a miss. */
static inline __attribute__((always_inline)) uint32_t
kvb__acquire_locked(kvb_pool *p, kvb_hash h, uint32_t home, struct kvb_cbq *q, uint32_t *gen)
{
    uint32_t id = kvb__index_find_from(&p->ix, p->slots, h, home);
    if (id == KVB_NONE)
        return KVB_NONE;
    *gen = kvb__take_locked(p, id, h, q);
    return *gen ? id : KVB_NONE;
}

/* ------------------------------------------------------------------------ */
/* allocation                                                               */
/* ------------------------------------------------------------------------ */

/* Records and counters of evicting block id (INACTIVE, out of the cache's order,
 * about to be reused): on_evict, presence, the REMOVED event. */
static inline __attribute__((always_inline)) void
kvb__evicted_locked(kvb_pool *p, uint32_t id, struct kvb_cbq *q, const bool ext)
{
    struct kvb_slot *s = &p->slots[id];
    kvb__cbq_push(q, KVB_CB_EVICT, id, s->hash);
    kvb__cbq_presence(q, s->hash, false);
    kvb__cbq_event(q, &p->ev_seq, KVB_CB_REMOVED, id, s->hash);
    p->c.evictions++;
    if (ext && (s->flags & KVB_F_PRIO) && p->prio->level[id] > KVB_PRIORITY_DEFAULT)
        p->c.retained_evictions++;
}

/* Whether n blocks can be allocated once the caller has taken `used` cached blocks
 * out of the cache (hits it is about to resurrect) and freed `freed` more: the
 * free list, the backend, the priority lists and the hint heap together, and the
 * RESET plus INACTIVE gauges (a backend whose len() overstates cannot pass). */
static inline __attribute__((always_inline)) bool
kvb__alloc_room_locked(kvb_pool *p, uint32_t n, uint32_t used, uint32_t freed, const bool ext)
{
    uint64_t nfree = (uint64_t)p->count[KVB_S_RESET] + freed;
    uint64_t cached = p->ops->len(p->backend);
    if (ext)
        cached += (p->hints ? p->hints->heap_len : 0) + (p->prio ? p->prio->listed : 0);
    return nfree + cached >= (uint64_t)n + used &&
           nfree + p->count[KVB_S_INACTIVE] >= (uint64_t)n + used;
}

/* A backend's proposed victim that the pool can take: one of its blocks, cached,
 * not taken twice, not set apart (a custom backend may be wrong). */
static inline bool kvb__victim_ok(const kvb_pool *p, uint32_t id)
{
    return id < p->block_count && p->slots[id].state == KVB_S_INACTIVE &&
           !(p->slots[id].flags & (KVB_F_MARK | KVB_F_HINTED | KVB_F_LISTED));
}

/* Take cached block id as victim number *got: marked, and the field after its id
 * (kvb__ids_aux) the home cell of its hash (an eviction erases that cell: a cold
 * line, loading from here on) or, with !home, KVB_NONE (the cell still loads). */
static inline void kvb__victim_take(kvb_pool *p, struct kvb_ids out, uint32_t *got, uint32_t id,
                                    bool home)
{
    struct kvb_slot *s = &p->slots[id];
    s->flags |= KVB_F_MARK;
    uint32_t h = kvb__index_home(&p->ix, s->hash);
    __builtin_prefetch(&p->ix.map[h]);
    *kvb__ids_aux(out, *got) = home ? h : KVB_NONE;
    *kvb__ids_at(out, (*got)++) = id;
}

/*
 * Take the ids of n blocks (room checked): out[0, take) from the free list, then
 * the victims in eviction order: the backend's blocks in policy order (with
 * retention priorities: the lowest level first, the policy's order within a
 * level, kvb__evict_levels_locked), and last the blocks that hints set apart. A candidate whose
 * hash has outstanding hints is set apart in the hint heap instead of being evicted (the pool
 * filters victims; no backend knows), and another is taken; the heap gives its blocks, the one
 * needed furthest ahead first, only when nothing else is left. The backend's ids are validated (a
 * custom backend may be wrong): INACTIVE, distinct, and its own (the library's own backends are
 * trusted: debug builds assert it); a wrong one undoes the whole selection
 * (kvb__alloc_rollback_locked) and the result is -ENOSPC. Victims are out of the cache's order,
 * still INACTIVE and in the index; the field after a victim's id (kvb__ids_aux) holds the home cell
 * of its hash, or KVB_NONE. Returns take, the number taken from the free list. `ext` (constant at
 * each call site) says whether the pool has hints or priorities: a pool with neither runs the
 * backend loop alone.
 */
static inline __attribute__((always_inline)) int
kvb__alloc_take_locked(kvb_pool *p, uint32_t n, struct kvb_ids out, const bool ext)
{
    uint32_t nfree = p->count[KVB_S_RESET];
    uint32_t take = n < nfree ? n : nfree;
    for (uint32_t i = 0; i < take; i++)
        *kvb__ids_at(out, i) = kvb__free_pop(p);

    uint32_t got = 0, need = n - take;
    struct kvb_victims v; /* (filled where the rollback needs it) */
    bool bad = false, filter = ext && p->hints && p->hints->n_ent;
    struct kvb_ids vout = kvb__ids_from(out, take);
    const bool check = ext || !p->ops_builtin; /* validate (and mark) the backend's ids */
    if (!ext) { /* the backend alone: the loop of a pool without hints or priorities */
        while (got < need && !bad) {
            uint32_t ids[64];
            uint32_t want = need - got < 64 ? need - got : 64;
            uint32_t k = p->ops->evict(p->backend, want, ids);
            if (k > want)
                k = want, bad = true;
            for (uint32_t j = 0; j < k; j++) {
                uint32_t id = ids[j];
                if (check) {
                    if (id >= p->block_count || p->slots[id].state != KVB_S_INACTIVE ||
                        (p->slots[id].flags & KVB_F_MARK)) {
                        bad = true;
                        continue;
                    }
                    p->slots[id].flags |= KVB_F_MARK;
                }
                kvb_assert(id < p->block_count && p->slots[id].state == KVB_S_INACTIVE);
                /* the eviction erases its index cell: a cold line, start loading it, and
                 * keep the home for the erase */
                uint32_t home = kvb__index_home(&p->ix, p->slots[id].hash);
                __builtin_prefetch(&p->ix.map[home]);
                *kvb__ids_aux(vout, got) = home;
                *kvb__ids_at(vout, got++) = id;
            }
            if (k < want)
                bad = true;
        }
        goto evicted;
    }
    v.diverted_b = false;
    v.mixed = p->prio != NULL;
    uint32_t blen = 0;
    if (v.mixed) /* lowest level first, the policy's order within a level */
        kvb__evict_levels_locked(p, vout, &got, need, filter, &bad);
    else
        blen = p->ops->len(p->backend);
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
            if (!kvb__victim_ok(p, id)) {
                bad = true;
                continue;
            }
            if (filter && kvb__set_apart_locked(p, id)) {
                v.diverted_b = true;
                continue;
            }
            kvb__victim_take(p, vout, &got, id, true);
        }
        if (k < want)
            bad = true;
    }
    v.ordered = got;
    while (got < need && !bad) { /* only protected blocks are left: furthest need first */
        uint32_t id = p->hints ? kvb__hints_pop(p->hints) : KVB_HINT_NONE;
        if (id == KVB_HINT_NONE) {
            bad = true; /* the backend held less than its len() said */
            break;
        }
        p->slots[id].flags = (uint8_t)((p->slots[id].flags & ~KVB_F_HINTED) | KVB_F_MARK);
        *kvb__ids_aux(vout, got) = KVB_NONE;
        *kvb__ids_at(vout, got++) = id;
        p->c.hint_evictions++;
    }
    v.all = got;
evicted:
    for (uint32_t j = 0; check && j < got; j++)
        p->slots[*kvb__ids_at(vout, j)].flags &= (uint8_t)~KVB_F_MARK;
    if (kvb_unlikely(bad)) {
        if (!ext)
            v = (struct kvb_victims){.ordered = got, .all = got, .mixed = false};
        kvb__alloc_rollback_locked(p, out, take, &v);
        return -ENOSPC;
    }
    return (int)take;
}

/* ------------------------------------------------------------------------ */
/* registration                                                             */
/* ------------------------------------------------------------------------ */

/* Registration of staged block id whose content is already in the pool: block pid
 * (PRIMARY), a reference with generation pgen just taken on it. REJECT (or the
 * primary's duplicates at KVB_DUPS_MAX): the staged block goes back to RESET and
 * *out is that reference; ALLOW: the staged block becomes a DUPLICATE holding the
 * primary. Out of line: the rare case of a registration. */
static __attribute__((noinline, unused)) void
kvb__register_existing_locked(kvb_pool *p, uint32_t id, uint32_t pid, uint32_t pgen, kvb_hash h,
                              struct kvb_cbq *q, kvb_block *out)
{
    struct kvb_slot *s = &p->slots[id];
    if (p->dup_policy == KVB_DUP_REJECT || p->slots[pid].dups == KVB_DUPS_MAX) {
        kvb__transition_locked(p, id, KVB_S_STAGED, KVB_S_RESET, 0);
        kvb__cbq_push(q, KVB_CB_RESET, id, h);
        kvb__fill_block(out, p, pid, pgen);
        p->c.dedups++;
        return;
    }
    /* ALLOW: turn the reference just taken on the primary into the duplicate's hold
     * (dups, under the lock; the word counts handles only). The count may reach 0
     * here: the primary stays PRIMARY while it has duplicates. */
    struct kvb_slot *ps = &p->slots[pid];
    ps->dups++;
    KVB_HB_BEFORE(&ps->word);
    atomic_fetch_sub_explicit(&ps->word, 1, memory_order_acq_rel);
    s->aux = pid;
    uint32_t gen = kvb__transition_locked(p, id, KVB_S_STAGED, KVB_S_DUPLICATE, 1);
    kvb__fill_block(out, p, id, gen);
    kvb__cbq_presence(q, h, true);
    p->c.duplicates++;
}

/*
 * Register block id (STAGED under hash h, its home cell `home`) and fill *out:
 * no block holds h -> STAGED -> PRIMARY; h cached -> the cached block is
 * resurrected first; a primary exists -> under ALLOW the staged block becomes a
 * DUPLICATE holding the primary, under REJECT (or with the primary's duplicates
 * at KVB_DUPS_MAX) it goes back to RESET and *out is a new reference to the
 * primary. One probe: a miss inserts where the lookup stopped. With a retention
 * `ret` (NULL: none, folded away), the content's block gets its priority.
 */
static inline __attribute__((always_inline)) void
kvb__register_one_locked(kvb_pool *p, uint32_t id, kvb_hash h, uint32_t home, struct kvb_cbq *q,
                         const kvb_retention *ret, uint64_t now, kvb_block *out)
{
    struct kvb_slot *s = &p->slots[id];
    uint32_t at = KVB_NONE, at_d = 0, pgen = 0;
    uint32_t pid = kvb__index_find_at(&p->ix, p->slots, h, home, &at, &at_d);
    if (kvb_unlikely(pid != KVB_NONE)) {
        pgen = kvb__take_cold_locked(p, pid, h, q);
        if (!pgen) { /* missed after all (the index changed): insert from the home cell */
            pid = KVB_NONE;
            at = KVB_NONE;
        }
    }
    p->c.registrations++;
    if (p->sketch)
        kvb__sketch_touch(p->sketch, h);
    if (kvb_likely(pid == KVB_NONE)) {
        s->aux = ++p->arrival_seq;
        s->flags = p->reset_default ? KVB_F_RESET_ON_RELEASE : 0;
        uint32_t gen = kvb__transition_path_locked(p, id, KVB_S_STAGED, KVB_S_COUNT, KVB_S_PRIMARY,
                                                   1, at, at_d);
        kvb__fill_block(out, p, id, gen);
        kvb__cbq_presence(q, h, true);
        kvb__cbq_event(q, &p->ev_seq, KVB_CB_STORED, id, h);
    } else {
        kvb__register_existing_locked(p, id, pid, pgen, h, q, out);
    }
    if (ret) { /* the content's block: the new primary, or the one it already had */
        uint32_t prio, dur;
        kvb__retention_get(ret, (uint64_t)kvb_hash_position(h) * p->block_size, &prio, &dur);
        kvb__set_priority_locked(p, pid != KVB_NONE ? pid : id, prio, dur, now);
    }
}

#endif /* KVB_POOL_SM_H */
