/*
 * pool_model.c - the reference model of fuzz/fuzz_pool.c (pool_model.h).
 */
#include "pool_model.h"
#include "testing.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t g_step;

void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_pool: MODEL MISMATCH at step %zu: ", g_step);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

/* ------------------------------------------------------------------------ */
/* hashes                                                                   */
/* ------------------------------------------------------------------------ */

kvb_hash U[NU];

void universe_init(void)
{
    for (int c = 0; c < 3; c++)
        for (int d = 0; d < 4; d++)
            kvb_hash_make(100u + (uint64_t)c * 10 + (uint64_t)d,
                          100u + (uint64_t)c * 10 + (uint64_t)d - 1, d > 0, (uint32_t)d,
                          &U[c * 4 + d]);
    kvb_hash_make(7001, 5, true, 300, &U[12]);
    kvb_hash_make(7002, 6, true, 70000, &U[13]);
    kvb_hash_make(7003, 7, true, KVB_HASH_MAX_POSITION, &U[14]);
    U[15] = (kvb_hash){3ull << 62, 1}; /* mode 3: invalid, kvb_mutable_stage says -EINVAL */
}

bool hash_valid(kvb_hash h)
{
    return (h.hi >> 62) != 3;
}

bool heq(kvb_hash a, kvb_hash b)
{
    return a.hi == b.hi && a.lo == b.lo;
}

/* ------------------------------------------------------------------------ */
/* the model                                                                */
/* ------------------------------------------------------------------------ */

struct model M;

void rec_push(struct reclog *l, int pool, int kind, uint32_t id, kvb_hash h)
{
    CHECK(l->n < MAXREC, "record log overflow");
    l->r[l->n++] = (struct rec){pool, kind, id, h};
}

struct mpool *mp_of(const kvb_pool *p)
{
    if (!p)
        return NULL;
    if (p == M.P[0].real)
        return &M.P[0];
    if (p == M.P[1].real)
        return &M.P[1];
    fail("a handle names an unknown pool %p", (const void *)p);
}

uint32_t held(const struct mpool *mp)
{
    return mp->count[S_MUTABLE] + mp->count[S_STAGED] + mp->count[S_PRIMARY] +
           mp->count[S_DUPLICATE];
}

static void free_push(struct mpool *mp, uint32_t id)
{
    mp->freeq[(mp->fhead + mp->flen) % MAXB] = id;
    mp->flen++;
}

uint32_t free_pop(struct mpool *mp)
{
    uint32_t id = mp->freeq[mp->fhead];
    mp->fhead = (mp->fhead + 1) % MAXB;
    mp->flen--;
    return id;
}

static void lru_remove(struct mpool *mp, uint32_t id)
{
    for (uint32_t i = 0; i < mp->nlru; i++)
        if (mp->lru[i] == id) {
            memmove(&mp->lru[i], &mp->lru[i + 1], (mp->nlru - i - 1) * sizeof mp->lru[0]);
            mp->nlru--;
            return;
        }
    fail("model: inactive id %u not in the lru order", id);
}

uint32_t m_trans(struct mpool *mp, uint32_t id, int to, uint32_t rc)
{
    struct mslot *s = &mp->s[id];
    int from = s->state;
    if (from == S_INACTIVE && s->diverted)
        s->diverted = false;
    else if (from == S_INACTIVE && s->listed)
        s->listed = false;
    else if (from == S_INACTIVE)
        lru_remove(mp, id);
    if ((from == S_PRIMARY || from == S_INACTIVE) && (to == S_RESET || to == S_MUTABLE)) {
        s->prio = KVB_PRIORITY_DEFAULT; /* the content leaves, so does its priority */
        s->until = 0;
    }
    mp->count[from]--;
    mp->count[to]++;
    s->state = (uint8_t)to;
    s->gen++;
    if (s->gen == 0)
        s->gen = 1;
    s->rc = rc;
    if (to == S_RESET) {
        s->flag = false;
        free_push(mp, id);
    } else if (to == S_INACTIVE) { /* into the policy's order, whatever its priority */
        mp->lru[mp->nlru++] = id;
    }
    if (held(mp) > mp->peak)
        mp->peak = held(mp);
    return s->gen;
}

