/*
 * tools/kvb-bench/threads.c - the threads section: T threads on one pool, each
 * looping {lifecycle of n fresh blocks; prefix match of n held "hot" blocks +
 * release}; a fixed total of work is split between the threads; aggregate ns
 * per block (wall), the CPU time the threads got (on a shared machine: how many
 * cores the run really had), and the pool lock's contention counters
 * (kvb_stats.lock_*).
 */
#include "kvb-bench/bench.h"

#include <pthread.h>

typedef struct thr {
    pthread_t tid;
    kvb_pool *pool;
    const kvb_hash *hot;
    uint32_t nhot, n;
    uint64_t iters;
    kvb_hash *fresh; /* iters * n */
    uint64_t seed;
    pthread_barrier_t *bar;
    kvb_mutable *mut;
    kvb_complete *cmp;
    kvb_block *blk, *out;
    uint64_t t_start, t_end; /* CLOCK_MONOTONIC after the barrier / at the end */
    uint64_t cpu_ns;         /* CLOCK_THREAD_CPUTIME_ID spent in the loop */
    const char *failed;
    int rc;
} thr;

static void *thr_main(void *arg)
{
    thr *t = arg;
    rng r = {t->seed};
    const uint32_t n = t->n;
    int rc;
    pthread_barrier_wait(t->bar);
    uint64_t c0 = thread_cpu_ns();
    t->t_start = kvbt_now_ns();
    for (uint64_t it = 0; it < t->iters; it++) {
        const kvb_hash *h = t->fresh + it * n;
        rc = kvb_pool_allocate(t->pool, n, t->mut, NULL, NULL);
        if (rc != 0) {
            t->failed = "kvb_pool_allocate", t->rc = rc;
            break;
        }
        rc = n == 1 ? kvb_mutable_stage(t->mut, h[0], t->cmp)
                    : kvb_pool_stage(t->pool, t->mut, h, n, t->cmp);
        if (rc != 0) {
            t->failed = "stage", t->rc = rc;
            break;
        }
        rc = kvb_pool_register(t->pool, t->cmp, n, t->blk);
        if (rc == 0)
            rc = n == 1 ? kvb_block_release(t->blk) : kvb_block_release_n(t->blk, n);
        if (rc != 0) {
            t->failed = "register/release", t->rc = rc;
            break;
        }
        uint32_t pos = rng_below(&r, t->nhot / n) * n;
        rc = kvb_pool_match(t->pool, t->hot + pos, n, t->out);
        if (rc != (int)n) {
            t->failed = "kvb_pool_match (hot)", t->rc = rc;
            break;
        }
        rc = n == 1 ? kvb_block_release(t->out) : kvb_block_release_n(t->out, n);
        if (rc != 0) {
            t->failed = "kvb_block_release_n (hot)", t->rc = rc;
            break;
        }
    }
    t->t_end = kvbt_now_ns();
    t->cpu_ns = thread_cpu_ns() - c0;
    return NULL;
}

static void threads_header(const opts *o)
{
    if (o->csv) {
        printf("section,policy,blocks,batch,threads,reps,blocks_per_rep,min_ns,median_ns,max_ns,"
               "mblocks_per_s,scaling,cpu_ns_per_block,cores_used,lock_acq_per_block,lock_"
               "contended_pct,lock_wait_ns_per_block,"
               "wait_ns_per_contended\n");
        return;
    }
    printf("\nthreads: T threads on one pool, each looping {lifecycle of n fresh blocks; prefix "
           "match\nof n held hot blocks + release}; aggregate ns per block (wall / all blocks), "
           "%u repetitions;\ncpu/blk = thread CPU time per block (all threads, median); cores = "
           "cpu/blk / median, the\nCPUs the run actually got (below min(T, CPUs): other load "
           "took the rest, scaling is then\nnot meaningful); lock: acquisitions per block, "
           "contended share, wait ns per block and per\ncontended acquisition\n",
           o->quick ? 3u : 5u);
    printf("%-9s %8s %5s %3s %7s %7s %7s %7s %7s %7s %5s | %7s %9s %8s %9s\n", "policy", "blocks",
           "batch", "thr", "min", "median", "max", "Mblk/s", "scaling", "cpu/blk", "cores",
           "acq/blk", "contended", "wait/blk", "wait/cont");
}

