/*
 * test_index.c - the fleet index (kvblock/index.h, FLEET.md sections 2-6):
 * every event transition (stored, removed, cleared; copies; tiers and the
 * device/host/disk arithmetic of a match), ENGINE streams (router hashes
 * recomputed from tokens equal kvb_index_hashes, parents chained across
 * events, unknown parents dropped, REMOVED by engine hash, engine map lifetime
 * across tiers and copies), LoRA and cache-salt keys, block-size mismatches,
 * streams (add, find, remove, worker_remove, clear, states, liveness ticks),
 * the capacity bound, result order and top-k, snapshots (round trip of a
 * randomized index, every truncation, single-byte corruption), allocation
 * failure at every allocation of create / stream_add / apply / load, the
 * Prometheus text, memory accounting, and a randomized model test against a
 * plain reference model.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvblock.h"
#include "kvblock/index.h"
#include "support/fail_alloc.h"
#include "support/rng.h"

/* ---- helpers ---------------------------------------------------------------- */

static kvb_index *mk_cfg(const kvb_index_config *cfg)
{
    kvb_index *idx = NULL;
    int rc = kvb_index_create(cfg, &idx);
    cr_assert_eq(rc, 0, "kvb_index_create: %s", kvb_strerror(rc));
    return idx;
}

static kvb_index *mk(uint32_t shards)
{
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.shards = shards;
    return mk_cfg(&cfg);
}

static uint32_t add_kind(kvb_index *idx, const char *name, int64_t rank, kvb_index_hashes_kind k)
{
    kvb_index_stream_config sc = {.name = name, .dp_rank = rank, .hashes = k, .block_size = 0};
    uint32_t id = KVB_INDEX_NO_STREAM;
    int rc = kvb_index_stream_add(idx, &sc, &id);
    cr_assert_eq(rc, 0, "stream_add(%s, %lld): %s", name, (long long)rank, kvb_strerror(rc));
    return id;
}

static uint32_t add(kvb_index *idx, const char *name, int64_t rank)
{
    return add_kind(idx, name, rank, KVB_INDEX_HASHES_ROUTER);
}

static kvb_index_event ev_of(kvb_index_ev_type type, kvb_tier tier, const uint64_t *h, uint32_t n)
{
    kvb_index_event e;
    memset(&e, 0, sizeof e);
    e.type = type;
    e.tier = tier;
    e.hashes = h;
    e.n_hashes = n;
    return e;
}

static void apply1(kvb_index *idx, uint32_t sid, kvb_index_event e)
{
    int rc = kvb_index_apply(idx, sid, &e, 1, -1);
    cr_assert_eq(rc, 0, "apply: %s", kvb_strerror(rc));
}

static void store(kvb_index *idx, uint32_t sid, kvb_tier t, const uint64_t *h, uint32_t n)
{
    apply1(idx, sid, ev_of(KVB_INDEX_EV_STORED, t, h, n));
}

static void removed(kvb_index *idx, uint32_t sid, kvb_tier t, const uint64_t *h, uint32_t n)
{
    apply1(idx, sid, ev_of(KVB_INDEX_EV_REMOVED, t, h, n));
}

static void cleared(kvb_index *idx, uint32_t sid)
{
    apply1(idx, sid, ev_of(KVB_INDEX_EV_CLEARED, KVB_TIER_DEVICE, NULL, 0));
}

/* The result of stream sid in a match of h[0..n), or NULL. */
static kvb_index_result RES[64];
static const kvb_index_result *match_of(kvb_index *idx, const uint64_t *h, uint32_t n, uint32_t sid)
{
    int r = kvb_index_match(idx, h, n, RES, 64);
    cr_assert(r >= 0, "match: %s", kvb_strerror(r));
    for (int i = 0; i < r && i < 64; i++)
        if (RES[i].stream == sid)
            return &RES[i];
    return NULL;
}

/* device/host/disk of stream sid (0,0,0 when absent). */
static void expect(kvb_index *idx, const uint64_t *h, uint32_t n, uint32_t sid, uint32_t dev,
                   uint32_t host, uint32_t disk)
{
    const kvb_index_result *r = match_of(idx, h, n, sid);
    uint32_t d = r ? r->device : 0, ho = r ? r->host : 0, di = r ? r->disk : 0;
    cr_assert(d == dev && ho == host && di == disk,
              "stream %u: got device %u host %u disk %u, want %u %u %u", sid, d, ho, di, dev, host,
              disk);
    if (r)
        cr_assert(dev + host + disk > 0);
}

static kvb_index_stream_info info(kvb_index *idx, uint32_t sid)
{
    kvb_index_stream_info in;
    cr_assert_eq(kvb_index_stream_info_get(idx, sid, &in), 0);
    return in;
}

static const uint64_t H[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* ---- config and create ------------------------------------------------------ */

Test(index, config_defaults_and_bad_configs)
{
    kvb_index_config c;
    kvb_index_config_init(&c);
    cr_assert_eq(c.block_size, 16);
    cr_assert_eq(c.seed, KVB_HASH_DYNAMO_SEED);
    cr_assert_float_eq(c.tier_weight[0], 1.0, 1e-12);
    cr_assert_float_eq(c.tier_weight[1], 0.8, 1e-12);
    cr_assert_float_eq(c.tier_weight[2], 0.5, 1e-12);
    cr_assert_eq(c.max_streams, 4096);
    cr_assert_eq(c.max_entries_per_stream, 1u << 24);

    kvb_index *idx = NULL;
    cr_assert_eq(kvb_index_create(NULL, NULL), -EINVAL);
    kvb_index_config b = c;
    b.block_size = 12;
    cr_assert_eq(kvb_index_create(&b, &idx), -EINVAL);
    b = c;
    b.block_size = 2048;
    cr_assert_eq(kvb_index_create(&b, &idx), -EINVAL);
    b = c;
    b.shards = 3;
    cr_assert_eq(kvb_index_create(&b, &idx), -EINVAL);
    b = c;
    b.shards = 2048;
    cr_assert_eq(kvb_index_create(&b, &idx), -EINVAL);
    b = c;
    b.tier_weight[1] = -1;
    cr_assert_eq(kvb_index_create(&b, &idx), -EINVAL);
    b = c;
    b.max_streams = (1u << 20) + 1;
    cr_assert_eq(kvb_index_create(&b, &idx), -EINVAL);
    b = c;
    b.max_entries_per_stream = 0;
    cr_assert_eq(kvb_index_create(&b, &idx), -EINVAL);
    cr_assert_null(idx);

    idx = mk_cfg(NULL);
    kvb_index_config g;
    cr_assert_eq(kvb_index_config_get(idx, &g), 0);
    cr_assert(g.shards >= 1 && (g.shards & (g.shards - 1)) == 0);
    cr_assert_eq(g.block_size, 16);
    cr_assert_eq(kvb_index_destroy(idx), 0);
    cr_assert_eq(kvb_index_destroy(NULL), -EINVAL);
}

Test(index, names)
{
    cr_assert_str_eq(kvb_stream_state_name(KVB_STREAM_LIVE), "live");
    cr_assert_str_eq(kvb_stream_state_name(KVB_STREAM_RESYNCING), "resyncing");
    cr_assert_str_eq(kvb_stream_state_name(KVB_STREAM_LAGGING), "lagging");
    cr_assert_str_eq(kvb_stream_state_name(KVB_STREAM_STALE), "stale");
    cr_assert_str_eq(kvb_stream_state_name((kvb_stream_state)9), "unknown");
    const char *drops[] = {"malformed",  "unknown_type",   "group",     "medium",
                           "multimodal", "unknown_parent", "no_tokens", "block_size",
                           "capacity",   "unknown_block",  "duplicate"};
    for (int i = 0; i < KVB_DROP_COUNT; i++)
        cr_assert_str_eq(kvb_drop_reason_name((kvb_drop_reason)i), drops[i]);
    cr_assert_str_eq(kvb_drop_reason_name(KVB_DROP_COUNT), "unknown");
    cr_assert_str_eq(kvb_tier_name(KVB_TIER_DEVICE), "device");
    cr_assert_str_eq(kvb_tier_name(KVB_TIER_HOST), "host");
    cr_assert_str_eq(kvb_tier_name(KVB_TIER_DISK), "disk");
}

/* ---- events ----------------------------------------------------------------- */

Test(index, stored_removed_prefix)
{
    uint32_t shards[] = {1, 4, 16, 64};
    for (size_t si = 0; si < 4; si++) {
        kvb_index *idx = mk(shards[si]);
        uint32_t a = add(idx, "a", 0), b = add(idx, "b", 0);
        store(idx, a, KVB_TIER_DEVICE, H, 8);
        store(idx, b, KVB_TIER_DEVICE, H, 3);
        expect(idx, H, 8, a, 8, 0, 0);
        expect(idx, H, 8, b, 3, 0, 0);
        expect(idx, H, 2, a, 2, 0, 0);
        /* a hole in a's prefix */
        removed(idx, a, KVB_TIER_DEVICE, H + 4, 1);
        expect(idx, H, 8, a, 4, 0, 0);
        /* no prefix at all: left out */
        expect(idx, H + 3, 3, b, 0, 0, 0);
        expect(idx, H + 1, 3, b, 2, 0, 0); /* any key may start a request */
        int r = kvb_index_match(idx, H + 8, 2, RES, 64);
        cr_assert_eq(r, 0);
        cr_assert_eq(info(idx, a).entries, 7);
        cr_assert_eq(info(idx, b).entries, 3);
        kvb_index_stats s;
        cr_assert_eq(kvb_index_stats_get(idx, &s), 0);
        cr_assert_eq(s.streams, 2);
        cr_assert_eq(s.keys, 7);
        cr_assert_eq(s.entries, 10);
        cr_assert_eq(kvb_index_destroy(idx), 0);
    }
}

Test(index, key_zero_is_a_key)
{
    kvb_index *idx = mk(4);
    uint32_t a = add(idx, "a", 0);
    uint64_t z[2] = {0, 0x10};
    store(idx, a, KVB_TIER_DEVICE, z, 2);
    expect(idx, z, 2, a, 2, 0, 0);
    removed(idx, a, KVB_TIER_DEVICE, z, 1);
    expect(idx, z, 2, a, 0, 0, 0);
    expect(idx, z + 1, 1, a, 1, 0, 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, copies)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0);
    store(idx, a, KVB_TIER_DEVICE, H, 2);
    store(idx, a, KVB_TIER_DEVICE, H, 1); /* a second copy of H[0] */
    cr_assert_eq(info(idx, a).entries, 2);
    removed(idx, a, KVB_TIER_DEVICE, H, 1);
    expect(idx, H, 2, a, 2, 0, 0); /* one copy left */
    removed(idx, a, KVB_TIER_DEVICE, H, 1);
    expect(idx, H, 2, a, 0, 0, 0);
    /* a third REMOVED is of an unknown block: counted, harmless */
    removed(idx, a, KVB_TIER_DEVICE, H, 1);
    cr_assert_eq(info(idx, a).dropped[KVB_DROP_UNKNOWN_BLOCK], 1);
    removed(idx, a, KVB_TIER_HOST, H + 1, 1); /* held on device, not host */
    cr_assert_eq(info(idx, a).dropped[KVB_DROP_UNKNOWN_BLOCK], 2);
    expect(idx, H + 1, 1, a, 1, 0, 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, tiers_arithmetic)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0);
    /* H0..H2 device, H3..H4 host, H5 disk, H6 device: device 3, host 2, disk 2 */
    store(idx, a, KVB_TIER_DEVICE, H, 3);
    store(idx, a, KVB_TIER_HOST, H + 3, 2);
    store(idx, a, KVB_TIER_DISK, H + 5, 1);
    store(idx, a, KVB_TIER_DEVICE, H + 6, 1);
    expect(idx, H, 8, a, 3, 2, 2);
    const kvb_index_result *r = match_of(idx, H, 8, a);
    cr_assert_float_eq(r->score, 3 * 1.0 + 2 * 0.8 + 2 * 0.5, 1e-9);
    /* H1 also on disk, then removed from device: device 1; host prefix stops at
     * H1 (disk only) -> host 0; any tier 7 -> disk 6 */
    store(idx, a, KVB_TIER_DISK, H + 1, 1);
    removed(idx, a, KVB_TIER_DEVICE, H + 1, 1);
    expect(idx, H, 8, a, 1, 0, 6);
    /* tiers are independent: removing from disk leaves a hole at H1 */
    removed(idx, a, KVB_TIER_DISK, H + 1, 1);
    expect(idx, H, 8, a, 1, 0, 0);
    /* host and device for one block: device counts first */
    store(idx, a, KVB_TIER_HOST, H + 1, 1);
    store(idx, a, KVB_TIER_DEVICE, H + 1, 1);
    expect(idx, H, 8, a, 3, 2, 2);
    cr_assert_eq(info(idx, a).entries, 8); /* (key, tier) pairs */
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, cleared_keeps_last_seq)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0), b = add(idx, "b", 0);
    kvb_index_event e = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DEVICE, H, 4);
    cr_assert_eq(kvb_index_apply(idx, a, &e, 1, 7), 0);
    store(idx, b, KVB_TIER_DEVICE, H, 4);
    cr_assert_eq(info(idx, a).last_seq, 7);
    cleared(idx, a);
    kvb_index_stream_info in = info(idx, a);
    cr_assert_eq(in.last_seq, 7);
    cr_assert_eq(in.entries, 0);
    cr_assert_eq(in.counters[KVB_COUNT_CLEARS], 1);
    cr_assert_eq(in.batches, 2);
    cr_assert_eq(in.events, 2);
    expect(idx, H, 4, a, 0, 0, 0);
    expect(idx, H, 4, b, 4, 0, 0);
    /* stream_clear: same, with a state */
    cr_assert_eq(kvb_index_stream_clear(idx, b, KVB_STREAM_RESYNCING), 0);
    in = info(idx, b);
    cr_assert_eq(in.state, KVB_STREAM_RESYNCING);
    cr_assert_eq(in.entries, 0);
    cr_assert_eq(in.last_seq, -1);
    cr_assert_eq(in.counters[KVB_COUNT_CLEARS], 1);
    cr_assert_eq(kvb_index_stream_clear(idx, b, (kvb_stream_state)7), -EINVAL);
    cr_assert_eq(kvb_index_stream_clear(idx, 99, KVB_STREAM_LIVE), -ENOENT);
    kvb_index_stats s;
    kvb_index_stats_get(idx, &s);
    cr_assert_eq(s.keys, 0);
    cr_assert_eq(s.entries, 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, batch_with_clear_in_the_middle)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0);
    kvb_index_event e[4] = {
        ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DEVICE, H, 6),
        ev_of(KVB_INDEX_EV_CLEARED, KVB_TIER_DEVICE, NULL, 0),
        ev_of(KVB_INDEX_EV_STORED, KVB_TIER_HOST, H, 2),
        ev_of(KVB_INDEX_EV_REMOVED, KVB_TIER_DEVICE, H, 1),
    };
    cr_assert_eq(kvb_index_apply(idx, a, e, 4, 3), 0);
    expect(idx, H, 6, a, 0, 2, 0);
    kvb_index_stream_info in = info(idx, a);
    cr_assert_eq(in.dropped[KVB_DROP_UNKNOWN_BLOCK], 1);
    cr_assert_eq(in.entries, 2);
    cr_assert_eq(in.events, 4);
    cr_assert_eq(in.last_seq, 3);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, apply_bad_input)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0);
    kvb_index_event e = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DEVICE, H, 2);
    cr_assert_eq(kvb_index_apply(NULL, a, &e, 1, 0), -EINVAL);
    cr_assert_eq(kvb_index_apply(idx, a, NULL, 1, 0), -EINVAL);
    cr_assert_eq(kvb_index_apply(idx, a, NULL, 0, 5), 0); /* an empty batch */
    cr_assert_eq(info(idx, a).last_seq, 5);
    cr_assert_eq(kvb_index_apply(idx, 42, &e, 1, 0), -ENOENT);
    kvb_index_event bad[2] = {e, e};
    bad[1].type = (kvb_index_ev_type)9;
    cr_assert_eq(kvb_index_apply(idx, a, bad, 2, 9), -EINVAL);
    bad[1] = e;
    bad[1].tier = (kvb_tier)3;
    cr_assert_eq(kvb_index_apply(idx, a, bad, 2, 9), -EINVAL);
    bad[1] = e;
    bad[1].hashes = NULL;
    cr_assert_eq(kvb_index_apply(idx, a, bad, 2, 9), -EINVAL);
    /* nothing changed by the refused batches */
    kvb_index_stream_info in = info(idx, a);
    cr_assert_eq(in.entries, 0);
    cr_assert_eq(in.last_seq, 5);
    cr_assert_eq(in.batches, 1);
    expect(idx, H, 2, a, 0, 0, 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, block_size_mismatch_dropped)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0);
    kvb_index_event e = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DEVICE, H, 3);
    e.block_size = 32;
    apply1(idx, a, e);
    e.block_size = 16;
    apply1(idx, a, ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DEVICE, H + 5, 1));
    kvb_index_stream_info in = info(idx, a);
    cr_assert_eq(in.dropped[KVB_DROP_BLOCK_SIZE], 3);
    cr_assert_eq(in.entries, 1);
    apply1(idx, a, e);
    expect(idx, H, 3, a, 3, 0, 0);
    /* a ROUTER stream of another block size takes events of its own size */
    kvb_index_stream_config sc = {.name = "b32", .dp_rank = 0, .block_size = 32};
    uint32_t b;
    cr_assert_eq(kvb_index_stream_add(idx, &sc, &b), 0);
    cr_assert_eq(info(idx, b).block_size, 32);
    apply1(idx, b, e); /* 16 != 32 */
    cr_assert_eq(info(idx, b).dropped[KVB_DROP_BLOCK_SIZE], 3);
    e.block_size = 0; /* the stream's */
    apply1(idx, b, e);
    cr_assert_eq(info(idx, b).entries, 3);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

