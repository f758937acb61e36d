/*
 * tools/kvb-bench/options.c - kvb-bench's command line: --help, the options and
 * their presets (--quick, --callgrind-ops), and the policies under test: the
 * ones the library lists (kvb_inactive_policy; the index is the
 * kvb_evict_policy value) that kvb_pool_create accepts, so that a backend added
 * to the library later shows up without editing this tool.
 */
#include "kvb-bench/bench.h"

#include <getopt.h>

/* ------------------------------------------------------------------------ */
/* Policies                                                                 */
/* ------------------------------------------------------------------------ */

policy_info policies[BENCH_MAX_POLICIES];
unsigned n_policies;

static int probe_policy(kvb_evict_policy pol)
{
    kvb_pool_config cfg;
    kvb_pool *pool;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 16;
    cfg.evict = pol;
    int rc = kvb_pool_create(&cfg, &pool);
    if (rc == 0 && kvb_pool_destroy(pool) != 0)
        kvbt_die(prog, "kvb_pool_destroy failed on an unused pool");
    return rc;
}

void discover_policies(void)
{
    const kvb_inactive_ops *ops;
    n_policies = 0;
    for (unsigned v = 0; v < BENCH_MAX_POLICIES && (ops = kvb_inactive_policy(v)) != NULL; v++) {
        if (probe_policy((kvb_evict_policy)v) != 0)
            continue;
        policies[n_policies].policy = (kvb_evict_policy)v;
        policies[n_policies].name = ops->name;
        n_policies++;
    }
    if (n_policies == 0)
        kvbt_die(prog, "no eviction policy is available in this build of kvblock");
}

/* Options                                                                  */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: kvb-bench [options]\n"
               "Micro benchmarks of a kvblock pool next to a same-binary \"speed of light\"\n"
               "baseline (the pool's memory work on plain arrays: table, records, LRU links,\n"
               "free stack; no hashing, no lock, no states, no counters),\n"
               "multi-thread throughput with lock contention counters, and bookkeeping memory.\n"
               "\n"
               "  --blocks LIST     pool sizes (default 10000,1000000; k and M suffixes allowed;\n"
               "                    at most 67108863, the baseline's limit)\n"
               "  --batch LIST      batch sizes (default 1,16,64; threads: 16 unless given)\n"
               "  --policy LIST     policies or all (default all built-in: the ones\n"
               "                    kvb_pool_create accepts; the others are skipped)\n"
               "  --op LIST         operations or all (default all): lifecycle, match_active,\n"
               "                    match_cached, scattered, upgrade_live, upgrade_cached, clone,\n"
               "                    evict_alloc, acquire; a prefix such as 'match' or 'upgrade'\n"
               "                    selects every operation it starts\n"
               "  --section LIST    micro,threads,memory (default all three)\n"
               "  --threads LIST    thread counts (default 1,2,4)\n"
               "  --reps N          measured repetitions per configuration (default 15)\n"
               "  --work N          blocks per repetition (default 16384; capped at blocks/2\n"
               "                    for evict_alloc)\n"
               "  --quick           small CI-sized run: 10k blocks, batches 1,16, 5 repetitions\n"
               "                    of 2048 blocks, short thread runs (memory still at 1M)\n"
               "  --csv             CSV rows (each section prints its own header line)\n"
               "  --clock wall|cpu  micro timing clock: wall (CLOCK_MONOTONIC, default) or cpu\n"
               "                    (CLOCK_THREAD_CPUTIME_ID: leaves out time the thread was\n"
               "                    preempted, for a machine shared with other load)\n"
               "  --events          micro: also run every operation on a second pool whose\n"
               "                    events go to a sink that drops them (emit all, deliver at\n"
               "                    once) and print an op+events row: that pool's ns per block\n"
               "                    beside the plain pool's, ratio = events / plain (per-\n"
               "                    repetition median); with --callgrind-ops, op+events dumps\n"
               "  --callgrind-ops   instruction-count mode for callgrind (make perf-check):\n"
               "                    valgrind --tool=callgrind --instr-atstart=no kvb-bench\n"
               "                    --callgrind-ops; default 4096 blocks, batches 1,16\n"
               "  --help            this text\n"
               "\n"
               "Times are CLOCK_MONOTONIC ns per block: min / median / max over repetitions\n"
               "after warm-up; the ratio is the median of per-repetition library/baseline\n"
               "ratios (both run back to back on the same plan). Exit status: 0 ok, 1 error,\n"
               "2 bad usage. Targets are printed, never asserted.\n");
}

