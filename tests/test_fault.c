/*
 * test_fault.c - allocation failure injection through the allocator hooks
 * (kvb_pool_config.allocator, kvb_registry_config.allocator).
 *
 * The test allocator counts every call, stores each block's size in a header
 * and checks that kvb's free passes the same size back, and fails exactly the
 * k-th allocation of a run. For every create path (pool with each built-in
 * policy, registry, pool attached to a registry, both with the failing
 * allocator, pool with an event sink, with and without the batching timer)
 * and for every k from 1 to the number of allocations that path makes:
 * the call returns -ENOMEM, leaves its out-parameter untouched, and every
 * allocated byte has been freed (allocation and free counts and byte totals
 * balance, no size mismatch). The run with no failure must succeed and balance
 * after destroy.
 *
 * Batch calls whose deferred-callback buffer does not fit the on-stack queue
 * (allocate, register, match, match_scattered, scan, reset_inactive) fail the
 * same way: -ENOMEM, nothing changed, no callback fired, inputs not consumed.
 * Small batches and every handle operation never allocate.
 */
#include "testutil.h"
#include "kvblock/seq.h"
#include "support/fail_alloc.h"
#include <pthread.h>
#include <stdlib.h>

/* the fail-at-k allocator (support/fail_alloc.h); requests over 1 TiB fail (the
 * overflow tests ask for absurd sizes) */
static tu_fa FA = TU_FA_INITIALIZER((size_t)1 << 40);

static void expect_balanced(const char *what, long k)
{
    cr_expect_eq(FA.n_alloc, FA.n_free, "%s, k=%ld: %ld allocations, %ld frees", what, k,
                 FA.n_alloc, FA.n_free);
    cr_expect_eq(FA.bytes_alloc, FA.bytes_free, "%s, k=%ld: %zu bytes allocated, %zu freed", what,
                 k, FA.bytes_alloc, FA.bytes_free);
    cr_expect_eq(FA.mismatches, 0, "%s, k=%ld: free called with a different size", what, k);
}

/* ---- every create path, every k ------------------------------------------------ */

struct path {
    const char *what;
    int (*create)(const struct path *pp, void **out);
    void (*destroy)(void *obj);
    kvb_evict_policy policy;
};

static kvb_registry *plain_reg; /* default allocator: attached to by some paths */

static void base_cfg(kvb_pool_config *cfg, kvb_evict_policy pol)
{
    kvb_pool_config_init(cfg);
    cfg->block_count = 100;
    cfg->evict = pol;
    cfg->allocator = tu_fa_allocator(&FA);
}

static int mk_pool(const struct path *pp, void **out)
{
    kvb_pool_config cfg;
    base_cfg(&cfg, pp->policy);
    return kvb_pool_create(&cfg, (kvb_pool **)out);
}

static void rm_pool(void *obj)
{
    cr_assert_eq(kvb_pool_destroy(obj), 0);
}

/* with lookahead hints and retention priorities: the hint table, records, heap and
 * positions, the priority levels, lists and duration heap are allocated too */
static int mk_pool_hints(const struct path *pp, void **out)
{
    kvb_pool_config cfg;
    base_cfg(&cfg, pp->policy);
    cfg.hint_capacity = 64;
    cfg.priorities = true;
    return kvb_pool_create(&cfg, (kvb_pool **)out);
}

static int mk_registry(const struct path *pp, void **out)
{
    (void)pp;
    kvb_registry_config rc;
    kvb_registry_config_init(&rc);
    rc.capacity = 1000;
    rc.allocator = tu_fa_allocator(&FA);
    return kvb_registry_create(&rc, (kvb_registry **)out);
}

static void rm_registry(void *obj)
{
    cr_assert_eq(kvb_registry_destroy(obj), 0);
}

static int mk_pool_on_registry(const struct path *pp, void **out)
{
    kvb_pool_config cfg;
    base_cfg(&cfg, pp->policy);
    cfg.registry = plain_reg;
    return kvb_pool_create(&cfg, (kvb_pool **)out);
}

/* registry and pool both from the failing allocator */
struct pair {
    kvb_registry *r;
    kvb_pool *p;
};
static struct pair the_pair;