void m_cb(struct mpool *mp, int kind, uint32_t id, kvb_hash h)
{
    if (mp->callbacks)
        rec_push(&M.cb, mp->idx, kind, id, h);
}

void m_ev(struct mpool *mp, int kind, kvb_hash h)
{
    if (mp->events)
        rec_push(&M.ev, mp->idx, kind, 0, h);
}

int m_find(const struct mpool *mp, kvb_hash h)
{
    for (uint32_t i = 0; i < mp->n; i++)
        if ((mp->s[i].state == S_PRIMARY || mp->s[i].state == S_INACTIVE) && heq(mp->s[i].hash, h))
            return (int)i;
    return -1;
}

/* one reference to the block holding h (resurrecting a cached one), or -1 */
int m_acquire(struct mpool *mp, kvb_hash h, uint32_t *gen)
{
    int id = m_find(mp, h);
    if (id < 0)
        return -1;
    struct mslot *s = &mp->s[id];
    if (s->state == S_PRIMARY) {
        /* a count of 0 here means "held by its duplicates only" (one thread: no
         * release window is ever open) */
        CHECK(s->rc > 0 || s->dups > 0, "model: PRIMARY %d with no holder", id);
        if (s->rc >= RC_MAX)
            return -1;
        s->rc++;
        *gen = s->gen;
        return id;
    }
    mp->c.resurrections++;
    *gen = m_trans(mp, (uint32_t)id, S_PRIMARY, 1);
    return id;
}

/* the last reference of (id) went: its transition, and its primary's if it was the
 * duplicate holding the primary's last reference */
void m_last_release(struct mpool *mp, uint32_t id)
{
    for (;;) {
        struct mslot *s = &mp->s[id];
        if (s->state == S_PRIMARY) {
            if (s->dups)
                return; /* still held by its duplicates: their last one moves it */
            if (s->flag) {
                m_trans(mp, id, S_RESET, 0);
                m_cb(mp, CB_RESET, id, s->hash);
                m_ev(mp, EV_REMOVED, s->hash);
            } else {
                m_trans(mp, id, S_INACTIVE, 0);
            }
            return;
        }
        CHECK(s->state == S_DUPLICATE, "model: last release of a slot in state %d", s->state);
        uint32_t pid = s->prim;
        m_trans(mp, id, S_RESET, 0);
        m_cb(mp, CB_RESET, id, s->hash);
        struct mslot *ps = &mp->s[pid];
        CHECK(ps->state == S_PRIMARY && ps->dups > 0, "model: duplicate without its primary");
        ps->dups--;
        if (ps->dups || ps->rc)
            return;
        id = pid; /* no handle and no duplicate left: the primary's move is ours */
    }
}

/* the first `need` eviction victims in policy order (known policies), among the
 * blocks not set apart by hints: lru is the insertion order; fifo the arrival order
 * (serial-number compare, then id) */
void m_victims(const struct mpool *mp, uint32_t need, uint32_t *out)
{
    if (mp->policy == POL_LRU) {
        memcpy(out, mp->lru, need * sizeof *out);
        return;
    }
    uint32_t ids[MAXB], k = 0;
    for (uint32_t i = 0; i < mp->n; i++)
        if (mp->s[i].state == S_INACTIVE && !mp->s[i].diverted && !mp->s[i].listed)
            ids[k++] = i;
    for (uint32_t a = 0; a < need; a++) { /* selection: n <= 48 */
        uint32_t best = a;
        for (uint32_t b = a + 1; b < k; b++) {
            uint32_t x = mp->s[ids[b]].arrival, y = mp->s[ids[best]].arrival;
            if ((x != y && ((x - y) & 0x80000000u)) || (x == y && ids[b] < ids[best]))
                best = b;
        }
        uint32_t t = ids[a];
        ids[a] = ids[best];
        ids[best] = t;
        out[a] = ids[a];
    }
}

/* ---- hints ---- */

static int u_index(kvb_hash h)
{
    for (int k = 0; k < NU - 1; k++)
        if (heq(U[k], h))
            return k;
    return -1;
}

