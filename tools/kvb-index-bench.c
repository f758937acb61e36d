/*
 * kvb-index-bench - benchmarks of the fleet index (kvblock/index.h) against the
 * anchors of FLEET.md section 10, each next to a same-binary baseline that does
 * the same memory work without the index. Benchmarks, not tests: nothing is
 * asserted on time; what is asserted (exit 1) is that the index answers what it
 * must (match results of the generated fleets, entry counts, snapshot round
 * trips). `kvb-index-bench --help` is the manual; `make bench-index` runs it.
 * This file: options and main; the sections are tools/kvb-index-bench/a_ops.c,
 * b_match.c, c_memory.c, d_restart.c, e_mooncake.c, their helpers common.c
 * and bench.h.
 *
 * Sections (--only LIST picks some):
 *
 *  (a) block ops/s on one core. A fleet of 8 kvblock pools serves the built-in
 *      synthetic workload (round robin, each request matched, allocated,
 *      registered and released), and its event batches and its requests' router
 *      hashes are recorded in order. The recording is replayed on one thread into
 *      a fresh index: kvb_index_apply per batch, kvb_index_match per request.
 *      Block ops = blocks stored + removed + hashes looked up by matches, as the
 *      index counts them (kvb_index_stats.block_ops + matched_blocks). Baseline:
 *      the same op stream on an open-addressing u64 map (one probe per block op:
 *      key -> holder bitmask, insert / update / delete, lookups until a miss).
 *  (b) match latency, 1,000 workers, 64-block requests. Sequences of 64 random
 *      router hashes, each stored whole on 7 random workers (Dynamo-like
 *      duplication); requests match random stored sequences. Variants: "hot",
 *      where every sequence starts with the same 4-block system prompt held by
 *      all 1,000 workers; and "+writer", with a second thread applying 64-block
 *      STORED/REMOVED events (extra copies of queried sequences on other workers)
 *      as fast as it can. Timed around each kvb_index_match (k = 16 results).
 *      Baseline: the same 64 lookups in a u64 map from key to its 7 holders,
 *      walking the holders as a match does.
 *  (c) memory per (block, worker) entry at 10 M entries:
 *      kvb_index_stats.memory_bytes / entries, and the bytes a counting
 *      allocator saw, for "dup7" (1.43 M keys held by 7 of 1,000 workers each)
 *      and "unique" (10 M keys, one holder each, the worst case). Baseline: a
 *      u64 map of the (key, worker) pairs at load <= 1/2.
 *  (d) warm restart: 7 workers publish STORED events of 7 blocks on average
 *      (1 + geometric, at most 64) into caches of 50,000 blocks each, REMOVED events of
 *      the oldest blocks once full. The first 2.28 M events build the state, which
 *      is saved (kvb_index_save: write, fsync, rename); then kvb_index_load and
 *      the next 2.28 M events applied in batches of 8 (the catch-up). Baseline:
 *      the same tail applied to a u64 map.
 *  (e) Dynamo's mooncake_bench method (lib/kv-router/benches/mooncake_bench.rs
 *      and benches/common/mod.rs in ai-dynamo/dynamo), reproduced over kvb_index:
 *      the conversation trace's requests are dealt to 1,000 workers uniformly at
 *      random (seed 42); each worker's requests run through its own simulated
 *      cache (a kvblock pool large enough never to evict, as Dynamo's mock engine
 *      has 1,048,576 blocks; 512-token blocks, tokens = hash id repeated 512
 *      times, so the keys are the same XXH3 chain Dynamo's router computes;
 *      prefill blocks stored as one event, each 512 generated output tokens a
 *      further block with random content, as the mocker's decode does); its
 *      requests and events form one timeline, scaled so that its first and last
 *      request span the benchmark window (Dynamo's per-worker scaling). Every
 *      worker's timeline is replayed 7 times under distinct worker ids (-d 7:
 *      7,000 streams). T threads (default 2) each replay the timelines of the
 *      streams s with s mod T = thread, merged in time order, paced to the window:
 *      requests are kvb_index_match calls (timed), events kvb_index_apply calls.
 *      ops = requests + events. Lines: paced at the trace's own rate (window
 *      30 s, as Dynamo's steady-state run) and unpaced (the peak).
 *      Where it differs from Dynamo's: see the help text (METHOD NOTES).
 *
 * Every section prints the machine's load average; measure on a quiet machine.
 */
