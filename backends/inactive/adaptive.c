/*
 * adaptive.c - the "adaptive" inactive index: the cache follows whichever of
 * lru and lineage_arc is winning on this workload now.
 *
 * Design: two full-size simulations of the candidates run side by side on the
 * accesses the backend infers from its calls, a flat LRU and a flat ARC with
 * lineage_arc's changes (8x ghosts, near-only adaptation, p0 = 0.1 x capacity,
 * victim chosen before a ghost hit adapts p), each at the pool's capacity.
 * The real cache *follows* the active simulation: its victims are first the
 * cached blocks that simulation no longer holds (its "stale" list, oldest
 * first), then, when the cached blocks are all in it, the blocks it will
 * evict next (its eviction order). The real cache then holds what the active
 * simulation holds, give or take the blocks of one allocation, and its hits
 * are that policy's hits: lru's (exactly on 73 of the 74 rows of the replay
 * lab, 0.01 point off on the last), lineage_arc's exactly on flat (id) traces
 * and within 0.4 point on the prefix replays. Both simulations keep their
 * whole state whatever the cache follows, so a switch loses no history: after
 * it the cache converges to the other simulation's content, one eviction per
 * miss, starting with the blocks that simulation has evicted. (The miniature
 * simulations of Waldspurger et al., ATC 2017, sample the hash space to save
 * memory; sampled, they could not resolve the small differences that decide
 * the rows of the replay lab, nor let the cache follow them.)
 *
 * Decision: each simulation's hits decay with a time constant of
 * KVB_ADA_WINDOW x capacity accesses; every KVB_ADA_EVERY accesses the cache
 * switches to the other simulation when its decayed hits lead by more than
 * KVB_ADA_LEAD_LRU (to lru) or KVB_ADA_LEAD_ARC (to lineage_arc) hits plus
 * KVB_ADA_MARGIN of the active one's. It starts on lineage_arc. Switching
 * early on small leads is what pays: the two simulations' contents are close
 * when a lead starts, so an early switch moves few blocks, and a late one
 * has already lost the lead (docs/eviction.md has the measurements and the
 * range of constants that give the same verdicts).
 *
 * Accesses are inferred from the calls a backend receives: remove() is a hit
 * on cached content; insert() of content that was not just removed (another
 * arrival than this block had when removed) is a miss that was registered;
 * the release of a block after its hit moves its content to the most recent
 * end of its list (release order, as the real backends keep it), uncounted.
 * Hits on blocks still held reach no backend: the simulations do without
 * them.
 *
 * Structure: one entry per content known to either simulation (LRU resident,
 * ARC resident or ghost), in one open-addressing table keyed by a 32-bit
 * fingerprint (64-bit cells: fingerprint and entry index, so that probes read
 * no entry; linear probing, backward-shift deletion, load <= 2/3). An entry
 * is on the LRU list, on one ARC list (T1, T2, B1, B2) or both, and names the
 * cached block holding its content. Per cached block: its entry and its links
 * in the two stale lists. Two contents with one fingerprint share an entry
 * (the simulations then count them as one; ghosts of lineage_arc are 32-bit
 * fingerprints too).
 *
 * Contract: as every backend (kvblock/inactive.h). evict does not change the
 * simulations (it reads them), so unevict is exact: stale victims go back to
 * the head of their stale list, the others are linked to their entries again.
 *
 * Cost: one table probe per new content (a hit finds its entry through its
 * block), the list updates of both simulations, one table erase per content
 * both simulations forget; the simulations' part of an insert waits for the
 * next call so that its probe's cache miss overlaps the caller's work, and the
 * next victims' entries and cells are prefetched.
 * Memory, all at create: 32 bytes per entry and 12 bytes of table per entry,
 * C + 8C + C/4 entries for a capacity of C, 32 bytes per block: about 440
 * bytes per block.
 *
 * Locking: none of its own; every method runs under the owning pool's mutex.
 */
#include "ilist.h"
#include "internal.h"

#include <math.h>
#include <string.h>

#define KVB_ADA_NONE   UINT32_MAX
#define KVB_ADA_GHOSTS 8    /* ARC ghosts per block, as lineage_arc */
#define KVB_ADA_NEAR   0.75 /* ghost hits younger than this x capacity adapt p */
#define KVB_ADA_P0     0.1  /* initial p, x capacity */

