/*
 * wire.c - kvb_index_decode(): one raw KV-event payload of vLLM, SGLang or
 * kvblock's publisher (msgpack) into the normalized kvb_index_event form of
 * include/kvblock/index.h. Decoding is pure: no index, no lock, any thread.
 *
 * Sources of the layouts (read before changing anything here):
 *  - vLLM vllm/distributed/kv_events.py: EventBatch(ts, events,
 *    data_parallel_rank = None), events msgspec structs with tag=True,
 *    omit_defaults=True. Older releases: array_like=True everywhere (batch
 *    [ts, events, rank], events [tag, field, ...] in declaration order);
 *    current releases: events are maps {"type": tag, field: value, ...} and the
 *    batch is an array or, without array_like, a map. Field order of
 *    BlockStored: block_hashes, parent_block_hash, token_ids, block_size,
 *    lora_id, medium, lora_name, extra_keys, group_idx, kv_cache_spec_kind,
 *    kv_cache_spec_sliding_window (later ones only exist in later releases;
 *    fields with a None default are omitted, so arrays may end early).
 *    BlockRemoved: block_hashes, medium, group_idx. AllBlocksCleared: none.
 *    TierBlocksCleared {"type", "medium"} (newer vLLM: clears one tier).
 *    Hashes: u64 (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES) or the raw digest
 *    bytes, whose int form vLLM defines as the low 64 bits = the last 8 bytes,
 *    big-endian.
 *  - SGLang python/sglang/srt/disaggregation/kv_events.py: batch [ts, events,
 *    attn_dp_rank] (older: [ts, events]); BlockStored [tag, block_hashes,
 *    parent_block_hash, token_ids, block_size, lora_id, medium?,
 *    metadata{cache_salt}?] or the same as a tagged map (with "cache_salt"
 *    directly in some versions); BlockRemoved [tag, block_hashes, medium?];
 *    signed 64-bit hashes; bigram (EAGLE) token ids as [t, t+1] pairs; media
 *    "GPU", "CPU_PINNED", "DISK", "EXTERNAL".
 *  - kvblock (lib/publisher.c): vLLM's shapes; hashes are router hashes.
 *
 * Rules (FLEET.md sections 2, 3, 9), where the wire is ambiguous:
 *  - Batch: array [ts, events, rank, ...] (at least 2 elements; more are
 *    ignored) or map {"ts", "events", "data_parallel_rank" | "attn_dp_rank"}.
 *    ts: a finite float or an int. rank: nil/absent -> KVB_INDEX_NO_RANK, else
 *    an int >= 0. Anything else about the batch (root not a batch, events not
 *    an array, trailing bytes after the object, a duplicate key, both rank
 *    keys with different values) is -EBADMSG: nothing of it is applied.
 *  - Event: a map with a string "type", or an array with a string tag first.
 *    Unknown types are skipped (KVB_DROP_UNKNOWN_TYPE); unknown map keys and
 *    array elements past the known ones are ignored. A known field of the wrong
 *    type, a missing required field (those without a default in every known
 *    release: block_hashes, parent_block_hash, token_ids, block_size of
 *    BlockStored; block_hashes of BlockRemoved; medium of TierBlocksCleared) or
 *    a duplicate map key drops that event (KVB_DROP_MALFORMED); the rest of the
 *    batch still decodes. Nothing of a dropped event is trusted.
 *  - Hashes: non-negative ints; negative ints (SGLang) as their two's
 *    complement u64; 16- or 32-byte bin/str digests (vLLM's xxh3-128 and
 *    sha256) -> the last 8 bytes big-endian. Anything else is malformed.
 *  - token_ids: ints 0..UINT32_MAX; for SGLANG streams also [t, t1] pairs
 *    (all elements pairs), of which the first token is kept.
 *  - medium: nil/absent/"GPU" -> device; "CPU", "CPU_PINNED" (SGLang's host
 *    tier) -> host; "DISK", "STORAGE" -> disk; each also in lower case.
 *    Anything else ("EXTERNAL", ...) skips the event (KVB_DROP_MEDIUM).
 *  - Groups: group_idx absent/nil/0 is the main attention group; > 0 skips the
 *    event (KVB_DROP_GROUP). kv_cache_spec_kind / _sliding_window are ignored
 *    unless they prove a non-main group: a sliding window > 0, or a kind
 *    naming a sliding-window, chunked-local or mamba spec, skip the event
 *    (KVB_DROP_GROUP) even in group 0: such blocks are not prefix holders.
 *  - Salt: salt_key = kvb_index_salt_key(LoRA, cache salt), the LoRA being
 *    lora_name, or lora_id in decimal when there is an id but no name; the
 *    cache salt is SGLang's "cache_salt" (or metadata.cache_salt; both present
 *    and different is malformed).
 *  - extra_keys (vLLM, one entry per block, nil or a tuple): an entry whose
 *    elements are all the event's own LoRA identity (the lora_name string, the
 *    lora_id int, or a typed {"type": "lora", "name": lora_name} key) is
 *    reproducible from tokens + salt_key. Any other element (multimodal
 *    (identifier, offset) pairs, prompt-embedding digests, vLLM's cache_salt
 *    string, typed "mm" / "prompt_embeds" / "cache_salt" / "legacy" keys) makes
 *    the block unreproducible by a router that only sees tokens: the event is
 *    truncated before the first such block and the blocks from there on are
 *    counted (KVB_DROP_MULTIMODAL counts blocks; every other reason counts
 *    events). Such a block is never indexed under the plain-text key. An
 *    extra_keys array of another length than block_hashes is malformed.
 *  - TierBlocksCleared(medium) becomes KVB_INDEX_EV_CLEARED (tier = its
 *    medium's): the index clears the whole stream, which over-clears the other
 *    tiers but never leaves a cleared block behind (no false positive);
 *    skipping it as unknown would.
 *  - KVB_WIRE_KVBLOCK decodes exactly as KVB_WIRE_VLLM: the stream's
 *    kvb_index_hashes_kind says what the hashes mean.
 *
 * Bounds. A payload is at most KVB_WIRE_MAX_BYTES. msgpack-c allocates an
 * array's or map's element table as soon as it reads its header, before it
 * knows whether the elements exist: a 5-byte payload declaring 2^32 elements
 * asks for 96 GiB. So the payload first goes through msgpack-c's own unpack
 * template (msgpack/unpack_template.h, the parser behind msgpack_unpack_next)
 * instantiated with callbacks that build nothing and only add up the declared
 * element counts: every element takes at least one byte, so a payload whose
 * containers declare more elements than it has bytes is refused (-EBADMSG)
 * before anything is allocated. Then msgpack_unpack_next builds the object
 * tree (memory proportional to len), the events are decoded from it, and
 * everything the batch keeps (events, hashes, tokens) is copied into one
 * allocation owned by the batch (priv_); the tree is freed before returning.
 * Nesting deeper than msgpack-c's MSGPACK_EMBED_STACK_SIZE (32) is refused by
 * both passes alike.
 *
 * Built with msgpack-c when mk/zmq.mk found it (KVB_HAVE_ZMQ); otherwise
 * kvb_index_decode() is -ENOTSUP.
 */
