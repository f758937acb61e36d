/*
 * test_race2.c - more of the races the design names, made deterministic
 * (complements test_race.c). No sleeps: semaphores and barriers order the
 * threads, the KVB_TESTING last-release hook parks a releaser between "count
 * reached zero" and "took the pool lock", and one test parks a thread on the
 * registry mutex (see the interposer below).
 *
 *  - register vs register on one hash, two threads, both orders, ALLOW and
 *    REJECT, with and without a last release of the primary parked in its window;
 *  - eviction vs re-registration: the evicting thread's "absent" presence update
 *    is delivered after the re-registering thread's "present" (the late absent
 *    must not erase the fresh present: presence is a counter);
 *  - duplicate drop vs primary: the duplicate's last release (which drops its
 *    reference on the primary) parked while the primary's other references come
 *    and go, with and without reset-on-release;
 *  - kvb_pool_available is never torn: a reader only ever sees the values of
 *    coherent states while another thread moves 8 blocks per locked call;
 *  - the lock-order check of debug builds fires on a deliberate inversion (a
 *    backend that calls into the registry while the pool lock is held).
 */
#include "testutil.h"
#include "testing.h"
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>

/* ---- helpers ---------------------------------------------------------------------- */

/* slot states as kvb__test_slot_state reports them (enum kvb_state, lib/pool.h) */
#define ST_PRIMARY 3
#define ST_DUPLICATE 4

static kvb_complete stage1(kvb_pool *p, kvb_hash h)
{
    kvb_mutable m;
    kvb_complete c;
    cr_assert_eq(kvb_pool_allocate(p, 1, &m, NULL, NULL), 0);
    cr_assert_eq(kvb_mutable_stage(&m, h, &c), 0);
    return c;
}

static kvb_block put1(kvb_pool *p, kvb_hash h)
{
    kvb_complete c = stage1(p, h);
    kvb_block b;
    cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
    return b;
}

static kvb_stats stats(kvb_pool *p)
{
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    return s;
}

/* Park the last release of a block in its window (test_race.c's pattern). */
struct park {
    sem_t reached, go;
    kvb_block b;
    int rc;
    pthread_t t;
};

static void park_hook(void *arg, kvb_pool *pool, uint32_t id)
{
    struct park *pk = arg;
    (void)pool;
    (void)id;
    sem_post(&pk->reached);
    sem_wait(&pk->go);
}

static void *releaser(void *arg)
{
    struct park *pk = arg;
    pk->rc = kvb_block_release(&pk->b);
    return NULL;
}

static void park_last_release(struct park *pk, kvb_block b)
{
    sem_init(&pk->reached, 0, 0);
    sem_init(&pk->go, 0, 0);
    pk->b = b;
    kvb__test_set_last_release_hook(park_hook, pk);
    cr_assert_eq(pthread_create(&pk->t, NULL, releaser, pk), 0);
    sem_wait(&pk->reached);
    kvb__test_set_last_release_hook(NULL, NULL); /* only this release parks */
}

static void unpark(struct park *pk)
{
    sem_post(&pk->go);
    pthread_join(pk->t, NULL);
    sem_destroy(&pk->reached);
    sem_destroy(&pk->go);
    cr_expect_eq(pk->rc, 0);
}

/* ---- register vs register on one hash ---------------------------------------------- */

struct regger {
    kvb_pool *p;
    kvb_complete c;
    kvb_block out;
    int rc;
    pthread_barrier_t *bar;
};

static void *register_one(void *arg)
{
    struct regger *g = arg;
    pthread_barrier_wait(g->bar);
    g->rc = kvb_pool_register(g->p, &g->c, 1, &g->out);
    return NULL;
}

