/*
 * kvb-fleet - fleet simulator: W kvblock pools (one per worker, C blocks each),
 * their KV events feeding one kvb_index (FLEET.md), and a router that places
 * every request of a trace on a worker by policy. The chosen worker's pool then
 * serves the request for real (prefix match, allocate + register the rest, hold
 * the blocks while the request runs, release them when it completes), so hit
 * ratios are the pools' own, and the index is checked against them at every
 * decision. `kvb-fleet --help` is the manual.
 *
 * The simulation (discrete events, one thread, deterministic for a seed):
 *
 *   for each request r in arrival order (trace timestamps, or Poisson arrivals
 *   for the built-in workload):
 *     1. complete every running request whose finish time <= arrival(r):
 *        release its blocks, last block first (they stay cached), load - 1
 *     2. --transport zmq: wait until the index has applied every batch the
 *        pools published (the barrier below), every --sync-every decisions
 *     3. hashes = router hashes of r (kvb_hash_current of the lineage hashes
 *        kvb_hash_tokens gives for r's tokens: what the router computes);
 *        kvb_index_match(hashes) -- timed -- gives each worker's cached prefix
 *     4. the policy picks worker w (round_robin, least_loaded, kv_aware)
 *     5. pool w: k = kvb_pool_match; allocate + stage + register the other
 *        n - k blocks (evictions publish REMOVED, registrations STORED); the
 *        index's prediction for w must equal k (counted when it does not)
 *     6. finish(r) = arrival(r) + service(r, k); load(w) + 1
 *
 * Load: a worker's load is its number of requests in flight (assigned, not
 * finished), the quantity SGLang's router balances. Service-time model:
 * prefill of the uncached tokens at --prefill-tps tokens/s, then
 * output_tokens x --tpot-ms (no batching interference: each request's time is
 * its own). "load max/mean" is sum over decisions of max_w load(w) / sum over
 * decisions of mean_w load(w), sampled just before each decision; "work
 * max/mean" is the largest worker's total tokens (prefilled + decoded) over the
 * mean.
 *
 * Events reach the index in process (default: each pool's event sink converts
 * kvb_event batches into kvb_index_event, router hashes = kvb_hash_current,
 * and calls kvb_index_apply on the worker's stream; pools deliver at once, so
 * the index is current after every pool call) or over ZeroMQ ipc
 * (--transport zmq: one kvb_publisher per pool on ipc:// endpoints in a
 * temporary directory, one kvb_subscriber of kind KVB_WIRE_KVBLOCK feeding the
 * index). The zmq barrier: flush every publisher that published since the last
 * barrier, then kvb_subscriber_sync until each such worker's stream reports the
 * publisher's last sequence number as applied. With --sync-every 1 (default)
 * the two transports make the same decisions and must give the same figures.
 *
 * The reference line is one pool of W x C blocks serving the same requests
 * (same lifecycle and service model): the target of kv-aware routing.
 *
 * This file: the workload (trace or built-in, arrivals, token counts, hashes),
 * the output and --plot, and the main; the parts are under tools/kvb-fleet/
 * (fleet.h lists them).
 */
#include "kvb-fleet/fleet.h"

#include "kvblock/subscriber.h"

#include "common/plot.h"
#include "common/tokhash.h"

#include <math.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Workload                                                                 */
/* ------------------------------------------------------------------------ */

