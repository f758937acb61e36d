/*
 * index_internal.h - the private layout of a fleet index (kvblock/index.h),
 * shared by lib/index.c (create, streams, stats), index_table.c (the key
 * table), index_apply.c (apply, the per-stream maps, load), index_match.c
 * (match) and index_snapshot.c (save, load, Prometheus text); the lookups the
 * match and apply loops make are static inline here.
 *
 * Locks (lock order: smu before a shard lock; a writer never holds two):
 *  - wmu (mutex): serialises every writer (apply, stream_*, tick, heard, the
 *    copy of save). Fields marked (w) are touched only with wmu held.
 *  - smu (rwlock): the stream table and everything readers need of a stream.
 *    Fields marked (s) are written with wmu AND smu held for writing, so a
 *    writer may read them with wmu alone; readers take smu for reading.
 *  - shard->lock (rwlock): one shard of the key table. Fields marked (h) are
 *    written with wmu AND that shard's lock held for writing; readers take the
 *    lock for reading; a writer may read them with wmu alone.
 *  - (c): written once before the object is published, read-only afterwards.
 * The only lock-free state is the pair of match counters (relaxed atomics).
 */
#ifndef KVB_INDEX_INTERNAL_H
#define KVB_INDEX_INTERNAL_H

#include "internal.h"
#include "kvblock/index.h"
#include <pthread.h>
#include <stdatomic.h>

#define KVB_IX_NONE  UINT32_MAX
#define KVB_IX_MSTAT 8 /* match counter stripes */

/* Holder word of the key table: stream id << 3 | tier mask (bit t set iff the
 * stream holds at least one copy of the key in tier t). */
#define KVB_IX_TIER_SHIFT 3u
#define KVB_IX_MASK_ALL   7u
#define KVB_IX_SID(h)     ((h) >> KVB_IX_TIER_SHIFT)

/* Cell flags in kvb_ix_cell.n; the low 30 bits count the holders. */
#define KVB_IX_ARR   0x80000000u /* data indexes the directory: a holder array */
#define KVB_IX_CHK   0x40000000u /* data indexes the chunk arena */
#define KVB_IX_CNT   0x3fffffffu
#define KVB_IX_CHUNK 8u /* holder words per chunk */

/* Per (key, tier) copy counts of a stream, three 10-bit fields packed in a u32
 * (tier t in bits [10t, 10t + 10)). A count saturates at KVB_IX_COUNT_MAX:
 * further STORED copies are ignored (counted as KVB_DROP_CAPACITY) and each
 * REMOVED still decrements, so a saturated block disappears early (a missed
 * opportunity) rather than late (a false positive that lasts). */
#define KVB_IX_COUNT_BITS 10u
#define KVB_IX_COUNT_MAX  1023u

static inline uint32_t kvb__ix_count(uint32_t counts, uint32_t tier)
{
    return (counts >> (KVB_IX_COUNT_BITS * tier)) & KVB_IX_COUNT_MAX;
}

static inline uint32_t kvb__ix_mask_of(uint32_t counts)
{
    uint32_t m = 0;
    for (uint32_t t = 0; t < KVB_TIER_COUNT; t++)
        if (kvb__ix_count(counts, t))
            m |= 1u << t;
    return m;
}

/* 16-byte cell of a shard's open-addressing table. n == 0: empty (so key 0
 * is an ordinary key). n == 1: data is the only holder word. KVB_IX_CHK:
 * 2..KVB_IX_CHUNK holders in chunk data of the shard's chunk arena (no
 * allocation per key, one cache miss less than an array). KVB_IX_ARR: >= 2
 * holders (more than a chunk holds when it was made) in the array dir[data].
 * Holders are sorted by holder word, hence by stream id. */
struct kvb_ix_cell {
    uint64_t key;
    uint32_t n;
    uint32_t data;
};

/* One shard of the key table: linear probing over any-size tables (homes by
 * Lemire's multiply-shift, kvb__cell_of), backward-shift deletion, load <= 0.8.
 * Holder arrays are allocations of cap + 1 u32: a[0] = cap, holders follow;
 * the chunk arena grows like the tables (built aside, swapped under the lock)
 * and never shrinks (bounded by the peak number of multi-holder keys). */
