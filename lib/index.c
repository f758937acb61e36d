/*
 * index.c - the fleet index (kvblock/index.h, FLEET.md): which stream (worker,
 * dp_rank) holds which router hash in which tier, built from KV events, and the
 * prefix match a router asks before it places a request. (Snapshots and the
 * Prometheus text: index_snapshot.c.)
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
 * kvb_index_apply is all or nothing under -ENOMEM. Pass 1 (no visible change)
 * computes the router hashes of an ENGINE stream's STORED blocks, counts the
 * keys each shard may gain, grows the stream's maps, the shard tables, chunk
 * arenas and directories for that worst case and allocates every holder array
 * the batch may need (a key with one other holder needs a chunk; a full chunk
 * or array a bigger array). Pass 2 applies the events without allocating
 * (asserted in debug builds), taking arrays from that reserve; what is left of
 * it is freed afterwards. Holders never move to a smaller form inside pass 2
 * except to the inline one; a key this stream may lose and regain within the
 * batch gets its chunk reserved up front.
 * Router hashes inside a batch: an engine hash's router hash is the one it
 * already has (in the stream's map at the start of the batch, or from an
 * earlier STORED of the batch, a CLEARED resetting both); a parent is known
 * under the same rule.
 *
 * Match (FLEET.md section 5): candidates are the matchable holders of
 * hashes[0]; every later hash intersects the candidates still extending their
 * any-tier prefix; per candidate the longest device prefix, device-or-host
 * prefix and any-tier prefix; the walk stops when no candidate extends. Top k
 * by partial selection. Candidates live on the stack (KVB_IX_MATCH_STACK), the
 * heap only beyond.
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

#define KVB_IX_GROUP       16u /* hashes a held match looks up together */
#define KVB_IX_LOCK_RUN    16u /* changes a writer makes per write-lock hold */
#define KVB_IX_MIN_CAP     16u
#define KVB_IX_MATCH_STACK 1024u
#define KVB_IX_CLASSES     24u /* holder array capacities 2^4 .. 2^23 */
#define KVB_IX_APPLY_STACK 8192u

/* ---- helpers ---------------------------------------------------------------- */

static inline uint64_t ix_mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

static inline uint32_t ix_shard_of(const kvb_index *idx, uint64_t m)
{
    return idx->shard_bits ? (uint32_t)(m >> (64 - idx->shard_bits)) : 0;
}

static inline uint32_t ix_home(uint64_t m, uint32_t cap)
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
static inline bool ix_fits(uint32_t cap, uint64_t n)
{
    return n * 100 <= (uint64_t)cap * KVB_IX_LOAD_PCT && (n < cap || n == 0);
}

/* Capacity for n keys at load 0.5 (a table grows 1.6x past load 0.8); 0 when
 * it does not fit a u32. */
static inline uint64_t ix_cap_for(uint64_t n)
{
    uint64_t c = n * 100 / KVB_IX_GROW_PCT + 1;
    if (c < KVB_IX_MIN_CAP)
        c = KVB_IX_MIN_CAP;
    return c > UINT32_MAX ? 0 : c;
}

/* A table far below its load: worth rebuilding smaller. */
static inline bool ix_sparse(uint32_t cap, uint64_t n)
{
    return cap > KVB_IX_MIN_CAP * 4 && n * 8 < cap;
}

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

static inline void ix_wrlock(pthread_rwlock_t *l)
{
    int rc = pthread_rwlock_wrlock(l);
    kvb_assert(rc == 0);
    (void)rc;
}

static inline void ix_rdlock(pthread_rwlock_t *l)
{
    int rc = pthread_rwlock_rdlock(l);
    kvb_assert(rc == 0);
    (void)rc;
}

static inline void ix_unlock(pthread_rwlock_t *l)
{
    int rc = pthread_rwlock_unlock(l);
    kvb_assert(rc == 0);
    (void)rc;
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

/* ---- holder arrays and the reserve ------------------------------------------ */

/* Holder arrays (more than KVB_IX_CHUNK holders): allocations of cap + 1 u32,
 * a[0] = cap (a power of two >= 16), holders from a[1]. */
static inline uint32_t ix_class_of(uint32_t need)
{
    return need <= 16 ? 4 : 32 - (uint32_t)__builtin_clz(need - 1);
}

static uint32_t *harr_alloc(kvb_index *idx, uint32_t cap)
{
    uint32_t *a = kvb__ix_alloc(idx, ((size_t)cap + 1) * sizeof(uint32_t));
    if (a)
        a[0] = cap;
    return a;
}

static void harr_free(kvb_index *idx, uint32_t *a)
{
    if (a)
        kvb__ix_free(idx, a, ((size_t)a[0] + 1) * sizeof(uint32_t));
}

/* Holder arrays allocated by pass 1 of an apply: one stack per capacity class,
 * linked through each array's first holder words (cap >= 16: room for it). */
struct ix_rsv {
    uint32_t *head[KVB_IX_CLASSES];
};

static void ix_rsv_push(struct ix_rsv *r, uint32_t *a)
{
    uint32_t c = ix_class_of(a[0]);
    memcpy(&a[1], &r->head[c], sizeof r->head[c]);
    r->head[c] = a;
}

/* Smallest reserved array of capacity >= need; NULL when none. */
static uint32_t *ix_rsv_take(struct ix_rsv *r, uint32_t need)
{
    if (!r)
        return NULL;
    for (uint32_t c = ix_class_of(need); c < KVB_IX_CLASSES; c++)
        if (r->head[c]) {
            uint32_t *a = r->head[c];
            memcpy(&r->head[c], &a[1], sizeof r->head[c]);
            return a;
        }
    return NULL;
}

static void ix_rsv_free(kvb_index *idx, struct ix_rsv *r)
{
    uint32_t *a;
    while ((a = ix_rsv_take(r, 1)) != NULL)
        harr_free(idx, a);
}

/* ---- shard tables ----------------------------------------------------------- */

static uint32_t shard_find(const struct kvb_ix_shard *s, uint64_t key, uint64_t m)
{
    if (!s->cap)
        return KVB_IX_NONE;
    uint32_t i = ix_home(m, s->cap);
    for (;;) {
        const struct kvb_ix_cell *c = &s->cells[i];
        if (c->n == 0)
            return KVB_IX_NONE;
        if (c->key == key)
            return i;
        i = kvb__cell_next(i, s->cap);
    }
}

static void cells_put(struct kvb_ix_cell *cells, uint32_t cap, const struct kvb_ix_cell *c,
                      uint64_t m)
{
    uint32_t i = ix_home(m, cap);
    while (cells[i].n)
        i = kvb__cell_next(i, cap);
    cells[i] = *c;
}

/* Rebuild shard s with cap cells (>= its keys / 0.8). The new table is built
 * with wmu alone (the old one stays readable) and swapped in under the shard's
 * write lock unless the caller already holds it. */
static int shard_resize(kvb_index *idx, struct kvb_ix_shard *s, uint64_t cap, bool locked)
{
    if (cap == 0 || cap > UINT32_MAX)
        return -ENOMEM;
    struct kvb_ix_cell *nc = kvb__ix_calloc(idx, (size_t)cap, sizeof *nc);
    if (!nc)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->cap; i++)
        if (s->cells[i].n)
            cells_put(nc, (uint32_t)cap, &s->cells[i], ix_mix(s->cells[i].key));
    struct kvb_ix_cell *old = s->cells;
    uint32_t old_cap = s->cap;
    if (!locked)
        ix_wrlock(&s->lock);
    s->cells = nc;
    s->cap = (uint32_t)cap;
    if (!locked)
        ix_unlock(&s->lock);
    kvb__ix_free(idx, old, (size_t)old_cap * sizeof *old);
    return 0;
}

static int shard_reserve(kvb_index *idx, struct kvb_ix_shard *s, uint64_t extra, bool locked)
{
    uint64_t want = (uint64_t)s->keys + extra;
    if (ix_fits(s->cap, want))
        return 0;
    return shard_resize(idx, s, ix_cap_for(want), locked);
}

static void chunks_maybe_compact(kvb_index *idx, struct kvb_ix_shard *s);
static void dir_maybe_compact(kvb_index *idx, struct kvb_ix_shard *s);

/* After removals (never inside pass 2 of an apply): give back what a shard no
 * longer needs. Failures keep the bigger tables. */
static void shard_maybe_shrink(kvb_index *idx, struct kvb_ix_shard *s)
{
    if (ix_sparse(s->cap, s->keys))
        (void)shard_resize(idx, s, ix_cap_for(s->keys), false);
    chunks_maybe_compact(idx, s);
    dir_maybe_compact(idx, s);
}

/* Shrink the shards changed since the last call (wmu held; never inside
 * pass 2 of an apply). */
static void shards_shrink_touched(kvb_index *idx)
{
    for (uint32_t w = 0; w < sizeof idx->touched / sizeof idx->touched[0]; w++)
        while (idx->touched[w]) {
            uint32_t b = (uint32_t)__builtin_ctzll(idx->touched[w]);
            idx->touched[w] &= idx->touched[w] - 1;
            shard_maybe_shrink(idx, &idx->shards[w * 64 + b]);
        }
}

