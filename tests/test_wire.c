/*
 * test_wire.c - kvb_index_decode() (lib/wire.c): vLLM batches in both event
 * layouts (tagged maps, legacy tagged arrays) inside array and map batches,
 * SGLang (signed hashes, bigram token pairs, attn_dp_rank, cache_salt,
 * CPU_PINNED), kvblock, digests, LoRA by name and by id, the group filter,
 * media, multimodal truncation, unknown types and keys, every malformed shape
 * (a wrong type in each field, truncated payloads, nested garbage, huge
 * declared lengths, non-array events, an empty batch), and end to end: a
 * kvblock pool publishing through kvb_publisher in each layout, the payloads
 * captured by a ZeroMQ client and decoded here.
 *
 * Payloads are built with msgpack-c's packer. Without ZeroMQ/msgpack-c at
 * build time only the -ENOTSUP contract is tested.
 */
#include "testutil.h"
#include "kvblock/index.h"

#ifndef KVB_HAVE_ZMQ

Test(wire, unavailable_without_msgpack)
{
    kvb_index_batch b;
    memset(&b, 0xff, sizeof b);
    cr_expect_eq(kvb_index_decode("\x90", 1, KVB_WIRE_VLLM, &b), -ENOTSUP);
    cr_expect_eq(b.n_events, 0);
    cr_expect_null(b.priv_);
    kvb_index_batch_fini(&b);
    cr_expect_eq(kvb_index_decode("\x90", 1, KVB_WIRE_VLLM, NULL), -EINVAL);
}

#else

#include "kvblock/publisher.h"
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <unistd.h>
#include <zmq.h>

#include "support/msgpack_build.h"

/* ---- building payloads -------------------------------------------------------- */

/* [1.5, <n events follow>, rank] batch header; events, then end_batch_rank */
static void batch_begin(pk *k, size_t n_events)
{
    pk_init(k);
    pk_batch_begin(k, false, 1.5, n_events);
}
static void batch_end(pk *k, int64_t rank)
{
    pk_batch_end(k, false, rank);
}

static int dec(const pk *k, kvb_wire_kind kind, kvb_index_batch *b)
{
    return kvb_index_decode(k->sb.data, k->sb.size, kind, b);
}

/* The first part of a map BlockStored with n0 blocks, 2 tokens per block,
 * block size 2, GPU, no parent: 7 pairs packed, the caller adds nextra. */
static void stored_min_map(pk *k, size_t n0, size_t nextra)
{
    uint64_t h[8] = {11, 12, 13, 14, 15, 16, 17, 18};
    M(k, 7 + nextra);
    S(k, "type");
    S(k, "BlockStored");
    S(k, "block_hashes");
    UARR(k, h, n0);
    S(k, "parent_block_hash");
    NIL(k);
    S(k, "token_ids");
    TOK(k, 100, 2 * n0);
    S(k, "block_size");
    U(k, 2);
    S(k, "lora_id");
    NIL(k);
    S(k, "medium");
    S(k, "GPU");
}

static void expect_u64s(const uint64_t *got, const uint64_t *want, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        cr_expect_eq(got[i], want[i], "[%u]: %llx != %llx", i, (unsigned long long)got[i],
                     (unsigned long long)want[i]);
}

static void expect_same_batch(const kvb_index_batch *a, const kvb_index_batch *b)
{
    cr_expect_eq(a->ts, b->ts);
    cr_expect_eq(a->dp_rank, b->dp_rank);
    cr_assert_eq(a->n_events, b->n_events);
    for (int r = 0; r < KVB_DROP_COUNT; r++)
        cr_expect_eq(a->dropped[r], b->dropped[r], "dropped[%s]", kvb_drop_reason_name(r));
    for (uint32_t i = 0; i < a->n_events; i++) {
        const kvb_index_event *x = &a->events[i], *y = &b->events[i];
        cr_expect_eq(x->type, y->type, "event %u", i);
        cr_expect_eq(x->tier, y->tier);
        cr_expect_eq(x->has_parent, y->has_parent);
        cr_expect_eq(x->parent, y->parent);
        cr_expect_eq(x->block_size, y->block_size);
        cr_expect_eq(x->salt_key, y->salt_key);
        cr_assert_eq(x->n_hashes, y->n_hashes);
        cr_assert_eq(x->n_tokens, y->n_tokens);
        if (x->n_hashes)
            cr_expect_eq(memcmp(x->hashes, y->hashes, x->n_hashes * 8), 0);
        if (x->n_tokens)
            cr_expect_eq(memcmp(x->tokens, y->tokens, x->n_tokens * 4), 0);
    }
}

static uint32_t total_dropped(const kvb_index_batch *b)
{
    uint32_t n = 0;
    for (int r = 0; r < KVB_DROP_COUNT; r++)
        n += b->dropped[r];
    return n;
}

/* ---- both layouts, both batch shapes ---------------------------------------------- */

static void pack_reference(pk *k, bool map_events)
{
    uint64_t h1[3] = {1, 2, UINT64_MAX}, h2[2] = {7, 8};
    batch_begin(k, 4);
    if (map_events) {
        pk_stored(k, true, h1, 3, false, 0, NULL, 10, 12, 4, "GPU", 0);
        pk_stored(k, true, h2, 2, true, UINT64_MAX, NULL, 50, 8, 4, "CPU", 0);
        pk_removed(k, true, h1, 2, NULL);
        pk_cleared(k, true);
    } else {
        pk_stored(k, false, h1, 3, false, 0, NULL, 10, 12, 4, "GPU", 0);
        pk_stored(k, false, h2, 2, true, UINT64_MAX, NULL, 50, 8, 4, "CPU", 0);
        pk_removed(k, false, h1, 2, NULL);
        pk_cleared(k, false);
    }
    batch_end(k, 3);
}

static void check_reference(const kvb_index_batch *b)
{
    cr_expect_eq(b->ts, 1.5);
    cr_expect_eq(b->dp_rank, 3);
    cr_expect_eq(total_dropped(b), 0);
    cr_assert_eq(b->n_events, 4);
    const kvb_index_event *e = b->events;
    cr_expect_eq(e[0].type, KVB_INDEX_EV_STORED);
    cr_expect_eq(e[0].tier, KVB_TIER_DEVICE);
    cr_assert_eq(e[0].n_hashes, 3);
    expect_u64s(e[0].hashes, (uint64_t[]){1, 2, UINT64_MAX}, 3);
    cr_expect_not(e[0].has_parent);
    cr_assert_eq(e[0].n_tokens, 12);
    for (uint32_t i = 0; i < 12; i++)
        cr_expect_eq(e[0].tokens[i], 10 + i);
    cr_expect_eq(e[0].block_size, 4);
    cr_expect_eq(e[0].salt_key, 0);
    cr_expect_eq(e[1].tier, KVB_TIER_HOST);
    cr_expect(e[1].has_parent);
    cr_expect_eq(e[1].parent, UINT64_MAX);
    cr_expect_eq(e[1].n_tokens, 8);
    cr_expect_eq(e[2].type, KVB_INDEX_EV_REMOVED);
    cr_expect_eq(e[2].tier, KVB_TIER_DEVICE, "nil medium: device");
    cr_assert_eq(e[2].n_hashes, 2);
    expect_u64s(e[2].hashes, (uint64_t[]){1, 2}, 2);
    cr_expect_null(e[2].tokens);
    cr_expect_eq(e[3].type, KVB_INDEX_EV_CLEARED);
}

Test(wire, vllm_map_events_in_an_array_batch)
{
    pk k;
    pack_reference(&k, true);
    kvb_index_batch b;
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    check_reference(&b);
    kvb_index_batch_fini(&b);
    pk_fini(&k);
}

Test(wire, vllm_legacy_array_events_decode_the_same)
{
    pk k1, k2;
    pack_reference(&k1, true);
    pack_reference(&k2, false);
    kvb_index_batch a, b;
    cr_assert_eq(dec(&k1, KVB_WIRE_VLLM, &a), 0);
    cr_assert_eq(dec(&k2, KVB_WIRE_VLLM, &b), 0);
    check_reference(&b);
    expect_same_batch(&a, &b);
    kvb_index_batch_fini(&a);
    kvb_index_batch_fini(&b);
    pk_fini(&k1);
    pk_fini(&k2);
}