/* ---- streams ---------------------------------------------------------------- */

Test(index, stream_add_find_remove)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "w", 0), b = add(idx, "w", 1), c = add(idx, "x", KVB_INDEX_NO_RANK);
    cr_assert_eq(a, 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(c, 2);
    kvb_index_stream_config sc = {.name = "w", .dp_rank = 1};
    uint32_t id = 77;
    cr_assert_eq(kvb_index_stream_add(idx, &sc, &id), -EEXIST);
    cr_assert_eq(id, b);
    cr_assert_eq(kvb_index_stream_find(idx, "w", 1, &id), 0);
    cr_assert_eq(id, b);
    cr_assert_eq(kvb_index_stream_find(idx, "x", KVB_INDEX_NO_RANK, &id), 0);
    cr_assert_eq(id, c);
    cr_assert_eq(kvb_index_stream_find(idx, "w", 2, &id), -ENOENT);
    cr_assert_eq(kvb_index_stream_find(idx, "nope", 0, &id), -ENOENT);
    cr_assert_eq(kvb_index_stream_find(idx, NULL, 0, &id), -EINVAL);

    /* bad configs */
    kvb_index_stream_config bad = {.name = "", .dp_rank = 0};
    cr_assert_eq(kvb_index_stream_add(idx, &bad, &id), -EINVAL);
    char longname[KVB_INDEX_NAME_MAX + 1];
    memset(longname, 'n', sizeof longname - 1);
    longname[KVB_INDEX_NAME_MAX] = 0;
    bad.name = longname;
    cr_assert_eq(kvb_index_stream_add(idx, &bad, &id), -EINVAL);
    longname[KVB_INDEX_NAME_MAX - 1] = 0; /* 63 bytes: fine */
    cr_assert_eq(kvb_index_stream_add(idx, &bad, &id), 0);
    cr_assert_eq(kvb_index_stream_remove(idx, id), 0);
    bad.name = "ok";
    bad.dp_rank = -5;
    cr_assert_eq(kvb_index_stream_add(idx, &bad, &id), -EINVAL);
    bad.dp_rank = 0;
    bad.hashes = (kvb_index_hashes_kind)5;
    cr_assert_eq(kvb_index_stream_add(idx, &bad, &id), -EINVAL);
    bad.hashes = KVB_INDEX_HASHES_ROUTER;
    bad.block_size = 24;
    cr_assert_eq(kvb_index_stream_add(idx, &bad, &id), -EINVAL);
    cr_assert_eq(kvb_index_stream_add(idx, NULL, &id), -EINVAL);
    cr_assert_eq(kvb_index_stream_add(idx, &sc, NULL), -EINVAL);

    store(idx, a, KVB_TIER_DEVICE, H, 4);
    store(idx, b, KVB_TIER_DEVICE, H, 4);
    cr_assert_eq(kvb_index_stream_remove(idx, a), 0);
    cr_assert_eq(kvb_index_stream_remove(idx, a), -ENOENT);
    cr_assert_eq(kvb_index_stream_info_get(idx, a, &(kvb_index_stream_info){0}), -ENOENT);
    expect(idx, H, 4, b, 4, 0, 0);
    cr_assert_eq(kvb_index_match(idx, H, 4, RES, 64), 1);
    /* the id is reused by the next add */
    uint32_t d = add(idx, "y", 0);
    cr_assert_eq(d, a);
    cr_assert_eq(info(idx, d).entries, 0);
    expect(idx, H, 4, d, 0, 0, 0);

    uint32_t ids[8];
    cr_assert_eq(kvb_index_streams(idx, ids, 8), 3);
    cr_assert_eq(ids[0], 0);
    cr_assert_eq(ids[1], 1);
    cr_assert_eq(ids[2], 2);
    cr_assert_eq(kvb_index_streams(idx, ids, 1), 3);

    store(idx, c, KVB_TIER_DEVICE, H, 2);
    add(idx, "w", 5);
    cr_assert_eq(kvb_index_worker_remove(idx, "w"), 2);
    cr_assert_eq(kvb_index_worker_remove(idx, "w"), 0);
    cr_assert_eq(kvb_index_worker_remove(idx, NULL), -EINVAL);
    cr_assert_eq(kvb_index_streams(idx, ids, 8), 2);
    kvb_index_stats s;
    kvb_index_stats_get(idx, &s);
    cr_assert_eq(s.streams, 2);
    cr_assert_eq(s.keys, 2);
    cr_assert_eq(s.entries, 2);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, max_streams)
{
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.max_streams = 3;
    kvb_index *idx = mk_cfg(&cfg);
    add(idx, "a", 0);
    uint32_t b = add(idx, "b", 0);
    add(idx, "c", 0);
    kvb_index_stream_config sc = {.name = "d"};
    uint32_t id;
    cr_assert_eq(kvb_index_stream_add(idx, &sc, &id), -ENOSPC);
    cr_assert_eq(kvb_index_stream_remove(idx, b), 0);
    cr_assert_eq(kvb_index_stream_add(idx, &sc, &id), 0);
    cr_assert_eq(id, b);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, state_filtering)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0);
    store(idx, a, KVB_TIER_DEVICE, H, 3);
    kvb_stream_state matched[] = {KVB_STREAM_LIVE, KVB_STREAM_RESYNCING, KVB_STREAM_LAGGING};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(kvb_index_stream_set_state(idx, a, matched[i]), 0);
        const kvb_index_result *r = match_of(idx, H, 3, a);
        cr_assert_not_null(r);
        cr_assert_eq(r->state, matched[i]);
    }
    cr_assert_eq(kvb_index_stream_set_state(idx, a, KVB_STREAM_STALE), 0);
    cr_assert_null(match_of(idx, H, 3, a));
    cr_assert_eq(info(idx, a).entries, 3); /* kept */
    cr_assert_eq(kvb_index_stream_set_state(idx, a, (kvb_stream_state)4), -EINVAL);
    cr_assert_eq(kvb_index_stream_set_state(idx, 9, KVB_STREAM_LIVE), -ENOENT);
    cr_assert_eq(kvb_index_stream_set_state(idx, a, KVB_STREAM_LIVE), 0);
    cr_assert_not_null(match_of(idx, H, 3, a));
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, counters_seq_drop)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0);
    cr_assert_eq(kvb_index_stream_set_seq(idx, a, 41), 0);
    cr_assert_eq(kvb_index_stream_count(idx, a, KVB_COUNT_GAPS, 2), 0);
    cr_assert_eq(kvb_index_stream_count(idx, a, KVB_COUNT_REPLAYS, 5), 0);
    cr_assert_eq(kvb_index_stream_count(idx, a, KVB_COUNT_COUNT, 5), -EINVAL);
    cr_assert_eq(kvb_index_stream_count(idx, 7, KVB_COUNT_GAPS, 5), -ENOENT);
    uint32_t d[KVB_DROP_COUNT] = {0};
    d[KVB_DROP_GROUP] = 3;
    d[KVB_DROP_DUPLICATE] = 1;
    cr_assert_eq(kvb_index_stream_drop(idx, a, d), 0);
    cr_assert_eq(kvb_index_stream_drop(idx, a, NULL), -EINVAL);
    cr_assert_eq(kvb_index_stream_set_seq(idx, 8, 1), -ENOENT);
    kvb_index_stream_info in = info(idx, a);
    cr_assert_eq(in.last_seq, 41);
    cr_assert_eq(in.counters[KVB_COUNT_GAPS], 2);
    cr_assert_eq(in.counters[KVB_COUNT_REPLAYS], 5);
    cr_assert_eq(in.dropped[KVB_DROP_GROUP], 3);
    cr_assert_eq(in.dropped[KVB_DROP_DUPLICATE], 1);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, liveness_tick)
{
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.stale_after_s = 10;
    cfg.drop_after_s = 100;
    kvb_index *idx = mk_cfg(&cfg);
    uint32_t a = add(idx, "a", 0), b = add(idx, "b", 0);
    store(idx, a, KVB_TIER_DEVICE, H, 3);
    store(idx, b, KVB_TIER_DEVICE, H, 3);
    const int64_t S = 1000000000;
    /* an idle stream stays live: no transport report, no change */
    cr_assert_eq(kvb_index_tick(idx, 1000 * S), 0);
    cr_assert_eq(kvb_index_stream_heard(idx, a, false, 1000 * S), 0);
    cr_assert_eq(kvb_index_stream_heard(idx, a, false, 1005 * S), 0); /* still since 1000 */
    cr_assert_eq(kvb_index_tick(idx, 1009 * S), 0);
    cr_assert_eq(info(idx, a).state, KVB_STREAM_LIVE);
    cr_assert_eq(kvb_index_tick(idx, 1010 * S), 1);
    cr_assert_eq(info(idx, a).state, KVB_STREAM_STALE);
    cr_assert_null(match_of(idx, H, 3, a));
    cr_assert_eq(kvb_index_tick(idx, 1011 * S), 0);
    /* back before drop_after: live again, entries kept */
    cr_assert_eq(kvb_index_stream_heard(idx, a, true, 1050 * S), 0);
    kvb_index_stream_info in = info(idx, a);
    cr_assert_eq(in.state, KVB_STREAM_LIVE);
    cr_assert_eq(in.entries, 3);
    cr_assert_eq(in.last_heard_ns, 1050 * S);
    expect(idx, H, 3, a, 3, 0, 0);
    /* down again past drop_after: entries freed (a clear), stays STALE */
    cr_assert_eq(kvb_index_stream_heard(idx, a, false, 2000 * S), 0);
    cr_assert_eq(kvb_index_tick(idx, 2100 * S), 1);
    in = info(idx, a);
    cr_assert_eq(in.state, KVB_STREAM_STALE);
    cr_assert_eq(in.entries, 0);
    cr_assert_eq(in.counters[KVB_COUNT_CLEARS], 1);
    cr_assert_eq(kvb_index_tick(idx, 2200 * S), 0); /* not cleared twice */
    cr_assert_eq(info(idx, a).counters[KVB_COUNT_CLEARS], 1);
    cr_assert_eq(kvb_index_stream_heard(idx, a, true, 2300 * S), 0);
    cr_assert_eq(info(idx, a).state, KVB_STREAM_LIVE);
    expect(idx, H, 3, b, 3, 0, 0);
    cr_assert_eq(kvb_index_stream_heard(idx, 9, true, 0), -ENOENT);
    cr_assert_eq(kvb_index_tick(NULL, 0), -EINVAL);
    cr_assert(kvb_index_now_ns() > 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, capacity_bound)
{
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.max_entries_per_stream = 4;
    kvb_index *idx = mk_cfg(&cfg);
    uint32_t a = add(idx, "a", 0);
    store(idx, a, KVB_TIER_DEVICE, H, 6);
    kvb_index_stream_info in = info(idx, a);
    cr_assert_eq(in.entries, 4);
    cr_assert_eq(in.dropped[KVB_DROP_CAPACITY], 2);
    expect(idx, H, 6, a, 4, 0, 0);
    store(idx, a, KVB_TIER_HOST, H, 1);   /* a new (key, tier): dropped */
    store(idx, a, KVB_TIER_DEVICE, H, 1); /* a copy: no new entry, kept */
    cr_assert_eq(info(idx, a).dropped[KVB_DROP_CAPACITY], 3);
    removed(idx, a, KVB_TIER_DEVICE, H + 3, 1);
    store(idx, a, KVB_TIER_HOST, H + 3, 1); /* room again */
    expect(idx, H, 6, a, 3, 1, 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, order_and_top_k)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0), b = add(idx, "b", 0), c = add(idx, "c", 0), d = add(idx, "c", 1),
             e = add(idx, "e", 0);
    store(idx, a, KVB_TIER_DEVICE, H, 2); /* score 2 */
    store(idx, b, KVB_TIER_HOST, H, 4);   /* 3.2 */
    store(idx, c, KVB_TIER_DEVICE, H, 3); /* 3, 3 entries */
    store(idx, d, KVB_TIER_DEVICE, H, 3); /* 3, 3 entries: after c (rank) */
    store(idx, e, KVB_TIER_DEVICE, H, 3); /* 3, 5 entries: after c and d (load) */
    store(idx, e, KVB_TIER_DEVICE, H + 10, 2);
    uint32_t want[] = {b, c, d, e, a};
    for (uint32_t k = 0; k <= 6; k++) {
        kvb_index_result out[8];
        memset(out, 0xee, sizeof out);
        int r = kvb_index_match(idx, H, 8, out, k);
        cr_assert_eq(r, 5);
        for (uint32_t i = 0; i < k && i < 5; i++)
            cr_assert_eq(out[i].stream, want[i], "k %u pos %u: %u", k, i, out[i].stream);
        if (k < 8)
            cr_assert_eq(((unsigned char *)&out[k < 5 ? k : 5])[0], 0xee); /* not written */
    }
    kvb_index_result out[5];
    kvb_index_match(idx, H, 8, out, 5);
    cr_assert_str_eq(out[0].worker, "b");
    cr_assert_eq(out[0].host, 4);
    cr_assert_float_eq(out[0].score, 3.2, 1e-9);
    cr_assert_eq(out[3].entries, 5);
    cr_assert_eq(out[2].dp_rank, 1);
    cr_assert_eq(kvb_index_match(idx, NULL, 1, out, 1), -EINVAL);
    cr_assert_eq(kvb_index_match(idx, H, 1, NULL, 1), -EINVAL);
    cr_assert_eq(kvb_index_match(idx, H, 1, NULL, 0), 5);
    cr_assert_eq(kvb_index_match(idx, NULL, 0, NULL, 0), 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, many_holders)
{
    /* more holders of hashes[0] than the match's stack candidates: heap path,
     * and holder arrays growing past several doublings */
    kvb_index *idx = mk(4);
    enum { W = 1500 };
    char name[32];
    for (int w = 0; w < W; w++) {
        snprintf(name, sizeof name, "w%04d", w);
        uint32_t id = add(idx, name, 0);
        store(idx, id, (kvb_tier)(w % 3), H, 1 + (uint32_t)(w % 8));
    }
    kvb_index_result out[4];
    int r = kvb_index_match(idx, H, 8, out, 4);
    cr_assert_eq(r, W);
    /* best: device, 8 blocks; ties broken by entries then name */
    cr_assert_eq(out[0].device, 8);
    cr_assert_str_eq(out[0].worker, "w0015"); /* w % 3 == 0, w % 8 == 7: 15, 39, ... */
    (void)out;
    for (int w = 0; w < W; w += 2) {
        snprintf(name, sizeof name, "w%04d", w);
        uint32_t id;
        cr_assert_eq(kvb_index_stream_find(idx, name, 0, &id), 0);
        cr_assert_eq(kvb_index_stream_remove(idx, id), 0);
    }
    cr_assert_eq(kvb_index_match(idx, H, 8, out, 4), W / 2);
    kvb_index_stats s;
    kvb_index_stats_get(idx, &s);
    cr_assert_eq(s.keys, 8);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

/* ---- keys, ENGINE streams, salts ---------------------------------------------- */

enum { BS = 16 };

static void fill_tokens(uint32_t *t, size_t n, uint32_t base)
{
    for (size_t i = 0; i < n; i++)
        t[i] = base + (uint32_t)(i * 7919 % 50021);
}

static kvb_index_event ev_eng(const uint64_t *eh, uint32_t n, const uint32_t *tokens,
                              bool has_parent, uint64_t parent, kvb_tier tier, uint64_t salt)
{
    kvb_index_event e = ev_of(KVB_INDEX_EV_STORED, tier, eh, n);
    e.tokens = tokens;
    e.n_tokens = n * BS;
    e.has_parent = has_parent;
    e.parent = parent;
    e.salt_key = salt;
    return e;
}

Test(index, salt_key_and_seed)
{
    cr_assert_eq(kvb_index_salt_key(NULL, 0, NULL, 0), 0);
    cr_assert_eq(kvb_index_salt_key("", 0, "", 0), 0);
    cr_assert_eq(kvb_index_salt_key("x", 0, NULL, 5), 0);
    uint64_t l = kvb_index_salt_key("lora", 4, NULL, 0);
    uint64_t s = kvb_index_salt_key(NULL, 0, "lora", 4);
    uint64_t ls = kvb_index_salt_key("lora", 4, "s", 1);
    cr_assert_eq(l, kvb_hash_chain(kvb_hash_salt("lora", 4), 0) | 1);
    cr_assert_eq(s, kvb_hash_chain(0, kvb_hash_salt("lora", 4)) | 1);
    cr_assert_eq(ls, kvb_hash_chain(kvb_hash_salt("lora", 4), kvb_hash_salt("s", 1)) | 1);
    cr_assert_neq(l, s);
    cr_assert_neq(l, 0);
    cr_assert_eq(kvb_index_salt_key("7", 1, NULL, 0), kvb_hash_chain(kvb_hash_salt("7", 1), 0) | 1);

    kvb_index *idx = mk(0);
    cr_assert_eq(kvb_index_block_seed(idx, 0), KVB_HASH_DYNAMO_SEED);
    cr_assert_eq(kvb_index_block_seed(idx, l), kvb_hash_chain(KVB_HASH_DYNAMO_SEED, l));
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, hashes_equal_kvb_hash_tokens)
{
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.block_size = 4;
    cfg.seed = 99;
    kvb_index *idx = mk_cfg(&cfg);
    uint32_t tok[43];
    fill_tokens(tok, 43, 5);
    uint64_t out[16];
    kvb_hash ref[16];
    cr_assert_eq(kvb_index_hashes(idx, tok, 43, NULL, NULL, out, 16), 10);
    cr_assert_eq(kvb_hash_tokens(tok, 43, 4, 99, ref, 16), 10);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(out[i], kvb_hash_current(ref[i]), "block %d", i);
    uint64_t salt = kvb_index_salt_key("ad", 2, "cs", 2);
    cr_assert_eq(kvb_index_hashes(idx, tok, 43, "ad", "cs", out, 3), 3);
    cr_assert_eq(kvb_hash_tokens(tok, 43, 4, kvb_index_block_seed(idx, salt), ref, 16), 10);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(out[i], kvb_hash_current(ref[i]));
    cr_assert_eq(kvb_index_hashes(idx, tok, 3, NULL, NULL, out, 16), 0);
    cr_assert_eq(kvb_index_hashes(idx, NULL, 3, NULL, NULL, out, 16), -EINVAL);
    cr_assert_eq(kvb_index_hashes(idx, tok, 8, NULL, NULL, NULL, 2), -EINVAL);
    cr_assert_eq(kvb_index_hashes(NULL, tok, 8, NULL, NULL, out, 2), -EINVAL);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, engine_stream_router_hashes)
{
    kvb_index *idx = mk(0);
    uint32_t v = add_kind(idx, "vllm", 0, KVB_INDEX_HASHES_ENGINE);
    uint32_t tok[6 * BS];
    fill_tokens(tok, 6 * BS, 100);
    uint64_t r[6];
    cr_assert_eq(kvb_index_hashes(idx, tok, 6 * BS, NULL, NULL, r, 6), 6);
    /* engine hashes unrelated to router hashes; the first in its own batch */
    uint64_t eh[6] = {0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5};
    apply1(idx, v, ev_eng(eh, 2, tok, false, 0, KVB_TIER_DEVICE, 0));
    /* chained across batches through the engine map */
    apply1(idx, v, ev_eng(eh + 2, 2, tok + 2 * BS, true, eh[1], KVB_TIER_DEVICE, 0));
    /* and within one batch */
    kvb_index_event two[2] = {ev_eng(eh + 4, 1, tok + 4 * BS, true, eh[3], KVB_TIER_HOST, 0),
                              ev_eng(eh + 5, 1, tok + 5 * BS, true, eh[4], KVB_TIER_HOST, 0)};
    cr_assert_eq(kvb_index_apply(idx, v, two, 2, 3), 0);
    expect(idx, r, 6, v, 4, 2, 0);
    kvb_index_stream_info in = info(idx, v);
    cr_assert_eq(in.entries, 6);
    cr_assert_eq(in.engine_map, 6);
    /* the router hashes are what a request's tokens give: match_tokens */
    kvb_index_result out[4];
    uint32_t blocks = 0;
    cr_assert_eq(kvb_index_match_tokens(idx, tok, 6 * BS + 3, NULL, NULL, out, 4, &blocks), 1);
    cr_assert_eq(blocks, 6);
    cr_assert_eq(out[0].device, 4);
    cr_assert_eq(out[0].host, 2);
    /* the engine hashes themselves are not keys */
    cr_assert_eq(kvb_index_match(idx, eh, 6, out, 4), 0);

    /* unknown parent: the event's blocks are dropped */
    uint64_t orphan[2] = {0xf0, 0xf1};
    apply1(idx, v, ev_eng(orphan, 2, tok, true, 0x999, KVB_TIER_DEVICE, 0));
    in = info(idx, v);
    cr_assert_eq(in.dropped[KVB_DROP_UNKNOWN_PARENT], 2);
    cr_assert_eq(in.entries, 6);

    /* REMOVED by engine hash */
    removed(idx, v, KVB_TIER_DEVICE, eh + 3, 1);
    expect(idx, r, 6, v, 3, 0, 0);
    cr_assert_eq(info(idx, v).engine_map, 5);
    removed(idx, v, KVB_TIER_DEVICE, eh + 3, 1); /* now unknown */
    removed(idx, v, KVB_TIER_DEVICE, orphan, 1); /* never known */
    cr_assert_eq(info(idx, v).dropped[KVB_DROP_UNKNOWN_BLOCK], 2);
    /* the parent of eh[4] is gone from the map: a new child of eh[3] is dropped */
    apply1(idx, v, ev_eng(eh + 4, 1, tok + 4 * BS, true, eh[3], KVB_TIER_DEVICE, 0));
    cr_assert_eq(info(idx, v).dropped[KVB_DROP_UNKNOWN_PARENT], 3);
    /* ... while re-storing eh[3] (parent eh[2] known) restores the chain */
    apply1(idx, v, ev_eng(eh + 3, 1, tok + 3 * BS, true, eh[2], KVB_TIER_DEVICE, 0));
    expect(idx, r, 6, v, 4, 2, 0);

    /* tokens missing or in excess: dropped */
    kvb_index_event e = ev_eng(orphan, 2, tok, false, 0, KVB_TIER_DEVICE, 0);
    e.n_tokens = 2 * BS - 1;
    apply1(idx, v, e);
    cr_assert_eq(info(idx, v).dropped[KVB_DROP_NO_TOKENS], 2);
    e.n_tokens = 2 * BS + 1;
    apply1(idx, v, e);
    cr_assert_eq(info(idx, v).dropped[KVB_DROP_MALFORMED], 2);
    e.n_tokens = 0;
    e.tokens = NULL;
    apply1(idx, v, e);
    cr_assert_eq(info(idx, v).dropped[KVB_DROP_NO_TOKENS], 4);
    cr_assert_eq(info(idx, v).entries, 6);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, engine_map_lifetime_across_tiers_and_copies)
{
    kvb_index *idx = mk(0);
    uint32_t v = add_kind(idx, "vllm", 0, KVB_INDEX_HASHES_ENGINE);
    uint32_t tok[2 * BS];
    fill_tokens(tok, 2 * BS, 7);
    uint64_t r[2];
    kvb_index_hashes(idx, tok, 2 * BS, NULL, NULL, r, 2);
    uint64_t e0 = 0x100, e1 = 0x101;
    apply1(idx, v, ev_eng(&e0, 1, tok, false, 0, KVB_TIER_DEVICE, 0));
    apply1(idx, v, ev_eng(&e0, 1, tok, false, 0, KVB_TIER_HOST, 0));   /* offloaded copy */
    apply1(idx, v, ev_eng(&e0, 1, tok, false, 0, KVB_TIER_DEVICE, 0)); /* second device copy */
    kvb_index_stream_info in = info(idx, v);
    cr_assert_eq(in.engine_map, 1);
    cr_assert_eq(in.entries, 2);
    removed(idx, v, KVB_TIER_DEVICE, &e0, 1);
    removed(idx, v, KVB_TIER_DEVICE, &e0, 1);
    expect(idx, r, 1, v, 0, 1, 0);
    cr_assert_eq(info(idx, v).engine_map, 1); /* the host copy keeps it */
    apply1(idx, v, ev_eng(&e1, 1, tok + BS, true, e0, KVB_TIER_DEVICE, 0));
    expect(idx, r, 2, v, 0, 2, 0); /* e1 chained through e0's router hash */
    removed(idx, v, KVB_TIER_HOST, &e0, 1);
    cr_assert_eq(info(idx, v).engine_map, 1); /* e1 only */
    uint64_t e2 = 0x102;
    apply1(idx, v, ev_eng(&e2, 1, tok + BS, true, e0, KVB_TIER_DEVICE, 0));
    cr_assert_eq(info(idx, v).dropped[KVB_DROP_UNKNOWN_PARENT], 1);
    /* CLEARED forgets the engine map too */
    cleared(idx, v);
    in = info(idx, v);
    cr_assert_eq(in.engine_map, 0);
    cr_assert_eq(in.entries, 0);
    apply1(idx, v, ev_eng(&e2, 1, tok + BS, true, e1, KVB_TIER_DEVICE, 0));
    cr_assert_eq(info(idx, v).dropped[KVB_DROP_UNKNOWN_PARENT], 2);
    /* a batch: CLEARED then a child of a block the map held before: unknown */
    apply1(idx, v, ev_eng(&e0, 1, tok, false, 0, KVB_TIER_DEVICE, 0));
    kvb_index_event b[2] = {ev_of(KVB_INDEX_EV_CLEARED, KVB_TIER_DEVICE, NULL, 0),
                            ev_eng(&e1, 1, tok + BS, true, e0, KVB_TIER_DEVICE, 0)};
    cr_assert_eq(kvb_index_apply(idx, v, b, 2, -1), 0);
    cr_assert_eq(info(idx, v).dropped[KVB_DROP_UNKNOWN_PARENT], 3);
    cr_assert_eq(info(idx, v).entries, 0);
    /* an ENGINE stream of another block size cannot be recomputed */
    kvb_index_stream_config sc = {
        .name = "v32", .hashes = KVB_INDEX_HASHES_ENGINE, .block_size = 32};
    uint32_t w;
    cr_assert_eq(kvb_index_stream_add(idx, &sc, &w), 0);
    kvb_index_event e = ev_eng(&e0, 1, tok, false, 0, KVB_TIER_DEVICE, 0);
    e.n_tokens = 32;
    apply1(idx, w, e);
    cr_assert_eq(info(idx, w).dropped[KVB_DROP_BLOCK_SIZE], 1);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, lora_never_matches_base)
{
    kvb_index *idx = mk(0);
    uint32_t v = add_kind(idx, "vllm", 0, KVB_INDEX_HASHES_ENGINE);
    uint32_t tok[3 * BS];
    fill_tokens(tok, 3 * BS, 3);
    uint64_t salt = kvb_index_salt_key("adapter", 7, NULL, 0);
    uint64_t el[3] = {1, 2, 3}, eb[3] = {11, 12, 13};
    apply1(idx, v, ev_eng(el, 3, tok, false, 0, KVB_TIER_DEVICE, salt));
    kvb_index_result out[2];
    cr_assert_eq(kvb_index_match_tokens(idx, tok, 3 * BS, NULL, NULL, out, 2, NULL), 0);
    cr_assert_eq(kvb_index_match_tokens(idx, tok, 3 * BS, "adapter", NULL, out, 2, NULL), 1);
    cr_assert_eq(out[0].device, 3);
    cr_assert_eq(kvb_index_match_tokens(idx, tok, 3 * BS, "adapter", "salt", out, 2, NULL), 0);
    cr_assert_eq(kvb_index_match_tokens(idx, tok, 3 * BS, "other", NULL, out, 2, NULL), 0);
    apply1(idx, v, ev_eng(eb, 3, tok, false, 0, KVB_TIER_HOST, 0));
    cr_assert_eq(kvb_index_match_tokens(idx, tok, 3 * BS, NULL, NULL, out, 2, NULL), 1);
    cr_assert_eq(out[0].device, 0);
    cr_assert_eq(out[0].host, 3);
    cr_assert_eq(kvb_index_match_tokens(idx, tok, 3 * BS, "adapter", NULL, out, 2, NULL), 1);
    cr_assert_eq(out[0].device, 3);
    /* cache salt alone */
    uint64_t cs = kvb_index_salt_key(NULL, 0, "tenant", 6);
    uint64_t ec[3] = {21, 22, 23};
    apply1(idx, v, ev_eng(ec, 3, tok, false, 0, KVB_TIER_DISK, cs));
    cr_assert_eq(kvb_index_match_tokens(idx, tok, 3 * BS, NULL, "tenant", out, 2, NULL), 1);
    cr_assert_eq(out[0].disk, 3);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, long_request_heap_hashes)
{
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.block_size = 1;
    kvb_index *idx = mk_cfg(&cfg);
    enum { N = 5000 };
    uint32_t *tok = malloc(N * sizeof *tok);
    uint64_t *r = malloc(N * sizeof *r);
    fill_tokens(tok, N, 1);
    cr_assert_eq(kvb_index_hashes(idx, tok, N, NULL, NULL, r, N), N);
    uint32_t a = add(idx, "a", 0);
    store(idx, a, KVB_TIER_DEVICE, r, N);
    kvb_index_result out[1];
    uint32_t blocks;
    cr_assert_eq(kvb_index_match_tokens(idx, tok, N, NULL, NULL, out, 1, &blocks), 1);
    cr_assert_eq(blocks, N);
    cr_assert_eq(out[0].device, N);
    free(tok);
    free(r);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, count_saturation)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0);
    enum { N = 1030 };
    uint64_t *h = malloc(N * sizeof *h);
    for (int i = 0; i < N; i++)
        h[i] = 77;
    store(idx, a, KVB_TIER_DEVICE, h, N); /* 1023 copies counted, 7 ignored */
    kvb_index_stream_info in = info(idx, a);
    cr_assert_eq(in.entries, 1);
    cr_assert_eq(in.dropped[KVB_DROP_CAPACITY], N - 1023);
    removed(idx, a, KVB_TIER_DEVICE, h, 1022);
    expect(idx, h, 1, a, 1, 0, 0);
    removed(idx, a, KVB_TIER_DEVICE, h, 1); /* early rather than late */
    expect(idx, h, 1, a, 0, 0, 0);
    free(h);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

/* ---- canonical state: snapshot with its records sorted, plus matches --------- */

static int cmp12(const void *a, const void *b)
{
    return memcmp(a, b, 12);
}

static int cmp20(const void *a, const void *b)
{
    return memcmp(a, b, 20);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The index's full state (streams, counters, entries with their counts, engine
 * maps) as bytes independent of table layouts: a snapshot whose key and engine
 * records are sorted. *len excludes the checksum. */
static unsigned char *canon(kvb_index *idx, size_t *len)
{
    void *buf;
    size_t n;
    cr_assert_eq(kvb_index_save_mem(idx, &buf, &n), 0);
    unsigned char *b = buf, *p = b + 26;
    uint32_t ns = le32(b + 22);
    for (uint32_t i = 0; i < ns; i++) {
        p += 4;
        p += 1 + p[0];
        p += 8 + 1 + 4 + 1 + 8 + 8 + 8 + 8 * KVB_COUNT_COUNT + 8 * KVB_DROP_COUNT;
        uint32_t nk = le32(p);
        p += 4;
        qsort(p, nk, 12, cmp12);
        p += (size_t)nk * 12;
        uint32_t ne = le32(p);
        p += 4;
        qsort(p, ne, 20, cmp20);
        p += (size_t)ne * 20;
    }
    cr_assert_eq((size_t)(p - b), n - 8);
    *len = n - 8;
    return b;
}

/* Match results of every request in reqs, serialised (stream, tiers, entries). */
struct reqs {
    uint32_t n;
    uint32_t len[64];
    uint64_t h[64][12];
};

static size_t matches_of(kvb_index *idx, const struct reqs *rq, uint32_t *out, size_t cap)
{
    size_t w = 0;
    kvb_index_result res[32];
    for (uint32_t i = 0; i < rq->n; i++) {
        int r = kvb_index_match(idx, rq->h[i], rq->len[i], res, 32);
        cr_assert(r >= 0 && r <= 32);
        cr_assert(w + 1 + 5 * (size_t)r <= cap);
        out[w++] = (uint32_t)r;
        for (int j = 0; j < r; j++) {
            out[w++] = res[j].stream;
            out[w++] = res[j].device;
            out[w++] = res[j].host;
            out[w++] = res[j].disk;
            out[w++] = (uint32_t)res[j].entries;
        }
    }
    return w;
}

/* ---- fault injection ---------------------------------------------------------- */

/* the fail-at-k allocator (support/fail_alloc.h) */
static tu_fa FA = TU_FA_INITIALIZER(0);

static void fa_balanced(void)
{
    cr_assert_eq(FA.n_alloc, FA.n_free, "allocs %ld frees %ld", FA.n_alloc, FA.n_free);
    cr_assert_eq(tu_fa_live(&FA), 0);
    cr_assert_eq(FA.mismatches, 0);
}

static kvb_index_config fa_cfg(uint32_t shards)
{
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.shards = shards;
    cfg.allocator = tu_fa_allocator(&FA);
    return cfg;
}

/* A populated index: ROUTER streams a, b, c sharing keys (inline holders,
 * arrays of 2 and 3), an ENGINE stream v with a chain. */
static uint32_t BT[8 * BS];
static const uint64_t BE[8] = {0x500, 0x501, 0x502, 0x503, 0x504, 0x505, 0x506, 0x507};

static void build_base(kvb_index *idx)
{
    uint32_t a = add(idx, "a", 0), b = add(idx, "b", 0), c = add(idx, "c", 0);
    uint32_t v = add_kind(idx, "v", 0, KVB_INDEX_HASHES_ENGINE);
    uint64_t k[40];
    for (int i = 0; i < 40; i++)
        k[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    store(idx, a, KVB_TIER_DEVICE, k, 20);
    store(idx, b, KVB_TIER_HOST, k + 10, 20);
    store(idx, c, KVB_TIER_DISK, k + 15, 4);
    store(idx, a, KVB_TIER_DEVICE, k, 2); /* copies */
    fill_tokens(BT, 8 * BS, 11);
    apply1(idx, v, ev_eng(BE, 4, BT, false, 0, KVB_TIER_DEVICE, 0));
}

/* A batch for a: new keys in every shard, keys now held by one other stream
 * (inline -> array of 2) or two (array growth), copies, REMOVED then STORED
 * again of a shared key, a CLEARED in the middle, and the same after it. */
static uint64_t FK[64];
static kvb_index_event FEV[8];
static uint32_t fault_batch(void)
{
    for (int i = 0; i < 64; i++)
        FK[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    uint32_t n = 0;
    FEV[n++] = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_HOST, FK + 5, 30);  /* 5..34 */
    FEV[n++] = ev_of(KVB_INDEX_EV_REMOVED, KVB_TIER_HOST, FK + 12, 4); /* shared with b */
    FEV[n++] = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_HOST, FK + 12, 4);
    FEV[n++] = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DISK, FK + 40, 20);
    FEV[n++] = ev_of(KVB_INDEX_EV_CLEARED, KVB_TIER_DEVICE, NULL, 0);
    FEV[n++] = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DEVICE, FK + 10, 12);
    FEV[n++] = ev_of(KVB_INDEX_EV_REMOVED, KVB_TIER_DEVICE, FK + 15, 2);
    FEV[n++] = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DEVICE, FK + 15, 3);
    return n;
}

