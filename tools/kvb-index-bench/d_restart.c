/*
 * tools/kvb-index-bench/d_restart.c - section (d): warm restart, snapshot
 * save and load and the catch-up of the event tail (tools/kvb-index-bench.c
 * has the manual and the method).
 */
#include "kvb-index-bench/bench.h"

/* ------------------------------------------------------------------------ */
/* (d) snapshot and catch-up                                                */
/* ------------------------------------------------------------------------ */

typedef struct d_gen {
    uint32_t W, cap;
    uint64_t x;
    uint64_t **fifo; /* per worker: ring of stored keys, oldest first */
    uint64_t *head, *count;
} d_gen;

/* Generate n events into ev[] (hashes into h[], which must hold n * 64), the workers
 * taking turns in runs of `run` events (one batch each): STORED of k new blocks (k = 1 +
 * a geometric count, mean 7, at most 64) while the worker's cache has room, REMOVED of its oldest
 * blocks (same size law) when it has not. */
static void d_generate(d_gen *g, uint64_t n, uint32_t run, kvb_index_event *ev, uint32_t *stream_of,
                       uint64_t *h, uint64_t *blocks)
{
    uint64_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t w = (uint32_t)(i / run % g->W);
        uint32_t k = 1;
        while (k < 64 && bench_rng(&g->x) % 7 != 0) /* P(stop) = 1/7 per block */
            k++;
        kvb_index_event *e = &ev[i];
        memset(e, 0, sizeof *e);
        e->tier = KVB_TIER_DEVICE;
        e->hashes = h + at;
        stream_of[i] = w;
        bool remove = g->count[w] + k > g->cap;
        if (remove) {
            if (k > g->count[w])
                k = (uint32_t)g->count[w];
            e->type = KVB_INDEX_EV_REMOVED;
            for (uint32_t j = 0; j < k; j++) {
                h[at++] = g->fifo[w][g->head[w]];
                g->head[w] = (g->head[w] + 1) % g->cap;
            }
            g->count[w] -= k;
        } else {
            e->type = KVB_INDEX_EV_STORED;
            for (uint32_t j = 0; j < k; j++) {
                uint64_t key = bench_key(&g->x);
                h[at++] = key;
                g->fifo[w][(g->head[w] + g->count[w]) % g->cap] = key;
                g->count[w]++;
            }
        }
        e->n_hashes = k;
        *blocks += k;
    }
}

static void d_apply(kvb_index *idx, const uint32_t *sid, const kvb_index_event *ev,
                    const uint32_t *stream_of, uint64_t n, uint32_t batch, int64_t *seq)
{
    /* Batches of up to `batch` consecutive events of one worker. */
    uint64_t i = 0;
    while (i < n) {
        uint32_t w = stream_of[i];
        uint64_t j = i + 1;
        while (j < n && j - i < batch && stream_of[j] == w)
            j++;
        int rc = kvb_index_apply(idx, sid[w], ev + i, (uint32_t)(j - i), seq[w]++);
        if (rc < 0)
            bench_fail("kvb_index_apply", rc);
        i = j;
    }
}

