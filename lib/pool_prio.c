/*
 * pool_prio.c - retention priorities and durations on a pool's blocks: the glue
 * between the pool's slots and the priority state (prio.h has the semantics and
 * the data structure). Cached blocks of every level wait in the eviction
 * backend, counted per level; the allocation takes them lowest level first and
 * sets others apart in level lists (pool_victims.c).
 *
 * Durations: a call that reads priorities first applies the durations that ran
 * out (kvb__expire_locked), reading the clock (a user callback) before taking
 * the lock and only when durations are pending.
 */
#include "pool.h"
#include "pool_index.h"
#include <time.h>

uint64_t kvb__pool_monotonic_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Content id's priority becomes `level`. A cached block in the backend keeps its
 * place (only its level's count moves); one set apart in a level list re-enters
 * the backend as a newly released block; one set apart by hints stays there. */
static void kvb_prio_relevel_locked(kvb_pool *p, uint32_t id, uint32_t level)
{
    struct kvb_slot *s = &p->slots[id];
    struct kvb_prio *pr = p->prio;
    bool in_backend = s->state == KVB_S_INACTIVE && !(s->flags & (KVB_F_HINTED | KVB_F_LISTED));
    bool listed = (s->flags & KVB_F_LISTED) != 0;
    if (pr->level[id] == level)
        return;
    if (in_backend)
        kvb__prio_out(pr, id);
    else if (listed)
        kvb__unplace_locked(p, id);
    pr->level[id] = (uint8_t)level;
    if (level != KVB_PRIORITY_DEFAULT)
        s->flags |= KVB_F_PRIO;
    else
        s->flags &= (uint8_t)~KVB_F_PRIO;
    if (in_backend)
        kvb__prio_in(pr, id);
    else if (listed)
        kvb__place_locked(p, id);
}

void kvb__expire_locked(kvb_pool *p, uint64_t now)
{
    uint32_t id;
    while ((id = kvb__prio_timer_due(p->prio, now)) != KVB_PRIO_NONE) {
        p->c.retention_expired++;
        kvb_prio_relevel_locked(p, id, KVB_PRIORITY_DEFAULT);
    }
}

/* Give content id (PRIMARY or INACTIVE) a priority, with a duration (0: none) from
 * `now` (kvb_prio_relevel_locked says where a cached block goes). Lock held. */
void kvb__set_priority_locked(kvb_pool *p, uint32_t id, uint32_t priority, uint32_t duration_ms,
                              uint64_t now)
{
    struct kvb_prio *pr = p->prio;
    kvb_assert(p->slots[id].state == KVB_S_PRIMARY || p->slots[id].state == KVB_S_INACTIVE);
    kvb_prio_relevel_locked(p, id, priority);
    if (duration_ms && priority != KVB_PRIORITY_DEFAULT)
        kvb__prio_timer_set(pr, id, now + duration_ms);
    else
        kvb__prio_timer_clear(pr, id);
}

int kvb_block_set_priority(const kvb_block *b, uint32_t priority, uint32_t duration_ms)
{
    if (!b || priority > KVB_PRIORITY_MAX)
        return -EINVAL;
    kvb_pool *p = b->pool;
    if (!p)
        return -ESTALE;
    if (!p->prio)
        return -ENOTSUP;
    if (b->id >= p->block_count)
        return kvb__pool_misuse(p, "kvb_block_set_priority");
    bool timed;
    uint64_t now = kvb__pool_clock_if(p, duration_ms != 0, &timed);
    kvb__pool_lock(p);
    if (timed)
        kvb__expire_locked(p, now);
    struct kvb_slot *s = &p->slots[b->id];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    if (kvb__word_gen(w) != b->gen || kvb__word_rc(w) == 0) {
        kvb__pool_unlock(p);
        return kvb__pool_misuse(p, "kvb_block_set_priority");
    }
    uint32_t id = s->state == KVB_S_DUPLICATE ? s->aux : b->id; /* the content's block */
    kvb__set_priority_locked(p, id, priority, duration_ms, now);
    kvb__pool_unlock(p);
    return 0;
}

int kvb_block_priority(const kvb_block *b)
{
    if (!b)
        return -EINVAL;
    kvb_pool *p = b->pool;
    if (!p)
        return -ESTALE;
    if (b->id >= p->block_count)
        return kvb__pool_misuse(p, "kvb_block_priority");
    bool timed;
    uint64_t now = kvb__pool_clock_if(p, false, &timed);
    kvb__pool_lock(p);
    if (timed)
        kvb__expire_locked(p, now);
    struct kvb_slot *s = &p->slots[b->id];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    if (kvb__word_gen(w) != b->gen || kvb__word_rc(w) == 0) {
        kvb__pool_unlock(p);
        return kvb__pool_misuse(p, "kvb_block_priority");
    }
    uint32_t id = s->state == KVB_S_DUPLICATE ? s->aux : b->id;
    int prio = p->prio ? p->prio->level[id] : (int)KVB_PRIORITY_DEFAULT;
    kvb__pool_unlock(p);
    return prio;
}

int kvb_pool_set_priority(kvb_pool *p, const kvb_hash *hashes, uint32_t n, uint32_t priority,
                          uint32_t duration_ms)
{
    if (!p || (n && !hashes) || priority > KVB_PRIORITY_MAX)
        return -EINVAL;
    if (!p->prio)
        return -ENOTSUP;
    if (n == 0)
        return 0;
    bool timed;
    uint64_t now = kvb__pool_clock_if(p, duration_ms != 0, &timed);
    kvb__pool_lock(p);
    if (timed)
        kvb__expire_locked(p, now);
    uint32_t found = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = kvb__index_find(&p->ix, p->slots, hashes[i]);
        if (id == KVB_NONE)
            continue;
        kvb__set_priority_locked(p, id, priority, duration_ms, now);
        found++;
    }
    kvb__pool_unlock(p);
    return (int)found;
}