#define KVB_ADA_WINDOW   5.0   /* decay time constant of the hit counts, x capacity accesses */
#define KVB_ADA_EVERY    16    /* accesses between decisions */
#define KVB_ADA_LEAD_LRU 12.0  /* decayed hits lead that switches to lru ... */
#define KVB_ADA_LEAD_ARC 10.0  /* ... and to lineage_arc, */
#define KVB_ADA_MARGIN   0.001 /* plus this share of the active one's */

/* the simulations */
enum { KVB_ADA_LRU = 0, KVB_ADA_ARC = 1 };
/* ARC lists (an entry's alist): 0 none */
enum { KVB_ADA_T1 = 1, KVB_ADA_T2 = 2, KVB_ADA_B1 = 3, KVB_ADA_B2 = 4 };

/* per block flags */
#define KVB_ADA_PRESENT 1u  /* cached (in this index) */
#define KVB_ADA_HIT     2u  /* taken out by remove (a hit) since its insert */
#define KVB_ADA_STALE0  4u  /* on the LRU simulation's stale list */
#define KVB_ADA_STALE1  8u  /* on the ARC simulation's stale list */
#define KVB_ADA_EVSTALE 16u /* evicted from the active stale list (for unevict) */
#define KVB_ADA_EVORDER 32u /* evicted in the active simulation's order */

/* One content known to a simulation; its links are ilist.h's. lru.prev == NONE:
 * not on the LRU list (free entries are stacked through lru.next). */
struct kvb_ada_ent {
    uint32_t fp;
    uint32_t rid;         /* the cached block holding this content, or NONE */
    struct kvb_ilink lru; /* the LRU list */
    struct kvb_ilink arc; /* an ARC list */
    uint32_t aseq;        /* that list's insertion count when linked to it */
    uint32_t alist;       /* ARC list (T1, T2, B1, B2), 0: none */
};

/* One block: its content's entry (present, or held after a hit), the fingerprint
 * and arrival at its last insert, flags and its links in the two stale lists. */
struct kvb_ada_blk {
    uint32_t ent, fp, arrival, flags;
    struct kvb_ilink stale[2];
};

/* Every field is protected by the owning pool's mutex. */
struct kvb_ada {
    struct kvb_ada_ent *e;   /* nent entries, then sentinels: LRU, T1, T2, B1, B2 */
    uint64_t *tab;           /* fp << 32 | entry; UINT64_MAX: empty */
    struct kvb_ada_blk *blk; /* bc + 2: stale list sentinels at bc + 0, bc + 1 */
    uint32_t nent, tcap, bc, gmax;
    uint32_t free_head;
    uint32_t lru_len;  /* LRU residents */
    uint32_t asize[5]; /* ARC list lengths */
    uint32_t aseq[5];  /* ARC list insertion counts */
    double p, step;
    uint32_t lcur, acur[3]; /* walk cursors: entries up to them are not evictable */
    uint32_t nstale[2];
    uint32_t len;
    uint32_t active;
    double hits[2]; /* decayed */
    double decay;
    uint32_t in_every;
    uint32_t pend; /* block whose insert waits for the simulations, or NONE */
    bool pend_again;
    uint64_t switches;
    kvb_allocator allocator;
};

/* ------------------------------------------------------------------------ */
/* entries and the table                                                    */
/* ------------------------------------------------------------------------ */

static inline uint32_t kvb_ada_fp(kvb_hash h)
{
    uint64_t x = kvb__hash_mix(h);
    return (uint32_t)(x >> 32) ^ (uint32_t)x;
}

static inline uint32_t kvb_ada_alist(const struct kvb_ada_ent *en)
{
    return en->alist;
}

static inline bool kvb_ada_in_lru(const struct kvb_ada_ent *en)
{
    return en->lru.prev != KVB_ADA_NONE;
}

static inline bool kvb_ada_in_arc(const struct kvb_ada_ent *en)
{
    uint32_t l = kvb_ada_alist(en);
    return l == KVB_ADA_T1 || l == KVB_ADA_T2;
}

/* the entries as ilist.h sees them, through the LRU or the ARC links */
#define KVB_ADA_LRUL(a)      KVB_ILIST((a)->e, lru)
#define KVB_ADA_ARCL(a)      KVB_ILIST((a)->e, arc)
#define KVB_ADA_STALEL(a, s) KVB_ILIST((a)->blk, stale[s])

