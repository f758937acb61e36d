/*
 * torture_reset.c - kvb_pool_reset_inactive racing matches, scans,
 * registrations and evicting allocations.
 *
 * T threads share two small pools (lru/ALLOW and fifo/REJECT, 32 blocks each)
 * attached to one registry. Every thread runs a random mix of: prefix match of
 * a chain (then release), scattered match and scan, registration of a chain
 * prefix, eviction pressure, and kvb_pool_reset_inactive. A drain takes what is
 * cached at that moment and leaves the blocks other threads are using alone.
 *
 * Checks, as they happen:
 *  - every reference returned (match, scan, register) names a block whose
 *    payload (content[pool][id], written by the MUTABLE owner, plain memory)
 *    is the requested hash: a block drained to RESET and reused must never be
 *    found under its old hash;
 *  - a drain that returns d fired exactly d on_evict and d on_reset callbacks
 *    on the calling thread, and an allocation that evicted e blocks exactly e
 *    on_evict (callbacks run on the thread that caused them);
 *  - kvb_pool_reset_inactive returns a count, nothing else (never -EBUSY: blocks
 *    in use are not a reason to refuse);
 *  - stats snapshots are coherent (the six gauges add up to block_count).
 * At the end: kvb_pool_check() == 0; nothing held; exact counter balance
 * (evictions == evicted by allocations + drained, on_evict == evictions,
 * on_reset == mutable releases + dedups + duplicates + drained, allocations,
 * stagings, registrations, match and scan counters); registry presence equals
 * the pool's cached content for every hash; then a final drain empties the
 * cache and the registry must report every hash absent. Exits non-zero on the
 * first violation.
 *
 * usage: torture_reset [threads=8] [ops_per_thread=200000] [seed=time]
 */
#include "kvblock.h"
#include "support/torture.h"
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPOOLS 2
#define BLOCKS 32
#define CHAINS 12
#define DEPTH  4
#define NCAT   7

static const char *const cat_names[NCAT] = {"match", "scattered", "scan",    "produce",
                                            "reset", "pressure",  "snapshot"};
/* op kind drawn per step -> category */
static const int op_cat[] = {0, 0, 0, 0, 1, 2, 3, 3, 4, 4, 4, 5, 6};
#define NOPS ((uint32_t)(sizeof op_cat / sizeof op_cat[0]))

static kvb_pool *pools[NPOOLS];
static kvb_registry *reg;
static kvb_hash universe[CHAINS][DEPTH];
static kvb_hash content[NPOOLS][BLOCKS];
static atomic_ulong cb_evicts[NPOOLS], cb_resets[NPOOLS];
static _Thread_local uint64_t tl_evicts, tl_resets;

static void on_reset(void *user, uint32_t id)
{
    int pi = *(int *)user;
    if (id >= BLOCKS)
        FAIL("on_reset with block id %u", id);
    atomic_fetch_add_explicit(&cb_resets[pi], 1, memory_order_relaxed);
    tl_resets++;
}

static void on_evict(void *user, kvb_hash h, uint32_t id)
{
    int pi = *(int *)user;
    (void)h;
    if (id >= BLOCKS)
        FAIL("on_evict with block id %u", id);
    atomic_fetch_add_explicit(&cb_evicts[pi], 1, memory_order_relaxed);
    tl_evicts++;
}

struct worker {
    torture_books books[NPOOLS];
    uint64_t drains[NPOOLS];
    uint64_t op_count[NCAT];
};

static void verify_ref(int pi, const kvb_block *b, kvb_hash expect, const char *how)
{
    if (b->pool != pools[pi] || b->id >= BLOCKS)
        FAIL("%s: handle names pool %p block %u", how, (void *)b->pool, b->id);
    if (!kvb_hash_equal(b->hash, expect))
        FAIL("%s: handle hash differs from the requested one", how);
    if (!kvb_hash_equal(content[pi][b->id], expect))
        FAIL("%s: block %u of pool %d holds other content (found after a drain?)", how, b->id, pi);
}

static void release_all(kvb_block *b, uint32_t n, const bool *hit)
{
    kvb_block tmp[DEPTH];
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!hit || hit[i])
            tmp[k++] = b[i];
    if (kvb_block_release_n(tmp, k) != 0)
        FAIL("release_n");
}

static void do_match(struct worker *w, uint64_t *s, int pi)
{
    uint32_t c = tu_rnd(s, CHAINS), n = 1 + tu_rnd(s, DEPTH);
    kvb_block out[DEPTH];
    int k = kvb_pool_match(pools[pi], universe[c], n, out);
    if (k < 0 || (uint32_t)k > n)
        FAIL("match returned %d", k);
    w->books[pi].match_requested += n;
    w->books[pi].match_returned += (uint64_t)k;
    for (int i = 0; i < k; i++)
        verify_ref(pi, &out[i], universe[c][i], "match");
    release_all(out, (uint32_t)k, NULL);
}