Test(wire, kvblock_decodes_exactly_as_vllm)
{
    for (int m = 0; m < 2; m++) {
        pk k;
        pack_reference(&k, m);
        kvb_index_batch a, b;
        cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &a), 0);
        cr_assert_eq(dec(&k, KVB_WIRE_KVBLOCK, &b), 0);
        expect_same_batch(&a, &b);
        kvb_index_batch_fini(&a);
        kvb_index_batch_fini(&b);
        pk_fini(&k);
    }
}

Test(wire, map_batch_equals_array_batch)
{
    uint64_t h[2] = {5, 6};
    pk k1, k2;
    batch_begin(&k1, 1);
    pk_stored(&k1, true, h, 2, false, 0, NULL, 0, 4, 2, "GPU", 0);
    batch_end(&k1, 2);
    pk_init(&k2);
    M(&k2, 4);
    S(&k2, "events"); /* any key order */
    A(&k2, 1);
    pk_stored(&k2, true, h, 2, false, 0, NULL, 0, 4, 2, "GPU", 0);
    S(&k2, "future_field");
    A(&k2, 0);
    S(&k2, "data_parallel_rank");
    U(&k2, 2);
    S(&k2, "ts");
    D(&k2, 1.5);
    kvb_index_batch a, b;
    cr_assert_eq(dec(&k1, KVB_WIRE_VLLM, &a), 0);
    cr_assert_eq(dec(&k2, KVB_WIRE_VLLM, &b), 0);
    cr_expect_eq(b.dp_rank, 2);
    expect_same_batch(&a, &b);
    kvb_index_batch_fini(&a);
    kvb_index_batch_fini(&b);
    pk_fini(&k1);
    pk_fini(&k2);
}

Test(wire, batch_rank_and_timestamp_forms)
{
    kvb_index_batch b;
    pk k;
    /* [ts, events]: no rank (old SGLang), ts an int */
    pk_init(&k);
    A(&k, 2);
    U(&k, 1700000000);
    A(&k, 0);
    cr_assert_eq(dec(&k, KVB_WIRE_SGLANG, &b), 0);
    cr_expect_eq(b.dp_rank, KVB_INDEX_NO_RANK);
    cr_expect_eq(b.ts, 1700000000.0);
    cr_expect_eq(b.n_events, 0, "an empty batch is a batch");
    cr_expect_null(b.events);
    kvb_index_batch_fini(&b);
    pk_fini(&k);
    /* [ts, events, nil, unknown trailing fields...] */
    pk_init(&k);
    A(&k, 5);
    I(&k, -3);
    A(&k, 0);
    NIL(&k);
    S(&k, "later");
    M(&k, 0);
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    cr_expect_eq(b.dp_rank, KVB_INDEX_NO_RANK);
    cr_expect_eq(b.ts, -3.0);
    kvb_index_batch_fini(&b);
    pk_fini(&k);
    /* float32 timestamp */
    pk_init(&k);
    A(&k, 3);
    msgpack_pack_float(&k.p, 2.5f);
    A(&k, 0);
    U(&k, 0);
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    cr_expect_eq(b.ts, 2.5);
    cr_expect_eq(b.dp_rank, 0);
    kvb_index_batch_fini(&b);
    pk_fini(&k);
    /* map batch: attn_dp_rank (SGLang), no rank at all, both equal */
    const char *keys[3] = {"attn_dp_rank", NULL, "both"};
    for (int v = 0; v < 3; v++) {
        pk_init(&k);
        M(&k, v == 0 ? 3 : v == 1 ? 2 : 4);
        S(&k, "ts");
        D(&k, 1.0);
        S(&k, "events");
        A(&k, 0);
        if (v == 0) {
            S(&k, keys[0]);
            U(&k, 9);
        } else if (v == 2) {
            S(&k, "attn_dp_rank");
            U(&k, 4);
            S(&k, "data_parallel_rank");
            U(&k, 4);
        }
        cr_assert_eq(dec(&k, KVB_WIRE_SGLANG, &b), 0, "variant %d", v);
        cr_expect_eq(b.dp_rank, v == 0 ? 9 : v == 1 ? KVB_INDEX_NO_RANK : 4);
        kvb_index_batch_fini(&b);
        pk_fini(&k);
    }
}

/* ---- SGLang ---------------------------------------------------------------------- */

Test(wire, sglang_signed_hashes_bigram_tokens_rank_and_salt)
{
    pk k;
    pk_init(&k);
    A(&k, 3);
    D(&k, 10.0);
    A(&k, 4);
    /* array BlockStored, SGLang's order: ..., lora_id, medium, metadata */
    A(&k, 8);
    S(&k, "BlockStored");
    A(&k, 2);
    I(&k, -1);
    I(&k, INT64_MIN);
    I(&k, -42);
    A(&k, 4); /* bigram pairs [t, t+1] */
    for (uint32_t t = 0; t < 4; t++) {
        A(&k, 2);
        U(&k, 500 + t);
        U(&k, 501 + t);
    }
    U(&k, 2);
    NIL(&k);
    S(&k, "CPU_PINNED");
    M(&k, 1);
    S(&k, "cache_salt");
    S(&k, "tenant-a");
    /* map BlockStored with cache_salt and session_id directly */
    M(&k, 9);
    S(&k, "type");
    S(&k, "BlockStored");
    S(&k, "block_hashes");
    A(&k, 1);
    I(&k, -7);
    S(&k, "parent_block_hash");
    I(&k, -1);
    S(&k, "token_ids");
    TOK(&k, 1, 2);
    S(&k, "block_size");
    U(&k, 2);
    S(&k, "lora_id");
    NIL(&k);
    S(&k, "medium");
    S(&k, "GPU");
    S(&k, "cache_salt");
    S(&k, "tenant-a");
    S(&k, "session_id");
    S(&k, "s1");
    /* old SGLang: no medium, no metadata */
    A(&k, 6);
    S(&k, "BlockStored");
    A(&k, 1);
    I(&k, -2);
    NIL(&k);
    TOK(&k, 9, 2);
    U(&k, 2);
    NIL(&k);
    A(&k, 2);
    S(&k, "BlockRemoved");
    A(&k, 1);
    I(&k, -42);
    U(&k, 1); /* attn_dp_rank */
    kvb_index_batch b;
    cr_assert_eq(dec(&k, KVB_WIRE_SGLANG, &b), 0);
    cr_expect_eq(b.dp_rank, 1);
    cr_expect_eq(total_dropped(&b), 0);
    cr_assert_eq(b.n_events, 4);
    uint64_t salt = kvb_index_salt_key(NULL, 0, "tenant-a", 8);
    cr_expect_neq(salt, 0);
    const kvb_index_event *e = b.events;
    expect_u64s(e[0].hashes, (uint64_t[]){UINT64_MAX, 1ull << 63}, 2);
    cr_expect(e[0].has_parent);
    cr_expect_eq(e[0].parent, (uint64_t)-42);
    cr_assert_eq(e[0].n_tokens, 4, "one token per pair");
    for (uint32_t t = 0; t < 4; t++)
        cr_expect_eq(e[0].tokens[t], 500 + t, "the pair's first token");
    cr_expect_eq(e[0].tier, KVB_TIER_HOST, "CPU_PINNED: SGLang's host tier");
    cr_expect_eq(e[0].salt_key, salt, "metadata.cache_salt");
    cr_expect_eq(e[1].salt_key, salt, "cache_salt key");
    cr_expect_eq(e[1].parent, UINT64_MAX);
    cr_expect_eq(e[2].salt_key, 0);
    cr_expect_eq(e[2].tier, KVB_TIER_DEVICE);
    cr_expect_eq(e[3].type, KVB_INDEX_EV_REMOVED);
    cr_expect_eq(e[3].hashes[0], (uint64_t)-42);
    kvb_index_batch_fini(&b);
    /* the same payload as a vLLM stream: pairs are not vLLM tokens */
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], 1, "pairs (and a map where lora_name goes)");
    cr_expect_eq(b.n_events, 3);
    cr_expect_eq(b.events[0].salt_key, salt, "a cache_salt key counts whatever the kind");
    kvb_index_batch_fini(&b);
    pk_fini(&k);
}

