/*
 * tools/kvb-fleet/fleet.h - what the parts of kvb-fleet share. The main
 * (tools/kvb-fleet.c) loads the workload, runs each routing policy and the
 * one-pool reference, and prints; the parts are
 *
 *   options.c   the manual (--help) and option parsing (fleet_opts)
 *   sim.c       one simulation: W pools feeding one kvb_index (in process or
 *               over ZeroMQ), the router, and the requests' lifecycle on the
 *               pools (tools/common/request.c, shared with kvb-replay)
 *
 * mk/fleet.mk leaves tools/kvb-fleet.c out of the build when the fleet index is
 * not in the tree; these parts are then not built either (only a tool's own
 * build compiles its parts).
 */
#ifndef KVB_FLEET_H
#define KVB_FLEET_H

#include "kvblock.h"
#include "kvblock/index.h"

#include "common/args.h"
#include "common/progress.h"
#include "common/synth.h"
#include "common/trace.h"
#include "common/util.h"

static const char *const prog = "kvb-fleet";

/* ---- options (options.c) ------------------------------------------------------ */

typedef enum {
    POL_ROUND_ROBIN = 0,
    POL_LEAST_LOADED,
    POL_KV_AWARE,
    POL_COUNT,
    POL_SINGLE
} fleet_pol;

extern const char *const fleet_pol_names[POL_COUNT];

typedef enum { TR_INPROC = 0, TR_ZMQ } fleet_transport;

#define FLEET_MAX_PLOT_W 16

typedef struct fleet_opts {
    const char *trace;
    bool pol[POL_COUNT];
    bool reference;
    uint32_t workers, capacity, block_size, block_tokens;
    const char *evict_name;
    kvb_evict_policy evict;
    double prefill_tps, tpot_ms, time_scale, rate;
    uint32_t out_mean;
    uint32_t balance_abs;
    double balance_rel, cache_threshold;
    fleet_transport transport;
    uint32_t sync_every;
    const char *plot;
    uint32_t plot_w[FLEET_MAX_PLOT_W];
    unsigned n_plot_w;
    bool quick, quiet, verify;
    bool guard_target; /* --guard target: the imbalance of the cache-aware pick */
    kvbt_synth_params synth;
    bool synth_set;
} fleet_opts;

/* Parse argv into o (and the --quick presets). Usage errors exit 2, --help 0. */
void fleet_parse_args(int argc, char **argv, fleet_opts *o);

/* ---- the workload (kvb-fleet.c) ---------------------------------------------------- */

typedef struct fleet_load {
    kvbt_trace t;
    bool synthetic;
    kvb_hash *lin;        /* lineage hash of every block reference (pool keys) */
    uint64_t *rh;         /* router hash of every block reference (index keys) */
    uint64_t *arrival_us; /* per request, non-decreasing */
    uint32_t *in_tok, *out_tok;
} fleet_load;

/* ---- one simulation (sim.c) --------------------------------------------------------- */

typedef struct fleet_result {
    uint64_t hits, refs, mispred, early, guard, affinity, lowmatch, entry_mismatch;
    double load_ratio, load_avg, work_ratio, ev_per_s;
    uint64_t events, p50, p99;
} fleet_result;

/* One (policy, W, C) run on fresh pools and a fresh index (POL_SINGLE: one pool,
 * no routing). */
void fleet_one(const fleet_opts *o, const fleet_load *L, fleet_pol pol, uint32_t W, uint32_t C,
               kvbt_progress *bar, fleet_result *res);

#endif /* KVB_FLEET_H */
