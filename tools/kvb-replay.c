/*
 * kvb-replay - replay a prefix-sharing block trace through a kvblock pool and
 * report prefix hit ratios and the cost per block reference, for one or every
 * eviction policy and one or several capacities.
 *
 * The workload is the "prefix replay" of ../shared/data/README.md:
 *
 *   for each request, in trace order:
 *     hashes: id x at index j, after id y, is kvb_hash_make(x, y, j > 0, j)
 *     k = kvb_pool_match(hashes)        prefix hits: stops at the first miss
 *     allocate the other n - k blocks   all or nothing, evicting in policy order
 *     stage each with its hash, register them in one batch
 *     release the n blocks, last block first (deeper blocks leave before their
 *     prefixes), with one kvb_block_release_n on the reversed handle array
 *
 *   prefix hit ratio = sum k / sum n; evictions from kvb_pool_stats().
 *
 * Registering a hash that is cached but came after the first miss (possible
 * when a policy evicted a prefix before its descendants) resurrects the cached
 * block and makes the new one a duplicate (the pool's default KVB_DUP_ALLOW);
 * it is not counted as a hit, since the prefix was broken.
 *
 * Timing covers only the replay loop: the trace is parsed and its lineage
 * hashes computed before the clock starts; the pool is created before and
 * checked (kvb_pool_check) and destroyed after. --repeat N keeps the best of N
 * runs, each on a fresh pool, and insists that they all give the same hits.
 *
 * Without --trace the built-in synthetic workload (tools/common/synth.c) is
 * replayed, so that the tool runs anywhere.
 */
#include "kvblock.h"

#include "common/synth.h"
#include "common/trace.h"
#include "common/util.h"

#include <getopt.h>

static const char *prog = "kvb-replay";

/* ------------------------------------------------------------------------ */
/* Policies                                                                 */
/* ------------------------------------------------------------------------ */

static const struct replay_policy {
    const char *name;
    kvb_evict_policy policy;
} replay_policies[] = {
    {"lru", KVB_EVICT_LRU},
    {"fifo", KVB_EVICT_FIFO},
    {"multi_lru", KVB_EVICT_MULTI_LRU},
    {"tinylfu", KVB_EVICT_TINYLFU},
    {"lineage", KVB_EVICT_LINEAGE},
};
#define REPLAY_NPOLICIES (sizeof replay_policies / sizeof replay_policies[0])

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

#define REPLAY_MAX_CAPACITIES 64

typedef struct replay_opts {
    const char *trace;
    kvbt_format format;
    const char *policy; /* a name or "all" */
    uint32_t capacities[REPLAY_MAX_CAPACITIES];
    unsigned n_capacities;
    bool csv, quiet;
    uint64_t repeat;
    kvbt_synth_params synth;
    bool synth_set; /* --seed or --requests given */
} replay_opts;

static void replay_usage(FILE *f)
{
    fprintf(f,
            "usage: kvb-replay [options]\n"
            "Replay a prefix-sharing block trace through a kvblock pool (\"prefix replay\",\n"
            "see shared/data/README.md) and report prefix hit ratios and ns per block ref.\n"
            "\n"
            "  --trace FILE        trace to replay (default: the built-in synthetic workload)\n"
            "  --format NAME       trace format: %s (default mooncake)\n"
            "  --capacity BLOCKS   pool capacity in blocks (default 8000)\n"
            "  --capacities LIST   comma-separated capacities, one run each (e.g. 1000,2000)\n"
            "  --policy NAME       lru, fifo, multi_lru, tinylfu, lineage or all (default lru);\n"
            "                      with all, policies the library does not support are skipped\n"
            "  --csv               CSV: policy,capacity,requests,block_refs,hits,hit_ratio,\n"
            "                      seconds,ns_per_block_ref (hit_ratio a fraction)\n"
            "  --repeat N          time N runs per configuration, keep the best (default 1)\n"
            "  --seed S            synthetic workload seed (default 1)\n"
            "  --requests N        synthetic workload requests (default 12000)\n"
            "  --quiet             no header and no notes, results only\n"
            "  --help              this text\n"
            "\n"
            "Timing covers the replay loop only (trace parsed and hashed beforehand),\n"
            "CLOCK_MONOTONIC. Exit status: 0 ok, 1 error, 2 bad usage.\n",
            kvbt_format_names());
}

static KVBT_NORETURN KVBT_PRINTF(1, 2) void replay_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'kvb-replay --help'.\n");
    exit(2);
}

