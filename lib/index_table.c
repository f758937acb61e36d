/*
 * index_table.c - the key table of the fleet index (index.c has the design):
 * per shard an open-addressing table of 16-byte cells {key, n, data}, one
 * holder inline, 2..KVB_IX_CHUNK in a chunk of the shard's chunk arena, more
 * in a holder array of its directory; holders sorted by stream id. Growth is
 * built aside with wmu alone and swapped in under the shard's write lock;
 * shrinking and compaction run after a change, never inside pass 2 of an
 * apply. The lookups a match needs (kvb__ix_shard_find, kvb__ix_cell_holders,
 * kvb__ix_holders_search) are static inline in index_internal.h.
 *
 * Invariants: inline iff 1 holder; holders sorted by stream id; a chunk or
 * array in use is referenced by exactly one cell; every allocation goes
 * through kvb__ix_alloc/free.
 */
#include "index_internal.h"

#include <string.h>

/* ---- holder arrays and the reserve ------------------------------------------ */

/* Holder arrays (more than KVB_IX_CHUNK holders): allocations of cap + 1 u32,
 * a[0] = cap (a power of two >= 16), holders from a[1]. */
static inline uint32_t ix_class_of(uint32_t need)
{
    return need <= 16 ? 4 : 32 - (uint32_t)__builtin_clz(need - 1);
}

uint32_t *kvb__ix_harr_alloc(kvb_index *idx, uint32_t cap)
{
    uint32_t *a = kvb__ix_alloc(idx, ((size_t)cap + 1) * sizeof(uint32_t));
    if (a)
        a[0] = cap;
    return a;
}

void kvb__ix_harr_free(kvb_index *idx, uint32_t *a)
{
    if (a)
        kvb__ix_free(idx, a, ((size_t)a[0] + 1) * sizeof(uint32_t));
}

void kvb__ix_rsv_push(struct kvb_ix_rsv *r, uint32_t *a)
{
    uint32_t c = ix_class_of(a[0]);
    memcpy(&a[1], &r->head[c], sizeof r->head[c]);
    r->head[c] = a;
}

/* Smallest reserved array of capacity >= need; NULL when none. */
static uint32_t *ix_rsv_take(struct kvb_ix_rsv *r, uint32_t need)
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

void kvb__ix_rsv_free(kvb_index *idx, struct kvb_ix_rsv *r)
{
    uint32_t *a;
    while ((a = ix_rsv_take(r, 1)) != NULL)
        kvb__ix_harr_free(idx, a);
}

/* ---- shard tables ----------------------------------------------------------- */

static void cells_put(struct kvb_ix_cell *cells, uint32_t cap, const struct kvb_ix_cell *c,
                      uint64_t m)
{
    uint32_t i = kvb__ix_home(m, cap);
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
            cells_put(nc, (uint32_t)cap, &s->cells[i], kvb__ix_mix(s->cells[i].key));
    struct kvb_ix_cell *old = s->cells;
    uint32_t old_cap = s->cap;
    if (!locked)
        kvb__ix_wrlock(&s->lock);
    s->cells = nc;
    s->cap = (uint32_t)cap;
    if (!locked)
        kvb__ix_unlock(&s->lock);
    kvb__ix_free(idx, old, (size_t)old_cap * sizeof *old);
    return 0;
}

int kvb__ix_shard_reserve(kvb_index *idx, struct kvb_ix_shard *s, uint64_t extra, bool locked)
{
    uint64_t want = (uint64_t)s->keys + extra;
    if (kvb__ix_fits(s->cap, want))
        return 0;
    return shard_resize(idx, s, kvb__ix_cap_for(want), locked);
}

static void chunks_maybe_compact(kvb_index *idx, struct kvb_ix_shard *s);
static void dir_maybe_compact(kvb_index *idx, struct kvb_ix_shard *s);

/* After removals (never inside pass 2 of an apply): give back what a shard no
 * longer needs. Failures keep the bigger tables. */
static void shard_maybe_shrink(kvb_index *idx, struct kvb_ix_shard *s)
{
    if (kvb__ix_sparse(s->cap, s->keys))
        (void)shard_resize(idx, s, kvb__ix_cap_for(s->keys), false);
    chunks_maybe_compact(idx, s);
    dir_maybe_compact(idx, s);
}

/* Shrink the shards changed since the last call (wmu held; never inside
 * pass 2 of an apply). */
