/*
 * test_adaptive.c - what makes the adaptive backend what it is: the cache
 * follows simulations of lru and lineage_arc. Each workload below is replayed
 * through the three backends exactly as a pool would drive them (a hit is a
 * remove and a release, a miss an eviction when full and an insert), and the
 * hits are compared: where lineage_arc leads throughout, adaptive's hits are
 * lineage_arc's exactly; where lru leads, adaptive switches and comes close;
 * across phases that favour one then the other it is within the 0.5
 * point of the better one. Then the cases the conformance suite
 * (tests/test_inactive.c) does not construct: duplicate contents, held
 * blocks whose content the simulations forget, and a pool run.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "kvblock.h"
#include "testutil.h"

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static kvb_hash key_hash(uint64_t k)
{
    kvb_hash h;
    cr_assert_eq(kvb_hash_make(mix(k) | 1, 0, false, 0, &h), 0);
    return h;
}

static void *plain_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}

static void plain_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

static void *mk(const kvb_inactive_ops *ops, uint32_t n)
{
    kvb_inactive_params p;
    memset(&p, 0, sizeof p);
    p.block_count = n;
    p.allocator = (kvb_allocator){.ctx = NULL, .alloc = plain_alloc, .free = plain_free};
    void *self = NULL;
    cr_assert_eq(ops->create(&p, &self), 0, "%s: create", ops->name);
    return self;
}

/* ------------------------------------------------------------------------ */
/* workloads of one-block requests                                          */
/* ------------------------------------------------------------------------ */

enum { CAP = 256, PHASE = 4000 };

/* Phase kinds: HOT, half the references to a hot set of CAP / 2 keys, half to
 * new keys (a scan): lineage_arc keeps the hot set, lru lets the scan flush it.
 * PAIRS: 70% new keys, 15% first references of keys referenced exactly once
 * more 0.95 x CAP references later: lru keeps them (fewer than CAP distinct
 * keys in between), lineage_arc's T1 stays small (the ghost hits are far, so
 * p does not grow) and loses them. */
enum kind { HOT, PAIRS };

struct gen {
    uint64_t seed, next_key;
    uint64_t ring[CAP]; /* PAIRS: the key due again at this slot, 0: none */
    uint64_t r;
};

static uint64_t gen_next(struct gen *g, enum kind k)
{
    if (k == HOT) {
        uint64_t z = mix(g->seed++);
        return z & 1 ? 1 + (z >> 1) % (CAP / 2) : g->next_key++;
    }
    uint32_t d = CAP * 95 / 100;
    uint64_t *slot = &g->ring[g->r++ % d];
    if (*slot) {
        uint64_t x = *slot;
        *slot = 0;
        return x;
    }
    uint64_t x = g->next_key++;
    if (mix(g->seed++) % 1000 < 176)
        *slot = x;
    return x;
}

/* A pool of CAP blocks driven through one backend: key -> block (small open
 * table), block -> key, and the hits per phase. */
struct run {
    const kvb_inactive_ops *ops;
    void *self;
    uint64_t *key;  /* table of keys, 0: empty */
    uint32_t *blk;  /* block of key, UINT32_MAX: not cached */
    uint64_t *bkey; /* key of block */
    uint32_t *arr;  /* arrival of block */
    uint32_t nfree, arrival, tcap;
};

static uint32_t cell_of(const struct run *r, uint64_t k)
{
    uint32_t i = (uint32_t)(mix(k) % r->tcap);
    while (r->key[i] && r->key[i] != k)
        i = (i + 1) % r->tcap;
    return i;
}

/* Replays the phases; hits[i] gets phase i's hits. */
static void replay(const kvb_inactive_ops *ops, const enum kind *ph, uint32_t nph, uint64_t *hits)
{
    struct run r = {.ops = ops, .self = mk(ops, CAP), .nfree = CAP, .tcap = 1u << 17};
    r.key = calloc(r.tcap, sizeof *r.key);
    r.blk = malloc(r.tcap * sizeof *r.blk);
    r.bkey = calloc(CAP, sizeof *r.bkey);
    r.arr = calloc(CAP, sizeof *r.arr);
    cr_assert(r.key && r.blk && r.bkey && r.arr);
    struct gen g = {.seed = 7, .next_key = 1000000};
    for (uint32_t i = 0; i < nph; i++) {
        hits[i] = 0;
        for (uint32_t t = 0; t < PHASE; t++) {
            uint64_t k = gen_next(&g, ph[i]);
            kvb_hash h = key_hash(k);
            uint32_t c = cell_of(&r, k);
            if (r.key[c] == k && r.blk[c] != UINT32_MAX) { /* a hit: taken, released */
                uint32_t id = r.blk[c];
                hits[i]++;
                cr_assert(ops->remove(r.self, h, id), "%s: remove", ops->name);
                cr_assert_eq(ops->insert(r.self, h, id, r.arr[id]), 0);
                continue;
            }
            uint32_t id;
            if (r.nfree) {
                id = CAP - r.nfree--;
            } else {
                cr_assert_eq(ops->evict(r.self, 1, &id), 1, "%s: evict", ops->name);
                cr_assert_lt(id, CAP);
                r.blk[cell_of(&r, r.bkey[id])] = UINT32_MAX;
            }
            c = cell_of(&r, k); /* (the table only grows: c is still k's cell) */
            r.key[c] = k;
            r.blk[c] = id;
            r.bkey[id] = k;
            r.arr[id] = r.arrival++;
            cr_assert_eq(ops->insert(r.self, h, id, r.arr[id]), 0);
        }
    }
    cr_assert_eq(ops->len(r.self), CAP);
    ops->destroy(r.self);
    free(r.key);
    free(r.blk);
    free(r.bkey);
    free(r.arr);
}

