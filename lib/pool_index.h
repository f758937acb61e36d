/*
 * pool_index.h - the pool's hash index, hash -> block id of the PRIMARY and
 * INACTIVE slots (struct kvb_index in pool.h has the layout and the sizing).
 * Private to the pool's files. Every function is static inline: lookups,
 * inserts and erases sit on the hot path of allocate, register and match, and
 * are compiled into each of them. All of them run under the pool lock.
 *
 * Robin Hood order: along a probe sequence, displacements never decrease across
 * an entry that is richer than the one being placed, so a lookup stops as soon
 * as it meets an entry closer to its home than the probe is to the key's home (a
 * miss costs about as much as a hit), a key is compared with a slot's hash only
 * where the displacement says the entry shares its home cell, and deletion
 * shifts the following entries back until one sits at its home.
 *
 * Invariants (kvb_pool_check verifies them): the index holds exactly the PRIMARY
 * and INACTIVE slots, each under its own hash, no hash twice, every cell's
 * displacement field equal to its distance from its home (saturated at
 * disp_max).
 */
#ifndef KVB_POOL_INDEX_H
#define KVB_POOL_INDEX_H

#include "pool.h"

/* The displacement field saturates at max (>= 1; below the natural maximum only for
 * a test, kvb__test_set_map_disp_max). */
static inline void kvb__index_cap_disp(struct kvb_index *ix, uint32_t max)
{
    ix->disp_max = max;
    ix->shift_lim = (max - 1) << ix->id_bits;
}

/* Sizing for a pool of block_count blocks (the map itself is allocated by the
 * caller: ix->cap cells, all KVB_NONE). */
static inline void kvb__index_size(struct kvb_index *ix, uint32_t block_count)
{
    ix->cap = block_count + block_count / 4 * 3 + 8;         /* load <= 0.57 */
    ix->id_bits = 32 - (uint32_t)__builtin_clz(block_count); /* 2^bits > count */
    ix->id_mask = (1u << ix->id_bits) - 1;
    ix->one = 1u << ix->id_bits;
    kvb__index_cap_disp(ix, (uint32_t)((1ull << (32 - ix->id_bits)) - 1));
}

/* the top 32 bits of the mix, scaled to the table */
static inline uint32_t kvb__index_home(const struct kvb_index *ix, kvb_hash h)
{
    return kvb__cell_of((uint32_t)(kvb__hash_mix(h) >> 32), ix->cap);
}

static inline uint32_t kvb__index_id(const struct kvb_index *ix, uint32_t cell)
{
    return cell & ix->id_mask;
}

/* Displacement of the entry in cell i from its home (computed from the slot's
 * hash when the packed field saturated). */
static inline uint32_t kvb__index_disp(const struct kvb_index *ix, const struct kvb_slot *slots,
                                       uint32_t i, uint32_t cell)
{
    uint32_t d = cell >> ix->id_bits;
    if (kvb_unlikely(d == ix->disp_max))
        d = kvb__cell_dist(kvb__index_home(ix, slots[kvb__index_id(ix, cell)].hash), i, ix->cap);
    return d;
}

static inline uint32_t kvb__index_cell(const struct kvb_index *ix, uint32_t id, uint32_t disp)
{
    if (disp > ix->disp_max)
        disp = ix->disp_max;
    return (disp << ix->id_bits) | id;
}

/* The block id holding hash h, probing from cell i (h's home), or KVB_NONE. On a
 * miss, *at and *at_d receive where an insert of h would begin: the cell the probe
 * stopped at (empty, or holding an entry richer than h would be there) and h's
 * displacement there (kvb__index_insert_at). An empty cell (all ones) reads as a
 * displacement field at or above the saturated one, so one test per cell covers
 * both. */
static inline uint32_t kvb__index_find_at(const struct kvb_index *ix, const struct kvb_slot *slots,
                                          kvb_hash h, uint32_t i, uint32_t *at, uint32_t *at_d)
{
    /* (locals: stores elsewhere must not make the compiler reload the layout) */
    const uint32_t *map = ix->map;
    const uint32_t cap = ix->cap, bits = ix->id_bits, dmax = ix->disp_max;
    uint32_t d = 0;
    for (;; d++) {
        uint32_t cell = map[i];
        uint32_t cd = cell >> bits;
        if (kvb_unlikely(cd >= dmax)) { /* (> only for a test's lowered cap) */
            if (cell == KVB_NONE)
                break;
            cd = kvb__index_disp(ix, slots, i, cell);
        }
        if (cd < d)
            break;
        if (cd == d) {
            uint32_t id = kvb__index_id(ix, cell);
            const kvb_hash *s = &slots[id].hash;
            if (s->lo == h.lo && s->hi == h.hi)
                return id;
        }
        i = kvb__cell_next(i, cap);
    }
    *at = i;
    *at_d = d;
    return KVB_NONE;
}

/* The block id holding hash h, probing from cell i (h's home), or KVB_NONE. */
static inline uint32_t kvb__index_find_from(const struct kvb_index *ix,
                                            const struct kvb_slot *slots, kvb_hash h, uint32_t i)
{
    uint32_t at = 0, at_d = 0;
    return kvb__index_find_at(ix, slots, h, i, &at, &at_d);
}