static struct reqs *fault_reqs(void)
{
    static struct reqs rq;
    rq.n = 0;
    for (uint32_t s = 0; s < 60; s += 3) {
        rq.len[rq.n] = 12;
        for (int j = 0; j < 12; j++)
            rq.h[rq.n][j] = FK[(s + (uint32_t)j) % 64];
        rq.n++;
    }
    return &rq;
}

Test(index_fault, create_and_stream_add)
{
    tu_fa_reset(&FA);
    long k;
    for (k = 1;; k++) {
        kvb_index_config cfg = fa_cfg(8);
        tu_fa_arm(&FA, k);
        kvb_index *idx = (kvb_index *)0x1;
        int rc = kvb_index_create(&cfg, &idx);
        tu_fa_arm(&FA, 0);
        if (rc == 0) {
            cr_assert_eq(kvb_index_destroy(idx), 0);
            break;
        }
        cr_assert_eq(rc, -ENOMEM);
        cr_assert_eq(idx, (kvb_index *)0x1);
        fa_balanced();
    }
    cr_assert(k > 1);
    fa_balanced();

    for (int round = 0; round < 40; round++) { /* tables grow at some adds */
        kvb_index_config cfg = fa_cfg(8);
        kvb_index *idx = mk_cfg(&cfg);
        char name[16];
        for (int i = 0; i < round; i++) {
            snprintf(name, sizeof name, "s%d", i);
            add(idx, name, 0);
        }
        for (k = 1;; k++) {
            kvb_index_stream_config sc = {.name = "new", .dp_rank = 3};
            uint32_t id = 12345;
            tu_fa_arm(&FA, k);
            int rc = kvb_index_stream_add(idx, &sc, &id);
            tu_fa_arm(&FA, 0);
            if (rc == 0)
                break;
            cr_assert_eq(rc, -ENOMEM);
            cr_assert_eq(id, 12345);
            cr_assert_eq(kvb_index_stream_find(idx, "new", 3, &id), -ENOENT);
            cr_assert_eq(kvb_index_streams(idx, NULL, 0), round);
        }
        cr_assert_eq(kvb_index_streams(idx, NULL, 0), round + 1);
        cr_assert_eq(kvb_index_destroy(idx), 0);
        fa_balanced();
    }
}

