/*
 * index_match.c - kvb_index_match and kvb_index_match_tokens: the prefix
 * match a router asks of the fleet index (index.c has the data layout and the
 * locking).
 *
 * Match (FLEET.md section 5): candidates are the matchable holders of
 * hashes[0]; every later hash intersects the candidates still extending their
 * any-tier prefix; per candidate the longest device prefix, device-or-host
 * prefix and any-tier prefix; the walk stops when no candidate extends. Top k
 * by partial selection. Candidates live on the stack (KVB_IX_MATCH_STACK), the
 * heap only beyond.
 *
 * A match takes smu for reading for its whole duration and each shard's read
 * lock only while it reads one key's holders; with a single shard it holds
 * that shard's read lock for the whole walk (index.c, KVB_IX_HOLD_SINGLE) and
 * looks the hashes up by groups of KVB_IX_GROUP with prefetching. The match
 * counters are the only lock-free state (relaxed atomics, statistics only).
 */
#include "index_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define KVB_IX_GROUP       16u /* hashes a held match looks up together */
#define KVB_IX_MATCH_STACK 1024u

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
            uint32_t p = kvb__ix_holders_search(h, nh, asid[j], &found);
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

    kvb__ix_rdlock(&idx->smu);
    struct kvb_ix_shard *held = NULL;
    uint64_t m = kvb__ix_mix(hashes[0]);
    struct kvb_ix_shard *s = &idx->shards[kvb__ix_shard_of(idx, m)];
    kvb__ix_rdlock(&s->lock);
    held = s;
    uint32_t ci = kvb__ix_shard_find(s, hashes[0], m);
    if (ci != KVB_IX_NONE) {
        uint32_t nh;
        const uint32_t *h = kvb__ix_cell_holders(s, &s->cells[ci], &nh);
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
            kvb_assert(kvb__ix_stream(idx, sid) != NULL);
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
        kvb__ix_unlock(&held->lock);
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
                mg[q] = kvb__ix_mix(hashes[base + q]);
                if (held->cap)
                    __builtin_prefetch(&held->cells[kvb__ix_home(mg[q], held->cap)]);
            }
            for (uint32_t q = 0; q < g; q++) {
                uint32_t c = cg[q] = kvb__ix_shard_find(held, hashes[base + q], mg[q]);
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
                const uint32_t *h = cg[q] == KVB_IX_NONE
                                        ? NULL
                                        : kvb__ix_cell_holders(held, &held->cells[cg[q]], &nh);
                na = ix_step(cand, alive, asid, na, h, nh, base + q);
            }
        }
    } else {
        for (uint32_t i = 1; i < n && na; i++) {
            looked++;
            m = kvb__ix_mix(hashes[i]);
            s = &idx->shards[kvb__ix_shard_of(idx, m)];
            kvb__ix_rdlock(&s->lock);
            ci = kvb__ix_shard_find(s, hashes[i], m);
            uint32_t nh = 0;
            const uint32_t *h =
                ci == KVB_IX_NONE ? NULL : kvb__ix_cell_holders(s, &s->cells[ci], &nh);
            na = ix_step(cand, alive, asid, na, h, nh, i);
            kvb__ix_unlock(&s->lock);
        }
    }
    if (held) {
        kvb__ix_unlock(&held->lock);
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
        kvb__ix_unlock(&held->lock);
    kvb__ix_unlock(&idx->smu);
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
