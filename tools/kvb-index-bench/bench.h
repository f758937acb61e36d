/*
 * tools/kvb-index-bench/bench.h - what the parts of kvb-index-bench share (the
 * benchmark is tools/kvb-index-bench.c, which has the manual): options, the
 * helpers called inside timed loops (static inline, as they were), the
 * baseline u64 map, the recorded event logs, and one function per section.
 */
#ifndef KVB_INDEX_BENCH_H
#define KVB_INDEX_BENCH_H

#include "kvblock.h"
#include "kvblock/index.h"

#include "common/synth.h"
#include "common/tokhash.h"
#include "common/trace.h"
#include "common/util.h"

#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

static const char *const prog = "kvb-index-bench";

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct bench_opts {
    bool sec[5];
    bool quick;
    uint64_t seed;
    /* (a) */
    uint64_t a_requests;
    uint32_t a_workers, a_capacity, a_reps;
    /* (b) */
    uint32_t b_workers, b_dup, b_sequences, b_k;
    uint64_t b_queries;
    /* (c) */
    uint64_t c_entries;
    /* (d) */
    uint64_t d_events;
    uint32_t d_workers, d_cache, d_batch;
    /* (e) */
    const char *trace;
    uint32_t e_workers, e_dup, e_threads, e_k;
    uint64_t e_requests; /* 0 = the whole trace */
    uint32_t e_window_ms;
    const char *snapshot_dir;
} bench_opts;

#define B_LEN 64
#define B_HOT 4

/* Exit 1 with "prog: what: error". */
KVBT_NORETURN void bench_fail(const char *what, int rc);

static inline uint64_t bench_rng(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A non-zero random 64-bit key. */
static inline uint64_t bench_key(uint64_t *x)
{
    uint64_t k;
    do
        k = bench_rng(x);
    while (k == 0);
    return k;
}

/* CPU time of the calling thread: what a run cost when the machine is shared (time
 * the thread waited for a core is left out; cache pollution by others is not). */
static inline uint64_t bench_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t bench_proc_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void bench_store(kvb_index *idx, uint32_t stream, kvb_index_ev_type type,
                               const uint64_t *h, uint32_t n)
{
    kvb_index_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.tier = KVB_TIER_DEVICE;
    ev.n_hashes = n;
    ev.hashes = h;
    int rc = kvb_index_apply(idx, stream, &ev, 1, -1);
    if (rc < 0)
        bench_fail("kvb_index_apply", rc);
}

/* ------------------------------------------------------------------------ */
/* Baseline: an open-addressing u64 map (linear probing, backward-shift      */
/* deletion), key -> u64 value. Key 0 is the empty marker.                   */
/* ------------------------------------------------------------------------ */

typedef struct bmap {
    uint64_t *k, *v;
    uint64_t mask, n;
} bmap;

static inline void bmap_init(bmap *m, uint64_t expect)
{
    uint64_t cap = 16;
    while (cap < expect * 2)
        cap <<= 1;
    m->k = calloc(cap, sizeof *m->k);
    m->v = calloc(cap, sizeof *m->v);
    if (!m->k || !m->v)
        kvbt_die(prog, "out of memory (baseline map of %llu slots)", (unsigned long long)cap);
    m->mask = cap - 1;
    m->n = 0;
}

static inline void bmap_free(bmap *m)
{
    free(m->k);
    free(m->v);
}

static inline uint64_t bmap_home(const bmap *m, uint64_t k)
{
    return (k * 0x9E3779B97F4A7C15ull) >> 17 & m->mask;
}

/* The value slot of k, inserted with value 0 when absent. */
static inline uint64_t *bmap_upsert(bmap *m, uint64_t k)
{
    uint64_t i = bmap_home(m, k);
    while (m->k[i] && m->k[i] != k)
        i = (i + 1) & m->mask;
    if (!m->k[i]) {
        m->k[i] = k;
        m->v[i] = 0;
        m->n++;
    }
    return &m->v[i];
}

static inline uint64_t *bmap_find(const bmap *m, uint64_t k)
{
    uint64_t i = bmap_home(m, k);
    while (m->k[i]) {
        if (m->k[i] == k)
            return &m->v[i];
        i = (i + 1) & m->mask;
    }
    return NULL;
}

static inline void bmap_erase(bmap *m, uint64_t k)
{
    uint64_t i = bmap_home(m, k);
    while (m->k[i] && m->k[i] != k)
        i = (i + 1) & m->mask;
    if (!m->k[i])
        return;
    m->n--;
    for (uint64_t j = (i + 1) & m->mask; m->k[j]; j = (j + 1) & m->mask) {
        uint64_t h = bmap_home(m, m->k[j]);
        /* move j back to i when its home is not in (i, j] (cyclically) */
        if (((j - h) & m->mask) >= ((j - i) & m->mask)) {
            m->k[i] = m->k[j];
            m->v[i] = m->v[j];
            i = j;
        }
    }
    m->k[i] = 0;
}

/* Event logs recorded from kvblock pools (common.c). */
typedef struct rec_event {
    uint32_t stream, n;
    uint8_t type, has_parent;
    uint64_t off, parent;
} rec_event;

typedef struct rec_batch {
    uint32_t stream, first, n; /* events [first, first + n) */
    uint64_t t_us;             /* (e): time on the worker's timeline */
} rec_batch;

typedef struct evlog {
    rec_event *ev;
    size_t n_ev, cap_ev;
    uint64_t *h;
    size_t n_h, cap_h;
    rec_batch *b;
    size_t n_b, cap_b;
    kvb_index_event *ix; /* built by evlog_finish */
    uint64_t stored_blocks, removed_blocks, evictions_seen;
} evlog;

typedef struct rec_sink {
    evlog *log;
    uint32_t stream;
    uint64_t t_us;
} rec_sink;

/* ---- common.c ----------------------------------------------------------- */

/* "load a b c" of /proc/loadavg (a static buffer). */
const char *bench_loadavg(void);
/* qsort comparison of u32; percentile (per mille) of a sorted array. */
int bench_cmp_u32(const void *a, const void *b);
uint32_t bench_pct(const uint32_t *v, uint64_t n, unsigned permille);
/* A new index (block_size 0: the default) / a new ROUTER stream "w<w>"; exit on failure. */
kvb_index *bench_index(uint32_t block_size, uint32_t max_streams, const kvb_allocator *al);
uint32_t bench_stream(kvb_index *idx, uint32_t w);
/* Free an event log; the pool event callback that records into a rec_sink;
 * the kvb_index_event array of a finished log (evlog.ix). */
void evlog_free(evlog *l);
void rec_sink_fn(void *user, const kvb_pool *pool, const kvb_event *events, uint32_t n);
void evlog_finish(evlog *l);

/* ---- the sections: a_ops.c, b_match.c, c_memory.c, d_restart.c, e_mooncake.c */

void bench_a(const bench_opts *o);
void bench_b(const bench_opts *o);
void bench_c(const bench_opts *o);
void bench_d(const bench_opts *o);
void bench_e(const bench_opts *o);

#endif /* KVB_INDEX_BENCH_H */
