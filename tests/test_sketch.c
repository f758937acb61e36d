/*
 * test_sketch.c - the TinyLFU frequency sketch (lib/sketch.c), white-box:
 * estimates, the doorkeeper, conservative min-of-depth counting, aging, and
 * the index function (every counter reachable, no systematic sharing between
 * distinct keys). Uses the private interface and its test-only accessors
 * (lib/sketch.h).
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "kvblock.h"
#include "support/rng.h"
#include "sketch.h"

#define DEPTH 4

static kvb_allocator alloc_default(void)
{
    kvb_allocator a = {0};
    kvb__allocator_fill(&a);
    return a;
}

static struct kvb_sketch *mk(uint32_t capacity)
{
    kvb_allocator a = alloc_default();
    struct kvb_sketch *s = NULL;
    cr_assert_eq(kvb__sketch_create(capacity, true, &a, &s), 0);
    cr_assert_not_null(s);
    return s;
}

/* A valid lineage hash from random numbers (position < 256). */
static kvb_hash rkey(uint64_t *seed)
{
    uint64_t cur = tu_rng_next(seed), par = tu_rng_next(seed);
    uint32_t pos = (uint32_t)(tu_rng_next(seed) % 256);
    kvb_hash h;
    cr_assert_eq(kvb_hash_make(cur, par, pos > 0, pos, &h), 0);
    return h;
}

/* Keys built from small integers, as traces build them (structured input). */
static kvb_hash ikey(uint64_t i)
{
    kvb_hash h;
    cr_assert_eq(kvb_hash_make(i, i ? i - 1 : 0, i > 0, (uint32_t)(i % 200), &h), 0);
    return h;
}

static uint32_t min_counter(const struct kvb_sketch *s, kvb_hash h)
{
    uint32_t idx[DEPTH], door, m = 15;
    kvb__sketch_slots(s, h, idx, &door);
    for (int r = 0; r < DEPTH; r++) {
        uint32_t c = kvb__sketch_counter(s, (uint32_t)r, idx[r]);
        m = c < m ? c : m;
    }
    return m;
}

Test(sketch, sizing)
{
    struct kvb_sketch *s = mk(1000);
    cr_expect_eq(kvb__sketch_width(s), 16u * 1024, "16 counters per unit of capacity");
    cr_expect_eq(kvb__sketch_sample_size(s), 10ull * 16 * 1024);
    cr_expect_geq(kvb__sketch_memory(s), (size_t)DEPTH * 16 * 1024 / 2);
    kvb__sketch_destroy(s);
    s = mk(0); /* at least 64 */
    cr_expect_eq(kvb__sketch_width(s), 16u * 64);
    kvb__sketch_destroy(s);
    kvb_allocator a = alloc_default();
    cr_expect_eq(kvb__sketch_create(10, true, NULL, &s), -EINVAL);
    cr_expect_eq(kvb__sketch_create(10, true, &a, NULL), -EINVAL);
}

Test(sketch, estimate_is_monotonic_up_to_15_then_stays)
{
    struct kvb_sketch *s = mk(4096);
    kvb_hash h = ikey(42);
    cr_expect_eq(kvb__sketch_estimate(s, h), 0, "never touched");
    uint32_t prev = 0;
    for (uint32_t k = 1; k <= 40; k++) {
        kvb__sketch_touch(s, h);
        uint32_t e = kvb__sketch_estimate(s, h);
        cr_expect_geq(e, prev, "touch %u: estimate went down (%u -> %u)", k, prev, e);
        /* one key alone in a large sketch: exact count, capped at 15 */
        cr_expect_eq(e, k < 15 ? k : 15, "after %u touches: %u", k, e);
        prev = e;
    }
    cr_expect_eq(kvb__sketch_agings(s), 0);
    kvb__sketch_destroy(s);
}

