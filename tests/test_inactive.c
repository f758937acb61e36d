/*
 * test_inactive.c - the conformance suite for inactive index (eviction)
 * backends, the order of its test-only backend, the built-in lookup and
 * ops-table validation.
 *
 * Every backend in `backends[]` below runs through the same scenarios
 * (Criterion parameterized tests): allocation discipline (everything through
 * params->allocator, nothing after create, destroy frees all, -ENOMEM leaves
 * nothing behind), insert/contains/len, remove, the error rules of
 * kvblock/inactive.h (-EEXIST, -EINVAL, false; never a crash, never a changed
 * order), evict semantics, drain, exact unevict rollback, and a 100k-operation
 * randomized differential test against a simple O(n) reference model.
 *
 * A backend must be deterministic (its order depends only on the calls it
 * received): several scenarios compare two instances fed the same calls.
 * The table includes a test-only "lifo" backend written here, so the suite
 * demonstrably runs any ops table, including one without the optional
 * unevict and memory methods. Every instance allocates through the fail-at-k
 * allocator (support/fail_alloc.h), which counts and checks every call. What
 * makes each built-in policy what it is (its order) is in test_policies.c.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inactive_internal.h"
#include "kvblock.h"
#include "support/fail_alloc.h"
#include "support/rng.h"
#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* Test-only backend "lifo": most recently inserted first, written as simply */
/* as possible (one array in insertion order, linear scans). No unevict, no */
/* memory: it exercises the optional methods being absent.                  */
/* ------------------------------------------------------------------------ */

struct lifo {
    uint32_t *ids; /* ids[0..len) in insertion order; the top is evicted first */
    uint32_t block_count, len;
    kvb_allocator a;
};

static int lifo_create(const kvb_inactive_params *params, void **out)
{
    if (!params || !out || params->block_count == 0 || params->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    const kvb_allocator *a = &params->allocator;
    struct lifo *s = a->alloc(a->ctx, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->ids = a->alloc(a->ctx, (size_t)params->block_count * sizeof *s->ids);
    if (!s->ids) {
        a->free(a->ctx, s, sizeof *s);
        return -ENOMEM;
    }
    s->block_count = params->block_count;
    s->len = 0;
    s->a = *a;
    *out = s;
    return 0;
}

static void lifo_destroy(void *self)
{
    struct lifo *s = self;
    kvb_allocator a = s->a;
    a.free(a.ctx, s->ids, (size_t)s->block_count * sizeof *s->ids);
    a.free(a.ctx, s, sizeof *s);
}

static long lifo_find(const struct lifo *s, uint32_t id)
{
    for (uint32_t i = 0; i < s->len; i++)
        if (s->ids[i] == id)
            return i;
    return -1;
}

static int lifo_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct lifo *s = self;
    (void)hash;
    (void)arrival;
    if (id >= s->block_count)
        return -EINVAL;
    if (lifo_find(s, id) >= 0)
        return -EEXIST;
    s->ids[s->len++] = id;
    return 0;
}

static bool lifo_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct lifo *s = self;
    (void)hash;
    long i = lifo_find(s, id);
    if (i < 0)
        return false;
    memmove(&s->ids[i], &s->ids[i + 1], (s->len - (uint32_t)i - 1) * sizeof *s->ids);
    s->len--;
    return true;
}

static bool lifo_contains(const void *self, uint32_t id)
{
    return lifo_find(self, id) >= 0;
}

static uint32_t lifo_evict(void *self, uint32_t n, uint32_t *out)
{
    struct lifo *s = self;
    uint32_t k = 0;
    while (k < n && s->len > 0)
        out[k++] = s->ids[--s->len];
    return k;
}

static uint32_t lifo_len(const void *self)
{
    const struct lifo *s = self;
    return s->len;
}

static void lifo_drain(void *self)
{
    struct lifo *s = self;
    s->len = 0;
}

static const kvb_inactive_ops test_lifo_ops = {
    .version = KVB_INACTIVE_OPS_VERSION,
    .name = "test-lifo",
    .create = lifo_create,
    .destroy = lifo_destroy,
    .insert = lifo_insert,
    .remove = lifo_remove,
    .contains = lifo_contains,
    .evict = lifo_evict,
    .len = lifo_len,
    .drain = lifo_drain,
    .unevict = NULL,
    .memory = NULL,
};

/* ------------------------------------------------------------------------ */
/* The backend table                                                        */
/* ------------------------------------------------------------------------ */

/* Which reference order the differential test checks. MODEL_SET checks only
 * set semantics (what is present, what evict may return), for policies whose
 * order has no simple model. */
enum model_kind { MODEL_SET, MODEL_LRU, MODEL_FIFO, MODEL_LIFO };

struct backend_case {
    const kvb_inactive_ops *ops;
    enum model_kind model;
    size_t max_bytes_per_block; /* bound checked at 1M blocks; 0: not checked */
};

/* EVERY BACKEND GOES HERE, one line each; the whole suite then runs on it. E.g.
 *   {&kvb_inactive_multi_lru, MODEL_SET, 16},
 *   {&kvb_inactive_tinylfu, MODEL_SET, 24},
 *   {&kvb_inactive_lineage, MODEL_SET, 40}, */
static const struct backend_case backends[] = {
    {&kvb_inactive_lru, MODEL_LRU, 8},        {&kvb_inactive_fifo, MODEL_FIFO, 26},
    {&kvb_inactive_multi_lru, MODEL_SET, 10}, {&kvb_inactive_tinylfu, MODEL_SET, 40},
    {&kvb_inactive_lineage, MODEL_LRU, 100},  {&kvb_inactive_lineage_arc, MODEL_SET, 400},
    {&kvb_inactive_adaptive, MODEL_SET, 480}, {&test_lifo_ops, MODEL_LIFO, 0},
};
#define N_BACKENDS (sizeof backends / sizeof backends[0])

/* The parameter of a conformance scenario is an index into backends[], not a
 * pointer: Criterion runs each test in a re-executed worker process where
 * addresses of static objects may differ (PIE), so parameters must not hold
 * pointers. The index array lives in Criterion's shared memory (cr_malloc). */
static void free_backend_params(struct criterion_test_params *crp)
{
    cr_free(crp->params);
}

static struct criterion_test_params backend_params(void)
{
    size_t *idx = cr_malloc(N_BACKENDS * sizeof *idx);
    for (size_t i = 0; i < N_BACKENDS; i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, N_BACKENDS, free_backend_params);
}

/* A conformance scenario: its body runs once per entry of backends[], with
 * `bc` pointing at the entry. */
#define BACKEND_TEST(name)                                                                         \
    static void conformance_##name(const struct backend_case *bc);                                 \
    ParameterizedTestParameters(conformance, name)                                                 \
    {                                                                                              \
        return backend_params();                                                                   \
    }                                                                                              \
    ParameterizedTest(size_t *index, conformance, name)                                            \
    {                                                                                              \
        cr_assert_lt(*index, N_BACKENDS);                                                          \
        conformance_##name(&backends[*index]);                                                     \
    }                                                                                              \
    static void conformance_##name(const struct backend_case *bc)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* A valid lineage hash for a block id: mode 0, position 0 (a root block, no
 * parent fragment), sequence hash = a mix of the id (never 0). Built by hand
 * so the suite needs no hashing module. Layout: hi = [mode:2][pos:8][cur:54 high
 * bits], lo = [cur:10 low bits][parent fragment:54]. */
static kvb_hash th(uint32_t id)
{
    uint64_t cur = ((uint64_t)id + 1) * 0x9E3779B97F4A7C15ull;
    cur ^= cur >> 29;
    return (kvb_hash){.hi = cur >> 10, .lo = cur << 54};
}

/* Frequency estimate for backends that ask (multi_lru, tinylfu): a fixed
 * function of the hash, so runs are deterministic. */
static uint32_t tfreq(void *ctx, kvb_hash h)
{
    (void)ctx;
    return (uint32_t)((h.hi ^ (h.lo >> 54)) % 16);
}

struct inst {
    const kvb_inactive_ops *ops;
    void *self;
    uint32_t block_count;
};

static kvb_inactive_params mkparams(uint32_t block_count, tu_fa *ca)
{
    kvb_inactive_params p;
    memset(&p, 0, sizeof p);
    p.block_count = block_count;
    p.thresholds[0] = 3;
    p.thresholds[1] = 8;
    p.thresholds[2] = 15;
    p.frequency = tfreq;
    p.frequency_ctx = NULL;
    p.allocator = tu_fa_allocator(ca);
    return p;
}