static int mk_pair(const struct path *pp, void **out)
{
    kvb_registry_config rc;
    kvb_registry_config_init(&rc);
    rc.capacity = 1000;
    rc.allocator = tu_fa_allocator(&FA);
    kvb_registry *r;
    int e = kvb_registry_create(&rc, &r);
    if (e)
        return e;
    kvb_pool_config cfg;
    base_cfg(&cfg, pp->policy);
    cfg.registry = r;
    kvb_pool *p;
    e = kvb_pool_create(&cfg, &p);
    if (e) {
        cr_assert_eq(kvb_registry_destroy(r), 0, "a failed pool create left itself attached");
        return e;
    }
    the_pair = (struct pair){r, p};
    *out = &the_pair;
    return 0;
}

static void rm_pair(void *obj)
{
    struct pair *pr = obj;
    cr_assert_eq(kvb_pool_destroy(pr->p), 0);
    cr_assert_eq(kvb_registry_destroy(pr->r), 0);
}

static void sink(void *u, const kvb_pool *p, const kvb_event *e, uint32_t n)
{
    (void)u;
    (void)p;
    (void)e;
    (void)n;
}

static int mk_pool_events(const struct path *pp, void **out)
{
    kvb_event_config ev;
    kvb_event_config_init(&ev);
    ev.sink = sink;
    kvb_pool_config cfg;
    base_cfg(&cfg, pp->policy);
    cfg.events = &ev;
    return kvb_pool_create(&cfg, (kvb_pool **)out);
}

static int mk_pool_events_timer(const struct path *pp, void **out)
{
    kvb_event_config ev;
    kvb_event_config_init(&ev);
    ev.sink = sink;
    ev.batch_max = 8;
    ev.batch_delay_ms = 5; /* starts the per-pool timer thread */
    kvb_pool_config cfg;
    base_cfg(&cfg, pp->policy);
    cfg.events = &ev;
    cfg.registry = plain_reg;
    return kvb_pool_create(&cfg, (kvb_pool **)out);
}

/* Fail the k-th allocation for k = 1, 2, ... until the path succeeds untouched. */
static void every_k(const struct path *pp)
{
    void *const sentinel = (void *)&FA;
    long k;
    for (k = 1; k < 10000; k++) {
        tu_fa_reset(&FA);
        tu_fa_arm(&FA, k);
        void *obj = sentinel;
        int rc = pp->create(pp, &obj);
        long used = FA.count;
        if (used < k) { /* the k-th allocation never came: the full path ran */
            cr_assert_eq(rc, 0, "%s: no failure injected, yet %s", pp->what, kvb_strerror(rc));
            pp->destroy(obj);
            expect_balanced(pp->what, 0);
            break;
        }
        cr_expect_eq(rc, -ENOMEM, "%s: allocation %ld of %ld failed: returned %d (%s)", pp->what, k,
                     used, rc, kvb_err_name(rc));
        cr_expect_eq(obj, sentinel, "%s, k=%ld: out-parameter written on failure", pp->what, k);
        if (rc == 0 && obj != sentinel)
            pp->destroy(obj);
        expect_balanced(pp->what, k);
    }
    cr_expect_gt(k, 1, "%s allocates nothing?", pp->what);
    cr_log_info("%s: %ld allocation points, each failure clean", pp->what, k - 1);
}

static void registry_setup(void)
{
    cr_assert_eq(kvb_registry_create(NULL, &plain_reg), 0);
}

static void registry_teardown(void)
{
    cr_expect_eq(kvb_registry_destroy(plain_reg), 0, "a failed create stayed attached");
}

Test(fault, pool_create_every_policy_every_k)
{
    for (int pol = 0; pol < 16; pol++) { /* every built-in policy, and values that are none */
        struct path pp = {"pool_create", mk_pool, rm_pool, (kvb_evict_policy)pol};
        if (!kvb_inactive_builtin(pp.policy)) {
            tu_fa_reset(&FA);
            kvb_pool *p = NULL;
            kvb_pool_config cfg;
            base_cfg(&cfg, pp.policy);
            int rc = kvb_pool_create(&cfg, &p);
            cr_expect(rc == -ENOTSUP || rc == -EINVAL, "policy %d: %d", pol, rc);
            cr_expect_eq(FA.count, 0, "policy %d: refused after allocating", pol);
            continue;
        }
        cr_log_info("policy %s:", kvb_inactive_builtin(pp.policy)->name);
        every_k(&pp);
    }
}