Test(wire, sglang_bigram_shapes_must_be_pairs_throughout)
{
    for (int v = 0; v < 4; v++) {
        pk k;
        batch_begin(&k, 1);
        A(&k, 6);
        S(&k, "BlockStored");
        A(&k, 1);
        U(&k, 1);
        NIL(&k);
        A(&k, 2);
        A(&k, 2);
        U(&k, 1);
        U(&k, 2);
        if (v == 0) { /* a pair then an int */
            U(&k, 3);
        } else if (v == 1) { /* a triple */
            A(&k, 3);
            U(&k, 1);
            U(&k, 2);
            U(&k, 3);
        } else if (v == 2) { /* second element too big */
            A(&k, 2);
            U(&k, 1);
            U(&k, 1ull << 32);
        } else { /* second element negative */
            A(&k, 2);
            U(&k, 1);
            I(&k, -1);
        }
        U(&k, 2);
        NIL(&k);
        batch_end(&k, 0);
        kvb_index_batch b;
        cr_assert_eq(dec(&k, KVB_WIRE_SGLANG, &b), 0);
        cr_expect_eq(b.n_events, 0, "variant %d", v);
        cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], 1);
        kvb_index_batch_fini(&b);
        pk_fini(&k);
    }
}

/* ---- hashes as digests ------------------------------------------------------------- */

Test(wire, digests_take_their_last_eight_bytes_big_endian)
{
    unsigned char d32[32], d16[16];
    for (int i = 0; i < 32; i++)
        d32[i] = (unsigned char)(0xa0 + i);
    for (int i = 0; i < 16; i++)
        d16[i] = (unsigned char)i;
    pk k;
    batch_begin(&k, 2);
    A(&k, 7);
    S(&k, "BlockStored");
    A(&k, 3);
    BIN(&k, d32, 32);
    BIN(&k, d16, 16);
    SB(&k, d32, 32);  /* str form (msgpack without bin types) */
    BIN(&k, d16, 16); /* parent */
    TOK(&k, 0, 6);
    U(&k, 2);
    NIL(&k);
    NIL(&k);
    pk_removed(&k, false, (uint64_t[]){0}, 0, "GPU");
    batch_end(&k, 0);
    kvb_index_batch b;
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    cr_assert_eq(b.n_events, 2);
    expect_u64s(b.events[0].hashes,
                (uint64_t[]){0xb8b9babbbcbdbebfull, 0x08090a0b0c0d0e0full, 0xb8b9babbbcbdbebfull},
                3);
    cr_expect_eq(b.events[0].parent, 0x08090a0b0c0d0e0full);
    cr_expect_eq(b.events[1].n_hashes, 0, "an empty REMOVED is kept (harmless)");
    kvb_index_batch_fini(&b);
    pk_fini(&k);
    /* other digest lengths and other types are malformed, hash or parent */
    const size_t lens[] = {0, 1, 8, 15, 17, 31, 33, 64};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (int parent = 0; parent < 2; parent++) {
            unsigned char buf[64] = {0};
            batch_begin(&k, 2);
            A(&k, 6);
            S(&k, "BlockStored");
            A(&k, 1);
            if (parent)
                U(&k, 1);
            else
                BIN(&k, buf, lens[i]);
            if (parent)
                BIN(&k, buf, lens[i]);
            else
                NIL(&k);
            TOK(&k, 0, 2);
            U(&k, 2);
            NIL(&k);
            pk_removed(&k, false, (uint64_t[]){3}, 1, NULL);
            batch_end(&k, 0);
            cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
            cr_expect_eq(b.n_events, 1, "len %zu parent %d: dropped, the rest decodes", lens[i],
                         parent);
            cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], 1);
            kvb_index_batch_fini(&b);
            pk_fini(&k);
        }
    }
}

/* ---- LoRA and salt ------------------------------------------------------------------ */

Test(wire, lora_name_or_id_and_cache_salt_select_the_salt_key)
{
    struct {
        int64_t id;
        const char *name, *salt;
        const char *want_lora, *want_salt;
    } cases[] = {
        {-1, NULL, NULL, NULL, NULL},
        {7, NULL, NULL, "7", NULL},
        {7, "sql-lora", NULL, "sql-lora", NULL},
        {-1, "sql-lora", NULL, "sql-lora", NULL},
        {-1, "", NULL, NULL, NULL},
        {-1, NULL, "s", NULL, "s"},
        {12, NULL, "s", "12", "s"},
        {-1, "a", "", "a", NULL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        pk k;
        batch_begin(&k, 1);
        /* stored_min_map packs lora_id nil: rebuild with the id by hand */
        uint64_t h = 1;
        M(&k, 9);
        S(&k, "type");
        S(&k, "BlockStored");
        S(&k, "block_hashes");
        UARR(&k, &h, 1);
        S(&k, "parent_block_hash");
        NIL(&k);
        S(&k, "token_ids");
        TOK(&k, 0, 2);
        S(&k, "block_size");
        U(&k, 2);
        S(&k, "lora_id");
        if (cases[c].id >= 0)
            I(&k, cases[c].id);
        else
            NIL(&k);
        S(&k, "medium");
        NIL(&k);
        S(&k, "lora_name");
        if (cases[c].name)
            S(&k, cases[c].name);
        else
            NIL(&k);
        S(&k, "cache_salt");
        if (cases[c].salt)
            S(&k, cases[c].salt);
        else
            NIL(&k);
        batch_end(&k, 0);
        kvb_index_batch b;
        cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
        cr_assert_eq(b.n_events, 1, "case %zu", c);
        const char *l = cases[c].want_lora, *s = cases[c].want_salt;
        uint64_t want = kvb_index_salt_key(l, l ? strlen(l) : 0, s, s ? strlen(s) : 0);
        cr_expect_eq(b.events[0].salt_key, want, "case %zu", c);
        cr_expect_eq(want == 0, !l && !s, "case %zu: 0 only for plain text", c);
        kvb_index_batch_fini(&b);
        pk_fini(&k);
    }
    /* a LoRA never shares the plain-text key; a negative id is named as such */
    cr_expect_neq(kvb_index_salt_key("7", 1, NULL, 0), 0);
    pk k;
    batch_begin(&k, 1);
    A(&k, 8);
    S(&k, "BlockStored");
    UARR(&k, (uint64_t[]){1}, 1);
    NIL(&k);
    TOK(&k, 0, 2);
    U(&k, 2);
    I(&k, -5);
    NIL(&k);
    NIL(&k);
    batch_end(&k, 0);
    kvb_index_batch b;
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    cr_assert_eq(b.n_events, 1);
    cr_expect_eq(b.events[0].salt_key, kvb_index_salt_key("-5", 2, NULL, 0));
    kvb_index_batch_fini(&b);
    pk_fini(&k);
}

Test(wire, two_different_cache_salts_are_malformed)
{
    pk k;
    batch_begin(&k, 2);
    stored_min_map(&k, 1, 2);
    S(&k, "cache_salt");
    S(&k, "a");
    S(&k, "metadata");
    M(&k, 1);
    S(&k, "cache_salt");
    S(&k, "b");
    stored_min_map(&k, 1, 2);
    S(&k, "cache_salt");
    S(&k, "a");
    S(&k, "metadata");
    M(&k, 1);
    S(&k, "cache_salt");
    S(&k, "a");
    batch_end(&k, 0);
    kvb_index_batch b;
    cr_assert_eq(dec(&k, KVB_WIRE_SGLANG, &b), 0);
    cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], 1);
    cr_assert_eq(b.n_events, 1, "the same salt twice is fine");
    cr_expect_eq(b.events[0].salt_key, kvb_index_salt_key(NULL, 0, "a", 1));
    kvb_index_batch_fini(&b);
    pk_fini(&k);
}

/* ---- groups ------------------------------------------------------------------------- */

