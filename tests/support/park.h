/*
 * support/park.h - park the last release of a block in its window.
 *
 * A last release drops its atomic count to zero, then takes the pool lock to
 * move the block (PRIMARY -> INACTIVE or RESET, DUPLICATE -> RESET). Between the
 * two, other threads may find the block (a lookup then performs the move
 * eagerly and the late release becomes a no-op). tu_park_last_release starts a
 * thread that releases the block and parks it right there, through the
 * KVB_TESTING hook kvb__test_set_last_release_hook, and returns once it is
 * parked; the test runs whatever races the release, then tu_unpark lets it
 * finish. No sleeps: two semaphores order the threads.
 *
 * Only that one release parks: the hook is removed as soon as it has, so the
 * test's own releases in the window run through. Needs a library built with
 * -DKVB_TESTING (libkvblock_test.a). Criterion-free.
 */
#ifndef KVB_TEST_SUPPORT_PARK_H
#define KVB_TEST_SUPPORT_PARK_H

#include "kvblock.h"
#include <pthread.h>
#include <semaphore.h>

typedef struct tu_park {
    sem_t reached; /* posted by the releaser when parked in the window */
    sem_t go;      /* posted by tu_unpark to let it continue */
    kvb_block b;   /* the block whose last reference is released */
    int rc;        /* kvb_block_release's result, once unparked */
    pthread_t t;
} tu_park;

/* Release b (its last reference) on a new thread and return once that thread is
 * parked in the window: 0, or an errno value when the thread could not start. */
int tu_park_last_release(tu_park *pk, kvb_block b);

/* Let the parked release finish and join its thread; returns the release's result. */
int tu_unpark(tu_park *pk);

#endif /* KVB_TEST_SUPPORT_PARK_H */
