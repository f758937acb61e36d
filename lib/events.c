/*
 * events.c - KV cache events: from the pool's per-block records to kvb_event
 * batches delivered to the sink (DESIGN.md section 7, include/kvblock/events.h).
 *
 * Input. The pool numbers one record per block-level change under its lock
 * (record seq 1, 2, 3, ... without gaps, in history order) and hands the
 * records of each critical section to kvb__events_deliver() after dropping the
 * lock. Two threads can therefore arrive here in the wrong order: T1 numbered
 * record 5, T2 record 6, and T2 gets here first.
 *
 * Ordering: a reorder ring plus a single drainer (a combining scheme).
 *  - ring[s & (cap - 1)] holds record s while base <= s < base + cap; base is
 *    the next record to deliver. A slot is full iff it holds the seq expected
 *    there (0 = empty: record seqs start at 1).
 *  - At most one thread at a time holds the drainer role (draining, under mu).
 *    The drainer takes the contiguous run of records starting at base out of
 *    the ring, forms events from them and calls the sink, with mu dropped, and
 *    loops until no record at base is present; then it gives the role up.
 *  - A thread arriving with records inserts them into the ring; if a drainer is
 *    active it returns at once (the drainer will deliver them), otherwise it
 *    becomes the drainer. Fast path (one thread, no contention): its records
 *    start exactly at base and the ring is empty, so it claims them by moving
 *    base and forms events straight from its own array, without copying.
 *  - Giving the role up happens under mu after seeing no record at base, and
 *    every insertion happens under mu, so a record is never stranded: either
 *    the drainer sees it, or its inserter finds no drainer and drains.
 *  - A record that must wait for an earlier one (a gap) waits in the ring; the
 *    thread that numbered the earlier record is between the pool's unlock and
 *    this module (it runs no user code in between: the pool fires registry
 *    presence updates, then events, then the user callbacks), so it arrives
 *    soon and drains both.
 *  - Re-entrancy: a sink may call back into the pool. The records that call
 *    produces arrive here on the drainer's own thread, which sees itself as the
 *    drainer, inserts them and returns: the outer loop delivers them after the
 *    sink returns. No lock is held while the sink (or the tokens callback) runs.
 * A mutex and a condition variable rather than a lock-free log: the drainer
 * role must be handed over atomically with the "nothing at base" check, and
 * the slow paths (waiting for ring space, flush waiting for a drainer, the
 * timer) need to sleep; the critical sections are a few stores.
 *
 * Memory. The ring grows by doubling (under mu, never under the pool lock).
 * If it cannot grow, a thread that is not the drainer waits for the drainer to
 * make room (back-pressure; the drainer always progresses). The drainer itself
 * (a sink calling back into the pool) cannot wait for itself: its records are
 * dropped, counted in `lost`, and remembered as a range of skipped seqs, and the
 * next event's seq jumps by one so that consumers know to resynchronise.
 * The output batch (events, hashes, block ids, tokens) has a fixed capacity
 * allocated at create (tokens and the parent index lazily at the first
 * delivery, when the pool's block size and count are known); a full batch is
 * delivered early.
 *
 * Event numbering. kvb_event.seq is assigned when an event is formed, by the
 * drainer (so under the delivery serialisation), +1 per event. The record
 * numbers taken under the pool lock fix the order; the event numbers are
 * dense over what is actually delivered: coalescing several records into one
 * event, or the emission policy leaving records out, leaves no gap. (Numbering
 * events under the pool lock instead would force the pool to know how records
 * coalesce and which ones the policy keeps.)
 *
 * Coalescing: consecutive STORED records become one event while each hash is
 * the parent of the next (kvb_hash_is_parent) and tokens are known for all or
 * none; consecutive REMOVED records become one event. An event never spans a
 * CLEARED.
 *
 * Parent of a STORED event. Only the first block's parent needs resolving (the
 * others are in the event). kvb_hash carries the parent's position and the top
 * R bits of its sequence hash; the drainer keeps an index of the content this
 * stream reported as stored and not removed, keyed by (position, those bits),
 * holding per key the count and the XOR of the stored hashes: the parent is
 * reported when exactly one stored hash has the key (and kvb_hash_is_parent
 * accepts it), never guessed among several. With EMIT_POW2 the index holds sampled positions only,
 * so parents are unknown (the sampling consumer does not link blocks anyway).
 *
 * Batching. batch_max = 0: deliver each drain round at once. Otherwise deliver
 * when batch_max events wait, when the oldest waiting event is batch_delay_ms
 * old (checked on every drain round, and by a per-pool timer thread started
 * only when batch_delay_ms > 0), on kvb_pool_events_flush, and at destroy.
 *
 * Locking: fields marked (mu) are protected by ev->mu; (drainer) fields are
 * touched only by the thread holding the drainer role, which is handed from
 * thread to thread under mu (so mu orders those accesses too); (const) fields
 * are set at create.
 */
