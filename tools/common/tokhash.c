/*
 * tools/common/tokhash.c - token-level content hashes of a block trace (see
 * tokhash.h). One token buffer of the longest request is reused; each request
 * is hashed once from its first token (no prefix reuse between requests: that
 * is what a router does per request, and it keeps the result independent of
 * request order).
 */
#include "tokhash.h"
#include "util.h"

uint64_t kvbt_trace_request_tokens(const kvbt_trace *t, uint64_t r, uint32_t block_size,
                                   uint32_t *buf)
{
    uint64_t n = 0;
    for (uint64_t i = t->off[r]; i < t->off[r + 1]; i++) {
        uint32_t x = (uint32_t)t->ids[i];
        for (uint32_t j = 0; j < block_size; j++)
            buf[n++] = x;
    }
    return n;
}

int kvbt_trace_token_hashes(const kvbt_trace *t, uint32_t block_size, uint64_t seed, kvb_hash *out)
{
    if (t->n_requests == 0)
        return 0;
    uint32_t *tok = kvbt_xmalloc_array((size_t)t->max_request_blocks * block_size + 1, sizeof *tok);
    int rc = 0;
    for (uint64_t r = 0; r < t->n_requests; r++) {
        uint64_t n = kvbt_trace_len(t, r);
        uint64_t nt = kvbt_trace_request_tokens(t, r, block_size, tok);
        rc = kvb_hash_tokens(tok, (size_t)nt, block_size, seed, out + t->off[r], (size_t)n);
        if (rc < 0)
            break;
        rc = 0;
    }
    free(tok);
    return rc;
}
