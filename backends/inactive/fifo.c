/*
 * fifo.c - the "fifo" inactive index: smallest arrival evicted first.
 *
 * `arrival` is the content's first-registration number in the pool (see
 * kvblock/inactive.h): it survives INACTIVE -> PRIMARY -> INACTIVE round
 * trips, so a block that was hit (removed) and released again regains its old
 * place. That is what distinguishes fifo from lru, where a release always
 * goes to the MRU end.
 *
 * Algorithm: a binary min-heap of (arrival, id) entries plus a position array
 * indexed by block id (the textbook indexed priority queue, e.g. Sedgewick's
 * IndexMinPQ). The key order is
 *     a before b  <=>  (int32_t)(a.arrival - b.arrival) < 0,
 *                      or equal arrivals and a.id < b.id,
 * i.e. serial-number arithmetic on the wrapping uint32 arrival (exact while
 * the live arrivals span less than 2^31), ties broken by the lower id so the
 * order is deterministic. Keeping the key inside the heap entry makes a
 * sift touch contiguous memory; only pos[] is written at random.
 * insert, remove and evict are O(log n), contains and len O(1), drain O(len),
 * create O(block_count). Most inserts carry the newest arrival and stop at
 * once in sift-up.
 *
 * Invariants:
 *  - heap[0..len) is a min-heap under the order above;
 *  - pos[heap[i].id] == i for i < len, and pos[id] == KVB_FIFO_NONE for every
 *    absent id (so contains is one load);
 *  - len <= block_count, hence the heap never overflows.
 *
 * Memory: 12 bytes per block (an 8-byte heap entry and a 4-byte position),
 * plus the struct, all allocated at create through params->allocator; nothing
 * after create. Bad calls (id out of range, duplicate insert, absent remove)
 * return an error or false and change nothing (Dynamo's FIFO panics on a
 * duplicate insert instead). If a caller lets the live arrivals span 2^31 or
 * more, the order between the far-apart entries is unspecified but the
 * structure stays consistent.
 *
 * Not built (DESIGN.md section 6 mentions it): a reuse-policy hook that would
 * let a hit refresh the arrival. Today a caller gets that by passing a new
 * arrival to insert.
 *
 * Locking: none of its own; every method runs under the owning pool's mutex.
 */
#include "internal.h"

#include <string.h>

#define KVB_FIFO_NONE UINT32_MAX

struct kvb_fifo_entry {
    uint32_t arrival, id;
};

/* Every field is protected by the owning pool's mutex. */
struct kvb_fifo {
    struct kvb_fifo_entry *heap; /* block_count entries, [0, len) used */
    uint32_t *pos;               /* block_count entries: heap index or KVB_FIFO_NONE */
    uint32_t block_count;
    uint32_t len;
    kvb_allocator allocator; /* what heap, pos and this struct were allocated with */
};

/* Serial-number order on arrivals, then id. */
static bool kvb_fifo_before(struct kvb_fifo_entry a, struct kvb_fifo_entry b)
{
    if (a.arrival != b.arrival)
        return ((a.arrival - b.arrival) & 0x80000000u) != 0; /* (int32_t)(a - b) < 0 */
    return a.id < b.id;
}

static int kvb_fifo_create(const kvb_inactive_params *params, void **out)
{
    if (!params || !out || params->block_count == 0 || params->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    kvb_allocator a = params->allocator;
    kvb__allocator_fill(&a);
    size_t n = params->block_count;

    struct kvb_fifo *f = kvb__alloc(&a, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->allocator = a;
    f->block_count = params->block_count;
    f->len = 0;
    f->heap = kvb__alloc(&a, n * sizeof *f->heap);
    f->pos = kvb__alloc(&a, n * sizeof *f->pos);
    if (!f->heap || !f->pos) {
        kvb__free(&a, f->heap, n * sizeof *f->heap);
        kvb__free(&a, f->pos, n * sizeof *f->pos);
        kvb__free(&a, f, sizeof *f);
        return -ENOMEM;
    }
    memset(f->pos, 0xff, n * sizeof *f->pos); /* every id absent */
    *out = f;
    return 0;
}

static void kvb_fifo_destroy(void *self)
{
    struct kvb_fifo *f = self;
    if (!f)
        return;
    kvb_allocator a = f->allocator;
    size_t n = f->block_count;
    kvb__free(&a, f->heap, n * sizeof *f->heap);
    kvb__free(&a, f->pos, n * sizeof *f->pos);
    kvb__free(&a, f, sizeof *f);
}

/* Store e at heap index i and record its position. */
static void kvb_fifo_put(struct kvb_fifo *f, uint32_t i, struct kvb_fifo_entry e)
{
    f->heap[i] = e;
    f->pos[e.id] = i;
}

/* Move e up from hole i to its place. */
static void kvb_fifo_sift_up(struct kvb_fifo *f, uint32_t i, struct kvb_fifo_entry e)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!kvb_fifo_before(e, f->heap[parent]))
            break;
        kvb_fifo_put(f, i, f->heap[parent]);
        i = parent;
    }
    kvb_fifo_put(f, i, e);
}

