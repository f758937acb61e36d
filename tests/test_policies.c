/*
 * test_policies.c - policy-specific behaviour of the built-in eviction
 * backends: the order policies (lru, fifo), the frequency-aware ones
 * (multi_lru, tinylfu) and the prefix-aware ones (lineage, lineage_arc).
 * The generic contracts (errors, allocation, rollback, len, drain) are the
 * conformance suite's (tests/test_inactive.c); this file checks what makes
 * each policy what it is: insertion versus arrival order (with wraparound and
 * ties), levels and re-levelling, the admission duel, leaf-first order with
 * children released before or after their parents, constructed (position,
 * parent fragment) collisions, scan resistance, and the prefix property
 * through a real pool. Every instance allocates through a fail-at-k allocator
 * (never armed here) that must balance when it is destroyed.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvblock.h"
#include "support/fail_alloc.h"
#include "support/rng.h"
#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* Harness: one backend instance driven directly                            */
/* ------------------------------------------------------------------------ */

/* Frequency table for the tests: freq_of[k] for the hash of key k (the key is
 * recovered from the hash's sequence hash, see key_hash()). */
#define MAXK 4096
static uint32_t freq_of[MAXK];

/* A root hash whose sequence hash encodes k in its low 16 bits (mixed above). */
static kvb_hash key_hash(uint32_t k)
{
    kvb_hash h;
    uint64_t cur = (tu_mix64(k) & ~0xffffull) | k;
    cr_assert_eq(kvb_hash_make(cur, 0, false, 0, &h), 0);
    return h;
}

static uint32_t test_freq(void *ctx, kvb_hash h)
{
    (void)ctx;
    uint32_t k = (uint32_t)(kvb_hash_current(h) & 0xffff);
    return k < MAXK ? freq_of[k] : 0;
}

struct inst {
    const kvb_inactive_ops *ops;
    void *self;
    uint32_t n;
    tu_fa *fa; /* the instance's allocator (support/fail_alloc.h) */
};

static struct inst mk_th(const kvb_inactive_ops *ops, uint32_t n, bool with_freq,
                         const uint8_t th[3])
{
    kvb_inactive_params p;
    memset(&p, 0, sizeof p);
    p.block_count = n;
    memcpy(p.thresholds, th, 3);
    if (with_freq)
        p.frequency = test_freq;
    struct inst in = {ops, NULL, n, malloc(sizeof(tu_fa))};
    cr_assert_not_null(in.fa);
    tu_fa_init(in.fa, 0);
    p.allocator = tu_fa_allocator(in.fa);
    cr_assert_eq(ops->create(&p, &in.self), 0, "%s: create", ops->name);
    return in;
}

static struct inst mk(const kvb_inactive_ops *ops, uint32_t n)
{
    static const uint8_t th[3] = {3, 8, 15};
    return mk_th(ops, n, true, th);
}

/* Destroy the instance: everything it allocated is freed, with the right sizes. */
static void done(struct inst *in)
{
    in->ops->destroy(in->self);
    cr_expect(tu_fa_balanced(in->fa),
              "%s: %ld allocations, %ld frees, %zu bytes live, %ld bad frees", in->ops->name,
              in->fa->n_alloc, in->fa->n_free, tu_fa_live(in->fa), in->fa->mismatches);
    free(in->fa);
    in->fa = NULL;
}

static void ins(struct inst *in, kvb_hash h, uint32_t id, uint32_t arrival)
{
    int rc = in->ops->insert(in->self, h, id, arrival);
    cr_assert_eq(rc, 0, "%s: insert(%u) = %d", in->ops->name, id, rc);
}

static void rem(struct inst *in, kvb_hash h, uint32_t id)
{
    cr_assert(in->ops->remove(in->self, h, id), "%s: remove(%u)", in->ops->name, id);
}

static uint32_t ev1(struct inst *in)
{
    uint32_t id;
    cr_assert_eq(in->ops->evict(in->self, 1, &id), 1, "%s: evict(1) gave nothing", in->ops->name);
    return id;
}

static void expect_order(struct inst *in, const uint32_t *want, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t got = ev1(in);
        cr_expect_eq(got, want[i], "%s: eviction %u: got %u, expected %u", in->ops->name, i, got,
                     want[i]);
    }
    cr_expect_eq(in->ops->len(in->self), 0);
}

/* ------------------------------------------------------------------------ */
/* lru and fifo: insertion order and arrival order                          */
/* ------------------------------------------------------------------------ */

/* The order policies key on ids and arrivals only; block id k gets hash key_hash(k). */
static int ins_id(struct inst *in, uint32_t id, uint32_t arrival)
{
    return in->ops->insert(in->self, key_hash(id), id, arrival);
}