static inline uint32_t kvb_ada_home(const struct kvb_ada *a, uint32_t fp)
{
    return kvb__cell_of(fp, a->tcap);
}

/* The entry of fingerprint fp, or NONE; *cell: its cell, or the empty cell
 * where it would go. */
static uint32_t kvb_ada_find(const struct kvb_ada *a, uint32_t fp, uint32_t *cell)
{
    uint32_t i = kvb_ada_home(a, fp);
    for (;;) {
        uint64_t c = a->tab[i];
        if (c == UINT64_MAX || (uint32_t)(c >> 32) == fp) {
            *cell = i;
            return c == UINT64_MAX ? KVB_ADA_NONE : (uint32_t)c;
        }
        i = kvb__cell_next(i, a->tcap);
    }
}

static void kvb_ada_tab_erase(struct kvb_ada *a, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = kvb__cell_next(j, a->tcap);
        uint64_t c = a->tab[j];
        if (c == UINT64_MAX)
            break;
        uint32_t home = kvb_ada_home(a, (uint32_t)(c >> 32));
        if (kvb__cell_dist(home, j, a->tcap) >= kvb__cell_dist(i, j, a->tcap)) {
            a->tab[i] = c;
            i = j;
        }
    }
    a->tab[i] = UINT64_MAX;
}

/* ------------------------------------------------------------------------ */
/* stale lists                                                              */
/* ------------------------------------------------------------------------ */

static void kvb_ada_stale_push(struct kvb_ada *a, uint32_t s, uint32_t id, bool head)
{
    kvb_ilist_push(KVB_ADA_STALEL(a, s), a->bc + s, id, head);
    a->blk[id].flags |= KVB_ADA_STALE0 << s;
    a->nstale[s]++;
}

static void kvb_ada_stale_unlink(struct kvb_ada *a, uint32_t s, uint32_t id)
{
    kvb_ilist_remove(KVB_ADA_STALEL(a, s), id);
    a->blk[id].flags &= ~(KVB_ADA_STALE0 << s);
    a->nstale[s]--;
}

/* Content x left simulation s: its cached block, if any, is now stale in s. */
static inline void kvb_ada_left(struct kvb_ada *a, uint32_t s, uint32_t x)
{
    uint32_t id = a->e[x].rid;
    /* (a duplicate's access can have made x resident again while its block
     * stayed stale: it is on the list already) */
    if (id != KVB_ADA_NONE &&
        (a->blk[id].flags & (KVB_ADA_PRESENT | KVB_ADA_STALE0 << s)) == KVB_ADA_PRESENT)
        kvb_ada_stale_push(a, s, id, false);
}

/* Entry x is in neither simulation any more: off the table, freed. */
static void kvb_ada_free_ent(struct kvb_ada *a, uint32_t x)
{
    struct kvb_ada_ent *en = &a->e[x];
    if (en->rid != KVB_ADA_NONE)
        a->blk[en->rid].ent = KVB_ADA_NONE; /* its block, if cached, is stale in both */
    uint32_t cell;
    uint32_t y = kvb_ada_find(a, en->fp, &cell);
    kvb_assert(y == x);
    if (y == x)
        kvb_ada_tab_erase(a, cell);
    en->rid = KVB_ADA_NONE;
    en->alist = 0;
    kvb_ilist_free_push(KVB_ADA_LRUL(a), &a->free_head, x);
}

/* ------------------------------------------------------------------------ */
/* the LRU simulation                                                       */
/* ------------------------------------------------------------------------ */

static void kvb_ada_lunlink(struct kvb_ada *a, uint32_t x)
{
    struct kvb_ada_ent *en = &a->e[x];
    if (a->lcur == x)
        a->lcur = en->lru.prev;
    kvb_ilist_remove(KVB_ADA_LRUL(a), x);
    en->lru.prev = KVB_ADA_NONE;
    a->lru_len--;
}

static void kvb_ada_llink(struct kvb_ada *a, uint32_t x)
{
    kvb_ilist_push_tail(KVB_ADA_LRUL(a), a->nent, x);
    a->lru_len++;
}

