/*
 * tools/kvb-bench/sol.c - the "speed of light" baseline: the same logical work
 * as a pool on plain arrays - a free stack, one open-addressing probe per block
 * (linear probing, 8-byte cells holding a 32-bit hash tag beside the id, so a
 * probe reads a slot only on a tag match and backward-shift deletion never reads
 * one; find-or-insert in one probe), one 32-byte record per block (hash,
 * refcount word), an intrusive LRU list in a dense array of links - with no
 * lock, no atomics, no state machine, no validation beyond what the operation
 * needs, no callbacks, no statistics. sol_run mirrors lib_run (lib.c) operation
 * by operation, on the same plan.
 */
#include "kvb-bench/sol.h"

static uint32_t sol_map_cap(uint32_t B)
{
    uint32_t cap = 2;
    while (cap < 2ull * B)
        cap <<= 1;
    return cap;
}

size_t sol_bytes(uint32_t B)
{
    return (size_t)B * sizeof(struct sol_slot) + ((size_t)B + 1) * sizeof(struct sol_link) +
           (size_t)sol_map_cap(B) * sizeof(uint64_t) + (size_t)B * sizeof(uint32_t);
}

void sol_init(sol *s, uint32_t B, uint32_t maxw)
{
    memset(s, 0, sizeof *s);
    s->B = B;
    uint32_t cap = sol_map_cap(B);
    s->mask = cap - 1;
    s->shift = 64 - (uint32_t)__builtin_ctz(cap);
    s->slot = kvbt_xmalloc_array(B, sizeof *s->slot);
    s->link = kvbt_xmalloc_array((size_t)B + 1, sizeof *s->link);
    s->map = kvbt_xmalloc_array(cap, sizeof *s->map);
    s->stack = kvbt_xmalloc_array(B, sizeof *s->stack);
    memset(s->map, 0xff, (size_t)cap * sizeof *s->map);
    memset(s->slot, 0, (size_t)B * sizeof *s->slot);
    for (uint32_t i = 0; i < B; i++) {
        s->slot[i].word = 1ull << 32;
        s->stack[i] = B - 1 - i; /* pops 0, 1, 2, ... like the library's first pass */
    }
    s->nfree = B;
    s->link[B].prev = s->link[B].next = B;
    s->mut = kvbt_xmalloc_array(maxw, sizeof *s->mut);
    s->cmp = kvbt_xmalloc_array(maxw, sizeof *s->cmp);
    s->out = kvbt_xmalloc_array(maxw, sizeof *s->out);
    s->hit = kvbt_xmalloc_array(maxw, sizeof *s->hit);
}

void sol_fini(sol *s)
{
    free(s->slot);
    free(s->link);
    free(s->map);
    free(s->stack);
    free(s->mut);
    free(s->cmp);
    free(s->out);
    free(s->hit);
}

/* Map cells: tag << 32 | id, where tag is the top 32 bits of the mixed hash; the
 * home index is the tag's top log2(capacity) bits, so deletion never reads a
 * slot and a probe reads a slot only when the tag matches. */
#define SOL_EMPTY UINT64_MAX

static inline uint64_t sol_mix(kvb_hash h)
{
    return (h.hi ^ h.lo) * 0x9E3779B97F4A7C15ull;
}

static inline uint32_t sol_tag_home(const sol *s, uint32_t tag)
{
    return tag >> (s->shift - 32);
}

static inline uint32_t sol_find(const sol *s, kvb_hash h)
{
    uint32_t tag = (uint32_t)(sol_mix(h) >> 32);
    for (uint32_t i = sol_tag_home(s, tag);; i = (i + 1) & s->mask) {
        uint64_t c = s->map[i];
        if (c == SOL_EMPTY)
            return SOL_NONE;
        uint32_t id = (uint32_t)c;
        if ((uint32_t)(c >> 32) == tag && s->slot[id].hash.lo == h.lo &&
            s->slot[id].hash.hi == h.hi)
            return id;
    }
}

/* One probe: the block already holding id's hash, or id after inserting it. */
static inline uint32_t sol_find_or_insert(sol *s, uint32_t id)
{
    kvb_hash h = s->slot[id].hash;
    uint32_t tag = (uint32_t)(sol_mix(h) >> 32);
    for (uint32_t i = sol_tag_home(s, tag);; i = (i + 1) & s->mask) {
        uint64_t c = s->map[i];
        if (c == SOL_EMPTY) {
            s->map[i] = (uint64_t)tag << 32 | id;
            return id;
        }
        uint32_t e = (uint32_t)c;
        if ((uint32_t)(c >> 32) == tag && s->slot[e].hash.lo == h.lo && s->slot[e].hash.hi == h.hi)
            return e;
    }
}

