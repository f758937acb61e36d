/*
 * ilist.h - the intrusive doubly linked list of the eviction backends (lru,
 * multi_lru, tinylfu, fifo, lineage, lineage_arc and its ghosts, adaptive's
 * simulations and stale lists, lineage_index.h's parked lists). Private:
 * static inline only.
 *
 * Linux list.h with 32-bit indices instead of pointers: the link (struct
 * kvb_ilink, {prev, next}) lives inside the caller's per-block node, and every
 * node of a list is an element of one array the caller owns (allocated at
 * create, never after). A list is named by the index of its *sentinel*, an
 * extra element of the same array that is never a block (a backend with L
 * lists puts their sentinels at block_count + 0 .. L - 1). The functions touch
 * the link only; what else the node holds (state, counts, keys) is the
 * caller's.
 *
 * The array is seen through a struct kvb_ilist, built where it is used with
 * KVB_ILIST(nodes, member) (link embedded in a node struct) or
 * KVB_ILIST_LINKS(links) (an array of bare links): the address of element
 * 0's link and the element size. Build it at each use, do not store it: the
 * size is then a compile-time constant, and once these functions are inlined
 * the index arithmetic is that of the hand-written array access it replaced,
 * give or take the compiler's register allocation (make perf-check holds the
 * backends to their instruction budgets).
 *
 * Circular lists (with a sentinel s):
 *  - empty: s.prev == s.next == s;
 *  - following next from s visits every linked node once and comes back to
 *    s; prev is the exact reverse. first(s) = s.next is the head end, last(s)
 *    = s.prev the tail end (the backends evict from the head, the LRU end);
 *  - a node is on at most one list; the links of a node on no list are
 *    whatever the caller left there (kvb_ilist_remove does not clear them, so
 *    a backend may keep its own "absent" mark in them, as lru.c does);
 *  - nothing is checked: inserting a linked node, or removing one that is not
 *    linked, corrupts the lists. The backends check presence first.
 *
 * Open lists (lineage_index.h's parked lists, one per table key, where a
 * sentinel per key would not fit): NONE-terminated at both ends, the caller
 * keeps the index of the first node (KVB_ILIST_NONE: empty) wherever it
 * likes; a node off every open list has both links KVB_ILIST_NONE.
 *
 * Free lists (stacks of unused slots, lineage_arc's ghosts, adaptive's
 * entries): singly linked through next, NONE-terminated; prev is unused.
 *
 * List sets (multi_lru's levels, tinylfu's segments): nlists <=
 * KVB_ILIST_SET_MAX circular lists over one array of bare links, list k's
 * sentinel at base + k (base = block_count), and a tag byte per node: k while
 * the node is on list k, KVB_ILIST_SET_OFF | k once it has left list k (the
 * low bits keep the list it was last on; the bits between are the caller's,
 * e.g. tinylfu's HIT). count[k] is the length of list k.
 *
 * Cost: every operation O(1) but iteration, kvb_ilist_set_drain (O(nodes on
 * the lists)) and kvb_ilist_set_init (O(base)). No locking: the owning
 * backend runs under its pool's mutex.
 */
#ifndef KVB_ILIST_H
#define KVB_ILIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define KVB_ILIST_NONE UINT32_MAX

/* The link inside a node: indices of the neighbours in the same array. */
struct kvb_ilink {
    uint32_t prev, next;
};

/* A view of the caller's node array: element 0's link and the element size. */
struct kvb_ilist {
    unsigned char *base;
    size_t stride;
};

/* The view of array `nodes` (a pointer to its first element) whose elements
 * hold their struct kvb_ilink in `member`. */
#define KVB_ILIST(nodes, member)                                                                   \
    ((struct kvb_ilist){.base = (unsigned char *)&(nodes)->member, .stride = sizeof *(nodes)})

/* The view of an array of bare struct kvb_ilink. */
#define KVB_ILIST_LINKS(links)                                                                     \
    ((struct kvb_ilist){.base = (unsigned char *)(links), .stride = sizeof(struct kvb_ilink)})

/* The link of element i. */
static inline struct kvb_ilink *kvb_ilist_at(struct kvb_ilist l, uint32_t i)
{
    return (struct kvb_ilink *)(void *)(l.base + (size_t)i * l.stride);
}

static inline uint32_t kvb_ilist_next(struct kvb_ilist l, uint32_t i)
{
    return kvb_ilist_at(l, i)->next;
}

static inline uint32_t kvb_ilist_prev(struct kvb_ilist l, uint32_t i)
{
    return kvb_ilist_at(l, i)->prev;
}

/* ---- circular lists with a sentinel ---- */

/* Make s an empty list (drops whatever was on it without touching those nodes). */
static inline void kvb_ilist_init(struct kvb_ilist l, uint32_t s)
{
    struct kvb_ilink *h = kvb_ilist_at(l, s);
    h->prev = h->next = s;
}