Test(wire, only_the_main_attention_group_is_kept)
{
    /* group_idx nil / 0 / 1; kind full / sliding / mamba; window */
    struct {
        int64_t group; /* -1: absent, -2: nil */
        const char *kind;
        int64_t window; /* -1: absent */
        bool kept;
    } cases[] = {
        {-1, NULL, -1, true},
        {-2, NULL, -1, true},
        {0, NULL, -1, true},
        {1, NULL, -1, false},
        {3, "full_attention", -1, false},
        {0, "full_attention", -1, true},
        {0, "mla_attention", -1, true},
        {-1, "sink_full_attention", -1, true},
        {0, "sliding_window", -1, false},
        {0, "sliding_window_mla", -1, false},
        {-1, "chunked_local_attention", -1, false},
        {0, "mamba", -1, false},
        {0, NULL, 128, false},
        {0, "full_attention", 0, true},
        {0, "some_future_kind", -1, true},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t extra = (cases[c].group != -1) + (cases[c].kind != NULL) + (cases[c].window >= 0);
        pk k;
        batch_begin(&k, 2);
        stored_min_map(&k, 2, extra);
        if (cases[c].group != -1) {
            S(&k, "group_idx");
            if (cases[c].group == -2)
                NIL(&k);
            else
                I(&k, cases[c].group);
        }
        if (cases[c].kind) {
            S(&k, "kv_cache_spec_kind");
            S(&k, cases[c].kind);
        }
        if (cases[c].window >= 0) {
            S(&k, "kv_cache_spec_sliding_window");
            I(&k, cases[c].window);
        }
        /* BlockRemoved of the same group (it carries group_idx only) */
        M(&k, cases[c].group >= 0 ? 4 : 3);
        S(&k, "type");
        S(&k, "BlockRemoved");
        S(&k, "block_hashes");
        UARR(&k, (uint64_t[]){11}, 1);
        S(&k, "medium");
        S(&k, "GPU");
        if (cases[c].group >= 0) {
            S(&k, "group_idx");
            I(&k, cases[c].group);
        }
        batch_end(&k, 0);
        kvb_index_batch b;
        cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
        bool removed_kept = cases[c].group <= 0;
        cr_expect_eq(b.n_events, (uint32_t)cases[c].kept + removed_kept, "case %zu", c);
        cr_expect_eq(b.dropped[KVB_DROP_GROUP], (uint32_t)!cases[c].kept + !removed_kept,
                     "case %zu", c);
        cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], 0);
        kvb_index_batch_fini(&b);
        pk_fini(&k);
    }
}

Test(wire, legacy_array_trailing_vllm_fields)
{
    /* [tag, hashes, parent, tokens, bs, lora_id, medium, lora_name, extra_keys,
     *  group_idx, kind, window, unknown...] */
    for (int g = 0; g < 2; g++) {
        pk k;
        batch_begin(&k, 2);
        A(&k, 14);
        S(&k, "BlockStored");
        UARR(&k, (uint64_t[]){1, 2}, 2);
        NIL(&k);
        TOK(&k, 0, 4);
        U(&k, 2);
        U(&k, 3);
        S(&k, "DISK");
        S(&k, "adapter");
        A(&k, 2);
        A(&k, 1);
        S(&k, "adapter");
        NIL(&k);
        U(&k, g);
        S(&k, "full_attention");
        NIL(&k);
        S(&k, "unknown1");
        M(&k, 0);
        A(&k, 4);
        S(&k, "BlockRemoved");
        UARR(&k, (uint64_t[]){1}, 1);
        S(&k, "storage");
        U(&k, g);
        batch_end(&k, 0);
        kvb_index_batch b;
        cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
        if (g == 0) {
            cr_assert_eq(b.n_events, 2);
            cr_expect_eq(b.events[0].tier, KVB_TIER_DISK);
            cr_expect_eq(b.events[0].n_hashes, 2, "the LoRA's own extra key is reproducible");
            cr_expect_eq(b.events[0].salt_key, kvb_index_salt_key("adapter", 7, NULL, 0),
                         "the name wins over the id");
            cr_expect_eq(b.events[1].tier, KVB_TIER_DISK);
        } else {
            cr_expect_eq(b.n_events, 0);
            cr_expect_eq(b.dropped[KVB_DROP_GROUP], 2);
        }
        kvb_index_batch_fini(&b);
        pk_fini(&k);
    }
}

/* ---- media ---------------------------------------------------------------------------- */

Test(wire, media_map_to_tiers_or_skip)
{
    struct {
        const char *medium; /* NULL: nil; "-": absent */
        int tier;           /* -1: skipped */
    } cases[] = {
        {NULL, KVB_TIER_DEVICE},
        {"-", KVB_TIER_DEVICE},
        {"GPU", KVB_TIER_DEVICE},
        {"gpu", KVB_TIER_DEVICE},
        {"CPU", KVB_TIER_HOST},
        {"cpu", KVB_TIER_HOST},
        {"CPU_PINNED", KVB_TIER_HOST},
        {"cpu_pinned", KVB_TIER_HOST},
        {"DISK", KVB_TIER_DISK},
        {"disk", KVB_TIER_DISK},
        {"STORAGE", KVB_TIER_DISK},
        {"storage", KVB_TIER_DISK},
        {"Gpu", -1},
        {"EXTERNAL", -1},
        {"CPU_TIER1", -1},
        {"", -1},
        {"GPU ", -1},
        {"NVME", -1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bool absent = cases[c].medium && !strcmp(cases[c].medium, "-");
        pk k;
        batch_begin(&k, 3);
        /* STORED, REMOVED as maps; TierBlocksCleared needs a medium */
        M(&k, absent ? 5 : 6);
        S(&k, "type");
        S(&k, "BlockStored");
        S(&k, "block_hashes");
        UARR(&k, (uint64_t[]){1}, 1);
        S(&k, "parent_block_hash");
        NIL(&k);
        S(&k, "token_ids");
        TOK(&k, 0, 2);
        S(&k, "block_size");
        U(&k, 2);
        if (!absent) {
            S(&k, "medium");
            if (cases[c].medium)
                S(&k, cases[c].medium);
            else
                NIL(&k);
        }
        A(&k, absent ? 2 : 3);
        S(&k, "BlockRemoved");
        UARR(&k, (uint64_t[]){1}, 1);
        if (!absent) {
            if (cases[c].medium)
                S(&k, cases[c].medium);
            else
                NIL(&k);
        }
        M(&k, 2);
        S(&k, "type");
        S(&k, "TierBlocksCleared");
        S(&k, "medium");
        S(&k, cases[c].medium && !absent ? cases[c].medium : "GPU");
        batch_end(&k, 0);
        kvb_index_batch b;
        cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
        if (cases[c].tier < 0) {
            cr_expect_eq(b.n_events, 0, "case %zu (%s)", c, cases[c].medium);
            cr_expect_eq(b.dropped[KVB_DROP_MEDIUM], 3);
        } else {
            cr_assert_eq(b.n_events, 3, "case %zu", c);
            for (int i = 0; i < 3; i++)
                cr_expect_eq(b.events[i].tier, (kvb_tier)cases[c].tier, "case %zu ev %d", c, i);
            cr_expect_eq(b.events[2].type, KVB_INDEX_EV_CLEARED,
                         "TierBlocksCleared clears the stream (never leaves a block behind)");
        }
        kvb_index_batch_fini(&b);
        pk_fini(&k);
    }
}

/* ---- extra keys: multimodal, prompt embeddings, vLLM's cache salt -------------------- */

/* BlockStored (map) of 4 blocks, block size 2, with lora_name "L" and lora_id
 * 5, whose extra_keys entries are packed by fill(block). */
static void pack_extra(pk *k, void (*fill)(pk *, int))
{
    batch_begin(k, 2);
    stored_min_map(k, 4, 2);
    S(k, "lora_name");
    S(k, "L");
    S(k, "extra_keys");
    A(k, 4);
    for (int i = 0; i < 4; i++)
        fill(k, i);
    pk_removed(k, true, (uint64_t[]){9}, 1, "GPU");
    batch_end(k, 0);
}

static void x_none(pk *k, int i)
{
    (void)i;
    NIL(k);
}
static void x_lora(pk *k, int i)
{
    if (i == 1) {
        NIL(k);
        return;
    }
    A(k, 1);
    if (i == 2) { /* typed key of newer vLLM */
        M(k, 2);
        S(k, "type");
        S(k, "lora");
        S(k, "name");
        S(k, "L");
    } else {
        S(k, "L");
    }
}
static void x_mm_at2(pk *k, int i)
{
    if (i < 2) {
        NIL(k);
        return;
    }
    A(k, 2);
    S(k, "L");
    A(k, 2); /* (mm identifier, offset) */
    S(k, "img-hash");
    U(k, 0);
}
static void x_embeds_at0(pk *k, int i)
{
    A(k, 1);
    BIN(k, "0123456789abcdef0123456789abcdef", 32);
    (void)i;
}
static void x_salt_at0(pk *k, int i)
{
    if (i) {
        NIL(k);
        return;
    }
    A(k, 1);
    S(k, "salt-string"); /* vLLM's cache_salt: first block only */
}
static void x_typed_mm_at3(pk *k, int i)
{
    if (i < 3) {
        NIL(k);
        return;
    }
    A(k, 1);
    M(k, 4);
    S(k, "type");
    S(k, "mm");
    S(k, "modality");
    S(k, "image");
    S(k, "hash");
    S(k, "abc");
    S(k, "block_offset");
    U(k, 1);
}
static void x_other_lora_at1(pk *k, int i)
{
    if (i != 1) {
        NIL(k);
        return;
    }
    A(k, 1);
    S(k, "other-lora");
}
static void x_lora_id_at0(pk *k, int i)
{
    if (i) {
        NIL(k);
        return;
    }
    A(k, 1);
    U(k, 5); /* older vLLM: lora_int_id as the extra key */
}
static void x_typed_salt_at0(pk *k, int i)
{
    if (i) {
        NIL(k);
        return;
    }
    A(k, 1);
    M(k, 2);
    S(k, "type");
    S(k, "cache_salt");
    S(k, "salt");
    S(k, "x");
}

Test(wire, multimodal_blocks_truncate_the_event)
{
    struct {
        void (*fill)(pk *, int);
        uint32_t keep; /* blocks kept of 4 */
    } cases[] = {
        {x_none, 4},     {x_lora, 4},         {x_mm_at2, 2},         {x_embeds_at0, 0},
        {x_salt_at0, 0}, {x_typed_mm_at3, 3}, {x_other_lora_at1, 1}, {x_typed_salt_at0, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        pk k;
        pack_extra(&k, cases[c].fill);
        kvb_index_batch b;
        cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
        uint32_t keep = cases[c].keep;
        cr_expect_eq(b.dropped[KVB_DROP_MULTIMODAL], 4 - keep, "case %zu: blocks counted", c);
        cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], 0);
        cr_assert_eq(b.n_events, (keep ? 1 : 0) + 1, "case %zu", c);
        if (keep) {
            const kvb_index_event *e = &b.events[0];
            cr_expect_eq(e->n_hashes, keep, "case %zu", c);
            cr_expect_eq(e->n_tokens, 2 * keep, "tokens of the kept blocks only");
            expect_u64s(e->hashes, (uint64_t[]){11, 12, 13, 14}, keep);
            cr_expect_eq(e->salt_key, kvb_index_salt_key("L", 1, NULL, 0));
        }
        cr_expect_eq(b.events[b.n_events - 1].type, KVB_INDEX_EV_REMOVED, "the rest decodes");
        kvb_index_batch_fini(&b);
        pk_fini(&k);
    }
    /* the lora_id extra key counts as the LoRA when the event has the id */
    pk k;
    batch_begin(&k, 1);
    M(&k, 8);
    S(&k, "type");
    S(&k, "BlockStored");
    S(&k, "block_hashes");
    UARR(&k, (uint64_t[]){1, 2, 3, 4}, 4);
    S(&k, "parent_block_hash");
    NIL(&k);
    S(&k, "token_ids");
    TOK(&k, 0, 8);
    S(&k, "block_size");
    U(&k, 2);
    S(&k, "lora_id");
    U(&k, 5);
    S(&k, "medium");
    NIL(&k);
    S(&k, "extra_keys");
    A(&k, 4);
    for (int i = 0; i < 4; i++)
        x_lora_id_at0(&k, i);
    batch_end(&k, 0);
    kvb_index_batch b;
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    cr_assert_eq(b.n_events, 1);
    cr_expect_eq(b.events[0].n_hashes, 4);
    cr_expect_eq(b.events[0].salt_key, kvb_index_salt_key("5", 1, NULL, 0));
    kvb_index_batch_fini(&b);
    pk_fini(&k);
    /* without a LoRA, its name in extra keys is not reproducible */
    batch_begin(&k, 1);
    stored_min_map(&k, 2, 1);
    S(&k, "extra_keys");
    A(&k, 2);
    A(&k, 1);
    S(&k, "L");
    NIL(&k);
    batch_end(&k, 0);
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    cr_expect_eq(b.n_events, 0);
    cr_expect_eq(b.dropped[KVB_DROP_MULTIMODAL], 2);
    kvb_index_batch_fini(&b);
    pk_fini(&k);
}

