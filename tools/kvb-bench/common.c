/*
 * tools/kvb-bench/common.c - small helpers every part of kvb-bench uses: the
 * content hashes of the benchmarks, min / median / max summaries, the timed
 * regions' state (clock or callgrind) and the operations' names.
 */
#include "kvb-bench/bench.h"

#include <time.h>

/* Content hash number i: lineage hashes in chains of BENCH_CHAIN positions. */
kvb_hash bench_hash(uint64_t i)
{
    uint32_t pos = (uint32_t)(i % BENCH_CHAIN);
    uint64_t cur = splitmix64(i ^ bench_seed);
    uint64_t par = pos ? splitmix64((i - 1) ^ bench_seed) : 0;
    kvb_hash h;
    if (kvb_hash_make(cur, par, pos > 0, pos, &h) != 0)
        kvbt_die(prog, "kvb_hash_make failed");
    return h;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

summary bench_summarize(double *v, unsigned n)
{
    summary s = {0, 0, 0};
    if (n == 0)
        return s;
    qsort(v, n, sizeof *v, cmp_double);
    s.min = v[0];
    s.max = v[n - 1];
    s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return s;
}

void lib_fail(const char *call, int rc, const char *ctx)
{
    kvbt_die(prog, "%s failed (%s): %s", call, ctx, rc < 0 ? kvb_strerror(rc) : "short result");
}

enum region_mode region_mode = REGION_CLOCK;
uint64_t region_t0;
bool region_cpu_clock;

uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *const op_names[OP_COUNT] = {
    [OP_LIFECYCLE] = "lifecycle",
    [OP_MATCH_ACTIVE] = "match_active",
    [OP_MATCH_CACHED] = "match_cached",
    [OP_SCATTERED] = "scattered",
    [OP_UPGRADE_LIVE] = "upgrade_live",
    [OP_UPGRADE_CACHED] = "upgrade_cached",
    [OP_CLONE] = "clone",
    [OP_EVICT_ALLOC] = "evict_alloc",
    [OP_ACQUIRE] = "acquire",
};
