/*
 * prio.h - retention priorities and their durations (private): TensorRT-LLM's
 * KvCacheRetentionConfig semantics on a pool's blocks.
 *
 * Every piece of content in a pool (a PRIMARY or INACTIVE block) has a priority,
 * 0..100, KVB_PRIORITY_DEFAULT (35) unless set. A priority may come with a
 * duration: when it runs out, the priority returns to the default. Among cached
 * blocks the lowest priority is evicted first and, within a priority, the
 * eviction backend's order; (lookahead hints: blocks set apart because queued
 * requests need them go after all of these).
 *
 * How the pool gets the policy's order within a level without the backend knowing
 * of priorities (custom backends work unchanged): every released block enters the
 * backend, whatever its priority, and the pool counts the backend's blocks per
 * level (`inb`). To evict, it finds the lowest level L holding a cached block
 * (in the backend or set apart, one count-trailing-zeros over two 128-bit masks)
 * and takes, in this order: the head of L's set-apart list, or else the backend's
 * next victim, which is taken when its level is L and otherwise set apart at the
 * tail of its own level's list. The backend proposes blocks in its order, so each
 * list is in the policy's order too; every block is set apart at most once per
 * stay in the cache, so the extra work is O(1) amortised per eviction. A block
 * set apart stays cached and findable (a hit takes it off its list); the backend
 * treats it as evicted (ARC records a ghost, as for hints). When a set-apart
 * block's priority changes (a call, or its duration running out) it re-enters
 * the backend as a newly released block; a block in the backend keeps its place
 * and only moves between counts.
 *
 * This module holds the state: a priority byte per block, intrusive doubly linked
 * set-apart lists per level (links per block, head/tail per level, a 128-bit
 * mask of non-empty lists), the backend's count per level with its own mask, and
 * the durations: a binary min-heap of (deadline, block) with each block's heap
 * position, so setting, clearing and expiring a duration cost O(log n), and
 * finding what is due costs O(1) per block due. The pool (pool_prio.c,
 * pool_victims.c) decides what moves where.
 *
 * Memory, all at create (only for pools created with `priorities`): 1 byte of
 * priority, 8 bytes of list links, 4 bytes of heap position and a 16-byte heap
 * node per block.
 *
 * Every function runs under the owning pool's mutex, except that `timers` may be
 * read without it (relaxed: a hint whether the clock is worth reading).
 */
#ifndef KVB_PRIO_H
#define KVB_PRIO_H

#include "internal.h"
#include <stdatomic.h>

#define KVB_PRIO_NONE   UINT32_MAX
#define KVB_PRIO_LEVELS (KVB_PRIORITY_MAX + 1)

struct kvb_prio_timer {
    uint64_t at; /* deadline, clock milliseconds */
    uint32_t id, pad;
};

struct kvb_prio {
    uint32_t block_count;
    uint8_t *level;        /* per block: its priority */
    uint32_t *prev, *next; /* per block: links of a level list (KVB_PRIO_NONE: not listed) */
    uint32_t head[KVB_PRIO_LEVELS], tail[KVB_PRIO_LEVELS], len[KVB_PRIO_LEVELS];
    uint64_t mask[2]; /* bit l: level l's list is not empty */
    uint32_t listed;  /* blocks in level lists */
    /* cached blocks of each level in the backend; the default level's count (and its
     * bmask bit) only inside an eviction, which sets it from the backend's len():
     * releases and hits of default-priority blocks, the hot path, touch no count */
    uint32_t inb[KVB_PRIO_LEVELS];
    uint64_t bmask[2]; /* bit l: inb[l] != 0 */
    uint32_t nondef;   /* sum of inb[l] over the levels other than the default */
    struct kvb_prio_timer *heap;
    uint32_t *tpos; /* per block: heap index, KVB_PRIO_NONE without a duration */
    uint32_t heap_len;
    /* == heap_len; written under the lock, read without it (relaxed): a call reads
     * the clock before taking the lock only when durations are pending */
    _Atomic uint32_t timers;
};

int kvb__prio_create(uint32_t block_count, const kvb_allocator *a, struct kvb_prio **out);
void kvb__prio_destroy(struct kvb_prio *pr, const kvb_allocator *a);
size_t kvb__prio_memory(const struct kvb_prio *pr);