/* Keys with a full chunk (8 holders) and a full array (16 holders) before the
 * batch adds one more to each, takes it away and adds it again. */
static void build_wide(kvb_index *idx)
{
    char name[16];
    for (int i = 0; i < 16; i++) {
        snprintf(name, sizeof name, "x%d", i);
        uint32_t id = add(idx, name, 0);
        if (i < 8)
            store(idx, id, KVB_TIER_HOST, FK + 60, 1);
        store(idx, id, KVB_TIER_DISK, FK + 61, 1);
        if (i < 3)
            store(idx, id, KVB_TIER_DISK, FK + 62, 1);
    }
}

static kvb_index_event WEV[6];
static uint32_t wide_batch(void)
{
    uint32_t n = 0;
    WEV[n++] = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DEVICE, FK + 60, 3);
    WEV[n++] = ev_of(KVB_INDEX_EV_REMOVED, KVB_TIER_DEVICE, FK + 60, 3);
    WEV[n++] = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_HOST, FK + 60, 3);
    WEV[n++] = ev_of(KVB_INDEX_EV_STORED, KVB_TIER_DEVICE, FK + 61, 2);
    return n;
}

static int fault_apply(kvb_index *idx, int kind, kvb_index_event *big, uint32_t n)
{
    if (kind == 1)
        return kvb_index_apply(idx, 3, big, 3, 9);
    if (kind == 2)
        return kvb_index_apply(idx, 0, WEV, wide_batch(), 9);
    return kvb_index_apply(idx, 0, FEV, n, 9);
}