static void add_policy(const char *item, void *arg)
{
    opts *o = arg;
    if (strcmp(item, "all") == 0) {
        for (unsigned i = 0; i < n_policies; i++)
            o->policy_sel[i] = true;
        return;
    }
    for (unsigned i = 0; i < n_policies; i++) {
        if (strcmp(item, policies[i].name) == 0) {
            o->policy_sel[i] = true;
            return;
        }
    }
    if (kvb_inactive_find(item))
        kvbt_die(prog, "policy %s: kvb_pool_create refuses it in this build", item);
    char avail[256] = "";
    for (unsigned i = 0; i < n_policies; i++) {
        strncat(avail, policies[i].name, sizeof avail - strlen(avail) - 1);
        strncat(avail, ", ", sizeof avail - strlen(avail) - 1);
    }
    kvbt_usage_error(prog, "--policy: unknown policy '%s' (available: %sall)", item, avail);
}

static void add_op(const char *item, void *arg)
{
    opts *o = arg;
    bool any = false;
    size_t len = strlen(item);
    for (int i = 0; i < OP_COUNT; i++) {
        bool all = strcmp(item, "all") == 0;
        bool exact = strcmp(item, op_names[i]) == 0;
        bool prefix = strncmp(item, op_names[i], len) == 0 && op_names[i][len] == '_';
        if (all || exact || prefix)
            o->op_sel[i] = any = true;
    }
    if (!any)
        kvbt_usage_error(prog,
                         "--op: unknown operation '%s' (lifecycle, match_active, match_cached, "
                         "scattered, upgrade_live, upgrade_cached, clone, evict_alloc, acquire, "
                         "all)",
                         item);
}

static void add_section(const char *item, void *arg)
{
    opts *o = arg;
    if (strcmp(item, "micro") == 0)
        o->sec_micro = true;
    else if (strcmp(item, "threads") == 0)
        o->sec_threads = true;
    else if (strcmp(item, "memory") == 0)
        o->sec_memory = true;
    else if (strcmp(item, "all") == 0)
        o->sec_micro = o->sec_threads = o->sec_memory = true;
    else
        kvbt_usage_error(prog, "--section: unknown section '%s' (micro, threads, memory, all)",
                         item);
}

