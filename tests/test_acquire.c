/*
 * test_acquire.c - kvb_pool_acquire against the four calls it stands for.
 *
 * Equivalence: two pools with the same configuration run the same random
 * workload in lockstep, one with kvb_pool_match + kvb_pool_allocate +
 * kvb_pool_stage + kvb_pool_register(_retained), the other with kvb_pool_acquire.
 * After every request both must have returned the same hit count, the same
 * handles (block id, generation, hash) and the same evicted hashes; at the end the
 * event streams (every record: type, sequence number, hashes, block ids), the
 * on_reset / on_evict streams, the registry presence of every hash and every
 * statistic but the lock's must be equal. Requests are prefixes of a few hash
 * chains with fresh tails and the odd repeated hash, a window of earlier requests
 * stays held (PRIMARY hits, duplicates under ALLOW, deduplication under REJECT),
 * for every built-in policy and four configurations (plain; REJECT with
 * reset-on-release; priorities, retention durations on a test clock and lookahead
 * hints; a registry).
 *
 * Failures change nothing: -ENOSPC (a twin pool that never made the call stays
 * identical), -EOVERFLOW, -EINVAL, -ENOTSUP, -ENOMEM (failing allocator); a
 * backend that breaks its contract gives -ENOSPC with the hits released. The last
 * release window (test hook): a pending reset-on-release block ends the prefix and
 * is reset, a pending plain one is a hit, as kvb_pool_match has it.
 */
#include "testutil.h"
#include "testing.h"
#include "kvblock/events.h"
#include "kvblock/inactive.h"
#include "kvblock/registry.h"
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- logs of events and callbacks --------------------------------------------------- */

typedef struct tlog {
    uint64_t *w;
    size_t n, cap;
} tlog;

static void tlog_put(tlog *l, uint64_t x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->w = realloc(l->w, l->cap * sizeof *l->w);
        cr_assert(l->w);
    }
    l->w[l->n++] = x;
}

typedef struct twin {
    kvb_pool *p;
    kvb_registry *reg;
    tlog ev, cb;
    uint32_t gen0[128]; /* each slot's first generation (every pool starts its own) */
} twin;

/* Transitions from generation g0 to g (0 is never a generation: it is skipped). */
static uint32_t gen_steps(uint32_t g, uint32_t g0)
{
    return (uint32_t)(g - g0) - (g < g0 ? 1u : 0u);
}

static void sink(void *user, const kvb_pool *pool, const kvb_event *e, uint32_t n)
{
    twin *t = user;
    (void)pool;
    for (uint32_t i = 0; i < n; i++) {
        tlog_put(&t->ev, e[i].type);
        tlog_put(&t->ev, e[i].seq);
        tlog_put(&t->ev, e[i].n);
        for (uint32_t j = 0; j < e[i].n; j++) {
            tlog_put(&t->ev, e[i].hashes[j].lo);
            tlog_put(&t->ev, e[i].hashes[j].hi);
            tlog_put(&t->ev, e[i].block_ids[j]);
        }
    }
}

static void on_reset(void *user, uint32_t id)
{
    twin *t = user;
    tlog_put(&t->cb, 1);
    tlog_put(&t->cb, id);
}

static void on_evict(void *user, kvb_hash h, uint32_t id)
{
    twin *t = user;
    tlog_put(&t->cb, 2);
    tlog_put(&t->cb, h.lo);
    tlog_put(&t->cb, h.hi);
    tlog_put(&t->cb, id);
}

static void expect_same_log(const tlog *a, const tlog *b, const char *what, const char *ctx)
{
    cr_assert_eq(a->n, b->n, "%s: %s logs differ in length (%zu vs %zu)", ctx, what, a->n, b->n);
    cr_assert(a->n == 0 || memcmp(a->w, b->w, a->n * sizeof *a->w) == 0, "%s: %s logs differ", ctx,
              what);
}

