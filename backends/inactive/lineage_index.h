/*
 * lineage_index.h - the prefix tree of the cached blocks, for prefix-aware
 * eviction backends (lineage.c, lineage_arc.c). Private: static functions only.
 *
 * A cached block P is the parent of a cached block C when
 * kvb_hash_is_parent(P.hash, C.hash): C sits at P's position + 1 and C's parent
 * fragment is the low R bits of P's sequence hash (kvb_hash_child_fragment). Both sides of that
 * relation pack into one exact 64-bit key, [mode:2][position:P][fragment:R] with P + R = 62 (the
 * layout of kvb_hash, DESIGN.md section 4):
 *   - up key of C: C's own (mode, position, parent fragment);
 *   - down key of P: what a child of P would carry as its up key, i.e. the
 *     mode and position of P's position + 1 and the top R' bits of P's
 *     sequence hash, R' being the fragment width at that position.
 * P is a parent of C exactly when down(P) == up(C). Every key has a position
 * >= 1, so 0 marks an empty table slot (a root has no up key; a block at the
 * last position has no down key).
 *
 * The index counts, per key K, the cached blocks whose up key is K
 * ("children of K"). A cached block B is a *leaf* when no cached block has
 * up == down(B): then evicting B strands nothing. A parent is never
 * evicted while a cached child remains, which is the whole point.
 *
 * Parking: a backend keeps its blocks in its own queues and discovers at
 * eviction time that the candidate is not a leaf; it then *parks* it on the
 * list of its down key (an ilist.h open list whose first index the key's table
 * entry keeps; it left the queue, it is still cached). When the
 * last child of key K leaves (hit or eviction), kvb_lx_del() hands back the
 * blocks parked on K: they are leaves now and go back to their queue. A block
 * is parked at most once per child insertion, so parking is O(1) amortized.
 *
 * Collisions: two different cached blocks with the same down key (same
 * position, same top R' bits of the sequence hash; only constructed hashes do
 * that) share one child count: a child of either keeps both from being
 * leaves until it leaves. The trees degrade to a slightly more conservative
 * order; nothing crashes, no count goes negative (an up key's count only
 * drops for a block that raised it).
 *
 * Table: open addressing, linear probing, backward-shift deletion, capacity
 * 3 * block_count entries of 16 bytes. Live keys are at most one per cached
 * block with a parent (a key lives while it has children; parked blocks imply
 * children), so the load stays <= 1/3 and nothing grows after create. The home
 * cell comes from the top bits of key * 0x9E3779B97F4A7C15 (keys built from
 * small trace ids are structured: DESIGN.md section 4), scaled to the table.
 *
 * Memory per block: a 24-byte node (two keys, parked links: one cache line
 * holds what an operation on a block needs), plus 48 B of table: 72 B.
 *
 * Locking: none; the owning backend runs under its pool's mutex.
 */
#ifndef KVB_LINEAGE_INDEX_H
#define KVB_LINEAGE_INDEX_H

#include "ilist.h"
#include "internal.h"

#include <string.h>

#define KVB_LX_NONE KVB_ILIST_NONE

struct kvb_lx_ent {
    uint64_t key;    /* 0: empty slot */
    uint32_t kids;   /* cached blocks whose up key is `key` */
    uint32_t parked; /* first block parked on `key` (its down key), or KVB_LX_NONE */
};

/* Per block id. */
struct kvb_lx_node {
    uint64_t up, down;     /* keys; 0: none */
    struct kvb_ilink park; /* parked list links (open list); NONE when not parked */
};

struct kvb_lx {
    struct kvb_lx_ent *tab;
    struct kvb_lx_node *node; /* block_count entries */
    uint32_t block_count;
    uint32_t cap; /* table cells: KVB_LX_CELLS x block_count */
};

/* Table cells per block. Load <= 1/3 keeps probe runs short: at load 1/2 the
 * backward-shift erase walked about 5 cells per deletion, and lineage_arc's
 * replay ran about 8% slower (docs/eviction.md, Cost). */
#define KVB_LX_CELLS 3u

static inline size_t kvb_lx_table_cap(uint32_t block_count)
{
    return (size_t)block_count * KVB_LX_CELLS; /* < 2^32 for KVB_MAX_BLOCKS */
}

static inline size_t kvb_lx_bytes(uint32_t block_count)
{
    return kvb_lx_table_cap(block_count) * sizeof(struct kvb_lx_ent) +
           (size_t)block_count * sizeof(struct kvb_lx_node);
}