static struct inst mk(const kvb_inactive_ops *ops, uint32_t block_count, tu_fa *ca)
{
    kvb_inactive_params p = mkparams(block_count, ca);
    struct inst in = {.ops = ops, .self = NULL, .block_count = block_count};
    int rc = ops->create(&p, &in.self);
    cr_assert_eq(rc, 0, "%s: create(%u) = %d", ops->name, block_count, rc);
    cr_assert_not_null(in.self, "%s: create gave NULL", ops->name);
    return in;
}

static void done(struct inst *in, tu_fa *ca)
{
    in->ops->destroy(in->self);
    in->self = NULL;
    cr_assert_eq(ca->n_alloc, ca->n_free, "%s: %ld allocations, %ld frees", in->ops->name,
                 ca->n_alloc, ca->n_free);
    cr_assert_eq(ca->bytes_alloc, ca->bytes_free, "%s: %zu bytes allocated, %zu freed",
                 in->ops->name, ca->bytes_alloc, ca->bytes_free);
    cr_assert_eq(ca->mismatches, 0, "%s: free of an unknown pointer or with a wrong size",
                 in->ops->name);
}

static int ins(struct inst *in, uint32_t id, uint32_t arrival)
{
    return in->ops->insert(in->self, th(id), id, arrival);
}

static bool rem(struct inst *in, uint32_t id)
{
    return in->ops->remove(in->self, th(id), id);
}

static bool has(const struct inst *in, uint32_t id)
{
    return in->ops->contains(in->self, id);
}

static uint32_t len(const struct inst *in)
{
    return in->ops->len(in->self);
}

static uint32_t ev(struct inst *in, uint32_t n, uint32_t *out)
{
    return in->ops->evict(in->self, n, out);
}

/* Roll back the last evict as the pool does: unevict, or insert() in reverse
 * order when the backend has none. */
static void unev(struct inst *in, const uint32_t *ids, const uint32_t *arrivals, uint32_t n)
{
    kvb_hash hashes[n ? n : 1];
    for (uint32_t i = 0; i < n; i++)
        hashes[i] = th(ids[i]);
    if (in->ops->unevict) {
        in->ops->unevict(in->self, ids, hashes, arrivals, n);
        return;
    }
    for (uint32_t i = n; i-- > 0;)
        cr_assert_eq(in->ops->insert(in->self, hashes[i], ids[i], arrivals[i]), 0);
}

/* Evict everything into out (room for block_count); returns the count. */
static uint32_t ev_all(struct inst *in, uint32_t *out)
{
    uint32_t n = ev(in, in->block_count, out);
    cr_assert_eq(len(in), 0, "%s: evict(block_count) left entries", in->ops->name);
    return n;
}

/* Fill two instances (b may be NULL) with the same calls: ids 0..n-1 in a
 * shuffled order with pseudo-random arrivals (recorded by id in arrival_out
 * when non-NULL), then remove every 7th of that order. */
static void fill_same(struct inst *a, struct inst *b, uint32_t n, uint64_t seed,
                      uint32_t *arrival_out)
{
    uint32_t order[n];
    for (uint32_t i = 0; i < n; i++)
        order[i] = i;
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = tu_rnd(&seed, i), t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t arrival = 1000 + tu_rnd(&seed, 4 * n);
        if (arrival_out)
            arrival_out[order[i]] = arrival;
        cr_assert_eq(ins(a, order[i], arrival), 0);
        if (b)
            cr_assert_eq(ins(b, order[i], arrival), 0);
    }
    for (uint32_t i = 0; i < n; i += 7) {
        cr_assert(rem(a, order[i]));
        if (b)
            cr_assert(rem(b, order[i]));
    }
}

/* Destroy two instances sharing one allocator, then check it is all freed. */
static void done2(struct inst *a, struct inst *b, tu_fa *ca)
{
    b->ops->destroy(b->self);
    b->self = NULL;
    done(a, ca);
}

static void assert_same_sequence(struct inst *a, struct inst *b, const char *what)
{
    uint32_t sa[a->block_count], sb[b->block_count];
    uint32_t na = ev_all(a, sa), nb = ev_all(b, sb);
    cr_assert_eq(na, nb, "%s: %s: %u vs %u entries", a->ops->name, what, na, nb);
    for (uint32_t i = 0; i < na; i++)
        cr_assert_eq(sa[i], sb[i], "%s: %s: order differs at %u (%u vs %u)", a->ops->name, what, i,
                     sa[i], sb[i]);
}

/* ------------------------------------------------------------------------ */
/* Conformance scenarios                                                    */
/* ------------------------------------------------------------------------ */

BACKEND_TEST(table_is_valid)
{
    cr_assert_eq(kvb__inactive_ops_validate(bc->ops), 0, "%s", bc->ops->name);
    cr_assert_eq(bc->ops->version, KVB_INACTIVE_OPS_VERSION);
    cr_assert(bc->ops->name[0] != '\0');
}

BACKEND_TEST(create_destroy_frees_everything)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst in = mk(bc->ops, 1000, &ca);
    cr_assert_gt(ca.n_alloc, 0, "%s: nothing allocated through params->allocator", bc->ops->name);
    if (bc->ops->memory)
        cr_assert_eq(bc->ops->memory(in.self), tu_fa_live(&ca),
                     "%s: memory() = %zu but %zu bytes are allocated", bc->ops->name,
                     bc->ops->memory(in.self), tu_fa_live(&ca));
    cr_assert_eq(len(&in), 0);
    for (uint32_t id = 0; id < 1000; id++)
        cr_assert_not(has(&in, id));
    /* Destroy with entries present frees everything too. */
    for (uint32_t id = 0; id < 1000; id += 3)
        cr_assert_eq(ins(&in, id, id), 0);
    done(&in, &ca);
}

BACKEND_TEST(create_rejects_bad_block_count)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    void *self = (void *)&ca;
    kvb_inactive_params p = mkparams(0, &ca);
    cr_assert_eq(bc->ops->create(&p, &self), -EINVAL, "%s: block_count 0", bc->ops->name);
    p.block_count = KVB_MAX_BLOCKS + 1;
    cr_assert_eq(bc->ops->create(&p, &self), -EINVAL, "%s: block_count > max", bc->ops->name);
    cr_assert_eq(tu_fa_live(&ca), 0);
}

BACKEND_TEST(create_enomem_leaves_nothing)
{
    /* Fail the first, second, ... allocation until create succeeds. */
    for (long k = 0;; k++) {
        tu_fa ca;
        tu_fa_init(&ca, 0);
        tu_fa_arm(&ca, k + 1); /* attempt k, counted from 0 */
        kvb_inactive_params p = mkparams(500, &ca);
        void *self = NULL;
        int rc = bc->ops->create(&p, &self);
        if (k >= ca.count) {
            cr_assert_eq(rc, 0, "%s: create failed with no allocation failing", bc->ops->name);
            struct inst in = {.ops = bc->ops, .self = self, .block_count = 500};
            done(&in, &ca);
            cr_assert_gt(k, 0);
            break;
        }
        cr_assert_eq(rc, -ENOMEM, "%s: allocation %ld failed, create gave %d", bc->ops->name, k,
                     rc);
        cr_assert_eq(ca.n_alloc, ca.n_free, "%s: leak after failing allocation %ld", bc->ops->name,
                     k);
        cr_assert_eq(tu_fa_live(&ca), 0);
        cr_assert_eq(ca.mismatches, 0);
    }
}

BACKEND_TEST(insert_contains_len)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst in = mk(bc->ops, 256, &ca);
    uint32_t n = 0;
    for (uint32_t id = 0; id < 256; id += 2) {
        cr_assert_eq(ins(&in, id, 10 + id), 0);
        n++;
        cr_assert_eq(len(&in), n);
        cr_assert(has(&in, id));
        cr_assert_not(has(&in, id + 1));
    }
    for (uint32_t id = 0; id < 256; id++)
        cr_assert_eq(has(&in, id), id % 2 == 0, "%s: contains(%u)", bc->ops->name, id);
    cr_assert_not(has(&in, 256));
    cr_assert_not(has(&in, UINT32_MAX));
    done(&in, &ca);
}

