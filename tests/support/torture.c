/*
 * support/torture.c - the torture programs' shared scaffolding (torture.h).
 */
#include "torture.h"
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char *torture_name = "torture";

void torture_init(const char *name)
{
    torture_name = name;
}

void torture_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: FAIL: ", torture_name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

torture_args torture_start(int argc, char **argv, const char *name, int def_threads,
                           uint64_t def_ops)
{
    torture_init(name);
    torture_args a;
    a.threads = argc > 1 ? atoi(argv[1]) : def_threads;
    a.ops = argc > 2 ? strtoull(argv[2], NULL, 10) : def_ops;
    a.seed = argc > 3 ? strtoull(argv[3], NULL, 10) : (uint64_t)time(NULL);
    if (a.threads < 1 || a.threads > 256 || a.ops == 0) {
        fprintf(stderr, "usage: %s [threads 1..256] [ops>0] [seed]\n", name);
        exit(2);
    }
    printf("%s: threads=%d ops/thread=%" PRIu64 " seed=%" PRIu64 "\n", name, a.threads, a.ops,
           a.seed);
    return a;
}

void torture_chains(uint64_t base, int chains, int depth, kvb_hash *out)
{
    for (int c = 0; c < chains; c++)
        for (int d = 0; d < depth; d++) {
            uint64_t cur = base + (uint64_t)c * 16 + (uint64_t)d;
            if (kvb_hash_make(cur, cur - 1, d > 0, (uint32_t)d, &out[c * depth + d]) != 0)
                FAIL("hash_make");
        }
}

struct start {
    torture_fn fn;
    void *worker;
    uint64_t seed, ops;
    pthread_barrier_t *bar;
};

static void *trampoline(void *arg)
{
    struct start *s = arg;
    pthread_barrier_wait(s->bar);
    s->fn(s->worker, s->seed, s->ops);
    return NULL;
}

