/*
 * prio.c - retention priority levels and durations (prio.h has the model).
 *
 * Level lists: intrusive doubly linked lists through prev/next (indexed by block
 * id), one per level, appended at the tail (release order), evicted from the
 * head. mask[] has one bit per non-empty level; the lowest level in a range is a
 * masked count-trailing-zeros.
 *
 * Durations: a binary min-heap of (deadline, id), ordered by deadline then id (so
 * that blocks due at the same millisecond expire in a fixed order), with tpos[id]
 * the node's index: set, clear and expire are O(log n).
 *
 * Invariants (kvb__prio_check): every list is consistent both ways and its length
 * is len[l]; mask bit l <=> len[l] > 0; bmask bit l <=> inb[l] > 0 (the counts
 * themselves are checked against the slots by kvb_pool_check); listed = sum of
 * len; a listed block's level is its list's; the heap is ordered and tpos mirrors it; timers ==
 * heap_len.
 */
#include "prio.h"
#include "annotate.h"

#include <string.h>

int kvb__prio_create(uint32_t block_count, const kvb_allocator *a, struct kvb_prio **out)
{
    if (block_count == 0)
        return -EINVAL;
    struct kvb_prio *pr = kvb__calloc(a, 1, sizeof *pr);
    if (!pr)
        return -ENOMEM;
    size_t n = block_count;
    pr->block_count = block_count;
    pr->level = kvb__alloc(a, n);
    pr->prev = kvb__alloc(a, n * sizeof *pr->prev);
    pr->next = kvb__alloc(a, n * sizeof *pr->next);
    pr->tpos = kvb__alloc(a, n * sizeof *pr->tpos);
    pr->heap = kvb__alloc(a, n * sizeof *pr->heap);
    if (!pr->level || !pr->prev || !pr->next || !pr->tpos || !pr->heap) {
        kvb__prio_destroy(pr, a);
        return -ENOMEM;
    }
    memset(pr->level, KVB_PRIORITY_DEFAULT, n);
    memset(pr->prev, 0xff, n * sizeof *pr->prev);
    memset(pr->next, 0xff, n * sizeof *pr->next);
    memset(pr->tpos, 0xff, n * sizeof *pr->tpos);
    for (uint32_t l = 0; l < KVB_PRIO_LEVELS; l++)
        pr->head[l] = pr->tail[l] = KVB_PRIO_NONE;
    KVB_ATOMIC_VAR(&pr->timers, sizeof pr->timers);
    atomic_init(&pr->timers, 0);
    *out = pr;
    return 0;
}

void kvb__prio_destroy(struct kvb_prio *pr, const kvb_allocator *a)
{
    if (!pr)
        return;
    size_t n = pr->block_count;
    KVB_ATOMIC_VAR_END(&pr->timers, sizeof pr->timers);
    kvb__free(a, pr->level, n);
    kvb__free(a, pr->prev, n * sizeof *pr->prev);
    kvb__free(a, pr->next, n * sizeof *pr->next);
    kvb__free(a, pr->tpos, n * sizeof *pr->tpos);
    kvb__free(a, pr->heap, n * sizeof *pr->heap);
    kvb__free(a, pr, sizeof *pr);
}

size_t kvb__prio_memory(const struct kvb_prio *pr)
{
    size_t n = pr->block_count;
    return sizeof *pr +
           n * (1 + sizeof *pr->prev + sizeof *pr->next + sizeof *pr->tpos + sizeof *pr->heap);
}

/* ------------------------------------------------------------------------ */
/* level lists                                                              */
/* ------------------------------------------------------------------------ */

static inline void kvb_prio_mark(struct kvb_prio *pr, uint32_t l, bool on)
{
    uint64_t bit = 1ull << (l & 63);
    if (on)
        pr->mask[l >> 6] |= bit;
    else
        pr->mask[l >> 6] &= ~bit;
}

void kvb__prio_push(struct kvb_prio *pr, uint32_t id)
{
    uint32_t l = pr->level[id];
    kvb_assert(!kvb__prio_listed(pr, id));
    uint32_t t = pr->tail[l];
    pr->next[id] = KVB_PRIO_NONE;
    pr->prev[id] = t; /* KVB_PRIO_NONE marks "not listed": the head's prev is id itself */
    if (t == KVB_PRIO_NONE) {
        pr->head[l] = id;
        pr->prev[id] = id;
        kvb_prio_mark(pr, l, true);
    } else {
        pr->next[t] = id;
    }
    pr->tail[l] = id;
    pr->len[l]++;
    pr->listed++;
}

