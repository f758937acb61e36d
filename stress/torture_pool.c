/*
 * torture_pool.c - T threads run random mixes of every handle operation on two
 * small pools that share one registry, so that eviction, resurrection, the
 * eager last-release race, duplicates and presence updates happen constantly.
 * Callbacks call back into the pool; prefix matches are also made with
 * kvb_pool_acquire (match + allocate + stage + register in one call). At the end
 * every thread releases what it holds and the program checks:
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
#include "support/torture.h"
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPOOLS        2
#define BLOCKS        48 /* small: constant eviction */
#define CHAINS        24
#define DEPTH         6
#define HOLD          24 /* handles of each kind a thread keeps at most */
#define HINT_CAPACITY 24 /* small: hint calls meet -ENOSPC too */

static kvb_pool *pools[NPOOLS];
static kvb_registry *reg;
static kvb_hash universe[CHAINS][DEPTH];
static atomic_ulong cb_evicts[NPOOLS], cb_resets[NPOOLS];

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
    torture_books books[NPOOLS]; /* what this thread did (compared with the pool counters) */
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
    int pi = (int)tu_rnd(s, NPOOLS);
    kvb_pool *p = pools[pi];
    uint32_t kind = tu_rnd(s, 16);
    w->op_count[kind]++;
    switch (kind) {
    case 0:
    case 1: { /* allocate */
        uint32_t n = 1 + tu_rnd(s, 4);
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
            w->books[pi].allocated += n;
            w->books[pi].evicted += nev;
        }
        break;
    }
    case 2: { /* stage */
        if (!w->nm || w->nc >= HOLD)
            break;
        int i = (int)tu_rnd(s, (uint32_t)w->nm);
        kvb_pool *mp = w->m[i].pool;
        kvb_hash h = universe[tu_rnd(s, CHAINS)][tu_rnd(s, DEPTH)];
        if (kvb_mutable_stage(&w->m[i], h, &w->c[w->nc]) != 0)
            FAIL("stage");
        w->books[pool_index(mp)].staged++;
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
        if (kvb_pool_register_retained(cp, batch, (uint32_t)n, tu_rnd(s, 2) ? &ret : NULL, out) !=
            0)
            FAIL("register");
        w->books[pool_index(cp)].registered += (uint64_t)n;
        for (int i = 0; i < n; i++)
            add_block(w, out[i]);
        break;
    }
    case 4: { /* prefix match on a chain; or the whole chain prefix acquired */
        uint32_t ch = tu_rnd(s, CHAINS), n = 1 + tu_rnd(s, DEPTH);
        kvb_block out[DEPTH];
        if (tu_rnd(s, 2)) { /* kvb_pool_acquire: match + allocate + stage + register */
            kvb_hash ev[DEPTH];
            uint32_t nev = 0;
            int k = kvb_pool_acquire(p, universe[ch], n, NULL, out, ev, &nev);
            check_rc(k, "acquire");
            if (k < 0)
                break;
            w->books[pi].match_returned += (uint64_t)k;
            w->books[pi].match_requested += n;
            w->books[pi].allocated += n - (uint32_t)k;
            w->books[pi].staged += n - (uint32_t)k;
            w->books[pi].registered += n - (uint32_t)k;
            w->books[pi].evicted += nev;
            for (uint32_t i = 0; i < n; i++) {
                if (out[i].pool != p || !kvb_hash_equal(out[i].hash, universe[ch][i]))
                    FAIL("acquire returned the wrong content");
                add_block(w, out[i]);
            }
            break;
        }
        int k = kvb_pool_match(p, universe[ch], n, out);
        check_rc(k, "match");
        w->books[pi].match_returned += (uint64_t)k;
        w->books[pi].match_requested += n;
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
            q[i] = universe[tu_rnd(s, CHAINS)][tu_rnd(s, DEPTH)];
        int k = kvb_pool_match_scattered(p, q, 4, out, hit);
        check_rc(k, "match_scattered");
        w->books[pi].match_returned += (uint64_t)k;
        w->books[pi].match_requested += 4;
        for (int i = 0; i < 4; i++)
            if (hit[i])
                add_block(w, out[i]);
        break;
    }
    case 6: { /* clone */
        if (!w->nb)
            break;
        kvb_block c;
        if (kvb_block_clone(&w->b[tu_rnd(s, (uint32_t)w->nb)], &c) != 0)
            FAIL("clone of a held block");
        add_block(w, c);
        break;
    }
    case 7:
    case 8: { /* release one */
        if (!w->nb)
            break;
        int i = (int)tu_rnd(s, (uint32_t)w->nb);
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
        if (w->nb && w->nw < HOLD && tu_rnd(s, 2)) {
            kvb_block_downgrade(&w->b[tu_rnd(s, (uint32_t)w->nb)], &w->w[w->nw++]);
        } else if (w->nw) {
            kvb_block u;
            int i = (int)tu_rnd(s, (uint32_t)w->nw);
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
        if (w->nb && kvb_block_set_reset_on_release(&w->b[tu_rnd(s, (uint32_t)w->nb)],
                                                    tu_rnd(s, 8) == 0) != 0)
            FAIL("set_reset_on_release");
        break;
    case 12: { /* give back unregistered work */
        if (w->nc && tu_rnd(s, 2)) {
            int i = (int)tu_rnd(s, (uint32_t)w->nc);
            if (tu_rnd(s, 2)) {
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
            int i = (int)tu_rnd(s, (uint32_t)w->nm);
            if (kvb_mutable_release(&w->m[i]) != 0)
                FAIL("mutable_release");
            w->m[i] = w->m[--w->nm];
        }
        break;
    }
    case 14: { /* lookahead hints: a queued request's prefix, withdrawn later */
        if (w->nh < HOLD && (w->nh == 0 || tu_rnd(s, 2))) {
            uint32_t ch = tu_rnd(s, CHAINS), n = 1 + tu_rnd(s, DEPTH);
            int32_t d = 1 + (int32_t)tu_rnd(s, 2);
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
            int i = (int)tu_rnd(s, (uint32_t)w->nh);
            if (kvb_pool_hint(pools[w->h[i].pool], universe[w->h[i].chain], w->h[i].n,
                              -w->h[i].d) != 0)
                FAIL("hint withdrawal");
            w->withdrawn[w->h[i].pool] += w->h[i].n * (uint32_t)w->h[i].d;
            w->h[i] = w->h[--w->nh];
        }
        break;
    }
    case 15: { /* retention priorities, some with short durations (a real clock) */
        uint32_t prio = tu_rnd(s, KVB_PRIORITY_MAX + 1), dur = tu_rnd(s, 3) ? 0 : 1 + tu_rnd(s, 3);
        if (w->nb && tu_rnd(s, 2)) {
            kvb_block *b = &w->b[tu_rnd(s, (uint32_t)w->nb)];
            if (kvb_block_set_priority(b, prio, dur) != 0)
                FAIL("set_priority of a held block");
            int got = kvb_block_priority(b);
            if (got < 0 || got > (int)KVB_PRIORITY_MAX)
                FAIL("block_priority: %d", got);
        } else {
            uint32_t ch = tu_rnd(s, CHAINS), n = 1 + tu_rnd(s, DEPTH);
            int rc = kvb_pool_set_priority(p, universe[ch], n, prio, dur);
            if (rc < 0 || rc > (int)n)
                FAIL("pool_set_priority: %d", rc);
        }
        break;
    }
    case 13: { /* use count and address of held blocks */
        if (!w->nb)
            break;
        kvb_block *b = &w->b[tu_rnd(s, (uint32_t)w->nb)];
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

static void run(void *arg, uint64_t seed, uint64_t ops)
{
    struct worker *w = arg;
    uint64_t s = seed;
    for (uint64_t i = 0; i < ops; i++)
        op(w, &s);
    release_all(w);
}

int main(int argc, char **argv)
{
    torture_args a = torture_start(argc, argv, "torture_pool", 8, 200000);
    torture_chains(1000, CHAINS, DEPTH, &universe[0][0]);
    if (kvb_registry_create(NULL, &reg) != 0)
        FAIL("registry_create");
    for (int i = 0; i < NPOOLS; i++) {
        kvb_pool_config cfg;
        /* user = the pool's index: callbacks fire only after pools[] is filled */
        torture_pair_config(i, BLOCKS, reg,
                            (kvb_callbacks){.on_reset = on_reset, .on_evict = on_evict}, &cfg);
        cfg.name = i == 0 ? "gpu" : "host";
        cfg.hint_capacity = HINT_CAPACITY;
        cfg.priorities = true;
        if (kvb_pool_create(&cfg, &pools[i]) != 0)
            FAIL("pool_create");
    }

    struct worker *w = calloc((size_t)a.threads, sizeof *w);
    if (!w)
        FAIL("out of memory");
    torture_run(&a, w, sizeof *w, run);

    uint64_t total_ops = 0;
    for (int pi = 0; pi < NPOOLS; pi++) {
        kvb_pool *p = pools[pi];
        torture_books b = {0};
        uint64_t hinted = 0, withdrawn = 0;
        for (int i = 0; i < a.threads; i++) {
            torture_books_add(&b, &w[i].books[pi]);
            hinted += w[i].hinted[pi];
            withdrawn += w[i].withdrawn[pi];
        }
        b.on_evict = atomic_load(&cb_evicts[pi]);
        kvb_stats s =
            torture_check_pool(pi, p, &b, TORTURE_ALLOCATIONS | TORTURE_MATCHES | TORTURE_ON_EVICT);
        if (s.hint_added != hinted || s.hint_withdrawn != withdrawn || hinted != withdrawn ||
            s.hint_uses || s.hint_hashes || s.hint_protected || s.hint_unmatched)
            FAIL("pool %d: hints do not balance (added %" PRIu64 "/%" PRIu64 ", withdrawn %" PRIu64
                 "/%" PRIu64 ", left %" PRIu64 " uses on %u hashes, %u "
                 "protected, %" PRIu64 " unmatched)",
                 pi, s.hint_added, hinted, s.hint_withdrawn, withdrawn, s.hint_uses, s.hint_hashes,
                 s.hint_protected, s.hint_unmatched);
        /* presence: nothing is held, so present <=> cached */
        torture_check_presence(pi, reg, p, &universe[0][0], CHAINS, DEPTH);
        printf("pool %-4s: allocations=%" PRIu64 " evictions=%" PRIu64 " registrations=%" PRIu64
               " duplicates=%" PRIu64 " dedups=%" PRIu64 " match_hits=%" PRIu64 " eager=%" PRIu64
               " noops=%" PRIu64 " resets=%lu contended=%" PRIu64 " hint_evictions=%" PRIu64
               " hint_rejected=%" PRIu64 " retention_expired=%" PRIu64
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
    for (int i = 0; i < a.threads; i++)
        for (int k = 0; k < 16; k++)
            total_ops += w[i].op_count[k];
    printf("torture_pool: OK, %" PRIu64 " operations\n", total_ops);
    free(w);
    return 0;
}