/* Two threads register a staged block of the same hash at the same time. */
static void register_race(kvb_pool *p, kvb_hash h, struct regger g[2])
{
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        g[i] = (struct regger){.p = p, .c = stage1(p, h), .bar = &bar};
        cr_assert_eq(pthread_create(&t[i], NULL, register_one, &g[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
    cr_assert_eq(g[0].rc, 0);
    cr_assert_eq(g[1].rc, 0);
    cr_expect_null(g[0].c.pool, "consumed");
    cr_expect_null(g[1].c.pool, "consumed");
}

Test(race2, register_vs_register_one_hash_allow)
{
    kvb_pool *p = tu_pool(8, KVB_EVICT_LRU);
    unsigned first[2] = {0, 0};
    for (int round = 0; round < 200; round++) {
        kvb_hash h = tu_hash((uint64_t)round);
        struct regger g[2];
        register_race(p, h, g);
        /* exactly one primary; the other is its duplicate, holding one reference on it */
        kvb_stats s = stats(p);
        cr_assert_eq(s.primary, 1, "round %d", round);
        cr_assert_eq(s.duplicate, 1, "round %d", round);
        int prim = kvb__test_slot_state(p, g[0].out.id) == ST_PRIMARY ? 0 : 1;
        first[prim]++;
        cr_assert_eq(kvb__test_slot_state(p, g[1 - prim].out.id), ST_DUPLICATE);
        cr_assert_eq(kvb_block_use_count(&g[prim].out), 2, "own + the duplicate's");
        cr_assert_eq(kvb_block_use_count(&g[1 - prim].out), 1);
        cr_assert(kvb_hash_equal(g[0].out.hash, h) && kvb_hash_equal(g[1].out.hash, h));
        cr_assert_eq(kvb_pool_check(p), 0);
        /* release in either order: the primary ends cached, the duplicate reset */
        kvb_block_release(&g[round & 1].out);
        kvb_block_release(&g[1 - (round & 1)].out);
        s = stats(p);
        cr_assert_eq(s.primary + s.duplicate, 0);
        cr_assert_eq(kvb_pool_reset_inactive(p), 1, "one cached copy of h");
    }
    cr_log_info("primary was thread 0 in %u rounds, thread 1 in %u", first[0], first[1]);
    tu_finish(p);
}

Test(race2, register_vs_register_one_hash_reject)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.dup_policy = KVB_DUP_REJECT;
    kvb_pool *p = tu_pool_cfg(&cfg);
    for (int round = 0; round < 200; round++) {
        kvb_hash h = tu_hash((uint64_t)round);
        struct regger g[2];
        register_race(p, h, g);
        /* one block holds h; both threads got a reference to it; the other staged
         * block went back to the free list */
        cr_assert_eq(g[0].out.id, g[1].out.id, "round %d", round);
        cr_assert_eq(g[0].out.gen, g[1].out.gen);
        cr_assert_eq(kvb_block_use_count(&g[0].out), 2);
        kvb_stats s = stats(p);
        cr_assert_eq(s.primary, 1);
        cr_assert_eq(s.duplicate, 0);
        cr_assert_eq(s.reset, 7);
        cr_assert_eq(s.dedups, (uint64_t)round + 1);
        kvb_block_release(&g[0].out);
        kvb_block_release(&g[1].out);
        cr_assert_eq(kvb_pool_reset_inactive(p), 1);
    }
    tu_finish(p);
}

/* Both registrations happen while the primary's last release is parked: the first
 * to get the lock performs the eager transition and resurrects it. */
static void register_race_in_window(kvb_dup_policy pol)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.dup_policy = pol;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_hash h = tu_hash(77);
    kvb_block b = put1(p, h);
    uint32_t pid = b.id;
    struct park pk;
    park_last_release(&pk, b);
    struct regger g[2];
    register_race(p, h, g);
    kvb_stats s = stats(p);
    cr_expect_eq(s.eager_transitions, 1, "exactly one registration did the eager move");
    cr_expect_eq(s.resurrections, 1);
    cr_expect_eq(s.primary, 1);
    if (pol == KVB_DUP_ALLOW) {
        cr_expect_eq(s.duplicate, 2);
        cr_expect_neq(g[0].out.id, pid);
        cr_expect_neq(g[1].out.id, pid);
        kvb_block ref = {.pool = p, .id = pid, .gen = kvb__test_slot_gen(p, pid), .hash = h};
        cr_expect_eq(kvb_block_use_count(&ref), 2, "one reference per duplicate");
    } else {
        cr_expect_eq(s.duplicate, 0);
        cr_expect_eq(g[0].out.id, pid);
        cr_expect_eq(g[1].out.id, pid);
        cr_expect_eq(kvb_block_use_count(&g[0].out), 2);
        cr_expect_eq(s.dedups, 2);
    }
    unpark(&pk);
    s = stats(p);
    cr_expect_eq(s.release_noops, 1, "the parked release found its work done");
    cr_expect_eq(kvb_pool_check(p), 0);
    kvb_block_release(&g[0].out);
    kvb_block_release(&g[1].out);
    s = stats(p);
    cr_expect_eq(s.inactive, 1);
    cr_expect_eq(s.reset, 7);
    tu_finish(p);
}

Test(race2, register_vs_register_in_the_last_release_window_allow)
{
    register_race_in_window(KVB_DUP_ALLOW);
}

Test(race2, register_vs_register_in_the_last_release_window_reject)
{
    register_race_in_window(KVB_DUP_REJECT);
}

/* ---- eviction vs re-registration: presence ------------------------------------------ */

/*
 * A pthread_mutex_lock interposer (this executable's definition wins over libc's
 * for the statically linked library): a thread that armed it parks right before
 * it locks one chosen mutex, until the test lets it go. The registry mutex is
 * found by calibration (the first mutex kvb_registry_present locks on this
 * thread), not by layout. A KVB_TESTING hook in the pool's callback firing
 * (between the pool unlock and the presence delivery) would do the same job
 * without the interposer; see docs/reliability.md.
 */
typedef int (*lock_fn)(pthread_mutex_t *);
static _Atomic(lock_fn) real_lock;
static _Thread_local int lk_mode;              /* 0 off, 1 record, 2 park on target */
static _Thread_local pthread_mutex_t *lk_seen; /* mode 1: first mutex locked */
static pthread_mutex_t *lk_target;
static sem_t lk_parked, lk_go;

int pthread_mutex_lock(pthread_mutex_t *m)
{
    lock_fn f = atomic_load_explicit(&real_lock, memory_order_acquire);
    if (!f) {
        f = (lock_fn)dlsym(RTLD_NEXT, "pthread_mutex_lock");
        atomic_store_explicit(&real_lock, f, memory_order_release);
    }
    if (lk_mode == 1 && !lk_seen) {
        lk_seen = m;
    } else if (lk_mode == 2 && m == lk_target) {
        lk_mode = 0; /* once */
        sem_post(&lk_parked);
        sem_wait(&lk_go);
    }
    return f(m);
}

struct evictor {
    kvb_pool *p;
    uint32_t n;
    kvb_mutable m[4];
    uint32_t nev;
    kvb_hash ev[4];
    int rc;
};

static void *evict_parked(void *arg)
{
    struct evictor *e = arg;
    lk_mode = 2; /* park when this thread delivers its presence updates */
    e->rc = kvb_pool_allocate(e->p, e->n, e->m, e->ev, &e->nev);
    lk_mode = 0;
    return NULL;
}

static bool present(kvb_registry *r, kvb_pool *p, kvb_hash h)
{
    bool b = false;
    cr_assert_geq(kvb_registry_present(r, &h, 1, p, &b), 0);
    return b;
}

Test(race2, eviction_vs_reregistration_late_absent_keeps_presence)
{
    kvb_registry *r;
    cr_assert_eq(kvb_registry_create(NULL, &r), 0);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 2;
    cfg.registry = r;
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_hash h = tu_hash(5);

    /* calibrate: which mutex does the registry lock? */
    lk_mode = 1;
    lk_seen = NULL;
    (void)kvb_registry_present(r, &h, 1, p, NULL);
    lk_mode = 0;
    if (!lk_seen)
        cr_skip_test("the registry takes no pthread mutex any more: interposer blind");
    lk_target = lk_seen;
    sem_init(&lk_parked, 0, 0);
    sem_init(&lk_go, 0, 0);

    /* h cached in block A; block B free */
    kvb_block b = put1(p, h);
    kvb_block_release(&b);
    cr_assert(present(r, p, h), "cached content is present");

    /* E: allocate both blocks: evicts h (pool says gone), parks before "absent" */
    struct evictor e = {.p = p, .n = 2};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, evict_parked, &e), 0);
    sem_wait(&lk_parked);
    kvb_stats s = stats(p);
    cr_expect_eq(s.evictions, 1, "the eviction happened in the pool");
    cr_expect(present(r, p, h), "its absent update is not delivered yet");

    /* R (this thread): h registered again, in a block E gives back */
    kvb_mutable back = e.m[1];
    kvb_complete c;
    cr_assert_eq(kvb_mutable_stage(&back, h, &c), 0);
    cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
    cr_expect(present(r, p, h), "present after the re-registration (count 2)");

    /* now the late "absent" of the eviction arrives */
    sem_post(&lk_go);
    pthread_join(t, NULL);
    cr_assert_eq(e.rc, 0);
    cr_assert_eq(e.nev, 1);
    cr_expect(kvb_hash_equal(e.ev[0], h));
    cr_expect(present(r, p, h), "a late absent must not erase a fresh present");
    kvb_block got;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &got), 1, "and the pool agrees");
    kvb_block_release(&got);

    kvb_block_release(&b);
    cr_assert_eq(kvb_mutable_release(&e.m[0]), 0);
    cr_expect_eq(kvb_pool_reset_inactive(p), 1);
    cr_expect_not(present(r, p, h), "gone after the drain");
    sem_destroy(&lk_parked);
    sem_destroy(&lk_go);
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

