/*
 * pool_ref.c - operations on block references that change no slot state: clone
 * (lock-free: one CAS on the slot's word validates the handle's generation and
 * adds one to its count, pool.h), reset-on-release, use count, address, weak
 * downgrade. Releases, which may change state, and weak upgrades, which may
 * resurrect a cached block, are pool.c's.
 */
#include "pool.h"
#include "annotate.h"
#include <string.h>

/* Lock-free: add one to the count of a live reference (gen, count > 0). */
int kvb__ref_inc(kvb_pool *p, uint32_t id, uint32_t gen)
{
    if (id >= p->block_count)
        return -ESTALE;
    _Atomic uint64_t *wp = &p->slots[id].word;
    uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
    for (;;) {
        if (kvb__word_gen(w) != gen || kvb__word_rc(w) == 0)
            return -ESTALE;
        if (kvb_unlikely(kvb__word_rc(w) >= KVB_RC_HIGH)) {
            if (kvb__word_rc(w) >= KVB_RC_MAX)
                return -EOVERFLOW;
            atomic_store_explicit(&p->rc_high, true, memory_order_relaxed);
        }
        KVB_HB_BEFORE(wp);
        /* acq_rel: pairs with the release store of the transition that created
         * this life of the slot, and with other CAS on the word. */
        if (atomic_compare_exchange_weak_explicit(wp, &w, w + 1, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            KVB_HB_AFTER(wp);
            return 0;
        }
    }
}

int kvb_block_clone(const kvb_block *b, kvb_block *out)
{
    if (!b || !out)
        return -EINVAL;
    kvb_pool *p = b->pool;
    if (!p)
        return -ESTALE;
    int rc = kvb__ref_inc(p, b->id, b->gen);
    if (rc == -ESTALE)
        return kvb__pool_misuse(p, "kvb_block_clone");
    if (rc)
        return rc;
    *out = *b;
    return 0;
}

int kvb_block_set_reset_on_release(kvb_block *b, bool on)
{
    if (!b)
        return -EINVAL;
    kvb_pool *p = b->pool;
    if (!p)
        return -ESTALE;
    if (b->id >= p->block_count)
        return kvb__pool_misuse(p, "kvb_block_set_reset_on_release");
    kvb__pool_lock(p);
    struct kvb_slot *s = &p->slots[b->id];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
    if (kvb__word_gen(w) != b->gen || kvb__word_rc(w) == 0) {
        kvb__pool_unlock(p);
        return kvb__pool_misuse(p, "kvb_block_set_reset_on_release");
    }
    if (on)
        s->flags |= KVB_F_RESET_ON_RELEASE;
    else
        s->flags &= (uint8_t)~KVB_F_RESET_ON_RELEASE;
    kvb__pool_unlock(p);
    return 0;
}

uint32_t kvb_block_use_count(const kvb_block *b)
{
    if (!b || !b->pool || b->id >= b->pool->block_count)
        return 0;
    kvb_pool *p = b->pool;
    const struct kvb_slot *s = &p->slots[b->id];
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    KVB_HB_AFTER(&s->word);
    if (kvb__word_gen(w) != b->gen)
        return 0; /* another life of the slot */
    kvb__pool_lock(p);
    uint32_t n = 0;
    w = atomic_load_explicit(&s->word, memory_order_relaxed);
    if (kvb__word_gen(w) == b->gen) /* handles + duplicates holding a primary */
        n = kvb__word_rc(w) + (s->state == KVB_S_PRIMARY ? s->dups : 0);
    kvb__pool_unlock(p);
    return n;
}

int kvb_block_address(const kvb_block *b, kvb_block_addr *out)
{
    if (!b || !out)
        return -EINVAL;
    if (!b->pool)
        return -ESTALE;
    if (b->id >= b->pool->block_count)
        return kvb__pool_misuse(b->pool, "kvb_block_address");
    uint64_t w = atomic_load_explicit(&b->pool->slots[b->id].word, memory_order_acquire);
    KVB_HB_AFTER(&b->pool->slots[b->id].word);
    if (kvb__word_gen(w) != b->gen || kvb__word_rc(w) == 0) /* not a live reference */
        return kvb__pool_misuse(b->pool, "kvb_block_address");
    *out = (kvb_block_addr){.pool_id = b->pool->id, .block_id = b->id, .hash = b->hash};
    return 0;
}

void kvb_block_downgrade(const kvb_block *b, kvb_weak *out)
{
    if (!out)
        return;
    if (!b) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = (kvb_weak){.pool = b->pool, .id = b->id, .gen = b->gen, .hash = b->hash};
}
