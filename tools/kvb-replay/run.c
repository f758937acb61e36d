/*
 * tools/kvb-replay/run.c - one replay of a trace through a fresh kvblock pool:
 * the prefix replay of shared/data/README.md, request by request in trace
 * order (match, fill the missed blocks, release last block first; the request
 * lifecycle of tools/common/request.c, shared with kvb-fleet, or one
 * kvb_pool_acquire where that gives the same results: --api), with the run's
 * options: --window (the last W requests hold their blocks; a request that
 * cannot allocate releases the oldest held one early and retries), --lookahead
 * (hints W requests ahead, withdrawn once matched), --retention and --ttl
 * (priorities on the trace's clock), --publish (events). Only the replay loop
 * is timed; the pool is checked (kvb_pool_check, counters) before it is
 * destroyed.
 */
#include "kvb-replay/replay.h"

#include "common/optimal.h"
#include "common/request.h"

#include <math.h>

kvb_publisher *replay_pub;
kvb_event_config replay_events;
uint32_t replay_hint_capacity;
replay_retention_opts replay_ret;
uint32_t replay_ttl_ms;
int replay_demote;
const uint32_t *replay_next_req;
bool replay_api_calls;
static uint64_t replay_now_ms;  /* the current request's timestamp (or index) */
#define REPLAY_BLOCK_TOKENS 512 /* tokens per Mooncake block (shared/data/README.md) */
/* Requests per progress report (see kvbt_progress_add: one branch per chunk when the
 * bar is off, one clock read when it is on; nothing per block). */
#define REPLAY_CHUNK 2048

static uint64_t replay_clock(void *ctx)
{
    (void)ctx;
    return replay_now_ms;
}

static void replay_pool_config(kvb_pool_config *cfg, const replay_policy *pol, uint32_t capacity)
{
    kvb_pool_config_init(cfg);
    cfg->block_count = capacity;
    cfg->evict = pol->evict;
    cfg->name = "replay";
    cfg->hint_capacity = replay_hint_capacity;
    if (replay_ret.on || replay_ttl_ms || replay_demote) {
        cfg->priorities = true;
        cfg->clock = (kvb_clock){.now_ms = replay_clock};
    }
    if (replay_pub)
        cfg->events = &replay_events;
}

