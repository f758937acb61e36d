/*
 * lineage_arc.c - the "lineage_arc" inactive index: ARC over the leaves of the
 * prefix tree of cached blocks. kvblock's best policy on the Mooncake prefix
 * replay (docs/eviction.md has the measurements and what else was tried).
 *
 * Source: Megiddo, Modha, "ARC: A Self-Tuning, Low Overhead Replacement
 * Cache" (FAST 2003), with three changes for prefix caches:
 *  1. leaf-first: only leaves of the prefix tree are evicted (a parent never
 *     goes before its cached descendants, which could never be matched
 *     again), using lineage_index.h's parking, as lineage.c does;
 *  2. long ghost history: the ghost lists remember 8 x block_count evicted
 *     hashes instead of block_count, because prefix reuse distances are long
 *     (a conversation's next turn comes hundreds of requests later);
 *  3. near-only adaptation: a ghost hit always readmits the block into T2
 *     (it was re-referenced), but it moves ARC's target p only when the ghost
 *     entry is recent (among the last 0.75 x block_count of its list), i.e.
 *     when a bigger T1 (or T2) really would have kept it. Far ghost hits say
 *     "frequent", not "T1 too small"; counting them made p chase noise.
 *     p moves by step x max(1, |B2|/|B1|) (resp. |B1|/|B2|), step =
 *     max(1, sqrt(block_count / 1024)), so large caches, which see few ghost
 *     hits per slot, adapt in about as many requests as small ones; p starts
 *     at 0.1 x block_count.
 *
 * The lists: T1 holds blocks referenced once (new content), T2 blocks
 * referenced again: a block that was hit (taken out by remove and released
 * again with the same arrival number) or new content whose hash is a ghost.
 * Each list is ordered by release (LRU end first). evict takes from T1 when
 * |T1| > p (or T2 is empty), else from T2; in the chosen list the oldest leaf
 * goes (non-leaves are parked until their last child leaves, then return to
 * the LRU end of their list); the evicted hash becomes a ghost of that list
 * (B1 or B2). When the ghosts are full, the oldest ghost of the longer ghost
 * list is dropped. The frequency sketch is not used: T2 membership and the
 * ghosts are this policy's frequency signal, so it needs no registry.
 *
 * Rollback: evicted blocks are logged, each evict call's entries marked as
 * one segment; their ghosts are recorded only at the next insert, remove or
 * drain (which commit the log). unevict(ids) undoes the log, last entry
 * first, back to the start of the segment that evicted ids[0]: each block
 * goes back to the LRU end of its list with its tree keys. That is exact when
 * nothing was parked during the evict (always the case when releases come
 * children first), and it also restores everything when the pool hands the
 * chunks of one allocation back first chunk first.
 *
 * Cost: insert, remove, contains, len O(1) expected (ghost table probes);
 * evict O(1) amortized per block (see lineage_index.h on parking); drain
 * O(block_count); create O(block_count). Memory, all at create: 72 bytes per
 * block for the tree, 21 for the lists and per-block state, and 8 ghosts per
 * block at 16 bytes each (fingerprint, links, age and list in one struct)
 * plus 15 bytes of table each (3 cells of a 4-byte slot index and a control
 * byte): 341 bytes per block. Per-block and per-ghost
 * state are packed in 16-byte structs so that an operation touches one cache
 * line per block or ghost it visits. Bad calls return an error or false and
 * change nothing.
 *
 * Invariants: the where bits of st[id] are ABSENT or the list (T1/T2) of a present block; a
 * present block is on that list or parked; cnt[l] counts present blocks of
 * list l (parked included); len = cnt[T1] + cnt[T2]; a ghost slot is on
 * exactly one of B1, B2 or the free list, and in the table iff on B1 or B2.
 *
 * Locking: none of its own; every method runs under the owning pool's mutex.
 */
#include "ilist.h"
#include "internal.h"
#include "lineage_index.h"

#include <math.h>
#include <string.h>

#define KVB_LARC_NONE             UINT32_MAX
#define KVB_LARC_GHOSTS_PER_BLOCK 8
#define KVB_LARC_NEAR             0.75 /* ghost hits younger than this x block_count adapt p */
#define KVB_LARC_P0               0.1  /* initial p, x block_count */