/* ---- the backend's blocks per level ---- */
static inline void kvb_prio_inb(struct kvb_prio *pr, uint32_t l, bool in)
{
    if (in) {
        if (pr->inb[l]++ == 0)
            pr->bmask[l >> 6] |= 1ull << (l & 63);
    } else {
        kvb_assert(pr->inb[l] > 0);
        if (--pr->inb[l] == 0)
            pr->bmask[l >> 6] &= ~(1ull << (l & 63));
    }
}
/* Block id (its level: level[id]) entered the backend / left it: counted when its
 * level is not the default (the default's count is derived, see inb). */
static inline void kvb__prio_in(struct kvb_prio *pr, uint32_t id)
{
    uint32_t l = pr->level[id];
    if (l != KVB_PRIORITY_DEFAULT) {
        pr->nondef++;
        kvb_prio_inb(pr, l, true);
    }
}
static inline void kvb__prio_out(struct kvb_prio *pr, uint32_t id)
{
    uint32_t l = pr->level[id];
    if (l != KVB_PRIORITY_DEFAULT) {
        pr->nondef--;
        kvb_prio_inb(pr, l, false);
    }
}
/* An eviction begins: the default level's count from the backend's len(). */
static inline void kvb__prio_sync_default(struct kvb_prio *pr, uint32_t backend_len)
{
    const uint32_t l = KVB_PRIORITY_DEFAULT;
    kvb_assert(backend_len >= pr->nondef);
    pr->inb[l] = backend_len - pr->nondef;
    if (pr->inb[l])
        pr->bmask[l >> 6] |= 1ull << (l & 63);
    else
        pr->bmask[l >> 6] &= ~(1ull << (l & 63));
}
/* Inside an eviction: block id left the backend, whatever its level. */
static inline void kvb__prio_evicted(struct kvb_prio *pr, uint32_t id)
{
    if (pr->level[id] == KVB_PRIORITY_DEFAULT)
        kvb_prio_inb(pr, KVB_PRIORITY_DEFAULT, false);
    else
        kvb__prio_out(pr, id);
}
/* The lowest level holding a cached block, in the backend or set apart; -1: none. */
static inline int kvb__prio_lowest_cached(const struct kvb_prio *pr)
{
    uint64_t m0 = pr->mask[0] | pr->bmask[0], m1 = pr->mask[1] | pr->bmask[1];
    if (m0)
        return __builtin_ctzll(m0);
    return m1 ? 64 + __builtin_ctzll(m1) : -1;
}

/* Cached blocks at a priority other than the default, outside the hint heap. */
static inline uint32_t kvb__prio_retained(const struct kvb_prio *pr)
{
    return pr->listed - pr->len[KVB_PRIORITY_DEFAULT] + pr->nondef;
}

/* ---- set-apart lists ---- */
/* Append id (not listed) to the tail of its level's list (level[id]). */
void kvb__prio_push(struct kvb_prio *pr, uint32_t id);
/* Put id back at the head of its level's list (rollback of a pop). */
void kvb__prio_push_front(struct kvb_prio *pr, uint32_t id);
/* Take id (listed) off its list. */
void kvb__prio_unlink(struct kvb_prio *pr, uint32_t id);
/* Head of level l's list, taken off; KVB_PRIO_NONE when empty. */
uint32_t kvb__prio_pop(struct kvb_prio *pr, uint32_t l);
static inline bool kvb__prio_listed(const struct kvb_prio *pr, uint32_t id)
{
    return pr->prev[id] != KVB_PRIO_NONE;
}

/* ---- durations ---- */
/* id's priority returns to the default at `at` (replaces a previous deadline). */
void kvb__prio_timer_set(struct kvb_prio *pr, uint32_t id, uint64_t at);
/* id has no duration any more (no-op when it had none). */
void kvb__prio_timer_clear(struct kvb_prio *pr, uint32_t id);
/* A block whose deadline is <= now, taken off the heap (earliest deadline, then
 * lowest id, first); KVB_PRIO_NONE when none is due. */
uint32_t kvb__prio_timer_due(struct kvb_prio *pr, uint64_t now);
static inline uint32_t kvb__prio_timers(const struct kvb_prio *pr)
{
    return atomic_load_explicit(&pr->timers, memory_order_relaxed);
}

/* Internal consistency (kvb_pool_check): 0 or -EFAULT with a message in *why. */
int kvb__prio_check(const struct kvb_prio *pr, const char **why);

/* ---- kvb_retention (public helpers in prio.c) ---- */
/* Whether r is a valid retention (see kvb_retention_lookup). */
bool kvb__retention_valid(const kvb_retention *r);
/* The priority and duration of a block starting at first_token; r must be valid. */
void kvb__retention_get(const kvb_retention *r, uint64_t first_token, uint32_t *priority,
                        uint32_t *duration_ms);

#endif /* KVB_PRIO_H */