struct kvb_ix_shard {
    pthread_rwlock_t lock;
    struct kvb_ix_cell *cells; /* (h) */
    uint32_t cap;              /* (h) cells */
    uint32_t keys;             /* (h) occupied cells */
    uint32_t **dir;            /* (h) holder arrays by directory index */
    uint32_t *dir_next;        /* (h) free-list links of free directory slots */
    uint32_t dir_cap;          /* (h) */
    uint32_t dir_top;          /* (h) slots ever handed out (<= dir_cap) */
    uint32_t dir_free;         /* (h) head of the free list, KVB_IX_NONE = empty */
    uint32_t dir_nfree;        /* (h) slots on the free list */
    uint32_t *chunks;          /* (h) chunk arena: KVB_IX_CHUNK words per chunk */
    uint32_t chunk_cap;        /* (h) chunks */
    uint32_t chunk_top;        /* (h) chunks ever handed out (<= chunk_cap) */
    uint32_t chunk_free;       /* (h) free list (link in a free chunk's word 0) */
    uint32_t chunk_nfree;      /* (h) chunks on the free list */
} __attribute__((aligned(64)));

/* One stream (worker, dp_rank). */
struct kvb_ix_stream {
    /* (c) identity */
    uint32_t id;
    int64_t rank;
    kvb_index_hashes_kind kind;
    uint32_t block_size;
    uint64_t name_hash;
    char name[KVB_INDEX_NAME_MAX];

    /* (s) what readers see: state, counters and sizes, published at the end of
     * every writer call */
    kvb_stream_state state;
    int64_t last_seq;
    uint64_t batches, events;
    uint64_t counters[KVB_COUNT_COUNT];
    uint64_t dropped[KVB_DROP_COUNT];
    uint64_t entries;  /* (key, tier) entries */
    uint64_t engine_n; /* engine map entries */
    int64_t last_heard_ns;

    /* (w) liveness */
    bool down;             /* transport reported down */
    bool drop_done;        /* entries already freed for this outage */
    int64_t down_since_ns; /* when it went down */

    /* (w) reverse map key -> packed copy counts (counts 0: empty cell) */
    uint64_t *rk;
    uint32_t *rc;
    uint32_t rcap, rn;
    uint64_t w_entries; /* (key, tier) entries with a non-zero count */

    /* (w) ENGINE streams: engine hash -> {router hash, copies over all tiers}
     * (copies 0: empty cell) */
    uint64_t *ek, *er;
    uint32_t *ec;
    uint32_t ecap, en;
};

/* What a match needs of a stream, dense by stream id (s): a match touches it
 * for every candidate, the full stream only for the results it writes. */
struct kvb_ix_live {
    uint64_t entries;
    uint32_t state; /* kvb_stream_state */
    uint32_t pad_;
};

/* Index-wide totals readers see (s). */
struct kvb_ix_totals {
    uint64_t keys, entries, memory, batches, events, block_ops;
};

struct kvb_index {
    kvb_index_config cfg;      /* (c) defaults filled in */
    kvb_allocator a;           /* (c) */
    uint32_t shard_bits;       /* (c) log2(cfg.shards) */
    bool match_hold;           /* (c) a match holds its single shard's read lock throughout */
    int64_t stale_ns, drop_ns; /* (c) */

    pthread_mutex_t wmu;
    pthread_rwlock_t smu;
    struct kvb_ix_shard *shards; /* (c) the array; each shard's fields as marked */
    void *shards_raw;            /* (c) its allocation (shards is 64-byte aligned in it) */
    size_t shards_size;          /* (c) */

    /* (s) the stream table: tab[id] or NULL; names: open addressing over
     * name_hash, cells id + 1 (0 empty), power-of-two capacity, load <= 1/2 */
    struct kvb_ix_stream **tab;
    struct kvb_ix_live *live; /* tab_cap mirrors of state and entries (same allocation) */
    uint32_t tab_cap;
    uint32_t n_streams;
    uint32_t *names;
    uint32_t names_cap;
    struct kvb_ix_totals pub;

    /* (w) */
    uint32_t id_hint;       /* no free id below it */
    struct kvb_ix_totals w; /* working totals, published into pub */
    uint64_t touched[16];   /* (w) shards changed since the last shrink check */
    bool in_commit;         /* (w) inside pass 2 of an apply (debug check: it never allocates) */

    /* Match counters, striped over cache lines by thread so that concurrent
     * matches do not bounce one line: relaxed atomic adds by matches, relaxed
     * loads summed by stats. They order nothing (statistics only). */
    struct kvb_ix_mstat {
        _Atomic uint64_t matches, blocks;
        char pad_[48];
    } mstat[KVB_IX_MSTAT];
};

/* ---- index.c, index_apply.c (load) and index_match.c, for index_snapshot.c -- */

/* Allocation through the index's allocator, accounted in idx->w.memory (callers
 * hold wmu or own the index exclusively). */