enum { KVB_LARC_ABSENT = 0, KVB_LARC_T1 = 1, KVB_LARC_T2 = 2 };

/* st[] bits: the list (2 bits) and flags */
#define KVB_LARC_WHERE  3
#define KVB_LARC_PARKED 4
#define KVB_LARC_HIT    8
#define KVB_LARC_LOGGED 16          /* evicted, in the log: the where bits still name its list */
#define KVB_LARC_SEG    0x80000000u /* log flag; block ids are < 2^30 */

/* A ghost: fingerprint, list links (ilist.h), and seql = its list's insertion counter
 * when added (30 bits, wrapping) | list << 30 (0 free, 1 B1, 2 B2). */
struct kvb_larc_gslot {
    uint32_t fp;
    struct kvb_ilink link;
    uint32_t seql;
};
#define KVB_LARC_SEQ_MASK 0x3fffffffu

/* Ghost lists B1 (list 1) and B2 (list 2): `cap` slots in FIFO lists with
 * sentinels at cap + 0 (B1) and cap + 1 (B2), a free list through next, and an
 * open-addressing table of slot indices keyed by fingerprint (linear probing,
 * backward-shift deletion, KVB_LARC_GCELLS cells per ghost: load <= 1/3), with
 * a control byte per cell (see
 * kvb_larc_gctl) so that probes and erase rarely load a slot. Ghost
 * operations are bound by cache misses: the code prefetches what the next
 * step will need (table cells, the next ghost to drop, tree cells). */
struct kvb_larc_ghosts {
    struct kvb_larc_gslot *slot;   /* cap + 2 entries */
    uint32_t *tab;                 /* KVB_LARC_NONE: empty */
    uint8_t *ctl;                  /* per table cell: 0 empty, else tag | dcode << 4 */
    uint32_t cap, tcap, free_head; /* ghost slots, table cells */
    uint32_t size[3];              /* live ghosts per list ([1], [2]) */
    uint32_t lseq[3];              /* insertions per list (wrapping, 30 bits used) */
};

/* A block: list links (ilist.h), fingerprint of its content, arrival at its last insert. */
struct kvb_larc_blk {
    struct kvb_ilink link;
    uint32_t fp, arrival;
};

/* Every field is protected by the owning pool's mutex. */
struct kvb_larc {
    struct kvb_lx lx;
    struct kvb_larc_blk *blk; /* block_count + 2: sentinels at bc + 0 (T1), bc + 1 (T2) */
    uint8_t *st;              /* per block: where bits and flags */
    uint32_t *log;            /* evicted ids, ghosts not recorded yet; KVB_LARC_SEG marks
                                 the first id of an evict call */
    uint32_t nlog;
    uint32_t bc, len;
    uint32_t cnt[3];
    double p, step;
    struct kvb_larc_ghosts g;
    kvb_allocator allocator;
};

static inline uint32_t kvb_larc_where(const struct kvb_larc *a, uint32_t id)
{
    return a->st[id] & KVB_LARC_WHERE;
}

/* ------------------------------------------------------------------------ */
/* ghosts                                                                   */
/* ------------------------------------------------------------------------ */

static uint32_t kvb_larc_fp(kvb_hash h)
{
    uint64_t x = kvb__hash_mix(h);
    uint32_t f = (uint32_t)(x >> 32) ^ (uint32_t)x;
    return f ? f : 1;
}

/* Table cells per ghost. At load 1/2 (2 cells per ghost) probes and the
 * backward-shift erase walked runs long enough to cost lineage_arc's replay
 * about 10% (docs/eviction.md, Cost); 3 keeps them short for 5 bytes per cell. */
#define KVB_LARC_GCELLS 3u
/* Most ghosts: the table's cells must stay below 2^32. */
#define KVB_LARC_GMAX ((UINT32_MAX - 3u) / KVB_LARC_GCELLS)

/* Home cell: multiply-shift of the fingerprint, scaled to the table. */
static inline uint32_t kvb_larc_ghome(const struct kvb_larc_ghosts *g, uint32_t fp)
{
    return kvb__cell_of((uint32_t)(((uint64_t)fp * 0x9E3779B97F4A7C15ull) >> 32), g->tcap);
}