#include "internal.h"
#include "kvblock/index.h"
#include <string.h>

/** Largest payload kvb_index_decode() reads (bytes). */
#define KVB_WIRE_MAX_BYTES (64u << 20)

KVB_API void kvb_index_batch_fini(kvb_index_batch *b)
{
    if (!b)
        return;
    free(b->priv_);
    memset(b, 0, sizeof *b);
}

#ifndef KVB_HAVE_ZMQ

KVB_API int kvb_index_decode(const void *payload, size_t len, kvb_wire_kind kind,
                             kvb_index_batch *out)
{
    (void)payload;
    (void)len;
    (void)kind;
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    return -ENOTSUP;
}

#else /* KVB_HAVE_ZMQ */

#include <inttypes.h>
#include <math.h>
#include <msgpack.h>

/* ---- bounds pass: msgpack-c's unpack template, counting only ------------------ */

typedef struct kvb_wire_bound {
    uint64_t elems; /* array elements + map keys and values declared so far */
    uint64_t limit; /* bytes in the payload: no valid payload declares more */
} kvb_wire_bound;

/* The template's object type: nothing is built. */
typedef int kvb_wire_nothing;

static inline kvb_wire_nothing kvb_wire_cb_root(kvb_wire_bound *u)
{
    (void)u;
    return 0;
}
#define KVB_WIRE_CB_FIXED(name, type)                                                              \
    static inline int kvb_wire_cb_##name(kvb_wire_bound *u, type v, kvb_wire_nothing *o)           \
    {                                                                                              \
        (void)u;                                                                                   \
        (void)v;                                                                                   \
        *o = 0;                                                                                    \
        return 0;                                                                                  \
    }
KVB_WIRE_CB_FIXED(uint8, uint8_t)
KVB_WIRE_CB_FIXED(uint16, uint16_t)
KVB_WIRE_CB_FIXED(uint32, uint32_t)
KVB_WIRE_CB_FIXED(uint64, uint64_t)
KVB_WIRE_CB_FIXED(int8, int8_t)
KVB_WIRE_CB_FIXED(int16, int16_t)
KVB_WIRE_CB_FIXED(int32, int32_t)
KVB_WIRE_CB_FIXED(int64, int64_t)
KVB_WIRE_CB_FIXED(float, float)
KVB_WIRE_CB_FIXED(double, double)
#undef KVB_WIRE_CB_FIXED
#define KVB_WIRE_CB_SIMPLE(name)                                                                   \
    static inline int kvb_wire_cb_##name(kvb_wire_bound *u, kvb_wire_nothing *o)                   \
    {                                                                                              \
        (void)u;                                                                                   \
        *o = 0;                                                                                    \
        return 0;                                                                                  \
    }
