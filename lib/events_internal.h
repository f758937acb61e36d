/*
 * events_internal.h - the seam between the pool and the event module (private).
 *
 * The pool queues one record per block-level event (kind KVB_CB_STORED /
 * KVB_CB_REMOVED / KVB_CB_CLEARED in its deferred-callback queue) with a
 * sequence number taken under the pool lock, and hands the records to
 * kvb__events_deliver() after the lock is dropped. Everything else (emission
 * policy, coalescing into kvb_event batches, ordering across threads, batching
 * by count and time, the sink call) lives in events.c.
 */
#ifndef KVB_EVENTS_INTERNAL_H
#define KVB_EVENTS_INTERNAL_H

#include "pool.h"

/* Per-pool event state; NULL when the pool has no sink. 0, -EINVAL, -ENOMEM. */
int kvb__events_create(const kvb_event_config *cfg, const kvb_allocator *a,
                       struct kvb_events **out);
void kvb__events_destroy(struct kvb_events *ev);
/* Called without the pool lock, with the records of one public call, in
 * sequence order (records of other kinds are ignored). */
void kvb__events_deliver(kvb_pool *p, const struct kvb_cb_ev *recs, uint32_t n);
/* Deliver anything held back by batching (pool destroy, explicit flush). */
void kvb__events_flush(kvb_pool *p);

#endif