static inline uint32_t kvb_larc_glist(const struct kvb_larc_gslot *s)
{
    return s->seql >> 30;
}

/* The control byte of a table cell: a 4-bit tag of the fingerprint (1..15)
 * and the cell's distance from its home (dcode, 15 meaning >= 15), so that
 * probes skip cells without loading their slot, and erase finds homes
 * without loading the slot (but when dcode is 15). The bytes are 1/4 of the
 * table's size and mostly stay in cache where the table and slots do not. */
#define KVB_LARC_DFAR 15u

static inline uint32_t kvb_larc_gtag(uint32_t fp)
{
    return (uint32_t)(((uint64_t)fp * 15) >> 32) + 1;
}

static inline uint8_t kvb_larc_gctl(uint32_t tag, uint32_t d)
{
    return (uint8_t)(tag | (d < KVB_LARC_DFAR ? d : KVB_LARC_DFAR) << 4);
}

/* The control byte a cell holds for tag at distance d + 1, given the one for
 * distance d (the distance saturates at KVB_LARC_DFAR; tag <= 15). */
static inline uint32_t kvb_larc_gctl_next(uint32_t want)
{
    return want < (KVB_LARC_DFAR << 4) ? want + 16 : want;
}

/* The slot of a ghost with fingerprint fp, whose home cell is i (its table
 * index in *tpos), or NONE. */
static inline uint32_t kvb_larc_gfind(const struct kvb_larc_ghosts *g, uint32_t fp, uint32_t i,
                                      uint32_t *tpos)
{
    for (uint32_t want = kvb_larc_gtag(fp);;
         want = kvb_larc_gctl_next(want), i = kvb__cell_next(i, g->tcap)) {
        uint32_t c = g->ctl[i];
        if (c == 0)
            return KVB_LARC_NONE;
        if (c == want) {
            uint32_t s = g->tab[i];
            if (g->slot[s].fp == fp) {
                *tpos = i;
                return s;
            }
        }
    }
}

static void kvb_larc_gtab_erase(struct kvb_larc_ghosts *g, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = kvb__cell_next(j, g->tcap);
        uint32_t c = g->ctl[j];
        if (c == 0)
            break;
        uint32_t dj = c >> 4; /* distance of j from its home */
        if (dj == KVB_LARC_DFAR)
            dj = kvb__cell_dist(kvb_larc_ghome(g, g->slot[g->tab[j]].fp), j, g->tcap);
        uint32_t gap = kvb__cell_dist(i, j, g->tcap);
        if (dj >= gap) {
            g->tab[i] = g->tab[j];
            g->ctl[i] = kvb_larc_gctl(c & 15, dj - gap);
            i = j;
        }
    }
    g->tab[i] = KVB_LARC_NONE;
    g->ctl[i] = 0;
}

static void kvb_larc_gunlink(struct kvb_larc_ghosts *g, uint32_t s)
{
    kvb_ilist_remove(KVB_ILIST(g->slot, link), s);
    g->size[kvb_larc_glist(&g->slot[s])]--;
}

/* Take ghost slot s (table position tpos) off its list and free it. */
static void kvb_larc_gdrop(struct kvb_larc_ghosts *g, uint32_t s, uint32_t tpos)
{
    kvb_larc_gtab_erase(g, tpos);
    kvb_larc_gunlink(g, s);
    g->slot[s].seql = 0;
    kvb_ilist_free_push(KVB_ILIST(g->slot, link), &g->free_head, s);
}

