/*
 * pool.h - the private layout of a pool and what the pool's own files share.
 * Included only by the pool's files:
 *
 *   pool.c         allocate, stage, register, lookup and release paths
 *   pool_sm.h      the state machine: the transition function and the steps
 *                  the hot paths share (static inline: folded per call site)
 *   pool_acquire.c kvb_pool_acquire: match + allocate + stage + register in one
 *   pool_index.h   the hash index (static inline: the hot path stays inlined)
 *   pool_create.c  configuration, create/destroy, accessors
 *   pool_ref.c     block references that change no state (clone, address, ...)
 *   pool_prio.c    retention priorities glue (prio.h is the data structure)
 *   pool_hint.c    lookahead hints glue (hint.h is the data structure)
 *   pool_drain.c   kvb_pool_reset_inactive
 *   pool_check.c   kvb_pool_check and the KVB_TESTING hooks
 *   metrics.c      stats, memory and the Prometheus text
 *
 * Modules outside the pool (events.c, seq.c) use pool_internal.h instead.
 * The mutex is lock.h's, the deferred-callback queue defer.h's.
 *
 * Locking: every field marked (lock) is protected by pool->lock. Fields marked
 * (const) are written once in kvb_pool_create and read-only afterwards. The
 * only lock-free state is each slot's `word` (generation + reference count).
 */
#ifndef KVB_POOL_H
#define KVB_POOL_H

#include "internal.h"
#include "defer.h"
#include "hint.h"
#include "lock.h"
#include "prio.h"
#include "testing.h"
#include <stdatomic.h>
#include <stddef.h>

struct kvb_sketch;

enum kvb_state {
    KVB_S_RESET = 0,
    KVB_S_MUTABLE,
    KVB_S_STAGED,
    KVB_S_PRIMARY,
    KVB_S_DUPLICATE,
    KVB_S_INACTIVE,
    KVB_S_COUNT
};

#define KVB_NONE UINT32_MAX /* "no block id" in links and map cells */
/* Duplicates one primary can hold; registering one more copy under ALLOW then
 * behaves as REJECT (the caller gets the primary). Plain bytes rather than
 * bitfields keep the hot state reads and writes single instructions. */
#define KVB_DUPS_MAX UINT16_MAX

/* Most references one block can hold; beyond, clone is -EOVERFLOW and a lookup
 * treats the block as a miss. */
#define KVB_RC_MAX (UINT32_MAX - 1)
/* Past this count the pool starts checking registrations for saturation. */
#define KVB_RC_HIGH (1u << 31)

/* slot flags (lock) */
#define KVB_F_RESET_ON_RELEASE 0x01u /* PRIMARY/INACTIVE: go to RESET at last release */
#define KVB_F_MARK             0x02u /* transient, inside one locked call (batch validation) */
#define KVB_F_HINTED           0x04u /* INACTIVE: kept in the hint heap, not in the backend */
#define KVB_F_LISTED           0x08u /* INACTIVE: set apart in its level's list, not in the backend */
#define KVB_F_PRIO             0x10u /* PRIMARY/INACTIVE: priority other than the default */

/*
 * One slot per block id: 32 bytes, two per cache line.
 *
 * `word` packs the slot generation (high 32 bits) and the reference count
 * (low 32 bits). The generation changes on every state transition, so a handle
 * (which carries the generation it was issued under) names exactly one "life"
 * of the slot; a single CAS on the word both validates a handle and moves its
 * count, which is what makes clone and non-last release lock-free and immune
 * to ABA on slot reuse. The count is non-zero only in PRIMARY and DUPLICATE, and
 * counts handles only: the hold each live duplicate has on its primary is the
 * primary's `dups` field, under the lock, so a stale or double release of a
 * primary's handle can never consume a duplicate's hold. A primary stays PRIMARY
 * while count + dups > 0.
 * Writers: lock-free CAS (clone, release, weak upgrade) and, under the lock,
 * transitions (which only happen while the count is 0) and lookups (CAS).
 */
struct kvb_slot {
    kvb_hash hash;         /* (lock) STAGED, PRIMARY, DUPLICATE, INACTIVE */
    _Atomic uint64_t word; /* gen << 32 | refcount; see above */
    uint32_t aux;          /* (lock) RESET: free-list next; PRIMARY/INACTIVE: arrival;
                              DUPLICATE: id of its primary */
    uint8_t state;         /* (lock) enum kvb_state */
    uint8_t flags;         /* (lock) KVB_F_* */
    uint16_t dups;         /* (lock) PRIMARY: live duplicates holding it (not in `word`) */
};