#include "events_internal.h"
#include "hash_layout.h"
#include "pool_internal.h"
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define EV_RING_INIT      1024u /* records; grows by doubling */
#define EV_STAGE          256u  /* records the drainer takes out of the ring per round */
#define EV_HASHES_DEFAULT 4096u
#define EV_EVENTS_AT_ONCE 256u   /* events per delivery when batch_max is 0 */
#define EV_TOKENS_MAX     65536u /* token ids one delivery holds */

struct kvb_ev_cell {
    uint64_t key;   /* (mode, position, fragment a child keeps): kvb_ev_keys */
    uint32_t count; /* stored hashes with this key; 0 = empty cell */
    kvb_hash x;     /* XOR of those hashes: the hash itself when count == 1 */
};

struct kvb_events {
    /* ---- (const) ---- */
    kvb_event_config cfg;
    kvb_allocator alloc;
    char medium[KVB_EVENT_MEDIUM_MAX + 1];
    bool has_medium;
    uint32_t block_count, block_size; /* the pool's */
    uint32_t max_events, max_hashes;
    uint64_t delay_ns;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* (mu) base moved, ring space, drainer role released */
    int timer_fd;      /* eventfd: wakes the timer thread (a batch started waiting, or stop) */

    /* ---- (mu) ---- */
    struct kvb_cb_ev *ring;
    uint32_t ring_cap;         /* power of two */
    uint32_t ring_n;           /* records in the ring */
    uint64_t base;             /* next record seq to deliver */
    uint64_t lost_lo, lost_hi; /* seqs to skip (dropped); empty when lost_lo > lost_hi */
    bool draining;
    pthread_t drainer;
    bool flush_req;
    kvb_pool *pool;     /* set by the first delivery (the timer needs it) */
    uint32_t waiting;   /* events held back, as of the last drainer exit */
    uint64_t oldest_ns; /* when the oldest of them was formed */
    kvb_event_stats st;
    bool stop;
    bool timer_started;
    bool timer_idle; /* the timer sleeps with no deadline: kick it when a batch waits */
    pthread_t timer;

    /* ---- (drainer) ---- */
    kvb_event *evs;
    uint32_t nev;
    kvb_hash *hs;
    uint32_t *ids;
    uint32_t nh;
    uint32_t *toks; /* NULL until the first delivery (or without a tokens callback) */
    uint32_t tok_cap, ntok;
    bool tok_tried;
    bool open;         /* evs[nev - 1] may still grow */
    bool open_tokens;  /* ... and it carries tokens */
    uint64_t next_seq; /* seq of the next event formed */
    bool gap;          /* records were lost since the last event formed */
    uint64_t batch_t0; /* when evs[0] was formed */
    /* counters not yet published into st (published under mu each round) */
    uint64_t d_filtered, d_events, d_deliveries, d_last_seq;
    uint32_t d_unresolved;
    /* parent index (see kvb_ev_idx_*): parent key -> count and XOR of stored hashes */
    struct kvb_ev_cell *idx;
    uint32_t idx_mask, idx_n;
    uint32_t idx_shift; /* 64 - log2(capacity): kvb_ev_idx_home */
    bool idx_tried;
    /* keys of hs[nh - 1] while the open event is STORED (coalescing) */
    struct kvb_ev_keys last_keys;
    struct kvb_cb_ev stage[EV_STAGE];
};

#ifdef KVB_TESTING
static kvb_test_events_hook_fn kvb_test_events_hook;
static void *kvb_test_events_arg;

void kvb__test_set_events_hook(kvb_test_events_hook_fn fn, void *arg)
{
    kvb_test_events_arg = arg;
    kvb_test_events_hook = fn;
}
#endif

static uint64_t kvb_ev_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool kvb_is_event(uint32_t kind)
{
    /* STORED, REMOVED, CLEARED are consecutive (defer.h) */
    _Static_assert(KVB_CB_REMOVED == KVB_CB_STORED + 1 && KVB_CB_CLEARED == KVB_CB_STORED + 2,
                   "event record kinds");
    return kind - (uint32_t)KVB_CB_STORED <= 2u;
}

/* ------------------------------------------------------------------------ */
/* public configuration helpers                                             */
/* ------------------------------------------------------------------------ */

KVB_API void kvb_event_config_init(kvb_event_config *cfg)
{
    if (cfg)
        memset(cfg, 0, sizeof *cfg);
}

/* ------------------------------------------------------------------------ */
/* parent index (drainer)                                                   */
/* ------------------------------------------------------------------------ */

