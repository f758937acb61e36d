/*
 * tools/kvb-bench/sol.h - the speed-of-light baseline of kvb-bench (sol.c): the
 * same logical work as a pool on plain arrays, compiled into the same binary,
 * so that the micro section can state each operation's cost beside it.
 */
#ifndef KVB_BENCH_SOL_H
#define KVB_BENCH_SOL_H

#include "kvb-bench/bench.h"

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
    uint32_t prev,
        next; /* LRU list of cached blocks; index B is the sentinel, its next the oldest */
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

/* bytes of bookkeeping a baseline of B blocks holds (the memory section) */
size_t sol_bytes(uint32_t B);
/* a baseline of B blocks, all free, with scratch for maxw blocks per repetition */
void sol_init(sol *s, uint32_t B, uint32_t maxw);
void sol_fini(sol *s);
/* allocate + stage + register n blocks with hashes h into out (the fill) */
void sol_admit(sol *s, const kvb_hash *h, uint32_t n, kvb_block *out);
/* release n references (the end of the active phase) */
void sol_release_n(sol *s, const kvb_block *b, uint32_t n);
/* One repetition of operation o on the baseline, as lib_run on the library: the
 * timed region's ns. H, held, weak: the baseline's fill (its own handles). */
uint64_t sol_run(sol *s, const kvb_hash *H, const kvb_block *held, const kvb_weak *weak, enum op o,
                 const plan *pl);

#endif /* KVB_BENCH_SOL_H */