bool m_hinted(const struct mpool *mp, kvb_hash h)
{
    int k = u_index(h);
    return k >= 0 && mp->h[k].uses > 0;
}

/* the heap key of a set-apart block: next need << 24 | position */
uint64_t m_hkey(const struct mpool *mp, uint32_t id)
{
    int k = u_index(mp->s[id].hash);
    CHECK(k >= 0 && mp->h[k].uses, "model: set-apart block %u without hints", id);
    return mp->h[k].tk[0] << 24 | kvb_hash_position(mp->s[id].hash);
}

uint32_t m_hint_entries(const struct mpool *mp, uint32_t *records)
{
    uint32_t e = 0, r = 0;
    for (int k = 0; k < NU; k++)
        if (mp->h[k].uses) {
            e++;
            r += mp->h[k].nt - 1; /* the oldest lives in the entry */
        }
    *records = r;
    return e;
}

uint32_t m_protected(const struct mpool *mp)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < mp->n; i++)
        n += mp->s[i].state == S_INACTIVE && mp->s[i].diverted;
    return n;
}

/* the head of the non-empty level list with the lowest level in [lo, hi], or -1 */
int m_list_head(const struct mpool *mp, uint32_t lo, uint32_t hi)
{
    int best = -1;
    for (uint32_t i = 0; i < mp->n; i++) {
        const struct mslot *s = &mp->s[i];
        if (s->state != S_INACTIVE || !s->listed || s->prio < lo || s->prio > hi)
            continue;
        if (best < 0 || s->prio < mp->s[best].prio ||
            (s->prio == mp->s[best].prio && s->lseq < mp->s[best].lseq))
            best = (int)i;
    }
    return best;
}

/* A block taken from where it waits (its list or the policy's order): set apart when
 * hinted, else out[(*k)++]. Victims are marked `diverted` too, which keeps them out
 * of every order until m_trans moves them. */
static void m_take(struct mpool *mp, uint32_t id, uint32_t *out, uint32_t *k, bool filter)
{
    struct mslot *s = &mp->s[id];
    if (s->listed)
        s->listed = false;
    else
        lru_remove(mp, id); /* (the lru list tracks the policy's blocks whatever the policy) */
    s->diverted = true;
    if (!filter || !m_hinted(mp, s->hash))
        out[(*k)++] = id;
}

uint32_t m_in_policy(const struct mpool *mp)
{
    uint32_t nb = 0;
    for (uint32_t i = 0; i < mp->n; i++)
        nb += mp->s[i].state == S_INACTIVE && !mp->s[i].diverted && !mp->s[i].listed;
    return nb;
}

/* The lowest priority of a cached block in the policy's order or a level list
 * (not set apart by hints, not taken), or -1. */
static int m_lowest_cached(const struct mpool *mp)
{
    int low = -1;
    for (uint32_t i = 0; i < mp->n; i++) {
        const struct mslot *s = &mp->s[i];
        if (s->state == S_INACTIVE && !s->diverted && (low < 0 || s->prio < low))
            low = s->prio;
    }
    return low;
}

uint32_t m_level_victims(struct mpool *mp, uint32_t need, uint32_t *out, bool filter)
{
    uint32_t k = 0;
    int l;
    while (k < need && (l = m_lowest_cached(mp)) >= 0) {
        int head = m_list_head(mp, (uint32_t)l, (uint32_t)l);
        if (head >= 0) {
            m_take(mp, (uint32_t)head, out, &k, filter);
            continue;
        }
        uint32_t order[1];
        m_victims(mp, 1, order);
        struct mslot *s = &mp->s[order[0]];
        if (s->prio == l || (filter && m_hinted(mp, s->hash))) {
            m_take(mp, order[0], out, &k, filter);
        } else {
            lru_remove(mp, order[0]);
            s->listed = true;
            s->lseq = ++mp->lseq;
        }
    }
    return k;
}

/* Victims of an allocation needing `need` blocks past the free list (known policies):
 * m_level_victims with hinted blocks set apart on the way, then the set-apart blocks
 * by key, largest first (ties: the library's choice, from lib[], checked). */
