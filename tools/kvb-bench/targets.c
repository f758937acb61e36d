/*
 * tools/kvb-bench/targets.c - the results the sections keep (micro medians,
 * thread scaling, bytes per block) and the targets summary printed at the end
 * of a text run: the figures issue 7 set, shown next to their targets, never
 * asserted (CONVENTIONS.md: no test on wall time).
 */
#include "kvb-bench/bench.h"

#define MAX_RESULTS 4096
static micro_result results[MAX_RESULTS];
static unsigned n_results;
static thread_result tresults[MAX_RESULTS];
static unsigned n_tresults;
static memory_result mresults[BENCH_MAX_POLICIES * MAX_LIST];
static unsigned n_mresults;

void record_micro(const micro_result *r)
{
    if (n_results < MAX_RESULTS)
        results[n_results++] = *r;
}

void record_thread(const thread_result *r)
{
    if (n_tresults < MAX_RESULTS)
        tresults[n_tresults++] = *r;
}

void record_memory(const memory_result *r)
{
    if (n_mresults < sizeof mresults / sizeof mresults[0])
        mresults[n_mresults++] = *r;
}

static const micro_result *find_micro(enum op op, const char *policy, uint32_t B, uint32_t n)
{
    for (unsigned i = 0; i < n_results; i++)
        if (results[i].op == op && strcmp(results[i].policy, policy) == 0 &&
            results[i].blocks == B && results[i].batch == n)
            return &results[i];
    return NULL;
}

static const thread_result *find_thread(const char *policy, uint32_t B, uint32_t n, uint32_t T)
{
    for (unsigned i = 0; i < n_tresults; i++)
        if (strcmp(tresults[i].policy, policy) == 0 && tresults[i].blocks == B &&
            tresults[i].batch == n && tresults[i].threads == T)
            return &tresults[i];
    return NULL;
}

static const char *verdict(bool ok)
{
    return ok ? "met" : "MISSED";
}

void targets_summary(void)
{
    bool any = false;
    const micro_result *lc = find_micro(OP_LIFECYCLE, "lru", 1000000, 16);
    const micro_result *ma = find_micro(OP_MATCH_ACTIVE, "lru", 1000000, 16);
    const thread_result *t1 = find_thread("lru", 1000000, 16, 1);
    const thread_result *t2 = find_thread("lru", 1000000, 16, 2);
    const thread_result *t4 = find_thread("lru", 1000000, 16, 4);
    const memory_result *mem = NULL;
    for (unsigned i = 0; i < n_mresults; i++)
        if (strcmp(mresults[i].policy, "lru") == 0 && mresults[i].blocks == 1000000)
            mem = &mresults[i];
    printf("\ntargets (issue 7; 1M blocks, batch 16, lru; shown, not asserted; medians):\n");
    if (lc) {
        printf(
            "  full lifecycle    %7.1f ns/block  (<= 60: %s)   ratio %5.2f x baseline (<= 3: %s)\n",
            lc->lib.med, verdict(lc->lib.med <= 60), lc->ratio, verdict(lc->ratio <= 3));
        any = true;
    }
    if (ma) {
        printf(
            "  prefix-match hit  %7.1f ns/block  (<= 25: %s)   ratio %5.2f x baseline (<= 3: %s)\n",
            ma->lib.med, verdict(ma->lib.med <= 25), ma->ratio, verdict(ma->ratio <= 3));
        any = true;
    }
    if (t1 && t2) {
        printf("  2 threads         %7.2f x the 1-thread throughput (>= 1.0: %s)\n",
               t1->ns.med / t2->ns.med, verdict(t1->ns.med / t2->ns.med >= 1.0));
        any = true;
    }
    if (t1 && t4) {
        printf("  4 threads         %7.2f x the 1-thread throughput (no cliff; 2 vCPUs)\n",
               t1->ns.med / t4->ns.med);
        any = true;
    }
    if (mem) {
        printf("  memory            %7.2f bytes/block (<= 48: %s)\n", mem->per_block,
               verdict(mem->per_block <= 48));
        any = true;
    }
    if (!any)
        printf("  (none of the target configurations was selected)\n");
    printf("  replay (<= 25 ns/ref lru, <= 50 every policy): see kvb-replay\n");
}
