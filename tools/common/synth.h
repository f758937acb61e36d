/*
 * tools/common/synth.h - a seeded, deterministic synthetic prefix-sharing
 * workload in the shape of the Mooncake traces (the model is documented at the
 * top of synth.c). Used by kvb-replay when no --trace is given.
 */
#ifndef KVBT_SYNTH_H
#define KVBT_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "trace.h"

typedef struct kvbt_synth_params {
    uint64_t seed;              /* PRNG seed (any value; default 1) */
    uint64_t requests;          /* requests to generate (default 12000) */
    uint32_t system_prompts;    /* distinct shared system prompts */
    uint32_t system_min_blocks; /* system prompt length range, blocks */
    uint32_t system_max_blocks;
    double zipf_s;            /* Zipf exponent: system prompts and turns per session */
    uint32_t turns_max;       /* turns per session: Zipf over 1..turns_max */
    uint32_t think_min_log2;  /* gap between a session's turns, in requests: */
    uint32_t think_max_log2;  /*   log-uniform in [2^min, 2^(max+1)) */
    uint32_t message_mean;    /* mean blocks of a short user message, >= 1 */
    uint32_t doc_percent;     /* percent of turns that paste a long document */
    uint32_t doc_mean;        /* mean blocks of such a document, >= 1 */
    uint32_t answer_blocks;   /* blocks the previous answer adds to the next turn */
    uint32_t partial_percent; /* percent of turns whose previous prompt ended in a
                                 partial block (re-sent under a new id) */
    uint32_t max_blocks;      /* longest prompt, blocks */
} kvbt_synth_params;

/* Fill the defaults (the documented reference workload). */
void kvbt_synth_defaults(kvbt_synth_params *p);

/* Check the parameters; 0, or -1 with a message in err. */
int kvbt_synth_validate(const kvbt_synth_params *p, char *err, size_t errcap);

/* Generate the workload into t (initialized here; free it with kvbt_trace_free).
 * The same parameters give the same trace on every machine. Returns 0, or -1 with
 * a message in err (invalid parameters). */
int kvbt_synth_generate(const kvbt_synth_params *p, kvbt_trace *t, char *err, size_t errcap);

/* One-line description of the parameters (for summary headers); returns like snprintf. */
int kvbt_synth_describe(const kvbt_synth_params *p, char *buf, size_t cap);

#endif /* KVBT_SYNTH_H */
