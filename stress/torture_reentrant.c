/*
 * torture_reentrant.c - callbacks that call back into the pools, heavily.
 *
 * T threads share two small pools (lru/ALLOW and fifo/REJECT, 32 blocks each)
 * attached to one registry. Every on_reset and on_evict callback (which
 * kvblock runs on the thread that caused it, after dropping the pool lock)
 * usually performs a nested operation on either pool: allocate and register a
 * chain prefix (which evicts and so fires nested on_evict), match, drain the
 * cache with kvb_pool_reset_inactive, allocate and release mutable blocks
 * (nested on_reset), release blocks stashed by earlier callbacks, upgrade weak
 * references, read stats and kvb_pool_check (which take the pool lock: a
 * callback run under the lock would deadlock here) and ask the registry (whose
 * lock must never be taken under a pool lock: the debug build asserts it).
 * Nesting is bounded at depth 2. Blocks registered inside a callback may be
 * stashed and released later by the main loop or by another callback.
 *
 * Checks: every reference names a block whose payload (content[pool][id],
 * written by the MUTABLE owner) is its hash; every call fires exactly its own
 * callbacks: callbacks are attributed to the nesting depth of the call that
 * caused them, and an allocation that evicted e blocks saw e on_evict at its
 * depth, a drain of d blocks d on_evict and d on_reset. At the end:
 * kvb_pool_check() == 0, nothing held, reset + inactive == block_count, exact
 * counter balance including the nested operations (allocations, stagings,
 * registrations, evictions == evicted by allocations + drained, on_evict ==
 * evictions, on_reset == mutable and staged releases + dedups + duplicates +
 * drained), misuse == 0, registry presence == cached content. Exits non-zero
 * on the first violation.
 *
 * usage: torture_reentrant [threads=8] [ops_per_thread=200000] [seed=time]
 */
#include "kvblock.h"
#include "support/torture.h"
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPOOLS  2
#define BLOCKS  32
#define CHAINS  12
#define DEPTH   4
#define HOLD    6
#define STASH   8
#define MAXNEST 2
#define NCAT    8
#define NNESTED 8

static const char *const cat_names[NCAT] = {"produce", "match",    "release", "release_n",
                                            "drain",   "pressure", "flush",   "complete"};
static const int op_cat[] = {0, 0, 1, 1, 2, 3, 4, 5, 6, 7};
#define NOPS ((uint32_t)(sizeof op_cat / sizeof op_cat[0]))
static const char *const nested_names[NNESTED] = {"produce", "match",   "drain", "churn",
                                                  "unstash", "upgrade", "peek",  "none"};

static kvb_pool *pools[NPOOLS];
static kvb_registry *reg;
static kvb_hash universe[CHAINS][DEPTH];
static kvb_hash content[NPOOLS][BLOCKS];
static atomic_ulong cb_evicts[NPOOLS], cb_resets[NPOOLS];

struct worker {
    uint64_t nseed; /* the callbacks' generator */
    torture_books books[NPOOLS];
    uint64_t op_count[NCAT], nested_count[NNESTED], max_depth_seen;
    /* main-loop holdings: touched only by the main loop */
    kvb_block b[HOLD];
    int nb;
    kvb_complete c[HOLD];
    int nc;
    /* blocks registered inside callbacks: pushed and popped one at a time */
    kvb_block stash[STASH];
    int ns;
    kvb_weak weak[STASH];
    int nw;
    /* callbacks attributed to the nesting depth of the call that caused them */
    uint64_t evicts_at[MAXNEST + 2], resets_at[MAXNEST + 2];
};

static _Thread_local struct worker *self;
static _Thread_local int depth; /* callbacks currently running on this thread */

static void verify_ref(int pi, const kvb_block *b, kvb_hash expect, const char *how)
{
    if (b->pool != pools[pi] || b->id >= BLOCKS)
        FAIL("%s: handle names pool %p block %u", how, (void *)b->pool, b->id);
    if (!kvb_hash_equal(b->hash, expect))
        FAIL("%s: handle hash differs from the requested one", how);
    if (!kvb_hash_equal(content[pi][b->id], expect))
        FAIL("%s: block %u of pool %d holds other content", how, b->id, pi);
    if (kvb_block_use_count(b) == 0)
        FAIL("%s: a fresh reference has use_count 0", how);
}

