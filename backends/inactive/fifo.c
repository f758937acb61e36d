/*
 * fifo.c - the "fifo" inactive index: smallest arrival evicted first.
 *
 * `arrival` is the content's first-registration number in the pool (see
 * kvblock/inactive.h): it survives INACTIVE -> PRIMARY -> INACTIVE round
 * trips, so a block that was hit (removed) and released again regains its old
 * place. That is what distinguishes fifo from lru, where a release always
 * goes to the MRU end.
 *
 * The order: a before b  <=>  (int32_t)(a.arrival - b.arrival) < 0, or equal
 * arrivals and a.id < b.id, i.e. serial-number arithmetic on the wrapping
 * uint32 arrival (exact while the live arrivals span less than 2^31), ties
 * broken by the lower id so the order is deterministic.
 *
 * Algorithm: a list (ilist.h) sorted by that order, plus a binary min-heap for what
 * cannot go on the list. In a pool almost every insert is either new content
 * (the newest arrival: appended to the list's tail, or, when a request's
 * blocks are released last first, linked just before the block linked by the
 * previous insert) or a block released again after a hit (its old arrival).
 * A hit does not take a block off the list: it stays linked, marked absent,
 * so its release only marks it present again, in place. An absent block that
 * reaches the head when evict looks there is unlinked then (it is still in
 * use); when it comes back, and for any other insert that is not the newest
 * (unevict, a caller's own arrivals), the entry goes on the heap (the
 * textbook indexed priority queue, e.g. Sedgewick's IndexMinPQ, with a
 * position array by block id). evict takes the smaller of the heap's top and
 * the list's first present block: both structures are ordered, so that is the
 * global minimum, the same sequence a single heap gives. The heap alone (its
 * first version) spent 43% of the replay in the 13-level sift-down of every
 * eviction (183 ns per block reference against lru's 98); the list makes the
 * common eviction O(1).
 *
 * Cost: insert, remove O(1) on the list, O(log h) for the h entries on the
 * heap; evict O(1) amortized (an absent block is unlinked at most once per
 * hit) or O(log h) from the heap; contains, len O(1); drain O(block_count);
 * create O(block_count).
 *
 * Invariants:
 *  - the list (through node[].link from the sentinel at block_count) is
 *    sorted under the order above; its entries are LINKED, present or not;
 *  - heap[0..hlen) is a min-heap under the same order; pos[heap[i].id] == i
 *    for i < hlen, and pos[id] == KVB_FIFO_NONE for every id not on it;
 *  - an id is PRESENT iff it is on the heap, or linked and marked present;
 *    never on both; len counts the present ids, hlen <= len <= block_count.
 *
 * Memory: 25 bytes per block (list links and arrival 12, state 1, heap entry
 * 8, position 4), plus the struct, all allocated at create through
 * params->allocator; nothing after create. Bad calls (id out of range,
 * duplicate insert, absent remove) return an error or false and change
 * nothing (Dynamo's FIFO panics on a duplicate insert instead). If a caller
 * lets the live arrivals span 2^31 or more, the order between the far-apart
 * entries is unspecified but the structure stays consistent.
 *
 * Not built (DESIGN.md section 6 mentions it): a reuse-policy hook that would
 * let a hit refresh the arrival. Today a caller gets that by passing a new
 * arrival to insert.
 *
 * Locking: none of its own; every method runs under the owning pool's mutex.
 */
#include "ilist.h"
#include "internal.h"

#include <string.h>

#define KVB_FIFO_NONE KVB_ILIST_NONE

/* st[] bits */
#define KVB_FIFO_LINKED  1 /* on the list (present or not) */
#define KVB_FIFO_PRESENT 2 /* in the index: on the heap, or linked */

struct kvb_fifo_entry {
    uint32_t arrival, id;
};

struct kvb_fifo_node {
    struct kvb_ilink link;
    uint32_t arrival;
};

/* Every field is protected by the owning pool's mutex. */
struct kvb_fifo {
    struct kvb_fifo_node *node;  /* block_count + 1 entries: the sentinel last */
    uint8_t *st;                 /* block_count entries: KVB_FIFO_* bits */
    struct kvb_fifo_entry *heap; /* block_count entries, [0, hlen) used */
    uint32_t *pos;               /* block_count entries: heap index or KVB_FIFO_NONE */
    uint32_t block_count;
    uint32_t len, hlen;
    uint32_t finger;         /* the block linked last (a hint: checked before use) */
    kvb_allocator allocator; /* what the arrays and this struct were allocated with */
};