Test(fault, pool_with_hints_and_priorities_every_policy_every_k)
{
    for (int pol = 0; pol < 16; pol++) {
        struct path pp = {"pool_create(hints, priorities)", mk_pool_hints, rm_pool,
                          (kvb_evict_policy)pol};
        if (kvb_inactive_builtin(pp.policy))
            every_k(&pp);
    }
}

Test(fault, registry_create_every_k)
{
    struct path pp = {"registry_create", mk_registry, rm_registry, KVB_EVICT_LRU};
    every_k(&pp);
}

Test(fault, pool_on_registry_every_k, .init = registry_setup, .fini = registry_teardown)
{
    for (int pol = 0; pol < 16; pol++) {
        struct path pp = {"pool_create(registry)", mk_pool_on_registry, rm_pool,
                          (kvb_evict_policy)pol};
        if (kvb_inactive_builtin(pp.policy))
            every_k(&pp);
    }
}

Test(fault, registry_and_pool_both_failing_every_k)
{
    struct path pp = {"registry_create + pool_create", mk_pair, rm_pair, KVB_EVICT_FIFO};
    every_k(&pp);
}

Test(fault, pool_with_events_every_k, .init = registry_setup, .fini = registry_teardown)
{
    struct path a = {"pool_create(events)", mk_pool_events, rm_pool, KVB_EVICT_LRU};
    every_k(&a);
    struct path b = {"pool_create(events, timer, registry)", mk_pool_events_timer, rm_pool,
                     KVB_EVICT_FIFO};
    every_k(&b);
}

/* ---- large batches: the callback buffer ------------------------------------------ */

static unsigned resets, evicts;
static void on_reset(void *u, uint32_t id)
{
    (void)u;
    (void)id;
    resets++;
}
static void on_evict(void *u, kvb_hash h, uint32_t id)
{
    (void)u;
    (void)h;
    (void)id;
    evicts++;
}

static kvb_pool *cb_pool(uint32_t n)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = n;
    cfg.allocator = tu_fa_allocator(&FA);
    cfg.callbacks = (kvb_callbacks){.on_reset = on_reset, .on_evict = on_evict};
    cfg.hint_capacity = 32;
    cfg.priorities = true;
    return tu_pool_cfg(&cfg);
}

static kvb_stats snap(kvb_pool *p)
{
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    s.lock_acquisitions = s.lock_contended = s.lock_wait_ns = 0;
    return s;
}

static void expect_unchanged(kvb_pool *p, const kvb_stats *before, const char *what)
{
    kvb_stats now = snap(p);
    cr_expect_eq(memcmp(&now, before, sizeof now), 0, "%s: a failed call changed the pool", what);
}

#define NB 24 /* > KVB_CBQ_LOCAL / 3: every batch call below needs a heap buffer */