void parse_args(int argc, char **argv, opts *o)
{
    enum {
        O_BLOCKS = 256,
        O_BATCH,
        O_POLICY,
        O_OP,
        O_SECTION,
        O_THREADS,
        O_REPS,
        O_WORK,
        O_QUICK,
        O_CSV,
        O_CALLGRIND,
        O_CLOCK,
        O_EVENTS,
        O_HELP
    };
    static const struct option longopts[] = {
        {"blocks", required_argument, NULL, O_BLOCKS},
        {"batch", required_argument, NULL, O_BATCH},
        {"policy", required_argument, NULL, O_POLICY},
        {"op", required_argument, NULL, O_OP},
        {"section", required_argument, NULL, O_SECTION},
        {"threads", required_argument, NULL, O_THREADS},
        {"reps", required_argument, NULL, O_REPS},
        {"work", required_argument, NULL, O_WORK},
        {"quick", no_argument, NULL, O_QUICK},
        {"csv", no_argument, NULL, O_CSV},
        {"callgrind-ops", no_argument, NULL, O_CALLGRIND},
        {"clock", required_argument, NULL, O_CLOCK},
        {"events", no_argument, NULL, O_EVENTS},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *blocks = NULL, *batch = NULL, *policy = NULL, *op = NULL, *section = NULL,
               *threads = NULL;
    static const char *const clock_names[] = {"wall", "cpu"};
    uint64_t reps = 0, work = 0;
    int c;

    memset(o, 0, sizeof *o);
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case O_BLOCKS:
            blocks = optarg;
            break;
        case O_BATCH:
            batch = optarg;
            break;
        case O_POLICY:
            policy = optarg;
            break;
        case O_OP:
            op = optarg;
            break;
        case O_SECTION:
            section = optarg;
            break;
        case O_THREADS:
            threads = optarg;
            break;
        case O_REPS:
            reps = kvbt_arg_u64(prog, "--reps", optarg, 1, 100000);
            break;
        case O_WORK:
            work = kvbt_arg_count(prog, "--work", optarg, 1, 1u << 24);
            break;
        case O_QUICK:
            o->quick = true;
            break;
        case O_CSV:
            o->csv = true;
            break;
        case O_CALLGRIND:
            o->callgrind = true;
            break;
        case O_CLOCK:
            o->cpu_clock = kvbt_arg_choice(prog, "--clock", optarg, clock_names, 2) == 1;
            break;
        case O_EVENTS:
            o->events = true;
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            kvbt_usage_getopt(prog, c, argv);
        }
    }
    kvbt_usage_no_operands(prog, argc, argv);

    /* defaults, then the quick and callgrind presets, then explicit options */
    o->blocks[0] = 10000, o->blocks[1] = 1000000, o->n_blocks = 2;
    o->batch[0] = 1, o->batch[1] = 16, o->batch[2] = 64, o->n_batch = 3;
    o->threads[0] = 1, o->threads[1] = 2, o->threads[2] = 4, o->n_threads = 3;
    o->reps = 15, o->warmup = 2, o->work = 16384, o->thread_work = 1u << 20;
    if (o->quick) {
        o->blocks[0] = 10000, o->n_blocks = 1;
        o->batch[0] = 1, o->batch[1] = 16, o->n_batch = 2;
        o->threads[0] = 1, o->threads[1] = 2, o->n_threads = 2;
        o->reps = 5, o->warmup = 1, o->work = 2048, o->thread_work = 1u << 16;
    }
    if (o->callgrind) {
        o->blocks[0] = 4096, o->n_blocks = 1;
        o->batch[0] = 1, o->batch[1] = 16, o->n_batch = 2;
        o->reps = 1, o->warmup = 1, o->work = 2048;
    }
    if (blocks)
        o->n_blocks =
            kvbt_arg_count_list(prog, "--blocks", blocks, 2, BENCH_MAX_BLOCKS, o->blocks, MAX_LIST);
    if (batch) {
        o->n_batch = kvbt_arg_count_list(prog, "--batch", batch, 1, 4096, o->batch, MAX_LIST);
        o->batch_given = true;
    }
    if (threads)
        o->n_threads =
            kvbt_arg_count_list(prog, "--threads", threads, 1, 256, o->threads, MAX_LIST);
    if (reps)
        o->reps = (uint32_t)reps;
    if (work)
        o->work = (uint32_t)work;
    if (policy)
        kvbt_arg_each(prog, "--policy", policy, add_policy, o);
    else
        for (unsigned i = 0; i < n_policies; i++)
            o->policy_sel[i] = true;
    if (op)
        kvbt_arg_each(prog, "--op", op, add_op, o);
    else
        for (int i = 0; i < OP_COUNT; i++)
            o->op_sel[i] = true;
    if (section)
        kvbt_arg_each(prog, "--section", section, add_section, o);
    else
        o->sec_micro = o->sec_threads = o->sec_memory = true;
    for (unsigned i = 0; i < o->n_batch; i++)
        for (unsigned j = 0; j < o->n_blocks; j++)
            if (o->batch[i] * 2 > o->blocks[j])
                kvbt_usage_error(prog, "--batch %u is more than half of the %u-block pool",
                                 o->batch[i], o->blocks[j]);
}
