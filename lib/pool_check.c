/*
 * pool_check.c - kvb_pool_check, the invariant checker the tests run after every
 * scenario (pool.c's header lists the invariants), and the test hooks of
 * KVB_TESTING builds (testing.h): the last-release hook, the cap on the hash
 * index's displacement field, raw slot reads and writes.
 */
#include "pool.h"
#include "pool_index.h"

/* ------------------------------------------------------------------------ */
/* invariant check                                                          */
/* ------------------------------------------------------------------------ */

#ifdef KVB_TESTING
#define KVB_CHECK_FAIL(...) (fprintf(stderr, "kvb_pool_check: " __VA_ARGS__), -EFAULT)
#else
#define KVB_CHECK_FAIL(...) (-EFAULT)
#endif

static int kvb_check_locked(kvb_pool *p, uint32_t *dups)
{
    uint32_t cnt[KVB_S_COUNT] = {0};
    for (uint32_t i = 0; i < p->block_count; i++) {
        const struct kvb_slot *s = &p->slots[i];
        if (s->state >= KVB_S_COUNT)
            return KVB_CHECK_FAIL("slot %u: bad state %u\n", i, s->state);
        cnt[s->state]++;
        uint32_t rc = kvb__word_rc(atomic_load_explicit(&s->word, memory_order_relaxed));
        if (rc && s->state != KVB_S_PRIMARY && s->state != KVB_S_DUPLICATE)
            return KVB_CHECK_FAIL("slot %u: state %u with refcount %u\n", i, s->state, rc);
        if (s->flags & KVB_F_MARK)
            return KVB_CHECK_FAIL("slot %u: stale mark\n", i);
        bool in_backend = p->ops->contains(p->backend, i);
        bool hinted = (s->flags & KVB_F_HINTED) != 0;
        bool listed = (s->flags & KVB_F_LISTED) != 0;
        if (s->state == KVB_S_INACTIVE && in_backend + hinted + listed != 1)
            return KVB_CHECK_FAIL("slot %u: INACTIVE, in the backend %d, hint heap %d, priority "
                                  "list %d (exactly one)\n",
                                  i, in_backend, hinted, listed);
        if (s->state != KVB_S_INACTIVE && (in_backend || hinted || listed))
            return KVB_CHECK_FAIL("slot %u: in the backend, hint heap or a list but state %u\n", i,
                                  s->state);
        bool content = s->state == KVB_S_PRIMARY || s->state == KVB_S_INACTIVE;
        bool prio = (s->flags & KVB_F_PRIO) != 0;
        if ((prio || listed) && !p->prio)
            return KVB_CHECK_FAIL("slot %u: priority flags without priorities\n", i);
        if (p->prio) {
            uint32_t lv = p->prio->level[i];
            if (prio != (lv != KVB_PRIORITY_DEFAULT) || (!content && prio))
                return KVB_CHECK_FAIL("slot %u: priority %u, flag %d, state %u\n", i, lv, prio,
                                      s->state);
            if (listed != kvb__prio_listed(p->prio, i))
                return KVB_CHECK_FAIL("slot %u: priority list membership wrong\n", i);
            if (p->prio->tpos[i] != KVB_PRIO_NONE && !prio)
                return KVB_CHECK_FAIL("slot %u: a duration on a default priority\n", i);
        }
        if (hinted &&
            (!p->hints || !kvb__hints_in_heap(p->hints, i) ||
             !kvb_hash_equal(p->hints->ent[p->hints->heap[p->hints->hpos[i]].ent].hash, s->hash)))
            return KVB_CHECK_FAIL("slot %u: marked hinted but not in the hint heap\n", i);
        if (!hinted && p->hints && kvb__hints_in_heap(p->hints, i))
            return KVB_CHECK_FAIL("slot %u: in the hint heap but not marked\n", i);

        if (s->state == KVB_S_PRIMARY || s->state == KVB_S_INACTIVE) {
            if (kvb__index_find(&p->ix, p->slots, s->hash) != i)
                return KVB_CHECK_FAIL("slot %u: not reachable in the hash index\n", i);
        }
        if (s->state == KVB_S_DUPLICATE) {
            uint32_t pid = s->aux;
            if (pid >= p->block_count || p->slots[pid].state != KVB_S_PRIMARY ||
                !kvb_hash_equal(p->slots[pid].hash, s->hash))
                return KVB_CHECK_FAIL("slot %u: duplicate without its primary\n", i);
            dups[pid]++;
        }
    }
    uint64_t sum = 0;
    for (int st = 0; st < KVB_S_COUNT; st++) {
        if (cnt[st] != p->count[st])
            return KVB_CHECK_FAIL("gauge of state %d is %u, counted %u\n", st, p->count[st],
                                  cnt[st]);
        sum += cnt[st];
    }
    if (sum != p->block_count)
        return KVB_CHECK_FAIL("states add up to %llu, not %u\n", (unsigned long long)sum,
                              p->block_count);
    uint32_t hlen = p->hints ? p->hints->heap_len : 0;
    uint32_t llen = p->prio ? p->prio->listed : 0;
    if (p->ops->len(p->backend) + hlen + llen != cnt[KVB_S_INACTIVE])
        return KVB_CHECK_FAIL("inactive index holds %u, the hint heap %u, the priority lists "
                              "%u; INACTIVE slots %u\n",
                              p->ops->len(p->backend), hlen, llen, cnt[KVB_S_INACTIVE]);
    if (p->prio) {
        uint32_t inb[KVB_PRIO_LEVELS] = {0};
        for (uint32_t i = 0; i < p->block_count; i++)
            if (p->slots[i].state == KVB_S_INACTIVE &&
                !(p->slots[i].flags & (KVB_F_HINTED | KVB_F_LISTED)))
                inb[p->prio->level[i]]++;
        uint32_t nondef = 0;
        for (uint32_t l = 0; l < KVB_PRIO_LEVELS; l++) {
            if (l == KVB_PRIORITY_DEFAULT)
                continue; /* (counted inside an eviction only) */
            nondef += inb[l];
            if (inb[l] != p->prio->inb[l])
                return KVB_CHECK_FAIL("priority level %u: %u blocks in the backend, counted %u\n",
                                      l, inb[l], p->prio->inb[l]);
        }
        if (nondef != p->prio->nondef)
            return KVB_CHECK_FAIL("priority levels: %u blocks off the default in the backend, "
                                  "counted %u\n",
                                  nondef, p->prio->nondef);
        const char *why = NULL;
        if (kvb__prio_check(p->prio, &why) != 0)
            return KVB_CHECK_FAIL("%s\n", why);
    }
    if (p->hints) {
        const char *why = NULL;
        if (kvb__hints_check(p->hints, &why) != 0)
            return KVB_CHECK_FAIL("%s\n", why);
    }
    uint32_t mapped = 0;
    for (uint32_t i = 0; i < p->ix.cap; i++) {
        uint32_t cell = p->ix.map[i];
        if (cell == KVB_NONE)
            continue;
        uint32_t id = kvb__index_id(&p->ix, cell);
        mapped++;
        if (id < p->block_count &&
            kvb__index_disp(&p->ix, p->slots, i, cell) !=
                kvb__cell_dist(kvb__index_home(&p->ix, p->slots[id].hash), i, p->ix.cap))
            return KVB_CHECK_FAIL("hash index cell %u: wrong displacement\n", i);
        if (id >= p->block_count ||
            (p->slots[id].state != KVB_S_PRIMARY && p->slots[id].state != KVB_S_INACTIVE))
            return KVB_CHECK_FAIL("hash index cell %u names block %u in a wrong state\n", i, id);
    }
    if (mapped != cnt[KVB_S_PRIMARY] + cnt[KVB_S_INACTIVE])
        return KVB_CHECK_FAIL("hash index holds %u, PRIMARY+INACTIVE = %u\n", mapped,
                              cnt[KVB_S_PRIMARY] + cnt[KVB_S_INACTIVE]);
    uint32_t nfree = 0, last = KVB_NONE;
    for (uint32_t id = p->free_head; id != KVB_NONE; id = p->slots[id].aux) {
        if (id >= p->block_count || p->slots[id].state != KVB_S_RESET || nfree > cnt[KVB_S_RESET])
            return KVB_CHECK_FAIL("free list broken at block %u\n", id);
        nfree++;
        last = id;
    }
    if (nfree != cnt[KVB_S_RESET] || last != p->free_tail)
        return KVB_CHECK_FAIL("free list holds %u, RESET slots %u\n", nfree, cnt[KVB_S_RESET]);
    for (uint32_t i = 0; i < p->block_count; i++) {
        if (p->slots[i].dups != dups[i])
            return KVB_CHECK_FAIL("block %u: %u duplicates recorded, %u found\n", i,
                                  (unsigned)p->slots[i].dups, dups[i]);
    }
    return 0;
}

