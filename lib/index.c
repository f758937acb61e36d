/*
 * index.c - the fleet index (kvblock/index.h, FLEET.md): which stream (worker,
 * dp_rank) holds which router hash in which tier, built from KV events, and the
 * prefix match a router asks before it places a request. This file: create,
 * destroy, configuration, keys, the stream table and its writer calls, stats.
 * The key table is index_table.c, kvb_index_apply and the per-stream maps
 * index_apply.c, kvb_index_match index_match.c, snapshots and the Prometheus
 * text index_snapshot.c; index_internal.h is their shared layout.
 *
 * Data layout.
 *  - Key table: `shards` shards chosen by the top bits of a mixed key
 *    (murmur3 fmix64: test hashes are small integers). Each shard is an
 *    open-addressing table of 16-byte cells {key, n, data}, linear probing over
 *    any-size tables (homes by multiply-shift on the low 32 bits of the mixed
 *    key, kvb__cell_of), backward-shift deletion, load <= 0.8 (grown to 0.5).
 *    n == 0 marks an empty cell, so key 0 is an ordinary key. One holder is
 *    stored inline (data = stream id << 3 | tier mask); 2..8 in a chunk of the
 *    shard's chunk arena (no allocation per key); more in a holder array of
 *    the shard's directory. Holders are sorted by stream id so that a match
 *    merge-intersects its candidates with them. Written by hand rather than
 *    with ck_hs: writers are serialised and readers hold a shard lock anyway,
 *    and under a lock a purpose-built open-addressing map is 3-4x faster than
 *    CK's concurrent maps (TOOLING.md).
 *  - Per stream: the reverse map router key -> packed per-tier copy counts
 *    (parallel arrays, same probing), so that clearing or removing a stream
 *    costs time proportional to its own entries; ENGINE streams also keep
 *    engine hash -> {router hash, copies over all tiers} (FLEET.md section 3:
 *    an entry lives while any copy in any tier does).
 *  - Memory comes back: tables rebuilt smaller below load 1/8, chunk arenas
 *    and directories compacted when 4x too big, checked for the shards a
 *    writer touched, after the change (never inside pass 2 of an apply).
 *
 * Concurrency (index_internal.h has the field-by-field rules).
 *  - wmu serialises writers. A writer takes a shard's write lock only while it
 *    changes that shard's cells (at most KVB_IX_LOCK_RUN changes per hold, in
 *    event order) and swaps in grown tables under it (they are built with wmu
 *    alone while readers keep reading the old ones). Stream metadata readers
 *    need (state, counters, entries) and the stream table are under smu; a
 *    writer publishes its working sizes and counters there once per call.
 *  - A match takes smu for reading for its whole duration (one acquisition:
 *    candidate filtering by state and result assembly see one stream table)
 *    and each shard's read lock only while it reads one key's holders; with
 *    a single shard (the default, measured below at KVB_IX_DEFAULT_SHARDS) it
 *    holds that shard's read lock for the whole walk and looks the hashes up
 *    by groups with prefetching.
 *  - Lock order: smu before a shard lock (readers); writers never hold smu and
 *    a shard lock together, nor two shard locks.
 *
 * Invariants (checked by the tests through the public API, the model tests and
 * torture_index):
 *  - a cell's holders are exactly the streams whose reverse map has a non-zero
 *    count for the key, and its tier mask is the set of tiers with one;
 *  - a stream's w_entries is the number of (key, tier) pairs with a count;
 *  - inline iff 1 holder; holders sorted by stream id;
 *  - every allocation and free goes through kvb__ix_alloc/free (w.memory).
 */
#include "index_internal.h"

#include "annotate.h"
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

/*
 * Default shard count, measured on the 2-vCPU development VM (shared with
 * other jobs, load average 2-5 during the runs): one writer thread applying
 * ROUTER batches (4 events of 8 blocks STORED, the same REMOVED 256 batches
 * later, 64 streams) while R reader threads match 64-hash requests (k = 8)
 * over 4096 sequences prefilled on ~4 streams each, 3 s per point, three
 * rounds. Total = applied block ops + matched hashes per second (wall), best
 * and worst round:
 *
 *   shards                          R = 1             R = 2
 *   1, read lock held per match     13.8 / 2.3 M/s    27.7 / 24.8 M/s
 *   1, read lock per hash            7.1 / 1.0 M/s     8.3 /  6.0 M/s
 *   16 (read lock per hash)          7.7 / 2.8 M/s     7.7 /  7.0 M/s
 *   64 (read lock per hash)          6.5 / 3.1 M/s     8.0 /  5.7 M/s
 *
 * Matched hashes per reader CPU-second (steadier under the load): 18-24 M
 * with one held lock, 4-11 M with a lock per hash (an rwlock round trip per
 * hash, and no lookups ahead: a shard could move under an unlocked read).
 * The writer keeps 0.4-0.5 M block ops/s against two saturating readers
 * (the lock prefers writers). Hence one shard by default; more shards suit
 * hosts with many reader threads, where one lock word would bounce.
 */
