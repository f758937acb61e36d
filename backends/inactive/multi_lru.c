/*
 * multi_lru.c - the "multi_lru" inactive index: four LRU levels chosen by
 * frequency; the coldest level is drained first.
 *
 * Source: the multi-level LRU of NVIDIA Dynamo's kvbm-logical, with its
 * defect fixed (DESIGN.md section 10): Dynamo picks a block's level once and
 * never moves it; here the level is recomputed on every insert, so a block's
 * level always reflects its frequency at its latest release.
 *
 * Levels: at insert, the block's TinyLFU estimate f (0..15, from
 * params->frequency; 0 for every block when the pool has no sketch) gives
 * level = the number of thresholds t with t <= f: with the default 3/8/15,
 * f 0..2 -> 0, 3..7 -> 1, 8..14 -> 2, 15 -> 3. Thresholds must be ascending
 * (strictly) in 1..15, else create is -EINVAL. evict takes the LRU end of the
 * lowest non-empty level; within a level, least recently released first.
 * The estimate is read once per insert (the frequency callback is lock-free
 * and pure); blocks are not re-levelled while they sit in the cache (their
 * counts only change through hits, which take them out, or through the
 * sketch's aging, which lowers every count alike).
 *
 * Structure: an ilist.h list set (Linux list.h style): one array of {prev,
 * next} links indexed by block id with four sentinels at block_count + level,
 * a level byte per block (its tag), and a 4-bit mask of non-empty levels so
 * evict finds the coldest one with one count-trailing-zeros. Every operation is O(1) except drain
 * (O(len)) and create (O(block_count)).
 *
 * Invariants: the tag of id is < 4 iff id is present, and then it is on list
 * tag; an absent id has the KVB_ILIST_SET_OFF bit set (its low bits keep the
 * level it was evicted from, for unevict); nonempty bit l is set iff list l
 * is non-empty; len is the number of present ids.
 *
 * Memory: 9 bytes per block plus four sentinels, allocated at create; nothing
 * after. Bad calls return an error or false and change nothing.
 *
 * Locking: none of its own; every method runs under the owning pool's mutex.
 */
#include "ilist.h"
#include "internal.h"

#include <string.h>

#define KVB_MLRU_LEVELS 4 /* <= KVB_ILIST_SET_MAX */

/* Every field is protected by the owning pool's mutex. */
struct kvb_mlru {
    /* the levels: links (block_count + 4 entries, sentinels at block_count + l)
     * and tags (per block: 0..3 present; KVB_ILIST_SET_OFF | last level) */
    struct kvb_ilist_set lv;
    uint32_t block_count, len;
    uint32_t nonempty; /* bit l: level l has entries */
    uint8_t thresholds[3];
    uint32_t (*frequency)(void *ctx, kvb_hash hash);
    void *frequency_ctx;
    kvb_allocator allocator;
};

static size_t kvb_mlru_link_bytes(uint32_t bc)
{
    return ((size_t)bc + KVB_MLRU_LEVELS) * sizeof(struct kvb_ilink);
}

