/*
 * defer.h - the pool's deferred-callback queue (private): what a call learns
 * under the pool lock that somebody outside must hear about (on_reset, on_evict,
 * registry presence, event records) is queued under the lock and delivered by
 * the calling thread after unlock, in order. No user callback, registry lock or
 * event sink ever runs under a pool lock (CONVENTIONS.md, Concurrency).
 *
 * Storage. A queue lives on the caller's stack with room for KVB_CBQ_LOCAL
 * records; a batch call that may queue more reserves `bound` records before it
 * takes the lock (kvb__cbq_reserve, through the pool's allocator), so no call can
 * fail half-way for lack of queue room. A pool with no callback, no registry and
 * no event sink has an inactive queue: pushes are dropped and nothing is fired.
 *
 * Delivery order (kvb__cbq_fire): registry presence updates first, in batches of
 * 64 per registry lock, so that a callback asking the registry sees the state
 * this call produced; then the event records, handed to the event module (which
 * numbers and batches them, events_internal.h); then on_reset / on_evict, in
 * queue order.
 */
#ifndef KVB_DEFER_H
#define KVB_DEFER_H

#include "internal.h"

struct kvb_events;

enum kvb_cb_kind {
    KVB_CB_RESET = 1, /* on_reset */
    KVB_CB_EVICT,     /* on_evict */
    KVB_CB_PRESENT,   /* registry presence +1 */
    KVB_CB_ABSENT,    /* registry presence -1 */
    KVB_CB_STORED,    /* event: new primary (seq set) */
    KVB_CB_REMOVED,   /* event: cached/primary content dropped (seq set) */
    KVB_CB_CLEARED    /* event: cache drained (seq set) */
};

struct kvb_cb_ev {
    kvb_hash hash;
    uint32_t id;
    uint32_t kind;
    uint64_t seq; /* event records only: the pool's event sequence number */
};

/* Where one pool's queued records go. (const) after kvb_pool_create. */
struct kvb_sinks {
    kvb_callbacks cb;           /* on_reset / on_evict */
    kvb_registry *registry;     /* presence updates; NULL: none */
    uint32_t reg_index;         /* the pool's presence index in the registry */
    struct kvb_events *events;  /* event records; NULL: no sink */
    kvb_pool *pool;             /* the owner, handed to the event module */
    const kvb_allocator *alloc; /* queue storage beyond the local buffer */
};

#define KVB_CBQ_LOCAL 32
struct kvb_cbq {
    const struct kvb_sinks *s;
    struct kvb_cb_ev *ev;
    uint32_t n, cap;
    bool heap;
    bool active; /* false: the pool has no callbacks, pushes are dropped */
    struct kvb_cb_ev local[KVB_CBQ_LOCAL];
};

static inline bool kvb__sinks_any(const struct kvb_sinks *s)
{
    return s->cb.on_reset || s->cb.on_evict || s->registry || s->events;
}

static inline void kvb__cbq_init(struct kvb_cbq *q, const struct kvb_sinks *s)
{
    q->s = s;
    q->ev = q->local;
    q->n = 0;
    q->cap = KVB_CBQ_LOCAL;
    q->heap = false;
    q->active = kvb__sinks_any(s);
}

int kvb__cbq_grow(struct kvb_cbq *q, uint64_t bound);

/* Make room for `bound` records before the lock is taken: 0 or -ENOMEM. */
static inline int kvb__cbq_reserve(struct kvb_cbq *q, uint64_t bound)
{
    if (!q->active || bound <= q->cap)
        return 0;
    return kvb__cbq_grow(q, bound);
}

static inline void kvb__cbq_push(struct kvb_cbq *q, uint32_t kind, uint32_t id, kvb_hash h)
{
    if (!q->active)
        return;
    kvb_assert(q->n < q->cap);
    if (q->n < q->cap)
        q->ev[q->n++] = (struct kvb_cb_ev){.hash = h, .id = id, .kind = kind};
}

/* Fewer than `room` free records (a long call flushes and starts again). */
static inline bool kvb__cbq_full(const struct kvb_cbq *q, uint32_t room)
{
    return q->active && q->cap - q->n < room;
}

/* An event record, numbered with ++*seq (the pool's event sequence, under its
 * lock: DESIGN.md section 7). Nothing without an event sink. */
static inline void kvb__cbq_event(struct kvb_cbq *q, uint64_t *seq, uint32_t kind, uint32_t id,
                                  kvb_hash h)
{
    if (!q->active || !q->s->events) /* (inactive: no sink; the queue's own flag first) */
        return;
    kvb_assert(q->n < q->cap);
    if (q->n < q->cap)
        q->ev[q->n++] = (struct kvb_cb_ev){.hash = h, .id = id, .kind = kind, .seq = ++*seq};
}

/* A registry presence update (+1 up, -1 down), queued like callbacks. */
static inline void kvb__cbq_presence(struct kvb_cbq *q, kvb_hash h, bool up)
{
    if (q->active && q->s->registry)
        kvb__cbq_push(q, up ? KVB_CB_PRESENT : KVB_CB_ABSENT, 0, h);
}

/* Deliver the queued records (no pool lock held), in the order above, and empty
 * the queue. With an event sink the event module is called even for an empty
 * queue (its test hook sees every call). */
void kvb__cbq_fire(struct kvb_cbq *q);

void kvb__cbq_free(struct kvb_cbq *q);

/* Give back storage kvb__cbq_reserve took (after fire, or instead of it when the
 * call failed before queueing anything). */
static inline void kvb__cbq_fini(struct kvb_cbq *q)
{
    if (kvb_unlikely(q->heap))
        kvb__cbq_free(q);
}

#endif /* KVB_DEFER_H */