#define KVB_IX_DEFAULT_SHARDS 1u

/* With a single shard a match takes its read lock once for the whole walk
 * instead of once per hash (-DKVB_IX_HOLD_SINGLE=0 for the per-hash variant,
 * measured at KVB_IX_DEFAULT_SHARDS). */
#ifndef KVB_IX_HOLD_SINGLE
#define KVB_IX_HOLD_SINGLE 1
#endif

void *kvb__ix_alloc(kvb_index *idx, size_t size)
{
    kvb_assert(!idx->in_commit); /* pass 2 of an apply never allocates */
    void *p = kvb__alloc(&idx->a, size);
    if (p)
        idx->w.memory += size;
    return p;
}

void *kvb__ix_calloc(kvb_index *idx, size_t n, size_t size)
{
    kvb_assert(!idx->in_commit);
    void *p = kvb__calloc(&idx->a, n, size);
    if (p)
        idx->w.memory += n * size;
    return p;
}

void kvb__ix_free(kvb_index *idx, void *p, size_t size)
{
    if (!p)
        return;
    idx->w.memory -= size;
    kvb__free(&idx->a, p, size);
}

static int ix_rwlock_init(pthread_rwlock_t *l)
{
    pthread_rwlockattr_t at;
    if (pthread_rwlockattr_init(&at) != 0)
        return -ENOMEM;
    /* Writers must not starve behind a steady stream of matches. */
    pthread_rwlockattr_setkind_np(&at, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(l, &at);
    pthread_rwlockattr_destroy(&at);
    return rc ? -ENOMEM : 0;
}

/* The stream table and its match mirror share one allocation. */
static inline size_t ix_tab_bytes(uint32_t cap)
{
    return (size_t)cap * (sizeof(struct kvb_ix_stream *) + sizeof(struct kvb_ix_live));
}

static inline bool ix_pow2(uint32_t x)
{
    return x && !(x & (x - 1));
}

/* ---- configuration, create, destroy ---------------------------------------- */

KVB_API void kvb_index_config_init(kvb_index_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->block_size = 16;
    cfg->seed = KVB_HASH_DYNAMO_SEED;
    cfg->tier_weight[KVB_TIER_DEVICE] = 1.0;
    cfg->tier_weight[KVB_TIER_HOST] = 0.8;
    cfg->tier_weight[KVB_TIER_DISK] = 0.5;
    cfg->stale_after_s = 30;
    cfg->drop_after_s = 300;
    cfg->max_streams = 4096;
    cfg->max_entries_per_stream = 1u << 24;
    cfg->shards = 0;
}

int kvb__ix_config_check(const kvb_index_config *in, kvb_index_config *out)
{
    kvb_index_config c;
    if (in)
        c = *in;
    else
        kvb_index_config_init(&c);
    if (!ix_pow2(c.block_size) || c.block_size > 1024)
        return -EINVAL;
    for (int t = 0; t < KVB_TIER_COUNT; t++)
        if (!(c.tier_weight[t] >= 0) || !isfinite(c.tier_weight[t]))
            return -EINVAL;
    if (!(c.stale_after_s >= 0) || !(c.drop_after_s >= 0))
        return -EINVAL;
    if (c.max_streams == 0 || c.max_streams > (1u << 20))
        return -EINVAL;
    if (c.max_entries_per_stream == 0)
        return -EINVAL;
    if (c.shards == 0)
        c.shards = KVB_IX_DEFAULT_SHARDS;
    if (!ix_pow2(c.shards) || c.shards > 1024)
        return -EINVAL;
    if ((c.allocator.alloc == NULL) != (c.allocator.free == NULL))
        return -EINVAL;
    *out = c;
    return 0;
}

static int64_t ix_secs_to_ns(double s)
{
    double ns = s * 1e9;
    return ns >= 9.2e18 ? INT64_MAX : (int64_t)ns;
}

KVB_API int kvb_index_create(const kvb_index_config *cfg, kvb_index **out)
{
    if (!out)
        return -EINVAL;
    kvb_index_config c;
    int rc = kvb__ix_config_check(cfg, &c);
    if (rc)
        return rc;
    kvb_allocator a = c.allocator;
    kvb__allocator_fill(&a);
    kvb_index *idx = kvb__calloc(&a, 1, sizeof *idx);
    if (!idx)
        return -ENOMEM;
    idx->cfg = c;
    idx->cfg.allocator = a;
    idx->a = a;
    idx->w.memory = sizeof *idx;
    idx->shard_bits = (uint32_t)__builtin_ctz(c.shards);
    idx->match_hold = KVB_IX_HOLD_SINGLE && c.shards == 1;
    idx->stale_ns = ix_secs_to_ns(c.stale_after_s);
    idx->drop_ns = ix_secs_to_ns(c.drop_after_s);
    uint32_t inited = 0;
    bool wmu = false, smu = false;
    if (pthread_mutex_init(&idx->wmu, NULL) != 0)
        goto fail;
    wmu = true;
    if (ix_rwlock_init(&idx->smu) != 0)
        goto fail;
    smu = true;
    /* Shards on their own cache lines: the allocator aligns to 16 bytes only. */
    idx->shards_size = (size_t)c.shards * sizeof *idx->shards + 63;
    idx->shards_raw = kvb__ix_calloc(idx, 1, idx->shards_size);
    if (!idx->shards_raw)
        goto fail;
    idx->shards = (struct kvb_ix_shard *)(((uintptr_t)idx->shards_raw + 63) & ~(uintptr_t)63);
    for (; inited < c.shards; inited++) {
        if (ix_rwlock_init(&idx->shards[inited].lock) != 0)
            goto fail;
        idx->shards[inited].dir_free = KVB_IX_NONE;
        idx->shards[inited].chunk_free = KVB_IX_NONE;
    }
    KVB_ATOMIC_VAR(idx->mstat, sizeof idx->mstat);
    idx->pub = idx->w;
    *out = idx;
    return 0;
fail:
    for (uint32_t i = 0; i < inited; i++)
        pthread_rwlock_destroy(&idx->shards[i].lock);
    if (idx->shards_raw)
        kvb__free(&a, idx->shards_raw, idx->shards_size);
    if (smu)
        pthread_rwlock_destroy(&idx->smu);
    if (wmu)
        pthread_mutex_destroy(&idx->wmu);
    kvb__free(&a, idx, sizeof *idx);
    return -ENOMEM;
}

KVB_API int kvb_index_destroy(kvb_index *idx)
{
    if (!idx)
        return -EINVAL;
    for (uint32_t i = 0; i < idx->tab_cap; i++)
        if (idx->tab[i])
            kvb__ix_stream_free(idx, idx->tab[i]);
    kvb__ix_free(idx, idx->tab, ix_tab_bytes(idx->tab_cap));
    kvb__ix_free(idx, idx->names, (size_t)idx->names_cap * sizeof *idx->names);
    for (uint32_t i = 0; i < idx->cfg.shards; i++) {
        struct kvb_ix_shard *s = &idx->shards[i];
        for (uint32_t j = 0; j < s->dir_top; j++)
            kvb__ix_harr_free(idx, s->dir[j]);
        kvb__ix_free(idx, s->dir, (size_t)s->dir_cap * sizeof *s->dir);
        kvb__ix_free(idx, s->chunks, (size_t)s->chunk_cap * KVB_IX_CHUNK * sizeof *s->chunks);
        kvb__ix_free(idx, s->dir_next, (size_t)s->dir_cap * sizeof *s->dir_next);
        kvb__ix_free(idx, s->cells, (size_t)s->cap * sizeof *s->cells);
        pthread_rwlock_destroy(&s->lock);
    }
    kvb__ix_free(idx, idx->shards_raw, idx->shards_size);
    KVB_ATOMIC_VAR_END(idx->mstat, sizeof idx->mstat);
    pthread_rwlock_destroy(&idx->smu);
    pthread_mutex_destroy(&idx->wmu);
    kvb_allocator a = idx->a;
    kvb__free(&a, idx, sizeof *idx);
    return 0;
}

KVB_API int kvb_index_config_get(const kvb_index *idx, kvb_index_config *out)
{
    if (!idx || !out)
        return -EINVAL;
    *out = idx->cfg;
    return 0;
}

/* ---- keys ------------------------------------------------------------------- */

KVB_API uint64_t kvb_index_salt_key(const char *lora_name, size_t lora_len, const char *cache_salt,
                                    size_t salt_len)
{
    if (!lora_name)
        lora_len = 0;
    if (!cache_salt)
        salt_len = 0;
    if (lora_len == 0 && salt_len == 0)
        return 0;
    return kvb_hash_chain(kvb_hash_salt(lora_name, lora_len), kvb_hash_salt(cache_salt, salt_len)) |
           1;
}

KVB_API uint64_t kvb_index_block_seed(const kvb_index *idx, uint64_t salt_key)
{
    uint64_t seed = idx ? idx->cfg.seed : KVB_HASH_DYNAMO_SEED;
    return salt_key ? kvb_hash_chain(seed, salt_key) : seed;
}

static uint64_t ix_salt_of(const char *lora_name, const char *cache_salt)
{
    return kvb_index_salt_key(lora_name, lora_name ? strlen(lora_name) : 0, cache_salt,
                              cache_salt ? strlen(cache_salt) : 0);
}

KVB_API int kvb_index_hashes(const kvb_index *idx, const uint32_t *tokens, size_t n_tokens,
                             const char *lora_name, const char *cache_salt, uint64_t *out,
                             size_t cap)
{
    if (!idx || (!tokens && n_tokens) || (!out && cap))
        return -EINVAL;
    uint32_t bs = idx->cfg.block_size;
    uint64_t seed = kvb_index_block_seed(idx, ix_salt_of(lora_name, cache_salt));
    size_t n = n_tokens / bs;
    if (n > cap)
        n = cap;
    if (n > INT_MAX)
        n = INT_MAX;
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = kvb_hash_block(tokens + i * bs, bs, seed);
        prev = i == 0 ? b : kvb_hash_chain(prev, b);
        out[i] = prev;
    }
    return (int)n;
}

