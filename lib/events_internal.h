/*
 * events_internal.h - the seam between the pool and the event module (private).
 *
 * The pool queues one record per block-level event (kind KVB_CB_STORED /
 * KVB_CB_REMOVED / KVB_CB_CLEARED in its deferred-callback queue, defer.h) with
 * a sequence number taken under the pool lock (the pool's ev_seq: 1, 2, 3, ...
 * with no gap, in the pool's history order), and the queue hands the records to
 * kvb__events_deliver() after the lock is dropped. Everything else (emission
 * policy, coalescing into kvb_event batches, ordering across threads, batching
 * by count and time, the sink call) lives in events.c.
 *
 * Contract the pool keeps: every record numbered is handed to
 * kvb__events_deliver() exactly once (a call that numbers records never fails
 * afterwards), by the thread that numbered it, with no pool lock held. The
 * event module relies on it: a record never handed over would hold back every
 * later one.
 */
#ifndef KVB_EVENTS_INTERNAL_H
#define KVB_EVENTS_INTERNAL_H

#include "defer.h"

/* Per-pool event state (of a pool of block_count blocks of block_size tokens);
 * created only for a pool with a sink. 0, -EINVAL, -ENOMEM. */
int kvb__events_create(const kvb_event_config *cfg, const kvb_allocator *a, uint32_t block_count,
                       uint32_t block_size, struct kvb_events **out);
/* Stops the timer thread (if any) and frees everything. Nothing may be
 * delivering (the pool is being destroyed). */
void kvb__events_destroy(struct kvb_events *ev);
/* Called without the pool lock, with the records of one critical section, in
 * sequence order (records of other kinds are ignored). May deliver records
 * other threads handed over, or return before its own are delivered (they are
 * then delivered by the thread that fills the gap before them). */
void kvb__events_deliver(struct kvb_events *ev, kvb_pool *p, const struct kvb_cb_ev *recs,
                         uint32_t n);
/* Deliver anything held back by batching (pool destroy, explicit flush). */
void kvb__events_flush(struct kvb_events *ev);

#ifdef KVB_TESTING
/* Called at the start of kvb__events_deliver with the first event record's
 * sequence number (0 when the call carries none), before any lock: a test can
 * park a thread there to make deliveries arrive out of order, deterministically.
 * Process-wide; NULL removes it. */
typedef void (*kvb_test_events_hook_fn)(void *arg, kvb_pool *pool, uint64_t first_seq);
void kvb__test_set_events_hook(kvb_test_events_hook_fn fn, void *arg);
#endif

#endif