KVB_WIRE_CB_SIMPLE(nil)
KVB_WIRE_CB_SIMPLE(true)
KVB_WIRE_CB_SIMPLE(false)
#undef KVB_WIRE_CB_SIMPLE
#define KVB_WIRE_CB_BYTES(name)                                                                    \
    static inline int kvb_wire_cb_##name(kvb_wire_bound *u, const char *b, const char *p,          \
                                         unsigned int l, kvb_wire_nothing *o)                      \
    {                                                                                              \
        (void)u;                                                                                   \
        (void)b;                                                                                   \
        (void)p;                                                                                   \
        (void)l;                                                                                   \
        *o = 0;                                                                                    \
        return 0;                                                                                  \
    }
KVB_WIRE_CB_BYTES(str)
KVB_WIRE_CB_BYTES(bin)
KVB_WIRE_CB_BYTES(ext)
#undef KVB_WIRE_CB_BYTES

/* A container header: its elements must fit in the payload (a negative return
 * stops the template with an error). */
static inline int kvb_wire_cb_array(kvb_wire_bound *u, unsigned int n, kvb_wire_nothing *o)
{
    *o = 0;
    u->elems += n;
    return u->elems > u->limit ? -1 : 0;
}
static inline int kvb_wire_cb_map(kvb_wire_bound *u, unsigned int n, kvb_wire_nothing *o)
{
    *o = 0;
    u->elems += 2 * (uint64_t)n;
    return u->elems > u->limit ? -1 : 0;
}
static inline int kvb_wire_cb_array_item(kvb_wire_bound *u, kvb_wire_nothing *c, kvb_wire_nothing o)
{
    (void)u;
    (void)c;
    (void)o;
    return 0;
}
static inline int kvb_wire_cb_map_item(kvb_wire_bound *u, kvb_wire_nothing *c, kvb_wire_nothing k,
                                       kvb_wire_nothing v)
{
    (void)u;
    (void)c;
    (void)k;
    (void)v;
    return 0;
}

#define msgpack_unpack_struct(name)    struct kvb_wire_tpl##name
#define msgpack_unpack_func(ret, name) static ret kvb_wire_tpl##name
#define msgpack_unpack_callback(name)  kvb_wire_cb##name
#define msgpack_unpack_object          kvb_wire_nothing
#define msgpack_unpack_user            kvb_wire_bound
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <msgpack/unpack_define.h>
#include <msgpack/unpack_template.h>
#pragma GCC diagnostic pop
#undef push_variable_value
#undef again_fixed_trail
#undef again_fixed_trail_if_zero
#undef start_container
#undef NEXT_CS
#undef SWITCH_RANGE_BEGIN
#undef SWITCH_RANGE
#undef SWITCH_RANGE_DEFAULT
#undef SWITCH_RANGE_END

/* 0 when payload is exactly one msgpack object whose containers declare no
 * more elements than it has bytes; -EBADMSG otherwise. Allocates nothing. */
static int kvb_wire_bounds(const char *payload, size_t len)
{
    struct kvb_wire_tpl_context ctx;
    kvb_wire_tpl_init(&ctx);
    ctx.user.elems = 0;
    ctx.user.limit = len;
    size_t off = 0;
    int ret = kvb_wire_tpl_execute(&ctx, payload, len, &off);
    return ret == 1 && off == len ? 0 : -EBADMSG;
}

/* ---- small readers over msgpack-c objects -------------------------------------- */

/* Whether o is the string literal lit (its length known at compile time). */
#define kvb_wire_is(o, lit) kvb_wire_same_str((o), (lit), sizeof(lit) - 1)

static bool kvb_wire_nil(const msgpack_object *o)
{
    return !o || o->type == MSGPACK_OBJECT_NIL;
}

static bool kvb_wire_same_str(const msgpack_object *a, const char *p, size_t n)
{
    return a->type == MSGPACK_OBJECT_STR && a->via.str.size == n &&
           (n == 0 || memcmp(a->via.str.ptr, p, n) == 0);
}

/* A block hash: u64, negative int as its two's complement, or the last 8 bytes
 * (big-endian) of a 16- or 32-byte digest. */
static bool kvb_wire_hash(const msgpack_object *o, uint64_t *h)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *h = o->via.u64;
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *h = (uint64_t)o->via.i64;
        return true;
    case MSGPACK_OBJECT_BIN:
    case MSGPACK_OBJECT_STR: {
        /* bin and str share the layout of msgpack_object_str */
        const char *p = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr : o->via.str.ptr;
        uint32_t n = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.size : o->via.str.size;
        if (n != 16 && n != 32)
            return false;
        uint64_t v = 0;
        for (uint32_t i = n - 8; i < n; i++)
            v = v << 8 | (unsigned char)p[i];
        *h = v;
        return true;
    }
    default:
        return false;
    }
}

