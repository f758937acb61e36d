/*
 * redis_codec.c - the versioned binary encoding of one Redis log entry
 * (kvblock/redis.h): a normalized batch of kvb_index_event, or a control
 * entry (clear, stale, live, drop). Always built (no hiredis needed), so the
 * encoding is testable and usable without a Redis client.
 *
 * Layout, little-endian, no padding between fields:
 *   0  u32 magic "KVBR"          4  u8 version (1)      5  u8 kind
 *   6  u8 state                  7  u8 clear reason (0 unless CLEAR)
 *   8  u64 ep                   16  i64 seq            24  u32 sub
 *  28  u8 hashes kind           29  u8 n_dropped       30  u16 reserved (0)
 *  32  i64 dp_rank              40  u32 block_size     44  u32 n_events
 *  48  f64 ts                   56  i64 relay_ns
 *  64  u32 dropped[n_dropped]
 *  then n_events events, each 32 bytes of header
 *      u8 type, u8 tier, u8 has_parent, u8 reserved (0),
 *      u32 n_hashes, u32 n_tokens, u32 block_size, u64 parent, u64 salt_key
 *    followed by u64 hashes[n_hashes] and u32 tokens[n_tokens];
 *  last 8 bytes: XXH3-64 (seed 0) of everything before them.
 *
 * Decoding is strict and never trusts a length before checking it against the
 * bytes that remain: the checksum first, then every field (known kind, state,
 * reason, tier, type; reserved bytes zero; counts that fit the buffer; the
 * exact total length). It allocates one block of at most about twice the
 * entry's size. Positions are kept below 2^53 so that the Lua scripts, whose
 * numbers are doubles, compare them exactly.
 */
#include "redis_internal.h"
#include <string.h>
#include <xxhash.h>

#define RC_MAGIC       0x5242564bu /* "KVBR" read as a little-endian u32 */
#define RC_HEADER      64u
#define RC_EVENT       32u
#define RC_SUM         8u
#define RC_MAX_DROPPED 32u
#define RC_POS_MAX     ((int64_t)1 << 53)

static void put8(uint8_t *p, uint8_t v)
{
    p[0] = v;
}
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static bool kind_ok(int k)
{
    return k >= KVB_REDIS_ENTRY_BATCH && k <= KVB_REDIS_ENTRY_DROP;
}

/* The states an entry may carry (the worker's state after it): a batch or a live
 * note LIVE or RESYNCING; a clear LIVE (restart), RESYNCING or STALE (dropped);
 * a stale note STALE; a drop LIVE (0). */
static bool state_ok(int kind, int state)
{
    switch (kind) {
    case KVB_REDIS_ENTRY_BATCH:
    case KVB_REDIS_ENTRY_LIVE:
        return state == KVB_STREAM_LIVE || state == KVB_STREAM_RESYNCING;
    case KVB_REDIS_ENTRY_CLEAR:
        return state == KVB_STREAM_LIVE || state == KVB_STREAM_RESYNCING ||
               state == KVB_STREAM_STALE;
    case KVB_REDIS_ENTRY_STALE:
        return state == KVB_STREAM_STALE;
    default:
        return state == KVB_STREAM_LIVE;
    }
}

static bool position_ok(uint64_t ep, int64_t seq, uint32_t sub)
{
    return ep < (uint64_t)RC_POS_MAX && seq >= -1 && seq < RC_POS_MAX && sub < (1u << 31);
}

KVB_API const char *kvb_redis_entry_kind_name(kvb_redis_entry_kind k)
{
    switch (k) {
    case KVB_REDIS_ENTRY_BATCH:
        return "batch";
    case KVB_REDIS_ENTRY_CLEAR:
        return "clear";
    case KVB_REDIS_ENTRY_STALE:
        return "stale";
    case KVB_REDIS_ENTRY_LIVE:
        return "live";
    case KVB_REDIS_ENTRY_DROP:
        return "drop";
    }
    return "unknown";
}