BACKEND_TEST(remove_present_and_absent)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst in = mk(bc->ops, 64, &ca);
    for (uint32_t id = 0; id < 32; id++)
        cr_assert_eq(ins(&in, id, id), 0);
    cr_assert(rem(&in, 5));
    cr_assert_not(has(&in, 5));
    cr_assert_eq(len(&in), 31);
    cr_assert_not(rem(&in, 5), "%s: second remove of 5", bc->ops->name);
    cr_assert_not(rem(&in, 40), "%s: remove of a never-inserted id", bc->ops->name);
    cr_assert_not(rem(&in, 64));
    cr_assert_not(rem(&in, UINT32_MAX));
    cr_assert_eq(len(&in), 31);
    /* Remove the first and the last inserted, then everything. */
    cr_assert(rem(&in, 0));
    cr_assert(rem(&in, 31));
    for (uint32_t id = 1; id < 31; id++)
        if (id != 5)
            cr_assert(rem(&in, id));
    cr_assert_eq(len(&in), 0);
    uint32_t out[64];
    cr_assert_eq(ev(&in, 64, out), 0);
    /* Usable again after being emptied by removes. */
    cr_assert_eq(ins(&in, 5, 100), 0);
    cr_assert_eq(ev(&in, 64, out), 1);
    cr_assert_eq(out[0], 5);
    done(&in, &ca);
}

BACKEND_TEST(duplicate_insert_is_eexist_and_harmless)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst a = mk(bc->ops, 128, &ca), b = mk(bc->ops, 128, &ca);
    fill_same(&a, &b, 100, 11, NULL);
    uint32_t n = len(&a);
    for (uint32_t id = 0; id < 100; id++) {
        if (!has(&a, id))
            continue;
        cr_assert_eq(ins(&a, id, 5000 + id), -EEXIST, "%s: duplicate insert of %u", bc->ops->name,
                     id);
        cr_assert_eq(ins(&a, id, 0), -EEXIST);
    }
    cr_assert_eq(len(&a), n);
    assert_same_sequence(&a, &b, "after duplicate inserts");
    done2(&a, &b, &ca);
}

BACKEND_TEST(id_out_of_range_is_einval)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst a = mk(bc->ops, 100, &ca), b = mk(bc->ops, 100, &ca);
    fill_same(&a, &b, 100, 12, NULL);
    uint32_t n = len(&a);
    uint32_t bad[] = {100, 101, 4096, KVB_MAX_BLOCKS, UINT32_MAX - 1, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(ins(&a, bad[i], 1), -EINVAL, "%s: insert(%u)", bc->ops->name, bad[i]);
        cr_assert_not(has(&a, bad[i]));
        cr_assert_not(rem(&a, bad[i]));
    }
    cr_assert_eq(len(&a), n);
    assert_same_sequence(&a, &b, "after out-of-range calls");
    done2(&a, &b, &ca);
}

BACKEND_TEST(evict_returns_each_entry_once)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    enum { N = 500 };
    struct inst in = mk(bc->ops, N, &ca);
    bool removed[N] = {false}, seen[N] = {false};
    for (uint32_t id = 0; id < N; id++)
        cr_assert_eq(ins(&in, (id * 7) % N, id), 0);
    uint32_t expect = N;
    for (uint32_t id = 0; id < N; id += 3) {
        cr_assert(rem(&in, id));
        removed[id] = true;
        expect--;
    }
    uint32_t out[N], total = 0, chunk = 1;
    while (len(&in) > 0) {
        uint32_t before = len(&in);
        uint32_t k = ev(&in, chunk, out);
        cr_assert_eq(k, before < chunk ? before : chunk, "%s: evict(%u) with %u present = %u",
                     bc->ops->name, chunk, before, k);
        cr_assert_eq(len(&in), before - k);
        for (uint32_t i = 0; i < k; i++) {
            cr_assert_lt(out[i], N);
            cr_assert_not(removed[out[i]], "%s: evicted removed id %u", bc->ops->name, out[i]);
            cr_assert_not(seen[out[i]], "%s: evicted %u twice", bc->ops->name, out[i]);
            cr_assert_not(has(&in, out[i]), "%s: %u still present after evict", bc->ops->name,
                          out[i]);
            seen[out[i]] = true;
        }
        total += k;
        chunk = chunk % 13 + 1;
    }
    cr_assert_eq(total, expect);
    for (uint32_t id = 0; id < N; id++)
        cr_assert_eq(seen[id], !removed[id]);
    done(&in, &ca);
}

BACKEND_TEST(evict_more_than_len_and_zero)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst in = mk(bc->ops, 50, &ca);
    uint32_t out[64];
    cr_assert_eq(ev(&in, 10, out), 0, "%s: evict on empty", bc->ops->name);
    for (uint32_t id = 0; id < 20; id++)
        cr_assert_eq(ins(&in, id, id), 0);
    cr_assert_eq(ev(&in, 0, out), 0, "%s: evict(0)", bc->ops->name);
    cr_assert_eq(len(&in), 20);
    cr_assert_eq(ev(&in, 64, out), 20, "%s: evict(64) of 20", bc->ops->name);
    cr_assert_eq(len(&in), 0);
    cr_assert_eq(ev(&in, 64, out), 0);
    done(&in, &ca);
}

BACKEND_TEST(drain_empties)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst in = mk(bc->ops, 300, &ca);
    in.ops->drain(in.self); /* empty drain */
    cr_assert_eq(len(&in), 0);
    fill_same(&in, NULL, 300, 13, NULL);
    cr_assert_gt(len(&in), 0);
    in.ops->drain(in.self);
    cr_assert_eq(len(&in), 0, "%s: len after drain", bc->ops->name);
    for (uint32_t id = 0; id < 300; id++)
        cr_assert_not(has(&in, id), "%s: %u present after drain", bc->ops->name, id);
    uint32_t out[300];
    cr_assert_eq(ev(&in, 300, out), 0);
    /* Every id can be inserted again and is evicted exactly once. */
    for (uint32_t id = 0; id < 300; id++)
        cr_assert_eq(ins(&in, id, 7000 + id), 0, "%s: insert %u after drain", bc->ops->name, id);
    cr_assert_eq(ev_all(&in, out), 300);
    done(&in, &ca);
}

BACKEND_TEST(unevict_restores_exact_order)
{
    uint32_t ks[] = {0, 1, 2, 17, 40, 1000};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        tu_fa ca;
        tu_fa_init(&ca, 0);
        struct inst a = mk(bc->ops, 200, &ca), b = mk(bc->ops, 200, &ca);
        uint32_t arrival_of[200];
        fill_same(&a, &b, 200, 14, arrival_of);
        uint32_t n = len(&a);
        uint32_t out[200], arr[200];
        uint32_t k = ev(&a, ks[t], out);
        cr_assert_eq(k, ks[t] < n ? ks[t] : n);
        for (uint32_t i = 0; i < k; i++)
            arr[i] = arrival_of[out[i]];
        unev(&a, out, arr, k);
        cr_assert_eq(len(&a), n, "%s: len after unevict of %u", bc->ops->name, k);
        for (uint32_t i = 0; i < k; i++)
            cr_assert(has(&a, out[i]));
        /* The next evict returns the same ids in the same order... */
        uint32_t again[200];
        cr_assert_eq(ev(&a, k, again), k);
        for (uint32_t i = 0; i < k; i++)
            cr_assert_eq(again[i], out[i], "%s: unevict(%u): position %u: %u then %u",
                         bc->ops->name, k, i, out[i], again[i]);
        /* ... and, rolled back once more, the whole state equals an untouched twin
         * (exact rollback; only promised when the backend has unevict). */
        unev(&a, again, arr, k);
        if (bc->ops->unevict) {
            assert_same_sequence(&a, &b, "after unevict");
        } else {
            uint32_t sa[200], sb[200];
            cr_assert_eq(ev_all(&a, sa), ev_all(&b, sb));
        }
        done2(&a, &b, &ca);
    }
}

/* ---- randomized differential test against a reference model ---- */

/* The model: present ids in eviction order (seq[0] goes first). */
struct model {
    enum model_kind kind;
    uint32_t *seq, n;
    uint32_t *arrival; /* by id, valid while present */
    bool *present;     /* by id */
};

static bool model_before(const struct model *m, uint32_t a, uint32_t b)
{
    uint32_t x = m->arrival[a], y = m->arrival[b];
    if (x != y)
        return (int32_t)(x - y) < 0;
    return a < b;
}