Test(sketch, first_touch_only_sets_the_doorkeeper)
{
    struct kvb_sketch *s = mk(1024);
    kvb_hash h = ikey(7);
    uint32_t idx[DEPTH], door;
    kvb__sketch_slots(s, h, idx, &door);
    cr_assert_not(kvb__sketch_door_bit(s, door));
    kvb__sketch_touch(s, h);
    cr_expect(kvb__sketch_door_bit(s, door), "first touch sets the doorkeeper bit");
    for (int r = 0; r < DEPTH; r++)
        cr_expect_eq(kvb__sketch_counter(s, (uint32_t)r, idx[r]), 0,
                     "first touch must not reach the counters (row %d)", r);
    cr_expect_eq(kvb__sketch_estimate(s, h), 1, "estimate = counters + doorkeeper bit");
    kvb__sketch_touch(s, h);
    for (int r = 0; r < DEPTH; r++)
        cr_expect_eq(kvb__sketch_counter(s, (uint32_t)r, idx[r]), 1, "second touch counts (row %d)",
                     r);
    cr_expect_eq(kvb__sketch_estimate(s, h), 2);
    /* one-hit wonders: keys touched once stay out of the counters, unless their
     * doorkeeper bit was already set by another key (the filter has one hash) */
    int clear = 0;
    for (uint64_t i = 1000; i < 1500; i++) {
        uint32_t ki[DEPTH], kd;
        kvb__sketch_slots(s, ikey(i), ki, &kd);
        bool before = kvb__sketch_door_bit(s, kd);
        kvb__sketch_touch(s, ikey(i));
        if (!before) {
            clear++;
            cr_expect_eq(min_counter(s, ikey(i)), 0, "key %llu reached the counters",
                         (unsigned long long)i);
        }
    }
    cr_expect_gt(clear, 450, "the doorkeeper has %u bits", kvb__sketch_width(s));
    kvb__sketch_destroy(s);
}

Test(sketch, estimate_is_min_of_depth_plus_door)
{
    struct kvb_sketch *s = mk(64); /* small: plenty of collisions */
    uint64_t seed = 1;
    for (int i = 0; i < 3000; i++) {
        kvb_hash h = rkey(&seed);
        uint32_t n = (uint32_t)(tu_rng_next(&seed) % 4);
        for (uint32_t k = 0; k <= n; k++)
            kvb__sketch_touch(s, h);
    }
    cr_assert_eq(kvb__sketch_agings(s), 0, "no aging yet (sample %llu)",
                 (unsigned long long)kvb__sketch_sample_size(s));
    seed = 99;
    for (int i = 0; i < 2000; i++) {
        kvb_hash h = rkey(&seed);
        uint32_t idx[DEPTH], door, m = 15, mx = 0;
        kvb__sketch_slots(s, h, idx, &door);
        for (int r = 0; r < DEPTH; r++) {
            uint32_t c = kvb__sketch_counter(s, (uint32_t)r, idx[r]);
            m = c < m ? c : m;
            mx = c > mx ? c : mx;
        }
        uint32_t want = m + kvb__sketch_door_bit(s, door);
        cr_expect_eq(kvb__sketch_estimate(s, h), want > 15 ? 15 : want);
    }
    kvb__sketch_destroy(s);
}

Test(sketch, a_shared_counter_does_not_inflate_the_estimate)
{
    struct kvb_sketch *s = mk(64); /* width 1024 */
    kvb_hash hot = ikey(1);
    for (int k = 0; k < 15; k++)
        kvb__sketch_touch(s, hot);
    uint32_t hidx[DEPTH], hdoor;
    kvb__sketch_slots(s, hot, hidx, &hdoor);
    /* find a key sharing the hot key's row-0 counter (about 1 in 1024) */
    kvb_hash cold = {0};
    uint32_t cidx[DEPTH], cdoor;
    uint64_t seed = 5;
    bool found = false;
    for (int tries = 0; tries < 200000 && !found; tries++) {
        cold = rkey(&seed);
        kvb__sketch_slots(s, cold, cidx, &cdoor);
        found = cidx[0] == hidx[0] && cidx[1] != hidx[1] && cidx[2] != hidx[2] &&
                cidx[3] != hidx[3] && cdoor != hdoor;
    }
    cr_assert(found);
    cr_expect_eq(kvb__sketch_counter(s, 0, cidx[0]), 14, "the shared counter is hot");
    cr_expect_eq(kvb__sketch_estimate(s, cold), 0, "min over the rows ignores it");
    kvb__sketch_touch(s, cold);
    kvb__sketch_touch(s, cold);
    cr_expect_eq(kvb__sketch_estimate(s, cold), 2);
    /* conservative update: the shared counter (above the minimum) was not raised */
    cr_expect_eq(kvb__sketch_counter(s, 0, cidx[0]), 14);
    cr_expect_eq(kvb__sketch_estimate(s, hot), 15);
    kvb__sketch_destroy(s);
}