static uint32_t replay_parse_capacity(const char *s, const char *opt)
{
    uint64_t v;
    if (!kvbt_parse_u64(s, 1, KVB_MAX_BLOCKS, &v))
        replay_usage_error("%s: '%s' is not a capacity (an integer from 1 to %u)", opt, s,
                           KVB_MAX_BLOCKS);
    return (uint32_t)v;
}

static void replay_parse_capacities(replay_opts *o, const char *list)
{
    char item[32];
    const char *p = list;
    o->n_capacities = 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= sizeof item)
            replay_usage_error("--capacities: bad list '%s' (expected e.g. 1000,2000,4000)", list);
        memcpy(item, p, len);
        item[len] = '\0';
        if (o->n_capacities == REPLAY_MAX_CAPACITIES)
            replay_usage_error("--capacities: at most %d capacities", REPLAY_MAX_CAPACITIES);
        o->capacities[o->n_capacities++] = replay_parse_capacity(item, "--capacities");
        if (!comma)
            break;
        p = comma + 1;
    }
}

static void replay_parse_args(int argc, char **argv, replay_opts *o)
{
    enum {
        O_TRACE = 256,
        O_FORMAT,
        O_CAPACITY,
        O_CAPACITIES,
        O_POLICY,
        O_CSV,
        O_REPEAT,
        O_SEED,
        O_REQUESTS,
        O_QUIET,
        O_HELP
    };
    static const struct option longopts[] = {
        {"trace", required_argument, NULL, O_TRACE},
        {"format", required_argument, NULL, O_FORMAT},
        {"capacity", required_argument, NULL, O_CAPACITY},
        {"capacities", required_argument, NULL, O_CAPACITIES},
        {"policy", required_argument, NULL, O_POLICY},
        {"csv", no_argument, NULL, O_CSV},
        {"repeat", required_argument, NULL, O_REPEAT},
        {"seed", required_argument, NULL, O_SEED},
        {"requests", required_argument, NULL, O_REQUESTS},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    uint64_t v;
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
                replay_usage_error("--format: unknown format '%s' (supported: %s)", optarg,
                                   kvbt_format_names());
            break;
        case O_CAPACITY:
            o->capacities[0] = replay_parse_capacity(optarg, "--capacity");
            o->n_capacities = 1;
            break;
        case O_CAPACITIES:
            replay_parse_capacities(o, optarg);
            break;
        case O_POLICY: {
            bool known = strcmp(optarg, "all") == 0;
            for (size_t i = 0; i < REPLAY_NPOLICIES; i++)
                known |= strcmp(optarg, replay_policies[i].name) == 0;
            if (!known)
                replay_usage_error(
                    "--policy: unknown policy '%s' (lru, fifo, multi_lru, tinylfu, lineage, all)",
                    optarg);
            o->policy = optarg;
            break;
        }
        case O_CSV:
            o->csv = true;
            break;
        case O_REPEAT:
            if (!kvbt_parse_u64(optarg, 1, 1000000, &v))
                replay_usage_error("--repeat: '%s' is not a count from 1 to 1000000", optarg);
            o->repeat = v;
            break;
        case O_SEED:
            if (!kvbt_parse_u64(optarg, 0, UINT64_MAX, &v))
                replay_usage_error("--seed: '%s' is not an unsigned integer", optarg);
            o->synth.seed = v;
            o->synth_set = true;
            break;
        case O_REQUESTS:
            if (!kvbt_parse_u64(optarg, 1, 100000000, &v))
                replay_usage_error("--requests: '%s' is not a count from 1 to 100000000", optarg);
            o->synth.requests = v;
            o->synth_set = true;
            break;
        case O_QUIET:
            o->quiet = true;
            break;
        case 'h':
        case O_HELP:
            replay_usage(stdout);
            exit(0);
        case ':':
            replay_usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            replay_usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        replay_usage_error("unexpected argument '%s'", argv[optind]);
}

/* ------------------------------------------------------------------------ */
/* Replay                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct replay_scratch {
    kvb_block *blocks;
    kvb_mutable *mut;
    kvb_complete *cmp;
} replay_scratch;

typedef struct replay_result {
    uint64_t hits;
    uint64_t evictions;
    uint64_t ns; /* the replay loop only */
} replay_result;

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

/* One replay of the whole trace on a fresh pool. Returns 0, or the negative
 * errno of kvb_pool_create (the caller decides about -ENOTSUP); any other
 * library error ends the program with a message. */