/*
 * The index maps a parent key, (position, the low R bits of the sequence hash
 * that a child at position + 1 keeps), to the number of stored hashes with that
 * key and the XOR of those hashes. A child finds its parent by its own position
 * and parent fragment: the parent is known exactly when the count is 1 (the XOR
 * is then the parent itself); a count above 1 means several stored hashes fit
 * (possible with hashes built from small integers, as traces do), and the parent
 * is reported unknown rather than guessed. Keys are distinct per cell, so probe
 * runs stay short whatever the hashes look like; insert and remove are O(1).
 * Open addressing, linear probing, backward-shift deletion; capacity >= 2 x
 * block_count fixed at first use (at most block_count hashes are stored).
 *
 * A key is one 64-bit word, decoded once per record (kvb_ev_keys): the child's
 * mode m (2 bits, a function of the position) on top, the position below it and
 * the fragment in the low r = 54 - 8m bits (a position below 2^(8m + 8) and a
 * fragment below 2^r fill at most 62 bits, so the packing is injective). The
 * same word decides chain coalescing: h is the parent of c exactly when both are
 * well formed and c's parent key equals h's stored key (kvb__hash_is_parent
 * spelled as one compare, with the decoding shared with the index).
 */
static inline uint32_t kvb_ev_idx_home(const struct kvb_events *ev, uint64_t key)
{
    /* multiplicative (Fibonacci) hashing; the fold first brings the position
     * bits down, so that keys built from small integers still spread */
    return (uint32_t)(((key ^ (key >> 29)) * 0x9E3779B97F4A7C15ull) >> ev->idx_shift);
}

static void kvb_ev_idx_init(struct kvb_events *ev)
{
    ev->idx_tried = true;
    if (ev->cfg.emit != KVB_EVENT_EMIT_ALL)
        return; /* sampled streams carry no parents */
    uint32_t cap = kvb__next_pow2(ev->block_count) * 2;
    ev->idx = kvb__calloc(&ev->alloc, cap, sizeof *ev->idx);
    if (!ev->idx)
        return; /* parents stay unresolved; everything else works */
    ev->idx_mask = cap - 1;
    ev->idx_shift = 64 - (uint32_t)__builtin_ctz(cap);
}

/* The cell of key, or of the empty cell where it would go. */
static inline uint32_t kvb_ev_idx_find(const struct kvb_events *ev, uint64_t key)
{
    uint32_t i = kvb_ev_idx_home(ev, key);
    while (ev->idx[i].count && ev->idx[i].key != key)
        i = (i + 1) & ev->idx_mask;
    return i;
}

/* Start loading the home cell of h's key (insert and remove both probe from
 * there): worth it only when the index is larger than the caches. */
#define EV_PREFETCH_AHEAD 8u
#define EV_PREFETCH_MIN   (1u << 16) /* cells (2 MiB) */
static inline void kvb_ev_idx_prefetch(const struct kvb_events *ev, kvb_hash h)
{
    __builtin_prefetch(&ev->idx[kvb_ev_idx_home(ev, kvb_ev_skey_of(h))], 1);
}

static inline void kvb_ev_idx_insert(struct kvb_events *ev, kvb_hash h, uint64_t key)
{
    /* Load stays <= 1/2: the pool stores at most block_count hashes. Past that
     * (only after lost records left stale keys) stop indexing. */
    if (!ev->idx)
        return;
    struct kvb_ev_cell *c = &ev->idx[kvb_ev_idx_find(ev, key)];
    if (!c->count) {
        if (ev->idx_n >= (ev->idx_mask + 1) / 2)
            return;
        ev->idx_n++;
        *c = (struct kvb_ev_cell){.key = key};
    }
    c->count++;
    c->x.hi ^= h.hi;
    c->x.lo ^= h.lo;
}

static inline void kvb_ev_idx_remove(struct kvb_events *ev, kvb_hash h, uint64_t key)
{
    if (!ev->idx)
        return;
    uint32_t i = kvb_ev_idx_find(ev, key);
    struct kvb_ev_cell *c = &ev->idx[i];
    if (!c->count)
        return; /* never indexed (index full, or after lost records) */
    c->x.hi ^= h.hi;
    c->x.lo ^= h.lo;
    if (--c->count)
        return;
    /* backward-shift deletion of cell i */
    uint32_t hole = i;
    for (uint32_t j = (i + 1) & ev->idx_mask; ev->idx[j].count; j = (j + 1) & ev->idx_mask) {
        uint32_t home = kvb_ev_idx_home(ev, ev->idx[j].key);
        /* move j into the hole unless its home lies cyclically in (hole, j] */
        if (((j - home) & ev->idx_mask) >= ((j - hole) & ev->idx_mask)) {
            ev->idx[hole] = ev->idx[j];
            hole = j;
        }
    }
    ev->idx[hole].count = 0;
    ev->idx_n--;
}