static int kvb_mlru_create(const kvb_inactive_params *params, void **out)
{
    if (!params || !out || params->block_count == 0 || params->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    const uint8_t *t = params->thresholds;
    if (t[0] < 1 || t[0] >= t[1] || t[1] >= t[2] || t[2] > 15)
        return -EINVAL;
    kvb_allocator a = params->allocator;
    kvb__allocator_fill(&a);
    struct kvb_mlru *m = kvb__calloc(&a, 1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->allocator = a;
    m->block_count = params->block_count;
    memcpy(m->thresholds, t, 3);
    m->frequency = params->frequency;
    m->frequency_ctx = params->frequency_ctx;
    struct kvb_ilink *link = kvb__alloc(&a, kvb_mlru_link_bytes(m->block_count));
    uint8_t *level = kvb__alloc(&a, m->block_count);
    if (!link || !level) {
        kvb__free(&a, link, kvb_mlru_link_bytes(m->block_count));
        kvb__free(&a, level, m->block_count);
        kvb__free(&a, m, sizeof *m);
        return -ENOMEM;
    }
    kvb_ilist_set_init(&m->lv, link, level, m->block_count, KVB_MLRU_LEVELS);
    *out = m;
    return 0;
}

static void kvb_mlru_destroy(void *self)
{
    struct kvb_mlru *m = self;
    if (!m)
        return;
    kvb_allocator a = m->allocator;
    kvb__free(&a, m->lv.link, kvb_mlru_link_bytes(m->block_count));
    kvb__free(&a, m->lv.tag, m->block_count);
    kvb__free(&a, m, sizeof *m);
}

static bool kvb_mlru_present(const struct kvb_mlru *m, uint32_t id)
{
    return kvb_ilist_set_on(&m->lv, id);
}

/* Link absent id in level l: at its MRU end, or its LRU end when lru_end. */
static void kvb_mlru_link(struct kvb_mlru *m, uint32_t id, uint32_t l, bool lru_end)
{
    kvb_ilist_set_link(&m->lv, id, l, lru_end);
    m->nonempty |= 1u << l;
    m->len++;
}

static inline void kvb_mlru_unlink(struct kvb_mlru *m, uint32_t id)
{
    uint32_t l = kvb_ilist_set_unlink(&m->lv, id);
    if (m->lv.count[l] == 0)
        m->nonempty &= ~(1u << l);
    m->len--;
}

static uint32_t kvb_mlru_level_of(const struct kvb_mlru *m, kvb_hash hash)
{
    uint32_t f = m->frequency ? m->frequency(m->frequency_ctx, hash) : 0;
    return (f >= m->thresholds[0]) + (f >= m->thresholds[1]) + (f >= m->thresholds[2]);
}

static int kvb_mlru_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct kvb_mlru *m = self;
    (void)arrival;
    if (id >= m->block_count)
        return -EINVAL;
    if (kvb_mlru_present(m, id))
        return -EEXIST;
    kvb_mlru_link(m, id, kvb_mlru_level_of(m, hash), false); /* MRU end of its level */
    return 0;
}

static bool kvb_mlru_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct kvb_mlru *m = self;
    (void)hash;
    if (!kvb_mlru_present(m, id))
        return false;
    kvb_mlru_unlink(m, id);
    return true;
}

static bool kvb_mlru_contains(const void *self, uint32_t id)
{
    return kvb_mlru_present(self, id);
}

static uint32_t kvb_mlru_evict(void *self, uint32_t n, uint32_t *out)
{
    struct kvb_mlru *m = self;
    if (!out)
        return 0;
    uint32_t k = 0;
    while (k < n && m->nonempty) {
        uint32_t l = (uint32_t)__builtin_ctz(m->nonempty); /* coldest non-empty level */
        uint32_t id = kvb_ilist_first(kvb_ilist_set_view(&m->lv), m->block_count + l); /* LRU end */
        kvb_mlru_unlink(m, id);
        out[k++] = id;
    }
    return k;
}

static uint32_t kvb_mlru_len(const void *self)
{
    const struct kvb_mlru *m = self;
    return m->len;
}

static void kvb_mlru_drain(void *self)
{
    struct kvb_mlru *m = self;
    kvb_ilist_set_drain(&m->lv);
    m->nonempty = 0;
    m->len = 0;
}

/* Put the entries of the last evict back at the LRU end of the levels they
 * were evicted from (kept in their tags' low bits), last first, so the next
 * evict returns them again in the same order and the state is what it was.
 * Ids out of range or present (not from the last evict) are skipped. */
static void kvb_mlru_unevict(void *self, const uint32_t *ids, const kvb_hash *hashes,
                             const uint32_t *arrivals, uint32_t n)
{
    struct kvb_mlru *m = self;
    (void)hashes;
    (void)arrivals;
    if (!ids)
        return;
    for (uint32_t i = n; i-- > 0;) {
        uint32_t id = ids[i];
        if (id >= m->block_count || kvb_mlru_present(m, id))
            continue;
        uint32_t l = KVB_ILIST_SET_LIST(m->lv.tag[id]);
        kvb_mlru_link(m, id, l, true);
    }
}

static size_t kvb_mlru_memory(const void *self)
{
    const struct kvb_mlru *m = self;
    return sizeof *m + kvb_mlru_link_bytes(m->block_count) + m->block_count;
}

const kvb_inactive_ops kvb_inactive_multi_lru = {
    .version = KVB_INACTIVE_OPS_VERSION,
    .name = "multi_lru",
    .create = kvb_mlru_create,
    .destroy = kvb_mlru_destroy,
    .insert = kvb_mlru_insert,
    .remove = kvb_mlru_remove,
    .contains = kvb_mlru_contains,
    .evict = kvb_mlru_evict,
    .len = kvb_mlru_len,
    .drain = kvb_mlru_drain,
    .unevict = kvb_mlru_unevict,
    .memory = kvb_mlru_memory,
    .flags = KVB_INACTIVE_F_FREQUENCY,
};
