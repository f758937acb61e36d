/*
 * hint.c - the lookahead hint table and the heap of cached hinted blocks
 * (hint.h has the model and the layout; the table's hot paths are inline there).
 *
 * Records: an entry holds its oldest (ticket, uses) inline; later tickets are
 * records in a singly linked FIFO (tickets only grow, so an addition appends, or
 * merges into the tail when the tail has the same ticket: one call hinting a hash
 * twice). When the inline uses run out, the oldest record moves inline. Entries
 * and records come from free lists of `cap` each: an addition needs at most one
 * of either, so kvb__hints_room(n) bounds a whole call.
 *
 * Heap: binary max-heap of nodes (key, block, entry), with the block's heap
 * index in hpos[block] so that a hit (the block leaves the cache) and a changed
 * next need are O(log n).
 *
 * Invariants (kvb__hints_check): every live entry is reachable from its home
 * under its tag, has uses == tuses + its records' uses, tuses > 0, tickets in
 * order; n_ent, n_rec and uses add up; heap order holds and hpos mirrors the
 * heap; an entry's block is in the heap under that entry with a current key.
 */
#include "hint.h"

#include <string.h>

static inline uint64_t kvb_hint_key(const struct kvb_hints *h, uint32_t e)
{
    return h->ent[e].ticket << 24 | (kvb_hash_position(h->ent[e].hash) & 0xffffffu);
}

static size_t kvb_hint_heap_cap(uint32_t cap, uint32_t block_count)
{
    return cap < block_count ? cap : block_count;
}

int kvb__hints_create(uint32_t cap, uint32_t block_count, const kvb_allocator *a,
                      struct kvb_hints **out)
{
    /* 2 x cap + 1 table cells must fit a uint32_t, with KVB_HINT_NONE left over */
    if (cap == 0 || cap > (1u << 30) || block_count == 0)
        return -EINVAL;
    struct kvb_hints *h = kvb__calloc(a, 1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->cap = cap;
    h->tcap = 2 * cap + 1;
    h->block_count = block_count;
    h->heap_cap = (uint32_t)kvb_hint_heap_cap(cap, block_count);
    h->tab = kvb__alloc(a, (size_t)h->tcap * sizeof *h->tab);
    h->ent = kvb__alloc(a, (size_t)cap * sizeof *h->ent);
    h->rec = kvb__alloc(a, (size_t)cap * sizeof *h->rec);
    h->heap = kvb__alloc(a, (size_t)h->heap_cap * sizeof *h->heap);
    h->hpos = kvb__alloc(a, (size_t)block_count * sizeof *h->hpos);
    if (!h->tab || !h->ent || !h->rec || !h->heap || !h->hpos) {
        kvb__hints_destroy(h, a);
        return -ENOMEM;
    }
    memset(h->tab, 0xff, (size_t)h->tcap * sizeof *h->tab); /* KVB_HINT_EMPTY */
    memset(h->hpos, 0xff, (size_t)block_count * sizeof *h->hpos);
    for (uint32_t i = 0; i < cap; i++) {
        h->ent[i] = (struct kvb_hint_ent){.head = i + 1 < cap ? i + 1 : KVB_HINT_NONE,
                                          .tail = KVB_HINT_NONE,
                                          .block = KVB_HINT_NONE};
        h->rec[i] = (struct kvb_hint_rec){.next = i + 1 < cap ? i + 1 : KVB_HINT_NONE};
    }
    h->ent_free = 0;
    h->rec_free = 0;
    *out = h;
    return 0;
}

void kvb__hints_destroy(struct kvb_hints *h, const kvb_allocator *a)
{
    if (!h)
        return;
    kvb__free(a, h->tab, (size_t)h->tcap * sizeof *h->tab);
    kvb__free(a, h->ent, (size_t)h->cap * sizeof *h->ent);
    kvb__free(a, h->rec, (size_t)h->cap * sizeof *h->rec);
    kvb__free(a, h->heap, (size_t)h->heap_cap * sizeof *h->heap);
    kvb__free(a, h->hpos, (size_t)h->block_count * sizeof *h->hpos);
    kvb__free(a, h, sizeof *h);
}

size_t kvb__hints_memory(const struct kvb_hints *h)
{
    return sizeof *h + (size_t)h->tcap * sizeof *h->tab + (size_t)h->cap * sizeof *h->ent +
           (size_t)h->cap * sizeof *h->rec + (size_t)h->heap_cap * sizeof *h->heap +
           (size_t)h->block_count * sizeof *h->hpos;
}

/* ------------------------------------------------------------------------ */
/* table                                                                    */
/* ------------------------------------------------------------------------ */

/* Backward-shift deletion of cell i (homes come from the cells' tags: no entry is
 * loaded). */
static void kvb_hint_tab_erase(struct kvb_hints *h, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = kvb__cell_next(j, h->tcap);
        uint64_t c = h->tab[j];
        if (c == KVB_HINT_EMPTY)
            break;
        uint32_t home = kvb__cell_of((uint32_t)(c >> 32), h->tcap);
        /* move the cell back into the hole unless its home lies cyclically in (i, j] */
        if (kvb__cell_dist(home, j, h->tcap) >= kvb__cell_dist(i, j, h->tcap)) {
            h->tab[i] = c;
            i = j;
        }
    }
    h->tab[i] = KVB_HINT_EMPTY;
}