static bool rem_id(struct inst *in, uint32_t id)
{
    return in->ops->remove(in->self, key_hash(id), id);
}

static uint32_t ev(struct inst *in, uint32_t n, uint32_t *out)
{
    return in->ops->evict(in->self, n, out);
}

/* Roll back the last evict as the pool does: unevict with the victims' hashes. */
static void unev(struct inst *in, const uint32_t *ids, const uint32_t *arrivals, uint32_t n)
{
    kvb_hash hashes[n ? n : 1];
    for (uint32_t i = 0; i < n; i++)
        hashes[i] = key_hash(ids[i]);
    cr_assert_not_null(in->ops->unevict, "%s: no unevict", in->ops->name);
    in->ops->unevict(in->self, ids, hashes, arrivals, n);
}

/* One evict of everything: exactly want[0..n), in that order. */
static void expect_batch(struct inst *in, const uint32_t *want, uint32_t n)
{
    uint32_t out[in->n];
    uint32_t k = ev(in, in->n, out);
    cr_assert_eq(k, n, "%s: %u entries, expected %u", in->ops->name, k, n);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(out[i], want[i], "%s: position %u: got %u, expected %u", in->ops->name, i,
                     out[i], want[i]);
}

Test(lru, order_is_insertion_order)
{
    struct inst in = mk(&kvb_inactive_lru, 16);
    uint32_t ids[] = {9, 3, 15, 0, 7, 12};
    /* arrivals are ignored by lru: give them in the opposite order */
    for (uint32_t i = 0; i < 6; i++)
        cr_assert_eq(ins_id(&in, ids[i], 100 - i), 0);
    expect_batch(&in, ids, 6);
    done(&in);
}

Test(lru, evict_in_chunks_continues_from_lru_end)
{
    struct inst in = mk(&kvb_inactive_lru, 16);
    for (uint32_t id = 0; id < 10; id++)
        cr_assert_eq(ins_id(&in, id, 0), 0);
    uint32_t out[4];
    cr_assert_eq(ev(&in, 3, out), 3);
    cr_assert(out[0] == 0 && out[1] == 1 && out[2] == 2);
    cr_assert_eq(ins_id(&in, 1, 0), 0); /* released again: MRU end */
    uint32_t want[] = {3, 4, 5, 6, 7, 8, 9, 1};
    expect_batch(&in, want, 8);
    done(&in);
}

Test(lru, remove_and_reinsert_moves_to_mru_end)
{
    struct inst in = mk(&kvb_inactive_lru, 8);
    for (uint32_t id = 0; id < 5; id++)
        cr_assert_eq(ins_id(&in, id, id), 0);
    cr_assert(rem_id(&in, 0)); /* hit on the LRU end */
    cr_assert(rem_id(&in, 2)); /* hit in the middle */
    cr_assert_eq(ins_id(&in, 2, 2), 0);
    cr_assert_eq(ins_id(&in, 0, 0), 0);
    uint32_t want[] = {1, 3, 4, 2, 0};
    expect_batch(&in, want, 5);
    done(&in);
}

Test(lru, unevict_puts_back_at_lru_end)
{
    struct inst in = mk(&kvb_inactive_lru, 8);
    for (uint32_t id = 0; id < 6; id++)
        cr_assert_eq(ins_id(&in, id, 0), 0);
    uint32_t out[3];
    cr_assert_eq(ev(&in, 3, out), 3);
    cr_assert_eq(ins_id(&in, 7, 0), 0); /* something new arrives in between */
    unev(&in, out, (uint32_t[]){0, 0, 0}, 3);
    uint32_t want[] = {0, 1, 2, 3, 4, 5, 7};
    expect_batch(&in, want, 7);
    done(&in);
}

Test(fifo, order_is_arrival_order_not_insertion_order)
{
    struct inst in = mk(&kvb_inactive_fifo, 16);
    /* (id, arrival), inserted in an order unrelated to arrival */
    uint32_t ids[] = {4, 11, 2, 8, 0, 13, 6};
    uint32_t arr[] = {50, 10, 40, 20, 70, 30, 60};
    for (uint32_t i = 0; i < 7; i++)
        cr_assert_eq(ins_id(&in, ids[i], arr[i]), 0);
    uint32_t want[] = {11, 8, 13, 2, 4, 6, 0};
    expect_batch(&in, want, 7);
    done(&in);
}

Test(fifo, reinsert_with_old_arrival_keeps_place)
{
    struct inst in = mk(&kvb_inactive_fifo, 8);
    for (uint32_t id = 0; id < 5; id++)
        cr_assert_eq(ins_id(&in, id, 100 + id), 0);
    cr_assert(rem_id(&in, 0)); /* hit on the oldest */
    cr_assert(rem_id(&in, 3)); /* hit in the middle */
    cr_assert_eq(ins_id(&in, 5, 105), 0);
    cr_assert_eq(ins_id(&in, 3, 103), 0); /* released again: old place */
    cr_assert_eq(ins_id(&in, 0, 100), 0);
    uint32_t want[] = {0, 1, 2, 3, 4, 5};
    expect_batch(&in, want, 6);
    done(&in);
}

