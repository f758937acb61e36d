/*
 * lineage.c - the "lineage" inactive index: prefix-aware LRU. Only leaves of
 * the prefix tree of cached blocks are evicted (a parent never goes before its
 * cached descendants, so no cached block is ever stranded behind a missing
 * prefix), and among the leaves the least recently released goes first.
 *
 * Why: a prefix match stops at the first miss, so a cached block whose parent
 * was evicted can never be matched again; it only wastes a slot. Plain LRU
 * gets this right only when every sequence releases its blocks deepest first;
 * lineage guarantees it whatever the release order. On the Mooncake prefix
 * replay (released last block first) it gives exactly LRU's hits, which is
 * the expected result: the tree order and the release order agree there.
 *
 * Algorithm: every cached block gets a release stamp (a per-instance counter,
 * compared as serial numbers). New releases are appended to a list (ilist.h), which is
 * therefore sorted by stamp (the LRU end first). Blocks that come back with an
 * old stamp (a parked block that became a leaf, a block put back by unevict)
 * go to a binary min-heap by stamp instead. evict takes the older of the list
 * head and the heap top: a leaf is evicted; a block that still has cached
 * children is *parked* on its down key (lineage_index.h) and skipped. When the
 * last child of a parked block leaves, the block is a leaf again and enters
 * the heap. A remove (hit) takes the block out of wherever it is. The
 * resulting order is exactly "the leaf with the oldest release stamp first",
 * a function of the cached set alone, which is what makes unevict exact: it
 * re-adds the blocks with their old stamps.
 *
 * Cost: insert, contains, len O(1); remove O(1), or O(log h) for a block in
 * the heap (h = blocks in the heap); evict O(1) amortized per block when
 * releases come children first, as a sequence releases its blocks (nothing is
 * ever parked then: a parent is released after its children and reaches the
 * head after them); otherwise each parking is paid by the child insertion
 * that caused it, and a returning block costs O(log h). With massive key
 * collisions (hashes whose sequence hashes differ only above the fragment,
 * e.g. constructed ones) one child can keep many blocks parked; the cost per
 * operation then grows with the colliding group, never beyond O(n log n) for
 * a group of n. drain and create O(block_count). See lineage_index.h for the
 * keys, collisions and the table sized at create.
 *
 * Invariants:
 *  - state[id] is ABSENT, LISTED (stamp-sorted list), HEAPED or PARKED;
 *  - every leaf is LISTED or HEAPED; a PARKED block has a cached child;
 *  - the list is sorted by stamp; heap[0] has the oldest stamp of the heap;
 *    hpos[heap[i]] == i; len counts every present block.
 *
 * Memory: 93 bytes per block (lineage_index.h plus list links, heap
 * slot and position, stamp and state), allocated at create; nothing after. Bad calls return an
 * error or false and change nothing.
 *
 * Locking: none of its own; every method runs under the owning pool's mutex.
 */
#include "ilist.h"
#include "internal.h"
#include "lineage_index.h"

#include <string.h>

enum { KVB_LIN_ABSENT = 0, KVB_LIN_LISTED, KVB_LIN_HEAPED, KVB_LIN_PARKED };

/* Every field is protected by the owning pool's mutex. */
struct kvb_lineage {
    struct kvb_lx lx;
    struct kvb_ilink *link; /* block_count + 1 entries; [head] is the list sentinel */
    uint32_t *stamp;        /* release stamp per block (kept after eviction, for unevict) */
    uint32_t *heap;         /* [0, hlen): HEAPED ids, min-heap by stamp */
    uint32_t *hpos;         /* heap index of a HEAPED id */
    uint8_t *state;
    uint32_t head; /* == block_count */
    uint32_t clock, len, hlen;
    kvb_allocator allocator;
};

static size_t kvb_lin_arrays_bytes(uint32_t bc)
{
    return ((size_t)bc + 1) * sizeof(struct kvb_ilink) + (size_t)bc * (3 * sizeof(uint32_t) + 1);
}

static void kvb_lin_free(struct kvb_lineage *l)
{
    kvb_allocator a = l->allocator;
    size_t n = l->head;
    kvb_lx_fini(&l->lx, &a);
    kvb__free(&a, l->link, (n + 1) * sizeof *l->link);
    kvb__free(&a, l->stamp, n * sizeof *l->stamp);
    kvb__free(&a, l->heap, n * sizeof *l->heap);
    kvb__free(&a, l->hpos, n * sizeof *l->hpos);
    kvb__free(&a, l->state, n);
    kvb__free(&a, l, sizeof *l);
}

