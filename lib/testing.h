/*
 * testing.h - test-only hooks, compiled only into builds with -DKVB_TESTING
 * (the library the tests and stress programs link: build/libkvblock_test.a).
 * The installed library has none of this.
 */
#ifndef KVB_TESTING_H
#define KVB_TESTING_H

#include "kvblock.h"

#ifdef KVB_TESTING
/*
 * Called by a last release after its atomic decrement reached zero and before
 * it takes the pool lock: a test can park the releasing thread there and run
 * a lookup in the window (the eager-transition race), deterministically.
 * Process-wide; set it to NULL to remove. arg is passed through.
 */
typedef void (*kvb_test_hook_fn)(void *arg, kvb_pool *pool, uint32_t block_id);
void kvb__test_set_last_release_hook(kvb_test_hook_fn fn, void *arg);

/* Cap the hash index's packed displacement field for pools created afterwards
 * (0 = no cap), so tests reach the "saturated, recompute from the hash" path
 * that only pools of 2^29+ blocks meet naturally. */
void kvb__test_set_map_disp_max(uint32_t max);

/* The generation a slot currently has (to build stale handles in tests). */
uint32_t kvb__test_slot_gen(kvb_pool *pool, uint32_t block_id);
/* Raw state (enum kvb_state) of a slot, read under the lock. */
int kvb__test_slot_state(kvb_pool *pool, uint32_t block_id);
/* Force a slot's reference count (refcount-overflow tests); under the lock. */
void kvb__test_set_refcount(kvb_pool *pool, uint32_t block_id, uint32_t rc);
#endif

#endif /* KVB_TESTING_H */