Test(fault, large_batches_fail_whole_and_clean)
{
    tu_fa_reset(&FA);
    kvb_pool *p = cb_pool(64);
    kvb_hash hs[NB];
    for (int i = 0; i < NB; i++)
        hs[i] = tu_hash((uint64_t)i);

    /* allocate */
    kvb_mutable m[NB];
    memset(m, 0x5c, sizeof m);
    kvb_mutable mkeep[NB];
    memcpy(mkeep, m, sizeof m);
    kvb_stats s0 = snap(p);
    unsigned cb0 = resets + evicts;
    tu_fa_arm(&FA, 1);
    uint32_t nev = 99;
    cr_expect_eq(kvb_pool_allocate(p, NB, m, NULL, &nev), -ENOMEM);
    cr_expect_eq(nev, 0);
    cr_expect_eq(memcmp(m, mkeep, sizeof m), 0, "allocate wrote handles before failing");
    expect_unchanged(p, &s0, "allocate");
    tu_fa_arm(&FA, 0);
    cr_assert_eq(kvb_pool_allocate(p, NB, m, NULL, NULL), 0);

    /* register */
    kvb_complete c[NB], ckeep[NB];
    for (int i = 0; i < NB; i++)
        cr_assert_eq(kvb_mutable_stage(&m[i], hs[i], &c[i]), 0);
    memcpy(ckeep, c, sizeof c);
    kvb_block b[NB];
    s0 = snap(p);
    tu_fa_arm(&FA, 1);
    cr_expect_eq(kvb_pool_register(p, c, NB, b), -ENOMEM);
    cr_expect_eq(memcmp(c, ckeep, sizeof c), 0, "register consumed handles before failing");
    expect_unchanged(p, &s0, "register");
    tu_fa_arm(&FA, 0);
    cr_assert_eq(kvb_pool_register(p, c, NB, b), 0);
    cr_assert_eq(kvb_block_release_n(b, NB), 0);

    /* lookups of cached content (a success would resurrect NB blocks) */
    kvb_block out[NB];
    bool hit[NB];
    s0 = snap(p);
    tu_fa_arm(&FA, 1);
    cr_expect_eq(kvb_pool_match(p, hs, NB, out), -ENOMEM);
    expect_unchanged(p, &s0, "match");
    tu_fa_arm(&FA, 1);
    cr_expect_eq(kvb_pool_match_scattered(p, hs, NB, out, hit), -ENOMEM);
    expect_unchanged(p, &s0, "match_scattered");
    tu_fa_arm(&FA, 1);
    cr_expect_eq(kvb_pool_scan(p, hs, NB, true, out, hit), -ENOMEM);
    expect_unchanged(p, &s0, "scan");

    /* drain */
    tu_fa_arm(&FA, 1);
    cr_expect_eq(kvb_pool_reset_inactive(p), -ENOMEM);
    expect_unchanged(p, &s0, "reset_inactive");
    cr_expect_eq(resets + evicts, cb0, "a failed call fired callbacks");

    /* invariant check needs scratch memory too */
    tu_fa_arm(&FA, 1);
    cr_expect_eq(kvb_pool_check(p), -ENOMEM, "not -EFAULT: the pool is fine");

    /* with memory: everything works, and the callbacks fire */
    tu_fa_arm(&FA, 0);
    cr_expect_eq(kvb_pool_match(p, hs, NB, out), NB);
    cr_expect_eq(kvb_block_release_n(out, NB), 0);
    cr_expect_eq(kvb_pool_reset_inactive(p), NB);
    cr_expect_eq(evicts, NB);
    cr_expect_eq(resets, NB);
    tu_finish(p);
    expect_balanced("large batches", 0);
}

Test(fault, small_batches_and_handle_operations_never_allocate)
{
    tu_fa_reset(&FA);
    kvb_pool *p = cb_pool(16);
    tu_fa_arm(&FA, 0);
    long before = FA.count;
    kvb_mutable m[4];
    kvb_complete c[4];
    kvb_block b[4], x;
    kvb_hash hs[4];
    bool hit[4];
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(kvb_pool_allocate(p, 4, m, NULL, NULL), 0);
        for (int i = 0; i < 4; i++) {
            hs[i] = tu_hash((uint64_t)(i + 4 * round));
            cr_assert_eq(kvb_mutable_stage(&m[i], hs[i], &c[i]), 0);
        }
        kvb_mutable back;
        cr_assert_eq(kvb_complete_reset(&c[3], &back), 0);
        cr_assert_eq(kvb_mutable_stage(&back, hs[3], &c[3]), 0);
        cr_assert_eq(kvb_pool_hint(p, hs, 4, +1), 0);
        kvb_retention ret;
        kvb_retention_init(&ret);
        kvb_retention_range rg = {0, 0, 60, 1000};
        ret.ranges = &rg;
        ret.n_ranges = 1;
        cr_assert_eq(kvb_pool_register_retained(p, c, 4, &ret, b), 0);
        cr_assert_eq(kvb_block_set_priority(&b[1], 10, 5), 0);
        cr_assert_eq(kvb_block_priority(&b[1]), 10);
        cr_assert_eq(kvb_pool_set_priority(p, hs, 2, 90, 0), 2);
        cr_assert_eq(kvb_block_clone(&b[0], &x), 0);
        kvb_weak w;
        kvb_block_downgrade(&x, &w);
        cr_assert_eq(kvb_block_set_reset_on_release(&x, false), 0);
        cr_assert_eq(kvb_block_release(&x), 0);
        cr_assert_eq(kvb_weak_upgrade(&w, &x), 0);
        cr_assert_eq(kvb_block_release(&x), 0);
        cr_assert_eq(kvb_block_release_n(b, 4), 0);
        cr_assert_eq(kvb_pool_match(p, hs, 4, b), 4);
        cr_assert_eq(kvb_block_release_n(b, 4), 0);
        cr_assert_eq(kvb_pool_match_scattered(p, hs, 4, b, hit), 4);
        cr_assert_eq(kvb_block_release_n(b, 4), 0);
        kvb_mutable all[14]; /* the last 4 evict through the hint heap */
        cr_assert_eq(kvb_pool_allocate(p, 10, all, NULL, NULL), 0);
        cr_assert_eq(kvb_pool_allocate(p, 4, all + 10, NULL, NULL), 0);
        for (int i = 0; i < 14; i++)
            cr_assert_eq(kvb_mutable_release(&all[i]), 0);
        cr_assert_eq(kvb_pool_hint(p, hs, 4, -1), 0);
        kvb_stats s;
        cr_assert_eq(kvb_pool_stats(p, &s), 0);
        (void)kvb_pool_available(p);
    }
    cr_expect_eq(FA.count, before, "the hot path allocated %ld times", FA.count - before);
    tu_finish(p);
    expect_balanced("hot path", 0);
}