#include "kvb-index-bench/bench.h"

#include "common/args.h"

static void bench_usage(FILE *f)
{
    fprintf(f, "NAME\n"
               "    kvb-index-bench - benchmarks of the fleet index (FLEET.md section 10)\n"
               "\n"
               "SYNOPSIS\n"
               "    kvb-index-bench [--quick] [--only a,b,c,d,e] [--trace FILE] [options]\n"
               "\n"
               "DESCRIPTION\n"
               "    Five benchmarks of kvb_index, each printed as fixed-width lines next to\n"
               "    a same-binary baseline that does the same memory work without the\n"
               "    index (an open-addressing u64 map), with the load average at the time:\n"
               "\n"
               "    (a) block ops/s on one core: a recorded fleet (8 kvblock pools on the\n"
               "        built-in workload) replayed into the index: events applied + blocks\n"
               "        matched (target >= 20 M/s)\n"
               "    (b) kvb_index_match latency p50/p99/p999, 1,000 workers, 64-block\n"
               "        requests, each sequence held by 7 workers; a variant with a 4-block\n"
               "        prefix held by every worker; each alone and with a concurrent\n"
               "        writer thread (target p99 <= 5 us)\n"
               "    (c) memory per (block, worker) entry at 10 M entries, 7 holders per key\n"
               "        and 1 holder per key (target <= 32 B)\n"
               "    (d) snapshot save and load, and the catch-up of 2.28 M events from 7\n"
               "        workers after the load (target: load + catch-up <= 2 s)\n"
               "    (e) Dynamo's mooncake_bench method: conversation trace, 1,000 workers x\n"
               "        duplication 7, peak ops/s on --threads threads and p99 at the\n"
               "        trace's own rate (targets >= 300,000 ops/s, p99 <= 100 us)\n"
               "\n"
               "OPTIONS\n"
               "    --quick            CI-sized run (well under 30 s): smaller fleets, 1 M\n"
               "                       entries, 228,000 events, 100 workers x 7 and the first\n"
               "                       3,000 requests with a 2 s window in (e)\n"
               "    --only LIST        sections to run, e.g. a,b (default: all)\n"
               "    --seed S           seed of every generator (default 42, Dynamo's)\n"
               "    --a-requests N     (a) built-in workload requests (default 12000)\n"
               "    --a-reps N         (a) replays, best kept (default 5)\n"
               "    --b-queries N      (b) matches timed per variant (default 200000)\n"
               "    --b-sequences N    (b) distinct 64-block sequences (default 4000)\n"
               "    --c-entries N      (c) (block, worker) entries (default 10000000)\n"
               "    --d-events N       (d) events of the catch-up tail (default 2280000)\n"
               "    --d-batch N        (d) events per kvb_index_apply (default 8)\n"
               "    --trace FILE       (e) Mooncake trace (default\n"
               "                       ../shared/data/mooncake/mooncake_conversation_trace.jsonl;\n"
               "                       the built-in workload with Poisson arrivals when absent)\n"
               "    --e-workers N      (e) unique workers (default 1000)\n"
               "    --e-dup N          (e) worker duplication factor (default 7)\n"
               "    --e-requests N     (e) use the first N requests (default: all)\n"
               "    --e-window-ms N    (e) benchmark window of the paced run (default 30000)\n"
               "    --threads N        (e) replay threads (default 2)\n"
               "    --k N              results asked of each match in (b) and (e) (default 16)\n"
               "    --snapshot-dir D   (d) where the snapshot file goes (default /tmp)\n"
               "    --help             this text\n"
               "\n"
               "METHOD NOTES for (e), where it differs from Dynamo's mooncake_bench\n"
               "    - The worker caches are kvblock pools driven request by request (match,\n"
               "      allocate + register, release at once), not Dynamo's real-time mock\n"
               "      engine; events happen at their request's time (Dynamo: when its\n"
               "      mocker, running 10 s of simulated time, emitted them). The mocker's\n"
               "      chunked prefill and scheduling may split one request's blocks into\n"
               "      several events: our event count per request can be lower.\n"
               "    - Requests are dealt with splitmix64 (seed 42), not Rust's StdRng: the\n"
               "      same method, another deal.\n"
               "    - Events are applied synchronously by the replaying thread and count in\n"
               "      its time; Dynamo queues them to event-worker threads. Latency is\n"
               "      kvb_index_match alone in both.\n"
               "    - A match asks for the best --k workers (the return value still counts\n"
               "      every worker with a prefix); Dynamo's find_matches returns a score for\n"
               "      every worker that has one (block 0 of the conversation trace is held\n"
               "      by all 7,000).\n"
               "    - T OS threads, each owning the timelines of streams s mod T, instead of\n"
               "      7,000 tokio tasks; the peak is one unpaced run, not a window sweep.\n"
               "\n"
               "EXIT STATUS\n"
               "    0 ok, 1 an error or a wrong answer of the index, 2 bad usage.\n");
}