/* Stats equal except the lock's (acquire takes it once where the calls take it 4 times). */
static void expect_same_stats(kvb_pool *a, kvb_pool *b, const char *ctx)
{
    kvb_stats sa, sb;
    cr_assert_eq(kvb_pool_stats(a, &sa), 0);
    cr_assert_eq(kvb_pool_stats(b, &sb), 0);
    sa.lock_acquisitions = sb.lock_acquisitions = 0;
    sa.lock_contended = sb.lock_contended = 0;
    sa.lock_wait_ns = sb.lock_wait_ns = 0;
    cr_assert(memcmp(&sa, &sb, sizeof sa) == 0,
              "%s: stats differ (evictions %llu/%llu, registrations %llu/%llu, resurrections "
              "%llu/%llu, duplicates %llu/%llu, dedups %llu/%llu)",
              ctx, (unsigned long long)sa.evictions, (unsigned long long)sb.evictions,
              (unsigned long long)sa.registrations, (unsigned long long)sb.registrations,
              (unsigned long long)sa.resurrections, (unsigned long long)sb.resurrections,
              (unsigned long long)sa.duplicates, (unsigned long long)sb.duplicates,
              (unsigned long long)sa.dedups, (unsigned long long)sb.dedups);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t test_now_ms;
static uint64_t test_clock(void *ctx)
{
    (void)ctx;
    return test_now_ms;
}

enum variant { V_PLAIN, V_REJECT_RESET, V_EXT, V_REGISTRY, V_COUNT };
static const char *const variant_name[V_COUNT] = {"plain", "reject+reset", "ext", "registry"};

#define BLOCKS 96
#define MAXN   28 /* longest request: 24 from a chain, up to 4 fresh */
#define WINDOW 2  /* requests held besides the current one: (WINDOW + 1) * MAXN <= BLOCKS */
#define CHAINS 12

static void twin_init(twin *t, kvb_evict_policy e, enum variant v, kvb_event_config *ec)
{
    memset(t, 0, sizeof *t);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = BLOCKS;
    cfg.evict = e;
    kvb_event_config_init(ec);
    ec->sink = sink;
    ec->user = t;
    cfg.events = ec;
    cfg.callbacks = (kvb_callbacks){.user = t, .on_reset = on_reset, .on_evict = on_evict};
    if (v == V_REJECT_RESET)
        cfg.dup_policy = KVB_DUP_REJECT; /* (and reset-on-release on random blocks) */
    if (v == V_EXT) {
        cfg.priorities = true;
        cfg.hint_capacity = 4 * MAXN;
        cfg.clock = (kvb_clock){.now_ms = test_clock};
    }
    if (v == V_REGISTRY) {
        cfg.dup_policy = KVB_DUP_REJECT;
        kvb_registry_config rc;
        kvb_registry_config_init(&rc);
        cr_assert_eq(kvb_registry_create(&rc, &t->reg), 0);
        cfg.registry = t->reg;
    }
    t->p = tu_pool_cfg(&cfg);
    cr_assert(BLOCKS <= 128);
    for (uint32_t i = 0; i < BLOCKS; i++)
        t->gen0[i] = kvb__test_slot_gen(t->p, i);
}

static void twin_fini(twin *t)
{
    tu_finish(t->p);
    if (t->reg)
        cr_assert_eq(kvb_registry_destroy(t->reg), 0);
    free(t->ev.w);
    free(t->cb.w);
}

/* Request r of a workload: a prefix of a chain, sometimes a fresh tail, sometimes
 * a hash repeated inside it. */
static uint32_t make_request(uint64_t *s, uint64_t r, kvb_hash *h)
{
    uint64_t chain = rng_next(s) % CHAINS;
    uint32_t len = 1 + (uint32_t)(rng_next(s) % 24), n = 0;
    for (uint32_t j = 0; j < len; j++, n++) {
        uint64_t id = 1000 * (chain + 1) + j;
        kvb_hash_make(id, id - 1, j > 0, j, &h[n]);
    }
    if (rng_next(s) % 3 == 0) { /* fresh content nobody has seen */
        uint32_t extra = 1 + (uint32_t)(rng_next(s) % 4);
        for (uint32_t j = 0; j < extra; j++, n++)
            kvb_hash_make(1000000 + r * 8 + j, 999999, true, len + j, &h[n]);
    }
    if (n > 2 && rng_next(s) % 16 == 0) /* the same hash twice in one request */
        h[n - 1] = h[rng_next(s) % (n - 1)];
    return n;
}

/* The four calls (pool a) and acquire (pool b) on one request; compare. */
static uint32_t serve_both(twin *a, twin *b, const kvb_hash *h, uint32_t n,
                           const kvb_retention *ret, kvb_block *ba, kvb_block *bb, const char *ctx)
{
    kvb_mutable mut[MAXN];
    kvb_complete cmp[MAXN];
    kvb_hash eva[MAXN], evb[MAXN];
    uint32_t nea = 0, neb = 0;
    int k = kvb_pool_match(a->p, h, n, ba);
    cr_assert_geq(k, 0, "%s: match %d", ctx, k);
    uint32_t m = n - (uint32_t)k;
    if (m) {
        cr_assert_eq(kvb_pool_allocate(a->p, m, mut, eva, &nea), 0, "%s: allocate", ctx);
        cr_assert_eq(kvb_pool_stage(a->p, mut, h + k, m, cmp), 0, "%s: stage", ctx);
        int rc = ret ? kvb_pool_register_retained(a->p, cmp, m, ret, ba + k)
                     : kvb_pool_register(a->p, cmp, m, ba + k);
        cr_assert_eq(rc, 0, "%s: register", ctx);
    }
    int kb = kvb_pool_acquire(b->p, h, n, ret, bb, evb, &neb);
    cr_assert_eq(kb, k, "%s: acquire found %d hits, match %d", ctx, kb, k);
    cr_assert_eq(neb, nea, "%s: evicted %u vs %u", ctx, neb, nea);
    cr_assert(nea == 0 || memcmp(eva, evb, nea * sizeof *eva) == 0, "%s: evicted hashes differ",
              ctx);
    for (uint32_t i = 0; i < n; i++) {
        cr_assert(ba[i].pool == a->p && bb[i].pool == b->p, "%s: handle %u", ctx, i);
        cr_assert(ba[i].id == bb[i].id && kvb_hash_equal(ba[i].hash, bb[i].hash),
                  "%s: handle %u: block %u vs block %u", ctx, i, ba[i].id, bb[i].id);
        cr_assert_eq(
            gen_steps(ba[i].gen, a->gen0[ba[i].id]), gen_steps(bb[i].gen, b->gen0[bb[i].id]),
            "%s: handle %u: block %u, %u vs %u transitions", ctx, i, ba[i].id,
            gen_steps(ba[i].gen, a->gen0[ba[i].id]), gen_steps(bb[i].gen, b->gen0[bb[i].id]));
    }
    cr_assert_eq(a->ev.n, b->ev.n, "%s: event records so far", ctx);
    cr_assert_eq(a->cb.n, b->cb.n, "%s: callbacks so far", ctx);
    return (uint32_t)k;
}

static void release_reversed(kvb_block *blk, uint32_t n)
{
    for (uint32_t i = 0, j = n ? n - 1 : 0; i < j; i++, j--) {
        kvb_block t = blk[i];
        blk[i] = blk[j];
        blk[j] = t;
    }
    cr_assert_eq(kvb_block_release_n(blk, n), 0);
}

static void run_equivalence(enum variant v, uint64_t seed, uint32_t requests)
{
    for (int e = 0; kvb_inactive_builtin((kvb_evict_policy)e); e++) {
        twin a, b;
        kvb_event_config eca, ecb;
        test_now_ms = 1000;
        twin_init(&a, (kvb_evict_policy)e, v, &eca);
        twin_init(&b, (kvb_evict_policy)e, v, &ecb);
        kvb_retention_range rg = {
            .token_start = 0, .token_end = 64, .priority = 80, .duration_ms = 7};
        kvb_retention ret;
        kvb_retention_init(&ret);
        ret.ranges = &rg;
        ret.n_ranges = 1;
        const kvb_retention *rp = v == V_EXT ? &ret : NULL;

        static kvb_block ha[WINDOW + 1][MAXN], hb[WINDOW + 1][MAXN];
        static kvb_hash hs[WINDOW + 2][MAXN];
        uint32_t hn[WINDOW + 2] = {0}, held = 0, head = 0;
        uint64_t s = seed, hits = 0;
        char ctx[96];
        /* request r + 1 is drawn ahead: the ext variant hints it while serving r */
        uint32_t next_n = make_request(&s, 0, hs[WINDOW + 1]);
        for (uint64_t r = 0; r < requests; r++) {
            snprintf(ctx, sizeof ctx, "%s, policy %s, seed %llu, request %llu", variant_name[v],
                     kvb_pool_policy_name(a.p), (unsigned long long)seed, (unsigned long long)r);
            uint32_t cur = (head + held) % (WINDOW + 1);
            kvb_hash *h = hs[cur];
            uint32_t n = next_n;
            memcpy(h, hs[WINDOW + 1], n * sizeof *h);
            next_n = make_request(&s, r + 1, hs[WINDOW + 1]);
            if (v == V_EXT) {
                test_now_ms += rng_next(&s) % 4;
                cr_assert_eq(kvb_pool_hint(a.p, hs[WINDOW + 1], next_n, +1), 0);
                cr_assert_eq(kvb_pool_hint(b.p, hs[WINDOW + 1], next_n, +1), 0);
            }
            hits += serve_both(&a, &b, h, n, rp, ha[cur], hb[cur], ctx);
            hn[cur] = n;
            if (v == V_EXT) {
                cr_assert_eq(kvb_pool_hint(a.p, h, n, -1), 0);
                cr_assert_eq(kvb_pool_hint(b.p, h, n, -1), 0);
                if (rng_next(&s) % 8 == 0) { /* a held block changes priority */
                    uint32_t i = (uint32_t)(rng_next(&s) % n),
                             prio = (uint32_t)(rng_next(&s) % 101);
                    cr_assert_eq(kvb_block_set_priority(&ha[cur][i], prio, 5), 0);
                    cr_assert_eq(kvb_block_set_priority(&hb[cur][i], prio, 5), 0);
                }
            }
            if ((v == V_PLAIN || v == V_REJECT_RESET) &&
                rng_next(&s) % (v == V_PLAIN ? 8 : 3) == 0) {
                /* reset-on-release, per block */
                uint32_t i = (uint32_t)(rng_next(&s) % n);
                cr_assert_eq(kvb_block_set_reset_on_release(&ha[cur][i], true), 0);
                cr_assert_eq(kvb_block_set_reset_on_release(&hb[cur][i], true), 0);
            }
            held++;
            uint32_t keep = (uint32_t)(rng_next(&s) % (WINDOW + 1));
            while (held > keep) {
                release_reversed(ha[head], hn[head]);
                release_reversed(hb[head], hn[head]);
                head = (head + 1) % (WINDOW + 1);
                held--;
            }
        }
        while (held) {
            release_reversed(ha[head], hn[head]);
            release_reversed(hb[head], hn[head]);
            head = (head + 1) % (WINDOW + 1);
            held--;
        }
        cr_assert_eq(kvb_pool_events_flush(a.p), 0);
        cr_assert_eq(kvb_pool_events_flush(b.p), 0);
        snprintf(ctx, sizeof ctx, "%s, policy %s, seed %llu", variant_name[v],
                 kvb_pool_policy_name(a.p), (unsigned long long)seed);
        cr_expect_gt(hits, requests / 2, "%s: the workload hits (%llu hits)", ctx,
                     (unsigned long long)hits);
        expect_same_log(&a.ev, &b.ev, "event", ctx);
        expect_same_log(&a.cb, &b.cb, "callback", ctx);
        expect_same_stats(a.p, b.p, ctx);
        kvb_stats st;
        cr_assert_eq(kvb_pool_stats(a.p, &st), 0);
        cr_expect_gt(st.evictions, 0, "%s: the workload evicts", ctx);
        if (v == V_REGISTRY) { /* presence of every chain hash */
            for (uint64_t c = 0; c < CHAINS; c++) {
                kvb_hash h[24];
                bool pa[24], pb[24];
                for (uint32_t j = 0; j < 24; j++) {
                    uint64_t id = 1000 * (c + 1) + j;
                    kvb_hash_make(id, id - 1, j > 0, j, &h[j]);
                }
                int na = kvb_registry_present(a.reg, h, 24, a.p, pa);
                cr_assert_geq(na, 0);
                cr_assert_eq(kvb_registry_present(b.reg, h, 24, b.p, pb), na);
                cr_assert(memcmp(pa, pb, sizeof pa) == 0, "%s: registry presence differs", ctx);
            }
        }
        twin_fini(&a);
        twin_fini(&b);
    }
}

Test(acquire, same_as_the_four_calls_plain)
{
    run_equivalence(V_PLAIN, 0x9e3779b97f4a7c15ull, 3000);
    run_equivalence(V_PLAIN, 12345, 3000);
}

Test(acquire, same_as_the_four_calls_reject_reset_on_release)
{
    run_equivalence(V_REJECT_RESET, 777, 3000);
}

Test(acquire, same_as_the_four_calls_priorities_retention_hints)
{
    run_equivalence(V_EXT, 4242, 3000);
}

Test(acquire, same_as_the_four_calls_registry)
{
    run_equivalence(V_REGISTRY, 99, 2000);
}

/* ---- failures change nothing ------------------------------------------------------- */

/* Two pools, the same workload; pool b also makes calls that must fail with -ENOSPC
 * (more misses than the free list and the cache hold), with a prefix of held,
 * cached or absent chain blocks. Afterwards the pools are indistinguishable. */
Test(acquire, enospc_changes_nothing)
{
    for (int e = 0; kvb_inactive_builtin((kvb_evict_policy)e); e++) {
        twin a, b;
        kvb_event_config eca, ecb;
        twin_init(&a, (kvb_evict_policy)e, V_PLAIN, &eca);
        twin_init(&b, (kvb_evict_policy)e, V_PLAIN, &ecb);
        uint64_t s = 31 + (uint64_t)e;
        static kvb_block ha[2][MAXN], hb[2][MAXN], junk[BLOCKS + 32];
        kvb_hash h[MAXN], big[BLOCKS + 32], evh[BLOCKS + 32];
        uint32_t hn[2] = {0, 0};
        char ctx[64];
        snprintf(ctx, sizeof ctx, "policy %s", kvb_pool_policy_name(a.p));
        for (uint64_t r = 0; r < 1500; r++) {
            uint32_t n = make_request(&s, r, h);
            serve_both(&a, &b, h, n, NULL, ha[r & 1], hb[r & 1], ctx);
            hn[r & 1] = n;
            if (!(r & 1))
                continue;
            /* two requests held: a prefix of some chain (held, cached or absent),
             * then more fresh blocks than the pool could ever give */
            uint32_t nb = make_request(&s, r, big);
            nb = nb < 8 ? nb : 8;
            uint32_t total = nb + kvb_pool_available(b.p) + 1;
            for (uint32_t j = nb; j < total; j++)
                kvb_hash_make(5000000 + r * 128 + j, 0, false, j, &big[j]);
            uint32_t nev = 77;
            junk[0].id = 12345;
            kvb_stats before;
            cr_assert_eq(kvb_pool_stats(b.p, &before), 0);
            size_t evn = b.ev.n, cbn = b.cb.n;
            cr_assert_eq(kvb_pool_acquire(b.p, big, total, NULL, junk, evh, &nev), -ENOSPC,
                         "%s, request %llu", ctx, (unsigned long long)r);
            cr_assert_eq(nev, 0);
            cr_assert_eq(junk[0].id, 0, "out is cleared on failure");
            cr_assert_eq(b.ev.n, evn, "no event");
            cr_assert_eq(b.cb.n, cbn, "no callback");
            kvb_stats after;
            cr_assert_eq(kvb_pool_stats(b.p, &after), 0);
            cr_assert_eq(after.lock_acquisitions, before.lock_acquisitions + 2);
            after.lock_acquisitions = before.lock_acquisitions;
            cr_assert(memcmp(&before, &after, sizeof after) == 0, "%s: -ENOSPC changed stats", ctx);
            for (int w = 0; w < 2; w++) {
                release_reversed(ha[w], hn[w]);
                release_reversed(hb[w], hn[w]);
            }
        }
        cr_assert_eq(kvb_pool_events_flush(a.p), 0);
        cr_assert_eq(kvb_pool_events_flush(b.p), 0);
        expect_same_log(&a.ev, &b.ev, "event", ctx);
        expect_same_log(&a.cb, &b.cb, "callback", ctx);
        expect_same_stats(a.p, b.p, ctx);
        twin_fini(&a);
        twin_fini(&b);
    }
}

/* A small pool, a sink, and plain helpers for the scenarios below. */
static kvb_pool *small_pool(twin *t, kvb_event_config *ec, uint32_t blocks,
                            const kvb_inactive_ops *ops, const kvb_allocator *alloc)
{
    memset(t, 0, sizeof *t);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = blocks;
    cfg.evict_ops = ops;
    if (alloc)
        cfg.allocator = *alloc;
    kvb_event_config_init(ec);
    ec->sink = sink;
    ec->user = t;
    cfg.events = ec;
    cfg.callbacks = (kvb_callbacks){.user = t, .on_reset = on_reset, .on_evict = on_evict};
    t->p = tu_pool_cfg(&cfg);
    return t->p;
}

static void fresh(uint64_t base, uint32_t n, kvb_hash *h)
{
    for (uint32_t j = 0; j < n; j++)
        kvb_hash_make(base + j, 0, false, j, &h[j]);
}

static kvb_stats stats_of(kvb_pool *p)
{
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    return s;
}

/* Room is the free list plus the cache the prefix leaves: the prefix's cached hits
 * are resurrected before anything is evicted, so they do not count as room. */
Test(acquire, room_is_what_the_prefix_leaves)
{
    twin t;
    kvb_event_config ec;
    kvb_pool *p = small_pool(&t, &ec, 8, NULL, NULL);
    kvb_hash x[4], y[2], req[8], evh[8];
    kvb_block bx[4], by[2], out[8];
    tu_chain(100, 4, x);
    fresh(200, 2, y);
    cr_assert_eq(kvb_pool_acquire(p, x, 4, NULL, bx, NULL, NULL), 0);
    release_reversed(bx, 4); /* cached, oldest first: x3 x2 x1 x0 */
    cr_assert_eq(kvb_pool_acquire(p, y, 2, NULL, by, NULL, NULL), 0); /* held */
    req[0] = x[0];
    req[1] = x[1];
    fresh(300, 6, req + 2);
    /* 2 free + 4 cached - 2 resurrected = room for 4 misses, not 5 */
    kvb_stats before = stats_of(p);
    uint32_t nev = 9;
    cr_assert_eq(kvb_pool_acquire(p, req, 7, NULL, out, evh, &nev), -ENOSPC);
    cr_assert_eq(nev, 0);
    kvb_stats after = stats_of(p);
    cr_expect_eq(after.resurrections, before.resurrections, "no hit taken");
    cr_expect_eq(after.inactive, 4);
    cr_expect_eq(after.match_requested, before.match_requested);
    cr_assert_eq(kvb_pool_acquire(p, req, 6, NULL, out, evh, &nev), 2);
    cr_assert_eq(nev, 2, "two of the four misses evict");
    cr_expect(kvb_hash_equal(evh[0], x[3]) && kvb_hash_equal(evh[1], x[2]),
              "the least recently used first");
    cr_expect(out[0].id == bx[0].id || kvb_hash_equal(out[0].hash, x[0]));
    after = stats_of(p);
    cr_expect_eq(after.resurrections, before.resurrections + 2);
    cr_expect_eq(after.match_requested, before.match_requested + 6);
    cr_expect_eq(after.match_returned, before.match_returned + 2);
    cr_expect_eq(after.reset, 0);
    release_reversed(out, 6);
    release_reversed(by, 2);
    tu_finish(p);
    free(t.ev.w);
    free(t.cb.w);
}

/* A hash repeated in the prefix takes one reference per position, as match does. */
Test(acquire, repeated_hash_in_the_prefix)
{
    twin t;
    kvb_event_config ec;
    kvb_pool *p = small_pool(&t, &ec, 16, NULL, NULL);
    kvb_hash c[2], req[4];
    kvb_block bc[2], out[4];
    tu_chain(500, 2, c);
    cr_assert_eq(kvb_pool_acquire(p, c, 2, NULL, bc, NULL, NULL), 0);
    release_reversed(bc, 2);
    req[0] = c[0];
    req[1] = c[0];
    req[2] = c[1];
    fresh(600, 1, req + 3);
    cr_assert_eq(kvb_pool_acquire(p, req, 4, NULL, out, NULL, NULL), 3);
    cr_expect_eq(out[0].id, out[1].id);
    cr_expect_eq(out[0].gen, out[1].gen);
    cr_expect_eq(kvb_block_use_count(&out[0]), 2);
    kvb_stats s = stats_of(p);
    cr_expect_eq(s.resurrections, 2, "c0 and c1, once each");
    cr_expect_eq(s.primary, 3);
    release_reversed(out, 4);
    tu_finish(p);
    free(t.ev.w);
    free(t.cb.w);
}

Test(acquire, bad_arguments_change_nothing)
{
    twin t;
    kvb_event_config ec;
    kvb_pool *p = small_pool(&t, &ec, 16, NULL, NULL);
    kvb_hash c[3], bad;
    kvb_block bc[3], out[4];
    tu_chain(700, 3, c);
    cr_assert_eq(kvb_pool_acquire(p, c, 3, NULL, bc, NULL, NULL), 0);
    release_reversed(bc, 2); /* c1, c0 cached, c2 held */
    bad.lo = 1;
    bad.hi = 3ull << 62; /* the invalid mode 3 */
    kvb_hash req[4] = {c[0], c[1], c[2], bad};
    kvb_stats before = stats_of(p);
    uint32_t nev = 5;
    cr_assert_eq(kvb_pool_acquire(NULL, req, 4, NULL, out, NULL, &nev), -EINVAL);
    cr_assert_eq(nev, 0, "n_evicted is set even on failure");
    cr_assert_eq(kvb_pool_acquire(p, NULL, 4, NULL, out, NULL, NULL), -EINVAL);
    cr_assert_eq(kvb_pool_acquire(p, req, 4, NULL, NULL, NULL, NULL), -EINVAL);
    cr_assert_eq(kvb_pool_acquire(p, req, 4, NULL, out, NULL, NULL), -EINVAL, "bad hash last");
    cr_assert_eq(kvb_pool_acquire(p, req, (uint32_t)INT32_MAX + 1, NULL, out, NULL, NULL), -EINVAL);
    cr_assert_eq(kvb_pool_acquire(p, NULL, 0, NULL, NULL, NULL, NULL), 0);
    kvb_retention_range rg[2] = {{.token_start = 64, .token_end = 128, .priority = 10},
                                 {.token_start = 0, .token_end = 64, .priority = 10}};
    kvb_retention ret;
    kvb_retention_init(&ret);
    ret.ranges = rg;
    ret.n_ranges = 2; /* unsorted: invalid */
    cr_assert_eq(kvb_pool_acquire(p, req, 3, &ret, out, NULL, NULL), -EINVAL);
    ret.n_ranges = 1;
    cr_assert_eq(kvb_pool_acquire(p, req, 3, &ret, out, NULL, NULL), -ENOTSUP,
                 "no priorities in this pool");
    kvb_stats after = stats_of(p);
    after.lock_acquisitions--; /* stats_of's own */
    cr_assert(memcmp(&before, &after, sizeof after) == 0, "nothing changed, not even the lock");
    cr_assert_eq(t.ev.n, 3 + 3 * 3, "only the STORED event of the setup");
    release_reversed(bc + 2, 1);
    tu_finish(p);
    free(t.ev.w);
    free(t.cb.w);
}

/* ---- -ENOMEM: the callback queue of a large call cannot be allocated --------------- */

static int fail_next_alloc;
static void *flaky_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (fail_next_alloc) {
        fail_next_alloc = 0;
        return NULL;
    }
    return malloc(size);
}
static void flaky_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