static void kvb_ev_idx_clear(struct kvb_events *ev)
{
    if (ev->idx && ev->idx_n) {
        memset(ev->idx, 0, ((size_t)ev->idx_mask + 1) * sizeof *ev->idx);
        ev->idx_n = 0;
    }
}

/* The stored parent of child (keys k), when exactly one stored hash fits. */
static bool kvb_ev_idx_parent(const struct kvb_events *ev, kvb_hash child,
                              const struct kvb_ev_keys *k, kvb_hash *out)
{
    if (!ev->idx || !k->has_pkey)
        return false;
    const struct kvb_ev_cell *c = &ev->idx[kvb_ev_idx_find(ev, k->pkey)];
    if (c->count != 1 || !kvb__hash_is_parent(c->x, child))
        return false;
    *out = c->x;
    return true;
}

/* ------------------------------------------------------------------------ */
/* create / destroy                                                         */
/* ------------------------------------------------------------------------ */

static void *kvb_ev_timer_main(void *arg);

/* Wake the timer thread. EAGAIN (counter saturated) means it is awake anyway. */
static void kvb_ev_kick(struct kvb_events *ev)
{
    uint64_t one = 1;
    ssize_t w = write(ev->timer_fd, &one, sizeof one);
    (void)w;
}

int kvb__events_create(const kvb_event_config *cfg, const kvb_allocator *a, uint32_t block_count,
                       uint32_t block_size, struct kvb_events **out)
{
    if (!cfg->sink)
        return -EINVAL;
    if (cfg->emit != KVB_EVENT_EMIT_ALL && cfg->emit != KVB_EVENT_EMIT_POW2)
        return -EINVAL;
    if (cfg->emit == KVB_EVENT_EMIT_POW2 && cfg->pow2_max && cfg->pow2_min > cfg->pow2_max)
        return -EINVAL;
    if (cfg->medium && strlen(cfg->medium) > KVB_EVENT_MEDIUM_MAX)
        return -EINVAL;
    struct kvb_events *ev = kvb__calloc(a, 1, sizeof *ev);
    if (!ev)
        return -ENOMEM;
    ev->cfg = *cfg;
    ev->alloc = *a;
    ev->block_count = block_count;
    ev->block_size = block_size;
    if (cfg->medium) {
        snprintf(ev->medium, sizeof ev->medium, "%s", cfg->medium);
        ev->has_medium = true;
    }
    ev->cfg.medium = NULL; /* the caller's string need not outlive create */
    if (ev->cfg.emit == KVB_EVENT_EMIT_POW2 && !cfg->pow2_min && !cfg->pow2_max) {
        ev->cfg.pow2_min = 16; /* Dynamo's PowerOfTwoPolicy default: [2^4, 2^16] */
        ev->cfg.pow2_max = 65536;
    }
    ev->max_hashes = cfg->max_hashes ? cfg->max_hashes : EV_HASHES_DEFAULT;
    uint32_t want = cfg->batch_max ? cfg->batch_max : EV_EVENTS_AT_ONCE;
    /* every event but CLEARED carries a hash, so more events than hashes + 1
     * never fit anyway */
    ev->max_events = want < ev->max_hashes + 1 ? want : ev->max_hashes + 1;
    ev->delay_ns = (uint64_t)cfg->batch_delay_ms * 1000000ull;
    ev->base = 1;
    ev->next_seq = 1;
    ev->lost_lo = 1;
    ev->lost_hi = 0;
    ev->ring_cap = EV_RING_INIT;
    ev->ring = kvb__calloc(a, ev->ring_cap, sizeof *ev->ring);
    ev->evs = kvb__calloc(a, ev->max_events, sizeof *ev->evs);
    ev->hs = kvb__alloc(a, (size_t)ev->max_hashes * sizeof *ev->hs);
    ev->ids = kvb__alloc(a, (size_t)ev->max_hashes * sizeof *ev->ids);
    int rc = -ENOMEM;
    if (!ev->ring || !ev->evs || !ev->hs || !ev->ids)
        goto fail;
    if (pthread_mutex_init(&ev->mu, NULL) != 0)
        goto fail;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&ev->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&ev->mu);
        goto fail;
    }
    pthread_condattr_destroy(&ca);
    ev->timer_fd = -1;
    if (ev->delay_ns && cfg->batch_max) {
        ev->timer_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (ev->timer_fd < 0 || pthread_create(&ev->timer, NULL, kvb_ev_timer_main, ev) != 0) {
            if (ev->timer_fd >= 0)
                close(ev->timer_fd);
            pthread_cond_destroy(&ev->cv);
            pthread_mutex_destroy(&ev->mu);
            rc = -EAGAIN;
            goto fail;
        }
        ev->timer_started = true;
    }
    *out = ev;
    return 0;