Test(fifo, pool_release_patterns)
{
    /* The shapes a pool produces: requests released last block first
     * (descending arrivals), hits that keep their place, a held block that
     * reaches the head while in use and comes back later, and a slot whose
     * content changed while it was out. */
    struct inst in = mk(&kvb_inactive_fifo, 32);
    for (uint32_t r = 0; r < 3; r++) /* requests of 4 blocks, ids = arrivals */
        for (uint32_t b = 4; b-- > 0;)
            cr_assert_eq(ins_id(&in, 4 * r + b, 4 * r + b), 0);
    cr_assert(rem_id(&in, 0)); /* held: in use when it reaches the head */
    cr_assert(rem_id(&in, 5)); /* hit, released again before the eviction reaches it */
    cr_assert(rem_id(&in, 9)); /* hit, then its slot gets other content */
    cr_assert_eq(ins_id(&in, 5, 5), 0);
    uint32_t out[2];
    cr_assert_eq(ev(&in, 2, out), 2);
    cr_assert_eq(out[0], 1); /* 0 is in use: skipped */
    cr_assert_eq(out[1], 2);
    cr_assert_eq(ins_id(&in, 0, 0), 0);  /* back: oldest of all again */
    cr_assert_eq(ins_id(&in, 9, 40), 0); /* new content in slot 9: newest */
    for (uint32_t b = 4; b-- > 0;)       /* one more request, last first */
        cr_assert_eq(ins_id(&in, 12 + b, 20 + b), 0);
    uint32_t want[] = {0, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 9};
    expect_batch(&in, want, 14);
    done(&in);
}

Test(fifo, differs_from_lru_on_a_hit)
{
    /* The same calls give different orders: that is the point of fifo. */
    struct inst f = mk(&kvb_inactive_fifo, 8), l = mk(&kvb_inactive_lru, 8);
    for (uint32_t id = 0; id < 3; id++) {
        cr_assert_eq(ins_id(&f, id, id), 0);
        cr_assert_eq(ins_id(&l, id, id), 0);
    }
    cr_assert(rem_id(&f, 0) && rem_id(&l, 0));
    cr_assert_eq(ins_id(&f, 0, 0), 0);
    cr_assert_eq(ins_id(&l, 0, 0), 0);
    expect_batch(&f, (uint32_t[]){0, 1, 2}, 3);
    expect_batch(&l, (uint32_t[]){1, 2, 0}, 3);
    done(&f);
    done(&l);
}

Test(fifo, arrival_wraparound)
{
    struct inst in = mk(&kvb_inactive_fifo, 64);
    /* arrivals 2^32 - 20 .. 2^32 + 19 (wrapped), inserted in a scrambled order */
    for (uint32_t i = 0; i < 40; i++) {
        uint32_t j = (i * 17) % 40;
        cr_assert_eq(ins_id(&in, j, UINT32_MAX - 19 + j), 0);
    }
    uint32_t want[40];
    for (uint32_t i = 0; i < 40; i++)
        want[i] = i;
    expect_batch(&in, want, 40);
    /* Signed distance: 0x7fffffff after 0 is later, 0x80000001 after 0 is earlier. */
    cr_assert_eq(ins_id(&in, 1, 0x7fffffffu), 0);
    cr_assert_eq(ins_id(&in, 0, 0), 0);
    expect_batch(&in, (uint32_t[]){0, 1}, 2);
    cr_assert_eq(ins_id(&in, 1, 0x80000001u), 0);
    cr_assert_eq(ins_id(&in, 0, 0), 0);
    expect_batch(&in, (uint32_t[]){1, 0}, 2);
    done(&in);
}

Test(fifo, equal_arrivals_lower_id_first)
{
    struct inst in = mk(&kvb_inactive_fifo, 16);
    uint32_t ids[] = {9, 3, 12, 0, 5};
    for (uint32_t i = 0; i < 5; i++)
        cr_assert_eq(ins_id(&in, ids[i], 77), 0);
    cr_assert_eq(ins_id(&in, 15, 76), 0);
    uint32_t want[] = {15, 0, 3, 5, 9, 12};
    expect_batch(&in, want, 6);
    done(&in);
}