/* Serial-number order on arrivals, then id. */
static inline bool kvb_fifo_before(struct kvb_fifo_entry a, struct kvb_fifo_entry b)
{
    if (a.arrival != b.arrival)
        return ((a.arrival - b.arrival) & 0x80000000u) != 0; /* (int32_t)(a - b) < 0 */
    return a.id < b.id;
}

static size_t kvb_fifo_bytes(size_t n)
{
    return (n + 1) * sizeof(struct kvb_fifo_node) +
           n * (1 + sizeof(struct kvb_fifo_entry) + sizeof(uint32_t));
}

static void kvb_fifo_free(struct kvb_fifo *f)
{
    kvb_allocator a = f->allocator;
    size_t n = f->block_count;
    kvb__free(&a, f->node, (n + 1) * sizeof *f->node);
    kvb__free(&a, f->st, n);
    kvb__free(&a, f->heap, n * sizeof *f->heap);
    kvb__free(&a, f->pos, n * sizeof *f->pos);
    kvb__free(&a, f, sizeof *f);
}

static void kvb_fifo_reset(struct kvb_fifo *f)
{
    kvb_ilist_init(KVB_ILIST(f->node, link), f->block_count);
    memset(f->st, 0, f->block_count);
    memset(f->pos, 0xff, (size_t)f->block_count * sizeof *f->pos); /* nothing on the heap */
    f->len = f->hlen = 0;
    f->finger = KVB_FIFO_NONE;
}