/* Directory room for extra more holder arrays. */
static int dir_reserve(kvb_index *idx, struct kvb_ix_shard *s, uint32_t extra, bool locked)
{
    uint64_t avail = (uint64_t)s->dir_nfree + (s->dir_cap - s->dir_top);
    if (avail >= extra)
        return 0;
    uint64_t cap = ((uint64_t)s->dir_top + extra) * 3 / 2 + 16;
    if (cap > UINT32_MAX)
        return -ENOMEM;
    uint32_t **nd = kvb__ix_calloc(idx, (size_t)cap, sizeof *nd);
    uint32_t *nn = nd ? kvb__ix_alloc(idx, (size_t)cap * sizeof *nn) : NULL;
    if (!nn) {
        kvb__ix_free(idx, nd, (size_t)cap * sizeof *nd);
        return -ENOMEM;
    }
    if (s->dir_top) {
        memcpy(nd, s->dir, (size_t)s->dir_top * sizeof *nd);
        memcpy(nn, s->dir_next, (size_t)s->dir_top * sizeof *nn);
    }
    uint32_t **od = s->dir;
    uint32_t *on = s->dir_next;
    uint32_t oc = s->dir_cap;
    if (!locked)
        ix_wrlock(&s->lock);
    s->dir = nd;
    s->dir_next = nn;
    s->dir_cap = (uint32_t)cap;
    if (!locked)
        ix_unlock(&s->lock);
    kvb__ix_free(idx, od, (size_t)oc * sizeof *od);
    kvb__ix_free(idx, on, (size_t)oc * sizeof *on);
    return 0;
}

static uint32_t dir_take(struct kvb_ix_shard *s)
{
    uint32_t i;
    if (s->dir_free != KVB_IX_NONE) {
        i = s->dir_free;
        s->dir_free = s->dir_next[i];
        s->dir_nfree--;
    } else {
        kvb_assert(s->dir_top < s->dir_cap);
        i = s->dir_top++;
    }
    return i;
}

static void dir_put(struct kvb_ix_shard *s, uint32_t i)
{
    s->dir[i] = NULL;
    s->dir_next[i] = s->dir_free;
    s->dir_free = i;
    s->dir_nfree++;
}

/* Delete cell i: backward shift of the cluster after it. */
static void cell_delete(struct kvb_ix_shard *s, uint32_t i)
{
    uint32_t cap = s->cap, j = i;
    for (;;) {
        j = kvb__cell_next(j, cap);
        struct kvb_ix_cell *cj = &s->cells[j];
        if (cj->n == 0)
            break;
        uint32_t h = ix_home(ix_mix(cj->key), cap);
        if (kvb__cell_dist(h, j, cap) >= kvb__cell_dist(i, j, cap)) {
            s->cells[i] = *cj;
            i = j;
        }
    }
    s->cells[i].n = 0;
    s->cells[i].key = 0;
    s->cells[i].data = 0;
    s->keys--;
}

/* Chunk arena: room for extra more chunks. */
static int chunk_reserve(kvb_index *idx, struct kvb_ix_shard *s, uint32_t extra, bool locked)
{
    uint64_t avail = (uint64_t)s->chunk_nfree + (s->chunk_cap - s->chunk_top);
    if (avail >= extra)
        return 0;
    uint64_t cap = ((uint64_t)s->chunk_top + extra) * 3 / 2 + 64;
    if (cap > UINT32_MAX / KVB_IX_CHUNK)
        return -ENOMEM;
    size_t bytes = (size_t)cap * KVB_IX_CHUNK * sizeof(uint32_t);
    uint32_t *nch = kvb__ix_alloc(idx, bytes);
    if (!nch)
        return -ENOMEM;
    if (s->chunk_top)
        memcpy(nch, s->chunks, (size_t)s->chunk_top * KVB_IX_CHUNK * sizeof *nch);
    uint32_t *old = s->chunks;
    size_t old_bytes = (size_t)s->chunk_cap * KVB_IX_CHUNK * sizeof *old;
    if (!locked)
        ix_wrlock(&s->lock);
    s->chunks = nch;
    s->chunk_cap = (uint32_t)cap;
    if (!locked)
        ix_unlock(&s->lock);
    kvb__ix_free(idx, old, old_bytes);
    return 0;
}

/* A chunk arena mostly free: move the chunks in use to the front of a smaller
 * one and renumber their cells (under the write lock: rare, O(cells)). */
static void chunks_maybe_compact(kvb_index *idx, struct kvb_ix_shard *s)
{
    uint32_t used = s->chunk_top - s->chunk_nfree;
    uint32_t cap = used ? used * 2 + 64 : 0;
    if ((uint64_t)s->chunk_cap <= (uint64_t)cap * 4 + 64)
        return; /* not 4x smaller: not worth a rebuild (and no rebuild loop) */
    uint32_t *nch = NULL;
    if (cap) {
        nch = kvb__ix_alloc(idx, (size_t)cap * KVB_IX_CHUNK * sizeof *nch);
        if (!nch)
            return;
    }
    uint32_t *old = s->chunks;
    size_t old_bytes = (size_t)s->chunk_cap * KVB_IX_CHUNK * sizeof *old;
    ix_wrlock(&s->lock);
    uint32_t j = 0;
    for (uint32_t i = 0; i < s->cap; i++) {
        struct kvb_ix_cell *c = &s->cells[i];
        if (!c->n || !(c->n & KVB_IX_CHK))
            continue;
        memcpy(nch + (size_t)j * KVB_IX_CHUNK, old + (size_t)c->data * KVB_IX_CHUNK,
               KVB_IX_CHUNK * sizeof *nch);
        c->data = j++;
    }
    kvb_assert(j == used);
    s->chunks = nch;
    s->chunk_cap = cap;
    s->chunk_top = used;
    s->chunk_free = KVB_IX_NONE;
    s->chunk_nfree = 0;
    ix_unlock(&s->lock);
    kvb__ix_free(idx, old, old_bytes);
}

/* The same for the directory of holder arrays. */
static void dir_maybe_compact(kvb_index *idx, struct kvb_ix_shard *s)
{
    uint32_t used = s->dir_top - s->dir_nfree;
    uint32_t cap = used ? used * 2 + 16 : 0;
    if ((uint64_t)s->dir_cap <= (uint64_t)cap * 4 + 64)
        return;
    uint32_t **nd = NULL, *nn = NULL;
    if (cap) {
        nd = kvb__ix_alloc(idx, (size_t)cap * sizeof *nd);
        nn = nd ? kvb__ix_alloc(idx, (size_t)cap * sizeof *nn) : NULL;
        if (!nn) {
            kvb__ix_free(idx, nd, (size_t)cap * sizeof *nd);
            return;
        }
    }
    uint32_t **od = s->dir, *on = s->dir_next, oc = s->dir_cap;
    ix_wrlock(&s->lock);
    uint32_t j = 0;
    for (uint32_t i = 0; i < s->cap; i++) {
        struct kvb_ix_cell *c = &s->cells[i];
        if (!c->n || !(c->n & KVB_IX_ARR))
            continue;
        nd[j] = od[c->data];
        c->data = j++;
    }
    kvb_assert(j == used);
    s->dir = nd;
    s->dir_next = nn;
    s->dir_cap = cap;
    s->dir_top = used;
    s->dir_free = KVB_IX_NONE;
    s->dir_nfree = 0;
    ix_unlock(&s->lock);
    kvb__ix_free(idx, od, (size_t)oc * sizeof *od);
    kvb__ix_free(idx, on, (size_t)oc * sizeof *on);
}

static uint32_t chunk_take(struct kvb_ix_shard *s)
{
    uint32_t i;
    if (s->chunk_free != KVB_IX_NONE) {
        i = s->chunk_free;
        s->chunk_free = s->chunks[(size_t)i * KVB_IX_CHUNK];
        s->chunk_nfree--;
    } else {
        kvb_assert(s->chunk_top < s->chunk_cap);
        i = s->chunk_top++;
    }
    return i;
}

static void chunk_put(struct kvb_ix_shard *s, uint32_t i)
{
    s->chunks[(size_t)i * KVB_IX_CHUNK] = s->chunk_free;
    s->chunk_free = i;
    s->chunk_nfree++;
}

static inline uint32_t cell_count(const struct kvb_ix_cell *c)
{
    return c->n & KVB_IX_CNT;
}

/* Holder words of a cell (in place), sorted by stream id. */
static inline uint32_t *cell_words(const struct kvb_ix_shard *s, struct kvb_ix_cell *c)
{
    if (c->n & KVB_IX_ARR)
        return s->dir[c->data] + 1;
    if (c->n & KVB_IX_CHK)
        return s->chunks + (size_t)c->data * KVB_IX_CHUNK;
    return &c->data;
}

static inline const uint32_t *cell_holders(const struct kvb_ix_shard *s,
                                           const struct kvb_ix_cell *c, uint32_t *n)
{
    *n = cell_count(c);
    if (c->n & KVB_IX_ARR)
        return s->dir[c->data] + 1;
    if (c->n & KVB_IX_CHK)
        return s->chunks + (size_t)c->data * KVB_IX_CHUNK;
    return &c->data;
}

/* Position of stream sid among sorted holders h[0..n), or the insertion point
 * with *found false. */
static uint32_t holders_search(const uint32_t *h, uint32_t n, uint32_t sid, bool *found)
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

/* Insert hw at position pos of the n sorted words w into dst (which may be w
 * when it has room). */
static void words_insert(uint32_t *dst, const uint32_t *w, uint32_t n, uint32_t pos, uint32_t hw)
{
    if (dst == w) {
        memmove(dst + pos + 1, w + pos, (size_t)(n - pos) * sizeof *w);
    } else {
        memcpy(dst, w, (size_t)pos * sizeof *w);
        memcpy(dst + pos + 1, w + pos, (size_t)(n - pos) * sizeof *w);
    }
    dst[pos] = hw;
}

