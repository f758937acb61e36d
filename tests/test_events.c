/*
 * test_events.c - KV cache events (include/kvblock/events.h, lib/events.c).
 *
 * Every transition of DESIGN.md section 2.2 that changes the cached-or-active
 * set is driven through the public API and the events it emits are counted and
 * ordered; the ones that do not change it (duplicate, REJECT, resurrection,
 * PRIMARY -> INACTIVE) must emit nothing. Then: the emission policy, batching
 * by count and by time, flush, parents, tokens, medium, a sink that calls back
 * into the pool, records that arrive out of order (made deterministic with the
 * events hook), records lost for lack of memory, and the property the whole
 * module exists for: the event stream replayed into a set equals the pool's
 * cached-or-active hashes (kvb_pool_scan of every hash used), also after four
 * threads of random operations.
 *
 * The recording sink checks on every call that it is never entered
 * concurrently and that seq grows by exactly one per event. No timed
 * assertions: the time-batching test only waits (bounded) for a delivery.
 */
#include "testutil.h"
#include "testing.h"
#include "events_internal.h"
#include "support/park.h"
#include "support/rng.h"
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <time.h>

/* ---- a recording sink ----------------------------------------------------- */

typedef struct logged {
    kvb_event_type type;
    uint64_t seq;
    uint32_t n, off; /* hashes at log->h[off .. off + n) */
    bool has_parent;
    kvb_hash parent;
    bool has_tokens;
    uint32_t tok_off;
    uint32_t block_size;
    char medium[8];
} logged;

typedef struct evlog {
    pthread_mutex_t mu;
    logged *ev;
    size_t n, cap;
    kvb_hash *h;
    uint32_t *ids;
    size_t nh, hcap;
    uint32_t *tok;
    size_t ntok, tcap;
    uint64_t calls, last_seq;
    uint32_t seq_jumps; /* events whose seq was not last + 1 */
    atomic_int inside;
    atomic_int concurrent;
    /* optional re-entrant behaviour, run inside the sink after logging */
    void (*reenter)(struct evlog *, kvb_pool *, const kvb_event *, uint32_t);
    void *arg;
} evlog;

static void log_init(evlog *l)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
}

static void log_fini(evlog *l)
{
    free(l->ev);
    free(l->h);
    free(l->ids);
    free(l->tok);
    pthread_mutex_destroy(&l->mu);
}

static void *grow(void *p, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    p = realloc(p, c * sz);
    cr_assert_not_null(p);
    *cap = c;
    return p;
}

static void rec_sink(void *user, const kvb_pool *pool, const kvb_event *e, uint32_t n)
{
    evlog *l = user;
    if (atomic_exchange(&l->inside, 1))
        atomic_fetch_add(&l->concurrent, 1);
    pthread_mutex_lock(&l->mu);
    l->calls++;
    for (uint32_t i = 0; i < n; i++) {
        size_t hc = l->hcap;
        l->h = grow(l->h, &hc, l->nh + e[i].n, sizeof *l->h);
        hc = l->hcap;
        l->ids = grow(l->ids, &hc, l->nh + e[i].n, sizeof *l->ids);
        l->hcap = hc;
        l->ev = grow(l->ev, &l->cap, l->n + 1, sizeof *l->ev);
        if (e[i].seq != l->last_seq + 1)
            l->seq_jumps++;
        l->last_seq = e[i].seq;
        logged *g = &l->ev[l->n++];
        *g = (logged){.type = e[i].type,
                      .seq = e[i].seq,
                      .n = e[i].n,
                      .off = (uint32_t)l->nh,
                      .has_parent = e[i].has_parent,
                      .parent = e[i].parent,
                      .has_tokens = e[i].token_ids != NULL,
                      .tok_off = (uint32_t)l->ntok,
                      .block_size = e[i].block_size};
        if (e[i].medium)
            snprintf(g->medium, sizeof g->medium, "%s", e[i].medium);
        for (uint32_t j = 0; j < e[i].n; j++) {
            l->h[l->nh] = e[i].hashes[j];
            l->ids[l->nh++] = e[i].block_ids[j];
        }
        if (e[i].token_ids) {
            size_t nt = (size_t)e[i].n * e[i].block_size;
            l->tok = grow(l->tok, &l->tcap, l->ntok + nt, sizeof *l->tok);
            memcpy(l->tok + l->ntok, e[i].token_ids, nt * sizeof *l->tok);
            l->ntok += nt;
        }
    }
    pthread_mutex_unlock(&l->mu);
    atomic_store(&l->inside, 0);
    if (l->reenter)
        l->reenter(l, (kvb_pool *)pool, e, n);
}

static void ev_config(kvb_event_config *ec, evlog *l)
{
    kvb_event_config_init(ec);
    ec->sink = rec_sink;
    ec->user = l;
}

/* A pool of n blocks with events into l (ec: the event config to use, or NULL). */
static kvb_pool *ev_pool(uint32_t n, evlog *l, kvb_event_config *ec, kvb_dup_policy dup)
{
    kvb_event_config local;
    if (!ec) {
        ev_config(&local, l);
        ec = &local;
    }
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = n;
    cfg.dup_policy = dup;
    cfg.events = ec;
    return tu_pool_cfg(&cfg);
}

static void release_all(kvb_block *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(kvb_block_release(&b[i]), 0);
}