static uint64_t sum(const uint64_t *x, uint32_t n)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

Test(adaptive, follows_lineage_arc_exactly_while_it_leads)
{
    enum kind ph[] = {HOT, HOT};
    uint64_t lru[2], arc[2], ada[2];
    replay(&kvb_inactive_lru, ph, 2, lru);
    replay(&kvb_inactive_lineage_arc, ph, 2, arc);
    replay(&kvb_inactive_adaptive, ph, 2, ada);
    cr_assert_gt(sum(arc, 2), sum(lru, 2) * 6 / 5, "the workload favours lineage_arc");
    for (int i = 0; i < 2; i++)
        cr_assert_eq(ada[i], arc[i], "phase %d: adaptive %llu, lineage_arc %llu", i,
                     (unsigned long long)ada[i], (unsigned long long)arc[i]);
}

Test(adaptive, switches_to_lru_where_it_leads)
{
    enum kind ph[] = {PAIRS};
    uint64_t lru, arc, ada;
    replay(&kvb_inactive_lru, ph, 1, &lru);
    replay(&kvb_inactive_lineage_arc, ph, 1, &arc);
    replay(&kvb_inactive_adaptive, ph, 1, &ada);
    cr_assert_gt(lru, arc * 13 / 10, "the workload favours lru: %llu, lineage_arc %llu",
                 (unsigned long long)lru, (unsigned long long)arc);
    /* the lead builds up after the cache fills: adaptive switches early in it */
    cr_assert_geq(ada + (lru - arc) / 10, lru, "adaptive %llu, lru %llu, lineage_arc %llu",
                  (unsigned long long)ada, (unsigned long long)lru, (unsigned long long)arc);
}

Test(adaptive, within_half_a_point_of_the_better_across_phases)
{
    enum kind ph[][3] = {{HOT, PAIRS, HOT}, {PAIRS, HOT, PAIRS}};
    for (int w = 0; w < 2; w++) {
        uint64_t lru[3], arc[3], ada[3];
        replay(&kvb_inactive_lru, ph[w], 3, lru);
        replay(&kvb_inactive_lineage_arc, ph[w], 3, arc);
        replay(&kvb_inactive_adaptive, ph[w], 3, ada);
        uint64_t best = sum(lru, 3) > sum(arc, 3) ? sum(lru, 3) : sum(arc, 3);
        cr_assert_geq(sum(ada, 3) * 1000 + 5 * 3 * PHASE, best * 1000,
                      "workload %d: adaptive %llu, lru %llu, lineage_arc %llu", w,
                      (unsigned long long)sum(ada, 3), (unsigned long long)sum(lru, 3),
                      (unsigned long long)sum(arc, 3));
    }
}

/* ------------------------------------------------------------------------ */
/* cases the conformance suite does not build                               */
/* ------------------------------------------------------------------------ */

static uint32_t evict_all(const kvb_inactive_ops *ops, void *self, uint32_t *out, uint32_t max)
{
    uint32_t n = 0, k;
    while ((k = ops->evict(self, 1, out + n)) == 1) {
        n++;
        cr_assert_leq(n, max);
    }
    cr_assert_eq(ops->len(self), 0);
    return n;
}

