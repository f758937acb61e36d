/*
 * index_apply.c - kvb_index_apply (FLEET.md sections 3 and 4) and what it
 * changes besides the key table: each stream's reverse map (router key ->
 * packed per-tier copy counts) and an ENGINE stream's engine map (engine hash
 * -> {router hash, copies}); clearing a stream's entries; the load calls
 * index_snapshot.c uses to rebuild an index it owns alone.
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
 */
#include "index_internal.h"

#include <string.h>

#define KVB_IX_LOCK_RUN    16u /* changes a writer makes per write-lock hold */
#define KVB_IX_APPLY_STACK 8192u

/* ---- per-stream reverse map ------------------------------------------------- */

static uint32_t rev_find(const struct kvb_ix_stream *st, uint64_t key, uint64_t m)
{
    if (!st->rcap)
        return KVB_IX_NONE;
    uint32_t i = kvb__ix_home(m, st->rcap);
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
    uint32_t i = kvb__ix_home(m, st->rcap);
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
        uint32_t h = kvb__ix_home(kvb__ix_mix(st->rk[j]), cap);
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
            uint32_t j = kvb__ix_home(kvb__ix_mix(st->rk[i]), (uint32_t)cap);
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
    if (kvb__ix_fits(st->rcap, want))
        return 0;
    return rev_resize(idx, st, kvb__ix_cap_for(want));
}

/* ---- per-stream engine map -------------------------------------------------- */

static uint32_t eng_find(const struct kvb_ix_stream *st, uint64_t e, uint64_t m)
{
    if (!st->ecap)
        return KVB_IX_NONE;
    uint32_t i = kvb__ix_home(m, st->ecap);
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
    uint32_t i = kvb__ix_home(m, st->ecap);
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
        uint32_t h = kvb__ix_home(kvb__ix_mix(st->ek[j]), cap);
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
            uint32_t j = kvb__ix_home(kvb__ix_mix(st->ek[i]), (uint32_t)cap);
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
    if (kvb__ix_fits(st->ecap, want))
        return 0;
    return eng_resize(idx, st, kvb__ix_cap_for(want));
}

/* Rebuild a stream's maps smaller when they are mostly empty (failure: keep). */
static void stream_maybe_shrink(kvb_index *idx, struct kvb_ix_stream *st)
{
    if (st->rn == 0 && st->rcap > KVB_IX_MIN_CAP * 4)
        rev_free(idx, st);
    else if (kvb__ix_sparse(st->rcap, st->rn))
        (void)rev_resize(idx, st, kvb__ix_cap_for(st->rn));
    if (st->en == 0 && st->ecap > KVB_IX_MIN_CAP * 4)
        eng_free(idx, st);
    else if (kvb__ix_sparse(st->ecap, st->en))
        (void)eng_resize(idx, st, kvb__ix_cap_for(st->en));
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
        kvb__ix_unlock(&held->lock);
    kvb__ix_wrlock(&s->lock);
    *run = 0;
    return s;
}

/* Remove every holder of stream st from the key table and empty its maps
 * (keep_capacity: inside an apply, whose reservation must stay valid). */
