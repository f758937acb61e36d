/*
 * tools/common/trace.h - the in-memory representation of a block trace, shared
 * by the kvblock tools (kvb-replay, and later kvb-bench, Belady references,
 * plots), and the loaders that fill it.
 *
 * A trace is a sequence of requests; a request is a sequence of block ids
 * (hash_ids in Mooncake's terms): id j of a request stands for the whole
 * prefix up to and including block j, so two requests that share a prefix
 * start with the same ids. The representation is flat, to keep replay loops
 * cache-friendly and the trace cheap to walk many times:
 *
 *     ids[off[r] .. off[r+1])   the block ids of request r, in order
 *     off[0] = 0, off[n_requests] = n_refs
 *
 * Optional per-request columns (timestamp, lengths, source line) are NULL when
 * the source has none. Everything is owned by the trace and freed by
 * kvbt_trace_free(). A trace is immutable once kvbt_trace_finish() has run,
 * and then safe to read from several threads.
 *
 * Extending: a new input format adds a value to kvbt_format, a name in
 * kvbt_format_parse() and a loader that fills the trace through the builder
 * calls below (kvbt_trace_begin / kvbt_trace_push / kvbt_trace_end) and then
 * calls kvbt_trace_finish(). Derived per-reference arrays (next use for an
 * optimal-policy reference, windows) belong to their tool and are computed
 * from off[] and ids[].
 */
#ifndef KVBT_TRACE_H
#define KVBT_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvblock.h"

/* Input formats. */
typedef enum {
    KVBT_FORMAT_MOONCAKE = 0, /* JSON lines with "hash_ids" (+ timestamp, lengths) */
    KVBT_FORMAT_IDS,          /* one block id per line, each a one-block request; lines
                                 starting with '*' and blank lines are skipped */
} kvbt_format;

typedef struct kvbt_trace {
    /* ---- the requests ---- */
    uint64_t n_requests; /* number of requests */
    uint64_t n_refs;     /* total block references, = off[n_requests] */
    uint64_t *off;       /* n_requests + 1 offsets into ids */
    uint64_t *ids;       /* n_refs block ids */

    /* ---- optional per-request columns (NULL when absent) ---- */
    uint64_t *timestamp_ms;  /* Mooncake "timestamp", ms since trace start */
    uint32_t *input_tokens;  /* Mooncake "input_length" */
    uint32_t *output_tokens; /* Mooncake "output_length" */
    uint64_t *line;          /* 1-based source line of each request */

    /* ---- description ---- */
    char *name;   /* short display name (file base name, "synthetic") */
    char *source; /* full path, or a description of the generator */

    /* ---- statistics, filled by kvbt_trace_finish() ---- */
    uint64_t max_request_blocks; /* longest request, in blocks */
    uint64_t unique_blocks;      /* distinct (id, parent id, position) = distinct lineage hashes */
    uint64_t infinite_hits;      /* prefix hits with an infinite cache (see kvbt_trace_finish) */

    /* ---- builder state (private) ---- */
    uint64_t cap_requests, cap_refs;
    bool has_meta;
    bool open; /* a request was begun and not ended */
} kvbt_trace;

/* An empty trace (all zero). */
void kvbt_trace_init(kvbt_trace *t, const char *name, const char *source);
/* Free everything the trace owns; t is left empty (init state). */
void kvbt_trace_free(kvbt_trace *t);

/* Builder: begin a request, push its ids, end it. Exits on out of memory. */
void kvbt_trace_begin(kvbt_trace *t);
void kvbt_trace_push(kvbt_trace *t, uint64_t id);
void kvbt_trace_end(kvbt_trace *t);
/* Attach the optional columns to the last ended request (allocates them on first use;
 * earlier requests get 0). */
void kvbt_trace_set_meta(kvbt_trace *t, uint64_t timestamp_ms, uint32_t input_tokens,
                         uint32_t output_tokens, uint64_t line);

/* Compute the statistics: max request length, unique blocks, and the prefix hits
 * of an infinite cache (walk each request from its start and count blocks seen
 * by an earlier request until the first unseen one). Call once, after the last
 * request. Exits on out of memory. */
void kvbt_trace_finish(kvbt_trace *t);

/* Format name -> format; false when unknown. */
bool kvbt_format_parse(const char *name, kvbt_format *out);
/* Comma-separated list of supported format names, for help texts. */
const char *kvbt_format_names(void);

/* Load a trace file. --format ids: every line holds one unsigned decimal id
 * (surrounding blanks and a CR are allowed), read as a request of one block
 * whose lineage hash is kvb_hash_make(id, 0, false, 0); lines starting with '*'
 * (checkpoint markers in the LIRS traces) and blank lines are skipped; anything
 * else is an error with its line number. On error returns -1 and writes a message (with the line
 * number where one applies) into err; t is then empty. */
int kvbt_trace_load(const char *path, kvbt_format fmt, kvbt_trace *t, char *err, size_t errcap);

/* Parse one Mooncake JSON line (no newline needed, NUL-terminated) and append it as a
 * request. Returns 0, or -1 with a message (column included) in err. Exposed for tests
 * and for tools that stream. */
int kvbt_mooncake_parse_line(kvbt_trace *t, const char *line, uint64_t lineno, char *err,
                             size_t errcap);

/* The lineage hash of reference i of request r, as the prefix replay defines it:
 * kvb_hash_make(ids[i], ids[i-1], j > 0, j) with j the index within the request.
 * Fills out[0 .. n_refs) for the whole trace. Returns 0 or a negative errno
 * (-EOVERFLOW for a request longer than KVB_HASH_MAX_POSITION + 1 blocks). */
int kvbt_trace_lineage_hashes(const kvbt_trace *t, kvb_hash *out);

/* 64 well-mixed bits of a lineage hash, for the tools' hash tables: the same
 * fold and multiply as the library's maps (DESIGN.md section 4). Trace ids are
 * small integers, and an unmixed fold would cluster; use the top bits. */
static inline uint64_t kvbt_hash_mix(kvb_hash h)
{
    uint64_t x = h.hi ^ ((h.lo << 32) | (h.lo >> 32)) ^ (h.lo * 0xff51afd7ed558ccdull);
    return x * 0x9E3779B97F4A7C15ull;
}

/* Blocks of request r. */
static inline uint64_t kvbt_trace_len(const kvbt_trace *t, uint64_t r)
{
    return t->off[r + 1] - t->off[r];
}

#endif /* KVBT_TRACE_H */