static void model_insert_at(struct model *m, uint32_t at, uint32_t id, uint32_t arrival)
{
    memmove(&m->seq[at + 1], &m->seq[at], (m->n - at) * sizeof *m->seq);
    m->seq[at] = id;
    m->n++;
    m->present[id] = true;
    m->arrival[id] = arrival;
}

static void model_insert(struct model *m, uint32_t id, uint32_t arrival)
{
    uint32_t at = m->n; /* lru and set: at the end */
    if (m->kind == MODEL_LIFO) {
        at = 0;
    } else if (m->kind == MODEL_FIFO) {
        m->arrival[id] = arrival;
        for (at = 0; at < m->n && !model_before(m, id, m->seq[at]); at++)
            ;
    }
    model_insert_at(m, at, id, arrival);
}

static void model_delete(struct model *m, uint32_t id)
{
    uint32_t i = 0;
    while (m->seq[i] != id)
        i++;
    memmove(&m->seq[i], &m->seq[i + 1], (m->n - i - 1) * sizeof *m->seq);
    m->n--;
    m->present[id] = false;
}

/* What a random run did, to prove it exercised every path. */
struct run_stats {
    uint32_t inserted, eexist, einval, removed, remove_missed, evicted, unevicted, drains;
    uint32_t max_len, emptied;
};

/* Operation mix per phase, cumulative per mille: insert, remove, evict,
 * evict + rollback, contains; the rest is drain. Phases of 3000 calls rotate
 * so the index fills up, empties and hovers in between. */
static const uint16_t op_mix[3][5] = {
    {450, 650, 700, 800, 999},  /* balanced: hovers around half full */
    {900, 900, 900, 950, 1000}, /* filling: nothing leaves, it gets full */
    {250, 600, 680, 750, 1000}, /* emptying */
};

/* Drive an instance with nops random calls; when m is non-NULL, check every
 * answer against the model. Arrivals follow the pool's rule: a new content
 * gets the next number (starting near 2^32, so it wraps), a block that was hit
 * (removed) and comes back keeps its arrival. */
static struct run_stats random_ops(struct inst *in, struct model *m, uint32_t nops, uint64_t seed)
{
    struct run_stats st;
    memset(&st, 0, sizeof st);
    const uint32_t bc = in->block_count;
    const char *name = in->ops->name;
    uint32_t arrival[bc];
    bool has_content[bc];
    memset(has_content, 0, sizeof has_content);
    const uint32_t first_arrival = 0u - nops / 20; /* wraps after ~nops/20 new contents */
    uint32_t next_arrival = first_arrival;
    uint32_t out[16], arr[16];

    for (uint32_t op = 0; op < nops; op++) {
        const uint16_t *mix = op_mix[(op / 3000) % 3];
        uint32_t r = tu_rnd(&seed, 1000);
        uint32_t len_before = len(in);
        if (r < mix[0]) { /* insert, sometimes a duplicate or out of range */
            uint32_t id = tu_rnd(&seed, bc + bc / 50 + 1);
            bool dup = id < bc && has(in, id);
            if (id < bc && !dup && (!has_content[id] || tu_rnd(&seed, 10) == 0)) {
                /* new content in this slot; now and then the same arrival as the
                 * previous one, to exercise ties */
                arrival[id] = tu_rnd(&seed, 16) ? next_arrival++ : next_arrival - 1;
                has_content[id] = true;
            }
            uint32_t a = id < bc ? arrival[id] : 0;
            if (dup && tu_rnd(&seed, 2))
                a = next_arrival + 7; /* a duplicate with a different arrival */
            int rc = ins(in, id, a);
            st.inserted += rc == 0;
            st.eexist += rc == -EEXIST;
            st.einval += rc == -EINVAL;
            if (id >= bc) {
                cr_assert_eq(rc, -EINVAL, "%s op %u: insert(%u)", name, op, id);
            } else if (m && m->present[id]) {
                cr_assert_eq(rc, -EEXIST, "%s op %u: duplicate insert(%u) = %d", name, op, id, rc);
            } else if (dup) {
                cr_assert_eq(rc, -EEXIST);
            } else {
                cr_assert_eq(rc, 0, "%s op %u: insert(%u) = %d", name, op, id, rc);
                if (m)
                    model_insert(m, id, a);
            }
        } else if (r < mix[1]) { /* remove (a cache hit), present or not */
            uint32_t id = tu_rnd(&seed, bc + 2);
            for (int tries = 0; tries < 3 && !has(in, id); tries++)
                id = tu_rnd(&seed, bc + 2); /* prefer a hit */
            bool got = rem(in, id);
            st.removed += got;
            st.remove_missed += !got;
            if (m)
                cr_assert_eq(got, id < bc && m->present[id], "%s op %u: remove(%u) = %d", name, op,
                             id, got);
            if (got && m)
                model_delete(m, id);
        } else if (r < mix[2]) { /* evict a few */
            uint32_t want = tu_rnd(&seed, 9);
            uint32_t k = ev(in, want, out);
            st.evicted += k;
            if (m) {
                cr_assert_eq(k, want < m->n ? want : m->n, "%s op %u: evict(%u) = %u", name, op,
                             want, k);
                for (uint32_t i = 0; i < k; i++) {
                    cr_assert(out[i] < bc && m->present[out[i]], "%s op %u: evicted absent id %u",
                              name, op, out[i]);
                    if (m->kind != MODEL_SET)
                        cr_assert_eq(out[i], m->seq[0],
                                     "%s op %u: evict #%u gave %u, model says %u", name, op, i,
                                     out[i], m->seq[0]);
                    model_delete(m, out[i]);
                }
            }
            for (uint32_t i = 0; i < k; i++) {
                cr_assert_lt(out[i], bc, "%s op %u: evicted id %u", name, op, out[i]);
                cr_assert_not(has(in, out[i]));
                has_content[out[i]] = false; /* the slot gets new content */
            }
        } else if (r < mix[3]) { /* evict then roll back */
            uint32_t want = tu_rnd(&seed, 17);
            uint32_t k = ev(in, want, out);
            st.unevicted += k;
            for (uint32_t i = 0; i < k; i++) {
                cr_assert_lt(out[i], bc, "%s op %u: evicted id %u", name, op, out[i]);
                arr[i] = arrival[out[i]];
            }
            uint32_t before = len(in);
            unev(in, out, arr, k);
            cr_assert_eq(len(in), before + k, "%s op %u: len after unevict", name, op);
            for (uint32_t i = 0; i < k; i++)
                cr_assert(has(in, out[i]));
            if (m && m->kind != MODEL_SET) /* the model did not change: check the prefix */
                for (uint32_t i = 0; i < k; i++)
                    cr_assert_eq(out[i], m->seq[i], "%s op %u: evict-for-rollback #%u", name, op,
                                 i);
            if (m && !in->ops->unevict) { /* the fallback's order is the backend's business */
                for (uint32_t i = 0; i < k; i++)
                    model_delete(m, out[i]);
                for (uint32_t i = k; i-- > 0;)
                    model_insert(m, out[i], arr[i]);
            }
        } else if (r < mix[4]) { /* contains */
            uint32_t id = tu_rnd(&seed, bc + 2);
            bool got = has(in, id);
            if (m)
                cr_assert_eq(got, id < bc && m->present[id], "%s op %u: contains(%u)", name, op,
                             id);
        } else { /* drain */
            st.drains++;
            in->ops->drain(in->self);
            cr_assert_eq(len(in), 0);
            if (m) {
                for (uint32_t i = 0; i < m->n; i++)
                    m->present[m->seq[i]] = false;
                m->n = 0;
            }
            memset(has_content, 0, sizeof has_content);
        }
        uint32_t now = len(in);
        st.max_len = now > st.max_len ? now : st.max_len;
        st.emptied += len_before > 0 && now == 0;
        if (m)
            cr_assert_eq(now, m->n, "%s op %u: len %u, model %u", name, op, now, m->n);
        if (m && op % 4096 == 0)
            for (uint32_t id = 0; id < bc; id++)
                cr_assert_eq(has(in, id), m->present[id], "%s op %u: contains(%u)", name, op, id);
    }
    cr_assert_lt(next_arrival, first_arrival, "arrivals did not wrap (%u)", next_arrival);
    return st;
}