Test(wire, multimodal_truncation_cuts_the_tokens_at_the_kept_blocks)
{
    for (int fewer = 0; fewer < 2; fewer++) {
        /* 4 blocks of 2; 8 tokens, or only 3 (kept as sent: the index judges) */
        pk k;
        batch_begin(&k, 1);
        M(&k, 6);
        S(&k, "type");
        S(&k, "BlockStored");
        S(&k, "block_hashes");
        UARR(&k, (uint64_t[]){1, 2, 3, 4}, 4);
        S(&k, "parent_block_hash");
        NIL(&k);
        S(&k, "token_ids");
        TOK(&k, 0, fewer ? 3 : 8);
        S(&k, "block_size");
        U(&k, 2);
        S(&k, "extra_keys");
        A(&k, 4);
        NIL(&k);
        NIL(&k);
        NIL(&k);
        A(&k, 1);
        I(&k, -3);
        batch_end(&k, 0);
        kvb_index_batch b;
        cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
        cr_assert_eq(b.n_events, 1);
        cr_expect_eq(b.events[0].n_hashes, 3);
        cr_expect_eq(b.events[0].n_tokens, fewer ? 3 : 6);
        cr_expect_eq(b.dropped[KVB_DROP_MULTIMODAL], 1);
        kvb_index_batch_fini(&b);
        pk_fini(&k);
    }
}

/* ---- unknown types and keys -------------------------------------------------------------- */

Test(wire, unknown_types_are_skipped_and_unknown_keys_ignored)
{
    pk k;
    batch_begin(&k, 6);
    M(&k, 2);
    S(&k, "type");
    S(&k, "BlockMoved");
    S(&k, "block_hashes");
    A(&k, 0);
    A(&k, 2);
    S(&k, "KVCacheTouched");
    U(&k, 1);
    A(&k, 1);
    S(&k, "blockstored"); /* tags are case-sensitive */
    stored_min_map(&k, 1, 3);
    S(&k, "locality");
    S(&k, "LOCAL");
    S(&k, "event_version");
    U(&k, 1);
    U(&k, 1); /* a non-string key: unknown, ignored */
    U(&k, 2);
    A(&k, 3); /* AllBlocksCleared with trailing junk */
    S(&k, "AllBlocksCleared");
    U(&k, 1);
    M(&k, 0);
    M(&k, 3); /* BlockRemoved with STORED-only keys: ignored */
    S(&k, "type");
    S(&k, "BlockRemoved");
    S(&k, "block_hashes");
    UARR(&k, (uint64_t[]){4}, 1);
    S(&k, "token_ids");
    S(&k, "not even an array");
    batch_end(&k, 0);
    kvb_index_batch b;
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    cr_expect_eq(b.dropped[KVB_DROP_UNKNOWN_TYPE], 3);
    cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], 0);
    cr_assert_eq(b.n_events, 3);
    cr_expect_eq(b.events[0].type, KVB_INDEX_EV_STORED);
    cr_expect_eq(b.events[1].type, KVB_INDEX_EV_CLEARED);
    cr_expect_eq(b.events[2].type, KVB_INDEX_EV_REMOVED);
    kvb_index_batch_fini(&b);
    pk_fini(&k);
}

/* ---- malformed events: a wrong type in every field -------------------------------------- */