static inline bool kvb_ilist_empty(struct kvb_ilist l, uint32_t s)
{
    return kvb_ilist_at(l, s)->next == s;
}

/* The head end of list s; s itself when it is empty. */
static inline uint32_t kvb_ilist_first(struct kvb_ilist l, uint32_t s)
{
    return kvb_ilist_at(l, s)->next;
}

/* The tail end of list s; s itself when it is empty. */
static inline uint32_t kvb_ilist_last(struct kvb_ilist l, uint32_t s)
{
    return kvb_ilist_at(l, s)->prev;
}

/* Link id (on no list) between the adjacent nodes p and nx (p.next == nx). */
static inline void kvb_ilist_link_between(struct kvb_ilist l, uint32_t p, uint32_t nx, uint32_t id)
{
    struct kvb_ilink *n = kvb_ilist_at(l, id);
    n->prev = p;
    n->next = nx;
    kvb_ilist_at(l, nx)->prev = id;
    kvb_ilist_at(l, p)->next = id;
}

/* Link id (on no list) right after node `at` (a sentinel or a linked node). */
static inline void kvb_ilist_insert_after(struct kvb_ilist l, uint32_t at, uint32_t id)
{
    kvb_ilist_link_between(l, at, kvb_ilist_next(l, at), id);
}

/* Link id (on no list) right before node `at` (a sentinel or a linked node). */
static inline void kvb_ilist_insert_before(struct kvb_ilist l, uint32_t at, uint32_t id)
{
    kvb_ilist_link_between(l, kvb_ilist_prev(l, at), at, id);
}

/* Link id at the head end of list s (evicted first). */
static inline void kvb_ilist_push_head(struct kvb_ilist l, uint32_t s, uint32_t id)
{
    kvb_ilist_insert_after(l, s, id);
}

/* Link id at the tail end of list s (evicted last). */
static inline void kvb_ilist_push_tail(struct kvb_ilist l, uint32_t s, uint32_t id)
{
    kvb_ilist_insert_before(l, s, id);
}

/* Link id at the head end of list s when at_head, else at its tail end. */
static inline void kvb_ilist_push(struct kvb_ilist l, uint32_t s, uint32_t id, bool at_head)
{
    if (at_head)
        kvb_ilist_push_head(l, s, id);
    else
        kvb_ilist_push_tail(l, s, id);
}

/* Unlink id from its list; id's own links are left as they were. */
static inline void kvb_ilist_remove(struct kvb_ilist l, uint32_t id)
{
    struct kvb_ilink *n = kvb_ilist_at(l, id);
    uint32_t p = n->prev, nx = n->next;
    kvb_ilist_at(l, p)->next = nx;
    kvb_ilist_at(l, nx)->prev = p;
}

/* Move linked id to the tail end of list s (its own list or another). */
static inline void kvb_ilist_move_tail(struct kvb_ilist l, uint32_t s, uint32_t id)
{
    kvb_ilist_remove(l, id);
    kvb_ilist_push_tail(l, s, id);
}

/* Move linked id to the head end of list s (its own list or another). */
static inline void kvb_ilist_move_head(struct kvb_ilist l, uint32_t s, uint32_t id)
{
    kvb_ilist_remove(l, id);
    kvb_ilist_push_head(l, s, id);
}

/* Unlink and return the head end of list s, or KVB_ILIST_NONE when it is empty. */
static inline uint32_t kvb_ilist_pop_head(struct kvb_ilist l, uint32_t s)
{
    uint32_t id = kvb_ilist_first(l, s);
    if (id == s)
        return KVB_ILIST_NONE;
    kvb_ilist_remove(l, id);
    return id;
}

/* Visit list s from the head end: uint32_t id is each node in turn, and the
 * body may unlink it or rewrite its links (the next one is read first), but
 * must not touch any other node of the list. */
