/*
 * tools/common/optimal.c - the offline optimal references of optimal.h.
 *
 * `optimal` (request-granularity Belady over the leaves of the cached prefix
 * tree, with a pool's holding rules). State per distinct block b:
 *   cached[b]  the block is in the cache (held or not);
 *   held[b]    how many live requests (the current one and, with --window W,
 *              the last W) hold it;
 *   kids[b]    how many of its children are cached;
 *   key[b]     its next use: the next request containing it (after the last
 *              request that contained it), or NEVER.
 * Invariants (checked where cheap, and they make the rule well defined):
 *   - the cached set is closed under prefixes: a cached block's parent is
 *     cached (requests insert whole root paths; only leaves are evicted);
 *   - held blocks are closed under prefixes too (a request holds a root path),
 *     so an unheld block never has a held child;
 *   - the heap holds exactly the evictable blocks: cached, unheld, kids == 0,
 *     keyed by key[b]; key[b] only changes while b is held (b is then in the
 *     current request), so heap keys are never stale.
 * A request: k = the cached prefix (hits); hold those blocks; while fewer than
 * n - k blocks are free or evictable, release the oldest window request (as
 * kvb-replay does on -ENOSPC); evict heap maxima (farthest next use, ties
 * between never-used-again blocks broken by the larger block index) until
 * n - k slots are free; insert and hold the rest; update the keys of the
 * request's blocks; release per the window.
 * Why it is optimal (W = 0; see docs/replay.md): a child is used whenever its
 * parent is, so its next use is never earlier; the farthest unheld block is
 * therefore always a leaf, and the rule is Belady's farthest-in-future rule
 * for requests that must hold all their blocks at once. An exhaustive search
 * over all eviction choices (tests/replay/brute_optimal.py) agrees on random
 * small traces. With a window it is the same rule, not proven optimal.
 *
 * `belady_flat`: textbook Belady on the stream of block refs (see optimal.h).
 *
 * Both use one indexed binary max-heap of (key, block) with a position array
 * (Sedgewick's IndexMaxPQ): O(log C) per eviction, insertion or key change.
 */
#include "optimal.h"
#include "util.h"

/* Requests per progress report: one report costs a branch (bar off) or a clock
 * read (bar on) per chunk, never per block. */
#define KVBT_OPT_CHUNK 4096

/* ------------------------------------------------------------------------ */
/* The oracle                                                               */
/* ------------------------------------------------------------------------ */

void kvbt_oracle_free(kvbt_oracle *o)
{
    free(o->block);
    free(o->parent);
    free(o->next_req);
    free(o->next_ref);
    memset(o, 0, sizeof *o);
}

