/*
 * kvb-bench - micro benchmarks of a kvblock pool next to a "speed of light"
 * baseline compiled into the same binary, multi-thread throughput with the
 * pool lock's contention counters, bookkeeping memory per block, and a
 * deterministic instruction-count mode for callgrind (make perf-check).
 *
 * This file is the main: the header line, then the sections the options select,
 * each in its own file under tools/kvb-bench/ (bench.h lists them):
 *
 *   micro      (micro.c)   each operation (lifecycle, match_active, match_cached,
 *                          scattered, upgrade_live, upgrade_cached, clone,
 *                          evict_alloc) in ns per block, beside the baseline
 *                          (sol.c) run on the same plan
 *   threads    (threads.c) T threads on one pool, with the lock's counters
 *   memory     (memory.c)  bookkeeping bytes per block
 *   targets    (targets.c) the issue-7 targets, printed, never asserted
 *   --callgrind-ops (micro.c) instruction counts of the micro operations'
 *                          timed regions, for perf/ (make perf-check)
 */
#include "kvb-bench/bench.h"

#include <unistd.h>

static void print_header(const opts *o)
{
    double la[3] = {0, 0, 0};
    if (getloadavg(la, 3) < 0)
        la[0] = la[1] = la[2] = -1;
    printf("kvb-bench: kvblock %d.%d.%d, compiler %s, %ld CPUs online, load average %.2f %.2f "
           "%.2f\n",
           KVB_VERSION_MAJOR, KVB_VERSION_MINOR, KVB_VERSION_PATCH, __VERSION__,
           sysconf(_SC_NPROCESSORS_ONLN), la[0], la[1], la[2]);
    printf("policies:");
    for (unsigned p = 0; p < n_policies; p++)
        printf(" %s%s", policies[p].name, o->policy_sel[p] ? "" : "(not selected)");
    printf("\n");
    printf("baseline (\"sol\", speed of light): the pool's memory work on plain arrays (a Robin "
           "Hood table\nof the pool's size, 32-byte records, LRU links, free stack); no hashing, "
           "no lock, no states,\nno counters\n\n");
}

int main(int argc, char **argv)
{
    opts o;
    discover_policies();
    parse_args(argc, argv, &o);

    if (o.callgrind) {
        if (!RUNNING_ON_VALGRIND)
            fprintf(stderr,
                    "%s: note: --callgrind-ops outside valgrind: nothing is counted (run it "
                    "under valgrind --tool=callgrind --instr-atstart=no)\n",
                    prog);
        region_mode = REGION_OFF;
        micro_section(&o);
        return 0;
    }
    region_cpu_clock = o.cpu_clock;
    if (!o.csv)
        print_header(&o);
    if (o.sec_micro)
        micro_section(&o);
    if (o.sec_threads)
        threads_section(&o);
    if (o.sec_memory)
        memory_section(&o);
    if (!o.csv)
        targets_summary();
    return 0;
}