BACKEND_TEST(differential_100k_against_model)
{
    enum { BC = 257 };
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst in = mk(bc->ops, BC, &ca);
    uint32_t seq[BC], arrival[BC];
    bool present[BC] = {false};
    struct model m = {
        .kind = bc->model, .seq = seq, .n = 0, .arrival = arrival, .present = present};
    long allocs = ca.n_alloc;
    struct run_stats st = random_ops(&in, &m, 100000, 0x6b76626c6f636b01ull);
    cr_assert_eq(ca.n_alloc, allocs, "%s: allocated after create", bc->ops->name);
    cr_log_info("%s: differential: %u inserted, %u EEXIST, %u EINVAL, %u removed, %u missed, "
                "%u evicted, %u rolled back, %u drains, max len %u/%u, emptied %u times",
                bc->ops->name, st.inserted, st.eexist, st.einval, st.removed, st.remove_missed,
                st.evicted, st.unevicted, st.drains, st.max_len, BC, st.emptied);
    /* The run must have exercised every path (guards against a weak mix). */
    cr_assert(st.inserted > 10000 && st.eexist > 1000 && st.einval > 100);
    cr_assert(st.removed > 5000 && st.remove_missed > 1000);
    cr_assert(st.evicted > 10000 && st.unevicted > 1000 && st.drains > 5);
    cr_assert(st.max_len >= BC - 2 && st.emptied > 5);
    /* Final order check: drain through evict and compare with the model. */
    uint32_t out[BC];
    uint32_t k = ev_all(&in, out);
    cr_assert_eq(k, m.n);
    for (uint32_t i = 0; i < k; i++) {
        cr_assert(present[out[i]]);
        if (m.kind != MODEL_SET)
            cr_assert_eq(out[i], seq[i], "%s: final order at %u", bc->ops->name, i);
    }
    done(&in, &ca);
}

BACKEND_TEST(no_allocation_after_create)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst in = mk(bc->ops, 1024, &ca);
    long allocs = ca.n_alloc, attempts = ca.count, frees = ca.n_free;
    size_t mem = bc->ops->memory ? bc->ops->memory(in.self) : 0;
    random_ops(&in, NULL, 20000, 42);
    cr_assert_eq(ca.count, attempts, "%s: alloc called after create", bc->ops->name);
    cr_assert_eq(ca.n_alloc, allocs);
    cr_assert_eq(ca.n_free, frees, "%s: free called before destroy", bc->ops->name);
    if (bc->ops->memory)
        cr_assert_eq(bc->ops->memory(in.self), mem, "%s: memory() changed", bc->ops->name);
    done(&in, &ca);
}

BACKEND_TEST(memory_per_block_at_1m)
{
    enum { BIG = 1u << 20 };
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst in = mk(bc->ops, BIG, &ca);
    size_t bytes = bc->ops->memory ? bc->ops->memory(in.self) : tu_fa_live(&ca);
    cr_assert_eq(bytes, tu_fa_live(&ca), "%s: memory() %zu, allocated %zu", bc->ops->name, bytes,
                 tu_fa_live(&ca));
    double per = (double)bytes / BIG;
    cr_log_info("%s: %zu bytes for %u blocks = %.3f bytes/block", bc->ops->name, bytes,
                (unsigned)BIG, per);
    if (bc->max_bytes_per_block)
        cr_assert_leq(bytes, bc->max_bytes_per_block * (size_t)BIG + 4096,
                      "%s: %.3f bytes/block, bound %zu", bc->ops->name, per,
                      bc->max_bytes_per_block);
    /* The extremes of the id range work at this size. */
    cr_assert_eq(ins(&in, BIG - 1, 1), 0);
    cr_assert_eq(ins(&in, 0, 2), 0);
    cr_assert_eq(ins(&in, BIG, 3), -EINVAL);
    cr_assert_eq(len(&in), 2);
    done(&in, &ca);
}

/* ------------------------------------------------------------------------ */
/* Pool-level scenarios: every backend under the pool's lookahead hints     */
/* (the pool filters the backend's victims; no backend knows about hints)   */
/* ------------------------------------------------------------------------ */

static kvb_pool *hpool(const struct backend_case *bc, uint32_t blocks, uint32_t hint_capacity)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = blocks;
    cfg.evict_ops = bc->ops;
    cfg.hint_capacity = hint_capacity;
    kvb_pool *p = NULL;
    int rc = kvb_pool_create(&cfg, &p);
    cr_assert_eq(rc, 0, "%s: kvb_pool_create: %s", bc->ops->name, kvb_strerror(rc));
    return p;
}

/* The prefix replay of one request: match, allocate + stage + register the rest,
 * release last block first. The evicted hashes are appended to ev (room for n). */
static uint32_t hrequest(kvb_pool *p, const kvb_hash *h, uint32_t n, kvb_hash *ev, uint32_t *nev)
{
    kvb_block b[64];
    kvb_mutable m[64];
    kvb_complete c[64];
    cr_assert_leq(n, 64);
    int k = kvb_pool_match(p, h, n, b);
    cr_assert_geq(k, 0);
    uint32_t miss = n - (uint32_t)k, e = 0;
    if (miss) {
        cr_assert_eq(kvb_pool_allocate(p, miss, m, ev ? ev + *nev : NULL, &e), 0);
        cr_assert_eq(kvb_pool_stage(p, m, h + k, miss, c), 0);
        cr_assert_eq(kvb_pool_register(p, c, miss, b + k), 0);
    }
    if (nev)
        *nev += e;
    for (uint32_t i = 0; i < n / 2; i++) {
        kvb_block t = b[i];
        b[i] = b[n - 1 - i];
        b[n - 1 - i] = t;
    }
    cr_assert_eq(kvb_block_release_n(b, n), 0);
    return (uint32_t)k;
}

/* Allocate n blocks (evicting), report the evicted hashes, give the blocks back. */
static uint32_t hevict(kvb_pool *p, uint32_t n, kvb_hash *ev)
{
    kvb_mutable m[64];
    uint32_t e = 0;
    cr_assert_leq(n, 64);
    cr_assert_eq(kvb_pool_allocate(p, n, m, ev, &e), 0);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(kvb_mutable_release(&m[i]), 0);
    return e;
}

static bool hin(const kvb_hash *set, uint32_t n, kvb_hash h)
{
    for (uint32_t i = 0; i < n; i++)
        if (kvb_hash_equal(set[i], h))
            return true;
    return false;
}

static kvb_hash hroot(uint32_t i)
{
    kvb_hash h;
    kvb_hash_make(0x5000 + i, 0, false, 0, &h);
    return h;
}

static void hfinish(kvb_pool *p)
{
    cr_assert_eq(kvb_pool_check(p), 0, "kvb_pool_check failed");
    cr_assert_eq(kvb_pool_destroy(p), 0);
}

BACKEND_TEST(hints_protect_until_nothing_else_is_left)
{
    kvb_pool *p = hpool(bc, 64, 64);
    kvb_hash h[64], ev[64];
    for (uint32_t i = 0; i < 64; i++) {
        h[i] = hroot(i);
        hrequest(p, &h[i], 1, NULL, NULL);
    }
    /* 16 hinted hashes, one call each: h[0] is needed first, h[60] last */
    for (uint32_t i = 0; i < 64; i += 4)
        cr_assert_eq(kvb_pool_hint(p, &h[i], 1, +1), 0);
    /* 48 unhinted blocks go first, then the hinted ones, furthest need first */
    uint32_t e = hevict(p, 56, ev);
    cr_assert_eq(e, 56, "%s", bc->ops->name);
    for (uint32_t i = 0; i < 48; i++) {
        bool hinted = false;
        for (uint32_t j = 0; j < 64; j += 4)
            hinted |= kvb_hash_equal(ev[i], h[j]);
        cr_assert_not(hinted, "%s: eviction %u took a hinted block while others were cached",
                      bc->ops->name, i);
    }
    for (uint32_t i = 0; i < 8; i++)
        cr_assert(kvb_hash_equal(ev[48 + i], h[60 - 4 * i]), "%s: hinted eviction %u out of order",
                  bc->ops->name, i);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_evictions, 8);
    cr_assert_eq(st.evictions, 56);
    cr_assert_eq(st.hint_hashes, 16);
    /* the rest are still cached: a match finds them */
    for (uint32_t i = 0; i < 32; i += 4)
        cr_assert_eq(hrequest(p, &h[i], 1, NULL, NULL), 1, "%s: h[%u] lost", bc->ops->name, i);
    for (uint32_t i = 0; i < 64; i += 4)
        cr_assert_eq(kvb_pool_hint(p, &h[i], 1, -1), 0);
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_uses, 0);
    cr_assert_eq(st.hint_hashes, 0);
    cr_assert_eq(st.hint_protected, 0);
    cr_assert_eq(st.hint_unmatched, 0);
    hfinish(p);
}