fail:
    kvb__free(a, ev->ring, (size_t)ev->ring_cap * sizeof *ev->ring);
    kvb__free(a, ev->evs, (size_t)ev->max_events * sizeof *ev->evs);
    kvb__free(a, ev->hs, (size_t)ev->max_hashes * sizeof *ev->hs);
    kvb__free(a, ev->ids, (size_t)ev->max_hashes * sizeof *ev->ids);
    kvb__free(a, ev, sizeof *ev);
    return rc;
}

void kvb__events_destroy(struct kvb_events *ev)
{
    if (ev->timer_started) {
        pthread_mutex_lock(&ev->mu);
        ev->stop = true;
        pthread_mutex_unlock(&ev->mu);
        kvb_ev_kick(ev);
        pthread_join(ev->timer, NULL);
        close(ev->timer_fd);
    }
    kvb_allocator a = ev->alloc;
    pthread_cond_destroy(&ev->cv);
    pthread_mutex_destroy(&ev->mu);
    kvb__free(&a, ev->ring, (size_t)ev->ring_cap * sizeof *ev->ring);
    kvb__free(&a, ev->evs, (size_t)ev->max_events * sizeof *ev->evs);
    kvb__free(&a, ev->hs, (size_t)ev->max_hashes * sizeof *ev->hs);
    kvb__free(&a, ev->ids, (size_t)ev->max_hashes * sizeof *ev->ids);
    kvb__free(&a, ev->toks, (size_t)ev->tok_cap * sizeof *ev->toks);
    kvb__free(&a, ev->idx, ev->idx ? ((size_t)ev->idx_mask + 1) * sizeof *ev->idx : 0);
    kvb__free(&a, ev, sizeof *ev);
}

/* ------------------------------------------------------------------------ */
/* forming events and delivering batches (drainer, mu NOT held)             */
/* ------------------------------------------------------------------------ */

static void kvb_ev_deliver_batch(struct kvb_events *ev, kvb_pool *p)
{
    if (!ev->nev)
        return;
    ev->cfg.sink(ev->cfg.user, p, ev->evs, ev->nev);
    ev->d_events += ev->nev;
    ev->d_deliveries++;
    ev->d_last_seq = ev->evs[ev->nev - 1].seq;
    ev->nev = ev->nh = ev->ntok = 0;
    ev->open = false;
}

/* Make sure one more event with one more block fits; deliver early if not. */
static inline void kvb_ev_room(struct kvb_events *ev, kvb_pool *p, bool tokens)
{
    if (kvb_unlikely(ev->nev == ev->max_events || ev->nh == ev->max_hashes ||
                     (tokens && ev->ntok + ev->block_size > ev->tok_cap)))
        kvb_ev_deliver_batch(ev, p);
}

static kvb_event *kvb_ev_new(struct kvb_events *ev, kvb_pool *p, kvb_event_type type)
{
    if (ev->nev == 0)
        ev->batch_t0 = ev->delay_ns ? kvb_ev_now_ns() : 0;
    kvb_event *e = &ev->evs[ev->nev++];
    if (ev->gap) {
        ev->next_seq++; /* tell consumers that events were lost */
        ev->gap = false;
    }
    *e = (kvb_event){.type = type,
                     .seq = ev->next_seq++,
                     .hashes = ev->hs + ev->nh,
                     .block_ids = ev->ids + ev->nh,
                     .block_size = ev->block_size,
                     .medium = ev->has_medium ? ev->medium : NULL};
    return e;
}

static bool kvb_ev_emit_ok(const struct kvb_events *ev, kvb_hash h)
{
    if (ev->cfg.emit == KVB_EVENT_EMIT_ALL)
        return true;
    uint32_t pos = kvb__hash_position(h);
    return pos >= ev->cfg.pow2_min && (!ev->cfg.pow2_max || pos <= ev->cfg.pow2_max) && pos &&
           !(pos & (pos - 1));
}

static void kvb_ev_lazy_init(struct kvb_events *ev)
{
    if (!ev->idx_tried)
        kvb_ev_idx_init(ev);
    if (!ev->tok_tried) {
        ev->tok_tried = true;
        if (ev->cfg.tokens) {
            uint32_t blocks = EV_TOKENS_MAX / ev->block_size;
            if (blocks > ev->max_hashes)
                blocks = ev->max_hashes;
            if (blocks == 0)
                blocks = 1;
            ev->toks = kvb__alloc(&ev->alloc, (size_t)blocks * ev->block_size * sizeof *ev->toks);
            if (ev->toks)
                ev->tok_cap = blocks * ev->block_size; /* else: events without tokens */
        }
    }
}

