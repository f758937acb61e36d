/*
 * tools/kvb-bench/sol.c - the "speed of light" baseline: the memory work a pool
 * does for each operation, on plain arrays, and nothing else (issue 16: "the
 * lookups, list links and free-list moves ... no hashing, no states, no locks,
 * no counters"), so that the ratio library / baseline says what the library's
 * bookkeeping costs.
 *
 * The memory work, with the pool's layout:
 *  - a hash table of the pool's size (B + 3B/4 + 8 cells of 32 bits), linear
 *    probing in Robin Hood order with the displacement packed beside the id
 *    (the pool's scheme: a probe compares a slot's hash only where the
 *    displacement says the entry shares the key's home; deletion shifts the
 *    following entries back until one sits at its home, reading no slot);
 *  - one 32-byte record per block (the pool's slot size): hash and a
 *    generation << 32 | refcount word;
 *  - an intrusive LRU list in a dense array of links;
 *  - a free stack.
 * A lookup is one probe sequence from the key's home cell and one hash compare
 * in the record; taking a reference is one add to the word (a cached block also
 * leaves the list); releasing the last one links the block at the list's tail
 * (and bumps the generation, so weak handles to cached blocks take the lookup
 * path as in the pool); a new block is a free-stack pop or an eviction (unlink
 * the oldest, erase it from the table); a registration is one insert that also
 * finds existing content.
 *
 * What it leaves out is everything else: the home cell is the top 32 bits of
 * the key's low word scaled to the table (no mixing: the keys are hashes), no
 * state machine, no lock, no atomics, no statistics, no callbacks or events,
 * no validation beyond what the operation needs, handles of 8 bytes, no
 * wrap-around (the table has a tail of cells past the last home cell, and an
 * insert that would probe past it dies: displacements are packed in the bits
 * the id leaves, so pools are limited to 2^26 - 1 blocks, BENCH_MAX_BLOCKS).
 * Every helper is inlined into one loop per operation, and batch calls on large
 * tables prefetch as the pool does: the home cells of the batch, then the
 * records they name (lookups) or the victims' records and home cells
 * (evictions), so that the batch's independent misses overlap.
 *
 * It is the pool's table algorithm, not the fastest possible one: in cache, the
 * Robin Hood probes' data-dependent branches mispredict about once per lookup
 * (cachegrind), which the former baseline's half-full table of 64-bit tagged
 * cells avoided; out of cache it spends less (docs/performance.md).
 *
 * sol_run mirrors lib_run (lib.c) operation by operation, on the same plan.
 * The baseline checks what keeps the benchmark honest (every match of a
 * planned hit hits, no eviction from an empty list) and dies otherwise.
 */
#include "kvb-bench/sol.h"

#define SOL_INLINE static inline __attribute__((always_inline))

static KVBT_NORETURN void sol_fail(const char *what)
{
    kvbt_die(prog, "baseline: %s failed (a kvb-bench bug)", what);
}

/* the pool's cell count for B blocks (lib/pool.c: load <= 0.57) */
static uint32_t sol_map_cap(uint32_t B)
{
    return B + B / 4 * 3 + 8;
}

/* Longest probe sequence (displacement) an insert may create; the table has that
 * many cells past the last home cell, so probes never wrap (see sol_init). */
static uint32_t sol_disp_limit(uint32_t B)
{
    uint32_t id_bits = 32 - (uint32_t)__builtin_clz(B);
    uint32_t disp_max = (uint32_t)((1ull << (32 - id_bits)) - 1);
    return disp_max - 1 < 255 ? disp_max - 1 : 255;
}

size_t sol_bytes(uint32_t B)
{
    return (size_t)B * sizeof(struct sol_slot) + ((size_t)B + 1) * sizeof(struct sol_link) +
           ((size_t)sol_map_cap(B) + sol_disp_limit(B)) * sizeof(uint32_t) +
           (size_t)B * sizeof(uint32_t);
}

