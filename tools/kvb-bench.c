/*
 * kvb-bench - micro benchmarks of a kvblock pool next to a "speed of light"
 * baseline compiled into the same binary, multi-thread throughput with the
 * pool lock's contention counters, bookkeeping memory per block, and a
 * deterministic instruction-count mode for callgrind (make perf-check).
 *
 * Micro operations (ns per block; "timed" is exactly what the clock covers):
 *   lifecycle      allocate n -> stage them with fresh hashes (kvb_pool_stage;
 *                  kvb_mutable_stage for n = 1) -> register n -> release n to
 *                  the cache. Steady state: the cache is full, so every
 *                  allocation evicts n blocks in policy order.
 *   match_active   kvb_pool_match of n consecutive hashes of held (PRIMARY)
 *                  blocks; timed: the match calls; the references are released
 *                  in bulk afterwards, untimed.
 *   match_cached   kvb_pool_match of n cached (INACTIVE) hashes, i.e. n
 *                  resurrections, then kvb_block_release_n back to the cache;
 *                  timed: both.
 *   scattered      kvb_pool_match_scattered of n independent random hashes of
 *                  held blocks (all hits); timed: the calls.
 *   upgrade_live   kvb_weak_upgrade of n weak handles whose block is still
 *                  referenced (lock-free path); timed: the upgrades.
 *   upgrade_cached kvb_weak_upgrade of n weak handles whose block went to the
 *                  cache (lock + resurrection), then release back; timed: both.
 *   clone          kvb_block_clone of n held blocks, then release them
 *                  (never the last reference: lock-free); timed: both.
 *   evict_alloc    kvb_pool_allocate of n blocks with an empty free list (all
 *                  n evicted); timed: the allocations; the blocks are staged,
 *                  registered and released back to the cache afterwards, untimed.
 * Batch n = 1 uses kvb_block_release, larger batches kvb_block_release_n.
 *
 * Order of work per (pool size, policy): create the pool; fill it (allocate,
 * stage, register every block: all PRIMARY, one reference held each, and one
 * weak handle each); run the "active" operations; release everything (all
 * INACTIVE, the cache is full, the weak handles are stale); run the "cached"
 * operations; run evict_alloc and lifecycle (fresh hashes: every allocation
 * evicts). Queries hit chains of n consecutive blocks at random (aligned)
 * positions over the whole pool, so a 1M-block pool is out of cache. Each operation and batch size: warm-up
 * repetitions, then --reps repetitions of --work blocks each; min, median and
 * max of ns per block over the repetitions.
 *
 * Baseline ("speed of light", struct sol below): the same logical work on plain
 * arrays - a free stack, one open-addressing probe per block (linear probing,
 * 8-byte cells holding a 32-bit hash tag beside the id, so a probe reads a slot
 * only on a tag match and backward-shift deletion never reads one; find-or-
 * insert in one probe), one 32-byte record per block (hash, refcount word), an
 * intrusive LRU list in a dense array of links - with no lock, no atomics, no state machine, no
 * validation beyond what the operation needs, no callbacks, no statistics. Each repetition runs the
 * library and then the baseline on the same random plan, back to back, and
 * the ratio column is the median of the per-repetition ratios, so it holds
 * when the machine is noisy.
 *
 * Threads: T threads on one pool, each looping {lifecycle of n fresh blocks;
 * prefix match of n held "hot" blocks + release}; a fixed total of work is
 * split between the threads; aggregate ns per block (wall), the CPU time the
 * threads got (on a shared machine: how many cores the run really had), and
 * the pool lock's contention counters (kvb_stats.lock_*).
 *
 * Memory: bytes a pool allocates (a counting allocator passed through
 * kvb_pool_config.allocator; the library offers no accounting call of its
 * own), the eviction backend's own figure (kvb_inactive_ops.memory on a
 * separately created instance), and jemalloc's stats.allocated delta around
 * kvb_pool_create after an "epoch" refresh (thread.allocated where the thread
 * cache hid small allocations from it; mallctl is looked up at run time, so the
 * tool also links without jemalloc, e.g. in sanitizer builds).
 *
 * --callgrind-ops: run each operation once on a small pool between
 * CALLGRIND_START_INSTRUMENTATION / STOP and dump the counters with a label
 * (CALLGRIND_DUMP_STATS_AT "kvb-bench <name> blocks=<count>"); the perf/ scripts turn
 * the dumps into instructions per block. Run it under
 * valgrind --tool=callgrind --instr-atstart=no.
 */
#include "kvblock.h"

#include "common/args.h"
#include "common/util.h"

#include <dlfcn.h>
#include <getopt.h>
#include <pthread.h>
#include <unistd.h>
#include <valgrind/callgrind.h>

static const char *prog = "kvb-bench";

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static const uint64_t bench_seed = 0x6b76626c6f636b31ull; /* "kvblock1" */

static inline uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Content hash number i: lineage hashes in chains of 64 positions. */
#define BENCH_CHAIN 64
static kvb_hash bench_hash(uint64_t i)
{
    uint32_t pos = (uint32_t)(i % BENCH_CHAIN);
    uint64_t cur = splitmix64(i ^ bench_seed);
    uint64_t par = pos ? splitmix64((i - 1) ^ bench_seed) : 0;
    kvb_hash h;
    if (kvb_hash_make(cur, par, pos > 0, pos, &h) != 0)
        kvbt_die(prog, "kvb_hash_make failed");
    return h;
}

typedef struct rng {
    uint64_t s;
} rng;

static inline uint64_t rng_next(rng *r)
{
    r->s += 0x9E3779B97F4A7C15ull;
    return splitmix64(r->s);
}