static int replay_run(const kvbt_trace *t, const kvb_hash *hashes, const struct replay_policy *pol,
                      uint32_t capacity, replay_scratch *s, replay_result *res)
{
    kvb_pool_config cfg;
    kvb_pool *pool;
    kvb_stats st;
    int rc;

    kvb_pool_config_init(&cfg);
    cfg.block_count = capacity;
    cfg.evict = pol->policy;
    cfg.name = "replay";
    rc = kvb_pool_create(&cfg, &pool);
    if (rc < 0)
        return rc;

    const uint64_t *off = t->off;
    kvb_block *blk = s->blocks;
    uint64_t hits = 0;

    uint64_t t0 = kvbt_now_ns();
    for (uint64_t r = 0; r < t->n_requests; r++) {
        const kvb_hash *h = hashes + off[r];
        uint32_t n = (uint32_t)(off[r + 1] - off[r]);

        rc = kvb_pool_match(pool, h, n, blk);
        if (rc < 0)
            replay_lib_fail(t, r, "kvb_pool_match", rc, pol->name, capacity);
        uint32_t k = (uint32_t)rc;
        hits += k;

        uint32_t m = n - k;
        if (m > 0) {
            rc = kvb_pool_allocate(pool, m, s->mut, NULL, NULL);
            if (rc < 0)
                replay_lib_fail(t, r, "kvb_pool_allocate", rc, pol->name, capacity);
            for (uint32_t j = 0; j < m; j++) {
                rc = kvb_mutable_stage(&s->mut[j], h[k + j], &s->cmp[j]);
                if (rc < 0)
                    replay_lib_fail(t, r, "kvb_mutable_stage", rc, pol->name, capacity);
            }
            rc = kvb_pool_register(pool, s->cmp, m, blk + k);
            if (rc < 0)
                replay_lib_fail(t, r, "kvb_pool_register", rc, pol->name, capacity);
        }

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
    uint64_t t1 = kvbt_now_ns();

    rc = kvb_pool_stats(pool, &st);
    if (rc < 0)
        kvbt_die(prog, "kvb_pool_stats: %s", kvb_strerror(rc));
    rc = kvb_pool_check(pool);
    if (rc != 0)
        kvbt_die(prog,
                 "INVARIANT VIOLATION: kvb_pool_check() = %d (%s) after replaying %s with policy "
                 "%s, capacity %u: this is a kvblock bug",
                 rc, kvb_strerror(rc), t->name, pol->name, capacity);
    if (st.misuse != 0 || st.mutable_ + st.staged + st.primary + st.duplicate != 0)
        kvbt_die(prog,
                 "after the replay (policy %s, capacity %u) the pool reports misuse %llu, "
                 "mutable %u, staged %u, primary %u, duplicate %u (all should be 0)",
                 pol->name, capacity, (unsigned long long)st.misuse, st.mutable_, st.staged,
                 st.primary, st.duplicate);
    rc = kvb_pool_destroy(pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s", kvb_strerror(rc));

    res->hits = hits;
    res->evictions = st.evictions;
    res->ns = t1 - t0;
    return 0;
}

/* Whether the library supports a policy: 0, -ENOTSUP, or another create error. */
static int replay_probe(const struct replay_policy *pol)
{
    kvb_pool_config cfg;
    kvb_pool *pool;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 1;
    cfg.evict = pol->policy;
    int rc = kvb_pool_create(&cfg, &pool);
    if (rc < 0)
        return rc;
    rc = kvb_pool_destroy(pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s", kvb_strerror(rc));
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

static void replay_header(const kvbt_trace *t, const replay_opts *o, bool synthetic)
{
    double refs = (double)t->n_refs;
    if (synthetic)
        printf("trace: synthetic workload (built in, tools/common/synth.c)\n  %s\n", t->source);
    else
        printf("trace: %s (%s)\n", t->name, t->source);
    printf("  requests %llu, block refs %llu, unique blocks %llu\n",
           (unsigned long long)t->n_requests, (unsigned long long)t->n_refs,
           (unsigned long long)t->unique_blocks);
    printf("  blocks/request mean %.1f, max %llu; infinite-cache prefix hit ratio %.2f%%\n",
           refs / (double)t->n_requests, (unsigned long long)t->max_request_blocks,
           refs > 0 ? 100.0 * (double)t->infinite_hits / refs : 0.0);
    printf("  replay: prefix match, allocate + stage + register the rest, release last block "
           "first; best of %llu\n\n",
           (unsigned long long)o->repeat);
}

int main(int argc, char **argv)
{
    replay_opts o;
    kvbt_trace t;
    char err[1024];

    replay_parse_args(argc, argv, &o);

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
    int rc = kvbt_trace_lineage_hashes(&t, hashes);
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

    replay_scratch s;
    size_t maxn = (size_t)t.max_request_blocks;
    s.blocks = kvbt_xmalloc_array(maxn, sizeof *s.blocks);
    s.mut = kvbt_xmalloc_array(maxn, sizeof *s.mut);
    s.cmp = kvbt_xmalloc_array(maxn, sizeof *s.cmp);

    /* Which policies run: probe each with a one-block pool before printing anything,
     * so that an unsupported one is a clean error (explicit) or a note (all). */
    bool all = strcmp(o.policy, "all") == 0;
    bool run_policy[REPLAY_NPOLICIES];
    unsigned n_run = 0;
    for (size_t p = 0; p < REPLAY_NPOLICIES; p++) {
        run_policy[p] = all || strcmp(o.policy, replay_policies[p].name) == 0;
        if (!run_policy[p])
            continue;
        rc = replay_probe(&replay_policies[p]);
        if (rc == -ENOTSUP) {
            if (!all)
                kvbt_die(prog, "policy %s is not supported by this build of kvblock yet (%s)",
                         replay_policies[p].name, kvb_strerror(rc));
            if (!o.quiet)
                fprintf(stderr,
                        "%s: note: policy %s is not supported by this build of kvblock yet "
                        "(%s); skipped\n",
                        prog, replay_policies[p].name, kvb_strerror(rc));
            run_policy[p] = false;
            continue;
        }
        if (rc < 0)
            kvbt_die(prog, "kvb_pool_create (policy %s): %s", replay_policies[p].name,
                     kvb_strerror(rc));
        n_run++;
    }
    if (n_run == 0)
        kvbt_die(prog, "none of the policies is supported by this build of kvblock");

    if (o.csv)
        printf("policy,capacity,requests,block_refs,hits,hit_ratio,seconds,ns_per_block_ref\n");
    else {
        if (!o.quiet)
            replay_header(&t, &o, synthetic);
        printf("%-10s %10s %10s %10s %10s %9s %9s\n", "policy", "capacity", "hit ratio", "hits",
               "evictions", "ns/ref", "M refs/s");
    }
    fflush(stdout);

    for (size_t p = 0; p < REPLAY_NPOLICIES; p++) {
        const struct replay_policy *pol = &replay_policies[p];
        if (!run_policy[p])
            continue;
        for (unsigned c = 0; c < o.n_capacities; c++) {
            uint32_t cap = o.capacities[c];
            replay_result best = {0, 0, UINT64_MAX}, cur;
            for (uint64_t i = 0; i < o.repeat; i++) {
                rc = replay_run(&t, hashes, pol, cap, &s, &cur);
                if (rc < 0)
                    kvbt_die(prog, "kvb_pool_create (policy %s, capacity %u): %s", pol->name, cap,
                             kvb_strerror(rc));
                if (i > 0 && (cur.hits != best.hits || cur.evictions != best.evictions))
                    kvbt_die(prog,
                             "policy %s, capacity %u: run %llu gave %llu hits / %llu evictions, "
                             "an earlier run %llu / %llu: the replay is not deterministic",
                             pol->name, cap, (unsigned long long)i + 1,
                             (unsigned long long)cur.hits, (unsigned long long)cur.evictions,
                             (unsigned long long)best.hits, (unsigned long long)best.evictions);
                best.hits = cur.hits;
                best.evictions = cur.evictions;
                if (cur.ns < best.ns)
                    best.ns = cur.ns;
            }
            double refs = (double)t.n_refs;
            double ratio = refs > 0 ? (double)best.hits / refs : 0.0;
            double secs = (double)best.ns / 1e9;
            double nsref = refs > 0 ? (double)best.ns / refs : 0.0;
            if (o.csv)
                printf("%s,%u,%llu,%llu,%llu,%.6f,%.6f,%.2f\n", pol->name, cap,
                       (unsigned long long)t.n_requests, (unsigned long long)t.n_refs,
                       (unsigned long long)best.hits, ratio, secs, nsref);
            else
                printf("%-10s %10u %9.2f%% %10llu %10llu %9.1f %9.2f\n", pol->name, cap,
                       100.0 * ratio, (unsigned long long)best.hits,
                       (unsigned long long)best.evictions, nsref,
                       secs > 0 ? refs / secs / 1e6 : 0.0);
            fflush(stdout);
        }
    }

    free(s.blocks);
    free(s.mut);
    free(s.cmp);
    free(hashes);
    kvbt_trace_free(&t);
    return 0;
}
