/*
 * pool_create.c - a pool's lifecycle: configuration defaults and validation,
 * create (every table sized and allocated here, through the allocator hook: the
 * pool allocates nothing afterwards but transient buffers), destroy (refused with
 * -EBUSY while any handle is outstanding), and the accessors, including the two
 * that modules outside the pool use instead of its layout (pool_internal.h).
 */
#include "pool.h"
#include "pool_index.h"
#include "pool_internal.h"
#include "annotate.h"
#include "events_internal.h"
#include "inactive_internal.h"
#include "registry_internal.h"
#include "sketch.h"
#include <string.h>

static _Atomic uint64_t kvb_next_pool_id = 1; /* relaxed: uniqueness only, orders nothing */

/*
 * The first generation of slot i of the pool with this id: the id and the slot
 * mixed (splitmix64's finaliser), never 0. Pools start their slots at unrelated
 * generations, so a handle relabelled to another pool (same block id and
 * generation, another pool pointer) meets a generation it was not issued under
 * and is refused as stale (-ESTALE and the misuse counter) instead of being
 * accepted; it can only match by a 1 in 2^32 coincidence.
 */
static uint32_t kvb_first_gen(uint64_t pool_id, uint32_t i)
{
    uint64_t x = pool_id * 0x9E3779B97F4A7C15ull + ((uint64_t)i << 1 | 1);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    uint32_t g = (uint32_t)(x >> 32);
    return g ? g : 1;
}

void kvb_pool_config_init(kvb_pool_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->block_size = 16;
    cfg->dup_policy = KVB_DUP_ALLOW;
    cfg->evict = KVB_EVICT_LRU;
    cfg->multi_lru_thresholds[0] = 3;
    cfg->multi_lru_thresholds[1] = 8;
    cfg->multi_lru_thresholds[2] = 15;
    cfg->name = "pool";
}