/* ---- duplicate drop vs primary ------------------------------------------------------- */

static uint32_t resets[16];
static unsigned nresets;
static void rec_reset(void *u, uint32_t id)
{
    (void)u;
    if (nresets < 16)
        resets[nresets] = id;
    nresets++;
}

static kvb_pool *dup_pool(kvb_registry *r)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    cfg.registry = r;
    cfg.callbacks = (kvb_callbacks){.on_reset = rec_reset};
    nresets = 0;
    return tu_pool_cfg(&cfg);
}

/* The duplicate's last release parks; meanwhile the primary's own references go,
 * come back and go (never to zero: the duplicate still holds one). Then the
 * duplicate's release drops the primary's last reference and performs its move. */
static void dup_drop_vs_primary(bool reset_flag)
{
    kvb_registry *r;
    cr_assert_eq(kvb_registry_create(NULL, &r), 0);
    kvb_pool *p = dup_pool(r);
    kvb_hash h = tu_hash(11);
    kvb_block u = put1(p, h);
    kvb_block d = put1(p, h); /* ALLOW: a duplicate */
    uint32_t pid = u.id, did = d.id;
    cr_assert_neq(pid, did);
    cr_assert_eq(kvb_block_use_count(&u), 2);

    struct park pk;
    park_last_release(&pk, d);
    kvb_stats s = stats(p);
    cr_expect_eq(s.duplicate, 1, "the parked duplicate is still a duplicate");
    cr_expect_eq(kvb_block_use_count(&u), 2, "and still holds its reference on the primary");

    cr_expect_eq(kvb_block_release(&u), 0); /* not last: the duplicate holds one */
    s = stats(p);
    cr_expect_eq(s.primary, 1);
    cr_expect_eq(s.inactive, 0);
    kvb_block g;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &g), 1, "the primary is still live");
    cr_expect_eq(g.id, pid);
    if (reset_flag)
        cr_expect_eq(kvb_block_set_reset_on_release(&g, true), 0);
    cr_expect_eq(kvb_block_release(&g), 0);
    cr_expect_eq(kvb_pool_destroy(p), -EBUSY);
    cr_expect_eq(nresets, 0);

    unpark(&pk);
    s = stats(p);
    cr_expect_eq(s.primary + s.duplicate, 0);
    cr_expect_eq(s.eager_transitions, 0);
    cr_expect_eq(s.release_noops, 0);
    if (reset_flag) {
        cr_expect_eq(s.reset, 4, "the primary honoured its reset flag");
        cr_expect_eq(nresets, 2);
        cr_expect_eq(resets[0], did, "duplicate first");
        cr_expect_eq(resets[1], pid, "then the primary it kept alive");
        cr_expect_not(present(r, p, h));
    } else {
        cr_expect_eq(s.inactive, 1, "the primary is cached");
        cr_expect_eq(nresets, 1);
        cr_expect_eq(resets[0], did);
        cr_expect(present(r, p, h), "cached content is present (one, not two)");
        cr_expect_eq(kvb_pool_reset_inactive(p), 1);
        cr_expect_not(present(r, p, h));
    }
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
}

