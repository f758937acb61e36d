/*
 * pool_victims.c - the victims of an allocation beyond the eviction backend's,
 * and the way back when an allocation fails after taking some.
 *
 * kvb_pool_allocate (pool.c) takes victims in this order: blocks below the
 * default retention priority (their level lists, prio.h), the backend's blocks in
 * policy order, blocks above the default (lists), and last the blocks lookahead
 * hints set apart (the hint heap, hint.h). The lists are walked here; the backend
 * loop and the hint heap stay in pool.c's hot path.
 */
#include "pool.h"
#include "pool_index.h"

/* Victims from the priority lists of levels lo..hi, lowest level first, least
 * recently released first; appended to out[*got..need). */
void kvb__evict_lists_locked(kvb_pool *p, uint32_t lo, uint32_t hi, struct kvb_ids out,
                             uint32_t *got, uint32_t need, bool filter)
{
    while (*got < need) {
        int l = kvb__prio_lowest(p->prio, lo, hi);
        if (l < 0)
            return;
        uint32_t id = kvb__prio_pop(p->prio, (uint32_t)l);
        struct kvb_slot *s = &p->slots[id];
        s->flags &= (uint8_t)~KVB_F_LISTED;
        if (filter && kvb__set_apart_locked(p, id))
            continue;
        s->flags |= KVB_F_MARK;
        kvb__index_prefetch(&p->ix, s->hash);
        *kvb__ids_aux(out, *got) = KVB_NONE;
        *kvb__ids_at(out, (*got)++) = id;
    }
}

/* Roll back a failed allocation (only a backend that breaks its contract gets
 * here; kvblock/inactive.h, "What a failed allocation restores", is the promise
 * this keeps): list blocks go back to the heads of their lists, backend victims
 * back to the backend (exactly, through unevict when the backend has it and none
 * of its victims was set apart during the call: the entries of one evict call are
 * then not all in out[] and unevict could not take them back as one; re-inserting
 * them is the fallback, exact in set but not in order), heap blocks back into the
 * heap, and popped free slots back to the free-list head in reverse order, so the
 * free list is as it was. Blocks set apart by hints on the way stay set apart
 * (still cached, still hinted). */
void kvb__alloc_rollback_locked(kvb_pool *p, struct kvb_ids out, uint32_t taken,
                                const struct kvb_victims *v)
{
    for (uint32_t j = v->all; j-- > v->high;) {
        uint32_t id = *kvb__ids_at(out, taken + j);
        kvb__hints_push(p->hints, id, kvb__hints_find(p->hints, p->slots[id].hash));
        p->slots[id].flags |= KVB_F_HINTED;
        p->c.hint_evictions--;
    }
    for (uint32_t j = v->high; j-- > v->backend;) {
        kvb__prio_push_front(p->prio, *kvb__ids_at(out, taken + j));
        p->slots[*kvb__ids_at(out, taken + j)].flags |= KVB_F_LISTED;
    }
    /* Chunks of 64 (the stack buffers), last chunk first: each unevict puts its
     * entries back at the eviction end, so the earliest evicted must go back last. */
    const uint32_t chunk = 64, base = taken + v->low;
    for (uint32_t end = v->backend - v->low; end > 0;) {
        uint32_t start = (end - 1) / chunk * chunk, k = end - start; /* as evict returned them */
        uint32_t ids[64], arr[64];
        kvb_hash hs[64];
        for (uint32_t j = 0; j < k; j++) {
            ids[j] = *kvb__ids_at(out, base + start + j);
            hs[j] = p->slots[ids[j]].hash;
            arr[j] = p->slots[ids[j]].aux;
        }
        if (p->ops->unevict && !v->diverted_b) {
            p->ops->unevict(p->backend, ids, hs, arr, k);
        } else {
            for (uint32_t j = k; j-- > 0;)
                (void)p->ops->insert(p->backend, hs[j], ids[j], arr[j]);
        }
        end = start;
    }
    for (uint32_t j = v->low; j-- > 0;) {
        kvb__prio_push_front(p->prio, *kvb__ids_at(out, taken + j));
        p->slots[*kvb__ids_at(out, taken + j)].flags |= KVB_F_LISTED;
    }
    for (uint32_t j = taken; j-- > 0;)
        kvb__free_push_head(p, *kvb__ids_at(out, j));
    p->c.allocate_rollbacks++;
}
