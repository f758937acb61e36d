/*
 * adaptive.c - the "adaptive" inactive index: lru or lineage_arc, whichever
 * miniature simulations say is winning on this workload now.
 *
 * Source: Waldspurger, Saemundsson, Ahmad, Park, "Cache Modeling and
 * Optimization using Miniature Simulations" (USENIX ATC 2017): a policy's hit
 * ratio at capacity C is estimated by simulating it at capacity C x R on the
 * accesses to a spatially sampled subset of the content (the hashes whose mixed
 * top 32 bits fall below R x 2^32), and the real cache follows the candidate
 * whose miniature does best.
 *
 * Candidates: the two built-in backends the replay lab measures it against,
 * `lru` and `lineage_arc` (ARC over the leaves of the prefix tree).
 *
 * Both backends hold every cached block (each gets every insert and remove); the
 * active one chooses the victims, which the other one then lets go with a
 * remove(), so switching is a flip, O(1), and never moves a block. The shadow
 * lru is exact (a remove keeps LRU order); a shadow lineage_arc reads lru's
 * victims as hits and keeps no ghosts of them, so it comes back with less
 * history than it would have had (docs/eviction.md measures what that costs).
 *
 * Accesses are inferred from the calls a backend receives: remove() is a hit on
 * cached content; insert() of content that was not just removed (another arrival
 * number than this block had when it was removed) is a miss that was registered.
 * (Hits on blocks still held reach no backend; the miniatures do without them.)
 * A sampled access goes to both miniatures: a flat LRU and a flat ARC with
 * lineage_arc's changes to ARC (8x ghosts, near-only adaptation, p0 = 0.1 x
 * capacity), at capacity C x R with R = 2^-k the largest rate keeping it at or
 * below KVB_ADA_MINI (full size, R = 1, for C <= 2 x KVB_ADA_MINI). Each counts
 * its hits with exponential decay; every `epoch` sampled accesses (1/8 of the
 * miniature's capacity) the real cache switches when the other miniature's
 * decayed hits beat the active one's by more than KVB_ADA_MARGIN relative and
 * KVB_ADA_Z standard deviations (hysteresis), then the counts decay.
 *
 * Contract: as every backend (kvblock/inactive.h). unevict is exact for the
 * active backend; the shadow gets the blocks back by insert. memory() counts
 * both backends, the per-block state and the miniatures.
 *
 * Cost: lineage_arc's and lru's per operation, a hash mix per access, and two
 * flat simulations per sampled access.
 *
 * Locking: none of its own; every method runs under the owning pool's mutex.
 */
#include "ilist.h"
#include "internal.h"

#include <math.h>
#include <string.h>

#define KVB_ADA_NONE   UINT32_MAX
#define KVB_ADA_MINI   1024 /* miniature capacity to aim for (full size below it) */
#define KVB_ADA_MARGIN 0.02 /* relative lead the other policy needs to take over */
#define KVB_ADA_Z      2.0  /* ... and in standard deviations of the hit counts */
#define KVB_ADA_DECAY  0.95 /* the hit counts' decay per check */
#define KVB_ADA_CHECK  8    /* checks per miniature capacity of sampled accesses */
#define KVB_ADA_GHOSTS 8    /* the ARC miniature's ghosts per slot, as lineage_arc */

enum { KVB_ADA_LRU = 0, KVB_ADA_ARC = 1 };

/* ------------------------------------------------------------------------ */
/* miniature caches over 64-bit fingerprints                                */
/* ------------------------------------------------------------------------ */

/* One entry of a miniature: fingerprint, list links (ilist.h), list (0 free, 1 T1/lru, 2 T2,
 * 3 B1, 4 B2) and, for ghosts, the list's insertion count when added. */
struct kvb_mini_ent {
    uint64_t fp;
    struct kvb_ilink link;
    uint32_t list, seq;
};

/* A miniature: `n` entries, sentinels n + 0 .. n + 4 (one per list), an open
 * addressing table fp -> entry (2 x n cells, linear probing, backward shift). */