static int pool_index(const kvb_pool *p)
{
    return p == pools[0] ? 0 : 1;
}

/* allocate with exact attribution of the on_evict callbacks it fires */
static int allocate_counted(int pi, uint32_t n, kvb_mutable *m)
{
    struct worker *w = self;
    kvb_hash ev[BLOCKS];
    uint32_t nev = 0;
    int d = depth;
    uint64_t before = w->evicts_at[d];
    int rc = kvb_pool_allocate(pools[pi], n, m, ev, &nev);
    if (rc != 0 && rc != -ENOSPC)
        FAIL("allocate: %s", kvb_strerror(rc));
    if (w->evicts_at[d] - before != nev)
        FAIL("allocate at depth %d evicted %u but fired %" PRIu64 " on_evict", d, nev,
             w->evicts_at[d] - before);
    if (rc == 0) {
        w->books[pi].allocated += n;
        w->books[pi].evicted += nev;
    }
    return rc;
}

/* allocate n, write payload, stage chain c[0..n), register; out[] receives the blocks */
static int produce_into(int pi, uint32_t c, uint32_t n, kvb_block *out)
{
    struct worker *w = self;
    kvb_mutable m[DEPTH];
    kvb_complete cp[DEPTH];
    if (allocate_counted(pi, n, m) != 0)
        return -ENOSPC;
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
    return 0;
}

static void drain(int pi)
{
    struct worker *w = self;
    int d = depth;
    uint64_t e0 = w->evicts_at[d], r0 = w->resets_at[d];
    int rc = kvb_pool_reset_inactive(pools[pi]);
    if (rc < 0 || rc > BLOCKS) /* never -EBUSY: blocks in use are left alone */
        FAIL("reset_inactive returned %d", rc);
    if (w->evicts_at[d] - e0 != (uint64_t)rc || w->resets_at[d] - r0 != (uint64_t)rc)
        FAIL("drain of %d blocks at depth %d fired %" PRIu64 " on_evict, %" PRIu64 " on_reset", rc,
             d, w->evicts_at[d] - e0, w->resets_at[d] - r0);
    w->books[pi].drained += (uint64_t)rc;
}

/* allocate some mutable blocks and give them back (each release fires on_reset) */
static void churn(int pi, uint64_t *s)
{
    struct worker *w = self;
    uint32_t n = 1 + tu_rnd(s, 3);
    kvb_mutable m[3];
    if (allocate_counted(pi, n, m) != 0)
        return;
    for (uint32_t i = 0; i < n; i++)
        content[pi][m[i].id] = (kvb_hash){~0ull, m[i].id};
    for (uint32_t i = 0; i < n; i++) {
        int d = depth;
        uint64_t r0 = w->resets_at[d];
        if (kvb_mutable_release(&m[i]) != 0)
            FAIL("mutable_release");
        if (w->resets_at[d] - r0 != 1)
            FAIL("mutable_release fired %" PRIu64 " on_reset", w->resets_at[d] - r0);
        w->books[pi].unregistered++;
    }
}

static void stash_push(kvb_block b, uint64_t *s)
{
    struct worker *w = self;
    if (w->nw < STASH && tu_rnd(s, 2))
        kvb_block_downgrade(&b, &w->weak[w->nw++]);
    if (w->ns < STASH) {
        w->stash[w->ns++] = b;
        return;
    }
    if (kvb_block_release(&b) != 0)
        FAIL("release (stash full)");
}