void kvb__hints_append(struct kvb_hints *h, uint32_t e, uint64_t ticket, uint32_t uses)
{
    struct kvb_hint_ent *en = &h->ent[e];
    if (en->tail != KVB_HINT_NONE && h->rec[en->tail].ticket == ticket &&
        h->rec[en->tail].uses <= UINT32_MAX - uses) {
        h->rec[en->tail].uses += uses; /* the same call hints this hash again */
        return;
    }
    kvb_assert(h->rec_free != KVB_HINT_NONE);
    uint32_t r = h->rec_free;
    h->rec_free = h->rec[r].next;
    h->rec[r] = (struct kvb_hint_rec){.ticket = ticket, .uses = uses, .next = KVB_HINT_NONE};
    if (en->tail == KVB_HINT_NONE)
        en->head = r;
    else
        h->rec[en->tail].next = r;
    en->tail = r;
    h->n_rec++;
}

void kvb__hints_shift(struct kvb_hints *h, uint32_t e)
{
    struct kvb_hint_ent *en = &h->ent[e];
    uint32_t r = en->head;
    en->ticket = h->rec[r].ticket;
    en->tuses = h->rec[r].uses;
    en->head = h->rec[r].next;
    if (en->head == KVB_HINT_NONE)
        en->tail = KVB_HINT_NONE;
    h->rec[r].next = h->rec_free;
    h->rec_free = r;
    h->n_rec--;
}

void kvb__hints_free(struct kvb_hints *h, uint32_t e, uint32_t cell)
{
    struct kvb_hint_ent *en = &h->ent[e];
    kvb_assert(en->uses == 0 && en->tuses == 0 && en->head == KVB_HINT_NONE &&
               en->block == KVB_HINT_NONE);
    kvb_assert((uint32_t)h->tab[cell] == e);
    kvb_hint_tab_erase(h, cell);
    en->head = h->ent_free;
    en->tail = KVB_HINT_NONE;
    h->ent_free = e;
    h->n_ent--;
}

/* ------------------------------------------------------------------------ */
/* heap                                                                     */
/* ------------------------------------------------------------------------ */

static inline void kvb_hint_set(struct kvb_hints *h, uint32_t i, struct kvb_hint_node n)
{
    h->heap[i] = n;
    h->hpos[n.id] = i;
}

static void kvb_hint_up(struct kvb_hints *h, uint32_t i)
{
    struct kvb_hint_node n = h->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->heap[parent].key >= n.key)
            break;
        kvb_hint_set(h, i, h->heap[parent]);
        i = parent;
    }
    kvb_hint_set(h, i, n);
}

static void kvb_hint_down(struct kvb_hints *h, uint32_t i)
{
    struct kvb_hint_node n = h->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->heap_len)
            break;
        if (c + 1 < h->heap_len && h->heap[c + 1].key > h->heap[c].key)
            c++;
        if (h->heap[c].key <= n.key)
            break;
        kvb_hint_set(h, i, h->heap[c]);
        i = c;
    }
    kvb_hint_set(h, i, n);
}

void kvb__hints_push(struct kvb_hints *h, uint32_t id, uint32_t e)
{
    kvb_assert(h->heap_len < h->heap_cap && h->hpos[id] == KVB_HINT_NONE);
    kvb_assert(h->ent[e].block == KVB_HINT_NONE && h->ent[e].uses > 0);
    h->ent[e].block = id;
    uint32_t i = h->heap_len++;
    kvb_hint_set(h, i, (struct kvb_hint_node){.key = kvb_hint_key(h, e), .id = id, .ent = e});
    kvb_hint_up(h, i);
}