/* Record an evicted hash as the newest ghost of list l (1 = B1, 2 = B2). */
static void kvb_larc_gadd(struct kvb_larc_ghosts *g, uint32_t fp, uint32_t l)
{
    struct kvb_ilist il = KVB_ILIST(g->slot, link);
    uint32_t tpos = 0, s, i = kvb_larc_ghome(g, fp); /* ctl[i]: prefetched by the commit */
    if (g->free_head == KVB_LARC_NONE) {
        /* full: drop the oldest ghost of the longer list (ARC's rule) */
        uint32_t victim = g->size[1] > g->size[2] ? 1 : 2;
        if (g->size[victim] == 0)
            victim = 3 - victim;
        s = kvb_ilist_first(il, g->cap + victim - 1);
        /* the next victim of this list: its slot was prefetched by the last
         * drop, so its table cells can be asked for now, and the slot after it */
        uint32_t s2 = kvb_ilist_next(il, s);
        if (s2 < g->cap) {
            uint32_t h2 = kvb_larc_ghome(g, g->slot[s2].fp);
            __builtin_prefetch(&g->ctl[h2]);
            __builtin_prefetch(&g->tab[h2]);
            __builtin_prefetch(&g->slot[kvb_ilist_next(il, s2)]);
        }
        uint32_t vfp = g->slot[s].fp;
        (void)kvb_larc_gfind(g, vfp, kvb_larc_ghome(g, vfp), &tpos);
        kvb_larc_gdrop(g, s, tpos);
    }
    /* one probe: the same fingerprint (a ghost already: it is renewed in place)
     * or the empty table slot where the new ghost goes */
    uint32_t want = kvb_larc_gtag(fp), c;
    s = KVB_LARC_NONE;
    for (; (c = g->ctl[i]) != 0; want = kvb_larc_gctl_next(want), i = kvb__cell_next(i, g->tcap)) {
        if (c == want && g->slot[g->tab[i]].fp == fp) {
            s = g->tab[i];
            break;
        }
    }
    if (s != KVB_LARC_NONE) {
        kvb_larc_gunlink(g, s);
    } else {
        s = kvb_ilist_free_pop(il, &g->free_head);
        g->tab[i] = s;
        g->ctl[i] = (uint8_t)want;
        g->slot[s].fp = fp;
    }
    g->slot[s].seql = (++g->lseq[l] & KVB_LARC_SEQ_MASK) | l << 30;
    kvb_ilist_push_tail(il, g->cap + l - 1, s);
    g->size[l]++;
}

static size_t kvb_larc_gtab_cap(uint32_t cap)
{
    return (size_t)cap * KVB_LARC_GCELLS;
}

static size_t kvb_larc_gbytes(uint32_t cap)
{
    return ((size_t)cap + 2) * sizeof(struct kvb_larc_gslot) +
           kvb_larc_gtab_cap(cap) * (sizeof(uint32_t) + 1);
}

/* ------------------------------------------------------------------------ */
/* lists                                                                    */
/* ------------------------------------------------------------------------ */

/* Link id into list l (T1 or T2): at the MRU end, or the LRU end. */
static inline void kvb_larc_link(struct kvb_larc *a, uint32_t l, uint32_t id, bool lru_end)
{
    kvb_ilist_push(KVB_ILIST(a->blk, link), a->bc + l - 1, id, lru_end);
}

static inline void kvb_larc_unlink(struct kvb_larc *a, uint32_t id)
{
    kvb_ilist_remove(KVB_ILIST(a->blk, link), id);
}

/* ------------------------------------------------------------------------ */
/* create / destroy                                                         */
/* ------------------------------------------------------------------------ */

static size_t kvb_larc_block_bytes(uint32_t bc)
{
    size_t n = bc;
    return (n + 2) * sizeof(struct kvb_larc_blk) + n * (sizeof(uint32_t) + 1);
}

static void kvb_larc_free(struct kvb_larc *a)
{
    kvb_allocator al = a->allocator;
    size_t n = a->bc;
    struct kvb_larc_ghosts *g = &a->g;
    kvb_lx_fini(&a->lx, &al);
    kvb__free(&al, a->blk, (n + 2) * sizeof *a->blk);
    kvb__free(&al, a->log, n * sizeof *a->log);
    kvb__free(&al, a->st, n);
    kvb__free(&al, g->slot, ((size_t)g->cap + 2) * sizeof *g->slot);
    kvb__free(&al, g->tab, kvb_larc_gtab_cap(g->cap) * sizeof *g->tab);
    kvb__free(&al, g->ctl, kvb_larc_gtab_cap(g->cap));
    kvb__free(&al, a, sizeof *a);
}