void bench_d(const bench_opts *o)
{
    d_gen g;
    memset(&g, 0, sizeof g);
    g.W = o->d_workers;
    g.cap = o->d_cache;
    g.x = o->seed * 17;
    g.fifo = kvbt_xmalloc_array(g.W, sizeof *g.fifo);
    g.head = calloc(g.W, sizeof *g.head);
    g.count = calloc(g.W, sizeof *g.count);
    for (uint32_t w = 0; w < g.W; w++)
        g.fifo[w] = kvbt_xmalloc_array(g.cap, sizeof **g.fifo);
    uint64_t n = o->d_events;
    kvb_index_event *base = kvbt_xmalloc_array(n, sizeof *base),
                    *tail = kvbt_xmalloc_array(n, sizeof *tail);
    uint32_t *base_w = kvbt_xmalloc_array(n, sizeof *base_w),
             *tail_w = kvbt_xmalloc_array(n, sizeof *tail_w);
    uint64_t *hb = kvbt_xmalloc_array(n * 64, sizeof *hb),
             *ht = kvbt_xmalloc_array(n * 64, sizeof *ht);
    uint64_t base_blocks = 0, tail_blocks = 0;
    d_generate(&g, n, o->d_batch, base, base_w, hb, &base_blocks);
    d_generate(&g, n, o->d_batch, tail, tail_w, ht, &tail_blocks);

    kvb_index *idx = bench_index(16, 0, NULL);
    uint32_t *sid = kvbt_xmalloc_array(g.W, sizeof *sid);
    int64_t *seq = calloc(g.W, sizeof *seq);
    for (uint32_t w = 0; w < g.W; w++)
        sid[w] = bench_stream(idx, w);
    uint64_t t0 = kvbt_now_ns();
    d_apply(idx, sid, base, base_w, n, o->d_batch, seq);
    uint64_t build_ns = kvbt_now_ns() - t0;
    kvb_index_stats st0;
    kvb_index_stats_get(idx, &st0);

    char path[512];
    snprintf(path, sizeof path, "%s/kvb-index-bench-%ld.snap", o->snapshot_dir, (long)getpid());
    size_t bytes = 0;
    uint64_t c0 = bench_cpu_ns();
    t0 = kvbt_now_ns();
    int rc = kvb_index_save(idx, path, &bytes);
    uint64_t save_ns = kvbt_now_ns() - t0, save_cpu = bench_cpu_ns() - c0;
    if (rc < 0)
        bench_fail("kvb_index_save", rc);

    /* The reference: the live index catches up too (for the answers check). */
    d_apply(idx, sid, tail, tail_w, n, o->d_batch, seq);

    kvb_index *ld;
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    c0 = bench_cpu_ns();
    t0 = kvbt_now_ns();
    rc = kvb_index_load(path, &cfg, &ld);
    uint64_t load_ns = kvbt_now_ns() - t0, load_cpu = bench_cpu_ns() - c0;
    if (rc < 0)
        bench_fail("kvb_index_load", rc);
    unlink(path);
    uint32_t *sid2 = kvbt_xmalloc_array(g.W, sizeof *sid2);
    int64_t *seq2 = kvbt_xmalloc_array(g.W, sizeof *seq2);
    for (uint32_t w = 0; w < g.W; w++) {
        char name[32];
        kvb_index_stream_info info;
        snprintf(name, sizeof name, "w%u", w);
        if ((rc = kvb_index_stream_find(ld, name, KVB_INDEX_NO_RANK, &sid2[w])) < 0 ||
            (rc = kvb_index_stream_info_get(ld, sid2[w], &info)) < 0)
            bench_fail("(d) stream of the loaded snapshot", rc);
        seq2[w] = info.last_seq + 1; /* resume after the watermark */
    }
    c0 = bench_cpu_ns();
    t0 = kvbt_now_ns();
    d_apply(ld, sid2, tail, tail_w, n, o->d_batch, seq2);
    uint64_t catch_ns = kvbt_now_ns() - t0, catch_cpu = bench_cpu_ns() - c0;

    kvb_index_stats s1, s2;
    kvb_index_stats_get(idx, &s1);
    kvb_index_stats_get(ld, &s2);
    if (s1.entries != s2.entries || s1.keys != s2.keys)
        kvbt_die(prog,
                 "(d) after load + catch-up: %llu entries / %llu keys, the live index "
                 "has %llu / %llu",
                 (unsigned long long)s2.entries, (unsigned long long)s2.keys,
                 (unsigned long long)s1.entries, (unsigned long long)s1.keys);
    /* spot-check answers: the last stored keys of each worker */
    kvb_index_result r1[8], r2[8];
    for (uint32_t w = 0; w < g.W; w++) {
        uint64_t key = g.fifo[w][(g.head[w] + g.count[w] - 1) % g.cap];
        int a = kvb_index_match(idx, &key, 1, r1, 8), b = kvb_index_match(ld, &key, 1, r2, 8);
        if (a != b || a < 1 || strcmp(r1[0].worker, r2[0].worker) != 0)
            kvbt_die(prog, "(d) the loaded index answers differently from the live one");
    }
    printf("(d) %-30s %9llu entries  snapshot %7.1f MB  save %7.1f ms (cpu %.1f)  load %7.1f ms "
           "(cpu %.1f)  (%s)\n",
           "kvb_index snapshot", (unsigned long long)st0.entries, (double)bytes / 1e6,
           (double)save_ns / 1e6, (double)save_cpu / 1e6, (double)load_ns / 1e6,
           (double)load_cpu / 1e6, bench_loadavg());
    printf("(d) %-30s %9llu events  %9llu blocks  %8.1f ms (cpu %.1f)  %6.2f M events/s  "
           "load + catch-up %7.1f ms (cpu %.1f)\n",
           "kvb_index catch-up", (unsigned long long)n, (unsigned long long)tail_blocks,
           (double)catch_ns / 1e6, (double)catch_cpu / 1e6, (double)n * 1e3 / (double)catch_ns,
           (double)(load_ns + catch_ns) / 1e6, (double)(load_cpu + catch_cpu) / 1e6);

    /* Baseline: the same tail on a u64 map of (key, worker) pairs, after the base. */
    bmap m;
    bmap_init(&m, (uint64_t)g.W * g.cap);
    for (int half = 0; half < 2; half++) {
        const kvb_index_event *ev = half ? tail : base;
        const uint32_t *ws = half ? tail_w : base_w;
        c0 = bench_cpu_ns();
        t0 = kvbt_now_ns();
        for (uint64_t i = 0; i < n; i++) {
            uint64_t salt = (uint64_t)(ws[i] + 1) * 0xD6E8FEB86659FD93ull;
            for (uint32_t j = 0; j < ev[i].n_hashes; j++) {
                uint64_t key = ev[i].hashes[j] ^ salt;
                if (ev[i].type == KVB_INDEX_EV_STORED)
                    (*bmap_upsert(&m, key))++;
                else
                    bmap_erase(&m, key);
            }
        }
        if (half) {
            catch_ns = kvbt_now_ns() - t0;
            catch_cpu = bench_cpu_ns() - c0;
        }
    }
    printf("(d) %-30s %9llu events  %9llu blocks  %8.1f ms (cpu %.1f)  %6.2f M events/s  (same "
           "tail)\n",
           "baseline u64 map catch-up", (unsigned long long)n, (unsigned long long)tail_blocks,
           (double)catch_ns / 1e6, (double)catch_cpu / 1e6, (double)n * 1e3 / (double)catch_ns);
    printf("    %u workers, caches of %u blocks, events of 7 blocks on average (geometric, at "
           "most 64) in batches of %u; the %llu base events (%llu blocks) applied in %.2f s\n",
           g.W, g.cap, o->d_batch, (unsigned long long)n, (unsigned long long)base_blocks,
           (double)build_ns / 1e9);
    fflush(stdout);
    bmap_free(&m);
    kvb_index_destroy(idx);
    kvb_index_destroy(ld);
    for (uint32_t w = 0; w < g.W; w++)
        free(g.fifo[w]);
    free(g.fifo);
    free(g.head);
    free(g.count);
    free(base);
    free(tail);
    free(base_w);
    free(tail_w);
    free(hb);
    free(ht);
    free(sid);
    free(sid2);
    free(seq);
    free(seq2);
}