Test(race2, duplicate_drop_vs_primary_release)
{
    dup_drop_vs_primary(false);
}

Test(race2, duplicate_drop_vs_primary_release_with_reset_flag)
{
    dup_drop_vs_primary(true);
}

/* The other order: the primary's last own reference goes while the duplicate is
 * alive; a lookup in the duplicate's parked window still finds the primary. */
Test(race2, duplicate_parked_lookup_and_second_duplicate)
{
    kvb_pool *p = dup_pool(NULL);
    kvb_hash h = tu_hash(12);
    kvb_block u = put1(p, h);
    kvb_block d = put1(p, h);
    cr_expect_eq(kvb_block_release(&u), 0);
    struct park pk;
    park_last_release(&pk, d);
    kvb_block d2 = put1(p, h); /* a second duplicate while the first is parked */
    kvb_stats s = stats(p);
    cr_expect_eq(s.duplicate, 2);
    cr_expect_eq(s.eager_transitions, 0, "the primary never reached zero");
    unpark(&pk);
    s = stats(p);
    cr_expect_eq(s.duplicate, 1);
    cr_expect_eq(s.primary, 1, "kept alive by the second duplicate");
    cr_expect_eq(kvb_block_release(&d2), 0);
    s = stats(p);
    cr_expect_eq(s.inactive, 1);
    cr_expect_eq(nresets, 2);
    tu_finish(p);
}