/* ---- streams ---------------------------------------------------------------- */

static uint64_t ix_name_hash(const char *name, size_t len, int64_t rank)
{
    return XXH3_64bits_withSeed(name, len, (uint64_t)rank);
}

/* Caller holds smu (either mode) or wmu. */
static struct kvb_ix_stream *ix_find(const kvb_index *idx, const char *name, int64_t rank)
{
    if (!idx->names_cap)
        return NULL;
    size_t len = strlen(name);
    uint64_t h = ix_name_hash(name, len, rank);
    uint32_t mask = idx->names_cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        uint32_t v = idx->names[i];
        if (!v)
            return NULL;
        struct kvb_ix_stream *st = idx->tab[v - 1];
        if (st->name_hash == h && st->rank == rank && strcmp(st->name, name) == 0)
            return st;
    }
}

static void names_put(uint32_t *names, uint32_t cap, uint64_t h, uint32_t id)
{
    uint32_t mask = cap - 1, i = (uint32_t)h & mask;
    while (names[i])
        i = (i + 1) & mask;
    names[i] = id + 1;
}

/* Caller holds wmu and smu for writing. */
static void names_delete(kvb_index *idx, uint32_t id)
{
    uint32_t mask = idx->names_cap - 1;
    uint32_t i = (uint32_t)idx->tab[id]->name_hash & mask;
    while (idx->names[i] != id + 1)
        i = (i + 1) & mask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        uint32_t v = idx->names[j];
        if (!v)
            break;
        uint32_t h = (uint32_t)idx->tab[v - 1]->name_hash & mask;
        if (((j - h) & mask) >= ((j - i) & mask)) {
            idx->names[i] = v;
            i = j;
        }
    }
    idx->names[i] = 0;
}

