/*
 * kvb-replay - the replay lab: replay a block trace through kvblock pools and
 * report hit ratios, evictions and the cost per block reference, for every
 * eviction policy side by side and several capacities, next to an offline
 * optimal reference. docs/replay.md is the manual and holds the measurements.
 *
 * The workload is the "prefix replay" of ../shared/data/README.md:
 *
 *   for each request, in trace order:
 *     hashes: id x at index j, after id y, is kvb_hash_make(x, y, j > 0, j)
 *     k = kvb_pool_match(hashes)        prefix hits: stops at the first miss
 *     allocate the other n - k blocks   all or nothing, evicting in policy order
 *     stage them with their hashes (kvb_pool_stage) and register them, one batch each
 *     release the n blocks, last block first (deeper blocks leave before their
 *     prefixes), with one kvb_block_release_n on the reversed handle array
 *
 *   prefix hit ratio = sum k / sum n; evictions from kvb_pool_stats().
 *
 * --window W keeps the blocks of the last W requests held: request r is
 * released (last block first, as above) right after request r + W has been
 * processed, so eviction works around in-use blocks. When an allocation fails
 * with -ENOSPC because too much is held, the oldest held request is released
 * early and the allocation retried (counted as an early release); with W = 0
 * nothing is held across requests and -ENOSPC is an error.
 *
 * --format ids reads the classic one-id-per-line block traces: each id is a
 * request of one block (hash kvb_hash_make(id, 0, false, 0)), so a hit is
 * simply "the block was cached" and lru/fifo are the textbook policies
 * (tools/sim_reference.py checks them hit for hit).
 *
 * Registering a hash that is cached but came after the first miss (possible
 * when a policy evicted a prefix before its descendants) resurrects the cached
 * block and makes the new one a duplicate (the pool's default KVB_DUP_ALLOW);
 * it is not counted as a hit, since the prefix was broken.
 *
 * Policies: every built-in backend the library lists (kvb_inactive_policy(i)
 * for i = 0, 1, ... until NULL; the index is the kvb_evict_policy value), named
 * by the backend, plus the offline references of tools/common/optimal.h: `optimal` (Belady for a pool:
 * the best any policy could do) and `belady_flat` (Belady on the flat block
 * stream, an upper bound a pool cannot reach; prefix traces, no window).
 *
 * Timing covers only the replay loop: the trace is parsed, its lineage hashes
 * and the optimal references' next uses computed before the clock starts; the
 * pool is created before and checked (kvb_pool_check) and destroyed after; the
 * progress bar's drawing time is subtracted. One untimed warm-up replay of the
 * first 2048 requests precedes the measurements. --repeat N keeps the best of N
 * runs, each on a fresh pool, and insists that they all give the same hits.
 *
 * Without --trace the built-in synthetic workload (tools/common/synth.c) is
 * replayed, so that the tool runs anywhere.
 */
#include "kvblock.h"
#include "kvblock/publisher.h"

#include "common/args.h"
#include "common/optimal.h"
#include "common/plot.h"
#include "common/progress.h"
#include "common/synth.h"
#include "common/trace.h"
#include "common/util.h"

#include <getopt.h>
#include <math.h>
#include <unistd.h>

static const char *prog = "kvb-replay";

/* ------------------------------------------------------------------------ */
/* Policies                                                                 */
/* ------------------------------------------------------------------------ */

typedef enum {
    REPLAY_POOL,    /* a kvblock pool with a library backend */
    REPLAY_OPTIMAL, /* tools/common/optimal.c: kvbt_optimal_run */
    REPLAY_FLAT,    /* tools/common/optimal.c: kvbt_belady_flat_run */
} replay_kind;

typedef struct replay_policy {
    char name[48];
    replay_kind kind;
    kvb_evict_policy evict; /* REPLAY_POOL: the backend's index in kvb_inactive_policy */
} replay_policy;

#define REPLAY_MAX_POLICIES 64

typedef struct replay_catalog {
    replay_policy p[REPLAY_MAX_POLICIES];
    unsigned n;
} replay_catalog;

/* --publish: the replay's KV events go out on the vLLM wire (ZeroMQ PUB). */
static kvb_publisher *replay_pub;
static kvb_event_config replay_events;
/* --lookahead: the pools' hint capacity (0: no hints) */
static uint32_t replay_hint_capacity;
/* --retention K:P[:MS] and --ttl MS: retention priorities, on the trace's clock */
static struct {
    bool on;
    uint32_t blocks, priority, duration_ms;
} replay_ret;
static uint32_t replay_ttl_ms;
static uint64_t replay_now_ms; /* the current request's timestamp (or index) */
#define REPLAY_BLOCK_TOKENS 512 /* tokens per Mooncake block (shared/data/README.md) */

static uint64_t replay_clock(void *ctx)
{
    (void)ctx;
    return replay_now_ms;
}

static void replay_pool_config(kvb_pool_config *cfg, const replay_policy *pol, uint32_t capacity)
{
    kvb_pool_config_init(cfg);
    cfg->block_count = capacity;
    cfg->evict = pol->evict;
    cfg->name = "replay";
    cfg->hint_capacity = replay_hint_capacity;
    if (replay_ret.on || replay_ttl_ms) {
        cfg->priorities = true;
        cfg->clock = (kvb_clock){.now_ms = replay_clock};
    }
    if (replay_pub)
        cfg->events = &replay_events;
}

