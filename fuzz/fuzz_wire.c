/*
 * fuzz_wire.c - libFuzzer target: the input is a raw KV-event payload, decoded
 * by kvb_index_decode() (lib/wire.c) as each of the three wire kinds (vLLM,
 * SGLang, kvblock).
 *
 * Build and run: `make fuzz` (FUZZ_SECONDS, default 60; FUZZ_NAMES=fuzz_wire for
 * this target alone), `make fuzz-regress` (the committed corpus in
 * fuzz/corpus/fuzz_wire once, for CI). Seeds: fuzz/seeds_wire.py. Linked with
 * fuzz/replay_main.c instead of libFuzzer it is a plain program replaying the
 * files named on its command line (any compiler).
 *
 * Checks, any failure aborts (a crash for libFuzzer); ASan, UBSan and LSan
 * watch memory, undefined behaviour and leaks:
 *  - the result is 0 or -EBADMSG, the same for every kind (whether a payload
 *    is a batch does not depend on the dialect); on failure the batch is
 *    zeroed;
 *  - a decoded batch is consistent: events non-NULL exactly when there are
 *    some, types and tiers in range, CLEARED without blocks, REMOVED without
 *    tokens, STORED with a block size, pointers non-NULL exactly when their
 *    counts are not 0, only the decoder's drop reasons counted, and the counts
 *    bounded by the payload (every event, hash and token takes at least one
 *    byte); every hash and token is read (ASan checks the bounds);
 *  - decoding is deterministic (the same payload again gives the same batch)
 *    and kvblock decodes exactly as vLLM;
 *  - the decoded events re-encoded with msgpack-c, as tagged maps and as
 *    legacy tagged arrays, decode to the same events (salt keys aside: a salt
 *    key cannot be re-encoded) with nothing dropped.
 */
#include "kvblock.h"
#include "kvblock/index.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wire: %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef KVB_HAVE_ZMQ
/* Built without msgpack-c: the decoder is -ENOTSUP, whatever the payload. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kvb_index_batch b;
    CHECK(kvb_index_decode(data, size, KVB_WIRE_VLLM, &b) == -ENOTSUP, "expected -ENOTSUP");
    CHECK(b.n_events == 0 && !b.priv_, "failed decode left data");
    kvb_index_batch_fini(&b);
    return 0;
}
#else

#include <msgpack.h>

static volatile uint64_t g_sink; /* keeps the reads of every hash and token */

static void check_batch(const kvb_index_batch *b, size_t len)
{
    CHECK(b->n_events <= len, "%u events from %zu bytes", b->n_events, len);
    CHECK((b->events != NULL) == (b->n_events > 0), "events pointer vs %u events", b->n_events);
    uint64_t drops = 0;
    for (int r = 0; r < KVB_DROP_COUNT; r++) {
        bool decoder_reason = r == KVB_DROP_MALFORMED || r == KVB_DROP_UNKNOWN_TYPE ||
                              r == KVB_DROP_GROUP || r == KVB_DROP_MEDIUM ||
                              r == KVB_DROP_MULTIMODAL;
        CHECK(decoder_reason || b->dropped[r] == 0, "reason %d counted by the decoder", r);
        if (r != KVB_DROP_MULTIMODAL) /* that one counts blocks */
            drops += b->dropped[r];
    }
    CHECK(drops + b->n_events <= len, "%llu events seen in %zu bytes",
          (unsigned long long)(drops + b->n_events), len);
    uint64_t blocks = b->dropped[KVB_DROP_MULTIMODAL], tokens = 0, acc = 0;
    for (uint32_t i = 0; i < b->n_events; i++) {
        const kvb_index_event *e = &b->events[i];
        CHECK(e->type == KVB_INDEX_EV_STORED || e->type == KVB_INDEX_EV_REMOVED ||
                  e->type == KVB_INDEX_EV_CLEARED,
              "event %u type %d", i, (int)e->type);
        CHECK((unsigned)e->tier < KVB_TIER_COUNT, "event %u tier %d", i, (int)e->tier);
        CHECK((e->hashes != NULL) == (e->n_hashes > 0), "event %u hashes pointer", i);
        CHECK((e->tokens != NULL) == (e->n_tokens > 0), "event %u tokens pointer", i);
        if (e->type == KVB_INDEX_EV_CLEARED)
            CHECK(e->n_hashes == 0 && e->n_tokens == 0 && !e->has_parent, "event %u", i);
        if (e->type == KVB_INDEX_EV_REMOVED)
            CHECK(e->n_tokens == 0 && !e->has_parent && e->salt_key == 0, "event %u", i);
        if (e->type == KVB_INDEX_EV_STORED)
            CHECK(e->block_size > 0, "event %u block size 0", i);
        blocks += e->n_hashes;
        tokens += e->n_tokens;
        for (uint32_t j = 0; j < e->n_hashes; j++)
            acc += e->hashes[j];
        for (uint32_t j = 0; j < e->n_tokens; j++)
            acc += e->tokens[j];
    }
    CHECK(blocks <= len && tokens <= len, "%llu blocks, %llu tokens from %zu bytes",
          (unsigned long long)blocks, (unsigned long long)tokens, len);
    g_sink += acc;
}