int kvbt_oracle_build(const kvbt_trace *t, const kvb_hash *hashes, kvbt_oracle *o, char *err,
                      size_t errcap)
{
    memset(o, 0, sizeof *o);
    if (t->n_requests >= KVBT_ORACLE_NEVER || t->n_refs >= KVBT_ORACLE_NONE) {
        snprintf(err, errcap,
                 "%s: too large for the optimal references (%llu requests, %llu block refs; "
                 "at most 2^32 - 2 of each)",
                 t->name, (unsigned long long)t->n_requests, (unsigned long long)t->n_refs);
        return -1;
    }
    uint64_t n_refs = t->n_refs;
    o->n_refs = n_refs;
    o->n_requests = t->n_requests;
    o->block = kvbt_xmalloc_array((size_t)n_refs, sizeof *o->block);
    o->parent = kvbt_xmalloc_array((size_t)n_refs, sizeof *o->parent);
    o->next_req = kvbt_xmalloc_array((size_t)n_refs, sizeof *o->next_req);
    o->next_ref = kvbt_xmalloc_array((size_t)n_refs, sizeof *o->next_ref);

    /* Distinct hashes: open addressing, a slot holds (first ref of the block) + 1. */
    unsigned bits = 4;
    while ((1ull << bits) < 2 * n_refs)
        bits++;
    uint64_t mask = (1ull << bits) - 1;
    uint64_t *set = calloc((size_t)(mask + 1), sizeof *set);
    if (!set) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    uint32_t n_blocks = 0;
    for (uint64_t r = 0; r < t->n_requests; r++) {
        for (uint64_t i = t->off[r]; i < t->off[r + 1]; i++) {
            uint32_t expect = i > t->off[r] ? o->block[i - 1] : KVBT_ORACLE_NONE;
            uint64_t s = kvbt_hash_mix(hashes[i]) >> (64 - bits);
            while (set[s] && !kvb_hash_equal(hashes[set[s] - 1], hashes[i]))
                s = (s + 1) & mask;
            if (!set[s]) {
                set[s] = i + 1;
                o->block[i] = n_blocks;
                o->parent[n_blocks++] = expect;
            } else {
                uint32_t b = o->block[set[s] - 1];
                o->block[i] = b;
                if (o->parent[b] != expect && o->conflicts++ == 0)
                    o->first_conflict_request = r;
            }
        }
    }
    free(set);
    o->n_blocks = n_blocks;
    o->parent = kvbt_xrealloc(o->parent, (size_t)(n_blocks ? n_blocks : 1) * sizeof *o->parent);

    /* Next uses, walking backwards: last_req/last_ref hold the earliest later use. */
    uint32_t *last_req = kvbt_xmalloc_array(n_blocks ? n_blocks : 1, sizeof *last_req);
    uint64_t *last_ref = kvbt_xmalloc_array(n_blocks ? n_blocks : 1, sizeof *last_ref);
    for (uint32_t b = 0; b < n_blocks; b++) {
        last_req[b] = KVBT_ORACLE_NEVER;
        last_ref[b] = UINT64_MAX;
    }
    for (uint64_t r = t->n_requests; r-- > 0;) {
        uint64_t b0 = t->off[r], e0 = t->off[r + 1];
        for (uint64_t i = e0; i-- > b0;) {
            uint32_t b = o->block[i];
            o->next_ref[i] = last_ref[b];
            last_ref[b] = i;
        }
        for (uint64_t i = b0; i < e0; i++) /* a later request, not this one */
            o->next_req[i] = last_req[o->block[i]];
        for (uint64_t i = b0; i < e0; i++)
            last_req[o->block[i]] = (uint32_t)r;
    }
    free(last_req);
    free(last_ref);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Indexed max-heap                                                         */
/* ------------------------------------------------------------------------ */

typedef struct kvbt_hent {
    uint64_t key;
    uint32_t id;
} kvbt_hent;

typedef struct kvbt_heap {
    kvbt_hent *a; /* [0, n) used */
    uint32_t n;
    uint32_t *pos; /* per block: index in a, or KVBT_ORACLE_NONE */
} kvbt_heap;

static void kvbt_heap_init(kvbt_heap *h, uint32_t cap, uint32_t n_blocks)
{
    h->a = kvbt_xmalloc_array(cap ? cap : 1, sizeof *h->a);
    h->n = 0;
    h->pos = kvbt_xmalloc_array(n_blocks ? n_blocks : 1, sizeof *h->pos);
    memset(h->pos, 0xff, (size_t)n_blocks * sizeof *h->pos);
}

static void kvbt_heap_fini(kvbt_heap *h)
{
    free(h->a);
    free(h->pos);
}

static inline bool kvbt_hent_above(kvbt_hent x, kvbt_hent y)
{
    return x.key > y.key || (x.key == y.key && x.id > y.id);
}

static void kvbt_heap_up(kvbt_heap *h, uint32_t i)
{
    kvbt_hent e = h->a[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!kvbt_hent_above(e, h->a[p]))
            break;
        h->a[i] = h->a[p];
        h->pos[h->a[i].id] = i;
        i = p;
    }
    h->a[i] = e;
    h->pos[e.id] = i;
}

static void kvbt_heap_down(kvbt_heap *h, uint32_t i)
{
    kvbt_hent e = h->a[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && kvbt_hent_above(h->a[c + 1], h->a[c]))
            c++;
        if (!kvbt_hent_above(h->a[c], e))
            break;
        h->a[i] = h->a[c];
        h->pos[h->a[i].id] = i;
        i = c;
    }
    h->a[i] = e;
    h->pos[e.id] = i;
}

static void kvbt_heap_push(kvbt_heap *h, uint32_t id, uint64_t key)
{
    uint32_t i = h->n++;
    h->a[i].key = key;
    h->a[i].id = id;
    kvbt_heap_up(h, i);
}

/* Take the entry at index i out. */
static void kvbt_heap_take(kvbt_heap *h, uint32_t i)
{
    uint32_t id = h->a[i].id;
    h->pos[id] = KVBT_ORACLE_NONE;
    if (i == --h->n)
        return;
    h->a[i] = h->a[h->n];
    h->pos[h->a[i].id] = i;
    if (i > 0 && kvbt_hent_above(h->a[i], h->a[(i - 1) / 2]))
        kvbt_heap_up(h, i);
    else
        kvbt_heap_down(h, i);
}

