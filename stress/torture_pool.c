/*
 * torture_pool.c - T threads run random mixes of every handle operation on two
 * small pools that share one registry, so that eviction, resurrection, the
 * eager last-release race, duplicates and presence updates happen constantly.
 * Callbacks call back into the pool. At the end every thread releases what it
 * holds and the program checks:
 *   - kvb_pool_check() == 0 on both pools;
 *   - nothing is held (mutable = staged = primary = duplicate = 0);
 *   - exact counter balance: the pools' allocation, registration, staging,
 *     match and eviction counters equal what the threads and callbacks saw;
 *   - misuse == 0 (the program never misuses a handle);
 *   - lookahead hints balance: every thread withdraws what it hinted, so no use,
 *     hashed entry or protected block is left and nothing was unmatched;
 *   - retention priorities and (short, real-clock) durations set concurrently
 *     leave the pool consistent (kvb_pool_check covers the lists and the heap);
 *   - registry presence agrees with the pools' content for every hash.
 * Exits non-zero on the first violation.
 *
 * usage: torture_pool [threads=8] [ops_per_thread=200000] [seed=time]
 * Deterministic per seed up to thread scheduling.
 */
#include "kvblock.h"
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NPOOLS 2
#define BLOCKS 48 /* small: constant eviction */
#define CHAINS 24
#define DEPTH 6
#define HOLD 24 /* handles of each kind a thread keeps at most */
#define HINT_CAPACITY 24 /* small: hint calls meet -ENOSPC too */

static kvb_pool *pools[NPOOLS];
static kvb_registry *reg;
static kvb_hash universe[CHAINS][DEPTH];
static atomic_ulong cb_evicts[NPOOLS], cb_resets[NPOOLS];

#define STRESS_NAME "torture_pool"
#include "stress.h"

static int pool_index(kvb_pool *p)
{
    return p == pools[0] ? 0 : 1;
}

/* callbacks re-enter the pool (they would deadlock if run under its lock) */
static void on_reset(void *user, uint32_t id)
{
    kvb_pool *p = pools[*(int *)user];
    (void)id;
    if (kvb_pool_available(p) > BLOCKS)
        FAIL("available > block_count seen from on_reset");
    atomic_fetch_add_explicit(&cb_resets[pool_index(p)], 1, memory_order_relaxed);
}

static void on_evict(void *user, kvb_hash h, uint32_t id)
{
    kvb_pool *p = pools[*(int *)user];
    (void)h;
    if (id >= BLOCKS)
        FAIL("on_evict with block id %u", id);
    kvb_stats s;
    kvb_pool_stats(p, &s);
    atomic_fetch_add_explicit(&cb_evicts[pool_index(p)], 1, memory_order_relaxed);
}

struct worker {
    int idx;
    uint64_t seed, ops;
    /* what this thread did, per pool (compared with the pool counters) */
    uint64_t allocated[NPOOLS], staged[NPOOLS], registered[NPOOLS], matched[NPOOLS],
        requested[NPOOLS], evicted[NPOOLS];
    uint64_t op_count[16];
    kvb_mutable m[HOLD];
    int nm;
    kvb_complete c[HOLD];
    int nc;
    kvb_block b[HOLD];
    int nb;
    kvb_weak w[HOLD];
    int nw;
    /* outstanding hint calls: pool, chain, length, uses */
    struct {
        int pool;
        uint32_t chain, n;
        int32_t d;
    } h[HOLD];
    int nh;
    uint64_t hinted[NPOOLS], withdrawn[NPOOLS];
};

static void check_rc(int rc, const char *what)
{
    if (rc < 0 && rc != -ENOSPC && rc != -ENOENT)
        FAIL("%s: %s", what, kvb_strerror(rc));
}

static void add_block(struct worker *w, kvb_block b)
{
    if (w->nb < HOLD) {
        w->b[w->nb++] = b;
        return;
    }
    if (kvb_block_release(&b) != 0)
        FAIL("release of a fresh block");
}

