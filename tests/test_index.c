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
static const kvb_index_result *match_of(kvb_index *idx, const uint64_t *h, uint32_t n,
                                        uint32_t sid)
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
              "stream %u: got device %u host %u disk %u, want %u %u %u", sid, d, ho, di, dev,
              host, disk);
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
    store(idx, a, KVB_TIER_HOST, H, 1);                 /* a new (key, tier): dropped */
    store(idx, a, KVB_TIER_DEVICE, H, 1);               /* a copy: no new entry, kept */
    cr_assert_eq(info(idx, a).dropped[KVB_DROP_CAPACITY], 3);
    removed(idx, a, KVB_TIER_DEVICE, H + 3, 1);
    store(idx, a, KVB_TIER_HOST, H + 3, 1); /* room again */
    expect(idx, H, 6, a, 3, 1, 0);
    cr_assert_eq(kvb_index_destroy(idx), 0);
}

Test(index, order_and_top_k)
{
    kvb_index *idx = mk(0);
    uint32_t a = add(idx, "a", 0), b = add(idx, "b", 0), c = add(idx, "c", 0),
             d = add(idx, "c", 1), e = add(idx, "e", 0);
    store(idx, a, KVB_TIER_DEVICE, H, 2);  /* score 2 */
    store(idx, b, KVB_TIER_HOST, H, 4);    /* 3.2 */
    store(idx, c, KVB_TIER_DEVICE, H, 3);  /* 3, 3 entries */
    store(idx, d, KVB_TIER_DEVICE, H, 3);  /* 3, 3 entries: after c (rank) */
    store(idx, e, KVB_TIER_DEVICE, H, 3);  /* 3, 5 entries: after c and d (load) */
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
