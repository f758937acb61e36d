/*
 * tools/common/request.h - one request's life on a kvblock pool, as kvb-replay
 * and kvb-fleet serve it (the "prefix replay" of shared/data/README.md):
 *
 *   k = kvb_pool_match(pool, h, n, blk)            prefix hits (the caller's call)
 *   kvbt_request_fill(pool, h, n, k, blk, &fill)   allocate the other n - k,
 *                                                  all or nothing, evicting in
 *                                                  policy order; stage them with
 *                                                  h[k..n); register into blk[k..n)
 *   ... the request runs (the caller decides how long) ...
 *   kvbt_request_release(blk, n)                   last block first, one batch
 *
 * When blocks are held across requests, an allocation can fail with -ENOSPC
 * although the cache would have room without them: kvbt_request_fill then asks
 * the caller to release its oldest held request (make_room) and retries, until
 * the allocation succeeds or nothing is held any more.
 *
 * Errors are returned (negative errno, with the name of the failed call), not
 * reported: each tool words its own message.
 */
#ifndef KVBT_REQUEST_H
#define KVBT_REQUEST_H

#include "kvblock.h"

#include <stdbool.h>
#include <stdint.h>

/* Release the oldest request the caller holds to make room; false when it
 * holds none (then the -ENOSPC stands). */
typedef bool (*kvbt_make_room_fn)(void *ctx);

typedef struct kvbt_request_fill_args {
    kvb_mutable *mut;  /* scratch: room for the longest request */
    kvb_complete *cmp; /* scratch: room for the longest request */
    /* register with these retention priorities (kvb_pool_register_retained); NULL:
     * kvb_pool_register */
    const kvb_retention *retention;
    kvbt_make_room_fn make_room; /* NULL: -ENOSPC is an error like any other */
    void *room_ctx;
    uint64_t early;     /* out, accumulated: requests make_room released */
    const char *failed; /* out: the call that failed, when the result is < 0 */
} kvbt_request_fill_args;

/* Allocate, stage and register blocks k..n of a request whose first k blocks hit
 * (h: its n hashes; blk: its n handles, blk[0..k) from the match). Nothing to do
 * when k == n. 0, or the negative errno of the call named in a->failed (the
 * request's hits stay in blk[0..k): the caller releases them or dies). */
int kvbt_request_fill(kvb_pool *pool, const kvb_hash *h, uint32_t n, uint32_t k, kvb_block *blk,
                      kvbt_request_fill_args *a);

/* Reverse blk[0..n) in place: the release order, last block first, so that
 * deeper blocks enter the cache before their prefixes. */
void kvbt_request_reverse(kvb_block *blk, uint32_t n);

/* Release a request's n handles last block first: kvbt_request_reverse, then one
 * kvb_block_release_n. Its result. */
int kvbt_request_release(kvb_block *blk, uint32_t n);

#endif /* KVBT_REQUEST_H */
