/*
 * tools/kvb-bench/memory.c - the memory section: bytes a pool allocates (a
 * counting allocator passed through kvb_pool_config.allocator; the library
 * offers no accounting call of its own), the eviction backend's own figure
 * (kvb_inactive_ops.memory on a separately created instance), and jemalloc's
 * stats.allocated delta around kvb_pool_create after an "epoch" refresh
 * (thread.allocated where the thread cache hid small allocations from it;
 * mallctl is looked up at run time, so the tool also links without jemalloc,
 * e.g. in sanitizer builds); next to it the baseline's bytes per block.
 */
#include "kvb-bench/bench.h"
#include "kvb-bench/sol.h"

#include <dlfcn.h>

/* Counting allocator: what a pool asks for through kvb_pool_config.allocator. */
#define CA_LOG 32
typedef struct count_alloc {
    size_t cur, peak;
    uint64_t n_alloc;
    size_t sizes[CA_LOG]; /* the first CA_LOG allocation sizes */
} count_alloc;

static void *ca_alloc(void *ctx, size_t size)
{
    count_alloc *c = ctx;
    void *p = malloc(size);
    if (p) {
        c->cur += size;
        if (c->cur > c->peak)
            c->peak = c->cur;
        if (c->n_alloc < CA_LOG)
            c->sizes[c->n_alloc] = size;
        c->n_alloc++;
    }
    return p;
}

static void ca_free(void *ctx, void *ptr, size_t size)
{
    count_alloc *c = ctx;
    if (ptr)
        c->cur -= size;
    free(ptr);
}

static int cmp_size_desc(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* jemalloc's mallctl when the process runs jemalloc (kvb-bench links it in the
 * normal build; sanitizer builds do not), looked up at run time. */
typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);

static mallctl_fn find_mallctl(void)
{
    void *sym = dlsym(RTLD_DEFAULT, "mallctl");
    mallctl_fn f = NULL;
    if (sym)
        memcpy(&f, &sym, sizeof f);
    return f;
}

/* This thread's net allocation (thread.allocated - thread.deallocated, usable
 * sizes): unlike stats.allocated it also sees allocations served from the thread
 * cache (small pools). */
static bool je_thread_net(mallctl_fn f, int64_t *out)
{
    uint64_t a, d;
    size_t sz = sizeof a;
    if (!f || f("thread.allocated", &a, &sz, NULL, 0) != 0)
        return false;
    sz = sizeof d;
    if (f("thread.deallocated", &d, &sz, NULL, 0) != 0)
        return false;
    *out = (int64_t)(a - d);
    return true;
}

static bool je_allocated(mallctl_fn f, size_t *out)
{
    uint64_t epoch = 1;
    size_t sz = sizeof epoch;
    if (!f || f("epoch", &epoch, &sz, &epoch, sz) != 0) /* refresh the cached statistics */
        return false;
    sz = sizeof *out;
    return f("stats.allocated", out, &sz, NULL, 0) == 0;
}

/* The backend's own accounting (kvb_inactive_ops.memory) on a fresh instance. */
static bool backend_memory(kvb_evict_policy pol, uint32_t B, size_t *out)
{
    const kvb_inactive_ops *ops = kvb_inactive_builtin(pol);
    if (!ops || !ops->memory)
        return false;
    kvb_inactive_params ip;
    memset(&ip, 0, sizeof ip);
    ip.block_count = B;
    ip.thresholds[0] = 3, ip.thresholds[1] = 8, ip.thresholds[2] = 15;
    ip.allocator.alloc = ca_alloc;
    ip.allocator.free = ca_free;
    count_alloc c = {0};
    ip.allocator.ctx = &c;
    void *inst = NULL;
    if (ops->create(&ip, &inst) != 0)
        return false;
    *out = ops->memory(inst);
    ops->destroy(inst);
    return true;
}

static void memory_header(const opts *o)
{
    if (o->csv) {
        printf("section,policy,blocks,bytes,bytes_per_block,allocations,largest_per_block,"
               "backend_per_block,jemalloc_stats_bytes,jemalloc_stats_per_block,"
               "jemalloc_thread_bytes,jemalloc_thread_per_block,after_use_delta,peak_delta,"
               "sol_per_block\n");
        return;
    }
    printf("%-9s %8s %9s %6s %-24s %8s %9s %9s %8s\n", "policy", "blocks", "bytes/blk", "allocs",
           "largest (bytes/blk)", "backend", "jemalloc", "after use", "sol/blk");
}