/* An optional non-negative int (nil/absent: def). false: wrong type. */
static bool kvb_wire_opt_uint(const msgpack_object *o, uint64_t def, uint64_t *v)
{
    if (kvb_wire_nil(o)) {
        *v = def;
        return true;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *v = o->via.u64;
    return true;
}

/* An optional string (nil/absent: NULL, 0; "" is not NULL). false: wrong type. */
static bool kvb_wire_opt_str(const msgpack_object *o, const char **p, size_t *n)
{
    *p = NULL;
    *n = 0;
    if (kvb_wire_nil(o))
        return true;
    if (o->type != MSGPACK_OBJECT_STR)
        return false;
    *p = o->via.str.size ? o->via.str.ptr : ""; /* present, even when empty */
    *n = o->via.str.size;
    return true;
}

/* ---- event fields ---------------------------------------------------------------- */

enum {
    F_HASHES,
    F_PARENT,
    F_TOKENS,
    F_BLOCK_SIZE,
    F_LORA_ID,
    F_MEDIUM,
    F_LORA_NAME,
    F_EXTRA_KEYS,
    F_GROUP_IDX,
    F_SPEC_KIND,
    F_SLIDING,
    F_CACHE_SALT,
    F_METADATA,
    F_COUNT
};

#define KVB_WIRE_NAME(s)                                                                           \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
static const struct {
    const char *s;
    size_t n;
} kvb_wire_field_name[F_COUNT] = {KVB_WIRE_NAME("block_hashes"),
                                  KVB_WIRE_NAME("parent_block_hash"),
                                  KVB_WIRE_NAME("token_ids"),
                                  KVB_WIRE_NAME("block_size"),
                                  KVB_WIRE_NAME("lora_id"),
                                  KVB_WIRE_NAME("medium"),
                                  KVB_WIRE_NAME("lora_name"),
                                  KVB_WIRE_NAME("extra_keys"),
                                  KVB_WIRE_NAME("group_idx"),
                                  KVB_WIRE_NAME("kv_cache_spec_kind"),
                                  KVB_WIRE_NAME("kv_cache_spec_sliding_window"),
                                  KVB_WIRE_NAME("cache_salt"),
                                  KVB_WIRE_NAME("metadata")};
#undef KVB_WIRE_NAME

typedef enum { T_STORED, T_REMOVED, T_CLEARED, T_TIER_CLEARED, T_UNKNOWN } kvb_wire_type;

/* Fields in declaration order (the legacy array layout after the tag) and how
 * many of the first ones are required (no default in any known release). */
typedef struct kvb_wire_schema {
    uint8_t n, required;
    int8_t field[11];
} kvb_wire_schema;

static const kvb_wire_schema kvb_wire_vllm_stored = {
    11,
    4,
    {F_HASHES, F_PARENT, F_TOKENS, F_BLOCK_SIZE, F_LORA_ID, F_MEDIUM, F_LORA_NAME, F_EXTRA_KEYS,
     F_GROUP_IDX, F_SPEC_KIND, F_SLIDING}};
static const kvb_wire_schema kvb_wire_sglang_stored = {
    7, 4, {F_HASHES, F_PARENT, F_TOKENS, F_BLOCK_SIZE, F_LORA_ID, F_MEDIUM, F_METADATA}};
static const kvb_wire_schema kvb_wire_vllm_removed = {3, 1, {F_HASHES, F_MEDIUM, F_GROUP_IDX}};
static const kvb_wire_schema kvb_wire_sglang_removed = {2, 1, {F_HASHES, F_MEDIUM}};
static const kvb_wire_schema kvb_wire_cleared = {0, 0, {0}};
static const kvb_wire_schema kvb_wire_tier_cleared = {1, 1, {F_MEDIUM}};

static const kvb_wire_schema *kvb_wire_schema_of(kvb_wire_type t, kvb_wire_kind kind)
{
    bool sg = kind == KVB_WIRE_SGLANG;
    switch (t) {
    case T_STORED:
        return sg ? &kvb_wire_sglang_stored : &kvb_wire_vllm_stored;
    case T_REMOVED:
        return sg ? &kvb_wire_sglang_removed : &kvb_wire_vllm_removed;
    case T_CLEARED:
        return &kvb_wire_cleared;
    default:
        return &kvb_wire_tier_cleared;
    }
}

/* Map keys an event type reads, whatever the dialect (a map names its fields,
 * so a salt or LoRA name is never ignored because of the stream's kind). */
static bool kvb_wire_map_reads(kvb_wire_type t, int f)
{
    switch (t) {
    case T_STORED:
        return true;
    case T_REMOVED:
        return f == F_HASHES || f == F_MEDIUM || f == F_GROUP_IDX;
    case T_TIER_CLEARED:
        return f == F_MEDIUM;
    default:
        return false;
    }
}

static kvb_wire_type kvb_wire_type_of(const msgpack_object *tag)
{
    if (kvb_wire_is(tag, "BlockStored"))
        return T_STORED;
    if (kvb_wire_is(tag, "BlockRemoved"))
        return T_REMOVED;
    if (kvb_wire_is(tag, "AllBlocksCleared"))
        return T_CLEARED;
    if (kvb_wire_is(tag, "TierBlocksCleared"))
        return T_TIER_CLEARED;
    return T_UNKNOWN;
}

/* One event's fields located in either layout. */
typedef struct kvb_wire_fields {
    kvb_wire_type type;
    const msgpack_object *f[F_COUNT]; /* NULL: absent */
} kvb_wire_fields;

/* "Not dropped": drop reasons start at 0 (KVB_DROP_MALFORMED). */
#define KVB_WIRE_OK (-1)

/* Locate the fields of event o. Returns KVB_WIRE_OK, or the drop reason
 * (KVB_DROP_MALFORMED, KVB_DROP_UNKNOWN_TYPE). */
static int kvb_wire_locate(const msgpack_object *o, kvb_wire_kind kind, kvb_wire_fields *w)
{
    memset(w, 0, sizeof *w);
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        const msgpack_object_array *a = &o->via.array;
        if (a->size == 0 || a->ptr[0].type != MSGPACK_OBJECT_STR)
            return KVB_DROP_MALFORMED;
        w->type = kvb_wire_type_of(&a->ptr[0]);
        if (w->type == T_UNKNOWN)
            return KVB_DROP_UNKNOWN_TYPE;
        const kvb_wire_schema *s = kvb_wire_schema_of(w->type, kind);
        if (a->size - 1 < s->required)
            return KVB_DROP_MALFORMED;
        for (uint32_t i = 0; i < s->n && i + 1 < a->size; i++)
            w->f[s->field[i]] = &a->ptr[i + 1];
        return KVB_WIRE_OK;
    }
    if (o->type != MSGPACK_OBJECT_MAP)
        return KVB_DROP_MALFORMED;
    const msgpack_object_map *m = &o->via.map;
    const msgpack_object *tag = NULL;
    for (uint32_t i = 0; i < m->size; i++) {
        if (kvb_wire_is(&m->ptr[i].key, "type")) {
            if (tag)
                return KVB_DROP_MALFORMED; /* two "type" keys: ambiguous */
            tag = &m->ptr[i].val;
        }
    }
    if (!tag || tag->type != MSGPACK_OBJECT_STR)
        return KVB_DROP_MALFORMED;
    w->type = kvb_wire_type_of(tag);
    if (w->type == T_UNKNOWN)
        return KVB_DROP_UNKNOWN_TYPE;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            continue; /* not a field name: an unknown key */
        for (int f = 0; f < F_COUNT; f++) {
            if (!kvb_wire_map_reads(w->type, f) ||
                !kvb_wire_same_str(k, kvb_wire_field_name[f].s, kvb_wire_field_name[f].n))
                continue;
            if (w->f[f])
                return KVB_DROP_MALFORMED; /* duplicate key */
            w->f[f] = &m->ptr[i].val;
        }
    }
    const kvb_wire_schema *s = kvb_wire_schema_of(w->type, kind);
    for (uint32_t i = 0; i < s->required; i++)
        if (!w->f[s->field[i]])
            return KVB_DROP_MALFORMED;
    return KVB_WIRE_OK;
}