BACKEND_TEST(hints_one_request_goes_deepest_first)
{
    kvb_pool *p = hpool(bc, 16, 64);
    kvb_hash chain[8], ev[16];
    tu_chain(0x9000, 8, chain);
    hrequest(p, chain, 8, NULL, NULL);
    cr_assert_eq(kvb_pool_hint(p, chain, 8, +1), 0);
    cr_assert_eq(hevict(p, 16, ev), 8); /* 8 free blocks first, then the chain */
    for (uint32_t i = 0; i < 8; i++)
        cr_assert(kvb_hash_equal(ev[i], chain[7 - i]), "%s: position %u evicted at %u",
                  bc->ops->name, kvb_hash_position(ev[i]), i);
    cr_assert_eq(kvb_pool_hint(p, chain, 8, -1), 0);
    hfinish(p);
}

BACKEND_TEST(hints_given_before_the_content_is_cached)
{
    kvb_pool *p = hpool(bc, 8, 8);
    kvb_hash h[8], ev[8];
    for (uint32_t i = 0; i < 8; i++)
        h[i] = hroot(100 + i);
    cr_assert_eq(kvb_pool_hint(p, &h[3], 1, +2), 0); /* two queued requests want h[3] */
    for (uint32_t i = 0; i < 8; i++)
        hrequest(p, &h[i], 1, NULL, NULL);
    cr_assert_eq(hevict(p, 7, ev), 7);
    cr_assert_not(hin(ev, 7, h[3]), "%s", bc->ops->name);
    cr_assert_eq(kvb_pool_hint(p, &h[3], 1, -1), 0); /* one of them was served */
    cr_assert_eq(hevict(p, 7, ev), 0);               /* the 7 freed blocks come first */
    cr_assert_eq(kvb_pool_hint(p, &h[3], 1, -1), 0); /* the other one too */
    cr_assert_eq(hevict(p, 8, ev), 1);
    cr_assert(kvb_hash_equal(ev[0], h[3]));
    hfinish(p);
}

BACKEND_TEST(hints_withdrawn_blocks_are_ordinary_again)
{
    kvb_pool *p = hpool(bc, 8, 16);
    kvb_hash h[8], ev[8];
    for (uint32_t i = 0; i < 8; i++) {
        h[i] = hroot(200 + i);
        hrequest(p, &h[i], 1, NULL, NULL);
    }
    cr_assert_eq(kvb_pool_hint(p, h, 8, +1), 0);
    cr_assert_eq(hevict(p, 2, ev), 2); /* sets blocks apart while looking for victims */
    cr_assert_eq(kvb_pool_hint(p, h, 4, -1), 0);
    /* the 2 blocks freed above come first, then two of the withdrawn h[0..3] */
    cr_assert_eq(hevict(p, 4, ev), 2);
    for (uint32_t i = 0; i < 2; i++)
        cr_assert(hin(h, 4, ev[i]), "%s: eviction %u took a block still hinted", bc->ops->name, i);
    cr_assert_eq(kvb_pool_hint(p, h + 4, 4, -1), 0);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_uses, 0);
    cr_assert_eq(st.hint_protected, 0);
    hfinish(p);
}

BACKEND_TEST(hints_hit_on_a_protected_block)
{
    kvb_pool *p = hpool(bc, 4, 8);
    kvb_hash h[4], ev[4];
    for (uint32_t i = 0; i < 4; i++) {
        h[i] = hroot(300 + i);
        hrequest(p, &h[i], 1, NULL, NULL);
    }
    cr_assert_eq(kvb_pool_hint(p, h, 2, +1), 0);
    cr_assert_eq(hevict(p, 2, ev), 2); /* h[2], h[3]; h[0], h[1] set apart */
    cr_assert_eq(hrequest(p, &h[0], 1, NULL, NULL), 1, "%s: protected block missed", bc->ops->name);
    cr_assert_eq(kvb_pool_hint(p, h, 1, -1), 0);
    cr_assert_eq(kvb_pool_check(p), 0);
    cr_assert_eq(hrequest(p, &h[1], 1, NULL, NULL), 1);
    cr_assert_eq(kvb_pool_hint(p, &h[1], 1, -1), 0);
    cr_assert_eq(kvb_pool_reset_inactive(p), 2);
    hfinish(p);
}

BACKEND_TEST(hints_reset_inactive_drains_protected_blocks)
{
    kvb_pool *p = hpool(bc, 32, 32);
    kvb_hash h[32], ev[32];
    for (uint32_t i = 0; i < 32; i++) {
        h[i] = hroot(400 + i);
        hrequest(p, &h[i], 1, NULL, NULL);
    }
    cr_assert_eq(kvb_pool_hint(p, h, 32, +1), 0);
    cr_assert_eq(hevict(p, 4, ev), 4); /* sets the other 28 apart... or not: all hinted */
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_evictions, 4);
    cr_assert_eq(kvb_pool_reset_inactive(p), 28);
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.hint_protected, 0);
    cr_assert_eq(st.inactive, 0);
    cr_assert_eq(kvb_pool_hint(p, h, 32, -1), 0);
    hfinish(p);
}

/* A model of the hints: per hash, its outstanding (ticket, uses) oldest first. */
#define HM_HASHES 48 /* 12 chains of 4 */
struct hmodel {
    kvb_hash h[HM_HASHES];
    uint64_t tk[HM_HASHES][32];
    uint32_t tu[HM_HASHES][32];
    uint32_t nt[HM_HASHES];
    uint64_t uses[HM_HASHES];
    bool cached[HM_HASHES];
    uint64_t ticket;
};

static int hm_index(const struct hmodel *m, kvb_hash h)
{
    for (int i = 0; i < HM_HASHES; i++)
        if (kvb_hash_equal(m->h[i], h))
            return i;
    return -1;
}

static uint64_t hm_key(const struct hmodel *m, int i)
{
    return m->tk[i][0] << 24 | kvb_hash_position(m->h[i]);
}

static void hm_add(struct hmodel *m, int i, uint32_t u, uint64_t ticket)
{
    if (m->nt[i] && m->tk[i][m->nt[i] - 1] == ticket) {
        m->tu[i][m->nt[i] - 1] += u;
    } else {
        cr_assert_lt(m->nt[i], 32);
        m->tk[i][m->nt[i]] = ticket;
        m->tu[i][m->nt[i]++] = u;
    }
    m->uses[i] += u;
}

static uint32_t hm_withdraw(struct hmodel *m, int i, uint32_t u)
{
    uint32_t taken = 0;
    while (taken < u && m->nt[i]) {
        uint32_t k = u - taken < m->tu[i][0] ? u - taken : m->tu[i][0];
        m->tu[i][0] -= k;
        taken += k;
        if (m->tu[i][0] == 0) {
            memmove(m->tk[i], m->tk[i] + 1, (m->nt[i] - 1) * sizeof m->tk[i][0]);
            memmove(m->tu[i], m->tu[i] + 1, (m->nt[i] - 1) * sizeof m->tu[i][0]);
            m->nt[i]--;
        }
    }
    m->uses[i] -= taken;
    return taken;
}

/* Random requests (chains sharing roots), hint additions and withdrawals on a small
 * pool; after every allocation the evictions must respect the hints: a hinted block
 * only when no unhinted block was cached, and those furthest need first. */
