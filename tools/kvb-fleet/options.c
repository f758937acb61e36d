/*
 * tools/kvb-fleet/options.c - kvb-fleet's manual (--help) and command line
 * (fleet_opts), with the shared parsers of tools/common/args.c.
 */
#include "kvb-fleet/fleet.h"

#include <getopt.h>

const char *const fleet_pol_names[POL_COUNT] = {"round_robin", "least_loaded", "kv_aware"};

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

void fleet_parse_args(int argc, char **argv, fleet_opts *o)
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
    o->n_plot_w =
        kvbt_arg_count_list(prog, "--plot-workers", plot_w, 1, 1024, o->plot_w, FLEET_MAX_PLOT_W);
}