Test(fifo, duplicate_insert_with_other_arrival_does_not_move)
{
    struct inst in = mk(&kvb_inactive_fifo, 8);
    for (uint32_t id = 0; id < 4; id++)
        cr_assert_eq(ins_id(&in, id, 10 + id), 0);
    cr_assert_eq(ins_id(&in, 3, 1), -EEXIST);
    cr_assert_eq(ins_id(&in, 0, 99), -EEXIST);
    expect_batch(&in, (uint32_t[]){0, 1, 2, 3}, 4);
    done(&in);
}

Test(fifo, unevict_restores_arrivals)
{
    struct inst in = mk(&kvb_inactive_fifo, 8);
    for (uint32_t id = 0; id < 6; id++)
        cr_assert_eq(ins_id(&in, id, 10 * id), 0);
    uint32_t out[3];
    cr_assert_eq(ev(&in, 3, out), 3);
    cr_assert_eq(ins_id(&in, 7, 15), 0); /* arrival between the evicted 1 and 2 */
    unev(&in, out, (uint32_t[]){0, 10, 20}, 3);
    expect_batch(&in, (uint32_t[]){0, 1, 7, 2, 3, 4, 5}, 7);
    /* Without arrivals the entries go back in front, in the given order. */
    for (uint32_t id = 0; id < 6; id++)
        cr_assert_eq(ins_id(&in, id, 10 * id), 0);
    cr_assert_eq(ev(&in, 3, out), 3);
    kvb_hash h[3] = {key_hash(out[0]), key_hash(out[1]), key_hash(out[2])};
    in.ops->unevict(in.self, out, h, NULL, 3);
    expect_batch(&in, (uint32_t[]){0, 1, 2, 3, 4, 5}, 6);
    done(&in);
}

/* ------------------------------------------------------------------------ */
/* multi_lru                                                                */
/* ------------------------------------------------------------------------ */

Test(multi_lru, coldest_level_first_lru_within_a_level)
{
    memset(freq_of, 0, sizeof freq_of);
    /* levels with 3/8/15: 0..2 -> 0, 3..7 -> 1, 8..14 -> 2, 15 -> 3 */
    uint32_t f[8] = {15, 0, 8, 3, 2, 14, 7, 15};
    struct inst in = mk(&kvb_inactive_multi_lru, 8);
    for (uint32_t i = 0; i < 8; i++) {
        freq_of[i] = f[i];
        ins(&in, key_hash(i), i, i);
    }
    /* level 0: 1, 4; level 1: 3, 6; level 2: 2, 5; level 3: 0, 7 */
    uint32_t want[8] = {1, 4, 3, 6, 2, 5, 0, 7};
    expect_order(&in, want, 8);
    done(&in);
}

Test(multi_lru, a_block_is_relevelled_on_every_insert)
{
    memset(freq_of, 0, sizeof freq_of);
    struct inst in = mk(&kvb_inactive_multi_lru, 4);
    for (uint32_t i = 0; i < 4; i++)
        ins(&in, key_hash(i), i, i);
    /* block 0 gets hot while it is out (a hit), then comes back: level 3 now
     * (Dynamo's multi-level LRU keeps the level of the first insert) */
    rem(&in, key_hash(0), 0);
    freq_of[0] = 15;
    ins(&in, key_hash(0), 0, 0);
    /* block 1 cools down: it comes back at level 0 after a stay at level 2 */
    rem(&in, key_hash(1), 1);
    freq_of[1] = 9;
    ins(&in, key_hash(1), 1, 1);
    rem(&in, key_hash(1), 1);
    freq_of[1] = 1;
    ins(&in, key_hash(1), 1, 1);
    uint32_t want[4] = {2, 3, 1, 0};
    expect_order(&in, want, 4);
    done(&in);
}

Test(multi_lru, thresholds_are_validated)
{
    static const uint8_t bad[][3] = {{0, 8, 15}, {3, 3, 15}, {8, 3, 15}, {3, 8, 16}, {3, 15, 15}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kvb_inactive_params p;
        memset(&p, 0, sizeof p);
        p.block_count = 8;
        memcpy(p.thresholds, bad[i], 3);
        tu_fa fa;
        tu_fa_init(&fa, 0);
        p.allocator = tu_fa_allocator(&fa);
        void *self = NULL;
        cr_expect_eq(kvb_inactive_multi_lru.create(&p, &self), -EINVAL, "thresholds %u/%u/%u",
                     bad[i][0], bad[i][1], bad[i][2]);
        cr_expect(tu_fa_balanced(&fa), "a refused create leaves nothing allocated");
    }
    static const uint8_t ok[3] = {1, 2, 15};
    struct inst in = mk_th(&kvb_inactive_multi_lru, 8, true, ok);
    done(&in);
    /* and through the pool config */
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.evict = KVB_EVICT_MULTI_LRU;
    cfg.multi_lru_thresholds[0] = 9;
    cfg.multi_lru_thresholds[1] = 8;
    cfg.multi_lru_thresholds[2] = 15;
    kvb_pool *p = NULL;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL);
}

