/*
 * pool_model.h - the reference model of fuzz/fuzz_pool.c: a plain,
 * single-threaded restatement of the pool contract (kvblock.h, DESIGN.md
 * section 2) that the harness runs beside the library and compares with it
 * after every call.
 *
 * It holds, per pool: six slot states with generations that change on every
 * transition, a FIFO free list, LRU (insertion order) and FIFO (arrival order)
 * eviction, resurrection, duplicates holding a reference on their primary,
 * reset-on-release, the misuse counter and the counters of kvb_stats, the
 * callbacks and events a call must fire (in order), lookahead hints (per hash a
 * FIFO of (ticket, uses); hinted victims set apart, evicted last by (next
 * need, position)) and retention priorities (a level per content, durations on
 * the injected clock g_now). The harness (fuzz_pool.c) owns the library side:
 * the input decoder, the handle tables, the operations and the comparison.
 *
 * Any disagreement is reported through fail() (an abort: a crash for
 * libFuzzer), with the operation number g_step.
 */
#ifndef KVB_FUZZ_POOL_MODEL_H
#define KVB_FUZZ_POOL_MODEL_H

#include "kvblock.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- failures ---- */

extern size_t g_step; /* operation number, for messages */

/* Report a model mismatch and abort. */
void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail(__VA_ARGS__);                                                                     \
    } while (0)

/* ---- the hash universe ---- */

#define NU 16 /* universe: 3 chains of 4, 3 loose hashes at large positions, 1 invalid */
extern kvb_hash U[NU];

void universe_init(void);
/* Not mode 3 (the invalid one, U[NU - 1]). */
bool hash_valid(kvb_hash h);
bool heq(kvb_hash a, kvb_hash b);

/* ---- the model's state ---- */

#define MAXB          48
#define RC_MAX        (UINT32_MAX - 1)
#define KVB_DUPS_MAX_ ((1u << 26) - 1) /* duplicates one primary can hold (lib/pool.h) */

enum { S_RESET, S_MUTABLE, S_STAGED, S_PRIMARY, S_DUPLICATE, S_INACTIVE, S_N };
enum { POL_LRU, POL_FIFO, POL_OTHER };

struct mslot {
    kvb_hash hash;
    /* rc: the handles' references (the lock-free count); dups: duplicates holding a
     * PRIMARY (kept apart, under the lock); phantom: saturation added by the test */
    uint32_t gen, rc, dups, arrival, prim, phantom;
    uint8_t state;
    bool flag;      /* reset on release */
    bool diverted;  /* INACTIVE, set apart by hints (not in the policy's order) */
    bool listed;    /* INACTIVE, in its priority level's list (not in the policy's order) */
    uint8_t prio;   /* PRIMARY/INACTIVE: retention priority */
    uint64_t until; /* its duration's deadline (0: none) */
    uint64_t lseq;  /* place in its level list */
};

struct mcounters {
    uint64_t allocations, from_reset, evictions, registrations, duplicates, dedups, stagings, mreq,
        mret, misuse, resurrections, sreq, sret, noops;
};

/* hints of one universe hash: its outstanding (ticket, uses), oldest first */
#define MAXT 16
struct mhint {
    uint64_t tk[MAXT];
    uint32_t tu[MAXT], nt;
    uint64_t uses;
};

struct mpool {
    kvb_pool *real;
    int idx;
    uint32_t n;
    bool reject, reset_default, callbacks, events;
    int policy;
    kvb_evict_policy evict;
    struct mslot s[MAXB];
    uint32_t freeq[MAXB], fhead, flen;
    uint32_t lru[MAXB], nlru; /* INACTIVE ids in insertion order (lru policy) */
    uint32_t arrival_seq;
    uint32_t count[S_N];
    uint32_t peak;
    struct mcounters c;
    uint32_t hint_cap;
    bool prio; /* created with priorities */
    uint64_t lseq, expired, retained_evictions;
    uint64_t ticket;
    struct mhint h[NU];
    uint64_t h_added, h_withdrawn, h_unmatched, h_rejected, h_evictions;
};

/* expected and observed side effects of one call */
enum { CB_RESET = 1, CB_EVICT, EV_STORED, EV_REMOVED, EV_CLEARED };
struct rec {
    int pool, kind;
    uint32_t id;
    kvb_hash h;
};
#define MAXREC 4096
struct reclog {
    struct rec r[MAXREC];
    uint32_t n;
};

