/*
 * tools/kvb-replay/options.c - kvb-replay's command line: --help and the
 * options (replay_opts), with the shared parsers of tools/common/args.c. Policy
 * names are checked later, against the catalog (kvb-replay.c).
 */
#include "kvb-replay/replay.h"

#include <getopt.h>
#include <string.h>

static const uint32_t replay_all_capacities[] = {1000, 2000, 4000, 8000, 16000, 32000};

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
            "  --demote unhinted|one-off  after each request, its newly registered blocks\n"
            "                      at priority 0 (a hit restores the default): unhinted, those\n"
            "                      no request of the next W (--lookahead) hints; one-off, those\n"
            "                      no later request uses (an oracle: what a runtime that knows\n"
            "                      a session ended could say); not with --retention or --ttl\n"
            "  --api acquire|calls how a request is served (default acquire): one\n"
            "                      kvb_pool_acquire per request where that gives the same\n"
            "                      results (window 0, no --lookahead, no --retention), else\n"
            "                      and with `calls` the match, allocate, stage and register\n"
            "                      calls\n"
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

void replay_parse_args(int argc, char **argv, replay_opts *o)
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
        O_DEMOTE,
        O_API,
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
        {"demote", required_argument, NULL, O_DEMOTE},
        {"api", required_argument, NULL, O_API},
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
                kvbt_usage_error(prog,
                                 "--retention: '%s' is not K:P[:MS] (K >= 1 blocks, priority P "
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
        case O_DEMOTE:
            if (strcmp(optarg, "unhinted") && strcmp(optarg, "one-off"))
                kvbt_usage_error(prog, "--demote: '%s' is not unhinted or one-off", optarg);
            o->demote = optarg;
            replay_demote =
                !strcmp(optarg, "unhinted") ? REPLAY_DEMOTE_UNHINTED : REPLAY_DEMOTE_ONE_OFF;
            break;
        case O_API:
            if (strcmp(optarg, "acquire") && strcmp(optarg, "calls"))
                kvbt_usage_error(prog, "--api: '%s' is not acquire or calls", optarg);
            replay_api_calls = !strcmp(optarg, "calls");
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
    if (o->demote && (o->retention || o->ttl))
        kvbt_usage_error(prog, "--demote sets priorities: not with --retention or --ttl");
    if (replay_demote == REPLAY_DEMOTE_UNHINTED && !o->lookahead)
        kvbt_usage_error(prog, "--demote unhinted needs --lookahead W");
    if (strcmp(o->policy, "all") == 0 && !o->capacities_set) {
        o->n_capacities = sizeof replay_all_capacities / sizeof replay_all_capacities[0];
        memcpy(o->capacities, replay_all_capacities, sizeof replay_all_capacities);
    }
}