/* Backward-shift deletion: homes come from the tags, no slot is read. */
static inline void sol_erase(sol *s, uint32_t id)
{
    uint32_t tag = (uint32_t)(sol_mix(s->slot[id].hash) >> 32);
    uint32_t i = sol_tag_home(s, tag);
    while ((uint32_t)s->map[i] != id)
        i = (i + 1) & s->mask;
    for (uint32_t j = i;;) {
        j = (j + 1) & s->mask;
        uint64_t e = s->map[j];
        if (e == SOL_EMPTY)
            break;
        uint32_t home = sol_tag_home(s, (uint32_t)(e >> 32));
        if (((j - home) & s->mask) >= ((j - i) & s->mask)) {
            s->map[i] = e;
            i = j;
        }
    }
    s->map[i] = SOL_EMPTY;
}

static inline void sol_lru_unlink(sol *s, uint32_t id)
{
    struct sol_link *x = &s->link[id];
    s->link[x->prev].next = x->next;
    s->link[x->next].prev = x->prev;
    s->ncached--;
}

static inline void sol_lru_push(sol *s, uint32_t id)
{
    uint32_t t = s->link[s->B].prev;
    s->link[id].prev = t;
    s->link[id].next = s->B;
    s->link[t].next = id;
    s->link[s->B].prev = id;
    s->ncached++;
}

/* a new life of the slot: generation + 1, count rc */
static inline uint32_t sol_renew(sol *s, uint32_t id, uint32_t rc)
{
    uint32_t gen = (uint32_t)(s->slot[id].word >> 32) + 1;
    s->slot[id].word = (uint64_t)gen << 32 | rc;
    return gen;
}

/* Free stack first, then the oldest cached blocks; victims are unlinked first
 * and erased from the map in a second pass (independent misses overlap). */
static inline int sol_allocate(sol *s, uint32_t n, kvb_mutable *out)
{
    if (s->nfree + s->ncached < n)
        return -ENOSPC;
    uint32_t i = 0;
    for (; i < n && s->nfree; i++)
        out[i].id = s->stack[--s->nfree];
    uint32_t first_victim = i;
    for (; i < n; i++) {
        uint32_t id = s->link[s->B].next;
        sol_lru_unlink(s, id);
        out[i].id = id;
    }
    for (uint32_t j = first_victim; j < n; j++)
        sol_erase(s, out[j].id);
    for (uint32_t j = 0; j < n; j++) {
        out[j].pool = NULL;
        out[j].gen = sol_renew(s, out[j].id, 0);
    }
    return 0;
}

static inline void sol_stage(sol *s, const kvb_mutable *m, kvb_hash h, kvb_complete *c)
{
    s->slot[m->id].hash = h;
    *c = (kvb_complete){.pool = NULL, .id = m->id, .gen = m->gen, .hash = h};
}

/* take one reference on id (resurrecting it from the cache when its count is 0) */
static inline uint32_t sol_acquire(sol *s, uint32_t id)
{
    if ((uint32_t)s->slot[id].word == 0) {
        sol_lru_unlink(s, id);
        return sol_renew(s, id, 1);
    }
    s->slot[id].word++;
    return (uint32_t)(s->slot[id].word >> 32);
}

static inline void sol_register(sol *s, const kvb_complete *in, uint32_t n, kvb_block *out)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = in[i].id;
        uint32_t e = sol_find_or_insert(s, id);
        uint32_t gen;
        if (e == id) {
            gen = sol_renew(s, id, 1);
        } else { /* content already present: share it, free the new block */
            gen = sol_acquire(s, e);
            s->stack[s->nfree++] = id;
        }
        out[i] = (kvb_block){.pool = NULL, .id = e, .gen = gen, .hash = s->slot[e].hash};
    }
}

static inline void sol_release(sol *s, const kvb_block *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = b[i].id;
        if ((uint32_t)--s->slot[id].word == 0) {
            sol_renew(s, id, 0);
            sol_lru_push(s, id);
        }
    }
}

static inline uint32_t sol_match(sol *s, const kvb_hash *h, uint32_t n, kvb_block *out)
{
    uint32_t k = 0;
    for (; k < n; k++) {
        uint32_t id = sol_find(s, h[k]);
        if (id == SOL_NONE)
            break;
        out[k] = (kvb_block){.pool = NULL, .id = id, .gen = sol_acquire(s, id), .hash = h[k]};
    }
    return k;
}

static inline uint32_t sol_scattered(sol *s, const kvb_hash *h, uint32_t n, kvb_block *out,
                                     bool *hit)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = sol_find(s, h[i]);
        hit[i] = id != SOL_NONE;
        if (hit[i]) {
            out[i] = (kvb_block){.pool = NULL, .id = id, .gen = sol_acquire(s, id), .hash = h[i]};
            k++;
        } else {
            memset(&out[i], 0, sizeof out[i]);
        }
    }
    return k;
}