/* ---- available is never torn ----------------------------------------------------------- */

#define AV_N 64
#define AV_K 8
#define AV_CYCLES 3000

struct churn {
    kvb_pool *p;
    atomic_int done;
    int failed_line; /* no Criterion assertion off the test's own thread */
    sem_t sample_req, sample_done; /* lockstep phase for the first cycles */
    int lockstep;
};

static void lockstep(struct churn *c)
{
    if (c->lockstep > 0) {
        sem_post(&c->sample_req);
        sem_wait(&c->sample_done);
    }
}

#define CHURN_CHECK(e)                                                                      \
    do {                                                                                    \
        if (!(e)) {                                                                         \
            c->failed_line = __LINE__;                                                      \
            goto out;                                                                       \
        }                                                                                   \
    } while (0)

static void *churner(void *arg)
{
    struct churn *c = arg;
    for (int cycle = 0; cycle < AV_CYCLES; cycle++) {
        kvb_mutable m[AV_K];
        kvb_complete cp[AV_K];
        kvb_block b[AV_K];
        CHURN_CHECK(kvb_pool_allocate(c->p, AV_K, m, NULL, NULL) == 0); /* N -> N-K */
        lockstep(c);
        for (int i = 0; i < AV_K; i++)
            CHURN_CHECK(kvb_mutable_stage(&m[i], tu_hash((uint64_t)(cycle * AV_K + i)),
                                          &cp[i]) == 0);
        lockstep(c);
        CHURN_CHECK(kvb_pool_register(c->p, cp, AV_K, b) == 0); /* still N-K */
        lockstep(c);
        CHURN_CHECK(kvb_block_release_n(b, AV_K) == 0); /* one lock: N-K -> N */
        lockstep(c);
        CHURN_CHECK(kvb_pool_reset_inactive(c->p) == AV_K); /* N -> N, K moved at once */
        lockstep(c);
        if (c->lockstep > 0)
            c->lockstep--;
    }
out:
    atomic_store(&c->done, 1);
    sem_post(&c->sample_req);
    return NULL;
}

