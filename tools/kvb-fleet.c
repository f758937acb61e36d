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
 */
#include "kvblock.h"
#include "kvblock/index.h"
#include "kvblock/publisher.h"
#include "kvblock/subscriber.h"

#include "common/args.h"
#include "common/plot.h"
#include "common/progress.h"
#include "common/synth.h"
#include "common/tokhash.h"
#include "common/trace.h"
#include "common/util.h"

#include <getopt.h>
#include <math.h>
#include <unistd.h>

static const char *prog = "kvb-fleet";

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum {
    POL_ROUND_ROBIN = 0,
    POL_LEAST_LOADED,
    POL_KV_AWARE,
    POL_COUNT,
    POL_SINGLE
} fleet_pol;

static const char *const fleet_pol_names[POL_COUNT] = {"round_robin", "least_loaded", "kv_aware"};

typedef enum { TR_INPROC = 0, TR_ZMQ } fleet_transport;

#define FLEET_MAX_PLOT_W 16

typedef struct fleet_opts {
    const char *trace;
    bool pol[POL_COUNT];
    bool reference;
    uint32_t workers, capacity, block_size, block_tokens;
    const char *evict_name;
    kvb_evict_policy evict;
    double prefill_tps, tpot_ms, time_scale, rate;
    uint32_t out_mean;
    uint32_t balance_abs;
    double balance_rel, cache_threshold;
    fleet_transport transport;
    uint32_t sync_every;
    const char *plot;
    uint32_t plot_w[FLEET_MAX_PLOT_W];
    unsigned n_plot_w;
    bool quick, quiet, verify;
    bool guard_target; /* --guard target: the imbalance of the cache-aware pick */
    kvbt_synth_params synth;
    bool synth_set;
} fleet_opts;

