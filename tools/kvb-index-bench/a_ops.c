/*
 * tools/kvb-index-bench/a_ops.c - section (a): block ops/s on one core, a
 * recorded fleet replayed into the index next to a u64-map baseline
 * (tools/kvb-index-bench.c has the manual and the method).
 */
#include "kvb-index-bench/bench.h"

/* ------------------------------------------------------------------------ */
/* (a) block ops/s on one core                                              */
/* ------------------------------------------------------------------------ */

typedef struct a_op {
    uint32_t kind; /* 0 batch, 1 match */
    uint32_t idx;  /* batch index or request index */
} a_op;

void bench_a(const bench_opts *o)
{
    char err[512];
    kvbt_synth_params sp;
    kvbt_trace t;
    kvbt_synth_defaults(&sp);
    sp.requests = o->a_requests;
    sp.seed = o->seed;
    if (kvbt_synth_generate(&sp, &t, err, sizeof err) < 0)
        kvbt_die(prog, "%s", err);
    const uint32_t W = o->a_workers, C = o->a_capacity;
    kvb_hash *lin = kvbt_xmalloc_array(t.n_refs + 1, sizeof *lin);
    uint64_t *rh = kvbt_xmalloc_array(t.n_refs + 1, sizeof *rh);
    int rc = kvbt_trace_token_hashes(&t, 16, KVB_HASH_DYNAMO_SEED, lin);
    if (rc < 0)
        bench_fail("hashing", rc);
    for (uint64_t i = 0; i < t.n_refs; i++)
        rh[i] = kvb_hash_current(lin[i]);

    /* Record: W pools, round robin, window 0 (release at once). */
    evlog log;
    memset(&log, 0, sizeof log);
    rec_sink *sinks = kvbt_xmalloc_array(W, sizeof *sinks);
    kvb_event_config *ecs = kvbt_xmalloc_array(W, sizeof *ecs);
    kvb_pool **pools = kvbt_xmalloc_array(W, sizeof *pools);
    for (uint32_t w = 0; w < W; w++) {
        sinks[w] = (rec_sink){.log = &log, .stream = w};
        kvb_event_config_init(&ecs[w]);
        ecs[w].sink = rec_sink_fn;
        ecs[w].user = &sinks[w];
        kvb_pool_config pc;
        kvb_pool_config_init(&pc);
        pc.block_count = C;
        pc.events = &ecs[w];
        rc = kvb_pool_create(&pc, &pools[w]);
        if (rc < 0)
            bench_fail("kvb_pool_create", rc);
    }
    a_op *ops = kvbt_xmalloc_array(t.n_requests * 4 + 16, sizeof *ops);
    size_t n_ops = 0, cap_ops = t.n_requests * 4 + 16;
    size_t maxn = t.max_request_blocks + 1;
    kvb_block *blk = kvbt_xmalloc_array(maxn, sizeof *blk);
    kvb_mutable *mut = kvbt_xmalloc_array(maxn, sizeof *mut);
    kvb_complete *cmp = kvbt_xmalloc_array(maxn, sizeof *cmp);
    for (uint64_t r = 0; r < t.n_requests; r++) {
        uint32_t n = (uint32_t)kvbt_trace_len(&t, r), w = (uint32_t)(r % W);
        const kvb_hash *h = lin + t.off[r];
        size_t b0 = log.n_b;
        if (n_ops + 1 >= cap_ops) {
            cap_ops *= 2;
            ops = kvbt_xrealloc(ops, cap_ops * sizeof *ops);
        }
        ops[n_ops++] = (a_op){1, (uint32_t)r};
        rc = kvb_pool_match(pools[w], h, n, blk);
        if (rc < 0)
            bench_fail("kvb_pool_match", rc);
        uint32_t k = (uint32_t)rc;
        if (k < n) {
            if ((rc = kvb_pool_allocate(pools[w], n - k, mut, NULL, NULL)) < 0 ||
                (rc = kvb_pool_stage(pools[w], mut, h + k, n - k, cmp)) < 0 ||
                (rc = kvb_pool_register(pools[w], cmp, n - k, blk + k)) < 0)
                bench_fail("pool", rc);
        }
        for (uint32_t a = 0, z = n ? n - 1 : 0; a < z; a++, z--) {
            kvb_block tmp = blk[a];
            blk[a] = blk[z];
            blk[z] = tmp;
        }
        kvb_block_release_n(blk, n);
        for (size_t b = b0; b < log.n_b; b++) {
            if (n_ops + 1 >= cap_ops) {
                cap_ops *= 2;
                ops = kvbt_xrealloc(ops, cap_ops * sizeof *ops);
            }
            ops[n_ops++] = (a_op){0, (uint32_t)b};
        }
    }
    for (uint32_t w = 0; w < W; w++)
        kvb_pool_destroy(pools[w]); /* CLEARED batches are recorded but not replayed */
    evlog_finish(&log);

    /* Replay into the index, best of reps. */
    uint64_t best_ns = UINT64_MAX, best_cpu = UINT64_MAX, block_ops = 0, matched = 0, events = 0,
             matches = 0;
    uint64_t hits_idx = 0;
    kvb_index_result res[16];
    for (uint32_t rep = 0; rep < o->a_reps; rep++) {
        kvb_index *idx = bench_index(16, 0, NULL);
        uint32_t *sid = kvbt_xmalloc_array(W, sizeof *sid);
        for (uint32_t w = 0; w < W; w++)
            sid[w] = bench_stream(idx, w);
        uint64_t hsum = 0;
        uint64_t c0 = bench_cpu_ns(), t0 = kvbt_now_ns();
        for (size_t i = 0; i < n_ops; i++) {
            if (ops[i].kind == 0) {
                const rec_batch *b = &log.b[ops[i].idx];
                rc = kvb_index_apply(idx, sid[b->stream], log.ix + b->first, b->n, -1);
                if (rc < 0)
                    bench_fail("kvb_index_apply", rc);
            } else {
                uint64_t r = ops[i].idx;
                rc = kvb_index_match(idx, rh + t.off[r], (uint32_t)kvbt_trace_len(&t, r), res, 16);
                if (rc < 0)
                    bench_fail("kvb_index_match", rc);
                if (rc > 0)
                    hsum += res[0].device;
            }
        }
        uint64_t dt = kvbt_now_ns() - t0, dc = bench_cpu_ns() - c0;
        kvb_index_stats st;
        kvb_index_stats_get(idx, &st);
        if (dt < best_ns)
            best_ns = dt;
        if (dc < best_cpu)
            best_cpu = dc;
        block_ops = st.block_ops;
        matched = st.matched_blocks;
        events = st.events;
        matches = st.matches;
        if (rep > 0 && hsum != hits_idx)
            kvbt_die(prog, "(a) two replays of the same log gave different match results");
        hits_idx = hsum;
        kvb_index_destroy(idx);
        free(sid);
    }

    /* Baseline: the same op stream on a u64 map key -> holder bitmask (W <= 64). */
    uint64_t base_ns = UINT64_MAX, base_cpu = UINT64_MAX, base_hsum = 0;
    for (uint32_t rep = 0; rep < o->a_reps; rep++) {
        bmap m;
        bmap_init(&m, (uint64_t)W * C);
        uint64_t hsum = 0;
        uint64_t c0 = bench_cpu_ns(), t0 = kvbt_now_ns();
        for (size_t i = 0; i < n_ops; i++) {
            if (ops[i].kind == 0) {
                const rec_batch *b = &log.b[ops[i].idx];
                uint64_t bit = 1ull << (b->stream & 63);
                for (uint32_t e = b->first; e < b->first + b->n; e++) {
                    const kvb_index_event *x = &log.ix[e];
                    for (uint32_t j = 0; j < x->n_hashes; j++) {
                        if (x->type == KVB_INDEX_EV_STORED) {
                            *bmap_upsert(&m, x->hashes[j]) |= bit;
                        } else if (x->type == KVB_INDEX_EV_REMOVED) {
                            uint64_t *v = bmap_find(&m, x->hashes[j]);
                            if (v && !(*v &= ~bit))
                                bmap_erase(&m, x->hashes[j]);
                        }
                    }
                }
            } else {
                uint64_t r = ops[i].idx, cand = ~0ull;
                uint32_t n = (uint32_t)kvbt_trace_len(&t, r), depth = 0;
                const uint64_t *h = rh + t.off[r];
                for (uint32_t j = 0; j < n; j++) {
                    uint64_t *v = bmap_find(&m, h[j]);
                    if (!v || !(cand & *v))
                        break;
                    cand &= *v;
                    depth = j + 1;
                }
                hsum += depth;
            }
        }
        uint64_t dt = kvbt_now_ns() - t0, dc = bench_cpu_ns() - c0;
        if (dt < base_ns)
            base_ns = dt;
        if (dc < base_cpu)
            base_cpu = dc;
        base_hsum = hsum;
        bmap_free(&m);
    }
    uint64_t tot = block_ops + matched;
    printf("(a) %-30s %10llu block ops  wall %7.2f M/s  cpu %7.2f M/s %7.1f ns/op  (%s)\n",
           "kvb_index, one thread", (unsigned long long)tot, (double)tot * 1e3 / (double)best_ns,
           (double)tot * 1e3 / (double)best_cpu, (double)best_cpu / (double)tot, bench_loadavg());
    printf("(a) %-30s %10llu block ops  wall %7.2f M/s  cpu %7.2f M/s %7.1f ns/op  (same ops)\n",
           "baseline u64 map, one thread", (unsigned long long)tot,
           (double)tot * 1e3 / (double)base_ns, (double)tot * 1e3 / (double)base_cpu,
           (double)base_cpu / (double)tot);
    printf("    %llu events (%llu blocks stored, %llu removed) in %zu batches, %llu matches "
           "(%llu hashes looked up); %u workers x %u blocks, %llu requests, best of %u; "
           "longest-prefix sum %llu (index) vs %llu (baseline)\n",
           (unsigned long long)events, (unsigned long long)log.stored_blocks,
           (unsigned long long)log.removed_blocks, log.n_b, (unsigned long long)matches,
           (unsigned long long)matched, W, C, (unsigned long long)t.n_requests, o->a_reps,
           (unsigned long long)hits_idx, (unsigned long long)base_hsum);
    if (hits_idx != base_hsum)
        kvbt_die(prog, "(a) the index's longest prefixes differ from the baseline's");
    fflush(stdout);
    free(ops);
    free(blk);
    free(mut);
    free(cmp);
    free(pools);
    free(ecs);
    free(sinks);
    evlog_free(&log);
    free(lin);
    free(rh);
    kvbt_trace_free(&t);
}
