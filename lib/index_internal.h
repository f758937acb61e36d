/*
 * index_internal.h - the private layout of a fleet index (kvblock/index.h),
 * shared by lib/index.c (tables, streams, apply, match, stats) and
 * lib/index_snapshot.c (save, load, Prometheus text).
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

/* ---- shared between index.c and index_snapshot.c ---------------------------- */

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

#endif /* KVB_INDEX_INTERNAL_H */
