/*
 * tools/kvb-index-bench/b_match.c - section (b): match latency with 1,000
 * workers and 64-block requests, alone, hot and with a concurrent writer
 * (tools/kvb-index-bench.c has the manual and the method).
 */
#include "kvb-index-bench/bench.h"

/* ------------------------------------------------------------------------ */
/* (b) match latency                                                        */
/* ------------------------------------------------------------------------ */

typedef struct b_fleet {
    uint32_t W, dup, n_seq;
    uint64_t *keys;   /* n_seq x B_LEN */
    uint32_t *holder; /* n_seq x dup */
    uint32_t *sid;    /* stream ids */
} b_fleet;

typedef struct b_writer {
    kvb_index *idx;
    const b_fleet *f;
    atomic_bool stop;
    uint64_t seed, events, blocks, ns;
} b_writer;

/* Extra copies of random queried sequences on random workers, then their removal
 * 256 events later: the holder lists of queried keys change under the readers. */
static void *b_writer_main(void *arg)
{
    b_writer *wr = arg;
    const b_fleet *f = wr->f;
    enum { RING = 256 };
    uint32_t ring_seq[RING], ring_w[RING];
    uint64_t x = wr->seed, i = 0;
    uint64_t t0 = kvbt_now_ns();
    while (!atomic_load_explicit(&wr->stop, memory_order_relaxed)) {
        uint32_t slot = (uint32_t)(i % RING);
        if (i >= RING) {
            bench_store(wr->idx, f->sid[ring_w[slot]], KVB_INDEX_EV_REMOVED,
                        f->keys + (uint64_t)ring_seq[slot] * B_LEN, B_LEN);
            wr->events++;
            wr->blocks += B_LEN;
        }
        ring_seq[slot] = (uint32_t)(bench_rng(&x) % f->n_seq);
        ring_w[slot] = (uint32_t)(bench_rng(&x) % f->W);
        bench_store(wr->idx, f->sid[ring_w[slot]], KVB_INDEX_EV_STORED,
                    f->keys + (uint64_t)ring_seq[slot] * B_LEN, B_LEN);
        wr->events++;
        wr->blocks += B_LEN;
        i++;
    }
    wr->ns = kvbt_now_ns() - t0;
    return NULL;
}

