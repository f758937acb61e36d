/*
 * pool_victims.c - the victims of an allocation beyond the eviction backend's,
 * and the way back when an allocation fails after taking some.
 *
 * kvb_pool_allocate (pool.c) takes victims in this order: a pool with retention
 * priorities the lowest level first, in the policy's order within a level (the
 * backend's victims and the set-apart lists, prio.h, here); a pool without them
 * the backend's blocks in policy order (that loop stays in pool_sm.h's hot path);
 * last the blocks lookahead hints set apart (the hint heap, hint.h).
 */
#include "pool_sm.h"

void kvb__evict_levels_locked(kvb_pool *p, struct kvb_ids out, uint32_t *got, uint32_t need,
                              bool filter, bool *bad)
{
    struct kvb_prio *pr = p->prio;
    kvb__prio_sync_default(pr, p->ops->len(p->backend));
    while (*got < need && !*bad) {
        int l = kvb__prio_lowest_cached(pr);
        if (l < 0)
            return;       /* only hinted blocks are left, if any */
        if (pr->len[l]) { /* set apart earlier: ahead of the backend's in its order */
            uint32_t id = kvb__prio_pop(pr, (uint32_t)l);
            p->slots[id].flags &= (uint8_t)~KVB_F_LISTED;
            if (filter && kvb__set_apart_locked(p, id))
                continue;
            kvb__victim_take(p, out, got, id, false);
            continue;
        }
        /* the backend's next victims, as many as are still needed: each is taken
         * when its level is the lowest cached one and no block of that level waits
         * in a list, else set apart at the tail of its level's list */
        uint32_t ids[64];
        uint32_t want = need - *got < 64 ? need - *got : 64;
        uint32_t k = p->ops->evict(p->backend, want, ids);
        if (k > want)
            k = want, *bad = true;
        if (k == 0)
            *bad = true; /* the counts say it holds level l's blocks */
        for (uint32_t j = 0; j < k; j++) {
            uint32_t id = ids[j];
            if (!kvb__victim_ok(p, id)) {
                *bad = true;
                continue;
            }
            uint32_t lv = pr->level[id]; /* (still counted: the lowest may be its own) */
            bool first = (int)lv == kvb__prio_lowest_cached(pr) && pr->len[lv] == 0;
            kvb__prio_evicted(pr, id);
            if (filter && kvb__set_apart_locked(p, id))
                continue;
            if (first) {
                kvb__victim_take(p, out, got, id, true);
            } else {
                kvb__prio_push(pr, id);
                p->slots[id].flags |= KVB_F_LISTED;
            }
        }
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
 * free list is as it was. Blocks set apart by hints or priority levels on the way
 * stay set apart (still cached). In a pool with priorities the backend's victims
 * are re-inserted (exact in set, not in order). */
void kvb__alloc_rollback_locked(kvb_pool *p, struct kvb_ids out, uint32_t taken,
                                const struct kvb_victims *v)
{
    for (uint32_t j = v->all; j-- > v->ordered;) {
        uint32_t id = *kvb__ids_at(out, taken + j);
        kvb__hints_push(p->hints, id, kvb__hints_find(p->hints, p->slots[id].hash));
        p->slots[id].flags |= KVB_F_HINTED;
        p->c.hint_evictions--;
    }
    if (v->mixed) {
        for (uint32_t j = v->ordered; j-- > 0;) {
            uint32_t id = *kvb__ids_at(out, taken + j);
            if (*kvb__ids_aux(out, taken + j) != KVB_NONE) {
                kvb__place_locked(p, id); /* from the backend: back in, as released now */
            } else {
                kvb__prio_push_front(p->prio, id);
                p->slots[id].flags |= KVB_F_LISTED;
            }
        }
    }
    /* Chunks of 64 (the stack buffers), last chunk first: each unevict puts its
     * entries back at the eviction end, so the earliest evicted must go back last. */
    const uint32_t chunk = 64;
    for (uint32_t end = v->mixed ? 0 : v->ordered; end > 0;) {
        uint32_t start = (end - 1) / chunk * chunk, k = end - start; /* as evict returned them */
        uint32_t ids[64], arr[64];
        kvb_hash hs[64];
        for (uint32_t j = 0; j < k; j++) {
            ids[j] = *kvb__ids_at(out, taken + start + j);
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
    for (uint32_t j = taken; j-- > 0;)
        kvb__free_push_head(p, *kvb__ids_at(out, j));
    p->c.allocate_rollbacks++;
}