/* Take node i out: the last node fills the hole and moves up or down. */
static void kvb_hint_take(struct kvb_hints *h, uint32_t i)
{
    uint32_t id = h->heap[i].id;
    h->ent[h->heap[i].ent].block = KVB_HINT_NONE;
    h->hpos[id] = KVB_HINT_NONE;
    uint32_t last = --h->heap_len;
    if (i == last)
        return;
    uint64_t old = h->heap[i].key;
    kvb_hint_set(h, i, h->heap[last]);
    if (h->heap[i].key > old)
        kvb_hint_up(h, i);
    else
        kvb_hint_down(h, i);
}

uint32_t kvb__hints_remove(struct kvb_hints *h, uint32_t id)
{
    uint32_t i = h->hpos[id];
    kvb_assert(i != KVB_HINT_NONE && i < h->heap_len);
    uint32_t e = h->heap[i].ent;
    kvb_hint_take(h, i);
    return e;
}

uint32_t kvb__hints_pop(struct kvb_hints *h)
{
    if (h->heap_len == 0)
        return KVB_HINT_NONE;
    uint32_t id = h->heap[0].id;
    kvb_hint_take(h, 0);
    return id;
}

void kvb__hints_rekey(struct kvb_hints *h, uint32_t e)
{
    uint32_t id = h->ent[e].block;
    if (id == KVB_HINT_NONE)
        return;
    uint32_t i = h->hpos[id];
    uint64_t old = h->heap[i].key, key = kvb_hint_key(h, e);
    h->heap[i].key = key;
    if (key > old)
        kvb_hint_up(h, i);
    else if (key < old)
        kvb_hint_down(h, i);
}

/* ------------------------------------------------------------------------ */
/* check                                                                    */
/* ------------------------------------------------------------------------ */

int kvb__hints_check(const struct kvb_hints *h, const char **why)
{
    uint32_t live = 0, recs = 0;
    uint64_t uses = 0;
    for (uint32_t i = 0; i < h->tcap; i++) {
        uint64_t c = h->tab[i];
        if (c == KVB_HINT_EMPTY)
            continue;
        uint32_t e = (uint32_t)c;
        if (e >= h->cap)
            return *why = "hint table cell names no entry", -EFAULT;
        const struct kvb_hint_ent *en = &h->ent[e];
        if ((uint32_t)(c >> 32) != kvb__hints_h32(en->hash) || kvb__hints_find(h, en->hash) != e)
            return *why = "hint entry not reachable from its home", -EFAULT;
        uint64_t sum = en->tuses, last = en->ticket;
        uint32_t r = en->head, tail = KVB_HINT_NONE, k = 0;
        for (; r != KVB_HINT_NONE && k <= h->cap; r = h->rec[r].next, k++) {
            if (h->rec[r].uses == 0 || h->rec[r].ticket < last)
                return *why = "hint record empty or out of ticket order", -EFAULT;
            last = h->rec[r].ticket;
            sum += h->rec[r].uses;
            tail = r;
        }
        if (en->tuses == 0 || r != KVB_HINT_NONE || tail != en->tail || sum != en->uses)
            return *why = "hint entry's records do not add up", -EFAULT;
        if (en->block != KVB_HINT_NONE) {
            uint32_t pos = en->block < h->block_count ? h->hpos[en->block] : KVB_HINT_NONE;
            if (pos == KVB_HINT_NONE || pos >= h->heap_len || h->heap[pos].ent != e ||
                h->heap[pos].key != kvb_hint_key(h, e))
                return *why = "hinted block not in the heap under its entry", -EFAULT;
        }
        live++;
        recs += k;
        uses += en->uses;
    }
    if (live != h->n_ent || recs != h->n_rec || uses != h->uses)
        return *why = "hint counts do not add up", -EFAULT;
    uint32_t in_heap = 0;
    for (uint32_t id = 0; id < h->block_count; id++)
        in_heap += h->hpos[id] != KVB_HINT_NONE;
    if (in_heap != h->heap_len)
        return *why = "hint heap positions do not match the heap", -EFAULT;
    for (uint32_t i = 0; i < h->heap_len; i++) {
        const struct kvb_hint_node *n = &h->heap[i];
        if (n->id >= h->block_count || h->hpos[n->id] != i || n->ent >= h->cap ||
            h->ent[n->ent].block != n->id)
            return *why = "hint heap node inconsistent", -EFAULT;
        if (i > 0 && h->heap[(i - 1) / 2].key < n->key)
            return *why = "hint heap order broken", -EFAULT;
    }
    return 0;
}
