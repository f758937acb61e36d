/*
 * pool.c - the block store of one memory tier: slot state machine, hash index,
 * free list, inactive index (eviction backend), handles and reference counts.
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
 * Callbacks are queued under the lock (struct kvb_cbq) and fired by the calling
 * thread after unlock, in order. Queue storage is bounded by the call's batch
 * size and reserved before the lock is taken, so no call fails half-way.
 */
#include "pool.h"
#include "annotate.h"
#include "inactive_internal.h"
#include "registry_internal.h"
#include "sketch.h"
#include "events_internal.h"
#include "hint.h"
#include "prio.h"
#include "testing.h"
#include <string.h>
#include <time.h>

/* Most references one block can hold; beyond, clone is -EOVERFLOW and a lookup
 * treats the block as a miss. */
#define KVB_RC_MAX (UINT32_MAX - 1)
/* Past this count the pool starts checking registrations for saturation. */
#define KVB_RC_HIGH (1u << 31)

/* ------------------------------------------------------------------------ */
/* test hooks                                                               */
/* ------------------------------------------------------------------------ */

#ifdef KVB_TESTING
static kvb_test_hook_fn kvb_test_last_release_hook;
static void *kvb_test_last_release_arg;

static uint32_t kvb_test_disp_max;

void kvb__test_set_map_disp_max(uint32_t max)
{
    kvb_test_disp_max = max;
}

void kvb__test_set_last_release_hook(kvb_test_hook_fn fn, void *arg)
{
    kvb_test_last_release_arg = arg;
    kvb_test_last_release_hook = fn;
}
#define KVB_TEST_LAST_RELEASE(p, id)                                                               \
    do {                                                                                           \
        if (kvb_test_last_release_hook)                                                            \
            kvb_test_last_release_hook(kvb_test_last_release_arg, (p), (id));                      \
    } while (0)
#else
#define KVB_TEST_LAST_RELEASE(p, id) ((void)0)
#endif

/* ------------------------------------------------------------------------ */
/* lock with contention accounting                                          */
/* ------------------------------------------------------------------------ */

static uint64_t kvb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* the default clock of retention durations */
static uint64_t kvb_monotonic_ms(void *ctx)
{
    (void)ctx;
    return kvb_now_ns() / 1000000u;
}

/* Pool locks held by this thread: debug builds check the lock order with it
 * (the registry lock is never taken while a pool lock is held). */
static _Thread_local int kvb_locks_held;

int kvb__pool_locks_held(void)
{
    return kvb_locks_held;
}

void kvb__pool_lock(kvb_pool *p)
{
    if (pthread_mutex_trylock(&p->mu) != 0) {
        uint64_t t0 = kvb_now_ns();
        pthread_mutex_lock(&p->mu);
        p->c.lock_contended++;
        p->c.lock_wait_ns += kvb_now_ns() - t0;
    }
    p->c.lock_acquisitions++;
    if (kvb__config_debug)
        kvb_locks_held++;
}

void kvb__pool_unlock(kvb_pool *p)
{
    if (kvb__config_debug)
        kvb_locks_held--;
    pthread_mutex_unlock(&p->mu);
}

/* ------------------------------------------------------------------------ */
/* misuse                                                                   */
/* ------------------------------------------------------------------------ */

static int kvb_misuse(kvb_pool *p, const char *what)
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
/* deferred callbacks                                                       */
/* ------------------------------------------------------------------------ */

static bool kvb_pool_has_callbacks(const kvb_pool *p)
{
    return p->cb.on_reset || p->cb.on_evict || p->registry || p->events;
}

static void kvb_cbq_init(struct kvb_cbq *q, const kvb_pool *p)
{
    q->ev = q->local;
    q->n = 0;
    q->cap = KVB_CBQ_LOCAL;
    q->heap = false;
    q->active = kvb_pool_has_callbacks(p);
}

/* Make room for `bound` events before the lock is taken. */
static int kvb_cbq_reserve(struct kvb_cbq *q, const kvb_pool *p, uint64_t bound)
{
    if (!q->active || bound <= q->cap)
        return 0;
    if (bound > UINT32_MAX)
        return -ENOMEM;
    struct kvb_cb_ev *ev = kvb__alloc(&p->alloc, (size_t)bound * sizeof *ev);
    if (!ev)
        return -ENOMEM;
    q->ev = ev;
    q->cap = (uint32_t)bound;
    q->heap = true;
    return 0;
}

static void kvb_cbq_push(struct kvb_cbq *q, uint32_t kind, uint32_t id, kvb_hash h)
{
    if (!q->active)
        return;
    kvb_assert(q->n < q->cap);
    if (q->n < q->cap)
        q->ev[q->n++] = (struct kvb_cb_ev){.hash = h, .id = id, .kind = kind};
}

static bool kvb_cbq_full(const struct kvb_cbq *q, uint32_t room)
{
    return q->active && q->cap - q->n < room;
}

/* Event records, numbered under the lock (DESIGN.md section 7). */
static void kvb_event_rec(struct kvb_cbq *q, kvb_pool *p, uint32_t kind, uint32_t id, kvb_hash h)
{
    if (!p->events)
        return;
    kvb_assert(q->n < q->cap);
    if (q->n < q->cap)
        q->ev[q->n++] = (struct kvb_cb_ev){.hash = h, .id = id, .kind = kind, .seq = ++p->ev_seq};
}

/* Presence updates for the registry, queued like callbacks. */
static void kvb_present(struct kvb_cbq *q, const kvb_pool *p, kvb_hash h, bool up)
{
    if (p->registry)
        kvb_cbq_push(q, up ? KVB_CB_PRESENT : KVB_CB_ABSENT, 0, h);
}

/* Fire queued callbacks (lock NOT held), in order, and empty the queue.
 * Registry presence updates go first, in batches of 64 per registry lock, so a
 * callback that asks the registry sees the state this call produced. */
static void kvb_cbq_fire(struct kvb_cbq *q, const kvb_pool *p)
{
    if (p->registry) {
        kvb_hash hs[64];
        int8_t d[64];
        uint32_t k = 0;
        for (uint32_t i = 0; i < q->n; i++) {
            const struct kvb_cb_ev *e = &q->ev[i];
            if (e->kind != KVB_CB_PRESENT && e->kind != KVB_CB_ABSENT)
                continue;
            hs[k] = e->hash;
            d[k++] = e->kind == KVB_CB_PRESENT ? 1 : -1;
            if (k == 64) {
                kvb__registry_presence(p->registry, p->reg_index, hs, d, k);
                k = 0;
            }
        }
        if (k)
            kvb__registry_presence(p->registry, p->reg_index, hs, d, k);
    }
    if (p->events)
        kvb__events_deliver((kvb_pool *)p, q->ev, q->n);
    for (uint32_t i = 0; i < q->n; i++) {
        const struct kvb_cb_ev *e = &q->ev[i];
        if (e->kind == KVB_CB_RESET && p->cb.on_reset)
            p->cb.on_reset(p->cb.user, e->id);
        else if (e->kind == KVB_CB_EVICT && p->cb.on_evict)
            p->cb.on_evict(p->cb.user, e->hash, e->id);
    }
    q->n = 0;
}

static void kvb_cbq_fini(struct kvb_cbq *q, const kvb_pool *p)
{
    if (q->heap)
        kvb__free(&p->alloc, q->ev, (size_t)q->cap * sizeof *q->ev);
    q->heap = false;
}

static void kvb_unlock_fire(kvb_pool *p, struct kvb_cbq *q)
{
    kvb__pool_unlock(p);
    kvb_cbq_fire(q, p);
    kvb_cbq_fini(q, p);
}

/* Start of a batch call: room for `bound` queued records (reserved before the
 * lock, so the call cannot fail half-way), then the lock. */