static void kvb_larc_reset_ghosts(struct kvb_larc_ghosts *g)
{
    memset(g->tab, 0xff, kvb_larc_gtab_cap(g->cap) * sizeof *g->tab);
    memset(g->ctl, 0, kvb_larc_gtab_cap(g->cap));
    for (uint32_t i = 0; i < 2; i++) {
        g->slot[g->cap + i] = (struct kvb_larc_gslot){.fp = 0, .seql = 0};
        kvb_ilist_init(KVB_ILIST(g->slot, link), g->cap + i);
    }
    /* every slot free: the free list is 0, 1, ..., cap - 1 */
    for (uint32_t s = 0; s < g->cap; s++)
        g->slot[s] = (struct kvb_larc_gslot){
            .fp = 0,
            .link = {.prev = 0, .next = s + 1 < g->cap ? s + 1 : KVB_LARC_NONE},
            .seql = 0};
    g->free_head = 0;
    g->size[1] = g->size[2] = 0;
}

static int kvb_larc_create(const kvb_inactive_params *params, void **out)
{
    if (!params || !out || params->block_count == 0 || params->block_count > KVB_MAX_BLOCKS)
        return -EINVAL;
    kvb_allocator al = params->allocator;
    kvb__allocator_fill(&al);
    size_t n = params->block_count;
    /* ghost slots: 8 per block, within uint32_t table cells */
    uint64_t gcap = (uint64_t)KVB_LARC_GHOSTS_PER_BLOCK * n;
    if (gcap > KVB_LARC_GMAX)
        gcap = KVB_LARC_GMAX;
    struct kvb_larc *a = kvb__calloc(&al, 1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->allocator = al;
    a->bc = params->block_count;
    struct kvb_larc_ghosts *g = &a->g;
    g->cap = (uint32_t)gcap;
    size_t tc = kvb_larc_gtab_cap(g->cap);
    g->tcap = (uint32_t)tc;
    int rc = kvb_lx_init(&a->lx, a->bc, &al);
    a->blk = kvb__calloc(&al, n + 2, sizeof *a->blk);
    a->log = kvb__alloc(&al, n * sizeof *a->log);
    a->st = kvb__calloc(&al, n, 1);
    g->slot = kvb__alloc(&al, ((size_t)g->cap + 2) * sizeof *g->slot);
    g->tab = kvb__alloc(&al, tc * sizeof *g->tab);
    g->ctl = kvb__alloc(&al, tc);
    if (rc || !a->blk || !a->log || !a->st || !g->slot || !g->tab || !g->ctl) {
        kvb_larc_free(a);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < 2; i++)
        kvb_ilist_init(KVB_ILIST(a->blk, link), (uint32_t)n + i);
    kvb_larc_reset_ghosts(g);
    a->p = KVB_LARC_P0 * (double)n;
    a->step = sqrt((double)n / 1024.0);
    if (a->step < 1)
        a->step = 1;
    *out = a;
    return 0;
}

static void kvb_larc_destroy(void *self)
{
    if (self)
        kvb_larc_free(self);
}

/* ------------------------------------------------------------------------ */
/* operations                                                               */
/* ------------------------------------------------------------------------ */

/* Record the ghosts of the logged evictions (the log is then final). */
static inline void kvb_larc_commit(struct kvb_larc *a)
{
    if (a->nlog == 0)
        return;
    for (uint32_t i = 0; i < a->nlog; i++) /* every new ghost's first table cell */
        __builtin_prefetch(&a->g.ctl[kvb_larc_ghome(&a->g, a->blk[a->log[i] & ~KVB_LARC_SEG].fp)]);
    for (uint32_t i = 0; i < a->nlog; i++) {
        uint32_t id = a->log[i] & ~KVB_LARC_SEG;
        kvb_larc_gadd(&a->g, a->blk[id].fp, kvb_larc_where(a, id));
        a->st[id] = KVB_LARC_ABSENT;
    }
    a->nlog = 0;
}

/* id left the cache (already off its list or parked list): count it out and
 * send the blocks that became leaves back to the LRU end of their lists. */
static void kvb_larc_gone(struct kvb_larc *a, uint32_t id)
{
    a->cnt[kvb_larc_where(a, id)]--;
    a->len--;
    for (uint32_t f = kvb_lx_del(&a->lx, id); f != KVB_LX_NONE;) {
        uint32_t nx = kvb_lx_next_freed(&a->lx, f);
        a->st[f] &= (uint8_t)~KVB_LARC_PARKED;
        kvb_larc_link(a, kvb_larc_where(a, f), f, true);
        f = nx;
    }
}

/* A ghost hit on slot s: ARC's adaptation of p, when the ghost is recent. */
static void kvb_larc_adapt(struct kvb_larc *a, uint32_t s)
{
    struct kvb_larc_ghosts *g = &a->g;
    const struct kvb_larc_gslot *gs = &g->slot[s];
    uint32_t l = kvb_larc_glist(gs);
    /* insertions into its list since it was added */
    uint32_t age = (g->lseq[l] - gs->seql) & KVB_LARC_SEQ_MASK;
    if ((double)age >= KVB_LARC_NEAR * (double)a->bc)
        return;
    double b1 = g->size[1], b2 = g->size[2];
    if (l == 1) {
        double r = b2 / b1; /* b1 >= 1: s is on B1 */
        a->p += a->step * (r > 1 ? r : 1);
        if (a->p > (double)a->bc)
            a->p = (double)a->bc;
    } else {
        double r = b1 / b2;
        a->p -= a->step * (r > 1 ? r : 1);
        if (a->p < 0)
            a->p = 0;
    }
}

static int kvb_larc_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct kvb_larc *a = self;
    if (id >= a->bc)
        return -EINVAL;
    uint32_t fp = kvb_larc_fp(hash);
    uint64_t up, down;
    kvb_lx_keys(hash, &up, &down);
    /* the ghost probe's and the tree count's first cells load while the log commits */
    uint32_t home = kvb_larc_ghome(&a->g, fp);
    __builtin_prefetch(&a->g.ctl[home]);
    kvb_lx_prefetch(&a->lx, up);
    kvb_larc_commit(a);
    if (kvb_larc_where(a, id) != KVB_LARC_ABSENT)
        return -EEXIST;
    struct kvb_larc_blk *b = &a->blk[id];
    uint32_t l = KVB_LARC_T1;
    if ((a->st[id] & KVB_LARC_HIT) && b->arrival == arrival && b->fp == fp) {
        l = KVB_LARC_T2; /* released again after a hit: referenced twice */
    } else {
        uint32_t tpos = 0;
        uint32_t s = kvb_larc_gfind(&a->g, fp, home, &tpos);
        if (s != KVB_LARC_NONE) { /* evicted before and needed again */
            kvb_larc_adapt(a, s);
            kvb_larc_gdrop(&a->g, s, tpos);
            l = KVB_LARC_T2;
        }
    }
    b->fp = fp;
    b->arrival = arrival;
    a->st[id] = (uint8_t)l;
    kvb_lx_add_keys(&a->lx, id, up, down);
    kvb_larc_link(a, l, id, false);
    a->cnt[l]++;
    a->len++;
    return 0;
}