/* An access to content x (on the table). Returns whether it hit. */
static bool kvb_ada_lru(struct kvb_ada *a, uint32_t x)
{
    bool hit = kvb_ada_in_lru(&a->e[x]);
    if (hit) {
        kvb_ada_lunlink(a, x);
    } else if (a->lru_len == a->bc) {
        uint32_t y = kvb_ilist_first(KVB_ADA_LRUL(a), a->nent); /* the least recent, not x */
        kvb_ada_lunlink(a, y);
        kvb_ada_left(a, KVB_ADA_LRU, y);
        if (kvb_ada_alist(&a->e[y]) == 0)
            kvb_ada_free_ent(a, y);
    }
    kvb_ada_llink(a, x);
    return hit;
}

/* ------------------------------------------------------------------------ */
/* the ARC simulation (lineage_arc without the tree)                        */
/* ------------------------------------------------------------------------ */

static void kvb_ada_aunlink(struct kvb_ada *a, uint32_t x)
{
    struct kvb_ada_ent *en = &a->e[x];
    uint32_t l = kvb_ada_alist(en);
    if (l <= KVB_ADA_T2 && a->acur[l] == x)
        a->acur[l] = en->arc.prev;
    kvb_ilist_remove(KVB_ADA_ARCL(a), x);
    a->asize[l]--;
    en->alist = 0;
}

static void kvb_ada_alink(struct kvb_ada *a, uint32_t x, uint32_t l)
{
    struct kvb_ada_ent *en = &a->e[x];
    kvb_ilist_push_tail(KVB_ADA_ARCL(a), a->nent + l, x);
    en->aseq = ++a->aseq[l];
    en->alist = l;
    a->asize[l]++;
}

/* Drop the oldest ghost of the longer ghost list (ARC's rule). */
static void kvb_ada_drop_ghost(struct kvb_ada *a)
{
    uint32_t l = a->asize[KVB_ADA_B1] > a->asize[KVB_ADA_B2] ? KVB_ADA_B1 : KVB_ADA_B2;
    if (a->asize[l] == 0)
        l = KVB_ADA_B1 + KVB_ADA_B2 - l;
    uint32_t y = kvb_ilist_first(KVB_ADA_ARCL(a), a->nent + l);
    kvb_assert(y < a->nent);
    if (y >= a->nent)
        return;
    kvb_ada_aunlink(a, y);
    if (!kvb_ada_in_lru(&a->e[y]))
        kvb_ada_free_ent(a, y);
}

/* The list ARC evicts from next. */
static inline uint32_t kvb_ada_arc_side(const struct kvb_ada *a)
{
    uint32_t t1 = a->asize[KVB_ADA_T1], t2 = a->asize[KVB_ADA_T2];
    return t1 > 0 && ((double)t1 > a->p || t2 == 0) ? KVB_ADA_T1 : KVB_ADA_T2;
}

/* ARC's replace: the oldest of T1 or T2 to its ghost list (B1 or B2). */
static void kvb_ada_replace(struct kvb_ada *a)
{
    uint32_t from = kvb_ada_arc_side(a);
    uint32_t y = kvb_ilist_first(KVB_ADA_ARCL(a), a->nent + from);
    kvb_ada_aunlink(a, y);
    kvb_ada_left(a, KVB_ADA_ARC, y);
    if (a->asize[KVB_ADA_B1] + a->asize[KVB_ADA_B2] >= a->gmax)
        kvb_ada_drop_ghost(a); /* as lineage_arc: before the new ghost goes in */
    kvb_ada_alink(a, y, from + 2);
}