void torture_run(const torture_args *a, void *workers, size_t size, torture_fn fn)
{
    pthread_t *t = calloc((size_t)a->threads, sizeof *t);
    struct start *st = calloc((size_t)a->threads, sizeof *st);
    pthread_barrier_t bar;
    if (!t || !st)
        FAIL("out of memory");
    pthread_barrier_init(&bar, NULL, (unsigned)a->threads);
    for (int i = 0; i < a->threads; i++) {
        void *w = workers ? (char *)workers + (size_t)i * size : NULL;
        st[i] = (struct start){fn, w, torture_seed(a->seed, i), a->ops, &bar};
        if (pthread_create(&t[i], NULL, trampoline, &st[i]) != 0)
            FAIL("pthread_create");
    }
    for (int i = 0; i < a->threads; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
    free(st);
    free(t);
}

void torture_pair_config(int pi, uint32_t blocks, kvb_registry *reg, kvb_callbacks cb,
                         kvb_pool_config *cfg)
{
    static int index[2] = {0, 1};
    kvb_pool_config_init(cfg);
    cfg->block_count = blocks;
    cfg->registry = reg;
    cfg->evict = pi == 0 ? KVB_EVICT_LRU : KVB_EVICT_FIFO;
    cfg->dup_policy = pi == 0 ? KVB_DUP_ALLOW : KVB_DUP_REJECT;
    cfg->name = pi == 0 ? "lru-allow" : "fifo-reject";
    cfg->callbacks = cb;
    cfg->callbacks.user = &index[pi];
}

void torture_pair_create(uint32_t blocks, kvb_registry *reg, kvb_callbacks cb, kvb_pool *pools[2])
{
    for (int pi = 0; pi < 2; pi++) {
        kvb_pool_config cfg;
        torture_pair_config(pi, blocks, reg, cb, &cfg);
        if (kvb_pool_create(&cfg, &pools[pi]) != 0)
            FAIL("pool_create");
    }
}

void torture_books_add(torture_books *sum, const torture_books *b)
{
    sum->allocated += b->allocated;
    sum->evicted += b->evicted;
    sum->staged += b->staged;
    sum->registered += b->registered;
    sum->drained += b->drained;
    sum->unregistered += b->unregistered;
    sum->match_requested += b->match_requested;
    sum->match_returned += b->match_returned;
    sum->scan_requested += b->scan_requested;
    sum->scan_returned += b->scan_returned;
    sum->on_evict += b->on_evict;
    sum->on_reset += b->on_reset;
}

static void balance(int pi, const char *what, uint64_t pool, uint64_t seen)
{
    if (pool != seen)
        FAIL("pool %d: counters do not balance: %s %" PRIu64 " in the pool, %" PRIu64
             " counted by the threads",
             pi, what, pool, seen);
}

kvb_stats torture_check_pool(int pi, kvb_pool *p, const torture_books *b, unsigned check)
{
    if (kvb_pool_check(p) != 0)
        FAIL("kvb_pool_check on pool %d", pi);
    kvb_stats st;
    if (kvb_pool_stats(p, &st) != 0)
        FAIL("pool %d: stats", pi);
    if (st.mutable_ || st.staged || st.primary || st.duplicate)
        FAIL("pool %d: blocks still held at the end (mutable %u, staged %u, primary %u, "
             "duplicate %u)",
             pi, st.mutable_, st.staged, st.primary, st.duplicate);
    if (st.reset + st.inactive != st.block_count)
        FAIL("pool %d: reset %u + inactive %u != block_count %u", pi, st.reset, st.inactive,
             st.block_count);
    if (st.misuse)
        FAIL("pool %d: misuse counter %" PRIu64, pi, st.misuse);
    if (check & TORTURE_ALLOCATIONS) {
        balance(pi, "allocations", st.allocations, b->allocated);
        balance(pi, "stagings", st.stagings, b->staged);
        balance(pi, "registrations", st.registrations, b->registered);
        balance(pi, "evictions (by allocations + drained)", st.evictions, b->evicted + b->drained);
    }
    if (check & TORTURE_MATCHES) {
        balance(pi, "match_requested", st.match_requested, b->match_requested);
        balance(pi, "match_returned", st.match_returned, b->match_returned);
    }
    if (check & TORTURE_SCANS) {
        balance(pi, "scan_requested", st.scan_requested, b->scan_requested);
        balance(pi, "scan_returned", st.scan_returned, b->scan_returned);
    }
    if ((check & TORTURE_ON_EVICT) && b->on_evict != st.evictions)
        FAIL("pool %d: on_evict fired %" PRIu64 " times for %" PRIu64 " evictions", pi, b->on_evict,
             st.evictions);
    if (check & TORTURE_ON_RESET) {
        uint64_t resets = b->unregistered + st.dedups + st.duplicates + b->drained;
        if (b->on_reset != resets)
            FAIL("pool %d: on_reset fired %" PRIu64 " times, expected %" PRIu64
                 " (unregistered releases %" PRIu64 " + dedups %" PRIu64 " + duplicates %" PRIu64
                 " + drained %" PRIu64 ")",
                 pi, b->on_reset, resets, b->unregistered, st.dedups, st.duplicates, b->drained);
    }
    return st;
}

#define PRESENCE_MAX_DEPTH 64

uint32_t torture_check_presence(int pi, kvb_registry *reg, kvb_pool *p, const kvb_hash *chains,
                                int n_chains, int depth)
{
    if (depth > PRESENCE_MAX_DEPTH)
        FAIL("torture_check_presence: depth %d", depth);
    uint32_t cached = 0;
    for (int c = 0; c < n_chains; c++) {
        const kvb_hash *chain = chains + (size_t)c * (size_t)depth;
        bool present[PRESENCE_MAX_DEPTH], hit[PRESENCE_MAX_DEPTH];
        kvb_block out[PRESENCE_MAX_DEPTH];
        if (kvb_registry_present(reg, chain, (uint32_t)depth, p, present) < 0)
            FAIL("registry_present");
        if (kvb_pool_scan(p, chain, (uint32_t)depth, false, out, hit) < 0)
            FAIL("scan");
        for (int d = 0; d < depth; d++) {
            if (present[d] != hit[d])
                FAIL("pool %d chain %d depth %d: registry says %d, pool says %d", pi, c, d,
                     present[d], hit[d]);
            if (hit[d]) {
                cached++;
                if (kvb_block_release(&out[d]) != 0)
                    FAIL("release after the presence scan");
            }
        }
    }
    return cached;
}