static inline uint32_t rng_below(rng *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct summary {
    double min, med, max;
} summary;

static summary summarize(double *v, unsigned n)
{
    summary s = {0, 0, 0};
    if (n == 0)
        return s;
    qsort(v, n, sizeof *v, cmp_double);
    s.min = v[0];
    s.max = v[n - 1];
    s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return s;
}

static KVBT_NORETURN void lib_fail(const char *call, int rc, const char *ctx)
{
    kvbt_die(prog, "%s failed (%s): %s", call, ctx, rc < 0 ? kvb_strerror(rc) : "short result");
}

/* ------------------------------------------------------------------------ */
/* Timed regions: the clock, or callgrind's instrumentation switch           */
/* ------------------------------------------------------------------------ */

enum region_mode { REGION_CLOCK, REGION_CALLGRIND, REGION_OFF };
static enum region_mode region_mode = REGION_CLOCK;
static uint64_t region_t0;
/* --clock cpu: CLOCK_THREAD_CPUTIME_ID (time the thread ran: excludes preemption
 * by other load on a shared machine); default CLOCK_MONOTONIC (wall). */
static bool region_cpu_clock;

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t region_now(void)
{
    return region_cpu_clock ? thread_cpu_ns() : kvbt_now_ns();
}

static inline void region_begin(void)
{
    if (region_mode == REGION_CALLGRIND)
        CALLGRIND_START_INSTRUMENTATION;
    else if (region_mode == REGION_CLOCK)
        region_t0 = region_now();
}

static inline uint64_t region_end(void)
{
    if (region_mode == REGION_CALLGRIND) {
        CALLGRIND_STOP_INSTRUMENTATION;
        return 0;
    }
    if (region_mode == REGION_CLOCK)
        return region_now() - region_t0;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

enum op {
    OP_MATCH_ACTIVE,
    OP_SCATTERED,
    OP_UPGRADE_LIVE,
    OP_CLONE,
    OP_MATCH_CACHED,
    OP_UPGRADE_CACHED,
    OP_EVICT_ALLOC,
    OP_LIFECYCLE,
    OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
    [OP_LIFECYCLE] = "lifecycle",       [OP_MATCH_ACTIVE] = "match_active",
    [OP_MATCH_CACHED] = "match_cached", [OP_SCATTERED] = "scattered",
    [OP_UPGRADE_LIVE] = "upgrade_live", [OP_UPGRADE_CACHED] = "upgrade_cached",
    [OP_CLONE] = "clone",               [OP_EVICT_ALLOC] = "evict_alloc",
};

/* Which ops need which starting state (see the file comment). */
static bool op_is_active_phase(enum op o)
{
    return o == OP_MATCH_ACTIVE || o == OP_SCATTERED || o == OP_UPGRADE_LIVE || o == OP_CLONE;
}

/* A repetition's plan, shared by the library and the baseline run. */
typedef struct plan {
    uint32_t n;     /* batch size */
    uint32_t k;     /* batches */
    uint32_t w;     /* blocks = k * n */
    uint32_t *pos;  /* k batch starts (aligned to n), or w random positions (scattered) */
    kvb_hash *q;    /* w hashes: fresh content (lifecycle, evict_alloc) or queries (scattered) */
} plan;

/* ------------------------------------------------------------------------ */
/* The library side                                                         */
/* ------------------------------------------------------------------------ */

typedef struct lib_fx {
    kvb_pool *pool;
    uint32_t B;
    const kvb_hash *H; /* content of the fill: H[i] in block filled i-th */
    kvb_block *held;   /* B references, active phase */
    kvb_weak *weak;    /* B weak handles (downgraded from held) */
    /* scratch, maxw entries */
    kvb_mutable *mut;
    kvb_complete *cmp;
    kvb_block *out;
    bool *hit;
    char ctx[96];
} lib_fx;

static inline void lib_release(kvb_block *b, uint32_t n, const char *ctx)
{
    int rc = n == 1 ? kvb_block_release(b) : kvb_block_release_n(b, n);
    if (rc != 0)
        lib_fail("kvb_block_release", rc, ctx);
}

/* Stage n mutable blocks: kvb_pool_stage (one lock) for a batch, kvb_mutable_stage
 * for one block, as a runtime would. */
static inline void lib_stage(kvb_pool *p, kvb_mutable *m, const kvb_hash *h, uint32_t n,
                             kvb_complete *out, const char *ctx)
{
    int rc = n == 1 ? kvb_mutable_stage(m, h[0], out) : kvb_pool_stage(p, m, h, n, out);
    if (rc != 0)
        lib_fail(n == 1 ? "kvb_mutable_stage" : "kvb_pool_stage", rc, ctx);
}

/* allocate + stage + register n blocks with hashes h into out; not timed here */
static void lib_admit(lib_fx *f, const kvb_hash *h, uint32_t n, kvb_block *out)
{
    int rc = kvb_pool_allocate(f->pool, n, f->mut, NULL, NULL);
    if (rc != 0)
        lib_fail("kvb_pool_allocate", rc, f->ctx);
    lib_stage(f->pool, f->mut, h, n, f->cmp, f->ctx);
    rc = kvb_pool_register(f->pool, f->cmp, n, out);
    if (rc != 0)
        lib_fail("kvb_pool_register", rc, f->ctx);
}

static uint64_t lib_run(lib_fx *f, enum op o, const plan *pl)
{
    kvb_pool *p = f->pool;
    const uint32_t n = pl->n, k = pl->k;
    uint64_t ns = 0;
    int rc;

    switch (o) {
    case OP_LIFECYCLE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_hash *h = pl->q + (size_t)b * n;
            rc = kvb_pool_allocate(p, n, f->mut, NULL, NULL);
            if (rc != 0)
                lib_fail("kvb_pool_allocate", rc, f->ctx);
            lib_stage(p, f->mut, h, n, f->cmp, f->ctx);
            rc = kvb_pool_register(p, f->cmp, n, f->out);
            if (rc != 0)
                lib_fail("kvb_pool_register", rc, f->ctx);
            lib_release(f->out, n, f->ctx);
        }
        ns = region_end();
        break;
    case OP_MATCH_ACTIVE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            rc = kvb_pool_match(p, f->H + pl->pos[b], n, f->out + (size_t)b * n);
            if (rc != (int)n)
                lib_fail("kvb_pool_match", rc, f->ctx);
        }
        ns = region_end();
        lib_release(f->out, pl->w, f->ctx);
        break;
    case OP_SCATTERED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            size_t o0 = (size_t)b * n;
            rc = kvb_pool_match_scattered(p, pl->q + o0, n, f->out + o0, f->hit + o0);
            if (rc != (int)n)
                lib_fail("kvb_pool_match_scattered", rc, f->ctx);
        }
        ns = region_end();
        lib_release(f->out, pl->w, f->ctx);
        break;
    case OP_UPGRADE_LIVE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_weak *wk = f->weak + pl->pos[b];
            kvb_block *out = f->out + (size_t)b * n;
            for (uint32_t j = 0; j < n; j++) {
                rc = kvb_weak_upgrade(&wk[j], &out[j]);
                if (rc != 0)
                    lib_fail("kvb_weak_upgrade", rc, f->ctx);
            }
        }
        ns = region_end();
        lib_release(f->out, pl->w, f->ctx);
        break;
    case OP_CLONE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_block *src = f->held + pl->pos[b];
            for (uint32_t j = 0; j < n; j++) {
                rc = kvb_block_clone(&src[j], &f->out[j]);
                if (rc != 0)
                    lib_fail("kvb_block_clone", rc, f->ctx);
            }
            lib_release(f->out, n, f->ctx);
        }
        ns = region_end();
        break;
    case OP_MATCH_CACHED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            rc = kvb_pool_match(p, f->H + pl->pos[b], n, f->out);
            if (rc != (int)n)
                lib_fail("kvb_pool_match (cached)", rc, f->ctx);
            lib_release(f->out, n, f->ctx);
        }
        ns = region_end();
        break;
    case OP_UPGRADE_CACHED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_weak *wk = f->weak + pl->pos[b];
            for (uint32_t j = 0; j < n; j++) {
                rc = kvb_weak_upgrade(&wk[j], &f->out[j]);
                if (rc != 0)
                    lib_fail("kvb_weak_upgrade (cached)", rc, f->ctx);
            }
            lib_release(f->out, n, f->ctx);
        }
        ns = region_end();
        break;
    case OP_EVICT_ALLOC:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            rc = kvb_pool_allocate(p, n, f->mut + (size_t)b * n, NULL, NULL);
            if (rc != 0)
                lib_fail("kvb_pool_allocate (evicting)", rc, f->ctx);
        }
        ns = region_end();
        /* put fresh content back in the cache (the free list stays empty) */
        lib_stage(p, f->mut, pl->q, pl->w, f->cmp, f->ctx);
        rc = kvb_pool_register(p, f->cmp, pl->w, f->out);
        if (rc != 0)
            lib_fail("kvb_pool_register", rc, f->ctx);
        lib_release(f->out, pl->w, f->ctx);
        break;
    case OP_COUNT:
        break;
    }
    return ns;
}