struct kvb_mini {
    struct kvb_mini_ent *e;
    uint32_t *tab;
    uint32_t n, tcap, cap; /* entries, cells, resident capacity */
    uint32_t free_head;
    uint32_t size[5];
    uint32_t lseq[5];
    double p, step; /* ARC target for T1, adaptation step */
    bool arc;
    double hits; /* decayed */
};

/* the low 32 bits: the top ones are below the sampling threshold, not uniform */
static uint32_t kvb_mini_home(const struct kvb_mini *m, uint64_t fp)
{
    return kvb__cell_of((uint32_t)fp, m->tcap);
}

static uint32_t kvb_mini_find(const struct kvb_mini *m, uint64_t fp, uint32_t *cell)
{
    uint32_t i = kvb_mini_home(m, fp);
    for (;;) {
        uint32_t x = m->tab[i];
        if (x == KVB_ADA_NONE || m->e[x].fp == fp) {
            *cell = i;
            return x;
        }
        i = kvb__cell_next(i, m->tcap);
    }
}

static void kvb_mini_tab_erase(struct kvb_mini *m, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = kvb__cell_next(j, m->tcap);
        uint32_t x = m->tab[j];
        if (x == KVB_ADA_NONE)
            break;
        uint32_t home = kvb_mini_home(m, m->e[x].fp);
        if (kvb__cell_dist(home, j, m->tcap) >= kvb__cell_dist(i, j, m->tcap)) {
            m->tab[i] = x;
            i = j;
        }
    }
    m->tab[i] = KVB_ADA_NONE;
}

static void kvb_mini_unlink(struct kvb_mini *m, uint32_t x)
{
    kvb_ilist_remove(KVB_ILIST(m->e, link), x);
    m->size[m->e[x].list]--;
}

/* x to the MRU end of list l */
static void kvb_mini_link(struct kvb_mini *m, uint32_t x, uint32_t l)
{
    struct kvb_mini_ent *en = &m->e[x];
    kvb_ilist_push_tail(KVB_ILIST(m->e, link), m->n + l, x);
    en->list = l;
    en->seq = ++m->lseq[l];
    m->size[l]++;
}

/* the LRU entry of list l, unlinked; its table cell stays */
static uint32_t kvb_mini_oldest(struct kvb_mini *m, uint32_t l)
{
    uint32_t x = kvb_ilist_first(KVB_ILIST(m->e, link), m->n + l);
    kvb_mini_unlink(m, x);
    return x;
}

/* drop entry x (unlinked) from the table and free it */
static void kvb_mini_drop(struct kvb_mini *m, uint32_t x)
{
    uint32_t cell;
    (void)kvb_mini_find(m, m->e[x].fp, &cell);
    kvb_mini_tab_erase(m, cell);
    m->e[x].list = 0;
    kvb_ilist_free_push(KVB_ILIST(m->e, link), &m->free_head, x);
}

static uint32_t kvb_mini_new(struct kvb_mini *m, uint64_t fp, uint32_t cell)
{
    uint32_t x = kvb_ilist_free_pop(KVB_ILIST(m->e, link), &m->free_head);
    m->e[x].fp = fp;
    m->tab[cell] = x;
    return x;
}

static size_t kvb_mini_bytes(uint32_t n)
{
    return ((size_t)n + 5) * sizeof(struct kvb_mini_ent) + 2 * (size_t)n * sizeof(uint32_t);
}

static int kvb_mini_init(struct kvb_mini *m, uint32_t cap, bool arc, const kvb_allocator *a)
{
    memset(m, 0, sizeof *m);
    m->arc = arc;
    m->cap = cap;
    m->n = arc ? cap * (1 + KVB_ADA_GHOSTS) : cap;
    m->tcap = 2 * m->n;
    m->e = kvb__alloc(a, ((size_t)m->n + 5) * sizeof *m->e);
    m->tab = kvb__alloc(a, (size_t)m->tcap * sizeof *m->tab);
    if (!m->e || !m->tab)
        return -ENOMEM;
    memset(m->tab, 0xff, (size_t)m->tcap * sizeof *m->tab);
    for (uint32_t i = 0; i < m->n; i++)
        m->e[i] = (struct kvb_mini_ent){.link.next = i + 1 < m->n ? i + 1 : KVB_ADA_NONE};
    for (uint32_t l = 0; l < 5; l++) {
        m->e[m->n + l] = (struct kvb_mini_ent){.list = 0};
        kvb_ilist_init(KVB_ILIST(m->e, link), m->n + l);
    }
    m->free_head = 0;
    m->p = 0.1 * cap;
    m->step = sqrt((double)cap / 1024.0);
    if (m->step < 1)
        m->step = 1;
    return 0;
}

