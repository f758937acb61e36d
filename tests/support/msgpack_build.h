/*
 * tests/support/msgpack_build.h - msgpack payloads of KV-event batches for the
 * tests that feed kvb_index_decode (test_wire.c) and the ZeroMQ subscriber
 * (test_subscriber.c): a packer over a growing buffer, one-letter primitives,
 * and vLLM's events (BlockStored, BlockRemoved, AllBlocksCleared) and batches
 * in both layouts: map (vLLM's current one) or tagged array (the legacy one),
 * fields in vLLM's order (vllm/distributed/kv_events.py).
 *
 * Header only (static inline); needs msgpack-c, so include it under
 * KVB_HAVE_ZMQ. msgpack-c packs every integer in its shortest form, so U, I
 * and msgpack_pack_uint32 of the same value give the same bytes.
 */
#ifndef KVB_TESTS_SUPPORT_MSGPACK_BUILD_H
#define KVB_TESTS_SUPPORT_MSGPACK_BUILD_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct pk {
    msgpack_sbuffer sb;
    msgpack_packer p;
} pk;

static inline void pk_init(pk *k)
{
    msgpack_sbuffer_init(&k->sb);
    msgpack_packer_init(&k->p, &k->sb, msgpack_sbuffer_write);
}

static inline void pk_fini(pk *k)
{
    msgpack_sbuffer_destroy(&k->sb);
}

/* ---- primitives ------------------------------------------------------------ */

static inline void S(pk *k, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(&k->p, n);
    msgpack_pack_str_body(&k->p, s, n);
}
static inline void U(pk *k, uint64_t v)
{
    msgpack_pack_uint64(&k->p, v);
}
static inline void I(pk *k, int64_t v)
{
    msgpack_pack_int64(&k->p, v);
}
static inline void NIL(pk *k)
{
    msgpack_pack_nil(&k->p);
}
static inline void A(pk *k, size_t n)
{
    msgpack_pack_array(&k->p, n);
}
static inline void M(pk *k, size_t n)
{
    msgpack_pack_map(&k->p, n);
}
static inline void D(pk *k, double v)
{
    msgpack_pack_double(&k->p, v);
}
static inline void BIN(pk *k, const void *p, size_t n)
{
    msgpack_pack_bin(&k->p, n);
    msgpack_pack_bin_body(&k->p, p, n);
}
static inline void SB(pk *k, const void *p, size_t n) /* a str with raw bytes */
{
    msgpack_pack_str(&k->p, n);
    msgpack_pack_str_body(&k->p, p, n);
}
static inline void UARR(pk *k, const uint64_t *v, size_t n)
{
    A(k, n);
    for (size_t i = 0; i < n; i++)
        U(k, v[i]);
}
static inline void TOK(pk *k, uint32_t first, size_t n) /* first, first+1, ... */
{
    A(k, n);
    for (size_t i = 0; i < n; i++)
        U(k, first + i);
}
/* A string, or nil for NULL. */
static inline void S_OR_NIL(pk *k, const char *s)
{
    if (s)
        S(k, s);
    else
        NIL(k);
}

/* ---- vLLM events -------------------------------------------------------------- */

/* BlockStored: type, block_hashes h[0..n), parent_block_hash (nil without
 * one), token_ids (tok[0..ntok), or tok0, tok0 + 1, ... when tok is NULL),
 * block_size bs, lora_id nil, medium (nil for NULL) and, in the map layout,
 * lora_name nil: 8 pairs or 7 elements, then nextra more that the caller
 * packs. */
static inline void pk_stored(pk *k, bool map, const uint64_t *h, size_t n, bool has_parent,
                             uint64_t parent, const uint32_t *tok, uint32_t tok0, size_t ntok,
                             uint32_t bs, const char *medium, size_t nextra)
{
    if (map) {
        M(k, 8 + nextra);
        S(k, "type");
    } else {
        A(k, 7 + nextra);
    }
    S(k, "BlockStored");
    if (map)
        S(k, "block_hashes");
    UARR(k, h, n);
    if (map)
        S(k, "parent_block_hash");
    if (has_parent)
        U(k, parent);
    else
        NIL(k);
    if (map)
        S(k, "token_ids");
    if (tok) {
        A(k, ntok);
        for (size_t i = 0; i < ntok; i++)
            U(k, tok[i]);
    } else {
        TOK(k, tok0, ntok);
    }
    if (map)
        S(k, "block_size");
    U(k, bs);
    if (map)
        S(k, "lora_id");
    NIL(k);
    if (map)
        S(k, "medium");
    S_OR_NIL(k, medium);
    if (map) {
        S(k, "lora_name");
        NIL(k);
    }
}

/* BlockRemoved: type, block_hashes h[0..n), medium (nil for NULL). */
static inline void pk_removed(pk *k, bool map, const uint64_t *h, size_t n, const char *medium)
{
    if (map) {
        M(k, 3);
        S(k, "type");
    } else {
        A(k, 3);
    }
    S(k, "BlockRemoved");
    if (map)
        S(k, "block_hashes");
    UARR(k, h, n);
    if (map)
        S(k, "medium");
    S_OR_NIL(k, medium);
}

/* AllBlocksCleared. */
static inline void pk_cleared(pk *k, bool map)
{
    if (map) {
        M(k, 1);
        S(k, "type");
    } else {
        A(k, 1);
    }
    S(k, "AllBlocksCleared");
}

/* ---- batches ------------------------------------------------------------------ */

/* A batch: [ts, [n events], rank] or {"ts": ts, "events": [n events],
 * "data_parallel_rank": rank}. pk_batch_begin packs up to the events array's
 * header; the caller packs the n events, then pk_batch_end the rank (nil when
 * negative). */
static inline void pk_batch_begin(pk *k, bool map, double ts, size_t n_events)
{
    if (map) {
        M(k, 3);
        S(k, "ts");
    } else {
        A(k, 3);
    }
    D(k, ts);
    if (map)
        S(k, "events");
    A(k, n_events);
}

static inline void pk_batch_end(pk *k, bool map, int64_t rank)
{
    if (map)
        S(k, "data_parallel_rank");
    if (rank < 0)
        NIL(k);
    else
        I(k, rank);
}

#endif /* KVB_TESTS_SUPPORT_MSGPACK_BUILD_H */