static inline uint32_t kvb__word_gen(uint64_t w)
{
    return (uint32_t)(w >> 32);
}
static inline uint32_t kvb__word_rc(uint64_t w)
{
    return (uint32_t)w;
}
static inline uint64_t kvb__word(uint32_t gen, uint32_t rc)
{
    return ((uint64_t)gen << 32) | rc;
}

/*
 * The hash index (pool_index.h has the operations): open addressing, linear
 * probing, Robin Hood order, backward-shift deletion; cells hold block ids of
 * PRIMARY and INACTIVE slots (a hash is never both: a cached hash is resurrected
 * before it can become primary again). Capacity is fixed at create to 1.75 x
 * block_count (any size: the home cell is taken with a multiply-shift range
 * reduction, not a mask), so it never grows and the load stays <= 0.57: 7 bytes
 * per block. A cell packs the block id (low id_bits) with the entry's
 * displacement from its home cell (the bits above, saturating at disp_max), so
 * deletion shifts entries back without touching the slots. Keys are not stored:
 * a probe compares the slot's hash. Hand-written rather than ck_hs: under the
 * pool mutex that already serialises access, a plain probe loop is 3-4x faster
 * (TOOLING.md).
 */
struct kvb_index {
    uint32_t *map;      /* (lock) cells; KVB_NONE: empty */
    uint32_t cap;       /* (const) number of cells */
    uint32_t id_bits;   /* (const) 2^bits > block_count: an all-ones cell is never an id */
    uint32_t id_mask;   /* (const) */
    uint32_t disp_max;  /* (const) displacement field value meaning "look it up" */
    uint32_t one;       /* (const) 1 << id_bits: one cell of displacement */
    uint32_t shift_lim; /* (const) (disp_max - 1) << id_bits (kvb__index_erase_at) */
};

struct kvb_counters {
    uint64_t allocations, allocations_from_reset, evictions, registrations, duplicates, dedups,
        stagings, match_requested, match_returned, eager_transitions, allocate_rollbacks,
        release_noops, resurrections, scan_requested, scan_returned, hint_added, hint_withdrawn,
        hint_unmatched, hint_rejected, hint_evictions, retention_expired, retained_evictions;
};

struct kvb_pool {
    struct kvb_lock lock; /* the pool mutex, with its contention counters */

    struct kvb_slot *slots; /* (const pointer; contents: see struct kvb_slot) */
    struct kvb_index ix;    /* hash index (see above) */
    bool prefetch;          /* (const) large pool: batch lookups prefetch cells and slots */

    uint32_t free_head, free_tail; /* (lock) FIFO free list through slot.aux */

    const kvb_inactive_ops *ops; /* (const) */
    /* (const) ops is one of the library's own tables (kvb_inactive_builtin): the ids
     * its evict returns are not validated one by one (debug builds assert them) */
    bool ops_builtin;
    void *backend; /* (lock) */

    uint32_t count[KVB_S_COUNT]; /* (lock) gauges */
    uint32_t peak_in_use;        /* (lock) */
    uint32_t arrival_seq;        /* (lock) last arrival number handed out */
    struct kvb_counters c;       /* (lock) */
    /* Misuse is detected on lock-free paths too. Relaxed: a statistic, it orders
     * nothing. */
    _Atomic uint64_t misuse;
    /* Set once any reference count passes 2^31 (saturation checks start then).
     * Relaxed: a hint read under the lock, it orders nothing. */
    _Atomic bool rc_high;

    /* configuration (const) */
    uint64_t id;
    uint32_t block_count, block_size;
    kvb_dup_policy dup_policy;
    bool reset_default;
    bool abort_on_misuse;
    kvb_allocator alloc;
    /* Callbacks, registry (sinks.registry, may be NULL) and event module state
     * (sinks.events, NULL without a sink): where deferred records go (defer.h). */
    struct kvb_sinks sinks;
    struct kvb_sketch *sketch; /* frequency sketch (the registry's or own_sketch), or NULL */
    bool own_sketch;
    /* Lookahead hints (hint.h), NULL without hint capacity. (const pointer; contents:
     * lock.) An INACTIVE slot is in exactly one of the backend and the hint heap
     * (KVB_F_HINTED); it is in the heap only while its hash has outstanding hints. */
    struct kvb_hints *hints;
    /* Retention priorities and durations (prio.h), NULL without `priorities`.
     * (const pointer; contents: lock.) An INACTIVE slot is in exactly one of the
     * backend, the hint heap and its level's set-apart list (KVB_F_LISTED);
     * KVB_F_PRIO marks content whose priority is not the default. */
    struct kvb_prio *prio;
    kvb_clock clock; /* (const) filled with the default when the config leaves it NULL */
    bool ext;        /* (const) hints or priorities: allocations take the longer path */
    uint64_t ev_seq; /* (lock) last event sequence number handed out */
    char name[64];
};