static int ix_stream_cfg_check(const kvb_index_stream_config *cfg)
{
    if (!cfg || !cfg->name)
        return -EINVAL;
    size_t len = strnlen(cfg->name, KVB_INDEX_NAME_MAX);
    if (len == 0 || len >= KVB_INDEX_NAME_MAX)
        return -EINVAL;
    if (cfg->dp_rank < 0 && cfg->dp_rank != KVB_INDEX_NO_RANK)
        return -EINVAL;
    if (cfg->hashes != KVB_INDEX_HASHES_ROUTER && cfg->hashes != KVB_INDEX_HASHES_ENGINE)
        return -EINVAL;
    if (cfg->block_size && (!ix_pow2(cfg->block_size) || cfg->block_size > 1024))
        return -EINVAL;
    return 0;
}

/* Copy a stream's state and entries to the match mirror (caller holds wmu and
 * smu for writing, or owns the index). */
static inline void ix_mirror(kvb_index *idx, const struct kvb_ix_stream *st)
{
    idx->live[st->id].entries = st->entries;
    idx->live[st->id].state = st->state;
}

void kvb__ix_publish(kvb_index *idx, struct kvb_ix_stream *st)
{
    if (st) {
        st->entries = st->w_entries;
        st->engine_n = st->en;
        ix_mirror(idx, st);
    }
    idx->pub = idx->w;
}