/* Element counts that the event's hashes and tokens can take (upper bounds
 * for the output buffer; 0 when the field is absent or not an array). */
static void kvb_wire_sizes(const kvb_wire_fields *w, size_t *nh, size_t *nt)
{
    const msgpack_object *h = w->f[F_HASHES], *t = w->f[F_TOKENS];
    *nh = h && h->type == MSGPACK_OBJECT_ARRAY ? h->via.array.size : 0;
    *nt = t && t->type == MSGPACK_OBJECT_ARRAY ? t->via.array.size : 0;
}

/* medium -> tier; false for a string that names no tier. nil/absent: device. */
static bool kvb_wire_tier(const char *p, size_t n, kvb_tier *tier)
{
    static const struct {
        const char *up, *low;
        kvb_tier tier;
    } media[] = {{"GPU", "gpu", KVB_TIER_DEVICE},
                 {"CPU", "cpu", KVB_TIER_HOST},
                 {"CPU_PINNED", "cpu_pinned", KVB_TIER_HOST},
                 {"DISK", "disk", KVB_TIER_DISK},
                 {"STORAGE", "storage", KVB_TIER_DISK}};
    if (!p) {
        *tier = KVB_TIER_DEVICE;
        return true;
    }
    for (size_t i = 0; i < sizeof media / sizeof media[0]; i++) {
        size_t l = strlen(media[i].up);
        if (n == l && (!memcmp(p, media[i].up, l) || !memcmp(p, media[i].low, l))) {
            *tier = media[i].tier;
            return true;
        }
    }
    return false;
}

/* Whether kv_cache_spec_kind names a spec whose blocks are not prefix holders. */
static bool kvb_wire_non_main_kind(const char *p, size_t n)
{
    static const char *const words[] = {"sliding", "chunked", "mamba"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t l = strlen(words[i]);
        for (size_t j = 0; j + l <= n; j++)
            if (!memcmp(p + j, words[i], l))
                return true;
    }
    return false;
}

/* The event's LoRA identity, for extra_keys: the name, or the id. */
typedef struct kvb_wire_lora {
    const char *name;
    size_t name_len; /* 0: no name */
    bool has_id;
    const msgpack_object *id;
} kvb_wire_lora;

