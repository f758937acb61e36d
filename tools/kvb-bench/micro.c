/*
 * tools/kvb-bench/micro.c - the micro section: each operation on the library
 * and on the speed-of-light baseline (sol.c), same plan, back to back, and the
 * --callgrind-ops mode that counts the same regions' instructions instead.
 *
 * Micro operations (ns per block; "timed" is exactly what the clock covers):
 *   lifecycle      allocate n -> stage them with fresh hashes (kvb_pool_stage;
 *                  kvb_mutable_stage for n = 1) -> register n -> release n to
 *                  the cache. Steady state: the cache is full, so every
 *                  allocation evicts n blocks in policy order.
 *   match_active   kvb_pool_match of n consecutive hashes of held (PRIMARY)
 *                  blocks; timed: the match calls; the references are released
 *                  in bulk afterwards, untimed.
 *   match_cached   kvb_pool_match of n cached (INACTIVE) hashes, i.e. n
 *                  resurrections, then kvb_block_release_n back to the cache;
 *                  timed: both.
 *   scattered      kvb_pool_match_scattered of n independent random hashes of
 *                  held blocks (all hits); timed: the calls.
 *   upgrade_live   kvb_weak_upgrade of n weak handles whose block is still
 *                  referenced (lock-free path); timed: the upgrades.
 *   upgrade_cached kvb_weak_upgrade of n weak handles whose block went to the
 *                  cache (lock + resurrection), then release back; timed: both.
 *   clone          kvb_block_clone of n held blocks, then release them
 *                  (never the last reference: lock-free); timed: both.
 *   evict_alloc    kvb_pool_allocate of n blocks with an empty free list (all
 *                  n evicted); timed: the allocations; the blocks are staged,
 *                  registered and released back to the cache afterwards, untimed.
 *   acquire        the lifecycle with one kvb_pool_acquire of n fresh hashes (no
 *                  hit: n blocks allocated, evicting, staged and registered) ->
 *                  release n to the cache; the baseline does its lifecycle.
 * Batch n = 1 uses kvb_block_release, larger batches kvb_block_release_n.
 *
 * Order of work per (pool size, policy): create the pool; fill it (allocate,
 * stage, register every block: all PRIMARY, one reference held each, and one
 * weak handle each); run the "active" operations; release everything (all
 * INACTIVE, the cache is full, the weak handles are stale); run the "cached"
 * operations; run evict_alloc and lifecycle (fresh hashes: every allocation
 * evicts). Queries hit chains of n consecutive blocks at random (aligned)
 * positions over the whole pool, so a 1M-block pool is out of cache. Each operation and batch size:
 * warm-up repetitions, then --reps repetitions of --work blocks each; min, median and max of ns per
 * block over the repetitions.
 *
 * Each repetition runs the library and then the baseline on the same random
 * plan, back to back, and the ratio column is the median of the per-repetition
 * ratios, so it holds when the machine is noisy.
 *
 * --events: a second pool of the same policy and size, created with an event
 * sink that drops every event (kvb_event_config_init's defaults: emit all,
 * deliver at once, so the pool numbers, queues, coalesces and delivers every
 * record), filled the same way and run on the same plans, back to back with
 * the plain pool (alternating which goes first). Its row, op+events, shows it
 * beside the plain pool (the "sol" columns of that row) with the median of the
 * per-repetition events/plain ratios; in CSV the same row with those meanings.
 *
 * --callgrind-ops: run each operation once on a small pool between
 * CALLGRIND_START_INSTRUMENTATION / STOP and dump the counters with a label
 * (CALLGRIND_DUMP_STATS_AT "kvb-bench <name> blocks=<count>"); the perf/ scripts
 * turn the dumps into instructions per block. Run it under
 * valgrind --tool=callgrind --instr-atstart=no.
 */
#include "kvb-bench/bench.h"
#include "kvb-bench/sol.h"

static void micro_header(const opts *o)
{
    if (o->csv) {
        printf("section,op,policy,blocks,batch,reps,work,min_ns,median_ns,max_ns,sol_min_ns,"
               "sol_median_ns,sol_max_ns,ratio_median,clock\n");
        return;
    }
    printf("micro: ns per block (%s clock), min / median / max over %u repetitions of ~%u "
           "blocks (after %u warm-up)\n",
           o->cpu_clock ? "thread CPU" : "wall", o->reps, o->work, o->warmup);
    printf("%-14s %-9s %8s %5s %8s %8s %8s | %7s %7s %7s | %6s\n", "op", "policy", "blocks",
           "batch", "min", "median", "max", "sol min", "sol med", "sol max", "ratio");
    if (o->events)
        printf("(--events: each op+events row is a second pool with a sink that drops every "
               "event;\n its right-hand columns are the plain pool's row and its ratio is "
               "events / plain)\n");
}

