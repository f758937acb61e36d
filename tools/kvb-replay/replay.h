/*
 * tools/kvb-replay/replay.h - what the parts of kvb-replay share. The main
 * (tools/kvb-replay.c) builds the policy catalog, selects, and runs every
 * (policy, capacity) configuration; the parts are
 *
 *   options.c   --help and option parsing (replay_opts)
 *   run.c       one replay of the trace through a fresh pool (replay_run_pool),
 *               with the pool configuration the options ask for
 *   output.c    the header, the result lines (text or CSV), the policy x
 *               capacity matrices and the --plot SVGs
 *
 * One thread. The run settings that every pool of the run shares (events,
 * hints, retention, TTL) are the globals below, set once from the options.
 */
#ifndef KVB_REPLAY_H
#define KVB_REPLAY_H

#include "kvblock.h"
#include "kvblock/publisher.h"

#include "common/args.h"
#include "common/progress.h"
#include "common/synth.h"
#include "common/trace.h"
#include "common/util.h"

static const char *const prog = "kvb-replay";

/* ---- policies ---------------------------------------------------------------- */

typedef enum {
    REPLAY_POOL,    /* a kvblock pool with a library backend */
    REPLAY_OPTIMAL, /* tools/common/optimal.c: kvbt_optimal_run */
    REPLAY_FLAT,    /* tools/common/optimal.c: kvbt_belady_flat_run */
} replay_kind;

typedef struct replay_policy {
    char name[48];
    replay_kind kind;
    kvb_evict_policy evict; /* REPLAY_POOL: the backend's index in kvb_inactive_policy */
} replay_policy;

#define REPLAY_MAX_POLICIES 64

/* ---- options (options.c) ------------------------------------------------------- */

#define REPLAY_MAX_CAPACITIES 64

typedef struct replay_opts {
    const char *trace;
    kvbt_format format;
    const char *policy; /* "all" or a comma-separated list of names */
    uint32_t capacities[REPLAY_MAX_CAPACITIES];
    unsigned n_capacities;
    bool capacities_set; /* --capacity or --capacities given */
    uint32_t window;
    uint32_t lookahead;
    const char *retention; /* --retention as given */
    uint32_t ttl;
    const char *demote; /* --demote as given */
    const char *plot;
    const char *publish, *publish_replay, *topic;
    bool csv, quiet;
    uint64_t repeat;
    kvbt_synth_params synth;
    bool synth_set; /* --seed or --requests given */
} replay_opts;

/* Parse argv into o; also sets replay_ret and replay_ttl_ms. Usage errors exit 2,
 * --help 0. */
void replay_parse_args(int argc, char **argv, replay_opts *o);

/* ---- settings shared by every pool of the run (run.c) ------------------------- */

/* --publish: the replay's KV events go out on the vLLM wire (ZeroMQ PUB). */
extern kvb_publisher *replay_pub;
extern kvb_event_config replay_events;
/* --lookahead: the pools' hint capacity (0: no hints) */
extern uint32_t replay_hint_capacity;
/* --retention K:P[:MS]: the first K blocks of a request at priority P, for MS ms */
typedef struct replay_retention_opts {
    bool on;
    uint32_t blocks, priority, duration_ms;
} replay_retention_opts;
extern replay_retention_opts replay_ret;
/* --ttl MS, on the trace's clock (0: none) */
extern uint32_t replay_ttl_ms;
/* --demote: which newly registered blocks go to priority 0 after their request
 * (the next use of every reference, from the oracle, says which) */
enum { REPLAY_DEMOTE_NONE, REPLAY_DEMOTE_UNHINTED, REPLAY_DEMOTE_ONE_OFF };
extern int replay_demote;
extern const uint32_t *replay_next_req; /* per reference: kvbt_oracle.next_req */
/* --api calls: serve every request with the four calls, never kvb_pool_acquire */
extern bool replay_api_calls;

/* 0 when a pool of this policy can be created with the run's settings, else
 * kvb_pool_create's error. */
int replay_probe(const replay_policy *pol);

/* ---- one replay through a pool (run.c) ------------------------------------------ */

typedef struct replay_scratch {
    kvb_block *blocks; /* window 0: one request's handles */
    kvb_mutable *mut;
    kvb_complete *cmp;
    size_t maxn;        /* longest request */
    kvb_block *slots;   /* window W: W + 1 slots of maxn handles, a ring of requests */
    uint32_t *slot_n;   /* handles in each slot */
    uint32_t *uncached; /* per request: tokens (or blocks) not found cached */
    uint32_t *sorted;   /* scratch for the percentiles */
} replay_scratch;

/* One finished (policy, capacity) configuration. */
typedef struct replay_cell {
    bool done;
    uint64_t hits;
    uint64_t evictions;
    uint64_t early_releases; /* window requests released early to make room */
    uint64_t ns;             /* the replay loop only */
    bool has_uncached;       /* pool runs: per-request uncached tokens (or blocks) */
    uint32_t uncached[3];    /* their p50, p90, p99 */
} replay_cell;

/* Where request r comes from, for messages: "request 17 (line 17)". */
const char *replay_where(const kvbt_trace *t, uint64_t r, char *buf, size_t cap);

/* The hint capacity --lookahead W needs (exits when it is over 2^30). */
uint32_t replay_lookahead_capacity(const kvbt_trace *t, uint32_t lookahead);

/* One replay of the whole trace on a fresh pool. Returns 0, or the negative
 * errno of kvb_pool_create (the caller decides about -ENOTSUP); any other
 * library error ends the program with a message. */
int replay_run_pool(const kvbt_trace *t, const kvb_hash *hashes, const replay_policy *pol,
                    uint32_t capacity, uint32_t window, uint32_t lookahead, replay_scratch *s,
                    kvbt_progress *progress, replay_cell *res);

/* Untimed, unreported replay of the first requests (cold code and allocator). */
void replay_warmup(const kvbt_trace *t, const kvb_hash *hashes, const replay_policy *pol,
                   uint32_t capacity, uint32_t window, uint32_t lookahead, replay_scratch *s);

/* ---- output (output.c) ------------------------------------------------------------ */

void replay_header(const kvbt_trace *t, const replay_opts *o, bool synthetic);
void replay_columns(const replay_opts *o);
void replay_emit(const replay_opts *o, const kvbt_trace *t, const replay_policy *pol,
                 uint32_t capacity, const replay_cell *c);
void replay_matrix(const replay_opts *o, const kvbt_trace *t, const replay_policy *sel,
                   unsigned n_sel, const replay_cell *cells);
void replay_plot(const replay_opts *o, const kvbt_trace *t, bool synthetic,
                 const replay_policy *sel, unsigned n_sel, const replay_cell *cells);

#endif /* KVB_REPLAY_H */