/* ------------------------------------------------------------------------ */
/* The baseline: plain arrays, no lock, no states                           */
/* ------------------------------------------------------------------------ */

#define SOL_NONE UINT32_MAX

/* One 32-byte record per block (two per cache line): what a lookup touches
 * besides its map cell is in one line. The LRU links live in their own dense
 * array (an unlink touches the neighbours' links, which should not drag whole
 * records into the cache). */
struct sol_slot {
    kvb_hash hash;
    uint64_t word; /* generation << 32 | refcount */
    uint64_t pad_;
};

struct sol_link {
    uint32_t prev, next; /* LRU list of cached blocks; index B is the sentinel, its next the oldest */
};

typedef struct sol {
    uint32_t B;
    uint32_t mask, shift;
    struct sol_slot *slot; /* B */
    struct sol_link *link; /* B + 1 */
    uint64_t *map;         /* open addressing, linear probing, load <= 1/2; see sol_find */
    uint32_t *stack;       /* free stack */
    uint32_t nfree;
    uint32_t ncached;
    /* scratch, maxw entries (same handle types as the library: same output work) */
    kvb_mutable *mut;
    kvb_complete *cmp;
    kvb_block *out;
    bool *hit;
} sol;

static uint32_t sol_map_cap(uint32_t B)
{
    uint32_t cap = 2;
    while (cap < 2ull * B)
        cap <<= 1;
    return cap;
}

static size_t sol_bytes(uint32_t B)
{
    return (size_t)B * sizeof(struct sol_slot) + ((size_t)B + 1) * sizeof(struct sol_link) +
           (size_t)sol_map_cap(B) * sizeof(uint64_t) + (size_t)B * sizeof(uint32_t);
}

static void sol_init(sol *s, uint32_t B, uint32_t maxw)
{
    memset(s, 0, sizeof *s);
    s->B = B;
    uint32_t cap = sol_map_cap(B);
    s->mask = cap - 1;
    s->shift = 64 - (uint32_t)__builtin_ctz(cap);
    s->slot = kvbt_xmalloc_array(B, sizeof *s->slot);
    s->link = kvbt_xmalloc_array((size_t)B + 1, sizeof *s->link);
    s->map = kvbt_xmalloc_array(cap, sizeof *s->map);
    s->stack = kvbt_xmalloc_array(B, sizeof *s->stack);
    memset(s->map, 0xff, (size_t)cap * sizeof *s->map);
    memset(s->slot, 0, (size_t)B * sizeof *s->slot);
    for (uint32_t i = 0; i < B; i++) {
        s->slot[i].word = 1ull << 32;
        s->stack[i] = B - 1 - i; /* pops 0, 1, 2, ... like the library's first pass */
    }
    s->nfree = B;
    s->link[B].prev = s->link[B].next = B;
    s->mut = kvbt_xmalloc_array(maxw, sizeof *s->mut);
    s->cmp = kvbt_xmalloc_array(maxw, sizeof *s->cmp);
    s->out = kvbt_xmalloc_array(maxw, sizeof *s->out);
    s->hit = kvbt_xmalloc_array(maxw, sizeof *s->hit);
}

static void sol_fini(sol *s)
{
    free(s->slot);
    free(s->link);
    free(s->map);
    free(s->stack);
    free(s->mut);
    free(s->cmp);
    free(s->out);
    free(s->hit);
}

/* Map cells: tag << 32 | id, where tag is the top 32 bits of the mixed hash; the
 * home index is the tag's top log2(capacity) bits, so deletion never reads a
 * slot and a probe reads a slot only when the tag matches. */
#define SOL_EMPTY UINT64_MAX

static inline uint64_t sol_mix(kvb_hash h)
{
    return (h.hi ^ h.lo) * 0x9E3779B97F4A7C15ull;
}

static inline uint32_t sol_tag_home(const sol *s, uint32_t tag)
{
    return tag >> (s->shift - 32);
}

static inline uint32_t sol_find(const sol *s, kvb_hash h)
{
    uint32_t tag = (uint32_t)(sol_mix(h) >> 32);
    for (uint32_t i = sol_tag_home(s, tag);; i = (i + 1) & s->mask) {
        uint64_t c = s->map[i];
        if (c == SOL_EMPTY)
            return SOL_NONE;
        uint32_t id = (uint32_t)c;
        if ((uint32_t)(c >> 32) == tag && s->slot[id].hash.lo == h.lo &&
            s->slot[id].hash.hi == h.hi)
            return id;
    }
}

/* One probe: the block already holding id's hash, or id after inserting it. */
static inline uint32_t sol_find_or_insert(sol *s, uint32_t id)
{
    kvb_hash h = s->slot[id].hash;
    uint32_t tag = (uint32_t)(sol_mix(h) >> 32);
    for (uint32_t i = sol_tag_home(s, tag);; i = (i + 1) & s->mask) {
        uint64_t c = s->map[i];
        if (c == SOL_EMPTY) {
            s->map[i] = (uint64_t)tag << 32 | id;
            return id;
        }
        uint32_t e = (uint32_t)c;
        if ((uint32_t)(c >> 32) == tag && s->slot[e].hash.lo == h.lo &&
            s->slot[e].hash.hi == h.hi)
            return e;
    }
}

/* Backward-shift deletion: homes come from the tags, no slot is read. */
static inline void sol_erase(sol *s, uint32_t id)
{
    uint32_t tag = (uint32_t)(sol_mix(s->slot[id].hash) >> 32);
    uint32_t i = sol_tag_home(s, tag);
    while ((uint32_t)s->map[i] != id)
        i = (i + 1) & s->mask;
    for (uint32_t j = i;;) {
        j = (j + 1) & s->mask;
        uint64_t e = s->map[j];
        if (e == SOL_EMPTY)
            break;
        uint32_t home = sol_tag_home(s, (uint32_t)(e >> 32));
        if (((j - home) & s->mask) >= ((j - i) & s->mask)) {
            s->map[i] = e;
            i = j;
        }
    }
    s->map[i] = SOL_EMPTY;
}

static inline void sol_lru_unlink(sol *s, uint32_t id)
{
    struct sol_link *x = &s->link[id];
    s->link[x->prev].next = x->next;
    s->link[x->next].prev = x->prev;
    s->ncached--;
}

static inline void sol_lru_push(sol *s, uint32_t id)
{
    uint32_t t = s->link[s->B].prev;
    s->link[id].prev = t;
    s->link[id].next = s->B;
    s->link[t].next = id;
    s->link[s->B].prev = id;
    s->ncached++;
}

/* a new life of the slot: generation + 1, count rc */
static inline uint32_t sol_renew(sol *s, uint32_t id, uint32_t rc)
{
    uint32_t gen = (uint32_t)(s->slot[id].word >> 32) + 1;
    s->slot[id].word = (uint64_t)gen << 32 | rc;
    return gen;
}

/* Free stack first, then the oldest cached blocks; victims are unlinked first
 * and erased from the map in a second pass (independent misses overlap). */
static inline int sol_allocate(sol *s, uint32_t n, kvb_mutable *out)
{
    if (s->nfree + s->ncached < n)
        return -ENOSPC;
    uint32_t i = 0;
    for (; i < n && s->nfree; i++)
        out[i].id = s->stack[--s->nfree];
    uint32_t first_victim = i;
    for (; i < n; i++) {
        uint32_t id = s->link[s->B].next;
        sol_lru_unlink(s, id);
        out[i].id = id;
    }
    for (uint32_t j = first_victim; j < n; j++)
        sol_erase(s, out[j].id);
    for (uint32_t j = 0; j < n; j++) {
        out[j].pool = NULL;
        out[j].gen = sol_renew(s, out[j].id, 0);
    }
    return 0;
}