static void fault_apply_run(uint32_t shards, int kind)
{
    tu_fa_reset(&FA);
    uint32_t n = fault_batch();
    struct reqs *rq = fault_reqs();
    static uint32_t m0[1 << 16], m1[1 << 16], mexp[1 << 16];
    static uint64_t eh[600];
    static uint32_t etok[600 * BS];
    for (int i = 0; i < 600; i++)
        eh[i] = 0x9000 + (uint64_t)i;
    fill_tokens(etok, 600 * BS, 1);
    kvb_index_event big[3] = {
        ev_eng(eh, 300, etok, true, BE[3], KVB_TIER_HOST, 0),
        ev_of(KVB_INDEX_EV_REMOVED, KVB_TIER_HOST, eh + 100, 50),
        ev_eng(eh + 300, 300, etok + 300 * BS, true, eh[299], KVB_TIER_DEVICE, 0)};

    /* the expected result, from a run without failures */
    kvb_index_config cfg = fa_cfg(shards);
    kvb_index *ref = mk_cfg(&cfg);
    build_base(ref);
    if (kind == 2)
        build_wide(ref);
    cr_assert_eq(fault_apply(ref, kind, big, n), 0);
    size_t le, ne = matches_of(ref, rq, mexp, 1 << 16);
    unsigned char *cexp = canon(ref, &le);
    kvb_index_stats sexp;
    kvb_index_stats_get(ref, &sexp);
    cr_assert_eq(kvb_index_destroy(ref), 0);

    long k;
    for (k = 1;; k++) {
        kvb_index *idx = mk_cfg(&cfg);
        build_base(idx);
        if (kind == 2)
            build_wide(idx);
        size_t l0, n0 = matches_of(idx, rq, m0, 1 << 16);
        unsigned char *c0 = canon(idx, &l0);
        tu_fa_arm(&FA, k);
        int rc = fault_apply(idx, kind, big, n);
        long used = FA.count;
        tu_fa_arm(&FA, 0);
        size_t l1, n1 = matches_of(idx, rq, m1, 1 << 16);
        unsigned char *c1 = canon(idx, &l1);
        if (rc == 0) {
            cr_assert(l1 == le && memcmp(c1, cexp, le) == 0, "k %ld: state differs", k);
            cr_assert(n1 == ne && memcmp(m1, mexp, ne * 4) == 0, "k %ld: matches differ", k);
        } else {
            cr_assert_eq(rc, -ENOMEM);
            cr_assert(l1 == l0 && memcmp(c1, c0, l0) == 0, "k %ld: -ENOMEM changed the state", k);
            cr_assert(n1 == n0 && memcmp(m1, m0, n0 * 4) == 0, "k %ld: matches changed", k);
            /* and the same batch applies afterwards */
            rc = fault_apply(idx, kind, big, n);
            cr_assert_eq(rc, 0);
            free(c1);
            c1 = canon(idx, &l1);
            cr_assert(l1 == le && memcmp(c1, cexp, le) == 0);
        }
        kvb_index_stats s;
        kvb_index_stats_get(idx, &s);
        cr_assert_eq(s.keys, sexp.keys);
        cr_assert_eq(s.entries, sexp.entries);
        cr_assert_eq(s.memory_bytes, tu_fa_live(&FA), "memory_bytes %llu, live %zu",
                     (unsigned long long)s.memory_bytes, tu_fa_live(&FA));
        free(c0);
        free(c1);
        cr_assert_eq(kvb_index_destroy(idx), 0);
        fa_balanced();
        if (rc == 0 && used < k)
            break;
    }
    cr_assert(k > 3, "the batch made only %ld allocations", k);
    cr_log_info("apply (%u shards, kind %d): %ld allocations tried\n", shards, kind, k - 1);
    free(cexp);
}