Test(sketch, halving_after_the_sample_size)
{
    struct kvb_sketch *s = mk(64);
    uint64_t sample = kvb__sketch_sample_size(s);
    kvb_hash h = ikey(3);
    for (int k = 0; k < 15; k++)
        kvb__sketch_touch(s, h);
    cr_assert_eq(kvb__sketch_estimate(s, h), 15);
    uint32_t idx[DEPTH], door;
    kvb__sketch_slots(s, h, idx, &door);
    /* fill the sample with keys avoiding h's counters and doorkeeper bit, so only
     * the halving changes h */
    uint64_t done = 15, i = 100000;
    while (done < sample - 1) {
        kvb_hash o = ikey(i++);
        uint32_t oi[DEPTH], od;
        kvb__sketch_slots(s, o, oi, &od);
        bool clash = od == door;
        for (int r = 0; r < DEPTH; r++)
            clash |= oi[r] == idx[r];
        if (clash)
            continue;
        kvb__sketch_touch(s, o);
        done++;
    }
    cr_expect_eq(kvb__sketch_agings(s), 0, "no halving before the sample is complete");
    cr_expect_eq(kvb__sketch_estimate(s, h), 15);
    kvb__sketch_touch(s, ikey(i + 1000000)); /* touch number `sample` */
    cr_expect_eq(kvb__sketch_agings(s), 1, "halved exactly at the sample size");
    for (int r = 0; r < DEPTH; r++)
        cr_expect_eq(kvb__sketch_counter(s, (uint32_t)r, idx[r]), 7, "14 halved is 7");
    cr_expect_not(kvb__sketch_door_bit(s, door), "the doorkeeper is cleared");
    cr_expect_eq(kvb__sketch_estimate(s, h), 7);
    /* counting starts again from zero: the next halving comes a sample later */
    for (uint64_t k = 0; k < sample - 1; k++)
        kvb__sketch_touch(s, h);
    cr_expect_eq(kvb__sketch_agings(s), 1);
    kvb__sketch_touch(s, h);
    cr_expect_eq(kvb__sketch_agings(s), 2);
    cr_expect_eq(kvb__sketch_estimate(s, h), 7, "15 counted (14 + door), halved to 7");
    kvb__sketch_destroy(s);
}

Test(sketch, distinct_keys_do_not_share_counters_systematically)
{
    struct kvb_sketch *s = mk(65536); /* large: 2^20 counters per row */
    enum { N = 10000 };
    kvb_hash *keys = malloc(N * sizeof *keys);
    cr_assert_not_null(keys);
    uint64_t seed = 2024;
    for (int i = 0; i < N; i++)
        keys[i] = i % 2 ? rkey(&seed) : ikey((uint64_t)i); /* random and structured */
    for (int k = 0; k < 5; k++)
        for (int i = 0; i < N; i++)
            kvb__sketch_touch(s, keys[i]);
    cr_assert_eq(kvb__sketch_agings(s), 0);
    int exact = 0, five_or_six = 0, under = 0;
    for (int i = 0; i < N; i++) {
        uint32_t e = kvb__sketch_estimate(s, keys[i]);
        exact += e == 5;
        five_or_six += e == 5 || e == 6;
        under += e < 5;
    }
    cr_log_info("10k keys x 5 touches: %d exact, %d at 5 or 6", exact, five_or_six);
    cr_expect_eq(under, 0, "a count-min sketch never under-estimates before aging");
    cr_expect_geq(five_or_six, N - N / 1000, "only %d of %d keys at 5 or 6", five_or_six, N);
    cr_expect_geq(exact, N - N / 100, "only %d of %d keys exact", exact, N);
    free(keys);
    kvb__sketch_destroy(s);
}

Test(sketch, rows_use_independent_indexes)
{
    struct kvb_sketch *s = mk(64); /* width 1024 */
    uint32_t w = kvb__sketch_width(s);
    /* pairs of keys that share their row-0 counter should share the other rows
     * only by chance (1 in w each), unlike a scheme deriving every row from one
     * index */
    enum { KEYS = 20000 };
    uint32_t *first = malloc((size_t)w * DEPTH * sizeof *first);
    cr_assert_not_null(first);
    memset(first, 0xff, (size_t)w * DEPTH * sizeof *first);
    uint64_t seed = 77;
    uint32_t pairs = 0, shared_other = 0;
    for (uint32_t i = 0; i < KEYS; i++) {
        kvb_hash h = i % 2 ? rkey(&seed) : ikey(i);
        uint32_t idx[DEPTH], door;
        kvb__sketch_slots(s, h, idx, &door);
        for (int r = 0; r < DEPTH; r++)
            cr_assert_lt(idx[r], w);
        uint32_t *f = &first[(size_t)idx[0] * DEPTH];
        if (f[0] == UINT32_MAX) {
            for (int r = 0; r < DEPTH; r++)
                f[r] = idx[r];
            continue;
        }
        pairs++;
        for (int r = 1; r < DEPTH; r++)
            shared_other += f[r] == idx[r];
    }
    cr_log_info("%u pairs sharing row 0, %u other-row matches", pairs, shared_other);
    cr_assert_gt(pairs, 10000);
    /* expectation 3 * pairs / w ~ 55; systematic sharing would give ~3 * pairs */
    cr_expect_lt(shared_other, 3 * pairs / 100);
    free(first);
    kvb__sketch_destroy(s);
}