static void fleet_usage(FILE *f)
{
    fprintf(
        f, "NAME\n"
           "    kvb-fleet - route a trace over W kvblock pools through the fleet index\n"
           "\n"
           "SYNOPSIS\n"
           "    kvb-fleet [--trace FILE] [--workers W] [--capacity C] [--policy LIST]\n"
           "              [--transport inproc|zmq] [--plot FILE.svg] [options]\n"
           "\n"
           "DESCRIPTION\n"
           "    Simulates a serving fleet of W workers, each a kvblock pool of C blocks\n"
           "    (eviction policy --evict). Every pool's KV events (STORED, REMOVED,\n"
           "    CLEARED) feed one kvb_index, in process or over ZeroMQ ipc. A router\n"
           "    places each request, in arrival order, by policy; the chosen pool then\n"
           "    serves it: prefix match, allocate and register the rest, hold the blocks\n"
           "    while the request runs, release them (last block first) when it\n"
           "    completes. Before each decision kvb_index_match is called (and timed)\n"
           "    with the request's router hashes; its prediction for the chosen worker\n"
           "    is checked against the pool's real prefix hit.\n"
           "\n"
           "    One line per routing policy, plus a reference line: one pool of W x C\n"
           "    blocks serving the same requests (the target of kv-aware routing:\n"
           "    within 10%% of its hit ratio with load max/mean <= 1.2).\n"
           "\n"
           "POLICIES\n"
           "    round_robin    request i goes to worker i mod W\n"
           "    least_loaded   fewest requests in flight (ties: the first after the\n"
           "                   last choice, in worker order)\n"
           "    kv_aware       SGLang's cache-aware rule over the index: if the load is\n"
           "                   imbalanced, i.e. (max - min) > --balance-abs AND\n"
           "                   max > min x --balance-rel, least loaded; otherwise the\n"
           "                   worker with the longest cached prefix (from\n"
           "                   kvb_index_match; ties: least loaded) when that prefix is\n"
           "                   more than --cache-threshold of the request, else least\n"
           "                   loaded\n"
           "\n"
           "DIFFERENCES FROM SGLANG'S cache_aware (sgl-router)\n"
           "    - The prefix comes from the event-fed index (the engines' real caches),\n"
           "      not from an approximate radix tree of the text the router has sent.\n"
           "    - The match share is in blocks, not characters.\n"
           "    - Ties are broken deterministically (rotation), not at random; among the\n"
           "      workers with the longest prefix the least loaded wins (SGLang's tree\n"
           "      names one tenant).\n"
           "    - --balance-abs defaults to 4, not 64: sgl-router's default suits tens of\n"
           "      requests in flight per worker, this fleet runs 2 to 7. --balance-rel 1.5\n"
           "      and --cache-threshold 0.3 are sgl-router's defaults.\n"
           "    - Load is requests in flight from the service model below; SGLang counts\n"
           "      the requests it sent that have not finished (the same quantity).\n"
           "\n"
           "OPTIONS\n"
           "    --trace FILE         Mooncake JSON-lines trace (../shared/data/mooncake/*.jsonl);\n"
           "                         default: the built-in synthetic workload\n"
           "    --workers W          workers (default 8)\n"
           "    --capacity C         blocks per worker (default 2000)\n"
           "    --policy LIST        all (default) or comma-separated policy names\n"
           "    --no-reference       skip the one-pool reference line\n"
           "    --evict NAME         pool eviction policy (default lru; any built-in\n"
           "                         backend the library lists, kvb_inactive_policy)\n"
           "    --block-size N       tokens per pool block and router hash block\n"
           "                         (default 16); each trace block id becomes N tokens\n"
           "    --block-tokens N     tokens a trace block stands for in the service\n"
           "                         model (default 512, the Mooncake traces' block)\n"
           "    --prefill-tps X      prefill throughput of a worker, tokens/s (default 10000)\n"
           "    --tpot-ms X          decode time per output token, ms (default 20)\n"
           "    --time-scale X       divide trace timestamps by X (default 1)\n"
           "    --rate X             built-in workload: Poisson arrivals, requests/s\n"
           "                         (default 3.4, the conversation trace's rate)\n"
           "    --out-mean N         built-in workload: mean output tokens (default 343)\n"
           "    --balance-abs N      kv_aware imbalance guard, absolute (default 4)\n"
           "    --balance-rel X      kv_aware imbalance guard, relative (default 1.5)\n"
           "    --guard global|target  kv_aware imbalance test: global (default, SGLang's:\n"
           "                         max and min load of the fleet) or target (the load of\n"
           "                         the cache-aware pick against the minimum)\n"
           "    --cache-threshold X  kv_aware: least prefix share for cache affinity\n"
           "                         (default 0.3, SGLang's)\n"
           "    --transport T        inproc (default) or zmq (publishers + subscriber on\n"
           "                         ipc:// endpoints in a temporary directory)\n"
           "    --sync-every N       zmq: wait for the subscriber before every N-th\n"
           "                         decision (default 1: every decision; 0: only at the\n"
           "                         end). Between barriers the index may lag by the\n"
           "                         batches published since the last one.\n"
           "    --verify             exit 1 unless every prediction of the index equals\n"
           "                         the pool's hit and every stream's entries equal its\n"
           "                         pool's cached-or-active blocks at the end\n"
           "    --plot FILE.svg      hit ratio vs number of workers (--plot-workers, at the\n"
           "                         fixed total capacity W x C of the main run) for\n"
           "                         each policy, with the one-pool reference\n"
           "    --plot-workers LIST  default 1,2,4,8,16\n"
           "    --seed S             built-in workload seed (default 1); also the seed of\n"
           "                         its arrivals and output lengths\n"
           "    --requests N         built-in workload requests (default 12000)\n"
           "    --quick              a CI-sized run: 2000 built-in requests, 4 workers of\n"
           "                         500 blocks (explicit options still apply)\n"
           "    --quiet              results only\n"
           "    --help               this text\n"
           "\n"
           "LOAD AND SERVICE MODEL\n"
           "    A worker's load is its requests in flight. A request's service time is\n"
           "    the prefill of its uncached tokens (input tokens minus hit blocks x\n"
           "    --block-tokens) at --prefill-tps, plus output tokens x --tpot-ms.\n"
           "    \"load m/m\" (max/mean) = sum over decisions of the largest load / sum of\n"
           "    the mean load, sampled before each decision; \"load avg\" = the mean load\n"
           "    (requests in flight per worker); \"work m/m\" = the largest worker's\n"
           "    tokens (prefilled + decoded) over the mean. With a few requests in flight\n"
           "    per worker, integer loads keep even least_loaded above 1: compare with\n"
           "    its line, or raise the concurrency with --time-scale.\n"
           "\n"
           "OUTPUT COLUMNS\n"
           "    hit ratio       pool prefix hits / block references (fleet-wide)\n"
           "    idx ev/s        inproc: events applied / seconds inside kvb_index_apply;\n"
           "                    zmq: events applied / wall seconds of the whole replay\n"
           "    match p50/p99   ns, measured around kvb_index_match (k = W results)\n"
           "    mispred         decisions whose index prediction for the chosen worker\n"
           "                    differed from the pool's hit\n"
           "    early           requests released early because their worker's pool\n"
           "                    had no room for a new request's blocks\n"
           "\n"
           "EXIT STATUS\n"
           "    0 ok, 1 error (or a failed --verify), 2 bad usage.\n"
           "\n"
           "EXAMPLES\n"
           "    kvb-fleet\n"
           "    kvb-fleet --trace ../shared/data/mooncake/mooncake_conversation_trace.jsonl\n"
           "    kvb-fleet --quick --transport zmq --verify\n"
           "    kvb-fleet --plot fleet.svg\n");
}

/* --policy: all, or a comma list of routing policies */
static void fleet_add_policy(const char *item, void *arg)
{
    fleet_opts *o = arg;
    o->pol[kvbt_arg_choice(prog, "--policy", item, fleet_pol_names, POL_COUNT)] = true;
}