/* Add a stream (caller holds wmu): want_id KVB_IX_NONE for the lowest free id. */
static int stream_add_locked(kvb_index *idx, const kvb_index_stream_config *cfg, uint32_t want_id,
                             struct kvb_ix_stream **out)
{
    struct kvb_ix_stream *ex = ix_find(idx, cfg->name, cfg->dp_rank);
    if (ex) {
        *out = ex;
        return -EEXIST;
    }
    if (idx->n_streams >= idx->cfg.max_streams)
        return -ENOSPC;
    uint32_t id = want_id;
    if (id == KVB_IX_NONE) {
        id = idx->id_hint;
        while (id < idx->tab_cap && idx->tab[id])
            id++;
    } else if (id >= idx->cfg.max_streams || kvb__ix_stream(idx, id)) {
        return -EEXIST;
    }
    kvb_assert(id < idx->cfg.max_streams);

    /* Allocate everything first: a failure changes nothing. */
    struct kvb_ix_stream **ntab = NULL;
    uint32_t ntab_cap = idx->tab_cap;
    if (id >= idx->tab_cap) {
        uint64_t c = idx->tab_cap ? (uint64_t)idx->tab_cap * 2 : 16;
        while (c <= id)
            c *= 2;
        if (c > idx->cfg.max_streams)
            c = idx->cfg.max_streams;
        ntab_cap = (uint32_t)c;
        ntab = kvb__ix_calloc(idx, 1, ix_tab_bytes(ntab_cap));
        if (!ntab)
            return -ENOMEM;
    }
    uint32_t *nnames = NULL, nnames_cap = idx->names_cap;
    if ((uint64_t)(idx->n_streams + 1) * 2 > idx->names_cap) {
        nnames_cap = idx->names_cap ? idx->names_cap * 2 : 16;
        nnames = kvb__ix_calloc(idx, nnames_cap, sizeof *nnames);
        if (!nnames) {
            kvb__ix_free(idx, ntab, ix_tab_bytes(ntab_cap));
            return -ENOMEM;
        }
    }
    struct kvb_ix_stream *st = kvb__ix_calloc(idx, 1, sizeof *st);
    if (!st) {
        kvb__ix_free(idx, nnames, (size_t)nnames_cap * sizeof *nnames);
        kvb__ix_free(idx, ntab, ix_tab_bytes(ntab_cap));
        return -ENOMEM;
    }
    size_t len = strlen(cfg->name);
    memcpy(st->name, cfg->name, len + 1);
    st->id = id;
    st->rank = cfg->dp_rank;
    st->kind = cfg->hashes;
    st->block_size = cfg->block_size ? cfg->block_size : idx->cfg.block_size;
    st->name_hash = ix_name_hash(st->name, len, st->rank);
    st->state = KVB_STREAM_LIVE;
    st->last_seq = -1;

    struct kvb_ix_stream **otab = NULL;
    uint32_t otab_cap = 0, *onames = NULL, onames_cap = 0;
    kvb__ix_wrlock(&idx->smu);
    if (ntab) {
        struct kvb_ix_live *nlive = (struct kvb_ix_live *)(ntab + ntab_cap);
        if (idx->tab_cap) {
            memcpy(ntab, idx->tab, (size_t)idx->tab_cap * sizeof *ntab);
            memcpy(nlive, idx->live, (size_t)idx->tab_cap * sizeof *nlive);
        }
        otab = idx->tab;
        otab_cap = idx->tab_cap;
        idx->tab = ntab;
        idx->live = nlive;
        idx->tab_cap = ntab_cap;
    }
    if (nnames) {
        for (uint32_t i = 0; i < idx->names_cap; i++)
            if (idx->names[i])
                names_put(nnames, nnames_cap, idx->tab[idx->names[i] - 1]->name_hash,
                          idx->names[i] - 1);
        onames = idx->names;
        onames_cap = idx->names_cap;
        idx->names = nnames;
        idx->names_cap = nnames_cap;
    }
    idx->tab[id] = st;
    ix_mirror(idx, st);
    names_put(idx->names, idx->names_cap, st->name_hash, id);
    idx->n_streams++;
    if (want_id == KVB_IX_NONE)
        idx->id_hint = id + 1;
    /* No reader can hold the old arrays: they are only read under smu. */
    kvb__ix_free(idx, otab, ix_tab_bytes(otab_cap));
    kvb__ix_free(idx, onames, (size_t)onames_cap * sizeof *onames);
    kvb__ix_publish(idx, NULL);
    kvb__ix_unlock(&idx->smu);
    *out = st;
    return 0;
}

