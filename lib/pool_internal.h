/*
 * pool_internal.h - what library modules outside the pool (events.c, seq.c) get
 * from a pool. The pool's layout (pool.h) stays with the pool's own files; these
 * accessors and the public kvb_pool_* functions are the whole seam.
 */
#ifndef KVB_POOL_INTERNAL_H
#define KVB_POOL_INTERNAL_H

#include "internal.h"

struct kvb_events;

/* The pool's event module state; NULL when it has no event sink. (const) */
struct kvb_events *kvb__pool_events(const kvb_pool *p);
/* The pool's allocator hook (defaults filled in): what its satellites (sequences)
 * allocate through. (const; valid while the pool lives) */
const kvb_allocator *kvb__pool_allocator(const kvb_pool *p);

#endif /* KVB_POOL_INTERNAL_H */