static void threads_run(const opts *o, const policy_info *pi, uint32_t B, uint32_t n)
{
    kvb_pool_config cfg;
    kvb_pool *pool;
    kvb_pool_config_init(&cfg);
    cfg.block_count = B;
    cfg.evict = pi->policy;
    cfg.name = "bench-threads";
    int rc = kvb_pool_create(&cfg, &pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_create (%s, %u blocks): %s", pi->name, B, kvb_strerror(rc));

    uint32_t nhot = B / 4 < 65536 ? B / 4 : 65536;
    nhot = nhot / n * n;
    if (nhot < n)
        kvbt_die(prog, "threads: pool of %u blocks too small for batch %u", B, n);
    kvb_hash *hot = kvbt_xmalloc_array(nhot, sizeof *hot);
    kvb_block *held = kvbt_xmalloc_array(nhot, sizeof *held);
    uint64_t fresh = 1ull << 40;
    for (uint32_t i = 0; i < nhot; i++)
        hot[i] = bench_hash(fresh++);

    /* hot set held by this thread; then warm the cache: lifecycle until no free block */
    lib_fx f = {.pool = pool, .B = B};
    snprintf(f.ctx, sizeof f.ctx, "threads, policy %s, %u blocks", pi->name, B);
    f.mut = kvbt_xmalloc_array(256, sizeof *f.mut);
    f.cmp = kvbt_xmalloc_array(256, sizeof *f.cmp);
    f.out = kvbt_xmalloc_array(256, sizeof *f.out);
    for (uint32_t i = 0; i < nhot; i += 256) {
        uint32_t c = nhot - i < 256 ? nhot - i : 256;
        lib_admit(&f, hot + i, c, held + i);
    }
    kvb_stats st0, st1;
    kvb_hash tmp[256];
    for (;;) {
        kvb_pool_stats(pool, &st0);
        if (st0.reset == 0)
            break;
        uint32_t c = st0.reset < 256 ? st0.reset : 256;
        for (uint32_t j = 0; j < c; j++)
            tmp[j] = bench_hash(fresh++);
        lib_admit(&f, tmp, c, f.out);
        lib_release(f.out, c, f.ctx);
    }

    unsigned reps = o->quick ? 3 : 5, warm = 1;
    double one_thread_ns = 0; /* median ns per block with 1 thread: the scaling reference */
    for (unsigned ti = 0; ti < o->n_threads; ti++) {
        uint32_t T = o->threads[ti];
        uint64_t iters = o->thread_work / (2ull * n * T);
        if (iters == 0)
            iters = 1;
        uint64_t blocks_per_rep = iters * 2ull * n * T;
        thr *ts = kvbt_xmalloc_array(T, sizeof *ts);
        for (uint32_t i = 0; i < T; i++) {
            ts[i] = (thr){.pool = pool, .hot = hot, .nhot = nhot, .n = n, .iters = iters};
            ts[i].fresh = kvbt_xmalloc_array(iters * n, sizeof(kvb_hash));
            ts[i].mut = kvbt_xmalloc_array(n, sizeof *ts[i].mut);
            ts[i].cmp = kvbt_xmalloc_array(n, sizeof *ts[i].cmp);
            ts[i].blk = kvbt_xmalloc_array(n, sizeof *ts[i].blk);
            ts[i].out = kvbt_xmalloc_array(n, sizeof *ts[i].out);
        }
        double *ns = kvbt_xmalloc_array(reps, sizeof(double));
        double *cpu = kvbt_xmalloc_array(reps, sizeof(double));
        unsigned nm = 0;
        for (unsigned r = 0; r < warm + reps; r++) {
            pthread_barrier_t bar;
            pthread_barrier_init(&bar, NULL, T + 1);
            for (uint32_t i = 0; i < T; i++) {
                for (uint64_t j = 0; j < iters * n; j++)
                    ts[i].fresh[j] = bench_hash(fresh++);
                ts[i].seed = splitmix64(bench_seed ^ ((uint64_t)r << 20) ^ i);
                ts[i].bar = &bar;
                ts[i].failed = NULL;
                if (pthread_create(&ts[i].tid, NULL, thr_main, &ts[i]) != 0)
                    kvbt_die(prog, "pthread_create failed");
            }
            if (r == warm)
                kvb_pool_stats(pool, &st0);
            pthread_barrier_wait(&bar);
            /* wall = first start to last end, taken by the workers themselves: the main
             * thread may not run again before they finish (2 vCPUs) */
            uint64_t t0 = UINT64_MAX, t1 = 0;
            for (uint32_t i = 0; i < T; i++) {
                pthread_join(ts[i].tid, NULL);
                if (ts[i].t_start < t0)
                    t0 = ts[i].t_start;
                if (ts[i].t_end > t1)
                    t1 = ts[i].t_end;
            }
            pthread_barrier_destroy(&bar);
            for (uint32_t i = 0; i < T; i++)
                if (ts[i].failed)
                    lib_fail(ts[i].failed, ts[i].rc, f.ctx);
            if (r >= warm) {
                uint64_t c = 0;
                for (uint32_t i = 0; i < T; i++)
                    c += ts[i].cpu_ns;
                cpu[nm] = (double)c / (double)blocks_per_rep;
                ns[nm++] = (double)(t1 - t0) / (double)blocks_per_rep;
            }
        }
        kvb_pool_stats(pool, &st1);
        summary s = bench_summarize(ns, nm);
        double cpu_med = bench_summarize(cpu, nm).med;
        if (T == 1)
            one_thread_ns = s.med;
        double scaling = one_thread_ns > 0 ? one_thread_ns / s.med : 0.0;
        char scal[16] = "-";
        if (scaling > 0)
            snprintf(scal, sizeof scal, "%.2f", scaling);
        double total_blocks = (double)blocks_per_rep * nm;
        double acq = (double)(st1.lock_acquisitions - st0.lock_acquisitions);
        double cont = (double)(st1.lock_contended - st0.lock_contended);
        double wait = (double)(st1.lock_wait_ns - st0.lock_wait_ns);
        if (o->csv)
            printf("threads,%s,%u,%u,%u,%u,%llu,%.2f,%.2f,%.2f,%.3f,%.3f,%.2f,%.2f,%.4f,%.2f,%.2f,"
                   "%.1f\n",
                   pi->name, B, n, T, nm, (unsigned long long)blocks_per_rep, s.min, s.med, s.max,
                   1e3 / s.med, scaling, cpu_med, cpu_med / s.med, acq / total_blocks,
                   acq ? 100.0 * cont / acq : 0.0, wait / total_blocks, cont ? wait / cont : 0.0);
        else
            printf("%-9s %8u %5u %3u %7.1f %7.1f %7.1f %7.2f %7s %7.1f %5.2f | %7.3f %8.2f%% %8.1f "
                   "%9.0f\n",
                   pi->name, B, n, T, s.min, s.med, s.max, 1e3 / s.med, scal, cpu_med,
                   cpu_med / s.med, acq / total_blocks, acq ? 100.0 * cont / acq : 0.0,
                   wait / total_blocks, cont ? wait / cont : 0.0);
        fflush(stdout);
        record_thread(
            &(thread_result){.policy = pi->name, .blocks = B, .batch = n, .threads = T, .ns = s});
        for (uint32_t i = 0; i < T; i++) {
            free(ts[i].fresh);
            free(ts[i].mut);
            free(ts[i].cmp);
            free(ts[i].blk);
            free(ts[i].out);
        }
        free(ts);
        free(ns);
        free(cpu);
    }

    lib_release(held, nhot, f.ctx);
    rc = kvb_pool_check(pool);
    if (rc != 0)
        kvbt_die(prog, "INVARIANT VIOLATION: kvb_pool_check() = %d after the thread run (%s)", rc,
                 f.ctx);
    rc = kvb_pool_destroy(pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s (%s)", kvb_strerror(rc), f.ctx);
    free(hot);
    free(held);
    free(f.mut);
    free(f.cmp);
    free(f.out);
}

void threads_section(const opts *o)
{
    threads_header(o);
    uint32_t batches[MAX_LIST];
    unsigned nb;
    if (o->batch_given) {
        nb = o->n_batch;
        memcpy(batches, o->batch, sizeof batches);
    } else {
        batches[0] = 16, nb = 1;
    }
    for (unsigned bi = 0; bi < o->n_blocks; bi++)
        for (unsigned p = 0; p < n_policies; p++)
            if (o->policy_sel[p])
                for (unsigned b = 0; b < nb; b++)
                    threads_run(o, &policies[p], o->blocks[bi], batches[b]);
}