void sol_init(sol *s, uint32_t B, uint32_t maxw)
{
    memset(s, 0, sizeof *s);
    s->B = B;
    if (B > BENCH_MAX_BLOCKS)
        kvbt_die(prog, "baseline: %u blocks, more than its packed cells allow (%u)", B,
                 BENCH_MAX_BLOCKS);
    s->cap = sol_map_cap(B);
    s->id_bits = 32 - (uint32_t)__builtin_clz(B); /* 2^bits > B: an all-ones cell is no id */
    s->id_mask = (1u << s->id_bits) - 1;
    /* Displacements stay below disp_limit < disp_max, the displacement an empty
     * (all-ones) cell reads as; cells [cap, cap + disp_limit) catch the probes that
     * run past the last home cell (the last one is never written, so every probe
     * meets an empty cell or a richer entry before the end). */
    s->disp_limit = sol_disp_limit(B);
    s->prefetch = B >= 65536;
    s->slot = kvbt_xmalloc_array(B, sizeof *s->slot);
    s->link = kvbt_xmalloc_array((size_t)B + 1, sizeof *s->link);
    s->map = kvbt_xmalloc_array((size_t)s->cap + s->disp_limit, sizeof *s->map);
    s->stack = kvbt_xmalloc_array(B, sizeof *s->stack);
    memset(s->map, 0xff, ((size_t)s->cap + s->disp_limit) * sizeof *s->map);
    memset(s->slot, 0, (size_t)B * sizeof *s->slot);
    for (uint32_t i = 0; i < B; i++)
        s->stack[i] = B - 1 - i; /* pops 0, 1, 2, ... like the library's first pass */
    s->nfree = B;
    s->link[B].prev = s->link[B].next = B;
    s->ids = kvbt_xmalloc_array(maxw, sizeof *s->ids);
    s->home = kvbt_xmalloc_array(maxw, sizeof *s->home);
    s->out = kvbt_xmalloc_array(maxw, sizeof *s->out);
    s->hit = kvbt_xmalloc_array(maxw, sizeof *s->hit);
}

void sol_fini(sol *s)
{
    free(s->slot);
    free(s->link);
    free(s->map);
    free(s->stack);
    free(s->ids);
    free(s->home);
    free(s->out);
    free(s->hit);
}

/* ---- the table --------------------------------------------------------------- */

/* The key's home cell: its top bits, scaled to the table (the keys are hashes). */
SOL_INLINE uint32_t sol_home(const sol *s, kvb_hash h)
{
    return (uint32_t)(((h.lo >> 32) * (uint64_t)s->cap) >> 32);
}

SOL_INLINE uint32_t sol_disp(const sol *s, uint32_t cell)
{
    return cell >> s->id_bits;
}

/* The block holding h, probing from its home cell i; SOL_NONE when absent. An
 * empty cell reads as the largest displacement, above any entry's: no test of
 * its own until a displacement differs. */
SOL_INLINE uint32_t sol_find(const sol *s, kvb_hash h, uint32_t i)
{
    for (uint32_t d = 0;; d++, i++) {
        uint32_t cell = s->map[i];
        uint32_t cd = sol_disp(s, cell);
        if (cd == d) {
            uint32_t id = cell & s->id_mask;
            if (s->slot[id].hash.lo == h.lo && s->slot[id].hash.hi == h.hi)
                return id;
        } else if (cd < d || cell == SOL_NONE) {
            return SOL_NONE;
        }
    }
}

/* One probe sequence from home cell i: the block already holding id's hash, or
 * id after inserting it (taking the cell of the first richer entry and carrying
 * that one on, Robin Hood). */
SOL_INLINE uint32_t sol_insert(sol *s, uint32_t id, uint32_t i)
{
    const kvb_hash h = s->slot[id].hash;
    uint32_t d = 0, cell;
    for (;; d++, i++) {
        cell = s->map[i];
        if (cell == SOL_NONE) {
            if (d >= s->disp_limit)
                sol_fail("insert (a probe sequence longer than the table's tail)");
            s->map[i] = d << s->id_bits | id;
            return id;
        }
        uint32_t cd = sol_disp(s, cell);
        if (cd < d)
            break;
        if (cd == d) {
            uint32_t e = cell & s->id_mask;
            if (s->slot[e].hash.lo == h.lo && s->slot[e].hash.hi == h.hi)
                return e;
        }
    }
    for (uint32_t carry = id;; d++, i++) {
        if (d >= s->disp_limit)
            sol_fail("insert (a probe sequence longer than the table's tail)");
        cell = s->map[i];
        if (cell == SOL_NONE) {
            s->map[i] = d << s->id_bits | carry;
            return id;
        }
        uint32_t cd = sol_disp(s, cell);
        if (cd < d) {
            s->map[i] = d << s->id_bits | carry;
            carry = cell & s->id_mask;
            d = cd;
        }
    }
}

/* Erase id, probing from its home cell i; backward shift (displacement - 1) until
 * an empty cell or an entry at its home. */
SOL_INLINE void sol_erase(sol *s, uint32_t id, uint32_t i)
{
    while ((s->map[i] & s->id_mask) != id) {
        if (s->map[i] == SOL_NONE)
            sol_fail("erase (absent)");
        i++;
    }
    for (uint32_t cell; (cell = s->map[i + 1]) != SOL_NONE && sol_disp(s, cell) != 0; i++)
        s->map[i] = cell - (1u << s->id_bits);
    s->map[i] = SOL_NONE;
}

/* Home cells of n hashes into home[], each cell prefetched (then, for lookups,
 * the record its entry names), so that the misses of the batch overlap. */