/* Expect event k of the log to be (type, n, hashes). */
static void expect_event(const evlog *l, size_t k, kvb_event_type type, uint32_t n,
                         const kvb_hash *hs)
{
    cr_assert_lt(k, l->n, "event %zu missing (only %zu logged)", k, l->n);
    const logged *g = &l->ev[k];
    cr_expect_eq(g->type, type, "event %zu: type %d, expected %d", k, g->type, type);
    cr_expect_eq(g->seq, k + 1, "event %zu: seq %llu", k, (unsigned long long)g->seq);
    cr_assert_eq(g->n, n, "event %zu: %u hashes, expected %u", k, g->n, n);
    for (uint32_t j = 0; j < n && hs; j++)
        cr_expect(kvb_hash_equal(l->h[g->off + j], hs[j]), "event %zu: hash %u differs", k, j);
}

static void expect_clean_log(const evlog *l)
{
    cr_expect_eq(atomic_load(&l->concurrent), 0, "the sink was entered concurrently");
    cr_expect_eq(l->seq_jumps, 0, "seq did not grow by exactly one per event");
}

/* ---- replaying the stream into a set ---------------------------------------- */

typedef struct hset {
    kvb_hash *h;
    size_t n, cap;
} hset;

static ssize_t hset_find(const hset *s, kvb_hash h)
{
    for (size_t i = 0; i < s->n; i++)
        if (kvb_hash_equal(s->h[i], h))
            return (ssize_t)i;
    return -1;
}

/* STORED adds (never a hash already there), REMOVED removes (only a hash there),
 * CLEARED empties. Returns the number of violations. */
static int replay(const evlog *l, hset *s)
{
    int bad = 0;
    s->n = 0;
    for (size_t k = 0; k < l->n; k++) {
        const logged *g = &l->ev[k];
        if (g->type == KVB_EVENT_CLEARED) {
            s->n = 0;
            continue;
        }
        for (uint32_t j = 0; j < g->n; j++) {
            kvb_hash h = l->h[g->off + j];
            ssize_t at = hset_find(s, h);
            if (g->type == KVB_EVENT_STORED) {
                if (at >= 0)
                    bad++;
                else {
                    s->h = grow(s->h, &s->cap, s->n + 1, sizeof *s->h);
                    s->h[s->n++] = h;
                }
            } else {
                if (at < 0)
                    bad++;
                else
                    s->h[at] = s->h[--s->n];
            }
        }
    }
    return bad;
}

/* The replayed set must equal the hashes of universe[] the pool holds (scan,
 * no touch), and hold nothing else. Releases what the scan took. */
static void expect_replay_matches_pool(evlog *l, kvb_pool *p, const kvb_hash *universe, uint32_t nu)
{
    hset s = {0};
    pthread_mutex_lock(&l->mu);
    int bad = replay(l, &s);
    pthread_mutex_unlock(&l->mu);
    cr_expect_eq(bad, 0, "%d STORED-while-present / REMOVED-while-absent in the stream", bad);
    kvb_block *b = calloc(nu, sizeof *b);
    bool *hit = calloc(nu, sizeof *hit);
    int hits = kvb_pool_scan(p, universe, nu, false, b, hit);
    cr_assert_geq(hits, 0);
    uint32_t mismatch = 0, in_set = 0;
    for (uint32_t i = 0; i < nu; i++) {
        bool present = hset_find(&s, universe[i]) >= 0;
        in_set += present;
        if (present != hit[i])
            mismatch++;
    }
    cr_expect_eq(mismatch, 0, "%u hashes differ between the replayed index and the pool", mismatch);
    cr_expect_eq(in_set, s.n, "the replayed index holds hashes the workload never used");
    cr_expect_eq((size_t)hits, s.n, "pool holds %d, replayed index %zu", hits, s.n);
    for (uint32_t i = 0; i < nu; i++)
        if (hit[i])
            cr_assert_eq(kvb_block_release(&b[i]), 0);
    free(b);
    free(hit);
    free(s.h);
}

/* ---- every transition --------------------------------------------------------- */

Test(events, register_new_primary_emits_one_stored_per_chain)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(16, &l, NULL, KVB_DUP_ALLOW);
    kvb_hash c[4];
    tu_chain(100, 4, c);
    kvb_block b[4];
    tu_put(p, c, 3, b);
    cr_assert_eq(l.n, 1, "one chain registered in one call: one event");
    expect_event(&l, 0, KVB_EVENT_STORED, 3, c);
    cr_expect_not(l.ev[0].has_parent, "position 0 has no parent");
    cr_expect_eq(l.ev[0].block_size, 16);
    for (uint32_t i = 0; i < 3; i++)
        cr_expect_eq(l.ids[i], b[i].id);
    tu_put(p, c + 3, 1, b + 3);
    cr_assert_eq(l.n, 2);
    expect_event(&l, 1, KVB_EVENT_STORED, 1, c + 3);
    cr_expect(l.ev[1].has_parent, "the parent was reported stored: resolved");
    cr_expect(kvb_hash_equal(l.ev[1].parent, c[2]));
    release_all(b, 4);
    cr_expect_eq(l.n, 2, "PRIMARY -> INACTIVE emits nothing");
    cr_expect_eq(l.calls, 2, "delivered at once, one call per pool call");
    kvb_event_stats st;
    cr_assert_eq(kvb_pool_events_stats(p, &st), 0);
    cr_expect_eq(st.records, 4);
    cr_expect_eq(st.events, 2);
    cr_expect_eq(st.last_seq, 2);
    cr_expect_eq(st.unresolved_parents, 0);
    tu_finish(p);
    cr_assert_eq(l.n, 3, "destroying a pool with a cached block emits CLEARED");
    expect_event(&l, 2, KVB_EVENT_CLEARED, 0, NULL);
    expect_clean_log(&l);
    log_fini(&l);
}