/* 0 when a pool of this policy can be created, else kvb_pool_create's error. */
static int replay_probe(const replay_policy *pol)
{
    kvb_pool_config cfg;
    kvb_pool *pool;
    replay_pool_config(&cfg, pol, 1);
    int rc = kvb_pool_create(&cfg, &pool);
    if (rc < 0)
        return rc;
    rc = kvb_pool_destroy(pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s", kvb_strerror(rc));
    return 0;
}

static bool replay_catalog_has(const replay_catalog *c, const char *name)
{
    for (unsigned i = 0; i < c->n; i++)
        if (strcmp(c->p[i].name, name) == 0)
            return true;
    return false;
}

static void replay_catalog_add(replay_catalog *c, const char *name, replay_kind kind,
                               kvb_evict_policy evict)
{
    if (c->n == REPLAY_MAX_POLICIES || replay_catalog_has(c, name))
        return;
    replay_policy *p = &c->p[c->n++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->kind = kind;
    p->evict = evict;
}

/* Everything this build can run: the library's backends in its list order (the
 * index is the kvb_evict_policy value), then the references (optimal last but one,
 * belady_flat last). */
static void replay_catalog_build(replay_catalog *c)
{
    const kvb_inactive_ops *ops;
    memset(c, 0, sizeof *c);
    for (size_t i = 0; (ops = kvb_inactive_policy(i)) != NULL; i++)
        replay_catalog_add(c, ops->name, REPLAY_POOL, (kvb_evict_policy)i);
    replay_catalog_add(c, "optimal", REPLAY_OPTIMAL, KVB_EVICT_LRU);
    replay_catalog_add(c, "belady_flat", REPLAY_FLAT, KVB_EVICT_LRU);
}

/* "lru, fifo, optimal, belady_flat" */
static void replay_catalog_names(const replay_catalog *c, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < c->n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", c->p[i].name);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

#define REPLAY_MAX_CAPACITIES 64

static const uint32_t replay_all_capacities[] = {1000, 2000, 4000, 8000, 16000, 32000};

typedef struct replay_opts {
    const char *trace;
    kvbt_format format;
    const char *policy; /* "all" or a comma-separated list of names */
    uint32_t capacities[REPLAY_MAX_CAPACITIES];
    unsigned n_capacities;
    bool capacities_set; /* --capacity or --capacities given */
    uint32_t window;
    uint32_t lookahead;
    const char *retention; /* --retention as given */
    uint32_t ttl;
    const char *plot;
    const char *publish, *publish_replay, *topic;
    bool csv, quiet;
    uint64_t repeat;
    kvbt_synth_params synth;
    bool synth_set; /* --seed or --requests given */
} replay_opts;

static void replay_usage(FILE *f)
{
    char names[512];
    kvbt_policy_names(names, sizeof names);
    fprintf(f,
            "usage: kvb-replay [options]\n"
            "Replay a block trace through kvblock pools (the \"prefix replay\" of\n"
            "shared/data/README.md) and report hit ratios, evictions and ns per block ref,\n"
            "next to an offline optimal reference. Manual: docs/replay.md.\n"
            "\n"
            "  --trace FILE        trace to replay (default: the built-in synthetic workload)\n"
            "  --format NAME       mooncake (JSON lines with hash_ids, default) or ids (one\n"
            "                      block id per line, each a one-block request; lines starting\n"
            "                      with '*' and blank lines skipped)\n"
            "  --policy LIST       all, or comma-separated policy names (default lru):\n"
            "                      the library's built-in backends (this build: %s),\n"
            "                      and optimal (offline Belady reference for a pool) and\n"
            "                      belady_flat (Belady on the flat block stream, an upper bound)\n"
            "  --publish ENDPOINT  publish the pools' KV events on the vLLM wire format\n"
            "                      (ZeroMQ PUB; \"tcp://*:5557\" binds, \"tcp://host:5557\"\n"
            "                      connects); timings then include the events' cost\n"
            "  --publish-replay EP ROUTER endpoint answering replay requests (with --publish)\n"
            "  --topic TOPIC       topic of the published batches (default \"kv\")\n"
            "  --capacity BLOCKS   pool capacity in blocks (default 8000)\n"
            "  --capacities LIST   comma-separated capacities, one run each (default with\n"
            "                      --policy all: 1000,2000,4000,8000,16000,32000)\n"
            "  --window W          keep the last W requests' blocks held (default 0); a request\n"
            "                      that cannot allocate releases the oldest held one and retries\n"
            "  --lookahead W       hint the next W requests of the trace to the pool\n"
            "                      (kvb_pool_hint; default 0: no hints): a request adds its\n"
            "                      hashes W requests ahead and withdraws them once matched\n"
            "  --retention K:P[:MS] the first K blocks of every request at retention priority\n"
            "                      P (0..100, default 35), for MS ms of trace time (default:\n"
            "                      no duration); hits refresh it\n"
            "  --ttl MS            after each request, pin its blocks at priority 100 for MS ms\n"
            "                      of trace time (the trace's timestamps; without them the\n"
            "                      request index counts as milliseconds)\n"
            "  --csv               CSV: policy,capacity,requests,block_refs,hits,hit_ratio,\n"
            "                      seconds,ns_per_block_ref,evictions,window,early_releases,\n"
            "                      lookahead,uncached_p50,uncached_p90,uncached_p99 (per request:\n"
            "                      input tokens not found cached, or uncached blocks without\n"
            "                      token counts; empty for the references)\n"
            "                      (hit_ratio a fraction)\n"
            "  --plot FILE.svg     write hit ratio vs capacity curves of every policy run\n"
            "  --repeat N          time N runs per configuration, keep the best (default 1)\n"
            "  --seed S            synthetic workload seed (default 1)\n"
            "  --requests N        synthetic workload requests (default 12000)\n"
            "  --quiet             no header, notes or progress bar: results only\n"
            "  --help              this text\n"
            "\n"
            "Timing covers the replay loop only (trace parsed and hashed beforehand),\n"
            "CLOCK_MONOTONIC. A progress bar is drawn on stderr when it is a terminal.\n"
            "Exit status: 0 ok, 1 error, 2 bad usage.\n",
            names);
}

static void replay_parse_args(int argc, char **argv, replay_opts *o)
{
    enum {
        O_TRACE = 256,
        O_FORMAT,
        O_CAPACITY,
        O_CAPACITIES,
        O_POLICY,
        O_WINDOW,
        O_LOOKAHEAD,
        O_RETENTION,
        O_TTL,
        O_CSV,
        O_PLOT,
        O_REPEAT,
        O_SEED,
        O_REQUESTS,
        O_QUIET,
        O_PUBLISH,
        O_PUBLISH_REPLAY,
        O_TOPIC,
        O_HELP
    };
    static const struct option longopts[] = {
        {"trace", required_argument, NULL, O_TRACE},
        {"format", required_argument, NULL, O_FORMAT},
        {"capacity", required_argument, NULL, O_CAPACITY},
        {"capacities", required_argument, NULL, O_CAPACITIES},
        {"policy", required_argument, NULL, O_POLICY},
        {"window", required_argument, NULL, O_WINDOW},
        {"lookahead", required_argument, NULL, O_LOOKAHEAD},
        {"retention", required_argument, NULL, O_RETENTION},
        {"ttl", required_argument, NULL, O_TTL},
        {"csv", no_argument, NULL, O_CSV},
        {"plot", required_argument, NULL, O_PLOT},
        {"repeat", required_argument, NULL, O_REPEAT},
        {"seed", required_argument, NULL, O_SEED},
        {"requests", required_argument, NULL, O_REQUESTS},
        {"quiet", no_argument, NULL, O_QUIET},
        {"publish", required_argument, NULL, O_PUBLISH},
        {"publish-replay", required_argument, NULL, O_PUBLISH_REPLAY},
        {"topic", required_argument, NULL, O_TOPIC},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;

    memset(o, 0, sizeof *o);
    o->format = KVBT_FORMAT_MOONCAKE;
    o->policy = "lru";
    o->capacities[0] = 8000;
    o->n_capacities = 1;
    o->repeat = 1;
    kvbt_synth_defaults(&o->synth);

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case O_TRACE:
            o->trace = optarg;
            break;
        case O_FORMAT:
            if (!kvbt_format_parse(optarg, &o->format))
                kvbt_usage_error(prog, "--format: unknown format '%s' (supported: %s)", optarg,
                                   kvbt_format_names());
            break;
        case O_CAPACITY:
            o->capacities[0] =
                (uint32_t)kvbt_arg_count(prog, "--capacity", optarg, 1, KVB_MAX_BLOCKS);
            o->n_capacities = 1;
            o->capacities_set = true;
            break;
        case O_CAPACITIES:
            o->n_capacities = kvbt_arg_count_list(prog, "--capacities", optarg, 1, KVB_MAX_BLOCKS,
                                                  o->capacities, REPLAY_MAX_CAPACITIES);
            o->capacities_set = true;
            break;
        case O_POLICY:
            if (!*optarg)
                kvbt_usage_error(prog, "--policy: empty policy list");
            o->policy = optarg; /* names are checked against the library once it is probed */
            break;
        case O_WINDOW:
            o->window = (uint32_t)kvbt_arg_u64(prog, "--window", optarg, 0, 1000000);
            break;
        case O_LOOKAHEAD:
            o->lookahead = (uint32_t)kvbt_arg_u64(prog, "--lookahead", optarg, 0, 1000000);
            break;
        case O_RETENTION: {
            unsigned k = 0, pr = 0, ms = 0;
            char tail;
            int got = sscanf(optarg, "%u:%u:%u%c", &k, &pr, &ms, &tail);
            if (got < 2 || got > 3 || k == 0 || pr > KVB_PRIORITY_MAX)
                kvbt_usage_error(prog, "--retention: '%s' is not K:P[:MS] (K >= 1 blocks, priority P "
                                   "0..100, MS milliseconds)",
                                   optarg);
            o->retention = optarg;
            replay_ret.on = true;
            replay_ret.blocks = k;
            replay_ret.priority = pr;
            replay_ret.duration_ms = got == 3 ? ms : 0;
            break;
        }
        case O_TTL:
            o->ttl = (uint32_t)kvbt_arg_u64(prog, "--ttl", optarg, 1, UINT32_MAX);
            replay_ttl_ms = o->ttl;
            break;
        case O_CSV:
            o->csv = true;
            break;
        case O_PLOT:
            o->plot = optarg;
            break;
        case O_REPEAT:
            o->repeat = kvbt_arg_u64(prog, "--repeat", optarg, 1, 1000000);
            break;
        case O_SEED:
            o->synth.seed = kvbt_arg_u64(prog, "--seed", optarg, 0, UINT64_MAX);
            o->synth_set = true;
            break;
        case O_REQUESTS:
            o->synth.requests = kvbt_arg_u64(prog, "--requests", optarg, 1, 100000000);
            o->synth_set = true;
            break;
        case O_QUIET:
            o->quiet = true;
            break;
        case O_PUBLISH:
            o->publish = optarg;
            break;
        case O_PUBLISH_REPLAY:
            o->publish_replay = optarg;
            break;
        case O_TOPIC:
            o->topic = optarg;
            break;
        case 'h':
        case O_HELP:
            replay_usage(stdout);
            exit(0);
        default:
            kvbt_usage_getopt(prog, c, argv);
        }
    }
    kvbt_usage_no_operands(prog, argc, argv);
    if (strcmp(o->policy, "all") == 0 && !o->capacities_set) {
        o->n_capacities = sizeof replay_all_capacities / sizeof replay_all_capacities[0];
        memcpy(o->capacities, replay_all_capacities, sizeof replay_all_capacities);
    }
}

/* ------------------------------------------------------------------------ */
/* Replay through a pool                                                    */
/* ------------------------------------------------------------------------ */

/* Requests per progress report (see kvbt_progress_add: one branch per chunk when the
 * bar is off, one clock read when it is on; nothing per block). */
#define REPLAY_CHUNK 2048

typedef struct replay_scratch {
    kvb_block *blocks; /* window 0: one request's handles */
    kvb_mutable *mut;
    kvb_complete *cmp;
    size_t maxn;      /* longest request */
    kvb_block *slots; /* window W: W + 1 slots of maxn handles, a ring of requests */
    uint32_t *slot_n; /* handles in each slot */
    uint32_t *uncached; /* per request: tokens (or blocks) not found cached */
    uint32_t *sorted;   /* scratch for the percentiles */
} replay_scratch;

/* One finished (policy, capacity) configuration. */
typedef struct replay_cell {
    bool done;
    uint64_t hits;
    uint64_t evictions;
    uint64_t early_releases; /* window requests released early to make room */
    uint64_t ns;             /* the replay loop only */
    bool has_uncached;       /* pool runs: per-request uncached tokens (or blocks) */
    uint32_t uncached[3];    /* their p50, p90, p99 */
} replay_cell;

/* Where request r comes from, for messages: "request 17 (line 17)". */
static const char *replay_where(const kvbt_trace *t, uint64_t r, char *buf, size_t cap)
{
    if (t->line)
        snprintf(buf, cap, "request %llu (%s line %llu)", (unsigned long long)r + 1, t->name,
                 (unsigned long long)t->line[r]);
    else
        snprintf(buf, cap, "request %llu of %s", (unsigned long long)r + 1, t->name);
    return buf;
}

static KVBT_NORETURN void replay_lib_fail(const kvbt_trace *t, uint64_t r, const char *call, int rc,
                                          const char *policy, uint32_t capacity)
{
    char where[256];
    kvbt_die(prog, "%s failed on %s, policy %s, capacity %u: %s", call,
             replay_where(t, r, where, sizeof where), policy, capacity, kvb_strerror(rc));
}

/* Release the handles of a window slot (already in release order). */
static void replay_release_slot(const kvbt_trace *t, uint64_t r, kvb_block *blk, uint32_t n,
                                const replay_policy *pol, uint32_t capacity)
{
    int rc = kvb_block_release_n(blk, n);
    if (rc < 0)
        replay_lib_fail(t, r, "kvb_block_release_n", rc, pol->name, capacity);
}

/* --lookahead: request r's hashes, delta +1 when it comes within reach, -1 once it
 * has matched its prefix. */
static void replay_hint(kvb_pool *pool, const kvbt_trace *t, const kvb_hash *hashes, uint64_t r,
                        int32_t delta, const replay_policy *pol, uint32_t capacity)
{
    int rc = kvb_pool_hint(pool, hashes + t->off[r], (uint32_t)(t->off[r + 1] - t->off[r]), delta);
    if (rc < 0)
        replay_lib_fail(t, r, "kvb_pool_hint", rc, pol->name, capacity);
}

/* --retention: a hit refreshes the priority of the request's first blocks */
static void replay_refresh(kvb_pool *pool, const kvbt_trace *t, uint64_t r, const kvb_hash *h,
                           uint32_t n, const replay_policy *pol, uint32_t capacity)
{
    int rc = kvb_pool_set_priority(pool, h, n, replay_ret.priority, replay_ret.duration_ms);
    if (rc < 0)
        replay_lib_fail(t, r, "kvb_pool_set_priority", rc, pol->name, capacity);
}

/* --ttl: a finished request's blocks stay for the TTL (a paused session's pin) */
static void replay_pin(kvb_pool *pool, const kvbt_trace *t, uint64_t r, const kvb_hash *h,
                       uint32_t n, const replay_policy *pol, uint32_t capacity)
{
    int rc = kvb_pool_set_priority(pool, h, n, KVB_PRIORITY_MAX, replay_ttl_ms);
    if (rc < 0)
        replay_lib_fail(t, r, "kvb_pool_set_priority", rc, pol->name, capacity);
}

/* Tokens of request r that were not found cached with k prefix hits (the time to
 * first token grows with them): its input length minus the cached blocks' tokens,
 * or, for traces without token counts, its uncached blocks. */
static inline uint32_t replay_uncached(const kvbt_trace *t, uint64_t r, uint32_t n, uint32_t k)
{
    if (!t->input_tokens)
        return n - k;
    uint64_t cached = (uint64_t)k * REPLAY_BLOCK_TOKENS;
    return t->input_tokens[r] > cached ? (uint32_t)(t->input_tokens[r] - cached) : 0;
}

/* --retention: the first K blocks of a request at priority P (kvb_retention: a token
 * range of the pool's block size, 16 tokens, per trace block) */
static const kvb_retention *replay_retention(kvb_retention *r, kvb_retention_range *g)
{
    if (!replay_ret.on)
        return NULL;
    kvb_retention_init(r);
    *g = (kvb_retention_range){.token_start = 0,
                               .token_end = replay_ret.blocks * 16u,
                               .priority = replay_ret.priority,
                               .duration_ms = replay_ret.duration_ms};
    r->ranges = g;
    r->n_ranges = 1;
    return r;
}

static int replay_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* p50, p90, p99 of the per-request uncached tokens (nearest rank) */
static void replay_percentiles(const kvbt_trace *t, replay_scratch *s, replay_cell *res)
{
    uint64_t n = t->n_requests;
    if (n == 0)
        return;
    memcpy(s->sorted, s->uncached, (size_t)n * sizeof *s->sorted);
    qsort(s->sorted, (size_t)n, sizeof *s->sorted, replay_cmp_u32);
    const double q[3] = {0.50, 0.90, 0.99};
    for (int i = 0; i < 3; i++) {
        uint64_t rank = (uint64_t)ceil(q[i] * (double)n);
        res->uncached[i] = s->sorted[rank ? rank - 1 : 0];
    }
    res->has_uncached = true;
}

/* The hint capacity --lookahead W needs: at most W + 1 requests are hinted at once
 * (the one being served and the next W), each hash of each a (hash, call) pair. */
static uint32_t replay_lookahead_capacity(const kvbt_trace *t, uint32_t lookahead)
{
    uint64_t best = 0, span = (uint64_t)lookahead + 1;
    for (uint64_t r = 0; r < t->n_requests; r++) {
        uint64_t end = r + span < t->n_requests ? r + span : t->n_requests;
        uint64_t refs = t->off[end] - t->off[r];
        best = refs > best ? refs : best;
        if (end == t->n_requests)
            break;
    }
    if (best > (1u << 30))
        kvbt_die(prog, "--lookahead %u: %llu hinted blocks at once, more than a pool's hint "
                       "capacity (2^30)",
                 lookahead, (unsigned long long)best);
    return best ? (uint32_t)best : 1;
}

/* One replay of the whole trace on a fresh pool. Returns 0, or the negative
 * errno of kvb_pool_create (the caller decides about -ENOTSUP); any other
 * library error ends the program with a message. */
static int replay_run_pool(const kvbt_trace *t, const kvb_hash *hashes, const replay_policy *pol,
                           uint32_t capacity, uint32_t window, uint32_t lookahead,
                           replay_scratch *s, kvbt_progress *progress, replay_cell *res)
{
    kvb_pool_config cfg;
    kvb_pool *pool;
    kvb_stats st;
    int rc;

    replay_pool_config(&cfg, pol, capacity);
    rc = kvb_pool_create(&cfg, &pool);
    if (rc < 0)
        return rc;

    const uint64_t *off = t->off;
    const uint64_t n_requests = t->n_requests;
    uint64_t hits = 0, early = 0, excluded = 0;
    kvb_retention retbuf;
    kvb_retention_range rg;
    const kvb_retention *ret = replay_retention(&retbuf, &rg);
    const bool timed = replay_ttl_ms || (ret && replay_ret.duration_ms);
    const uint32_t ret_blocks = replay_ret.blocks;

    uint64_t t0 = kvbt_now_ns();
    for (uint64_t r = 0; r < lookahead && r < n_requests; r++)
        replay_hint(pool, t, hashes, r, +1, pol, capacity); /* the first W requests */
    if (window == 0) {
        kvb_block *blk = s->blocks;
        for (uint64_t r0 = 0, r1; r0 < n_requests; r0 = r1) {
            r1 = r0 + REPLAY_CHUNK < n_requests ? r0 + REPLAY_CHUNK : n_requests;
            for (uint64_t r = r0; r < r1; r++) {
                const kvb_hash *h = hashes + off[r];
                uint32_t n = (uint32_t)(off[r + 1] - off[r]);
                if (timed)
                    replay_now_ms = t->timestamp_ms ? t->timestamp_ms[r] : r;
                if (lookahead && r + lookahead < n_requests)
                    replay_hint(pool, t, hashes, r + lookahead, +1, pol, capacity);

                rc = kvb_pool_match(pool, h, n, blk);
                if (rc < 0)
                    replay_lib_fail(t, r, "kvb_pool_match", rc, pol->name, capacity);
                uint32_t k = (uint32_t)rc;
                hits += k;
                s->uncached[r] = replay_uncached(t, r, n, k);
                if (lookahead)
                    replay_hint(pool, t, hashes, r, -1, pol, capacity);
                if (ret && k)
                    replay_refresh(pool, t, r, h, k < ret_blocks ? k : ret_blocks, pol, capacity);

                uint32_t m = n - k;
                if (m > 0) {
                    rc = kvb_pool_allocate(pool, m, s->mut, NULL, NULL);
                    if (rc < 0)
                        replay_lib_fail(t, r, "kvb_pool_allocate", rc, pol->name, capacity);
                    rc = kvb_pool_stage(pool, s->mut, h + k, m, s->cmp);
                    if (rc < 0)
                        replay_lib_fail(t, r, "kvb_pool_stage", rc, pol->name, capacity);
                    rc = ret ? kvb_pool_register_retained(pool, s->cmp, m, ret, blk + k)
                             : kvb_pool_register(pool, s->cmp, m, blk + k);
                    if (rc < 0)
                        replay_lib_fail(t, r, "kvb_pool_register", rc, pol->name, capacity);
                }

                if (replay_ttl_ms) /* the request's blocks, held now, cached next */
                    replay_pin(pool, t, r, h, n, pol, capacity);
                /* Last block first: reverse the handles, release them in one batch. */
                for (uint32_t a = 0, b = n ? n - 1 : 0; a < b; a++, b--) {
                    kvb_block tmp = blk[a];
                    blk[a] = blk[b];
                    blk[b] = tmp;
                }
                rc = kvb_block_release_n(blk, n);
                if (rc < 0)
                    replay_lib_fail(t, r, "kvb_block_release_n", rc, pol->name, capacity);
            }
            excluded += kvbt_progress_add(progress, off[r1] - off[r0]);
        }
    } else {
        /* The ring: requests [head, head + count) (mod ring) hold their blocks; slot i
         * keeps slot_n[i] handles at slots + i * maxn, already in release order. */
        const uint32_t ring = window + 1;
        const size_t stride = s->maxn;
        uint32_t head = 0, count = 0;
        uint64_t *slot_req = kvbt_xmalloc_array(ring, sizeof *slot_req); /* for messages */
        for (uint64_t r0 = 0, r1; r0 < n_requests; r0 = r1) {
            r1 = r0 + REPLAY_CHUNK < n_requests ? r0 + REPLAY_CHUNK : n_requests;
            for (uint64_t r = r0; r < r1; r++) {
                const kvb_hash *h = hashes + off[r];
                uint32_t n = (uint32_t)(off[r + 1] - off[r]);
                uint32_t cur = head + count >= ring ? head + count - ring : head + count;
                kvb_block *blk = s->slots + cur * stride;
                if (timed)
                    replay_now_ms = t->timestamp_ms ? t->timestamp_ms[r] : r;
                if (lookahead && r + lookahead < n_requests)
                    replay_hint(pool, t, hashes, r + lookahead, +1, pol, capacity);

                rc = kvb_pool_match(pool, h, n, blk);
                if (rc < 0)
                    replay_lib_fail(t, r, "kvb_pool_match", rc, pol->name, capacity);
                uint32_t k = (uint32_t)rc;
                hits += k;
                s->uncached[r] = replay_uncached(t, r, n, k);
                if (lookahead)
                    replay_hint(pool, t, hashes, r, -1, pol, capacity);
                if (ret && k)
                    replay_refresh(pool, t, r, h, k < ret_blocks ? k : ret_blocks, pol, capacity);

                uint32_t m = n - k;
                if (m > 0) {
                    /* Too much held: release the oldest held request, retry. */
                    while ((rc = kvb_pool_allocate(pool, m, s->mut, NULL, NULL)) == -ENOSPC &&
                           count > 0) {
                        replay_release_slot(t, slot_req[head], s->slots + head * stride,
                                            s->slot_n[head], pol, capacity);
                        head = head + 1 == ring ? 0 : head + 1;
                        count--;
                        early++;
                    }
                    if (rc < 0)
                        replay_lib_fail(t, r, "kvb_pool_allocate", rc, pol->name, capacity);
                    rc = kvb_pool_stage(pool, s->mut, h + k, m, s->cmp);
                    if (rc < 0)
                        replay_lib_fail(t, r, "kvb_pool_stage", rc, pol->name, capacity);
                    rc = ret ? kvb_pool_register_retained(pool, s->cmp, m, ret, blk + k)
                             : kvb_pool_register(pool, s->cmp, m, blk + k);
                    if (rc < 0)
                        replay_lib_fail(t, r, "kvb_pool_register", rc, pol->name, capacity);
                }
                if (replay_ttl_ms) /* the request's blocks, held now, cached later */
                    replay_pin(pool, t, r, h, n, pol, capacity);
                for (uint32_t a = 0, b = n ? n - 1 : 0; a < b; a++, b--) {
                    kvb_block tmp = blk[a];
                    blk[a] = blk[b];
                    blk[b] = tmp;
                }
                s->slot_n[cur] = n;
                slot_req[cur] = r;
                if (++count > window) {
                    replay_release_slot(t, slot_req[head], s->slots + head * stride,
                                        s->slot_n[head], pol, capacity);
                    head = head + 1 == ring ? 0 : head + 1;
                    count--;
                }
            }
            excluded += kvbt_progress_add(progress, off[r1] - off[r0]);
        }
        while (count > 0) {
            replay_release_slot(t, slot_req[head], s->slots + head * stride, s->slot_n[head], pol,
                                capacity);
            head = head + 1 == ring ? 0 : head + 1;
            count--;
        }
        free(slot_req);
    }
    uint64_t t1 = kvbt_now_ns();
    if (replay_pub) {
        rc = kvb_pool_events_flush(pool);
        if (rc < 0)
            kvbt_die(prog, "kvb_pool_events_flush: %s", kvb_strerror(rc));
    }

    rc = kvb_pool_stats(pool, &st);
    if (rc < 0)
        kvbt_die(prog, "kvb_pool_stats: %s", kvb_strerror(rc));
    rc = kvb_pool_check(pool);
    if (rc != 0)
        kvbt_die(prog,
                 "INVARIANT VIOLATION: kvb_pool_check() = %d (%s) after replaying %s with policy "
                 "%s, capacity %u, window %u: this is a kvblock bug",
                 rc, kvb_strerror(rc), t->name, pol->name, capacity, window);
    if (st.hint_uses != 0 || st.hint_hashes != 0 || st.hint_protected != 0 ||
        st.hint_unmatched != 0)
        kvbt_die(prog,
                 "after the replay (policy %s, capacity %u, lookahead %u) the pool reports %llu "
                 "hint uses on %u hashes protecting %u blocks, %llu unmatched (all should be 0)",
                 pol->name, capacity, lookahead, (unsigned long long)st.hint_uses, st.hint_hashes,
                 st.hint_protected, (unsigned long long)st.hint_unmatched);
    if (st.misuse != 0 || st.mutable_ + st.staged + st.primary + st.duplicate != 0)
        kvbt_die(prog,
                 "after the replay (policy %s, capacity %u, window %u) the pool reports misuse "
                 "%llu, mutable %u, staged %u, primary %u, duplicate %u (all should be 0)",
                 pol->name, capacity, window, (unsigned long long)st.misuse, st.mutable_,
                 st.staged, st.primary, st.duplicate);
    rc = kvb_pool_destroy(pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s", kvb_strerror(rc));

    res->hits = hits;
    res->evictions = st.evictions;
    res->early_releases = early;
    res->ns = t1 - t0 - excluded;
    replay_percentiles(t, s, res);
    return 0;
}

/* Warm-up, untimed and unreported: the first pool policy replays the first
 * REPLAY_WARMUP requests once, so that the first measured run does not pay for
 * cold code pages and a fresh allocator. */
#define REPLAY_WARMUP 2048

static void replay_warmup(const kvbt_trace *t, const kvb_hash *hashes, const replay_policy *pol,
                          uint32_t capacity, uint32_t window, uint32_t lookahead,
                          replay_scratch *s)
{
    kvbt_trace head = *t; /* a view of the first requests: only off[] is read past them */
    kvbt_progress off;
    replay_cell cell;
    if (head.n_requests > REPLAY_WARMUP)
        head.n_requests = REPLAY_WARMUP;
    head.n_refs = t->off[head.n_requests];
    kvbt_progress_init(&off, false, 0);
    int rc = replay_run_pool(&head, hashes, pol, capacity, window, lookahead, s, &off, &cell);
    if (rc < 0)
        kvbt_die(prog, "kvb_pool_create (policy %s, capacity %u): %s", pol->name, capacity,
                 kvb_strerror(rc));
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

static void replay_header(const kvbt_trace *t, const replay_opts *o, bool synthetic)
{
    double refs = (double)t->n_refs;
    if (synthetic)
        printf("trace: synthetic workload (built in, tools/common/synth.c)\n  %s\n", t->source);
    else
        printf("trace: %s (%s, format %s)\n", t->name, t->source,
               o->format == KVBT_FORMAT_IDS ? "ids" : "mooncake");
    printf("  requests %llu, block refs %llu, unique blocks %llu\n",
           (unsigned long long)t->n_requests, (unsigned long long)t->n_refs,
           (unsigned long long)t->unique_blocks);
    printf("  blocks/request mean %.1f, max %llu; infinite-cache %shit ratio %.2f%%\n",
           refs / (double)t->n_requests, (unsigned long long)t->max_request_blocks,
           t->max_request_blocks > 1 ? "prefix " : "",
           refs > 0 ? 100.0 * (double)t->infinite_hits / refs : 0.0);
    printf("  replay: prefix match, allocate + stage + register the rest, release last block "
           "first; ");
    if (o->window)
        printf("the last %u requests hold their blocks; ", o->window);
    if (o->lookahead)
        printf("the pools are hinted the next %u requests; ", o->lookahead);
    if (o->retention)
        printf("the first %u blocks of each request at priority %u%s; ", replay_ret.blocks,
               replay_ret.priority, replay_ret.duration_ms ? " (with a duration)" : "");
    if (o->ttl)
        printf("each request's blocks pinned for %u ms; ", o->ttl);
    printf("uncached = per request, %s not found cached; ",
           t->input_tokens ? "input tokens" : "blocks");
    printf("best of %llu\n\n", (unsigned long long)o->repeat);
}

static void replay_columns(const replay_opts *o)
{
    if (o->csv) {
        printf("policy,capacity,requests,block_refs,hits,hit_ratio,seconds,ns_per_block_ref,"
               "evictions,window,early_releases,lookahead,uncached_p50,uncached_p90,"
               "uncached_p99\n");
        return;
    }
    printf("%-12s %10s %10s %10s %10s %9s %9s", "policy", "capacity", "hit ratio", "hits",
           "evictions", "ns/ref", "M refs/s");
    if (o->window)
        printf(" %9s", "early rel");
    printf("  %s\n", "uncached p50/p90/p99");
}

/* One finished configuration, to every sink: the text table or --csv on stdout.
 * (A network sink such as a future --publish ENDPOINT belongs here too: it gets the
 * same policy, capacity and cell, once per finished configuration.) */
static void replay_emit(const replay_opts *o, const kvbt_trace *t, const replay_policy *pol,
                        uint32_t capacity, const replay_cell *c)
{
    double refs = (double)t->n_refs;
    double ratio = refs > 0 ? (double)c->hits / refs : 0.0;
    double secs = (double)c->ns / 1e9;
    double nsref = refs > 0 ? (double)c->ns / refs : 0.0;
    if (o->csv) {
        printf("%s,%u,%llu,%llu,%llu,%.6f,%.6f,%.2f,%llu,%u,%llu,%u", pol->name, capacity,
               (unsigned long long)t->n_requests, (unsigned long long)t->n_refs,
               (unsigned long long)c->hits, ratio, secs, nsref, (unsigned long long)c->evictions,
               o->window, (unsigned long long)c->early_releases,
               pol->kind == REPLAY_POOL ? o->lookahead : 0);
        if (c->has_uncached)
            printf(",%u,%u,%u\n", c->uncached[0], c->uncached[1], c->uncached[2]);
        else
            printf(",,,\n");
    } else {
        printf("%-12s %10u %9.2f%% %10llu %10llu %9.1f %9.2f", pol->name, capacity,
               100.0 * ratio, (unsigned long long)c->hits, (unsigned long long)c->evictions,
               nsref, secs > 0 ? refs / secs / 1e6 : 0.0);
        if (o->window)
            printf(" %9llu", (unsigned long long)c->early_releases);
        if (c->has_uncached)
            printf("  %u/%u/%u", c->uncached[0], c->uncached[1], c->uncached[2]);
        printf("\n");
    }
    fflush(stdout);
}

/* The policy x capacity matrices: hit ratio, and the share of the LRU -> optimal gap
 * each policy closes (when both ran). */
static void replay_matrix(const replay_opts *o, const kvbt_trace *t, const replay_policy *sel,
                          unsigned n_sel, const replay_cell *cells)
{
    double refs = (double)t->n_refs;
    int lru = -1, opt = -1;
    for (unsigned p = 0; p < n_sel; p++) {
        if (strcmp(sel[p].name, "lru") == 0)
            lru = (int)p;
        if (sel[p].kind == REPLAY_OPTIMAL)
            opt = (int)p;
    }
    for (int table = 0; table < 2; table++) {
        if (table == 1 && (lru < 0 || opt < 0 || n_sel < 3))
            break;
        printf("\n%s (rows: policy; columns: capacity in blocks)",
               table == 0 ? "hit ratio, %" : "share of the LRU -> optimal gap closed, %");
        if (o->window)
            printf(", window %u", o->window);
        printf("\n");
        printf("%-12s", "policy");
        for (unsigned c = 0; c < o->n_capacities; c++)
            printf(" %8u", o->capacities[c]);
        printf("\n");
        for (unsigned p = 0; p < n_sel; p++) {
            if (table == 1 && ((int)p == lru || (int)p == opt))
                continue;
            printf("%-12s", sel[p].name);
            for (unsigned c = 0; c < o->n_capacities; c++) {
                const replay_cell *x = &cells[p * o->n_capacities + c];
                if (!x->done) {
                    printf(" %8s", "-");
                    continue;
                }
                double v = 100.0 * (double)x->hits / refs;
                if (table == 1) {
                    double l = (double)cells[(unsigned)lru * o->n_capacities + c].hits;
                    double b = (double)cells[(unsigned)opt * o->n_capacities + c].hits;
                    if (b - l < 0.01 * refs) {
                        printf(" %8s", "-"); /* under one point: no gap worth a share */
                        continue;
                    }
                    v = 100.0 * ((double)x->hits - l) / (b - l);
                }
                printf(" %8.2f", v);
            }
            printf("\n");
        }
    }
    fflush(stdout);
}

static void replay_plot(const replay_opts *o, const kvbt_trace *t, bool synthetic,
                        const replay_policy *sel, unsigned n_sel, const replay_cell *cells)
{
    kvbt_plot_series *series = kvbt_xmalloc_array(n_sel, sizeof *series);
    double *xs = kvbt_xmalloc_array((size_t)n_sel * o->n_capacities, sizeof *xs);
    double *ys = kvbt_xmalloc_array((size_t)n_sel * o->n_capacities, sizeof *ys);
    unsigned ns = 0;
    uint32_t cmin = UINT32_MAX, cmax = 0;
    for (unsigned c = 0; c < o->n_capacities; c++) {
        cmin = o->capacities[c] < cmin ? o->capacities[c] : cmin;
        cmax = o->capacities[c] > cmax ? o->capacities[c] : cmax;
    }
    for (unsigned p = 0; p < n_sel; p++) {
        kvbt_plot_series *se = &series[ns];
        se->name = sel[p].name;
        se->x = xs + (size_t)ns * o->n_capacities;
        se->y = ys + (size_t)ns * o->n_capacities;
        se->n = 0;
        se->style = sel[p].kind == REPLAY_OPTIMAL ? KVBT_PLOT_MAIN_REF
                    : sel[p].kind == REPLAY_FLAT  ? KVBT_PLOT_AUX_REF
                                                  : KVBT_PLOT_LINE;
        for (unsigned c = 0; c < o->n_capacities; c++) {
            const replay_cell *x = &cells[p * o->n_capacities + c];
            if (!x->done)
                continue;
            xs[(size_t)ns * o->n_capacities + se->n] = o->capacities[c];
            ys[(size_t)ns * o->n_capacities + se->n] =
                100.0 * (double)x->hits / (double)t->n_refs;
            se->n++;
        }
        if (se->n)
            ns++;
    }
    bool ids = t->max_request_blocks <= 1 && !synthetic;
    char title[256], subtitle[256], reflabel[64];
    snprintf(title, sizeof title, "%s vs capacity: %s", ids ? "Hit ratio" : "Prefix hit ratio",
             synthetic ? "built-in synthetic workload" : t->name);
    snprintf(subtitle, sizeof subtitle,
             "kvb-replay, %llu requests, %llu block refs%s; window %u",
             (unsigned long long)t->n_requests, (unsigned long long)t->n_refs,
             ids ? ", one block each" : ", prefix replay", o->window);
    double inf = 100.0 * (double)t->infinite_hits / (double)t->n_refs;
    snprintf(reflabel, sizeof reflabel, "infinite cache %.2f%%", inf);
    bool log_x = cmin > 0 && (double)cmax / (double)cmin >= 4.0;
    kvbt_plot plot = {
        .title = title,
        .subtitle = subtitle,
        .xlabel = log_x ? "capacity, blocks (log scale)" : "capacity, blocks",
        .ylabel = ids ? "hit ratio, %" : "prefix hit ratio, %",
        .log_x = log_x,
        .series = series,
        .n_series = ns,
        .ref_y = inf,
        .ref_label = reflabel,
    };
    char err[512];
    if (kvbt_plot_svg(o->plot, &plot, err, sizeof err) < 0)
        kvbt_die(prog, "--plot: %s", err);
    if (!o->quiet && !o->csv)
        printf("\nplot: %s\n", o->plot);

    /* the TTFT proxy: p90 of the per-request uncached tokens, pool policies only */
    ns = 0;
    for (unsigned p = 0; p < n_sel; p++) {
        kvbt_plot_series *se = &series[ns];
        se->name = sel[p].name;
        se->x = xs + (size_t)ns * o->n_capacities;
        se->y = ys + (size_t)ns * o->n_capacities;
        se->n = 0;
        se->style = KVBT_PLOT_LINE;
        for (unsigned c = 0; c < o->n_capacities; c++) {
            const replay_cell *x = &cells[p * o->n_capacities + c];
            if (!x->done || !x->has_uncached)
                continue;
            xs[(size_t)ns * o->n_capacities + se->n] = o->capacities[c];
            ys[(size_t)ns * o->n_capacities + se->n] = x->uncached[1];
            se->n++;
        }
        if (se->n)
            ns++;
    }
    if (ns) {
        size_t len = strlen(o->plot);
        char *path2 = kvbt_xmalloc_array(len + 16, 1);
        size_t stem = len >= 4 && strcmp(o->plot + len - 4, ".svg") == 0 ? len - 4 : len;
        snprintf(path2, len + 16, "%.*s-uncached.svg", (int)stem, o->plot);
        char title2[256];
        snprintf(title2, sizeof title2, "Uncached %s per request, p90: %s",
                 t->input_tokens ? "input tokens" : "blocks",
                 synthetic ? "built-in synthetic workload" : t->name);
        kvbt_plot plot2 = plot;
        plot2.title = title2;
        plot2.ylabel = t->input_tokens ? "p90 uncached input tokens (TTFT proxy)"
                                       : "p90 uncached blocks per request";
        plot2.n_series = ns;
        plot2.ref_y = -1;
        plot2.ref_label = NULL;
        if (kvbt_plot_svg(path2, &plot2, err, sizeof err) < 0)
            kvbt_die(prog, "--plot: %s", err);
        if (!o->quiet && !o->csv)
            printf("plot: %s\n", path2);
        free(path2);
    }
    free(series);
    free(xs);
    free(ys);
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

/* The policies to run, from --policy, in catalog order for "all" and in the given
 * order for a list. Unknown names are a usage error; a policy that cannot run here
 * (kvb_pool_create refuses it, or a reference that does not apply) is an error when
 * named and a note with "all". */
static unsigned replay_select(const replay_opts *o, const replay_catalog *cat, const kvbt_trace *t,
                              const kvbt_oracle *oracle, bool *need_oracle, replay_policy *sel)
{
    bool all = strcmp(o->policy, "all") == 0;
    unsigned n = 0;
    char names[1024];
    replay_catalog_names(cat, names, sizeof names);

    const char *p = o->policy;
    for (unsigned i = 0;; i++) {
        const replay_policy *pol = NULL;
        char name[64];
        if (all) {
            if (i == cat->n)
                break;
            pol = &cat->p[i];
        } else {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len == 0 || len >= sizeof name)
                kvbt_usage_error(prog, "--policy: bad list '%s'", o->policy);
            memcpy(name, p, len);
            name[len] = '\0';
            for (unsigned j = 0; j < cat->n; j++)
                if (strcmp(cat->p[j].name, name) == 0)
                    pol = &cat->p[j];
            if (!pol)
                kvbt_usage_error(prog, "--policy: unknown policy '%s' (this build has: %s, or all)",
                                 name, names);
            p = comma ? comma + 1 : NULL;
        }
        for (unsigned j = 0; j < n; j++)
            if (strcmp(sel[j].name, pol->name) == 0)
                kvbt_usage_error(prog, "--policy: '%s' given twice", pol->name);

        /* Whether it can run here. */
        const char *why = NULL;
        char whybuf[512];
        if (pol->kind == REPLAY_POOL) {
            int rc = replay_probe(pol);
            if (rc < 0) {
                snprintf(whybuf, sizeof whybuf, "kvb_pool_create: %s", kvb_strerror(rc));
                why = whybuf;
            }
        } else if (pol->kind == REPLAY_FLAT && o->window) {
            why = "it has no notion of held requests (--window)";
        } else if (pol->kind == REPLAY_FLAT && all && t->max_request_blocks <= 1) {
            why = "with one-block requests it is the same as optimal";
        } else if (oracle && oracle->conflicts) {
            snprintf(whybuf, sizeof whybuf,
                     "the trace is not a prefix tree (%llu block refs follow another parent "
                     "than before, the first in request %llu)",
                     (unsigned long long)oracle->conflicts,
                     (unsigned long long)oracle->first_conflict_request + 1);
            why = whybuf;
        }
        if (why && !all)
            kvbt_die(prog, "policy %s cannot run: %s", pol->name, why);
        if (why) {
            if (!o->quiet)
                fprintf(stderr, "%s: note: %s skipped: %s\n", prog, pol->name, why);
        } else {
            sel[n++] = *pol;
            if (pol->kind != REPLAY_POOL)
                *need_oracle = true;
        }
        if (!all && !p)
            break;
    }
    if (n == 0)
        kvbt_die(prog, "none of the policies can run");
    return n;
}

int main(int argc, char **argv)
{
    replay_opts o;
    kvbt_trace t;
    char err[1024];
    int rc;

    replay_parse_args(argc, argv, &o);
    if (o.publish) {
        kvb_publisher_config pc;
        kvb_publisher_config_init(&pc);
        pc.endpoint = o.publish;
        pc.replay_endpoint = o.publish_replay;
        pc.topic = o.topic ? o.topic : "kv";
        rc = kvb_publisher_create(&pc, &replay_pub);
        if (rc < 0)
            kvbt_die(prog, "--publish %s: %s%s", o.publish, kvb_strerror(rc),
                     rc == -ENOTSUP ? " (built without ZeroMQ)" : "");
        kvb_event_config_init(&replay_events);
        kvb_publisher_event_config(replay_pub, &replay_events);
        replay_events.medium = "GPU";
        replay_events.batch_max = 64;
        replay_events.batch_delay_ms = 10;
    } else if (o.publish_replay || o.topic) {
        kvbt_die(prog, "--publish-replay and --topic need --publish");
    }

    bool synthetic = o.trace == NULL;
    if (synthetic) {
        if (kvbt_synth_generate(&o.synth, &t, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
    } else {
        if (o.synth_set && !o.quiet)
            fprintf(stderr,
                    "%s: note: --seed and --requests apply to the synthetic workload "
                    "only; ignored with --trace\n",
                    prog);
        if (kvbt_trace_load(o.trace, o.format, &t, err, sizeof err) < 0)
            kvbt_die(prog, "%s", err);
    }

    kvb_hash *hashes = kvbt_xmalloc_array((size_t)t.n_refs, sizeof *hashes);
    rc = kvbt_trace_lineage_hashes(&t, hashes);
    if (rc < 0)
        kvbt_die(prog, "%s: cannot hash the trace: %s (a request longer than %u blocks?)", t.name,
                 kvb_strerror(rc), KVB_HASH_MAX_POSITION + 1);

    /* A request longer than a capacity can never be served: say which. */
    for (unsigned c = 0; c < o.n_capacities; c++) {
        if (t.max_request_blocks <= o.capacities[c])
            continue;
        for (uint64_t r = 0; r < t.n_requests; r++) {
            if (kvbt_trace_len(&t, r) > o.capacities[c]) {
                char where[256];
                kvbt_die(prog, "%s has %llu blocks, more than the capacity of %u blocks",
                         replay_where(&t, r, where, sizeof where),
                         (unsigned long long)kvbt_trace_len(&t, r), o.capacities[c]);
            }
        }
    }

    /* Which policies run: each is probed before anything is printed, so that one that
     * cannot run is a clean error (named) or a note (all). The
     * optimal references need the oracle (next uses), built before any timing. */
    replay_catalog cat;
    replay_catalog_build(&cat);
    kvbt_oracle oracle;
    bool need_oracle = false;
    replay_policy *sel = kvbt_xmalloc_array(REPLAY_MAX_POLICIES, sizeof *sel);
    unsigned n_sel;
    {
        bool wants_ref = strcmp(o.policy, "all") == 0 || strstr(o.policy, "optimal") ||
                         strstr(o.policy, "belady_flat");
        bool have_oracle = false;
        if (wants_ref) {
            if (kvbt_oracle_build(&t, hashes, &oracle, err, sizeof err) < 0)
                kvbt_die(prog, "%s", err);
            have_oracle = true;
        }
        n_sel = replay_select(&o, &cat, &t, have_oracle ? &oracle : NULL, &need_oracle, sel);
        if (have_oracle && !need_oracle) {
            kvbt_oracle_free(&oracle);
            have_oracle = false;
        }
        need_oracle = have_oracle;
    }

    if (o.lookahead)
        replay_hint_capacity = replay_lookahead_capacity(&t, o.lookahead);

    replay_scratch s;
    memset(&s, 0, sizeof s);
    s.maxn = (size_t)t.max_request_blocks;
    s.blocks = kvbt_xmalloc_array(s.maxn, sizeof *s.blocks);
    s.mut = kvbt_xmalloc_array(s.maxn, sizeof *s.mut);
    s.cmp = kvbt_xmalloc_array(s.maxn, sizeof *s.cmp);
    s.uncached = kvbt_xmalloc_array(t.n_requests ? t.n_requests : 1, sizeof *s.uncached);
    s.sorted = kvbt_xmalloc_array(t.n_requests ? t.n_requests : 1, sizeof *s.sorted);
    if (o.window) {
        double mib = ((double)o.window + 1) * (double)s.maxn * sizeof *s.slots / 1048576.0;
        if (mib > 4096)
            kvbt_die(prog,
                     "--window %u: the held requests need %.0f MiB of handles (%u slots of the "
                     "longest request, %zu blocks); use a smaller window",
                     o.window, mib, o.window + 1, s.maxn);
        s.slots = kvbt_xmalloc_array(((size_t)o.window + 1) * s.maxn, sizeof *s.slots);
        s.slot_n = kvbt_xmalloc_array((size_t)o.window + 1, sizeof *s.slot_n);
    }

    replay_cell *cells = calloc((size_t)n_sel * o.n_capacities, sizeof *cells);
    if (!cells)
        kvbt_die(prog, "out of memory");

    kvbt_progress progress;
    uint64_t runs = (uint64_t)n_sel * o.n_capacities * o.repeat, run = 0;
    kvbt_progress_init(&progress, !o.quiet && isatty(STDERR_FILENO), runs * t.n_refs);

    for (unsigned p = 0; p < n_sel; p++) {
        if (sel[p].kind == REPLAY_POOL) {
            replay_warmup(&t, hashes, &sel[p], o.capacities[0], o.window, o.lookahead, &s);
            break;
        }
    }

    if (!o.csv && !o.quiet)
        replay_header(&t, &o, synthetic);
    replay_columns(&o);
    fflush(stdout);

    for (unsigned p = 0; p < n_sel; p++) {
        const replay_policy *pol = &sel[p];
        for (unsigned c = 0; c < o.n_capacities; c++) {
            uint32_t cap = o.capacities[c];
            replay_cell best = {.ns = UINT64_MAX}, cur = {0};
            for (uint64_t i = 0; i < o.repeat; i++) {
                kvbt_progress_label(&progress, "%s @ %u blocks (run %llu of %llu)", pol->name,
                                    cap, (unsigned long long)++run, (unsigned long long)runs);
                kvbt_progress_draw(&progress, true);
                if (pol->kind == REPLAY_POOL) {
                    rc = replay_run_pool(&t, hashes, pol, cap, o.window, o.lookahead, &s, &progress,
                                         &cur);
                    if (rc < 0)
                        kvbt_die(prog, "kvb_pool_create (policy %s, capacity %u): %s", pol->name,
                                 cap, kvb_strerror(rc));
                } else {
                    kvbt_opt_result ores;
                    rc = pol->kind == REPLAY_OPTIMAL
                             ? kvbt_optimal_run(&t, &oracle, cap, o.window, &progress, &ores, err,
                                                sizeof err)
                             : kvbt_belady_flat_run(&t, &oracle, cap, &progress, &ores, err,
                                                    sizeof err);
                    if (rc < 0)
                        kvbt_die(prog, "%s", err);
                    cur.hits = ores.hits;
                    cur.evictions = ores.evictions;
                    cur.early_releases = ores.early_releases;
                    cur.ns = ores.ns;
                }
                if (i > 0 && (cur.hits != best.hits || cur.evictions != best.evictions))
                    kvbt_die(prog,
                             "policy %s, capacity %u: run %llu gave %llu hits / %llu evictions, "
                             "an earlier run %llu / %llu: the replay is not deterministic",
                             pol->name, cap, (unsigned long long)i + 1,
                             (unsigned long long)cur.hits, (unsigned long long)cur.evictions,
                             (unsigned long long)best.hits, (unsigned long long)best.evictions);
                best.hits = cur.hits;
                best.evictions = cur.evictions;
                best.early_releases = cur.early_releases;
                best.has_uncached = cur.has_uncached;
                memcpy(best.uncached, cur.uncached, sizeof best.uncached);
                if (cur.ns < best.ns)
                    best.ns = cur.ns;
            }
            best.done = true;
            cells[p * o.n_capacities + c] = best;
            kvbt_progress_clear(&progress);
            replay_emit(&o, &t, pol, cap, &best);
        }
    }
    kvbt_progress_finish(&progress);

    if (!o.csv && n_sel > 1 && o.n_capacities > 1)
        replay_matrix(&o, &t, sel, n_sel, cells);
    if (o.plot)
        replay_plot(&o, &t, synthetic, sel, n_sel, cells);

    if (need_oracle)
        kvbt_oracle_free(&oracle);
    free(cells);
    free(sel);
    free(s.blocks);
    free(s.mut);
    free(s.cmp);
    free(s.slots);
    free(s.slot_n);
    free(s.uncached);
    free(s.sorted);
    free(hashes);
    kvbt_trace_free(&t);
    if (replay_pub) {
        kvb_publisher_stats ps;
        if (kvb_publisher_flush(replay_pub, 10000) < 0)
            fprintf(stderr, "%s: note: the publisher did not drain within 10 s\n", prog);
        if (kvb_publisher_stats_get(replay_pub, &ps) == 0 && !o.quiet)
            fprintf(stderr, "%s: published %llu batches (%llu events), dropped %llu\n", prog,
                    (unsigned long long)ps.published, (unsigned long long)ps.events,
                    (unsigned long long)ps.dropped);
        kvb_publisher_destroy(replay_pub);
    }
    return 0;
}