/* Turn records into events in the batch (drainer, mu not held). */
static void kvb_ev_process(struct kvb_events *ev, kvb_pool *p, const struct kvb_cb_ev *recs,
                           uint32_t n)
{
    kvb_ev_lazy_init(ev);
    const bool prefetch = ev->idx && ev->idx_mask >= EV_PREFETCH_MIN;
    if (prefetch)
        for (uint32_t i = 0; i < n && i < EV_PREFETCH_AHEAD; i++)
            kvb_ev_idx_prefetch(ev, recs[i].hash);
    for (uint32_t i = 0; i < n; i++) {
        const struct kvb_cb_ev *r = &recs[i];
        if (prefetch && i + EV_PREFETCH_AHEAD < n)
            kvb_ev_idx_prefetch(ev, recs[i + EV_PREFETCH_AHEAD].hash);
        if (r->kind == KVB_CB_CLEARED) {
            kvb_ev_room(ev, p, false);
            kvb_ev_new(ev, p, KVB_EVENT_CLEARED);
            ev->open = false;
            kvb_ev_idx_clear(ev);
            continue;
        }
        if (r->kind != KVB_CB_STORED && r->kind != KVB_CB_REMOVED)
            continue;
        if (!kvb_ev_emit_ok(ev, r->hash)) {
            ev->d_filtered++;
            continue;
        }
        kvb_event *last = ev->open ? &ev->evs[ev->nev - 1] : NULL;
        if (r->kind == KVB_CB_REMOVED) {
            kvb_ev_idx_remove(ev, r->hash, kvb_ev_skey_of(r->hash));
            if (!last || last->type != KVB_EVENT_REMOVED || ev->nh == ev->max_hashes) {
                kvb_ev_room(ev, p, false);
                kvb_ev_new(ev, p, KVB_EVENT_REMOVED);
                ev->open = true;
                ev->open_tokens = false;
                last = &ev->evs[ev->nev - 1];
            }
        } else {
            bool want_tok = ev->toks != NULL;
            kvb_ev_room(ev, p, want_tok); /* may deliver, closing the open event */
            const struct kvb_ev_keys k = kvb_ev_keys(r->hash);
            if (!ev->open)
                last = NULL;
            bool have =
                want_tok && ev->cfg.tokens(ev->cfg.user, p, r->hash, r->id, ev->toks + ev->ntok);
            /* kvb__hash_is_parent(hs[nh - 1], r->hash), from the decoded keys */
            bool chained = last && last->type == KVB_EVENT_STORED && k.wf && ev->last_keys.wf &&
                           k.has_pkey && k.pkey == ev->last_keys.skey;
            if (!chained || ev->open_tokens != have) {
                kvb_hash parent = {0, 0};
                bool has_parent = false;
                if (chained) {
                    parent = ev->hs[ev->nh - 1]; /* split only by tokens */
                    has_parent = true;
                } else {
                    has_parent = kvb_ev_idx_parent(ev, r->hash, &k, &parent);
                }
                if (!has_parent && kvb__hash_position(r->hash) > 0 &&
                    ev->cfg.emit == KVB_EVENT_EMIT_ALL)
                    ev->d_unresolved++;
                last = kvb_ev_new(ev, p, KVB_EVENT_STORED);
                last->has_parent = has_parent;
                last->parent = parent;
                last->token_ids = have ? ev->toks + ev->ntok : NULL;
                ev->open = true;
                ev->open_tokens = have;
            }
            if (have)
                ev->ntok += ev->block_size;
            kvb_ev_idx_insert(ev, r->hash, k.skey);
            ev->last_keys = k;
        }
        ev->hs[ev->nh] = r->hash;
        ev->ids[ev->nh] = r->id;
        ev->nh++;
        last->n++;
    }
}

/* ------------------------------------------------------------------------ */
/* the drainer loop (mu held on entry and exit, role held throughout)       */
/* ------------------------------------------------------------------------ */

static bool kvb_ev_lost_contains(const struct kvb_events *ev, uint64_t s)
{
    return s >= ev->lost_lo && s <= ev->lost_hi;
}

static void kvb_ev_publish_stats_locked(struct kvb_events *ev)
{
    ev->st.filtered += ev->d_filtered;
    ev->st.events += ev->d_events;
    ev->st.deliveries += ev->d_deliveries;
    ev->st.unresolved_parents += ev->d_unresolved;
    if (ev->d_last_seq)
        ev->st.last_seq = ev->d_last_seq;
    ev->d_filtered = ev->d_events = ev->d_deliveries = ev->d_last_seq = 0;
    ev->d_unresolved = 0;
}

/* Take the contiguous run of records at base out of the ring (at most EV_STAGE). */
static uint32_t kvb_ev_take_locked(struct kvb_events *ev)
{
    uint32_t k = 0;
    uint32_t mask = ev->ring_cap - 1;
    while (k < EV_STAGE) {
        struct kvb_cb_ev *slot = &ev->ring[ev->base & mask];
        if (kvb_ev_lost_contains(ev, ev->base)) {
            if (slot->seq == ev->base) { /* handed over, but inside a dropped range */
                slot->seq = 0;
                ev->ring_n--;
                ev->st.lost++;
            }
            ev->gap = true;
            if (ev->base++ == ev->lost_hi) {
                ev->lost_lo = 1;
                ev->lost_hi = 0;
            }
            continue;
        }
        if (slot->seq != ev->base)
            break;
        ev->stage[k++] = *slot;
        slot->seq = 0;
        ev->ring_n--;
        ev->base++;
    }
    return k;
}

