/*
 * support/fail_alloc.h - the fail-at-k allocator: a kvb_allocator that counts
 * and checks every call and fails exactly the k-th allocation after it is
 * armed. Tests walk k = 1, 2, ... over a create path or a batch call until the
 * call succeeds, and check at each k that the failure left nothing behind
 * (allocations == frees, bytes allocated == bytes freed, every free told the
 * size that was allocated).
 *
 * Each block carries a 16-byte header (its size and a marker), so a free with
 * another size, or of a pointer this allocator never handed out, is counted in
 * `mismatches` (such a pointer is not passed to free()). The counters are
 * protected by the mutex; a test reads them once the library is quiet.
 * Criterion-free: tests, torture programs and fuzz harnesses link it.
 */
#ifndef KVB_TEST_SUPPORT_FAIL_ALLOC_H
#define KVB_TEST_SUPPORT_FAIL_ALLOC_H

#include "kvblock.h"
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct tu_fa {
    pthread_mutex_t mu;
    long count;      /* allocation calls since tu_fa_arm (the failed ones included) */
    long fail_at;    /* the 1-based call that fails; 0: none */
    bool failed;     /* the armed failure happened */
    size_t max_size; /* larger requests fail (not counted as the armed failure); 0: no limit */
    long n_alloc;    /* successful allocations */
    long n_free;     /* frees of a non-NULL pointer */
    size_t bytes_alloc, bytes_free;
    long mismatches; /* frees with another size, or of a pointer not from here */
} tu_fa;

/* A static tu_fa: `static tu_fa FA = TU_FA_INITIALIZER(0);` */
#define TU_FA_INITIALIZER(max)                                                                     \
    {                                                                                              \
        .mu = PTHREAD_MUTEX_INITIALIZER, .max_size = (max)                                         \
    }

/* Initialise fa (mutex included): every counter 0, disarmed. */
void tu_fa_init(tu_fa *fa, size_t max_size);
/* Every counter back to 0, disarmed (max_size kept). */
void tu_fa_reset(tu_fa *fa);
/* Fail the k-th allocation from now (k >= 1), none when k == 0; count and failed
 * start again from 0. */
void tu_fa_arm(tu_fa *fa, long k);
/* The kvb_allocator that allocates through fa. */
kvb_allocator tu_fa_allocator(tu_fa *fa);
/* Bytes allocated and not freed. */
size_t tu_fa_live(tu_fa *fa);
/* Everything allocated was freed, with the right sizes. */
bool tu_fa_balanced(tu_fa *fa);

#endif /* KVB_TEST_SUPPORT_FAIL_ALLOC_H */