void *kvb__ix_alloc(kvb_index *idx, size_t size);
void *kvb__ix_calloc(kvb_index *idx, size_t n, size_t size);
void kvb__ix_free(kvb_index *idx, void *p, size_t size);

/* Validate and fill defaults; 0 or -EINVAL. */
int kvb__ix_config_check(const kvb_index_config *in, kvb_index_config *out);

/* Add a stream under a given id to an index owned exclusively by the caller
 * (load): 0, -EEXIST, -EINVAL, -ENOMEM. */
int kvb__ix_stream_add_id(kvb_index *idx, const kvb_index_stream_config *cfg, uint32_t id,
                          struct kvb_ix_stream **out);
/* Room in a stream's maps for keys and engine entries (load). */
int kvb__ix_load_reserve(kvb_index *idx, struct kvb_ix_stream *st, uint64_t keys, uint64_t eng);
/* Insert a key the stream does not hold yet with non-zero counts (load). */
int kvb__ix_load_key(kvb_index *idx, struct kvb_ix_stream *st, uint64_t key, uint32_t counts);
/* Insert an engine map entry (load); -EEXIST for a duplicate engine hash. */
int kvb__ix_load_engine(kvb_index *idx, struct kvb_ix_stream *st, uint64_t e, uint64_t r,
                        uint32_t copies);
/* Sum of the striped match counters. */
void kvb__ix_match_counts(const kvb_index *idx, uint64_t *matches, uint64_t *blocks);
/* Publish writer totals and a stream's working sizes (caller holds wmu). */
void kvb__ix_publish(kvb_index *idx, struct kvb_ix_stream *st);

/* ---- shared by index.c, index_table.c, index_apply.c, index_match.c ---------- */

#define KVB_IX_MIN_CAP 16u
#define KVB_IX_CLASSES 24u /* holder array capacities 2^4 .. 2^23 */

/* Key mix (murmur3 fmix64: test hashes are small integers), the shard of a
 * mixed key (its top bits) and its home cell (multiply-shift on its low bits). */
static inline uint64_t kvb__ix_mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

static inline uint32_t kvb__ix_shard_of(const kvb_index *idx, uint64_t m)
{
    return idx->shard_bits ? (uint32_t)(m >> (64 - idx->shard_bits)) : 0;
}

static inline uint32_t kvb__ix_home(uint64_t m, uint32_t cap)
{
    return kvb__cell_of((uint32_t)m, cap);
}

/* Table loads in percent: the most a table holds, and what a growth rebuilds
 * it to. Compile-time knobs for measurement: 80/50 against 70/45 and 65/40
 * changed a writer's instructions per block op by < 10% (481, 462, 433 under
 * callgrind) while costing memory per entry, so 80/50 it is. */
#ifndef KVB_IX_LOAD_PCT
#define KVB_IX_LOAD_PCT 80
#endif
#ifndef KVB_IX_GROW_PCT
#define KVB_IX_GROW_PCT 50
#endif

/* Load <= KVB_IX_LOAD_PCT after adding: n keys fit in cap cells. */
static inline bool kvb__ix_fits(uint32_t cap, uint64_t n)
{
    return n * 100 <= (uint64_t)cap * KVB_IX_LOAD_PCT && (n < cap || n == 0);
}

/* Capacity for n keys at load 0.5 (a table grows 1.6x past load 0.8); 0 when
 * it does not fit a u32. */
static inline uint64_t kvb__ix_cap_for(uint64_t n)
{
    uint64_t c = n * 100 / KVB_IX_GROW_PCT + 1;
    if (c < KVB_IX_MIN_CAP)
        c = KVB_IX_MIN_CAP;
    return c > UINT32_MAX ? 0 : c;
}

/* A table far below its load: worth rebuilding smaller. */
static inline bool kvb__ix_sparse(uint32_t cap, uint64_t n)
{
    return cap > KVB_IX_MIN_CAP * 4 && n * 8 < cap;
}

/* The rwlocks of the stream table and the shards (failure is a bug: asserted). */
static inline void kvb__ix_wrlock(pthread_rwlock_t *l)
{
    int rc = pthread_rwlock_wrlock(l);
    kvb_assert(rc == 0);
    (void)rc;
}

static inline void kvb__ix_rdlock(pthread_rwlock_t *l)
{
    int rc = pthread_rwlock_rdlock(l);
    kvb_assert(rc == 0);
    (void)rc;
}

static inline void kvb__ix_unlock(pthread_rwlock_t *l)
{
    int rc = pthread_rwlock_unlock(l);
    kvb_assert(rc == 0);
    (void)rc;
}