void m_victims_hinted(struct mpool *mp, uint32_t need, uint32_t *out, const uint32_t *lib)
{
    uint32_t k = m_level_victims(mp, need, out, true);
    while (k < need) {
        uint64_t best = 0;
        bool any = false;
        for (uint32_t i = 0; i < mp->n; i++) {
            if (mp->s[i].state != S_INACTIVE || !mp->s[i].diverted)
                continue;
            bool taken = false;
            for (uint32_t j = 0; j < k; j++)
                taken |= out[j] == i;
            if (taken)
                continue;
            uint64_t key = m_hkey(mp, i);
            if (!any || key > best)
                best = key;
            any = true;
        }
        CHECK(any, "model: allocation ran out of cached blocks");
        uint32_t id = lib[k];
        CHECK(id < mp->n && mp->s[id].state == S_INACTIVE && mp->s[id].diverted &&
                  m_hkey(mp, id) == best,
              "allocate: protected victim %u is not one needed furthest ahead", id);
        for (uint32_t j = 0; j < k; j++)
            CHECK(out[j] != id, "allocate: block %u evicted twice", id);
        out[k++] = id;
        mp->h_evictions++;
    }
}

/* ---- retention priorities ---- */

uint64_t g_now = 1000; /* the injected clock of pool A */

/* content id (PRIMARY/INACTIVE) gets a priority and duration */
void m_set_prio(struct mpool *mp, uint32_t id, uint32_t prio, uint32_t dur)
{
    struct mslot *s = &mp->s[id];
    /* a block in the policy's order keeps its place; one set apart in a level list
     * re-enters the policy's order as newly released */
    if (s->state == S_INACTIVE && s->listed && s->prio != prio) {
        s->listed = false;
        mp->lru[mp->nlru++] = id;
    }
    s->prio = (uint8_t)prio;
    s->until = dur && prio != KVB_PRIORITY_DEFAULT ? g_now + dur : 0;
}

/* durations due now, earliest deadline (then lowest id) first */
void m_expire(struct mpool *mp)
{
    for (;;) {
        int best = -1;
        for (uint32_t i = 0; i < mp->n; i++) {
            const struct mslot *s = &mp->s[i];
            if (!s->until || s->until > g_now)
                continue;
            if (best < 0 || s->until < mp->s[best].until)
                best = (int)i;
        }
        if (best < 0)
            return;
        struct mslot *s = &mp->s[best];
        s->until = 0;
        s->prio = KVB_PRIORITY_DEFAULT;
        mp->expired++;
        if (s->listed) { /* set apart at its old priority: into the policy's order */
            s->listed = false;
            mp->lru[mp->nlru++] = (uint32_t)best;
        }
    }
}

bool m_valid(const struct mpool *mp, uint32_t id, uint32_t gen, int st)
{
    return id < mp->n && mp->s[id].state == st && mp->s[id].gen == gen;
}

bool m_ref_valid(const struct mpool *mp, uint32_t id, uint32_t gen)
{
    return id < mp->n && mp->s[id].gen == gen && mp->s[id].rc > 0;
}

void model_reset(struct mpool *mp, const kvb_pool_config *cfg, kvb_pool *real, int idx)
{
    memset(mp, 0, sizeof *mp);
    mp->real = real;
    mp->idx = idx;
    mp->n = cfg->block_count;
    mp->reject = cfg->dup_policy == KVB_DUP_REJECT;
    mp->reset_default = cfg->reset_on_release;
    mp->callbacks = cfg->callbacks.on_reset != NULL;
    mp->events = cfg->events != NULL;
    mp->evict = cfg->evict;
    mp->hint_cap = cfg->hint_capacity;
    mp->prio = cfg->priorities;
    mp->policy = cfg->evict == KVB_EVICT_LRU    ? POL_LRU
                 : cfg->evict == KVB_EVICT_FIFO ? POL_FIFO
                                                : POL_OTHER;
    for (uint32_t i = 0; i < mp->n; i++) {
        mp->s[i].gen = kvb__test_slot_gen(real, i); /* each pool starts at its own */
        mp->s[i].prio = KVB_PRIORITY_DEFAULT;
        free_push(mp, i);
    }
    mp->count[S_RESET] = mp->n;
}
