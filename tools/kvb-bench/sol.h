/*
 * tools/kvb-bench/sol.h - the speed-of-light baseline of kvb-bench (sol.c): the
 * memory work of a pool on plain arrays and nothing else, compiled into the
 * same binary, so that the micro section can state each operation's cost
 * beside it.
 */
#ifndef KVB_BENCH_SOL_H
#define KVB_BENCH_SOL_H

#include "kvb-bench/bench.h"

#define SOL_NONE UINT32_MAX

/* One 32-byte record per block, the size of the pool's slot: what a lookup
 * touches besides its table cell is in one line. */
struct sol_slot {
    kvb_hash hash;
    uint64_t word; /* generation << 32 | refcount */
    uint64_t pad_;
};

/* The LRU list of cached blocks in a dense array of links (an unlink touches the
 * neighbours' links, which should not drag whole records into the cache); index
 * B is the sentinel, its next the oldest. */
struct sol_link {
    uint32_t prev, next;
};

/* The baseline's handles: what a reference needs (no pool pointer, no hash). */
typedef struct sol_ref {
    uint32_t id, gen;
} sol_ref;

typedef struct sol_weak {
    kvb_hash hash;
    uint32_t id, gen;
} sol_weak;

typedef struct sol {
    uint32_t B;
    /* the table: the pool's cell count (B + 3B/4 + 8) of 32-bit cells, Robin Hood
     * linear probing, cell = displacement << id_bits | id (see sol.c) */
    uint32_t cap, id_bits, id_mask, disp_limit;
    bool prefetch;         /* B >= 65536, as the pool: batch lookups prefetch */
    struct sol_slot *slot; /* B */
    struct sol_link *link; /* B + 1 */
    uint32_t *map;         /* cap + disp_limit */
    uint32_t *stack;       /* free stack, B */
    uint32_t nfree;
    /* scratch, maxw entries */
    uint32_t *ids;  /* allocated or evicted block ids */
    uint32_t *home; /* home cells of a batch (prefetching) */
    sol_ref *out;
    bool *hit;
} sol;

/* bytes of bookkeeping a baseline of B blocks holds (the memory section) */
size_t sol_bytes(uint32_t B);
/* a baseline of B blocks, all free, with scratch for maxw blocks per repetition */
void sol_init(sol *s, uint32_t B, uint32_t maxw);
void sol_fini(sol *s);
/* allocate + stage + register n blocks with hashes h into out (the fill) */
void sol_admit(sol *s, const kvb_hash *h, uint32_t n, sol_ref *out);
/* release n references (the end of the active phase) */
void sol_release_n(sol *s, const sol_ref *b, uint32_t n);
/* One repetition of operation o on the baseline, as lib_run on the library: the
 * timed region's ns. H, held, weak: the baseline's fill (its own handles). */
uint64_t sol_run(sol *s, const kvb_hash *H, const sol_ref *held, const sol_weak *weak, enum op o,
                 const plan *pl);

#endif /* KVB_BENCH_SOL_H */
