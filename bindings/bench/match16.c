/* match16.c - the C figure next to the bindings' overhead: match + release of a cached
 * 16-block prefix (kvb_pool_match + kvb_block_release_n), ns per block.
 * Pool of 1024 blocks of 16 tokens, LRU; the prefix is tokens 0..255 hashed with
 * kvb_hash_tokens, registered once and released (cached). Every binding's benchmark
 * (bindings/README.md) runs the same loop: warm up, then the best of 5 runs of
 * `iters` iterations. Usage: match16 [iters] */
#define _POSIX_C_SOURCE 199309L
#include <kvblock.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 200000;
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 1024;
    kvb_pool *pool;
    if (kvb_pool_create(&cfg, &pool))
        return 1;
    uint32_t tokens[256];
    for (uint32_t i = 0; i < 256; i++)
        tokens[i] = i;
    kvb_hash h[16];
    kvb_hash_tokens(tokens, 256, 16, 0, h, 16);
    kvb_mutable m[16];
    kvb_complete c[16];
    kvb_block b[16];
    if (kvb_pool_allocate(pool, 16, m, NULL, NULL) || kvb_pool_stage(pool, m, h, 16, c) ||
        kvb_pool_register(pool, c, 16, b))
        return 1;
    kvb_block_release_n(b, 16);
    double best = 1e300;
    for (int run = -1; run < 5; run++) { /* run -1: warm-up */
        double t0 = now_ns();
        for (long i = 0; i < iters; i++) {
            if (kvb_pool_match(pool, h, 16, b) != 16)
                return 1;
            kvb_block_release_n(b, 16);
        }
        double ns = (now_ns() - t0) / ((double)iters * 16);
        if (run >= 0 && ns < best)
            best = ns;
    }
    printf("c       match+release 16 blocks: %6.1f ns per block (best of 5 x %ld)\n", best, iters);
    return kvb_pool_destroy(pool) == 0 ? 0 : 1;
}