Test(index_fault, apply_router_1_shard)
{
    fault_apply_run(1, 0);
}

Test(index_fault, apply_router_16_shards)
{
    fault_apply_run(16, 0);
}

Test(index_fault, apply_engine_heap_scratch)
{
    fault_apply_run(4, 1);
}

Test(index_fault, apply_full_chunk_and_array)
{
    fault_apply_run(1, 2);
    fault_apply_run(8, 2);
}

Test(index_fault, load_mem)
{
    tu_fa_reset(&FA);
    kvb_index_config cfg = fa_cfg(4);
    kvb_index *idx = mk_cfg(&cfg);
    build_base(idx);
    void *buf;
    size_t len;
    cr_assert_eq(kvb_index_save_mem(idx, &buf, &len), 0);
    size_t l0;
    unsigned char *c0 = canon(idx, &l0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
    fa_balanced();
    long k;
    for (k = 1;; k++) {
        tu_fa_arm(&FA, k);
        kvb_index *out = (kvb_index *)0x1;
        int rc = kvb_index_load_mem(buf, len, &cfg, &out);
        tu_fa_arm(&FA, 0);
        if (rc == 0) {
            size_t l1;
            unsigned char *c1 = canon(out, &l1);
            cr_assert(l1 == l0 && memcmp(c0, c1, l0) == 0);
            free(c1);
            cr_assert_eq(kvb_index_destroy(out), 0);
            fa_balanced();
            break;
        }
        cr_assert_eq(rc, -ENOMEM);
        cr_assert_eq(out, (kvb_index *)0x1);
        fa_balanced();
    }
    cr_assert(k > 5);
    free(c0);
    free(buf);
}

/* ---- snapshots ---------------------------------------------------------------- */

#include <xxhash.h>

static void reseal(unsigned char *b, size_t len)
{
    uint64_t x = XXH3_64bits(b, len - 8);
    for (int i = 0; i < 8; i++)
        b[len - 8 + i] = (unsigned char)(x >> (8 * i));
}

static void info_eq(const kvb_index_stream_info *x, const kvb_index_stream_info *y)
{
    cr_assert_eq(x->stream, y->stream);
    cr_assert_str_eq(x->worker, y->worker);
    cr_assert_eq(x->dp_rank, y->dp_rank);
    cr_assert_eq(x->hashes, y->hashes);
    cr_assert_eq(x->block_size, y->block_size);
    cr_assert_eq(x->state, y->state);
    cr_assert_eq(x->last_seq, y->last_seq);
    cr_assert_eq(x->batches, y->batches);
    cr_assert_eq(x->events, y->events);
    cr_assert_eq(memcmp(x->counters, y->counters, sizeof x->counters), 0);
    cr_assert_eq(memcmp(x->dropped, y->dropped, sizeof x->dropped), 0);
    cr_assert_eq(x->entries, y->entries);
    cr_assert_eq(x->engine_map, y->engine_map);
}

/* A randomized index: ROUTER and ENGINE streams, tiers, copies, states, holes. */
static kvb_index *random_index(uint64_t seed, uint32_t shards, struct reqs *rq)
{
    kvb_index *idx = mk(shards);
    uint64_t s = seed;
    static uint64_t keys[200];
    for (int i = 0; i < 200; i++)
        keys[i] = tu_rng_next(&s) >> (i % 3 == 0 ? 50 : 0); /* small ones too */
    keys[7] = 0;
    char name[32];
    for (int w = 0; w < 12; w++) {
        snprintf(name, sizeof name, "worker-%d", w / 2);
        uint32_t id = add(idx, name, w % 2);
        for (int op = 0; op < 30; op++) {
            uint32_t st = tu_rnd(&s, 160), len = 1 + tu_rnd(&s, 40);
            kvb_index_event e = ev_of(tu_rnd(&s, 5) ? KVB_INDEX_EV_STORED : KVB_INDEX_EV_REMOVED,
                                      (kvb_tier)tu_rnd(&s, 3), keys + st, len);
            cr_assert_eq(kvb_index_apply(idx, id, &e, 1, op), 0);
        }
        if (w % 5 == 4)
            kvb_index_stream_set_state(idx, id, (kvb_stream_state)(w % 4));
        kvb_index_stream_count(idx, id, KVB_COUNT_GAPS, (uint64_t)w);
    }
    uint32_t v = add_kind(idx, "engine", KVB_INDEX_NO_RANK, KVB_INDEX_HASHES_ENGINE);
    static uint32_t tok[20 * BS];
    fill_tokens(tok, 20 * BS, (uint32_t)seed);
    static uint64_t eh[20];
    for (int i = 0; i < 20; i++)
        eh[i] = tu_rng_next(&s);
    apply1(idx, v, ev_eng(eh, 10, tok, false, 0, KVB_TIER_DEVICE, 0));
    apply1(idx, v, ev_eng(eh + 10, 10, tok + 10 * BS, true, eh[9], KVB_TIER_HOST, 0));
    rq->n = 0;
    for (int i = 0; i < 48; i++) {
        uint32_t st = tu_rnd(&s, 180), len = 1 + tu_rnd(&s, 12);
        rq->len[rq->n] = len;
        for (uint32_t j = 0; j < len; j++)
            rq->h[rq->n][j] = keys[(st + j) % 200];
        rq->n++;
    }
    uint64_t rh[20];
    kvb_index_hashes(idx, tok, 20 * BS, NULL, NULL, rh, 20);
    rq->len[rq->n] = 12;
    memcpy(rq->h[rq->n], rh, 12 * sizeof rh[0]);
    rq->n++;
    return idx;
}

static void same_index(kvb_index *x, kvb_index *y, const struct reqs *rq)
{
    static uint32_t mx[1 << 16], my[1 << 16];
    size_t nx = matches_of(x, rq, mx, 1 << 16), ny = matches_of(y, rq, my, 1 << 16);
    cr_assert(nx == ny && memcmp(mx, my, nx * 4) == 0, "match results differ");
    uint32_t ix[64], iy[64];
    int n = kvb_index_streams(x, ix, 64);
    cr_assert_eq(kvb_index_streams(y, iy, 64), n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ix[i], iy[i]);
        kvb_index_stream_info a = info(x, ix[i]), b = info(y, iy[i]);
        info_eq(&a, &b);
    }
    kvb_index_stats sx, sy;
    kvb_index_stats_get(x, &sx);
    kvb_index_stats_get(y, &sy);
    cr_assert_eq(sx.streams, sy.streams);
    cr_assert_eq(sx.keys, sy.keys);
    cr_assert_eq(sx.entries, sy.entries);
    size_t lx, ly;
    unsigned char *cx = canon(x, &lx), *cy = canon(y, &ly);
    cr_assert(lx == ly && memcmp(cx, cy, lx) == 0);
    free(cx);
    free(cy);
}