static int kvb_batch_lock(kvb_pool *p, struct kvb_cbq *q, uint64_t bound)
{
    kvb_cbq_init(q, p);
    int rc = kvb_cbq_reserve(q, p, bound);
    if (rc == 0)
        kvb__pool_lock(p);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* hash index                                                               */
/* ------------------------------------------------------------------------ */

/* the top 32 bits of the mix, scaled to the table */
static inline uint32_t kvb_map_home(const kvb_pool *p, kvb_hash h)
{
    return kvb__cell_of((uint32_t)(kvb__hash_mix(h) >> 32), p->map_cap);
}

static inline uint32_t kvb_map_id(const kvb_pool *p, uint32_t cell)
{
    return cell & p->map_id_mask;
}

/* Displacement of the entry in cell i from its home (computed from the slot's
 * hash when the packed field saturated). */
static inline uint32_t kvb_map_disp(const kvb_pool *p, uint32_t i, uint32_t cell)
{
    uint32_t d = cell >> p->map_id_bits;
    if (kvb_unlikely(d == p->map_disp_max))
        d = kvb__cell_dist(kvb_map_home(p, p->slots[kvb_map_id(p, cell)].hash), i, p->map_cap);
    return d;
}

static inline uint32_t kvb_map_cell(const kvb_pool *p, uint32_t id, uint32_t disp)
{
    if (disp > p->map_disp_max)
        disp = p->map_disp_max;
    return (disp << p->map_id_bits) | id;
}

/*
 * Robin Hood order: along a probe sequence, displacements never decrease
 * across an entry that is richer than the one being placed, so a lookup stops as
 * soon as it meets an entry closer to its home than the probe is to the key's
 * home (a miss costs about as much as a hit), a key is compared with a slot's
 * hash only where the displacement says the entry shares its home cell, and
 * deletion shifts the following entries back until one sits at its home.
 */
static inline uint32_t kvb_map_find_from(const kvb_pool *p, kvb_hash h, uint32_t i)
{
    for (uint32_t d = 0;; d++) {
        uint32_t cell = p->map[i];
        if (cell == KVB_NONE)
            return KVB_NONE;
        uint32_t cd = kvb_map_disp(p, i, cell);
        if (cd < d)
            return KVB_NONE;
        if (cd == d) {
            uint32_t id = kvb_map_id(p, cell);
            const kvb_hash *s = &p->slots[id].hash;
            if (s->lo == h.lo && s->hi == h.hi)
                return id;
        }
        i = kvb__cell_next(i, p->map_cap);
    }
}

static inline uint32_t kvb_map_find(const kvb_pool *p, kvb_hash h)
{
    return kvb_map_find_from(p, h, kvb_map_home(p, h));
}

/*
 * Batch lookups on large pools: compute the home cells of up to KVB_PREFETCH
 * hashes, prefetch those cells, then read them and prefetch the slots they name,
 * so the two dependent cache misses of each lookup (index cell, then slot hash)
 * overlap across the batch instead of being taken one after another. Pools that
 * fit in cache (!p->prefetch) do not call it: their lookups compute the home.
 */
#define KVB_PREFETCH 32
static void kvb_lookup_prepare(const kvb_pool *p, const kvb_hash *h, uint32_t m, uint32_t *home)
{
    for (uint32_t i = 0; i < m; i++) {
        home[i] = kvb_map_home(p, h[i]);
        __builtin_prefetch(&p->map[home[i]]);
    }
    for (uint32_t i = 0; i < m; i++) {
        uint32_t cell = p->map[home[i]];
        if (cell != KVB_NONE)
            __builtin_prefetch(&p->slots[kvb_map_id(p, cell)]);
    }
}

static inline __attribute__((always_inline)) void kvb_map_insert(kvb_pool *p, uint32_t id)
{
    uint32_t i = kvb_map_home(p, p->slots[id].hash);
    for (uint32_t d = 0;; d++) {
        uint32_t cell = p->map[i];
        if (cell == KVB_NONE) {
            p->map[i] = kvb_map_cell(p, id, d);
            return;
        }
        uint32_t cd = kvb_map_disp(p, i, cell);
        if (cd < d) { /* take the richer entry's cell and carry it on */
            p->map[i] = kvb_map_cell(p, id, d);
            id = kvb_map_id(p, cell);
            d = cd;
        }
        i = kvb__cell_next(i, p->map_cap);
    }
}

static void kvb_map_erase(kvb_pool *p, uint32_t id)
{
    uint32_t i = kvb_map_home(p, p->slots[id].hash);
    while (kvb_map_id(p, p->map[i]) != id) {
        kvb_assert(p->map[i] != KVB_NONE);
        if (p->map[i] == KVB_NONE)
            return;
        i = kvb__cell_next(i, p->map_cap);
    }
    for (;;) {
        uint32_t j = kvb__cell_next(i, p->map_cap);
        uint32_t cell = p->map[j];
        uint32_t d;
        if (cell == KVB_NONE || (d = kvb_map_disp(p, j, cell)) == 0)
            break;
        p->map[i] = kvb_map_cell(p, kvb_map_id(p, cell), d - 1);
        i = j;
    }
    p->map[i] = KVB_NONE;
}

/* ------------------------------------------------------------------------ */
/* free list (FIFO through slot.aux)                                        */
/* ------------------------------------------------------------------------ */

static void kvb_free_push_tail(kvb_pool *p, uint32_t id)
{
    p->slots[id].aux = KVB_NONE;
    if (p->free_tail == KVB_NONE)
        p->free_head = id;
    else
        p->slots[p->free_tail].aux = id;
    p->free_tail = id;
}

static void kvb_free_push_head(kvb_pool *p, uint32_t id)
{
    p->slots[id].aux = p->free_head;
    p->free_head = id;
    if (p->free_tail == KVB_NONE)
        p->free_tail = id;
}

static uint32_t kvb_free_pop(kvb_pool *p)
{
    uint32_t id = p->free_head;
    kvb_assert(id != KVB_NONE);
    p->free_head = p->slots[id].aux;
    if (p->free_head == KVB_NONE)
        p->free_tail = KVB_NONE;
    return id;
}

/* ------------------------------------------------------------------------ */
/* where a cached block waits: the backend, or the hint heap                */
/* ------------------------------------------------------------------------ */

/* Block id just became INACTIVE: into its priority level's list when its priority
 * is not the default, else into the eviction backend. (Hints do not look at
 * releases: the pool sets a hinted block apart only when it comes up as a victim,
 * see kvb_pool_allocate.) Without priorities this is the backend insert plus one
 * test of a flag in the slot it already has in hand. */
static inline void kvb_place_locked(kvb_pool *p, uint32_t id)
{
    struct kvb_slot *s = &p->slots[id];
    if (kvb_unlikely(s->flags & KVB_F_PRIO)) {
        kvb__prio_push(p->prio, id);
        s->flags |= KVB_F_LISTED;
        return;
    }
    int rc = p->ops->insert(p->backend, s->hash, id, s->aux);
    kvb_assert(rc == 0);
    (void)rc;
}

/* Block id (INACTIVE) leaves the cache's order (a hit): out of the hint heap or its
 * priority list when it is there, else out of the backend. */
static inline void kvb_unplace_locked(kvb_pool *p, uint32_t id)
{
    struct kvb_slot *s = &p->slots[id];
    if (kvb_unlikely(s->flags & (KVB_F_HINTED | KVB_F_LISTED))) {
        if (s->flags & KVB_F_HINTED)
            (void)kvb__hints_remove(p->hints, id);
        else
            kvb__prio_unlink(p->prio, id);
        s->flags &= (uint8_t) ~(KVB_F_HINTED | KVB_F_LISTED);
        return;
    }
    bool was = p->ops->remove(p->backend, s->hash, id);
    kvb_assert(was);
    (void)was;
}

/* ------------------------------------------------------------------------ */
/* the transition function                                                  */
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
        kvb_map_erase(p, id);
        if (kvb_unlikely(s->flags & KVB_F_PRIO)) { /* the content leaves: so does its priority */
            p->prio->level[id] = KVB_PRIORITY_DEFAULT;
            kvb__prio_timer_clear(p->prio, id);
            s->flags &= (uint8_t)~KVB_F_PRIO;
        }
    }
    if (from == KVB_S_INACTIVE && to == KVB_S_PRIMARY)
        kvb_unplace_locked(p, id);
    if (from == KVB_S_STAGED && to == KVB_S_PRIMARY)
        kvb_map_insert(p, id);

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
        kvb_free_push_tail(p, id);
    } else if (to == KVB_S_INACTIVE) {
        kvb_place_locked(p, id);
    }
    if ((from == KVB_S_RESET || from == KVB_S_INACTIVE) && to != KVB_S_RESET) {
        /* a block became held: the only way the high watermark can rise */
        uint32_t held = p->block_count - p->count[KVB_S_RESET] - p->count[KVB_S_INACTIVE];
        if (held > p->peak_in_use)
            p->peak_in_use = held;
    }
    return gen;
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
                kvb_cbq_push(q, KVB_CB_RESET, id, s->hash);
                kvb_present(q, p, s->hash, false);
                kvb_event_rec(q, p, KVB_CB_REMOVED, id, s->hash);
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
        kvb_cbq_push(q, KVB_CB_RESET, id, s->hash);
        kvb_present(q, p, s->hash, false);
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
    uint32_t id = kvb_map_find_from(p, h, home);
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
            kvb_cbq_push(q, KVB_CB_RESET, id, h);
            kvb_present(q, p, h, false);
            kvb_event_rec(q, p, KVB_CB_REMOVED, id, h);
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
/* create / destroy                                                         */
/* ------------------------------------------------------------------------ */

static _Atomic uint64_t kvb_next_pool_id = 1; /* relaxed: uniqueness only, orders nothing */

void kvb_pool_config_init(kvb_pool_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->block_size = 16;
    cfg->dup_policy = KVB_DUP_ALLOW;
    cfg->evict = KVB_EVICT_LRU;
    cfg->multi_lru_thresholds[0] = 3;
    cfg->multi_lru_thresholds[1] = 8;
    cfg->multi_lru_thresholds[2] = 15;
    cfg->name = "pool";
}