SOL_INLINE void sol_prefetch_lookups(const sol *s, const kvb_hash *h, uint32_t n, uint32_t *home)
{
    for (uint32_t i = 0; i < n; i++) {
        home[i] = sol_home(s, h[i]);
        __builtin_prefetch(&s->map[home[i]]);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t cell = s->map[home[i]];
        if (cell != SOL_NONE)
            __builtin_prefetch(&s->slot[cell & s->id_mask]);
    }
}

/* ---- the list and the references --------------------------------------------- */

SOL_INLINE void sol_unlink(sol *s, uint32_t id)
{
    struct sol_link x = s->link[id];
    s->link[x.prev].next = x.next;
    s->link[x.next].prev = x.prev;
}

SOL_INLINE void sol_push(sol *s, uint32_t id)
{
    uint32_t t = s->link[s->B].prev;
    s->link[id] = (struct sol_link){.prev = t, .next = s->B};
    s->link[t].next = id;
    s->link[s->B].prev = id;
}

/* One more reference on id (out of the cache when it had none): its generation. */
SOL_INLINE uint32_t sol_acquire(sol *s, uint32_t id)
{
    uint64_t w = s->slot[id].word;
    if ((uint32_t)w == 0)
        sol_unlink(s, id);
    s->slot[id].word = w + 1;
    return (uint32_t)(w >> 32);
}

/* The last reference gone: a new generation, linked at the list's tail. */
SOL_INLINE void sol_release(sol *s, const sol_ref *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = b[i].id;
        uint64_t w = s->slot[id].word - 1;
        if ((uint32_t)w == 0) {
            w += 1ull << 32;
            sol_push(s, id);
        }
        s->slot[id].word = w;
    }
}

/* ---- the operations ------------------------------------------------------------- */

/* n new blocks into ids[]: free-stack pops, then the oldest cached blocks, all
 * unlinked first, then erased from the table (pf: their records, then their
 * home cells, prefetched in between). */
SOL_INLINE void sol_allocate_pf(sol *s, uint32_t n, uint32_t *ids, bool pf)
{
    uint32_t i = 0;
    for (; i < n && s->nfree; i++)
        ids[i] = s->stack[--s->nfree];
    const uint32_t v = i;
    for (; i < n; i++) {
        uint32_t id = s->link[s->B].next;
        if (id == s->B)
            sol_fail("allocate (nothing to evict)");
        sol_unlink(s, id);
        ids[i] = id;
        if (pf)
            __builtin_prefetch(&s->slot[id]);
    }
    if (pf)
        for (uint32_t j = v; j < n; j++) {
            s->home[j] = sol_home(s, s->slot[ids[j]].hash);
            __builtin_prefetch(&s->map[s->home[j]]);
        }
    for (uint32_t j = v; j < n; j++)
        sol_erase(s, ids[j], pf ? s->home[j] : sol_home(s, s->slot[ids[j]].hash));
}

SOL_INLINE void sol_allocate(sol *s, uint32_t n, uint32_t *ids)
{
    if (s->prefetch)
        sol_allocate_pf(s, n, ids, true);
    else
        sol_allocate_pf(s, n, ids, false);
}

SOL_INLINE void sol_stage(sol *s, const uint32_t *ids, const kvb_hash *h, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++)
        s->slot[ids[j]].hash = h[j];
}

/* Register n staged blocks: each one insert (a block whose content is already
 * present goes back to the free stack, its reference is to the present one). */
SOL_INLINE void sol_register_pf(sol *s, const uint32_t *ids, uint32_t n, sol_ref *out, bool pf)
{
    for (uint32_t j = 0; j < n; j++) {
        uint32_t id = ids[j];
        uint32_t e = sol_insert(s, id, pf ? s->home[j] : sol_home(s, s->slot[id].hash));
        if (e == id) {
            uint64_t w = s->slot[id].word + 1;
            s->slot[id].word = w;
            out[j] = (sol_ref){id, (uint32_t)(w >> 32)};
        } else {
            out[j] = (sol_ref){e, sol_acquire(s, e)};
            s->stack[s->nfree++] = id;
        }
    }
}

SOL_INLINE void sol_register(sol *s, const uint32_t *ids, uint32_t n, sol_ref *out)
{
    if (!s->prefetch) {
        sol_register_pf(s, ids, n, out, false);
        return;
    }
    for (uint32_t j = 0; j < n; j++) {
        s->home[j] = sol_home(s, s->slot[ids[j]].hash);
        __builtin_prefetch(&s->map[s->home[j]]);
    }
    sol_register_pf(s, ids, n, out, true);
}

/* Prefix match: stops at the first miss (pf: the homes were prefetched). */
SOL_INLINE uint32_t sol_match_pf(sol *s, const kvb_hash *h, uint32_t n, sol_ref *out, bool pf)
{
    uint32_t k = 0;
    for (; k < n; k++) {
        uint32_t id = sol_find(s, h[k], pf ? s->home[k] : sol_home(s, h[k]));
        if (id == SOL_NONE)
            break;
        out[k] = (sol_ref){id, sol_acquire(s, id)};
    }
    return k;
}