/* Move e down from hole i to its place (heap size f->len). */
static void kvb_fifo_sift_down(struct kvb_fifo *f, uint32_t i, struct kvb_fifo_entry e)
{
    uint32_t n = f->len;
    for (;;) {
        /* len <= 2^30, so 2 * i + 2 cannot overflow */
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && kvb_fifo_before(f->heap[c + 1], f->heap[c]))
            c++;
        if (!kvb_fifo_before(f->heap[c], e))
            break;
        kvb_fifo_put(f, i, f->heap[c]);
        i = c;
    }
    kvb_fifo_put(f, i, e);
}

/* Take the entry at heap index i out and mark its id absent. */
static void kvb_fifo_delete_at(struct kvb_fifo *f, uint32_t i)
{
    f->pos[f->heap[i].id] = KVB_FIFO_NONE;
    struct kvb_fifo_entry last = f->heap[--f->len];
    if (i == f->len)
        return; /* it was the last entry */
    /* Fill the hole with the last entry, which may need to go either way. */
    if (i > 0 && kvb_fifo_before(last, f->heap[(i - 1) / 2]))
        kvb_fifo_sift_up(f, i, last);
    else
        kvb_fifo_sift_down(f, i, last);
}

static bool kvb_fifo_present(const struct kvb_fifo *f, uint32_t id)
{
    return id < f->block_count && f->pos[id] != KVB_FIFO_NONE;
}

static void kvb_fifo_push(struct kvb_fifo *f, uint32_t id, uint32_t arrival)
{
    struct kvb_fifo_entry e = {.arrival = arrival, .id = id};
    kvb_fifo_sift_up(f, f->len++, e);
}

static int kvb_fifo_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct kvb_fifo *f = self;
    (void)hash;
    if (id >= f->block_count)
        return -EINVAL;
    if (f->pos[id] != KVB_FIFO_NONE)
        return -EEXIST;
    kvb_fifo_push(f, id, arrival);
    return 0;
}

static bool kvb_fifo_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct kvb_fifo *f = self;
    (void)hash;
    if (!kvb_fifo_present(f, id))
        return false;
    kvb_fifo_delete_at(f, f->pos[id]);
    return true;
}

static bool kvb_fifo_contains(const void *self, uint32_t id)
{
    return kvb_fifo_present(self, id);
}

static uint32_t kvb_fifo_evict(void *self, uint32_t n, uint32_t *out)
{
    struct kvb_fifo *f = self;
    if (!out)
        return 0;
    uint32_t k = 0;
    while (k < n && f->len > 0) {
        out[k++] = f->heap[0].id;
        kvb_fifo_delete_at(f, 0);
    }
    return k;
}

static uint32_t kvb_fifo_len(const void *self)
{
    const struct kvb_fifo *f = self;
    return f->len;
}

static void kvb_fifo_drain(void *self)
{
    struct kvb_fifo *f = self;
    for (uint32_t i = 0; i < f->len; i++)
        f->pos[f->heap[i].id] = KVB_FIFO_NONE;
    f->len = 0;
}

/* Reinsert the entries of the last evict with their own arrivals: ordering is
 * by arrival, so this restores the exact state. Without arrivals (NULL) they
 * get arrivals just below the current minimum, in the given order, which
 * still makes the next evict return them first and in that order. Ids out of
 * range or already present (a caller bug) are skipped. */
static void kvb_fifo_unevict(void *self, const uint32_t *ids, const kvb_hash *hashes,
                             const uint32_t *arrivals, uint32_t n)
{
    struct kvb_fifo *f = self;
    (void)hashes;
    if (!ids)
        return;
    uint32_t base = f->len > 0 ? f->heap[0].arrival - n : 0u - n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = ids[i];
        if (id < f->block_count && f->pos[id] == KVB_FIFO_NONE)
            kvb_fifo_push(f, id, arrivals ? arrivals[i] : base + i);
    }
}

static size_t kvb_fifo_memory(const void *self)
{
    const struct kvb_fifo *f = self;
    return sizeof *f + (size_t)f->block_count * (sizeof *f->heap + sizeof *f->pos);
}

const kvb_inactive_ops kvb_inactive_fifo = {
    .version = KVB_INACTIVE_OPS_VERSION,
    .name = "fifo",
    .create = kvb_fifo_create,
    .destroy = kvb_fifo_destroy,
    .insert = kvb_fifo_insert,
    .remove = kvb_fifo_remove,
    .contains = kvb_fifo_contains,
    .evict = kvb_fifo_evict,
    .len = kvb_fifo_len,
    .drain = kvb_fifo_drain,
    .unevict = kvb_fifo_unevict,
    .memory = kvb_fifo_memory,
};