static int kvb_config_validate(const kvb_pool_config *cfg, uint32_t *bs, uint8_t th[3])
{
    if (cfg->block_count == 0 || cfg->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    *bs = cfg->block_size ? cfg->block_size : 16;
    if (*bs > 1024 || (*bs & (*bs - 1)))
        return -EINVAL;
    if ((unsigned)cfg->dup_policy > KVB_DUP_REJECT || (unsigned)cfg->evict > KVB_EVICT_ADAPTIVE)
        return -EINVAL;
    const uint8_t *t = cfg->multi_lru_thresholds;
    if (t[0] == 0 && t[1] == 0 && t[2] == 0) {
        th[0] = 3, th[1] = 8, th[2] = 15;
    } else {
        if (t[0] < 1 || t[0] >= t[1] || t[1] >= t[2] || t[2] > 15)
            return -EINVAL;
        memcpy(th, t, 3);
    }
    if (cfg->evict_ops && kvb__inactive_ops_validate(cfg->evict_ops) != 0)
        return -EINVAL;
    if (cfg->hint_capacity > (1u << 30))
        return -EINVAL;
    if ((cfg->allocator.alloc == NULL) != (cfg->allocator.free == NULL))
        return -EINVAL;
    return 0;
}

static void kvb_pool_free_mem(kvb_pool *p)
{
    kvb_allocator a = p->alloc;
    if (p->backend)
        p->ops->destroy(p->backend);
    if (p->own_sketch)
        kvb__sketch_destroy(p->sketch);
    if (p->sinks.events)
        kvb__events_destroy(p->sinks.events);
    kvb__hints_destroy(p->hints, &a);
    kvb__prio_destroy(p->prio, &a);
    kvb__free(&a, p->ix.map, (size_t)p->ix.cap * sizeof *p->ix.map);
    kvb__free(&a, p->slots, (size_t)p->block_count * sizeof *p->slots);
    kvb__free(&a, p, sizeof *p);
}

int kvb_pool_create(const kvb_pool_config *cfg, kvb_pool **out)
{
    if (!cfg || !out)
        return -EINVAL;
    uint32_t bs;
    uint8_t th[3];
    int rc = kvb_config_validate(cfg, &bs, th);
    if (rc)
        return rc;
    const kvb_inactive_ops *ops =
        cfg->evict_ops ? cfg->evict_ops : kvb_inactive_builtin(cfg->evict);
    if (!ops)
        return -ENOTSUP;

    kvb_allocator a = cfg->allocator;
    kvb__allocator_fill(&a);
    kvb_pool *p = kvb__calloc(&a, 1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->alloc = a;
    p->block_count = cfg->block_count;
    p->block_size = bs;
    p->ops = ops;
    for (int e = 0; kvb_inactive_builtin((kvb_evict_policy)e); e++)
        p->ops_builtin |= ops == kvb_inactive_builtin((kvb_evict_policy)e);

    p->sinks.pool = p;
    p->sinks.alloc = &p->alloc;

    kvb__index_size(&p->ix, cfg->block_count);
    uint32_t cap = p->ix.cap;
    /* beyond ~2 MiB of slots, lookups miss the cache: prefetch batch lookups */
    p->prefetch = cfg->block_count >= 65536;
#ifdef KVB_TESTING
    if (kvb__test_disp_max && kvb__test_disp_max < p->ix.disp_max)
        kvb__index_cap_disp(&p->ix, kvb__test_disp_max); /* the saturated-displacement path */
#endif
    p->slots = kvb__calloc(&a, cfg->block_count, sizeof *p->slots);
    p->ix.map = kvb__alloc(&a, (size_t)cap * sizeof *p->ix.map);
    if (!p->slots || !p->ix.map) {
        kvb_pool_free_mem(p);
        return -ENOMEM;
    }
    memset(p->ix.map, 0xff, (size_t)cap * sizeof *p->ix.map);

    if (cfg->registry) {
        p->sketch = kvb__registry_sketch(cfg->registry);
    } else if (ops->flags & KVB_INACTIVE_F_FREQUENCY) {
        /* frequency-aware policies without a registry get a private sketch */
        rc = kvb__sketch_create(cfg->block_count, false, &a, &p->sketch);
        if (rc) {
            kvb_pool_free_mem(p);
            return rc;
        }
        p->own_sketch = true;
    }
    kvb_inactive_params ip = {.block_count = cfg->block_count, .allocator = a};
    memcpy(ip.thresholds, th, 3);
    if (p->sketch) {
        ip.frequency = kvb__sketch_frequency_cb;
        ip.frequency_ctx = p->sketch;
    }
    rc = ops->create(&ip, &p->backend);
    if (rc) {
        p->backend = NULL;
        kvb_pool_free_mem(p);
        return rc < 0 ? rc : -ENOMEM;
    }
    if (cfg->priorities) {
        rc = kvb__prio_create(cfg->block_count, &a, &p->prio);
        if (rc) {
            p->prio = NULL;
            kvb_pool_free_mem(p);
            return rc;
        }
    }
    if (cfg->hint_capacity) {
        rc = kvb__hints_create(cfg->hint_capacity, cfg->block_count, &a, &p->hints);
        if (rc) {
            p->hints = NULL;
            kvb_pool_free_mem(p);
            return rc;
        }
    }
    if (cfg->events) {
        rc = kvb__events_create(cfg->events, &a, cfg->block_count, bs, &p->sinks.events);
        if (rc) {
            kvb_pool_free_mem(p);
            return rc;
        }
    }
    if (cfg->registry) {
        rc = kvb__registry_attach(cfg->registry, p, &p->sinks.reg_index);
        if (rc) {
            kvb_pool_free_mem(p);
            return rc;
        }
    }
    if (kvb__lock_init(&p->lock, KVB_LOCK_POOL) != 0) {
        if (cfg->registry)
            kvb__registry_detach(cfg->registry, p->sinks.reg_index);
        kvb_pool_free_mem(p);
        return -ENOMEM;
    }

    /* nothing can fail from here on: the pool takes its id */
    p->id = atomic_fetch_add_explicit(&kvb_next_pool_id, 1, memory_order_relaxed);
    p->free_head = p->free_tail = KVB_NONE;
    KVB_ATOMIC_VAR(&p->misuse, sizeof p->misuse);
    KVB_ATOMIC_VAR(&p->rc_high, sizeof p->rc_high);
    atomic_init(&p->rc_high, false);
    for (uint32_t i = 0; i < cfg->block_count; i++) {
        KVB_ATOMIC_VAR(&p->slots[i].word, sizeof p->slots[i].word);
        atomic_init(&p->slots[i].word, kvb__word(kvb_first_gen(p->id, i), 0));
        kvb__free_push_tail(p, i);
    }
    p->count[KVB_S_RESET] = cfg->block_count;
    atomic_init(&p->misuse, 0);
    p->dup_policy = cfg->dup_policy;
    p->reset_default = cfg->reset_on_release;
    const char *env = getenv("KVBLOCK_ABORT_ON_MISUSE");
    p->abort_on_misuse = cfg->abort_on_misuse || (env && env[0] == '1');
    p->sinks.cb = cfg->callbacks;
    p->ext = p->hints || p->prio;
    p->clock = cfg->clock;
    if (!p->clock.now_ms) {
        p->clock.now_ms = kvb__pool_monotonic_ms;
        p->clock.ctx = NULL;
    }
    p->sinks.registry = cfg->registry;
    snprintf(p->name, sizeof p->name, "%s", cfg->name ? cfg->name : "pool");
    *out = p;
    return 0;
}

int kvb_pool_destroy(kvb_pool *p)
{
    if (!p)
        return -EINVAL;
    kvb__pool_lock(p);
    uint32_t held = p->count[KVB_S_MUTABLE] + p->count[KVB_S_STAGED] + p->count[KVB_S_PRIMARY] +
                    p->count[KVB_S_DUPLICATE];
    kvb__pool_unlock(p);
    if (held)
        return -EBUSY;
    if (p->sinks.events) {
        /* the cached content disappears with the pool: tell the consumers */
        struct kvb_cbq q;
        kvb__cbq_init(&q, &p->sinks);
        kvb__pool_lock(p);
        if (p->count[KVB_S_INACTIVE])
            kvb__cbq_event(&q, &p->ev_seq, KVB_CB_CLEARED, KVB_NONE, (kvb_hash){0, 0});
        kvb__pool_unlock(p);
        kvb__events_deliver(p->sinks.events, p, q.ev, q.n);
        kvb__events_flush(p->sinks.events);
    }
    for (uint32_t i = 0; i < p->block_count; i++) {
        KVB_HB_FORGET(&p->slots[i].word);
        KVB_ATOMIC_VAR_END(&p->slots[i].word, sizeof p->slots[i].word);
    }
    KVB_ATOMIC_VAR_END(&p->misuse, sizeof p->misuse);
    KVB_ATOMIC_VAR_END(&p->rc_high, sizeof p->rc_high);
    if (p->sinks.registry)
        kvb__registry_detach(p->sinks.registry, p->sinks.reg_index);
    kvb__lock_fini(&p->lock);
    kvb_pool_free_mem(p);
    return 0;
}

uint64_t kvb_pool_id(const kvb_pool *p)
{
    return p ? p->id : 0;
}
uint32_t kvb_pool_block_count(const kvb_pool *p)
{
    return p ? p->block_count : 0;
}
uint32_t kvb_pool_block_size(const kvb_pool *p)
{
    return p ? p->block_size : 0;
}
const char *kvb_pool_name(const kvb_pool *p)
{
    return p ? p->name : "";
}
const char *kvb_pool_policy_name(const kvb_pool *p)
{
    return p ? p->ops->name : "";
}

uint32_t kvb_pool_available(kvb_pool *p)
{
    if (!p)
        return 0;
    kvb__pool_lock(p);
    uint32_t n = p->count[KVB_S_RESET] + p->count[KVB_S_INACTIVE];
    kvb__pool_unlock(p);
    return n;
}

struct kvb_events *kvb__pool_events(const kvb_pool *p)
{
    return p->sinks.events;
}

const kvb_allocator *kvb__pool_allocator(const kvb_pool *p)
{
    return &p->alloc;
}