static void fleet_parse_args(int argc, char **argv, fleet_opts *o)
{
    enum {
        O_TRACE = 256,
        O_WORKERS,
        O_CAPACITY,
        O_POLICY,
        O_NOREF,
        O_EVICT,
        O_BLOCK_SIZE,
        O_BLOCK_TOKENS,
        O_PREFILL,
        O_TPOT,
        O_TIME_SCALE,
        O_RATE,
        O_OUT_MEAN,
        O_BAL_ABS,
        O_BAL_REL,
        O_CACHE_THR,
        O_TRANSPORT,
        O_SYNC_EVERY,
        O_VERIFY,
        O_PLOT,
        O_PLOT_W,
        O_SEED,
        O_REQUESTS,
        O_QUICK,
        O_QUIET,
        O_GUARD,
        O_HELP
    };
    static const struct option longopts[] = {
        {"trace", required_argument, NULL, O_TRACE},
        {"workers", required_argument, NULL, O_WORKERS},
        {"capacity", required_argument, NULL, O_CAPACITY},
        {"policy", required_argument, NULL, O_POLICY},
        {"no-reference", no_argument, NULL, O_NOREF},
        {"evict", required_argument, NULL, O_EVICT},
        {"block-size", required_argument, NULL, O_BLOCK_SIZE},
        {"block-tokens", required_argument, NULL, O_BLOCK_TOKENS},
        {"prefill-tps", required_argument, NULL, O_PREFILL},
        {"tpot-ms", required_argument, NULL, O_TPOT},
        {"time-scale", required_argument, NULL, O_TIME_SCALE},
        {"rate", required_argument, NULL, O_RATE},
        {"out-mean", required_argument, NULL, O_OUT_MEAN},
        {"balance-abs", required_argument, NULL, O_BAL_ABS},
        {"balance-rel", required_argument, NULL, O_BAL_REL},
        {"cache-threshold", required_argument, NULL, O_CACHE_THR},
        {"transport", required_argument, NULL, O_TRANSPORT},
        {"sync-every", required_argument, NULL, O_SYNC_EVERY},
        {"verify", no_argument, NULL, O_VERIFY},
        {"plot", required_argument, NULL, O_PLOT},
        {"plot-workers", required_argument, NULL, O_PLOT_W},
        {"seed", required_argument, NULL, O_SEED},
        {"requests", required_argument, NULL, O_REQUESTS},
        {"quick", no_argument, NULL, O_QUICK},
        {"quiet", no_argument, NULL, O_QUIET},
        {"guard", required_argument, NULL, O_GUARD},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    static const char *const transports[] = {"inproc", "zmq"}; /* fleet_transport order */
    static const char *const guards[] = {"global", "target"};
    bool workers_set = false, capacity_set = false, requests_set = false;
    const char *policy = "all", *plot_w = "1,2,4,8,16";
    int c;

    memset(o, 0, sizeof *o);
    o->reference = true;
    o->workers = 8;
    o->capacity = 2000;
    o->block_size = 16;
    o->block_tokens = 512;
    o->evict_name = "lru";
    o->prefill_tps = 10000;
    o->tpot_ms = 20;
    o->time_scale = 1;
    o->rate = 3.4;
    o->out_mean = 343;
    o->balance_abs = 4;
    o->balance_rel = 1.5;
    o->cache_threshold = 0.3;
    o->sync_every = 1;
    kvbt_synth_defaults(&o->synth);

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case O_TRACE:
            o->trace = optarg;
            break;
        case O_WORKERS:
            o->workers = (uint32_t)kvbt_arg_u64(prog, "--workers", optarg, 1, 1024);
            workers_set = true;
            break;
        case O_CAPACITY:
            o->capacity = (uint32_t)kvbt_arg_u64(prog, "--capacity", optarg, 1, KVB_MAX_BLOCKS);
            capacity_set = true;
            break;
        case O_POLICY:
            policy = optarg;
            break;
        case O_NOREF:
            o->reference = false;
            break;
        case O_EVICT:
            o->evict_name = optarg;
            break;
        case O_BLOCK_SIZE:
            o->block_size = (uint32_t)kvbt_arg_u64(prog, "--block-size", optarg, 1, 1024);
            if (o->block_size & (o->block_size - 1))
                kvbt_usage_error(prog, "--block-size: %u is not a power of two", o->block_size);
            break;
        case O_BLOCK_TOKENS:
            o->block_tokens = (uint32_t)kvbt_arg_u64(prog, "--block-tokens", optarg, 1, 1u << 20);
            break;
        case O_PREFILL:
            o->prefill_tps = kvbt_arg_double(prog, "--prefill-tps", optarg, 1, 1e12);
            break;
        case O_TPOT:
            o->tpot_ms = kvbt_arg_double(prog, "--tpot-ms", optarg, 0, 1e6);
            break;
        case O_TIME_SCALE:
            o->time_scale = kvbt_arg_double(prog, "--time-scale", optarg, 1e-6, 1e9);
            break;
        case O_RATE:
            o->rate = kvbt_arg_double(prog, "--rate", optarg, 1e-6, 1e9);
            break;
        case O_OUT_MEAN:
            o->out_mean = (uint32_t)kvbt_arg_u64(prog, "--out-mean", optarg, 1, 1000000);
            break;
        case O_BAL_ABS:
            o->balance_abs = (uint32_t)kvbt_arg_u64(prog, "--balance-abs", optarg, 0, 1u << 30);
            break;
        case O_BAL_REL:
            o->balance_rel = kvbt_arg_double(prog, "--balance-rel", optarg, 0, 1e9);
            break;
        case O_CACHE_THR:
            o->cache_threshold = kvbt_arg_double(prog, "--cache-threshold", optarg, 0, 1);
            break;
        case O_TRANSPORT:
            o->transport =
                (fleet_transport)kvbt_arg_choice(prog, "--transport", optarg, transports, 2);
            break;
        case O_SYNC_EVERY:
            o->sync_every = (uint32_t)kvbt_arg_u64(prog, "--sync-every", optarg, 0, 1u << 30);
            break;
        case O_VERIFY:
            o->verify = true;
            break;
        case O_PLOT:
            o->plot = optarg;
            break;
        case O_PLOT_W:
            plot_w = optarg;
            break;
        case O_SEED:
            o->synth.seed = kvbt_arg_u64(prog, "--seed", optarg, 0, UINT64_MAX);
            o->synth_set = true;
            break;
        case O_REQUESTS:
            o->synth.requests = kvbt_arg_u64(prog, "--requests", optarg, 1, 100000000);
            o->synth_set = requests_set = true;
            break;
        case O_GUARD:
            o->guard_target = kvbt_arg_choice(prog, "--guard", optarg, guards, 2) == 1;
            break;
        case O_QUICK:
            o->quick = true;
            break;
        case O_QUIET:
            o->quiet = true;
            break;
        case 'h':
        case O_HELP:
            fleet_usage(stdout);
            exit(0);
        default:
            kvbt_usage_getopt(prog, c, argv);
        }
    }
    kvbt_usage_no_operands(prog, argc, argv);
    if (o->quick) {
        if (!requests_set)
            o->synth.requests = 2000;
        if (!workers_set)
            o->workers = 4;
        if (!capacity_set)
            o->capacity = 500;
    }
    o->evict = kvbt_arg_policy(prog, "--evict", o->evict_name);

    if (strcmp(policy, "all") == 0) {
        for (int p = 0; p < POL_COUNT; p++)
            o->pol[p] = true;
    } else {
        kvbt_arg_each(prog, "--policy", policy, fleet_add_policy, o);
    }
    o->n_plot_w = kvbt_arg_count_list(prog, "--plot-workers", plot_w, 1, 1024, o->plot_w,
                                      FLEET_MAX_PLOT_W);
}