Test(events, unrelated_blocks_in_one_call_are_separate_events_in_one_delivery)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(8, &l, NULL, KVB_DUP_ALLOW);
    kvb_hash h[3] = {tu_hash(1), tu_hash(2), tu_hash(3)};
    kvb_block b[3];
    tu_put(p, h, 3, b);
    cr_expect_eq(l.calls, 1);
    cr_assert_eq(l.n, 3, "position-0 hashes are not a chain");
    for (int i = 0; i < 3; i++)
        expect_event(&l, (size_t)i, KVB_EVENT_STORED, 1, &h[i]);
    release_all(b, 3);
    tu_finish(p);
    expect_clean_log(&l);
    log_fini(&l);
}

Test(events, duplicate_and_resurrection_never_emit)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(8, &l, NULL, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(7);
    kvb_block a, d, m;
    tu_put(p, &h, 1, &a);
    tu_put(p, &h, 1, &d); /* ALLOW: a DUPLICATE */
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.duplicates, 1);
    cr_expect_eq(l.n, 1, "a duplicate never emits");
    cr_assert_eq(kvb_block_release(&d), 0);
    cr_assert_eq(kvb_block_release(&a), 0);
    cr_expect_eq(l.n, 1, "DUPLICATE -> RESET and PRIMARY -> INACTIVE emit nothing");
    cr_assert_eq(kvb_pool_match(p, &h, 1, &m), 1);
    cr_expect_eq(l.n, 1, "a resurrection emits nothing");
    kvb_block again;
    tu_put(p, &h, 1, &again); /* registering a held hash again: a duplicate */
    cr_expect_eq(l.n, 1);
    cr_assert_eq(kvb_block_release(&again), 0);
    cr_assert_eq(kvb_block_release(&m), 0);
    tu_finish(p);
    cr_expect_eq(l.n, 2);
    expect_event(&l, 0, KVB_EVENT_STORED, 1, &h);
    expect_event(&l, 1, KVB_EVENT_CLEARED, 0, NULL);
    expect_clean_log(&l);
    log_fini(&l);
}

Test(events, reject_never_emits)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(8, &l, NULL, KVB_DUP_REJECT);
    kvb_hash h = tu_hash(9);
    kvb_block a, r;
    tu_put(p, &h, 1, &a);
    tu_put(p, &h, 1, &r);
    cr_expect_eq(r.id, a.id, "REJECT hands out the primary");
    kvb_stats s;
    kvb_pool_stats(p, &s);
    cr_expect_eq(s.dedups, 1);
    cr_expect_eq(l.n, 1, "REJECT never emits");
    release_all(&a, 1);
    release_all(&r, 1);
    /* REJECT against a cached hash: resurrected, still nothing */
    tu_put(p, &h, 1, &r);
    cr_expect_eq(l.n, 1);
    release_all(&r, 1);
    tu_finish(p);
    expect_event(&l, 0, KVB_EVENT_STORED, 1, &h);
    expect_event(&l, 1, KVB_EVENT_CLEARED, 0, NULL);
    expect_clean_log(&l);
    log_fini(&l);
}

Test(events, eviction_by_allocate_emits_removed_in_eviction_order)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(4, &l, NULL, KVB_DUP_ALLOW);
    kvb_hash h[4] = {tu_hash(1), tu_hash(2), tu_hash(3), tu_hash(4)};
    kvb_block b[4];
    tu_put(p, h, 4, b);
    release_all(b, 4); /* LRU order: 1, 2, 3, 4 */
    cr_assert_eq(l.n, 4);
    kvb_mutable m[3];
    kvb_hash evicted[3];
    uint32_t ne = 0;
    cr_assert_eq(kvb_pool_allocate(p, 3, m, evicted, &ne), 0);
    cr_assert_eq(ne, 3);
    cr_assert_eq(l.n, 5, "three evictions in one call: one REMOVED event");
    expect_event(&l, 4, KVB_EVENT_REMOVED, 3, evicted);
    for (uint32_t i = 0; i < 3; i++)
        cr_expect_eq(l.ids[l.ev[4].off + i], m[i].id, "the evicted block ids");
    /* a failed call emits nothing */
    kvb_mutable more[2];
    cr_expect_eq(kvb_pool_allocate(p, 2, more, NULL, NULL), -ENOSPC);
    cr_expect_eq(l.n, 5);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(kvb_mutable_release(&m[i]), 0);
    cr_expect_eq(l.n, 5, "MUTABLE -> RESET emits nothing");
    tu_finish(p);
    expect_event(&l, 5, KVB_EVENT_CLEARED, 0, NULL);
    cr_expect_eq(l.n, 6);
    expect_clean_log(&l);
    log_fini(&l);
}

Test(events, reset_on_release_emits_removed)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(4, &l, NULL, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(5);
    kvb_block b, c;
    tu_put(p, &h, 1, &b);
    cr_assert_eq(kvb_block_clone(&b, &c), 0);
    cr_assert_eq(kvb_block_set_reset_on_release(&b, true), 0);
    cr_assert_eq(kvb_block_release(&b), 0);
    cr_expect_eq(l.n, 1, "not the last reference: nothing");
    cr_assert_eq(kvb_block_release(&c), 0);
    cr_assert_eq(l.n, 2);
    expect_event(&l, 1, KVB_EVENT_REMOVED, 1, &h);
    tu_finish(p);
    cr_expect_eq(l.n, 2, "the cache is empty: destroy emits no CLEARED");
    expect_clean_log(&l);
    log_fini(&l);

    /* the store-wide default */
    log_init(&l);
    kvb_event_config ec;
    ev_config(&ec, &l);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    cfg.reset_on_release = true;
    cfg.events = &ec;
    p = tu_pool_cfg(&cfg);
    kvb_hash hs[2];
    tu_chain(40, 2, hs);
    kvb_block bs[2];
    tu_put(p, hs, 2, bs);
    cr_assert_eq(kvb_block_release_n(bs, 2), 0);
    cr_assert_eq(l.n, 2);
    expect_event(&l, 0, KVB_EVENT_STORED, 2, hs);
    expect_event(&l, 1, KVB_EVENT_REMOVED, 2, hs);
    tu_finish(p);
    expect_clean_log(&l);
    log_fini(&l);
}

