/*
 * test_race_registry.c - the registry's lock against the pools', made
 * deterministic.
 *
 *  - eviction vs re-registration: the evicting thread's "absent" presence update
 *    is delivered after the re-registering thread's "present" (the late absent
 *    must not erase the fresh present: presence is a counter). A
 *    pthread_mutex_lock interposer parks the evicting thread right before it
 *    takes the registry mutex; it is defined here, in its own test program, and
 *    armed per thread only;
 *  - the lock-order check of debug builds fires on a deliberate inversion (a
 *    backend that calls into the registry while the pool lock is held) and stays
 *    quiet without it.
 * No sleeps: semaphores order the threads.
 */
#include "testutil.h"
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>

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

Test(race_registry, eviction_vs_reregistration_late_absent_keeps_presence)
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
    kvb_block b = tu_put1(p, h);
    kvb_block_release(&b);
    cr_assert(tu_present(r, p, h), "cached content is present");

    /* E: allocate both blocks: evicts h (pool says gone), parks before "absent" */
    struct evictor e = {.p = p, .n = 2};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, evict_parked, &e), 0);
    sem_wait(&lk_parked);
    kvb_stats s = tu_stats(p);
    cr_expect_eq(s.evictions, 1, "the eviction happened in the pool");
    cr_expect(tu_present(r, p, h), "its absent update is not delivered yet");

    /* R (this thread): h registered again, in a block E gives back */
    kvb_mutable back = e.m[1];
    kvb_complete c;
    cr_assert_eq(kvb_mutable_stage(&back, h, &c), 0);
    cr_assert_eq(kvb_pool_register(p, &c, 1, &b), 0);
    cr_expect(tu_present(r, p, h), "present after the re-registration (count 2)");

    /* now the late "absent" of the eviction arrives */
    sem_post(&lk_go);
    pthread_join(t, NULL);
    cr_assert_eq(e.rc, 0);
    cr_assert_eq(e.nev, 1);
    cr_expect(kvb_hash_equal(e.ev[0], h));
    cr_expect(tu_present(r, p, h), "a late absent must not erase a fresh present");
    kvb_block got;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &got), 1, "and the pool agrees");
    kvb_block_release(&got);

    kvb_block_release(&b);
    cr_assert_eq(kvb_mutable_release(&e.m[0]), 0);
    cr_expect_eq(kvb_pool_reset_inactive(p), 1);
    cr_expect_not(tu_present(r, p, h), "gone after the drain");
    sem_destroy(&lk_parked);
    sem_destroy(&lk_go);
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(r), 0);
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

Test(race_registry, lock_order_check_fires_on_registry_under_pool_lock, .signal = SIGABRT)
{
    kvb_pool *p = lock_order_pool();
    kvb_block b = tu_put1(p, tu_hash(1));
    atomic_store(&lo_call_registry, 1);
    kvb_block_release(&b); /* PRIMARY -> INACTIVE calls insert under the pool lock */
    cr_assert_fail("the debug lock-order assertion did not fire");
}

Test(race_registry, lock_order_check_quiet_without_the_inversion)
{
    kvb_pool *p = lock_order_pool();
    kvb_block b = tu_put1(p, tu_hash(1));
    atomic_store(&lo_call_registry, 0);
    cr_expect_eq(kvb_block_release(&b), 0);
    /* the same registry call from the test thread (no pool lock held) is fine */
    kvb_hash h = tu_hash(1);
    cr_expect_eq(kvb_registry_present(lo_reg, &h, 1, p, NULL), 1);
    tu_finish(p);
    cr_expect_eq(kvb_registry_destroy(lo_reg), 0);
}