static void kvb_mini_fini(struct kvb_mini *m, const kvb_allocator *a)
{
    kvb__free(a, m->e, ((size_t)m->n + 5) * sizeof *m->e);
    kvb__free(a, m->tab, (size_t)m->tcap * sizeof *m->tab);
}

/* LRU miniature: one access; returns whether it hit */
static bool kvb_mini_lru(struct kvb_mini *m, uint64_t fp)
{
    uint32_t cell, x = kvb_mini_find(m, fp, &cell);
    if (x != KVB_ADA_NONE) {
        kvb_mini_unlink(m, x);
        kvb_mini_link(m, x, 1);
        return true;
    }
    if (m->size[1] == m->cap) {
        kvb_mini_drop(m, kvb_mini_oldest(m, 1));
        (void)kvb_mini_find(m, fp, &cell); /* the cell may have moved */
    }
    kvb_mini_link(m, kvb_mini_new(m, fp, cell), 1);
    return false;
}

/* ARC's replace: one resident to its ghost list (T1 -> B1 or T2 -> B2) */
static void kvb_mini_replace(struct kvb_mini *m)
{
    uint32_t from = m->size[1] > 0 && ((double)m->size[1] > m->p || m->size[2] == 0) ? 1 : 2;
    uint32_t x = kvb_mini_oldest(m, from);
    kvb_mini_link(m, x, from + 2);
}

/* ARC miniature (flat lineage_arc: long ghosts, near-only adaptation) */
static bool kvb_mini_arc(struct kvb_mini *m, uint64_t fp)
{
    uint32_t cell, x = kvb_mini_find(m, fp, &cell);
    if (x != KVB_ADA_NONE && m->e[x].list <= 2) { /* resident: to T2 */
        kvb_mini_unlink(m, x);
        kvb_mini_link(m, x, 2);
        return true;
    }
    if (x != KVB_ADA_NONE) { /* a ghost: adapt when near, readmit into T2 */
        uint32_t l = m->e[x].list;
        uint32_t age = m->lseq[l] - m->e[x].seq;
        if ((double)age < 0.75 * m->cap) {
            double b1 = m->size[3], b2 = m->size[4];
            if (l == 3) {
                double r = b2 / b1;
                m->p += m->step * (r > 1 ? r : 1);
                if (m->p > m->cap)
                    m->p = m->cap;
            } else {
                double r = b1 / b2;
                m->p -= m->step * (r > 1 ? r : 1);
                if (m->p < 0)
                    m->p = 0;
            }
        }
        kvb_mini_unlink(m, x);
        if (m->size[1] + m->size[2] >= m->cap)
            kvb_mini_replace(m);
        kvb_mini_link(m, x, 2);
        return false;
    }
    if (m->size[1] + m->size[2] >= m->cap)
        kvb_mini_replace(m);
    if (m->free_head == KVB_ADA_NONE) { /* ghosts full: drop the longer list's oldest */
        uint32_t l = m->size[3] > m->size[4] ? 3 : 4;
        if (m->size[l] == 0)
            l = 7 - l;
        kvb_mini_drop(m, kvb_mini_oldest(m, l));
    }
    (void)kvb_mini_find(m, fp, &cell);
    kvb_mini_link(m, kvb_mini_new(m, fp, cell), 1);
    return false;
}

/* ------------------------------------------------------------------------ */
/* the backend                                                              */
/* ------------------------------------------------------------------------ */

/* Every field is protected by the owning pool's mutex. */
struct kvb_ada {
    const kvb_inactive_ops *ops[2];
    void *b[2];
    uint32_t active;
    uint32_t bc;
    kvb_hash *hash;    /* per block: its hash at its last insert (a switch re-inserts it) */
    uint32_t *arrival; /* per block: arrival at its last insert */
    uint8_t *hit;      /* per block: removed (a hit) since that insert */