/* The nested operation a callback performs. */
static void nested(uint64_t *s)
{
    struct worker *w = self;
    int pi = (int)tu_rnd(s, NPOOLS);
    uint32_t kind = tu_rnd(s, NNESTED);
    w->nested_count[kind]++;
    if ((uint64_t)depth > w->max_depth_seen)
        w->max_depth_seen = (uint64_t)depth;
    switch (kind) {
    case 0: { /* produce a chain prefix; stash some of it */
        uint32_t c = tu_rnd(s, CHAINS), n = 1 + tu_rnd(s, DEPTH);
        kvb_block out[DEPTH];
        if (produce_into(pi, c, n, out) != 0)
            break;
        for (uint32_t i = 0; i < n; i++) {
            if (tu_rnd(s, 3) == 0) {
                stash_push(out[i], s);
            } else if (kvb_block_release(&out[i]) != 0) {
                FAIL("release in callback");
            }
        }
        break;
    }
    case 1: { /* match and release */
        uint32_t c = tu_rnd(s, CHAINS), n = 1 + tu_rnd(s, DEPTH);
        kvb_block out[DEPTH];
        int k = kvb_pool_match(pools[pi], universe[c], n, out);
        if (k < 0)
            FAIL("match in callback: %s", kvb_strerror(k));
        for (int i = 0; i < k; i++)
            verify_ref(pi, &out[i], universe[c][i], "match in callback");
        if (kvb_block_release_n(out, (uint32_t)k) != 0)
            FAIL("release_n in callback");
        break;
    }
    case 2:
        drain(pi);
        break;
    case 3:
        churn(pi, s);
        break;
    case 4: /* release one stashed block (popped before the release re-enters) */
        if (w->ns) {
            kvb_block b = w->stash[--w->ns];
            if (kvb_block_release(&b) != 0)
                FAIL("release of a stashed block");
        }
        break;
    case 5: /* upgrade a weak reference kept from a stashed block */
        if (w->nw) {
            kvb_weak wk = w->weak[--w->nw];
            kvb_block b;
            int rc = kvb_weak_upgrade(&wk, &b);
            if (rc == 0) {
                verify_ref(pool_index(b.pool), &b, wk.hash, "upgrade in callback");
                stash_push(b, s);
            } else if (rc != -ENOENT) {
                FAIL("upgrade in callback: %s", kvb_strerror(rc));
            }
        }
        break;
    case 6: { /* look at the pool and the registry: both locks must be free */
        kvb_stats st;
        if (kvb_pool_stats(pools[pi], &st) != 0)
            FAIL("stats in callback");
        if ((uint64_t)st.reset + st.mutable_ + st.staged + st.primary + st.duplicate +
                st.inactive !=
            BLOCKS)
            FAIL("torn stats in callback");
        if (kvb_pool_available(pools[pi]) > BLOCKS)
            FAIL("available > block_count in callback");
        if (tu_rnd(s, 8) == 0 && kvb_pool_check(pools[pi]) != 0)
            FAIL("kvb_pool_check in callback");
        if (kvb_registry_present(reg, universe[tu_rnd(s, CHAINS)], DEPTH, pools[pi], NULL) < 0)
            FAIL("registry_present in callback");
        break;
    }
    default:
        break;
    }
}

static void maybe_nested(void)
{
    struct worker *w = self;
    if (!w || depth >= MAXNEST)
        return;
    uint64_t *s = &w->nseed;
    if (tu_rnd(s, 4) == 0)
        return;
    depth++;
    nested(s);
    depth--;
}

static void on_reset(void *user, uint32_t id)
{
    int pi = *(int *)user;
    if (id >= BLOCKS)
        FAIL("on_reset with block id %u", id);
    atomic_fetch_add_explicit(&cb_resets[pi], 1, memory_order_relaxed);
    if (self)
        self->resets_at[depth]++;
    maybe_nested();
}

static void on_evict(void *user, kvb_hash h, uint32_t id)
{
    int pi = *(int *)user;
    (void)h;
    if (id >= BLOCKS)
        FAIL("on_evict with block id %u", id);
    atomic_fetch_add_explicit(&cb_evicts[pi], 1, memory_order_relaxed);
    if (self)
        self->evicts_at[depth]++;
    maybe_nested();
}