static void bench_parse_args(int argc, char **argv, bench_opts *o)
{
    enum {
        O_QUICK = 256,
        O_ONLY,
        O_SEED,
        O_AREQ,
        O_AREPS,
        O_BQ,
        O_BSEQ,
        O_CENT,
        O_DEV,
        O_DBATCH,
        O_TRACE,
        O_EW,
        O_EDUP,
        O_EREQ,
        O_EWIN,
        O_THREADS,
        O_K,
        O_SNAPDIR,
        O_HELP
    };
    static const struct option longopts[] = {
        {"quick", no_argument, NULL, O_QUICK},
        {"only", required_argument, NULL, O_ONLY},
        {"seed", required_argument, NULL, O_SEED},
        {"a-requests", required_argument, NULL, O_AREQ},
        {"a-reps", required_argument, NULL, O_AREPS},
        {"b-queries", required_argument, NULL, O_BQ},
        {"b-sequences", required_argument, NULL, O_BSEQ},
        {"c-entries", required_argument, NULL, O_CENT},
        {"d-events", required_argument, NULL, O_DEV},
        {"d-batch", required_argument, NULL, O_DBATCH},
        {"trace", required_argument, NULL, O_TRACE},
        {"e-workers", required_argument, NULL, O_EW},
        {"e-dup", required_argument, NULL, O_EDUP},
        {"e-requests", required_argument, NULL, O_EREQ},
        {"e-window-ms", required_argument, NULL, O_EWIN},
        {"threads", required_argument, NULL, O_THREADS},
        {"k", required_argument, NULL, O_K},
        {"snapshot-dir", required_argument, NULL, O_SNAPDIR},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *only = NULL;
    bool set[O_HELP + 1] = {false};
    int c;

    memset(o, 0, sizeof *o);
    o->seed = 42;
    o->a_requests = 12000;
    o->a_workers = 8;
    o->a_capacity = 2000;
    o->a_reps = 5;
    o->b_workers = 1000;
    o->b_dup = 7;
    o->b_sequences = 4000;
    o->b_queries = 200000;
    o->b_k = 16;
    o->c_entries = 10000000;
    o->d_events = 2280000;
    o->d_workers = 7;
    o->d_cache = 50000;
    o->d_batch = 8;
    o->e_workers = 1000;
    o->e_dup = 7;
    o->e_threads = 2;
    o->e_k = 16;
    o->e_window_ms = 30000;
    o->snapshot_dir = "/tmp";

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (c >= O_QUICK && c <= O_HELP)
            set[c] = true;
        switch (c) {
        case O_QUICK:
            o->quick = true;
            break;
        case O_ONLY:
            only = optarg;
            break;
        case O_SEED:
            o->seed = kvbt_arg_u64(prog, "--seed", optarg, 0, UINT64_MAX);
            break;
        case O_AREQ:
            o->a_requests = kvbt_arg_u64(prog, "--a-requests", optarg, 1, 10000000);
            break;
        case O_AREPS:
            o->a_reps = (uint32_t)kvbt_arg_u64(prog, "--a-reps", optarg, 1, 1000);
            break;
        case O_BQ:
            o->b_queries = kvbt_arg_u64(prog, "--b-queries", optarg, 100, 100000000);
            break;
        case O_BSEQ:
            o->b_sequences = (uint32_t)kvbt_arg_u64(prog, "--b-sequences", optarg, 16, 10000000);
            break;
        case O_CENT:
            o->c_entries = kvbt_arg_u64(prog, "--c-entries", optarg, 1000, 1000000000);
            break;
        case O_DEV:
            o->d_events = kvbt_arg_u64(prog, "--d-events", optarg, 1000, 1000000000);
            break;
        case O_DBATCH:
            o->d_batch = (uint32_t)kvbt_arg_u64(prog, "--d-batch", optarg, 1, 100000);
            break;
        case O_TRACE:
            o->trace = optarg;
            break;
        case O_EW:
            o->e_workers = (uint32_t)kvbt_arg_u64(prog, "--e-workers", optarg, 1, 100000);
            break;
        case O_EDUP:
            o->e_dup = (uint32_t)kvbt_arg_u64(prog, "--e-dup", optarg, 1, 64);
            break;
        case O_EREQ:
            o->e_requests = kvbt_arg_u64(prog, "--e-requests", optarg, 1, 100000000);
            break;
        case O_EWIN:
            o->e_window_ms = (uint32_t)kvbt_arg_u64(prog, "--e-window-ms", optarg, 1, 3600000);
            break;
        case O_THREADS:
            o->e_threads = (uint32_t)kvbt_arg_u64(prog, "--threads", optarg, 1, 64);
            break;
        case O_K:
            o->b_k = o->e_k = (uint32_t)kvbt_arg_u64(prog, "--k", optarg, 1, 1u << 20);
            break;
        case O_SNAPDIR:
            o->snapshot_dir = optarg;
            break;
        case 'h':
        case O_HELP:
            bench_usage(stdout);
            exit(0);
        default:
            kvbt_usage_getopt(prog, c, argv);
        }
    }
    kvbt_usage_no_operands(prog, argc, argv);
    if (o->quick) {
        if (!set[O_AREQ])
            o->a_requests = 3000;
        if (!set[O_AREPS])
            o->a_reps = 2;
        if (!set[O_BQ])
            o->b_queries = 20000;
        if (!set[O_BSEQ])
            o->b_sequences = 1000;
        if (!set[O_CENT])
            o->c_entries = 1000000;
        if (!set[O_DEV])
            o->d_events = 228000;
        if (!set[O_EW])
            o->e_workers = 100;
        if (!set[O_EREQ])
            o->e_requests = 3000;
        if (!set[O_EWIN])
            o->e_window_ms = 2000;
    }
    if (only) {
        for (const char *p = only; *p; p++) {
            if (*p >= 'a' && *p <= 'e')
                o->sec[*p - 'a'] = true;
            else if (*p != ',')
                kvbt_usage_error(prog, "--only: '%s' is not a list of a, b, c, d, e", only);
        }
    } else {
        for (int i = 0; i < 5; i++)
            o->sec[i] = true;
    }
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    bench_opts o;
    bench_parse_args(argc, argv, &o);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("kvb-index-bench%s: %ld CPUs online, %s at start\n", o.quick ? " --quick" : "", ncpu,
           bench_loadavg());
    fflush(stdout);
    if (o.sec[0]) {
        printf(
            "\n(a) block ops/s on one core: events applied + blocks matched (target >= 20 M/s)\n");
        bench_a(&o);
    }
    if (o.sec[1]) {
        printf("\n(b) match latency, %u workers, %d-block requests (target p99 <= 5 us)\n",
               o.b_workers, B_LEN);
        bench_b(&o);
    }
    if (o.sec[2]) {
        printf("\n(c) memory per (block, worker) entry (target <= 32 B at 10 M entries)\n");
        bench_c(&o);
    }
    if (o.sec[3]) {
        printf("\n(d) warm restart: snapshot load + catch-up of %llu events from %u workers "
               "(target <= 2 s)\n",
               (unsigned long long)o.d_events, o.d_workers);
        bench_d(&o);
    }
    if (o.sec[4]) {
        printf("\n(e) Dynamo's mooncake_bench method, %u workers x duplication %u (targets: "
               "peak >= 300,000 ops/s on 2 cores, p99 <= 100 us at the trace's rate)\n",
               o.e_workers, o.e_dup);
        bench_e(&o);
    }
    printf("\n%s at the end\n", bench_loadavg());
    return 0;
}