/* Build the plan of repetition r for op/batch: deterministic from the seed. */
static void make_plan(plan *pl, enum op o, uint32_t n, uint32_t B, uint32_t work, uint64_t *fresh,
                      const kvb_hash *H, uint64_t salt)
{
    uint32_t w = work;
    if (o == OP_EVICT_ALLOC && w > B / 2)
        w = B / 2;
    if (w < n)
        w = n;
    pl->n = n;
    pl->k = w / n;
    pl->w = pl->k * n;
    rng r = {bench_seed ^ splitmix64(salt)};
    if (o == OP_SCATTERED) {
        for (uint32_t j = 0; j < pl->w; j++) {
            pl->pos[j] = rng_below(&r, B);
            pl->q[j] = H[pl->pos[j]];
        }
    } else if (o == OP_LIFECYCLE || o == OP_ACQUIRE || o == OP_EVICT_ALLOC) {
        for (uint32_t j = 0; j < pl->w; j++)
            pl->q[j] = bench_hash((*fresh)++);
    } else {
        for (uint32_t b = 0; b < pl->k; b++)
            pl->pos[b] = rng_below(&r, B / n) * n;
    }
}

typedef struct micro_fx {
    lib_fx lib;
    lib_fx ev;          /* --events: the same pool with a drop sink (ev.pool NULL without) */
    uint64_t ev_events; /* events the drop sink saw */
    sol base;
    sol_ref *sol_held; /* the baseline's own handles: its generations differ */
    sol_weak *sol_weak;
    kvb_hash *H;
    uint64_t fresh;
    plan pl;
    uint32_t maxw;
} micro_fx;

/* Create f's pool (with events when evc) and scratch; fill it: every block
 * PRIMARY with one held reference, H[i] in held[i], and one weak handle each. */
static void lib_setup(lib_fx *f, const policy_info *pi, uint32_t B, uint32_t maxw,
                      const kvb_hash *H, const kvb_event_config *evc)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = B;
    cfg.evict = pi->policy;
    cfg.name = "bench";
    cfg.events = evc;
    int rc = kvb_pool_create(&cfg, &f->pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_create (%s, %u blocks%s): %s", pi->name, B, evc ? ", events" : "",
                 kvb_strerror(rc));
    f->B = B;
    snprintf(f->ctx, sizeof f->ctx, "policy %s, %u blocks%s", pi->name, B, evc ? ", events" : "");
    f->H = H;
    f->held = kvbt_xmalloc_array(B, sizeof *f->held);
    f->weak = kvbt_xmalloc_array(B, sizeof *f->weak);
    f->mut = kvbt_xmalloc_array(maxw, sizeof *f->mut);
    f->cmp = kvbt_xmalloc_array(maxw, sizeof *f->cmp);
    f->out = kvbt_xmalloc_array(maxw, sizeof *f->out);
    f->hit = kvbt_xmalloc_array(maxw, sizeof *f->hit);
    for (uint32_t i = 0; i < B; i += 256) {
        uint32_t c = B - i < 256 ? B - i : 256;
        lib_admit(f, H + i, c, f->held + i);
    }
    for (uint32_t i = 0; i < B; i++)
        kvb_block_downgrade(&f->held[i], &f->weak[i]);
}

static void micro_setup(micro_fx *m, const policy_info *pi, uint32_t B, uint32_t work, bool events)
{
    memset(m, 0, sizeof *m);
    m->maxw = work > B ? work : B; /* evict_alloc and the fill use up to B */
    m->H = kvbt_xmalloc_array(B, sizeof *m->H);
    for (uint32_t i = 0; i < B; i++)
        m->H[i] = bench_hash(i);
    m->fresh = B;
    lib_setup(&m->lib, pi, B, m->maxw, m->H, NULL);
    if (events) {
        kvb_event_config evc;
        kvb_event_config_init(&evc);
        evc.sink = bench_drop_sink;
        evc.user = &m->ev_events;
        lib_setup(&m->ev, pi, B, m->maxw, m->H, &evc);
    }
    sol_init(&m->base, B, m->maxw);
    m->sol_held = kvbt_xmalloc_array(B, sizeof *m->sol_held);
    m->sol_weak = kvbt_xmalloc_array(B, sizeof *m->sol_weak);
    m->pl.pos = kvbt_xmalloc_array(m->maxw, sizeof *m->pl.pos);
    m->pl.q = kvbt_xmalloc_array(m->maxw, sizeof *m->pl.q);
    for (uint32_t i = 0; i < B; i += 256) {
        uint32_t c = B - i < 256 ? B - i : 256;
        sol_admit(&m->base, m->H + i, c, m->sol_held + i);
    }
    for (uint32_t i = 0; i < B; i++) {
        const sol_ref *b = &m->sol_held[i];
        m->sol_weak[i] = (sol_weak){.hash = m->H[i], .id = b->id, .gen = b->gen};
    }
}