static inline void sol_stage(sol *s, const kvb_mutable *m, kvb_hash h, kvb_complete *c)
{
    s->slot[m->id].hash = h;
    *c = (kvb_complete){.pool = NULL, .id = m->id, .gen = m->gen, .hash = h};
}

/* take one reference on id (resurrecting it from the cache when its count is 0) */
static inline uint32_t sol_acquire(sol *s, uint32_t id)
{
    if ((uint32_t)s->slot[id].word == 0) {
        sol_lru_unlink(s, id);
        return sol_renew(s, id, 1);
    }
    s->slot[id].word++;
    return (uint32_t)(s->slot[id].word >> 32);
}

static inline void sol_register(sol *s, const kvb_complete *in, uint32_t n, kvb_block *out)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = in[i].id;
        uint32_t e = sol_find_or_insert(s, id);
        uint32_t gen;
        if (e == id) {
            gen = sol_renew(s, id, 1);
        } else { /* content already present: share it, free the new block */
            gen = sol_acquire(s, e);
            s->stack[s->nfree++] = id;
        }
        out[i] = (kvb_block){.pool = NULL, .id = e, .gen = gen, .hash = s->slot[e].hash};
    }
}

static inline void sol_release(sol *s, const kvb_block *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = b[i].id;
        if ((uint32_t)--s->slot[id].word == 0) {
            sol_renew(s, id, 0);
            sol_lru_push(s, id);
        }
    }
}

static inline uint32_t sol_match(sol *s, const kvb_hash *h, uint32_t n, kvb_block *out)
{
    uint32_t k = 0;
    for (; k < n; k++) {
        uint32_t id = sol_find(s, h[k]);
        if (id == SOL_NONE)
            break;
        out[k] = (kvb_block){.pool = NULL, .id = id, .gen = sol_acquire(s, id), .hash = h[k]};
    }
    return k;
}

static inline uint32_t sol_scattered(sol *s, const kvb_hash *h, uint32_t n, kvb_block *out,
                                     bool *hit)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = sol_find(s, h[i]);
        hit[i] = id != SOL_NONE;
        if (hit[i]) {
            out[i] = (kvb_block){.pool = NULL, .id = id, .gen = sol_acquire(s, id), .hash = h[i]};
            k++;
        } else {
            memset(&out[i], 0, sizeof out[i]);
        }
    }
    return k;
}

static inline int sol_clone(sol *s, const kvb_block *b, kvb_block *out)
{
    uint64_t w = s->slot[b->id].word;
    if ((uint32_t)(w >> 32) != b->gen || (uint32_t)w == 0)
        return -ESTALE;
    s->slot[b->id].word = w + 1;
    *out = *b;
    return 0;
}

static inline int sol_upgrade(sol *s, const kvb_weak *wk, kvb_block *out)
{
    uint64_t w = s->slot[wk->id].word;
    if ((uint32_t)(w >> 32) == wk->gen && (uint32_t)w != 0) {
        s->slot[wk->id].word = w + 1;
        *out = (kvb_block){.pool = NULL, .id = wk->id, .gen = wk->gen, .hash = wk->hash};
        return 0;
    }
    uint32_t id = sol_find(s, wk->hash);
    if (id == SOL_NONE)
        return -ENOENT;
    *out = (kvb_block){.pool = NULL, .id = id, .gen = sol_acquire(s, id), .hash = wk->hash};
    return 0;
}

static void sol_admit(sol *s, const kvb_hash *h, uint32_t n, kvb_block *out)
{
    if (sol_allocate(s, n, s->mut) != 0)
        kvbt_die(prog, "baseline: out of blocks");
    for (uint32_t j = 0; j < n; j++)
        sol_stage(s, &s->mut[j], h[j], &s->cmp[j]);
    sol_register(s, s->cmp, n, out);
}

static KVBT_NORETURN void sol_fail(const char *what)
{
    kvbt_die(prog, "baseline: %s failed (a kvb-bench bug)", what);
}

static uint64_t sol_run(sol *s, const kvb_hash *H, const kvb_block *held, const kvb_weak *weak,
                        enum op o, const plan *pl)
{
    const uint32_t n = pl->n, k = pl->k;
    uint64_t ns = 0;

    switch (o) {
    case OP_LIFECYCLE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_hash *h = pl->q + (size_t)b * n;
            if (sol_allocate(s, n, s->mut) != 0)
                sol_fail("allocate");
            for (uint32_t j = 0; j < n; j++)
                sol_stage(s, &s->mut[j], h[j], &s->cmp[j]);
            sol_register(s, s->cmp, n, s->out);
            sol_release(s, s->out, n);
        }
        ns = region_end();
        break;
    case OP_MATCH_ACTIVE:
        region_begin();
        for (uint32_t b = 0; b < k; b++)
            if (sol_match(s, H + pl->pos[b], n, s->out + (size_t)b * n) != n)
                sol_fail("match");
        ns = region_end();
        sol_release(s, s->out, pl->w);
        break;
    case OP_SCATTERED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            size_t o0 = (size_t)b * n;
            if (sol_scattered(s, pl->q + o0, n, s->out + o0, s->hit + o0) != n)
                sol_fail("scattered");
        }
        ns = region_end();
        sol_release(s, s->out, pl->w);
        break;
    case OP_UPGRADE_LIVE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_weak *wk = weak + pl->pos[b];
            kvb_block *out = s->out + (size_t)b * n;
            for (uint32_t j = 0; j < n; j++)
                if (sol_upgrade(s, &wk[j], &out[j]) != 0)
                    sol_fail("upgrade");
        }
        ns = region_end();
        sol_release(s, s->out, pl->w);
        break;
    case OP_CLONE:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_block *src = held + pl->pos[b];
            for (uint32_t j = 0; j < n; j++)
                if (sol_clone(s, &src[j], &s->out[j]) != 0)
                    sol_fail("clone");
            sol_release(s, s->out, n);
        }
        ns = region_end();
        break;
    case OP_MATCH_CACHED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            if (sol_match(s, H + pl->pos[b], n, s->out) != n)
                sol_fail("match (cached)");
            sol_release(s, s->out, n);
        }
        ns = region_end();
        break;
    case OP_UPGRADE_CACHED:
        region_begin();
        for (uint32_t b = 0; b < k; b++) {
            const kvb_weak *wk = weak + pl->pos[b];
            for (uint32_t j = 0; j < n; j++)
                if (sol_upgrade(s, &wk[j], &s->out[j]) != 0)
                    sol_fail("upgrade (cached)");
            sol_release(s, s->out, n);
        }
        ns = region_end();
        break;
    case OP_EVICT_ALLOC:
        region_begin();
        for (uint32_t b = 0; b < k; b++)
            if (sol_allocate(s, n, s->mut + (size_t)b * n) != 0)
                sol_fail("allocate (evicting)");
        ns = region_end();
        for (uint32_t j = 0; j < pl->w; j++)
            sol_stage(s, &s->mut[j], pl->q[j], &s->cmp[j]);
        sol_register(s, s->cmp, pl->w, s->out);
        sol_release(s, s->out, pl->w);
        break;
    case OP_COUNT:
        break;
    }
    return ns;
}