void kvb__prio_push_front(struct kvb_prio *pr, uint32_t id)
{
    uint32_t l = pr->level[id];
    kvb_assert(!kvb__prio_listed(pr, id));
    uint32_t h = pr->head[l];
    pr->prev[id] = id; /* the head points at itself */
    pr->next[id] = h;
    if (h == KVB_PRIO_NONE) {
        pr->tail[l] = id;
        kvb_prio_mark(pr, l, true);
    } else {
        pr->prev[h] = id;
    }
    pr->head[l] = id;
    pr->len[l]++;
    pr->listed++;
}

void kvb__prio_unlink(struct kvb_prio *pr, uint32_t id)
{
    uint32_t l = pr->level[id];
    kvb_assert(kvb__prio_listed(pr, id));
    uint32_t p = pr->prev[id], n = pr->next[id];
    bool is_head = p == id;
    if (is_head)
        pr->head[l] = n;
    else
        pr->next[p] = n;
    if (n == KVB_PRIO_NONE)
        pr->tail[l] = is_head ? KVB_PRIO_NONE : p;
    else
        pr->prev[n] = is_head ? n : p;
    pr->prev[id] = pr->next[id] = KVB_PRIO_NONE;
    if (--pr->len[l] == 0)
        kvb_prio_mark(pr, l, false);
    pr->listed--;
}

uint32_t kvb__prio_pop(struct kvb_prio *pr, uint32_t l)
{
    uint32_t id = pr->head[l];
    if (id != KVB_PRIO_NONE)
        kvb__prio_unlink(pr, id);
    return id;
}

/* ------------------------------------------------------------------------ */
/* durations                                                                */
/* ------------------------------------------------------------------------ */

static inline bool kvb_prio_before(const struct kvb_prio_timer *a, const struct kvb_prio_timer *b)
{
    return a->at < b->at || (a->at == b->at && a->id < b->id);
}

static inline void kvb_prio_tset(struct kvb_prio *pr, uint32_t i, struct kvb_prio_timer t)
{
    pr->heap[i] = t;
    pr->tpos[t.id] = i;
}

static void kvb_prio_up(struct kvb_prio *pr, uint32_t i)
{
    struct kvb_prio_timer t = pr->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!kvb_prio_before(&t, &pr->heap[parent]))
            break;
        kvb_prio_tset(pr, i, pr->heap[parent]);
        i = parent;
    }
    kvb_prio_tset(pr, i, t);
}

static void kvb_prio_down(struct kvb_prio *pr, uint32_t i)
{
    struct kvb_prio_timer t = pr->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= pr->heap_len)
            break;
        if (c + 1 < pr->heap_len && kvb_prio_before(&pr->heap[c + 1], &pr->heap[c]))
            c++;
        if (!kvb_prio_before(&pr->heap[c], &t))
            break;
        kvb_prio_tset(pr, i, pr->heap[c]);
        i = c;
    }
    kvb_prio_tset(pr, i, t);
}

static void kvb_prio_count(struct kvb_prio *pr)
{
    atomic_store_explicit(&pr->timers, pr->heap_len, memory_order_relaxed);
}

void kvb__prio_timer_clear(struct kvb_prio *pr, uint32_t id)
{
    uint32_t i = pr->tpos[id];
    if (i == KVB_PRIO_NONE)
        return;
    pr->tpos[id] = KVB_PRIO_NONE;
    uint32_t last = --pr->heap_len;
    if (i != last) {
        struct kvb_prio_timer old = pr->heap[i];
        kvb_prio_tset(pr, i, pr->heap[last]);
        if (kvb_prio_before(&pr->heap[i], &old))
            kvb_prio_up(pr, i);
        else
            kvb_prio_down(pr, i);
    }
    kvb_prio_count(pr);
}

void kvb__prio_timer_set(struct kvb_prio *pr, uint32_t id, uint64_t at)
{
    kvb__prio_timer_clear(pr, id);
    uint32_t i = pr->heap_len++;
    kvb_prio_tset(pr, i, (struct kvb_prio_timer){.at = at, .id = id});
    kvb_prio_up(pr, i);
    kvb_prio_count(pr);
}