    uint32_t sample; /* a hash is sampled when its mixed 32 bits are < sample (or all) */
    bool all;
    struct kvb_mini mini[2];
    uint32_t epoch, in_epoch;
    uint64_t nacc; /* sampled accesses */
    uint64_t switches;

    kvb_allocator allocator;
};

static void kvb_ada_free(struct kvb_ada *a)
{
    kvb_allocator al = a->allocator;
    for (int i = 0; i < 2; i++) {
        if (a->b[i])
            a->ops[i]->destroy(a->b[i]);
        kvb_mini_fini(&a->mini[i], &al);
    }
    kvb__free(&al, a->hash, (size_t)a->bc * sizeof *a->hash);
    kvb__free(&al, a->arrival, (size_t)a->bc * sizeof *a->arrival);
    kvb__free(&al, a->hit, a->bc);

    kvb__free(&al, a, sizeof *a);
}

static int kvb_ada_create(const kvb_inactive_params *params, void **out)
{
    if (!params || !out || params->block_count == 0 || params->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    kvb_allocator al = params->allocator;
    kvb__allocator_fill(&al);
    struct kvb_ada *a = kvb__calloc(&al, 1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->allocator = al;
    a->bc = params->block_count;
    a->ops[KVB_ADA_LRU] = &kvb_inactive_lru;
    a->ops[KVB_ADA_ARC] = &kvb_inactive_lineage_arc;
    a->active = KVB_ADA_ARC;
    /* sampling rate 2^-k with C x 2^-k >= KVB_ADA_MINI (k = 0: every access) */
    uint32_t k = 0;
    while (k < 16 && ((uint64_t)a->bc >> (k + 1)) >= KVB_ADA_MINI)
        k++;
    a->all = k == 0;
    a->sample = k ? (uint32_t)(1ull << (32 - k)) : 0;
    uint32_t mcap = (uint32_t)((uint64_t)a->bc >> k);
    if (mcap == 0)
        mcap = 1;
    a->epoch = mcap / KVB_ADA_CHECK < 16 ? 16 : mcap / KVB_ADA_CHECK;
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        rc = a->ops[i]->create(params, &a->b[i]);
        if (rc)
            a->b[i] = NULL;
    }
    if (!rc)
        rc = kvb_mini_init(&a->mini[KVB_ADA_LRU], mcap, false, &al);
    if (!rc)
        rc = kvb_mini_init(&a->mini[KVB_ADA_ARC], mcap, true, &al);
    a->hash = kvb__alloc(&al, (size_t)a->bc * sizeof *a->hash);
    a->arrival = kvb__calloc(&al, a->bc, sizeof *a->arrival);
    a->hit = kvb__calloc(&al, a->bc, 1);
    if (rc || !a->hash || !a->arrival || !a->hit) {
        kvb_ada_free(a);
        return rc < 0 && rc != -ENOMEM ? rc : -ENOMEM;
    }
    *out = a;
    return 0;
}

static void kvb_ada_destroy(void *self)
{
    if (self)
        kvb_ada_free(self);
}

/* One access to content `hash` (a hit or a registration): the miniatures. */
static void kvb_ada_access(struct kvb_ada *a, kvb_hash hash)
{
    uint64_t x = kvb__hash_mix(hash);
    if (!a->all && (uint32_t)(x >> 32) >= a->sample)
        return;
    uint64_t fp = x ^ (x >> 29);
    a->mini[KVB_ADA_LRU].hits += kvb_mini_lru(&a->mini[KVB_ADA_LRU], fp);
    a->mini[KVB_ADA_ARC].hits += kvb_mini_arc(&a->mini[KVB_ADA_ARC], fp);
    a->nacc++;
    if (++a->in_epoch < a->epoch)
        return;
    a->in_epoch = 0;
    double act = a->mini[a->active].hits, oth = a->mini[1 - a->active].hits;
    if (oth - act > KVB_ADA_MARGIN * act && oth - act > KVB_ADA_Z * sqrt(oth + act)) {
        a->active = 1 - a->active; /* both hold every block: switching is a flip */
        a->switches++;
    }
    a->mini[0].hits *= KVB_ADA_DECAY;
    a->mini[1].hits *= KVB_ADA_DECAY;
}

static int kvb_ada_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct kvb_ada *a = self;
    if (id >= a->bc)
        return -EINVAL;
    int rc = a->ops[a->active]->insert(a->b[a->active], hash, id, arrival);
    if (rc)
        return rc;
    (void)a->ops[1 - a->active]->insert(a->b[1 - a->active], hash, id, arrival);
    /* released after a hit on this very content: the hit was the access; else it
     * is content registered since (a miss) */
    bool access = !(a->hit[id] && a->arrival[id] == arrival);
    a->hash[id] = hash;
    a->arrival[id] = arrival;
    a->hit[id] = 0;
    if (access)
        kvb_ada_access(a, hash);
    return 0;
}