/* ------------------------------------------------------------------------ */
/* Policies                                                                 */
/* ------------------------------------------------------------------------ */

/* The policies the library lists (kvb_inactive_policy; the index is the
 * kvb_evict_policy value) that kvb_pool_create accepts: a backend added to the
 * library later shows up without editing this tool. */
#define BENCH_MAX_POLICIES 16

typedef struct policy_info {
    kvb_evict_policy policy;
    const char *name;
} policy_info;

static policy_info policies[BENCH_MAX_POLICIES];
static unsigned n_policies;

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

static void discover_policies(void)
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

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

#define MAX_LIST 16

typedef struct opts {
    uint32_t blocks[MAX_LIST];
    unsigned n_blocks;
    uint32_t batch[MAX_LIST];
    unsigned n_batch;
    bool batch_given;
    bool policy_sel[BENCH_MAX_POLICIES];
    bool op_sel[OP_COUNT];
    bool sec_micro, sec_threads, sec_memory;
    uint32_t threads[MAX_LIST];
    unsigned n_threads;
    uint32_t reps, warmup, work;
    uint64_t thread_work;
    bool csv, quick, callgrind, cpu_clock;
} opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvb-bench [options]\n"
            "Micro benchmarks of a kvblock pool next to a same-binary \"speed of light\"\n"
            "baseline (plain arrays, free stack, one probe per block, no lock, no states),\n"
            "multi-thread throughput with lock contention counters, and bookkeeping memory.\n"
            "\n"
            "  --blocks LIST     pool sizes (default 10000,1000000; k and M suffixes allowed)\n"
            "  --batch LIST      batch sizes (default 1,16,64; threads: 16 unless given)\n"
            "  --policy LIST     policies or all (default all built-in: the ones\n"
            "                    kvb_pool_create accepts; the others are skipped)\n"
            "  --op LIST         operations or all (default all): lifecycle, match_active,\n"
            "                    match_cached, scattered, upgrade_live, upgrade_cached, clone,\n"
            "                    evict_alloc; a prefix such as 'match' or 'upgrade' selects\n"
            "                    every operation it starts\n"
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
        kvbt_usage_error(prog, "--op: unknown operation '%s' (lifecycle, match_active, match_cached, "
                    "scattered, upgrade_live, upgrade_cached, clone, evict_alloc, all)",
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
        kvbt_usage_error(prog, "--section: unknown section '%s' (micro, threads, memory, all)", item);
}

static void parse_args(int argc, char **argv, opts *o)
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
            kvbt_arg_count_list(prog, "--blocks", blocks, 2, KVB_MAX_BLOCKS, o->blocks, MAX_LIST);
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
                kvbt_usage_error(prog, "--batch %u is more than half of the %u-block pool", o->batch[i],
                            o->blocks[j]);
}

/* ------------------------------------------------------------------------ */
/* Results kept for the targets summary                                     */
/* ------------------------------------------------------------------------ */

typedef struct micro_result {
    enum op op;
    const char *policy;
    uint32_t blocks, batch;
    summary lib, base;
    double ratio;
} micro_result;

#define MAX_RESULTS 4096
static micro_result results[MAX_RESULTS];
static unsigned n_results;

typedef struct thread_result {
    const char *policy;
    uint32_t blocks, batch, threads;
    summary ns;
} thread_result;
static thread_result tresults[MAX_RESULTS];
static unsigned n_tresults;

typedef struct memory_result {
    const char *policy;
    uint32_t blocks;
    double per_block;
} memory_result;
static memory_result mresults[BENCH_MAX_POLICIES * MAX_LIST];
static unsigned n_mresults;

/* ------------------------------------------------------------------------ */
/* Micro section                                                            */
/* ------------------------------------------------------------------------ */

static void micro_header(const opts *o)
{
    if (o->csv) {
        printf("section,op,policy,blocks,batch,reps,work,min_ns,median_ns,max_ns,sol_min_ns,"
               "sol_median_ns,sol_max_ns,ratio_median,clock\n");
        return;
    }
    printf("micro: ns per block (%s clock), min / median / max over %u repetitions of ~%u "
           "blocks (after %u warm-up)\n",
           o->cpu_clock ? "thread CPU" : "wall", o->reps, o->work, o->warmup);
    printf("%-14s %-9s %8s %5s %8s %8s %8s | %7s %7s %7s | %6s\n", "op", "policy", "blocks",
           "batch", "min", "median", "max", "sol min", "sol med", "sol max", "ratio");
}

/* Build the plan of repetition r for op/batch: deterministic from the seed. */
static void make_plan(plan *pl, enum op o, uint32_t n, uint32_t B, uint32_t work, uint64_t *fresh,
                      const kvb_hash *H, uint64_t salt)
{
    uint32_t w = work;
    if (o == OP_EVICT_ALLOC && w > B / 2)
        w = B / 2;
    if (w < n)
        w = n;
    pl->n = n;
    pl->k = w / n;
    pl->w = pl->k * n;
    rng r = {bench_seed ^ splitmix64(salt)};
    if (o == OP_SCATTERED) {
        for (uint32_t j = 0; j < pl->w; j++) {
            pl->pos[j] = rng_below(&r, B);
            pl->q[j] = H[pl->pos[j]];
        }
    } else if (o == OP_LIFECYCLE || o == OP_EVICT_ALLOC) {
        for (uint32_t j = 0; j < pl->w; j++)
            pl->q[j] = bench_hash((*fresh)++);
    } else {
        for (uint32_t b = 0; b < pl->k; b++)
            pl->pos[b] = rng_below(&r, B / n) * n;
    }
}

typedef struct micro_fx {
    lib_fx lib;
    sol base;
    kvb_block *sol_held; /* the baseline's own handles: its generations differ */
    kvb_weak *sol_weak;
    kvb_hash *H;
    uint64_t fresh;
    plan pl;
    uint32_t maxw;
} micro_fx;

