/*
 * tools/kvb-index-bench/c_memory.c - section (c): memory per (block, worker)
 * entry, dup7 and unique, with a counting allocator (tools/kvb-index-bench.c
 * has the manual and the method).
 */
#include "kvb-index-bench/bench.h"

/* ------------------------------------------------------------------------ */
/* (c) memory per entry                                                     */
/* ------------------------------------------------------------------------ */

typedef struct count_alloc {
    atomic_llong live, peak;
} count_alloc;

static void *count_alloc_fn(void *ctx, size_t size)
{
    count_alloc *c = ctx;
    void *p = malloc(size);
    if (p) {
        long long v = atomic_fetch_add(&c->live, (long long)size) + (long long)size;
        long long pk = atomic_load(&c->peak);
        while (v > pk && !atomic_compare_exchange_weak(&c->peak, &pk, v))
            ;
    }
    return p;
}

static void count_free_fn(void *ctx, void *ptr, size_t size)
{
    count_alloc *c = ctx;
    if (ptr)
        atomic_fetch_sub(&c->live, (long long)size);
    free(ptr);
}

static void bench_c_variant(const bench_opts *o, uint32_t dup)
{
    const uint32_t W = 1000;
    uint64_t entries = o->c_entries;
    uint64_t n_seq = (entries / dup + B_LEN - 1) / B_LEN;
    uint64_t x = o->seed * 13 + dup;
    uint64_t *keys = kvbt_xmalloc_array(n_seq * B_LEN, sizeof *keys);
    for (uint64_t i = 0; i < n_seq * B_LEN; i++)
        keys[i] = bench_key(&x);
    count_alloc ca;
    atomic_init(&ca.live, 0);
    atomic_init(&ca.peak, 0);
    kvb_allocator al = {.ctx = &ca, .alloc = count_alloc_fn, .free = count_free_fn};
    kvb_index *idx = bench_index(16, W + 16, &al);
    uint32_t *sid = kvbt_xmalloc_array(W, sizeof *sid);
    for (uint32_t w = 0; w < W; w++)
        sid[w] = bench_stream(idx, w);
    uint64_t c0 = bench_cpu_ns(), t0 = kvbt_now_ns();
    for (uint64_t s = 0; s < n_seq; s++) {
        uint32_t w0 = (uint32_t)(bench_rng(&x) % W);
        for (uint32_t d = 0; d < dup; d++) /* dup consecutive workers: distinct */
            bench_store(idx, sid[(w0 + d * 131) % W], KVB_INDEX_EV_STORED, keys + s * B_LEN, B_LEN);
    }
    uint64_t dt = kvbt_now_ns() - t0, dc = bench_cpu_ns() - c0;
    kvb_index_stats st;
    kvb_index_stats_get(idx, &st);
    if (st.entries != n_seq * B_LEN * dup || st.keys != n_seq * B_LEN)
        kvbt_die(prog, "(c) the index reports %llu entries and %llu keys, expected %llu and %llu",
                 (unsigned long long)st.entries, (unsigned long long)st.keys,
                 (unsigned long long)(n_seq * B_LEN * dup), (unsigned long long)(n_seq * B_LEN));
    long long live = atomic_load(&ca.live);
    char name[64];
    snprintf(name, sizeof name, "kvb_index %s", dup == 1 ? "unique (1 holder)" : "dup7");
    printf("(c) %-30s %10llu entries %9llu keys %6.1f B/entry (stats) %6.1f B/entry (allocator, "
           "peak %.1f)  built in %.2f s (cpu %.2f s)  (%s)\n",
           name, (unsigned long long)st.entries, (unsigned long long)st.keys,
           (double)st.memory_bytes / (double)st.entries, (double)live / (double)st.entries,
           (double)atomic_load(&ca.peak) / (double)st.entries, (double)dt / 1e9, (double)dc / 1e9,
           bench_loadavg());
    kvb_index_destroy(idx);
    if (atomic_load(&ca.live) != 0)
        printf("    note: %lld bytes still counted live after kvb_index_destroy\n",
               (long long)atomic_load(&ca.live));

    /* Baseline: (key, worker) pairs in one u64 map (composite key, count value). */
    bmap m;
    bmap_init(&m, n_seq * B_LEN * dup);
    x = o->seed * 13 + dup;
    for (uint64_t i = 0; i < n_seq * B_LEN; i++)
        (void)bench_key(&x);
    c0 = bench_cpu_ns();
    t0 = kvbt_now_ns();
    for (uint64_t s = 0; s < n_seq; s++) {
        uint32_t w0 = (uint32_t)(bench_rng(&x) % W);
        for (uint32_t d = 0; d < dup; d++) {
            uint64_t w = (w0 + d * 131) % W;
            for (int j = 0; j < B_LEN; j++)
                (*bmap_upsert(&m, keys[s * B_LEN + j] ^ (w * 0xD6E8FEB86659FD93ull)))++;
        }
    }
    dt = kvbt_now_ns() - t0;
    dc = bench_cpu_ns() - c0;
    printf("(c) %-30s %10llu entries %9s      %6.1f B/entry (16 B slots at load %.2f)  built in "
           "%.2f s (cpu %.2f s)\n",
           dup == 1 ? "baseline u64 map, unique" : "baseline u64 map, dup7",
           (unsigned long long)m.n, "", (double)(m.mask + 1) * 16 / (double)m.n,
           (double)m.n / (double)(m.mask + 1), (double)dt / 1e9, (double)dc / 1e9);
    fflush(stdout);
    bmap_free(&m);
    free(sid);
    free(keys);
}

void bench_c(const bench_opts *o)
{
    bench_c_variant(o, 7);
    bench_c_variant(o, 1);
}