static void keep(kvb_block b)
{
    struct worker *w = self;
    if (w->nb < HOLD) {
        w->b[w->nb++] = b;
        return;
    }
    if (kvb_block_release(&b) != 0)
        FAIL("release of a fresh block");
}

static void flush_stash(void)
{
    struct worker *w = self;
    kvb_block tmp[STASH];
    int n = w->ns;
    memcpy(tmp, w->stash, (size_t)n * sizeof tmp[0]);
    w->ns = 0; /* emptied before the releases re-enter and maybe stash again */
    if (kvb_block_release_n(tmp, (uint32_t)n) != 0)
        FAIL("release_n of the stash");
}

static void op(uint64_t *s)
{
    struct worker *w = self;
    int pi = (int)tu_rnd(s, NPOOLS);
    int cat = op_cat[tu_rnd(s, NOPS)];
    w->op_count[cat]++;
    switch (cat) {
    case 0: { /* produce, keep some, or stage only */
        uint32_t c = tu_rnd(s, CHAINS), n = 1 + tu_rnd(s, DEPTH);
        if (tu_rnd(s, 4) == 0 && w->nc < HOLD) { /* staged but not registered yet */
            kvb_mutable m;
            if (allocate_counted(pi, 1, &m) != 0)
                break;
            content[pi][m.id] = universe[c][0];
            if (kvb_mutable_stage(&m, universe[c][0], &w->c[w->nc]) != 0)
                FAIL("stage");
            w->books[pi].staged++;
            w->nc++;
            break;
        }
        kvb_block out[DEPTH];
        if (produce_into(pi, c, n, out) != 0)
            break;
        for (uint32_t i = 0; i < n; i++)
            keep(out[i]);
        break;
    }
    case 1: {
        uint32_t c = tu_rnd(s, CHAINS), n = 1 + tu_rnd(s, DEPTH);
        kvb_block out[DEPTH];
        int k = kvb_pool_match(pools[pi], universe[c], n, out);
        if (k < 0)
            FAIL("match: %s", kvb_strerror(k));
        for (int i = 0; i < k; i++) {
            verify_ref(pi, &out[i], universe[c][i], "match");
            keep(out[i]);
        }
        break;
    }
    case 2:
        if (w->nb) {
            int i = (int)tu_rnd(s, (uint32_t)w->nb);
            kvb_block b = w->b[i];
            w->b[i] = w->b[--w->nb];
            if (kvb_block_release(&b) != 0)
                FAIL("release of a held block");
        }
        break;
    case 3: {
        kvb_block tmp[HOLD];
        int n = w->nb;
        memcpy(tmp, w->b, (size_t)n * sizeof tmp[0]);
        w->nb = 0;
        if (kvb_block_release_n(tmp, (uint32_t)n) != 0)
            FAIL("release_n");
        break;
    }
    case 4:
        drain(pi);
        break;
    case 5:
        churn(pi, s);
        break;
    case 6:
        flush_stash();
        break;
    case 7: /* register or drop what is staged */
        if (w->nc) {
            kvb_complete cp = w->c[--w->nc];
            int cpi = pool_index(cp.pool);
            if (tu_rnd(s, 2)) {
                kvb_block b;
                kvb_hash h = cp.hash;
                if (kvb_pool_register(cp.pool, &cp, 1, &b) != 0)
                    FAIL("register of a staged block");
                w->books[cpi].registered++;
                verify_ref(cpi, &b, h, "register");
                keep(b);
            } else {
                if (kvb_complete_release(&cp) != 0)
                    FAIL("complete_release");
                w->books[cpi].unregistered++;
            }
        }
        break;
    }
}