Test(acquire, enomem_changes_nothing)
{
    twin t;
    kvb_event_config ec;
    const kvb_allocator al = {.alloc = flaky_alloc, .free = flaky_free};
    kvb_pool *p = small_pool(&t, &ec, 32, NULL, &al);
    kvb_hash c[8];
    kvb_block out[8];
    tu_chain(900, 8, c);
    kvb_stats before = stats_of(p);
    fail_next_alloc = 1; /* 8 blocks may queue 67 records: more than the stack queue */
    cr_assert_eq(kvb_pool_acquire(p, c, 8, NULL, out, NULL, NULL), -ENOMEM);
    cr_assert_eq(fail_next_alloc, 0, "the queue was the allocation that failed");
    kvb_stats after = stats_of(p);
    after.lock_acquisitions--; /* stats_of's own */
    cr_assert(memcmp(&before, &after, sizeof after) == 0, "nothing changed");
    cr_assert_eq(t.ev.n, 0);
    cr_assert_eq(kvb_pool_acquire(p, c, 8, NULL, out, NULL, NULL), 0);
    release_reversed(out, 8);
    tu_finish(p);
    free(t.ev.w);
    free(t.cb.w);
}

/* -EOVERFLOW where kvb_pool_register would refuse: a primary that cannot take the
 * references registering its hash again would add. Nothing changes. */