static void do_lookup_each(struct worker *w, uint64_t *s, int pi, bool scan)
{
    kvb_hash q[DEPTH];
    kvb_block out[DEPTH];
    bool hit[DEPTH];
    for (int i = 0; i < DEPTH; i++)
        q[i] = universe[tu_rnd(s, CHAINS)][tu_rnd(s, DEPTH)];
    int k = scan ? kvb_pool_scan(pools[pi], q, DEPTH, tu_rnd(s, 2), out, hit)
                 : kvb_pool_match_scattered(pools[pi], q, DEPTH, out, hit);
    if (k < 0)
        FAIL("%s: %s", scan ? "scan" : "match_scattered", kvb_strerror(k));
    int hits = 0;
    for (int i = 0; i < DEPTH; i++)
        if (hit[i]) {
            verify_ref(pi, &out[i], q[i], scan ? "scan" : "match_scattered");
            hits++;
        }
    if (hits != k)
        FAIL("lookup returned %d but %d hit flags", k, hits);
    if (scan) {
        w->books[pi].scan_requested += DEPTH;
        w->books[pi].scan_returned += (uint64_t)k;
    } else {
        w->books[pi].match_requested += DEPTH;
        w->books[pi].match_returned += (uint64_t)k;
    }
    release_all(out, DEPTH, hit);
}

static int allocate_counted(struct worker *w, int pi, uint32_t n, kvb_mutable *m)
{
    kvb_hash ev[BLOCKS];
    uint32_t nev = 0;
    uint64_t before = tl_evicts;
    int rc = kvb_pool_allocate(pools[pi], n, m, ev, &nev);
    if (rc != 0 && rc != -ENOSPC)
        FAIL("allocate: %s", kvb_strerror(rc));
    if (rc == 0) {
        w->books[pi].allocated += n;
        w->books[pi].evicted += nev;
    }
    if (tl_evicts - before != nev)
        FAIL("allocate evicted %u blocks but fired %" PRIu64 " on_evict", nev, tl_evicts - before);
    return rc;
}

/* register a chain prefix: allocate, write the payload, stage, register, release */
static void produce(struct worker *w, uint64_t *s, int pi)
{
    uint32_t c = tu_rnd(s, CHAINS), n = 1 + tu_rnd(s, DEPTH);
    kvb_mutable m[DEPTH];
    kvb_complete cp[DEPTH];
    kvb_block out[DEPTH];
    if (allocate_counted(w, pi, n, m) != 0)
        return;
    for (uint32_t i = 0; i < n; i++) {
        content[pi][m[i].id] = universe[c][i];
        if (kvb_mutable_stage(&m[i], universe[c][i], &cp[i]) != 0)
            FAIL("stage");
    }
    w->books[pi].staged += n;
    if (kvb_pool_register(pools[pi], cp, n, out) != 0)
        FAIL("register");
    w->books[pi].registered += n;
    for (uint32_t i = 0; i < n; i++)
        verify_ref(pi, &out[i], universe[c][i], "register");
    release_all(out, n, NULL);
}

static void drain(struct worker *w, int pi)
{
    uint64_t e0 = tl_evicts, r0 = tl_resets;
    int rc = kvb_pool_reset_inactive(pools[pi]);
    if (rc < 0 || rc > BLOCKS)
        FAIL("reset_inactive returned %d", rc);
    if (tl_evicts - e0 != (uint64_t)rc || tl_resets - r0 != (uint64_t)rc)
        FAIL("drain of %d blocks fired %" PRIu64 " on_evict and %" PRIu64 " on_reset", rc,
             tl_evicts - e0, tl_resets - r0);
    w->drains[pi]++;
    w->books[pi].drained += (uint64_t)rc;
}

static void pressure(struct worker *w, uint64_t *s, int pi)
{
    uint32_t n = 1 + tu_rnd(s, BLOCKS / 2);
    kvb_mutable m[BLOCKS / 2];
    if (allocate_counted(w, pi, n, m) != 0)
        return;
    for (uint32_t i = 0; i < n; i++)
        content[pi][m[i].id] = (kvb_hash){~0ull, m[i].id};
    for (uint32_t i = 0; i < n; i++)
        if (kvb_mutable_release(&m[i]) != 0)
            FAIL("mutable_release");
    w->books[pi].unregistered += n;
}

static void snapshot(int pi)
{
    kvb_stats st;
    if (kvb_pool_stats(pools[pi], &st) != 0)
        FAIL("stats");
    uint64_t sum =
        (uint64_t)st.reset + st.mutable_ + st.staged + st.primary + st.duplicate + st.inactive;
    if (sum != BLOCKS || st.block_count != BLOCKS)
        FAIL("torn stats snapshot: gauges add up to %" PRIu64, sum);
    uint32_t a = kvb_pool_available(pools[pi]);
    if (a > BLOCKS)
        FAIL("available %u > block_count", a);
}

