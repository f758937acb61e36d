/*
 * pool_drain.c - kvb_pool_reset_inactive: every cached (INACTIVE) block goes back
 * to the free list, in eviction order (the backend's, lowest retention priority
 * first in a pool with priorities, then the blocks hints set apart), with the
 * callbacks of an eviction followed by a reset. Blocks in use (mutable, staged, primary,
 * duplicate) are left alone: a runtime can flush its prefix cache while requests
 * run, and the blocks they hold stay findable and are cached again when released.
 *
 * Events: when no primary stays behind, the cached-or-active set is empty after
 * the drain and one CLEARED record says so (a consumer empties its set); while
 * primaries stay, CLEARED would make consumers forget them, so each drained
 * block gets a REMOVED record instead, as an eviction does.
 */
#include "pool.h"

/* Records a drain of the cache may queue (lock held): on_evict, on_reset and a
 * presence update per block; a REMOVED event per block while primaries stay,
 * else one CLEARED. */
static uint64_t kvb_drain_bound(const kvb_pool *p)
{
    uint64_t per = p->sinks.events && p->count[KVB_S_PRIMARY] ? 4 : 3;
    return per * p->count[KVB_S_INACTIVE] + 1;
}

int kvb_pool_reset_inactive(kvb_pool *p)
{
    if (!p)
        return -EINVAL;
    for (;;) {
        kvb__pool_lock(p);
        uint64_t bound = kvb_drain_bound(p);
        kvb__pool_unlock(p);
        struct kvb_cbq q;
        kvb__cbq_init(&q, &p->sinks);
        int rc = kvb__cbq_reserve(&q, bound);
        if (rc)
            return rc;
        kvb__pool_lock(p);
        if (q.active && kvb_drain_bound(p) > q.cap) {
            kvb__pool_unlock(p); /* the cache grew meanwhile: size again */
            kvb__cbq_fini(&q);
            continue;
        }
        bool cleared = p->count[KVB_S_PRIMARY] == 0; /* nothing cached-or-active stays */
        uint32_t drained = 0;
        while (p->count[KVB_S_INACTIVE]) {
            /* in eviction order: the levels (or the backend alone), then the blocks
             * kept apart by hints */
            uint32_t ids[64], k = 0;
            bool own = false; /* validated here, or from the pool's heap */
            if (p->prio) {
                struct {
                    uint32_t id, aux;
                } v[64];
                bool bad = false;
                kvb__evict_levels_locked(p, KVB_IDS(v), &k, 64, false, &bad);
                for (uint32_t j = 0; j < k; j++) {
                    ids[j] = v[j].id;
                    p->slots[ids[j]].flags &= (uint8_t)~KVB_F_MARK;
                }
                own = true;
            } else {
                k = p->ops->evict(p->backend, 64, ids);
                if (k > 64)
                    k = 64;
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
                if (!cleared)
                    kvb__cbq_event(&q, &p->ev_seq, KVB_CB_REMOVED, id, h);
                p->c.evictions++;
                drained++;
            }
        }
        if (drained && cleared)
            kvb__cbq_event(&q, &p->ev_seq, KVB_CB_CLEARED, KVB_NONE, (kvb_hash){0, 0});
        kvb__pool_unlock_fire(p, &q);
        return (int)drained;
    }
}