/* ARC's adaptation of p on a hit on ghost x, when the ghost is recent. */
static void kvb_ada_adapt(struct kvb_ada *a, uint32_t x)
{
    uint32_t l = kvb_ada_alist(&a->e[x]);
    uint32_t age = a->aseq[l] - a->e[x].aseq;
    if ((double)age >= KVB_ADA_NEAR * (double)a->bc)
        return;
    double b1 = a->asize[KVB_ADA_B1], b2 = a->asize[KVB_ADA_B2];
    if (l == KVB_ADA_B1) {
        double r = b2 / b1;
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

/* An access to content x (on the table, on the LRU list: a ghost drop never
 * frees it). Returns whether it hit. touch: a release after a hit (a resident
 * stays on its list). */
static bool kvb_ada_arc(struct kvb_ada *a, uint32_t x, bool touch)
{
    uint32_t l = kvb_ada_alist(&a->e[x]);
    if (l == KVB_ADA_T1 || l == KVB_ADA_T2) {
        kvb_ada_aunlink(a, x);
        kvb_ada_alink(a, x, touch ? l : KVB_ADA_T2);
        return true;
    }
    /* as lineage_arc: the victim goes (its ghost recorded, which may drop x's)
     * before a ghost hit adapts p */
    if (a->asize[KVB_ADA_T1] + a->asize[KVB_ADA_T2] >= a->bc)
        kvb_ada_replace(a);
    l = kvb_ada_alist(&a->e[x]);
    if (l != 0) {
        kvb_ada_adapt(a, x);
        kvb_ada_aunlink(a, x);
        kvb_ada_alink(a, x, KVB_ADA_T2);
    } else {
        kvb_ada_alink(a, x, KVB_ADA_T1);
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* accesses and the decision                                                */
/* ------------------------------------------------------------------------ */

static void kvb_ada_decide(struct kvb_ada *a)
{
    double act = a->hits[a->active], oth = a->hits[1 - a->active];
    double lead = a->active == KVB_ADA_ARC ? KVB_ADA_LEAD_LRU : KVB_ADA_LEAD_ARC;
    if (oth - act > lead + KVB_ADA_MARGIN * act) {
        a->active = 1 - a->active; /* nothing moves: the next evictions follow it */
        a->switches++;
    }
    a->hits[0] *= a->decay;
    a->hits[1] *= a->decay;
}

/* The entry of content fp, created (on the table, in no simulation) when new. */
static uint32_t kvb_ada_entry(struct kvb_ada *a, uint32_t fp)
{
    uint32_t cell, x = kvb_ada_find(a, fp, &cell);
    if (x != KVB_ADA_NONE)
        return x;
    if (a->free_head == KVB_ADA_NONE) { /* every entry in use: a ghost goes early */
        kvb_ada_drop_ghost(a);
        (void)kvb_ada_find(a, fp, &cell);
    }
    x = kvb_ilist_free_pop(KVB_ADA_LRUL(a), &a->free_head);
    struct kvb_ada_ent *en = &a->e[x];
    en->fp = fp;
    en->rid = KVB_ADA_NONE;
    en->lru.prev = KVB_ADA_NONE;
    en->alist = 0;
    a->tab[cell] = (uint64_t)fp << 32 | x;
    return x;
}

/* Operations are bound by cache misses on entries and table cells that the
 * next accesses will touch: the simulations' next victims (the least recent
 * LRU entry, the oldest of ARC's side, the oldest ghost of the longer list) are
 * known now. Their entries were asked for by the previous access: read them
 * for the table cells and blocks they will need, and ask for the entries after
 * them. */
static void kvb_ada_prefetch(const struct kvb_ada *a)
{
    uint32_t bl = a->asize[KVB_ADA_B1] > a->asize[KVB_ADA_B2] ? KVB_ADA_B1 : KVB_ADA_B2;
    uint32_t v[3] = {kvb_ilist_first(KVB_ADA_LRUL(a), a->nent),
                     kvb_ilist_first(KVB_ADA_ARCL(a), a->nent + kvb_ada_arc_side(a)),
                     kvb_ilist_first(KVB_ADA_ARCL(a), a->nent + bl)};
    for (int i = 0; i < 3; i++) {
        if (v[i] >= a->nent)
            continue;
        const struct kvb_ada_ent *en = &a->e[v[i]];
        __builtin_prefetch(&a->tab[kvb_ada_home(a, en->fp)]);
        if (en->rid != KVB_ADA_NONE)
            __builtin_prefetch(&a->blk[en->rid]);
        __builtin_prefetch(&a->e[i == 0 ? en->lru.next : en->arc.next]);
    }
}

/* An access to content x: both simulations. counted: a hit or a registration
 * (else the release after a hit). */
static void kvb_ada_access(struct kvb_ada *a, uint32_t x, bool counted)
{
    bool h0 = kvb_ada_lru(a, x);
    bool h1 = kvb_ada_arc(a, x, !counted);
    kvb_ada_prefetch(a);
    if (!counted)
        return;
    a->hits[0] += h0;
    a->hits[1] += h1;
    if (++a->in_every >= KVB_ADA_EVERY) {
        a->in_every = 0;
        kvb_ada_decide(a);
    }
}

/* ------------------------------------------------------------------------ */
/* the backend                                                              */
/* ------------------------------------------------------------------------ */

static void kvb_ada_free(struct kvb_ada *a)
{
    kvb_allocator al = a->allocator;
    kvb__free(&al, a->e, ((size_t)a->nent + 5) * sizeof *a->e);
    kvb__free(&al, a->tab, (size_t)a->tcap * sizeof *a->tab);
    kvb__free(&al, a->blk, ((size_t)a->bc + 2) * sizeof *a->blk);
    kvb__free(&al, a, sizeof *a);
}

static void kvb_ada_reset_cursors(struct kvb_ada *a)
{
    a->lcur = a->nent;
    a->acur[KVB_ADA_T1] = a->nent + KVB_ADA_T1;
    a->acur[KVB_ADA_T2] = a->nent + KVB_ADA_T2;
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
    uint32_t bc = params->block_count;
    a->bc = bc;
    /* entries: LRU residents, ARC residents and ghosts, mostly the same contents;
     * the table (1.5 cells per entry) within 2^32 cells */
    uint64_t g = (uint64_t)bc * KVB_ADA_GHOSTS, slack = bc / 4 + 1;
    uint64_t emax = ((uint64_t)UINT32_MAX - 8) / 3 * 2;
    if (bc + g + slack > emax)
        g = emax - bc - slack;
    a->gmax = (uint32_t)g;
    uint64_t nent = bc + g + slack;
    if (nent < 2ull * bc + 1)
        nent = 2ull * bc + 1;
    a->nent = (uint32_t)nent;
    a->tcap = (uint32_t)(nent + nent / 2 + 1);
    a->e = kvb__alloc(&al, ((size_t)a->nent + 5) * sizeof *a->e);
    a->tab = kvb__alloc(&al, (size_t)a->tcap * sizeof *a->tab);
    a->blk = kvb__alloc(&al, ((size_t)bc + 2) * sizeof *a->blk);
    if (!a->e || !a->tab || !a->blk) {
        kvb_ada_free(a);
        return -ENOMEM;
    }
    memset(a->tab, 0xff, (size_t)a->tcap * sizeof *a->tab);
    a->free_head = KVB_ADA_NONE;
    for (uint32_t i = a->nent; i-- > 0;) {
        a->e[i] = (struct kvb_ada_ent){.rid = KVB_ADA_NONE, .lru.prev = KVB_ADA_NONE};
        kvb_ilist_free_push(KVB_ADA_LRUL(a), &a->free_head, i);
    }
    for (uint32_t l = 0; l < 5; l++) { /* sentinels: LRU list, then T1, T2, B1, B2 */
        a->e[a->nent + l] = (struct kvb_ada_ent){.rid = KVB_ADA_NONE};
        kvb_ilist_init(KVB_ADA_LRUL(a), a->nent + l);
        kvb_ilist_init(KVB_ADA_ARCL(a), a->nent + l);
    }
    for (uint32_t i = 0; i < bc; i++)
        a->blk[i] = (struct kvb_ada_blk){.ent = KVB_ADA_NONE};
    for (uint32_t s = 0; s < 2; s++) {
        struct kvb_ada_blk *b = &a->blk[bc + s];
        *b = (struct kvb_ada_blk){.ent = KVB_ADA_NONE};
        kvb_ilist_init(KVB_ADA_STALEL(a, s), bc + s);
    }
    kvb_ada_reset_cursors(a);
    a->p = KVB_ADA_P0 * bc;
    a->step = sqrt((double)bc / 1024.0);
    if (a->step < 1)
        a->step = 1;
    a->active = KVB_ADA_ARC;
    a->pend = KVB_ADA_NONE;
    a->decay = exp(-(double)KVB_ADA_EVERY / (KVB_ADA_WINDOW * bc));
    *out = a;
    return 0;
}

static void kvb_ada_destroy(void *self)
{
    if (self)
        kvb_ada_free(self);
}

/* Link cached block id to content x (which both simulations hold after an
 * access), or make it stale in both when x already has a cached block (a
 * duplicate). */
static void kvb_ada_link_block(struct kvb_ada *a, uint32_t id, uint32_t x)
{
    struct kvb_ada_ent *en = &a->e[x];
    if (en->rid == KVB_ADA_NONE || en->rid == id) {
        en->rid = id;
        a->blk[id].ent = x;
        return;
    }
    a->blk[id].ent = KVB_ADA_NONE;
    kvb_ada_stale_push(a, KVB_ADA_LRU, id, false);
    kvb_ada_stale_push(a, KVB_ADA_ARC, id, false);
}

/* The simulations' part of the last insert, which waits for the next call so
 * that its table cell (or entry) loads meanwhile: a new content's probe is the
 * first cache miss of an access. The order of the simulations' accesses does not
 * change: every method that reads or changes them takes the waiting one first. */
static void kvb_ada_flush(struct kvb_ada *a)
{
    uint32_t id = a->pend;
    if (id == KVB_ADA_NONE)
        return;
    a->pend = KVB_ADA_NONE;
    struct kvb_ada_blk *b = &a->blk[id];
    uint32_t x = b->ent;
    b->ent = KVB_ADA_NONE;
    if (x == KVB_ADA_NONE)
        x = kvb_ada_entry(a, b->fp);
    kvb_ada_access(a, x, !a->pend_again);
    kvb_ada_link_block(a, id, x);
}

static int kvb_ada_insert(void *self, kvb_hash hash, uint32_t id, uint32_t arrival)
{
    struct kvb_ada *a = self;
    kvb_ada_flush(a);
    if (id >= a->bc)
        return -EINVAL;
    struct kvb_ada_blk *b = &a->blk[id];
    if (b->flags & KVB_ADA_PRESENT)
        return -EEXIST;
    uint32_t fp = kvb_ada_fp(hash);
    /* released after a hit on this very content: the hit was the access */
    bool again = (b->flags & KVB_ADA_HIT) && b->arrival == arrival && b->fp == fp;
    uint32_t x = b->ent;
    if (x != KVB_ADA_NONE && (!again || a->e[x].fp != fp)) {
        if (a->e[x].rid == id)
            a->e[x].rid = KVB_ADA_NONE;
        x = KVB_ADA_NONE;
    }
    if (x == KVB_ADA_NONE)
        __builtin_prefetch(&a->tab[kvb_ada_home(a, fp)]);
    else
        __builtin_prefetch(&a->e[x]);
    b->ent = x; /* the held content's entry, or NONE: the flush finds it */
    b->fp = fp;
    b->arrival = arrival;
    b->flags = KVB_ADA_PRESENT;
    a->len++;
    a->pend = id;
    a->pend_again = again;
    return 0;
}

static bool kvb_ada_remove(void *self, kvb_hash hash, uint32_t id)
{
    struct kvb_ada *a = self;
    (void)hash;
    kvb_ada_flush(a);
    if (id >= a->bc || !(a->blk[id].flags & KVB_ADA_PRESENT))
        return false;
    struct kvb_ada_blk *b = &a->blk[id];
    for (uint32_t s = 0; s < 2; s++)
        if (b->flags & (KVB_ADA_STALE0 << s))
            kvb_ada_stale_unlink(a, s, id);
    b->flags = KVB_ADA_HIT;
    a->len--;
    uint32_t x = b->ent; /* kept while held: its release finds it again */
    if (x == KVB_ADA_NONE)
        x = kvb_ada_entry(a, b->fp);
    kvb_ada_access(a, x, true);
    return true;
}

static bool kvb_ada_contains(const void *self, uint32_t id)
{
    const struct kvb_ada *a = self;
    return id < a->bc && (a->blk[id].flags & KVB_ADA_PRESENT);
}

/* The next cached block in the active simulation's eviction order, after the
 * cursor of list l (LRU: the LRU list; ARC: T1 or T2); NONE when none. */
static uint32_t kvb_ada_walk(struct kvb_ada *a, uint32_t l)
{
    bool lru = a->active == KVB_ADA_LRU;
    struct kvb_ilist v = lru ? KVB_ADA_LRUL(a) : KVB_ADA_ARCL(a);
    uint32_t head = lru ? a->nent : a->nent + l;
    uint32_t *cur = lru ? &a->lcur : &a->acur[l];
    for (uint32_t x = kvb_ilist_next(v, *cur); x != head; x = kvb_ilist_next(v, x)) {
        *cur = x;
        uint32_t id = a->e[x].rid;
        if (id != KVB_ADA_NONE && (a->blk[id].flags & KVB_ADA_PRESENT))
            return id;
    }
    return KVB_ADA_NONE;
}

static uint32_t kvb_ada_evict(void *self, uint32_t n, uint32_t *out)
{
    struct kvb_ada *a = self;
    if (!out)
        return 0;
    kvb_ada_flush(a);
    uint32_t s = a->active, k = 0;
    while (k < n && a->len > 0) {
        uint32_t id, how;
        if (a->nstale[s]) { /* cached, but the followed policy has let it go */
            id = kvb_ilist_first(KVB_ADA_STALEL(a, s), a->bc + s);
            kvb_ada_stale_unlink(a, s, id);
            how = KVB_ADA_EVSTALE;
        } else {
            uint32_t l = s == KVB_ADA_ARC ? kvb_ada_arc_side(a) : 0;
            id = kvb_ada_walk(a, l);
            if (id == KVB_ADA_NONE && s == KVB_ADA_ARC)
                id = kvb_ada_walk(a, KVB_ADA_T1 + KVB_ADA_T2 - l);
            /* len > 0 and no stale block: every cached block is on the walked
             * lists. The check keeps a bug from looping. */
            kvb_assert(id != KVB_ADA_NONE);
            if (id == KVB_ADA_NONE)
                break;
            how = KVB_ADA_EVORDER;
        }
        struct kvb_ada_blk *b = &a->blk[id];
        if (b->flags & (KVB_ADA_STALE0 << (1 - s)))
            kvb_ada_stale_unlink(a, 1 - s, id);
        if (b->ent != KVB_ADA_NONE && a->e[b->ent].rid == id)
            a->e[b->ent].rid = KVB_ADA_NONE; /* b->ent stays, for unevict */
        b->flags = how;
        a->len--;
        out[k++] = id;
    }
    return k;
}

static uint32_t kvb_ada_len(const void *self)
{
    const struct kvb_ada *a = self;
    return a->len;
}

static void kvb_ada_drain(void *self)
{
    struct kvb_ada *a = self;
    kvb_ada_flush(a);
    for (uint32_t id = 0; id < a->bc; id++) {
        struct kvb_ada_blk *b = &a->blk[id];
        if (b->ent != KVB_ADA_NONE && a->e[b->ent].rid == id)
            a->e[b->ent].rid = KVB_ADA_NONE;
        b->ent = KVB_ADA_NONE;
        b->flags = 0;
    }
    for (uint32_t s = 0; s < 2; s++) {
        kvb_ilist_init(KVB_ADA_STALEL(a, s), a->bc + s);
        a->nstale[s] = 0;
    }
    kvb_ada_reset_cursors(a);
    a->len = 0;
}

/* Exact: evict changed no simulation, so the victims go back where they were:
 * those of the active stale list to its head (last first), the others to their
 * entries; the other simulation's stale list gets its blocks back at its end. */
static void kvb_ada_unevict(void *self, const uint32_t *ids, const kvb_hash *hashes,
                            const uint32_t *arrivals, uint32_t n)
{
    struct kvb_ada *a = self;
    (void)hashes;
    (void)arrivals;
    if (!ids)
        return;
    kvb_ada_flush(a);
    uint32_t s = a->active;
    for (uint32_t i = n; i-- > 0;) {
        uint32_t id = ids[i];
        if (id >= a->bc || !(a->blk[id].flags & (KVB_ADA_EVSTALE | KVB_ADA_EVORDER)))
            continue;
        struct kvb_ada_blk *b = &a->blk[id];
        bool stale = b->flags & KVB_ADA_EVSTALE;
        b->flags = KVB_ADA_PRESENT;
        uint32_t x = b->ent;
        if (x != KVB_ADA_NONE && (a->e[x].fp != b->fp || a->e[x].rid != KVB_ADA_NONE))
            x = KVB_ADA_NONE;
        b->ent = x;
        if (x != KVB_ADA_NONE)
            a->e[x].rid = id;
        bool in[2] = {x != KVB_ADA_NONE && kvb_ada_in_lru(&a->e[x]),
                      x != KVB_ADA_NONE && kvb_ada_in_arc(&a->e[x])};
        if (stale || !in[s])
            kvb_ada_stale_push(a, s, id, true);
        if (!in[1 - s])
            kvb_ada_stale_push(a, 1 - s, id, false);
        a->len++;
    }
    kvb_ada_reset_cursors(a);
}

static size_t kvb_ada_memory(const void *self)
{
    const struct kvb_ada *a = self;
    return sizeof *a + ((size_t)a->nent + 5) * sizeof *a->e + (size_t)a->tcap * sizeof *a->tab +
           ((size_t)a->bc + 2) * sizeof *a->blk;
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
