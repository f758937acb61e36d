/*
 * hint.h - lookahead hints of a pool (private): which content the runtime's
 * queued requests will ask for, and the heap of cached blocks they protect.
 *
 * A hint is an expected use of a hash. kvb_pool_hint() adds uses (a queued
 * request hints its prefix when it enters the queue) and withdraws them (when it
 * is scheduled or cancelled). Each adding call gets a ticket, one more than the
 * last, and every use it adds carries that ticket: a hash's outstanding uses form
 * a FIFO of (ticket, uses) in ticket order, and the hash's *next need* is its
 * oldest outstanding ticket. Withdrawing takes uses back oldest first (a queue
 * schedules in arrival order; out-of-order scheduling only makes the next need of
 * a hash a little early, the use counts stay exact).
 *
 * The pool filters eviction victims (pool.c): a victim the backend proposes whose
 * hash has outstanding uses is set apart in a max-heap keyed by (next need,
 * position) instead of being evicted; the heap gives its blocks only when the
 * backend has nothing left, the one needed furthest ahead first and, among the
 * blocks of one request, the deepest first (children before their parents). This
 * module is the data structure.
 *
 * Layout. Entries (one per hinted hash) hold the oldest (ticket, uses) inline: a
 * hash hinted by one queued request, the common case, needs no record. Later
 * tickets of the same hash go to records, a singly linked FIFO per entry. The
 * table maps hashes to entries: open addressing, linear probing, 64-bit cells
 * holding the entry index and the 32 home bits of the hash (so probes compare the
 * tag before loading an entry and deletion computes homes without loading one),
 * backward-shift deletion, load <= 1/2. Written by hand like the pool's index: it
 * is only touched under the pool mutex (TOOLING.md).
 *
 * Memory, all at create (nothing when the pool has no hint capacity): `cap`
 * entries of 48 bytes, `cap` records of 16 bytes, 2 x cap + 1 cells of 8 bytes,
 * a 16-byte heap node for min(block_count, cap) blocks, and a 4-byte heap
 * position per block.
 *
 * Every function runs under the owning pool's mutex.
 */
#ifndef KVB_HINT_H
#define KVB_HINT_H

#include "internal.h"

#define KVB_HINT_NONE  UINT32_MAX
#define KVB_HINT_EMPTY UINT64_MAX

/* One hinted hash: its outstanding uses, the oldest (ticket, uses) inline, later
 * tickets in records, and the INACTIVE block of that hash held in the heap
 * (KVB_HINT_NONE when it is not set apart). */
struct kvb_hint_ent {
    kvb_hash hash;
    uint64_t uses;       /* outstanding expected uses, > 0 while the entry lives */
    uint64_t ticket;     /* the oldest outstanding ticket: the next need */
    uint32_t tuses;      /* uses of that ticket (inline record), > 0 while live */
    uint32_t head, tail; /* later records, oldest first; free entries: head = next free */
    uint32_t block;      /* block id in the heap, or KVB_HINT_NONE */
};

/* Uses added by one call for one hash, after the entry's inline ones. */
struct kvb_hint_rec {
    uint64_t ticket;
    uint32_t uses;
    uint32_t next; /* next record of the entry, or the next free record */
};

/* A heap node: key = next need << 24 | position (max first), the block, its entry. */
struct kvb_hint_node {
    uint64_t key;
    uint32_t id, ent;
};

struct kvb_hints {
    uint32_t cap;  /* entries and records */
    uint32_t tcap; /* table cells (2 x cap + 1) */
    uint64_t *tab; /* cell: entry index | home bits << 32; KVB_HINT_EMPTY: empty */
    struct kvb_hint_ent *ent;
    struct kvb_hint_rec *rec;
    uint32_t ent_free, rec_free; /* free lists */
    uint32_t n_ent, n_rec;       /* in use */
    uint64_t uses;               /* sum of the entries' uses */
    uint64_t ticket;             /* last ticket handed out */
    struct kvb_hint_node *heap;  /* heap_cap nodes */
    uint32_t heap_len, heap_cap;
    uint32_t *hpos; /* per block: heap index, KVB_HINT_NONE when not in the heap */
    uint32_t block_count;
};

/* 0, -EINVAL (cap 0 or above 2^30) or -ENOMEM; everything through the allocator. */
int kvb__hints_create(uint32_t cap, uint32_t block_count, const kvb_allocator *a,
                      struct kvb_hints **out);
void kvb__hints_destroy(struct kvb_hints *h, const kvb_allocator *a);
size_t kvb__hints_memory(const struct kvb_hints *h);

/* ---- the table (hot paths inline) ---- */

/* The 32 bits of the mixed hash that pick its home cell (and tag its cell). */
static inline uint32_t kvb__hints_h32(kvb_hash hash)
{
    return (uint32_t)(kvb__hash_mix(hash) >> 32);
}

/* Start loading the home cell of a hash (batches: prefetch, then probe). */
static inline void kvb__hints_prefetch(const struct kvb_hints *h, uint32_t h32)
{
    __builtin_prefetch(&h->tab[kvb__cell_of(h32, h->tcap)]);
}

