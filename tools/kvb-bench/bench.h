/*
 * tools/kvb-bench/bench.h - what the parts of kvb-bench share: the options,
 * the policies under test, the operations and their plans, the timed-region
 * switch (clock or callgrind), the library-side fixture and the results kept
 * for the targets summary. tools/kvb-bench.c is the main; the parts are
 *
 *   options.c   --help, option parsing, the policy list
 *   common.c    content hashes, summaries, timed regions, failure messages
 *   lib.c       the library side of a micro operation (lib_run)
 *   sol.c       the speed-of-light baseline (sol.h)
 *   micro.c     the micro section and the --callgrind-ops mode
 *   threads.c   the threads section
 *   memory.c    the memory section
 *   targets.c   results kept across sections, the targets summary
 *
 * One thread runs everything except the workers of the threads section, which
 * only touch their own struct and the pool.
 */
#ifndef KVB_BENCH_H
#define KVB_BENCH_H

#include "kvblock.h"

#include "common/args.h"
#include "common/util.h"

#include <valgrind/callgrind.h>

static const char *const prog = "kvb-bench";

/* ---- content hashes and random numbers ---------------------------------- */

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
kvb_hash bench_hash(uint64_t i);

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

/* ---- summaries and failures ----------------------------------------------- */

typedef struct summary {
    double min, med, max;
} summary;

/* min, median, max of v[0..n) (sorts v) */
summary bench_summarize(double *v, unsigned n);

/* A library call failed (rc < 0) or gave a short result (rc >= 0): exit 1. */
KVBT_NORETURN void lib_fail(const char *call, int rc, const char *ctx);

/* ---- timed regions: the clock, or callgrind's instrumentation switch ------- */

enum region_mode { REGION_CLOCK, REGION_CALLGRIND, REGION_OFF };
extern enum region_mode region_mode;
extern uint64_t region_t0;
/* --clock cpu: CLOCK_THREAD_CPUTIME_ID (time the thread ran: excludes preemption
 * by other load on a shared machine); default CLOCK_MONOTONIC (wall). */
extern bool region_cpu_clock;

uint64_t thread_cpu_ns(void);

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

/* ---- operations ------------------------------------------------------------ */

enum op {
    OP_MATCH_ACTIVE,
    OP_SCATTERED,
    OP_UPGRADE_LIVE,
    OP_CLONE,
    OP_MATCH_CACHED,
    OP_UPGRADE_CACHED,
    OP_EVICT_ALLOC,
    OP_LIFECYCLE,
    OP_ACQUIRE,
    OP_COUNT
};

extern const char *const op_names[OP_COUNT];

/* Which ops need which starting state (see micro.c). */
static inline bool op_is_active_phase(enum op o)
{
    return o == OP_MATCH_ACTIVE || o == OP_SCATTERED || o == OP_UPGRADE_LIVE || o == OP_CLONE;
}

/* A repetition's plan, shared by the library and the baseline run. */
typedef struct plan {
    uint32_t n;    /* batch size */
    uint32_t k;    /* batches */
    uint32_t w;    /* blocks = k * n */
    uint32_t *pos; /* k batch starts (aligned to n), or w random positions (scattered) */
    kvb_hash *q;   /* w hashes: fresh content (lifecycle, evict_alloc) or queries (scattered) */
} plan;

/* ---- policies and options -------------------------------------------------- */

#define BENCH_MAX_POLICIES 16

typedef struct policy_info {
    kvb_evict_policy policy;
    const char *name;
} policy_info;

/* The policies the library lists that kvb_pool_create accepts (options.c). */
extern policy_info policies[BENCH_MAX_POLICIES];
extern unsigned n_policies;
void discover_policies(void);

#define MAX_LIST 16
/* the largest --blocks: the baseline packs a block id and a displacement (under
 * 62 cells) into 32 bits (sol.c) */
#define BENCH_MAX_BLOCKS ((1u << 26) - 1)

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
    bool events; /* --events: also run each micro operation on a pool with a drop sink */
} opts;

/* Parse argv into o (after discover_policies); usage errors exit 2, --help 0. */
void parse_args(int argc, char **argv, opts *o);

/* ---- the library side (lib.c) ---------------------------------------------- */

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

/* The --events sink: drops every event (adds their count to *(uint64_t *)user, so
 * the teardown can tell that events really were delivered). */
void bench_drop_sink(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n);

/* allocate + stage + register n blocks with hashes h into out; not timed */
void lib_admit(lib_fx *f, const kvb_hash *h, uint32_t n, kvb_block *out);

/* One repetition of operation o on the library; the timed region's ns (0 when
 * callgrind counts instead). */
uint64_t lib_run(lib_fx *f, enum op o, const plan *pl);

/* ---- results kept for the targets summary (targets.c) ----------------------- */

typedef struct micro_result {
    enum op op;
    const char *policy;
    uint32_t blocks, batch;
    summary lib, base;
    double ratio;
} micro_result;

typedef struct thread_result {
    const char *policy;
    uint32_t blocks, batch, threads;
    summary ns;
} thread_result;

typedef struct memory_result {
    const char *policy;
    uint32_t blocks;
    double per_block;
} memory_result;

void record_micro(const micro_result *r);
void record_thread(const thread_result *r);
void record_memory(const memory_result *r);

/* ---- sections ---------------------------------------------------------------- */

void micro_section(const opts *o);
void threads_section(const opts *o);
void memory_section(const opts *o);
void targets_summary(void);

#endif /* KVB_BENCH_H */