BACKEND_TEST(hints_random_against_a_model)
{
    const uint32_t blocks = 12;
    kvb_pool *p = hpool(bc, blocks, 24);
    static struct hmodel m;
    memset(&m, 0, sizeof m);
    for (int c = 0; c < HM_HASHES / 4; c++)
        tu_chain(0xa000 + 16 * (uint64_t)c, 4, &m.h[4 * c]);
    uint64_t seed = 0x1234 + bc->model;
    uint64_t unmatched = 0, rejected = 0;
    for (int op = 0; op < 4000; op++) {
        uint32_t r = tu_rnd(&seed, 10);
        if (r < 5) { /* a request: chain c, length 1..4 */
            int c = (int)tu_rnd(&seed, HM_HASHES / 4);
            uint32_t n = 1 + tu_rnd(&seed, 4);
            kvb_hash ev[4];
            uint32_t nev = 0;
            kvb_block b[4];
            int k = kvb_pool_match(p, &m.h[4 * c], n, b);
            cr_assert_geq(k, 0);
            bool held[HM_HASHES] = {0};
            for (int j = 0; j < k; j++)
                held[4 * c + j] = true;
            uint32_t miss = n - (uint32_t)k;
            kvb_mutable mu[4];
            kvb_complete co[4];
            if (miss) {
                cr_assert_eq(kvb_pool_allocate(p, miss, mu, ev, &nev), 0);
                /* check the victims against the model */
                bool gone[HM_HASHES] = {0};
                uint64_t last = UINT64_MAX;
                bool any_hinted = false;
                for (uint32_t e = 0; e < nev; e++) {
                    int i = hm_index(&m, ev[e]);
                    cr_assert_geq(i, 0);
                    cr_assert(m.cached[i] && !held[i], "%s: evicted a block not cached",
                              bc->ops->name);
                    gone[i] = true;
                    if (m.uses[i]) {
                        any_hinted = true;
                        cr_assert_leq(hm_key(&m, i), last, "%s: hinted victims out of order",
                                      bc->ops->name);
                        last = hm_key(&m, i);
                    }
                }
                for (int i = 0; i < HM_HASHES; i++) {
                    if (!m.cached[i] || held[i] || gone[i])
                        continue;
                    if (any_hinted)
                        cr_assert(m.uses[i] != 0,
                                  "%s: op %d: a hinted block was evicted while an unhinted "
                                  "one stayed",
                                  bc->ops->name, op);
                    if (any_hinted)
                        cr_assert_leq(hm_key(&m, i), last,
                                      "%s: op %d: a hinted block needed later stayed",
                                      bc->ops->name, op);
                }
                for (int i = 0; i < HM_HASHES; i++)
                    if (gone[i])
                        m.cached[i] = false;
                cr_assert_eq(kvb_pool_stage(p, mu, &m.h[4 * c + k], miss, co), 0);
                cr_assert_eq(kvb_pool_register(p, co, miss, b + k), 0);
            }
            for (uint32_t j = 0; j < n / 2; j++) {
                kvb_block t = b[j];
                b[j] = b[n - 1 - j];
                b[n - 1 - j] = t;
            }
            cr_assert_eq(kvb_block_release_n(b, n), 0);
            for (uint32_t j = 0; j < n; j++)
                m.cached[4 * c + (int)j] = true;
        } else if (r < 8) { /* hint a few hashes (a queued request: a chain prefix) */
            int c = (int)tu_rnd(&seed, HM_HASHES / 4);
            uint32_t n = 1 + tu_rnd(&seed, 4);
            int32_t d = 1 + (int32_t)tu_rnd(&seed, 2);
            int rc = kvb_pool_hint(p, &m.h[4 * c], n, d);
            if (rc == -ENOSPC) {
                rejected++;
                continue;
            }
            cr_assert_eq(rc, 0);
            m.ticket++;
            for (uint32_t j = 0; j < n; j++)
                hm_add(&m, 4 * c + (int)j, (uint32_t)d, m.ticket);
        } else { /* withdraw */
            int c = (int)tu_rnd(&seed, HM_HASHES / 4);
            uint32_t n = 1 + tu_rnd(&seed, 4);
            int32_t d = 1 + (int32_t)tu_rnd(&seed, 2);
            cr_assert_eq(kvb_pool_hint(p, &m.h[4 * c], n, -d), 0);
            for (uint32_t j = 0; j < n; j++)
                unmatched += (uint32_t)d - hm_withdraw(&m, 4 * c + (int)j, (uint32_t)d);
        }
        if (op % 64 == 0)
            cr_assert_eq(kvb_pool_check(p), 0, "%s: op %d", bc->ops->name, op);
        kvb_stats st;
        kvb_pool_stats(p, &st);
        uint64_t uses = 0;
        uint32_t hashes = 0;
        for (int i = 0; i < HM_HASHES; i++) {
            uses += m.uses[i];
            hashes += m.uses[i] != 0;
        }
        cr_assert_eq(st.hint_uses, uses, "%s: op %d", bc->ops->name, op);
        cr_assert_eq(st.hint_hashes, hashes);
        cr_assert_eq(st.hint_unmatched, unmatched);
        cr_assert_eq(st.hint_rejected, rejected);
        if (op == 3999) { /* the scenario reached what it is about */
            cr_assert_gt(st.hint_evictions, 0, "%s", bc->ops->name);
            cr_assert_gt(rejected, 0, "%s", bc->ops->name);
            cr_assert_gt(unmatched, 0, "%s", bc->ops->name);
        }
    }
    hfinish(p);
}

/* ------------------------------------------------------------------------ */
/* Pool-level scenarios: every backend under retention priorities and       */
/* durations (lowest level first, the backend's order within a level)       */
/* ------------------------------------------------------------------------ */

static uint64_t conf_now;

static uint64_t conf_clock(void *ctx)
{
    (void)ctx;
    return conf_now;
}

static kvb_pool *ppool(const struct backend_case *bc, uint32_t blocks, uint32_t hint_capacity)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = blocks;
    cfg.evict_ops = bc->ops;
    cfg.hint_capacity = hint_capacity;
    cfg.priorities = true;
    cfg.clock = (kvb_clock){.now_ms = conf_clock};
    conf_now = 0;
    kvb_pool *p = NULL;
    int rc = kvb_pool_create(&cfg, &p);
    cr_assert_eq(rc, 0, "%s: kvb_pool_create: %s", bc->ops->name, kvb_strerror(rc));
    return p;
}

/* The backend's own order over hashes h[order[0..n)] released one by one: a pool
 * of the same backend where every block keeps the default priority, drained by
 * evictions into out[0..n). */
static void backend_order(const struct backend_case *bc, const kvb_hash *h, const uint32_t *order,
                          uint32_t n, kvb_hash *out)
{
    kvb_pool *ref = ppool(bc, n, 0);
    for (uint32_t j = 0; j < n; j++)
        hrequest(ref, &h[order[j]], 1, NULL, NULL);
    cr_assert_eq(hevict(ref, n, out), n);
    hfinish(ref);
}

/* Where hash x stands in order o[0..n). */
static uint32_t rank_of(const kvb_hash *o, uint32_t n, kvb_hash x)
{
    for (uint32_t i = 0; i < n; i++)
        if (kvb_hash_equal(o[i], x))
            return i;
    cr_assert_fail("hash not in the reference order");
    return n;
}

BACKEND_TEST(priorities_lowest_first)
{
    kvb_pool *p = ppool(bc, 32, 0);
    kvb_hash h[32], ev[32], ref[32];
    /* 8 at 10 and 4 at 20 (below), 8 at the default, 4 at 60 and 8 at 90 (above) */
    uint32_t level[32];
    for (uint32_t i = 0; i < 32; i++) {
        level[i] = i < 8 ? 10 : i < 12 ? 20 : i < 20 ? KVB_PRIORITY_DEFAULT : i < 24 ? 60 : 90;
        h[i] = hroot(600 + i);
    }
    uint32_t order[32]; /* release order: interleaved levels */
    for (uint32_t i = 0; i < 32; i++)
        order[i] = (i * 13) % 32;
    for (uint32_t j = 0; j < 32; j++) {
        uint32_t i = order[j];
        hrequest(p, &h[i], 1, NULL, NULL);
        cr_assert_eq(kvb_pool_set_priority(p, &h[i], 1, level[i], 0), 1);
    }
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained, 24, "%s", bc->ops->name);
    cr_assert_eq(kvb_pool_check(p), 0);
    cr_assert_eq(hevict(p, 32, ev), 32);
    /* level by level, lowest first; within a level the backend's own order: the
     * order it gives the same releases when every block has the default priority */
    backend_order(bc, h, order, 32, ref);
    uint32_t k = 0;
    for (uint32_t lv = 0; lv <= 100; lv++)
        for (uint32_t r = 0; r < 32; r++) {
            uint32_t i = 0;
            while (!kvb_hash_equal(h[i], ref[r]))
                i++;
            if (level[i] != lv)
                continue;
            cr_assert(kvb_hash_equal(ev[k], h[i]),
                      "%s: eviction %u out of order (level %u, backend rank %u)", bc->ops->name, k,
                      lv, r);
            k++;
        }
    cr_assert_eq(k, 32);
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained_evictions, 12);
    cr_assert_eq(st.retained, 0);
    hfinish(p);
}