static bool kvb_ada_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct kvb_ada *a = self;
    if (id >= a->bc || !a->ops[a->active]->remove(a->b[a->active], hash, id))
        return false;
    (void)a->ops[1 - a->active]->remove(a->b[1 - a->active], hash, id);
    a->hit[id] = 1;
    kvb_ada_access(a, hash);
    return true;
}

static bool kvb_ada_contains(const void *self, uint32_t id)
{
    const struct kvb_ada *a = self;
    return a->ops[a->active]->contains(a->b[a->active], id);
}

/* The active policy's victims; the other backend lets them go too (for lineage_arc
 * as the other one that reads as a hit: it keeps no ghost of what lru evicted). */
static uint32_t kvb_ada_evict(void *self, uint32_t n, uint32_t *out)
{
    struct kvb_ada *a = self;
    if (!out)
        return 0;
    uint32_t k = a->ops[a->active]->evict(a->b[a->active], n, out);
    const kvb_inactive_ops *o = a->ops[1 - a->active];
    for (uint32_t i = 0; i < k; i++)
        if (out[i] < a->bc)
            (void)o->remove(a->b[1 - a->active], a->hash[out[i]], out[i]);
    return k;
}

static uint32_t kvb_ada_len(const void *self)
{
    const struct kvb_ada *a = self;
    return a->ops[a->active]->len(a->b[a->active]);
}

static void kvb_ada_drain(void *self)
{
    struct kvb_ada *a = self;
    a->ops[0]->drain(a->b[0]);
    a->ops[1]->drain(a->b[1]);
}

/* Exact for the active backend; the other one gets the blocks back at its most
 * recent end (only a failed allocation, which the built-in backends never cause,
 * rolls back). */
static void kvb_ada_unevict(void *self, const uint32_t *ids, const kvb_hash *hashes,
                            const uint32_t *arrivals, uint32_t n)
{
    struct kvb_ada *a = self;
    if (!ids)
        return;
    a->ops[a->active]->unevict(a->b[a->active], ids, hashes, arrivals, n);
    for (uint32_t i = n; i-- > 0;)
        if (ids[i] < a->bc)
            (void)a->ops[1 - a->active]->insert(a->b[1 - a->active], a->hash[ids[i]], ids[i],
                                                a->arrival[ids[i]]);
}

static size_t kvb_ada_memory(const void *self)
{
    const struct kvb_ada *a = self;
    size_t n = a->bc;
    return sizeof *a + a->ops[0]->memory(a->b[0]) + a->ops[1]->memory(a->b[1]) +
           kvb_mini_bytes(a->mini[0].n) + kvb_mini_bytes(a->mini[1].n) +
           n * (sizeof *a->hash + sizeof *a->arrival + 1);
}

const kvb_inactive_ops kvb_inactive_adaptive = {
    .version = KVB_INACTIVE_OPS_VERSION,
    .name = "adaptive",
    .create = kvb_ada_create,
    .destroy = kvb_ada_destroy,
    .insert = kvb_ada_insert,
    .remove = kvb_ada_remove,
    .contains = kvb_ada_contains,
    .evict = kvb_ada_evict,
    .len = kvb_ada_len,
    .drain = kvb_ada_drain,
    .unevict = kvb_ada_unevict,
    .memory = kvb_ada_memory,
};