Test(multi_lru, without_frequency_it_is_lru)
{
    static const uint8_t th[3] = {3, 8, 15};
    memset(freq_of, 0xff, sizeof freq_of); /* would matter if it were read */
    struct inst in = mk_th(&kvb_inactive_multi_lru, 6, false, th);
    uint32_t order[6] = {4, 1, 5, 0, 3, 2};
    for (uint32_t i = 0; i < 6; i++)
        ins(&in, key_hash(order[i]), order[i], i);
    expect_order(&in, order, 6);
    done(&in);
}

/* ------------------------------------------------------------------------ */
/* tinylfu                                                                  */
/* ------------------------------------------------------------------------ */

static void evn(struct inst *in, uint32_t n, const uint32_t *want)
{
    uint32_t out[64];
    cr_assert_eq(in->ops->evict(in->self, n, out), n);
    for (uint32_t i = 0; i < n; i++)
        cr_expect_eq(out[i], want[i], "%s: eviction %u: got %u, expected %u", in->ops->name, i,
                     out[i], want[i]);
}

Test(tinylfu, the_colder_of_candidate_and_victim_goes)
{
    memset(freq_of, 0, sizeof freq_of);
    /* 100 blocks: window target 1% = 1 block */
    struct inst in = mk(&kvb_inactive_tinylfu, 100);
    for (uint32_t i = 0; i < 50; i++) {
        freq_of[i] = 5;
        ins(&in, key_hash(i), i, i);
    }
    /* window over target, main area empty: the window's LRU goes; then the
     * window's overflow moves to probation: probation 1..48, window 49 */
    uint32_t w0[1] = {0};
    evn(&in, 1, w0);
    freq_of[60] = 9; /* hotter than the main victim */
    freq_of[61] = 5; /* as hot as it */
    freq_of[62] = 1; /* colder */
    ins(&in, key_hash(60), 60, 60);
    ins(&in, key_hash(61), 61, 61);
    ins(&in, key_hash(62), 62, 62);
    /* window 49 60 61 62; each eviction duels the window's LRU with probation's:
     *   49 (5) vs 1 (5): tie -> the candidate goes (Caffeine's rule);
     *   60 (9) vs 1 (5): 60 is admitted to probation, 1 goes;
     *   61 (5) vs 2 (5): tie -> 61 goes. Window back at its target (62). */
    uint32_t w1[3] = {49, 1, 61};
    evn(&in, 3, w1);
    /* window within target: the main victim goes */
    uint32_t w2[1] = {2};
    evn(&in, 1, w2);
    /* a cold candidate loses against a warm victim */
    freq_of[63] = 0;
    ins(&in, key_hash(63), 63, 63);
    uint32_t w3[1] = {62};
    evn(&in, 1, w3);
    done(&in);
}

Test(tinylfu, a_hit_in_probation_promotes_to_protected)
{
    memset(freq_of, 0, sizeof freq_of);
    struct inst in = mk(&kvb_inactive_tinylfu, 100);
    for (uint32_t i = 0; i < 10; i++)
        ins(&in, key_hash(i), i, i);
    uint32_t w0[1] = {0};
    evn(&in, 1, w0); /* probation 1..8, window 9 */
    /* 2 is hit (taken out) and released again: same content -> protected */
    rem(&in, key_hash(2), 2);
    ins(&in, key_hash(2), 2, 2);
    /* 3 is hit, but its slot gets new content: a new arrival -> the window */
    rem(&in, key_hash(3), 3);
    ins(&in, key_hash(30), 3, 30);
    /* window 9 3 over target: duel 9 vs 1 (tie: 9 goes); the window (3) is then
     * at target: probation 1 4 5 6 7 8, protected 2, window 3 */
    uint32_t want[9] = {9, 1, 4, 5, 6, 7, 8, 2, 3};
    evn(&in, 9, want);
    cr_expect_eq(in.ops->len(in.self), 0);
    done(&in);
}

Test(tinylfu, unevict_restores_duels_and_moves)
{
    memset(freq_of, 0, sizeof freq_of);
    struct inst a = mk(&kvb_inactive_tinylfu, 64), b = mk(&kvb_inactive_tinylfu, 64);
    for (uint32_t i = 0; i < 64; i++) {
        freq_of[i] = (uint32_t)(tu_mix64(i) % 16);
        ins(&a, key_hash(i), i, i);
        ins(&b, key_hash(i), i, i);
    }
    uint32_t out[64], again[64];
    /* the pool evicts in chunks and hands them back first chunk first */
    cr_assert_eq(a.ops->evict(a.self, 10, out), 10);
    cr_assert_eq(a.ops->evict(a.self, 7, out + 10), 7);
    kvb_hash hs[17];
    uint32_t arr[17];
    for (uint32_t i = 0; i < 17; i++) {
        hs[i] = key_hash(out[i]);
        arr[i] = out[i];
    }
    a.ops->unevict(a.self, out, hs, arr, 10);
    a.ops->unevict(a.self, out + 10, hs + 10, arr + 10, 7);
    cr_assert_eq(a.ops->len(a.self), 64);
    cr_assert_eq(a.ops->evict(a.self, 64, out), 64);
    cr_assert_eq(b.ops->evict(b.self, 64, again), 64);
    for (uint32_t i = 0; i < 64; i++)
        cr_expect_eq(out[i], again[i], "position %u", i);
    done(&a);
    done(&b);
}