static inline uint32_t kvb__index_find(const struct kvb_index *ix, const struct kvb_slot *slots,
                                       kvb_hash h)
{
    return kvb__index_find_from(ix, slots, h, kvb__index_home(ix, h));
}

/*
 * Batch lookups on large pools: compute the home cells of up to KVB_PREFETCH
 * hashes, prefetch those cells, then read them and prefetch the slots they name,
 * so the two dependent cache misses of each lookup (index cell, then slot hash)
 * overlap across the batch instead of being taken one after another. Pools that
 * fit in cache (!p->prefetch) do not call it: their lookups compute the home.
 */
#define KVB_PREFETCH 32
static inline void kvb__index_prepare(const struct kvb_index *ix, const struct kvb_slot *slots,
                                      const kvb_hash *h, uint32_t m, uint32_t *home)
{
    for (uint32_t i = 0; i < m; i++) {
        home[i] = kvb__index_home(ix, h[i]);
        __builtin_prefetch(&ix->map[home[i]]);
    }
    for (uint32_t i = 0; i < m; i++) {
        uint32_t cell = ix->map[home[i]];
        if (cell != KVB_NONE)
            __builtin_prefetch(&slots[kvb__index_id(ix, cell)]);
    }
}

/* Start loading the cell of hash h (an insert or erase will need it soon). */
static inline void kvb__index_prefetch(const struct kvb_index *ix, kvb_hash h)
{
    __builtin_prefetch(&ix->map[kvb__index_home(ix, h)]);
}

/* Insert block id, whose hash is absent, starting at cell i with displacement d:
 * where a probe for its hash stopped (kvb__index_find_at, with nothing changed in
 * between), or its home with 0 (the probe's stop is then found first). The entries
 * of a cluster are in the order of their homes, and the probe stopped at the first
 * entry whose home comes after the new one's: the new entry takes that cell and the
 * rest of the cluster moves one cell on, each displacement field one more (the
 * inverse of the erase's backward shift; Robin Hood's swap loop gives the same
 * cells up to the order of entries that share a home, which no lookup sees). */
static inline __attribute__((always_inline)) void kvb__index_insert_at(struct kvb_index *ix,
                                                                       const struct kvb_slot *slots,
                                                                       uint32_t id, uint32_t i,
                                                                       uint32_t d)
{
    uint32_t *map = ix->map;
    const uint32_t cap = ix->cap, bits = ix->id_bits, dmax = ix->disp_max, one = ix->one;
    (void)slots;
    uint32_t carry = kvb__index_cell(ix, id, d);
    for (;;) {
        uint32_t cell = map[i];
        map[i] = carry;
        if (cell == KVB_NONE)
            return;
        /* one cell on: displacement + 1 (a saturated field stays saturated) */
        carry = (cell >> bits) < dmax ? cell + one : cell;
        i = kvb__cell_next(i, cap);
    }
}

/* Insert block id under slots[id].hash (not present yet). */
static inline __attribute__((always_inline)) void
kvb__index_insert(struct kvb_index *ix, const struct kvb_slot *slots, uint32_t id)
{
    uint32_t at = 0, at_d = 0;
    uint32_t found = kvb__index_find_at(ix, slots, slots[id].hash,
                                        kvb__index_home(ix, slots[id].hash), &at, &at_d);
    kvb_assert(found == KVB_NONE);
    (void)found;
    kvb__index_insert_at(ix, slots, id, at, at_d);
}

/* Erase block id, present under a hash whose home is cell i. Backward shift: each
 * following entry away from its home moves back one cell, its displacement field one
 * less, until an entry at its home or an empty cell. An entry whose field is in
 * [1, disp_max) moves with one subtraction, and `cell - one < lim` is that test: it
 * fails for an entry at its home (wraps), an empty cell and a saturated field (both
 * all ones above the id), which take the general path. */
static inline __attribute__((always_inline)) void
kvb__index_erase_at(struct kvb_index *ix, const struct kvb_slot *slots, uint32_t id, uint32_t i)
{
    uint32_t *map = ix->map;
    const uint32_t cap = ix->cap, mask = ix->id_mask;
    while ((map[i] & mask) != id) {
        kvb_assert(map[i] != KVB_NONE);
        if (map[i] == KVB_NONE)
            return;
        i = kvb__cell_next(i, cap);
    }
    const uint32_t one = ix->one, lim = ix->shift_lim;
    for (;;) {
        uint32_t j = kvb__cell_next(i, cap);
        uint32_t cell = map[j];
        if (kvb_likely(cell - one < lim)) {
            map[i] = cell - one;
            i = j;
            continue;
        }
        uint32_t d;
        if (cell == KVB_NONE || (d = kvb__index_disp(ix, slots, j, cell)) == 0)
            break;
        map[i] = kvb__index_cell(ix, kvb__index_id(ix, cell), d - 1);
        i = j;
    }
    map[i] = KVB_NONE;
}

/* Erase block id (present under slots[id].hash). */
static inline void kvb__index_erase(struct kvb_index *ix, const struct kvb_slot *slots, uint32_t id)
{
    kvb__index_erase_at(ix, slots, id, kvb__index_home(ix, slots[id].hash));
}

#endif /* KVB_POOL_INDEX_H */