/* eager transition: a lookup finds a reset-on-release primary whose count is 0 */
Test(events, eager_reset_emits_removed_once)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(4, &l, NULL, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(6);
    kvb_block b;
    tu_put(p, &h, 1, &b);
    cr_assert_eq(kvb_block_set_reset_on_release(&b, true), 0);
    tu_park pk;
    cr_assert_eq(tu_park_last_release(&pk, b), 0);
    kvb_block got;
    cr_expect_eq(kvb_pool_match(p, &h, 1, &got), 0, "the lookup resets it and misses");
    cr_assert_eq(l.n, 2, "the lookup emitted REMOVED");
    expect_event(&l, 1, KVB_EVENT_REMOVED, 1, &h);
    cr_expect_eq(tu_unpark(&pk), 0);
    cr_expect_eq(l.n, 2, "the late release is a no-op: no second REMOVED");
    tu_finish(p);
    expect_clean_log(&l);
    log_fini(&l);
}

Test(events, reset_inactive_emits_one_cleared)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(8, &l, NULL, KVB_DUP_ALLOW);
    kvb_hash h[3];
    tu_chain(7, 3, h);
    kvb_block b[3];
    tu_put(p, h, 3, b);
    cr_expect_eq(kvb_pool_reset_inactive(p), 0, "every block is in use: nothing to drain");
    cr_expect_eq(l.n, 1, "a drain of nothing emits nothing");
    release_all(b, 3);
    cr_assert_eq(kvb_pool_reset_inactive(p), 3);
    cr_assert_eq(l.n, 2, "one CLEARED, no per-block REMOVED");
    expect_event(&l, 1, KVB_EVENT_CLEARED, 0, NULL);
    cr_assert_eq(kvb_pool_reset_inactive(p), 0);
    cr_expect_eq(l.n, 2, "draining an empty cache emits nothing");
    /* the parent index was cleared with it: a re-registered child finds no parent */
    kvb_block c;
    tu_put(p, h + 1, 1, &c);
    cr_assert_eq(l.n, 3);
    cr_expect_not(l.ev[2].has_parent);
    release_all(&c, 1);
    tu_finish(p);
    cr_expect_eq(l.n, 4);
    expect_event(&l, 3, KVB_EVENT_CLEARED, 0, NULL);
    expect_clean_log(&l);
    log_fini(&l);
}

Test(events, destroy_of_an_empty_pool_emits_nothing)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(8, &l, NULL, KVB_DUP_ALLOW);
    tu_finish(p);
    cr_expect_eq(l.n, 0);
    cr_expect_eq(l.calls, 0);
    log_fini(&l);
}

Test(events, config_validation)
{
    evlog l;
    log_init(&l);
    kvb_event_config ec;
    kvb_event_config_init(&ec);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    cfg.events = &ec;
    kvb_pool *p = NULL;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "no sink");
    ev_config(&ec, &l);
    ec.medium = "a-medium-name-much-longer-than-31-characters";
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "medium too long");
    ec.medium = "GPU";
    ec.emit = KVB_EVENT_EMIT_POW2;
    ec.pow2_min = 64;
    ec.pow2_max = 8;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "empty power-of-two range");
    ec.emit = (kvb_event_emit)7;
    cr_expect_eq(kvb_pool_create(&cfg, &p), -EINVAL, "unknown policy");
    cr_expect_null(p);
    kvb_event_stats st;
    p = tu_pool(4, KVB_EVICT_LRU);
    cr_expect_eq(kvb_pool_events_stats(p, &st), -ENOENT, "no sink configured");
    cr_expect_eq(kvb_pool_events_flush(p), 0);
    cr_expect_eq(kvb_pool_events_flush(NULL), -EINVAL);
    tu_finish(p);
    log_fini(&l);
}

/* ---- emission policy --------------------------------------------------------- */

Test(events, pow2_policy_emits_only_power_of_two_positions_in_range)
{
    evlog l;
    log_init(&l);
    kvb_event_config ec;
    ev_config(&ec, &l);
    ec.emit = KVB_EVENT_EMIT_POW2;
    ec.pow2_min = 2;
    ec.pow2_max = 8;
    kvb_pool *p = ev_pool(32, &l, &ec, KVB_DUP_ALLOW);
    kvb_hash c[12];
    tu_chain(500, 12, c);
    kvb_block b[12];
    tu_put(p, c, 12, b);
    cr_assert_eq(l.n, 3, "positions 2, 4 and 8 only");
    expect_event(&l, 0, KVB_EVENT_STORED, 1, &c[2]);
    expect_event(&l, 1, KVB_EVENT_STORED, 1, &c[4]);
    expect_event(&l, 2, KVB_EVENT_STORED, 1, &c[8]);
    for (int i = 0; i < 12; i++)
        cr_expect_eq(kvb_block_set_reset_on_release(&b[i], true), 0);
    release_all(b, 12);
    cr_assert_eq(l.n, 6, "REMOVED sampled the same way");
    for (int i = 3; i < 6; i++)
        cr_expect_eq(l.ev[i].type, KVB_EVENT_REMOVED);
    kvb_event_stats st;
    kvb_pool_events_stats(p, &st);
    cr_expect_eq(st.filtered, 18);
    cr_expect_eq(st.records, 24);
    tu_finish(p);
    expect_clean_log(&l);
    log_fini(&l);

    /* default range: Dynamo's [16, 65536] */
    log_init(&l);
    ev_config(&ec, &l);
    ec.emit = KVB_EVENT_EMIT_POW2;
    p = ev_pool(64, &l, &ec, KVB_DUP_ALLOW);
    kvb_hash d[40];
    tu_chain(900, 40, d);
    kvb_block e[40];
    tu_put(p, d, 40, e);
    cr_assert_eq(l.n, 2, "positions 16 and 32");
    expect_event(&l, 0, KVB_EVENT_STORED, 1, &d[16]);
    expect_event(&l, 1, KVB_EVENT_STORED, 1, &d[32]);
    release_all(e, 40);
    cr_assert_eq(kvb_pool_reset_inactive(p), 40);
    expect_event(&l, 2, KVB_EVENT_CLEARED, 0, NULL);
    tu_finish(p);
    expect_clean_log(&l);
    log_fini(&l);
}