static void check_sample(kvb_pool *p, unsigned *seen)
{
    uint32_t a = kvb_pool_available(p);
    cr_assert(a == AV_N || a == AV_N - AV_K, "torn available: %u", a);
    seen[a == AV_N]++;
    kvb_stats s = stats(p);
    uint32_t held = s.mutable_ + s.staged + s.primary + s.duplicate;
    cr_assert_eq(s.reset + s.inactive + held, AV_N, "torn stats");
    cr_assert(held == 0 || held == AV_K, "held %u", held);
    cr_assert(s.inactive == 0 || s.inactive == AV_K, "inactive %u", s.inactive);
    cr_assert(s.primary == 0 || s.primary == AV_K, "primary %u", s.primary);
}

Test(race2, available_never_torn)
{
    kvb_pool *p = tu_pool(AV_N, KVB_EVICT_LRU);
    struct churn c = {.p = p, .lockstep = 4};
    sem_init(&c.sample_req, 0, 0);
    sem_init(&c.sample_done, 0, 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, churner, &c), 0);
    unsigned seen[2] = {0, 0}, samples = 0;
    /* lockstep: one sample after every phase of the first cycles */
    for (int i = 0; i < 4 * 5; i++) {
        sem_wait(&c.sample_req);
        if (atomic_load(&c.done)) {
            sem_post(&c.sample_req); /* the final post, consumed below */
            break;
        }
        check_sample(p, seen);
        sem_post(&c.sample_done);
    }
    cr_expect_gt(seen[0], 0);
    cr_expect_gt(seen[1], 0);
    /* free running: sample as fast as possible while the churner runs */
    while (!atomic_load(&c.done)) {
        check_sample(p, seen);
        samples++;
    }
    sem_wait(&c.sample_req);
    pthread_join(t, NULL);
    cr_assert_eq(c.failed_line, 0, "the churner failed at line %d", c.failed_line);
    cr_log_info("available: %u samples, %u at N, %u at N-K", samples, seen[1], seen[0]);
    sem_destroy(&c.sample_req);
    sem_destroy(&c.sample_done);
    tu_finish(p);
}

/* ---- the lock-order check ------------------------------------------------------------ */

/* A backend that breaks its contract: it calls into the registry from insert,
 * which the pool calls with its lock held. */
static kvb_registry *lo_reg;
static kvb_pool *lo_pool;
static atomic_int lo_call_registry;

static int lo_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    if (atomic_load(&lo_call_registry) && lo_pool)
        (void)kvb_registry_present(lo_reg, &hash, 1, lo_pool, NULL); /* inversion */
    return kvb_inactive_lru.insert(self, hash, id, arrival);
}

static kvb_inactive_ops lo_ops;

static kvb_pool *lock_order_pool(void)
{
    lo_ops = kvb_inactive_lru;
    lo_ops.name = "lru-calls-registry";
    lo_ops.insert = lo_insert;
    cr_assert_eq(kvb_registry_create(NULL, &lo_reg), 0);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    cfg.registry = lo_reg;
    cfg.evict_ops = &lo_ops;
    lo_pool = tu_pool_cfg(&cfg);
    return lo_pool;
}

Test(race2, lock_order_check_fires_on_registry_under_pool_lock, .signal = SIGABRT)
{
    kvb_pool *p = lock_order_pool();
    kvb_block b = put1(p, tu_hash(1));
    atomic_store(&lo_call_registry, 1);
    kvb_block_release(&b); /* PRIMARY -> INACTIVE calls insert under the pool lock */
    cr_assert_fail("the debug lock-order assertion did not fire");
}

Test(race2, lock_order_check_quiet_without_the_inversion)
{
    kvb_pool *p = lock_order_pool();
    kvb_block b = put1(p, tu_hash(1));
    atomic_store(&lo_call_registry, 0);
    cr_expect_eq(kvb_block_release(&b), 0);
    /* the same registry call from the test thread (no pool lock held) is fine */
    kvb_hash h = tu_hash(1);
    cr_expect_eq(kvb_registry_present(lo_reg, &h, 1, p, NULL), 1);
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(lo_reg), 0);
}