static void op(struct worker *w, uint64_t *s)
{
    int pi = (int)rnd(s, NPOOLS);
    kvb_pool *p = pools[pi];
    uint32_t kind = rnd(s, 16);
    w->op_count[kind]++;
    switch (kind) {
    case 0:
    case 1: { /* allocate */
        uint32_t n = 1 + rnd(s, 4);
        if (w->nm + (int)n > HOLD)
            break;
        kvb_hash ev[4];
        uint32_t nev = 0;
        int rc = kvb_pool_allocate(p, n, &w->m[w->nm], ev, &nev);
        check_rc(rc, "allocate");
        if (rc == 0) {
            for (uint32_t i = 0; i < n; i++)
                if (w->m[w->nm + (int)i].pool != p)
                    FAIL("allocate returned a handle of another pool");
            w->nm += (int)n;
            w->allocated[pi] += n;
            w->evicted[pi] += nev;
        }
        break;
    }
    case 2: { /* stage */
        if (!w->nm || w->nc >= HOLD)
            break;
        int i = (int)rnd(s, (uint32_t)w->nm);
        kvb_pool *mp = w->m[i].pool;
        kvb_hash h = universe[rnd(s, CHAINS)][rnd(s, DEPTH)];
        if (kvb_mutable_stage(&w->m[i], h, &w->c[w->nc]) != 0)
            FAIL("stage");
        w->staged[pool_index(mp)]++;
        w->nc++;
        w->m[i] = w->m[--w->nm];
        break;
    }
    case 3: { /* register a batch of what is staged in one pool */
        if (!w->nc)
            break;
        kvb_pool *cp = w->c[0].pool;
        kvb_complete batch[HOLD];
        kvb_block out[HOLD];
        int n = 0;
        for (int i = 0; i < w->nc;) {
            if (w->c[i].pool == cp) {
                batch[n++] = w->c[i];
                w->c[i] = w->c[--w->nc];
            } else {
                i++;
            }
        }
        kvb_retention ret;
        kvb_retention_init(&ret);
        kvb_retention_range rg[2] = {{0, 32, 80, 2}, {32, 0, 10, 0}};
        ret.ranges = rg;
        ret.n_ranges = 2;
        if (kvb_pool_register_retained(cp, batch, (uint32_t)n, rnd(s, 2) ? &ret : NULL, out) != 0)
            FAIL("register");
        w->registered[pool_index(cp)] += (uint64_t)n;
        for (int i = 0; i < n; i++)
            add_block(w, out[i]);
        break;
    }
    case 4: { /* prefix match on a chain */
        uint32_t ch = rnd(s, CHAINS), n = 1 + rnd(s, DEPTH);
        kvb_block out[DEPTH];
        int k = kvb_pool_match(p, universe[ch], n, out);
        check_rc(k, "match");
        w->matched[pi] += (uint64_t)k;
        w->requested[pi] += n;
        for (int i = 0; i < k; i++) {
            if (!kvb_hash_equal(out[i].hash, universe[ch][i]))
                FAIL("match returned the wrong content");
            add_block(w, out[i]);
        }
        break;
    }
    case 5: { /* scattered match */
        kvb_hash q[4];
        kvb_block out[4];
        bool hit[4];
        for (int i = 0; i < 4; i++)
            q[i] = universe[rnd(s, CHAINS)][rnd(s, DEPTH)];
        int k = kvb_pool_match_scattered(p, q, 4, out, hit);
        check_rc(k, "match_scattered");
        w->matched[pi] += (uint64_t)k;
        w->requested[pi] += 4;
        for (int i = 0; i < 4; i++)
            if (hit[i])
                add_block(w, out[i]);
        break;
    }
    case 6: { /* clone */
        if (!w->nb)
            break;
        kvb_block c;
        if (kvb_block_clone(&w->b[rnd(s, (uint32_t)w->nb)], &c) != 0)
            FAIL("clone of a held block");
        add_block(w, c);
        break;
    }
    case 7:
    case 8: { /* release one */
        if (!w->nb)
            break;
        int i = (int)rnd(s, (uint32_t)w->nb);
        if (kvb_block_release(&w->b[i]) != 0)
            FAIL("release of a held block");
        w->b[i] = w->b[--w->nb];
        break;
    }
    case 9: { /* release a batch */
        int n = w->nb < 6 ? w->nb : 6;
        if (kvb_block_release_n(&w->b[w->nb - n], (uint32_t)n) != 0)
            FAIL("release_n");
        w->nb -= n;
        break;
    }
    case 10: { /* downgrade / upgrade */
        if (w->nb && w->nw < HOLD && rnd(s, 2)) {
            kvb_block_downgrade(&w->b[rnd(s, (uint32_t)w->nb)], &w->w[w->nw++]);
        } else if (w->nw) {
            kvb_block u;
            int i = (int)rnd(s, (uint32_t)w->nw);
            int rc = kvb_weak_upgrade(&w->w[i], &u);
            check_rc(rc, "upgrade");
            if (rc == 0) {
                if (!kvb_hash_equal(u.hash, w->w[i].hash))
                    FAIL("upgrade returned other content");
                add_block(w, u);
            }
            w->w[i] = w->w[--w->nw];
        }
        break;
    }
    case 11: /* reset-on-release */
        if (w->nb && kvb_block_set_reset_on_release(&w->b[rnd(s, (uint32_t)w->nb)],
                                                    rnd(s, 8) == 0) != 0)
            FAIL("set_reset_on_release");
        break;
    case 12: { /* give back unregistered work */
        if (w->nc && rnd(s, 2)) {
            int i = (int)rnd(s, (uint32_t)w->nc);
            if (rnd(s, 2)) {
                if (kvb_complete_release(&w->c[i]) != 0)
                    FAIL("complete_release");
                w->c[i] = w->c[--w->nc];
            } else if (w->nm < HOLD) {
                if (kvb_complete_reset(&w->c[i], &w->m[w->nm]) != 0)
                    FAIL("complete_reset");
                w->nm++;
                w->c[i] = w->c[--w->nc];
            }
        } else if (w->nm) {
            int i = (int)rnd(s, (uint32_t)w->nm);
            if (kvb_mutable_release(&w->m[i]) != 0)
                FAIL("mutable_release");
            w->m[i] = w->m[--w->nm];
        }
        break;
    }
    case 14: { /* lookahead hints: a queued request's prefix, withdrawn later */
        if (w->nh < HOLD && (w->nh == 0 || rnd(s, 2))) {
            uint32_t ch = rnd(s, CHAINS), n = 1 + rnd(s, DEPTH);
            int32_t d = 1 + (int32_t)rnd(s, 2);
            int rc = kvb_pool_hint(p, universe[ch], n, d);
            check_rc(rc, "hint");
            if (rc == 0) {
                w->h[w->nh].pool = pi;
                w->h[w->nh].chain = ch;
                w->h[w->nh].n = n;
                w->h[w->nh++].d = d;
                w->hinted[pi] += n * (uint32_t)d;
            }
        } else if (w->nh) {
            int i = (int)rnd(s, (uint32_t)w->nh);
            if (kvb_pool_hint(pools[w->h[i].pool], universe[w->h[i].chain], w->h[i].n,
                              -w->h[i].d) != 0)
                FAIL("hint withdrawal");
            w->withdrawn[w->h[i].pool] += w->h[i].n * (uint32_t)w->h[i].d;
            w->h[i] = w->h[--w->nh];
        }
        break;
    }
    case 15: { /* retention priorities, some with short durations (a real clock) */
        uint32_t prio = rnd(s, KVB_PRIORITY_MAX + 1), dur = rnd(s, 3) ? 0 : 1 + rnd(s, 3);
        if (w->nb && rnd(s, 2)) {
            kvb_block *b = &w->b[rnd(s, (uint32_t)w->nb)];
            if (kvb_block_set_priority(b, prio, dur) != 0)
                FAIL("set_priority of a held block");
            int got = kvb_block_priority(b);
            if (got < 0 || got > (int)KVB_PRIORITY_MAX)
                FAIL("block_priority: %d", got);
        } else {
            uint32_t ch = rnd(s, CHAINS), n = 1 + rnd(s, DEPTH);
            int rc = kvb_pool_set_priority(p, universe[ch], n, prio, dur);
            if (rc < 0 || rc > (int)n)
                FAIL("pool_set_priority: %d", rc);
        }
        break;
    }
    case 13: { /* use count and address of held blocks */
        if (!w->nb)
            break;
        kvb_block *b = &w->b[rnd(s, (uint32_t)w->nb)];
        kvb_block_addr a;
        if (kvb_block_use_count(b) == 0 || kvb_block_address(b, &a) != 0 ||
            a.pool_id != kvb_pool_id(b->pool))
            FAIL("use_count/address of a held block");
        break;
    }
    }
}