/* ------------------------------------------------------------------------ */
/* prefix trees: lineage and lineage_arc                                     */
/* ------------------------------------------------------------------------ */

/* Block j of sequence s: sequence hashes are mixed, as real XXH3 chains are. */
static uint64_t seqh(uint32_t s, uint32_t j)
{
    return tu_mix64(((uint64_t)s << 32) | j) | 1;
}

static kvb_hash chain_hash(uint32_t s, uint32_t j)
{
    kvb_hash h;
    cr_assert_eq(kvb_hash_make(seqh(s, j), j ? seqh(s, j - 1) : 0, j > 0, j, &h), 0);
    return h;
}

/* The block with sequence hash cur at position pos, child of sequence hash parent. */
static kvb_hash child_of(uint64_t parent, uint64_t cur, uint32_t pos)
{
    kvb_hash h;
    cr_assert_eq(kvb_hash_make(cur, parent, true, pos, &h), 0);
    return h;
}

static const kvb_inactive_ops *const tree_ops[] = {&kvb_inactive_lineage,
                                                   &kvb_inactive_lineage_arc};

Test(lineage, children_released_first_then_lru_among_leaves)
{
    for (size_t o = 0; o < 2; o++) {
        struct inst in = mk(tree_ops[o], 16);
        /* sequence 1: blocks 0..3 (ids 0..3), released deepest first, as a
         * finished request does; then sequence 2 (ids 4, 5) */
        for (uint32_t j = 4; j-- > 0;)
            ins(&in, chain_hash(1, j), j, j);
        for (uint32_t j = 2; j-- > 0;)
            ins(&in, chain_hash(2, j), 4 + j, 10 + j);
        uint32_t want[6] = {3, 2, 1, 0, 5, 4};
        expect_order(&in, want, 6);
        done(&in);
    }
}

Test(lineage, parents_released_first_still_outlive_their_children)
{
    for (size_t o = 0; o < 2; o++) {
        struct inst in = mk(tree_ops[o], 16);
        /* out of order: the parents are released (inserted) before their
         * children, so plain LRU would evict the parents first */
        for (uint32_t j = 0; j < 4; j++)
            ins(&in, chain_hash(7, j), j, j);
        uint32_t want[4] = {3, 2, 1, 0};
        expect_order(&in, want, 4);
        /* a branching tree: root r (id 0), children a (1) and b (2), a's child
         * c (3); inserted root first: b is the oldest leaf, then c, a, r */
        ins(&in, chain_hash(8, 0), 0, 0);
        ins(&in, child_of(seqh(8, 0), 0x1111111111111111ull, 1), 1, 1);
        ins(&in, child_of(seqh(8, 0), 0x2222222222222222ull, 1), 2, 2);
        ins(&in, child_of(0x1111111111111111ull, 0x3333333333333333ull, 2), 3, 3);
        uint32_t want2[4] = {2, 3, 1, 0};
        expect_order(&in, want2, 4);
        done(&in);
    }
}

Test(lineage, a_hit_keeps_the_tree)
{
    for (size_t o = 0; o < 2; o++) {
        struct inst in = mk(tree_ops[o], 16);
        for (uint32_t j = 3; j-- > 0;)
            ins(&in, chain_hash(3, j), j, j);
        ins(&in, chain_hash(4, 0), 5, 5);
        /* the root of sequence 3 is hit (taken out) while its children stay */
        rem(&in, chain_hash(3, 0), 0);
        ins(&in, chain_hash(3, 0), 0, 6); /* released again: the newest */
        /* leaves by age: 2, then 1 (its child gone), then 5, then 0 */
        uint32_t want[4] = {2, 1, 5, 0};
        expect_order(&in, want, 4);
        done(&in);
    }
}

