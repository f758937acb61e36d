/*
 * tools/common/request.c - one request's life on a kvblock pool (request.h):
 * the allocation of its missed blocks with make-room retries, their staging and
 * registration, and the last-block-first release. Shared by kvb-replay and
 * kvb-fleet so that both serve a request exactly the same way. No state.
 */
#include "common/request.h"

#include <errno.h>

int kvbt_request_fill(kvb_pool *pool, const kvb_hash *h, uint32_t n, uint32_t k, kvb_block *blk,
                      kvbt_request_fill_args *a)
{
    uint32_t m = n - k;
    int rc;
    if (m == 0)
        return 0;
    /* Too much held: release the oldest held request, retry. */
    while ((rc = kvb_pool_allocate(pool, m, a->mut, NULL, NULL)) == -ENOSPC && a->make_room &&
           a->make_room(a->room_ctx))
        a->early++;
    if (rc < 0) {
        a->failed = "kvb_pool_allocate";
        return rc;
    }
    rc = kvb_pool_stage(pool, a->mut, h + k, m, a->cmp);
    if (rc < 0) {
        a->failed = "kvb_pool_stage";
        return rc;
    }
    rc = a->retention ? kvb_pool_register_retained(pool, a->cmp, m, a->retention, blk + k)
                      : kvb_pool_register(pool, a->cmp, m, blk + k);
    if (rc < 0) {
        a->failed = a->retention ? "kvb_pool_register_retained" : "kvb_pool_register";
        return rc;
    }
    return 0;
}

void kvbt_request_reverse(kvb_block *blk, uint32_t n)
{
    for (uint32_t a = 0, b = n ? n - 1 : 0; a < b; a++, b--) {
        kvb_block tmp = blk[a];
        blk[a] = blk[b];
        blk[b] = tmp;
    }
}

int kvbt_request_release(kvb_block *blk, uint32_t n)
{
    kvbt_request_reverse(blk, n);
    return kvb_block_release_n(blk, n);
}