static void run(void *arg, uint64_t seed, uint64_t ops)
{
    struct worker *w = arg;
    self = w;
    w->nseed = ~seed;
    uint64_t s = seed;
    for (uint64_t i = 0; i < ops; i++)
        op(&s);
    /* give everything back; releases may still stash from callbacks: loop */
    while (w->nc) {
        kvb_complete cp = w->c[--w->nc];
        int cpi = pool_index(cp.pool); /* before the release clears cp */
        if (kvb_complete_release(&cp) != 0)
            FAIL("final complete_release");
        w->books[cpi].unregistered++;
    }
    {
        kvb_block tmp[HOLD];
        int n = w->nb;
        memcpy(tmp, w->b, (size_t)n * sizeof tmp[0]);
        w->nb = 0;
        if (kvb_block_release_n(tmp, (uint32_t)n) != 0)
            FAIL("final release_n");
    }
    while (w->ns)
        flush_stash();
    self = NULL; /* late callbacks of this thread (none expected) do no nested work */
}

int main(int argc, char **argv)
{
    torture_args a = torture_start(argc, argv, "torture_reentrant", 8, 200000);
    torture_chains(9000, CHAINS, DEPTH, &universe[0][0]);
    if (kvb_registry_create(NULL, &reg) != 0)
        FAIL("registry_create");
    torture_pair_create(BLOCKS, reg, (kvb_callbacks){.on_reset = on_reset, .on_evict = on_evict},
                        pools);

    struct worker *w = calloc((size_t)a.threads, sizeof *w);
    if (!w)
        FAIL("out of memory");
    torture_run(&a, w, sizeof *w, run);

    uint64_t total_ops = 0, nested_ops = 0, per_cat[NCAT] = {0}, per_nested[NNESTED] = {0},
             maxd = 0;
    for (int i = 0; i < a.threads; i++) {
        for (int k = 0; k < NCAT; k++) {
            total_ops += w[i].op_count[k];
            per_cat[k] += w[i].op_count[k];
        }
        for (int k = 0; k < NNESTED; k++) {
            nested_ops += w[i].nested_count[k];
            per_nested[k] += w[i].nested_count[k];
        }
        if (w[i].max_depth_seen > maxd)
            maxd = w[i].max_depth_seen;
    }
    for (int pi = 0; pi < NPOOLS; pi++) {
        kvb_pool *p = pools[pi];
        torture_books b = {0};
        for (int i = 0; i < a.threads; i++)
            torture_books_add(&b, &w[i].books[pi]);
        b.on_evict = atomic_load(&cb_evicts[pi]);
        b.on_reset = atomic_load(&cb_resets[pi]);
        kvb_stats st = torture_check_pool(
            pi, p, &b, TORTURE_ALLOCATIONS | TORTURE_ON_EVICT | TORTURE_ON_RESET);
        torture_check_presence(pi, reg, p, &universe[0][0], CHAINS, DEPTH);
        printf("pool %-11s: allocations=%" PRIu64 " evictions=%" PRIu64 " drained=%" PRIu64
               " registrations=%" PRIu64 " duplicates=%" PRIu64 " dedups=%" PRIu64
               " resets=%lu eager=%" PRIu64 " contended=%" PRIu64 "\n",
               kvb_pool_name(p), st.allocations, st.evictions, b.drained, st.registrations,
               st.duplicates, st.dedups, (unsigned long)atomic_load(&cb_resets[pi]),
               st.eager_transitions, st.lock_contended);
        if (kvb_pool_check(p) != 0)
            FAIL("kvb_pool_check after the presence scan on pool %d", pi);
    }
    for (int pi = 0; pi < NPOOLS; pi++)
        if (kvb_pool_destroy(pools[pi]) != 0)
            FAIL("pool_destroy");
    if (kvb_registry_destroy(reg) != 0)
        FAIL("registry_destroy");
    printf("ops:");
    for (int k = 0; k < NCAT; k++)
        printf(" %s=%" PRIu64, cat_names[k], per_cat[k]);
    printf("\nnested (in callbacks, max depth %" PRIu64 "):", maxd);
    for (int k = 0; k < NNESTED; k++)
        printf(" %s=%" PRIu64, nested_names[k], per_nested[k]);
    printf("\ntorture_reentrant: OK, %" PRIu64 " operations + %" PRIu64 " nested in callbacks\n",
           total_ops, nested_ops);
    free(w);
    return 0;
}