static bool same_event(const kvb_index_event *x, const kvb_index_event *y, bool salt)
{
    if (x->type != y->type || x->n_hashes != y->n_hashes || x->n_tokens != y->n_tokens ||
        x->has_parent != y->has_parent || x->parent != y->parent)
        return false;
    if (x->type != KVB_INDEX_EV_CLEARED && x->tier != y->tier)
        return false;
    if (x->type == KVB_INDEX_EV_STORED && x->block_size != y->block_size)
        return false;
    if (salt && x->salt_key != y->salt_key)
        return false;
    if (x->n_hashes && memcmp(x->hashes, y->hashes, x->n_hashes * sizeof *x->hashes))
        return false;
    if (x->n_tokens && memcmp(x->tokens, y->tokens, x->n_tokens * sizeof *x->tokens))
        return false;
    return true;
}

static void check_same(const kvb_index_batch *a, const kvb_index_batch *b, bool salt_and_drops,
                       const char *what)
{
    CHECK(a->n_events == b->n_events, "%s: %u vs %u events", what, a->n_events, b->n_events);
    CHECK(memcmp(&a->ts, &b->ts, sizeof a->ts) == 0, "%s: ts %g vs %g", what, a->ts, b->ts);
    CHECK(a->dp_rank == b->dp_rank, "%s: rank", what);
    if (salt_and_drops)
        CHECK(!memcmp(a->dropped, b->dropped, sizeof a->dropped), "%s: drop counts", what);
    for (uint32_t i = 0; i < a->n_events; i++)
        CHECK(same_event(&a->events[i], &b->events[i], salt_and_drops), "%s: event %u differs",
              what, i);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_u64s(msgpack_packer *pk, const uint64_t *v, uint32_t n)
{
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++)
        msgpack_pack_uint64(pk, v[i]);
}

/* Field name (map layout) or nothing (array layout). */
static void key(msgpack_packer *pk, bool map, const char *k)
{
    if (map)
        pack_str(pk, k);
}