Test(index_snapshot, round_trip_randomized)
{
    for (uint64_t seed = 1; seed <= 6; seed++) {
        static struct reqs rq;
        kvb_index *idx = random_index(seed, seed % 2 ? 16 : 1, &rq);
        /* holes in the id space */
        kvb_index_stream_remove(idx, 3);
        kvb_index_stream_remove(idx, 8);
        void *buf;
        size_t len;
        cr_assert_eq(kvb_index_save_mem(idx, &buf, &len), 0);
        kvb_index *cp;
        cr_assert_eq(kvb_index_load_mem(buf, len, NULL, &cp), 0);
        same_index(idx, cp, &rq);
        /* the copy keeps working like the original */
        uint64_t k[3] = {11, 12, 13};
        uint32_t id;
        cr_assert_eq(kvb_index_stream_find(cp, "worker-2", 1, &id), 0);
        store(idx, id, KVB_TIER_DEVICE, k, 3);
        store(cp, id, KVB_TIER_DEVICE, k, 3);
        cr_assert_eq(kvb_index_stream_remove(idx, 0), 0);
        cr_assert_eq(kvb_index_stream_remove(cp, 0), 0);
        same_index(idx, cp, &rq);
        /* a different shard count loads the same content */
        kvb_index_config cfg;
        kvb_index_config_init(&cfg);
        cfg.shards = 64;
        kvb_index *cp2;
        cr_assert_eq(kvb_index_load_mem(buf, len, &cfg, &cp2), 0);
        free(buf);
        cr_assert_eq(kvb_index_destroy(cp2), 0);
        cr_assert_eq(kvb_index_destroy(cp), 0);
        cr_assert_eq(kvb_index_destroy(idx), 0);
    }
}

Test(index_snapshot, file_save_load)
{
    char dir[] = "/tmp/kvb-index-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/snap.bin", dir);
    static struct reqs rq;
    kvb_index *idx = random_index(42, 4, &rq);
    size_t bytes = 0;
    cr_assert_eq(kvb_index_save(idx, path, &bytes), 0);
    cr_assert(bytes > 100);
    cr_assert_eq(kvb_index_save(idx, path, &bytes), 0); /* replaces */
    kvb_index *cp;
    cr_assert_eq(kvb_index_load(path, NULL, &cp), 0);
    same_index(idx, cp, &rq);
    cr_assert_eq(kvb_index_destroy(cp), 0);
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.block_size = 32;
    cr_assert_eq(kvb_index_load(path, &cfg, &cp), -EINVAL);
    kvb_index_config_init(&cfg);
    cfg.seed = 1;
    cr_assert_eq(kvb_index_load(path, &cfg, &cp), -EINVAL);
    kvb_index_config_init(&cfg);
    cfg.max_streams = 2;
    cr_assert_eq(kvb_index_load(path, &cfg, &cp), -EINVAL);
    char other[160];
    snprintf(other, sizeof other, "%s/none.bin", dir);
    cr_assert_eq(kvb_index_load(other, NULL, &cp), -ENOENT);
    cr_assert_eq(kvb_index_load(dir, NULL, &cp), -EISDIR);
    cr_assert_eq(kvb_index_save(idx, "/nonexistent-dir-kvb/x.bin", NULL), -ENOENT);
    cr_assert_eq(kvb_index_save(idx, NULL, NULL), -EINVAL);
    /* no temporary file left behind */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

static void *small_snapshot(size_t *len)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0);
    uint32_t v = add_kind(idx, "v", 2, KVB_INDEX_HASHES_ENGINE);
    store(idx, a, KVB_TIER_DEVICE, H, 3);
    store(idx, a, KVB_TIER_HOST, H + 1, 1);
    uint32_t tok[2 * BS];
    fill_tokens(tok, 2 * BS, 1);
    uint64_t eh[2] = {0xaa, 0xbb};
    apply1(idx, v, ev_eng(eh, 2, tok, false, 0, KVB_TIER_DISK, 0));
    void *buf;
    cr_assert_eq(kvb_index_save_mem(idx, &buf, len), 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
    return buf;
}

Test(index_snapshot, every_truncation_refused)
{
    size_t len;
    unsigned char *buf = small_snapshot(&len);
    kvb_index *cp;
    cr_assert_eq(kvb_index_load_mem(buf, len, NULL, &cp), 0);
    cr_assert_eq(kvb_index_destroy(cp), 0);
    for (size_t l = 0; l < len; l++) {
        cp = (kvb_index *)0x1;
        cr_assert_eq(kvb_index_load_mem(buf, l, NULL, &cp), -EBADMSG, "length %zu", l);
        cr_assert_eq(cp, (kvb_index *)0x1);
        /* truncated and resealed: the structure walk refuses it */
        if (l >= 26 + 8) {
            unsigned char *t = malloc(l);
            memcpy(t, buf, l - 8);
            reseal(t, l);
            cr_assert_eq(kvb_index_load_mem(t, l, NULL, &cp), -EBADMSG, "resealed length %zu", l);
            free(t);
        }
    }
    cr_assert_eq(kvb_index_load_mem(NULL, len, NULL, &cp), -EINVAL);
    cr_assert_eq(kvb_index_load_mem(buf, len, NULL, NULL), -EINVAL);
    free(buf);
}

Test(index_snapshot, corruption_refused)
{
    size_t len;
    unsigned char *buf = small_snapshot(&len);
    unsigned char *c = malloc(len + 1);
    kvb_index *cp;
    /* any single-byte change: the checksum refuses it */
    for (size_t i = 0; i < len; i++)
        for (int x = 1; x < 256; x <<= 1) {
            memcpy(c, buf, len);
            c[i] ^= (unsigned char)x;
            cr_assert_eq(kvb_index_load_mem(c, len, NULL, &cp), -EBADMSG, "byte %zu ^ %d", i, x);
        }
    /* with the checksum fixed, the structure checks: refused or a valid index,
     * never a crash or a half-loaded one */
    int refused = 0, loaded = 0;
    for (size_t i = 0; i < len - 8; i++)
        for (int x = 1; x < 256; x <<= 1) {
            memcpy(c, buf, len);
            c[i] ^= (unsigned char)x;
            reseal(c, len);
            int rc = kvb_index_load_mem(c, len, NULL, &cp);
            cr_assert(rc == 0 || rc == -EBADMSG || rc == -EINVAL, "byte %zu: %d", i, rc);
            if (rc == 0) {
                loaded++;
                kvb_index_stats s;
                kvb_index_stats_get(cp, &s);
                cr_assert(s.entries <= 6);
                cr_assert_eq(kvb_index_destroy(cp), 0);
            } else {
                refused++;
            }
        }
    cr_assert(refused > 0 && loaded > 0);
    /* specific structural faults */
    size_t off_state = 26 + 4 + 1 + 1 + 8 + 1 + 4; /* stream "a": state byte */
    memcpy(c, buf, len);
    c[off_state] = 9;
    reseal(c, len);
    cr_assert_eq(kvb_index_load_mem(c, len, NULL, &cp), -EBADMSG);
    memcpy(c, buf, len);
    c[6] = 2; /* version */
    reseal(c, len);
    cr_assert_eq(kvb_index_load_mem(c, len, NULL, &cp), -EBADMSG);
    memcpy(c, buf, len - 8); /* a trailing byte before the checksum */
    c[len - 8] = 0;
    reseal(c, len + 1);
    cr_assert_eq(kvb_index_load_mem(c, len + 1, NULL, &cp), -EBADMSG);
    /* duplicate key: the second key record of "a" becomes the first */
    size_t keys =
        26 + 4 + 1 + 1 + 8 + 1 + 4 + 1 + 8 + 8 + 8 + 8 * KVB_COUNT_COUNT + 8 * KVB_DROP_COUNT + 4;
    memcpy(c, buf, len);
    memcpy(c + keys + 12, c + keys, 12);
    reseal(c, len);
    cr_assert_eq(kvb_index_load_mem(c, len, NULL, &cp), -EBADMSG);
    /* two streams with one id */
    memcpy(c, buf, len);
    size_t second = keys + 3 * 12 + 4; /* after a's 3 keys and its 0 engine entries */
    memcpy(c + second, c + 26, 4);
    reseal(c, len);
    cr_assert_eq(kvb_index_load_mem(c, len, NULL, &cp), -EBADMSG);
    free(c);
    free(buf);
}

/* ---- metrics and memory --------------------------------------------------------- */

Test(index, metrics_text)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "we\"ird\\na\nme", 3);
    uint32_t b = add(idx, "plain", KVB_INDEX_NO_RANK);
    store(idx, a, KVB_TIER_DEVICE, H, 4);
    store(idx, b, KVB_TIER_HOST, H, 2);
    removed(idx, b, KVB_TIER_DISK, H, 1);
    kvb_index_stream_set_state(idx, b, KVB_STREAM_LAGGING);
    kvb_index_match(idx, H, 4, RES, 4);
    int n = kvb_index_metrics_text(idx, NULL, 0);
    cr_assert(n > 0);
    char *t = malloc((size_t)n + 1);
    cr_assert_eq(kvb_index_metrics_text(idx, t, (size_t)n + 1), n);
    cr_assert_eq(strlen(t), (size_t)n);
    cr_assert_not_null(strstr(t, "kvblock_index_streams 2\n"));
    cr_assert_not_null(strstr(t, "kvblock_index_keys 4\n"));
    cr_assert_not_null(strstr(t, "kvblock_index_entries 6\n"));
    cr_assert_not_null(strstr(t, "kvblock_index_matches_total 1\n"));
    cr_assert_not_null(strstr(t, "kvblock_index_matched_blocks_total 4\n"));
    cr_assert_not_null(strstr(t, "# TYPE kvblock_index_memory_bytes gauge\n"));
    cr_assert_not_null(strstr(
        t, "kvblock_index_stream_entries{worker=\"we\\\"ird\\\\na\\nme\",dp_rank=\"3\"} 4\n"));
    cr_assert_not_null(
        strstr(t, "kvblock_index_stream_entries{worker=\"plain\",dp_rank=\"-1\"} 2\n"));
    cr_assert_not_null(strstr(
        t, "kvblock_index_stream_state{worker=\"plain\",dp_rank=\"-1\",state=\"lagging\"} 1\n"));
    cr_assert_not_null(strstr(
        t, "kvblock_index_stream_state{worker=\"plain\",dp_rank=\"-1\",state=\"live\"} 0\n"));
    cr_assert_not_null(strstr(t, "kvblock_index_stream_dropped_total{worker=\"plain\",dp_rank="
                                 "\"-1\",reason=\"unknown_block\"} 1\n"));
    cr_assert_not_null(strstr(t, "# TYPE kvblock_index_stream_batches_total counter\n"));
    /* one HELP/TYPE per family */
    cr_assert_eq(strstr(strstr(t, "# TYPE kvblock_index_stream_entries") + 1,
                        "# TYPE kvblock_index_stream_entries"),
                 NULL);
    /* every line: a comment or "name{...} value" / "name value" */
    for (char *l = t; *l;) {
        char *e = strchr(l, '\n');
        cr_assert_not_null(e);
        cr_assert(l[0] == '#' || strncmp(l, "kvblock_index_", 14) == 0);
        l = e + 1;
    }
    /* truncated output: same length, NUL-terminated */
    char small[64];
    cr_assert_eq(kvb_index_metrics_text(idx, small, sizeof small), n);
    cr_assert_eq(strlen(small), sizeof small - 1);
    cr_assert_eq(kvb_index_metrics_text(idx, NULL, 5), -EINVAL);
    free(t);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, memory_accounting)
{
    tu_fa_reset(&FA);
    kvb_index_config cfg = fa_cfg(16);
    kvb_index *idx = mk_cfg(&cfg);
    kvb_index_stats s;
    kvb_index_stats_get(idx, &s);
    cr_assert_eq(s.memory_bytes, tu_fa_live(&FA));
    enum { W = 40, K = 3000 };
    static uint64_t keys[K];
    for (int i = 0; i < K; i++)
        keys[i] = (uint64_t)i;
    uint32_t ids[W];
    char name[16];
    for (int w = 0; w < W; w++) {
        snprintf(name, sizeof name, "w%d", w);
        ids[w] = add(idx, name, 0);
        store(idx, ids[w], (kvb_tier)(w % 3), keys + (w * 37) % 1000, 2000);
        kvb_index_stats_get(idx, &s);
        cr_assert_eq(s.memory_bytes, tu_fa_live(&FA));
    }
    kvb_index_stats_get(idx, &s);
    cr_assert_eq(s.entries, (uint64_t)W * 2000);
    uint64_t peak = s.memory_bytes;
    cr_assert(s.memory_bytes / s.entries < 64, "%llu bytes per entry",
              (unsigned long long)(s.memory_bytes / s.entries));
    for (int w = 0; w < W; w++) {
        if (w % 2)
            kvb_index_stream_clear(idx, ids[w], KVB_STREAM_LIVE);
        else
            removed(idx, ids[w], (kvb_tier)(w % 3), keys + (w * 37) % 1000, 2000);
        kvb_index_stats_get(idx, &s);
        cr_assert_eq(s.memory_bytes, tu_fa_live(&FA));
    }
    kvb_index_stats_get(idx, &s);
    cr_assert_eq(s.entries, 0);
    cr_assert_eq(s.keys, 0);
    cr_assert(s.memory_bytes < peak / 20, "memory after emptying: %llu of %llu",
              (unsigned long long)s.memory_bytes, (unsigned long long)peak);
    cr_assert_eq(kvb_index_destroy(idx), 0);
    fa_balanced();
}