KVB_API long kvb_redis_entry_encode(const kvb_redis_entry *e, void *buf, size_t cap)
{
    if (!e || !kind_ok((int)e->kind) || !state_ok((int)e->kind, (int)e->state))
        return -EINVAL;
    if ((unsigned)e->reason > KVB_REDIS_CLEAR_ANOMALY ||
        (e->kind != KVB_REDIS_ENTRY_CLEAR && e->reason != KVB_REDIS_CLEAR_OTHER))
        return -EINVAL;
    if (!position_ok(e->ep, e->seq, e->sub) || e->dp_rank < KVB_INDEX_NO_RANK)
        return -EINVAL;
    if ((unsigned)e->hashes > KVB_INDEX_HASHES_ENGINE || e->block_size > 1024)
        return -EINVAL;
    if (e->kind != KVB_REDIS_ENTRY_BATCH && e->n_events)
        return -EINVAL;
    if (e->n_events && !e->events)
        return -EINVAL;
    if (e->n_events > KVB_REDIS_ENTRY_MAX_EVENTS)
        return -E2BIG;

    uint64_t size = RC_HEADER + 4ull * KVB_DROP_COUNT + RC_SUM;
    for (uint32_t i = 0; i < e->n_events; i++) {
        const kvb_index_event *ev = &e->events[i];
        if (ev->type < KVB_INDEX_EV_STORED || ev->type > KVB_INDEX_EV_CLEARED ||
            (unsigned)ev->tier >= KVB_TIER_COUNT)
            return -EINVAL;
        if ((ev->n_hashes && !ev->hashes) || (ev->n_tokens && !ev->tokens))
            return -EINVAL;
        size += RC_EVENT + 8ull * ev->n_hashes + 4ull * ev->n_tokens;
        if (size > KVB_REDIS_ENTRY_MAX_BYTES)
            return -E2BIG;
    }
    if (size > cap || !buf)
        return (long)size;

    uint8_t *p = buf;
    kvb__rle_put32(p, RC_MAGIC);
    put8(p + 4, KVB_REDIS_ENTRY_VERSION);
    put8(p + 5, (uint8_t)e->kind);
    put8(p + 6, (uint8_t)e->state);
    put8(p + 7, (uint8_t)e->reason);
    kvb__rle_put64(p + 8, e->ep);
    kvb__rle_put64(p + 16, (uint64_t)e->seq);
    kvb__rle_put32(p + 24, e->sub);
    put8(p + 28, (uint8_t)e->hashes);
    put8(p + 29, (uint8_t)KVB_DROP_COUNT);
    put16(p + 30, 0);
    kvb__rle_put64(p + 32, (uint64_t)e->dp_rank);
    kvb__rle_put32(p + 40, e->block_size);
    kvb__rle_put32(p + 44, e->n_events);
    uint64_t tsbits;
    memcpy(&tsbits, &e->ts, sizeof tsbits);
    kvb__rle_put64(p + 48, tsbits);
    kvb__rle_put64(p + 56, (uint64_t)e->relay_ns);
    uint8_t *q = p + RC_HEADER;
    for (int r = 0; r < KVB_DROP_COUNT; r++, q += 4)
        kvb__rle_put32(q, e->kind == KVB_REDIS_ENTRY_BATCH ? e->dropped[r] : 0);
    for (uint32_t i = 0; i < e->n_events; i++) {
        const kvb_index_event *ev = &e->events[i];
        put8(q, (uint8_t)ev->type);
        put8(q + 1, (uint8_t)ev->tier);
        put8(q + 2, ev->has_parent ? 1 : 0);
        put8(q + 3, 0);
        kvb__rle_put32(q + 4, ev->n_hashes);
        kvb__rle_put32(q + 8, ev->n_tokens);
        kvb__rle_put32(q + 12, ev->block_size);
        kvb__rle_put64(q + 16, ev->has_parent ? ev->parent : 0);
        kvb__rle_put64(q + 24, ev->salt_key);
        q += RC_EVENT;
        for (uint32_t j = 0; j < ev->n_hashes; j++, q += 8)
            kvb__rle_put64(q, ev->hashes[j]);
        for (uint32_t j = 0; j < ev->n_tokens; j++, q += 4)
            kvb__rle_put32(q, ev->tokens[j]);
    }
    kvb__rle_put64(q, XXH3_64bits(p, (size_t)(q - p)));
    kvb_assert((uint64_t)(q + RC_SUM - p) == size);
    return (long)size;
}

KVB_API void kvb_redis_entry_fini(kvb_redis_entry *e)
{
    if (!e)
        return;
    free(e->priv_);
    e->priv_ = NULL;
    e->events = NULL;
    e->n_events = 0;
}