/* The cell of key (m: its mix) in shard s, or KVB_IX_NONE (caller holds the
 * shard's lock, or wmu). */
static inline uint32_t kvb__ix_shard_find(const struct kvb_ix_shard *s, uint64_t key, uint64_t m)
{
    if (!s->cap)
        return KVB_IX_NONE;
    uint32_t i = kvb__ix_home(m, s->cap);
    for (;;) {
        const struct kvb_ix_cell *c = &s->cells[i];
        if (c->n == 0)
            return KVB_IX_NONE;
        if (c->key == key)
            return i;
        i = kvb__cell_next(i, s->cap);
    }
}

/* The holder count of an occupied cell, and its holder words (in place),
 * sorted by stream id. */
static inline uint32_t kvb__ix_cell_count(const struct kvb_ix_cell *c)
{
    return c->n & KVB_IX_CNT;
}

static inline const uint32_t *kvb__ix_cell_holders(const struct kvb_ix_shard *s,
                                                   const struct kvb_ix_cell *c, uint32_t *n)
{
    *n = kvb__ix_cell_count(c);
    if (c->n & KVB_IX_ARR)
        return s->dir[c->data] + 1;
    if (c->n & KVB_IX_CHK)
        return s->chunks + (size_t)c->data * KVB_IX_CHUNK;
    return &c->data;
}

/* Position of stream sid among sorted holders h[0..n), or the insertion point
 * with *found false. */
static inline uint32_t kvb__ix_holders_search(const uint32_t *h, uint32_t n, uint32_t sid,
                                              bool *found)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint32_t v = KVB_IX_SID(h[mid]);
        if (v < sid)
            lo = mid + 1;
        else if (v > sid)
            hi = mid;
        else {
            *found = true;
            return mid;
        }
    }
    *found = false;
    return lo;
}

/* Stream id -> stream or NULL (caller holds smu or wmu). */
static inline struct kvb_ix_stream *kvb__ix_stream(const kvb_index *idx, uint32_t id)
{
    return id < idx->tab_cap ? idx->tab[id] : NULL;
}

/* Holder arrays allocated by pass 1 of an apply: one stack per capacity class,
 * linked through each array's first holder words (cap >= 16: room for it). */
struct kvb_ix_rsv {
    uint32_t *head[KVB_IX_CLASSES];
};

/* ---- the key table (index_table.c); writers hold wmu ------------------------ */

/* A holder array of capacity cap (a power of two >= 16), and its free. */
uint32_t *kvb__ix_harr_alloc(kvb_index *idx, uint32_t cap);
void kvb__ix_harr_free(kvb_index *idx, uint32_t *a);
/* Push a holder array on the reserve; free every array left on it. */
void kvb__ix_rsv_push(struct kvb_ix_rsv *r, uint32_t *a);
void kvb__ix_rsv_free(kvb_index *idx, struct kvb_ix_rsv *r);
/* Room in shard s for extra more keys, holder arrays (directory slots) and
 * chunks: 0 or -ENOMEM (nothing changed). Grown tables are swapped in under the
 * shard's write lock unless the caller holds it (locked). */
int kvb__ix_shard_reserve(kvb_index *idx, struct kvb_ix_shard *s, uint64_t extra, bool locked);
int kvb__ix_dir_reserve(kvb_index *idx, struct kvb_ix_shard *s, uint32_t extra, bool locked);
int kvb__ix_chunk_reserve(kvb_index *idx, struct kvb_ix_shard *s, uint32_t extra, bool locked);
/* Shrink the shards changed since the last call (never inside pass 2). */
void kvb__ix_shrink_touched(kvb_index *idx);
/* Set stream sid's tier mask on key (0: remove it as a holder); see index_table.c. */
int kvb__ix_global_set(kvb_index *idx, struct kvb_ix_shard *s, uint64_t key, uint64_t m,
                       uint32_t sid, uint32_t mask, struct kvb_ix_rsv *rsv, bool locked);

/* ---- streams' maps (index_apply.c); caller holds wmu ------------------------ */

/* Remove every holder of stream st from the key table and empty its maps
 * (keep_capacity: inside an apply, whose reservation must stay valid). */
void kvb__ix_stream_clear_entries(kvb_index *idx, struct kvb_ix_stream *st, bool keep_capacity);
/* Free a stream that has left the table, and its maps. */
void kvb__ix_stream_free(kvb_index *idx, struct kvb_ix_stream *st);

#endif /* KVB_INDEX_INTERNAL_H */