#define KVB_ILIST_FOREACH_SAFE(l, s, id)                                                           \
    for (uint32_t id = kvb_ilist_first((l), (s)), id##_nx_ = kvb_ilist_next((l), id); id != (s);   \
         id = id##_nx_, id##_nx_ = kvb_ilist_next((l), id))

/* ---- open lists: NONE-terminated, the caller keeps the first index ---- */

/* Link id (on no list) at the front of the open list whose first index is *first. */
static inline void kvb_ilist_open_push(struct kvb_ilist l, uint32_t *first, uint32_t id)
{
    struct kvb_ilink *n = kvb_ilist_at(l, id);
    uint32_t f = *first;
    n->prev = KVB_ILIST_NONE;
    n->next = f;
    if (f != KVB_ILIST_NONE)
        kvb_ilist_at(l, f)->prev = id;
    *first = id;
}

/* Unlink id from its open list and set its links to NONE. `first` (the list's
 * first index) is only written when id is the first node
 * (kvb_ilist_prev(l, id) == KVB_ILIST_NONE), so a caller that must look it
 * up may pass NULL otherwise; NULL for a first node leaves the list head stale. */
static inline void kvb_ilist_open_remove(struct kvb_ilist l, uint32_t *first, uint32_t id)
{
    struct kvb_ilink *n = kvb_ilist_at(l, id);
    uint32_t p = n->prev, nx = n->next;
    if (p != KVB_ILIST_NONE)
        kvb_ilist_at(l, p)->next = nx;
    else if (first)
        *first = nx;
    if (nx != KVB_ILIST_NONE)
        kvb_ilist_at(l, nx)->prev = p;
    n->prev = n->next = KVB_ILIST_NONE;
}

/* ---- free lists: singly linked through next, NONE-terminated ---- */

static inline void kvb_ilist_free_push(struct kvb_ilist l, uint32_t *top, uint32_t id)
{
    kvb_ilist_at(l, id)->next = *top;
    *top = id;
}

/* The top of the free list, taken off it. The list must not be empty. */
static inline uint32_t kvb_ilist_free_pop(struct kvb_ilist l, uint32_t *top)
{
    uint32_t id = *top;
    *top = kvb_ilist_at(l, id)->next;
    return id;
}

/* ---- list sets: several lists over one array, a tag byte per node ---- */

#define KVB_ILIST_SET_MAX       4
#define KVB_ILIST_SET_OFF       0x80 /* tag flag: on no list; the low bits keep the last one */
#define KVB_ILIST_SET_LIST(tag) ((uint32_t)(tag) & (KVB_ILIST_SET_MAX - 1))

struct kvb_ilist_set {
    struct kvb_ilink *link; /* base + nlists entries; sentinel of list k at base + k */
    uint8_t *tag;           /* base entries */
    uint32_t base, nlists;
    uint32_t count[KVB_ILIST_SET_MAX];
};

static inline struct kvb_ilist kvb_ilist_set_view(const struct kvb_ilist_set *ls)
{
    return KVB_ILIST_LINKS(ls->link);
}

/* Set up ls over the caller's arrays (link: base + nlists entries, tag: base
 * bytes): every list empty, every node off (last list 0). */
static inline void kvb_ilist_set_init(struct kvb_ilist_set *ls, struct kvb_ilink *link,
                                      uint8_t *tag, uint32_t base, uint32_t nlists)
{
    ls->link = link;
    ls->tag = tag;
    ls->base = base;
    ls->nlists = nlists;
    memset(tag, KVB_ILIST_SET_OFF, base);
    for (uint32_t k = 0; k < KVB_ILIST_SET_MAX; k++) {
        ls->count[k] = 0;
        if (k < nlists)
            kvb_ilist_init(kvb_ilist_set_view(ls), base + k);
    }
}

/* Whether id (any value) is a node on one of the lists. */
static inline bool kvb_ilist_set_on(const struct kvb_ilist_set *ls, uint32_t id)
{
    return id < ls->base && !(ls->tag[id] & KVB_ILIST_SET_OFF);
}

/* Link id (on no list) into list k: at its head end when at_head, else its tail end. */
static inline void kvb_ilist_set_link(struct kvb_ilist_set *ls, uint32_t id, uint32_t k,
                                      bool at_head)
{
    kvb_ilist_push(kvb_ilist_set_view(ls), ls->base + k, id, at_head);
    ls->tag[id] = (uint8_t)k;
    ls->count[k]++;
}

/* Unlink id (on a list) and tag it off; returns the list it was on. */
static inline uint32_t kvb_ilist_set_unlink(struct kvb_ilist_set *ls, uint32_t id)
{
    uint32_t k = ls->tag[id];
    kvb_ilist_remove(kvb_ilist_set_view(ls), id);
    ls->tag[id] = (uint8_t)(KVB_ILIST_SET_OFF | k);
    ls->count[k]--; /* after the tag: a caller reading count[k] next needs no reload */
    return k;
}

/* The head end of list k, or KVB_ILIST_NONE when it is empty. */
static inline uint32_t kvb_ilist_set_head(const struct kvb_ilist_set *ls, uint32_t k)
{
    uint32_t id = kvb_ilist_first(kvb_ilist_set_view(ls), ls->base + k);
    return id == ls->base + k ? KVB_ILIST_NONE : id;
}

/* Empty every list; each node is tagged off with the list it was on. O(nodes on lists). */
static inline void kvb_ilist_set_drain(struct kvb_ilist_set *ls)
{
    struct kvb_ilist il = kvb_ilist_set_view(ls);
    for (uint32_t k = 0; k < ls->nlists; k++) {
        KVB_ILIST_FOREACH_SAFE(il, ls->base + k, id) {
            ls->tag[id] = (uint8_t)(KVB_ILIST_SET_OFF | k);
        }
        kvb_ilist_init(il, ls->base + k);
        ls->count[k] = 0;
    }
}

#endif /* KVB_ILIST_H */