Test(acquire, eoverflow_changes_nothing)
{
    twin t;
    kvb_event_config ec;
    kvb_pool *p = small_pool(&t, &ec, 16, NULL, NULL);
    kvb_hash h[2];
    kvb_block held, out[2];
    fresh(1100, 2, h);
    cr_assert_eq(kvb_pool_acquire(p, h + 1, 1, NULL, &held, NULL, NULL), 0);
    kvb__test_set_refcount(p, held.id, UINT32_MAX - 2);
    kvb_stats before = stats_of(p);
    size_t evn = t.ev.n;
    /* h[0] misses, so h[1] is registered again: as a duplicate of the primary */
    cr_assert_eq(kvb_pool_acquire(p, h, 2, NULL, out, NULL, NULL), -EOVERFLOW);
    kvb_stats after = stats_of(p);
    after.lock_acquisitions -= 2;
    cr_assert(memcmp(&before, &after, sizeof after) == 0, "nothing changed");
    cr_assert_eq(t.ev.n, evn);
    kvb__test_set_refcount(p, held.id, 1);
    cr_assert_eq(kvb_block_release(&held), 0);
    tu_finish(p);
    free(t.ev.w);
    free(t.cb.w);
}

/* ---- a backend that breaks its contract -------------------------------------------- */