/* ------------------------------------------------------------------------ */
/* Workload                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct fleet_load {
    kvbt_trace t;
    bool synthetic;
    kvb_hash *lin;        /* lineage hash of every block reference (pool keys) */
    uint64_t *rh;         /* router hash of every block reference (index keys) */
    uint64_t *arrival_us; /* per request, non-decreasing */
    uint32_t *in_tok, *out_tok;
} fleet_load;

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
/* The simulation                                                           */
/* ------------------------------------------------------------------------ */

typedef struct fleet_sim fleet_sim;

typedef struct fleet_worker {
    fleet_sim *sim;
    uint32_t id;
    char name[16];
    kvb_pool *pool;
    kvb_event_config ev;
    /* in process */
    uint32_t stream;
    int64_t batch_seq; /* sequence number of the next batch applied */
    /* zmq */
    kvb_publisher *pub;
    bool dirty; /* published since the last barrier */
    /* load */
    uint32_t load;
    uint64_t work_tokens;
    uint64_t head, tail; /* in-flight requests in arrival order (doubly linked) */
} fleet_worker;

#define FLEET_NONE UINT64_MAX

struct fleet_sim {
    const fleet_opts *o;
    const fleet_load *L;
    fleet_pol pol;
    uint32_t W, C;
    fleet_worker *w;
    kvb_index *idx;
    kvb_subscriber *sub;
    char tmpdir[64];

    /* sink scratch (in process) */
    kvb_index_event *evs;
    uint32_t evs_cap;
    uint64_t *hs;
    size_t hs_cap;
    uint64_t apply_ns;

    /* requests */
    kvb_block **blk; /* per request: its held handles (NULL when not running) */
    uint32_t *req_worker;
    uint64_t *finish_us;
    uint64_t *prev, *next; /* per-worker in-flight lists */
    uint64_t *heap;        /* running requests by (finish, index) */
    uint64_t heap_n;

    /* routing */
    kvb_index_result *res;
    uint32_t *pred; /* per worker: predicted prefix of this request */
    uint32_t rr, ll_rot;

    /* results */
    uint64_t hits, refs, mispred, early, guard, affinity, lowmatch, entry_mismatch;
    double sum_max, sum_mean;
    uint32_t *lat_ns;
    uint64_t n_lat;
    uint64_t wall_ns;
    kvb_index_stats istats;
};

typedef struct fleet_result {
    uint64_t hits, refs, mispred, early, guard, affinity, lowmatch, entry_mismatch;
    double load_ratio, load_avg, work_ratio, ev_per_s;
    uint64_t events, p50, p99;
} fleet_result;

/* ---- heap of running requests ---- */

static bool fleet_before(const fleet_sim *s, uint64_t a, uint64_t b)
{
    return s->finish_us[a] < s->finish_us[b] || (s->finish_us[a] == s->finish_us[b] && a < b);
}