/* One map BlockStored with field `bad` replaced by the value packed by val(). */
typedef void (*packval)(pk *);
static void v_str(pk *k)
{
    S(k, "x");
}
static void v_int(pk *k)
{
    U(k, 7);
}
static void v_neg(pk *k)
{
    I(k, -7);
}
static void v_dbl(pk *k)
{
    D(k, 1.0);
}
static void v_map(pk *k)
{
    M(k, 0);
}
static void v_arr_str(pk *k)
{
    A(k, 1);
    S(k, "x");
}
static void v_arr_dbl(pk *k)
{
    A(k, 1);
    D(k, 1.0);
}
static void v_arr_neg(pk *k)
{
    A(k, 1);
    I(k, -1);
}
static void v_arr_big(pk *k)
{
    A(k, 1);
    U(k, 1ull << 32);
}
static void v_arr_nil(pk *k)
{
    A(k, 1);
    NIL(k);
}
static void v_bool(pk *k)
{
    msgpack_pack_true(&k->p);
}
static void v_ext(pk *k)
{
    msgpack_pack_ext(&k->p, 1, 1);
    msgpack_pack_ext_body(&k->p, "x", 1);
}
static void v_zero(pk *k)
{
    U(k, 0);
}
static void v_nil(pk *k)
{
    NIL(k);
}
static void v_arr_pair(pk *k)
{
    A(k, 1);
    A(k, 2);
    U(k, 1);
    U(k, 2);
}
static void v_xk_short(pk *k) /* extra_keys of another length than the hashes */
{
    A(k, 3);
    NIL(k);
    NIL(k);
    NIL(k);
}
static void v_xk_entry_str(pk *k)
{
    A(k, 2);
    S(k, "L");
    NIL(k);
}
static void v_meta_salt_int(pk *k)
{
    M(k, 1);
    S(k, "cache_salt");
    U(k, 1);
}

Test(wire, a_wrong_type_in_any_field_drops_that_event_only)
{
    struct {
        const char *field;
        packval val;
    } cases[] = {
        {"block_hashes", v_str},
        {"block_hashes", v_int},
        {"block_hashes", v_map},
        {"block_hashes", v_arr_dbl},
        {"block_hashes", v_arr_nil},
        {"block_hashes", v_arr_str},
        {"block_hashes", v_nil},
        {"block_hashes", v_bool},
        {"block_hashes", v_ext},
        {"parent_block_hash", v_str},
        {"parent_block_hash", v_dbl},
        {"parent_block_hash", v_map},
        {"parent_block_hash", v_bool},
        {"token_ids", v_str},
        {"token_ids", v_int},
        {"token_ids", v_nil},
        {"token_ids", v_arr_neg},
        {"token_ids", v_arr_big},
        {"token_ids", v_arr_dbl},
        {"token_ids", v_arr_str},
        {"token_ids", v_arr_pair},
        {"block_size", v_zero},
        {"block_size", v_neg},
        {"block_size", v_str},
        {"block_size", v_dbl},
        {"block_size", v_nil},
        {"lora_id", v_str},
        {"lora_id", v_dbl},
        {"lora_id", v_map},
        {"medium", v_int},
        {"medium", v_map},
        {"lora_name", v_int},
        {"lora_name", v_arr_str},
        {"extra_keys", v_str},
        {"extra_keys", v_map},
        {"extra_keys", v_xk_short},
        {"extra_keys", v_xk_entry_str},
        {"group_idx", v_neg},
        {"group_idx", v_str},
        {"group_idx", v_dbl},
        {"kv_cache_spec_kind", v_int},
        {"kv_cache_spec_sliding_window", v_str},
        {"kv_cache_spec_sliding_window", v_neg},
        {"cache_salt", v_int},
        {"cache_salt", v_map},
        {"metadata", v_str},
        {"metadata", v_meta_salt_int},
        {"block_size", v_ext},
    };
    static const char *const fields[] = {"block_hashes", "parent_block_hash", "token_ids",
                                         "block_size",   "lora_id",           "medium"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bool replaces = false;
        for (size_t f = 0; f < 6; f++)
            replaces |= !strcmp(fields[f], cases[c].field);
        pk k;
        batch_begin(&k, 3);
        pk_removed(&k, true, (uint64_t[]){1}, 1, "GPU");
        M(&k, 7 + !replaces);
        S(&k, "type");
        S(&k, "BlockStored");
        for (size_t f = 0; f < 6; f++) {
            S(&k, fields[f]);
            if (!strcmp(fields[f], cases[c].field)) {
                cases[c].val(&k);
            } else if (f == 0) {
                UARR(&k, (uint64_t[]){1, 2}, 2);
            } else if (f == 2) {
                TOK(&k, 0, 4);
            } else if (f == 3) {
                U(&k, 2);
            } else {
                NIL(&k);
            }
        }
        if (!replaces) {
            S(&k, cases[c].field);
            cases[c].val(&k);
        }
        pk_removed(&k, false, (uint64_t[]){2}, 1, "GPU");
        batch_end(&k, 0);
        for (int kind = 0; kind < 3; kind++) {
            kvb_index_batch b;
            cr_assert_eq(dec(&k, (kvb_wire_kind)kind, &b), 0);
            bool pairs_ok = kind == KVB_WIRE_SGLANG && cases[c].val == v_arr_pair;
            cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], !pairs_ok, "case %zu (%s) kind %d", c,
                         cases[c].field, kind);
            cr_expect_eq(b.n_events, 2u + pairs_ok, "case %zu: the neighbours decode", c);
            cr_expect_eq(b.events[0].hashes[0], 1);
            kvb_index_batch_fini(&b);
        }
        pk_fini(&k);
    }
}

Test(wire, malformed_event_shapes)
{
    pk k;
    batch_begin(&k, 16);
    U(&k, 5);             /* not a map or array */
    S(&k, "BlockStored"); /* a bare string */
    NIL(&k);
    A(&k, 0); /* empty array */
    A(&k, 1); /* tag not a string */
    U(&k, 1);
    M(&k, 0); /* map without type */
    M(&k, 1); /* type not a string */
    S(&k, "type");
    A(&k, 0);
    M(&k, 2); /* two type keys */
    S(&k, "type");
    S(&k, "AllBlocksCleared");
    S(&k, "type");
    S(&k, "AllBlocksCleared");
    A(&k, 4); /* BlockStored array too short: no block_size */
    S(&k, "BlockStored");
    A(&k, 0);
    NIL(&k);
    A(&k, 0);
    A(&k, 1); /* BlockRemoved array without hashes */
    S(&k, "BlockRemoved");
    M(&k, 4); /* map without token_ids */
    S(&k, "type");
    S(&k, "BlockStored");
    S(&k, "block_hashes");
    A(&k, 0);
    S(&k, "parent_block_hash");
    NIL(&k);
    S(&k, "block_size");
    U(&k, 2);
    M(&k, 3); /* duplicate key */
    S(&k, "type");
    S(&k, "BlockRemoved");
    S(&k, "block_hashes");
    A(&k, 0);
    S(&k, "block_hashes");
    A(&k, 0);
    M(&k, 1); /* TierBlocksCleared without a medium */
    S(&k, "type");
    S(&k, "TierBlocksCleared");
    A(&k, 2); /* TierBlocksCleared with nil medium */
    S(&k, "TierBlocksCleared");
    NIL(&k);
    D(&k, 3.0);
    A(&k, 1); /* the one good event */
    S(&k, "AllBlocksCleared");
    batch_end(&k, 0);
    kvb_index_batch b;
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &b), 0);
    cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], 15);
    cr_assert_eq(b.n_events, 1);
    cr_expect_eq(b.events[0].type, KVB_INDEX_EV_CLEARED);
    kvb_index_batch_fini(&b);
    pk_fini(&k);
}

/* ---- malformed batches --------------------------------------------------------------------- */

static void expect_badmsg(const void *p, size_t n, const char *what)
{
    for (int kind = 0; kind < 3; kind++) {
        kvb_index_batch b;
        memset(&b, 0x5a, sizeof b);
        cr_expect_eq(kvb_index_decode(p, n, (kvb_wire_kind)kind, &b), -EBADMSG, "%s (kind %d)",
                     what, kind);
        cr_expect_eq(b.n_events, 0, "%s: out is zeroed", what);
        cr_expect_null(b.priv_);
        cr_expect_null(b.events);
        kvb_index_batch_fini(&b); /* harmless */
    }
}

static void expect_badmsg_pk(pk *k, const char *what)
{
    expect_badmsg(k->sb.data, k->sb.size, what);
    pk_fini(k);
}