static kvb_inactive_ops liar_ops;
static int liar_armed;
static uint32_t liar_id;
static uint32_t liar_evict(void *self, uint32_t n, uint32_t *out)
{
    if (liar_armed && n) {
        out[0] = liar_id; /* a block that is not cached */
        return 1;
    }
    return kvb_inactive_lru.evict(self, n, out);
}

Test(acquire, broken_backend_enospc_gives_the_hits_back)
{
    liar_ops = kvb_inactive_lru;
    liar_ops.name = "liar";
    liar_ops.evict = liar_evict;
    liar_armed = 0;
    twin t;
    kvb_event_config ec;
    kvb_pool *p = small_pool(&t, &ec, 8, &liar_ops, NULL);
    kvb_hash x[4], y[2], req[5];
    kvb_block bx[4], by[2], out[5];
    tu_chain(1200, 4, x);
    fresh(1300, 2, y);
    cr_assert_eq(kvb_pool_acquire(p, x, 4, NULL, bx, NULL, NULL), 0);
    release_reversed(bx, 4);
    cr_assert_eq(kvb_pool_acquire(p, y, 2, NULL, by, NULL, NULL), 0);
    req[0] = x[0];
    req[1] = x[1];
    fresh(1400, 3, req + 2); /* 2 hits, 3 misses: 2 free blocks and 1 eviction */
    liar_id = by[0].id;
    liar_armed = 1;
    cr_assert_eq(kvb_pool_acquire(p, req, 5, NULL, out, NULL, NULL), -ENOSPC);
    liar_armed = 0;
    kvb_stats s = stats_of(p);
    cr_expect_eq(s.allocate_rollbacks, 1);
    cr_expect_eq(s.primary, 2, "only y is held: the hits went back");
    cr_expect_eq(s.inactive, 4);
    cr_expect_eq(s.reset, 2);
    cr_assert_eq(kvb_pool_check(p), 0);
    cr_assert_eq(kvb_pool_acquire(p, req, 5, NULL, out, NULL, NULL), 2, "works again");
    release_reversed(out, 5);
    release_reversed(by, 2);
    tu_finish(p);
    free(t.ev.w);
    free(t.cb.w);
}