static void memory_run(const opts *o, const policy_info *pi, uint32_t B, mallctl_fn mc)
{
    count_alloc c = {0};
    kvb_pool_config cfg;
    kvb_pool *pool;
    kvb_pool_config_init(&cfg);
    cfg.block_count = B;
    cfg.evict = pi->policy;
    cfg.name = "bench-memory";
    cfg.allocator.ctx = &c;
    cfg.allocator.alloc = ca_alloc;
    cfg.allocator.free = ca_free;
    size_t je0 = 0, je1 = 0;
    int64_t jt0 = 0, jt1 = 0;
    bool je = je_allocated(mc, &je0);
    bool jt = je_thread_net(mc, &jt0);
    int rc = kvb_pool_create(&cfg, &pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_create (%s, %u blocks): %s", pi->name, B, kvb_strerror(rc));
    jt = jt && je_thread_net(mc, &jt1);
    je = je && je_allocated(mc, &je1);
    size_t created = c.cur;
    uint64_t n_alloc = c.n_alloc;
    size_t sizes[CA_LOG];
    unsigned ns = n_alloc < CA_LOG ? (unsigned)n_alloc : CA_LOG;
    memcpy(sizes, c.sizes, ns * sizeof *sizes);
    qsort(sizes, ns, sizeof *sizes, cmp_size_desc);
    char largest[64] = "";
    for (unsigned i = 0; i < ns && i < 3; i++) {
        char part[24];
        snprintf(part, sizeof part, "%s%.2f", i ? "+" : "", (double)sizes[i] / B);
        strncat(largest, part, sizeof largest - strlen(largest) - 1);
    }
    if (ns > 3)
        strncat(largest, "+..", sizeof largest - strlen(largest) - 1);

    /* use it: fill every block, release all to the cache, then evict them all */
    lib_fx f = {.pool = pool, .B = B};
    snprintf(f.ctx, sizeof f.ctx, "memory, policy %s, %u blocks", pi->name, B);
    f.mut = kvbt_xmalloc_array(256, sizeof *f.mut);
    f.cmp = kvbt_xmalloc_array(256, sizeof *f.cmp);
    kvb_block *held = kvbt_xmalloc_array(B, sizeof *held);
    kvb_hash h[256];
    uint64_t fresh = 1ull << 44;
    for (int round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < B; i += 256) {
            uint32_t k = B - i < 256 ? B - i : 256;
            for (uint32_t j = 0; j < k; j++)
                h[j] = bench_hash(fresh++);
            lib_admit(&f, h, k, held + i);
        }
        lib_release(held, B, f.ctx);
    }
    long long after = (long long)c.cur - (long long)created;
    long long peak = (long long)c.peak - (long long)created;
    rc = kvb_pool_destroy(pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s (%s)", kvb_strerror(rc), f.ctx);
    if (c.cur != 0)
        fprintf(stderr, "%s: note: %s: %zu bytes still allocated after kvb_pool_destroy\n", prog,
                f.ctx, c.cur);
    free(held);
    free(f.mut);
    free(f.cmp);

    size_t bmem = 0;
    bool have_b = backend_memory(pi->policy, B, &bmem);
    double per = (double)created / B;
    double jper = je ? ((double)je1 - (double)je0) / B : 0.0;
    double tper = jt ? (double)(jt1 - jt0) / B : 0.0;
    double sper = (double)sol_bytes(B) / B;
    char bstr[16] = "n/a", jstr[16] = "n/a";
    if (have_b)
        snprintf(bstr, sizeof bstr, "%.2f", (double)bmem / B);
    /* stats.allocated, unless it visibly missed allocations served from the thread
     * cache (small pools): then thread.allocated's figure, marked '*' */
    if (je && (!jt || (jper >= 0.9 * tper && jper <= 1.1 * tper + 1)))
        snprintf(jstr, sizeof jstr, "%.2f", jper);
    else if (jt)
        snprintf(jstr, sizeof jstr, "%.2f*", tper);
    if (o->csv)
        printf("memory,%s,%u,%zu,%.3f,%llu,%s,%s,%lld,%.3f,%lld,%.3f,%lld,%lld,%.3f\n", pi->name, B,
               created, per, (unsigned long long)n_alloc, largest, have_b ? bstr : "",
               je ? (long long)je1 - (long long)je0 : -1, jper, jt ? (long long)(jt1 - jt0) : -1,
               tper, after, peak, sper);
    else
        printf("%-9s %8u %9.2f %6llu %-24s %8s %9s %+9lld %8.2f\n", pi->name, B, per,
               (unsigned long long)n_alloc, largest, bstr, jstr, after, sper);
    fflush(stdout);
    record_memory(&(memory_result){.policy = pi->name, .blocks = B, .per_block = per});
}

void memory_section(const opts *o)
{
    mallctl_fn mc = find_mallctl();
    if (!o->csv)
        printf("\nmemory: bookkeeping bytes per block = bytes a pool allocates through its "
               "allocator (counting\nallocator) / block_count; backend = kvb_inactive_ops.memory; "
               "jemalloc = stats.allocated delta\naround kvb_pool_create; after use = change after "
               "filling, releasing and evicting every block\n");
    if (!mc && !o->csv)
        printf("(jemalloc is not linked into this build: no stats.allocated cross-check)\n");
    else if (!o->csv)
        printf(
            "(jemalloc: stats.allocated delta after an \"epoch\" refresh; '*' = thread.allocated "
            "delta where\nstats.allocated missed allocations served from the thread cache; both "
            "count size classes)\n");
    memory_header(o);
    /* 1M blocks always (the figure the targets are about), plus the selected sizes */
    uint32_t sizes[MAX_LIST + 1];
    unsigned n = 0;
    bool has_1m = false;
    for (unsigned i = 0; i < o->n_blocks; i++) {
        sizes[n++] = o->blocks[i];
        has_1m |= o->blocks[i] == 1000000;
    }
    if (!has_1m)
        sizes[n++] = 1000000;
    for (unsigned i = 0; i < n; i++)
        for (unsigned p = 0; p < n_policies; p++)
            if (o->policy_sel[p])
                memory_run(o, &policies[p], sizes[i], mc);
}