static void fleet_heap_push(fleet_sim *s, uint64_t r)
{
    uint64_t i = s->heap_n++;
    while (i > 0) {
        uint64_t p = (i - 1) / 2;
        if (!fleet_before(s, r, s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = r;
}

static uint64_t fleet_heap_pop(fleet_sim *s)
{
    uint64_t top = s->heap[0], last = s->heap[--s->heap_n], i = 0;
    for (;;) {
        uint64_t c = 2 * i + 1;
        if (c >= s->heap_n)
            break;
        if (c + 1 < s->heap_n && fleet_before(s, s->heap[c + 1], s->heap[c]))
            c++;
        if (!fleet_before(s, s->heap[c], last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n)
        s->heap[i] = last;
    return top;
}

/* ---- event sinks ---- */

static void fleet_sink_inproc(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n)
{
    fleet_worker *w = user;
    fleet_sim *s = w->sim;
    size_t nh = 0;
    (void)pool;
    for (uint32_t i = 0; i < n; i++)
        nh += events[i].n;
    if (n > s->evs_cap) {
        s->evs_cap = n * 2;
        s->evs = kvbt_xrealloc(s->evs, s->evs_cap * sizeof *s->evs);
    }
    if (nh > s->hs_cap) {
        s->hs_cap = nh * 2;
        s->hs = kvbt_xrealloc(s->hs, s->hs_cap * sizeof *s->hs);
    }
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        const kvb_event *e = &events[i];
        kvb_index_event *x = &s->evs[i];
        memset(x, 0, sizeof *x);
        x->type = e->type == KVB_EVENT_STORED    ? KVB_INDEX_EV_STORED
                  : e->type == KVB_EVENT_REMOVED ? KVB_INDEX_EV_REMOVED
                                                 : KVB_INDEX_EV_CLEARED;
        x->tier = KVB_TIER_DEVICE;
        x->n_hashes = e->n;
        x->hashes = s->hs + at;
        for (uint32_t j = 0; j < e->n; j++)
            s->hs[at++] = kvb_hash_current(e->hashes[j]);
        x->has_parent = e->type == KVB_EVENT_STORED && e->has_parent;
        x->parent = x->has_parent ? kvb_hash_current(e->parent) : 0;
        x->block_size = 0; /* the stream's */
    }
    uint64_t t0 = kvbt_now_ns();
    int rc = kvb_index_apply(s->idx, w->stream, s->evs, n, w->batch_seq++);
    s->apply_ns += kvbt_now_ns() - t0;
    if (rc < 0)
        kvbt_die(prog, "kvb_index_apply (worker %s): %s", w->name, kvb_strerror(rc));
}

static void fleet_sink_zmq(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n)
{
    fleet_worker *w = user;
    w->dirty = true;
    kvb_publisher_sink(w->pub, pool, events, n);
}

/* ---- zmq barrier ---- */

static bool fleet_stream_caught_up(fleet_sim *s, fleet_worker *w, int64_t want)
{
    uint32_t sid;
    kvb_index_stream_info info;
    if (kvb_index_stream_find(s->idx, w->name, KVB_INDEX_NO_RANK, &sid) != 0)
        return false;
    if (kvb_index_stream_info_get(s->idx, sid, &info) != 0)
        return false;
    return info.last_seq >= want;
}

static void fleet_zmq_barrier(fleet_sim *s)
{
    int64_t *want = kvbt_xmalloc_array(s->W, sizeof *want);
    bool any = false;
    for (uint32_t i = 0; i < s->W; i++) {
        fleet_worker *w = &s->w[i];
        want[i] = -1;
        if (!w->dirty)
            continue;
        int rc = kvb_publisher_flush(w->pub, 10000);
        if (rc < 0)
            kvbt_die(prog, "kvb_publisher_flush (%s): %s", w->name, kvb_strerror(rc));
        kvb_publisher_stats ps;
        kvb_publisher_stats_get(w->pub, &ps);
        if (ps.dropped)
            kvbt_die(prog, "publisher %s dropped %llu batches", w->name,
                     (unsigned long long)ps.dropped);
        want[i] = ps.last_seq;
        w->dirty = false;
        any = true;
    }
    uint64_t deadline = kvbt_now_ns() + 10000000000ull;
    while (any) {
        int rc = kvb_subscriber_sync(s->sub, 1000);
        if (rc < 0 && rc != -ETIMEDOUT)
            kvbt_die(prog, "kvb_subscriber_sync: %s", kvb_strerror(rc));
        bool all = true;
        for (uint32_t i = 0; i < s->W && all; i++)
            if (want[i] >= 0 && !fleet_stream_caught_up(s, &s->w[i], want[i]))
                all = false;
        if (all)
            break;
        if (kvbt_now_ns() > deadline)
            kvbt_die(prog, "the subscriber did not apply the published batches within 10 s");
        usleep(50);
    }
    free(want);
}

/* ---- setup and teardown ---- */

static void fleet_sim_init(fleet_sim *s, const fleet_opts *o, const fleet_load *L, fleet_pol pol,
                           uint32_t W, uint32_t C)
{
    int rc;
    uint64_t n = L->t.n_requests;
    memset(s, 0, sizeof *s);
    s->o = o;
    s->L = L;
    s->pol = pol;
    s->W = W;
    s->C = C;

    kvb_index_config ic;
    kvb_index_config_init(&ic);
    ic.block_size = o->block_size;
    rc = kvb_index_create(&ic, &s->idx);
    if (rc < 0)
        kvbt_die(prog, "kvb_index_create: %s", kvb_strerror(rc));

    bool zmq = o->transport == TR_ZMQ;
    if (zmq) {
        snprintf(s->tmpdir, sizeof s->tmpdir, "/tmp/kvb-fleet-XXXXXX");
        if (!mkdtemp(s->tmpdir))
            kvbt_die(prog, "mkdtemp: %s", strerror(errno));
        kvb_subscriber_config sc;
        kvb_subscriber_config_init(&sc);
        sc.index = s->idx;
        rc = kvb_subscriber_create(&sc, &s->sub);
        if (rc < 0)
            kvbt_die(prog, "kvb_subscriber_create: %s%s", kvb_strerror(rc),
                     rc == -ENOTSUP ? " (kvblock built without ZeroMQ)" : "");
    }

    s->w = calloc(W, sizeof *s->w);
    if (!s->w)
        kvbt_die(prog, "out of memory");
    for (uint32_t i = 0; i < W; i++) {
        fleet_worker *w = &s->w[i];
        w->sim = s;
        w->id = i;
        w->head = w->tail = FLEET_NONE;
        snprintf(w->name, sizeof w->name, "w%u", i);
        kvb_event_config_init(&w->ev);
        w->ev.user = w;
        if (zmq) {
            char ep[128], rep[128];
            snprintf(ep, sizeof ep, "ipc://%s/%s.pub", s->tmpdir, w->name);
            snprintf(rep, sizeof rep, "ipc://%s/%s.replay", s->tmpdir, w->name);
            kvb_publisher_config pc;
            kvb_publisher_config_init(&pc);
            pc.endpoint = ep;
            pc.replay_endpoint = rep;
            pc.topic = "kv";
            rc = kvb_publisher_create(&pc, &w->pub);
            if (rc < 0)
                kvbt_die(prog, "kvb_publisher_create (%s): %s", ep, kvb_strerror(rc));
            w->ev.sink = fleet_sink_zmq;
            kvb_subscriber_worker sw;
            memset(&sw, 0, sizeof sw);
            sw.name = w->name;
            sw.endpoint = ep;
            sw.replay_endpoint = rep;
            sw.kind = KVB_WIRE_KVBLOCK;
            sw.topic = "kv";
            rc = kvb_subscriber_add_worker(s->sub, &sw);
            if (rc < 0)
                kvbt_die(prog, "kvb_subscriber_add_worker (%s): %s", ep, kvb_strerror(rc));
        } else {
            kvb_index_stream_config sc;
            memset(&sc, 0, sizeof sc);
            sc.name = w->name;
            sc.dp_rank = KVB_INDEX_NO_RANK;
            sc.hashes = KVB_INDEX_HASHES_ROUTER;
            rc = kvb_index_stream_add(s->idx, &sc, &w->stream);
            if (rc < 0)
                kvbt_die(prog, "kvb_index_stream_add: %s", kvb_strerror(rc));
            w->ev.sink = fleet_sink_inproc;
        }
        kvb_pool_config cfg;
        kvb_pool_config_init(&cfg);
        cfg.block_count = C;
        cfg.block_size = o->block_size;
        cfg.evict = o->evict;
        cfg.name = w->name;
        cfg.events = &w->ev;
        rc = kvb_pool_create(&cfg, &w->pool);
        if (rc < 0)
            kvbt_die(prog, "kvb_pool_create (%u blocks): %s", C, kvb_strerror(rc));
    }
    if (zmq) {
        /* Every SUB socket connected, then a pause for the subscriptions to reach the
         * publishers (ZeroMQ's slow joiner); a batch lost anyway is replayed. */
        uint64_t deadline = kvbt_now_ns() + 10000000000ull;
        for (uint32_t i = 0; i < W; i++) {
            kvb_subscriber_worker_info wi;
            while (kvb_subscriber_worker_info_get(s->sub, s->w[i].name, &wi) != 0 ||
                   !wi.connected) {
                if (kvbt_now_ns() > deadline)
                    kvbt_die(prog, "the subscriber did not connect to %s within 10 s",
                             s->w[i].name);
                usleep(1000);
            }
        }
        usleep(200000);
    }

    s->blk = calloc(n + 1, sizeof *s->blk);
    s->req_worker = kvbt_xmalloc_array(n + 1, sizeof *s->req_worker);
    s->finish_us = kvbt_xmalloc_array(n + 1, sizeof *s->finish_us);
    s->prev = kvbt_xmalloc_array(n + 1, sizeof *s->prev);
    s->next = kvbt_xmalloc_array(n + 1, sizeof *s->next);
    s->heap = kvbt_xmalloc_array(n + 1, sizeof *s->heap);
    s->res = kvbt_xmalloc_array(W, sizeof *s->res);
    s->pred = kvbt_xmalloc_array(W, sizeof *s->pred);
    s->lat_ns = kvbt_xmalloc_array(n + 1, sizeof *s->lat_ns);
    if (!s->blk)
        kvbt_die(prog, "out of memory");
}

static void fleet_sim_fini(fleet_sim *s)
{
    int rc;
    for (uint32_t i = 0; i < s->W; i++) {
        rc = kvb_pool_destroy(s->w[i].pool);
        if (rc != 0)
            kvbt_die(prog, "kvb_pool_destroy (%s): %s", s->w[i].name, kvb_strerror(rc));
    }
    if (s->sub)
        kvb_subscriber_destroy(s->sub);
    for (uint32_t i = 0; i < s->W; i++)
        if (s->w[i].pub)
            kvb_publisher_destroy(s->w[i].pub);
    kvb_index_destroy(s->idx);
    if (s->tmpdir[0]) {
        char path[160];
        for (uint32_t i = 0; i < s->W; i++) {
            snprintf(path, sizeof path, "%s/%s.pub", s->tmpdir, s->w[i].name);
            unlink(path);
            snprintf(path, sizeof path, "%s/%s.replay", s->tmpdir, s->w[i].name);
            unlink(path);
        }
        rmdir(s->tmpdir);
    }
    free(s->w);
    free(s->evs);
    free(s->hs);
    free(s->blk);
    free(s->req_worker);
    free(s->finish_us);
    free(s->prev);
    free(s->next);
    free(s->heap);
    free(s->res);
    free(s->pred);
    free(s->lat_ns);
}

/* ---- request lifecycle ---- */

/* Release request r's blocks (last block first) and take it off its worker. */
static void fleet_release(fleet_sim *s, uint64_t r)
{
    fleet_worker *w = &s->w[s->req_worker[r]];
    uint32_t n = (uint32_t)kvbt_trace_len(&s->L->t, r);
    kvb_block *b = s->blk[r];
    for (uint32_t a = 0, z = n ? n - 1 : 0; a < z; a++, z--) {
        kvb_block tmp = b[a];
        b[a] = b[z];
        b[z] = tmp;
    }
    int rc = kvb_block_release_n(b, n);
    if (rc < 0)
        kvbt_die(prog, "kvb_block_release_n: %s", kvb_strerror(rc));
    free(b);
    s->blk[r] = NULL;
    /* unlink */
    if (s->prev[r] != FLEET_NONE)
        s->next[s->prev[r]] = s->next[r];
    else
        w->head = s->next[r];
    if (s->next[r] != FLEET_NONE)
        s->prev[s->next[r]] = s->prev[r];
    else
        w->tail = s->prev[r];
    w->load--;
}

static void fleet_complete_until(fleet_sim *s, uint64_t t_us)
{
    while (s->heap_n && s->finish_us[s->heap[0]] <= t_us) {
        uint64_t r = fleet_heap_pop(s);
        if (s->blk[r]) /* not released early */
            fleet_release(s, r);
    }
}

/* Least loaded worker; ties: the first at or after the rotation point. */
static uint32_t fleet_least_loaded(fleet_sim *s)
{
    uint32_t best = s->ll_rot % s->W;
    for (uint32_t k = 1; k < s->W; k++) {
        uint32_t i = (s->ll_rot + k) % s->W;
        if (s->w[i].load < s->w[best].load)
            best = i;
    }
    s->ll_rot = best + 1;
    return best;
}

static uint32_t fleet_worker_of(const kvb_index_result *x)
{
    return (uint32_t)strtoul(x->worker + 1, NULL, 10);
}

static uint32_t fleet_route(fleet_sim *s, uint32_t n, int nres)
{
    switch (s->pol) {
    case POL_ROUND_ROBIN:
        return s->rr++ % s->W;
    case POL_LEAST_LOADED:
        return fleet_least_loaded(s);
    case POL_KV_AWARE: {
        uint32_t mn = UINT32_MAX, mx = 0;
        for (uint32_t i = 0; i < s->W; i++) {
            mn = s->w[i].load < mn ? s->w[i].load : mn;
            mx = s->w[i].load > mx ? s->w[i].load : mx;
        }
        if (!s->o->guard_target && mx - mn > s->o->balance_abs &&
            (double)mx > (double)mn * s->o->balance_rel) {
            s->guard++;
            return fleet_least_loaded(s);
        }
        uint32_t k = (uint32_t)(nres < (int)s->W ? nres : (int)s->W);
        uint32_t best = k ? s->res[0].device : 0;
        if (n && (double)best / n > s->o->cache_threshold) {
            uint32_t pick = fleet_worker_of(&s->res[0]);
            for (uint32_t j = 1; j < k && s->res[j].device == best; j++) {
                uint32_t c = fleet_worker_of(&s->res[j]);
                if (s->w[c].load < s->w[pick].load)
                    pick = c;
            }
            uint32_t pl = s->w[pick].load;
            if (s->o->guard_target && pl - mn > s->o->balance_abs &&
                (double)pl > (double)mn * s->o->balance_rel) {
                s->guard++;
                return fleet_least_loaded(s);
            }
            s->affinity++;
            return pick;
        }
        s->lowmatch++;
        return fleet_least_loaded(s);
    }
    default:
        return 0;
    }
}

static int fleet_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void fleet_run(fleet_sim *s, kvbt_progress *prog_bar, fleet_result *out)
{
    const fleet_load *L = s->L;
    const kvbt_trace *t = &L->t;
    const fleet_opts *o = s->o;
    bool zmq = o->transport == TR_ZMQ;
    uint64_t n_req = t->n_requests;
    size_t maxn = (size_t)t->max_request_blocks + 1;
    kvb_mutable *mut = kvbt_xmalloc_array(maxn, sizeof *mut);
    kvb_complete *cmp = kvbt_xmalloc_array(maxn, sizeof *cmp);
    int rc;

    uint64_t t_start = kvbt_now_ns();
    for (uint64_t r = 0; r < n_req; r++) {
        const uint32_t n = (uint32_t)kvbt_trace_len(t, r);
        const uint64_t off = t->off[r];

        fleet_complete_until(s, L->arrival_us[r]);
        if (zmq && o->sync_every && r % o->sync_every == 0)
            fleet_zmq_barrier(s);

        /* load sample */
        uint32_t mx = 0, tot = 0;
        for (uint32_t i = 0; i < s->W; i++) {
            mx = s->w[i].load > mx ? s->w[i].load : mx;
            tot += s->w[i].load;
        }
        s->sum_max += mx;
        s->sum_mean += (double)tot / s->W;

        /* the index's view */
        uint64_t t0 = kvbt_now_ns();
        int nres = kvb_index_match(s->idx, L->rh + off, n, s->res, s->W);
        uint64_t dt = kvbt_now_ns() - t0;
        if (nres < 0)
            kvbt_die(prog, "kvb_index_match: %s", kvb_strerror(nres));
        s->lat_ns[s->n_lat++] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
        memset(s->pred, 0, s->W * sizeof *s->pred);
        for (int j = 0; j < nres && j < (int)s->W; j++) {
            uint32_t wi = fleet_worker_of(&s->res[j]);
            if (wi < s->W)
                s->pred[wi] = s->res[j].device;
        }

        uint32_t wi = s->pol == POL_SINGLE ? 0 : fleet_route(s, n, nres);
        fleet_worker *w = &s->w[wi];

        /* serve on w */
        kvb_block *blk = kvbt_xmalloc_array(n + 1, sizeof *blk);
        rc = kvb_pool_match(w->pool, L->lin + off, n, blk);
        if (rc < 0)
            kvbt_die(prog, "kvb_pool_match: %s", kvb_strerror(rc));
        uint32_t k = (uint32_t)rc;
        if (k != s->pred[wi])
            s->mispred++;
        s->hits += k;
        s->refs += n;
        uint32_t m = n - k;
        if (m) {
            while ((rc = kvb_pool_allocate(w->pool, m, mut, NULL, NULL)) == -ENOSPC &&
                   w->head != FLEET_NONE) {
                fleet_release(s, w->head); /* too much held: the oldest goes early */
                s->early++;
            }
            if (rc < 0)
                kvbt_die(prog, "kvb_pool_allocate (%u blocks on %s): %s", m, w->name,
                         kvb_strerror(rc));
            rc = kvb_pool_stage(w->pool, mut, L->lin + off + k, m, cmp);
            if (rc < 0)
                kvbt_die(prog, "kvb_pool_stage: %s", kvb_strerror(rc));
            rc = kvb_pool_register(w->pool, cmp, m, blk + k);
            if (rc < 0)
                kvbt_die(prog, "kvb_pool_register: %s", kvb_strerror(rc));
        }
        s->blk[r] = blk;
        s->req_worker[r] = wi;

        /* service time */
        uint64_t cached_tok = (uint64_t)k * o->block_tokens;
        uint64_t prefill_tok = L->in_tok[r] > cached_tok ? L->in_tok[r] - cached_tok : 0;
        double svc_us = (double)prefill_tok * 1e6 / o->prefill_tps +
                        (double)L->out_tok[r] * o->tpot_ms * 1000.0;
        s->finish_us[r] = L->arrival_us[r] + (uint64_t)llround(svc_us);
        w->work_tokens += prefill_tok + L->out_tok[r];
        fleet_heap_push(s, r);
        s->prev[r] = w->tail;
        s->next[r] = FLEET_NONE;
        if (w->tail != FLEET_NONE)
            s->next[w->tail] = r;
        else
            w->head = r;
        w->tail = r;
        w->load++;

        if ((r & 255) == 255)
            kvbt_progress_add(prog_bar, 256);
    }
    fleet_complete_until(s, UINT64_MAX);
    if (zmq)
        fleet_zmq_barrier(s);
    s->wall_ns = kvbt_now_ns() - t_start;

    /* End check: each stream holds exactly its pool's cached-or-active blocks. */
    for (uint32_t i = 0; i < s->W; i++) {
        kvb_stats st;
        kvb_index_stream_info info;
        uint32_t sid;
        if (kvb_pool_stats(s->w[i].pool, &st) != 0)
            kvbt_die(prog, "kvb_pool_stats failed");
        uint64_t have = 0;
        if (kvb_index_stream_find(s->idx, s->w[i].name, KVB_INDEX_NO_RANK, &sid) == 0 &&
            kvb_index_stream_info_get(s->idx, sid, &info) == 0)
            have = info.entries;
        if (have != (uint64_t)st.primary + st.inactive)
            s->entry_mismatch++;
    }
    kvb_index_stats_get(s->idx, &s->istats);

    memset(out, 0, sizeof *out);
    out->hits = s->hits;
    out->refs = s->refs;
    out->mispred = s->mispred;
    out->early = s->early;
    out->guard = s->guard;
    out->affinity = s->affinity;
    out->lowmatch = s->lowmatch;
    out->entry_mismatch = s->entry_mismatch;
    out->load_ratio = s->sum_mean > 0 ? s->sum_max / s->sum_mean : 1.0;
    out->load_avg = n_req ? s->sum_mean / (double)n_req : 0.0;
    uint64_t wmax = 0, wsum = 0;
    for (uint32_t i = 0; i < s->W; i++) {
        wmax = s->w[i].work_tokens > wmax ? s->w[i].work_tokens : wmax;
        wsum += s->w[i].work_tokens;
    }
    out->work_ratio = wsum ? (double)wmax * s->W / (double)wsum : 1.0;
    out->events = s->istats.events;
    if (zmq)
        out->ev_per_s = s->wall_ns ? (double)out->events * 1e9 / (double)s->wall_ns : 0;
    else
        out->ev_per_s = s->apply_ns ? (double)out->events * 1e9 / (double)s->apply_ns : 0;
    qsort(s->lat_ns, s->n_lat, sizeof *s->lat_ns, fleet_cmp_u32);
    if (s->n_lat) {
        out->p50 = s->lat_ns[(s->n_lat - 1) * 50 / 100];
        out->p99 = s->lat_ns[(s->n_lat - 1) * 99 / 100];
    }
    free(mut);
    free(cmp);
}

/* One (policy, W, C) run on fresh pools and a fresh index. */
static void fleet_one(const fleet_opts *o, const fleet_load *L, fleet_pol pol, uint32_t W,
                      uint32_t C, kvbt_progress *bar, fleet_result *res)
{
    fleet_sim s;
    if (L->t.max_request_blocks > C)
        kvbt_die(prog, "a request of %llu blocks does not fit a worker of %u blocks",
                 (unsigned long long)L->t.max_request_blocks, C);
    fleet_sim_init(&s, o, L, pol, W, C);
    fleet_run(&s, bar, res);
    fleet_sim_fini(&s);
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