Test(wire, malformed_batches_are_ebadmsg)
{
    pk k;
    expect_badmsg("", 0, "empty payload");
    expect_badmsg("\xc1", 1, "reserved byte");
    pk_init(&k);
    U(&k, 1);
    expect_badmsg_pk(&k, "root int");
    pk_init(&k);
    S(&k, "batch");
    expect_badmsg_pk(&k, "root str");
    pk_init(&k);
    A(&k, 1);
    D(&k, 1.0);
    expect_badmsg_pk(&k, "array of one");
    pk_init(&k);
    A(&k, 3);
    D(&k, 1.0);
    M(&k, 0);
    NIL(&k);
    expect_badmsg_pk(&k, "events a map");
    pk_init(&k);
    A(&k, 3);
    D(&k, 1.0);
    NIL(&k);
    NIL(&k);
    expect_badmsg_pk(&k, "events nil");
    pk_init(&k);
    A(&k, 3);
    S(&k, "1.0");
    A(&k, 0);
    NIL(&k);
    expect_badmsg_pk(&k, "ts a string");
    pk_init(&k);
    A(&k, 3);
    D(&k, NAN);
    A(&k, 0);
    NIL(&k);
    expect_badmsg_pk(&k, "ts NaN");
    pk_init(&k);
    A(&k, 3);
    D(&k, INFINITY);
    A(&k, 0);
    NIL(&k);
    expect_badmsg_pk(&k, "ts inf");
    pk_init(&k);
    A(&k, 3);
    D(&k, 1.0);
    A(&k, 0);
    I(&k, -1);
    expect_badmsg_pk(&k, "negative rank");
    pk_init(&k);
    A(&k, 3);
    D(&k, 1.0);
    A(&k, 0);
    S(&k, "0");
    expect_badmsg_pk(&k, "rank a string");
    pk_init(&k);
    A(&k, 3);
    D(&k, 1.0);
    A(&k, 0);
    U(&k, UINT64_MAX);
    expect_badmsg_pk(&k, "rank past INT64_MAX");
    pk_init(&k);
    M(&k, 1);
    S(&k, "ts");
    D(&k, 1.0);
    expect_badmsg_pk(&k, "map without events");
    pk_init(&k);
    M(&k, 1);
    S(&k, "events");
    A(&k, 0);
    expect_badmsg_pk(&k, "map without ts");
    pk_init(&k);
    M(&k, 3);
    S(&k, "ts");
    D(&k, 1.0);
    S(&k, "events");
    A(&k, 0);
    S(&k, "ts");
    D(&k, 2.0);
    expect_badmsg_pk(&k, "duplicate ts");
    pk_init(&k);
    M(&k, 4);
    S(&k, "ts");
    D(&k, 1.0);
    S(&k, "events");
    A(&k, 0);
    S(&k, "data_parallel_rank");
    U(&k, 1);
    S(&k, "attn_dp_rank");
    U(&k, 2);
    expect_badmsg_pk(&k, "two different ranks");
    pk_init(&k);
    A(&k, 2);
    D(&k, 1.0);
    A(&k, 0);
    U(&k, 0);
    expect_badmsg_pk(&k, "trailing bytes after the batch");
}

Test(wire, every_truncation_of_a_valid_payload_is_refused)
{
    pk k;
    pack_reference(&k, true);
    for (size_t n = 0; n < k.sb.size; n++) {
        kvb_index_batch b;
        cr_expect_eq(kvb_index_decode(k.sb.data, n, KVB_WIRE_VLLM, &b), -EBADMSG, "prefix %zu", n);
    }
    pk_fini(&k);
}

