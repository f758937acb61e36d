/*
 * pool.h - the private layout of a pool, shared by the library modules that
 * work on pools (pool.c, metrics.c, and later scan/events/registry glue).
 *
 * Locking: every field marked (lock) is protected by pool->mu. Fields marked
 * (const) are written once in kvb_pool_create and read-only afterwards. The
 * only lock-free state is each slot's `word` (generation + reference count).
 */
#ifndef KVB_POOL_H
#define KVB_POOL_H

#include "internal.h"
#include <pthread.h>
#include <stdatomic.h>

struct kvb_sketch;
struct kvb_events;
struct kvb_hints;
struct kvb_prio;

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

/* slot flags (lock) */
#define KVB_F_RESET_ON_RELEASE 0x01u /* PRIMARY/INACTIVE: go to RESET at last release */
#define KVB_F_MARK             0x02u /* transient, inside one locked call (batch validation) */
#define KVB_F_HINTED           0x04u /* INACTIVE: kept in the hint heap, not in the backend */
#define KVB_F_LISTED           0x08u /* INACTIVE: in a priority level list, not in the backend */
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

struct kvb_counters {
    uint64_t allocations, allocations_from_reset, evictions, registrations, duplicates, dedups,
        stagings, match_requested, match_returned, eager_transitions, allocate_rollbacks,
        release_noops, lock_acquisitions, lock_contended, lock_wait_ns, resurrections,
        scan_requested, scan_returned, hint_added, hint_withdrawn, hint_unmatched, hint_rejected,
        hint_evictions, retention_expired, retained_evictions;
};

struct kvb_pool {
    pthread_mutex_t mu;

    struct kvb_slot *slots; /* (const pointer; contents: see struct kvb_slot) */
    /* Hash index: open addressing, linear probing, backward-shift deletion; cells
     * hold block ids of PRIMARY and INACTIVE slots (a hash is never both: a cached
     * hash is resurrected before it can become primary again). Capacity is fixed at
     * create to 1.75 x block_count (any size: the home cell is taken with a
     * multiply-shift range reduction, not a mask), so it never grows and the load
     * stays <= 0.57: 7 bytes per block. A cell packs the block id (low map_id_bits)
     * with the entry's displacement from its home cell (the bits above, saturating
     * at map_disp_max), so deletion shifts entries back without touching the slots.
     * Keys are not stored: a probe compares the slot's hash. Hand-written rather
     * than ck_hs: under the pool mutex that already serialises access, a plain
     * probe loop is 3-4x faster (TOOLING.md). */
    uint32_t *map;         /* (lock) */
    uint32_t map_cap;      /* (const) number of cells */
    uint32_t map_id_bits;  /* (const) 2^bits > block_count: an all-ones cell is never an id */
    uint32_t map_id_mask;  /* (const) */
    uint32_t map_disp_max; /* (const) displacement field value meaning "look it up" */
    bool prefetch;         /* (const) large pool: batch lookups prefetch cells and slots */

    uint32_t free_head, free_tail; /* (lock) FIFO free list through slot.aux */

    const kvb_inactive_ops *ops; /* (const) */
    void *backend;               /* (lock) */

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
    kvb_callbacks cb;
    kvb_allocator alloc;
    kvb_registry *registry;
    uint32_t reg_index;        /* this pool's presence index in the registry */
    struct kvb_sketch *sketch; /* frequency sketch (the registry's or own_sketch), or NULL */
    bool own_sketch;
    struct kvb_events *events; /* event module state, NULL without a sink */
    /* Lookahead hints (hint.h), NULL without hint capacity. (const pointer; contents:
     * lock.) An INACTIVE slot is in exactly one of the backend and the hint heap
     * (KVB_F_HINTED); it is in the heap only while its hash has outstanding hints. */
    struct kvb_hints *hints;
    /* Retention priorities and durations (prio.h), NULL without `priorities`.
     * (const pointer; contents: lock.) An INACTIVE slot is in exactly one of the
     * backend, the hint heap and a priority list (KVB_F_LISTED); KVB_F_PRIO marks
     * content whose priority is not the default, and only such content is listed. */
    struct kvb_prio *prio;
    kvb_clock clock; /* (const) filled with the default when the config leaves it NULL */
    bool ext;        /* (const) hints or priorities: allocations take the longer path */
    uint64_t ev_seq; /* (lock) last event sequence number handed out */
    char name[64];
};

/* ---- deferred callbacks: collected under the lock, fired after unlock ---- */

enum kvb_cb_kind {
    KVB_CB_RESET = 1, /* on_reset */
    KVB_CB_EVICT,     /* on_evict */
    KVB_CB_PRESENT,   /* registry presence +1 */
    KVB_CB_ABSENT,    /* registry presence -1 */
    KVB_CB_STORED,    /* event: new primary (seq set) */
    KVB_CB_REMOVED,   /* event: cached/primary content dropped (seq set) */
    KVB_CB_CLEARED    /* event: cache drained (seq set) */
};

struct kvb_cb_ev {
    kvb_hash hash;
    uint32_t id;
    uint32_t kind;
    uint64_t seq; /* event records only: the pool's event sequence number */
};

#define KVB_CBQ_LOCAL 32
struct kvb_cbq {
    struct kvb_cb_ev *ev;
    uint32_t n, cap;
    bool heap;
    bool active; /* false: the pool has no callbacks, pushes are dropped */
    struct kvb_cb_ev local[KVB_CBQ_LOCAL];
};

void kvb__pool_lock(kvb_pool *p);
void kvb__pool_unlock(kvb_pool *p);

#endif /* KVB_POOL_H */