Test(lineage, constructed_collisions_degrade_to_separate_trees)
{
    for (size_t o = 0; o < 2; o++) {
        struct inst in = mk(tree_ops[o], 32);
        /* two different blocks at position 1 under one root whose sequence
         * hashes share their low 54 bits: their children carry the same
         * (position, parent fragment). kvb_hash_make builds them directly. */
        uint64_t root = seqh(9, 0);
        uint64_t p1 = 0x0023456789ABCDEFull, p2 = 0xFFE3456789ABCDEFull; /* top 10 bits */
        kvb_hash hp1 = child_of(root, p1, 1), hp2 = child_of(root, p2, 1);
        kvb_hash c1 = child_of(p1, 0x1111111111111111ull, 2); /* child of p1 */
        kvb_hash c2 = child_of(p2, 0x2222222222222222ull, 2); /* of p2: same key */
        cr_assert(kvb_hash_is_parent(hp1, c2) && kvb_hash_is_parent(hp2, c1),
                  "the construction collides");
        ins(&in, chain_hash(9, 0), 0, 0);
        ins(&in, hp1, 1, 1);
        ins(&in, hp2, 2, 2);
        ins(&in, c1, 3, 3);
        /* c1's key covers both p1 and p2: neither goes before c1 */
        cr_expect_eq(ev1(&in), 3);
        cr_expect_eq(ev1(&in), 1, "then the oldest leaf, p1");
        ins(&in, c2, 3, 4);
        cr_expect_eq(ev1(&in), 3, "c2 goes before p2, its parent");
        cr_expect_eq(ev1(&in), 2);
        cr_expect_eq(ev1(&in), 0);
        cr_expect_eq(in.ops->len(in.self), 0);
        /* many blocks sharing one up key, both colliding parents, removes and
         * evictions in any order: never a crash, never a parent before a child */
        for (uint32_t i = 0; i < 8; i++)
            ins(&in, child_of(p1 ^ ((uint64_t)i << 58), 0x3000 + i, 2), i, i);
        ins(&in, hp1, 8, 8);
        ins(&in, hp2, 9, 9);
        rem(&in, child_of(p1 ^ (3ull << 58), 0x3003, 2), 3);
        uint32_t out[32], seen = 0;
        uint32_t k = in.ops->evict(in.self, 32, out);
        cr_expect_eq(k, 9);
        for (uint32_t i = 0; i < k; i++) {
            seen |= 1u << out[i];
            if (out[i] == 8 || out[i] == 9)
                cr_expect_geq(i, 7, "%s: a colliding parent went before a child", in.ops->name);
        }
        cr_expect_eq(seen, 0x3f7u);
        done(&in);
    }
}

Test(lineage, sequence_hashes_without_entropy_cost_bounded_time)
{
    /* Raw small integers as sequence hashes (as a trace's block ids are): every
     * parent fragment is 0, so every block at position j looks like a child of
     * every block at position j - 1. The order degrades (deepest position
     * first), nothing breaks, and the work stays bounded. */
    for (size_t o = 0; o < 2; o++) {
        enum { SEQ = 400, LEN = 25, N = SEQ * LEN };
        struct inst in = mk(tree_ops[o], N);
        uint32_t id = 0;
        for (uint32_t s = 0; s < SEQ; s++)
            for (uint32_t j = LEN; j-- > 0;) {
                kvb_hash h;
                uint64_t cur = (uint64_t)s * LEN + j + 1;
                cr_assert_eq(kvb_hash_make(cur, cur - 1, j > 0, j, &h), 0);
                ins(&in, h, id, id);
                id++;
            }
        static uint32_t out[N];
        uint32_t k = in.ops->evict(in.self, N, out);
        cr_expect_eq(k, (uint32_t)N);
        /* ids were given deepest block first (id = s * LEN + LEN - 1 - j): the
         * child of id is id - 1 and must have gone first */
        static bool gone[N];
        memset(gone, 0, sizeof gone);
        for (uint32_t i = 0; i < k; i++) {
            uint32_t x = out[i];
            cr_assert(x % LEN == 0 || gone[x - 1], "%s: eviction %u: %u before its child",
                      in.ops->name, i, x);
            gone[x] = true;
        }
        cr_expect_eq(in.ops->len(in.self), 0);
        done(&in);
    }
}

/* ------------------------------------------------------------------------ */
/* lineage_arc: frequency through T2 and the ghosts                          */
/* ------------------------------------------------------------------------ */

Test(lineage_arc, reused_blocks_survive_a_flood_of_new_ones)
{
    enum { N = 64 };
    struct inst in = mk(&kvb_inactive_lineage_arc, N);
    /* 8 popular roots, each released, hit and released again: T2 */
    for (uint32_t i = 0; i < 8; i++) {
        ins(&in, key_hash(i), i, i);
        rem(&in, key_hash(i), i);
        ins(&in, key_hash(i), i, i);
    }
    /* a flood of one-time content through the other slots, 20 times over: each
     * new block needs a slot; LRU would have lost the popular ones long ago */
    uint32_t next = 1000;
    for (uint32_t round = 0; round < 20 * N; round++) {
        uint32_t id;
        if (in.ops->len(in.self) == N) {
            id = ev1(&in);
            cr_assert_geq(id, 8, "round %u: a popular block (%u) was evicted", round, id);
        } else {
            id = 8 + round;
        }
        ins(&in, key_hash(next % MAXK), id, next);
        next++;
    }
    done(&in);
}