static void bench_b_variant(const bench_opts *o, bool hot, bool writer)
{
    b_fleet f;
    uint64_t x = o->seed * 7 + (hot ? 1 : 0);
    f.W = o->b_workers;
    f.dup = o->b_dup < f.W ? o->b_dup : f.W;
    f.n_seq = o->b_sequences;
    f.keys = kvbt_xmalloc_array((size_t)f.n_seq * B_LEN, sizeof *f.keys);
    f.holder = kvbt_xmalloc_array((size_t)f.n_seq * f.dup, sizeof *f.holder);
    uint64_t hot_keys[B_HOT];
    for (int j = 0; j < B_HOT; j++)
        hot_keys[j] = bench_key(&x);
    for (uint32_t s = 0; s < f.n_seq; s++) {
        for (int j = 0; j < B_LEN; j++)
            f.keys[(uint64_t)s * B_LEN + j] = hot && j < B_HOT ? hot_keys[j] : bench_key(&x);
        for (uint32_t d = 0; d < f.dup; d++) {
            uint32_t w;
            bool again;
            do { /* distinct holders */
                w = (uint32_t)(bench_rng(&x) % f.W);
                again = false;
                for (uint32_t e = 0; e < d; e++)
                    again |= f.holder[(uint64_t)s * f.dup + e] == w;
            } while (again);
            f.holder[(uint64_t)s * f.dup + d] = w;
        }
    }
    kvb_index *idx = bench_index(16, f.W + 16, NULL);
    f.sid = kvbt_xmalloc_array(f.W, sizeof *f.sid);
    for (uint32_t w = 0; w < f.W; w++)
        f.sid[w] = bench_stream(idx, w);
    for (uint32_t s = 0; s < f.n_seq; s++)
        for (uint32_t d = 0; d < f.dup; d++)
            bench_store(idx, f.sid[f.holder[(uint64_t)s * f.dup + d]], KVB_INDEX_EV_STORED,
                        f.keys + (uint64_t)s * B_LEN, B_LEN);
    if (hot)
        for (uint32_t w = 0; w < f.W; w++)
            bench_store(idx, f.sid[w], KVB_INDEX_EV_STORED, hot_keys, B_HOT);

    uint32_t k = o->b_k;
    kvb_index_result *res = kvbt_xmalloc_array(k, sizeof *res);
    uint64_t nq = o->b_queries;
    uint32_t *lat = kvbt_xmalloc_array(nq, sizeof *lat);
    uint32_t *qs = kvbt_xmalloc_array(nq, sizeof *qs);
    for (uint64_t q = 0; q < nq; q++)
        qs[q] = (uint32_t)(bench_rng(&x) % f.n_seq);

    /* warm-up, and a check of the answers (no writer yet) */
    uint32_t expect_n = hot ? f.W : f.dup;
    for (uint64_t q = 0; q < nq / 10 + 1; q++) {
        int rc = kvb_index_match(idx, f.keys + (uint64_t)qs[q] * B_LEN, B_LEN, res, k);
        if (rc < 0)
            bench_fail("kvb_index_match", rc);
        if ((uint32_t)rc != expect_n || res[0].device != B_LEN ||
            (k >= f.dup && res[f.dup - 1].device != B_LEN))
            kvbt_die(prog,
                     "(b) a match returned %d workers, best prefix %u (expected %u workers, "
                     "%u of them with %d blocks)",
                     rc, rc > 0 ? res[0].device : 0, expect_n, f.dup, B_LEN);
    }

    b_writer wr;
    pthread_t th;
    memset(&wr, 0, sizeof wr);
    wr.idx = idx;
    wr.f = &f;
    wr.seed = o->seed + 99;
    atomic_init(&wr.stop, false);
    if (writer && pthread_create(&th, NULL, b_writer_main, &wr) != 0)
        kvbt_die(prog, "pthread_create failed");
    uint64_t t0 = kvbt_now_ns();
    for (uint64_t q = 0; q < nq; q++) {
        uint64_t a = kvbt_now_ns();
        int rc = kvb_index_match(idx, f.keys + (uint64_t)qs[q] * B_LEN, B_LEN, res, k);
        uint64_t d = kvbt_now_ns() - a;
        if (rc < (int)f.dup)
            kvbt_die(prog, "(b) a match returned %d workers (fewer than %u)", rc, f.dup);
        lat[q] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    }
    uint64_t total = kvbt_now_ns() - t0;
    if (writer) {
        atomic_store(&wr.stop, true);
        pthread_join(th, NULL);
    }
    qsort(lat, nq, sizeof *lat, bench_cmp_u32);
    char name[64];
    snprintf(name, sizeof name, "kvb_index_match%s%s", hot ? " hot" : "", writer ? " +writer" : "");
    printf("(b) %-30s p50 %7u ns  p99 %7u ns  p999 %7u ns  %8.0f matches/s  (%s)\n", name,
           bench_pct(lat, nq, 500), bench_pct(lat, nq, 990), bench_pct(lat, nq, 999),
           (double)nq * 1e9 / (double)total, bench_loadavg());
    if (writer)
        printf("    writer: %llu events of %d blocks, %.2f M block ops/s during the run\n",
               (unsigned long long)wr.events, B_LEN,
               wr.ns ? (double)wr.blocks * 1e3 / (double)wr.ns : 0.0);

    /* Baseline: key -> index of its holder list (dup holders, + all W for hot keys). */
    if (!writer) {
        bmap m;
        bmap_init(&m, (uint64_t)f.n_seq * B_LEN);
        uint32_t *hl = kvbt_xmalloc_array((size_t)f.n_seq * B_LEN * f.dup + f.W + 1, sizeof *hl);
        uint32_t *hn = kvbt_xmalloc_array((size_t)f.n_seq * B_LEN + B_HOT + 1, sizeof *hn);
        uint64_t nkeys = 0;
        uint32_t *all = kvbt_xmalloc_array(f.W, sizeof *all);
        for (uint32_t w = 0; w < f.W; w++)
            all[w] = w;
        for (uint32_t s = 0; s < f.n_seq; s++)
            for (int j = 0; j < B_LEN; j++) {
                uint64_t key = f.keys[(uint64_t)s * B_LEN + j];
                uint64_t *v = bmap_upsert(&m, key);
                if (*v == 0) {
                    *v = ++nkeys;
                    hn[nkeys] = 0;
                }
                if (!(hot && j < B_HOT)) {
                    memcpy(hl + (*v - 1) * f.dup, f.holder + (uint64_t)s * f.dup,
                           f.dup * sizeof *hl);
                    hn[*v] = f.dup;
                }
            }
        uint16_t *len = calloc(f.W, sizeof *len);
        uint32_t *touched = kvbt_xmalloc_array(f.W, sizeof *touched);
        uint64_t bsum = 0;
        for (uint64_t q = 0; q < nq; q++) {
            const uint64_t *h = f.keys + (uint64_t)qs[q] * B_LEN;
            uint64_t a = kvbt_now_ns();
            uint32_t nt = 0, alive = 1;
            for (int j = 0; j < B_LEN && alive; j++) {
                uint64_t *v = bmap_find(&m, h[j]);
                if (!v)
                    break;
                bool hk = hot && j < B_HOT;
                const uint32_t *ws = hk ? all : hl + (*v - 1) * f.dup;
                uint32_t nw = hk ? f.W : hn[*v];
                alive = 0;
                for (uint32_t e = 0; e < nw; e++) {
                    uint32_t w = ws[e];
                    if (len[w] == j) {
                        if (j == 0)
                            touched[nt++] = w;
                        len[w] = (uint16_t)(j + 1);
                        alive = 1;
                    }
                }
            }
            uint32_t best = 0;
            for (uint32_t e = 0; e < nt; e++) {
                best = len[touched[e]] > best ? len[touched[e]] : best;
                len[touched[e]] = 0;
            }
            uint64_t d = kvbt_now_ns() - a;
            bsum += best;
            lat[q] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        }
        qsort(lat, nq, sizeof *lat, bench_cmp_u32);
        snprintf(name, sizeof name, "baseline u64 map%s", hot ? " hot" : "");
        printf("(b) %-30s p50 %7u ns  p99 %7u ns  p999 %7u ns  (same lookups)\n", name,
               bench_pct(lat, nq, 500), bench_pct(lat, nq, 990), bench_pct(lat, nq, 999));
        if (bsum != nq * B_LEN)
            kvbt_die(prog, "(b) baseline found %llu blocks, expected %llu",
                     (unsigned long long)bsum, (unsigned long long)(nq * B_LEN));
        free(len);
        free(touched);
        free(all);
        free(hl);
        free(hn);
        bmap_free(&m);
    }
    fflush(stdout);
    kvb_index_destroy(idx);
    free(res);
    free(lat);
    free(qs);
    free(f.keys);
    free(f.holder);
    free(f.sid);
}

void bench_b(const bench_opts *o)
{
    printf("    %u workers, %u sequences of %d blocks, each held by %u workers; %llu timed "
           "matches per line (k = %u)\n",
           o->b_workers, o->b_sequences, B_LEN, o->b_dup, (unsigned long long)o->b_queries, o->b_k);
    bench_b_variant(o, false, false);
    bench_b_variant(o, false, true);
    bench_b_variant(o, true, false);
    bench_b_variant(o, true, true);
}