static uint32_t kvbt_heap_pop(kvbt_heap *h)
{
    uint32_t id = h->a[0].id;
    kvbt_heap_take(h, 0);
    return id;
}

static void kvbt_heap_rekey(kvbt_heap *h, uint32_t id, uint64_t key)
{
    uint32_t i = h->pos[id];
    uint64_t old = h->a[i].key;
    h->a[i].key = key;
    if (key > old)
        kvbt_heap_up(h, i);
    else
        kvbt_heap_down(h, i);
}

/* ------------------------------------------------------------------------ */
/* optimal                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct kvbt_opt {
    const kvbt_trace *t;
    const kvbt_oracle *o;
    uint8_t *cached;
    uint32_t *held, *kids, *key;
    kvbt_heap heap;
    uint32_t held_distinct;
    uint32_t *ring; /* window: requests held, oldest first from ring[head] */
    uint32_t ring_cap, head, count;
} kvbt_opt;

/* Release request r: its blocks that nobody holds any more and that have no cached
 * child become evictable. */
static void kvbt_opt_release(kvbt_opt *s, uint32_t r)
{
    const uint32_t *blk = s->o->block + s->t->off[r];
    uint32_t n = (uint32_t)kvbt_trace_len(s->t, r);
    for (uint32_t j = 0; j < n; j++) {
        uint32_t b = blk[j];
        if (--s->held[b] == 0) {
            s->held_distinct--;
            if (s->kids[b] == 0)
                kvbt_heap_push(&s->heap, b, s->key[b]);
        }
    }
}

static void kvbt_opt_release_oldest(kvbt_opt *s)
{
    kvbt_opt_release(s, s->ring[s->head]);
    s->head = s->head + 1 == s->ring_cap ? 0 : s->head + 1;
    s->count--;
}