static int kvb_fifo_create(const kvb_inactive_params *params, void **out)
{
    if (!params || !out || params->block_count == 0 || params->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    kvb_allocator a = params->allocator;
    kvb__allocator_fill(&a);
    size_t n = params->block_count;

    struct kvb_fifo *f = kvb__calloc(&a, 1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->allocator = a;
    f->block_count = params->block_count;
    f->node = kvb__alloc(&a, (n + 1) * sizeof *f->node);
    f->st = kvb__alloc(&a, n);
    f->heap = kvb__alloc(&a, n * sizeof *f->heap);
    f->pos = kvb__alloc(&a, n * sizeof *f->pos);
    if (!f->node || !f->st || !f->heap || !f->pos) {
        kvb_fifo_free(f);
        return -ENOMEM;
    }
    kvb_fifo_reset(f);
    *out = f;
    return 0;
}

static void kvb_fifo_destroy(void *self)
{
    if (self)
        kvb_fifo_free(self);
}

/* ---- the list ---- */

static inline struct kvb_fifo_entry kvb_fifo_node_entry(const struct kvb_fifo *f, uint32_t id)
{
    return (struct kvb_fifo_entry){.arrival = f->node[id].arrival, .id = id};
}

static inline void kvb_fifo_unlink(struct kvb_fifo *f, uint32_t id)
{
    kvb_ilist_remove(KVB_ILIST(f->node, link), id);
    f->st[id] &= (uint8_t)~KVB_FIFO_LINKED;
}

/* The first present block on the list (absent ones met first are unlinked:
 * they are in use, and come back through the heap), or the sentinel. */
static inline uint32_t kvb_fifo_first(struct kvb_fifo *f)
{
    uint32_t s = f->block_count, id;
    while ((id = kvb_ilist_first(KVB_ILIST(f->node, link), s)) != s &&
           !(f->st[id] & KVB_FIFO_PRESENT))
        kvb_fifo_unlink(f, id);
    return id;
}

/* ---- the heap ---- */

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

/* Move e down from hole i to its place (heap size f->hlen). */
static void kvb_fifo_sift_down(struct kvb_fifo *f, uint32_t i, struct kvb_fifo_entry e)
{
    uint32_t n = f->hlen;
    for (;;) {
        /* hlen <= 2^30, so 2 * i + 2 cannot overflow */
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

/* Take the entry at heap index i off the heap. */
static void kvb_fifo_heap_delete(struct kvb_fifo *f, uint32_t i)
{
    f->pos[f->heap[i].id] = KVB_FIFO_NONE;
    struct kvb_fifo_entry last = f->heap[--f->hlen];
    if (i == f->hlen)
        return; /* it was the last entry */
    /* Fill the hole with the last entry, which may need to go either way. */
    if (i > 0 && kvb_fifo_before(last, f->heap[(i - 1) / 2]))
        kvb_fifo_sift_up(f, i, last);
    else
        kvb_fifo_sift_down(f, i, last);
}

/* ---- operations ---- */

/* Absent id released again after a hit (still linked, same arrival): marked
 * present in place. False (nothing done) otherwise. Checked before
 * kvb_fifo_add so that this common case stays a few instructions. */
static inline bool kvb_fifo_add_in_place(struct kvb_fifo *f, uint32_t id, uint32_t arrival)
{
    if (!(f->st[id] & KVB_FIFO_LINKED) || f->node[id].arrival != arrival)
        return false;
    f->st[id] |= KVB_FIFO_PRESENT;
    f->len++;
    return true;
}

/* Put an absent id in, when kvb_fifo_add_in_place could not (see the file
 * comment for where it goes). */
static void kvb_fifo_add(struct kvb_fifo *f, uint32_t id, uint32_t arrival)
{
    struct kvb_fifo_entry e = {.arrival = arrival, .id = id};
    f->len++;
    if (f->st[id] & KVB_FIFO_LINKED)
        kvb_fifo_unlink(f, id); /* other content since: its old place is stale */
    /* After the tail, or just before the last block linked (a request's
     * blocks released last first arrive in descending order); else the heap. */
    struct kvb_ilist il = KVB_ILIST(f->node, link);
    uint32_t s = f->block_count, at = kvb_ilist_last(il, s); /* link after `at` */
    if (at != s && !kvb_fifo_before(kvb_fifo_node_entry(f, at), e)) {
        uint32_t fg = f->finger;
        uint32_t p =
            fg < s && (f->st[fg] & KVB_FIFO_LINKED) ? kvb_ilist_prev(il, fg) : KVB_FIFO_NONE;
        if (p == KVB_FIFO_NONE || !kvb_fifo_before(e, kvb_fifo_node_entry(f, fg)) ||
            (p != s && !kvb_fifo_before(kvb_fifo_node_entry(f, p), e))) {
            f->st[id] = KVB_FIFO_PRESENT;
            kvb_fifo_sift_up(f, f->hlen++, e);
            return;
        }
        at = p;
    }
    f->node[id].arrival = arrival;
    kvb_ilist_insert_after(il, at, id);
    f->st[id] = KVB_FIFO_LINKED | KVB_FIFO_PRESENT;
    f->finger = id;
}

static int kvb_fifo_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct kvb_fifo *f = self;
    (void)hash;
    if (id >= f->block_count)
        return -EINVAL;
    if (f->st[id] & KVB_FIFO_PRESENT)
        return -EEXIST;
    if (!kvb_fifo_add_in_place(f, id, arrival))
        kvb_fifo_add(f, id, arrival);
    return 0;
}

static bool kvb_fifo_present(const struct kvb_fifo *f, uint32_t id)
{
    return id < f->block_count && (f->st[id] & KVB_FIFO_PRESENT);
}

static bool kvb_fifo_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct kvb_fifo *f = self;
    (void)hash;
    if (!kvb_fifo_present(f, id))
        return false;
    if (f->st[id] & KVB_FIFO_LINKED) {
        f->st[id] &= (uint8_t)~KVB_FIFO_PRESENT; /* keeps its place for its release */
    } else {
        kvb_fifo_heap_delete(f, f->pos[id]);
        f->st[id] = 0;
    }
    f->len--;
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
        uint32_t id = kvb_fifo_first(f);
        if (f->hlen > 0 &&
            (id == f->block_count || kvb_fifo_before(f->heap[0], kvb_fifo_node_entry(f, id)))) {
            id = f->heap[0].id;
            kvb_fifo_heap_delete(f, 0);
        } else {
            kvb_fifo_unlink(f, id);
        }
        f->st[id] = 0;
        f->len--;
        out[k++] = id;
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
    kvb_fifo_reset(self);
}

/* Reinsert the entries of the last evict with their own arrivals: ordering is
 * by arrival, so this restores the exact order. Without arrivals (NULL) they
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
    uint32_t base = 0u - n;
    if (!arrivals && f->len > 0) {
        uint32_t first = kvb_fifo_first(f);
        struct kvb_fifo_entry m =
            first != f->block_count ? kvb_fifo_node_entry(f, first) : f->heap[0];
        if (f->hlen > 0 && kvb_fifo_before(f->heap[0], m))
            m = f->heap[0];
        base = m.arrival - n;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = ids[i];
        uint32_t arrival = arrivals ? arrivals[i] : base + i;
        if (id < f->block_count && !(f->st[id] & KVB_FIFO_PRESENT) &&
            !kvb_fifo_add_in_place(f, id, arrival))
            kvb_fifo_add(f, id, arrival);
    }
}

static size_t kvb_fifo_memory(const void *self)
{
    const struct kvb_fifo *f = self;
    return sizeof *f + kvb_fifo_bytes(f->block_count);
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