static void lib_teardown(lib_fx *f)
{
    int rc = kvb_pool_check(f->pool);
    if (rc != 0)
        kvbt_die(prog,
                 "INVARIANT VIOLATION: kvb_pool_check() = %d after the benchmark (%s): "
                 "a kvblock bug",
                 rc, f->ctx);
    kvb_stats st;
    kvb_pool_stats(f->pool, &st);
    if (st.misuse)
        kvbt_die(prog, "the pool counted %llu handle misuses (%s): a kvb-bench bug",
                 (unsigned long long)st.misuse, f->ctx);
    rc = kvb_pool_destroy(f->pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s (%s)", kvb_strerror(rc), f->ctx);
    free(f->held);
    free(f->weak);
    free(f->mut);
    free(f->cmp);
    free(f->out);
    free(f->hit);
}

static void micro_teardown(micro_fx *m)
{
    if (m->ev.pool) {
        /* the drop sink must really have been called, and nothing lost */
        kvb_event_stats es;
        int rc = kvb_pool_events_stats(m->ev.pool, &es);
        if (rc != 0)
            lib_fail("kvb_pool_events_stats", rc, m->ev.ctx);
        if (es.lost || es.events != m->ev_events || m->ev_events == 0)
            kvbt_die(prog, "events: %llu delivered, %llu seen by the sink, %llu lost (%s)",
                     (unsigned long long)es.events, (unsigned long long)m->ev_events,
                     (unsigned long long)es.lost, m->ev.ctx);
        lib_teardown(&m->ev);
    }
    lib_teardown(&m->lib);
    free(m->H);
    free(m->pl.pos);
    free(m->pl.q);
    free(m->sol_held);
    free(m->sol_weak);
    sol_fini(&m->base);
}

/* Active phase over: release every held reference, in fill order (the cache
 * fills; the weak handles now need the slow path). */
static void micro_to_cached(micro_fx *m)
{
    lib_fx *f = &m->lib;
    int rc = kvb_block_release_n(f->held, f->B);
    if (rc != 0)
        lib_fail("kvb_block_release_n (all)", rc, f->ctx);
    if (m->ev.pool) {
        rc = kvb_block_release_n(m->ev.held, m->ev.B);
        if (rc != 0)
            lib_fail("kvb_block_release_n (all)", rc, m->ev.ctx);
    }
    sol_release_n(&m->base, m->sol_held, f->B);
}

static void print_row(const opts *o, const char *name, const char *policy, uint32_t B, uint32_t n,
                      uint32_t w, const micro_result *res)
{
    if (o->csv)
        printf("micro,%s,%s,%u,%u,%u,%u,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.3f,%s\n", name, policy, B,
               n, o->reps, w, res->lib.min, res->lib.med, res->lib.max, res->base.min,
               res->base.med, res->base.max, res->ratio, o->cpu_clock ? "cpu" : "wall");
    else
        printf("%-14s %-9s %8u %5u %8.1f %8.1f %8.1f | %7.1f %7.1f %7.1f | %6.2f\n", name, policy,
               B, n, res->lib.min, res->lib.med, res->lib.max, res->base.min, res->base.med,
               res->base.max, res->ratio);
}

static void micro_run_op(micro_fx *m, const opts *o, const policy_info *pi, enum op op, uint32_t n,
                         uint32_t B)
{
    unsigned total = o->warmup + o->reps;
    double *lib_ns = kvbt_xmalloc_array(total, sizeof(double));
    double *sol_ns = kvbt_xmalloc_array(total, sizeof(double));
    double *ratio = kvbt_xmalloc_array(total, sizeof(double));
    double *ev_ns = kvbt_xmalloc_array(total, sizeof(double));
    double *ev_ratio = kvbt_xmalloc_array(total, sizeof(double));
    unsigned nm = 0;

    for (unsigned r = 0; r < total; r++) {
        uint64_t salt = ((uint64_t)op << 48) ^ ((uint64_t)n << 32) ^ r;
        make_plan(&m->pl, op, n, B, o->work, &m->fresh, m->H, salt);
        /* the events pool runs the same plan; which pool goes first alternates */
        uint64_t te = 0, tl;
        if (m->ev.pool && (r & 1))
            te = lib_run(&m->ev, op, &m->pl);
        tl = lib_run(&m->lib, op, &m->pl);
        if (m->ev.pool && !(r & 1))
            te = lib_run(&m->ev, op, &m->pl);
        uint64_t tb = sol_run(&m->base, m->H, m->sol_held, m->sol_weak, op, &m->pl);
        if (r < o->warmup)
            continue;
        lib_ns[nm] = (double)tl / m->pl.w;
        sol_ns[nm] = (double)tb / m->pl.w;
        ratio[nm] = tb ? (double)tl / (double)tb : 0.0;
        ev_ns[nm] = (double)te / m->pl.w;
        ev_ratio[nm] = tl ? (double)te / (double)tl : 0.0;
        nm++;
    }
    micro_result res = {.op = op, .policy = pi->name, .blocks = B, .batch = n};
    res.lib = bench_summarize(lib_ns, nm);
    res.base = bench_summarize(sol_ns, nm);
    res.ratio = bench_summarize(ratio, nm).med;
    record_micro(&res);
    print_row(o, op_names[op], pi->name, B, n, m->pl.w, &res);
    if (m->ev.pool) {
        /* the events row: the events pool beside the plain one */
        char name[32];
        snprintf(name, sizeof name, "%s+events", op_names[op]);
        micro_result er = {.op = op, .policy = pi->name, .blocks = B, .batch = n};
        er.lib = bench_summarize(ev_ns, nm);
        er.base = res.lib;
        er.ratio = bench_summarize(ev_ratio, nm).med;
        print_row(o, name, pi->name, B, n, m->pl.w, &er);
    }
    fflush(stdout);
    free(lib_ns);
    free(sol_ns);
    free(ratio);
    free(ev_ns);
    free(ev_ratio);
}

/* Callgrind mode: one warm-up repetition uninstrumented, then one instrumented
 * repetition for the library and one for the baseline, each dumped with a label. */
static void micro_callgrind_op(micro_fx *m, const opts *o, const policy_info *pi, enum op op,
                               uint32_t n, uint32_t B, bool dump_sol)
{
    char label[160];
    for (unsigned r = 0; r < o->warmup; r++) {
        region_mode = REGION_OFF;
        make_plan(&m->pl, op, n, B, o->work, &m->fresh, m->H, r);
        lib_run(&m->lib, op, &m->pl);
        if (m->ev.pool)
            lib_run(&m->ev, op, &m->pl);
        sol_run(&m->base, m->H, m->sol_held, m->sol_weak, op, &m->pl);
    }
    make_plan(&m->pl, op, n, B, o->work, &m->fresh, m->H, 1000);
    region_mode = REGION_CALLGRIND;
    lib_run(&m->lib, op, &m->pl);
    snprintf(label, sizeof label, "kvb-bench %s/%s/b%u blocks=%u", op_names[op], pi->name, n,
             m->pl.w);
    CALLGRIND_DUMP_STATS_AT(label);
    if (m->ev.pool) {
        lib_run(&m->ev, op, &m->pl);
        snprintf(label, sizeof label, "kvb-bench %s+events/%s/b%u blocks=%u", op_names[op],
                 pi->name, n, m->pl.w);
        CALLGRIND_DUMP_STATS_AT(label);
    }
    /* the baseline does not depend on the policy: dumped with the first one only */
    if (dump_sol) {
        sol_run(&m->base, m->H, m->sol_held, m->sol_weak, op, &m->pl);
        snprintf(label, sizeof label, "kvb-bench sol:%s/b%u blocks=%u", op_names[op], n, m->pl.w);
        CALLGRIND_DUMP_STATS_AT(label);
    } else {
        region_mode = REGION_OFF;
        sol_run(&m->base, m->H, m->sol_held, m->sol_weak, op, &m->pl);
    }
    region_mode = REGION_OFF;
    if (!o->csv)
        printf("callgrind: %s/%s/b%u blocks=%u\n", op_names[op], pi->name, n, m->pl.w);
}

void micro_section(const opts *o)
{
    if (!o->callgrind)
        micro_header(o);
    for (unsigned bi = 0; bi < o->n_blocks; bi++) {
        uint32_t B = o->blocks[bi];
        bool first = true;
        for (unsigned p = 0; p < n_policies; p++) {
            if (!o->policy_sel[p])
                continue;
            const policy_info *pi = &policies[p];
            micro_fx m;
            micro_setup(&m, pi, B, o->work, o->events);
            bool cached_done = false;
            for (int op = 0; op < OP_COUNT; op++) {
                if (!o->op_sel[op])
                    continue;
                if (!op_is_active_phase((enum op)op) && !cached_done) {
                    micro_to_cached(&m);
                    cached_done = true;
                }
                for (unsigned b = 0; b < o->n_batch; b++) {
                    if (o->callgrind)
                        micro_callgrind_op(&m, o, pi, (enum op)op, o->batch[b], B, first);
                    else
                        micro_run_op(&m, o, pi, (enum op)op, o->batch[b], B);
                }
            }
            if (!cached_done)
                micro_to_cached(&m);
            micro_teardown(&m);
            first = false;
        }
    }
}