int kvbt_optimal_run(const kvbt_trace *t, const kvbt_oracle *o, uint32_t capacity, uint32_t window,
                     kvbt_progress *prog, kvbt_opt_result *res, char *err, size_t errcap)
{
    if (o->conflicts) {
        snprintf(err, errcap,
                 "%s is not a prefix tree (%llu block refs follow another parent than before, "
                 "the first in request %llu): the optimal reference is undefined",
                 t->name, (unsigned long long)o->conflicts,
                 (unsigned long long)o->first_conflict_request + 1);
        return -1;
    }
    if (t->max_request_blocks > capacity) {
        snprintf(err, errcap, "%s: a request of %llu blocks does not fit in %u blocks", t->name,
                 (unsigned long long)t->max_request_blocks, capacity);
        return -1;
    }
    uint32_t nb = o->n_blocks;
    kvbt_opt s = {.t = t, .o = o};
    s.cached = calloc(nb ? nb : 1, 1);
    s.held = calloc(nb ? nb : 1, sizeof *s.held);
    s.kids = calloc(nb ? nb : 1, sizeof *s.kids);
    s.key = calloc(nb ? nb : 1, sizeof *s.key);
    if (!s.cached || !s.held || !s.kids || !s.key) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    kvbt_heap_init(&s.heap, capacity < nb ? capacity : nb, nb);
    s.ring_cap = window + 1;
    s.ring = kvbt_xmalloc_array(s.ring_cap, sizeof *s.ring);

    const uint64_t *off = t->off;
    const uint32_t *parent = o->parent;
    uint64_t hits = 0, evictions = 0, early = 0, excluded = 0;
    uint32_t used = 0;
    int rc = 0;

    uint64_t t0 = kvbt_now_ns();
    for (uint64_t r0 = 0, r1; r0 < t->n_requests; r0 = r1) {
        r1 = r0 + KVBT_OPT_CHUNK < t->n_requests ? r0 + KVBT_OPT_CHUNK : t->n_requests;
        for (uint64_t r = r0; r < r1; r++) {
            const uint32_t *blk = o->block + off[r];
            const uint32_t *nxt = o->next_req + off[r];
            uint32_t n = (uint32_t)(off[r + 1] - off[r]), k = 0;

            while (k < n && s.cached[blk[k]])
                k++;
            for (uint32_t j = 0; j < k; j++) {
                uint32_t b = blk[j];
                if (s.held[b]++ == 0) {
                    s.held_distinct++;
                    if (s.heap.pos[b] != KVBT_ORACLE_NONE)
                        kvbt_heap_take(&s.heap, s.heap.pos[b]);
                }
            }
            uint32_t m = n - k;
            while (capacity - s.held_distinct < m) {
                if (s.count == 0) {
                    snprintf(err, errcap, "optimal: request %llu: no room (a bug)",
                             (unsigned long long)r + 1);
                    rc = -1;
                    goto out;
                }
                kvbt_opt_release_oldest(&s);
                early++;
            }
            while (used + m > capacity) {
                if (s.heap.n == 0) {
                    snprintf(err, errcap, "optimal: request %llu: nothing evictable (a bug)",
                             (unsigned long long)r + 1);
                    rc = -1;
                    goto out;
                }
                uint32_t v = kvbt_heap_pop(&s.heap), p = parent[v];
                s.cached[v] = 0;
                used--;
                evictions++;
                if (p != KVBT_ORACLE_NONE && --s.kids[p] == 0 && s.held[p] == 0)
                    kvbt_heap_push(&s.heap, p, s.key[p]);
            }
            for (uint32_t j = k; j < n; j++) {
                uint32_t b = blk[j];
                if (s.cached[b]) { /* prefix closure broken: impossible without conflicts */
                    snprintf(err, errcap,
                             "optimal: request %llu: block %u cached after a miss (a bug)",
                             (unsigned long long)r + 1, j);
                    rc = -1;
                    goto out;
                }
                s.cached[b] = 1;
                s.held[b] = 1;
                if (parent[b] != KVBT_ORACLE_NONE)
                    s.kids[parent[b]]++;
            }
            s.held_distinct += m;
            used += m;
            hits += k;
            for (uint32_t j = 0; j < n; j++)
                s.key[blk[j]] = nxt[j];

            if (window == 0) {
                kvbt_opt_release(&s, (uint32_t)r);
            } else {
                uint32_t tail = s.head + s.count;
                s.ring[tail >= s.ring_cap ? tail - s.ring_cap : tail] = (uint32_t)r;
                if (++s.count > window)
                    kvbt_opt_release_oldest(&s);
            }
        }
        excluded += kvbt_progress_add(prog, off[r1] - off[r0]);
    }
    uint64_t t1 = kvbt_now_ns();
    res->hits = hits;
    res->evictions = evictions;
    res->early_releases = early;
    res->ns = t1 - t0 - excluded;
out:
    kvbt_heap_fini(&s.heap);
    free(s.cached);
    free(s.held);
    free(s.kids);
    free(s.key);
    free(s.ring);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* belady_flat                                                              */
/* ------------------------------------------------------------------------ */

int kvbt_belady_flat_run(const kvbt_trace *t, const kvbt_oracle *o, uint32_t capacity,
                         kvbt_progress *prog, kvbt_opt_result *res, char *err, size_t errcap)
{
    if (o->conflicts) {
        snprintf(err, errcap,
                 "%s is not a prefix tree (%llu block refs follow another parent than before): "
                 "the belady_flat reference is undefined",
                 t->name, (unsigned long long)o->conflicts);
        return -1;
    }
    kvbt_heap h;
    kvbt_heap_init(&h, capacity < o->n_blocks ? capacity : o->n_blocks, o->n_blocks);
    const uint64_t *off = t->off;
    uint64_t hits = 0, evictions = 0, excluded = 0;

    uint64_t t0 = kvbt_now_ns();
    for (uint64_t r0 = 0, r1; r0 < t->n_requests; r0 = r1) {
        r1 = r0 + KVBT_OPT_CHUNK < t->n_requests ? r0 + KVBT_OPT_CHUNK : t->n_requests;
        for (uint64_t r = r0; r < r1; r++) {
            bool prefix = true;
            for (uint64_t i = off[r]; i < off[r + 1]; i++) {
                uint32_t b = o->block[i];
                uint64_t key = o->next_ref[i];
                if (h.pos[b] != KVBT_ORACLE_NONE) {
                    hits += prefix;
                    kvbt_heap_rekey(&h, b, key);
                } else {
                    prefix = false;
                    if (h.n == capacity) {
                        kvbt_heap_pop(&h);
                        evictions++;
                    }
                    kvbt_heap_push(&h, b, key);
                }
            }
        }
        excluded += kvbt_progress_add(prog, off[r1] - off[r0]);
    }
    uint64_t t1 = kvbt_now_ns();
    kvbt_heap_fini(&h);
    res->hits = hits;
    res->evictions = evictions;
    res->early_releases = 0;
    res->ns = t1 - t0 - excluded;
    return 0;
}