KVB_API int kvb_redis_entry_decode(const void *buf, size_t len, kvb_redis_entry *out)
{
    if (!out || (!buf && len))
        return -EINVAL;
    memset(out, 0, sizeof *out);
    const uint8_t *p = buf;
    if (len < RC_HEADER + RC_SUM || len > KVB_REDIS_ENTRY_MAX_BYTES)
        return -EBADMSG;
    if (kvb__rle_get32(p) != RC_MAGIC || p[4] != KVB_REDIS_ENTRY_VERSION)
        return -EBADMSG;
    if (kvb__rle_get64(p + len - RC_SUM) != XXH3_64bits(p, len - RC_SUM))
        return -EBADMSG;

    int kind = p[5], state = p[6], reason = p[7];
    uint64_t ep = kvb__rle_get64(p + 8);
    int64_t seq = (int64_t)kvb__rle_get64(p + 16);
    uint32_t sub = kvb__rle_get32(p + 24);
    int hashes = p[28];
    uint32_t n_dropped = p[29];
    int64_t rank = (int64_t)kvb__rle_get64(p + 32);
    uint32_t block_size = kvb__rle_get32(p + 40), n_events = kvb__rle_get32(p + 44);
    if (!kind_ok(kind) || !state_ok(kind, state) || reason > KVB_REDIS_CLEAR_ANOMALY ||
        (kind != KVB_REDIS_ENTRY_CLEAR && reason != 0))
        return -EBADMSG;
    if (!position_ok(ep, seq, sub) || hashes > KVB_INDEX_HASHES_ENGINE ||
        n_dropped > RC_MAX_DROPPED || get16(p + 30) != 0 || rank < KVB_INDEX_NO_RANK ||
        block_size > 1024 || n_events > KVB_REDIS_ENTRY_MAX_EVENTS)
        return -EBADMSG;
    if (kind != KVB_REDIS_ENTRY_BATCH && n_events)
        return -EBADMSG;
    uint64_t tsbits = kvb__rle_get64(p + 48);
    double ts;
    memcpy(&ts, &tsbits, sizeof ts);

    /* pass 1: every count against the bytes that remain */
    const size_t end = len - RC_SUM;
    size_t off = RC_HEADER + 4ull * n_dropped;
    if (off > end)
        return -EBADMSG;
    uint64_t n_hashes = 0, n_tokens = 0;
    for (uint32_t i = 0; i < n_events; i++) {
        if (end - off < RC_EVENT)
            return -EBADMSG;
        const uint8_t *q = p + off;
        uint32_t nh = kvb__rle_get32(q + 4), nt = kvb__rle_get32(q + 8);
        if (q[0] < KVB_INDEX_EV_STORED || q[0] > KVB_INDEX_EV_CLEARED || q[1] >= KVB_TIER_COUNT ||
            q[2] > 1 || q[3] != 0 || kvb__rle_get32(q + 12) > 1024 ||
            (q[2] == 0 && kvb__rle_get64(q + 16) != 0))
            return -EBADMSG;
        off += RC_EVENT;
        uint64_t need = 8ull * nh + 4ull * nt;
        if (need > end - off)
            return -EBADMSG;
        off += (size_t)need;
        n_hashes += nh;
        n_tokens += nt;
    }
    if (off != end)
        return -EBADMSG;

    /* pass 2: one allocation (events, hashes, tokens), then copy */
    size_t bytes =
        (size_t)n_events * sizeof(kvb_index_event) + (size_t)n_hashes * 8 + (size_t)n_tokens * 4;
    void *mem = NULL;
    if (bytes) {
        mem = malloc(bytes);
        if (!mem)
            return -ENOMEM;
    }
    kvb_index_event *evs = mem;
    /* no pointer arithmetic on NULL (an empty batch allocates nothing: UBSan) */
    uint64_t *hp = mem ? (uint64_t *)(evs + n_events) : NULL;
    uint32_t *tp = mem ? (uint32_t *)(hp + n_hashes) : NULL;
    off = RC_HEADER + 4ull * n_dropped;
    for (uint32_t i = 0; i < n_events; i++) {
        const uint8_t *q = p + off;
        kvb_index_event *ev = &evs[i];
        memset(ev, 0, sizeof *ev);
        ev->type = (kvb_index_ev_type)q[0];
        ev->tier = (kvb_tier)q[1];
        ev->has_parent = q[2] != 0;
        ev->n_hashes = kvb__rle_get32(q + 4);
        ev->n_tokens = kvb__rle_get32(q + 8);
        ev->block_size = kvb__rle_get32(q + 12);
        ev->parent = kvb__rle_get64(q + 16);
        ev->salt_key = kvb__rle_get64(q + 24);
        q += RC_EVENT;
        ev->hashes = ev->n_hashes ? hp : NULL;
        for (uint32_t j = 0; j < ev->n_hashes; j++, q += 8)
            *hp++ = kvb__rle_get64(q);
        ev->tokens = ev->n_tokens ? tp : NULL;
        for (uint32_t j = 0; j < ev->n_tokens; j++, q += 4)
            *tp++ = kvb__rle_get32(q);
        off = (size_t)(q - p);
    }

    out->kind = (kvb_redis_entry_kind)kind;
    out->ep = ep;
    out->seq = seq;
    out->sub = sub;
    out->state = (kvb_stream_state)state;
    out->reason = (kvb_redis_clear_reason)reason;
    out->dp_rank = rank;
    out->hashes = (kvb_index_hashes_kind)hashes;
    out->block_size = block_size;
    out->ts = ts;
    out->relay_ns = (int64_t)kvb__rle_get64(p + 56);
    out->n_events = n_events;
    out->events = n_events ? evs : NULL;
    for (uint32_t r = 0; r < n_dropped && r < KVB_DROP_COUNT; r++)
        out->dropped[r] = kvb__rle_get32(p + RC_HEADER + 4 * r);
    out->priv_ = mem;
    return 0;
}
