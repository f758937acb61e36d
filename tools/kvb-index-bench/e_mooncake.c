/*
 * tools/kvb-index-bench/e_mooncake.c - section (e): Dynamo's mooncake_bench
 * method over kvb_index (tools/kvb-index-bench.c has the manual and the
 * method).
 */
#include "kvb-index-bench/bench.h"

/* ------------------------------------------------------------------------ */
/* (e) Dynamo's mooncake_bench method                                       */
/* ------------------------------------------------------------------------ */

#define E_BLOCK 512

typedef struct e_op {
    uint32_t stream; /* index stream (worker + replica * U) */
    uint32_t kind;   /* 0 event batch, 1 request */
    uint32_t idx;    /* batch index or request index */
    uint32_t t_rel;  /* time on the worker's timeline, in 1/2^32 of the window */
} e_op;

typedef struct e_thread {
    const e_op *ops;
    uint64_t n_ops;
    kvb_index *idx;
    const evlog *log;
    const uint32_t *sid_of_stream;
    const uint64_t *rh;
    const kvbt_trace *t;
    uint32_t U, k;
    uint64_t window_ns; /* 0 = unpaced */
    uint64_t start_ns;
    uint32_t *lat;
    uint64_t n_lat;
    uint64_t end_ns, late_ns_max;
    int err;
} e_thread;

