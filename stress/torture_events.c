/*
 * torture_events.c - KV events under a multi-threaded load (lib/events.c).
 *
 * T threads run random requests (match, allocate, stage, register, release in
 * either order, reset-on-release), scans and cache drains on two small pools
 * that share a registry. Pool 0 delivers at once to a sink that calls back into
 * the pool (a scan, which may resurrect or eagerly reset blocks and so produce
 * events while events are being delivered); pool 1 batches by count (5) and time
 * (1 ms, timer thread) with a tiny delivery capacity (8 hashes). The sinks check
 * on every call that they are never entered concurrently and that seq grows by
 * exactly one per event, and replay the stream into a set. At the end (after a
 * flush) the replayed set must equal the pool's cached-or-active hashes, found
 * with kvb_pool_scan over every hash used; nothing may be lost; nothing is held,
 * and registry presence equals the pool's content.
 * Exits non-zero on the first violation.
 *
 * usage: torture_events [threads=8] [ops_per_thread=200000] [seed=time]
 */
#include "kvblock.h"
#include "support/torture.h"
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPOOLS 2
#define BLOCKS 48
#define CHAINS 24
#define DEPTH  6
#define NU     (CHAINS * DEPTH)

static kvb_hash universe[NU];
static kvb_pool *pools[NPOOLS];

/* Per pool: the replayed set (a count per universe index) and the checks.
 * Only the sink touches it, and sink calls for one pool never overlap (checked);
 * the mutex is there so that the final read and the race checkers agree. */
typedef struct replayer {
    pthread_mutex_t mu;
    atomic_int inside;
    uint64_t last_seq, events, calls;
    int count[NU];
    int index;
} replayer;

static replayer rp[NPOOLS];

static int uindex(kvb_hash h)
{
    for (int i = 0; i < NU; i++)
        if (kvb_hash_equal(universe[i], h))
            return i;
    return -1;
}

static void sink(void *user, const kvb_pool *pool, const kvb_event *e, uint32_t n)
{
    replayer *r = user;
    if (atomic_exchange(&r->inside, 1))
        FAIL("pool %d: sink entered concurrently", r->index);
    pthread_mutex_lock(&r->mu);
    r->calls++;
    for (uint32_t i = 0; i < n; i++) {
        if (e[i].seq != r->last_seq + 1)
            FAIL("pool %d: seq %" PRIu64 " after %" PRIu64, r->index, e[i].seq, r->last_seq);
        r->last_seq = e[i].seq;
        r->events++;
        if (e[i].type == KVB_EVENT_CLEARED) {
            memset(r->count, 0, sizeof r->count);
            continue;
        }
        for (uint32_t j = 0; j < e[i].n; j++) {
            int u = uindex(e[i].hashes[j]);
            if (u < 0)
                FAIL("pool %d: event for a hash never used", r->index);
            if (j > 0 && e[i].type == KVB_EVENT_STORED &&
                !kvb_hash_is_parent(e[i].hashes[j - 1], e[i].hashes[j]))
                FAIL("pool %d: STORED event is not a chain", r->index);
            int d = e[i].type == KVB_EVENT_STORED ? 1 : -1;
            r->count[u] += d;
            if (r->count[u] < 0 || r->count[u] > 1)
                FAIL("pool %d: %s for a hash %s", r->index, d > 0 ? "STORED" : "REMOVED",
                     d > 0 ? "already stored" : "not stored");
        }
    }
    pthread_mutex_unlock(&r->mu);
    atomic_store(&r->inside, 0);
    if (r->index == 0 && n > 0 && e[0].n > 0) { /* call back into the pool */
        kvb_block b;
        bool hit;
        if (kvb_pool_scan((kvb_pool *)pool, &e[0].hashes[0], 1, false, &b, &hit) == 1)
            kvb_block_release(&b);
        kvb_pool_events_flush((kvb_pool *)pool); /* only asks, from inside the sink */
    }
}