struct model {
    struct mpool P[2];
    struct reclog cb, ev; /* expected callbacks and events of the current call */
};

extern struct model M;
extern uint64_t g_now; /* the injected clock of pool A */

/* ---- the model's operations ---- */

/* Reset mp to a fresh pool created with cfg (real: the library's pool). */
void model_reset(struct mpool *mp, const kvb_pool_config *cfg, kvb_pool *real, int idx);
/* Append a record to a log (expected or observed). */
void rec_push(struct reclog *l, int pool, int kind, uint32_t id, kvb_hash h);
/* The model of the library pool p (NULL for NULL; fail() for an unknown pool). */
struct mpool *mp_of(const kvb_pool *p);
/* Blocks held (MUTABLE + STAGED + PRIMARY + DUPLICATE). */
uint32_t held(const struct mpool *mp);
/* Take the head of the free list. */
uint32_t free_pop(struct mpool *mp);
/* Move slot id to state `to` with count rc: a new generation, returned. */
uint32_t m_trans(struct mpool *mp, uint32_t id, int to, uint32_t rc);
/* Expect a callback / an event record of the current call. */
void m_cb(struct mpool *mp, int kind, uint32_t id, kvb_hash h);
void m_ev(struct mpool *mp, int kind, kvb_hash h);
/* The PRIMARY or INACTIVE slot holding h, or -1. */
int m_find(const struct mpool *mp, kvb_hash h);
/* One reference to the block holding h (resurrecting a cached one): its id and
 * generation, or -1. */
int m_acquire(struct mpool *mp, kvb_hash h, uint32_t *gen);
/* The last reference of id went: its transition (and its primary's, for the
 * duplicate holding the primary's last reference). */
void m_last_release(struct mpool *mp, uint32_t id);
/* The first `need` eviction victims in policy order (lru, fifo), among the blocks
 * neither set apart by hints nor listed by priority. */
void m_victims(const struct mpool *mp, uint32_t need, uint32_t *out);
/* ---- hints ---- */
bool m_hinted(const struct mpool *mp, kvb_hash h);
/* The heap key of a set-apart block: next need << 24 | position. */
uint64_t m_hkey(const struct mpool *mp, uint32_t id);
/* Hashes with hints outstanding; *records: the queued records past each oldest. */
uint32_t m_hint_entries(const struct mpool *mp, uint32_t *records);
/* Cached blocks set apart by hints. */
uint32_t m_protected(const struct mpool *mp);
/* The head of the non-empty priority list with the lowest level in [lo, hi], or -1. */
int m_list_head(const struct mpool *mp, uint32_t lo, uint32_t hi);
/* Up to `need` victims of the cached blocks not set apart by hints, in the pool's
 * order with priorities (prio.h): the lowest level first; within it the blocks set
 * apart in its list earlier, else the policy's next block, itself set apart in its
 * level's list when its level is not that one. Taken victims are marked diverted;
 * with `filter`, hinted ones are set apart (diverted) instead of returned. */
uint32_t m_level_victims(struct mpool *mp, uint32_t need, uint32_t *out, bool filter);
/* Cached blocks in the policy's order. */
uint32_t m_in_policy(const struct mpool *mp);
/* The victims of an allocation needing `need` blocks past the free list: below
 * the default priority, the policy's order, above the default, then the
 * set-apart blocks by key (ties: the library's choice lib[], checked). */
void m_victims_hinted(struct mpool *mp, uint32_t need, uint32_t *out, const uint32_t *lib);
/* ---- retention priorities ---- */
/* Content id (PRIMARY or INACTIVE) gets priority prio for dur ms (0: no limit). */
void m_set_prio(struct mpool *mp, uint32_t id, uint32_t prio, uint32_t dur);
/* Apply the durations due at g_now, earliest deadline (then lowest id) first. */
void m_expire(struct mpool *mp);
/* ---- handles ---- */
/* (id, gen) names a slot in state st. */
bool m_valid(const struct mpool *mp, uint32_t id, uint32_t gen, int st);
/* (id, gen) names a slot with a reference. */
bool m_ref_valid(const struct mpool *mp, uint32_t id, uint32_t gen);

#endif /* KVB_FUZZ_POOL_MODEL_H */