/* ---- the last release window -------------------------------------------------------- */

struct park {
    sem_t reached, go;
    kvb_block b;
    int rc;
};

static void park_hook(void *arg, kvb_pool *pool, uint32_t id)
{
    struct park *pk = arg;
    (void)pool;
    (void)id;
    sem_post(&pk->reached);
    sem_wait(&pk->go);
}

static void *releaser(void *arg)
{
    struct park *pk = arg;
    pk->rc = kvb_block_release(&pk->b);
    return NULL;
}

/* A block whose last release is on its way to the lock, met in the prefix: with
 * reset-on-release it is reset and misses (its hash is registered anew), without
 * it is a hit; either way the late release is a no-op. */
static void pending_release(bool reset)
{
    twin t;
    kvb_event_config ec;
    kvb_pool *p = small_pool(&t, &ec, 16, NULL, NULL);
    kvb_hash z[2], req[3];
    kvb_block bz[2], out[3];
    tu_chain(1500, 2, z);
    cr_assert_eq(kvb_pool_acquire(p, z, 2, NULL, bz, NULL, NULL), 0);
    if (reset)
        cr_assert_eq(kvb_block_set_reset_on_release(&bz[1], true), 0);
    struct park pk;
    sem_init(&pk.reached, 0, 0);
    sem_init(&pk.go, 0, 0);
    pk.b = bz[1];
    kvb__test_set_last_release_hook(park_hook, &pk);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, releaser, &pk), 0);
    sem_wait(&pk.reached);
    kvb__test_set_last_release_hook(NULL, NULL);
    req[0] = z[0];
    req[1] = z[1];
    fresh(1600, 1, req + 2);
    size_t evn = t.ev.n;
    int k = kvb_pool_acquire(p, req, 3, NULL, out, NULL, NULL);
    kvb_stats s = stats_of(p);
    cr_expect_eq(s.eager_transitions, 1);
    if (reset) {
        cr_expect_eq(k, 1, "the reset block misses");
        cr_expect_eq(t.ev.w[evn], KVB_EVENT_REMOVED, "its content went first");
        cr_expect(kvb_hash_equal(out[1].hash, z[1]) &&
                      (out[1].id != bz[1].id || out[1].gen != bz[1].gen),
                  "its hash registered anew");
        cr_expect_eq(s.resurrections, 0);
    } else {
        cr_expect_eq(k, 2, "a hit");
        cr_expect_eq(out[1].id, bz[1].id);
        cr_expect_eq(s.resurrections, 1);
    }
    sem_post(&pk.go);
    pthread_join(th, NULL);
    cr_expect_eq(pk.rc, 0);
    s = stats_of(p);
    cr_expect_eq(s.release_noops, 1, "the late release found its work done");
    release_reversed(out, 3);
    cr_assert_eq(kvb_block_release(&bz[0]), 0);
    sem_destroy(&pk.reached);
    sem_destroy(&pk.go);
    tu_finish(p);
    free(t.ev.w);
    free(t.cb.w);
}

Test(acquire, pending_release_with_reset_misses)
{
    pending_release(true);
}

Test(acquire, pending_release_without_reset_hits)
{
    pending_release(false);
}