/* Add holder word hw (its stream not a holder yet) to occupied cell c of s:
 * inline -> chunk (2..KVB_IX_CHUNK holders) -> array. Caller holds the shard's
 * write lock (locked) or owns the index. Chunks, directory slots and arrays
 * come from what pass 1 reserved; without a reserve (load) they are allocated,
 * which is also the fallback should a reservation be short (a bug, asserted). */
static int holder_add(kvb_index *idx, struct kvb_ix_shard *s, struct kvb_ix_cell *c, uint32_t hw,
                      struct ix_rsv *rsv, bool locked)
{
    uint32_t n = cell_count(c);
    uint32_t *w = cell_words(s, c);
    bool found;
    uint32_t pos = holders_search(w, n, KVB_IX_SID(hw), &found);
    kvb_assert(!found);
    if (!(c->n & (KVB_IX_ARR | KVB_IX_CHK))) {
        kvb_assert(!rsv || s->chunk_nfree || s->chunk_top < s->chunk_cap);
        if (chunk_reserve(idx, s, 1, locked) != 0)
            return -ENOMEM;
        uint32_t k = chunk_take(s);
        uint32_t h0 = c->data, *ch = s->chunks + (size_t)k * KVB_IX_CHUNK;
        ch[0] = pos ? h0 : hw;
        ch[1] = pos ? hw : h0;
        c->data = k;
        c->n = 2 | KVB_IX_CHK;
        return 0;
    }
    if ((c->n & KVB_IX_CHK) && n < KVB_IX_CHUNK) {
        words_insert(w, w, n, pos, hw);
        c->n = (n + 1) | KVB_IX_CHK;
        return 0;
    }
    if ((c->n & KVB_IX_ARR) && n < s->dir[c->data][0]) {
        words_insert(w, w, n, pos, hw);
        c->n = (n + 1) | KVB_IX_ARR;
        return 0;
    }
    /* a new array: from a full chunk or a full array */
    uint32_t *b = ix_rsv_take(rsv, n + 1);
    kvb_assert(b || !rsv);
    if (!b)
        b = harr_alloc(idx, n + 1 <= 16 ? 16 : kvb__next_pow2(n + 1));
    if (!b)
        return -ENOMEM;
    if ((c->n & KVB_IX_CHK) && dir_reserve(idx, s, 1, locked) != 0) {
        harr_free(idx, b);
        return -ENOMEM;
    }
    words_insert(b + 1, w, n, pos, hw);
    if (c->n & KVB_IX_CHK) {
        chunk_put(s, c->data);
        c->data = dir_take(s);
    } else {
        harr_free(idx, s->dir[c->data]);
    }
    s->dir[c->data] = b;
    c->n = (n + 1) | KVB_IX_ARR;
    return 0;
}

/* Remove the holder at position pos of cell ci (caller holds the write lock);
 * one holder left goes back inline. Never allocates. */
static void holder_remove(kvb_index *idx, struct kvb_ix_shard *s, uint32_t ci, uint32_t pos)
{
    struct kvb_ix_cell *c = &s->cells[ci];
    if (!(c->n & (KVB_IX_ARR | KVB_IX_CHK))) {
        cell_delete(s, ci);
        return;
    }
    uint32_t n = cell_count(c), flag = c->n & (KVB_IX_ARR | KVB_IX_CHK);
    uint32_t *w = cell_words(s, c);
    memmove(w + pos, w + pos + 1, (size_t)(n - pos - 1) * sizeof *w);
    n--;
    if (n > 1) {
        c->n = n | flag;
        return;
    }
    uint32_t last = w[0];
    if (flag == KVB_IX_CHK) {
        chunk_put(s, c->data);
    } else {
        harr_free(idx, s->dir[c->data]);
        dir_put(s, c->data);
    }
    c->data = last;
    c->n = 1;
}

/* Set stream sid's tier mask on key (mask 0: remove it as a holder), creating
 * or deleting the cell as needed. Caller holds the shard's write lock when
 * locked. -ENOMEM only when the reserve was short (a bug) and allocation fails. */
static int global_set(kvb_index *idx, struct kvb_ix_shard *s, uint64_t key, uint64_t m,
                      uint32_t sid, uint32_t mask, struct ix_rsv *rsv, bool locked)
{
    uint32_t hw = sid << KVB_IX_TIER_SHIFT | mask;
    uint32_t si = (uint32_t)(s - idx->shards);
    idx->touched[si >> 6] |= 1ull << (si & 63);
    uint32_t ci = shard_find(s, key, m);
    if (ci == KVB_IX_NONE) {
        if (!mask)
            return 0;
        if (shard_reserve(idx, s, 1, locked) != 0)
            return -ENOMEM;
        struct kvb_ix_cell nc = {.key = key, .n = 1, .data = hw};
        cells_put(s->cells, s->cap, &nc, m);
        s->keys++;
        idx->w.keys++;
        idx->w.entries++;
        return 0;
    }
    struct kvb_ix_cell *c = &s->cells[ci];
    uint32_t *w = cell_words(s, c);
    bool found;
    uint32_t pos = holders_search(w, cell_count(c), sid, &found);
    if (found) {
        if (mask) {
            w[pos] = hw;
        } else {
            bool last = cell_count(c) == 1;
            holder_remove(idx, s, ci, pos);
            idx->w.entries--;
            if (last)
                idx->w.keys--;
        }
        return 0;
    }
    if (!mask)
        return 0;
    int rc = holder_add(idx, s, c, hw, rsv, locked);
    if (rc == 0)
        idx->w.entries++;
    return rc;
}

/* ---- per-stream reverse map ------------------------------------------------- */

static uint32_t rev_find(const struct kvb_ix_stream *st, uint64_t key, uint64_t m)
{
    if (!st->rcap)
        return KVB_IX_NONE;
    uint32_t i = ix_home(m, st->rcap);
    for (;;) {
        if (st->rc[i] == 0)
            return KVB_IX_NONE;
        if (st->rk[i] == key)
            return i;
        i = kvb__cell_next(i, st->rcap);
    }
}

static void rev_put_new(struct kvb_ix_stream *st, uint64_t key, uint64_t m, uint32_t counts)
{
    uint32_t i = ix_home(m, st->rcap);
    while (st->rc[i])
        i = kvb__cell_next(i, st->rcap);
    st->rk[i] = key;
    st->rc[i] = counts;
    st->rn++;
}

static void rev_delete(struct kvb_ix_stream *st, uint32_t i)
{
    uint32_t cap = st->rcap, j = i;
    for (;;) {
        j = kvb__cell_next(j, cap);
        if (st->rc[j] == 0)
            break;
        uint32_t h = ix_home(ix_mix(st->rk[j]), cap);
        if (kvb__cell_dist(h, j, cap) >= kvb__cell_dist(i, j, cap)) {
            st->rk[i] = st->rk[j];
            st->rc[i] = st->rc[j];
            i = j;
        }
    }
    st->rc[i] = 0;
    st->rk[i] = 0;
    st->rn--;
}

static void rev_free(kvb_index *idx, struct kvb_ix_stream *st)
{
    kvb__ix_free(idx, st->rk, (size_t)st->rcap * sizeof *st->rk);
    kvb__ix_free(idx, st->rc, (size_t)st->rcap * sizeof *st->rc);
    st->rk = NULL;
    st->rc = NULL;
    st->rcap = st->rn = 0;
}

static int rev_resize(kvb_index *idx, struct kvb_ix_stream *st, uint64_t cap)
{
    if (cap == 0)
        return -ENOMEM;
    uint64_t *nk = kvb__ix_alloc(idx, (size_t)cap * sizeof *nk);
    uint32_t *nc = nk ? kvb__ix_calloc(idx, (size_t)cap, sizeof *nc) : NULL;
    if (!nc) {
        kvb__ix_free(idx, nk, (size_t)cap * sizeof *nk);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < st->rcap; i++)
        if (st->rc[i]) {
            uint32_t j = ix_home(ix_mix(st->rk[i]), (uint32_t)cap);
            while (nc[j])
                j = kvb__cell_next(j, (uint32_t)cap);
            nk[j] = st->rk[i];
            nc[j] = st->rc[i];
        }
    uint32_t n = st->rn;
    rev_free(idx, st);
    st->rk = nk;
    st->rc = nc;
    st->rcap = (uint32_t)cap;
    st->rn = n;
    return 0;
}

static int rev_reserve(kvb_index *idx, struct kvb_ix_stream *st, uint64_t extra)
{
    uint64_t want = (uint64_t)st->rn + extra;
    if (want > idx->cfg.max_entries_per_stream)
        want = idx->cfg.max_entries_per_stream; /* keys <= entries <= the bound */
    if (want < (uint64_t)st->rn + (extra ? 1 : 0))
        want = (uint64_t)st->rn + (extra ? 1 : 0);
    if (ix_fits(st->rcap, want))
        return 0;
    return rev_resize(idx, st, ix_cap_for(want));
}

/* ---- per-stream engine map -------------------------------------------------- */

static uint32_t eng_find(const struct kvb_ix_stream *st, uint64_t e, uint64_t m)
{
    if (!st->ecap)
        return KVB_IX_NONE;
    uint32_t i = ix_home(m, st->ecap);
    for (;;) {
        if (st->ec[i] == 0)
            return KVB_IX_NONE;
        if (st->ek[i] == e)
            return i;
        i = kvb__cell_next(i, st->ecap);
    }
}

static void eng_put_new(struct kvb_ix_stream *st, uint64_t e, uint64_t m, uint64_t r,
                        uint32_t copies)
{
    uint32_t i = ix_home(m, st->ecap);
    while (st->ec[i])
        i = kvb__cell_next(i, st->ecap);
    st->ek[i] = e;
    st->er[i] = r;
    st->ec[i] = copies;
    st->en++;
}