static void release_all(struct worker *w)
{
    while (w->nm)
        if (kvb_mutable_release(&w->m[--w->nm]) != 0)
            FAIL("final mutable release");
    while (w->nc)
        if (kvb_complete_release(&w->c[--w->nc]) != 0)
            FAIL("final complete release");
    if (kvb_block_release_n(w->b, (uint32_t)w->nb) != 0)
        FAIL("final release_n");
    w->nb = 0;
    while (w->nh) {
        w->nh--;
        if (kvb_pool_hint(pools[w->h[w->nh].pool], universe[w->h[w->nh].chain], w->h[w->nh].n,
                          -w->h[w->nh].d) != 0)
            FAIL("final hint withdrawal");
        w->withdrawn[w->h[w->nh].pool] += w->h[w->nh].n * (uint32_t)w->h[w->nh].d;
    }
}

static void *run(void *arg)
{
    struct worker *w = arg;
    uint64_t s = w->seed;
    for (uint64_t i = 0; i < w->ops; i++)
        op(w, &s);
    release_all(w);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 8;
    uint64_t ops = argc > 2 ? strtoull(argv[2], NULL, 10) : 200000;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : (uint64_t)time(NULL);
    if (threads < 1 || threads > 256 || ops == 0) {
        fprintf(stderr, "usage: torture_pool [threads 1..256] [ops>0] [seed]\n");
        return 2;
    }
    printf("torture_pool: threads=%d ops/thread=%" PRIu64 " seed=%" PRIu64 "\n", threads, ops,
           seed);
    for (int c = 0; c < CHAINS; c++)
        for (int d = 0; d < DEPTH; d++)
            kvb_hash_make(1000u + (uint64_t)c * 16 + (uint64_t)d,
                          1000u + (uint64_t)c * 16 + (uint64_t)d - 1, d > 0, (uint32_t)d,
                          &universe[c][d]);
    if (kvb_registry_create(NULL, &reg) != 0)
        FAIL("registry_create");
    static int idx[NPOOLS] = {0, 1};
    for (int i = 0; i < NPOOLS; i++) {
        kvb_pool_config cfg;
        kvb_pool_config_init(&cfg);
        cfg.block_count = BLOCKS;
        cfg.registry = reg;
        cfg.evict = i == 0 ? KVB_EVICT_LRU : KVB_EVICT_FIFO;
        cfg.dup_policy = i == 0 ? KVB_DUP_ALLOW : KVB_DUP_REJECT;
        cfg.name = i == 0 ? "gpu" : "host";
        cfg.hint_capacity = HINT_CAPACITY;
        cfg.priorities = true;
        /* user = the pool's index: callbacks fire only after pools[] is filled */
        cfg.callbacks = (kvb_callbacks){.user = &idx[i], .on_reset = on_reset, .on_evict = on_evict};
        if (kvb_pool_create(&cfg, &pools[i]) != 0)
            FAIL("pool_create");
    }

    struct worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    if (!w || !t)
        FAIL("out of memory");
    for (int i = 0; i < threads; i++) {
        w[i].idx = i;
        w[i].seed = seed * 1000003u + (uint64_t)i;
        w[i].ops = ops;
        if (pthread_create(&t[i], NULL, run, &w[i]) != 0)
            FAIL("pthread_create");
    }
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);

    uint64_t total_ops = 0;
    for (int pi = 0; pi < NPOOLS; pi++) {
        kvb_pool *p = pools[pi];
        if (kvb_pool_check(p) != 0)
            FAIL("kvb_pool_check on pool %d", pi);
        kvb_stats s;
        kvb_pool_stats(p, &s);
        uint64_t alloc = 0, staged = 0, regd = 0, matched = 0, req = 0, ev = 0, hinted = 0,
                 withdrawn = 0;
        for (int i = 0; i < threads; i++) {
            alloc += w[i].allocated[pi];
            staged += w[i].staged[pi];
            regd += w[i].registered[pi];
            matched += w[i].matched[pi];
            req += w[i].requested[pi];
            ev += w[i].evicted[pi];
            hinted += w[i].hinted[pi];
            withdrawn += w[i].withdrawn[pi];
        }
        if (s.hint_added != hinted || s.hint_withdrawn != withdrawn || hinted != withdrawn ||
            s.hint_uses || s.hint_hashes || s.hint_protected || s.hint_unmatched)
            FAIL("pool %d: hints do not balance (added %" PRIu64 "/%" PRIu64
                 ", withdrawn %" PRIu64 "/%" PRIu64 ", left %" PRIu64 " uses on %u hashes, %u "
                 "protected, %" PRIu64 " unmatched)",
                 pi, s.hint_added, hinted, s.hint_withdrawn, withdrawn, s.hint_uses,
                 s.hint_hashes, s.hint_protected, s.hint_unmatched);
        if (s.mutable_ || s.staged || s.primary || s.duplicate)
            FAIL("pool %d: blocks still held at the end", pi);
        if (s.reset + s.inactive != BLOCKS)
            FAIL("pool %d: reset + inactive != block_count", pi);
        if (s.allocations != alloc || s.stagings != staged || s.registrations != regd ||
            s.match_returned != matched || s.match_requested != req || s.evictions != ev)
            FAIL("pool %d: counters do not balance (alloc %" PRIu64 "/%" PRIu64
                 ", reg %" PRIu64 "/%" PRIu64 ", match %" PRIu64 "/%" PRIu64
                 ", evict %" PRIu64 "/%" PRIu64 ")",
                 pi, s.allocations, alloc, s.registrations, regd, s.match_returned, matched,
                 s.evictions, ev);
        if (atomic_load(&cb_evicts[pi]) != s.evictions)
            FAIL("pool %d: on_evict fired %lu times for %" PRIu64 " evictions", pi,
                 (unsigned long)atomic_load(&cb_evicts[pi]), s.evictions);
        if (s.misuse)
            FAIL("pool %d: misuse counter %" PRIu64, pi, s.misuse);
        /* presence: nothing is held, so present <=> cached (a match hit) */
        for (int c = 0; c < CHAINS; c++) {
            bool present[DEPTH], hit[DEPTH];
            kvb_block out[DEPTH];
            if (kvb_registry_present(reg, universe[c], DEPTH, p, present) < 0)
                FAIL("registry_present");
            if (kvb_pool_match_scattered(p, universe[c], DEPTH, out, hit) < 0)
                FAIL("match_scattered");
            for (int d = 0; d < DEPTH; d++) {
                if (present[d] != hit[d])
                    FAIL("pool %d chain %d depth %d: registry says %d, pool says %d", pi, c, d,
                         present[d], hit[d]);
                if (hit[d])
                    kvb_block_release(&out[d]);
            }
        }
        printf("pool %-4s: allocations=%" PRIu64 " evictions=%" PRIu64 " registrations=%" PRIu64
               " duplicates=%" PRIu64 " dedups=%" PRIu64 " match_hits=%" PRIu64
               " eager=%" PRIu64 " noops=%" PRIu64 " resets=%lu contended=%" PRIu64
               " hint_evictions=%" PRIu64 " hint_rejected=%" PRIu64 " retention_expired=%" PRIu64
               " retained_evictions=%" PRIu64 "\n",
               kvb_pool_name(p), s.allocations, s.evictions, s.registrations, s.duplicates,
               s.dedups, s.match_returned, s.eager_transitions, s.release_noops,
               (unsigned long)atomic_load(&cb_resets[pi]), s.lock_contended, s.hint_evictions,
               s.hint_rejected, s.retention_expired, s.retained_evictions);
        if (kvb_pool_check(p) != 0)
            FAIL("kvb_pool_check after presence scan on pool %d", pi);
        if (kvb_pool_destroy(p) != 0)
            FAIL("pool_destroy");
    }
    if (kvb_registry_destroy(reg) != 0)
        FAIL("registry_destroy");
    for (int i = 0; i < threads; i++)
        for (int k = 0; k < 16; k++)
            total_ops += w[i].op_count[k];
    printf("torture_pool: OK, %" PRIu64 " operations\n", total_ops);
    free(w);
    free(t);
    return 0;
}