/* The cell holding hash's entry (*found), or the empty cell where it would go. */
static inline uint32_t kvb__hints_probe(const struct kvb_hints *h, kvb_hash hash, uint32_t h32,
                                        bool *found)
{
    uint32_t i = kvb__cell_of(h32, h->tcap);
    for (;;) {
        uint64_t c = h->tab[i];
        if (c == KVB_HINT_EMPTY) {
            *found = false;
            return i;
        }
        if ((uint32_t)(c >> 32) == h32) {
            const kvb_hash *k = &h->ent[(uint32_t)c].hash;
            if (k->lo == hash.lo && k->hi == hash.hi) {
                *found = true;
                return i;
            }
        }
        i = kvb__cell_next(i, h->tcap);
    }
}

/* The entry of hash, or KVB_HINT_NONE. */
static inline uint32_t kvb__hints_find(const struct kvb_hints *h, kvb_hash hash)
{
    bool found;
    uint32_t i = kvb__hints_probe(h, hash, kvb__hints_h32(hash), &found);
    return found ? (uint32_t)h->tab[i] : KVB_HINT_NONE;
}

/* Room for n more hashes in the worst case (each a new entry, or a new record)? */
static inline bool kvb__hints_room(const struct kvb_hints *h, uint32_t n)
{
    return n <= h->cap - h->n_rec && n <= h->cap - h->n_ent;
}

/* A record for (ticket, uses) at the tail of entry e's FIFO. */
void kvb__hints_append(struct kvb_hints *h, uint32_t e, uint64_t ticket, uint32_t uses);

/* Add `uses` uses with ticket `ticket` (>= every earlier ticket) to hash, whose
 * probe gave `cell` and `found`. Returns the entry. Needs kvb__hints_room(h, 1). */
static inline uint32_t kvb__hints_add(struct kvb_hints *h, kvb_hash hash, uint32_t h32,
                                      uint32_t cell, bool found, uint32_t uses, uint64_t ticket)
{
    uint32_t e;
    if (!found) {
        kvb_assert(h->ent_free != KVB_HINT_NONE);
        e = h->ent_free;
        struct kvb_hint_ent *en = &h->ent[e];
        h->ent_free = en->head;
        en->hash = hash;
        en->uses = uses;
        en->ticket = ticket;
        en->tuses = uses;
        en->head = en->tail = KVB_HINT_NONE;
        en->block = KVB_HINT_NONE;
        h->tab[cell] = (uint64_t)h32 << 32 | e;
        h->n_ent++;
    } else {
        e = (uint32_t)h->tab[cell];
        struct kvb_hint_ent *en = &h->ent[e];
        en->uses += uses;
        if (en->tail == KVB_HINT_NONE && en->ticket == ticket && en->tuses <= UINT32_MAX - uses)
            en->tuses += uses; /* the same call hints this hash again */
        else
            kvb__hints_append(h, e, ticket, uses);
    }
    h->uses += uses;
    return e;
}

/* Take the oldest record into the entry (its inline uses ran out). */
void kvb__hints_shift(struct kvb_hints *h, uint32_t e);

/* Take back up to `uses` uses of entry e, oldest first; returns how many were taken.
 * The entry stays (even at 0 uses): the caller frees it with kvb__hints_free. */
static inline uint32_t kvb__hints_withdraw(struct kvb_hints *h, uint32_t e, uint32_t uses)
{
    struct kvb_hint_ent *en = &h->ent[e];
    uint32_t taken = 0;
    while (taken < uses && en->tuses) {
        uint32_t k = uses - taken < en->tuses ? uses - taken : en->tuses;
        en->tuses -= k;
        taken += k;
        if (en->tuses == 0 && en->head != KVB_HINT_NONE)
            kvb__hints_shift(h, e);
    }
    en->uses -= taken;
    h->uses -= taken;
    return taken;
}

/* Free an entry with no uses left and no block in the heap; cell = its table cell. */
void kvb__hints_free(struct kvb_hints *h, uint32_t e, uint32_t cell);

/* ---- the heap of cached hinted blocks ---- */

/* Block id (INACTIVE, hash of entry e, not in the heap) joins the heap. */
void kvb__hints_push(struct kvb_hints *h, uint32_t id, uint32_t e);
/* Take block id out of the heap (it must be there); returns its entry. */
uint32_t kvb__hints_remove(struct kvb_hints *h, uint32_t id);
/* The block to evict first (largest key), taken out; KVB_HINT_NONE when empty. */
uint32_t kvb__hints_pop(struct kvb_hints *h);
/* Entry e's next need changed: move its block, if in the heap, to its new place. */
void kvb__hints_rekey(struct kvb_hints *h, uint32_t e);
static inline bool kvb__hints_in_heap(const struct kvb_hints *h, uint32_t id)
{
    return h->hpos[id] != KVB_HINT_NONE;
}

/* Internal consistency (kvb_pool_check): 0 or -EFAULT, a message in *why. */
int kvb__hints_check(const struct kvb_hints *h, const char **why);

#endif /* KVB_HINT_H */