int kvb__ix_stream_add_id(kvb_index *idx, const kvb_index_stream_config *cfg, uint32_t id,
                          struct kvb_ix_stream **out)
{
    int rc = ix_stream_cfg_check(cfg);
    if (rc)
        return rc;
    if (id >= idx->cfg.max_streams)
        return -EINVAL;
    pthread_mutex_lock(&idx->wmu);
    rc = stream_add_locked(idx, cfg, id, out);
    pthread_mutex_unlock(&idx->wmu);
    return rc;
}

KVB_API int kvb_index_stream_add(kvb_index *idx, const kvb_index_stream_config *cfg, uint32_t *out)
{
    if (!idx || !out)
        return -EINVAL;
    int rc = ix_stream_cfg_check(cfg);
    if (rc)
        return rc;
    pthread_mutex_lock(&idx->wmu);
    struct kvb_ix_stream *st = NULL;
    rc = stream_add_locked(idx, cfg, KVB_IX_NONE, &st);
    if (rc == 0 || rc == -EEXIST)
        *out = st->id;
    pthread_mutex_unlock(&idx->wmu);
    return rc;
}

KVB_API int kvb_index_stream_find(const kvb_index *idx, const char *name, int64_t dp_rank,
                                  uint32_t *out)
{
    if (!idx || !name || !out)
        return -EINVAL;
    kvb_index *ix = (kvb_index *)idx; /* locks are mutable state */
    kvb__ix_rdlock(&ix->smu);
    struct kvb_ix_stream *st = ix_find(idx, name, dp_rank);
    if (st)
        *out = st->id;
    kvb__ix_unlock(&ix->smu);
    return st ? 0 : -ENOENT;
}

/* Remove stream st (caller holds wmu). */
static void stream_remove_locked(kvb_index *idx, struct kvb_ix_stream *st)
{
    kvb__ix_stream_clear_entries(idx, st, false);
    kvb__ix_wrlock(&idx->smu);
    names_delete(idx, st->id);
    idx->tab[st->id] = NULL;
    idx->n_streams--;
    if (st->id < idx->id_hint)
        idx->id_hint = st->id;
    kvb__ix_unlock(&idx->smu);
    kvb__ix_stream_free(idx, st);
    kvb__ix_shrink_touched(idx);
    kvb__ix_wrlock(&idx->smu);
    kvb__ix_publish(idx, NULL);
    kvb__ix_unlock(&idx->smu);
}

KVB_API int kvb_index_stream_remove(kvb_index *idx, uint32_t stream)
{
    if (!idx)
        return -EINVAL;
    pthread_mutex_lock(&idx->wmu);
    struct kvb_ix_stream *st = kvb__ix_stream(idx, stream);
    if (st)
        stream_remove_locked(idx, st);
    pthread_mutex_unlock(&idx->wmu);
    return st ? 0 : -ENOENT;
}

KVB_API int kvb_index_worker_remove(kvb_index *idx, const char *name)
{
    if (!idx || !name)
        return -EINVAL;
    int n = 0;
    pthread_mutex_lock(&idx->wmu);
    for (uint32_t i = 0; i < idx->tab_cap; i++) {
        struct kvb_ix_stream *st = idx->tab[i];
        if (st && strcmp(st->name, name) == 0) {
            stream_remove_locked(idx, st);
            n++;
        }
    }
    pthread_mutex_unlock(&idx->wmu);
    return n;
}

static bool ix_state_ok(kvb_stream_state s)
{
    return s == KVB_STREAM_LIVE || s == KVB_STREAM_RESYNCING || s == KVB_STREAM_LAGGING ||
           s == KVB_STREAM_STALE;
}

