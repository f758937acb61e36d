/*
 * test_registry.c - the registry shared by several pools (DESIGN.md section 5):
 * presence counters per pool through every transition that raises or lowers
 * them, attachments (unique and multiple keys, -EEXIST when mixed, destructors
 * exactly once: at detach or at registry destroy), record lifetime, -EBUSY
 * destroy while pools are attached, and the frequency sketch behind it.
 * Every pool ends checked and destroyed; every registry destroyed.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "kvblock.h"
#include "testutil.h"

static kvb_registry *mk_reg(void)
{
    kvb_registry *r = NULL;
    cr_assert_eq(kvb_registry_create(NULL, &r), 0);
    return r;
}

static kvb_pool *mk_pool(kvb_registry *r, uint32_t n, kvb_dup_policy dup)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = n;
    cfg.registry = r;
    cfg.dup_policy = dup;
    return tu_pool_cfg(&cfg);
}

/* Allocate (and release) every block of p, evicting whatever is cached. */
static void evict_all(kvb_pool *p)
{
    uint32_t n = kvb_pool_block_count(p);
    kvb_mutable m[n];
    cr_assert_eq(kvb_pool_allocate(p, n, m, NULL, NULL), 0);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(kvb_mutable_release(&m[i]), 0);
}

/* ---- presence ---------------------------------------------------------- */