/* splitmix64: the arrivals and output lengths of the built-in workload. */
static uint64_t fleet_rng(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fleet_load_init(fleet_load *L, const fleet_opts *o)
{
    char err[1024];
    memset(L, 0, sizeof *L);
    L->synthetic = o->trace == NULL;
    if (L->synthetic) {
        if (kvbt_synth_generate(&o->synth, &L->t, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
    } else {
        if (o->synth_set && !o->quiet)
            fprintf(stderr, "%s: note: --seed and --requests apply to the built-in workload only\n",
                    prog);
        if (kvbt_trace_load(o->trace, KVBT_FORMAT_MOONCAKE, &L->t, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
    }
    const kvbt_trace *t = &L->t;
    uint64_t n = t->n_requests;
    L->lin = kvbt_xmalloc_array((size_t)t->n_refs + 1, sizeof *L->lin);
    L->rh = kvbt_xmalloc_array((size_t)t->n_refs + 1, sizeof *L->rh);
    int rc = kvbt_trace_token_hashes(t, o->block_size, KVB_HASH_DYNAMO_SEED, L->lin);
    if (rc < 0)
        kvbt_die(prog, "hashing %s: %s", t->name, kvb_strerror(rc));
    for (uint64_t i = 0; i < t->n_refs; i++)
        L->rh[i] = kvb_hash_current(L->lin[i]);

    L->arrival_us = kvbt_xmalloc_array((size_t)n + 1, sizeof *L->arrival_us);
    L->in_tok = kvbt_xmalloc_array((size_t)n + 1, sizeof *L->in_tok);
    L->out_tok = kvbt_xmalloc_array((size_t)n + 1, sizeof *L->out_tok);
    uint64_t x = o->synth.seed ^ 0x6b76622d666c6565ull; /* "kvb-flee" */
    double clock_s = 0;
    for (uint64_t r = 0; r < n; r++) {
        uint64_t blocks = kvbt_trace_len(t, r);
        if (t->timestamp_ms) {
            L->arrival_us[r] =
                (uint64_t)llround((double)t->timestamp_ms[r] * 1000.0 / o->time_scale);
            if (r && L->arrival_us[r] < L->arrival_us[r - 1])
                L->arrival_us[r] = L->arrival_us[r - 1]; /* keep file order */
        } else {
            /* Poisson arrivals: exponential gaps of mean 1/rate, from 53 random bits. */
            double u = ((double)(fleet_rng(&x) >> 11) + 1.0) / 9007199254740993.0;
            clock_s += -log(u) / o->rate;
            L->arrival_us[r] = (uint64_t)llround(clock_s * 1e6 / o->time_scale);
        }
        if (t->input_tokens && t->input_tokens[r])
            L->in_tok[r] = t->input_tokens[r];
        else
            L->in_tok[r] = (uint32_t)(blocks * o->block_tokens);
        if (t->output_tokens)
            L->out_tok[r] = t->output_tokens[r];
        else
            L->out_tok[r] = 1 + (uint32_t)(fleet_rng(&x) % (2ull * o->out_mean - 1));
    }
}

static void fleet_load_free(fleet_load *L)
{
    free(L->lin);
    free(L->rh);
    free(L->arrival_us);
    free(L->in_tok);
    free(L->out_tok);
    kvbt_trace_free(&L->t);
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

static void fleet_columns(void)
{
    printf("%-14s %7s %8s %9s %9s %9s %9s %10s %9s %9s %7s %6s\n", "policy", "workers", "blk/wkr",
           "hit ratio", "load m/m", "load avg", "work m/m", "idx ev/s", "match p50", "match p99",
           "mispred", "early");
}

static void fleet_line(const char *name, uint32_t W, uint32_t C, const fleet_result *r)
{
    printf("%-14s %7u %8u %8.2f%% %9.3f %9.2f %9.3f %10.0f %7lluns %7lluns %7llu %6llu\n", name, W,
           C, r->refs ? 100.0 * (double)r->hits / (double)r->refs : 0.0, r->load_ratio, r->load_avg,
           r->work_ratio, r->ev_per_s, (unsigned long long)r->p50, (unsigned long long)r->p99,
           (unsigned long long)r->mispred, (unsigned long long)r->early);
    fflush(stdout);
}

static double fleet_ratio(const fleet_result *r)
{
    return r->refs ? (double)r->hits / (double)r->refs : 0.0;
}

/* Check that the router hashes the tool computes equal kvb_index_hashes() of the same
 * tokens (what a router using the index would compute): a few requests. */
static void fleet_check_hashes(const fleet_opts *o, const fleet_load *L)
{
    kvb_index_config ic;
    kvb_index *idx;
    kvb_index_config_init(&ic);
    ic.block_size = o->block_size;
    if (kvb_index_create(&ic, &idx) != 0)
        kvbt_die(prog, "kvb_index_create failed");
    const kvbt_trace *t = &L->t;
    uint32_t *tok =
        kvbt_xmalloc_array((size_t)t->max_request_blocks * o->block_size + 1, sizeof *tok);
    uint64_t *h = kvbt_xmalloc_array((size_t)t->max_request_blocks + 1, sizeof *h);
    for (uint64_t r = 0; r < t->n_requests && r < 64; r++) {
        uint64_t nt = kvbt_trace_request_tokens(t, r, o->block_size, tok);
        int nh = kvb_index_hashes(idx, tok, (size_t)nt, NULL, NULL, h, t->max_request_blocks);
        if (nh != (int)kvbt_trace_len(t, r) ||
            memcmp(h, L->rh + t->off[r], (size_t)nh * sizeof *h) != 0)
            kvbt_die(prog, "router hashes of request %llu differ from kvb_index_hashes()",
                     (unsigned long long)r);
    }
    free(tok);
    free(h);
    kvb_index_destroy(idx);
}

static void fleet_plot(const fleet_opts *o, const fleet_load *L, kvbt_progress *bar)
{
    uint64_t total = (uint64_t)o->workers * o->capacity;
    double xs[POL_COUNT][FLEET_MAX_PLOT_W], ys[POL_COUNT][FLEET_MAX_PLOT_W];
    kvbt_plot_series series[POL_COUNT];
    unsigned ns = 0;
    fleet_result ref;
    fleet_one(o, L, POL_SINGLE, 1, (uint32_t)total, bar, &ref);
    if (!o->quiet)
        printf("\nplot: hit ratio vs workers at a fixed total of %llu blocks\n",
               (unsigned long long)total);
    for (int p = 0; p < POL_COUNT; p++) {
        if (!o->pol[p])
            continue;
        kvbt_plot_series *se = &series[ns++];
        se->name = fleet_pol_names[p];
        se->n = 0;
        se->x = xs[p];
        se->y = ys[p];
        se->style = KVBT_PLOT_LINE;
        for (unsigned i = 0; i < o->n_plot_w; i++) {
            uint32_t W = o->plot_w[i];
            uint32_t C = (uint32_t)(total / W);
            if (C < L->t.max_request_blocks) {
                if (!o->quiet)
                    fprintf(stderr, "%s: note: plot point W=%u skipped (%u blocks per worker)\n",
                            prog, W, C);
                continue;
            }
            fleet_result r;
            fleet_one(o, L, (fleet_pol)p, W, C, bar, &r);
            kvbt_progress_clear(bar);
            if (!o->quiet)
                fleet_line(fleet_pol_names[p], W, C, &r);
            xs[p][se->n] = W;
            ys[p][se->n] = 100.0 * fleet_ratio(&r);
            se->n++;
        }
    }
    char title[256], subtitle[256], reflabel[96];
    snprintf(title, sizeof title, "Fleet prefix hit ratio vs workers: %s",
             L->synthetic ? "built-in synthetic workload" : L->t.name);
    snprintf(subtitle, sizeof subtitle,
             "kvb-fleet, %llu blocks in total (W x C fixed), pools %s, index %s",
             (unsigned long long)total, o->evict_name,
             o->transport == TR_ZMQ ? "over ZeroMQ" : "in process");
    snprintf(reflabel, sizeof reflabel, "one pool of %llu: %.2f%%", (unsigned long long)total,
             100.0 * fleet_ratio(&ref));
    kvbt_plot plot = {
        .title = title,
        .subtitle = subtitle,
        .xlabel = "workers (log scale)",
        .ylabel = "prefix hit ratio, %",
        .log_x = true,
        .series = series,
        .n_series = ns,
        .ref_y = 100.0 * fleet_ratio(&ref),
        .ref_label = reflabel,
    };
    char err[512];
    if (kvbt_plot_svg(o->plot, &plot, err, sizeof err) < 0)
        kvbt_die(prog, "--plot: %s", err);
    if (!o->quiet)
        printf("plot: %s\n", o->plot);
}

int main(int argc, char **argv)
{
    fleet_opts o;
    fleet_load L;
    fleet_parse_args(argc, argv, &o);
    if (o.transport == TR_ZMQ && !kvb_subscriber_available())
        kvbt_die(prog, "--transport zmq: this kvblock was built without ZeroMQ");

    fleet_load_init(&L, &o);
    fleet_check_hashes(&o, &L);
    const kvbt_trace *t = &L.t;

    unsigned runs = o.reference;
    for (int p = 0; p < POL_COUNT; p++)
        runs += o.pol[p];
    if (o.plot)
        runs += 1 + (unsigned)o.n_plot_w * (runs - o.reference);
    kvbt_progress bar;
    kvbt_progress_init(&bar, !o.quiet && isatty(STDERR_FILENO), (uint64_t)runs * t->n_requests);

    if (!o.quiet) {
        if (L.synthetic)
            printf("workload: built-in synthetic (tools/common/synth.c), seed %llu, Poisson "
                   "arrivals at %.2f req/s\n",
                   (unsigned long long)o.synth.seed, o.rate / o.time_scale);
        else
            printf("workload: %s\n", t->source);
        printf("  requests %llu, block refs %llu, unique blocks %llu, infinite-cache prefix "
               "hit ratio %.2f%%, span %.0f s\n",
               (unsigned long long)t->n_requests, (unsigned long long)t->n_refs,
               (unsigned long long)t->unique_blocks,
               t->n_refs ? 100.0 * (double)t->infinite_hits / (double)t->n_refs : 0.0,
               t->n_requests ? (double)L.arrival_us[t->n_requests - 1] / 1e6 : 0.0);
        printf("fleet: %u workers x %u blocks (%s), block size %u tokens; index %s%s\n", o.workers,
               o.capacity, o.evict_name, o.block_size,
               o.transport == TR_ZMQ ? "over ZeroMQ ipc" : "in process",
               o.transport == TR_ZMQ
                   ? (o.sync_every == 1 ? ", subscriber synced before every decision"
                                        : ", subscriber synced every --sync-every decisions")
                   : "");
        printf("service: prefill %.0f tokens/s, %.1f ms per output token, %u tokens per trace "
               "block; kv_aware guard abs %u rel %.2f, cache threshold %.2f\n\n",
               o.prefill_tps, o.tpot_ms, o.block_tokens, o.balance_abs, o.balance_rel,
               o.cache_threshold);
    }
    fleet_columns();

    fleet_result res[POL_COUNT], ref;
    bool bad = false;
    for (int p = 0; p < POL_COUNT; p++) {
        if (!o.pol[p])
            continue;
        kvbt_progress_label(&bar, "%s, %u workers", fleet_pol_names[p], o.workers);
        fleet_one(&o, &L, (fleet_pol)p, o.workers, o.capacity, &bar, &res[p]);
        kvbt_progress_clear(&bar);
        fleet_line(fleet_pol_names[p], o.workers, o.capacity, &res[p]);
        bad |= res[p].mispred || res[p].entry_mismatch;
    }
    if (o.reference) {
        uint64_t total = (uint64_t)o.workers * o.capacity;
        if (total > KVB_MAX_BLOCKS)
            kvbt_die(prog, "the reference pool of %llu blocks is too large",
                     (unsigned long long)total);
        kvbt_progress_label(&bar, "one pool of %llu blocks", (unsigned long long)total);
        fleet_one(&o, &L, POL_SINGLE, 1, (uint32_t)total, &bar, &ref);
        kvbt_progress_clear(&bar);
        fleet_line("one_pool", 1, (uint32_t)total, &ref);
        bad |= ref.mispred || ref.entry_mismatch;
    }

    if (!o.quiet) {
        if (o.pol[POL_KV_AWARE]) {
            const fleet_result *k = &res[POL_KV_AWARE];
            uint64_t d = k->affinity + k->lowmatch + k->guard;
            printf("\nkv_aware decisions: cache affinity %.1f%%, low match -> least loaded "
                   "%.1f%%, imbalance guard -> least loaded %.1f%%\n",
                   d ? 100.0 * (double)k->affinity / (double)d : 0.0,
                   d ? 100.0 * (double)k->lowmatch / (double)d : 0.0,
                   d ? 100.0 * (double)k->guard / (double)d : 0.0);
            if (o.reference) {
                double rel = fleet_ratio(&ref) > 0 ? fleet_ratio(k) / fleet_ratio(&ref) : 1.0;
                printf("target: kv_aware hit ratio within 10%% of one pool: %.2f%% vs %.2f%% "
                       "(%.1f%% of it): %s\n",
                       100.0 * fleet_ratio(k), 100.0 * fleet_ratio(&ref), 100.0 * rel,
                       rel >= 0.9 ? "met" : "NOT met");
            }
            printf("target: kv_aware load max/mean <= 1.2: %.3f: %s\n", k->load_ratio,
                   k->load_ratio <= 1.2 ? "met" : "NOT met");
        }
        printf("index check: %s (mispredictions and end-of-run entry mismatches of every "
               "run above)\n",
               bad ? "FAILED" : "every prediction equalled the pool's hit");
    }

    if (o.plot)
        fleet_plot(&o, &L, &bar);
    kvbt_progress_finish(&bar);
    fleet_load_free(&L);
    if (o.verify && bad) {
        fprintf(stderr, "%s: --verify: the index disagreed with the pools\n", prog);
        return 1;
    }
    return 0;
}