void kvb__ix_shrink_touched(kvb_index *idx)
{
    for (uint32_t w = 0; w < sizeof idx->touched / sizeof idx->touched[0]; w++)
        while (idx->touched[w]) {
            uint32_t b = (uint32_t)__builtin_ctzll(idx->touched[w]);
            idx->touched[w] &= idx->touched[w] - 1;
            shard_maybe_shrink(idx, &idx->shards[w * 64 + b]);
        }
}

/* Directory room for extra more holder arrays. */
int kvb__ix_dir_reserve(kvb_index *idx, struct kvb_ix_shard *s, uint32_t extra, bool locked)
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
        kvb__ix_wrlock(&s->lock);
    s->dir = nd;
    s->dir_next = nn;
    s->dir_cap = (uint32_t)cap;
    if (!locked)
        kvb__ix_unlock(&s->lock);
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
        uint32_t h = kvb__ix_home(kvb__ix_mix(cj->key), cap);
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
int kvb__ix_chunk_reserve(kvb_index *idx, struct kvb_ix_shard *s, uint32_t extra, bool locked)
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
        kvb__ix_wrlock(&s->lock);
    s->chunks = nch;
    s->chunk_cap = (uint32_t)cap;
    if (!locked)
        kvb__ix_unlock(&s->lock);
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
    kvb__ix_wrlock(&s->lock);
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
    kvb__ix_unlock(&s->lock);
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
    kvb__ix_wrlock(&s->lock);
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
    kvb__ix_unlock(&s->lock);
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

/* Holder words of a cell (in place), sorted by stream id. */
static inline uint32_t *cell_words(const struct kvb_ix_shard *s, struct kvb_ix_cell *c)
{
    if (c->n & KVB_IX_ARR)
        return s->dir[c->data] + 1;
    if (c->n & KVB_IX_CHK)
        return s->chunks + (size_t)c->data * KVB_IX_CHUNK;
    return &c->data;
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
                      struct kvb_ix_rsv *rsv, bool locked)
{
    uint32_t n = kvb__ix_cell_count(c);
    uint32_t *w = cell_words(s, c);
    bool found;
    uint32_t pos = kvb__ix_holders_search(w, n, KVB_IX_SID(hw), &found);
    kvb_assert(!found);
    if (!(c->n & (KVB_IX_ARR | KVB_IX_CHK))) {
        kvb_assert(!rsv || s->chunk_nfree || s->chunk_top < s->chunk_cap);
        if (kvb__ix_chunk_reserve(idx, s, 1, locked) != 0)
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
        b = kvb__ix_harr_alloc(idx, n + 1 <= 16 ? 16 : kvb__next_pow2(n + 1));
    if (!b)
        return -ENOMEM;
    if ((c->n & KVB_IX_CHK) && kvb__ix_dir_reserve(idx, s, 1, locked) != 0) {
        kvb__ix_harr_free(idx, b);
        return -ENOMEM;
    }
    words_insert(b + 1, w, n, pos, hw);
    if (c->n & KVB_IX_CHK) {
        chunk_put(s, c->data);
        c->data = dir_take(s);
    } else {
        kvb__ix_harr_free(idx, s->dir[c->data]);
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
    uint32_t n = kvb__ix_cell_count(c), flag = c->n & (KVB_IX_ARR | KVB_IX_CHK);
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
        kvb__ix_harr_free(idx, s->dir[c->data]);
        dir_put(s, c->data);
    }
    c->data = last;
    c->n = 1;
}

/* Set stream sid's tier mask on key (mask 0: remove it as a holder), creating
 * or deleting the cell as needed. Caller holds the shard's write lock when
 * locked. -ENOMEM only when the reserve was short (a bug) and allocation fails. */
int kvb__ix_global_set(kvb_index *idx, struct kvb_ix_shard *s, uint64_t key, uint64_t m,
                       uint32_t sid, uint32_t mask, struct kvb_ix_rsv *rsv, bool locked)
{
    uint32_t hw = sid << KVB_IX_TIER_SHIFT | mask;
    uint32_t si = (uint32_t)(s - idx->shards);
    idx->touched[si >> 6] |= 1ull << (si & 63);
    uint32_t ci = kvb__ix_shard_find(s, key, m);
    if (ci == KVB_IX_NONE) {
        if (!mask)
            return 0;
        if (kvb__ix_shard_reserve(idx, s, 1, locked) != 0)
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
    uint32_t pos = kvb__ix_holders_search(w, kvb__ix_cell_count(c), sid, &found);
    if (found) {
        if (mask) {
            w[pos] = hw;
        } else {
            bool last = kvb__ix_cell_count(c) == 1;
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