uint32_t kvb__prio_timer_due(struct kvb_prio *pr, uint64_t now)
{
    if (pr->heap_len == 0 || pr->heap[0].at > now)
        return KVB_PRIO_NONE;
    uint32_t id = pr->heap[0].id;
    kvb__prio_timer_clear(pr, id);
    return id;
}

/* ------------------------------------------------------------------------ */
/* check                                                                    */
/* ------------------------------------------------------------------------ */

int kvb__prio_check(const struct kvb_prio *pr, const char **why)
{
    uint32_t listed = 0;
    for (uint32_t l = 0; l < KVB_PRIO_LEVELS; l++) {
        uint32_t k = 0, last = KVB_PRIO_NONE;
        for (uint32_t id = pr->head[l]; id != KVB_PRIO_NONE; id = pr->next[id]) {
            if (id >= pr->block_count || k > pr->block_count || pr->level[id] != l ||
                pr->prev[id] != (last == KVB_PRIO_NONE ? id : last))
                return *why = "priority level list broken", -EFAULT;
            last = id;
            k++;
        }
        if (k != pr->len[l] || last != pr->tail[l] ||
            (((pr->mask[l >> 6] >> (l & 63)) & 1) != 0) != (k != 0))
            return *why = "priority level list length, tail or mask wrong", -EFAULT;
        if (l != KVB_PRIORITY_DEFAULT &&
            (((pr->bmask[l >> 6] >> (l & 63)) & 1) != 0) != (pr->inb[l] != 0))
            return *why = "priority backend count mask wrong", -EFAULT;
        listed += k;
    }
    if (listed != pr->listed)
        return *why = "priority lists do not add up", -EFAULT;
    uint32_t timers = 0;
    for (uint32_t id = 0; id < pr->block_count; id++) {
        if (pr->tpos[id] == KVB_PRIO_NONE)
            continue;
        timers++;
        if (pr->tpos[id] >= pr->heap_len || pr->heap[pr->tpos[id]].id != id)
            return *why = "duration heap position wrong", -EFAULT;
    }
    if (timers != pr->heap_len || kvb__prio_timers(pr) != pr->heap_len)
        return *why = "duration heap count wrong", -EFAULT;
    for (uint32_t i = 1; i < pr->heap_len; i++)
        if (kvb_prio_before(&pr->heap[i], &pr->heap[(i - 1) / 2]))
            return *why = "duration heap order broken", -EFAULT;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* kvb_retention                                                            */
/* ------------------------------------------------------------------------ */

void kvb_retention_init(kvb_retention *r)
{
    if (!r)
        return;
    memset(r, 0, sizeof *r);
    r->decode_priority = KVB_PRIORITY_DEFAULT;
    r->decode_start = UINT32_MAX;
}

bool kvb__retention_valid(const kvb_retention *r)
{
    if (r->n_ranges && !r->ranges)
        return false;
    if (r->decode_priority > KVB_PRIORITY_MAX)
        return false;
    uint64_t end = 0; /* where the previous range ended */
    for (uint32_t i = 0; i < r->n_ranges; i++) {
        const kvb_retention_range *g = &r->ranges[i];
        if (g->priority > KVB_PRIORITY_MAX || g->token_start < end)
            return false;
        if (g->token_end == 0) { /* open: to the end of the sequence, so it comes last */
            if (i + 1 != r->n_ranges)
                return false;
        } else if (g->token_end <= g->token_start) {
            return false;
        }
        end = g->token_end;
    }
    return true;
}

void kvb__retention_get(const kvb_retention *r, uint64_t first_token, uint32_t *priority,
                        uint32_t *duration_ms)
{
    if (first_token >= r->decode_start) {
        *priority = r->decode_priority;
        *duration_ms = r->decode_duration_ms;
        return;
    }
    for (uint32_t i = 0; i < r->n_ranges; i++) {
        const kvb_retention_range *g = &r->ranges[i];
        if (first_token < g->token_start)
            break;
        if (g->token_end == 0 || first_token < g->token_end) {
            *priority = g->priority;
            *duration_ms = g->duration_ms;
            return;
        }
    }
    *priority = KVB_PRIORITY_DEFAULT;
    *duration_ms = 0;
}

int kvb_retention_lookup(const kvb_retention *r, uint64_t first_token, uint32_t *priority,
                         uint32_t *duration_ms)
{
    if (!r || !priority || !duration_ms || !kvb__retention_valid(r))
        return -EINVAL;
    kvb__retention_get(r, first_token, priority, duration_ms);
    return 0;
}