/* One element of a block's extra keys: true when it is the event's own LoRA. */
static bool kvb_wire_lora_key(const msgpack_object *k, const kvb_wire_lora *l)
{
    if (k->type == MSGPACK_OBJECT_STR)
        return l->name_len > 0 && kvb_wire_same_str(k, l->name, l->name_len);
    if (k->type == MSGPACK_OBJECT_POSITIVE_INTEGER || k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return l->has_id && l->id->type == k->type && l->id->via.u64 == k->via.u64;
    if (k->type == MSGPACK_OBJECT_MAP) { /* typed key: {"type": "lora", "name": ...} */
        const msgpack_object *type = NULL, *name = NULL;
        for (uint32_t i = 0; i < k->via.map.size; i++) {
            const msgpack_object_kv *kv = &k->via.map.ptr[i];
            if (kvb_wire_is(&kv->key, "type")) {
                if (type)
                    return false;
                type = &kv->val;
            } else if (kvb_wire_is(&kv->key, "name")) {
                if (name)
                    return false;
                name = &kv->val;
            }
        }
        return type && name && kvb_wire_is(type, "lora") && l->name_len > 0 &&
               kvb_wire_same_str(name, l->name, l->name_len);
    }
    return false;
}

/* Where decoded hashes and tokens go (sized by kvb_wire_sizes' bounds). */
typedef struct kvb_wire_sink {
    uint64_t *h;
    uint32_t *t;
    size_t nh, nt; /* used so far */
} kvb_wire_sink;

/* Decode event o into *ev. Returns KVB_WIRE_OK when the event is emitted, else the drop
 * reason of the skipped event (counted by the caller; the caller also adds
 * *mm_blocks to KVB_DROP_MULTIMODAL). */
static int kvb_wire_event(const msgpack_object *o, kvb_wire_kind kind, kvb_index_event *ev,
                          kvb_wire_sink *out, uint32_t *mm_blocks)
{
    kvb_wire_fields w;
    *mm_blocks = 0;
    int why = kvb_wire_locate(o, kind, &w);
    if (why != KVB_WIRE_OK)
        return why;
    memset(ev, 0, sizeof *ev);

    /* medium and group: every type that has them */
    const char *med;
    size_t med_len;
    if (!kvb_wire_opt_str(w.f[F_MEDIUM], &med, &med_len))
        return KVB_DROP_MALFORMED;
    uint64_t group;
    if (!kvb_wire_opt_uint(w.f[F_GROUP_IDX], 0, &group))
        return KVB_DROP_MALFORMED;

    if (w.type == T_CLEARED || w.type == T_TIER_CLEARED) {
        if (w.type == T_TIER_CLEARED && !med)
            return KVB_DROP_MALFORMED; /* medium is required */
        if (!kvb_wire_tier(med, med_len, &ev->tier))
            return KVB_DROP_MEDIUM; /* nothing of ours lives there */
        ev->type = KVB_INDEX_EV_CLEARED;
        return KVB_WIRE_OK;
    }

    /* hashes: STORED and REMOVED */
    const msgpack_object *ha = w.f[F_HASHES];
    if (ha->type != MSGPACK_OBJECT_ARRAY)
        return KVB_DROP_MALFORMED;
    uint64_t *h = out->h + out->nh;
    uint32_t n = ha->via.array.size;
    for (uint32_t i = 0; i < n; i++)
        if (!kvb_wire_hash(&ha->via.array.ptr[i], &h[i]))
            return KVB_DROP_MALFORMED;

    if (w.type == T_REMOVED) {
        if (group > 0)
            return KVB_DROP_GROUP;
        if (!kvb_wire_tier(med, med_len, &ev->tier))
            return KVB_DROP_MEDIUM;
        ev->type = KVB_INDEX_EV_REMOVED;
        ev->n_hashes = n;
        ev->hashes = n ? h : NULL;
        out->nh += n;
        return KVB_WIRE_OK;
    }

    /* STORED: every field is checked before any filter applies */
    const msgpack_object *par = w.f[F_PARENT];
    if (!kvb_wire_nil(par)) {
        if (!kvb_wire_hash(par, &ev->parent))
            return KVB_DROP_MALFORMED;
        ev->has_parent = true;
    }
    const msgpack_object *ta = w.f[F_TOKENS];
    if (ta->type != MSGPACK_OBJECT_ARRAY)
        return KVB_DROP_MALFORMED;
    uint32_t *t = out->t + out->nt;
    uint32_t nt = ta->via.array.size;
    bool pairs =
        nt > 0 && kind == KVB_WIRE_SGLANG && ta->via.array.ptr[0].type == MSGPACK_OBJECT_ARRAY;
    for (uint32_t i = 0; i < nt; i++) {
        const msgpack_object *x = &ta->via.array.ptr[i];
        if (pairs) {
            if (x->type != MSGPACK_OBJECT_ARRAY || x->via.array.size != 2 ||
                x->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                x->via.array.ptr[1].via.u64 > UINT32_MAX)
                return KVB_DROP_MALFORMED;
            x = &x->via.array.ptr[0];
        }
        if (x->type != MSGPACK_OBJECT_POSITIVE_INTEGER || x->via.u64 > UINT32_MAX)
            return KVB_DROP_MALFORMED;
        t[i] = (uint32_t)x->via.u64;
    }
    const msgpack_object *bs = w.f[F_BLOCK_SIZE];
    if (bs->type != MSGPACK_OBJECT_POSITIVE_INTEGER || bs->via.u64 == 0 || bs->via.u64 > UINT32_MAX)
        return KVB_DROP_MALFORMED;
    ev->block_size = (uint32_t)bs->via.u64;

    kvb_wire_lora lora = {NULL, 0, false, NULL};
    const msgpack_object *lid = w.f[F_LORA_ID];
    if (!kvb_wire_nil(lid)) {
        if (lid->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
            lid->type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
            return KVB_DROP_MALFORMED;
        lora.has_id = true;
        lora.id = lid;
    }
    if (!kvb_wire_opt_str(w.f[F_LORA_NAME], &lora.name, &lora.name_len))
        return KVB_DROP_MALFORMED;
    const char *salt, *msalt = NULL;
    size_t salt_len, msalt_len = 0;
    if (!kvb_wire_opt_str(w.f[F_CACHE_SALT], &salt, &salt_len))
        return KVB_DROP_MALFORMED;
    const msgpack_object *meta = w.f[F_METADATA];
    if (!kvb_wire_nil(meta)) {
        if (meta->type != MSGPACK_OBJECT_MAP)
            return KVB_DROP_MALFORMED;
        const msgpack_object *ms = NULL;
        for (uint32_t i = 0; i < meta->via.map.size; i++) {
            if (!kvb_wire_is(&meta->via.map.ptr[i].key, "cache_salt"))
                continue;
            if (ms)
                return KVB_DROP_MALFORMED;
            ms = &meta->via.map.ptr[i].val;
        }
        if (ms && !kvb_wire_opt_str(ms, &msalt, &msalt_len))
            return KVB_DROP_MALFORMED;
    }
    if (msalt_len) {
        if (salt_len && (salt_len != msalt_len || memcmp(salt, msalt, salt_len)))
            return KVB_DROP_MALFORMED; /* two different salts */
        salt = msalt;
        salt_len = msalt_len;
    }
    const char *kind_s;
    size_t kind_len;
    if (!kvb_wire_opt_str(w.f[F_SPEC_KIND], &kind_s, &kind_len))
        return KVB_DROP_MALFORMED;
    uint64_t window;
    if (!kvb_wire_opt_uint(w.f[F_SLIDING], 0, &window))
        return KVB_DROP_MALFORMED;
    /* extra_keys: the first block whose keys a router cannot reproduce */
    const msgpack_object *xk = w.f[F_EXTRA_KEYS];
    uint32_t keep = n;
    if (!kvb_wire_nil(xk)) {
        if (xk->type != MSGPACK_OBJECT_ARRAY || xk->via.array.size != n)
            return KVB_DROP_MALFORMED;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *e = &xk->via.array.ptr[i];
            if (kvb_wire_nil(e))
                continue;
            if (e->type != MSGPACK_OBJECT_ARRAY)
                return KVB_DROP_MALFORMED;
            for (uint32_t j = 0; j < e->via.array.size && keep == n; j++)
                if (!kvb_wire_lora_key(&e->via.array.ptr[j], &lora))
                    keep = i;
        }
    }

    /* filters, in this order: group, medium, unreproducible blocks */
    if (group > 0 || window > 0 || (kind_s && kvb_wire_non_main_kind(kind_s, kind_len)))
        return KVB_DROP_GROUP;
    if (!kvb_wire_tier(med, med_len, &ev->tier))
        return KVB_DROP_MEDIUM;
    if (keep < n) {
        *mm_blocks = n - keep;
        if (keep == 0)
            return KVB_DROP_MULTIMODAL;
        uint64_t tk = (uint64_t)keep * ev->block_size;
        if (tk < nt)
            nt = (uint32_t)tk;
        n = keep;
    }

    char id_text[24];
    const char *lname = lora.name_len ? lora.name : NULL;
    size_t llen = lora.name_len;
    if (!lname && lora.has_id) {
        int k = lora.id->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                    ? snprintf(id_text, sizeof id_text, "%" PRIu64, lora.id->via.u64)
                    : snprintf(id_text, sizeof id_text, "%" PRId64, lora.id->via.i64);
        lname = id_text;
        llen = (size_t)k;
    }
    ev->salt_key = kvb_index_salt_key(lname, llen, salt_len ? salt : NULL, salt_len);
    ev->type = KVB_INDEX_EV_STORED;
    ev->n_hashes = n;
    ev->hashes = n ? h : NULL;
    ev->n_tokens = nt;
    ev->tokens = nt ? t : NULL;
    out->nh += n;
    out->nt += nt;
    return KVB_WIRE_OK;
}

/* ---- the batch ------------------------------------------------------------------- */

static bool kvb_wire_rank(const msgpack_object *o, int64_t *rank)
{
    if (kvb_wire_nil(o)) {
        *rank = KVB_INDEX_NO_RANK;
        return true;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > INT64_MAX)
        return false;
    *rank = (int64_t)o->via.u64;
    return true;
}

/* Locate ts, events and rank of the root object. 0 or -EBADMSG. */
static int kvb_wire_batch(const msgpack_object *root, double *ts, const msgpack_object **events,
                          int64_t *rank)
{
    const msgpack_object *t = NULL, *ev = NULL, *r1 = NULL, *r2 = NULL;
    if (root->type == MSGPACK_OBJECT_ARRAY) {
        if (root->via.array.size < 2)
            return -EBADMSG;
        t = &root->via.array.ptr[0];
        ev = &root->via.array.ptr[1];
        r1 = root->via.array.size > 2 ? &root->via.array.ptr[2] : NULL;
    } else if (root->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < root->via.map.size; i++) {
            const msgpack_object *k = &root->via.map.ptr[i].key, *v = &root->via.map.ptr[i].val;
            const msgpack_object **slot = kvb_wire_is(k, "ts")                   ? &t
                                          : kvb_wire_is(k, "events")             ? &ev
                                          : kvb_wire_is(k, "data_parallel_rank") ? &r1
                                          : kvb_wire_is(k, "attn_dp_rank")       ? &r2
                                                                                 : NULL;
            if (!slot)
                continue;
            if (*slot)
                return -EBADMSG; /* duplicate key */
            *slot = v;
        }
        if (!t || !ev)
            return -EBADMSG;
    } else {
        return -EBADMSG;
    }
    switch (t->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *ts = t->via.f64;
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *ts = (double)t->via.u64;
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *ts = (double)t->via.i64;
        break;
    default:
        return -EBADMSG;
    }
    if (!isfinite(*ts) || ev->type != MSGPACK_OBJECT_ARRAY)
        return -EBADMSG;
    int64_t a, b;
    if (!kvb_wire_rank(r1, &a) || !kvb_wire_rank(r2, &b))
        return -EBADMSG;
    if (a != KVB_INDEX_NO_RANK && b != KVB_INDEX_NO_RANK && a != b)
        return -EBADMSG; /* two ranks */
    *rank = a != KVB_INDEX_NO_RANK ? a : b;
    *events = ev;
    return 0;
}