static bool kvb_ev_due_locked(const struct kvb_events *ev)
{
    if (!ev->nev)
        return false;
    if (!ev->cfg.batch_max || ev->nev >= ev->cfg.batch_max || ev->flush_req || ev->stop)
        return true;
    return ev->delay_ns && kvb_ev_now_ns() - ev->batch_t0 >= ev->delay_ns;
}

static void kvb_ev_drain_locked(struct kvb_events *ev)
{
    kvb_pool *p = ev->pool;
    for (;;) {
        kvb_ev_publish_stats_locked(ev);
        uint32_t k = kvb_ev_take_locked(ev);
        if (k) {
            pthread_cond_broadcast(&ev->cv); /* ring space for waiting inserters */
            pthread_mutex_unlock(&ev->mu);
            kvb_ev_process(ev, p, ev->stage, k);
            pthread_mutex_lock(&ev->mu);
            continue;
        }
        if (kvb_ev_due_locked(ev)) {
            pthread_mutex_unlock(&ev->mu);
            kvb_ev_deliver_batch(ev, p);
            pthread_mutex_lock(&ev->mu);
            continue;
        }
        break;
    }
    kvb_ev_publish_stats_locked(ev);
    ev->flush_req = false;
    ev->waiting = ev->nev;
    ev->oldest_ns = ev->batch_t0;
    ev->st.waiting = ev->nev;
    ev->draining = false;
    pthread_cond_broadcast(&ev->cv);
    /* a batch waits and the timer sleeps without a deadline: give it one (one
     * write per batch, not per call) */
    if (ev->nev && ev->timer_idle) {
        ev->timer_idle = false;
        kvb_ev_kick(ev);
    }
}

static void kvb_ev_become_drainer_locked(struct kvb_events *ev)
{
    ev->draining = true;
    ev->drainer = pthread_self();
}

static bool kvb_ev_self_drains_locked(const struct kvb_events *ev)
{
    return ev->draining && pthread_equal(ev->drainer, pthread_self());
}

/* Double the ring (mu held). false on ENOMEM. */
static bool kvb_ev_grow_locked(struct kvb_events *ev)
{
    if (ev->ring_cap > UINT32_MAX / 2)
        return false;
    uint32_t cap = ev->ring_cap * 2;
    struct kvb_cb_ev *r = kvb__calloc(&ev->alloc, cap, sizeof *r);
    if (!r)
        return false;
    for (uint32_t i = 0; i < ev->ring_cap; i++)
        if (ev->ring[i].seq)
            r[ev->ring[i].seq & (cap - 1)] = ev->ring[i];
    kvb__free(&ev->alloc, ev->ring, (size_t)ev->ring_cap * sizeof *ev->ring);
    ev->ring = r;
    ev->ring_cap = cap;
    return true;
}

/* Put one record in the ring (mu held). */
static void kvb_ev_insert_locked(struct kvb_events *ev, const struct kvb_cb_ev *r)
{
    uint64_t s = r->seq;
    if (s < ev->base || kvb_ev_lost_contains(ev, s)) {
        ev->st.lost++; /* its seq was skipped as part of a dropped range */
        return;
    }
    while (s - ev->base >= ev->ring_cap) {
        if (kvb_ev_grow_locked(ev))
            continue;
        if (kvb_ev_self_drains_locked(ev)) {
            /* the drainer cannot wait for itself: drop, and remember the seq */
            if (ev->lost_lo > ev->lost_hi) {
                ev->lost_lo = ev->lost_hi = s;
            } else {
                if (s < ev->lost_lo)
                    ev->lost_lo = s;
                if (s > ev->lost_hi)
                    ev->lost_hi = s;
            }
            ev->st.lost++;
            return;
        }
        pthread_cond_wait(&ev->cv, &ev->mu); /* back-pressure: the drainer makes room */
        if (s < ev->base || kvb_ev_lost_contains(ev, s)) {
            ev->st.lost++;
            return;
        }
    }
    ev->ring[s & (ev->ring_cap - 1)] = *r;
    ev->ring_n++;
}

void kvb__events_deliver(struct kvb_events *ev, kvb_pool *p, const struct kvb_cb_ev *recs,
                         uint32_t n)
{
    /* The event records (among callback records) come in increasing seq order
     * (events_internal.h), so they are contiguous exactly when the last minus
     * the first seq is their count minus one. */
    uint32_t first = n, lastrec = 0, m = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!kvb_is_event(recs[i].kind))
            continue;
        if (first == n)
            first = i;
        lastrec = i;
        m++;
    }
    const bool contiguous = m && recs[lastrec].seq - recs[first].seq == m - 1;
    const uint64_t prev = m ? recs[lastrec].seq : 0;
