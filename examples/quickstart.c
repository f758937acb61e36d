/* quickstart.c - the README's API tour, compiled and run by `make check`
 * (check-install builds it against an installed kvblock through pkg-config). */
#include <kvblock.h>
#include <stdio.h>

int main(void)
{
    /* A pool of 1024 blocks of 16 tokens, LRU eviction of cached blocks. */
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 1024;
    kvb_pool *pool;
    int rc = kvb_pool_create(&cfg, &pool);
    if (rc) {
        fprintf(stderr, "create: %s\n", kvb_strerror(rc));
        return 1;
    }

    /* Content hashes of a 40-token prompt: 2 full blocks (the partial third has none). */
    uint32_t tokens[40];
    for (uint32_t i = 0; i < 40; i++)
        tokens[i] = 1000 + i;
    kvb_hash h[2];
    int nh = kvb_hash_tokens(tokens, 40, 16, 0, h, 2);

    /* First request: nothing cached. Allocate, fill (the runtime writes KV data into
     * the physical blocks m[i].id), stage with the content hash, register. */
    kvb_block blocks[2];
    int hit = kvb_pool_match(pool, h, (uint32_t)nh, blocks);
    kvb_mutable m[2];
    kvb_complete c[2];
    if (kvb_pool_allocate(pool, 2, m, NULL, NULL) != 0)
        return 1;
    for (int i = 0; i < 2; i++)
        kvb_mutable_stage(&m[i], h[i], &c[i]);
    kvb_pool_register(pool, c, 2, blocks);
    printf("request 1: %d cached blocks, registered blocks %u and %u\n", hit, blocks[0].id,
           blocks[1].id);
    kvb_block_release_n(blocks, 2); /* done: the blocks stay cached (INACTIVE) */

    /* Second request with the same prefix: both blocks come back from the cache. */
    {
        KVB_SCOPED(kvb_block) a = {0};
        KVB_SCOPED(kvb_block) b = {0};
        kvb_block got[2];
        hit = kvb_pool_match(pool, h, 2, got);
        a = got[0];
        b = got[1];
        printf("request 2: %d cached blocks (ids %u, %u), use count %u\n", hit, a.id, b.id,
               kvb_block_use_count(&a));
    } /* released here by the cleanup attribute */

    kvb_stats s;
    kvb_pool_stats(pool, &s);
    printf("inactive=%u reset=%u match_returned=%llu\n", s.inactive, s.reset,
           (unsigned long long)s.match_returned);
    rc = kvb_pool_destroy(pool); /* 0: no handle outstanding */
    return rc == 0 && hit == 2 ? 0 : 1;
}