static inline void kvb__pool_lock(kvb_pool *p)
{
    kvb__lock(&p->lock);
}

static inline void kvb__pool_unlock(kvb_pool *p)
{
    kvb__unlock(&p->lock);
}

/* Unlock, then deliver what the call queued (defer.h) and free the queue. */
static inline void kvb__pool_unlock_fire(kvb_pool *p, struct kvb_cbq *q)
{
    kvb__pool_unlock(p);
    if (q->active)
        kvb__cbq_fire(q);
    kvb__cbq_fini(q);
}

/* ---- pool.c ---- */

/* Whether h can be a block's hash: not the invalid mode 3 (top two bits set). */
static inline bool kvb__hash_valid(kvb_hash h)
{
    return (h.hi >> 62) != 3;
}

/* Count a handle misuse (and abort when so configured); returns -ESTALE. */
int kvb__pool_misuse(kvb_pool *p, const char *what) __attribute__((cold));
/* The transition function (pool.c) for the pool's files outside the hot paths. */
uint32_t kvb__pool_transition_locked(kvb_pool *p, uint32_t id, enum kvb_state from,
                                     enum kvb_state to, uint32_t rc);

/* ---- free list (FIFO through slot.aux), lock held ---- */

static inline void kvb__free_push_tail(kvb_pool *p, uint32_t id)
{
    p->slots[id].aux = KVB_NONE;
    if (p->free_tail == KVB_NONE)
        p->free_head = id;
    else
        p->slots[p->free_tail].aux = id;
    p->free_tail = id;
}

static inline void kvb__free_push_head(kvb_pool *p, uint32_t id)
{
    p->slots[id].aux = p->free_head;
    p->free_head = id;
    if (p->free_tail == KVB_NONE)
        p->free_tail = id;
}

static inline uint32_t kvb__free_pop(kvb_pool *p)
{
    uint32_t id = p->free_head;
    kvb_assert(id != KVB_NONE);
    p->free_head = p->slots[id].aux;
    if (p->free_head == KVB_NONE)
        p->free_tail = KVB_NONE;
    return id;
}

/* ---- where a cached block waits: the backend, a priority list, the hint heap ---- */

/* Block id just became INACTIVE: into the eviction backend, whatever its priority
 * (a block at a priority other than the default is counted at its level: prio.h
 * has how the levels are kept in the policy's order). Hints do not look at
 * releases: the pool sets a hinted block apart only when it comes up as a victim
 * (kvb_pool_allocate). Otherwise this is the backend insert plus one test of a
 * flag in the slot it already has in hand. Lock held. */
static inline void kvb__place_locked(kvb_pool *p, uint32_t id)
{
    struct kvb_slot *s = &p->slots[id];
    int rc = p->ops->insert(p->backend, s->hash, id, s->aux);
    kvb_assert(rc == 0);
    (void)rc;
    if (kvb_unlikely(s->flags & KVB_F_PRIO))
        kvb__prio_in(p->prio, id);
}

/* Block id (INACTIVE) leaves the cache's order (a hit): out of the hint heap or its
 * set-apart list when it is there, else out of the backend. Lock held. */
static inline void kvb__unplace_locked(kvb_pool *p, uint32_t id)
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
    if (kvb_unlikely(s->flags & KVB_F_PRIO))
        kvb__prio_out(p->prio, id);
}

/* A candidate victim whose hash has outstanding hints is set apart in the hint heap
 * instead of being evicted (the pool filters victims: no backend knows of hints).
 * Returns whether it was. Lock held. */
static inline bool kvb__set_apart_locked(kvb_pool *p, uint32_t id)
{
    struct kvb_slot *s = &p->slots[id];
    uint32_t e = kvb__hints_find(p->hints, s->hash);
    if (e == KVB_HINT_NONE)
        return false;
    kvb__hints_push(p->hints, id, e);
    s->flags |= KVB_F_HINTED;
    return true;
}

/* ---- allocation victims beyond the backend (pool_victims.c) ---- */

/* The ids of a batch inside an array of handles: element i's id lives at base +
 * i * stride (the id field of a kvb_mutable or a kvb_block array), so that one
 * allocation path fills kvb_pool_allocate's mutable handles and kvb_pool_acquire's
 * block handles alike. */
struct kvb_ids {
    char *base;
    size_t stride;
};
#define KVB_IDS(arr) ((struct kvb_ids){(char *)&(arr)[0].id, sizeof(arr)[0]})

static inline uint32_t *kvb__ids_at(struct kvb_ids v, uint32_t i)
{
    return (uint32_t *)(void *)(v.base + (size_t)i * v.stride);
}