SOL_INLINE uint32_t sol_match(sol *s, const kvb_hash *h, uint32_t n, sol_ref *out)
{
    if (!s->prefetch)
        return sol_match_pf(s, h, n, out, false);
    sol_prefetch_lookups(s, h, n, s->home);
    return sol_match_pf(s, h, n, out, true);
}

/* Independent lookups (pf: the homes were prefetched). */
SOL_INLINE uint32_t sol_scattered_pf(sol *s, const kvb_hash *h, uint32_t n, sol_ref *out, bool *hit,
                                     bool pf)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = sol_find(s, h[i], pf ? s->home[i] : sol_home(s, h[i]));
        hit[i] = id != SOL_NONE;
        if (id != SOL_NONE) {
            out[i] = (sol_ref){id, sol_acquire(s, id)};
            k++;
        } else {
            out[i] = (sol_ref){SOL_NONE, 0};
        }
    }
    return k;
}

SOL_INLINE uint32_t sol_scattered(sol *s, const kvb_hash *h, uint32_t n, sol_ref *out, bool *hit)
{
    if (!s->prefetch)
        return sol_scattered_pf(s, h, n, out, hit, false);
    sol_prefetch_lookups(s, h, n, s->home);
    return sol_scattered_pf(s, h, n, out, hit, true);
}

SOL_INLINE bool sol_clone(sol *s, const sol_ref *b, sol_ref *out)
{
    uint64_t w = s->slot[b->id].word;
    if ((uint32_t)(w >> 32) != b->gen || (uint32_t)w == 0)
        return false;
    s->slot[b->id].word = w + 1;
    *out = *b;
    return true;
}

/* A live weak handle takes a reference on its block; a stale one (the block went
 * to the cache) looks its content up. */
SOL_INLINE bool sol_upgrade(sol *s, const sol_weak *wk, sol_ref *out)
{
    uint64_t w = s->slot[wk->id].word;
    if ((uint32_t)(w >> 32) == wk->gen && (uint32_t)w != 0) {
        s->slot[wk->id].word = w + 1;
        *out = (sol_ref){wk->id, wk->gen};
        return true;
    }
    uint32_t id = sol_find(s, wk->hash, sol_home(s, wk->hash));
    if (id == SOL_NONE)
        return false;
    *out = (sol_ref){id, sol_acquire(s, id)};
    return true;
}

void sol_admit(sol *s, const kvb_hash *h, uint32_t n, sol_ref *out)
{
    sol_allocate(s, n, s->ids);
    sol_stage(s, s->ids, h, n);
    sol_register(s, s->ids, n, out);
}

void sol_release_n(sol *s, const sol_ref *b, uint32_t n)
{
    sol_release(s, b, n);
}

uint64_t sol_run(sol *s, const kvb_hash *H, const sol_ref *held, const sol_weak *weak, enum op o,
                 const plan *pl)
{
    const uint32_t n = pl->n, k = pl->k;
    uint64_t ns = 0;

    switch (o) {
    case OP_LIFECYCLE:
    case OP_ACQUIRE: /* the same memory work */
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            sol_allocate(s, n, s->ids);
            sol_stage(s, s->ids, pl->q + (size_t)b * n, n);
            sol_register(s, s->ids, n, s->out);
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
            const sol_weak *wk = weak + pl->pos[b];
            sol_ref *out = s->out + (size_t)b * n;
            for (uint32_t j = 0; j < n; j++)
                if (!sol_upgrade(s, &wk[j], &out[j]))
                    sol_fail("upgrade");
        }
        ns = region_end();
        sol_release(s, s->out, pl->w);
        break;
    case OP_CLONE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const sol_ref *src = held + pl->pos[b];
            for (uint32_t j = 0; j < n; j++)
                if (!sol_clone(s, &src[j], &s->out[j]))
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
            const sol_weak *wk = weak + pl->pos[b];
            for (uint32_t j = 0; j < n; j++)
                if (!sol_upgrade(s, &wk[j], &s->out[j]))
                    sol_fail("upgrade (cached)");
            sol_release(s, s->out, n);
        }
        ns = region_end();
        break;
    case OP_EVICT_ALLOC:
        region_begin();
        for (uint32_t b = 0; b < k; b++)
            sol_allocate(s, n, s->ids + (size_t)b * n);
        ns = region_end();
        /* put fresh content back in the cache (the free stack stays empty) */
        sol_stage(s, s->ids, pl->q, pl->w);
        sol_register(s, s->ids, pl->w, s->out);
        sol_release(s, s->out, pl->w);
        break;
    case OP_COUNT:
        break;
    }
    return ns;
}
