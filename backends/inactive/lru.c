/*
 * lru.c - the "lru" inactive index: least recently inserted (released) first.
 *
 * Algorithm: an intrusive circular doubly linked list (ilist.h) threaded
 * through one array of {prev, next} links indexed by block id (Linux list.h
 * style, the node lives in the per-block slot). Index block_count is the list
 * head, a sentinel that is never a block. The head's next is the LRU end (evicted
 * first); insert appends at the MRU end (head's prev). Blocks in the cache are
 * never touched: a hit takes them out (remove), and their next release
 * inserts them again at the MRU end. Every operation is O(1) except drain,
 * which is O(len); create is O(block_count).
 *
 * Invariants (checked by tests/test_inactive.c, never by the pool):
 *  - id is present  <=>  link[id].prev != KVB_LRU_NONE (and then next is too);
 *  - absent ids have prev == next == KVB_LRU_NONE;
 *  - following next from the head visits exactly len present ids and returns
 *    to the head; prev is the exact reverse.
 *
 * Memory: 8 bytes per block (two uint32_t) plus one head link and the struct,
 * all allocated at create through params->allocator; nothing after create.
 * Bad calls (id out of range, duplicate insert, absent remove) return an
 * error or false and change nothing (Dynamo's LRU asserts there instead).
 *
 * Locking: none of its own; every method runs under the owning pool's mutex
 * (kvblock/inactive.h).
 */
#include "ilist.h"
#include "internal.h"

#include <string.h>

#define KVB_LRU_NONE KVB_ILIST_NONE

/* Every field is protected by the owning pool's mutex. */
struct kvb_lru {
    struct kvb_ilink *link;  /* block_count + 1 entries; [head] is the sentinel */
    uint32_t head;           /* == block_count */
    uint32_t len;            /* number of present ids */
    kvb_allocator allocator; /* what link and this struct were allocated with */
};

static size_t kvb_lru_link_bytes(uint32_t block_count)
{
    return ((size_t)block_count + 1) * sizeof(struct kvb_ilink);
}

static int kvb_lru_create(const kvb_inactive_params *params, void **out)
{
    if (!params || !out || params->block_count == 0 || params->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    kvb_allocator a = params->allocator;
    kvb__allocator_fill(&a);

    struct kvb_lru *l = kvb__alloc(&a, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->allocator = a;
    l->head = params->block_count;
    l->len = 0;
    l->link = kvb__alloc(&a, kvb_lru_link_bytes(params->block_count));
    if (!l->link) {
        kvb__free(&a, l, sizeof *l);
        return -ENOMEM;
    }
    /* Every block absent (all bits set = KVB_LRU_NONE); the head points at itself. */
    memset(l->link, 0xff, kvb_lru_link_bytes(params->block_count));
    kvb_ilist_init(KVB_ILIST_LINKS(l->link), l->head);
    *out = l;
    return 0;
}

static void kvb_lru_destroy(void *self)
{
    struct kvb_lru *l = self;
    if (!l)
        return;
    kvb_allocator a = l->allocator;
    kvb__free(&a, l->link, kvb_lru_link_bytes(l->head));
    kvb__free(&a, l, sizeof *l);
}

static bool kvb_lru_present(const struct kvb_lru *l, uint32_t id)
{
    return id < l->head && l->link[id].prev != KVB_LRU_NONE;
}

/* Unlink present id and mark it absent. */
static void kvb_lru_unlink(struct kvb_lru *l, uint32_t id)
{
    kvb_ilist_remove(KVB_ILIST_LINKS(l->link), id);
    l->link[id].prev = KVB_LRU_NONE;
    l->link[id].next = KVB_LRU_NONE;
    l->len--;
}

static int kvb_lru_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct kvb_lru *l = self;
    (void)hash;
    (void)arrival;
    if (id >= l->head)
        return -EINVAL;
    if (kvb_lru_present(l, id))
        return -EEXIST;
    kvb_ilist_push_tail(KVB_ILIST_LINKS(l->link), l->head, id); /* MRU end */
    l->len++;
    return 0;
}

static bool kvb_lru_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct kvb_lru *l = self;
    (void)hash;
    if (!kvb_lru_present(l, id))
        return false;
    kvb_lru_unlink(l, id);
    return true;
}

static bool kvb_lru_contains(const void *self, uint32_t id)
{
    return kvb_lru_present(self, id);
}

static uint32_t kvb_lru_evict(void *self, uint32_t n, uint32_t *out)
{
    struct kvb_lru *l = self;
    if (!out)
        return 0;
    uint32_t k = 0;
    while (k < n && l->len > 0) {
        uint32_t id = kvb_ilist_first(KVB_ILIST_LINKS(l->link), l->head); /* LRU end */
        kvb_lru_unlink(l, id);
        out[k++] = id;
    }
    return k;
}

static uint32_t kvb_lru_len(const void *self)
{
    const struct kvb_lru *l = self;
    return l->len;
}

static void kvb_lru_drain(void *self)
{
    struct kvb_lru *l = self;
    struct kvb_ilist il = KVB_ILIST_LINKS(l->link);
    KVB_ILIST_FOREACH_SAFE(il, l->head, id) {
        l->link[id].prev = KVB_LRU_NONE;
        l->link[id].next = KVB_LRU_NONE;
    }
    kvb_ilist_init(il, l->head);
    l->len = 0;
}

/* Put ids (in the order evict returned them) back at the LRU end: pushing them
 * to the front from last to first leaves ids[0] first. Ids out of range or
 * already present (not from the last evict: a caller bug) are skipped. */
static void kvb_lru_unevict(void *self, const uint32_t *ids, const kvb_hash *hashes,
                            const uint32_t *arrivals, uint32_t n)
{
    struct kvb_lru *l = self;
    (void)hashes;
    (void)arrivals;
    if (!ids)
        return;
    for (uint32_t i = n; i-- > 0;) {
        uint32_t id = ids[i];
        if (id < l->head && !kvb_lru_present(l, id)) {
            kvb_ilist_push_head(KVB_ILIST_LINKS(l->link), l->head, id);
            l->len++;
        }
    }
}

static size_t kvb_lru_memory(const void *self)
{
    const struct kvb_lru *l = self;
    return sizeof *l + kvb_lru_link_bytes(l->head);
}

const kvb_inactive_ops kvb_inactive_lru = {
    .version = KVB_INACTIVE_OPS_VERSION,
    .name = "lru",
    .create = kvb_lru_create,
    .destroy = kvb_lru_destroy,
    .insert = kvb_lru_insert,
    .remove = kvb_lru_remove,
    .contains = kvb_lru_contains,
    .evict = kvb_lru_evict,
    .len = kvb_lru_len,
    .drain = kvb_lru_drain,
    .unevict = kvb_lru_unevict,
    .memory = kvb_lru_memory,
};