static void eng_delete(struct kvb_ix_stream *st, uint32_t i)
{
    uint32_t cap = st->ecap, j = i;
    for (;;) {
        j = kvb__cell_next(j, cap);
        if (st->ec[j] == 0)
            break;
        uint32_t h = ix_home(ix_mix(st->ek[j]), cap);
        if (kvb__cell_dist(h, j, cap) >= kvb__cell_dist(i, j, cap)) {
            st->ek[i] = st->ek[j];
            st->er[i] = st->er[j];
            st->ec[i] = st->ec[j];
            i = j;
        }
    }
    st->ec[i] = 0;
    st->ek[i] = st->er[i] = 0;
    st->en--;
}

static void eng_free(kvb_index *idx, struct kvb_ix_stream *st)
{
    kvb__ix_free(idx, st->ek, (size_t)st->ecap * sizeof *st->ek);
    kvb__ix_free(idx, st->er, (size_t)st->ecap * sizeof *st->er);
    kvb__ix_free(idx, st->ec, (size_t)st->ecap * sizeof *st->ec);
    st->ek = st->er = NULL;
    st->ec = NULL;
    st->ecap = st->en = 0;
}

static int eng_resize(kvb_index *idx, struct kvb_ix_stream *st, uint64_t cap)
{
    if (cap == 0)
        return -ENOMEM;
    uint64_t *nk = kvb__ix_alloc(idx, (size_t)cap * sizeof *nk);
    uint64_t *nr = nk ? kvb__ix_alloc(idx, (size_t)cap * sizeof *nr) : NULL;
    uint32_t *nc = nr ? kvb__ix_calloc(idx, (size_t)cap, sizeof *nc) : NULL;
    if (!nc) {
        kvb__ix_free(idx, nk, (size_t)cap * sizeof *nk);
        kvb__ix_free(idx, nr, (size_t)cap * sizeof *nr);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < st->ecap; i++)
        if (st->ec[i]) {
            uint32_t j = ix_home(ix_mix(st->ek[i]), (uint32_t)cap);
            while (nc[j])
                j = kvb__cell_next(j, (uint32_t)cap);
            nk[j] = st->ek[i];
            nr[j] = st->er[i];
            nc[j] = st->ec[i];
        }
    uint32_t n = st->en;
    eng_free(idx, st);
    st->ek = nk;
    st->er = nr;
    st->ec = nc;
    st->ecap = (uint32_t)cap;
    st->en = n;
    return 0;
}

static int eng_reserve(kvb_index *idx, struct kvb_ix_stream *st, uint64_t extra)
{
    uint64_t want = (uint64_t)st->en + extra;
    if (want > idx->cfg.max_entries_per_stream)
        want = idx->cfg.max_entries_per_stream; /* the engine map's own bound */
    if (want < (uint64_t)st->en + (extra ? 1 : 0))
        want = (uint64_t)st->en + (extra ? 1 : 0);
    if (ix_fits(st->ecap, want))
        return 0;
    return eng_resize(idx, st, ix_cap_for(want));
}

/* Rebuild a stream's maps smaller when they are mostly empty (failure: keep). */
static void stream_maybe_shrink(kvb_index *idx, struct kvb_ix_stream *st)
{
    if (st->rn == 0 && st->rcap > KVB_IX_MIN_CAP * 4)
        rev_free(idx, st);
    else if (ix_sparse(st->rcap, st->rn))
        (void)rev_resize(idx, st, ix_cap_for(st->rn));
    if (st->en == 0 && st->ecap > KVB_IX_MIN_CAP * 4)
        eng_free(idx, st);
    else if (ix_sparse(st->ecap, st->en))
        (void)eng_resize(idx, st, ix_cap_for(st->en));
}

/* The write lock of shard s for the next change, keeping the one held when it
 * is the same shard, for at most KVB_IX_LOCK_RUN changes in a row: a match
 * waits for a few changes at most, however long the event or the clear. */
static inline struct kvb_ix_shard *ix_wlock_for(struct kvb_ix_shard *s, struct kvb_ix_shard *held,
                                                uint32_t *run)
{
    if (s == held && ++*run < KVB_IX_LOCK_RUN)
        return held;
    if (held)
        ix_unlock(&held->lock);
    ix_wrlock(&s->lock);
    *run = 0;
    return s;
}

/* Remove every holder of stream st from the key table and empty its maps
 * (keep_capacity: inside an apply, whose reservation must stay valid). */
static void stream_clear_entries(kvb_index *idx, struct kvb_ix_stream *st, bool keep_capacity)
{
    struct kvb_ix_shard *held = NULL;
    uint32_t run = 0;
    for (uint32_t i = 0; i < st->rcap && st->rn; i++) {
        if (!st->rc[i])
            continue;
        uint64_t key = st->rk[i], m = ix_mix(key);
        struct kvb_ix_shard *s = &idx->shards[ix_shard_of(idx, m)];
        held = ix_wlock_for(s, held, &run);
        int rc = global_set(idx, s, key, m, st->id, 0, NULL, true);
        kvb_assert(rc == 0); /* removal never allocates */
        (void)rc;
    }
    if (held)
        ix_unlock(&held->lock);
    if (keep_capacity) {
        if (st->rcap)
            memset(st->rc, 0, (size_t)st->rcap * sizeof *st->rc);
        if (st->ecap)
            memset(st->ec, 0, (size_t)st->ecap * sizeof *st->ec);
        st->rn = st->en = 0;
    } else {
        rev_free(idx, st);
        eng_free(idx, st);
    }
    st->w_entries = 0;
}

/* ---- load (index_snapshot.c builds a fresh index it owns alone) ------------- */

int kvb__ix_load_reserve(kvb_index *idx, struct kvb_ix_stream *st, uint64_t keys, uint64_t eng)
{
    int rc = rev_reserve(idx, st, keys);
    return rc ? rc : eng_reserve(idx, st, eng);
}

int kvb__ix_load_key(kvb_index *idx, struct kvb_ix_stream *st, uint64_t key, uint32_t counts)
{
    uint64_t m = ix_mix(key);
    uint32_t mask = kvb__ix_mask_of(counts);
    if (!mask || rev_find(st, key, m) != KVB_IX_NONE)
        return -EEXIST;
    int rc = rev_reserve(idx, st, 1);
    if (rc)
        return rc;
    rc = global_set(idx, &idx->shards[ix_shard_of(idx, m)], key, m, st->id, mask, NULL, false);
    if (rc)
        return rc;
    rev_put_new(st, key, m, counts);
    st->w_entries += (uint32_t)__builtin_popcount(mask);
    return 0;
}