/* Clear a stream outside an apply, count the clear, set its state (wmu held). */
static void stream_clear_locked(kvb_index *idx, struct kvb_ix_stream *st, kvb_stream_state state)
{
    kvb__ix_stream_clear_entries(idx, st, false);
    kvb__ix_shrink_touched(idx);
    kvb__ix_wrlock(&idx->smu);
    st->counters[KVB_COUNT_CLEARS]++;
    st->state = state;
    kvb__ix_publish(idx, st);
    kvb__ix_unlock(&idx->smu);
}

KVB_API int kvb_index_stream_clear(kvb_index *idx, uint32_t stream, kvb_stream_state state)
{
    if (!idx || !ix_state_ok(state))
        return -EINVAL;
    pthread_mutex_lock(&idx->wmu);
    struct kvb_ix_stream *st = kvb__ix_stream(idx, stream);
    if (st)
        stream_clear_locked(idx, st, state);
    pthread_mutex_unlock(&idx->wmu);
    return st ? 0 : -ENOENT;
}

/* Begin a small update of stream `stream`: wmu and smu (write) held on success;
 * NULL (nothing held) when there is no such stream. */
static struct kvb_ix_stream *ix_update_begin(kvb_index *idx, uint32_t stream)
{
    pthread_mutex_lock(&idx->wmu);
    struct kvb_ix_stream *st = kvb__ix_stream(idx, stream);
    if (!st) {
        pthread_mutex_unlock(&idx->wmu);
        return NULL;
    }
    kvb__ix_wrlock(&idx->smu);
    return st;
}

static int ix_update_end(kvb_index *idx)
{
    kvb__ix_unlock(&idx->smu);
    pthread_mutex_unlock(&idx->wmu);
    return 0;
}

KVB_API int kvb_index_stream_set_state(kvb_index *idx, uint32_t stream, kvb_stream_state state)
{
    if (!idx || !ix_state_ok(state))
        return -EINVAL;
    struct kvb_ix_stream *st = ix_update_begin(idx, stream);
    if (!st)
        return -ENOENT;
    st->state = state;
    ix_mirror(idx, st);
    return ix_update_end(idx);
}

KVB_API int kvb_index_stream_set_seq(kvb_index *idx, uint32_t stream, int64_t last_seq)
{
    if (!idx)
        return -EINVAL;
    struct kvb_ix_stream *st = ix_update_begin(idx, stream);
    if (!st)
        return -ENOENT;
    st->last_seq = last_seq;
    return ix_update_end(idx);
}

KVB_API int kvb_index_stream_count(kvb_index *idx, uint32_t stream, kvb_stream_counter c,
                                   uint64_t delta)
{
    if (!idx || (unsigned)c >= KVB_COUNT_COUNT)
        return -EINVAL;
    struct kvb_ix_stream *st = ix_update_begin(idx, stream);
    if (!st)
        return -ENOENT;
    st->counters[c] += delta;
    return ix_update_end(idx);
}

KVB_API int kvb_index_stream_drop(kvb_index *idx, uint32_t stream,
                                  const uint32_t dropped[KVB_DROP_COUNT])
{
    if (!idx || !dropped)
        return -EINVAL;
    struct kvb_ix_stream *st = ix_update_begin(idx, stream);
    if (!st)
        return -ENOENT;
    for (int i = 0; i < KVB_DROP_COUNT; i++)
        st->dropped[i] += dropped[i];
    return ix_update_end(idx);
}

KVB_API int kvb_index_stream_heard(kvb_index *idx, uint32_t stream, bool connected, int64_t now_ns)
{
    if (!idx)
        return -EINVAL;
    struct kvb_ix_stream *st = ix_update_begin(idx, stream);
    if (!st)
        return -ENOENT;
    if (connected) {
        st->down = false;
        st->drop_done = false;
        st->last_heard_ns = now_ns;
        if (st->state == KVB_STREAM_STALE)
            st->state = KVB_STREAM_LIVE;
        ix_mirror(idx, st);
    } else if (!st->down) {
        st->down = true;
        st->down_since_ns = now_ns;
    }
    return ix_update_end(idx);
}

