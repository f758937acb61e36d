/*
 * defer.c - the out-of-line half of the deferred-callback queue (defer.h): growing
 * a queue for a large batch, delivering it after unlock, freeing it.
 */
#include "defer.h"
#include "events_internal.h"
#include "registry_internal.h"

int kvb__cbq_grow(struct kvb_cbq *q, uint64_t bound)
{
    if (bound > UINT32_MAX)
        return -ENOMEM;
    struct kvb_cb_ev *ev = kvb__alloc(q->s->alloc, (size_t)bound * sizeof *ev);
    if (!ev)
        return -ENOMEM;
    q->ev = ev;
    q->cap = (uint32_t)bound;
    q->heap = true;
    return 0;
}

void kvb__cbq_fire(struct kvb_cbq *q)
{
    const struct kvb_sinks *s = q->s;
    if (s->registry) {
        kvb_hash hs[64];
        int8_t d[64];
        uint32_t k = 0;
        for (uint32_t i = 0; i < q->n; i++) {
            const struct kvb_cb_ev *e = &q->ev[i];
            if (e->kind != KVB_CB_PRESENT && e->kind != KVB_CB_ABSENT)
                continue;
            hs[k] = e->hash;
            d[k++] = e->kind == KVB_CB_PRESENT ? 1 : -1;
            if (k == 64) {
                kvb__registry_presence(s->registry, s->reg_index, hs, d, k);
                k = 0;
            }
        }
        if (k)
            kvb__registry_presence(s->registry, s->reg_index, hs, d, k);
    }
    if (s->events)
        kvb__events_deliver(s->events, s->pool, q->ev, q->n);
    if (s->cb.on_reset || s->cb.on_evict) /* (a pool with only an event sink skips the scan) */
        for (uint32_t i = 0; i < q->n; i++) {
            const struct kvb_cb_ev *e = &q->ev[i];
            if (e->kind == KVB_CB_RESET && s->cb.on_reset)
                s->cb.on_reset(s->cb.user, e->id);
            else if (e->kind == KVB_CB_EVICT && s->cb.on_evict)
                s->cb.on_evict(s->cb.user, e->hash, e->id);
        }
    q->n = 0;
}

void kvb__cbq_free(struct kvb_cbq *q)
{
    kvb__free(q->s->alloc, q->ev, (size_t)q->cap * sizeof *q->ev);
    q->ev = q->local;
    q->cap = KVB_CBQ_LOCAL;
    q->heap = false;
}