static void op(struct worker *w, uint64_t *s)
{
    int pi = (int)tu_rnd(s, NPOOLS);
    int cat = op_cat[tu_rnd(s, NOPS)];
    w->op_count[cat]++;
    switch (cat) {
    case 0:
        do_match(w, s, pi);
        break;
    case 1:
        do_lookup_each(w, s, pi, false);
        break;
    case 2:
        do_lookup_each(w, s, pi, true);
        break;
    case 3:
        produce(w, s, pi);
        break;
    case 4:
        drain(w, pi);
        break;
    case 5:
        pressure(w, s, pi);
        break;
    case 6:
        snapshot(pi);
        break;
    }
}

static void run(void *arg, uint64_t seed, uint64_t ops)
{
    struct worker *w = arg;
    uint64_t s = seed;
    for (uint64_t i = 0; i < ops; i++)
        op(w, &s);
}

int main(int argc, char **argv)
{
    torture_args a = torture_start(argc, argv, "torture_reset", 8, 200000);
    torture_chains(7000, CHAINS, DEPTH, &universe[0][0]);
    if (kvb_registry_create(NULL, &reg) != 0)
        FAIL("registry_create");
    torture_pair_create(BLOCKS, reg, (kvb_callbacks){.on_reset = on_reset, .on_evict = on_evict},
                        pools);

    struct worker *w = calloc((size_t)a.threads, sizeof *w);
    if (!w)
        FAIL("out of memory");
    torture_run(&a, w, sizeof *w, run);

    uint64_t total_ops = 0, per_cat[NCAT] = {0};
    for (int i = 0; i < a.threads; i++)
        for (int k = 0; k < NCAT; k++) {
            total_ops += w[i].op_count[k];
            per_cat[k] += w[i].op_count[k];
        }
    for (int pi = 0; pi < NPOOLS; pi++) {
        kvb_pool *p = pools[pi];
        torture_books b = {0};
        uint64_t drains = 0;
        for (int i = 0; i < a.threads; i++) {
            torture_books_add(&b, &w[i].books[pi]);
            drains += w[i].drains[pi];
        }
        b.on_evict = atomic_load(&cb_evicts[pi]);
        b.on_reset = atomic_load(&cb_resets[pi]);
        kvb_stats st = torture_check_pool(pi, p, &b,
                                          TORTURE_ALLOCATIONS | TORTURE_MATCHES | TORTURE_SCANS |
                                              TORTURE_ON_EVICT | TORTURE_ON_RESET);
        /* presence: nothing is held, so present <=> cached */
        uint32_t cached = torture_check_presence(pi, reg, p, &universe[0][0], CHAINS, DEPTH);
        if (cached != st.inactive)
            FAIL("pool %d: %u hashes cached, inactive gauge %u", pi, cached, st.inactive);
        /* a final drain empties the cache and the registry forgets everything */
        uint64_t e0 = tl_evicts;
        int d = kvb_pool_reset_inactive(p);
        if (d != (int)st.inactive || tl_evicts - e0 != (uint64_t)d)
            FAIL("pool %d: final drain returned %d for %u cached blocks", pi, d, st.inactive);
        if (kvb_pool_available(p) != BLOCKS)
            FAIL("pool %d: available != block_count after the final drain", pi);
        for (int c = 0; c < CHAINS; c++)
            if (kvb_registry_present(reg, universe[c], DEPTH, p, NULL) != 0)
                FAIL("pool %d chain %d: registry still reports presence after a drain", pi, c);
        if (kvb_pool_check(p) != 0)
            FAIL("kvb_pool_check after the final drain on pool %d", pi);
        printf("pool %-11s: drains=%" PRIu64 " drained=%" PRIu64 " allocations=%" PRIu64
               " evictions=%" PRIu64 " registrations=%" PRIu64 " match_hits=%" PRIu64
               " scan_hits=%" PRIu64 " eager=%" PRIu64 " contended=%" PRIu64 "\n",
               kvb_pool_name(p), drains, b.drained, st.allocations, st.evictions, st.registrations,
               st.match_returned, st.scan_returned, st.eager_transitions, st.lock_contended);
        if (kvb_pool_destroy(p) != 0)
            FAIL("pool_destroy");
    }
    if (kvb_registry_destroy(reg) != 0)
        FAIL("registry_destroy");
    printf("ops:");
    for (int k = 0; k < NCAT; k++)
        printf(" %s=%" PRIu64, cat_names[k], per_cat[k]);
    printf("\ntorture_reset: OK, %" PRIu64 " operations\n", total_ops);
    free(w);
    return 0;
}