/* The decoded batch as vLLM would send it (ts, events, rank). */
static void encode(const kvb_index_batch *b, bool map, msgpack_sbuffer *sb)
{
    static const char *const medium[KVB_TIER_COUNT] = {"GPU", "CPU", "DISK"};
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_double(&pk, b->ts);
    msgpack_pack_array(&pk, b->n_events);
    for (uint32_t i = 0; i < b->n_events; i++) {
        const kvb_index_event *e = &b->events[i];
        const char *tag = e->type == KVB_INDEX_EV_STORED    ? "BlockStored"
                          : e->type == KVB_INDEX_EV_REMOVED ? "BlockRemoved"
                                                            : "AllBlocksCleared";
        uint32_t nf = e->type == KVB_INDEX_EV_STORED ? 6 : e->type == KVB_INDEX_EV_REMOVED ? 2 : 0;
        if (map) {
            msgpack_pack_map(&pk, nf + 1);
            pack_str(&pk, "type");
        } else {
            msgpack_pack_array(&pk, nf + 1);
        }
        pack_str(&pk, tag);
        if (e->type == KVB_INDEX_EV_CLEARED)
            continue;
        key(&pk, map, "block_hashes");
        pack_u64s(&pk, e->hashes, e->n_hashes);
        if (e->type == KVB_INDEX_EV_STORED) {
            key(&pk, map, "parent_block_hash");
            if (e->has_parent)
                msgpack_pack_uint64(&pk, e->parent);
            else
                msgpack_pack_nil(&pk);
            key(&pk, map, "token_ids");
            msgpack_pack_array(&pk, e->n_tokens);
            for (uint32_t j = 0; j < e->n_tokens; j++)
                msgpack_pack_uint32(&pk, e->tokens[j]);
            key(&pk, map, "block_size");
            msgpack_pack_uint32(&pk, e->block_size);
            key(&pk, map, "lora_id");
            msgpack_pack_nil(&pk);
        }
        key(&pk, map, "medium");
        pack_str(&pk, medium[e->tier]);
    }
    if (b->dp_rank >= 0)
        msgpack_pack_int64(&pk, b->dp_rank);
    else
        msgpack_pack_nil(&pk);
}

static void check_reencode(const kvb_index_batch *b, kvb_wire_kind kind)
{
    for (int map = 0; map < 2; map++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        encode(b, map, &sb);
        kvb_index_batch r;
        int rc = kvb_index_decode(sb.data, sb.size, kind, &r);
        CHECK(rc == 0, "re-encoded batch (%s layout) refused: %d", map ? "map" : "array", rc);
        uint32_t drops = 0;
        for (int k = 0; k < KVB_DROP_COUNT; k++)
            drops += r.dropped[k];
        CHECK(drops == 0, "re-encoded batch (%s layout): %u dropped", map ? "map" : "array", drops);
        check_same(b, &r, false, map ? "re-encoded as maps" : "re-encoded as arrays");
        kvb_index_batch_fini(&r);
        msgpack_sbuffer_destroy(&sb);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kvb_index_batch b[3];
    int rc[3];
    for (int kind = 0; kind < 3; kind++) {
        rc[kind] = kvb_index_decode(data, size, (kvb_wire_kind)kind, &b[kind]);
        CHECK(rc[kind] == 0 || rc[kind] == -EBADMSG, "kind %d: rc %d", kind, rc[kind]);
        CHECK(rc[kind] == rc[0], "kind %d: rc %d, kind 0: %d", kind, rc[kind], rc[0]);
        if (rc[kind] < 0) {
            CHECK(b[kind].n_events == 0 && !b[kind].events && !b[kind].priv_,
                  "kind %d: failed decode left data", kind);
            continue;
        }
        check_batch(&b[kind], size);
        kvb_index_batch again;
        CHECK(kvb_index_decode(data, size, (kvb_wire_kind)kind, &again) == 0, "kind %d again",
              kind);
        check_same(&b[kind], &again, true, "decoded twice");
        kvb_index_batch_fini(&again);
    }
    if (rc[0] == 0) {
        check_same(&b[KVB_WIRE_VLLM], &b[KVB_WIRE_KVBLOCK], true, "kvblock vs vllm");
        check_reencode(&b[KVB_WIRE_VLLM], KVB_WIRE_VLLM);
        check_reencode(&b[KVB_WIRE_SGLANG], KVB_WIRE_SGLANG);
    }
    for (int kind = 0; kind < 3; kind++) {
        kvb_index_batch_fini(&b[kind]);
        kvb_index_batch_fini(&b[kind]); /* idempotent */
    }
    return 0;
}
#endif /* KVB_HAVE_ZMQ */
