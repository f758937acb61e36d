/*
 * tools/kvb-bench/lib.c - the library side of a micro operation: one
 * repetition of an operation's plan on a kvblock pool (lib_run), with exactly
 * the calls a runtime would make inside the timed region (see micro.c for what
 * each operation times), and the untimed admission used to fill pools.
 */
#include "kvb-bench/bench.h"

void bench_drop_sink(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n)
{
    (void)pool;
    (void)events;
    *(uint64_t *)user += n;
}

/* allocate + stage + register n blocks with hashes h into out; not timed here */
void lib_admit(lib_fx *f, const kvb_hash *h, uint32_t n, kvb_block *out)
{
    int rc = kvb_pool_allocate(f->pool, n, f->mut, NULL, NULL);
    if (rc != 0)
        lib_fail("kvb_pool_allocate", rc, f->ctx);
    lib_stage(f->pool, f->mut, h, n, f->cmp, f->ctx);
    rc = kvb_pool_register(f->pool, f->cmp, n, out);
    if (rc != 0)
        lib_fail("kvb_pool_register", rc, f->ctx);
}

uint64_t lib_run(lib_fx *f, enum op o, const plan *pl)
{
    kvb_pool *p = f->pool;
    const uint32_t n = pl->n, k = pl->k;
    uint64_t ns = 0;
    int rc;

    switch (o) {
    case OP_LIFECYCLE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_hash *h = pl->q + (size_t)b * n;
            rc = kvb_pool_allocate(p, n, f->mut, NULL, NULL);
            if (rc != 0)
                lib_fail("kvb_pool_allocate", rc, f->ctx);
            lib_stage(p, f->mut, h, n, f->cmp, f->ctx);
            rc = kvb_pool_register(p, f->cmp, n, f->out);
            if (rc != 0)
                lib_fail("kvb_pool_register", rc, f->ctx);
            lib_release(f->out, n, f->ctx);
        }
        ns = region_end();
        break;
    case OP_ACQUIRE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            rc = kvb_pool_acquire(p, pl->q + (size_t)b * n, n, NULL, f->out, NULL, NULL);
            if (rc != 0)
                lib_fail("kvb_pool_acquire", rc, f->ctx);
            lib_release(f->out, n, f->ctx);
        }
        ns = region_end();
        break;
    case OP_MATCH_ACTIVE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            rc = kvb_pool_match(p, f->H + pl->pos[b], n, f->out + (size_t)b * n);
            if (rc != (int)n)
                lib_fail("kvb_pool_match", rc, f->ctx);
        }
        ns = region_end();
        lib_release(f->out, pl->w, f->ctx);
        break;
    case OP_SCATTERED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            size_t o0 = (size_t)b * n;
            rc = kvb_pool_match_scattered(p, pl->q + o0, n, f->out + o0, f->hit + o0);
            if (rc != (int)n)
                lib_fail("kvb_pool_match_scattered", rc, f->ctx);
        }
        ns = region_end();
        lib_release(f->out, pl->w, f->ctx);
        break;
    case OP_UPGRADE_LIVE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_weak *wk = f->weak + pl->pos[b];
            kvb_block *out = f->out + (size_t)b * n;
            for (uint32_t j = 0; j < n; j++) {
                rc = kvb_weak_upgrade(&wk[j], &out[j]);
                if (rc != 0)
                    lib_fail("kvb_weak_upgrade", rc, f->ctx);
            }
        }
        ns = region_end();
        lib_release(f->out, pl->w, f->ctx);
        break;
    case OP_CLONE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_block *src = f->held + pl->pos[b];
            for (uint32_t j = 0; j < n; j++) {
                rc = kvb_block_clone(&src[j], &f->out[j]);
                if (rc != 0)
                    lib_fail("kvb_block_clone", rc, f->ctx);
            }
            lib_release(f->out, n, f->ctx);
        }
        ns = region_end();
        break;
    case OP_MATCH_CACHED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            rc = kvb_pool_match(p, f->H + pl->pos[b], n, f->out);
            if (rc != (int)n)
                lib_fail("kvb_pool_match (cached)", rc, f->ctx);
            lib_release(f->out, n, f->ctx);
        }
        ns = region_end();
        break;
    case OP_UPGRADE_CACHED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_weak *wk = f->weak + pl->pos[b];
            for (uint32_t j = 0; j < n; j++) {
                rc = kvb_weak_upgrade(&wk[j], &f->out[j]);
                if (rc != 0)
                    lib_fail("kvb_weak_upgrade (cached)", rc, f->ctx);
            }
            lib_release(f->out, n, f->ctx);
        }
        ns = region_end();
        break;
    case OP_EVICT_ALLOC:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            rc = kvb_pool_allocate(p, n, f->mut + (size_t)b * n, NULL, NULL);
            if (rc != 0)
                lib_fail("kvb_pool_allocate (evicting)", rc, f->ctx);
        }
        ns = region_end();
        /* put fresh content back in the cache (the free list stays empty) */
        lib_stage(p, f->mut, pl->q, pl->w, f->cmp, f->ctx);
        rc = kvb_pool_register(p, f->cmp, pl->w, f->out);
        if (rc != 0)
            lib_fail("kvb_pool_register", rc, f->ctx);
        lib_release(f->out, pl->w, f->ctx);
        break;
    case OP_COUNT:
        break;
    }
    return ns;
}
