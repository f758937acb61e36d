/*
 * pool_drain.c - kvb_pool_reset_inactive: every cached (INACTIVE) block goes back
 * to the free list, in eviction order (below the default priority, the backend,
 * above the default, then the blocks hints set apart), with the callbacks and
 * event records of an eviction followed by a reset.
 */
#include "pool.h"

int kvb_pool_reset_inactive(kvb_pool *p)
{
    if (!p)
        return -EINVAL;
    for (;;) {
        kvb__pool_lock(p);
        uint32_t held = p->count[KVB_S_MUTABLE] + p->count[KVB_S_STAGED] + p->count[KVB_S_PRIMARY] +
                        p->count[KVB_S_DUPLICATE];
        uint32_t len = p->count[KVB_S_INACTIVE];
        kvb__pool_unlock(p);
        if (held)
            return -EBUSY;
        struct kvb_cbq q;
        kvb__cbq_init(&q, &p->sinks);
        int rc = kvb__cbq_reserve(&q, 3ull * len + 1);
        if (rc)
            return rc;
        kvb__pool_lock(p);
        held = p->count[KVB_S_MUTABLE] + p->count[KVB_S_STAGED] + p->count[KVB_S_PRIMARY] +
               p->count[KVB_S_DUPLICATE];
        if (held) {
            kvb__pool_unlock(p);
            kvb__cbq_fini(&q);
            return -EBUSY;
        }
        if (q.active && p->count[KVB_S_INACTIVE] * 3ull + 1 > q.cap) {
            kvb__pool_unlock(p); /* the cache grew meanwhile: size again */
            kvb__cbq_fini(&q);
            continue;
        }
        uint32_t drained = 0;
        while (p->count[KVB_S_INACTIVE]) {
            /* in eviction order: below the default priority, the backend, above the
             * default, then the blocks kept apart by hints */
            uint32_t ids[64], k = 0;
            bool own = false; /* from the pool's lists or heap, not the backend */
            int l;
            while (k < 64 && p->prio &&
                   (l = kvb__prio_lowest(p->prio, 0, KVB_PRIORITY_DEFAULT - 1)) >= 0)
                ids[k++] = kvb__prio_pop(p->prio, (uint32_t)l);
            if (k == 0) {
                k = p->ops->evict(p->backend, 64, ids);
                if (k > 64)
                    k = 64;
            } else {
                own = true;
            }
            if (k == 0 && p->prio && p->prio->listed) {
                while (k < 64 && (l = kvb__prio_lowest(p->prio, KVB_PRIORITY_DEFAULT + 1,
                                                       KVB_PRIORITY_MAX)) >= 0)
                    ids[k++] = kvb__prio_pop(p->prio, (uint32_t)l);
                own = true;
            }
            if (k == 0 && p->hints) {
                while (k < 64 && p->hints->heap_len)
                    ids[k++] = kvb__hints_pop(p->hints);
                own = true;
            }
            if (k == 0)
                break; /* backend disagrees with the gauge: kvb_pool_check reports it */
            for (uint32_t j = 0; j < k; j++) {
                uint32_t id = ids[j];
                if (id >= p->block_count || p->slots[id].state != KVB_S_INACTIVE ||
                    (!own && (p->slots[id].flags & (KVB_F_HINTED | KVB_F_LISTED))))
                    continue;
                kvb_hash h = p->slots[id].hash;
                kvb__pool_transition_locked(p, id, KVB_S_INACTIVE, KVB_S_RESET, 0);
                kvb__cbq_push(&q, KVB_CB_EVICT, id, h);
                kvb__cbq_push(&q, KVB_CB_RESET, id, h);
                kvb__cbq_presence(&q, h, false);
                p->c.evictions++;
                drained++;
            }
        }
        if (drained)
            kvb__cbq_event(&q, &p->ev_seq, KVB_CB_CLEARED, KVB_NONE, (kvb_hash){0, 0});
        kvb__pool_unlock_fire(p, &q);
        return (int)drained;
    }
}