static void micro_setup(micro_fx *m, const policy_info *pi, uint32_t B, uint32_t work)
{
    memset(m, 0, sizeof *m);
    m->maxw = work > B ? work : B; /* evict_alloc and the fill use up to B */
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = B;
    cfg.evict = pi->policy;
    cfg.name = "bench";
    int rc = kvb_pool_create(&cfg, &m->lib.pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_create (%s, %u blocks): %s", pi->name, B, kvb_strerror(rc));
    lib_fx *f = &m->lib;
    f->B = B;
    snprintf(f->ctx, sizeof f->ctx, "policy %s, %u blocks", pi->name, B);
    m->H = kvbt_xmalloc_array(B, sizeof *m->H);
    for (uint32_t i = 0; i < B; i++)
        m->H[i] = bench_hash(i);
    m->fresh = B;
    f->H = m->H;
    f->held = kvbt_xmalloc_array(B, sizeof *f->held);
    f->weak = kvbt_xmalloc_array(B, sizeof *f->weak);
    f->mut = kvbt_xmalloc_array(m->maxw, sizeof *f->mut);
    f->cmp = kvbt_xmalloc_array(m->maxw, sizeof *f->cmp);
    f->out = kvbt_xmalloc_array(m->maxw, sizeof *f->out);
    f->hit = kvbt_xmalloc_array(m->maxw, sizeof *f->hit);
    sol_init(&m->base, B, m->maxw);
    m->sol_held = kvbt_xmalloc_array(B, sizeof *m->sol_held);
    m->sol_weak = kvbt_xmalloc_array(B, sizeof *m->sol_weak);
    m->pl.pos = kvbt_xmalloc_array(m->maxw, sizeof *m->pl.pos);
    m->pl.q = kvbt_xmalloc_array(m->maxw, sizeof *m->pl.q);

    /* fill: every block PRIMARY with one held reference, H[i] in held[i] */
    for (uint32_t i = 0; i < B; i += 256) {
        uint32_t c = B - i < 256 ? B - i : 256;
        lib_admit(f, m->H + i, c, f->held + i);
        sol_admit(&m->base, m->H + i, c, m->sol_held + i);
    }
    for (uint32_t i = 0; i < B; i++) {
        kvb_block_downgrade(&f->held[i], &f->weak[i]);
        const kvb_block *b = &m->sol_held[i];
        m->sol_weak[i] = (kvb_weak){.pool = NULL, .id = b->id, .gen = b->gen, .hash = b->hash};
    }
}

static void micro_teardown(micro_fx *m)
{
    int rc = kvb_pool_check(m->lib.pool);
    if (rc != 0)
        kvbt_die(prog, "INVARIANT VIOLATION: kvb_pool_check() = %d after the benchmark (%s): "
                       "a kvblock bug",
                 rc, m->lib.ctx);
    kvb_stats st;
    kvb_pool_stats(m->lib.pool, &st);
    if (st.misuse)
        kvbt_die(prog, "the pool counted %llu handle misuses (%s): a kvb-bench bug",
                 (unsigned long long)st.misuse, m->lib.ctx);
    rc = kvb_pool_destroy(m->lib.pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s (%s)", kvb_strerror(rc), m->lib.ctx);
    free(m->H);
    free(m->lib.held);
    free(m->lib.weak);
    free(m->lib.mut);
    free(m->lib.cmp);
    free(m->lib.out);
    free(m->lib.hit);
    free(m->pl.pos);
    free(m->pl.q);
    free(m->sol_held);
    free(m->sol_weak);
    sol_fini(&m->base);
}

/* Active phase over: release every held reference, in fill order (the cache
 * fills; the weak handles now need the slow path). */
static void micro_to_cached(micro_fx *m)
{
    lib_fx *f = &m->lib;
    int rc = kvb_block_release_n(f->held, f->B);
    if (rc != 0)
        lib_fail("kvb_block_release_n (all)", rc, f->ctx);
    sol_release(&m->base, m->sol_held, f->B);
}

static void micro_run_op(micro_fx *m, const opts *o, const policy_info *pi, enum op op,
                         uint32_t n, uint32_t B)
{
    unsigned total = o->warmup + o->reps;
    double *lib_ns = kvbt_xmalloc_array(total, sizeof(double));
    double *sol_ns = kvbt_xmalloc_array(total, sizeof(double));
    double *ratio = kvbt_xmalloc_array(total, sizeof(double));
    unsigned nm = 0;

    for (unsigned r = 0; r < total; r++) {
        uint64_t salt = ((uint64_t)op << 48) ^ ((uint64_t)n << 32) ^ r;
        make_plan(&m->pl, op, n, B, o->work, &m->fresh, m->H, salt);
        uint64_t tl = lib_run(&m->lib, op, &m->pl);
        uint64_t tb = sol_run(&m->base, m->H, m->sol_held, m->sol_weak, op, &m->pl);
        if (r < o->warmup)
            continue;
        lib_ns[nm] = (double)tl / m->pl.w;
        sol_ns[nm] = (double)tb / m->pl.w;
        ratio[nm] = tb ? (double)tl / (double)tb : 0.0;
        nm++;
    }
    micro_result res = {.op = op, .policy = pi->name, .blocks = B, .batch = n};
    res.lib = summarize(lib_ns, nm);
    res.base = summarize(sol_ns, nm);
    res.ratio = summarize(ratio, nm).med;
    if (n_results < MAX_RESULTS)
        results[n_results++] = res;
    if (o->csv)
        printf("micro,%s,%s,%u,%u,%u,%u,%.2f,%.2f,%.2f,%.2f,%.2f,%.2f,%.3f,%s\n", op_names[op],
               pi->name, B, n, o->reps, m->pl.w, res.lib.min, res.lib.med, res.lib.max,
               res.base.min, res.base.med, res.base.max, res.ratio, o->cpu_clock ? "cpu" : "wall");
    else
        printf("%-14s %-9s %8u %5u %8.1f %8.1f %8.1f | %7.1f %7.1f %7.1f | %6.2f\n", op_names[op],
               pi->name, B, n, res.lib.min, res.lib.med, res.lib.max, res.base.min, res.base.med,
               res.base.max, res.ratio);
    fflush(stdout);
    free(lib_ns);
    free(sol_ns);
    free(ratio);
}

/* Callgrind mode: one warm-up repetition uninstrumented, then one instrumented
 * repetition for the library and one for the baseline, each dumped with a label. */
static void micro_callgrind_op(micro_fx *m, const opts *o, const policy_info *pi, enum op op,
                               uint32_t n, uint32_t B, bool dump_sol)
{
    char label[160];
    for (unsigned r = 0; r < o->warmup; r++) {
        region_mode = REGION_OFF;
        make_plan(&m->pl, op, n, B, o->work, &m->fresh, m->H, r);
        lib_run(&m->lib, op, &m->pl);
        sol_run(&m->base, m->H, m->sol_held, m->sol_weak, op, &m->pl);
    }
    make_plan(&m->pl, op, n, B, o->work, &m->fresh, m->H, 1000);
    region_mode = REGION_CALLGRIND;
    lib_run(&m->lib, op, &m->pl);
    snprintf(label, sizeof label, "kvb-bench %s/%s/b%u blocks=%u", op_names[op], pi->name, n,
             m->pl.w);
    CALLGRIND_DUMP_STATS_AT(label);
    /* the baseline does not depend on the policy: dumped with the first one only */
    if (dump_sol) {
        sol_run(&m->base, m->H, m->sol_held, m->sol_weak, op, &m->pl);
        snprintf(label, sizeof label, "kvb-bench sol:%s/b%u blocks=%u", op_names[op], n,
                 m->pl.w);
        CALLGRIND_DUMP_STATS_AT(label);
    } else {
        region_mode = REGION_OFF;
        sol_run(&m->base, m->H, m->sol_held, m->sol_weak, op, &m->pl);
    }
    region_mode = REGION_OFF;
    if (!o->csv)
        printf("callgrind: %s/%s/b%u blocks=%u\n", op_names[op], pi->name, n, m->pl.w);
}

static void micro_section(const opts *o)
{
    if (!o->callgrind)
        micro_header(o);
    for (unsigned bi = 0; bi < o->n_blocks; bi++) {
        uint32_t B = o->blocks[bi];
        bool first = true;
        for (unsigned p = 0; p < n_policies; p++) {
            if (!o->policy_sel[p])
                continue;
            const policy_info *pi = &policies[p];
            micro_fx m;
            micro_setup(&m, pi, B, o->work);
            bool cached_done = false;
            for (int op = 0; op < OP_COUNT; op++) {
                if (!o->op_sel[op])
                    continue;
                if (!op_is_active_phase((enum op)op) && !cached_done) {
                    micro_to_cached(&m);
                    cached_done = true;
                }
                for (unsigned b = 0; b < o->n_batch; b++) {
                    if (o->callgrind)
                        micro_callgrind_op(&m, o, pi, (enum op)op, o->batch[b], B, first);
                    else
                        micro_run_op(&m, o, pi, (enum op)op, o->batch[b], B);
                }
            }
            if (!cached_done)
                micro_to_cached(&m);
            micro_teardown(&m);
            first = false;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Threads section                                                          */
/* ------------------------------------------------------------------------ */

typedef struct thr {
    pthread_t tid;
    kvb_pool *pool;
    const kvb_hash *hot;
    uint32_t nhot, n;
    uint64_t iters;
    kvb_hash *fresh; /* iters * n */
    uint64_t seed;
    pthread_barrier_t *bar;
    kvb_mutable *mut;
    kvb_complete *cmp;
    kvb_block *blk, *out;
    uint64_t t_start, t_end; /* CLOCK_MONOTONIC after the barrier / at the end */
    uint64_t cpu_ns;         /* CLOCK_THREAD_CPUTIME_ID spent in the loop */
    const char *failed;
    int rc;
} thr;

static void *thr_main(void *arg)
{
    thr *t = arg;
    rng r = {t->seed};
    const uint32_t n = t->n;
    int rc;
    pthread_barrier_wait(t->bar);
    uint64_t c0 = thread_cpu_ns();
    t->t_start = kvbt_now_ns();
    for (uint64_t it = 0; it < t->iters; it++) {
        const kvb_hash *h = t->fresh + it * n;
        rc = kvb_pool_allocate(t->pool, n, t->mut, NULL, NULL);
        if (rc != 0) {
            t->failed = "kvb_pool_allocate", t->rc = rc;
            break;
        }
        rc = n == 1 ? kvb_mutable_stage(t->mut, h[0], t->cmp)
                    : kvb_pool_stage(t->pool, t->mut, h, n, t->cmp);
        if (rc != 0) {
            t->failed = "stage", t->rc = rc;
            break;
        }
        rc = kvb_pool_register(t->pool, t->cmp, n, t->blk);
        if (rc == 0)
            rc = n == 1 ? kvb_block_release(t->blk) : kvb_block_release_n(t->blk, n);
        if (rc != 0) {
            t->failed = "register/release", t->rc = rc;
            break;
        }
        uint32_t pos = rng_below(&r, t->nhot / n) * n;
        rc = kvb_pool_match(t->pool, t->hot + pos, n, t->out);
        if (rc != (int)n) {
            t->failed = "kvb_pool_match (hot)", t->rc = rc;
            break;
        }
        rc = n == 1 ? kvb_block_release(t->out) : kvb_block_release_n(t->out, n);
        if (rc != 0) {
            t->failed = "kvb_block_release_n (hot)", t->rc = rc;
            break;
        }
    }
    t->t_end = kvbt_now_ns();
    t->cpu_ns = thread_cpu_ns() - c0;
    return NULL;
}

static void threads_header(const opts *o)
{
    if (o->csv) {
        printf("section,policy,blocks,batch,threads,reps,blocks_per_rep,min_ns,median_ns,max_ns,"
               "mblocks_per_s,scaling,cpu_ns_per_block,cores_used,lock_acq_per_block,lock_contended_pct,lock_wait_ns_per_block,"
               "wait_ns_per_contended\n");
        return;
    }
    printf("\nthreads: T threads on one pool, each looping {lifecycle of n fresh blocks; prefix "
           "match\nof n held hot blocks + release}; aggregate ns per block (wall / all blocks), "
           "%u repetitions;\ncpu/blk = thread CPU time per block (all threads, median); cores = "
           "cpu/blk / median, the\nCPUs the run actually got (below min(T, CPUs): other load "
           "took the rest, scaling is then\nnot meaningful); lock: acquisitions per block, "
           "contended share, wait ns per block and per\ncontended acquisition\n",
           o->quick ? 3u : 5u);
    printf("%-9s %8s %5s %3s %7s %7s %7s %7s %7s %7s %5s | %7s %9s %8s %9s\n", "policy", "blocks",
           "batch", "thr", "min", "median", "max", "Mblk/s", "scaling", "cpu/blk", "cores",
           "acq/blk", "contended", "wait/blk", "wait/cont");
}

static void threads_run(const opts *o, const policy_info *pi, uint32_t B, uint32_t n)
{
    kvb_pool_config cfg;
    kvb_pool *pool;
    kvb_pool_config_init(&cfg);
    cfg.block_count = B;
    cfg.evict = pi->policy;
    cfg.name = "bench-threads";
    int rc = kvb_pool_create(&cfg, &pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_create (%s, %u blocks): %s", pi->name, B, kvb_strerror(rc));

    uint32_t nhot = B / 4 < 65536 ? B / 4 : 65536;
    nhot = nhot / n * n;
    if (nhot < n)
        kvbt_die(prog, "threads: pool of %u blocks too small for batch %u", B, n);
    kvb_hash *hot = kvbt_xmalloc_array(nhot, sizeof *hot);
    kvb_block *held = kvbt_xmalloc_array(nhot, sizeof *held);
    uint64_t fresh = 1ull << 40;
    for (uint32_t i = 0; i < nhot; i++)
        hot[i] = bench_hash(fresh++);

    /* hot set held by this thread; then warm the cache: lifecycle until no free block */
    lib_fx f = {.pool = pool, .B = B};
    snprintf(f.ctx, sizeof f.ctx, "threads, policy %s, %u blocks", pi->name, B);
    f.mut = kvbt_xmalloc_array(256, sizeof *f.mut);
    f.cmp = kvbt_xmalloc_array(256, sizeof *f.cmp);
    f.out = kvbt_xmalloc_array(256, sizeof *f.out);
    for (uint32_t i = 0; i < nhot; i += 256) {
        uint32_t c = nhot - i < 256 ? nhot - i : 256;
        lib_admit(&f, hot + i, c, held + i);
    }
    kvb_stats st0, st1;
    kvb_hash tmp[256];
    for (;;) {
        kvb_pool_stats(pool, &st0);
        if (st0.reset == 0)
            break;
        uint32_t c = st0.reset < 256 ? st0.reset : 256;
        for (uint32_t j = 0; j < c; j++)
            tmp[j] = bench_hash(fresh++);
        lib_admit(&f, tmp, c, f.out);
        lib_release(f.out, c, f.ctx);
    }

    unsigned reps = o->quick ? 3 : 5, warm = 1;
    double one_thread_ns = 0; /* median ns per block with 1 thread: the scaling reference */
    for (unsigned ti = 0; ti < o->n_threads; ti++) {
        uint32_t T = o->threads[ti];
        uint64_t iters = o->thread_work / (2ull * n * T);
        if (iters == 0)
            iters = 1;
        uint64_t blocks_per_rep = iters * 2ull * n * T;
        thr *ts = kvbt_xmalloc_array(T, sizeof *ts);
        for (uint32_t i = 0; i < T; i++) {
            ts[i] = (thr){.pool = pool, .hot = hot, .nhot = nhot, .n = n, .iters = iters};
            ts[i].fresh = kvbt_xmalloc_array(iters * n, sizeof(kvb_hash));
            ts[i].mut = kvbt_xmalloc_array(n, sizeof *ts[i].mut);
            ts[i].cmp = kvbt_xmalloc_array(n, sizeof *ts[i].cmp);
            ts[i].blk = kvbt_xmalloc_array(n, sizeof *ts[i].blk);
            ts[i].out = kvbt_xmalloc_array(n, sizeof *ts[i].out);
        }
        double *ns = kvbt_xmalloc_array(reps, sizeof(double));
        double *cpu = kvbt_xmalloc_array(reps, sizeof(double));
        unsigned nm = 0;
        for (unsigned r = 0; r < warm + reps; r++) {
            pthread_barrier_t bar;
            pthread_barrier_init(&bar, NULL, T + 1);
            for (uint32_t i = 0; i < T; i++) {
                for (uint64_t j = 0; j < iters * n; j++)
                    ts[i].fresh[j] = bench_hash(fresh++);
                ts[i].seed = splitmix64(bench_seed ^ ((uint64_t)r << 20) ^ i);
                ts[i].bar = &bar;
                ts[i].failed = NULL;
                if (pthread_create(&ts[i].tid, NULL, thr_main, &ts[i]) != 0)
                    kvbt_die(prog, "pthread_create failed");
            }
            if (r == warm)
                kvb_pool_stats(pool, &st0);
            pthread_barrier_wait(&bar);
            /* wall = first start to last end, taken by the workers themselves: the main
             * thread may not run again before they finish (2 vCPUs) */
            uint64_t t0 = UINT64_MAX, t1 = 0;
            for (uint32_t i = 0; i < T; i++) {
                pthread_join(ts[i].tid, NULL);
                if (ts[i].t_start < t0)
                    t0 = ts[i].t_start;
                if (ts[i].t_end > t1)
                    t1 = ts[i].t_end;
            }
            pthread_barrier_destroy(&bar);
            for (uint32_t i = 0; i < T; i++)
                if (ts[i].failed)
                    lib_fail(ts[i].failed, ts[i].rc, f.ctx);
            if (r >= warm) {
                uint64_t c = 0;
                for (uint32_t i = 0; i < T; i++)
                    c += ts[i].cpu_ns;
                cpu[nm] = (double)c / (double)blocks_per_rep;
                ns[nm++] = (double)(t1 - t0) / (double)blocks_per_rep;
            }
        }
        kvb_pool_stats(pool, &st1);
        summary s = summarize(ns, nm);
        double cpu_med = summarize(cpu, nm).med;
        if (T == 1)
            one_thread_ns = s.med;
        double scaling = one_thread_ns > 0 ? one_thread_ns / s.med : 0.0;
        char scal[16] = "-";
        if (scaling > 0)
            snprintf(scal, sizeof scal, "%.2f", scaling);
        double total_blocks = (double)blocks_per_rep * nm;
        double acq = (double)(st1.lock_acquisitions - st0.lock_acquisitions);
        double cont = (double)(st1.lock_contended - st0.lock_contended);
        double wait = (double)(st1.lock_wait_ns - st0.lock_wait_ns);
        if (o->csv)
            printf("threads,%s,%u,%u,%u,%u,%llu,%.2f,%.2f,%.2f,%.3f,%.3f,%.2f,%.2f,%.4f,%.2f,%.2f,"
                   "%.1f\n",
                   pi->name, B, n, T, nm, (unsigned long long)blocks_per_rep, s.min, s.med, s.max,
                   1e3 / s.med, scaling, cpu_med, cpu_med / s.med, acq / total_blocks, acq ? 100.0 * cont / acq : 0.0,
                   wait / total_blocks, cont ? wait / cont : 0.0);
        else
            printf("%-9s %8u %5u %3u %7.1f %7.1f %7.1f %7.2f %7s %7.1f %5.2f | %7.3f %8.2f%% %8.1f "
                   "%9.0f\n",
                   pi->name, B, n, T, s.min, s.med, s.max, 1e3 / s.med, scal, cpu_med,
                   cpu_med / s.med, acq / total_blocks,
                   acq ? 100.0 * cont / acq : 0.0, wait / total_blocks, cont ? wait / cont : 0.0);
        fflush(stdout);
        if (n_tresults < MAX_RESULTS)
            tresults[n_tresults++] =
                (thread_result){.policy = pi->name, .blocks = B, .batch = n, .threads = T, .ns = s};
        for (uint32_t i = 0; i < T; i++) {
            free(ts[i].fresh);
            free(ts[i].mut);
            free(ts[i].cmp);
            free(ts[i].blk);
            free(ts[i].out);
        }
        free(ts);
        free(ns);
        free(cpu);
    }

    lib_release(held, nhot, f.ctx);
    rc = kvb_pool_check(pool);
    if (rc != 0)
        kvbt_die(prog, "INVARIANT VIOLATION: kvb_pool_check() = %d after the thread run (%s)", rc,
                 f.ctx);
    rc = kvb_pool_destroy(pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s (%s)", kvb_strerror(rc), f.ctx);
    free(hot);
    free(held);
    free(f.mut);
    free(f.cmp);
    free(f.out);
}

static void threads_section(const opts *o)
{
    threads_header(o);
    uint32_t batches[MAX_LIST];
    unsigned nb;
    if (o->batch_given) {
        nb = o->n_batch;
        memcpy(batches, o->batch, sizeof batches);
    } else {
        batches[0] = 16, nb = 1;
    }
    for (unsigned bi = 0; bi < o->n_blocks; bi++)
        for (unsigned p = 0; p < n_policies; p++)
            if (o->policy_sel[p])
                for (unsigned b = 0; b < nb; b++)
                    threads_run(o, &policies[p], o->blocks[bi], batches[b]);
}

/* ------------------------------------------------------------------------ */
/* Memory section                                                           */
/* ------------------------------------------------------------------------ */

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
        printf("memory,%s,%u,%zu,%.3f,%llu,%s,%s,%lld,%.3f,%lld,%.3f,%lld,%lld,%.3f\n", pi->name,
               B, created, per, (unsigned long long)n_alloc, largest, have_b ? bstr : "",
               je ? (long long)je1 - (long long)je0 : -1, jper, jt ? (long long)(jt1 - jt0) : -1,
               tper, after, peak, sper);
    else
        printf("%-9s %8u %9.2f %6llu %-24s %8s %9s %+9lld %8.2f\n", pi->name, B, per,
               (unsigned long long)n_alloc, largest, bstr, jstr, after, sper);
    fflush(stdout);
    if (n_mresults < sizeof mresults / sizeof mresults[0])
        mresults[n_mresults++] = (memory_result){.policy = pi->name, .blocks = B, .per_block = per};
}

static void memory_section(const opts *o)
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
        printf("(jemalloc: stats.allocated delta after an \"epoch\" refresh; '*' = thread.allocated "
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

/* ------------------------------------------------------------------------ */
/* Targets (issue 7): printed, never asserted                               */
/* ------------------------------------------------------------------------ */

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

static void targets_summary(void)
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
        printf("  full lifecycle    %7.1f ns/block  (<= 60: %s)   ratio %5.2f x baseline (<= 3: %s)\n",
               lc->lib.med, verdict(lc->lib.med <= 60), lc->ratio, verdict(lc->ratio <= 3));
        any = true;
    }
    if (ma) {
        printf("  prefix-match hit  %7.1f ns/block  (<= 25: %s)   ratio %5.2f x baseline (<= 3: %s)\n",
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

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

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
    printf("baseline (\"sol\", speed of light): plain arrays, free stack, one open-addressing "
           "probe per\nblock, refcount word, intrusive LRU list; no lock, no states, no stats\n\n");
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