/* The 32-bit field after element i's id (gen, in both handle types): scratch for
 * the allocation until the handle is filled (the home cell of a victim's hash). */
static inline uint32_t *kvb__ids_aux(struct kvb_ids v, uint32_t i)
{
    return kvb__ids_at(v, i) + 1;
}
_Static_assert(offsetof(kvb_mutable, gen) == offsetof(kvb_mutable, id) + sizeof(uint32_t),
               "kvb__ids_aux: gen follows id");
_Static_assert(offsetof(kvb_block, gen) == offsetof(kvb_block, id) + sizeof(uint32_t),
               "kvb__ids_aux: gen follows id");

/* The ids from element i on. */
static inline struct kvb_ids kvb__ids_from(struct kvb_ids v, uint32_t i)
{
    return (struct kvb_ids){v.base + (size_t)i * v.stride, v.stride};
}

/* Where the victims of one allocation came from, in eviction order: out[take +
 * [0, ordered)) from the backend (with retention priorities, interleaved with the
 * set-apart level lists: `mixed`), out[take + [ordered, all)) from the hint heap. */
struct kvb_victims {
    uint32_t ordered, all;
    bool diverted_b; /* the backend proposed a hinted victim, set apart in the hint heap */
    bool mixed;      /* [0, ordered): set-apart lists (aux KVB_NONE) and the backend (aux:
                        a home cell) interleaved */
};

/* Victims of a pool with priorities in eviction order, lowest level first and the
 * policy's order within a level (prio.h): appended to out[*got..need), marked
 * KVB_F_MARK, the field after each id (kvb__ids_aux) the home cell of a backend
 * victim's hash or KVB_NONE for one from a set-apart list. With `filter`, hinted
 * candidates go to the hint heap instead. *bad: the backend returned a wrong id or
 * fewer than it holds. Stops when no level holds a block (hinted ones may be
 * left). Lock held. */
void kvb__evict_levels_locked(kvb_pool *p, struct kvb_ids out, uint32_t *got, uint32_t need,
                              bool filter, bool *bad);
/* Undo the victim selection of a failed allocation that took out[0, taken) from
 * the free list and out[taken + [0, v->all)) as victims. Lock held. */
void kvb__alloc_rollback_locked(kvb_pool *p, struct kvb_ids out, uint32_t taken,
                                const struct kvb_victims *v);

/* ---- retention priorities (pool_prio.c) ---- */

/* The default clock of retention durations: CLOCK_MONOTONIC in milliseconds. */
uint64_t kvb__pool_monotonic_ms(void *ctx);

/* Pending durations are applied before a decision that reads priorities: the
 * clock, a user callback, is read before the lock is taken (and only when
 * durations are pending); kvb__expire_locked then applies what is due. */
static inline uint64_t kvb__pool_clock_now(const kvb_pool *p)
{
    return p->clock.now_ms(p->clock.ctx);
}

static inline bool kvb__pool_timers_pending(const kvb_pool *p)
{
    return p->prio && kvb__prio_timers(p->prio);
}

/* The clock when a call needs it: durations pending (to apply them) or being set. */
static inline uint64_t kvb__pool_clock_if(const kvb_pool *p, bool setting, bool *timed)
{
    *timed = kvb__pool_timers_pending(p);
    return *timed || setting ? kvb__pool_clock_now(p) : 0;
}

/* Priorities whose duration ran out by `now` return to the default. Lock held. */
void kvb__expire_locked(kvb_pool *p, uint64_t now);
/* Give content id (PRIMARY or INACTIVE) a priority, with a duration (0: none) from
 * `now`. Lock held. */
void kvb__set_priority_locked(kvb_pool *p, uint32_t id, uint32_t priority, uint32_t duration_ms,
                              uint64_t now);

/* ---- block references (pool_ref.c) ---- */

/* Lock-free: add one to the count of a live reference (gen, count > 0).
 * 0, -ESTALE (not a live reference), -EOVERFLOW (saturated). */
int kvb__ref_inc(kvb_pool *p, uint32_t id, uint32_t gen);

/* ---- test hooks (pool_check.c, KVB_TESTING builds only) ---- */

#ifdef KVB_TESTING
extern kvb_test_hook_fn kvb__test_last_release_fn;
extern void *kvb__test_last_release_arg;
extern uint32_t kvb__test_disp_max;
#define KVB_TEST_LAST_RELEASE(p, id)                                                               \
    do {                                                                                           \
        if (kvb__test_last_release_fn)                                                             \
            kvb__test_last_release_fn(kvb__test_last_release_arg, (p), (id));                      \
    } while (0)
#else
#define KVB_TEST_LAST_RELEASE(p, id) ((void)0)
#endif

#endif /* KVB_POOL_H */