static bool kvb_larc_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct kvb_larc *a = self;
    (void)hash;
    if (id >= a->bc)
        return false;
    kvb_larc_commit(a);
    if (kvb_larc_where(a, id) == KVB_LARC_ABSENT)
        return false;
    if (a->st[id] & KVB_LARC_PARKED)
        kvb_lx_unpark(&a->lx, id);
    else
        kvb_larc_unlink(a, id);
    kvb_larc_gone(a, id);
    a->st[id] = KVB_LARC_HIT;
    return true;
}

static bool kvb_larc_contains(const void *self, uint32_t id)
{
    const struct kvb_larc *a = self;
    return id < a->bc && kvb_larc_where(a, id) != KVB_LARC_ABSENT && !(a->st[id] & KVB_LARC_LOGGED);
}

/* The oldest leaf of list l, taken off it (non-leaves met first are parked);
 * NONE when the list holds nothing but parked blocks. */
static uint32_t kvb_larc_pop(struct kvb_larc *a, uint32_t l)
{
    struct kvb_ilist il = KVB_ILIST(a->blk, link);
    uint32_t head = a->bc + l - 1;
    for (;;) {
        uint32_t id = kvb_ilist_first(il, head);
        if (id == head)
            return KVB_LARC_NONE;
        /* its up key's tree cell (kvb_lx_del, when it goes) while is_leaf
         * looks up its down key */
        uint64_t up = a->lx.node[id].up;
        __builtin_prefetch(&a->lx.tab[kvb_lx_home(&a->lx, up)]);
        kvb_ilist_remove(il, id);
        __builtin_prefetch(&a->lx.node[kvb_ilist_first(il, head)]); /* the next candidate */
        if (kvb_lx_is_leaf(&a->lx, id))
            return id;
        kvb_lx_park(&a->lx, id);
        a->st[id] |= KVB_LARC_PARKED;
    }
}