static int kvb_config_validate(const kvb_pool_config *cfg, uint32_t *bs, uint8_t th[3])
{
    if (cfg->block_count == 0 || cfg->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    *bs = cfg->block_size ? cfg->block_size : 16;
    if (*bs > 1024 || (*bs & (*bs - 1)))
        return -EINVAL;
    if ((unsigned)cfg->dup_policy > KVB_DUP_REJECT || (unsigned)cfg->evict > KVB_EVICT_ADAPTIVE)
        return -EINVAL;
    const uint8_t *t = cfg->multi_lru_thresholds;
    if (t[0] == 0 && t[1] == 0 && t[2] == 0) {
        th[0] = 3, th[1] = 8, th[2] = 15;
    } else {
        if (t[0] < 1 || t[0] >= t[1] || t[1] >= t[2] || t[2] > 15)
            return -EINVAL;
        memcpy(th, t, 3);
    }
    if (cfg->evict_ops && kvb__inactive_ops_validate(cfg->evict_ops) != 0)
        return -EINVAL;
    if (cfg->hint_capacity > (1u << 30))
        return -EINVAL;
    if ((cfg->allocator.alloc == NULL) != (cfg->allocator.free == NULL))
        return -EINVAL;
    return 0;
}

static void kvb_pool_free_mem(kvb_pool *p)
{
    kvb_allocator a = p->alloc;
    if (p->backend)
        p->ops->destroy(p->backend);
    if (p->own_sketch)
        kvb__sketch_destroy(p->sketch);
    if (p->events)
        kvb__events_destroy(p->events);
    kvb__hints_destroy(p->hints, &a);
    kvb__prio_destroy(p->prio, &a);
    kvb__free(&a, p->map, (size_t)p->map_cap * sizeof *p->map);
    kvb__free(&a, p->slots, (size_t)p->block_count * sizeof *p->slots);
    kvb__free(&a, p, sizeof *p);
}

int kvb_pool_create(const kvb_pool_config *cfg, kvb_pool **out)
{
    if (!cfg || !out)
        return -EINVAL;
    uint32_t bs;
    uint8_t th[3];
    int rc = kvb_config_validate(cfg, &bs, th);
    if (rc)
        return rc;
    const kvb_inactive_ops *ops =
        cfg->evict_ops ? cfg->evict_ops : kvb_inactive_builtin(cfg->evict);
    if (!ops)
        return -ENOTSUP;

    kvb_allocator a = cfg->allocator;
    kvb__allocator_fill(&a);
    kvb_pool *p = kvb__calloc(&a, 1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->alloc = a;
    p->block_count = cfg->block_count;
    p->block_size = bs;
    p->ops = ops;

    uint32_t cap = cfg->block_count + cfg->block_count / 4 * 3 + 8; /* load <= 0.57 */
    p->map_cap = cap;
    /* beyond ~2 MiB of slots, lookups miss the cache: prefetch batch lookups */
    p->prefetch = cfg->block_count >= 65536;
    p->map_id_bits = 32 - (uint32_t)__builtin_clz(cfg->block_count); /* 2^bits > count */
    p->map_id_mask = (1u << p->map_id_bits) - 1;
    p->map_disp_max = (uint32_t)((1ull << (32 - p->map_id_bits)) - 1);
#ifdef KVB_TESTING
    if (kvb_test_disp_max && kvb_test_disp_max < p->map_disp_max)
        p->map_disp_max = kvb_test_disp_max; /* exercise the saturated-displacement path */
#endif
    p->slots = kvb__calloc(&a, cfg->block_count, sizeof *p->slots);
    p->map = kvb__alloc(&a, (size_t)cap * sizeof *p->map);
    if (!p->slots || !p->map) {
        kvb_pool_free_mem(p);
        return -ENOMEM;
    }
    memset(p->map, 0xff, (size_t)cap * sizeof *p->map);

    if (cfg->registry) {
        p->sketch = kvb__registry_sketch(cfg->registry);
    } else if (ops->flags & KVB_INACTIVE_F_FREQUENCY) {
        /* frequency-aware policies without a registry get a private sketch */
        rc = kvb__sketch_create(cfg->block_count, false, &a, &p->sketch);
        if (rc) {
            kvb_pool_free_mem(p);
            return rc;
        }
        p->own_sketch = true;
    }
    kvb_inactive_params ip = {.block_count = cfg->block_count, .allocator = a};
    memcpy(ip.thresholds, th, 3);
    if (p->sketch) {
        ip.frequency = kvb__sketch_frequency_cb;
        ip.frequency_ctx = p->sketch;
    }
    rc = ops->create(&ip, &p->backend);
    if (rc) {
        p->backend = NULL;
        kvb_pool_free_mem(p);
        return rc < 0 ? rc : -ENOMEM;
    }
    if (cfg->priorities) {
        rc = kvb__prio_create(cfg->block_count, &a, &p->prio);
        if (rc) {
            p->prio = NULL;
            kvb_pool_free_mem(p);
            return rc;
        }
    }
    if (cfg->hint_capacity) {
        rc = kvb__hints_create(cfg->hint_capacity, cfg->block_count, &a, &p->hints);
        if (rc) {
            p->hints = NULL;
            kvb_pool_free_mem(p);
            return rc;
        }
    }
    if (cfg->events) {
        rc = kvb__events_create(cfg->events, &a, &p->events);
        if (rc) {
            kvb_pool_free_mem(p);
            return rc;
        }
    }
    if (cfg->registry) {
        rc = kvb__registry_attach(cfg->registry, p, &p->reg_index);
        if (rc) {
            kvb_pool_free_mem(p);
            return rc;
        }
    }
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        if (cfg->registry)
            kvb__registry_detach(cfg->registry, p->reg_index);
        kvb_pool_free_mem(p);
        return -ENOMEM;
    }

    p->free_head = p->free_tail = KVB_NONE;
    KVB_ATOMIC_VAR(&p->misuse, sizeof p->misuse);
    KVB_ATOMIC_VAR(&p->rc_high, sizeof p->rc_high);
    atomic_init(&p->rc_high, false);
    for (uint32_t i = 0; i < cfg->block_count; i++) {
        KVB_ATOMIC_VAR(&p->slots[i].word, sizeof p->slots[i].word);
        atomic_init(&p->slots[i].word, kvb__word(1, 0));
        kvb_free_push_tail(p, i);
    }
    p->count[KVB_S_RESET] = cfg->block_count;
    atomic_init(&p->misuse, 0);
    p->dup_policy = cfg->dup_policy;
    p->reset_default = cfg->reset_on_release;
    const char *env = getenv("KVBLOCK_ABORT_ON_MISUSE");
    p->abort_on_misuse = cfg->abort_on_misuse || (env && env[0] == '1');
    p->cb = cfg->callbacks;
    p->ext = p->hints || p->prio;
    p->clock = cfg->clock;
    if (!p->clock.now_ms) {
        p->clock.now_ms = kvb_monotonic_ms;
        p->clock.ctx = NULL;
    }
    p->registry = cfg->registry;
    snprintf(p->name, sizeof p->name, "%s", cfg->name ? cfg->name : "pool");
    p->id = atomic_fetch_add_explicit(&kvb_next_pool_id, 1, memory_order_relaxed);
    *out = p;
    return 0;
}

int kvb_pool_destroy(kvb_pool *p)
{
    if (!p)
        return -EINVAL;
    kvb__pool_lock(p);
    uint32_t held = p->count[KVB_S_MUTABLE] + p->count[KVB_S_STAGED] + p->count[KVB_S_PRIMARY] +
                    p->count[KVB_S_DUPLICATE];
    kvb__pool_unlock(p);
    if (held)
        return -EBUSY;
    if (p->events) {
        /* the cached content disappears with the pool: tell the consumers */
        struct kvb_cbq q;
        kvb_cbq_init(&q, p);
        kvb__pool_lock(p);
        if (p->count[KVB_S_INACTIVE])
            kvb_event_rec(&q, p, KVB_CB_CLEARED, KVB_NONE, (kvb_hash){0, 0});
        kvb__pool_unlock(p);
        kvb__events_deliver(p, q.ev, q.n);
        kvb__events_flush(p);
    }
    for (uint32_t i = 0; i < p->block_count; i++) {
        KVB_HB_FORGET(&p->slots[i].word);
        KVB_ATOMIC_VAR_END(&p->slots[i].word, sizeof p->slots[i].word);
    }
    KVB_ATOMIC_VAR_END(&p->misuse, sizeof p->misuse);
    KVB_ATOMIC_VAR_END(&p->rc_high, sizeof p->rc_high);
    if (p->registry)
        kvb__registry_detach(p->registry, p->reg_index);
    pthread_mutex_destroy(&p->mu);
    kvb_pool_free_mem(p);
    return 0;
}

uint64_t kvb_pool_id(const kvb_pool *p)
{
    return p ? p->id : 0;
}
uint32_t kvb_pool_block_count(const kvb_pool *p)
{
    return p ? p->block_count : 0;
}
uint32_t kvb_pool_block_size(const kvb_pool *p)
{
    return p ? p->block_size : 0;
}
const char *kvb_pool_name(const kvb_pool *p)
{
    return p ? p->name : "";
}
const char *kvb_pool_policy_name(const kvb_pool *p)
{
    return p ? p->ops->name : "";
}

uint32_t kvb_pool_available(kvb_pool *p)
{
    if (!p)
        return 0;
    kvb__pool_lock(p);
    uint32_t n = p->count[KVB_S_RESET] + p->count[KVB_S_INACTIVE];
    kvb__pool_unlock(p);
    return n;
}

/* ------------------------------------------------------------------------ */
/* allocation                                                               */
/* ------------------------------------------------------------------------ */

/* Where the victims of one allocation came from, in eviction order: out[take +
 * [0, low)) from the priority lists below the default, [low, backend) from the
 * backend, [backend, high) from the lists above the default, [high, all) from the
 * hint heap. */
struct kvb_victims {
    uint32_t low, backend, high, all;
    bool diverted_b; /* the backend proposed a hinted victim, set apart in the hint heap */
};

/* Roll back a failed allocation (only a backend that breaks its contract gets
 * here): list blocks go back to the heads of their lists, backend victims back to
 * the backend (exactly, through unevict when the backend has it and none of its
 * victims was set apart during the call: the entries of one evict call are then
 * not all in out[] and unevict could not take them back as one; re-inserting them
 * is the fallback), heap blocks back into the heap, and popped free slots back to
 * the free-list head in reverse order, so the free list is as it was. Blocks set
 * apart by hints on the way stay set apart (still cached, still hinted). */
static void kvb_alloc_rollback_locked(kvb_pool *p, kvb_mutable *out, uint32_t taken,
                                      const struct kvb_victims *v)
{
    for (uint32_t j = v->all; j-- > v->high;) {
        uint32_t id = out[taken + j].id;
        kvb__hints_push(p->hints, id, kvb__hints_find(p->hints, p->slots[id].hash));
        p->slots[id].flags |= KVB_F_HINTED;
        p->c.hint_evictions--;
    }
    for (uint32_t j = v->high; j-- > v->backend;) {
        kvb__prio_push_front(p->prio, out[taken + j].id);
        p->slots[out[taken + j].id].flags |= KVB_F_LISTED;
    }
    /* Chunks of 64 (the stack buffers), last chunk first: each unevict puts its
     * entries back at the eviction end, so the earliest evicted must go back last. */
    const uint32_t chunk = 64, base = taken + v->low;
    for (uint32_t end = v->backend - v->low; end > 0;) {
        uint32_t start = (end - 1) / chunk * chunk, k = end - start; /* as evict returned them */
        uint32_t ids[64], arr[64];
        kvb_hash hs[64];
        for (uint32_t j = 0; j < k; j++) {
            ids[j] = out[base + start + j].id;
            hs[j] = p->slots[ids[j]].hash;
            arr[j] = p->slots[ids[j]].aux;
        }
        if (p->ops->unevict && !v->diverted_b) {
            p->ops->unevict(p->backend, ids, hs, arr, k);
        } else {
            for (uint32_t j = k; j-- > 0;)
                (void)p->ops->insert(p->backend, hs[j], ids[j], arr[j]);
        }
        end = start;
    }
    for (uint32_t j = v->low; j-- > 0;) {
        kvb__prio_push_front(p->prio, out[taken + j].id);
        p->slots[out[taken + j].id].flags |= KVB_F_LISTED;
    }
    for (uint32_t j = taken; j-- > 0;)
        kvb_free_push_head(p, out[j].id);
    p->c.allocate_rollbacks++;
}

/* A candidate victim whose hash has outstanding hints is set apart in the hint heap
 * instead of being evicted (the pool filters victims: no backend knows of hints).
 * Returns whether it was. */
static inline bool kvb_set_apart_locked(kvb_pool *p, uint32_t id)
{
    struct kvb_slot *s = &p->slots[id];
    uint32_t e = kvb__hints_find(p->hints, s->hash);
    if (e == KVB_HINT_NONE)
        return false;
    kvb__hints_push(p->hints, id, e);
    s->flags |= KVB_F_HINTED;
    return true;
}

/* Victims from the priority lists of levels lo..hi, lowest level first, least
 * recently released first; appended to out[*got..need). */
static void kvb_evict_lists_locked(kvb_pool *p, uint32_t lo, uint32_t hi, kvb_mutable *out,
                                   uint32_t *got, uint32_t need, bool filter)
{
    while (*got < need) {
        int l = kvb__prio_lowest(p->prio, lo, hi);
        if (l < 0)
            return;
        uint32_t id = kvb__prio_pop(p->prio, (uint32_t)l);
        struct kvb_slot *s = &p->slots[id];
        s->flags &= (uint8_t)~KVB_F_LISTED;
        if (filter && kvb_set_apart_locked(p, id))
            continue;
        s->flags |= KVB_F_MARK;
        __builtin_prefetch(&p->map[kvb_map_home(p, s->hash)]);
        out[(*got)++].id = id;
    }
}

/* Ensure pending durations are applied before a decision that reads priorities:
 * the clock, a user callback, is read before the lock is taken (and only when
 * durations are pending); kvb_expire_locked then applies what is due. */
static uint64_t kvb_clock_now(const kvb_pool *p)
{
    return p->clock.now_ms(p->clock.ctx);
}

static inline bool kvb_timers_pending(const kvb_pool *p)
{
    return p->prio && kvb__prio_timers(p->prio);
}

static void kvb_expire_locked(kvb_pool *p, uint64_t now)
{
    uint32_t id;
    while ((id = kvb__prio_timer_due(p->prio, now)) != KVB_PRIO_NONE) {
        struct kvb_slot *s = &p->slots[id];
        p->c.retention_expired++;
        bool listed = (s->flags & KVB_F_LISTED) != 0;
        if (listed)
            kvb__prio_unlink(p->prio, id);
        p->prio->level[id] = KVB_PRIORITY_DEFAULT;
        s->flags &= (uint8_t) ~(KVB_F_PRIO | KVB_F_LISTED);
        if (listed) /* cached at its old priority: now an ordinary block of the policy's */
            kvb_place_locked(p, id);
    }
}

/*
 * The allocation, in two instances: `ext` (constant at each call site, the branches
 * fold away) says whether the pool has hints or priorities. A pool with neither
 * runs exactly the code it ran before they existed: the backend alone, no filter.
 */
static inline __attribute__((always_inline)) int
kvb_allocate_impl(kvb_pool *p, uint32_t n, kvb_mutable *out, kvb_hash *evicted, uint32_t *n_evicted,
                  const bool ext)
{
    bool timed = ext && kvb_timers_pending(p);
    uint64_t now = timed ? kvb_clock_now(p) : 0;
    struct kvb_cbq q;
    int rc = kvb_batch_lock(p, &q, 3ull * n);
    if (rc)
        return rc;
    if (timed)
        kvb_expire_locked(p, now);
    uint32_t nfree = p->count[KVB_S_RESET];
    uint32_t blen = p->ops->len(p->backend);
    uint32_t hlen = ext && p->hints ? p->hints->heap_len : 0;
    uint32_t llen = ext && p->prio ? p->prio->listed : 0;
    if ((ext ? (uint64_t)nfree + blen + hlen + llen < n : nfree + blen < n) ||
        nfree + p->count[KVB_S_INACTIVE] < n) {
        kvb__pool_unlock(p);
        kvb_cbq_fini(&q, p);
        return -ENOSPC;
    }
    uint32_t take = n < nfree ? n : nfree;
    for (uint32_t i = 0; i < take; i++)
        out[i].id = kvb_free_pop(p);

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
                __builtin_prefetch(&p->map[kvb_map_home(p, p->slots[id].hash)]);
                vout[got++].id = id;
            }
            if (k < want)
                bad = true;
        }
        goto evicted;
    }
    v.diverted_b = false;
    if (llen)
        kvb_evict_lists_locked(p, KVB_PRIORITY_MIN, KVB_PRIORITY_DEFAULT - 1, vout, &got, need,
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
            if (ext && filter && kvb_set_apart_locked(p, id)) {
                v.diverted_b = true;
                continue;
            }
            s->flags |= KVB_F_MARK;
            /* the eviction below erases its index cell: a cold line, start loading it */
            __builtin_prefetch(&p->map[kvb_map_home(p, s->hash)]);
            vout[got++].id = id;
        }
        if (k < want)
            bad = true;
    }
    v.backend = got;
    if (llen && !bad)
        kvb_evict_lists_locked(p, KVB_PRIORITY_DEFAULT + 1, KVB_PRIORITY_MAX, vout, &got, need,
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
        kvb_alloc_rollback_locked(p, out, take, &v);
        kvb__pool_unlock(p);
        kvb_cbq_fini(&q, p);
        return -ENOSPC;
    }

    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = out[i].id;
        struct kvb_slot *s = &p->slots[id];
        if (i >= take) {
            kvb_hash h = s->hash;
            if (evicted)
                evicted[i - take] = h;
            kvb_cbq_push(&q, KVB_CB_EVICT, id, h);
            kvb_present(&q, p, h, false);
            kvb_event_rec(&q, p, KVB_CB_REMOVED, id, h);
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
    kvb_unlock_fire(p, &q);
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

static bool kvb_hash_valid(kvb_hash h)
{
    return (h.hi >> 62) != 3;
}

int kvb_mutable_stage(kvb_mutable *m, kvb_hash hash, kvb_complete *out)
{
    if (!m || !out || !kvb_hash_valid(hash))
        return -EINVAL;
    kvb_pool *p = m->pool;
    if (!p)
        return -ESTALE;
    kvb__pool_lock(p);
    if (!kvb_handle_ok_locked(p, m->id, m->gen, KVB_S_MUTABLE)) {
        kvb__pool_unlock(p);
        return kvb_misuse(p, "kvb_mutable_stage");
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
        if (!kvb_hash_valid(hashes[i]))
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
        return kvb_misuse(p, "kvb_pool_stage");
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
    kvb_cbq_init(&q, p);
    kvb__pool_lock(p);
    if (!kvb_handle_ok_locked(p, id, gen, st)) {
        kvb__pool_unlock(p);
        return kvb_misuse(p, what);
    }
    if (st == KVB_S_MUTABLE)
        kvb_transition_locked(p, id, KVB_S_MUTABLE, KVB_S_RESET, 0);
    else
        kvb_transition_locked(p, id, KVB_S_STAGED, KVB_S_RESET, 0);
    kvb_cbq_push(&q, KVB_CB_RESET, id, p->slots[id].hash);
    kvb_unlock_fire(p, &q);
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
        return kvb_misuse(p, "kvb_complete_reset");
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

/* ------------------------------------------------------------------------ */
/* retention priorities                                                     */
/* ------------------------------------------------------------------------ */

/* Give content id (PRIMARY or INACTIVE) a priority, with a duration (0: none) from
 * `now`. A cached block changes place when its priority changes (the backend, a
 * level list); a block set apart by hints stays there. Lock held. */
static void kvb_set_priority_locked(kvb_pool *p, uint32_t id, uint32_t priority,
                                    uint32_t duration_ms, uint64_t now)
{
    struct kvb_slot *s = &p->slots[id];
    struct kvb_prio *pr = p->prio;
    kvb_assert(s->state == KVB_S_PRIMARY || s->state == KVB_S_INACTIVE);
    bool moves =
        s->state == KVB_S_INACTIVE && !(s->flags & KVB_F_HINTED) && pr->level[id] != priority;
    if (moves)
        kvb_unplace_locked(p, id);
    pr->level[id] = (uint8_t)priority;
    if (priority != KVB_PRIORITY_DEFAULT)
        s->flags |= KVB_F_PRIO;
    else
        s->flags &= (uint8_t)~KVB_F_PRIO;
    if (duration_ms && priority != KVB_PRIORITY_DEFAULT)
        kvb__prio_timer_set(pr, id, now + duration_ms);
    else
        kvb__prio_timer_clear(pr, id);
    if (moves)
        kvb_place_locked(p, id);
}

/* The clock when a call needs it: durations pending (to apply them) or being set. */
static uint64_t kvb_clock_if(const kvb_pool *p, bool setting, bool *timed)
{
    *timed = kvb_timers_pending(p);
    return *timed || setting ? kvb_clock_now(p) : 0;
}

int kvb_block_set_priority(const kvb_block *b, uint32_t priority, uint32_t duration_ms)
{
    if (!b || priority > KVB_PRIORITY_MAX)
        return -EINVAL;
    kvb_pool *p = b->pool;
    if (!p)
        return -ESTALE;
    if (!p->prio)
        return -ENOTSUP;
    if (b->id >= p->block_count)
        return kvb_misuse(p, "kvb_block_set_priority");
    bool timed;
    uint64_t now = kvb_clock_if(p, duration_ms != 0, &timed);
    kvb__pool_lock(p);
    if (timed)
        kvb_expire_locked(p, now);
    struct kvb_slot *s = &p->slots[b->id];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    if (kvb__word_gen(w) != b->gen || kvb__word_rc(w) == 0) {
        kvb__pool_unlock(p);
        return kvb_misuse(p, "kvb_block_set_priority");
    }
    uint32_t id = s->state == KVB_S_DUPLICATE ? s->aux : b->id; /* the content's block */
    kvb_set_priority_locked(p, id, priority, duration_ms, now);
    kvb__pool_unlock(p);
    return 0;
}

int kvb_block_priority(const kvb_block *b)
{
    if (!b)
        return -EINVAL;
    kvb_pool *p = b->pool;
    if (!p)
        return -ESTALE;
    if (b->id >= p->block_count)
        return kvb_misuse(p, "kvb_block_priority");
    bool timed;
    uint64_t now = kvb_clock_if(p, false, &timed);
    kvb__pool_lock(p);
    if (timed)
        kvb_expire_locked(p, now);
    struct kvb_slot *s = &p->slots[b->id];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    if (kvb__word_gen(w) != b->gen || kvb__word_rc(w) == 0) {
        kvb__pool_unlock(p);
        return kvb_misuse(p, "kvb_block_priority");
    }
    uint32_t id = s->state == KVB_S_DUPLICATE ? s->aux : b->id;
    int prio = p->prio ? p->prio->level[id] : (int)KVB_PRIORITY_DEFAULT;
    kvb__pool_unlock(p);
    return prio;
}

int kvb_pool_set_priority(kvb_pool *p, const kvb_hash *hashes, uint32_t n, uint32_t priority,
                          uint32_t duration_ms)
{
    if (!p || (n && !hashes) || priority > KVB_PRIORITY_MAX)
        return -EINVAL;
    if (!p->prio)
        return -ENOTSUP;
    if (n == 0)
        return 0;
    bool timed;
    uint64_t now = kvb_clock_if(p, duration_ms != 0, &timed);
    kvb__pool_lock(p);
    if (timed)
        kvb_expire_locked(p, now);
    uint32_t found = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = kvb_map_find(p, hashes[i]);
        if (id == KVB_NONE)
            continue;
        kvb_set_priority_locked(p, id, priority, duration_ms, now);
        found++;
    }
    kvb__pool_unlock(p);
    return (int)found;
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
    uint64_t now = ret ? kvb_clock_if(p, true, &timed) : 0;
    struct kvb_cbq q;
    int rc = kvb_batch_lock(p, &q, 4ull * n);
    if (rc)
        return rc;
    if (timed)
        kvb_expire_locked(p, now);
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
        __builtin_prefetch(&p->map[kvb_map_home(p, p->slots[in[i].id].hash)]);
    }
    /* A primary that could not take n more references would make registration
     * fail half-way: refuse the batch up front instead. Only looked at once some
     * count in the pool ever passed half the range (never, in practice). */
    bool full = false;
    for (uint32_t i = 0;
         i < n && bad == n && !full && atomic_load_explicit(&p->rc_high, memory_order_relaxed);
         i++) {
        uint32_t pid = kvb_map_find(p, p->slots[in[i].id].hash);
        if (pid != KVB_NONE && p->slots[pid].state == KVB_S_PRIMARY &&
            kvb__word_rc(atomic_load_explicit(&p->slots[pid].word, memory_order_relaxed)) >
                KVB_RC_MAX - n)
            full = true;
    }
    for (uint32_t i = 0; i < (bad < n ? bad : n); i++)
        p->slots[in[i].id].flags &= (uint8_t)~KVB_F_MARK;
    if (bad < n) {
        kvb__pool_unlock(p);
        kvb_cbq_fini(&q, p);
        return kvb_misuse(p, "kvb_pool_register");
    }
    if (full) {
        kvb__pool_unlock(p);
        kvb_cbq_fini(&q, p);
        return -EOVERFLOW;
    }

    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = in[i].id;
        struct kvb_slot *s = &p->slots[id];
        kvb_hash h = s->hash;
        uint32_t pgen = 0;
        uint32_t pid = kvb_acquire_locked(p, h, kvb_map_home(p, h), &q, &pgen);
        p->c.registrations++;
        if (p->sketch)
            kvb__sketch_touch(p->sketch, h);
        if (pid != KVB_NONE &&
            (p->dup_policy == KVB_DUP_REJECT || p->slots[pid].dups == KVB_DUPS_MAX)) {
            kvb_transition_locked(p, id, KVB_S_STAGED, KVB_S_RESET, 0);
            kvb_cbq_push(&q, KVB_CB_RESET, id, h);
            kvb_fill_block(&out[i], p, pid, pgen);
            p->c.dedups++;
        } else if (pid == KVB_NONE) {
            s->aux = ++p->arrival_seq;
            s->flags = p->reset_default ? KVB_F_RESET_ON_RELEASE : 0;
            uint32_t gen = kvb_transition_locked(p, id, KVB_S_STAGED, KVB_S_PRIMARY, 1);
            kvb_fill_block(&out[i], p, id, gen);
            kvb_present(&q, p, h, true);
            kvb_event_rec(&q, p, KVB_CB_STORED, id, h);
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
            kvb_present(&q, p, h, true);
            p->c.duplicates++;
        }
        if (ret) { /* the content's block: the new primary, or the one it already had */
            uint32_t prio, dur;
            kvb__retention_get(ret, (uint64_t)kvb_hash_position(h) * p->block_size, &prio, &dur);
            kvb_set_priority_locked(p, pid != KVB_NONE ? pid : id, prio, dur, now);
        }
        memset(&in[i], 0, sizeof in[i]);
    }
    kvb_unlock_fire(p, &q);
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
            kvb_lookup_prepare(p, hashes + k, n - k < KVB_PREFETCH ? n - k : KVB_PREFETCH, home);
        uint32_t hm = p->prefetch ? home[j] : kvb_map_home(p, hashes[k]);
        uint32_t id = kvb_acquire_locked(p, hashes[k], hm, &q, &gen);
        if (id == KVB_NONE)
            break;
        kvb_fill_block(&out[k], p, id, gen);
        if (p->sketch)
            kvb__sketch_touch(p->sketch, hashes[k]);
    }
    p->c.match_requested += n;
    p->c.match_returned += k;
    kvb_unlock_fire(p, &q);
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
            kvb_lookup_prepare(p, hashes + i, n - i < KVB_PREFETCH ? n - i : KVB_PREFETCH, home);
        uint32_t hm = p->prefetch ? home[j] : kvb_map_home(p, hashes[i]);
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
    kvb_unlock_fire(p, &q);
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
/* lookahead hints                                                          */
/* ------------------------------------------------------------------------ */