/* ---- the registry grows at run time ------------------------------------------------ */

Test(fault, registry_growth_failure_degrades_presence_only)
{
    tu_fa_reset(&FA);
    kvb_registry_config rc;
    kvb_registry_config_init(&rc);
    rc.allocator = tu_fa_allocator(&FA);
    kvb_registry *r;
    cr_assert_eq(kvb_registry_create(&rc, &r), 0);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 128;
    cfg.registry = r;
    kvb_pool *p = tu_pool_cfg(&cfg);
    /* 100 distinct hashes make the registry table grow; fail every growth */
    enum { N = 100 };
    kvb_hash hs[N];
    kvb_block b[N];
    for (int i = 0; i < N; i++) {
        hs[i] = tu_hash((uint64_t)(5000 + i));
        kvb_mutable m;
        kvb_complete c;
        cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
        cr_assert_eq(kvb_mutable_stage(&m, hs[i], &c), 0);
        tu_fa_arm(&FA, 1); /* the next registry allocation (a growth) fails */
        cr_assert_eq(kvb_pool_register(p, &c, 1, &b[i]), 0, "the pool does not fail");
        tu_fa_arm(&FA, 0);
    }
    cr_expect_eq(kvb_pool_check(p), 0, "the pool stays exact");
    bool present[N];
    int k = kvb_registry_present(r, hs, N, p, present);
    cr_expect_geq(k, 0);
    cr_expect_lt(k, N, "some presence updates were dropped (documented: advisory)");
    cr_log_info("registry growth failures: %d of %d hashes reported present", k, N);
    /* drop everything: late "absent" updates for unrecorded hashes are ignored */
    cr_assert_eq(kvb_block_release_n(b, N), 0);
    cr_expect_eq(kvb_pool_reset_inactive(p), N);
    cr_expect_eq(kvb_registry_present(r, hs, N, p, NULL), 0, "no false presence remains");
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
    expect_balanced("registry growth", 0);
}

/* ---- sequences: their arrays come from the pool's allocator ------------------- */

Test(fault, seq_init_every_k_uses_the_pool_allocator)
{
    tu_fa_reset(&FA);
    kvb_pool_config cfg;
    base_cfg(&cfg, KVB_EVICT_LRU);
    kvb_pool *p = NULL;
    cr_assert_eq(kvb_pool_create(&cfg, &p), 0);
    long pool_allocs = FA.n_alloc;
    kvb_seq s;
    tu_fa_arm(&FA, 0);
    cr_assert_eq(kvb_seq_init(&s, p, 64), 0);
    long need = FA.count;
    cr_assert_geq(need, 7, "the sequence's arrays go through the hook (%ld calls)", need);
    kvb_seq_fini(&s);
    cr_expect_eq(FA.n_free, FA.n_alloc - pool_allocs, "fini frees every array");
    for (long k = 1; k <= need; k++) {
        tu_fa_arm(&FA, k);
        long frees = FA.n_free;
        size_t freed = FA.bytes_free;
        size_t before = FA.bytes_alloc;
        cr_assert_eq(kvb_seq_init(&s, p, 64), -ENOMEM, "k=%ld", k);
        cr_expect_eq(FA.bytes_alloc - before, FA.bytes_free - freed,
                     "k=%ld: a failed init frees what it took", k);
        cr_expect_geq(FA.n_free, frees);
    }
    tu_fa_arm(&FA, 0);
    cr_assert_eq(kvb_seq_init(&s, p, 64), 0, "works again after the failures");
    kvb_seq_fini(&s);
    cr_assert_eq(kvb_pool_destroy(p), 0);
    expect_balanced("pool + sequences", 0);
}