static inline void kvb_lx_fini(struct kvb_lx *x, const kvb_allocator *a)
{
    size_t n = x->block_count;
    kvb__free(a, x->tab, kvb_lx_table_cap(x->block_count) * sizeof *x->tab);
    kvb__free(a, x->node, n * sizeof *x->node);
    memset(x, 0, sizeof *x);
}

static inline void kvb_lx_clear(struct kvb_lx *x)
{
    size_t cap = kvb_lx_table_cap(x->block_count);
    for (size_t i = 0; i < cap; i++)
        x->tab[i] = (struct kvb_lx_ent){.key = 0, .kids = 0, .parked = KVB_LX_NONE};
}

/* 0 or -ENOMEM (then nothing is left allocated). block_count is validated by
 * the caller (1..KVB_MAX_BLOCKS). */
static inline int kvb_lx_init(struct kvb_lx *x, uint32_t block_count, const kvb_allocator *a)
{
    size_t n = block_count, cap = kvb_lx_table_cap(block_count);
    memset(x, 0, sizeof *x);
    x->block_count = block_count;
    x->cap = (uint32_t)cap;
    x->tab = kvb__alloc(a, cap * sizeof *x->tab);
    x->node = kvb__alloc(a, n * sizeof *x->node);
    if (!x->tab || !x->node) {
        kvb_lx_fini(x, a);
        return -ENOMEM;
    }
    kvb_lx_clear(x);
    return 0;
}

/* The keys of a hash (see the file comment). A mode-3 (invalid) hash is read
 * with the mode-2 layout, like the kvb_hash accessors do. */
static inline void kvb_lx_keys(kvb_hash h, uint64_t *up, uint64_t *down)
{
    uint32_t mode = (uint32_t)(h.hi >> 62);
    if (mode > 2)
        mode = 2;
    uint32_t r = 54 - 8 * mode;
    uint64_t rmask = (1ull << r) - 1;
    uint64_t pos = (h.hi >> r) & ((1ull << (62 - r)) - 1);
    uint64_t cur = (h.hi & rmask) << (64 - r) | h.lo >> r;
    uint64_t frag = h.lo & rmask;
    *up = pos == 0 ? 0 : ((uint64_t)mode << 62) | (pos << r) | frag;
    uint64_t cpos = pos + 1;
    if (cpos > KVB_HASH_MAX_POSITION) {
        *down = 0;
        return;
    }
    uint32_t cmode = cpos < 256 ? 0 : cpos < 65536 ? 1 : 2;
    uint32_t cr = 54 - 8 * cmode;
    /* the child's parent fragment: the low cr bits of our sequence hash, as
     * kvb_hash_child_fragment() computes it (inline: this runs on every insert) */
    *down = ((uint64_t)cmode << 62) | (cpos << cr) | (cur & ((1ull << cr) - 1));
}

/* Home cell: the top 32 bits of a multiplicative hash of the key, scaled to
 * the table (kvb__cell_of: the table needs no power-of-two size). */
static inline uint32_t kvb_lx_home(const struct kvb_lx *x, uint64_t key)
{
    return kvb__cell_of((uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32), x->cap);
}

/* Start loading the table cell where a lookup of key begins (0: nothing). */
static inline void kvb_lx_prefetch(const struct kvb_lx *x, uint64_t key)
{
    if (key)
        __builtin_prefetch(&x->tab[kvb_lx_home(x, key)]);
}

/* Table slot of key, or KVB_LX_NONE. */
static inline uint32_t kvb_lx_find(const struct kvb_lx *x, uint64_t key)
{
    for (uint32_t i = kvb_lx_home(x, key);; i = kvb__cell_next(i, x->cap)) {
        if (x->tab[i].key == key)
            return i;
        if (x->tab[i].key == 0)
            return KVB_LX_NONE;
    }
}

/* Table slot of key, inserted (kids 0, nothing parked) if absent. The load
 * bound guarantees a free slot. */
static inline uint32_t kvb_lx_get(struct kvb_lx *x, uint64_t key)
{
    uint32_t i = kvb_lx_home(x, key);
    for (;; i = kvb__cell_next(i, x->cap)) {
        if (x->tab[i].key == key)
            return i;
        if (x->tab[i].key == 0)
            break;
    }
    x->tab[i] = (struct kvb_lx_ent){.key = key, .kids = 0, .parked = KVB_LX_NONE};
    return i;
}