/* Hashes of one hint call are handled in chunks: the home bits of the chunk are
 * computed and their table cells prefetched first, so the cells' cache misses
 * overlap instead of coming one after another. */
#define KVB_HINT_CHUNK 32

int kvb_pool_hint(kvb_pool *p, const kvb_hash *hashes, uint32_t n, int32_t delta)
{
    if (!p || (n && !hashes) || delta == 0)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (!kvb_hash_valid(hashes[i]))
            return -EINVAL;
    if (!p->hints)
        return -ENOTSUP;
    if (n == 0)
        return 0;
    struct kvb_hints *h = p->hints;
    uint32_t h32[KVB_HINT_CHUNK];
    kvb__pool_lock(p);
    if (delta > 0 && !kvb__hints_room(h, n)) {
        p->c.hint_rejected++;
        kvb__pool_unlock(p);
        return -ENOSPC;
    }
    uint64_t ticket = delta > 0 ? ++h->ticket : 0;
    uint32_t k = delta > 0 ? (uint32_t)delta : (uint32_t)(-(int64_t)delta);
    for (uint32_t base = 0; base < n; base += KVB_HINT_CHUNK) {
        uint32_t m = n - base < KVB_HINT_CHUNK ? n - base : KVB_HINT_CHUNK;
        for (uint32_t j = 0; j < m; j++) {
            h32[j] = kvb__hints_h32(hashes[base + j]);
            kvb__hints_prefetch(h, h32[j]);
        }
        for (uint32_t j = 0; j < m; j++) {
            kvb_hash hash = hashes[base + j];
            bool found;
            uint32_t cell = kvb__hints_probe(h, hash, h32[j], &found);
            if (delta > 0) {
                (void)kvb__hints_add(h, hash, h32[j], cell, found, k, ticket);
                continue;
            }
            if (!found) {
                p->c.hint_unmatched += k;
                continue;
            }
            uint32_t e = (uint32_t)h->tab[cell];
            uint32_t got = kvb__hints_withdraw(h, e, k);
            p->c.hint_withdrawn += got;
            p->c.hint_unmatched += k - got;
            if (h->ent[e].uses) {
                kvb__hints_rekey(h, e); /* its next need may have moved */
                continue;
            }
            uint32_t id = h->ent[e].block;
            if (id != KVB_HINT_NONE) {
                /* no use expected any more: back into the policy's order (or its
                 * priority's list) */
                (void)kvb__hints_remove(h, id);
                p->slots[id].flags &= (uint8_t)~KVB_F_HINTED;
                kvb_place_locked(p, id);
            }
            kvb__hints_free(h, e, cell);
        }
    }
    if (delta > 0)
        p->c.hint_added += (uint64_t)n * k;
    kvb__pool_unlock(p);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* block references                                                         */
/* ------------------------------------------------------------------------ */

/* Lock-free: add delta (+1) to the count of a live reference (gen, count > 0). */
static int kvb_ref_inc(kvb_pool *p, uint32_t id, uint32_t gen)
{
    if (id >= p->block_count)
        return -ESTALE;
    _Atomic uint64_t *wp = &p->slots[id].word;
    uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
    for (;;) {
        if (kvb__word_gen(w) != gen || kvb__word_rc(w) == 0)
            return -ESTALE;
        if (kvb_unlikely(kvb__word_rc(w) >= KVB_RC_HIGH)) {
            if (kvb__word_rc(w) >= KVB_RC_MAX)
                return -EOVERFLOW;
            atomic_store_explicit(&p->rc_high, true, memory_order_relaxed);
        }
        KVB_HB_BEFORE(wp);
        /* acq_rel: pairs with the release store of the transition that created
         * this life of the slot, and with other CAS on the word. */
        if (atomic_compare_exchange_weak_explicit(wp, &w, w + 1, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            KVB_HB_AFTER(wp);
            return 0;
        }
    }
}

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

int kvb_block_clone(const kvb_block *b, kvb_block *out)
{
    if (!b || !out)
        return -EINVAL;
    kvb_pool *p = b->pool;
    if (!p)
        return -ESTALE;
    int rc = kvb_ref_inc(p, b->id, b->gen);
    if (rc == -ESTALE)
        return kvb_misuse(p, "kvb_block_clone");
    if (rc)
        return rc;
    *out = *b;
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
        return kvb_misuse(p, "kvb_block_release");
    uint32_t id = b->id, gen = b->gen;
    memset(b, 0, sizeof *b);
    if (last) {
        KVB_TEST_LAST_RELEASE(p, id);
        struct kvb_cbq q;
        kvb_cbq_init(&q, p); /* at most 5 records: fits the local buffer */
        kvb__pool_lock(p);
        kvb_last_release_locked(p, id, gen, &q);
        kvb_unlock_fire(p, &q);
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
                result = kvb_misuse(b->pool, "kvb_block_release_n");
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
            if (locked != b->pool || kvb_cbq_full(&q, 5)) {
                if (locked)
                    kvb_unlock_fire(locked, &q);
                locked = b->pool;
                KVB_TEST_LAST_RELEASE(locked, b->id);
                kvb_cbq_init(&q, locked);
                kvb__pool_lock(locked);
            }
            kvb_last_release_locked(locked, b->id, b->gen, &q);
            memset(b, 0, sizeof *b);
            pending--;
        }
    }
    if (locked)
        kvb_unlock_fire(locked, &q);
    return result;
}

int kvb_block_set_reset_on_release(kvb_block *b, bool on)
{
    if (!b)
        return -EINVAL;
    kvb_pool *p = b->pool;
    if (!p)
        return -ESTALE;
    if (b->id >= p->block_count)
        return kvb_misuse(p, "kvb_block_set_reset_on_release");
    kvb__pool_lock(p);
    struct kvb_slot *s = &p->slots[b->id];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    if (kvb__word_gen(w) != b->gen || kvb__word_rc(w) == 0) {
        kvb__pool_unlock(p);
        return kvb_misuse(p, "kvb_block_set_reset_on_release");
    }
    if (on)
        s->flags |= KVB_F_RESET_ON_RELEASE;
    else
        s->flags &= (uint8_t)~KVB_F_RESET_ON_RELEASE;
    kvb__pool_unlock(p);
    return 0;
}

uint32_t kvb_block_use_count(const kvb_block *b)
{
    if (!b || !b->pool || b->id >= b->pool->block_count)
        return 0;
    kvb_pool *p = b->pool;
    const struct kvb_slot *s = &p->slots[b->id];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    KVB_HB_AFTER(&s->word);
    if (kvb__word_gen(w) != b->gen)
        return 0; /* another life of the slot */
    kvb__pool_lock(p);
    uint32_t n = 0;
    w = atomic_load_explicit(&s->word, memory_order_relaxed);
    if (kvb__word_gen(w) == b->gen) /* handles + duplicates holding a primary */
        n = kvb__word_rc(w) + (s->state == KVB_S_PRIMARY ? s->dups : 0);
    kvb__pool_unlock(p);
    return n;
}

int kvb_block_address(const kvb_block *b, kvb_block_addr *out)
{
    if (!b || !out)
        return -EINVAL;
    if (!b->pool)
        return -ESTALE;
    if (b->id >= b->pool->block_count)
        return kvb_misuse(b->pool, "kvb_block_address");
    uint64_t w = atomic_load_explicit(&b->pool->slots[b->id].word, memory_order_acquire);
    KVB_HB_AFTER(&b->pool->slots[b->id].word);
    if (kvb__word_gen(w) != b->gen || kvb__word_rc(w) == 0) /* not a live reference */
        return kvb_misuse(b->pool, "kvb_block_address");
    *out = (kvb_block_addr){.pool_id = b->pool->id, .block_id = b->id, .hash = b->hash};
    return 0;
}

void kvb_block_downgrade(const kvb_block *b, kvb_weak *out)
{
    if (!out)
        return;
    if (!b) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = (kvb_weak){.pool = b->pool, .id = b->id, .gen = b->gen, .hash = b->hash};
}

int kvb_weak_upgrade(const kvb_weak *w, kvb_block *out)
{
    if (!w || !out || !w->pool)
        return -EINVAL;
    kvb_pool *p = w->pool;
    /* fast path: the same life of the same block is still referenced */
    if (kvb_ref_inc(p, w->id, w->gen) == 0) {
        *out = (kvb_block){.pool = p, .id = w->id, .gen = w->gen, .hash = w->hash};
        return 0;
    }
    struct kvb_cbq q;
    kvb_cbq_init(&q, p);
    kvb__pool_lock(p);
    uint32_t gen;
    uint32_t id = kvb_acquire_locked(p, w->hash, kvb_map_home(p, w->hash), &q, &gen);
    if (id != KVB_NONE)
        kvb_fill_block(out, p, id, gen);
    kvb_unlock_fire(p, &q);
    return id == KVB_NONE ? -ENOENT : 0;
}

/* ------------------------------------------------------------------------ */
/* cache drain                                                              */
/* ------------------------------------------------------------------------ */

int kvb_pool_reset_inactive(kvb_pool *p)
{
    if (!p)
        return -EINVAL;
    for (;;) {
        kvb__pool_lock(p);
        uint32_t held = p->count[KVB_S_MUTABLE] + p->count[KVB_S_STAGED] + p->count[KVB_S_PRIMARY] +
                        p->count[KVB_S_DUPLICATE];
        uint32_t len = p->count[KVB_S_INACTIVE];
        kvb__pool_unlock(p);
        if (held)
            return -EBUSY;
        struct kvb_cbq q;
        kvb_cbq_init(&q, p);
        int rc = kvb_cbq_reserve(&q, p, 3ull * len + 1);
        if (rc)
            return rc;
        kvb__pool_lock(p);
        held = p->count[KVB_S_MUTABLE] + p->count[KVB_S_STAGED] + p->count[KVB_S_PRIMARY] +
               p->count[KVB_S_DUPLICATE];
        if (held) {
            kvb__pool_unlock(p);
            kvb_cbq_fini(&q, p);
            return -EBUSY;
        }
        if (q.active && p->count[KVB_S_INACTIVE] * 3ull + 1 > q.cap) {
            kvb__pool_unlock(p); /* the cache grew meanwhile: size again */
            kvb_cbq_fini(&q, p);
            continue;
        }
        uint32_t drained = 0;
        while (p->count[KVB_S_INACTIVE]) {
            /* in eviction order: below the default priority, the backend, above the
             * default, then the blocks kept apart by hints */
            uint32_t ids[64], k = 0;
            bool own = false; /* from the pool's lists or heap, not the backend */
            int l;
            while (k < 64 && p->prio &&
                   (l = kvb__prio_lowest(p->prio, 0, KVB_PRIORITY_DEFAULT - 1)) >= 0)
                ids[k++] = kvb__prio_pop(p->prio, (uint32_t)l);
            if (k == 0) {
                k = p->ops->evict(p->backend, 64, ids);
                if (k > 64)
                    k = 64;
            } else {
                own = true;
            }
            if (k == 0 && p->prio && p->prio->listed) {
                while (k < 64 && (l = kvb__prio_lowest(p->prio, KVB_PRIORITY_DEFAULT + 1,
                                                       KVB_PRIORITY_MAX)) >= 0)
                    ids[k++] = kvb__prio_pop(p->prio, (uint32_t)l);
                own = true;
            }
            if (k == 0 && p->hints) {
                while (k < 64 && p->hints->heap_len)
                    ids[k++] = kvb__hints_pop(p->hints);
                own = true;
            }
            if (k == 0)
                break; /* backend disagrees with the gauge: kvb_pool_check reports it */
            for (uint32_t j = 0; j < k; j++) {
                uint32_t id = ids[j];
                if (id >= p->block_count || p->slots[id].state != KVB_S_INACTIVE ||
                    (!own && (p->slots[id].flags & (KVB_F_HINTED | KVB_F_LISTED))))
                    continue;
                kvb_hash h = p->slots[id].hash;
                kvb_transition_locked(p, id, KVB_S_INACTIVE, KVB_S_RESET, 0);
                kvb_cbq_push(&q, KVB_CB_EVICT, id, h);
                kvb_cbq_push(&q, KVB_CB_RESET, id, h);
                kvb_present(&q, p, h, false);
                p->c.evictions++;
                drained++;
            }
        }
        if (drained)
            kvb_event_rec(&q, p, KVB_CB_CLEARED, KVB_NONE, (kvb_hash){0, 0});
        kvb_unlock_fire(p, &q);
        return (int)drained;
    }
}

/* ------------------------------------------------------------------------ */
/* statistics                                                               */
/* ------------------------------------------------------------------------ */

int kvb_pool_stats(kvb_pool *p, kvb_stats *out)
{
    if (!p || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    bool timed = kvb_timers_pending(p);
    uint64_t now = timed ? kvb_clock_now(p) : 0;
    kvb__pool_lock(p);
    if (timed) /* the gauges show priorities as they are now */
        kvb_expire_locked(p, now);
    out->block_count = p->block_count;
    out->reset = p->count[KVB_S_RESET];
    out->mutable_ = p->count[KVB_S_MUTABLE];
    out->staged = p->count[KVB_S_STAGED];
    out->primary = p->count[KVB_S_PRIMARY];
    out->duplicate = p->count[KVB_S_DUPLICATE];
    out->inactive = p->count[KVB_S_INACTIVE];
    out->peak_in_use = p->peak_in_use;
    const struct kvb_counters *c = &p->c;
    out->allocations = c->allocations;
    out->allocations_from_reset = c->allocations_from_reset;
    out->evictions = c->evictions;
    out->registrations = c->registrations;
    out->duplicates = c->duplicates;
    out->dedups = c->dedups;
    out->stagings = c->stagings;
    out->match_requested = c->match_requested;
    out->match_returned = c->match_returned;
    out->eager_transitions = c->eager_transitions;
    out->allocate_rollbacks = c->allocate_rollbacks;
    out->release_noops = c->release_noops;
    out->lock_acquisitions = c->lock_acquisitions;
    out->lock_contended = c->lock_contended;
    out->lock_wait_ns = c->lock_wait_ns;
    out->resurrections = c->resurrections;
    out->scan_requested = c->scan_requested;
    out->scan_returned = c->scan_returned;
    if (p->hints) {
        out->hint_uses = p->hints->uses;
        out->hint_hashes = p->hints->n_ent;
        out->hint_protected = p->hints->heap_len;
    }
    out->hint_added = c->hint_added;
    out->hint_withdrawn = c->hint_withdrawn;
    out->hint_unmatched = c->hint_unmatched;
    out->hint_rejected = c->hint_rejected;
    out->hint_evictions = c->hint_evictions;
    if (p->prio) {
        out->retained = p->prio->listed;
        out->retention_timers = p->prio->heap_len;
    }
    out->retention_expired = c->retention_expired;
    out->retained_evictions = c->retained_evictions;
    out->misuse = atomic_load_explicit(&p->misuse, memory_order_relaxed);
    kvb__pool_unlock(p);
    return 0;
}

int kvb_pool_memory(kvb_pool *p, kvb_memory_stats *out)
{
    if (!p || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->slots = (size_t)p->block_count * sizeof *p->slots;
    out->hash_index = (size_t)p->map_cap * sizeof *p->map;
    out->pool = sizeof *p;
    if (p->own_sketch)
        out->sketch = kvb__sketch_memory(p->sketch);
    if (p->hints)
        out->hints = kvb__hints_memory(p->hints);
    if (p->prio)
        out->priorities = kvb__prio_memory(p->prio);
    kvb__pool_lock(p);
    if (p->ops->memory)
        out->backend = p->ops->memory(p->backend);
    kvb__pool_unlock(p);
    out->total = out->slots + out->hash_index + out->backend + out->sketch + out->pool +
                 out->hints + out->priorities;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* invariant check                                                          */
/* ------------------------------------------------------------------------ */

#ifdef KVB_TESTING
#define KVB_CHECK_FAIL(...) (fprintf(stderr, "kvb_pool_check: " __VA_ARGS__), -EFAULT)
#else
#define KVB_CHECK_FAIL(...) (-EFAULT)
#endif

static int kvb_check_locked(kvb_pool *p, uint32_t *dups)
{
    uint32_t cnt[KVB_S_COUNT] = {0};
    for (uint32_t i = 0; i < p->block_count; i++) {
        const struct kvb_slot *s = &p->slots[i];
        if (s->state >= KVB_S_COUNT)
            return KVB_CHECK_FAIL("slot %u: bad state %u\n", i, s->state);
        cnt[s->state]++;
        uint32_t rc = kvb__word_rc(atomic_load_explicit(&s->word, memory_order_relaxed));
        if (rc && s->state != KVB_S_PRIMARY && s->state != KVB_S_DUPLICATE)
            return KVB_CHECK_FAIL("slot %u: state %u with refcount %u\n", i, s->state, rc);
        if (s->flags & KVB_F_MARK)
            return KVB_CHECK_FAIL("slot %u: stale mark\n", i);
        bool in_backend = p->ops->contains(p->backend, i);
        bool hinted = (s->flags & KVB_F_HINTED) != 0;
        bool listed = (s->flags & KVB_F_LISTED) != 0;
        if (s->state == KVB_S_INACTIVE && in_backend + hinted + listed != 1)
            return KVB_CHECK_FAIL("slot %u: INACTIVE, in the backend %d, hint heap %d, priority "
                                  "list %d (exactly one)\n",
                                  i, in_backend, hinted, listed);
        if (s->state != KVB_S_INACTIVE && (in_backend || hinted || listed))
            return KVB_CHECK_FAIL("slot %u: in the backend, hint heap or a list but state %u\n", i,
                                  s->state);
        bool content = s->state == KVB_S_PRIMARY || s->state == KVB_S_INACTIVE;
        bool prio = (s->flags & KVB_F_PRIO) != 0;
        if ((prio || listed) && !p->prio)
            return KVB_CHECK_FAIL("slot %u: priority flags without priorities\n", i);
        if (p->prio) {
            uint32_t lv = p->prio->level[i];
            if (prio != (lv != KVB_PRIORITY_DEFAULT) || (!content && prio))
                return KVB_CHECK_FAIL("slot %u: priority %u, flag %d, state %u\n", i, lv, prio,
                                      s->state);
            if (listed != kvb__prio_listed(p->prio, i) || (listed && !prio))
                return KVB_CHECK_FAIL("slot %u: priority list membership wrong\n", i);
            if (p->prio->tpos[i] != KVB_PRIO_NONE && !prio)
                return KVB_CHECK_FAIL("slot %u: a duration on a default priority\n", i);
        }
        if (hinted &&
            (!p->hints || !kvb__hints_in_heap(p->hints, i) ||
             !kvb_hash_equal(p->hints->ent[p->hints->heap[p->hints->hpos[i]].ent].hash, s->hash)))
            return KVB_CHECK_FAIL("slot %u: marked hinted but not in the hint heap\n", i);
        if (!hinted && p->hints && kvb__hints_in_heap(p->hints, i))
            return KVB_CHECK_FAIL("slot %u: in the hint heap but not marked\n", i);

        if (s->state == KVB_S_PRIMARY || s->state == KVB_S_INACTIVE) {
            if (kvb_map_find(p, s->hash) != i)
                return KVB_CHECK_FAIL("slot %u: not reachable in the hash index\n", i);
        }
        if (s->state == KVB_S_DUPLICATE) {
            uint32_t pid = s->aux;
            if (pid >= p->block_count || p->slots[pid].state != KVB_S_PRIMARY ||
                !kvb_hash_equal(p->slots[pid].hash, s->hash))
                return KVB_CHECK_FAIL("slot %u: duplicate without its primary\n", i);
            dups[pid]++;
        }
    }
    uint64_t sum = 0;
    for (int st = 0; st < KVB_S_COUNT; st++) {
        if (cnt[st] != p->count[st])
            return KVB_CHECK_FAIL("gauge of state %d is %u, counted %u\n", st, p->count[st],
                                  cnt[st]);
        sum += cnt[st];
    }
    if (sum != p->block_count)
        return KVB_CHECK_FAIL("states add up to %llu, not %u\n", (unsigned long long)sum,
                              p->block_count);
    uint32_t hlen = p->hints ? p->hints->heap_len : 0;
    uint32_t llen = p->prio ? p->prio->listed : 0;
    if (p->ops->len(p->backend) + hlen + llen != cnt[KVB_S_INACTIVE])
        return KVB_CHECK_FAIL("inactive index holds %u, the hint heap %u, the priority lists "
                              "%u; INACTIVE slots %u\n",
                              p->ops->len(p->backend), hlen, llen, cnt[KVB_S_INACTIVE]);
    if (p->prio) {
        const char *why = NULL;
        if (kvb__prio_check(p->prio, &why) != 0)
            return KVB_CHECK_FAIL("%s\n", why);
    }
    if (p->hints) {
        const char *why = NULL;
        if (kvb__hints_check(p->hints, &why) != 0)
            return KVB_CHECK_FAIL("%s\n", why);
    }
    uint32_t mapped = 0;
    for (uint32_t i = 0; i < p->map_cap; i++) {
        uint32_t cell = p->map[i];
        if (cell == KVB_NONE)
            continue;
        uint32_t id = kvb_map_id(p, cell);
        mapped++;
        if (id < p->block_count &&
            kvb_map_disp(p, i, cell) !=
                kvb__cell_dist(kvb_map_home(p, p->slots[id].hash), i, p->map_cap))
            return KVB_CHECK_FAIL("hash index cell %u: wrong displacement\n", i);
        if (id >= p->block_count ||
            (p->slots[id].state != KVB_S_PRIMARY && p->slots[id].state != KVB_S_INACTIVE))
            return KVB_CHECK_FAIL("hash index cell %u names block %u in a wrong state\n", i, id);
    }
    if (mapped != cnt[KVB_S_PRIMARY] + cnt[KVB_S_INACTIVE])
        return KVB_CHECK_FAIL("hash index holds %u, PRIMARY+INACTIVE = %u\n", mapped,
                              cnt[KVB_S_PRIMARY] + cnt[KVB_S_INACTIVE]);
    uint32_t nfree = 0, last = KVB_NONE;
    for (uint32_t id = p->free_head; id != KVB_NONE; id = p->slots[id].aux) {
        if (id >= p->block_count || p->slots[id].state != KVB_S_RESET || nfree > cnt[KVB_S_RESET])
            return KVB_CHECK_FAIL("free list broken at block %u\n", id);
        nfree++;
        last = id;
    }
    if (nfree != cnt[KVB_S_RESET] || last != p->free_tail)
        return KVB_CHECK_FAIL("free list holds %u, RESET slots %u\n", nfree, cnt[KVB_S_RESET]);
    for (uint32_t i = 0; i < p->block_count; i++) {
        if (p->slots[i].dups != dups[i])
            return KVB_CHECK_FAIL("block %u: %u duplicates recorded, %u found\n", i,
                                  (unsigned)p->slots[i].dups, dups[i]);
    }
    return 0;
}

int kvb_pool_check(kvb_pool *p)
{
    if (!p)
        return -EINVAL;
    uint32_t *dups = kvb__calloc(&p->alloc, p->block_count, sizeof *dups);
    if (!dups)
        return -ENOMEM;
    kvb__pool_lock(p);
    int rc = kvb_check_locked(p, dups);
    kvb__pool_unlock(p);
    kvb__free(&p->alloc, dups, (size_t)p->block_count * sizeof *dups);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* test hooks                                                               */
/* ------------------------------------------------------------------------ */

#ifdef KVB_TESTING
uint32_t kvb__test_slot_gen(kvb_pool *p, uint32_t id)
{
    return kvb__word_gen(atomic_load_explicit(&p->slots[id].word, memory_order_acquire));
}

int kvb__test_slot_state(kvb_pool *p, uint32_t id)
{
    kvb__pool_lock(p);
    int st = p->slots[id].state;
    kvb__pool_unlock(p);
    return st;
}

void kvb__test_set_refcount(kvb_pool *p, uint32_t id, uint32_t rc)
{
    kvb__pool_lock(p);
    _Atomic uint64_t *wp = &p->slots[id].word;
    uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
    atomic_store_explicit(wp, kvb__word(kvb__word_gen(w), rc), memory_order_release);
    if (rc >= KVB_RC_HIGH)
        atomic_store_explicit(&p->rc_high, true, memory_order_relaxed);
    kvb__pool_unlock(p);
}
#endif