int kvb_pool_check(kvb_pool *p)
{
    if (!p)
        return -EINVAL;
    uint32_t *dups = kvb__calloc(&p->alloc, p->block_count, sizeof *dups);
    if (!dups)
        return -ENOMEM;
    kvb__pool_lock(p);
    int rc = kvb_check_locked(p, dups);
    kvb__pool_unlock(p);
    kvb__free(&p->alloc, dups, (size_t)p->block_count * sizeof *dups);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* test hooks                                                               */
/* ------------------------------------------------------------------------ */

#ifdef KVB_TESTING
kvb_test_hook_fn kvb__test_last_release_fn;
void *kvb__test_last_release_arg;
uint32_t kvb__test_disp_max;

void kvb__test_set_map_disp_max(uint32_t max)
{
    kvb__test_disp_max = max;
}

void kvb__test_set_last_release_hook(kvb_test_hook_fn fn, void *arg)
{
    kvb__test_last_release_arg = arg;
    kvb__test_last_release_fn = fn;
}

uint32_t kvb__test_slot_gen(kvb_pool *p, uint32_t id)
{
    return kvb__word_gen(atomic_load_explicit(&p->slots[id].word, memory_order_acquire));
}

int kvb__test_slot_state(kvb_pool *p, uint32_t id)
{
    kvb__pool_lock(p);
    int st = p->slots[id].state;
    kvb__pool_unlock(p);
    return st;
}

void kvb__test_set_refcount(kvb_pool *p, uint32_t id, uint32_t rc)
{
    kvb__pool_lock(p);
    _Atomic uint64_t *wp = &p->slots[id].word;
    uint64_t w = atomic_load_explicit(wp, memory_order_relaxed);
    atomic_store_explicit(wp, kvb__word(kvb__word_gen(w), rc), memory_order_release);
    if (rc >= KVB_RC_HIGH)
        atomic_store_explicit(&p->rc_high, true, memory_order_relaxed);
    kvb__pool_unlock(p);
}
#endif
