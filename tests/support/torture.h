/*
 * support/torture.h - what the torture programs (stress/torture_*.c) share:
 * the failure exit, the command line, the content universe, the threads, and
 * the end-of-run check of a pool against what the threads counted.
 *
 * A torture program: T threads run random operations on shared pools, each
 * thread counting what it did (allocations, registrations, evictions it was
 * told about, ...) in a torture_books per pool; callbacks count what they see.
 * After the threads have given everything back and joined, the books of all
 * threads are summed and torture_check_pool compares them with the pool's own
 * counters; torture_check_presence compares the registry with the pool. The
 * first violation ends the program with "<name>: FAIL: ..." and status 1.
 * Runs are deterministic per seed up to thread scheduling (support/rng.h).
 * Criterion-free.
 */
#ifndef KVB_TEST_SUPPORT_TORTURE_H
#define KVB_TEST_SUPPORT_TORTURE_H

#include "kvblock.h"
#include "rng.h"
#include <stddef.h>
#include <stdint.h>

/* Report a violation and exit(1) at once: "<name>: FAIL: <message>". */
void torture_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
#define FAIL(...) torture_fail(__VA_ARGS__)

/* The program's name, for messages (torture_start sets it too). */
void torture_init(const char *name);

typedef struct torture_args {
    int threads;  /* 1..256 */
    uint64_t ops; /* operations per thread, > 0 */
    uint64_t seed;
} torture_args;

/* Parse "[threads] [ops per thread] [seed]" (defaults: def_threads, def_ops, the
 * time), print "<name>: threads=T ops/thread=N seed=S"; on bad arguments print
 * the usage and exit(2). */
torture_args torture_start(int argc, char **argv, const char *name, int def_threads,
                           uint64_t def_ops);

/* The seed of thread i of a run. */
static inline uint64_t torture_seed(uint64_t seed, int i)
{
    return seed * 1000003u + (uint64_t)i;
}

/* `chains` chains of `depth` blocks: out[c * depth + d] is block d of chain c,
 * sequence hash base + 16 c + d, child of block d - 1. */
void torture_chains(uint64_t base, int chains, int depth, kvb_hash *out);

/* What thread i runs: its worker ((char *)workers + i * size), its seed
 * (torture_seed(a->seed, i)) and its number of operations (a->ops). */
typedef void (*torture_fn)(void *worker, uint64_t seed, uint64_t ops);

/* Run fn on a->threads threads; they start together (a barrier) and the call
 * returns when every one has finished. workers: a->threads structs of `size`
 * bytes (NULL and 0 when the threads keep no state). */
void torture_run(const torture_args *a, void *workers, size_t size, torture_fn fn);

/* The two pools most programs share, pool pi of the pair: pool 0 lru keeping
 * duplicates ("lru-allow"), pool 1 fifo rejecting them ("fifo-reject"), of
 * `blocks` blocks, attached to reg (may be NULL); the callbacks' user is a
 * pointer to the pool's number pi (an int). */
void torture_pair_config(int pi, uint32_t blocks, kvb_registry *reg, kvb_callbacks cb,
                         kvb_pool_config *cfg);

/* Create both pools of the pair as configured by torture_pair_config. */
void torture_pair_create(uint32_t blocks, kvb_registry *reg, kvb_callbacks cb, kvb_pool *pools[2]);

/* What the threads did to one pool, counted by themselves, and what the pool's
 * callbacks saw. */
typedef struct torture_books {
    uint64_t allocated;    /* blocks of successful kvb_pool_allocate calls */
    uint64_t evicted;      /* victims those allocations reported */
    uint64_t staged;       /* kvb_mutable_stage calls that succeeded */
    uint64_t registered;   /* blocks of successful registrations */
    uint64_t drained;      /* blocks kvb_pool_reset_inactive moved to RESET */
    uint64_t unregistered; /* mutable and staged blocks given back (one on_reset each) */
    uint64_t match_requested, match_returned; /* kvb_pool_match, _match_scattered */
    uint64_t scan_requested, scan_returned;   /* kvb_pool_scan */
    uint64_t on_evict, on_reset;              /* callbacks fired */
} torture_books;

/* What torture_check_pool compares, besides what it always checks. */
enum {
    TORTURE_ALLOCATIONS = 1 << 0, /* allocations, stagings, registrations, evictions */
    TORTURE_MATCHES = 1 << 1,     /* match requested / returned */
    TORTURE_SCANS = 1 << 2,       /* scan requested / returned */
    TORTURE_ON_EVICT = 1 << 3,    /* on_evict == evictions */
    TORTURE_ON_RESET = 1 << 4,    /* on_reset == unregistered + dedups + duplicates + drained */
};

/* sum += b */
void torture_books_add(torture_books *sum, const torture_books *b);

/* The end of a run (threads joined, everything given back) for pool number pi:
 * kvb_pool_check() clean, nothing held (mutable, staged, primary, duplicate 0),
 * reset + inactive == block_count, misuse == 0, and the counters named in
 * `check` balance against the books (evictions == evicted + drained). Returns
 * the pool's stats. */
kvb_stats torture_check_pool(int pi, kvb_pool *p, const torture_books *b, unsigned check);

/* Nothing held: registry presence of every hash of the chains (as laid out by
 * torture_chains) equals "cached in p" (a kvb_pool_scan hit). Returns how many
 * are cached. */
uint32_t torture_check_presence(int pi, kvb_registry *reg, kvb_pool *p, const kvb_hash *chains,
                                int n_chains, int depth);

#endif /* KVB_TEST_SUPPORT_TORTURE_H */