Test(presence, two_pools_sharing_a_registry)
{
    kvb_registry *r = mk_reg();
    kvb_pool *gpu = mk_pool(r, 4, KVB_DUP_ALLOW), *host = mk_pool(r, 4, KVB_DUP_ALLOW);
    kvb_hash h[3] = {tu_hash(1), tu_hash(2), tu_hash(3)};
    kvb_block a = tu_put1(gpu, h[0]);
    cr_expect(tu_present(r, gpu, h[0]));
    cr_expect_not(tu_present(r, host, h[0]), "presence is per pool");
    kvb_block b = tu_put1(host, h[0]);
    kvb_block c = tu_put1(host, h[1]);
    cr_expect(tu_present(r, gpu, h[0]) && tu_present(r, host, h[0]));
    bool out[3];
    cr_expect_eq(kvb_registry_present(r, h, 3, host, out), 2);
    cr_expect(out[0] && out[1] && !out[2]);
    cr_expect_eq(kvb_registry_present(r, h, 3, gpu, out), 1);
    cr_expect(out[0] && !out[1] && !out[2]);
    cr_expect_eq(kvb_registry_present(r, h, 3, gpu, NULL), 1, "out is optional");
    /* released: cached blocks are still present in their tier */
    cr_assert_eq(kvb_block_release(&a), 0);
    cr_expect(tu_present(r, gpu, h[0]));
    /* evicted from one tier only */
    evict_all(gpu);
    cr_expect_not(tu_present(r, gpu, h[0]));
    cr_expect(tu_present(r, host, h[0]), "the other tier keeps its copy");
    cr_assert_eq(kvb_block_release(&b), 0);
    cr_assert_eq(kvb_block_release(&c), 0);
    cr_expect_eq(kvb_registry_record_count(r), 2);
    tu_finish(gpu);
    cr_expect_eq(kvb_registry_record_count(r), 2, "the host pool still holds both");
    tu_finish(host);
    cr_expect_eq(kvb_registry_record_count(r), 0, "a destroyed pool's presence is dropped");
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(presence, eviction_then_re_registration)
{
    kvb_registry *r = mk_reg();
    kvb_pool *p = mk_pool(r, 1, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(10), o = tu_hash(11);
    kvb_block b = tu_put1(p, h);
    cr_assert_eq(kvb_block_release(&b), 0);
    cr_expect(tu_present(r, p, h), "cached");
    /* the only slot is needed for other content: h is evicted */
    b = tu_put1(p, o);
    cr_expect_not(tu_present(r, p, h), "evicted");
    cr_expect(tu_present(r, p, o));
    cr_assert_eq(kvb_block_release(&b), 0);
    /* and registered again: present again (the counter went 1 -> 0 -> 1) */
    b = tu_put1(p, h);
    cr_expect(tu_present(r, p, h));
    cr_expect_not(tu_present(r, p, o));
    cr_assert_eq(kvb_block_release(&b), 0);
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(presence, duplicate_drop_lowers_only_its_own_count)
{
    kvb_registry *r = mk_reg();
    kvb_pool *p = mk_pool(r, 4, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(20);
    kvb_block prim = tu_put1(p, h);
    kvb_block dup = tu_put1(p, h); /* ALLOW: a second physical copy, DUPLICATE */
    cr_assert_neq(prim.id, dup.id);
    cr_expect(tu_present(r, p, h));
    /* DUPLICATE -> RESET: the primary still holds the content */
    cr_assert_eq(kvb_block_release(&dup), 0);
    cr_expect(tu_present(r, p, h), "dropping the duplicate must not hide the primary");
    /* PRIMARY -> INACTIVE: still present (cached) */
    cr_assert_eq(kvb_block_release(&prim), 0);
    cr_expect(tu_present(r, p, h));
    evict_all(p);
    cr_expect_not(tu_present(r, p, h), "gone once the last copy is evicted");
    cr_expect_eq(kvb_registry_record_count(r), 0);
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(presence, duplicate_outlives_its_primary_reference)
{
    kvb_registry *r = mk_reg();
    kvb_pool *p = mk_pool(r, 4, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(21);
    kvb_block prim = tu_put1(p, h);
    kvb_block dup = tu_put1(p, h);
    /* the primary's own reference goes first; the duplicate keeps it alive */
    cr_assert_eq(kvb_block_release(&prim), 0);
    cr_expect(tu_present(r, p, h));
    cr_assert_eq(kvb_block_release(&dup), 0);
    cr_expect(tu_present(r, p, h), "the primary is cached now");
    evict_all(p);
    cr_expect_not(tu_present(r, p, h));
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(presence, reject_policy_never_counts_the_dropped_copy)
{
    kvb_registry *r = mk_reg();
    kvb_pool *p = mk_pool(r, 4, KVB_DUP_REJECT);
    kvb_hash h = tu_hash(22);
    kvb_block a = tu_put1(p, h);
    kvb_block b = tu_put1(p, h); /* REJECT: b is a second reference to a's block */
    cr_expect_eq(a.id, b.id);
    cr_assert_eq(kvb_block_release(&a), 0);
    cr_assert_eq(kvb_block_release(&b), 0);
    cr_expect(tu_present(r, p, h));
    evict_all(p);
    cr_expect_not(tu_present(r, p, h), "one copy counted once, removed once");
    cr_expect_eq(kvb_registry_record_count(r), 0);
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(presence, reset_on_release)
{
    kvb_registry *r = mk_reg();
    kvb_pool *p = mk_pool(r, 2, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(30), k = tu_hash(31);
    kvb_block b = tu_put1(p, h), c = tu_put1(p, k);
    cr_assert_eq(kvb_block_set_reset_on_release(&b, true), 0);
    cr_assert_eq(kvb_block_release(&b), 0);
    cr_expect_not(tu_present(r, p, h), "PRIMARY -> RESET lowers presence");
    cr_assert_eq(kvb_block_release(&c), 0);
    cr_expect(tu_present(r, p, k), "a plain release caches");
    kvb_block m[1];
    cr_expect_eq(kvb_pool_match(p, &h, 1, m), 0, "and the reset block is not cached");
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(presence, bad_arguments)
{
    kvb_registry *r = mk_reg(), *other = mk_reg();
    kvb_pool *p = mk_pool(r, 2, KVB_DUP_ALLOW), *q = mk_pool(other, 2, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(1);
    bool out;
    cr_expect_eq(kvb_registry_present(NULL, &h, 1, p, &out), -EINVAL);
    cr_expect_eq(kvb_registry_present(r, NULL, 1, p, &out), -EINVAL);
    cr_expect_eq(kvb_registry_present(r, &h, 1, NULL, &out), -EINVAL);
    cr_expect_eq(kvb_registry_present(r, &h, 1, q, &out), -EINVAL, "q is not attached to r");
    cr_expect_eq(kvb_registry_present(r, NULL, 0, p, NULL), 0, "n = 0 is valid");
    tu_finish(p);
    tu_finish(q);
    cr_expect_eq(kvb_registry_destroy(r), 0);
    cr_expect_eq(kvb_registry_destroy(other), 0);
    cr_expect_eq(kvb_registry_destroy(NULL), -EINVAL);
}

/* ---- lifetime ---------------------------------------------------------- */

static int dtor_calls;
static void *dtor_last;
static void count_dtor(void *v)
{
    dtor_calls++;
    dtor_last = v;
}

Test(registry, destroy_is_ebusy_while_pools_are_attached)
{
    kvb_registry *r = mk_reg();
    kvb_pool *a = mk_pool(r, 2, KVB_DUP_ALLOW), *b = mk_pool(r, 2, KVB_DUP_ALLOW);
    static int key;
    int v = 1;
    dtor_calls = 0;
    cr_assert_eq(kvb_registry_attach_unique(r, tu_hash(1), &key, &v, count_dtor), 0);
    cr_expect_eq(kvb_registry_destroy(r), -EBUSY);
    tu_finish(a);
    cr_expect_eq(kvb_registry_destroy(r), -EBUSY, "one pool still attached");
    cr_expect_eq(dtor_calls, 0, "a refused destroy destroys nothing");
    /* still fully usable */
    void *got;
    cr_expect_eq(kvb_registry_get_unique(r, tu_hash(1), &key, &got), 0);
    cr_expect_eq(got, &v);
    kvb_block x = tu_put1(b, tu_hash(2));
    cr_expect(tu_present(r, b, tu_hash(2)));
    cr_assert_eq(kvb_block_release(&x), 0);
    tu_finish(b);
    cr_expect_eq(kvb_registry_destroy(r), 0);
    cr_expect_eq(dtor_calls, 1, "remaining attachments are destroyed with the registry");
}

Test(registry, too_many_pools)
{
    kvb_registry *r = mk_reg();
    kvb_pool *p[KVB_REGISTRY_MAX_POOLS];
    for (int i = 0; i < KVB_REGISTRY_MAX_POOLS; i++)
        p[i] = mk_pool(r, 1, KVB_DUP_ALLOW);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 1;
    cfg.registry = r;
    kvb_pool *extra = NULL;
    cr_expect_eq(kvb_pool_create(&cfg, &extra), -ENOSPC);
    tu_finish(p[3]);
    p[3] = tu_pool_cfg(&cfg); /* a freed index is reused */
    for (int i = 0; i < KVB_REGISTRY_MAX_POOLS; i++)
        tu_finish(p[i]);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

/* ---- attachments -------------------------------------------------------- */

static const char key_meta = 0, key_list = 0, key_other = 0;

Test(attach, unique)
{
    kvb_registry *r = mk_reg();
    kvb_hash h = tu_hash(5);
    int v1 = 1, v2 = 2;
    void *got = NULL;
    dtor_calls = 0;
    cr_expect_eq(kvb_registry_get_unique(r, h, &key_meta, &got), -ENOENT);
    cr_expect_eq(kvb_registry_attach_unique(r, h, &key_meta, &v1, count_dtor), 0);
    cr_expect_eq(kvb_registry_get_unique(r, h, &key_meta, &got), 0);
    cr_expect_eq(got, &v1);
    cr_expect_eq(kvb_registry_attach_unique(r, h, &key_meta, &v2, count_dtor), -EEXIST);
    cr_expect_eq(kvb_registry_get_unique(r, h, &key_meta, &got), 0);
    cr_expect_eq(got, &v1, "a refused attach changes nothing");
    cr_expect_eq(dtor_calls, 0, "nor destroys the refused value");
    /* other hashes and other keys are independent */
    cr_expect_eq(kvb_registry_attach_unique(r, tu_hash(6), &key_meta, &v2, count_dtor), 0);
    cr_expect_eq(kvb_registry_attach_unique(r, h, &key_other, &v2, count_dtor), 0);
    void *vals[4];
    cr_expect_eq(kvb_registry_get(r, h, &key_meta, vals, 4), 1, "get sees unique values too");
    cr_expect_eq(vals[0], &v1);
    cr_expect_eq(kvb_registry_detach(r, h, &key_meta), 1);
    cr_expect_eq(dtor_calls, 1);
    cr_expect_eq(dtor_last, &v1);
    cr_expect_eq(kvb_registry_get_unique(r, h, &key_meta, &got), -ENOENT);
    cr_expect_eq(kvb_registry_detach(r, h, &key_meta), -ENOENT);
    cr_expect_eq(dtor_calls, 1);
    /* the key is free again, for either use */
    cr_expect_eq(kvb_registry_attach(r, h, &key_meta, &v1, count_dtor), 0);
    cr_expect_eq(kvb_registry_destroy(r), 0);
    cr_expect_eq(dtor_calls, 4, "h/meta, h/other, 6/meta destroyed at registry destroy");
}

Test(attach, multiple_in_attach_order)
{
    kvb_registry *r = mk_reg();
    kvb_hash h = tu_hash(7);
    int v[5] = {0, 1, 2, 3, 4};
    dtor_calls = 0;
    for (int i = 0; i < 5; i++)
        cr_expect_eq(kvb_registry_attach(r, h, &key_list, &v[i], count_dtor), 0);
    cr_expect_eq(kvb_registry_attach(r, h, &key_list, &v[1], count_dtor), 0,
                 "the same value twice is allowed");
    void *vals[8];
    cr_expect_eq(kvb_registry_get(r, h, &key_list, vals, 8), 6);
    for (int i = 0; i < 5; i++)
        cr_expect_eq(vals[i], &v[i]);
    cr_expect_eq(vals[5], &v[1]);
    cr_expect_eq(kvb_registry_get(r, h, &key_list, vals, 2), 6, "the count, even past cap");
    cr_expect_eq(kvb_registry_get(r, h, &key_list, NULL, 0), 6);
    cr_expect_eq(kvb_registry_get(r, h, &key_other, vals, 8), 0);
    void *got;
    cr_expect_eq(kvb_registry_get_unique(r, h, &key_list, &got), -EEXIST);
    /* detach one value: the first equal one */
    cr_expect_eq(kvb_registry_detach_value(r, h, &key_list, &v[1]), 0);
    cr_expect_eq(dtor_calls, 1);
    cr_expect_eq(dtor_last, &v[1]);
    cr_expect_eq(kvb_registry_get(r, h, &key_list, vals, 8), 5);
    cr_expect(vals[0] == &v[0] && vals[1] == &v[2] && vals[4] == &v[1]);
    int nothere;
    cr_expect_eq(kvb_registry_detach_value(r, h, &key_list, &nothere), -ENOENT);
    cr_expect_eq(dtor_calls, 1);
    /* detach the key: every value, once each */
    cr_expect_eq(kvb_registry_detach(r, h, &key_list), 5);
    cr_expect_eq(dtor_calls, 6);
    cr_expect_eq(kvb_registry_get(r, h, &key_list, vals, 8), 0);
    cr_expect_eq(kvb_registry_record_count(r), 0, "no attachment, no presence: no record");
    cr_expect_eq(kvb_registry_destroy(r), 0);
    cr_expect_eq(dtor_calls, 6, "nothing destroyed twice");
}

Test(attach, one_key_both_ways_is_eexist)
{
    kvb_registry *r = mk_reg();
    kvb_hash h = tu_hash(8);
    int a = 1, b = 2;
    dtor_calls = 0;
    cr_expect_eq(kvb_registry_attach_unique(r, h, &key_meta, &a, count_dtor), 0);
    cr_expect_eq(kvb_registry_attach(r, h, &key_meta, &b, count_dtor), -EEXIST);
    cr_expect_eq(kvb_registry_attach(r, h, &key_list, &a, count_dtor), 0);
    cr_expect_eq(kvb_registry_attach_unique(r, h, &key_list, &b, count_dtor), -EEXIST);
    void *vals[4];
    cr_expect_eq(kvb_registry_get(r, h, &key_meta, vals, 4), 1);
    cr_expect_eq(kvb_registry_get(r, h, &key_list, vals, 4), 1);
    /* on another hash the same key may be used the other way */
    cr_expect_eq(kvb_registry_attach(r, tu_hash(9), &key_meta, &b, count_dtor), 0);
    cr_expect_eq(dtor_calls, 0);
    cr_expect_eq(kvb_registry_destroy(r), 0);
    cr_expect_eq(dtor_calls, 3);
}

Test(attach, take_unique_skips_the_destructor)
{
    kvb_registry *r = mk_reg();
    kvb_hash h = tu_hash(12);
    int v = 3;
    void *got = NULL;
    dtor_calls = 0;
    cr_expect_eq(kvb_registry_take_unique(r, h, &key_meta, &got), -ENOENT);
    cr_expect_eq(kvb_registry_attach_unique(r, h, &key_meta, &v, count_dtor), 0);
    cr_expect_eq(kvb_registry_attach(r, h, &key_list, &v, count_dtor), 0);
    cr_expect_eq(kvb_registry_take_unique(r, h, &key_list, &got), -EEXIST);
    cr_expect_eq(kvb_registry_take_unique(r, h, &key_meta, &got), 0);
    cr_expect_eq(got, &v);
    cr_expect_eq(dtor_calls, 0, "ownership went back to the caller");
    cr_expect_eq(kvb_registry_get_unique(r, h, &key_meta, &got), -ENOENT);
    cr_expect_eq(kvb_registry_destroy(r), 0);
    cr_expect_eq(dtor_calls, 1, "only the list value was still owned");
}

Test(attach, records_live_while_attachments_exist)
{
    kvb_registry *r = mk_reg();
    kvb_pool *p = mk_pool(r, 1, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(40), o = tu_hash(41);
    int v = 0;
    dtor_calls = 0;
    cr_expect_eq(kvb_registry_attach_unique(r, h, &key_meta, &v, count_dtor), 0);
    cr_expect_eq(kvb_registry_record_count(r), 1, "an attachment creates the record");
    kvb_block b = tu_put1(p, h);
    cr_assert_eq(kvb_block_release(&b), 0);
    b = tu_put1(p, o); /* evicts h */
    cr_assert_eq(kvb_block_release(&b), 0);
    cr_expect_not(tu_present(r, p, h));
    void *got;
    cr_expect_eq(kvb_registry_get_unique(r, h, &key_meta, &got), 0,
                 "eviction does not drop the attachment");
    cr_expect_eq(kvb_registry_record_count(r), 2);
    cr_expect_eq(dtor_calls, 0);
    cr_expect_eq(kvb_registry_detach(r, h, &key_meta), 1);
    cr_expect_eq(kvb_registry_record_count(r), 1, "only o's presence is left");
    tu_finish(p);
    cr_expect_eq(kvb_registry_record_count(r), 0);
    cr_expect_eq(kvb_registry_destroy(r), 0);
    cr_expect_eq(dtor_calls, 1);
}

/* A destructor that calls back into the registry: runs with no lock held. */
static kvb_registry *reentrant_reg;
static void reentrant_dtor(void *v)
{
    (void)v;
    dtor_calls++;
    int rc = kvb_registry_attach(reentrant_reg, tu_hash(99), &key_other, NULL, NULL);
    cr_expect_eq(rc, 0, "a destructor may call the registry");
}

Test(attach, destructor_may_reenter)
{
    kvb_registry *r = mk_reg();
    reentrant_reg = r;
    dtor_calls = 0;
    cr_expect_eq(kvb_registry_attach(r, tu_hash(1), &key_list, NULL, reentrant_dtor), 0);
    cr_expect_eq(kvb_registry_detach(r, tu_hash(1), &key_list), 1);
    cr_expect_eq(dtor_calls, 1);
    cr_expect_eq(kvb_registry_get(r, tu_hash(99), &key_other, NULL, 0), 1);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(attach, many_hashes_survive_table_growth)
{
    kvb_registry *r = mk_reg();
    enum { N = 5000 };
    dtor_calls = 0;
    for (uint64_t i = 0; i < N; i++)
        cr_assert_eq(kvb_registry_attach_unique(r, tu_hash(i), &key_meta,
                                                (void *)(uintptr_t)(i + 1), count_dtor),
                     0);
    cr_expect_eq(kvb_registry_record_count(r), N);
    for (uint64_t i = 0; i < N; i += 2)
        cr_assert_eq(kvb_registry_detach(r, tu_hash(i), &key_meta), 1);
    for (uint64_t i = 0; i < N; i++) {
        void *got = NULL;
        int rc = kvb_registry_get_unique(r, tu_hash(i), &key_meta, &got);
        if (i % 2) {
            cr_assert_eq(rc, 0);
            cr_assert_eq((uintptr_t)got, i + 1);
        } else {
            cr_assert_eq(rc, -ENOENT);
        }
    }
    cr_expect_eq(dtor_calls, N / 2);
    cr_expect_eq(kvb_registry_destroy(r), 0);
    cr_expect_eq(dtor_calls, N, "every value destroyed exactly once");
}

Test(attach, bad_arguments)
{
    kvb_registry *r = mk_reg();
    kvb_hash h = tu_hash(1);
    void *got;
    cr_expect_eq(kvb_registry_attach_unique(NULL, h, &key_meta, NULL, NULL), -EINVAL);
    cr_expect_eq(kvb_registry_attach_unique(r, h, NULL, NULL, NULL), -EINVAL);
    cr_expect_eq(kvb_registry_attach(r, h, NULL, NULL, NULL), -EINVAL);
    cr_expect_eq(kvb_registry_get_unique(r, h, &key_meta, NULL), -EINVAL);
    cr_expect_eq(kvb_registry_get(r, h, &key_meta, NULL, 1), -EINVAL);
    cr_expect_eq(kvb_registry_detach(r, h, NULL), -EINVAL);
    cr_expect_eq(kvb_registry_detach_value(NULL, h, &key_meta, NULL), -EINVAL);
    cr_expect_eq(kvb_registry_take_unique(r, h, &key_meta, NULL), -EINVAL);
    cr_expect_eq(kvb_registry_get_unique(NULL, h, &key_meta, &got), -EINVAL);
    cr_expect_eq(kvb_registry_record_count(NULL), 0);
    cr_expect_eq(kvb_registry_record_count(r), 0, "failed calls create no record");
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

/* ---- frequency ------------------------------------------------------------ */

Test(frequency, touches_raise_the_estimate)
{
    kvb_registry *r = mk_reg();
    kvb_hash h = tu_hash(50);
    cr_expect_eq(kvb_registry_frequency(r, h), 0);
    for (uint32_t k = 1; k <= 20; k++) {
        kvb_registry_touch(r, h);
        cr_expect_eq(kvb_registry_frequency(r, h), k < 15 ? k : 15);
    }
    cr_expect_eq(kvb_registry_frequency(r, tu_hash(51)), 0, "other hashes untouched");
    cr_expect_eq(kvb_registry_frequency(NULL, h), 0);
    kvb_registry_touch(NULL, h); /* no-op */
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(frequency, pools_touch_on_registration_and_match_hits)
{
    kvb_registry *r = mk_reg();
    kvb_pool *p = mk_pool(r, 4, KVB_DUP_ALLOW);
    kvb_hash h[2];
    tu_chain(500, 2, h);
    kvb_block b0 = tu_put1(p, h[0]);
    cr_expect_eq(kvb_registry_frequency(r, h[0]), 1, "one touch per registration");
    kvb_block b1 = tu_put1(p, h[1]);
    kvb_block arr[2] = {b1, b0};
    cr_assert_eq(kvb_block_release_n(arr, 2), 0);
    kvb_block m[2];
    cr_assert_eq(kvb_pool_match(p, h, 2, m), 2);
    cr_expect_eq(kvb_registry_frequency(r, h[0]), 2, "one touch per match hit");
    cr_expect_eq(kvb_registry_frequency(r, h[1]), 2);
    cr_assert_eq(kvb_block_release_n(m, 2), 0);
    kvb_hash miss = tu_hash(77);
    cr_assert_eq(kvb_pool_match(p, &miss, 1, m), 0);
    cr_expect_eq(kvb_registry_frequency(r, miss), 0, "a miss is not a touch");
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}