/* ---- batching ----------------------------------------------------------------- */

Test(events, batch_by_count_and_flush)
{
    evlog l;
    log_init(&l);
    kvb_event_config ec;
    ev_config(&ec, &l);
    ec.batch_max = 3;
    kvb_pool *p = ev_pool(8, &l, &ec, KVB_DUP_ALLOW);
    kvb_block b[5];
    for (int i = 0; i < 2; i++) {
        kvb_hash h = tu_hash((uint64_t)i);
        tu_put(p, &h, 1, &b[i]);
    }
    cr_expect_eq(l.calls, 0, "two events wait for a third");
    kvb_event_stats st;
    kvb_pool_events_stats(p, &st);
    cr_expect_eq(st.waiting, 2);
    kvb_hash h2 = tu_hash(2);
    tu_put(p, &h2, 1, &b[2]);
    cr_expect_eq(l.calls, 1, "the third completes the batch");
    cr_expect_eq(l.n, 3);
    kvb_hash h3 = tu_hash(3);
    tu_put(p, &h3, 1, &b[3]);
    cr_expect_eq(l.calls, 1);
    cr_assert_eq(kvb_pool_events_flush(p), 0);
    cr_expect_eq(l.calls, 2, "flush delivers what waits");
    cr_expect_eq(l.n, 4);
    kvb_pool_events_stats(p, &st);
    cr_expect_eq(st.waiting, 0);
    cr_expect_eq(st.deliveries, 2);
    /* a chain registered one block per call is coalesced while it waits */
    kvb_hash c[2];
    tu_chain(77, 2, c);
    tu_put(p, &c[0], 1, &b[4]);
    kvb_block c1;
    tu_put(p, &c[1], 1, &c1);
    cr_expect_eq(l.calls, 2);
    cr_assert_eq(kvb_pool_events_flush(p), 0);
    cr_assert_eq(l.n, 5, "one STORED event for the chain");
    expect_event(&l, 4, KVB_EVENT_STORED, 2, c);
    release_all(b, 5);
    release_all(&c1, 1);
    tu_finish(p);
    cr_expect_eq(l.n, 6, "destroy flushes its CLEARED");
    expect_clean_log(&l);
    log_fini(&l);
}

static void wait_for_calls(evlog *l, uint64_t n)
{
    /* Bounded wait (10 s) for the timer thread: not a timed assertion, the
     * delivery must happen eventually and the bound only avoids a hang. */
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&l->mu);
        uint64_t c = l->calls;
        pthread_mutex_unlock(&l->mu);
        if (c >= n)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

Test(events, batch_by_time_is_delivered_by_the_timer)
{
    evlog l;
    log_init(&l);
    kvb_event_config ec;
    ev_config(&ec, &l);
    ec.batch_max = 1000;
    ec.batch_delay_ms = 1;
    kvb_pool *p = ev_pool(8, &l, &ec, KVB_DUP_ALLOW);
    kvb_hash h = tu_hash(1);
    kvb_block b;
    tu_put(p, &h, 1, &b);
    wait_for_calls(&l, 1);
    pthread_mutex_lock(&l.mu);
    cr_expect_eq(l.calls, 1, "the timer delivered the lone event");
    cr_expect_eq(l.n, 1);
    pthread_mutex_unlock(&l.mu);
    release_all(&b, 1);
    kvb_hash h2 = tu_hash(2);
    tu_put(p, &h2, 1, &b);
    wait_for_calls(&l, 2);
    pthread_mutex_lock(&l.mu);
    cr_expect_eq(l.n, 2);
    pthread_mutex_unlock(&l.mu);
    release_all(&b, 1);
    tu_finish(p);
    expect_event(&l, 2, KVB_EVENT_CLEARED, 0, NULL);
    expect_clean_log(&l);
    log_fini(&l);
}

/* ---- tokens and medium ------------------------------------------------------- */

static bool tokens_cb(void *user, const kvb_pool *pool, kvb_hash h, uint32_t id, uint32_t *out)
{
    (void)user;
    uint32_t bs = kvb_pool_block_size(pool);
    if (kvb_hash_position(h) == 2)
        return false; /* unknown for this one */
    for (uint32_t t = 0; t < bs; t++)
        out[t] = (uint32_t)kvb_hash_current(h) * 1000u + t;
    (void)id;
    return true;
}