int replay_probe(const replay_policy *pol)
{
    kvb_pool_config cfg;
    kvb_pool *pool;
    replay_pool_config(&cfg, pol, 1);
    int rc = kvb_pool_create(&cfg, &pool);
    if (rc < 0)
        return rc;
    rc = kvb_pool_destroy(pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s", kvb_strerror(rc));
    return 0;
}

/* Where request r comes from, for messages: "request 17 (line 17)". */
const char *replay_where(const kvbt_trace *t, uint64_t r, char *buf, size_t cap)
{
    if (t->line)
        snprintf(buf, cap, "request %llu (%s line %llu)", (unsigned long long)r + 1, t->name,
                 (unsigned long long)t->line[r]);
    else
        snprintf(buf, cap, "request %llu of %s", (unsigned long long)r + 1, t->name);
    return buf;
}

static KVBT_NORETURN void replay_lib_fail(const kvbt_trace *t, uint64_t r, const char *call, int rc,
                                          const char *policy, uint32_t capacity)
{
    char where[256];
    kvbt_die(prog, "%s failed on %s, policy %s, capacity %u: %s", call,
             replay_where(t, r, where, sizeof where), policy, capacity, kvb_strerror(rc));
}

/* --lookahead: request r's hashes, delta +1 when it comes within reach, -1 once it
 * has matched its prefix. */
static void replay_hint(kvb_pool *pool, const kvbt_trace *t, const kvb_hash *hashes, uint64_t r,
                        int32_t delta, const replay_policy *pol, uint32_t capacity)
{
    int rc = kvb_pool_hint(pool, hashes + t->off[r], (uint32_t)(t->off[r + 1] - t->off[r]), delta);
    if (rc < 0)
        replay_lib_fail(t, r, "kvb_pool_hint", rc, pol->name, capacity);
}

/* --retention: a hit refreshes the priority of the request's first blocks */
static void replay_refresh(kvb_pool *pool, const kvbt_trace *t, uint64_t r, const kvb_hash *h,
                           uint32_t n, const replay_policy *pol, uint32_t capacity)
{
    int rc = kvb_pool_set_priority(pool, h, n, replay_ret.priority, replay_ret.duration_ms);
    if (rc < 0)
        replay_lib_fail(t, r, "kvb_pool_set_priority", rc, pol->name, capacity);
}

/* --ttl: a finished request's blocks stay for the TTL (a paused session's pin) */
static void replay_pin(kvb_pool *pool, const kvbt_trace *t, uint64_t r, const kvb_hash *h,
                       uint32_t n, const replay_policy *pol, uint32_t capacity)
{
    int rc = kvb_pool_set_priority(pool, h, n, KVB_PRIORITY_MAX, replay_ttl_ms);
    if (rc < 0)
        replay_lib_fail(t, r, "kvb_pool_set_priority", rc, pol->name, capacity);
}

/* Tokens of request r that were not found cached with k prefix hits (the time to
 * first token grows with them): its input length minus the cached blocks' tokens,
 * or, for traces without token counts, its uncached blocks. */
static inline uint32_t replay_uncached(const kvbt_trace *t, uint64_t r, uint32_t n, uint32_t k)
{
    if (!t->input_tokens)
        return n - k;
    uint64_t cached = (uint64_t)k * REPLAY_BLOCK_TOKENS;
    return t->input_tokens[r] > cached ? (uint32_t)(t->input_tokens[r] - cached) : 0;
}

/* --retention: the first K blocks of a request at priority P (kvb_retention: a token
 * range of the pool's block size, 16 tokens, per trace block) */
static const kvb_retention *replay_retention(kvb_retention *r, kvb_retention_range *g)
{
    if (!replay_ret.on)
        return NULL;
    kvb_retention_init(r);
    *g = (kvb_retention_range){.token_start = 0,
                               .token_end = replay_ret.blocks * 16u,
                               .priority = replay_ret.priority,
                               .duration_ms = replay_ret.duration_ms};
    r->ranges = g;
    r->n_ranges = 1;
    return r;
}

static int replay_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* p50, p90, p99 of the per-request uncached tokens (nearest rank) */
static void replay_percentiles(const kvbt_trace *t, replay_scratch *s, replay_cell *res)
{
    uint64_t n = t->n_requests;
    if (n == 0)
        return;
    memcpy(s->sorted, s->uncached, (size_t)n * sizeof *s->sorted);
    qsort(s->sorted, (size_t)n, sizeof *s->sorted, replay_cmp_u32);
    const double q[3] = {0.50, 0.90, 0.99};
    for (int i = 0; i < 3; i++) {
        uint64_t rank = (uint64_t)ceil(q[i] * (double)n);
        res->uncached[i] = s->sorted[rank ? rank - 1 : 0];
    }
    res->has_uncached = true;
}

/* The hint capacity --lookahead W needs: at most W + 1 requests are hinted at once
 * (the one being served and the next W), each hash of each a (hash, call) pair. */
uint32_t replay_lookahead_capacity(const kvbt_trace *t, uint32_t lookahead)
{
    uint64_t best = 0, span = (uint64_t)lookahead + 1;
    for (uint64_t r = 0; r < t->n_requests; r++) {
        uint64_t end = r + span < t->n_requests ? r + span : t->n_requests;
        uint64_t refs = t->off[end] - t->off[r];
        best = refs > best ? refs : best;
        if (end == t->n_requests)
            break;
    }
    if (best > (1u << 30))
        kvbt_die(prog,
                 "--lookahead %u: %llu hinted blocks at once, more than a pool's hint "
                 "capacity (2^30)",
                 lookahead, (unsigned long long)best);
    return best ? (uint32_t)best : 1;
}
/* The state of one replay: the pool and the options it runs with, the window's
 * ring of held requests, the counts. */
typedef struct replay_run {
    kvb_pool *pool;
    const kvbt_trace *t;
    const kvb_hash *hashes;
    const replay_policy *pol;
    uint32_t capacity, window, lookahead;
    replay_scratch *s;
    const kvb_retention *ret;
    bool timed;   /* requests set the pool's clock */
    bool acquire; /* kvb_pool_acquire serves a request (see --api) */
    kvbt_request_fill_args fill;
    /* window W > 0: requests [head, head + count) (mod ring = W + 1) hold their
     * blocks; slot i keeps slot_n[i] handles at slots + i * maxn, already in
     * release order */
    uint32_t ring, head, count;
    uint64_t *slot_req; /* the request in each slot, for messages */
    uint64_t hits;
} replay_run;

/* --demote: request r's k hits back at the default priority (they may have been
 * demoted), and its new blocks at priority 0 when no request of the next W
 * (unhinted) or none at all (one-off) uses them again. */
static void replay_demote_request(replay_run *x, uint64_t r, const kvb_hash *h, uint32_t n,
                                  uint32_t k)
{
    const uint32_t *nx = replay_next_req + x->t->off[r];
    uint64_t reach = replay_demote == REPLAY_DEMOTE_UNHINTED ? r + x->lookahead : UINT64_MAX;
    int rc = k ? kvb_pool_set_priority(x->pool, h, k, KVB_PRIORITY_DEFAULT, 0) : 0;
    for (uint32_t i = k; i < n && rc >= 0; i++)
        if (nx[i] == KVBT_ORACLE_NEVER || nx[i] > reach)
            rc = kvb_pool_set_priority(x->pool, h + i, 1, KVB_PRIORITY_MIN, 0);
    if (rc < 0)
        replay_lib_fail(x->t, r, "kvb_pool_set_priority", rc, x->pol->name, x->capacity);
}

/* Release the oldest held request of the window (its handles are in release order). */
static void replay_release_oldest(replay_run *x)
{
    replay_scratch *s = x->s;
    uint32_t h = x->head;
    int rc = kvb_block_release_n(s->slots + h * s->maxn, s->slot_n[h]);
    if (rc < 0)
        replay_lib_fail(x->t, x->slot_req[h], "kvb_block_release_n", rc, x->pol->name, x->capacity);
    x->head = h + 1 == x->ring ? 0 : h + 1;
    x->count--;
}

/* make_room of the request lifecycle: too much held, the oldest goes early. */
static bool replay_make_room(void *ctx)
{
    replay_run *x = ctx;
    if (x->count == 0)
        return false;
    replay_release_oldest(x);
    return true;
}

/* Serve request r: match its prefix, fill the rest (one kvb_pool_acquire, or the
 * calls), then release it (window 0) or keep it in the ring, releasing the oldest
 * one once more than W are held. Never inlined: a profile can count the replay
 * loop as this function (valgrind --tool=callgrind --toggle-collect=replay_request). */
static __attribute__((noinline)) void replay_request(replay_run *x, uint64_t r)
{
    const kvbt_trace *t = x->t;
    replay_scratch *s = x->s;
    const kvb_hash *h = x->hashes + t->off[r];
    const uint32_t n = (uint32_t)(t->off[r + 1] - t->off[r]);
    const uint32_t cur =
        x->head + x->count >= x->ring ? x->head + x->count - x->ring : x->head + x->count;
    kvb_block *blk = x->window ? s->slots + cur * s->maxn : s->blocks;
    int rc;

    if (x->timed)
        replay_now_ms = t->timestamp_ms ? t->timestamp_ms[r] : r;
    if (x->lookahead && r + x->lookahead < t->n_requests)
        replay_hint(x->pool, t, x->hashes, r + x->lookahead, +1, x->pol, x->capacity);

    if (x->acquire) { /* the prefix and the rest in one call: the same results */
        rc = kvb_pool_acquire(x->pool, h, n, NULL, blk, NULL, NULL);
        if (rc < 0)
            replay_lib_fail(t, r, "kvb_pool_acquire", rc, x->pol->name, x->capacity);
        x->hits += (uint32_t)rc;
        s->uncached[r] = replay_uncached(t, r, n, (uint32_t)rc);
    } else {
        rc = kvb_pool_match(x->pool, h, n, blk);
        if (rc < 0)
            replay_lib_fail(t, r, "kvb_pool_match", rc, x->pol->name, x->capacity);
        uint32_t k = (uint32_t)rc;
        x->hits += k;
        s->uncached[r] = replay_uncached(t, r, n, k);
        if (x->lookahead)
            replay_hint(x->pool, t, x->hashes, r, -1, x->pol, x->capacity);
        if (x->ret && k)
            replay_refresh(x->pool, t, r, h, k < replay_ret.blocks ? k : replay_ret.blocks, x->pol,
                           x->capacity);

        rc = kvbt_request_fill(x->pool, h, n, k, blk, &x->fill);
        if (rc < 0)
            replay_lib_fail(t, r, x->fill.failed, rc, x->pol->name, x->capacity);
        if (replay_demote)
            replay_demote_request(x, r, h, n, k);
    }

    if (replay_ttl_ms) /* the request's blocks, held now, cached next (or later) */
        replay_pin(x->pool, t, r, h, n, x->pol, x->capacity);
    if (x->window == 0) {
        rc = kvbt_request_release(blk, n);
        if (rc < 0)
            replay_lib_fail(t, r, "kvb_block_release_n", rc, x->pol->name, x->capacity);
        return;
    }
    kvbt_request_reverse(blk, n);
    s->slot_n[cur] = n;
    x->slot_req[cur] = r;
    if (++x->count > x->window)
        replay_release_oldest(x);
}

int replay_run_pool(const kvbt_trace *t, const kvb_hash *hashes, const replay_policy *pol,
                    uint32_t capacity, uint32_t window, uint32_t lookahead, replay_scratch *s,
                    kvbt_progress *progress, replay_cell *res)
{
    kvb_pool_config cfg;
    kvb_pool *pool;
    kvb_stats st;
    int rc;

    replay_pool_config(&cfg, pol, capacity);
    rc = kvb_pool_create(&cfg, &pool);
    if (rc < 0)
        return rc;

    const uint64_t *off = t->off;
    const uint64_t n_requests = t->n_requests;
    uint64_t excluded = 0;
    kvb_retention retbuf;
    kvb_retention_range rg;
    replay_run x = {
        .pool = pool,
        .t = t,
        .hashes = hashes,
        .pol = pol,
        .capacity = capacity,
        .window = window,
        .lookahead = lookahead,
        .s = s,
        .ret = replay_retention(&retbuf, &rg),
        .ring = window + 1,
    };
    x.timed = replay_ttl_ms || (x.ret && replay_ret.duration_ms);
    /* what happens between the match and the allocation (hints withdrawn, retention
     * refreshed, held requests released to make room) changes the victims: only
     * without any of it is one call the same as the four */
    x.acquire = !replay_api_calls && window == 0 && lookahead == 0 && !x.ret && !replay_demote;
    x.fill = (kvbt_request_fill_args){.mut = s->mut, .cmp = s->cmp, .retention = x.ret};
    if (window) {
        x.fill.make_room = replay_make_room;
        x.fill.room_ctx = &x;
        x.slot_req = kvbt_xmalloc_array(x.ring, sizeof *x.slot_req);
    }

    uint64_t t0 = kvbt_now_ns();
    for (uint64_t r = 0; r < lookahead && r < n_requests; r++)
        replay_hint(pool, t, hashes, r, +1, pol, capacity); /* the first W requests */
    for (uint64_t r0 = 0, r1; r0 < n_requests; r0 = r1) {
        r1 = r0 + REPLAY_CHUNK < n_requests ? r0 + REPLAY_CHUNK : n_requests;
        for (uint64_t r = r0; r < r1; r++)
            replay_request(&x, r);
        excluded += kvbt_progress_add(progress, off[r1] - off[r0]);
    }
    while (x.count > 0)
        replay_release_oldest(&x);
    free(x.slot_req);
    uint64_t t1 = kvbt_now_ns();
    if (replay_pub) {
        rc = kvb_pool_events_flush(pool);
        if (rc < 0)
            kvbt_die(prog, "kvb_pool_events_flush: %s", kvb_strerror(rc));
    }

    rc = kvb_pool_stats(pool, &st);
    if (rc < 0)
        kvbt_die(prog, "kvb_pool_stats: %s", kvb_strerror(rc));
    rc = kvb_pool_check(pool);
    if (rc != 0)
        kvbt_die(prog,
                 "INVARIANT VIOLATION: kvb_pool_check() = %d (%s) after replaying %s with policy "
                 "%s, capacity %u, window %u: this is a kvblock bug",
                 rc, kvb_strerror(rc), t->name, pol->name, capacity, window);
    if (st.hint_uses != 0 || st.hint_hashes != 0 || st.hint_protected != 0 ||
        st.hint_unmatched != 0)
        kvbt_die(prog,
                 "after the replay (policy %s, capacity %u, lookahead %u) the pool reports %llu "
                 "hint uses on %u hashes protecting %u blocks, %llu unmatched (all should be 0)",
                 pol->name, capacity, lookahead, (unsigned long long)st.hint_uses, st.hint_hashes,
                 st.hint_protected, (unsigned long long)st.hint_unmatched);
    if (st.misuse != 0 || st.mutable_ + st.staged + st.primary + st.duplicate != 0)
        kvbt_die(prog,
                 "after the replay (policy %s, capacity %u, window %u) the pool reports misuse "
                 "%llu, mutable %u, staged %u, primary %u, duplicate %u (all should be 0)",
                 pol->name, capacity, window, (unsigned long long)st.misuse, st.mutable_, st.staged,
                 st.primary, st.duplicate);
    rc = kvb_pool_destroy(pool);
    if (rc != 0)
        kvbt_die(prog, "kvb_pool_destroy: %s", kvb_strerror(rc));

    res->hits = x.hits;
    res->evictions = st.evictions;
    res->early_releases = x.fill.early;
    res->ns = t1 - t0 - excluded;
    replay_percentiles(t, s, res);
    return 0;
}

/* Warm-up, untimed and unreported: the first pool policy replays the first
 * REPLAY_WARMUP requests once, so that the first measured run does not pay for
 * cold code pages and a fresh allocator. */
#define REPLAY_WARMUP 2048

void replay_warmup(const kvbt_trace *t, const kvb_hash *hashes, const replay_policy *pol,
                   uint32_t capacity, uint32_t window, uint32_t lookahead, replay_scratch *s)
{
    kvbt_trace head = *t; /* a view of the first requests: only off[] is read past them */
    kvbt_progress off;
    replay_cell cell;
    if (head.n_requests > REPLAY_WARMUP)
        head.n_requests = REPLAY_WARMUP;
    head.n_refs = t->off[head.n_requests];
    kvbt_progress_init(&off, false, 0);
    int rc = replay_run_pool(&head, hashes, pol, capacity, window, lookahead, s, &off, &cell);
    if (rc < 0)
        kvbt_die(prog, "kvb_pool_create (policy %s, capacity %u): %s", pol->name, capacity,
                 kvb_strerror(rc));
}