void kvb__ix_stream_clear_entries(kvb_index *idx, struct kvb_ix_stream *st, bool keep_capacity)
{
    struct kvb_ix_shard *held = NULL;
    uint32_t run = 0;
    for (uint32_t i = 0; i < st->rcap && st->rn; i++) {
        if (!st->rc[i])
            continue;
        uint64_t key = st->rk[i], m = kvb__ix_mix(key);
        struct kvb_ix_shard *s = &idx->shards[kvb__ix_shard_of(idx, m)];
        held = ix_wlock_for(s, held, &run);
        int rc = kvb__ix_global_set(idx, s, key, m, st->id, 0, NULL, true);
        kvb_assert(rc == 0); /* removal never allocates */
        (void)rc;
    }
    if (held)
        kvb__ix_unlock(&held->lock);
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

void kvb__ix_stream_free(kvb_index *idx, struct kvb_ix_stream *st)
{
    rev_free(idx, st);
    eng_free(idx, st);
    kvb__ix_free(idx, st, sizeof *st);
}

/* ---- load (index_snapshot.c builds a fresh index it owns alone) ------------- */

int kvb__ix_load_reserve(kvb_index *idx, struct kvb_ix_stream *st, uint64_t keys, uint64_t eng)
{
    int rc = rev_reserve(idx, st, keys);
    return rc ? rc : eng_reserve(idx, st, eng);
}

int kvb__ix_load_key(kvb_index *idx, struct kvb_ix_stream *st, uint64_t key, uint32_t counts)
{
    uint64_t m = kvb__ix_mix(key);
    uint32_t mask = kvb__ix_mask_of(counts);
    if (!mask || rev_find(st, key, m) != KVB_IX_NONE)
        return -EEXIST;
    int rc = rev_reserve(idx, st, 1);
    if (rc)
        return rc;
    rc = kvb__ix_global_set(idx, &idx->shards[kvb__ix_shard_of(idx, m)], key, m, st->id, mask, NULL,
                            false);
    if (rc)
        return rc;
    rev_put_new(st, key, m, counts);
    st->w_entries += (uint32_t)__builtin_popcount(mask);
    return 0;
}

int kvb__ix_load_engine(kvb_index *idx, struct kvb_ix_stream *st, uint64_t e, uint64_t r,
                        uint32_t copies)
{
    uint64_t m = kvb__ix_mix(e);
    if (!copies || eng_find(st, e, m) != KVB_IX_NONE)
        return -EEXIST;
    int rc = eng_reserve(idx, st, 1);
    if (rc)
        return rc;
    eng_put_new(st, e, m, r, copies);
    return 0;
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
    struct kvb_ix_rsv rsv;
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
    uint32_t mask = ap->lcap - 1, i = (uint32_t)kvb__ix_mix(e) & mask;
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
        uint32_t i = eng_find(st, e, kvb__ix_mix(e));
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
    const struct kvb_ix_shard *s = &idx->shards[kvb__ix_shard_of(idx, m)];
    uint32_t ci = kvb__ix_shard_find(s, key, m);
    *absent = ci == KVB_IX_NONE;
    if (ci == KVB_IX_NONE)
        return 0;
    const struct kvb_ix_cell *c = &s->cells[ci];
    uint32_t n;
    const uint32_t *h = kvb__ix_cell_holders(s, c, &n);
    bool holds;
    (void)kvb__ix_holders_search(h, n, sid, &holds);
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
    kvb__ix_rsv_free(idx, &ap->rsv);
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
                uint64_t pm = kvb__ix_mix(keys[b + 4]);
                const struct kvb_ix_shard *ps = &idx->shards[kvb__ix_shard_of(idx, pm)];
                if (ps->cap)
                    __builtin_prefetch(&ps->cells[kvb__ix_home(pm, ps->cap)]);
                if (st->rcap)
                    __builtin_prefetch(&st->rk[kvb__ix_home(pm, st->rcap)]);
            }
            uint64_t key = keys[b], m = kvb__ix_mix(key);
            uint32_t s = kvb__ix_shard_of(idx, m);
            bool absent;
            uint32_t need = p1_need(idx, st->id, key, m, seen_removal, &absent);
            n_keys_max++;
            if (absent)
                ap->cnt[s]++;
            if (need == KVB_IX_NEED_CHUNK) {
                ap->ccnt[s]++;
            } else if (need) {
                uint32_t *a = kvb__ix_harr_alloc(idx, need);
                if (!a) {
                    rc = -ENOMEM;
                    break;
                }
                kvb__ix_rsv_push(&ap->rsv, a);
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
            rc = kvb__ix_shard_reserve(idx, &idx->shards[s], ap->cnt[s], false);
        if (rc == 0 && ap->dcnt[s])
            rc = kvb__ix_dir_reserve(idx, &idx->shards[s], ap->dcnt[s], false);
        if (rc == 0 && ap->ccnt[s])
            rc = kvb__ix_chunk_reserve(idx, &idx->shards[s], ap->ccnt[s], false);
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
        uint64_t key = engine ? ap->rh[(*k)++] : ev->hashes[b], m = kvb__ix_mix(key);
        uint32_t ri = rev_find(st, key, m);
        uint32_t counts = ri == KVB_IX_NONE ? 0 : st->rc[ri];
        uint32_t c = kvb__ix_count(counts, t);
        uint32_t ei = KVB_IX_NONE;
        uint64_t em = 0;
        if (engine) {
            em = kvb__ix_mix(ev->hashes[b]);
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
            struct kvb_ix_shard *s = &idx->shards[kvb__ix_shard_of(idx, m)];
            held = ix_wlock_for(s, held, &run);
            uint32_t mask = kvb__ix_mask_of(counts) | 1u << t;
            if (kvb__ix_global_set(idx, s, key, m, st->id, mask, &ap->rsv, true) != 0) {
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
        kvb__ix_unlock(&held->lock);
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
            ei = eng_find(st, key, kvb__ix_mix(key));
            if (ei == KVB_IX_NONE) {
                cm->dropped[KVB_DROP_UNKNOWN_BLOCK]++;
                continue;
            }
            key = st->er[ei];
        }
        uint64_t m = kvb__ix_mix(key);
        uint32_t ri = rev_find(st, key, m);
        if (ri == KVB_IX_NONE || kvb__ix_count(st->rc[ri], t) == 0) {
            cm->dropped[KVB_DROP_UNKNOWN_BLOCK]++;
            continue;
        }
        st->rc[ri] -= 1u << sh;
        if (kvb__ix_count(st->rc[ri], t) == 0) {
            struct kvb_ix_shard *s = &idx->shards[kvb__ix_shard_of(idx, m)];
            held = ix_wlock_for(s, held, &run);
            int rc =
                kvb__ix_global_set(idx, s, key, m, st->id, kvb__ix_mask_of(st->rc[ri]), NULL, true);
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
        kvb__ix_unlock(&held->lock);
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
    struct kvb_ix_stream *st = kvb__ix_stream(idx, stream);
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
            kvb__ix_wrlock(&idx->smu);
            kvb__ix_publish(idx, NULL);
            kvb__ix_unlock(&idx->smu);
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
            kvb__ix_stream_clear_entries(idx, st, true);
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
    kvb__ix_shrink_touched(idx);

    int64_t now = kvb_index_now_ns();
    idx->w.batches++;
    idx->w.events += n;
    idx->w.block_ops += cm.block_ops;
    kvb__ix_wrlock(&idx->smu);
    st->batches++;
    st->events += n;
    for (int i = 0; i < KVB_DROP_COUNT; i++)
        st->dropped[i] += cm.dropped[i];
    st->counters[KVB_COUNT_CLEARS] += cm.clears;
    if (seq >= 0)
        st->last_seq = seq;
    st->last_heard_ns = now;
    kvb__ix_publish(idx, st);
    kvb__ix_unlock(&idx->smu);
    pthread_mutex_unlock(&idx->wmu);
    return 0;
}