Test(adaptive, duplicate_contents_are_both_cached_and_both_evicted)
{
    const kvb_inactive_ops *ops = &kvb_inactive_adaptive;
    void *a = mk(ops, 8);
    kvb_hash h = key_hash(42);
    cr_assert_eq(ops->insert(a, h, 1, 10), 0);
    cr_assert_eq(ops->insert(a, h, 2, 11), 0); /* the same content in another block */
    cr_assert_eq(ops->insert(a, key_hash(43), 3, 12), 0);
    cr_assert_eq(ops->len(a), 3);
    cr_assert(ops->remove(a, h, 2));
    cr_assert_eq(ops->insert(a, h, 2, 11), 0);
    uint32_t out[8];
    uint32_t n = evict_all(ops, a, out, 8);
    cr_assert_eq(n, 3);
    bool seen[4] = {false};
    for (uint32_t i = 0; i < n; i++) {
        cr_assert(out[i] >= 1 && out[i] <= 3 && !seen[out[i]]);
        seen[out[i]] = true;
    }
    ops->destroy(a);
}

/* A block taken by a hit stays out while the simulations forget its content;
 * the cached blocks are evicted around it, and it comes back as a block like
 * any other. */
Test(adaptive, a_held_block_survives_its_content_being_forgotten)
{
    const kvb_inactive_ops *ops = &kvb_inactive_adaptive;
    enum { N = 16 };
    void *a = mk(ops, N);
    for (uint32_t id = 0; id < N; id++)
        cr_assert_eq(ops->insert(a, key_hash(id), id, id), 0);
    cr_assert(ops->remove(a, key_hash(0), 0)); /* held from now on */
    uint32_t arrival = N, out[N];
    for (uint32_t round = 0; round < 40; round++) { /* 40 x N new contents through N - 1 */
        for (uint32_t i = 0; i < N - 1; i++) {
            uint32_t id;
            cr_assert_eq(ops->evict(a, 1, &id), 1);
            cr_assert(id >= 1 && id < N, "round %u: evicted %u", round, id);
            cr_assert_eq(ops->insert(a, key_hash(1000 + arrival), id, arrival), 0);
            arrival++;
        }
    }
    cr_assert_not(ops->contains(a, 0));
    cr_assert_eq(ops->insert(a, key_hash(0), 0, 0), 0); /* released at last */
    cr_assert(ops->contains(a, 0));
    cr_assert_eq(evict_all(ops, a, out, N), N);
    ops->destroy(a);
}

/* Through a pool: requests over families of shared prefixes under both
 * regimes (a hot set of families, then a stream of new ones); the pool's
 * invariants hold all along and adaptive is within half a point of the better
 * of lru and lineage_arc. */
static uint64_t pool_run(kvb_evict_policy pol, uint64_t *refs)
{
    kvb_pool *p = tu_pool(128, pol);
    enum { LEN = 8 };
    uint64_t seed = 3, hits = 0;
    *refs = 0;
    for (uint32_t r = 0; r < 6000; r++) {
        bool hot = (r / 1500) % 2 == 0;
        uint64_t f = hot ? mix(seed++) % 12 : 100000 + r;
        uint32_t n = 2 + (uint32_t)(mix(seed++) % (LEN - 1));
        *refs += n;
        kvb_hash h[LEN];
        for (uint32_t j = 0; j < n; j++)
            cr_assert_eq(kvb_hash_make(mix(f * 64 + j) | 1, j ? mix(f * 64 + j - 1) | 1 : 0, j > 0,
                                       j, &h[j]),
                         0);
        kvb_block b[LEN];
        int m = kvb_pool_match(p, h, n, b);
        cr_assert_geq(m, 0);
        hits += (uint64_t)m;
        uint32_t mu32 = (uint32_t)m;
        if (mu32 < n) {
            kvb_mutable mu[LEN];
            kvb_complete c[LEN];
            cr_assert_eq(kvb_pool_allocate(p, n - mu32, mu, NULL, NULL), 0);
            for (uint32_t j = mu32; j < n; j++)
                cr_assert_eq(kvb_mutable_stage(&mu[j - mu32], h[j], &c[j - mu32]), 0);
            cr_assert_eq(kvb_pool_register(p, c, n - mu32, b + mu32), 0);
        }
        for (uint32_t j = n; j-- > 0;)
            cr_assert_eq(kvb_block_release(&b[j]), 0);
        if (r % 500 == 0)
            cr_assert_eq(kvb_pool_check(p), 0);
    }
    tu_finish(p);
    return hits;
}

Test(adaptive, through_a_pool)
{
    uint64_t refs;
    uint64_t lru = pool_run(KVB_EVICT_LRU, &refs), arc = pool_run(KVB_EVICT_LINEAGE_ARC, &refs);
    uint64_t ada = pool_run(KVB_EVICT_ADAPTIVE, &refs);
    uint64_t best = lru > arc ? lru : arc;
    cr_assert_geq(ada * 1000 + 5 * refs, best * 1000, "adaptive %llu, lru %llu, lineage_arc %llu",
                  (unsigned long long)ada, (unsigned long long)lru, (unsigned long long)arc);
}