static void work(void *arg, uint64_t seed, uint64_t ops)
{
    (void)arg;
    uint64_t s = seed;
    kvb_block b[DEPTH], x[DEPTH];
    kvb_mutable m[DEPTH];
    kvb_complete c[DEPTH];
    bool hit[DEPTH];
    for (uint64_t op = 0; op < ops; op++) {
        uint64_t r = tu_rng_next(&s);
        kvb_pool *p = pools[r & 1];
        const kvb_hash *ch = universe + ((r >> 1) % CHAINS) * DEPTH;
        uint32_t len = 1 + (uint32_t)((r >> 8) % DEPTH);
        switch ((r >> 16) % 16) {
        case 0: {
            int k = kvb_pool_scan(p, ch, len, (r >> 20) & 1, x, hit);
            if (k < 0)
                FAIL("scan: %s", kvb_strerror(k));
            for (uint32_t i = 0; i < len; i++)
                if (hit[i] && kvb_block_release(&x[i]) != 0)
                    FAIL("release after scan");
            break;
        }
        case 1:
            (void)kvb_pool_reset_inactive(p);
            break;
        case 2:
            kvb_pool_events_flush(p);
            break;
        default: {
            int k = kvb_pool_match(p, ch, len, b);
            if (k < 0)
                FAIL("match: %s", kvb_strerror(k));
            uint32_t need = len - (uint32_t)k;
            if (need && kvb_pool_allocate(p, need, m, NULL, NULL) == 0) {
                for (uint32_t i = 0; i < need; i++)
                    if (kvb_mutable_stage(&m[i], ch[(uint32_t)k + i], &c[i]) != 0)
                        FAIL("stage");
                if (kvb_pool_register(p, c, need, b + k) != 0)
                    FAIL("register");
                k = (int)len;
            }
            if (((r >> 24) & 7) == 0)
                for (int i = 0; i < k; i++)
                    kvb_block_set_reset_on_release(&b[i], true);
            if ((r >> 27) & 1) {
                for (int i = k - 1; i >= 0; i--)
                    if (kvb_block_release(&b[i]) != 0)
                        FAIL("release");
            } else if (kvb_block_release_n(b, (uint32_t)k) != 0) {
                FAIL("release_n");
            }
        }
        }
    }
}

int main(int argc, char **argv)
{
    torture_args a = torture_start(argc, argv, "torture_events", 8, 200000);
    torture_chains(5000, CHAINS, DEPTH, universe);
    kvb_registry *reg;
    if (kvb_registry_create(NULL, &reg) != 0)
        FAIL("registry_create");
    for (int i = 0; i < NPOOLS; i++) {
        pthread_mutex_init(&rp[i].mu, NULL);
        rp[i].index = i;
        kvb_event_config ec;
        kvb_event_config_init(&ec);
        ec.sink = sink;
        ec.user = &rp[i];
        if (i == 1) {
            ec.batch_max = 5;
            ec.batch_delay_ms = 1;
            ec.max_hashes = 8;
        }
        kvb_pool_config cfg;
        kvb_pool_config_init(&cfg);
        cfg.block_count = BLOCKS;
        cfg.registry = reg;
        cfg.evict = i == 0 ? KVB_EVICT_LRU : KVB_EVICT_FIFO;
        cfg.events = &ec;
        if (kvb_pool_create(&cfg, &pools[i]) != 0)
            FAIL("pool_create");
    }
    torture_run(&a, NULL, 0, work);

    for (int i = 0; i < NPOOLS; i++) {
        kvb_pool *p = pools[i];
        if (kvb_pool_events_flush(p) != 0)
            FAIL("flush");
        kvb_event_stats st;
        if (kvb_pool_events_stats(p, &st) != 0)
            FAIL("events_stats");
        pthread_mutex_lock(&rp[i].mu);
        uint64_t events = rp[i].events;
        pthread_mutex_unlock(&rp[i].mu);
        if (st.lost || st.waiting || st.events != events || st.last_seq != events)
            FAIL("pool %d: lost %" PRIu64 ", waiting %u, delivered %" PRIu64 " vs %" PRIu64, i,
                 st.lost, st.waiting, st.events, events);
        torture_books none = {0}; /* nothing counted: the event stream is the check */
        torture_check_pool(i, p, &none, 0);
        kvb_block b[NU];
        bool hit[NU];
        int k = kvb_pool_scan(p, universe, NU, false, b, hit);
        if (k < 0)
            FAIL("final scan");
        int diff = 0;
        pthread_mutex_lock(&rp[i].mu);
        for (int u = 0; u < NU; u++)
            diff += (rp[i].count[u] == 1) != hit[u];
        pthread_mutex_unlock(&rp[i].mu);
        if (diff)
            FAIL("pool %d: replayed index differs from the pool on %d of %d hashes", i, diff, NU);
        for (int u = 0; u < NU; u++)
            if (hit[u])
                kvb_block_release(&b[u]);
        torture_check_presence(i, reg, p, universe, CHAINS, DEPTH);
        printf("  pool %d: %" PRIu64 " records, %" PRIu64 " events in %" PRIu64
               " deliveries; replayed index == pool (%d hashes cached or active)\n",
               i, st.records, st.events, st.deliveries, k);
    }
    for (int i = 0; i < NPOOLS; i++)
        if (kvb_pool_destroy(pools[i]) != 0)
            FAIL("pool_destroy");
    if (kvb_registry_destroy(reg) != 0)
        FAIL("registry_destroy");
    for (int i = 0; i < NPOOLS; i++)
        pthread_mutex_destroy(&rp[i].mu);
    printf("torture_events: OK\n");
    return 0;
}
