/*
 * tools/common/optimal.h - offline optimal references for block traces: what
 * the best possible eviction, knowing the whole future, gets on the same
 * replay as kvb-replay (docs/replay.md has the definitions and the argument).
 *
 *   optimal      the prefix replay under a pool's constraints: every request
 *                holds all of its blocks at once (plus the last W requests'
 *                blocks with --window W); allocation evicts, one at a time,
 *                the unheld cached LEAF (no cached child) whose next use is
 *                farthest. Next use of a block = the next request containing
 *                it; the cached set stays closed under prefixes, so that
 *                request would hit the block if it were kept. Belady's rule
 *                (farthest next use first) at request granularity; for
 *                one-block requests (--format ids) it is exactly Belady/MIN.
 *   belady_flat  Belady on the flattened block stream, as a general cache
 *                simulator runs it: one access per block ref, next use = the
 *                next ref of the block, a miss inserts and evicts the cached
 *                block used farthest in the future, which may be a block the
 *                current request touched a moment ago (a pool cannot do that:
 *                the request holds it). Hits counted while the request's
 *                prefix is unbroken. An upper bound on `optimal`, reproducing
 *                the "offline optimal" column of issue 3.
 *
 * Both need the trace to be a prefix tree: a lineage hash always follows the
 * same parent hash (true whenever ids name whole prefixes, as in Mooncake).
 * kvbt_oracle_build() counts the references that break it; the references are
 * refused when there are any.
 */
#ifndef KVBT_OPTIMAL_H
#define KVBT_OPTIMAL_H

#include <stdbool.h>
#include <stdint.h>

#include "progress.h"
#include "trace.h"

#define KVBT_ORACLE_NONE  UINT32_MAX /* no parent */
#define KVBT_ORACLE_NEVER UINT32_MAX /* not used again (next_req) */

/* What the references know about a trace: computed once, before any timing. */
typedef struct kvbt_oracle {
    uint64_t n_refs, n_requests;
    uint32_t n_blocks;               /* distinct lineage hashes */
    uint32_t *block;                 /* per ref: dense block index, numbered by first appearance */
    uint32_t *parent;                /* per block: its parent's index (the ref before it in its
                                        first request), KVBT_ORACLE_NONE at position 0 */
    uint32_t *next_req;              /* per ref: the next request containing the block, or NEVER */
    uint64_t *next_ref;              /* per ref: the next ref of the block, or UINT64_MAX */
    uint64_t conflicts;              /* refs whose block follows another parent than before */
    uint64_t first_conflict_request; /* 0-based; valid when conflicts > 0 */
} kvbt_oracle;

/* Build the oracle from the trace and its lineage hashes (hashes[i] for ref i).
 * Returns 0, or -1 with a message in err (more than 2^32 - 2 requests or blocks). */
int kvbt_oracle_build(const kvbt_trace *t, const kvb_hash *hashes, kvbt_oracle *o, char *err,
                      size_t errcap);
void kvbt_oracle_free(kvbt_oracle *o);

typedef struct kvbt_opt_result {
    uint64_t hits;           /* prefix hits */
    uint64_t evictions;      /* cached blocks dropped to make room */
    uint64_t early_releases; /* window requests released early to make room */
    uint64_t ns;             /* the simulation loop only (progress drawing excluded) */
} kvbt_opt_result;

/* The `optimal` reference at `capacity` blocks, with the last `window` requests held
 * (0: a request's blocks are released when it ends). Every request must fit
 * (kvbt_trace_len <= capacity); the oracle must have no conflicts. Reports progress
 * in block refs. Returns 0, or -1 with a message in err. */
int kvbt_optimal_run(const kvbt_trace *t, const kvbt_oracle *o, uint32_t capacity, uint32_t window,
                     kvbt_progress *prog, kvbt_opt_result *res, char *err, size_t errcap);

/* The `belady_flat` reference at `capacity` blocks (no window). Same contract. */
int kvbt_belady_flat_run(const kvbt_trace *t, const kvbt_oracle *o, uint32_t capacity,
                         kvbt_progress *prog, kvbt_opt_result *res, char *err, size_t errcap);

#endif /* KVBT_OPTIMAL_H */