Test(wire, huge_declared_lengths_are_refused_before_allocation)
{
    /* each would make msgpack-c ask for gigabytes before seeing the elements */
    static const struct {
        const char *p;
        size_t n;
    } cases[] = {
        {"\xdd\xff\xff\xff\xff", 5},                        /* array32 of 2^32-1 */
        {"\xdf\xff\xff\xff\xff", 5},                        /* map32 */
        {"\x93\xcb\x3f\xf0\0\0\0\0\0\0\xdd\x10\0\0\0", 15}, /* events: 2^28 */
        {"\xdb\xff\xff\xff\xff", 5},                        /* str32 of 4 GiB */
        {"\xc6\x7f\xff\xff\xff", 5},                        /* bin32 */
        {"\xc9\x7f\xff\xff\xff\x01", 6},                    /* ext32 */
        {"\xdc\xff\xff", 3},                                /* array16 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        expect_badmsg(cases[c].p, cases[c].n, "huge length");
    /* many small arrays, each declaring 15 elements: the sum is checked */
    unsigned char buf[4096];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = 0x9f;
    expect_badmsg(buf, sizeof buf, "nested fixarrays");
    /* deeper than msgpack-c's 32-level stack */
    unsigned char deep[64];
    memset(deep, 0x91, sizeof deep);
    deep[63] = 0xc0;
    expect_badmsg(deep, sizeof deep, "64 levels");
    /* a payload larger than the decoder reads */
    size_t big = (64u << 20) + 1;
    char *p = calloc(1, big);
    cr_assert_not_null(p);
    expect_badmsg(p, big, "over 64 MiB");
    free(p);
}

Test(wire, nested_garbage_inside_events_and_fields)
{
    pk k;
    batch_begin(&k, 3);
    A(&k, 7); /* hashes nested in hashes */
    S(&k, "BlockStored");
    A(&k, 1);
    A(&k, 1);
    A(&k, 1);
    U(&k, 1);
    NIL(&k);
    TOK(&k, 0, 2);
    U(&k, 2);
    NIL(&k);
    NIL(&k);
    M(&k, 2); /* type key mapped to a map */
    S(&k, "type");
    M(&k, 1);
    S(&k, "type");
    S(&k, "BlockStored");
    S(&k, "block_hashes");
    A(&k, 0);
    A(&k, 2); /* an array of arrays of maps */
    A(&k, 1);
    M(&k, 1);
    NIL(&k);
    NIL(&k);
    A(&k, 0);
    batch_end(&k, 0);
    kvb_index_batch b;
    cr_assert_eq(dec(&k, KVB_WIRE_SGLANG, &b), 0);
    cr_expect_eq(b.n_events, 0);
    cr_expect_eq(b.dropped[KVB_DROP_MALFORMED], 3);
    kvb_index_batch_fini(&b);
    pk_fini(&k);
}

Test(wire, arguments_and_fini)
{
    kvb_index_batch b;
    cr_expect_eq(kvb_index_decode("\x92\x00\x90", 3, KVB_WIRE_VLLM, NULL), -EINVAL);
    cr_expect_eq(kvb_index_decode(NULL, 3, KVB_WIRE_VLLM, &b), -EINVAL);
    cr_expect_eq(b.priv_, NULL, "out zeroed on failure");
    cr_expect_eq(kvb_index_decode("\x92\x00\x90", 3, (kvb_wire_kind)3, &b), -EINVAL);
    cr_expect_eq(kvb_index_decode("\x92\x00\x90", 3, (kvb_wire_kind)-1, &b), -EINVAL);
    cr_expect_eq(kvb_index_decode(NULL, 0, KVB_WIRE_VLLM, &b), -EBADMSG);
    cr_assert_eq(kvb_index_decode("\x92\x00\x90", 3, KVB_WIRE_VLLM, &b), 0);
    cr_expect_eq(b.ts, 0.0);
    cr_expect_eq(b.n_events, 0);
    kvb_index_batch_fini(&b);
    kvb_index_batch_fini(&b); /* twice: a no-op */
    kvb_index_batch_fini(NULL);
    kvb_index_batch z;
    memset(&z, 0, sizeof z);
    kvb_index_batch_fini(&z);
    /* decoding is deterministic and the output independent of the input buffer */
    pk k;
    pack_reference(&k, false);
    kvb_index_batch a, c;
    cr_assert_eq(dec(&k, KVB_WIRE_VLLM, &a), 0);
    char *copy = malloc(k.sb.size);
    memcpy(copy, k.sb.data, k.sb.size);
    cr_assert_eq(kvb_index_decode(copy, k.sb.size, KVB_WIRE_VLLM, &c), 0);
    memset(copy, 0, k.sb.size);
    free(copy);
    check_reference(&c);
    expect_same_batch(&a, &c);
    kvb_index_batch_fini(&a);
    kvb_index_batch_fini(&c);
    pk_fini(&k);
}

/* ---- end to end: a kvblock pool publishing, decoded here ------------------------------------ */

static bool e2e_tokens(void *user, const kvb_pool *pool, kvb_hash hash, uint32_t block_id,
                       uint32_t *out)
{
    (void)user;
    uint32_t bs = kvb_pool_block_size(pool);
    for (uint32_t i = 0; i < bs; i++)
        out[i] = (uint32_t)(kvb_hash_current(hash) + i) & 0xffffff;
    (void)block_id;
    return true;
}

static void e2e_put(kvb_pool *p, const kvb_hash *h, uint32_t n, kvb_block *out)
{
    kvb_mutable m[16];
    kvb_complete c[16];
    cr_assert_eq(kvb_pool_allocate(p, n, m, NULL, NULL), 0);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(kvb_mutable_stage(&m[i], h[i], &c[i]), 0);
    cr_assert_eq(kvb_pool_register(p, c, n, out), 0);
}

/* Every buffered batch from the replay socket (a real ZeroMQ DEALER client). */
static int e2e_capture(const char *replay_ep, char **payload, size_t *len, int cap)
{
    void *ctx = zmq_ctx_new();
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    int t = 10000, zero = 0;
    zmq_setsockopt(d, ZMQ_RCVTIMEO, &t, sizeof t);
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(d, replay_ep), 0);
    unsigned char start[8] = {0};
    cr_assert_eq(zmq_send(d, "", 0, ZMQ_SNDMORE), 0);
    cr_assert_eq(zmq_send(d, start, 8, 0), 8);
    int n = 0;
    for (;;) {
        zmq_msg_t f[3];
        for (int i = 0; i < 3; i++) {
            zmq_msg_init(&f[i]);
            cr_assert_geq(zmq_msg_recv(&f[i], d, 0), 0, "replay reply");
        }
        bool end = zmq_msg_size(&f[1]) == 8 &&
                   !memcmp(zmq_msg_data(&f[1]), "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
        if (!end) {
            cr_assert_lt(n, cap);
            len[n] = zmq_msg_size(&f[2]);
            payload[n] = malloc(len[n] + 1);
            memcpy(payload[n], zmq_msg_data(&f[2]), len[n]);
            n++;
        }
        for (int i = 0; i < 3; i++)
            zmq_msg_close(&f[i]);
        if (end)
            break;
    }
    zmq_close(d);
    zmq_ctx_term(ctx);
    return n;
}

static void e2e_round_trip(kvb_publisher_layout layout, const char *tag)
{
    char pub_ep[128], rep_ep[128];
    snprintf(pub_ep, sizeof pub_ep, "ipc:///tmp/kvb-wire-%d-%s-pub", (int)getpid(), tag);
    snprintf(rep_ep, sizeof rep_ep, "ipc:///tmp/kvb-wire-%d-%s-rep", (int)getpid(), tag);
    kvb_publisher_config pc;
    kvb_publisher_config_init(&pc);
    pc.endpoint = pub_ep;
    pc.replay_endpoint = rep_ep;
    pc.data_parallel_rank = 2;
    pc.layout = layout;
    kvb_publisher *pub = NULL;
    cr_assert_eq(kvb_publisher_create(&pc, &pub), 0);
    kvb_pool *pools[2];
    const char *media[2] = {"GPU", "CPU"};
    for (int i = 0; i < 2; i++) {
        kvb_event_config ec;
        kvb_event_config_init(&ec);
        kvb_publisher_event_config(pub, &ec);
        ec.medium = media[i];
        ec.tokens = e2e_tokens;
        kvb_pool_config cfg;
        kvb_pool_config_init(&cfg);
        cfg.block_count = 4;
        cfg.events = &ec;
        pools[i] = tu_pool_cfg(&cfg);
    }
    kvb_hash c[3];
    tu_chain(0x5151, 3, c);
    kvb_block b[3];
    e2e_put(pools[0], c, 2, b);         /* STORED [c0 c1] GPU, tokens */
    e2e_put(pools[0], c + 2, 1, b + 2); /* STORED [c2] parent c1 */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(kvb_block_release(&b[i]), 0);
    kvb_mutable m[2];
    cr_assert_eq(kvb_pool_allocate(pools[0], 2, m, NULL, NULL), 0); /* REMOVED [c0] */
    for (int i = 0; i < 2; i++)
        cr_assert_eq(kvb_mutable_release(&m[i]), 0);
    kvb_block x;
    e2e_put(pools[1], c, 1, &x); /* STORED [c0] CPU */
    cr_assert_eq(kvb_block_release(&x), 0);
    tu_finish(pools[0]); /* CLEARED (cache not empty) */
    cr_assert_eq(kvb_publisher_flush(pub, 10000), 0);

    char *payload[16];
    size_t len[16];
    int n = e2e_capture(rep_ep, payload, len, 16);
    cr_assert_eq(n, 5);
    kvb_index_batch d[5];
    for (int i = 0; i < n; i++) {
        cr_assert_eq(kvb_index_decode(payload[i], len[i], KVB_WIRE_KVBLOCK, &d[i]), 0);
        cr_expect_eq(d[i].dp_rank, 2);
        cr_expect_gt(d[i].ts, 1.0e9);
        cr_expect_eq(total_dropped(&d[i]), 0);
        cr_assert_eq(d[i].n_events, 1, "batch %d", i);
        /* the map layout is what it says: the first event byte is a map */
        const unsigned char *p = (const unsigned char *)payload[i];
        cr_assert_gt(len[i], 12);
        cr_expect_eq(p[0], 0x93, "[ts, events, rank]");
        cr_expect_eq(p[1], 0xcb, "ts: float64");
        cr_expect_eq(p[10], 0x91, "one event");
        bool map_event = (p[11] & 0xf0) == 0x80; /* fixmap (else fixarray 0x9_) */
        cr_expect_eq(p[11] & 0xe0, 0x80, "a fixmap or a fixarray");
        cr_expect_eq(map_event, layout == KVB_PUBLISHER_LAYOUT_MAP, "batch %d layout", i);
    }
    const kvb_index_event *e = d[0].events;
    cr_expect_eq(e->type, KVB_INDEX_EV_STORED);
    cr_expect_eq(e->tier, KVB_TIER_DEVICE);
    cr_assert_eq(e->n_hashes, 2);
    cr_expect_eq(e->hashes[0], kvb_hash_current(c[0]));
    cr_expect_eq(e->hashes[1], kvb_hash_current(c[1]));
    cr_expect_not(e->has_parent);
    cr_expect_eq(e->block_size, 16);
    cr_assert_eq(e->n_tokens, 32);
    for (uint32_t blk = 0; blk < 2; blk++) {
        uint32_t want[16];
        e2e_tokens(NULL, pools[1], c[blk], 0, want);
        cr_expect_eq(memcmp(e->tokens + 16 * blk, want, sizeof want), 0, "tokens of block %u", blk);
    }
    cr_expect_eq(e->salt_key, 0);
    e = d[1].events;
    cr_expect(e->has_parent);
    cr_expect_eq(e->parent, kvb_hash_current(c[1]));
    cr_expect_eq(e->hashes[0], kvb_hash_current(c[2]));
    e = d[2].events;
    cr_expect_eq(e->type, KVB_INDEX_EV_REMOVED);
    cr_expect_eq(e->tier, KVB_TIER_DEVICE);
    cr_assert_eq(e->n_hashes, 1);
    cr_expect_eq(e->hashes[0], kvb_hash_current(c[0]));
    e = d[3].events;
    cr_expect_eq(e->type, KVB_INDEX_EV_STORED);
    cr_expect_eq(e->tier, KVB_TIER_HOST, "the CPU pool's medium");
    cr_expect_eq(e->hashes[0], kvb_hash_current(c[0]));
    cr_expect_eq(d[4].events[0].type, KVB_INDEX_EV_CLEARED);
    for (int i = 0; i < n; i++) {
        kvb_index_batch_fini(&d[i]);
        free(payload[i]);
    }
    tu_finish(pools[1]);
    cr_assert_eq(kvb_publisher_destroy(pub), 0);
    unlink(pub_ep + 6);
    unlink(rep_ep + 6);
}

Test(wire, publisher_map_layout_round_trips_through_the_decoder)
{
    e2e_round_trip(KVB_PUBLISHER_LAYOUT_MAP, "map");
}

Test(wire, publisher_array_layout_round_trips_through_the_decoder)
{
    e2e_round_trip(KVB_PUBLISHER_LAYOUT_ARRAY, "array");
}

#endif