Test(events, tokens_and_medium)
{
    evlog l;
    log_init(&l);
    kvb_event_config ec;
    ev_config(&ec, &l);
    ec.tokens = tokens_cb;
    char medium[8] = "CPU";
    ec.medium = medium;
    kvb_pool *p = ev_pool(8, &l, &ec, KVB_DUP_ALLOW);
    medium[0] = 'X'; /* copied at create */
    kvb_hash c[4];
    tu_chain(10, 4, c);
    kvb_block b[4];
    tu_put(p, c, 4, b);
    cr_assert_eq(l.n, 3, "tokens known for 0, 1 and 3, not 2: the chain splits twice");
    expect_event(&l, 0, KVB_EVENT_STORED, 2, c);
    expect_event(&l, 1, KVB_EVENT_STORED, 1, c + 2);
    expect_event(&l, 2, KVB_EVENT_STORED, 1, c + 3);
    cr_expect(l.ev[0].has_tokens);
    cr_expect_not(l.ev[1].has_tokens);
    cr_expect(l.ev[2].has_tokens);
    cr_expect(l.ev[1].has_parent && kvb_hash_equal(l.ev[1].parent, c[1]));
    cr_expect(l.ev[2].has_parent && kvb_hash_equal(l.ev[2].parent, c[2]));
    for (uint32_t t = 0; t < 32; t++) {
        uint32_t blk = t / 16;
        cr_expect_eq(l.tok[l.ev[0].tok_off + t],
                     (uint32_t)kvb_hash_current(c[blk]) * 1000u + t % 16);
    }
    cr_expect_eq(l.tok[l.ev[2].tok_off], (uint32_t)kvb_hash_current(c[3]) * 1000u);
    for (int i = 0; i < 3; i++)
        cr_expect_str_eq(l.ev[i].medium, "CPU");
    release_all(b, 4);
    tu_finish(p);
    expect_clean_log(&l);
    log_fini(&l);
}

Test(events, unresolved_parent_when_the_parent_is_gone)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(2, &l, NULL, KVB_DUP_ALLOW);
    kvb_hash c[3];
    tu_chain(300, 3, c);
    kvb_block b[2];
    tu_put(p, c, 2, b);
    /* c[1] leaves first, so LRU evicts it first */
    cr_assert_eq(kvb_block_release(&b[1]), 0);
    cr_assert_eq(kvb_block_release(&b[0]), 0);
    kvb_block g;
    tu_put(p, c + 2, 1, &g); /* evicts c[1], then stores its child */
    cr_assert_eq(l.n, 3);
    expect_event(&l, 1, KVB_EVENT_REMOVED, 1, &c[1]);
    expect_event(&l, 2, KVB_EVENT_STORED, 1, &c[2]);
    cr_expect_not(l.ev[2].has_parent, "the parent was removed before its child was stored");
    kvb_event_stats st;
    kvb_pool_events_stats(p, &st);
    cr_expect_eq(st.unresolved_parents, 1);
    release_all(&g, 1);
    tu_finish(p);
    expect_clean_log(&l);
    log_fini(&l);
}

Test(events, ambiguous_parents_are_reported_unknown_not_guessed)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(8, &l, NULL, KVB_DUP_ALLOW);
    /* two stored hashes at position 0 whose low 54 bits agree */
    kvb_hash a, b, c1, c2;
    kvb_hash_make(5, 0, false, 0, &a);
    kvb_hash_make(5 | (1ull << 60), 0, false, 0, &b);
    kvb_hash_make(7, 5, true, 1, &c1); /* child of a, but b fits its fragment too */
    kvb_hash_make(8, 5, true, 1, &c2);
    kvb_block ba, bb, bc1, bc2;
    tu_put(p, &a, 1, &ba);
    tu_put(p, &b, 1, &bb);
    tu_put(p, &c1, 1, &bc1);
    cr_assert_eq(l.n, 3);
    cr_expect_not(l.ev[2].has_parent, "two candidates: unknown");
    cr_assert_eq(kvb_block_set_reset_on_release(&bb, true), 0);
    cr_assert_eq(kvb_block_release(&bb), 0); /* REMOVED b: one candidate left */
    tu_put(p, &c2, 1, &bc2);
    cr_assert_eq(l.n, 5);
    cr_expect(l.ev[4].has_parent, "a single candidate: resolved");
    cr_expect(kvb_hash_equal(l.ev[4].parent, a));
    kvb_event_stats st;
    kvb_pool_events_stats(p, &st);
    cr_expect_eq(st.unresolved_parents, 1);
    release_all(&ba, 1);
    release_all(&bc1, 1);
    release_all(&bc2, 1);
    tu_finish(p);
    expect_clean_log(&l);
    log_fini(&l);
}

/* ---- a sink that calls back into the pool ------------------------------------ */

static void reenter_evict(evlog *l, kvb_pool *p, const kvb_event *e, uint32_t n)
{
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    cr_assert_eq(kvb_pool_events_flush(p), 0, "flush from the sink only asks for it");
    if (l->arg || e[0].type != KVB_EVENT_STORED)
        return;
    l->arg = l; /* once */
    /* evict half the pool from inside the sink: REMOVED records while delivering */
    uint32_t k = kvb_pool_available(p);
    kvb_mutable *m = calloc(k, sizeof *m);
    cr_assert_eq(kvb_pool_allocate(p, k, m, NULL, NULL), 0);
    for (uint32_t i = 0; i < k; i++)
        cr_assert_eq(kvb_mutable_release(&m[i]), 0);
    free(m);
    (void)n;
}