/* Erase the entry at slot i (backward-shift deletion: no tombstones). */
static inline void kvb_lx_erase(struct kvb_lx *x, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = kvb__cell_next(j, x->cap);
        if (x->tab[j].key == 0)
            break;
        uint32_t home = kvb_lx_home(x, x->tab[j].key);
        if (kvb__cell_dist(home, j, x->cap) >= kvb__cell_dist(i, j, x->cap)) {
            x->tab[i] = x->tab[j];
            i = j;
        }
    }
    x->tab[i] = (struct kvb_lx_ent){.key = 0, .kids = 0, .parked = KVB_LX_NONE};
}

/* Block id enters the cache with keys up, down (kvb_lx_keys() of its hash,
 * computed early by a caller that prefetches): record them and count it as a
 * child of its up key. */
static inline void kvb_lx_add_keys(struct kvb_lx *x, uint32_t id, uint64_t up, uint64_t down)
{
    struct kvb_lx_node *nd = &x->node[id];
    nd->up = up;
    nd->down = down;
    nd->park.prev = nd->park.next = KVB_LX_NONE;
    if (up)
        x->tab[kvb_lx_get(x, up)].kids++;
}

/* Block id enters the cache with hash h. */
static inline void kvb_lx_add(struct kvb_lx *x, uint32_t id, kvb_hash h)
{
    uint64_t up, down;
    kvb_lx_keys(h, &up, &down);
    kvb_lx_add_keys(x, id, up, down);
}

/* Block id comes back with the keys it had when it left (kvb_lx_del keeps
 * them): the undo of an eviction. */
static inline void kvb_lx_readd(struct kvb_lx *x, uint32_t id)
{
    struct kvb_lx_node *nd = &x->node[id];
    nd->park.prev = nd->park.next = KVB_LX_NONE;
    if (nd->up)
        x->tab[kvb_lx_get(x, nd->up)].kids++;
}

/* Whether a cached block has no cached child. */
static inline bool kvb_lx_is_leaf(const struct kvb_lx *x, uint32_t id)
{
    uint64_t down = x->node[id].down;
    if (!down)
        return true;
    uint32_t i = kvb_lx_find(x, down);
    return i == KVB_LX_NONE || x->tab[i].kids == 0;
}

/* Park a cached non-leaf on its down key (it must have children). */
static inline void kvb_lx_park(struct kvb_lx *x, uint32_t id)
{
    struct kvb_lx_node *nd = &x->node[id];
    uint32_t i = kvb_lx_find(x, nd->down);
    kvb_assert(i != KVB_LX_NONE && x->tab[i].kids > 0);
    if (i == KVB_LX_NONE)
        i = kvb_lx_get(x, nd->down); /* cannot happen; stay consistent anyway */
    kvb_ilist_open_push(KVB_ILIST(x->node, park), &x->tab[i].parked, id);
}

/* Take a parked block off its parked list (it is being removed). */
static inline void kvb_lx_unpark(struct kvb_lx *x, uint32_t id)
{
    struct kvb_ilist il = KVB_ILIST(x->node, park);
    uint32_t *first = NULL; /* the list's first index: looked up only when id is first */
    if (kvb_ilist_prev(il, id) == KVB_LX_NONE) {
        uint32_t i = kvb_lx_find(x, x->node[id].down);
        kvb_assert(i != KVB_LX_NONE && x->tab[i].parked == id);
        if (i != KVB_LX_NONE)
            first = &x->tab[i].parked;
    }
    kvb_ilist_open_remove(il, first, id);
}

/* Block id leaves the cache (it must not be parked: unpark it first; its keys
 * stay recorded for kvb_lx_readd). Returns
 * the first of the blocks that were parked on its up key and are leaves now
 * (follow kvb_lx_next_freed(); the list is detached, its links stale), or
 * KVB_LX_NONE. */
static inline uint32_t kvb_lx_del(struct kvb_lx *x, uint32_t id)
{
    uint64_t up = x->node[id].up;
    if (!up)
        return KVB_LX_NONE;
    uint32_t i = kvb_lx_find(x, up);
    kvb_assert(i != KVB_LX_NONE && x->tab[i].kids > 0);
    if (i == KVB_LX_NONE)
        return KVB_LX_NONE;
    if (--x->tab[i].kids > 0)
        return KVB_LX_NONE;
    uint32_t freed = x->tab[i].parked;
    kvb_lx_erase(x, i);
    return freed;
}

/* The block after f in a list returned by kvb_lx_del(). */
static inline uint32_t kvb_lx_next_freed(const struct kvb_lx *x, uint32_t f)
{
    return kvb_ilist_next(KVB_ILIST(x->node, park), f);
}

#endif /* KVB_LINEAGE_INDEX_H */