int kvb__ix_load_engine(kvb_index *idx, struct kvb_ix_stream *st, uint64_t e, uint64_t r,
                        uint32_t copies)
{
    uint64_t m = ix_mix(e);
    if (!copies || eng_find(st, e, m) != KVB_IX_NONE)
        return -EEXIST;
    int rc = eng_reserve(idx, st, 1);
    if (rc)
        return rc;
    eng_put_new(st, e, m, r, copies);
    return 0;
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

static void stream_free(kvb_index *idx, struct kvb_ix_stream *st)
{
    rev_free(idx, st);
    eng_free(idx, st);
    kvb__ix_free(idx, st, sizeof *st);
}

KVB_API int kvb_index_destroy(kvb_index *idx)
{
    if (!idx)
        return -EINVAL;
    for (uint32_t i = 0; i < idx->tab_cap; i++)
        if (idx->tab[i])
            stream_free(idx, idx->tab[i]);
    kvb__ix_free(idx, idx->tab, ix_tab_bytes(idx->tab_cap));
    kvb__ix_free(idx, idx->names, (size_t)idx->names_cap * sizeof *idx->names);
    for (uint32_t i = 0; i < idx->cfg.shards; i++) {
        struct kvb_ix_shard *s = &idx->shards[i];
        for (uint32_t j = 0; j < s->dir_top; j++)
            harr_free(idx, s->dir[j]);
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

static struct kvb_ix_stream *ix_stream(const kvb_index *idx, uint32_t id)
{
    return id < idx->tab_cap ? idx->tab[id] : NULL;
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
    } else if (id >= idx->cfg.max_streams || ix_stream(idx, id)) {
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
    ix_wrlock(&idx->smu);
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
    ix_unlock(&idx->smu);
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
    ix_rdlock(&ix->smu);
    struct kvb_ix_stream *st = ix_find(idx, name, dp_rank);
    if (st)
        *out = st->id;
    ix_unlock(&ix->smu);
    return st ? 0 : -ENOENT;
}

/* Remove stream st (caller holds wmu). */
static void stream_remove_locked(kvb_index *idx, struct kvb_ix_stream *st)
{
    stream_clear_entries(idx, st, false);
    ix_wrlock(&idx->smu);
    names_delete(idx, st->id);
    idx->tab[st->id] = NULL;
    idx->n_streams--;
    if (st->id < idx->id_hint)
        idx->id_hint = st->id;
    ix_unlock(&idx->smu);
    stream_free(idx, st);
    shards_shrink_touched(idx);
    ix_wrlock(&idx->smu);
    kvb__ix_publish(idx, NULL);
    ix_unlock(&idx->smu);
}

KVB_API int kvb_index_stream_remove(kvb_index *idx, uint32_t stream)
{
    if (!idx)
        return -EINVAL;
    pthread_mutex_lock(&idx->wmu);
    struct kvb_ix_stream *st = ix_stream(idx, stream);
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
    stream_clear_entries(idx, st, false);
    shards_shrink_touched(idx);
    ix_wrlock(&idx->smu);
    st->counters[KVB_COUNT_CLEARS]++;
    st->state = state;
    kvb__ix_publish(idx, st);
    ix_unlock(&idx->smu);
}

KVB_API int kvb_index_stream_clear(kvb_index *idx, uint32_t stream, kvb_stream_state state)
{
    if (!idx || !ix_state_ok(state))
        return -EINVAL;
    pthread_mutex_lock(&idx->wmu);
    struct kvb_ix_stream *st = ix_stream(idx, stream);
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
    struct kvb_ix_stream *st = ix_stream(idx, stream);
    if (!st) {
        pthread_mutex_unlock(&idx->wmu);
        return NULL;
    }
    ix_wrlock(&idx->smu);
    return st;
}

static int ix_update_end(kvb_index *idx)
{
    ix_unlock(&idx->smu);
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
            ix_wrlock(&idx->smu);
            st->state = KVB_STREAM_STALE;
            ix_mirror(idx, st);
            ix_unlock(&idx->smu);
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
    ix_rdlock(&ix->smu);
    const struct kvb_ix_stream *st = ix_stream(idx, stream);
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
    ix_unlock(&ix->smu);
    return st ? 0 : -ENOENT;
}

KVB_API int kvb_index_streams(const kvb_index *idx, uint32_t *ids, uint32_t cap)
{
    if (!idx || (!ids && cap))
        return -EINVAL;
    kvb_index *ix = (kvb_index *)idx;
    uint32_t n = 0;
    ix_rdlock(&ix->smu);
    for (uint32_t i = 0; i < idx->tab_cap; i++)
        if (idx->tab[i]) {
            if (n < cap)
                ids[n] = i;
            n++;
        }
    ix_unlock(&ix->smu);
    return (int)n;
}

/* ---- apply ------------------------------------------------------------------ */

/* Batch-local map of pass 1: engine hash -> index in rh of its latest STORED
 * since the last CLEARED (gen). */
struct ix_lent {
    uint64_t e;
    uint32_t k1; /* rh index + 1; 0: empty */
    uint32_t gen;
};

struct ix_apply {
    uint8_t *evst; /* per event: 0 apply, else kvb_drop_reason + 1 for all its blocks */
    uint64_t *rh;  /* router hashes of an ENGINE stream's STORED blocks, in order */
    struct ix_lent *lmap;
    uint32_t lcap; /* power of two */
    struct ix_rsv rsv;
    void *heap;
    size_t heap_size;
    uint32_t cnt[1024];  /* per shard: keys the batch may add */
    uint32_t dcnt[1024]; /* per shard: holder arrays reserved (directory slots) */
    uint32_t ccnt[1024]; /* per shard: chunks the batch may take */
    _Alignas(16) unsigned char stack[KVB_IX_APPLY_STACK];
};

static int ix_event_check(const kvb_index_event *ev)
{
    if (ev->type == KVB_INDEX_EV_CLEARED)
        return 0;
    if (ev->type != KVB_INDEX_EV_STORED && ev->type != KVB_INDEX_EV_REMOVED)
        return -EINVAL;
    if ((unsigned)ev->tier >= KVB_TIER_COUNT)
        return -EINVAL;
    if (ev->n_hashes && !ev->hashes)
        return -EINVAL;
    if (ev->type == KVB_INDEX_EV_STORED && ev->n_tokens && !ev->tokens)
        return -EINVAL;
    return 0;
}

/* Drops that do not depend on the index's state: 0 or reason + 1. */
static uint8_t ix_static_drop(const kvb_index *idx, const struct kvb_ix_stream *st,
                              const kvb_index_event *ev)
{
    if (ev->type != KVB_INDEX_EV_STORED || ev->n_hashes == 0)
        return 0;
    uint32_t bs = ev->block_size ? ev->block_size : st->block_size;
    if (bs != st->block_size)
        return KVB_DROP_BLOCK_SIZE + 1;
    if (st->kind == KVB_INDEX_HASHES_ENGINE) {
        if (bs != idx->cfg.block_size)
            return KVB_DROP_BLOCK_SIZE + 1;
        uint64_t need = (uint64_t)ev->n_hashes * bs;
        if (ev->n_tokens < need)
            return KVB_DROP_NO_TOKENS + 1;
        if (ev->n_tokens > need)
            return KVB_DROP_MALFORMED + 1;
    }
    return 0;
}

static struct ix_lent *lmap_slot(struct ix_apply *ap, uint64_t e)
{
    uint32_t mask = ap->lcap - 1, i = (uint32_t)ix_mix(e) & mask;
    while (ap->lmap[i].k1 && ap->lmap[i].e != e)
        i = (i + 1) & mask;
    return &ap->lmap[i];
}

/* Router hash of engine hash e as known at this point of pass 1. */
static bool p1_lookup(const struct ix_apply *ap, const struct kvb_ix_stream *st, bool map_on,
                      uint32_t gen, uint64_t e, uint64_t *r)
{
    struct ix_lent *le = lmap_slot((struct ix_apply *)ap, e);
    if (le->k1 && le->gen == gen) {
        *r = ap->rh[le->k1 - 1];
        return true;
    }
    if (map_on) {
        uint32_t i = eng_find(st, e, ix_mix(e));
        if (i != KVB_IX_NONE) {
            *r = st->er[i];
            return true;
        }
    }
    return false;
}

#define KVB_IX_NEED_CHUNK 1u

/* What pass 2 may need to add stream sid as a holder of key: 0 nothing,
 * KVB_IX_NEED_CHUNK a chunk, or the capacity of a new holder array.
 * seen_removal: an earlier event of the batch may have taken the stream's
 * holder away (one other holder left: the cell went back inline). The other
 * holders cannot change during the batch (writers are serialised). */
static uint32_t p1_need(const kvb_index *idx, uint32_t sid, uint64_t key, uint64_t m,
                        bool seen_removal, bool *absent)
{
    const struct kvb_ix_shard *s = &idx->shards[ix_shard_of(idx, m)];
    uint32_t ci = shard_find(s, key, m);
    *absent = ci == KVB_IX_NONE;
    if (ci == KVB_IX_NONE)
        return 0;
    const struct kvb_ix_cell *c = &s->cells[ci];
    uint32_t n;
    const uint32_t *h = cell_holders(s, c, &n);
    bool holds;
    (void)holders_search(h, n, sid, &holds);
    uint32_t o = n - (holds ? 1 : 0);
    if (o == 0)
        return 0;
    if (holds) /* in place, or from inline again after a removal */
        return seen_removal && o == 1 ? KVB_IX_NEED_CHUNK : 0;
    if (!(c->n & (KVB_IX_ARR | KVB_IX_CHK)))
        return KVB_IX_NEED_CHUNK;
    if (c->n & KVB_IX_CHK)
        return o < KVB_IX_CHUNK ? 0 : 16;
    uint32_t cap = s->dir[c->data][0];
    return cap >= o + 1 ? 0 : kvb__next_pow2(o + 1);
}

static void ap_release(kvb_index *idx, struct ix_apply *ap)
{
    ix_rsv_free(idx, &ap->rsv);
    if (ap->heap)
        kvb__ix_free(idx, ap->heap, ap->heap_size);
    ap->heap = NULL;
}

/* Pass 1: compute, reserve, allocate; nothing visible changes. */
static int apply_prepare(kvb_index *idx, struct kvb_ix_stream *st, const kvb_index_event *events,
                         uint32_t n, struct ix_apply *ap)
{
    bool engine = st->kind == KVB_INDEX_HASHES_ENGINE;
    uint64_t n_stored = 0;
    for (uint32_t e = 0; e < n; e++)
        if (events[e].type == KVB_INDEX_EV_STORED && !ix_static_drop(idx, st, &events[e]))
            n_stored += events[e].n_hashes;
    uint64_t n_eng = engine ? n_stored : 0;
    uint64_t lcap = 0;
    if (n_eng) {
        lcap = 16;
        while (lcap < 2 * n_eng)
            lcap *= 2;
    }
    size_t sz_ev = ((size_t)n + 15) & ~(size_t)15;
    uint64_t total = sz_ev + n_eng * sizeof(uint64_t) + lcap * sizeof(struct ix_lent);
    if (total > SIZE_MAX / 2 || lcap > UINT32_MAX || n_stored > UINT32_MAX)
        return -ENOMEM;
    unsigned char *mem = ap->stack;
    if (total > sizeof ap->stack) {
        mem = kvb__ix_alloc(idx, (size_t)total);
        if (!mem)
            return -ENOMEM;
        ap->heap = mem;
        ap->heap_size = (size_t)total;
    }
    ap->evst = mem;
    ap->lmap = (struct ix_lent *)(mem + sz_ev);
    ap->rh = (uint64_t *)(mem + sz_ev + lcap * sizeof(struct ix_lent));
    ap->lcap = (uint32_t)lcap;
    if (lcap)
        memset(ap->lmap, 0, lcap * sizeof *ap->lmap);

    /* Event drops, and an ENGINE stream's router hashes. */
    bool map_on = true;
    uint32_t gen = 0, k = 0;
    for (uint32_t e = 0; e < n; e++) {
        const kvb_index_event *ev = &events[e];
        ap->evst[e] = ix_static_drop(idx, st, ev);
        if (ev->type == KVB_INDEX_EV_CLEARED) {
            map_on = false;
            gen++;
        }
        if (!engine || ev->type != KVB_INDEX_EV_STORED || ap->evst[e] || !ev->n_hashes)
            continue;
        uint64_t prev = 0;
        if (ev->has_parent && !p1_lookup(ap, st, map_on, gen, ev->parent, &prev)) {
            ap->evst[e] = KVB_DROP_UNKNOWN_PARENT + 1;
            continue;
        }
        uint64_t seed = kvb_index_block_seed(idx, ev->salt_key);
        uint32_t bs = st->block_size;
        for (uint32_t b = 0; b < ev->n_hashes; b++) {
            uint64_t eh = ev->hashes[b], r;
            if (!p1_lookup(ap, st, map_on, gen, eh, &r)) {
                uint64_t bh = kvb_hash_block(ev->tokens + (size_t)b * bs, bs, seed);
                r = (b == 0 && !ev->has_parent) ? bh : kvb_hash_chain(prev, bh);
            }
            ap->rh[k] = r;
            struct ix_lent *le = lmap_slot(ap, eh);
            le->e = eh;
            le->k1 = k + 1;
            le->gen = gen;
            k++;
            prev = r;
        }
    }

    /* Keys each shard may gain, holder arrays pass 2 may need. */
    uint32_t nsh = idx->cfg.shards;
    memset(ap->cnt, 0, nsh * sizeof ap->cnt[0]);
    memset(ap->dcnt, 0, nsh * sizeof ap->dcnt[0]);
    memset(ap->ccnt, 0, nsh * sizeof ap->ccnt[0]);
    bool seen_removal = false;
    k = 0;
    uint64_t n_keys_max = 0;
    int rc = 0;
    for (uint32_t e = 0; e < n && rc == 0; e++) {
        const kvb_index_event *ev = &events[e];
        if (ev->type != KVB_INDEX_EV_STORED) {
            seen_removal = true;
            continue;
        }
        if (ap->evst[e])
            continue;
        const uint64_t *keys = engine ? ap->rh + k : ev->hashes;
        k += engine ? ev->n_hashes : 0;
        for (uint32_t b = 0; b < ev->n_hashes; b++) {
            if (b + 4 < ev->n_hashes) {
                /* what this block's commit will touch, a few blocks ahead */
                uint64_t pm = ix_mix(keys[b + 4]);
                const struct kvb_ix_shard *ps = &idx->shards[ix_shard_of(idx, pm)];
                if (ps->cap)
                    __builtin_prefetch(&ps->cells[ix_home(pm, ps->cap)]);
                if (st->rcap)
                    __builtin_prefetch(&st->rk[ix_home(pm, st->rcap)]);
            }
            uint64_t key = keys[b], m = ix_mix(key);
            uint32_t s = ix_shard_of(idx, m);
            bool absent;
            uint32_t need = p1_need(idx, st->id, key, m, seen_removal, &absent);
            n_keys_max++;
            if (absent)
                ap->cnt[s]++;
            if (need == KVB_IX_NEED_CHUNK) {
                ap->ccnt[s]++;
            } else if (need) {
                uint32_t *a = harr_alloc(idx, need);
                if (!a) {
                    rc = -ENOMEM;
                    break;
                }
                ix_rsv_push(&ap->rsv, a);
                ap->dcnt[s]++;
            }
        }
    }
    if (rc == 0)
        rc = rev_reserve(idx, st, n_keys_max);
    if (rc == 0 && engine)
        rc = eng_reserve(idx, st, n_keys_max);
    for (uint32_t s = 0; s < nsh && rc == 0; s++) {
        if (ap->cnt[s])
            rc = shard_reserve(idx, &idx->shards[s], ap->cnt[s], false);
        if (rc == 0 && ap->dcnt[s])
            rc = dir_reserve(idx, &idx->shards[s], ap->dcnt[s], false);
        if (rc == 0 && ap->ccnt[s])
            rc = chunk_reserve(idx, &idx->shards[s], ap->ccnt[s], false);
    }
    if (rc) {
        ap_release(idx, ap);
        return rc;
    }
    return 0;
}

struct ix_commit {
    uint64_t dropped[KVB_DROP_COUNT];
    uint64_t clears, block_ops;
};

static void commit_stored(kvb_index *idx, struct kvb_ix_stream *st, const kvb_index_event *ev,
                          struct ix_apply *ap, uint32_t *k, struct ix_commit *cm)
{
    bool engine = st->kind == KVB_INDEX_HASHES_ENGINE;
    uint32_t t = ev->tier, sh = KVB_IX_COUNT_BITS * t;
    uint64_t max = idx->cfg.max_entries_per_stream;
    struct kvb_ix_shard *held = NULL;
    uint32_t run = 0;
    for (uint32_t b = 0; b < ev->n_hashes; b++) {
        uint64_t key = engine ? ap->rh[(*k)++] : ev->hashes[b], m = ix_mix(key);
        uint32_t ri = rev_find(st, key, m);
        uint32_t counts = ri == KVB_IX_NONE ? 0 : st->rc[ri];
        uint32_t c = kvb__ix_count(counts, t);
        uint32_t ei = KVB_IX_NONE;
        uint64_t em = 0;
        if (engine) {
            em = ix_mix(ev->hashes[b]);
            ei = eng_find(st, ev->hashes[b], em);
            kvb_assert(ei == KVB_IX_NONE || st->er[ei] == key);
            if (ei == KVB_IX_NONE && st->en >= max) {
                cm->dropped[KVB_DROP_CAPACITY]++;
                continue;
            }
        }
        if (c == KVB_IX_COUNT_MAX || (c == 0 && st->w_entries >= max)) {
            cm->dropped[KVB_DROP_CAPACITY]++;
            continue;
        }
        /* Room in the stream's maps (reserved by pass 1; the checks only guard
         * against a reservation bug, never allocate then). */
        if ((ri == KVB_IX_NONE && rev_reserve(idx, st, 1) != 0) ||
            (engine && ei == KVB_IX_NONE && eng_reserve(idx, st, 1) != 0)) {
            kvb_assert(0);
            cm->dropped[KVB_DROP_CAPACITY]++;
            continue;
        }
        if (c == 0) {
            struct kvb_ix_shard *s = &idx->shards[ix_shard_of(idx, m)];
            held = ix_wlock_for(s, held, &run);
            uint32_t mask = kvb__ix_mask_of(counts) | 1u << t;
            if (global_set(idx, s, key, m, st->id, mask, &ap->rsv, true) != 0) {
                kvb_assert(0);
                cm->dropped[KVB_DROP_CAPACITY]++;
                continue;
            }
            st->w_entries++;
        }
        if (ri == KVB_IX_NONE)
            rev_put_new(st, key, m, 1u << sh);
        else
            st->rc[ri] += 1u << sh;
        if (engine) {
            if (ei == KVB_IX_NONE)
                eng_put_new(st, ev->hashes[b], em, key, 1);
            else if (st->ec[ei] < UINT32_MAX)
                st->ec[ei]++;
        }
        cm->block_ops++;
    }
    if (held)
        ix_unlock(&held->lock);
}

static void commit_removed(kvb_index *idx, struct kvb_ix_stream *st, const kvb_index_event *ev,
                           struct ix_commit *cm)
{
    bool engine = st->kind == KVB_INDEX_HASHES_ENGINE;
    uint32_t t = ev->tier, sh = KVB_IX_COUNT_BITS * t;
    struct kvb_ix_shard *held = NULL;
    uint32_t run = 0;
    for (uint32_t b = 0; b < ev->n_hashes; b++) {
        uint64_t key = ev->hashes[b];
        uint32_t ei = KVB_IX_NONE;
        if (engine) {
            ei = eng_find(st, key, ix_mix(key));
            if (ei == KVB_IX_NONE) {
                cm->dropped[KVB_DROP_UNKNOWN_BLOCK]++;
                continue;
            }
            key = st->er[ei];
        }
        uint64_t m = ix_mix(key);
        uint32_t ri = rev_find(st, key, m);
        if (ri == KVB_IX_NONE || kvb__ix_count(st->rc[ri], t) == 0) {
            cm->dropped[KVB_DROP_UNKNOWN_BLOCK]++;
            continue;
        }
        st->rc[ri] -= 1u << sh;
        if (kvb__ix_count(st->rc[ri], t) == 0) {
            struct kvb_ix_shard *s = &idx->shards[ix_shard_of(idx, m)];
            held = ix_wlock_for(s, held, &run);
            int rc = global_set(idx, s, key, m, st->id, kvb__ix_mask_of(st->rc[ri]), NULL, true);
            kvb_assert(rc == 0); /* a mask change or a removal never allocates */
            (void)rc;
            st->w_entries--;
        }
        if (st->rc[ri] == 0)
            rev_delete(st, ri);
        if (engine && --st->ec[ei] == 0)
            eng_delete(st, ei);
        cm->block_ops++;
    }
    if (held)
        ix_unlock(&held->lock);
}

KVB_API int kvb_index_apply(kvb_index *idx, uint32_t stream, const kvb_index_event *events,
                            uint32_t n, int64_t seq)
{
    if (!idx || (!events && n))
        return -EINVAL;
    for (uint32_t e = 0; e < n; e++)
        if (ix_event_check(&events[e]))
            return -EINVAL;
    struct ix_apply ap; /* ~16 KiB: per-shard counters and the scratch buffer */
    ap.heap = NULL;
    memset(&ap.rsv, 0, sizeof ap.rsv);
    pthread_mutex_lock(&idx->wmu);
    struct kvb_ix_stream *st = ix_stream(idx, stream);
    if (!st) {
        pthread_mutex_unlock(&idx->wmu);
        return -ENOENT;
    }
    bool any_stored = false;
    for (uint32_t e = 0; e < n && !any_stored; e++)
        any_stored = events[e].type == KVB_INDEX_EV_STORED && events[e].n_hashes;
    if (any_stored) {
        int rc = apply_prepare(idx, st, events, n, &ap);
        if (rc) {
            /* Only capacities changed (tables grown): publish the memory figure. */
            ix_wrlock(&idx->smu);
            kvb__ix_publish(idx, NULL);
            ix_unlock(&idx->smu);
            pthread_mutex_unlock(&idx->wmu);
            return rc;
        }
    }

    struct ix_commit cm;
    memset(&cm, 0, sizeof cm);
    uint32_t k = 0;
    bool removals = false;
    idx->in_commit = true;
    for (uint32_t e = 0; e < n; e++) {
        const kvb_index_event *ev = &events[e];
        switch (ev->type) {
        case KVB_INDEX_EV_STORED:
            if (!ev->n_hashes)
                break;
            if (ap.evst[e]) {
                cm.dropped[ap.evst[e] - 1] += ev->n_hashes;
                break;
            }
            commit_stored(idx, st, ev, &ap, &k, &cm);
            break;
        case KVB_INDEX_EV_REMOVED:
            commit_removed(idx, st, ev, &cm);
            removals = true;
            break;
        case KVB_INDEX_EV_CLEARED:
            stream_clear_entries(idx, st, true);
            cm.clears++;
            removals = true;
            break;
        }
    }
    idx->in_commit = false;
    if (any_stored)
        ap_release(idx, &ap);
    if (removals || any_stored)
        stream_maybe_shrink(idx, st);
    shards_shrink_touched(idx);

    int64_t now = kvb_index_now_ns();
    idx->w.batches++;
    idx->w.events += n;
    idx->w.block_ops += cm.block_ops;
    ix_wrlock(&idx->smu);
    st->batches++;
    st->events += n;
    for (int i = 0; i < KVB_DROP_COUNT; i++)
        st->dropped[i] += cm.dropped[i];
    st->counters[KVB_COUNT_CLEARS] += cm.clears;
    if (seq >= 0)
        st->last_seq = seq;
    st->last_heard_ns = now;
    kvb__ix_publish(idx, st);
    ix_unlock(&idx->smu);
    pthread_mutex_unlock(&idx->wmu);
    return 0;
}

/* ---- match ------------------------------------------------------------------ */

/* A match candidate. During the walk dev and dh hold KVB_IX_OPEN while those
 * prefixes are unbroken, any is set when the candidate drops out. */
struct ix_cand {
    uint32_t sid, dev, dh, any;
    uint64_t entries;
    double score;
};

#define KVB_IX_OPEN UINT32_MAX

/* This thread's stripe of the match counters. */
static inline struct kvb_ix_mstat *ix_mstat(kvb_index *idx)
{
    static _Thread_local char anchor;
    uintptr_t a = (uintptr_t)&anchor;
    return &idx->mstat[(a >> 12 ^ a >> 20) % KVB_IX_MSTAT];
}

void kvb__ix_match_counts(const kvb_index *idx, uint64_t *matches, uint64_t *blocks)
{
    uint64_t m = 0, b = 0;
    for (int i = 0; i < KVB_IX_MSTAT; i++) {
        m += atomic_load_explicit(&idx->mstat[i].matches, memory_order_relaxed);
        b += atomic_load_explicit(&idx->mstat[i].blocks, memory_order_relaxed);
    }
    *matches = m;
    *blocks = b;
}

struct ix_sort_ctx {
    const kvb_index *idx;
    const struct ix_cand *c;
};

/* Result order: score desc, entries asc, name, rank, id. */
static int ix_cand_cmp(const void *pa, const void *pb, void *pctx)
{
    const struct ix_sort_ctx *x = pctx;
    const struct ix_cand *a = &x->c[*(const uint32_t *)pa], *b = &x->c[*(const uint32_t *)pb];
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    if (a->entries != b->entries)
        return a->entries < b->entries ? -1 : 1;
    const struct kvb_ix_stream *sa = x->idx->tab[a->sid], *sb = x->idx->tab[b->sid];
    int r = strcmp(sa->name, sb->name);
    if (r)
        return r;
    if (sa->rank != sb->rank)
        return sa->rank < sb->rank ? -1 : 1;
    return a->sid < b->sid ? -1 : a->sid > b->sid;
}

/* Extend the alive candidates (alive[0..na), their stream ids asid[0..na),
 * sorted) by position
 * i, whose sorted holder words are h[0..nh): a candidate that holds it stays
 * alive and closes its device (device-or-host) prefix at i when the device
 * (device and host) bit is missing; the others drop out with any = i. Returns
 * the new alive count (stable order). */
static uint32_t ix_step_slow(struct ix_cand *cand, uint32_t *alive, uint32_t *asid, uint32_t na,
                             const uint32_t *h, uint32_t nh, uint32_t i);

static inline __attribute__((always_inline)) uint32_t ix_step(struct ix_cand *cand, uint32_t *alive,
                                                              uint32_t *asid, uint32_t na,
                                                              const uint32_t *h, uint32_t nh,
                                                              uint32_t i)
{
    if (nh == na) {
        /* the common case: exactly the alive candidates hold it (asid: their
         * stream ids, contiguous so that this loop vectorises) */
        uint32_t diff = 0, all = KVB_IX_MASK_ALL, p = 0;
#if defined(__GNUC__)
        typedef uint32_t ix_v4 __attribute__((vector_size(16)));
        ix_v4 vd = {0, 0, 0, 0}, va = {7, 7, 7, 7};
        for (; p + 4 <= na; p += 4) {
            ix_v4 x, y;
            memcpy(&x, h + p, sizeof x);
            memcpy(&y, asid + p, sizeof y);
            vd |= (x >> KVB_IX_TIER_SHIFT) ^ y;
            va &= x;
        }
        diff = vd[0] | vd[1] | vd[2] | vd[3];
        all = va[0] & va[1] & va[2] & va[3];
#endif
        for (; p < na; p++) {
            diff |= KVB_IX_SID(h[p]) ^ asid[p];
            all &= h[p];
        }
        if (!diff) {
            if (!(all & 1u))
                for (uint32_t q = 0; q < na; q++) {
                    struct ix_cand *c = &cand[alive[q]];
                    if (!(h[q] & 1u) && c->dev == KVB_IX_OPEN)
                        c->dev = i;
                    if (!(h[q] & 3u) && c->dh == KVB_IX_OPEN)
                        c->dh = i;
                }
            return na;
        }
    }
    return ix_step_slow(cand, alive, asid, na, h, nh, i);
}

static uint32_t ix_step_slow(struct ix_cand *cand, uint32_t *alive, uint32_t *asid, uint32_t na,
                             const uint32_t *h, uint32_t nh, uint32_t i)
{
    uint32_t w = 0, j = 0;
    if ((uint64_t)nh * 8 < na) {
        /* few holders, many candidates: find each holder among the candidates */
        for (uint32_t p = 0; p < nh && j < na; p++) {
            uint32_t sid = KVB_IX_SID(h[p]), lo = j, hi = na;
            while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                if (asid[mid] < sid)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (; j < lo; j++)
                cand[alive[j]].any = i;
            if (j < na && asid[j] == sid) {
                struct ix_cand *c = &cand[alive[j]];
                if (kvb_unlikely(!(h[p] & 1u)) && c->dev == KVB_IX_OPEN)
                    c->dev = i;
                if (kvb_unlikely(!(h[p] & 3u)) && c->dh == KVB_IX_OPEN)
                    c->dh = i;
                asid[w] = sid;
                alive[w++] = alive[j++];
            }
        }
    } else if ((uint64_t)na * 8 < nh) {
        /* few candidates, many holders: find each candidate among the holders */
        for (; j < na; j++) {
            struct ix_cand *c = &cand[alive[j]];
            bool found;
            uint32_t p = holders_search(h, nh, asid[j], &found);
            if (!found) {
                c->any = i;
                continue;
            }
            if (kvb_unlikely(!(h[p] & 1u)) && c->dev == KVB_IX_OPEN)
                c->dev = i;
            if (kvb_unlikely(!(h[p] & 3u)) && c->dh == KVB_IX_OPEN)
                c->dh = i;
            asid[w] = asid[j];
            alive[w++] = alive[j];
        }
        return w;
    } else {
        uint32_t p = 0;
        while (j < na && p < nh) {
            uint32_t mk = h[p], hs = KVB_IX_SID(mk), cs = asid[j];
            if (hs < cs) {
                p++;
                continue;
            }
            struct ix_cand *c = &cand[alive[j]];
            if (hs > cs) {
                c->any = i;
                j++;
                continue;
            }
            p++;
            if (kvb_unlikely(!(mk & 1u)) && c->dev == KVB_IX_OPEN)
                c->dev = i;
            if (kvb_unlikely(!(mk & 3u)) && c->dh == KVB_IX_OPEN)
                c->dh = i;
            asid[w] = cs;
            alive[w++] = alive[j++];
        }
    }
    for (; j < na; j++)
        cand[alive[j]].any = i;
    return w;
}

/* a before b in result order (inline for score and entries; names on ties) */
static inline bool ix_cand_before(const struct ix_sort_ctx *x, uint32_t a, uint32_t b)
{
    const struct ix_cand *ca = &x->c[a], *cb = &x->c[b];
    if (ca->score != cb->score)
        return ca->score > cb->score;
    if (ca->entries != cb->entries)
        return ca->entries < cb->entries;
    return ix_cand_cmp(&a, &b, (void *)x) < 0;
}

KVB_API int kvb_index_match(kvb_index *idx, const uint64_t *hashes, uint32_t n,
                            kvb_index_result *out, uint32_t k)
{
    if (!idx || (!hashes && n) || (!out && k))
        return -EINVAL;
    struct kvb_ix_mstat *ms = ix_mstat(idx);
    if (n == 0) {
        atomic_fetch_add_explicit(&ms->matches, 1, memory_order_relaxed);
        return 0;
    }

    struct ix_cand cstack[KVB_IX_MATCH_STACK];
    uint32_t istack[KVB_IX_MATCH_STACK], sstack[KVB_IX_MATCH_STACK];
    struct ix_cand *cand = cstack;
    uint32_t *alive = istack, *asid = sstack;
    void *heap = NULL;
    size_t heap_size = 0;
    uint32_t nc = 0, na = 0, looked = 1;
    int ret = 0;

    ix_rdlock(&idx->smu);
    struct kvb_ix_shard *held = NULL;
    uint64_t m = ix_mix(hashes[0]);
    struct kvb_ix_shard *s = &idx->shards[ix_shard_of(idx, m)];
    ix_rdlock(&s->lock);
    held = s;
    uint32_t ci = shard_find(s, hashes[0], m);
    if (ci != KVB_IX_NONE) {
        uint32_t nh;
        const uint32_t *h = cell_holders(s, &s->cells[ci], &nh);
        if (nh > KVB_IX_MATCH_STACK) {
            heap_size = (size_t)nh * (sizeof *cand + sizeof *alive + sizeof *asid);
            heap = kvb__alloc(&idx->a, heap_size);
            if (!heap) {
                ret = -ENOMEM;
                goto out;
            }
            cand = heap;
            alive = (uint32_t *)(cand + nh);
            asid = alive + nh;
        }
        for (uint32_t j = 0; j < nh; j++) {
            uint32_t sid = KVB_IX_SID(h[j]), mk = h[j];
            /* a holder's stream exists: removal takes its holders away before
             * it leaves the table, and we hold smu */
            kvb_assert(ix_stream(idx, sid) != NULL);
            const struct kvb_ix_live *lv = &idx->live[sid];
            if (lv->state == KVB_STREAM_STALE)
                continue;
            struct ix_cand *c = &cand[nc];
            c->sid = sid;
            c->entries = lv->entries;
            c->dev = (mk & 1u) ? KVB_IX_OPEN : 0;
            c->dh = (mk & 3u) ? KVB_IX_OPEN : 0;
            asid[na] = sid;
            alive[na++] = nc++;
        }
    }
    if (!idx->match_hold) {
        ix_unlock(&held->lock);
        held = NULL;
    }

    if (held) {
        /* One shard, read-locked for the whole walk: its cells, chunks and
         * holder arrays cannot change, so the walk goes by groups of
         * KVB_IX_GROUP hashes: prefetch all their cells, then find them and
         * prefetch their holders, then walk them. The cache misses of a group
         * overlap instead of forming a chain of two or three per hash; a walk
         * that stops early wastes at most one group of lookups. */
        uint32_t cg[KVB_IX_GROUP];
        uint64_t mg[KVB_IX_GROUP];
        for (uint32_t base = 1; base < n && na; base += KVB_IX_GROUP) {
            uint32_t g = n - base < KVB_IX_GROUP ? n - base : KVB_IX_GROUP;
            for (uint32_t q = 0; q < g; q++) {
                mg[q] = ix_mix(hashes[base + q]);
                if (held->cap)
                    __builtin_prefetch(&held->cells[ix_home(mg[q], held->cap)]);
            }
            for (uint32_t q = 0; q < g; q++) {
                uint32_t c = cg[q] = shard_find(held, hashes[base + q], mg[q]);
                if (c == KVB_IX_NONE)
                    continue;
                if (held->cells[c].n & KVB_IX_CHK)
                    __builtin_prefetch(held->chunks + (size_t)held->cells[c].data * KVB_IX_CHUNK);
                else if (held->cells[c].n & KVB_IX_ARR)
                    __builtin_prefetch(held->dir[held->cells[c].data]);
            }
            for (uint32_t q = 0; q < g && na; q++) {
                looked++;
                uint32_t nh = 0;
                const uint32_t *h =
                    cg[q] == KVB_IX_NONE ? NULL : cell_holders(held, &held->cells[cg[q]], &nh);
                na = ix_step(cand, alive, asid, na, h, nh, base + q);
            }
        }
    } else {
        for (uint32_t i = 1; i < n && na; i++) {
            looked++;
            m = ix_mix(hashes[i]);
            s = &idx->shards[ix_shard_of(idx, m)];
            ix_rdlock(&s->lock);
            ci = shard_find(s, hashes[i], m);
            uint32_t nh = 0;
            const uint32_t *h = ci == KVB_IX_NONE ? NULL : cell_holders(s, &s->cells[ci], &nh);
            na = ix_step(cand, alive, asid, na, h, nh, i);
            ix_unlock(&s->lock);
        }
    }
    if (held) {
        ix_unlock(&held->lock);
        held = NULL;
    }

    /* Close the prefixes, score, then the top k in result order. */
    for (uint32_t j = 0; j < na; j++)
        cand[alive[j]].any = looked;
    const double *wt = idx->cfg.tier_weight;
    for (uint32_t j = 0; j < nc; j++) {
        struct ix_cand *c = &cand[j];
        if (c->dh == KVB_IX_OPEN)
            c->dh = c->any;
        if (c->dev == KVB_IX_OPEN)
            c->dev = c->any;
        c->score = wt[0] * c->dev + wt[1] * (c->dh - c->dev) + wt[2] * (c->any - c->dh);
        alive[j] = j;
    }
    struct ix_sort_ctx sx = {.idx = idx, .c = cand};
    uint32_t top = k < nc ? k : nc;
    if (top && (top <= 16 || nc <= 16)) {
        /* Partial selection: alive[0..top) sorted (insertion), the rest compared
         * to its last, by score first without a call. */
        for (uint32_t j = 1; j < top; j++)
            for (uint32_t q = j; q > 0 && ix_cand_before(&sx, alive[q], alive[q - 1]); q--) {
                uint32_t tmp = alive[q];
                alive[q] = alive[q - 1];
                alive[q - 1] = tmp;
            }
        for (uint32_t j = top; j < nc; j++) {
            if (!ix_cand_before(&sx, alive[j], alive[top - 1]))
                continue;
            uint32_t v = alive[j], q = top - 1;
            while (q > 0 && ix_cand_before(&sx, v, alive[q - 1])) {
                alive[q] = alive[q - 1];
                q--;
            }
            alive[q] = v;
        }
    } else if (top) {
        qsort_r(alive, nc, sizeof *alive, ix_cand_cmp, &sx);
    }
    for (uint32_t j = 0; j < top; j++) {
        const struct ix_cand *c = &cand[alive[j]];
        const struct kvb_ix_stream *st = idx->tab[c->sid];
        kvb_index_result *r = &out[j];
        r->stream = c->sid;
        r->dp_rank = st->rank;
        r->device = c->dev;
        r->host = c->dh - c->dev;
        r->disk = c->any - c->dh;
        r->score = c->score;
        r->entries = c->entries;
        r->state = st->state;
        memcpy(r->worker, st->name, sizeof r->worker);
    }
    ret = nc > INT_MAX ? INT_MAX : (int)nc;
out:
    if (held)
        ix_unlock(&held->lock);
    ix_unlock(&idx->smu);
    if (heap)
        kvb__free(&idx->a, heap, heap_size);
    /* statistics only: relaxed, no ordering */
    atomic_fetch_add_explicit(&ms->matches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ms->blocks, looked, memory_order_relaxed);
    return ret;
}

KVB_API int kvb_index_match_tokens(kvb_index *idx, const uint32_t *tokens, size_t n_tokens,
                                   const char *lora_name, const char *cache_salt,
                                   kvb_index_result *out, uint32_t k, uint32_t *blocks)
{
    if (!idx || (!tokens && n_tokens) || (!out && k))
        return -EINVAL;
    uint64_t hstack[4096];
    uint64_t *h = hstack;
    size_t nb = n_tokens / idx->cfg.block_size;
    if (nb > UINT32_MAX)
        nb = UINT32_MAX;
    if (nb > 4096) {
        h = kvb__alloc(&idx->a, nb * sizeof *h);
        if (!h)
            return -ENOMEM;
    }
    int n = kvb_index_hashes(idx, tokens, n_tokens, lora_name, cache_salt, h, nb);
    int rc = n < 0 ? n : kvb_index_match(idx, h, (uint32_t)n, out, k);
    if (blocks)
        *blocks = n < 0 ? 0 : (uint32_t)n;
    if (h != hstack)
        kvb__free(&idx->a, h, nb * sizeof *h);
    return rc;
}

/* ---- stats and names -------------------------------------------------------- */

KVB_API int kvb_index_stats_get(const kvb_index *idx, kvb_index_stats *out)
{
    if (!idx || !out)
        return -EINVAL;
    kvb_index *ix = (kvb_index *)idx;
    memset(out, 0, sizeof *out);
    ix_rdlock(&ix->smu);
    out->streams = idx->n_streams;
    out->keys = idx->pub.keys;
    out->entries = idx->pub.entries;
    out->memory_bytes = idx->pub.memory;
    out->batches = idx->pub.batches;
    out->events = idx->pub.events;
    out->block_ops = idx->pub.block_ops;
    ix_unlock(&ix->smu);
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