Test(events, sink_may_call_back_into_the_pool)
{
    evlog l;
    log_init(&l);
    kvb_pool *p = ev_pool(3000, &l, NULL, KVB_DUP_ALLOW);
    /* 2500 cached blocks, registered without events reaching the re-entrant code */
    kvb_hash *h = malloc(2501 * sizeof *h);
    for (uint32_t i = 0; i < 2500; i++)
        h[i] = tu_hash(10000 + i);
    h[2500] = tu_hash(1);
    for (uint32_t i = 0; i < 2500; i += 50) {
        kvb_block b[50];
        tu_put(p, h + i, 50, b);
        release_all(b, 50);
    }
    uint32_t before = (uint32_t)l.n;
    l.reenter = reenter_evict;
    kvb_hash x = h[2500];
    kvb_block bx;
    tu_put(p, &x, 1, &bx); /* STORED -> sink -> allocate 2999 (2500 evictions) */
    cr_expect_eq(l.n, before + 2, "the STORED, then one REMOVED event for the nested evictions");
    expect_event(&l, before, KVB_EVENT_STORED, 1, &x);
    cr_assert_eq(l.ev[before + 1].type, KVB_EVENT_REMOVED);
    cr_expect_eq(l.ev[before + 1].n, 2500, "2500 records went through the grown ring");
    kvb_event_stats st;
    kvb_pool_events_stats(p, &st);
    cr_expect_eq(st.lost, 0);
    release_all(&bx, 1);
    l.reenter = NULL;
    expect_replay_matches_pool(&l, p, h, 2501);
    tu_finish(p);
    expect_clean_log(&l);
    free(h);
    log_fini(&l);
}

/* An allocator that fails the reorder ring's first growth (1024 -> 2048 records
 * of 32 bytes): the nested records of a sink cannot wait, so they are lost. */
static _Atomic int fail_ring_growth;
static void *fail_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (size == 2048 * sizeof(struct kvb_cb_ev) && atomic_load(&fail_ring_growth))
        return NULL;
    return malloc(size);
}
static void plain_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

Test(events, records_lost_for_lack_of_memory_leave_one_seq_jump)
{
    evlog l;
    log_init(&l);
    kvb_event_config ec;
    ev_config(&ec, &l);
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 3000;
    cfg.events = &ec;
    cfg.allocator = (kvb_allocator){.alloc = fail_alloc, .free = plain_free};
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_hash *h = malloc(2500 * sizeof *h);
    for (uint32_t i = 0; i < 2500; i++)
        h[i] = tu_hash(20000 + i);
    for (uint32_t i = 0; i < 2500; i += 50) {
        kvb_block b[50];
        tu_put(p, h + i, 50, b);
        release_all(b, 50);
    }
    size_t before = l.n;
    atomic_store(&fail_ring_growth, 1);
    l.reenter = reenter_evict;
    kvb_hash x = tu_hash(2);
    kvb_block bx;
    tu_put(p, &x, 1, &bx);
    l.reenter = NULL;
    atomic_store(&fail_ring_growth, 0);
    kvb_event_stats st;
    kvb_pool_events_stats(p, &st);
    cr_expect_gt(st.lost, 0, "some nested records could not be kept");
    cr_expect_lt(st.lost, 2500);
    cr_assert_eq(l.n, before + 2);
    cr_expect_eq(l.ev[before + 1].n + st.lost, 2500, "kept + lost = the nested evictions");
    cr_expect_eq(l.seq_jumps, 0, "no jump yet: the loss is announced by the next event");
    release_all(&bx, 1);
    kvb_hash y = tu_hash(3);
    tu_put(p, &y, 1, &bx);
    cr_assert_eq(l.n, before + 3);
    cr_expect_eq(l.ev[before + 2].seq, l.ev[before + 1].seq + 2, "the seq skips one number");
    cr_expect_eq(l.seq_jumps, 1);
    release_all(&bx, 1);
    tu_finish(p);
    cr_expect_eq(atomic_load(&l.concurrent), 0);
    free(h);
    log_fini(&l);
}

/* ---- out-of-order arrival, made deterministic -------------------------------- */

struct order_ctx {
    sem_t parked, go;
    kvb_pool *p;
    kvb_hash h;
    kvb_block b;
};

static void order_hook(void *arg, kvb_pool *pool, uint64_t first_seq)
{
    struct order_ctx *o = arg;
    if (pool == o->p && first_seq == 1) {
        sem_post(&o->parked);
        sem_wait(&o->go);
    }
}

static void *order_thread(void *arg)
{
    struct order_ctx *o = arg;
    tu_put(o->p, &o->h, 1, &o->b);
    return NULL;
}

Test(events, a_later_record_waits_for_an_earlier_one_in_flight)
{
    evlog l;
    log_init(&l);
    struct order_ctx o;
    sem_init(&o.parked, 0, 0);
    sem_init(&o.go, 0, 0);
    o.p = ev_pool(8, &l, NULL, KVB_DUP_ALLOW);
    o.h = tu_hash(1);
    kvb__test_set_events_hook(order_hook, &o);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, order_thread, &o), 0);
    sem_wait(&o.parked); /* record 1 is numbered, its thread parked before delivery */
    kvb_hash h2 = tu_hash(2);
    kvb_block b2;
    tu_put(o.p, &h2, 1, &b2); /* record 2: handed over, must wait for 1 */
    cr_expect_eq(l.calls, 0, "record 2 is not delivered before record 1");
    kvb_event_stats st;
    kvb_pool_events_stats(o.p, &st);
    cr_expect_eq(st.records, 1);
    sem_post(&o.go);
    pthread_join(t, NULL);
    kvb__test_set_events_hook(NULL, NULL);
    cr_assert_eq(l.n, 2);
    expect_event(&l, 0, KVB_EVENT_STORED, 1, &o.h);
    expect_event(&l, 1, KVB_EVENT_STORED, 1, &h2);
    cr_expect_eq(l.calls, 1, "the thread that filled the gap delivered both at once");
    release_all(&o.b, 1);
    release_all(&b2, 1);
    tu_finish(o.p);
    expect_clean_log(&l);
    sem_destroy(&o.parked);
    sem_destroy(&o.go);
    log_fini(&l);
}

/* ---- the replayed stream equals the pool, under four threads ----------------- */

#define MT_CHAINS 24
#define MT_DEPTH  8
#define MT_U      (MT_CHAINS * MT_DEPTH)