static int kvb_lin_create(const kvb_inactive_params *params, void **out)
{
    if (!params || !out || params->block_count == 0 || params->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    kvb_allocator a = params->allocator;
    kvb__allocator_fill(&a);
    size_t n = params->block_count;
    struct kvb_lineage *l = kvb__calloc(&a, 1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->allocator = a;
    l->head = params->block_count;
    int rc = kvb_lx_init(&l->lx, params->block_count, &a);
    l->link = kvb__alloc(&a, (n + 1) * sizeof *l->link);
    l->stamp = kvb__calloc(&a, n, sizeof *l->stamp);
    l->heap = kvb__alloc(&a, n * sizeof *l->heap);
    l->hpos = kvb__alloc(&a, n * sizeof *l->hpos);
    l->state = kvb__calloc(&a, n, 1);
    if (rc || !l->link || !l->stamp || !l->heap || !l->hpos || !l->state) {
        kvb_lin_free(l);
        return -ENOMEM;
    }
    kvb_ilist_init(KVB_ILIST_LINKS(l->link), l->head);
    *out = l;
    return 0;
}

static void kvb_lin_destroy(void *self)
{
    if (self)
        kvb_lin_free(self);
}

/* a's stamp is older than b's (serial-number order). */
static bool kvb_lin_older(const struct kvb_lineage *l, uint32_t a, uint32_t b)
{
    return ((l->stamp[a] - l->stamp[b]) & 0x80000000u) != 0;
}

/* ---- the heap of blocks with old stamps ---- */

static void kvb_lin_hset(struct kvb_lineage *l, uint32_t i, uint32_t id)
{
    l->heap[i] = id;
    l->hpos[id] = i;
}

static void kvb_lin_sift_up(struct kvb_lineage *l, uint32_t i, uint32_t id)
{
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!kvb_lin_older(l, id, l->heap[p]))
            break;
        kvb_lin_hset(l, i, l->heap[p]);
        i = p;
    }
    kvb_lin_hset(l, i, id);
}

static void kvb_lin_sift_down(struct kvb_lineage *l, uint32_t i, uint32_t id)
{
    for (;;) {
        uint32_t c = 2 * i + 1; /* hlen <= 2^30: no overflow */
        if (c >= l->hlen)
            break;
        if (c + 1 < l->hlen && kvb_lin_older(l, l->heap[c + 1], l->heap[c]))
            c++;
        if (!kvb_lin_older(l, l->heap[c], id))
            break;
        kvb_lin_hset(l, i, l->heap[c]);
        i = c;
    }
    kvb_lin_hset(l, i, id);
}

/* A leaf with an old stamp (returned from parking, or unevicted) enters the heap. */
static void kvb_lin_hpush(struct kvb_lineage *l, uint32_t id)
{
    l->state[id] = KVB_LIN_HEAPED;
    kvb_lin_sift_up(l, l->hlen++, id);
}

static void kvb_lin_hdel(struct kvb_lineage *l, uint32_t id)
{
    uint32_t i = l->hpos[id];
    uint32_t last = l->heap[--l->hlen];
    if (i == l->hlen)
        return;
    if (i > 0 && kvb_lin_older(l, last, l->heap[(i - 1) / 2]))
        kvb_lin_sift_up(l, i, last);
    else
        kvb_lin_sift_down(l, i, last);
}

/* id leaves the cache (already off the list or the parked list): update the
 * tree and return the blocks that became leaves to the list. */
static void kvb_lin_gone(struct kvb_lineage *l, uint32_t id)
{
    l->state[id] = KVB_LIN_ABSENT;
    l->len--;
    for (uint32_t f = kvb_lx_del(&l->lx, id); f != KVB_LX_NONE;) {
        uint32_t nx = kvb_lx_next_freed(&l->lx, f);
        kvb_lin_hpush(l, f);
        f = nx;
    }
}

