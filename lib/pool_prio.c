/*
 * pool_prio.c - retention priorities and durations on a pool's blocks: the glue
 * between the pool's slots and the priority state (prio.h has the semantics and
 * the data structure). A cached block whose priority is not the default waits
 * in its level's list instead of the eviction backend (kvb__place_locked); the
 * allocation takes list victims through pool_victims.c.
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

void kvb__expire_locked(kvb_pool *p, uint64_t now)
{
    uint32_t id;
    while ((id = kvb__prio_timer_due(p->prio, now)) != KVB_PRIO_NONE) {
        struct kvb_slot *s = &p->slots[id];
        p->c.retention_expired++;
        bool listed = (s->flags & KVB_F_LISTED) != 0;
        if (listed)
            kvb__prio_unlink(p->prio, id);
        p->prio->level[id] = KVB_PRIORITY_DEFAULT;
        s->flags &= (uint8_t) ~(KVB_F_PRIO | KVB_F_LISTED);
        if (listed) /* cached at its old priority: now an ordinary block of the policy's */
            kvb__place_locked(p, id);
    }
}

/* Give content id (PRIMARY or INACTIVE) a priority, with a duration (0: none) from
 * `now`. A cached block changes place when its priority changes (the backend, a
 * level list); a block set apart by hints stays there. Lock held. */
void kvb__set_priority_locked(kvb_pool *p, uint32_t id, uint32_t priority, uint32_t duration_ms,
                              uint64_t now)
{
    struct kvb_slot *s = &p->slots[id];
    struct kvb_prio *pr = p->prio;
    kvb_assert(s->state == KVB_S_PRIMARY || s->state == KVB_S_INACTIVE);
    bool moves =
        s->state == KVB_S_INACTIVE && !(s->flags & KVB_F_HINTED) && pr->level[id] != priority;
    if (moves)
        kvb__unplace_locked(p, id);
    pr->level[id] = (uint8_t)priority;
    if (priority != KVB_PRIORITY_DEFAULT)
        s->flags |= KVB_F_PRIO;
    else
        s->flags &= (uint8_t)~KVB_F_PRIO;
    if (duration_ms && priority != KVB_PRIORITY_DEFAULT)
        kvb__prio_timer_set(pr, id, now + duration_ms);
    else
        kvb__prio_timer_clear(pr, id);
    if (moves)
        kvb__place_locked(p, id);
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