static uint32_t kvb_larc_evict(void *self, uint32_t n, uint32_t *out)
{
    struct kvb_larc *a = self;
    if (!out)
        return 0;
    uint32_t k = 0, seg = KVB_LARC_SEG;
    while (k < n && a->len > 0) {
        uint32_t first = a->cnt[KVB_LARC_T1] > 0 &&
                                 ((double)a->cnt[KVB_LARC_T1] > a->p || a->cnt[KVB_LARC_T2] == 0)
                             ? KVB_LARC_T1
                             : KVB_LARC_T2;
        uint32_t id = kvb_larc_pop(a, first);
        if (id == KVB_LARC_NONE)
            id = kvb_larc_pop(a, 3 - first);
        /* len > 0 implies a leaf somewhere: the deepest cached block is one and
         * leaves are never parked. The check keeps a bug from looping. */
        kvb_assert(id != KVB_LARC_NONE);
        if (id == KVB_LARC_NONE)
            break;
        kvb_larc_gone(a, id);
        a->st[id] |= KVB_LARC_LOGGED; /* the where bits stay: the ghost list, and unevict */
        a->log[a->nlog++] = id | seg;
        seg = 0;
        out[k++] = id;
    }
    return k;
}

static uint32_t kvb_larc_len(const void *self)
{
    const struct kvb_larc *a = self;
    return a->len;
}

/* Everything out; the ghosts (history) stay. */
static void kvb_larc_drain(void *self)
{
    struct kvb_larc *a = self;
    kvb_larc_commit(a);
    memset(a->st, 0, a->bc);
    kvb_lx_clear(&a->lx);
    for (uint32_t i = 0; i < 2; i++)
        kvb_ilist_init(KVB_ILIST(a->blk, link), a->bc + i);
    a->cnt[KVB_LARC_T1] = a->cnt[KVB_LARC_T2] = 0;
    a->len = 0;
}

/* Undo the log back to the segment that evicted ids[0] (see the file
 * comment). Ids that are not in the log are ignored; hashes and arrivals are
 * not needed: the log and the tree keep what is needed. */
static void kvb_larc_unevict(void *self, const uint32_t *ids, const kvb_hash *hashes,
                             const uint32_t *arrivals, uint32_t n)
{
    struct kvb_larc *a = self;
    (void)hashes;
    (void)arrivals;
    if (!ids || n == 0)
        return;
    uint32_t i = a->nlog;
    while (i > 0 && (a->log[i - 1] & ~KVB_LARC_SEG) != ids[0])
        i--;
    if (i == 0)
        return; /* not evicted by us since the last commit */
    while (i > 1 && !(a->log[i - 1] & KVB_LARC_SEG))
        i--; /* back to its segment's start (the log's first entry is always one) */
    uint32_t start = i - 1;
    while (a->nlog > start) {
        uint32_t id = a->log[--a->nlog] & ~KVB_LARC_SEG;
        uint32_t l = kvb_larc_where(a, id);
        kvb_lx_readd(&a->lx, id);
        kvb_larc_link(a, l, id, true);
        a->st[id] = (uint8_t)l;
        a->cnt[l]++;
        a->len++;
    }
}

static size_t kvb_larc_memory(const void *self)
{
    const struct kvb_larc *a = self;
    return sizeof *a + kvb_lx_bytes(a->bc) + kvb_larc_block_bytes(a->bc) +
           kvb_larc_gbytes(a->g.cap);
}

const kvb_inactive_ops kvb_inactive_lineage_arc = {
    .version = KVB_INACTIVE_OPS_VERSION,
    .name = "lineage_arc",
    .create = kvb_larc_create,
    .destroy = kvb_larc_destroy,
    .insert = kvb_larc_insert,
    .remove = kvb_larc_remove,
    .contains = kvb_larc_contains,
    .evict = kvb_larc_evict,
    .len = kvb_larc_len,
    .drain = kvb_larc_drain,
    .unevict = kvb_larc_unevict,
    .memory = kvb_larc_memory,
};