static void *e_thread_main(void *arg)
{
    e_thread *th = arg;
    kvb_index_result *res = kvbt_xmalloc_array(th->k, sizeof *res);
    for (uint64_t i = 0; i < th->n_ops; i++) {
        const e_op *op = &th->ops[i];
        if (th->window_ns) {
            uint64_t target =
                th->start_ns + (uint64_t)((double)op->t_rel * (double)th->window_ns / 4294967296.0);
            uint64_t now = kvbt_now_ns();
            if (now + 20000 < target) {
                struct timespec ts = {.tv_sec = (time_t)(target / 1000000000ull),
                                      .tv_nsec = (long)(target % 1000000000ull)};
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            } else if (now > target && now - target > th->late_ns_max) {
                th->late_ns_max = now - target;
            }
        }
        if (op->kind == 0) {
            const rec_batch *b = &th->log->b[op->idx];
            int rc = kvb_index_apply(th->idx, th->sid_of_stream[op->stream], th->log->ix + b->first,
                                     b->n, -1);
            if (rc < 0) {
                th->err = rc;
                break;
            }
        } else {
            uint64_t r = op->idx;
            uint64_t a = kvbt_now_ns();
            int rc = kvb_index_match(th->idx, th->rh + th->t->off[r],
                                     (uint32_t)kvbt_trace_len(th->t, r), res, th->k);
            uint64_t d = kvbt_now_ns() - a;
            if (rc < 0) {
                th->err = rc;
                break;
            }
            th->lat[th->n_lat++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        }
    }
    th->end_ns = kvbt_now_ns();
    free(res);
    return NULL;
}

static int e_op_cmp(const void *a, const void *b)
{
    const e_op *x = a, *y = b;
    if (x->t_rel != y->t_rel)
        return x->t_rel < y->t_rel ? -1 : 1;
    if (x->stream != y->stream)
        return x->stream < y->stream ? -1 : 1;
    if (x->kind != y->kind) /* a request before the events of its time (Dynamo's order) */
        return x->kind > y->kind ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

typedef struct e_setup {
    kvbt_trace t;
    bool synthetic;
    uint64_t *rh;
    evlog log;
    /* per worker timeline (unique workers): ops with stream = worker */
    e_op *ops;
    uint64_t n_ops;
    uint64_t requests, events, evictions, decode_blocks;
    uint32_t U;
} e_setup;

static void e_prepare(const bench_opts *o, e_setup *S)
{
    char err[1024];
    memset(S, 0, sizeof *S);
    const char *path =
        o->trace ? o->trace : "../shared/data/mooncake/mooncake_conversation_trace.jsonl";
    if (access(path, R_OK) == 0) {
        if (kvbt_trace_load(path, KVBT_FORMAT_MOONCAKE, &S->t, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
    } else {
        if (o->trace)
            kvbt_die(prog, "--trace %s: %s", o->trace, strerror(errno));
        kvbt_synth_params sp;
        kvbt_synth_defaults(&sp);
        sp.seed = o->seed;
        if (kvbt_synth_generate(&sp, &S->t, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
        S->synthetic = true;
        printf("    note: %s not found: the built-in workload with Poisson arrivals (3.4/s)\n",
               path);
    }
    kvbt_trace *t = &S->t;
    uint64_t nreq = t->n_requests;
    if (o->e_requests && o->e_requests < nreq)
        nreq = o->e_requests;
    S->requests = nreq;
    uint64_t nrefs = t->off[nreq];
    kvb_hash *lin = kvbt_xmalloc_array(t->n_refs + 1, sizeof *lin);
    int rc = kvbt_trace_token_hashes(t, E_BLOCK, KVB_HASH_DYNAMO_SEED, lin);
    if (rc < 0)
        bench_fail("hashing", rc);
    S->rh = kvbt_xmalloc_array(nrefs + 1, sizeof *S->rh);
    for (uint64_t i = 0; i < nrefs; i++)
        S->rh[i] = kvb_hash_current(lin[i]);

    /* timestamps (ms) */
    uint64_t *ts = kvbt_xmalloc_array(nreq + 1, sizeof *ts);
    uint64_t x = o->seed ^ 0x6d6f6f6e63616b65ull;
    double clock_ms = 0;
    for (uint64_t r = 0; r < nreq; r++) {
        if (t->timestamp_ms) {
            ts[r] = t->timestamp_ms[r];
        } else {
            double u = ((double)(bench_rng(&x) >> 11) + 1.0) / 9007199254740993.0;
            clock_ms += -log(u) / 3.4 * 1000.0;
            ts[r] = (uint64_t)clock_ms;
        }
    }

    /* Deal the requests to U workers uniformly at random (Dynamo's partition_trace). */
    const uint32_t U = o->e_workers;
    S->U = U;
    uint32_t *owner = kvbt_xmalloc_array(nreq + 1, sizeof *owner);
    uint64_t *cnt = calloc(U + 1, sizeof *cnt);
    x = o->seed;
    for (uint64_t r = 0; r < nreq; r++) {
        owner[r] = (uint32_t)(bench_rng(&x) % U);
        cnt[owner[r] + 1]++;
    }
    for (uint32_t w = 0; w < U; w++)
        cnt[w + 1] += cnt[w];
    uint64_t *order = kvbt_xmalloc_array(nreq + 1, sizeof *order);
    {
        uint64_t *fill = kvbt_xmalloc_array(U + 1, sizeof *fill);
        memcpy(fill, cnt, (U + 1) * sizeof *fill);
        for (uint64_t r = 0; r < nreq; r++)
            order[fill[owner[r]]++] = r;
        free(fill);
    }

    /* Each worker's cache: a pool that never evicts for its share of the trace. */
    uint32_t maxw = 0;
    for (uint32_t w = 0; w < U; w++) {
        uint64_t blocks = 0;
        for (uint64_t i = cnt[w]; i < cnt[w + 1]; i++) {
            uint64_t r = order[i];
            blocks += kvbt_trace_len(t, r) + (t->output_tokens ? t->output_tokens[r] / E_BLOCK : 0);
        }
        maxw = blocks > maxw ? (uint32_t)blocks : maxw;
    }
    uint32_t C = maxw + 64;
    size_t maxn = t->max_request_blocks + 64;
    kvb_block *blk = kvbt_xmalloc_array(maxn, sizeof *blk);
    kvb_mutable *mut = kvbt_xmalloc_array(maxn, sizeof *mut);
    kvb_complete *cmp = kvbt_xmalloc_array(maxn, sizeof *cmp);
    S->ops = kvbt_xmalloc_array(nreq * 4 + 1024, sizeof *S->ops);
    uint64_t cap_ops = nreq * 4 + 1024;
    uint64_t dx = o->seed ^ 0x6465636f6465ull; /* decode tokens' content */
    for (uint32_t w = 0; w < U; w++) {
        if (cnt[w] == cnt[w + 1])
            continue;
        uint64_t first = ts[order[cnt[w]]], last = ts[order[cnt[w + 1] - 1]];
        uint64_t span = last - first;
        rec_sink sink = {.log = &S->log, .stream = w};
        kvb_event_config ec;
        kvb_event_config_init(&ec);
        ec.sink = rec_sink_fn;
        ec.user = &sink;
        kvb_pool_config pc;
        kvb_pool_config_init(&pc);
        pc.block_count = C;
        pc.block_size = E_BLOCK;
        pc.events = &ec;
        kvb_pool *pool;
        rc = kvb_pool_create(&pc, &pool);
        if (rc < 0)
            bench_fail("kvb_pool_create", rc);
        for (uint64_t i = cnt[w]; i < cnt[w + 1]; i++) {
            uint64_t r = order[i];
            /* Dynamo: (ts - first) * window / (last - first) per worker. */
            uint32_t t_rel =
                span ? (uint32_t)(((double)(ts[r] - first) / (double)span) * 4294967295.0) : 0;
            sink.t_us = t_rel;
            uint32_t n = (uint32_t)kvbt_trace_len(t, r);
            const kvb_hash *h = lin + t->off[r];
            if (S->n_ops + 64 >= cap_ops) {
                cap_ops *= 2;
                S->ops = kvbt_xrealloc(S->ops, cap_ops * sizeof *S->ops);
            }
            S->ops[S->n_ops++] = (e_op){.stream = w, .kind = 1, .idx = (uint32_t)r, .t_rel = t_rel};
            size_t b0 = S->log.n_b;
            rc = kvb_pool_match(pool, h, n, blk);
            if (rc < 0)
                bench_fail("kvb_pool_match", rc);
            uint32_t k = (uint32_t)rc, held = n;
            if (k < n) {
                uint32_t ne = 0;
                if ((rc = kvb_pool_allocate(pool, n - k, mut, NULL, &ne)) < 0 ||
                    (rc = kvb_pool_stage(pool, mut, h + k, n - k, cmp)) < 0 ||
                    (rc = kvb_pool_register(pool, cmp, n - k, blk + k)) < 0)
                    bench_fail("(e) pool", rc);
                S->evictions += ne;
            }
            /* decode: every 512 generated tokens fill one block of random content */
            uint32_t dec = t->output_tokens ? t->output_tokens[r] / E_BLOCK : 0;
            kvb_hash parent = n ? h[n - 1] : (kvb_hash){0, 0};
            for (uint32_t d = 0; d < dec && held + 1 < maxn; d++) {
                kvb_hash nh;
                if (kvb_hash_make(bench_key(&dx), kvb_hash_current(parent), held > 0, held, &nh) <
                    0)
                    break;
                if ((rc = kvb_pool_allocate(pool, 1, mut, NULL, NULL)) < 0 ||
                    (rc = kvb_pool_stage(pool, mut, &nh, 1, cmp)) < 0 ||
                    (rc = kvb_pool_register(pool, cmp, 1, blk + held)) < 0)
                    bench_fail("(e) decode block", rc);
                parent = nh;
                held++;
                S->decode_blocks++;
            }
            for (uint32_t a = 0, z = held ? held - 1 : 0; a < z; a++, z--) {
                kvb_block tmp = blk[a];
                blk[a] = blk[z];
                blk[z] = tmp;
            }
            kvb_block_release_n(blk, held);
            for (size_t b = b0; b < S->log.n_b; b++) {
                if (S->n_ops + 1 >= cap_ops) {
                    cap_ops *= 2;
                    S->ops = kvbt_xrealloc(S->ops, cap_ops * sizeof *S->ops);
                }
                S->ops[S->n_ops++] =
                    (e_op){.stream = w, .kind = 0, .idx = (uint32_t)b, .t_rel = t_rel};
            }
        }
        size_t nb = S->log.n_b;
        kvb_pool_destroy(pool);
        S->log.n_b = nb; /* the CLEARED of the destroy is not part of the trace */
    }
    S->events = 0;
    for (uint64_t i = 0; i < S->n_ops; i++)
        if (S->ops[i].kind == 0)
            S->events += S->log.b[S->ops[i].idx].n;
    evlog_finish(&S->log);
    free(blk);
    free(mut);
    free(cmp);
    free(ts);
    free(owner);
    free(cnt);
    free(order);
    free(lin);
}

typedef struct e_result {
    uint64_t ops, requests, batches, events;
    double offered, achieved, secs, cpu_s;
    uint32_t p50, p99, p999;
    uint64_t late_max_ns, block_ops;
} e_result;

static void e_run(const bench_opts *o, const e_setup *S, uint64_t window_ms, e_result *res)
{
    const uint32_t U = S->U, D = o->e_dup, T = o->e_threads;
    kvb_index *idx = bench_index(E_BLOCK, U * D + 16, NULL);
    uint32_t *sid = kvbt_xmalloc_array((size_t)U * D, sizeof *sid);
    for (uint32_t s = 0; s < U * D; s++)
        sid[s] = bench_stream(idx, s);
    /* Each thread's ops: replica copies of the worker timelines it owns, merged. */
    e_thread *th = calloc(T, sizeof *th);
    e_op **tops = kvbt_xmalloc_array(T, sizeof *tops);
    uint64_t *tn = calloc(T, sizeof *tn);
    for (uint64_t i = 0; i < S->n_ops; i++)
        for (uint32_t d = 0; d < D; d++)
            tn[(S->ops[i].stream + (uint64_t)d * U) % T]++;
    for (uint32_t k = 0; k < T; k++) {
        tops[k] = kvbt_xmalloc_array(tn[k] + 1, sizeof **tops);
        tn[k] = 0;
    }
    for (uint64_t i = 0; i < S->n_ops; i++)
        for (uint32_t d = 0; d < D; d++) {
            e_op op = S->ops[i];
            op.stream += d * U;
            uint32_t k = op.stream % T;
            tops[k][tn[k]++] = op;
        }
    memset(res, 0, sizeof *res);
    for (uint32_t k = 0; k < T; k++) {
        qsort(tops[k], tn[k], sizeof **tops, e_op_cmp);
        th[k].ops = tops[k];
        th[k].n_ops = tn[k];
        th[k].idx = idx;
        th[k].log = &S->log;
        th[k].sid_of_stream = sid;
        th[k].rh = S->rh;
        th[k].t = &S->t;
        th[k].U = U;
        th[k].k = o->e_k;
        th[k].window_ns = window_ms * 1000000ull;
        th[k].lat = kvbt_xmalloc_array(tn[k] + 1, sizeof *th[k].lat);
        for (uint64_t i = 0; i < tn[k]; i++) {
            if (tops[k][i].kind == 1)
                res->requests++;
            else {
                res->batches++;
                res->events += S->log.b[tops[k][i].idx].n;
            }
        }
    }
    pthread_t *pt = kvbt_xmalloc_array(T, sizeof *pt);
    uint64_t cpu0 = bench_proc_cpu_ns();
    /* paced: 1 ms for the threads to start before the window opens */
    uint64_t start = kvbt_now_ns() + (window_ms ? 1000000 : 0);
    for (uint32_t k = 0; k < T; k++) {
        th[k].start_ns = start;
        if (pthread_create(&pt[k], NULL, e_thread_main, &th[k]) != 0)
            kvbt_die(prog, "pthread_create failed");
    }
    uint64_t end = 0, nlat = 0;
    for (uint32_t k = 0; k < T; k++) {
        pthread_join(pt[k], NULL);
        if (th[k].err)
            bench_fail("(e) index call", th[k].err);
        end = th[k].end_ns > end ? th[k].end_ns : end;
        nlat += th[k].n_lat;
        res->late_max_ns =
            th[k].late_ns_max > res->late_max_ns ? th[k].late_ns_max : res->late_max_ns;
    }
    res->cpu_s = (double)(bench_proc_cpu_ns() - cpu0) / 1e9;
    uint32_t *lat = kvbt_xmalloc_array(nlat + 1, sizeof *lat);
    nlat = 0;
    for (uint32_t k = 0; k < T; k++) {
        memcpy(lat + nlat, th[k].lat, th[k].n_lat * sizeof *lat);
        nlat += th[k].n_lat;
        free(th[k].lat);
        free(tops[k]);
    }
    qsort(lat, nlat, sizeof *lat, bench_cmp_u32);
    res->p50 = bench_pct(lat, nlat, 500);
    res->p99 = bench_pct(lat, nlat, 990);
    res->p999 = bench_pct(lat, nlat, 999);
    /* Dynamo's ops: requests + events (events as the engine publishes them). */
    res->ops = res->requests + res->events;
    uint64_t now0 = start > end ? end : start;
    res->secs = (double)(end - now0) / 1e9;
    res->achieved = res->secs > 0 ? (double)res->ops / res->secs : 0;
    res->offered = window_ms ? (double)res->ops * 1000.0 / (double)window_ms : 0;
    kvb_index_stats st;
    kvb_index_stats_get(idx, &st);
    res->block_ops = st.block_ops + st.matched_blocks;
    free(lat);
    free(pt);
    free(tops);
    free(tn);
    free(th);
    free(sid);
    kvb_index_destroy(idx);
}

void bench_e(const bench_opts *o)
{
    e_setup S;
    uint64_t t0 = kvbt_now_ns();
    e_prepare(o, &S);
    double prep_s = (double)(kvbt_now_ns() - t0) / 1e9;
    printf("    %s, %llu requests dealt to %u workers (seed %llu) x duplication %u = %u "
           "streams; per unique worker set: %llu events (%llu blocks stored, %llu of them "
           "decode blocks), %llu evictions; %.2f events per request; prepared in %.1f s\n",
           S.synthetic ? "built-in workload" : S.t.name, (unsigned long long)S.requests, S.U,
           (unsigned long long)o->seed, o->e_dup, S.U * o->e_dup, (unsigned long long)S.events,
           (unsigned long long)S.log.stored_blocks, (unsigned long long)S.decode_blocks,
           (unsigned long long)S.evictions,
           S.requests ? (double)S.events / (double)S.requests : 0.0, prep_s);
    e_result r;
    e_run(o, &S, o->e_window_ms, &r);
    printf("(e) %-30s offered %9.0f ops/s  achieved %9.0f ops/s  p50 %7u ns  p99 %7u ns  "
           "p999 %7u ns  (%s)\n",
           "trace rate, window", r.offered, r.achieved, r.p50, r.p99, r.p999, bench_loadavg());
    printf("    window %u ms: %llu ops (%llu requests + %llu events in %llu batches) in %.2f s "
           "on %u threads, latest op %.2f ms behind schedule\n",
           o->e_window_ms, (unsigned long long)r.ops, (unsigned long long)r.requests,
           (unsigned long long)r.events, (unsigned long long)r.batches, r.secs, o->e_threads,
           (double)r.late_max_ns / 1e6);
    if (!o->quick && r.ops) {
        /* The same offered rate as Dynamo's steady-state run (11,860 ops/s): our
         * simulated engines publish fewer events per request, so the 30 s window alone
         * offers less. */
        uint64_t win = (uint64_t)((double)r.ops * 1000.0 / 11860.0 + 0.5);
        e_run(o, &S, win ? win : 1, &r);
        printf("(e) %-30s offered %9.0f ops/s  achieved %9.0f ops/s  p50 %7u ns  p99 %7u ns  "
               "p999 %7u ns  (%s)\n",
               "Dynamo's offered rate, window", r.offered, r.achieved, r.p50, r.p99, r.p999,
               bench_loadavg());
        printf("    window %llu ms, latest op %.2f ms behind schedule\n", (unsigned long long)win,
               (double)r.late_max_ns / 1e6);
    }
    e_run(o, &S, 0, &r);
    printf("(e) %-30s offered %9s ops/s  achieved %9.0f ops/s  p50 %7u ns  p99 %7u ns  "
           "p999 %7u ns  (%s)\n",
           "peak, unpaced", "-", r.achieved, r.p50, r.p99, r.p999, bench_loadavg());
    printf("    %llu ops in %.3f s on %u threads, %.3f CPU-s (%.0f ops per CPU-s); %.2f M block "
           "ops/s (blocks stored, removed and looked up)\n",
           (unsigned long long)r.ops, r.secs, o->e_threads, r.cpu_s,
           r.cpu_s > 0 ? (double)r.ops / r.cpu_s : 0.0,
           r.secs > 0 ? (double)r.block_ops / r.secs / 1e6 : 0.0);
    fflush(stdout);
    evlog_free(&S.log);
    free(S.ops);
    free(S.rh);
    kvbt_trace_free(&S.t);
}