#ifdef KVB_TESTING
    if (kvb_test_events_hook)
        kvb_test_events_hook(kvb_test_events_arg, p, m ? recs[first].seq : 0);
#endif
    if (!m)
        return;
    pthread_mutex_lock(&ev->mu);
    ev->pool = p;
    ev->st.records += m;
    if (!ev->draining && contiguous && ev->ring_n == 0 && recs[first].seq == ev->base &&
        ev->lost_lo > ev->lost_hi) {
        /* fast path: claim our own records, form events straight from our array */
        ev->base = prev + 1;
        kvb_ev_become_drainer_locked(ev);
        pthread_mutex_unlock(&ev->mu);
        kvb_ev_process(ev, p, recs + first, n - first);
        pthread_mutex_lock(&ev->mu);
        kvb_ev_drain_locked(ev);
        pthread_mutex_unlock(&ev->mu);
        return;
    }
    for (uint32_t i = first; i < n; i++)
        if (kvb_is_event(recs[i].kind))
            kvb_ev_insert_locked(ev, &recs[i]);
    if (!ev->draining) {
        kvb_ev_become_drainer_locked(ev);
        kvb_ev_drain_locked(ev);
    }
    /* else: the drainer (possibly this very thread, in a sink) delivers them */
    pthread_mutex_unlock(&ev->mu);
}

void kvb__events_flush(struct kvb_events *ev)
{
    pthread_mutex_lock(&ev->mu);
    ev->flush_req = true;
    if (kvb_ev_self_drains_locked(ev)) {
        /* called from the sink: the delivery in progress honours it */
        pthread_mutex_unlock(&ev->mu);
        return;
    }
    while (ev->draining)
        pthread_cond_wait(&ev->cv, &ev->mu);
    if (ev->pool && (ev->waiting || ev->ring_n)) {
        ev->flush_req = true;
        kvb_ev_become_drainer_locked(ev);
        kvb_ev_drain_locked(ev);
    }
    ev->flush_req = false;
    pthread_mutex_unlock(&ev->mu);
}

/* The timer: delivers a waiting batch once its oldest event is batch_delay_ms
 * old, when no pool activity did it first. It sleeps in poll() on an eventfd
 * (kicked when a batch starts waiting, and at destroy) with the deadline as the
 * timeout, not in pthread_cond_timedwait: glibc's timed condition wait signals
 * internally on timeout, which helgrind and DRD report as a signal without the
 * lock held. */
static void *kvb_ev_timer_main(void *arg)
{
    struct kvb_events *ev = arg;
    for (;;) {
        int timeout = -1;
        pthread_mutex_lock(&ev->mu);
        ev->timer_idle = false;
        if (ev->stop) {
            pthread_mutex_unlock(&ev->mu);
            return NULL;
        }
        if (!ev->draining && ev->waiting) {
            uint64_t due = ev->oldest_ns + ev->delay_ns, now = kvb_ev_now_ns();
            if (now >= due) {
                kvb_ev_become_drainer_locked(ev);
                kvb_ev_drain_locked(ev);
                pthread_mutex_unlock(&ev->mu);
                continue;
            }
            uint64_t ms = (due - now + 999999) / 1000000;
            timeout = ms > INT32_MAX ? INT32_MAX : (int)ms;
        }
        /* no deadline (nothing waits, or another thread drains): whoever leaves a
         * batch waiting kicks us */
        if (timeout < 0)
            ev->timer_idle = true;
        pthread_mutex_unlock(&ev->mu);
        struct pollfd pfd = {.fd = ev->timer_fd, .events = POLLIN};
        if (poll(&pfd, 1, timeout) > 0) {
            uint64_t v;
            ssize_t r = read(ev->timer_fd, &v, sizeof v);
            (void)r;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* public                                                                   */
/* ------------------------------------------------------------------------ */

KVB_API int kvb_pool_events_flush(kvb_pool *pool)
{
    if (!pool)
        return -EINVAL;
    struct kvb_events *ev = kvb__pool_events(pool);
    if (ev)
        kvb__events_flush(ev);
    return 0;
}

KVB_API int kvb_pool_events_stats(kvb_pool *pool, kvb_event_stats *out)
{
    if (!pool || !out)
        return -EINVAL;
    struct kvb_events *ev = kvb__pool_events(pool);
    if (!ev)
        return -ENOENT;
    pthread_mutex_lock(&ev->mu);
    *out = ev->st;
    pthread_mutex_unlock(&ev->mu);
    return 0;
}