/* ---- randomized model test ------------------------------------------------------ */

enum { MS = 5, MU = 48, MMAX = 40 };

struct model {
    bool present[MS];
    uint32_t id[MS];
    kvb_stream_state state[MS];
    uint32_t cnt[MS][MU][3];
    uint64_t dropped_cap[MS], unknown[MS];
};

static const char *mname(int s)
{
    static const char *n[3] = {"m0", "m1", "m2"};
    return n[s % 3];
}

static uint32_t m_entries(const struct model *m, int s)
{
    uint32_t e = 0;
    for (int k = 0; k < MU; k++)
        for (int t = 0; t < 3; t++)
            e += m->cnt[s][k][t] > 0;
    return e;
}

static void m_event(struct model *m, int s, const kvb_index_event *ev, const uint64_t *keys)
{
    if (ev->type == KVB_INDEX_EV_CLEARED) {
        memset(m->cnt[s], 0, sizeof m->cnt[s]);
        return;
    }
    for (uint32_t b = 0; b < ev->n_hashes; b++) {
        int k = -1;
        for (int i = 0; i < MU; i++)
            if (keys[i] == ev->hashes[b])
                k = i;
        uint32_t *c = &m->cnt[s][k][ev->tier];
        if (ev->type == KVB_INDEX_EV_STORED) {
            if (*c == 1023 || (*c == 0 && m_entries(m, s) >= MMAX))
                m->dropped_cap[s]++;
            else
                (*c)++;
        } else if (*c == 0) {
            m->unknown[s]++;
        } else {
            (*c)--;
        }
    }
}

struct mres {
    int s;
    uint32_t dev, host, disk, entries;
    double score;
};

static int mres_cmp(const void *pa, const void *pb)
{
    const struct mres *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    if (a->entries != b->entries)
        return a->entries < b->entries ? -1 : 1;
    int r = strcmp(mname(a->s), mname(b->s));
    if (r)
        return r;
    return (a->s / 3) - (b->s / 3);
}

static void m_check_match(kvb_index *idx, const struct model *m, const uint64_t *keys,
                          const int *req, uint32_t n)
{
    struct mres exp[MS];
    int ne = 0;
    for (int s = 0; s < MS; s++) {
        if (!m->present[s] || m->state[s] == KVB_STREAM_STALE)
            continue;
        uint32_t any = 0, dh = 0, dev = 0;
        for (uint32_t i = 0; i < n; i++) {
            const uint32_t *c = m->cnt[s][req[i]];
            if (!c[0] && !c[1] && !c[2])
                break;
            any = i + 1;
            if (dh == i && (c[0] || c[1]))
                dh = i + 1;
            if (dev == i && c[0])
                dev = i + 1;
        }
        if (!any)
            continue;
        struct mres *r = &exp[ne++];
        r->s = s;
        r->dev = dev;
        r->host = dh - dev;
        r->disk = any - dh;
        r->entries = m_entries(m, s);
        r->score = 1.0 * dev + 0.8 * (dh - dev) + 0.5 * (any - dh);
    }
    qsort(exp, (size_t)ne, sizeof exp[0], mres_cmp);
    uint64_t h[16];
    for (uint32_t i = 0; i < n; i++)
        h[i] = keys[req[i]];
    kvb_index_result out[MS];
    int r = kvb_index_match(idx, h, n, out, MS);
    cr_assert_eq(r, ne, "match count %d, model %d", r, ne);
    for (int i = 0; i < ne; i++) {
        cr_assert_eq(out[i].stream, m->id[exp[i].s], "position %d", i);
        cr_assert_eq(out[i].device, exp[i].dev);
        cr_assert_eq(out[i].host, exp[i].host);
        cr_assert_eq(out[i].disk, exp[i].disk);
        cr_assert_eq(out[i].entries, exp[i].entries);
    }
}

static void model_run(uint64_t seed, uint32_t shards, int ops)
{
    kvb_index_config cfg;
    kvb_index_config_init(&cfg);
    cfg.shards = shards;
    cfg.max_entries_per_stream = MMAX;
    kvb_index *idx = mk_cfg(&cfg);
    static struct model m;
    memset(&m, 0, sizeof m);
    uint64_t s = seed, keys[MU];
    for (int i = 0; i < MU; i++)
        keys[i] = i < 8 ? (uint64_t)i : tu_rng_next(&s);
    for (int i = 0; i < MS; i++) {
        m.present[i] = true;
        m.id[i] = add(idx, mname(i), i / 3);
    }
    for (int op = 0; op < ops; op++) {
        int st = (int)tu_rnd(&s, MS), what = (int)tu_rnd(&s, 100);
        if (!m.present[st]) {
            kvb_index_stream_config sc = {.name = mname(st), .dp_rank = st / 3};
            cr_assert_eq(kvb_index_stream_add(idx, &sc, &m.id[st]), 0);
            m.present[st] = true;
            m.state[st] = KVB_STREAM_LIVE;
            memset(m.cnt[st], 0, sizeof m.cnt[st]);
            m.dropped_cap[st] = m.unknown[st] = 0;
        } else if (what < 88) {
            kvb_index_event ev[4];
            uint64_t hs[4][12];
            uint32_t ne = 1 + tu_rnd(&s, 4);
            for (uint32_t e = 0; e < ne; e++) {
                uint32_t t = tu_rnd(&s, 100);
                kvb_index_ev_type ty = t < 60   ? KVB_INDEX_EV_STORED
                                       : t < 97 ? KVB_INDEX_EV_REMOVED
                                                : KVB_INDEX_EV_CLEARED;
                uint32_t len = 1 + tu_rnd(&s, 12), start = tu_rnd(&s, MU);
                bool run = tu_rnd(&s, 4) != 0;
                for (uint32_t j = 0; j < len; j++)
                    hs[e][j] = keys[run ? (start + j) % MU : tu_rnd(&s, MU)];
                ev[e] = ev_of(ty, (kvb_tier)tu_rnd(&s, 3), hs[e], len);
                m_event(&m, st, &ev[e], keys);
            }
            cr_assert_eq(kvb_index_apply(idx, m.id[st], ev, ne, op), 0);
        } else if (what < 92) {
            kvb_stream_state ns = (kvb_stream_state)tu_rnd(&s, 4);
            cr_assert_eq(kvb_index_stream_set_state(idx, m.id[st], ns), 0);
            m.state[st] = ns;
        } else if (what < 96) {
            kvb_stream_state ns = (kvb_stream_state)tu_rnd(&s, 3);
            cr_assert_eq(kvb_index_stream_clear(idx, m.id[st], ns), 0);
            m.state[st] = ns;
            memset(m.cnt[st], 0, sizeof m.cnt[st]);
        } else {
            cr_assert_eq(kvb_index_stream_remove(idx, m.id[st]), 0);
            m.present[st] = false;
        }
        /* checks */
        uint64_t keys_held = 0, entries = 0;
        for (int k = 0; k < MU; k++) {
            bool any = false;
            for (int w = 0; w < MS; w++)
                if (m.present[w]) {
                    const uint32_t *c = m.cnt[w][k];
                    if (c[0] || c[1] || c[2]) {
                        any = true;
                        entries++;
                    }
                }
            keys_held += any;
        }
        kvb_index_stats stt;
        kvb_index_stats_get(idx, &stt);
        cr_assert_eq(stt.keys, keys_held, "op %d", op);
        cr_assert_eq(stt.entries, entries, "op %d", op);
        for (int w = 0; w < MS; w++)
            if (m.present[w]) {
                kvb_index_stream_info in = info(idx, m.id[w]);
                cr_assert_eq(in.entries, m_entries(&m, w), "op %d stream %d", op, w);
                cr_assert_eq(in.state, m.state[w]);
                cr_assert_eq(in.dropped[KVB_DROP_CAPACITY], m.dropped_cap[w]);
                cr_assert_eq(in.dropped[KVB_DROP_UNKNOWN_BLOCK], m.unknown[w]);
            }
        for (int q = 0; q < 6; q++) {
            int req[12];
            uint32_t n = 1 + tu_rnd(&s, 12), start = tu_rnd(&s, MU);
            for (uint32_t j = 0; j < n; j++)
                req[j] = (int)((start + j) % MU);
            m_check_match(idx, &m, keys, req, n);
        }
    }
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index_model, random_ops_1_shard)
{
    model_run(1, 1, 4000);
}

Test(index_model, random_ops_8_shards)
{
    model_run(2, 8, 4000);
    model_run(3, 64, 2000);
}

Test(index_fault, match_heap_fallback)
{
    tu_fa_reset(&FA);
    kvb_index_config cfg = fa_cfg(1);
    kvb_index *idx = mk_cfg(&cfg);
    char name[16];
    for (int w = 0; w < 1100; w++) { /* more holders than the match's stack */
        snprintf(name, sizeof name, "w%d", w);
        store(idx, add(idx, name, 0), KVB_TIER_DEVICE, H, 2);
    }
    kvb_index_result out[2];
    tu_fa_arm(&FA, 1);
    cr_assert_eq(kvb_index_match(idx, H, 2, out, 2), -ENOMEM);
    tu_fa_arm(&FA, 0);
    cr_assert_eq(kvb_index_match(idx, H, 2, out, 2), 1100);
    cr_assert_eq(out[0].device, 2);
    kvb_index_stats s;
    kvb_index_stats_get(idx, &s);
    cr_assert_eq(s.memory_bytes, tu_fa_live(&FA)); /* the match's buffer was given back */
    cr_assert_eq(kvb_index_destroy(idx), 0);
    fa_balanced();
}