static inline int sol_clone(sol *s, const kvb_block *b, kvb_block *out)
{
    uint64_t w = s->slot[b->id].word;
    if ((uint32_t)(w >> 32) != b->gen || (uint32_t)w == 0)
        return -ESTALE;
    s->slot[b->id].word = w + 1;
    *out = *b;
    return 0;
}

static inline int sol_upgrade(sol *s, const kvb_weak *wk, kvb_block *out)
{
    uint64_t w = s->slot[wk->id].word;
    if ((uint32_t)(w >> 32) == wk->gen && (uint32_t)w != 0) {
        s->slot[wk->id].word = w + 1;
        *out = (kvb_block){.pool = NULL, .id = wk->id, .gen = wk->gen, .hash = wk->hash};
        return 0;
    }
    uint32_t id = sol_find(s, wk->hash);
    if (id == SOL_NONE)
        return -ENOENT;
    *out = (kvb_block){.pool = NULL, .id = id, .gen = sol_acquire(s, id), .hash = wk->hash};
    return 0;
}

void sol_admit(sol *s, const kvb_hash *h, uint32_t n, kvb_block *out)
{
    if (sol_allocate(s, n, s->mut) != 0)
        kvbt_die(prog, "baseline: out of blocks");
    for (uint32_t j = 0; j < n; j++)
        sol_stage(s, &s->mut[j], h[j], &s->cmp[j]);
    sol_register(s, s->cmp, n, out);
}

void sol_release_n(sol *s, const kvb_block *b, uint32_t n)
{
    sol_release(s, b, n);
}

static KVBT_NORETURN void sol_fail(const char *what)
{
    kvbt_die(prog, "baseline: %s failed (a kvb-bench bug)", what);
}

uint64_t sol_run(sol *s, const kvb_hash *H, const kvb_block *held, const kvb_weak *weak, enum op o,
                 const plan *pl)
{
    const uint32_t n = pl->n, k = pl->k;
    uint64_t ns = 0;

    switch (o) {
    case OP_LIFECYCLE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_hash *h = pl->q + (size_t)b * n;
            if (sol_allocate(s, n, s->mut) != 0)
                sol_fail("allocate");
            for (uint32_t j = 0; j < n; j++)
                sol_stage(s, &s->mut[j], h[j], &s->cmp[j]);
            sol_register(s, s->cmp, n, s->out);
            sol_release(s, s->out, n);
        }
        ns = region_end();
        break;
    case OP_MATCH_ACTIVE:
        region_begin();
        for (uint32_t b = 0; b < k; b++)
            if (sol_match(s, H + pl->pos[b], n, s->out + (size_t)b * n) != n)
                sol_fail("match");
        ns = region_end();
        sol_release(s, s->out, pl->w);
        break;
    case OP_SCATTERED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            size_t o0 = (size_t)b * n;
            if (sol_scattered(s, pl->q + o0, n, s->out + o0, s->hit + o0) != n)
                sol_fail("scattered");
        }
        ns = region_end();
        sol_release(s, s->out, pl->w);
        break;
    case OP_UPGRADE_LIVE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_weak *wk = weak + pl->pos[b];
            kvb_block *out = s->out + (size_t)b * n;
            for (uint32_t j = 0; j < n; j++)
                if (sol_upgrade(s, &wk[j], &out[j]) != 0)
                    sol_fail("upgrade");
        }
        ns = region_end();
        sol_release(s, s->out, pl->w);
        break;
    case OP_CLONE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_block *src = held + pl->pos[b];
            for (uint32_t j = 0; j < n; j++)
                if (sol_clone(s, &src[j], &s->out[j]) != 0)
                    sol_fail("clone");
            sol_release(s, s->out, n);
        }
        ns = region_end();
        break;
    case OP_MATCH_CACHED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            if (sol_match(s, H + pl->pos[b], n, s->out) != n)
                sol_fail("match (cached)");
            sol_release(s, s->out, n);
        }
        ns = region_end();
        break;
    case OP_UPGRADE_CACHED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_weak *wk = weak + pl->pos[b];
            for (uint32_t j = 0; j < n; j++)
                if (sol_upgrade(s, &wk[j], &s->out[j]) != 0)
                    sol_fail("upgrade (cached)");
            sol_release(s, s->out, n);
        }
        ns = region_end();
        break;
    case OP_EVICT_ALLOC:
        region_begin();
        for (uint32_t b = 0; b < k; b++)
            if (sol_allocate(s, n, s->mut + (size_t)b * n) != 0)
                sol_fail("allocate (evicting)");
        ns = region_end();
        for (uint32_t j = 0; j < pl->w; j++)
            sol_stage(s, &s->mut[j], pl->q[j], &s->cmp[j]);
        sol_register(s, s->cmp, pl->w, s->out);
        sol_release(s, s->out, pl->w);
        break;
    case OP_COUNT:
        break;
    }
    return ns;
}