struct mt_ctx {
    kvb_pool *p;
    const kvb_hash *u; /* universe: chain c, position j at u[c * MT_DEPTH + j] */
    uint64_t seed;
    int ops;
};

static void *mt_worker(void *arg)
{
    struct mt_ctx *c = arg;
    uint64_t s = c->seed;
    kvb_block b[MT_DEPTH], extra[MT_DEPTH];
    kvb_mutable m[MT_DEPTH];
    kvb_complete cp[MT_DEPTH];
    bool hit[MT_DEPTH];
    for (int op = 0; op < c->ops; op++) {
        uint32_t r = (uint32_t)tu_xorshift64(&s);
        const kvb_hash *ch = c->u + (r % MT_CHAINS) * MT_DEPTH;
        uint32_t len = 1 + (r >> 8) % MT_DEPTH;
        switch ((r >> 16) % 8) {
        case 0: { /* scan, sometimes touching, then release */
            int k = kvb_pool_scan(c->p, ch, len, (r >> 20) & 1, extra, hit);
            cr_assert_geq(k, 0);
            for (uint32_t i = 0; i < len; i++)
                if (hit[i])
                    cr_assert_eq(kvb_block_release(&extra[i]), 0);
            break;
        }
        case 1: /* drain the cache when nothing is held (usually -EBUSY) */
            (void)kvb_pool_reset_inactive(c->p);
            break;
        default: { /* a request: match, allocate the rest, register, release */
            int k = kvb_pool_match(c->p, ch, len, b);
            cr_assert_geq(k, 0);
            uint32_t need = len - (uint32_t)k;
            if (need && kvb_pool_allocate(c->p, need, m, NULL, NULL) == 0) {
                for (uint32_t i = 0; i < need; i++)
                    cr_assert_eq(kvb_mutable_stage(&m[i], ch[(uint32_t)k + i], &cp[i]), 0);
                cr_assert_eq(kvb_pool_register(c->p, cp, need, b + k), 0);
                k = (int)len;
            }
            for (int i = 0; i < k; i++)
                if (((r >> 24) & 7) == 0)
                    (void)kvb_block_set_reset_on_release(&b[i], true);
            if ((r >> 27) & 1) {
                for (int i = k - 1; i >= 0; i--)
                    cr_assert_eq(kvb_block_release(&b[i]), 0);
            } else {
                cr_assert_eq(kvb_block_release_n(b, (uint32_t)k), 0);
            }
            sched_yield();
        }
        }
    }
    return NULL;
}

static void reenter_scan(evlog *l, kvb_pool *p, const kvb_event *e, uint32_t n)
{
    (void)l;
    /* look one hash of the batch up and let it go again (may resurrect it, may
     * find it reset; events it causes are delivered after this sink returns) */
    for (uint32_t i = 0; i < n; i++) {
        if (e[i].n == 0)
            continue;
        kvb_block b;
        bool hit;
        int k = kvb_pool_scan(p, &e[i].hashes[0], 1, false, &b, &hit);
        if (k == 1)
            kvb_block_release(&b);
        return;
    }
}

static void mt_run(kvb_event_config *ec, evlog *l, uint32_t blocks, uint64_t seed)
{
    kvb_hash u[MT_U];
    for (uint32_t c = 0; c < MT_CHAINS; c++)
        tu_chain(1000 * (c + 1), MT_DEPTH, u + c * MT_DEPTH);
    kvb_pool *p = ev_pool(blocks, l, ec, KVB_DUP_ALLOW);
    struct mt_ctx ctx[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        ctx[i] =
            (struct mt_ctx){.p = p, .u = u, .seed = seed * 7919 + (uint64_t)i + 1, .ops = 20000};
        cr_assert_eq(pthread_create(&t[i], NULL, mt_worker, &ctx[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    l->reenter = NULL;
    cr_assert_eq(kvb_pool_events_flush(p), 0);
    kvb_event_stats st;
    cr_assert_eq(kvb_pool_events_stats(p, &st), 0);
    cr_expect_eq(st.lost, 0);
    cr_expect_eq(st.waiting, 0, "flushed");
    cr_expect_eq(st.last_seq, l->n);
    cr_expect_eq(st.events, l->n);
    cr_expect_gt(l->n, 100, "the workload produced events (%zu)", l->n);
    cr_assert_eq(kvb_pool_check(p), 0);
    expect_replay_matches_pool(l, p, u, MT_U);
    cr_assert_eq(kvb_pool_check(p), 0);
    kvb_stats s;
    kvb_pool_stats(p, &s);
    size_t n_before = l->n;
    tu_finish(p);
    cr_expect_eq(l->n, n_before + (s.inactive ? 1 : 0), "destroy: CLEARED iff cached content");
    expect_clean_log(l);
}

Test(events, replayed_index_equals_pool_under_four_threads, .timeout = 120)
{
    evlog l;
    log_init(&l);
    kvb_event_config ec;
    ev_config(&ec, &l);
    mt_run(&ec, &l, 48, 1);
    log_fini(&l);
}

Test(events, replayed_index_equals_pool_with_batching_and_timer, .timeout = 120)
{
    evlog l;
    log_init(&l);
    kvb_event_config ec;
    ev_config(&ec, &l);
    ec.batch_max = 7;
    ec.batch_delay_ms = 1;
    ec.max_hashes = 16;
    mt_run(&ec, &l, 48, 2);
    log_fini(&l);
}

Test(events, replayed_index_equals_pool_with_a_reentrant_sink, .timeout = 120)
{
    evlog l;
    log_init(&l);
    l.reenter = reenter_scan;
    kvb_event_config ec;
    ev_config(&ec, &l);
    ec.batch_max = 4;
    mt_run(&ec, &l, 40, 3);
    log_fini(&l);
}