BACKEND_TEST(priorities_durations_return_to_the_default)
{
    kvb_pool *p = ppool(bc, 16, 0);
    kvb_hash h[16], ev[16];
    for (uint32_t i = 0; i < 16; i++) {
        h[i] = hroot(700 + i);
        hrequest(p, &h[i], 1, NULL, NULL);
    }
    /* a TTL pin on h[0..7]: 100 ms at the top priority */
    cr_assert_eq(kvb_pool_set_priority(p, h, 8, KVB_PRIORITY_MAX, 100), 8);
    conf_now = 99;
    cr_assert_eq(hevict(p, 8, ev), 8);
    for (uint32_t i = 0; i < 8; i++)
        cr_assert_not(hin(h, 8, ev[i]), "%s: a pinned block went first", bc->ops->name);
    conf_now = 100; /* the pins run out: ordinary blocks, the only ones left */
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retention_expired, 8);
    cr_assert_eq(st.retained, 0);
    cr_assert_eq(st.retention_timers, 0);
    cr_assert_eq(hevict(p, 16, ev), 8);
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained_evictions, 0);
    hfinish(p);
}

BACKEND_TEST(priorities_cached_blocks_move_both_ways)
{
    kvb_pool *p = ppool(bc, 8, 8);
    kvb_hash h[8], ev[8], ref[8];
    uint32_t order[8];
    for (uint32_t i = 0; i < 8; i++) {
        h[i] = hroot(800 + i);
        order[i] = i;
        hrequest(p, &h[i], 1, NULL, NULL);
    }
    cr_assert_eq(kvb_pool_set_priority(p, h, 4, 70, 0), 4);
    cr_assert_eq(kvb_pool_set_priority(p, h, 2, KVB_PRIORITY_DEFAULT, 0), 2); /* back */
    cr_assert_eq(kvb_pool_set_priority(p, h + 4, 1, 5, 0), 1);
    cr_assert_eq(kvb_pool_hint(p, h + 4, 1, 1), 0); /* h[4]: low, but hinted */
    cr_assert_eq(kvb_pool_check(p), 0);
    kvb_stats st;
    kvb_pool_stats(p, &st);
    cr_assert_eq(st.retained, 3, "%s", bc->ops->name); /* h[2], h[3] at 70, h[4] at 5 */
    cr_assert_eq(hevict(p, 8, ev), 8);
    /* h[5..7] and h[0..1] (the default), then h[2], h[3] (70), each in the
     * backend's order (a cached block keeps its place when its priority changes),
     * then h[4] (hinted) */
    backend_order(bc, h, order, 8, ref);
    for (uint32_t i = 0; i < 5; i++) {
        cr_assert(hin(h + 5, 3, ev[i]) || hin(h, 2, ev[i]), "%s: eviction %u", bc->ops->name, i);
        if (i)
            cr_assert_lt(rank_of(ref, 8, ev[i - 1]), rank_of(ref, 8, ev[i]),
                         "%s: eviction %u out of the backend's order", bc->ops->name, i);
    }
    cr_assert(hin(h + 2, 2, ev[5]) && hin(h + 2, 2, ev[6]) && !kvb_hash_equal(ev[5], ev[6]), "%s",
              bc->ops->name);
    cr_assert_lt(rank_of(ref, 8, ev[5]), rank_of(ref, 8, ev[6]), "%s", bc->ops->name);
    cr_assert(kvb_hash_equal(ev[7], h[4]), "%s", bc->ops->name);
    cr_assert_eq(kvb_pool_hint(p, h + 4, 1, -1), 0);
    hfinish(p);
}

/* ------------------------------------------------------------------------ */
/* The test-only backend's order (the built-in ones': test_policies.c)       */
/* ------------------------------------------------------------------------ */

static void expect_order(struct inst *in, const uint32_t *want, uint32_t n)
{
    uint32_t out[in->block_count];
    uint32_t k = ev(in, in->block_count, out);
    cr_assert_eq(k, n, "%s: %u entries, expected %u", in->ops->name, k, n);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(out[i], want[i], "%s: position %u: got %u, expected %u", in->ops->name, i,
                     out[i], want[i]);
}

Test(test_lifo, order_is_most_recent_first)
{
    tu_fa ca;
    tu_fa_init(&ca, 0);
    struct inst in = mk(&test_lifo_ops, 8, &ca);
    for (uint32_t id = 0; id < 4; id++)
        cr_assert_eq(ins(&in, id, 0), 0);
    expect_order(&in, (uint32_t[]){3, 2, 1, 0}, 4);
    done(&in, &ca);
}

/* ------------------------------------------------------------------------ */
/* Built-in lookup and validation                                           */
/* ------------------------------------------------------------------------ */

Test(builtin, lookup)
{
    cr_assert_eq(kvb_inactive_builtin(KVB_EVICT_LRU), &kvb_inactive_lru);
    cr_assert_eq(kvb_inactive_builtin(KVB_EVICT_FIFO), &kvb_inactive_fifo);
    cr_assert_str_eq(kvb_inactive_builtin(KVB_EVICT_LRU)->name, "lru");
    cr_assert_str_eq(kvb_inactive_builtin(KVB_EVICT_FIFO)->name, "fifo");
    cr_assert_eq(kvb_inactive_builtin(KVB_EVICT_MULTI_LRU), &kvb_inactive_multi_lru);
    cr_assert_eq(kvb_inactive_builtin(KVB_EVICT_TINYLFU), &kvb_inactive_tinylfu);
    cr_assert_eq(kvb_inactive_builtin(KVB_EVICT_LINEAGE), &kvb_inactive_lineage);
    cr_assert_eq(kvb_inactive_builtin(KVB_EVICT_LINEAGE_ARC), &kvb_inactive_lineage_arc);
    cr_assert_eq(kvb_inactive_builtin(KVB_EVICT_ADAPTIVE), &kvb_inactive_adaptive);
    /* out of range */
    cr_assert_null(kvb_inactive_builtin((kvb_evict_policy)(KVB_EVICT_ADAPTIVE + 1)));
    cr_assert_null(kvb_inactive_builtin((kvb_evict_policy)99));
    cr_assert_null(kvb_inactive_builtin((kvb_evict_policy)-1));
}

Test(builtin, every_builtin_is_in_the_conformance_table)
{
    for (int p = KVB_EVICT_LRU; p <= KVB_EVICT_ADAPTIVE; p++) {
        const kvb_inactive_ops *ops = kvb_inactive_builtin((kvb_evict_policy)p);
        if (!ops)
            continue;
        bool found = false;
        for (size_t i = 0; i < N_BACKENDS; i++)
            found |= backends[i].ops == ops;
        cr_assert(found, "built-in backend %s is missing from backends[]", ops->name);
    }
}

Test(validate, accepts_builtins_and_optional_methods_absent)
{
    cr_assert_eq(kvb__inactive_ops_validate(&kvb_inactive_lru), 0);
    cr_assert_eq(kvb__inactive_ops_validate(&kvb_inactive_fifo), 0);
    cr_assert_eq(kvb__inactive_ops_validate(&test_lifo_ops), 0); /* no unevict, no memory */
    kvb_inactive_ops t = kvb_inactive_lru;
    t.version = KVB_INACTIVE_OPS_VERSION + 1; /* a newer table: v1 methods are there */
    cr_assert_eq(kvb__inactive_ops_validate(&t), 0);
}

Test(validate, rejects_bad_tables)
{
    cr_assert_eq(kvb__inactive_ops_validate(NULL), -EINVAL);
    kvb_inactive_ops t = kvb_inactive_lru;
    t.version = 0;
    cr_assert_eq(kvb__inactive_ops_validate(&t), -EINVAL, "version 0");
    t = kvb_inactive_lru;
    t.name = NULL;
    cr_assert_eq(kvb__inactive_ops_validate(&t), -EINVAL, "NULL name");

    /* Each required method missing in turn. */
#define WITHOUT(method)                                                                            \
    do {                                                                                           \
        t = kvb_inactive_fifo;                                                                     \
        t.method = NULL;                                                                           \
        cr_assert_eq(kvb__inactive_ops_validate(&t), -EINVAL, #method " NULL accepted");           \
    } while (0)
    WITHOUT(create);
    WITHOUT(destroy);
    WITHOUT(insert);
    WITHOUT(remove);
    WITHOUT(contains);
    WITHOUT(evict);
    WITHOUT(len);
    WITHOUT(drain);
#undef WITHOUT
}
