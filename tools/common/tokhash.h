/*
 * tools/common/tokhash.h - token-level content hashes of a block trace, for the
 * fleet tools (kvb-fleet, kvb-index-bench).
 *
 * A trace block id x (tools/common/trace.h) is turned into block_size tokens
 * that all equal (uint32_t)x, and every request's token sequence is hashed with
 * kvb_hash_tokens() at that block size and chain seed. The result is, per block
 * reference, the positional lineage hash a kvblock pool registers; its
 * kvb_hash_current() is the 64-bit router hash a KV-aware router computes from
 * the same tokens (with seed KVB_HASH_DYNAMO_SEED: the value Dynamo's router
 * computes, and kvb_index_hashes() of an index with the default seed). Dynamo's
 * mooncake_bench builds its tokens the same way (each hash id repeated
 * block_size times).
 *
 * Since an id names its whole prefix, equal ids at equal positions after equal
 * prefixes give equal hashes, exactly as the prefix replay of
 * ../shared/data/README.md expects.
 */
#ifndef KVBT_TOKHASH_H
#define KVBT_TOKHASH_H

#include <stdint.h>

#include "trace.h"

/* Fill out[0 .. t->n_refs) with the lineage hashes of every block reference
 * (kvb_hash_tokens of each request's tokens, block_size tokens per id, chain seed
 * `seed`). Returns 0 or the negative errno of kvb_hash_tokens. */
int kvbt_trace_token_hashes(const kvbt_trace *t, uint32_t block_size, uint64_t seed, kvb_hash *out);

/* The tokens of request r (block_size per id) into buf, which must hold
 * kvbt_trace_len(t, r) * block_size values. Returns the number of tokens. */
uint64_t kvbt_trace_request_tokens(const kvbt_trace *t, uint64_t r, uint32_t block_size,
                                   uint32_t *buf);

#endif /* KVBT_TOKHASH_H */