Test(lineage_arc, an_evicted_block_that_comes_back_is_protected)
{
    enum { N = 16 };
    struct inst in = mk(&kvb_inactive_lineage_arc, N);
    for (uint32_t i = 0; i < N; i++)
        ins(&in, key_hash(i), i, i);
    cr_expect_eq(ev1(&in), 0);
    /* content 0 is needed again: it comes back in the free slot with a new
     * arrival, its hash a ghost: T2, while every other block is in T1 */
    ins(&in, key_hash(0), 0, 100);
    /* then a flood of new content: LRU would evict 0 after N - 1 rounds */
    for (uint32_t round = 0; round < 4 * N; round++) {
        uint32_t id = ev1(&in);
        cr_assert_neq(id, 0, "round %u: the re-referenced block went first", round);
        ins(&in, key_hash(200 + round), id, 200 + round);
    }
    done(&in);
}

/* ------------------------------------------------------------------------ */
/* through a pool: the prefix property                                      */
/* ------------------------------------------------------------------------ */

/* Random requests over families of sequences sharing prefixes, released in a
 * random order (not deepest first): with a prefix-aware policy a cached block
 * always has its parent cached or in use, so presence along every request's
 * chain is a prefix (no present block after an absent one). */
static void prefix_property(kvb_evict_policy pol, const kvb_inactive_ops *ops)
{
    kvb_registry *reg;
    cr_assert_eq(kvb_registry_create(NULL, &reg), 0);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 96;
    cfg.evict = pol;
    cfg.evict_ops = ops;
    cfg.registry = reg;
    kvb_pool *p = tu_pool_cfg(&cfg);
    enum { LEN = 12, FAMILIES = 20 };
    uint64_t seed = 11;
    for (uint32_t r = 0; r < 3000; r++) {
        /* family f's shared prefix of length k, then a tail of its own */
        uint32_t f = (uint32_t)(tu_mix64(seed++) % FAMILIES);
        uint32_t k = 1 + (uint32_t)(tu_mix64(seed++) % 6);
        uint32_t n = k + 1 + (uint32_t)(tu_mix64(seed++) % (LEN - k));
        uint64_t tail = tu_mix64(seed++) % 50;
        kvb_hash h[LEN];
        uint64_t prev = 0;
        for (uint32_t j = 0; j < n; j++) {
            uint64_t cur =
                j < k ? seqh(f, j) : tu_mix64(((uint64_t)f << 40) ^ (tail << 20) ^ j) | 1;
            cr_assert_eq(kvb_hash_make(cur, prev, j > 0, j, &h[j]), 0);
            prev = cur;
        }
        kvb_block b[LEN];
        int m = kvb_pool_match(p, h, n, b);
        cr_assert_geq(m, 0);
        uint32_t mu32 = (uint32_t)m;
        if (mu32 < n) {
            kvb_mutable mu[LEN];
            kvb_complete c[LEN];
            cr_assert_eq(kvb_pool_allocate(p, n - mu32, mu, NULL, NULL), 0);
            for (uint32_t j = mu32; j < n; j++)
                cr_assert_eq(kvb_mutable_stage(&mu[j - mu32], h[j], &c[j - mu32]), 0);
            cr_assert_eq(kvb_pool_register(p, c, n - mu32, b + mu32), 0);
        }
        for (uint32_t j = n; j > 1; j--) { /* release in a random order */
            uint32_t x = (uint32_t)(tu_mix64(seed++) % j);
            kvb_block t = b[j - 1];
            b[j - 1] = b[x];
            b[x] = t;
        }
        for (uint32_t j = 0; j < n; j++)
            cr_assert_eq(kvb_block_release(&b[j]), 0);
        bool pres[LEN];
        cr_assert_geq(kvb_registry_present(reg, h, n, p, pres), 0);
        for (uint32_t j = 1; j < n; j++)
            cr_assert(!pres[j] || pres[j - 1], "%s, request %u: block %u cached without its parent",
                      kvb_pool_policy_name(p), r, j);
    }
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(reg), 0);
}

Test(pool, lineage_keeps_prefixes_whole)
{
    prefix_property(KVB_EVICT_LINEAGE, NULL);
}

Test(pool, lineage_arc_keeps_prefixes_whole)
{
    prefix_property(KVB_EVICT_LRU, &kvb_inactive_lineage_arc);
}