Test(sketch, every_counter_of_every_row_is_reachable)
{
    struct kvb_sketch *s = mk(64); /* width 1024, 4 rows */
    uint32_t w = kvb__sketch_width(s);
    bool *used = calloc((size_t)w * DEPTH, 1);
    cr_assert_not_null(used);
    uint32_t missing = w * DEPTH;
    uint64_t seed = 31;
    /* touch keys twice (the second touch reaches the counters) and mark each
     * counter seen above zero right after, before any halving can clear it */
    for (uint32_t k = 0; k < 400000 && missing > 0; k++) {
        kvb_hash h = k % 2 ? rkey(&seed) : ikey(k);
        kvb__sketch_touch(s, h);
        kvb__sketch_touch(s, h);
        uint32_t idx[DEPTH], door;
        kvb__sketch_slots(s, h, idx, &door);
        for (int r = 0; r < DEPTH; r++) {
            bool *u = &used[(size_t)r * w + idx[r]];
            if (!*u && kvb__sketch_counter(s, (uint32_t)r, idx[r]) > 0) {
                *u = true;
                missing--;
            }
        }
    }
    cr_expect_eq(missing, 0, "%u of %u counters never used", missing, w * DEPTH);
    /* and every nibble position inside the 64-bit words, in every row */
    for (int r = 0; r < DEPTH; r++)
        for (uint32_t nib = 0; nib < 16; nib++) {
            bool any = false;
            for (uint32_t i = nib; i < w && !any; i += 16)
                any = used[(size_t)r * w + i];
            cr_expect(any, "row %d never uses nibble %u of its words", r, nib);
        }
    free(used);
    kvb__sketch_destroy(s);
}

Test(sketch, frequency_callback_is_the_estimate)
{
    struct kvb_sketch *s = mk(256);
    kvb_hash h = ikey(9);
    for (int k = 0; k < 4; k++)
        kvb__sketch_touch(s, h);
    cr_expect_eq(kvb__sketch_frequency_cb(s, h), kvb__sketch_estimate(s, h));
    cr_expect_eq(kvb__sketch_frequency_cb(s, h), 4);
    kvb__sketch_destroy(s);
    kvb__sketch_destroy(NULL); /* no-op */
}

Test(sketch, private_sketch_counts_like_a_shared_one)
{
    /* A pool's private sketch takes plain loads and stores where a shared
     * one takes atomic read-modify-writes: single-threaded, both must count,
     * age and estimate identically. */
    kvb_allocator a = alloc_default();
    struct kvb_sketch *sh = NULL, *pv = NULL;
    cr_assert_eq(kvb__sketch_create(64, true, &a, &sh), 0);
    cr_assert_eq(kvb__sketch_create(64, false, &a, &pv), 0);
    uint64_t seed = 7;
    for (uint32_t i = 0; i < 40000; i++) {
        uint64_t r = tu_rng_next(&seed);
        kvb_hash h = ikey(r % 16 < 12 ? r % 300 : r % 20000); /* skewed: hot and cold keys */
        kvb__sketch_touch(sh, h);
        kvb__sketch_touch(pv, h);
        if (i % 997 == 0)
            for (uint64_t k = 0; k < 400; k++)
                cr_assert_eq(kvb__sketch_estimate(pv, ikey(k)), kvb__sketch_estimate(sh, ikey(k)),
                             "touch %u, key %llu", i, (unsigned long long)k);
    }
    cr_assert_geq(kvb__sketch_agings(sh), 3, "the run must cross several halvings");
    cr_assert_eq(kvb__sketch_agings(pv), kvb__sketch_agings(sh));
    uint32_t hot = 0;
    for (uint64_t k = 0; k < 300; k++)
        hot += kvb__sketch_estimate(pv, ikey(k)) >= 2;
    cr_assert_gt(hot, 200, "hot keys are counted (%u of 300)", hot);
    kvb__sketch_destroy(sh);
    kvb__sketch_destroy(pv);
}