KVB_API int kvb_index_tick(kvb_index *idx, int64_t now_ns)
{
    if (!idx)
        return -EINVAL;
    int changed = 0;
    pthread_mutex_lock(&idx->wmu);
    for (uint32_t i = 0; i < idx->tab_cap; i++) {
        struct kvb_ix_stream *st = idx->tab[i];
        if (!st || !st->down)
            continue;
        int64_t dt = now_ns - st->down_since_ns;
        if (dt >= idx->drop_ns && !st->drop_done) {
            if (st->state != KVB_STREAM_STALE)
                changed++;
            stream_clear_locked(idx, st, KVB_STREAM_STALE);
            st->drop_done = true;
        } else if (dt >= idx->stale_ns && st->state != KVB_STREAM_STALE) {
            kvb__ix_wrlock(&idx->smu);
            st->state = KVB_STREAM_STALE;
            ix_mirror(idx, st);
            kvb__ix_unlock(&idx->smu);
            changed++;
        }
    }
    pthread_mutex_unlock(&idx->wmu);
    return changed;
}

KVB_API int64_t kvb_index_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

KVB_API int kvb_index_stream_info_get(const kvb_index *idx, uint32_t stream,
                                      kvb_index_stream_info *out)
{
    if (!idx || !out)
        return -EINVAL;
    kvb_index *ix = (kvb_index *)idx;
    kvb__ix_rdlock(&ix->smu);
    const struct kvb_ix_stream *st = kvb__ix_stream(idx, stream);
    if (st) {
        memset(out, 0, sizeof *out);
        out->stream = st->id;
        memcpy(out->worker, st->name, sizeof out->worker);
        out->dp_rank = st->rank;
        out->hashes = st->kind;
        out->block_size = st->block_size;
        out->state = st->state;
        out->last_seq = st->last_seq;
        out->batches = st->batches;
        out->events = st->events;
        memcpy(out->counters, st->counters, sizeof out->counters);
        memcpy(out->dropped, st->dropped, sizeof out->dropped);
        out->entries = st->entries;
        out->engine_map = st->engine_n;
        out->last_heard_ns = st->last_heard_ns;
    }
    kvb__ix_unlock(&ix->smu);
    return st ? 0 : -ENOENT;
}

KVB_API int kvb_index_streams(const kvb_index *idx, uint32_t *ids, uint32_t cap)
{
    if (!idx || (!ids && cap))
        return -EINVAL;
    kvb_index *ix = (kvb_index *)idx;
    uint32_t n = 0;
    kvb__ix_rdlock(&ix->smu);
    for (uint32_t i = 0; i < idx->tab_cap; i++)
        if (idx->tab[i]) {
            if (n < cap)
                ids[n] = i;
            n++;
        }
    kvb__ix_unlock(&ix->smu);
    return (int)n;
}

/* ---- stats and names -------------------------------------------------------- */

KVB_API int kvb_index_stats_get(const kvb_index *idx, kvb_index_stats *out)
{
    if (!idx || !out)
        return -EINVAL;
    kvb_index *ix = (kvb_index *)idx;
    memset(out, 0, sizeof *out);
    kvb__ix_rdlock(&ix->smu);
    out->streams = idx->n_streams;
    out->keys = idx->pub.keys;
    out->entries = idx->pub.entries;
    out->memory_bytes = idx->pub.memory;
    out->batches = idx->pub.batches;
    out->events = idx->pub.events;
    out->block_ops = idx->pub.block_ops;
    kvb__ix_unlock(&ix->smu);
    kvb__ix_match_counts(idx, &out->matches, &out->matched_blocks);
    return 0;
}

KVB_API const char *kvb_stream_state_name(kvb_stream_state s)
{
    switch (s) {
    case KVB_STREAM_LIVE:
        return "live";
    case KVB_STREAM_RESYNCING:
        return "resyncing";
    case KVB_STREAM_LAGGING:
        return "lagging";
    case KVB_STREAM_STALE:
        return "stale";
    }
    return "unknown";
}

KVB_API const char *kvb_drop_reason_name(kvb_drop_reason r)
{
    static const char *const names[KVB_DROP_COUNT] = {
        "malformed", "unknown_type", "group",    "medium",        "multimodal", "unknown_parent",
        "no_tokens", "block_size",   "capacity", "unknown_block", "duplicate"};
    return (unsigned)r < KVB_DROP_COUNT ? names[r] : "unknown";
}

KVB_API const char *kvb_tier_name(kvb_tier t)
{
    switch (t) {
    case KVB_TIER_DEVICE:
        return "device";
    case KVB_TIER_HOST:
        return "host";
    case KVB_TIER_DISK:
        return "disk";
    default:
        return "unknown";
    }
}