KVB_API int kvb_index_decode(const void *payload, size_t len, kvb_wire_kind kind,
                             kvb_index_batch *out)
{
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    if ((!payload && len > 0) ||
        (kind != KVB_WIRE_VLLM && kind != KVB_WIRE_SGLANG && kind != KVB_WIRE_KVBLOCK))
        return -EINVAL;
    if (len == 0 || len > KVB_WIRE_MAX_BYTES)
        return -EBADMSG;
    int rc = kvb_wire_bounds(payload, len);
    if (rc < 0)
        return rc;

    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    switch (msgpack_unpack_next(&u, payload, len, &off)) {
    case MSGPACK_UNPACK_SUCCESS:
        break;
    case MSGPACK_UNPACK_NOMEM_ERROR:
        msgpack_unpacked_destroy(&u);
        return -ENOMEM;
    default: /* the bounds pass accepted it: not expected */
        msgpack_unpacked_destroy(&u);
        return -EBADMSG;
    }

    double ts;
    const msgpack_object *events;
    int64_t rank;
    rc = kvb_wire_batch(&u.data, &ts, &events, &rank);
    if (rc < 0) {
        msgpack_unpacked_destroy(&u);
        return rc;
    }

    /* one allocation: events, then hashes, then tokens (upper bounds) */
    uint32_t ne = events->via.array.size;
    size_t nh = 0, nt = 0;
    for (uint32_t i = 0; i < ne; i++) {
        kvb_wire_fields w;
        size_t h, t;
        if (kvb_wire_locate(&events->via.array.ptr[i], kind, &w) == KVB_WIRE_OK) {
            kvb_wire_sizes(&w, &h, &t);
            nh += h;
            nt += t;
        }
    }
    size_t bytes = (size_t)ne * sizeof(kvb_index_event) + nh * sizeof(uint64_t) +
                   nt * sizeof(uint32_t); /* each count <= len <= 64 MiB: no overflow */
    void *mem = NULL;
    if (bytes) {
        mem = malloc(bytes);
        if (!mem) {
            msgpack_unpacked_destroy(&u);
            return -ENOMEM;
        }
    }
    kvb_index_event *ev = mem;
    kvb_wire_sink sink = {NULL, NULL, 0, 0}; /* no memory: no events to decode */
    if (mem) {
        sink.h = (uint64_t *)(ev + ne);
        sink.t = (uint32_t *)(sink.h + nh);
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < ne; i++) {
        uint32_t mm;
        int why = kvb_wire_event(&events->via.array.ptr[i], kind, &ev[n], &sink, &mm);
        if (why == KVB_WIRE_OK)
            n++;
        else if (why != KVB_DROP_MULTIMODAL)
            out->dropped[why]++;
        out->dropped[KVB_DROP_MULTIMODAL] += mm;
    }
    kvb_assert(sink.nh <= nh && sink.nt <= nt);
    msgpack_unpacked_destroy(&u);
    out->ts = ts;
    out->dp_rank = rank;
    out->n_events = n;
    out->events = n ? ev : NULL;
    out->priv_ = mem;
    return 0;
}

#endif /* KVB_HAVE_ZMQ */