static int kvb_lin_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct kvb_lineage *l = self;
    (void)arrival;
    if (id >= l->head)
        return -EINVAL;
    if (l->state[id] != KVB_LIN_ABSENT)
        return -EEXIST;
    kvb_lx_add(&l->lx, id, hash);
    l->stamp[id] = ++l->clock;
    kvb_ilist_push_tail(KVB_ILIST_LINKS(l->link), l->head, id); /* MRU end */
    l->state[id] = KVB_LIN_LISTED;
    l->len++;
    return 0;
}

static bool kvb_lin_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct kvb_lineage *l = self;
    (void)hash;
    if (id >= l->head || l->state[id] == KVB_LIN_ABSENT)
        return false;
    if (l->state[id] == KVB_LIN_PARKED)
        kvb_lx_unpark(&l->lx, id);
    else if (l->state[id] == KVB_LIN_HEAPED)
        kvb_lin_hdel(l, id);
    else
        kvb_ilist_remove(KVB_ILIST_LINKS(l->link), id);
    kvb_lin_gone(l, id);
    return true;
}

static bool kvb_lin_contains(const void *self, uint32_t id)
{
    const struct kvb_lineage *l = self;
    return id < l->head && l->state[id] != KVB_LIN_ABSENT;
}

static uint32_t kvb_lin_evict(void *self, uint32_t n, uint32_t *out)
{
    struct kvb_lineage *l = self;
    if (!out)
        return 0;
    uint32_t k = 0;
    while (k < n && l->len > 0) {
        uint32_t id = kvb_ilist_first(KVB_ILIST_LINKS(l->link), l->head);
        if (l->hlen > 0 && (id == l->head || kvb_lin_older(l, l->heap[0], id))) {
            id = l->heap[0];
            kvb_lin_hdel(l, id);
        } else if (id != l->head) {
            kvb_ilist_remove(KVB_ILIST_LINKS(l->link), id);
        } else {
            /* len > 0 implies a leaf in the list or the heap: the deepest cached
             * block is a leaf and leaves are never parked. Keeps a bug from looping. */
            kvb_assert(0);
            break;
        }
        if (!kvb_lx_is_leaf(&l->lx, id)) {
            kvb_lx_park(&l->lx, id);
            l->state[id] = KVB_LIN_PARKED;
            continue;
        }
        kvb_lin_gone(l, id);
        out[k++] = id;
    }
    return k;
}

static uint32_t kvb_lin_len(const void *self)
{
    const struct kvb_lineage *l = self;
    return l->len;
}

static void kvb_lin_drain(void *self)
{
    struct kvb_lineage *l = self;
    memset(l->state, 0, l->head);
    kvb_lx_clear(&l->lx);
    kvb_ilist_init(KVB_ILIST_LINKS(l->link), l->head);
    l->len = 0;
    l->hlen = 0;
}

/* Re-add the blocks of the last evict with their old stamps (kept in stamp[]):
 * the cached set, stamps and tree are then what they were, and the order is a
 * function of those, so the next evict returns the same blocks in the same
 * order. Ids out of range or present (not from the last evict) are skipped. */
static void kvb_lin_unevict(void *self, const uint32_t *ids, const kvb_hash *hashes,
                            const uint32_t *arrivals, uint32_t n)
{
    struct kvb_lineage *l = self;
    (void)arrivals;
    if (!ids || !hashes)
        return;
    for (uint32_t i = n; i-- > 0;) {
        uint32_t id = ids[i];
        if (id >= l->head || l->state[id] != KVB_LIN_ABSENT)
            continue;
        kvb_lx_add(&l->lx, id, hashes[i]);
        kvb_lin_hpush(l, id);
        l->len++;
    }
}

static size_t kvb_lin_memory(const void *self)
{
    const struct kvb_lineage *l = self;
    return sizeof *l + kvb_lx_bytes(l->head) + kvb_lin_arrays_bytes(l->head);
}

const kvb_inactive_ops kvb_inactive_lineage = {
    .version = KVB_INACTIVE_OPS_VERSION,
    .name = "lineage",
    .create = kvb_lin_create,
    .destroy = kvb_lin_destroy,
    .insert = kvb_lin_insert,
    .remove = kvb_lin_remove,
    .contains = kvb_lin_contains,
    .evict = kvb_lin_evict,
    .len = kvb_lin_len,
    .drain = kvb_lin_drain,
    .unevict = kvb_lin_unevict,
    .memory = kvb_lin_memory,
};
