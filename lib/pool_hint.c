/*
 * pool_hint.c - lookahead hints on a pool: kvb_pool_hint adds and withdraws
 * expected uses (hint.h has the semantics and the data structure). The pool sets
 * a hinted block apart only when it comes up as an eviction victim
 * (kvb__set_apart_locked, pool.h); withdrawing a hash's last use puts its block
 * back into the policy's order (the backend, whatever its priority).
 */
#include "pool.h"

/* Hashes of one hint call are handled in chunks: the home bits of the chunk are
 * computed and their table cells prefetched first, so the cells' cache misses
 * overlap instead of coming one after another. */
#define KVB_HINT_CHUNK 32

int kvb_pool_hint(kvb_pool *p, const kvb_hash *hashes, uint32_t n, int32_t delta)
{
    if (!p || (n && !hashes) || delta == 0)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (!kvb__hash_valid(hashes[i]))
            return -EINVAL;
    if (!p->hints)
        return -ENOTSUP;
    if (n == 0)
        return 0;
    struct kvb_hints *h = p->hints;
    uint32_t h32[KVB_HINT_CHUNK];
    kvb__pool_lock(p);
    if (delta > 0 && !kvb__hints_room(h, n)) {
        p->c.hint_rejected++;
        kvb__pool_unlock(p);
        return -ENOSPC;
    }
    uint64_t ticket = delta > 0 ? ++h->ticket : 0;
    uint32_t k = delta > 0 ? (uint32_t)delta : (uint32_t)(-(int64_t)delta);
    for (uint32_t base = 0; base < n; base += KVB_HINT_CHUNK) {
        uint32_t m = n - base < KVB_HINT_CHUNK ? n - base : KVB_HINT_CHUNK;
        for (uint32_t j = 0; j < m; j++) {
            h32[j] = kvb__hints_h32(hashes[base + j]);
            kvb__hints_prefetch(h, h32[j]);
        }
        for (uint32_t j = 0; j < m; j++) {
            kvb_hash hash = hashes[base + j];
            bool found;
            uint32_t cell = kvb__hints_probe(h, hash, h32[j], &found);
            if (delta > 0) {
                (void)kvb__hints_add(h, hash, h32[j], cell, found, k, ticket);
                continue;
            }
            if (!found) {
                p->c.hint_unmatched += k;
                continue;
            }
            uint32_t e = (uint32_t)h->tab[cell];
            uint32_t got = kvb__hints_withdraw(h, e, k);
            p->c.hint_withdrawn += got;
            p->c.hint_unmatched += k - got;
            if (h->ent[e].uses) {
                kvb__hints_rekey(h, e); /* its next need may have moved */
                continue;
            }
            uint32_t id = h->ent[e].block;
            if (id != KVB_HINT_NONE) {
                /* no use expected any more: back into the policy's order */
                (void)kvb__hints_remove(h, id);
                p->slots[id].flags &= (uint8_t)~KVB_F_HINTED;
                kvb__place_locked(p, id);
            }
            kvb__hints_free(h, e, cell);
        }
    }
    if (delta > 0)
        p->c.hint_added += (uint64_t)n * k;
    kvb__pool_unlock(p);
    return 0;
}
