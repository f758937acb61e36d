/*
 * redis_relay.c - the relay of FLEET.md section 8 (kvblock/redis.h): appends
 * what its subscriber accepts to one Redis Stream per worker, holds the lease,
 * writes snapshots and trims; as a standby it follows the log until it takes
 * the lease.
 *
 * Threads and data.
 *  - The subscriber thread calls kvb_redis_relay_subscriber_cb: it places the
 *    note at the worker's next position, encodes it (outside any lock) and
 *    pushes it on the bounded queue under r->mu (a few stores; never waits for
 *    Redis). Producer fields of a worker (pw->pos, pw->overflow, pw->ranks) are
 *    touched only by that thread after activation; the relay thread seeds them
 *    before ACTIVE is published under r->mu (wait_active and the subscriber's
 *    creation come after that unlock: happens-before).
 *  - The relay thread owns the hiredis connection and the log follower r->lg.
 *    As a standby the follower applies every entry to two indexes: r->lg.idx[0]
 *    becomes the relay's index (the subscriber's) at takeover, r->lg.idx[1] is
 *    the shadow. When ACTIVE the follower applies to the shadow only, and only
 *    what the append script accepted, so the shadow is exactly what the streams
 *    say: snapshots are cut from it, with the ids it covers, coherently (the
 *    relay's own index runs ahead of the log by the queue).
 *  - Queue (r->mu): a ring of items; the relay thread reads up to
 *    append_max_entries not-done items, groups them per worker (order kept per
 *    worker), appends each group with one script call (all groups pipelined),
 *    marks the accepted ones done and pops done items from the head.
 *
 * Lease (FLEET.md section 8): acquire = the ACQUIRE script (EXISTS, INCR, SET PX);
 * renew every renew_ms with compare-and-pexpire; the relay considers the lease
 * gone when a renewal says so, when renew_sent + lease_ms * 0.9 passes without a
 * confirmed renewal, when the server's run_id changed, or when an append is
 * refused as not the holder: it is then LOST, keeps queueing, retries the
 * ACQUIRE script (a new incarnation), and before appending verifies that every
 * stream's last entry is still one of its own. Another relay's entry there
 * makes it FENCED for good. The same verification runs after every Redis error
 * while ACTIVE (an append that timed out may have been applied: the queued
 * entries it covers are dropped as done; entries Redis lost are replaced by a
 * clear, CLEAR_LOST, so no reader keeps what the log no longer says).
 */
#include "redis_internal.h"

#ifdef KVB_HAVE_REDIS
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define RELAY_MAX_RANKS 64
#define RELAY_MY_INCS   16

struct relay_worker {
    char name[KVB_INDEX_NAME_MAX];
    struct relay_worker *next; /* r->workers list (r->mu) */
    /* producer side (subscriber thread, seeded at takeover) */
    struct kvb__rpos pos; /* position of the last entry queued */
    bool overflow;        /* a clear must precede the worker's next entry */
    struct kvb__rlog_rank ranks[RELAY_MAX_RANKS];
    uint32_t n_ranks;
    /* relay thread: grouping of one round */
    uint32_t round_group;
    uint64_t round_stamp;
};

struct relay_item {
    struct relay_worker *w;
    struct kvb__rpos pos;
    bool done;
    void *blob;
    size_t len;
};

/* An appended entry kept for re-appending after Redis lost it (relay thread). */
struct retained {
    char name[KVB_INDEX_NAME_MAX];
    struct kvb__rpos pos, prev; /* its position, and the stream's before it */
    bool have_prev;
    void *blob;
    size_t len;
};

struct kvb_redis_relay {
    kvb_redis_relay_config cfg; /* (c) strings point into url_copy / prefix_copy */
    char *url_copy, *prefix_copy;
    struct kvb__rconn rc; /* relay thread */
    struct kvb__rlog lg;  /* relay thread */
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    pthread_cond_t cv;                 /* relay thread waits: work, stop */
    pthread_cond_t done_cv;            /* waiters: state changes, items done, snapshots */
    bool stop;                         /* (mu) */
    _Atomic int state;                 /* written under mu; the callback reads it lock-free */
    kvb_index *index;                  /* (mu) the relay's index once ACTIVE */
    struct relay_item *ring;           /* (mu) */
    uint32_t ring_cap, head, count;    /* (mu) */
    uint64_t bytes;                    /* (mu) */
    uint64_t enq_total, done_total;    /* (mu) items ever pushed / finished */
    struct relay_worker **wmap;        /* (mu) name -> worker, open addressing */
    uint32_t wmap_cap, n_workers;      /* (mu) */
    struct relay_worker *workers;      /* (mu) */
    uint64_t snap_requests, snap_done; /* (mu) */
    int snap_result;                   /* (mu) */
    kvb_redis_relay_stats st;          /* (mu) */

    /* relay thread only */
    struct retained *ret; /* ring of the last appended entries, oldest first */
    uint32_t ret_cap, ret_head, ret_count;
    uint64_t ret_bytes;
    uint64_t inc;
    uint64_t my_incs[RELAY_MY_INCS];
    uint32_t n_my_incs;
    int64_t renew_due_ms, lease_deadline_ms, acquire_due_ms, scan_due_ms;
    int64_t snap_last_ms;
    uint64_t since_snapshot;
    bool need_load, need_verify;
    uint64_t round;
};

static const kvb_redis_relay_stats *stats_locked(kvb_redis_relay *r)
{
    return &r->st;
}

/* ---- state ------------------------------------------------------------------ */

static void set_state(kvb_redis_relay *r, kvb_redis_relay_state s)
{
    pthread_mutex_lock(&r->mu);
    int old = atomic_load(&r->state);
    atomic_store(&r->state, (int)s);
    r->st.state = s;
    r->st.inc = r->inc;
    pthread_cond_broadcast(&r->done_cv);
    pthread_mutex_unlock(&r->mu);
    if (old != (int)s && r->cfg.on_state)
        r->cfg.on_state(r->cfg.user, s, r->inc);
}

static void wait_ms(kvb_redis_relay *r, int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = kvb__redis_deadline(ms);
    pthread_mutex_lock(&r->mu);
    if (!r->stop)
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    pthread_mutex_unlock(&r->mu);
}

static bool stopping(kvb_redis_relay *r)
{
    pthread_mutex_lock(&r->mu);
    bool s = r->stop;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static bool is_mine(const kvb_redis_relay *r, uint64_t inc)
{
    if (inc == r->inc)
        return true;
    for (uint32_t i = 0; i < r->n_my_incs; i++)
        if (r->my_incs[i] == inc)
            return true;
    return false;
}

static uint64_t max_seen_inc(const kvb_redis_relay *r)
{
    uint64_t m = r->inc;
    for (uint32_t i = 0; i < r->lg.n; i++)
        if (r->lg.list[i]->max_inc > m)
            m = r->lg.list[i]->max_inc;
    return m;
}

/* ---- producer workers (r->mu) ---------------------------------------------------- */

static uint32_t wname_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static struct relay_worker *pw_find_locked(kvb_redis_relay *r, const char *name)
{
    uint32_t m = r->wmap_cap - 1;
    for (uint32_t i = wname_hash(name) & m;; i = (i + 1) & m) {
        struct relay_worker *w = r->wmap[i];
        if (!w)
            return NULL;
        if (strcmp(w->name, name) == 0)
            return w;
    }
}

static struct relay_worker *pw_get_locked(kvb_redis_relay *r, const char *name)
{
    struct relay_worker *w = pw_find_locked(r, name);
    if (w)
        return w;
    size_t nl = strlen(name);
    if (nl == 0 || nl >= KVB_INDEX_NAME_MAX)
        return NULL;
    if ((r->n_workers + 1) * 2 > r->wmap_cap) {
        uint32_t nc = r->wmap_cap * 2;
        struct relay_worker **nm = calloc(nc, sizeof *nm);
        if (!nm)
            return NULL;
        for (struct relay_worker *x = r->workers; x; x = x->next)
            for (uint32_t i = wname_hash(x->name) & (nc - 1);; i = (i + 1) & (nc - 1))
                if (!nm[i]) {
                    nm[i] = x;
                    break;
                }
        free(r->wmap);
        r->wmap = nm;
        r->wmap_cap = nc;
    }
    w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    memcpy(w->name, name, nl + 1);
    w->pos = (struct kvb__rpos){0, -1, 0};
    for (uint32_t i = wname_hash(name) & (r->wmap_cap - 1);; i = (i + 1) & (r->wmap_cap - 1))
        if (!r->wmap[i]) {
            r->wmap[i] = w;
            break;
        }
    w->next = r->workers;
    r->workers = w;
    r->n_workers++;
    return w;
}

/* ---- the subscriber callback (subscriber thread) ---------------------------------- */

static void pw_rank(kvb_redis_relay *r, struct relay_worker *w, int64_t rank,
                    kvb_index_hashes_kind *hk, uint32_t *bs)
{
    for (uint32_t i = 0; i < w->n_ranks; i++)
        if (w->ranks[i].rank == rank) {
            *hk = w->ranks[i].hashes;
            *bs = w->ranks[i].block_size;
            return;
        }
    *hk = KVB_INDEX_HASHES_ROUTER;
    *bs = 0;
    kvb_index *idx = r->index;
    uint32_t sid;
    kvb_index_stream_info si;
    if (idx && kvb_index_stream_find(idx, w->name, rank, &sid) == 0 &&
        kvb_index_stream_info_get(idx, sid, &si) == 0) {
        *hk = si.hashes;
        *bs = si.block_size;
        if (w->n_ranks < RELAY_MAX_RANKS)
            w->ranks[w->n_ranks++] = (struct kvb__rlog_rank){rank, si.hashes, si.block_size};
    }
}

/* Clear every stream of the worker in the relay's index (the log will say so). */
static void pw_clear_index(kvb_redis_relay *r, struct relay_worker *w)
{
    kvb_index *idx = r->index;
    if (!idx)
        return;
    for (uint32_t i = 0; i < w->n_ranks; i++) {
        uint32_t sid;
        if (kvb_index_stream_find(idx, w->name, w->ranks[i].rank, &sid) == 0)
            kvb_index_stream_clear(idx, sid, KVB_STREAM_RESYNCING);
    }
}

static void *encode_alloc(const kvb_redis_entry *e, size_t *len)
{
    long need = kvb_redis_entry_encode(e, NULL, 0);
    if (need < 0)
        return NULL;
    void *b = malloc((size_t)need);
    if (!b)
        return NULL;
    if (kvb_redis_entry_encode(e, b, (size_t)need) != need) {
        free(b);
        return NULL;
    }
    *len = (size_t)need;
    return b;
}

/* Push up to two items for w (a clear first, then the entry) if they fit. */
static bool push_locked(kvb_redis_relay *r, struct relay_worker *w, struct relay_item *it, int n)
{
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += it[i].len;
    if (r->count + (uint32_t)n > r->ring_cap || r->bytes + bytes > r->cfg.queue_bytes)
        return false;
    for (int i = 0; i < n; i++) {
        it[i].w = w;
        it[i].done = false;
        r->ring[(r->head + r->count) % r->ring_cap] = it[i];
        r->count++;
    }
    r->bytes += bytes;
    r->enq_total += (uint64_t)n;
    r->st.enqueued += (uint64_t)n;
    pthread_cond_signal(&r->cv);
    return true;
}

static kvb_stream_state live_or_resync(kvb_stream_state s)
{
    return s == KVB_STREAM_RESYNCING ? KVB_STREAM_RESYNCING : KVB_STREAM_LIVE;
}

KVB_API void kvb_redis_relay_subscriber_cb(void *user, kvb_sub_note note, const char *worker,
                                           int64_t seq, const kvb_index_batch *batch,
                                           kvb_stream_state state)
{
    kvb_redis_relay *r = user;
    if (!r || !worker)
        return;
    int st = atomic_load(&r->state);
    if (st != KVB_REDIS_RELAY_ACTIVE && st != KVB_REDIS_RELAY_LOST)
        return;
    pthread_mutex_lock(&r->mu);
    struct relay_worker *w = pw_get_locked(r, worker);
    pthread_mutex_unlock(&r->mu);
    if (!w)
        return;

    struct relay_item items[3];
    int n = 0;
    struct kvb__rpos cur = w->pos;
    bool anomaly = false;
    kvb_redis_entry e;
    memset(&e, 0, sizeof e);
    switch (note) {
    case KVB_SUB_BATCH:
        if (!batch || seq < 0)
            return;
        if (cur.seq >= seq)
            anomaly = true; /* not above the last: the subscriber began a run we missed */
        break;
    case KVB_SUB_CLEAR:
    case KVB_SUB_STALE:
    case KVB_SUB_LIVE:
        break;
    default:
        return;
    }
    /* a clear owed by an overflow, or a sequence we cannot place */
    if (w->overflow || anomaly) {
        kvb_redis_entry c;
        memset(&c, 0, sizeof c);
        c.kind = KVB_REDIS_ENTRY_CLEAR;
        c.state = KVB_STREAM_RESYNCING;
        c.reason = w->overflow ? KVB_REDIS_CLEAR_OVERFLOW : KVB_REDIS_CLEAR_ANOMALY;
        c.ep = cur.ep + 1;
        c.seq = -1;
        c.sub = 0;
        c.dp_rank = KVB_INDEX_NO_RANK;
        c.relay_ns = kvb__realtime_ns();
        items[n].blob = encode_alloc(&c, &items[n].len);
        items[n].pos = (struct kvb__rpos){c.ep, c.seq, c.sub};
        if (!items[n].blob)
            goto overflow;
        cur = items[n].pos;
        n++;
    }
    e.relay_ns = kvb__realtime_ns();
    e.dp_rank = KVB_INDEX_NO_RANK;
    switch (note) {
    case KVB_SUB_BATCH:
        e.kind = KVB_REDIS_ENTRY_BATCH;
        e.ep = cur.ep;
        e.seq = seq;
        e.sub = 0;
        e.state = live_or_resync(state);
        e.dp_rank = batch->dp_rank;
        pw_rank(r, w, batch->dp_rank, &e.hashes, &e.block_size);
        e.ts = batch->ts;
        e.n_events = batch->n_events;
        e.events = batch->events;
        memcpy(e.dropped, batch->dropped, sizeof e.dropped);
        break;
    case KVB_SUB_CLEAR:
        e.kind = KVB_REDIS_ENTRY_CLEAR;
        e.ep = cur.ep + 1;
        e.seq = -1;
        e.sub = 0;
        e.state = state == KVB_STREAM_STALE ? KVB_STREAM_STALE : live_or_resync(state);
        e.reason = state == KVB_STREAM_LIVE        ? KVB_REDIS_CLEAR_RESTART
                   : state == KVB_STREAM_RESYNCING ? KVB_REDIS_CLEAR_GAP
                                                   : KVB_REDIS_CLEAR_OTHER;
        break;
    default:
        e.kind = note == KVB_SUB_STALE ? KVB_REDIS_ENTRY_STALE : KVB_REDIS_ENTRY_LIVE;
        e.ep = cur.ep;
        e.seq = cur.seq;
        e.sub = cur.sub + 1;
        e.state = note == KVB_SUB_STALE ? KVB_STREAM_STALE : live_or_resync(state);
        break;
    }
    items[n].blob = encode_alloc(&e, &items[n].len);
    items[n].pos = (struct kvb__rpos){e.ep, e.seq, e.sub};
    if (!items[n].blob)
        goto overflow;
    n++;
    pthread_mutex_lock(&r->mu);
    bool ok = atomic_load(&r->state) != KVB_REDIS_RELAY_FENCED && push_locked(r, w, items, n);
    if (ok) {
        if (w->overflow)
            r->st.overflow_clears++;
        w->pos = items[n - 1].pos;
        w->overflow = false;
    } else {
        r->st.overflows++;
    }
    pthread_mutex_unlock(&r->mu);
    if (ok) {
        if (anomaly) {
            pthread_mutex_lock(&r->mu);
            r->st.anomalies++;
            pthread_mutex_unlock(&r->mu);
            pw_clear_index(r, w);
        }
        return;
    }
    for (int i = 0; i < n; i++)
        free(items[i].blob);
    w->overflow = true;
    pw_clear_index(r, w);
    return;
overflow:
    for (int i = 0; i < n; i++)
        free(items[i].blob);
    pthread_mutex_lock(&r->mu);
    r->st.overflows++;
    pthread_mutex_unlock(&r->mu);
    w->overflow = true;
    pw_clear_index(r, w);
}

KVB_API int kvb_redis_relay_worker_removed(kvb_redis_relay *r, const char *worker)
{
    if (!r || !worker)
        return -EINVAL;
    int st = atomic_load(&r->state);
    if (st != KVB_REDIS_RELAY_ACTIVE && st != KVB_REDIS_RELAY_LOST)
        return -ENOENT;
    pthread_mutex_lock(&r->mu);
    struct relay_worker *w = pw_get_locked(r, worker);
    if (!w) {
        pthread_mutex_unlock(&r->mu);
        return -EINVAL;
    }
    kvb_redis_entry e;
    memset(&e, 0, sizeof e);
    e.kind = KVB_REDIS_ENTRY_DROP;
    e.ep = w->pos.ep + 1;
    e.seq = -1;
    e.dp_rank = KVB_INDEX_NO_RANK;
    e.relay_ns = kvb__realtime_ns();
    struct relay_item it;
    it.blob = encode_alloc(&e, &it.len);
    it.pos = (struct kvb__rpos){e.ep, e.seq, e.sub};
    int ret = -ENOMEM;
    if (it.blob) {
        if (push_locked(r, w, &it, 1)) {
            w->pos = it.pos;
            w->n_ranks = 0;
            ret = 0;
        } else {
            free(it.blob);
            ret = -EAGAIN;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ret;
}

/* ---- lease -------------------------------------------------------------------------- */

static void lease_keys(kvb_redis_relay *r, char *lease, char *incr, size_t cap)
{
    kvb__rconn_key(&r->rc, "lease", NULL, lease, cap);
    kvb__rconn_key(&r->rc, "incarnation", NULL, incr, cap);
}

/* 1 acquired (r->inc set), 0 held by someone, negative errno (connection). */
static int lease_acquire(kvb_redis_relay *r)
{
    char lease[160], incr[160], minv[32], ms[16];
    lease_keys(r, lease, incr, sizeof lease);
    snprintf(minv, sizeof minv, "%llu", (unsigned long long)max_seen_inc(r));
    snprintf(ms, sizeof ms, "%u", r->cfg.lease_ms);
    const char *args[4] = {lease, incr, minv, ms};
    int64_t t0 = kvb__redis_mono_ms();
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_ACQUIRE, 2, 4, args, NULL);
    if (!rep)
        return -EIO;
    long long v;
    int ret = 0;
    if (kvb__rr_int(rep, &v) && v > 0) {
        if (r->inc && r->n_my_incs < RELAY_MY_INCS)
            r->my_incs[r->n_my_incs++] = r->inc;
        r->inc = (uint64_t)v;
        r->lease_deadline_ms = t0 + (int64_t)r->cfg.lease_ms * 9 / 10;
        r->renew_due_ms = t0 + r->cfg.renew_ms;
        pthread_mutex_lock(&r->mu);
        r->st.lease_acquired++;
        r->st.inc = r->inc;
        pthread_mutex_unlock(&r->mu);
        ret = 1;
    } else if (kvb__rr_err(rep)) {
        r->rc.errors++;
    }
    freeReplyObject(rep);
    return ret;
}

/* 1 renewed, 0 not the holder, negative errno. */
static int lease_renew(kvb_redis_relay *r)
{
    char lease[160], incr[160], inc[32], ms[16];
    lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    snprintf(ms, sizeof ms, "%u", r->cfg.lease_ms);
    const char *args[3] = {lease, inc, ms};
    int64_t t0 = kvb__redis_mono_ms();
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_RENEW, 1, 3, args, NULL);
    if (!rep)
        return -EIO;
    long long v = 0;
    int ret;
    if (kvb__rr_int(rep, &v)) {
        ret = v == 1 ? 1 : 0;
        if (ret) {
            r->lease_deadline_ms = t0 + (int64_t)r->cfg.lease_ms * 9 / 10;
            r->renew_due_ms = t0 + r->cfg.renew_ms;
        }
    } else {
        kvb__rconn_fail(&r->rc);
        ret = -EPROTO;
    }
    freeReplyObject(rep);
    return ret;
}

static void lease_release(kvb_redis_relay *r)
{
    if (!r->inc || !kvb__rconn_ok(&r->rc))
        return;
    char lease[160], incr[160], inc[32];
    lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    const char *args[2] = {lease, inc};
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_RELEASE, 1, 2, args, NULL);
    freeReplyObject(rep);
}

static void to_lost(kvb_redis_relay *r)
{
    pthread_mutex_lock(&r->mu);
    r->st.lease_lost++;
    pthread_mutex_unlock(&r->mu);
    r->acquire_due_ms = kvb__redis_mono_ms();
    set_state(r, KVB_REDIS_RELAY_LOST);
}

/* ---- queue (relay thread) ------------------------------------------------------------ */

/* Pop done items from the head; fenced: every item is done. */
static void pop_done(kvb_redis_relay *r, bool all)
{
    pthread_mutex_lock(&r->mu);
    uint64_t popped = 0;
    while (r->count) {
        struct relay_item *it = &r->ring[r->head];
        if (!it->done && !all)
            break;
        if (!it->done)
            r->st.discarded++;
        free(it->blob);
        r->bytes -= it->len;
        it->blob = NULL;
        r->head = (r->head + 1) % r->ring_cap;
        r->count--;
        popped++;
    }
    r->done_total += popped;
    if (popped)
        pthread_cond_broadcast(&r->done_cv);
    pthread_mutex_unlock(&r->mu);
}

static void retain(kvb_redis_relay *r, const char *name, struct relay_item *it,
                   struct kvb__rpos prev, bool have_prev);

/* Items of w with a position at or below p were appended (found after an error). */
static void mark_appended_upto(kvb_redis_relay *r, struct kvb__rlog_worker *lw, struct kvb__rpos p)
{
    pthread_mutex_lock(&r->mu);
    uint32_t cnt = r->count, head = r->head;
    pthread_mutex_unlock(&r->mu);
    /* only the relay thread changes done flags and pops: reading the ring's
     * first cnt items without the lock is safe (the producer only appends) */
    for (uint32_t i = 0; i < cnt; i++) {
        struct relay_item *it = &r->ring[(head + i) % r->ring_cap];
        if (it->done || strcmp(it->w->name, lw->name) != 0)
            continue;
        if (kvb__rpos_cmp(it->pos, p) > 0)
            break;
        struct kvb__rpos prev = lw->pos;
        bool have_prev = lw->have_pos;
        kvb_redis_entry e;
        if (kvb_redis_entry_decode(it->blob, it->len, &e) == 0) {
            kvb__rlog_apply_decoded(&r->lg, lw, &e);
            kvb_redis_entry_fini(&e);
        }
        lw->pos = it->pos;
        lw->have_pos = true;
        retain(r, lw->name, it, prev, have_prev);
        it->done = true;
        pthread_mutex_lock(&r->mu);
        r->st.discarded++;
        pthread_mutex_unlock(&r->mu);
    }
}

/* ---- stream heads with fields -------------------------------------------------------- */

struct last_entry {
    bool exists;
    bool ok; /* fields parsed */
    struct kvb__rfields f;
};

static int read_lasts(kvb_redis_relay *r, struct last_entry *out)
{
    struct kvb__rconn *rc = &r->rc;
    if (!rc->c)
        return -ENOTCONN;
    for (uint32_t i = 0; i < r->lg.n; i++) {
        const char *argv[6] = {"XREVRANGE", r->lg.list[i]->key, "+", "-", "COUNT", "1"};
        size_t lens[6] = {9, r->lg.list[i]->key_len, 1, 1, 5, 1};
        if (redisAppendCommandArgv(rc->c, 6, argv, lens) != REDIS_OK) {
            kvb__rconn_fail(rc);
            return -EIO;
        }
    }
    for (uint32_t i = 0; i < r->lg.n; i++) {
        void *rp = NULL;
        if (redisGetReply(rc->c, &rp) != REDIS_OK || !rp) {
            kvb__rconn_fail(rc);
            return -EIO;
        }
        redisReply *rep = rp;
        memset(&out[i], 0, sizeof out[i]);
        if (kvb__rr_arr(rep, 1)) {
            out[i].exists = true;
            out[i].ok = kvb__rlog_fields(rep->element[0], &out[i].f) && out[i].f.have_n &&
                        out[i].f.have_pos && out[i].f.have_inc;
            out[i].f.batch = NULL;
        }
        freeReplyObject(rep);
    }
    return 0;
}

/* Append one clear (CLEAR_LOST) for lw at position p, right now. */
static int append_lost_clear(kvb_redis_relay *r, struct kvb__rlog_worker *lw, struct kvb__rpos p);

/* Redis lost lw's entries after position p (have: the stream still has p; !have: the
 * stream is gone): append them again from the retention ring, same positions and
 * bytes, if it still holds the entry right after p. 0 done, -ENOENT (not retained:
 * the caller writes a clear instead), 1 not the holder, negative errno. The shadow
 * already holds their effects: only the ordinals and ids are updated. */
static int reappend(kvb_redis_relay *r, struct kvb__rlog_worker *lw, struct kvb__rpos p, bool have)
{
    uint32_t first = UINT32_MAX, n = 0;
    for (uint32_t i = 0; i < r->ret_count; i++) {
        struct retained *x = &r->ret[(r->ret_head + i) % r->ret_cap];
        if (strcmp(x->name, lw->name) != 0)
            continue;
        if (first == UINT32_MAX) {
            if (x->have_prev != have || (have && kvb__rpos_cmp(x->prev, p) != 0))
                continue;
            first = i;
        }
        n++;
    }
    if (first == UINT32_MAX)
        return -ENOENT;
    char lease[160], incr[160], inc[32];
    lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    size_t nargs = 3 + 4 * (size_t)n;
    const char **args = malloc(sizeof *args * nargs);
    size_t *lens = malloc(sizeof *lens * nargs);
    char(*nums)[3][24] = malloc(sizeof *nums * n);
    if (!args || !lens || !nums) {
        free(args);
        free(lens);
        free(nums);
        return -ENOMEM;
    }
    args[0] = lease;
    lens[0] = strlen(lease);
    args[1] = lw->key;
    lens[1] = lw->key_len;
    args[2] = inc;
    lens[2] = strlen(inc);
    size_t a = 3;
    uint32_t k = 0;
    struct kvb__rpos last = p;
    for (uint32_t i = first; i < r->ret_count; i++) {
        struct retained *x = &r->ret[(r->ret_head + i) % r->ret_cap];
        if (strcmp(x->name, lw->name) != 0)
            continue;
        snprintf(nums[k][0], 24, "%llu", (unsigned long long)x->pos.ep);
        snprintf(nums[k][1], 24, "%lld", (long long)x->pos.seq);
        snprintf(nums[k][2], 24, "%u", x->pos.sub);
        for (int j = 0; j < 3; j++) {
            args[a] = nums[k][j];
            lens[a++] = strlen(nums[k][j]);
        }
        args[a] = x->blob;
        lens[a++] = x->len;
        last = x->pos;
        k++;
    }
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_APPEND, 2, (int)a, args, lens);
    free(args);
    free(lens);
    free(nums);
    if (!rep)
        return -EIO;
    int ret = -EPROTO;
    long long c, ln;
    if (kvb__rr_arr(rep, 3) && kvb__rr_int(rep->element[0], &c) && c == (long long)k &&
        kvb__rr_int(rep->element[2], &ln)) {
        uint64_t ms = 0, sq = 0;
        kvb__parse_id(rep->element[1]->str, rep->element[1]->len, &ms, &sq);
        lw->n = ln;
        lw->pos = lw->seen = last;
        lw->have_pos = lw->have_seen = true;
        lw->id_ms = ms;
        lw->id_seq = sq;
        pthread_mutex_lock(&r->mu);
        r->st.reappended += k;
        r->st.appended += k;
        pthread_mutex_unlock(&r->mu);
        ret = 0;
    } else if (kvb__rr_arr(rep, 1) && kvb__rr_int(rep->element[0], &c) && c == -1) {
        ret = 1;
    }
    freeReplyObject(rep);
    return ret;
}

/* After an error, a refusal or a re-acquisition: is every stream's last entry ours
 * and where we think it is? 0 yes (fixed up), 1 fenced, negative errno. */
static int verify_streams(kvb_redis_relay *r)
{
    if (kvb__rlog_scan(&r->lg, &r->rc) < 0)
        return -EIO;
    struct last_entry *le = calloc(r->lg.n ? r->lg.n : 1, sizeof *le);
    if (!le)
        return -ENOMEM;
    int ret = read_lasts(r, le);
    for (uint32_t i = 0; ret == 0 && i < r->lg.n; i++) {
        struct kvb__rlog_worker *w = r->lg.list[i];
        if (!le[i].exists) {
            if (w->n >= 0) { /* the stream vanished (Redis lost it) */
                w->n = -1;
                w->have_pos = w->have_seen = false;
                ret = reappend(r, w, (struct kvb__rpos){0, -1, 0}, false);
                if (ret == -ENOENT)
                    ret = append_lost_clear(r, w, (struct kvb__rpos){0, -1, 0});
            }
            continue;
        }
        if (!le[i].ok) {
            ret = 1; /* not an entry of ours at the end: someone else writes here */
            break;
        }
        const struct kvb__rfields *f = &le[i].f;
        if (!is_mine(r, f->inc)) {
            if (f->inc > r->inc || f->n > w->n) {
                ret = 1; /* another relay appended */
                break;
            }
            /* an older relay's entry at the end while we had appended more: Redis
             * lost ours */
        }
        if (f->n == w->n && w->have_pos && kvb__rpos_cmp(f->pos, w->pos) == 0)
            continue;
        if (f->n > w->n && is_mine(r, f->inc)) {
            /* appends whose replies we lost were applied */
            mark_appended_upto(r, w, f->pos);
            w->n = f->n;
            w->pos = w->seen = f->pos;
            w->have_pos = w->have_seen = true;
            w->id_ms = f->id_ms;
            w->id_seq = f->id_seq;
            continue;
        }
        if (f->n > w->n) {
            ret = 1;
            break;
        }
        /* below what we appended: Redis lost entries; a clear makes every reader
         * drop what the log no longer says */
        w->n = f->n;
        w->pos = w->seen = f->pos;
        w->have_pos = w->have_seen = true;
        w->id_ms = f->id_ms;
        w->id_seq = f->id_seq;
        ret = reappend(r, w, f->pos, true);
        if (ret == -ENOENT) {
            struct kvb__rpos p = f->pos;
            p.sub++;
            ret = append_lost_clear(r, w, p);
        }
    }
    free(le);
    pop_done(r, false);
    return ret;
}

/* ---- appends ----------------------------------------------------------------------- */

struct group {
    struct kvb__rlog_worker *lw;
    struct relay_worker *pw;
    uint32_t n;
    uint32_t first; /* index into the round's item list */
};

/* Keep an appended item's blob (ownership moves from the item) in the retention
 * ring; the oldest go when it exceeds retain_bytes. */
static void retain(kvb_redis_relay *r, const char *name, struct relay_item *it,
                   struct kvb__rpos prev, bool have_prev)
{
    if (!r->ret_cap || !r->cfg.retain_bytes || it->len > r->cfg.retain_bytes)
        return;
    while (r->ret_count &&
           (r->ret_count == r->ret_cap || r->ret_bytes + it->len > r->cfg.retain_bytes)) {
        struct retained *o = &r->ret[r->ret_head];
        r->ret_bytes -= o->len;
        free(o->blob);
        o->blob = NULL;
        r->ret_head = (r->ret_head + 1) % r->ret_cap;
        r->ret_count--;
    }
    struct retained *x = &r->ret[(r->ret_head + r->ret_count) % r->ret_cap];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->pos = it->pos;
    x->prev = prev;
    x->have_prev = have_prev;
    x->blob = it->blob;
    x->len = it->len;
    it->blob = NULL; /* the ring owns it now */
    r->ret_bytes += x->len;
    r->ret_count++;
}

/* Apply the accepted items of a group to the shadow; n_acc of them. */
static void group_accepted(kvb_redis_relay *r, struct group *g, struct relay_item **its,
                           uint32_t n_acc, const redisReply *id, long long last_n)
{
    struct kvb__rlog_worker *lw = g->lw;
    uint64_t ms = lw->id_ms, sq = lw->id_seq;
    if (id && kvb__rr_str(id))
        kvb__parse_id(id->str, id->len, &ms, &sq);
    for (uint32_t i = 0; i < n_acc; i++) {
        struct relay_item *it = its[g->first + i];
        struct kvb__rpos prev = lw->pos;
        bool have_prev = lw->have_pos;
        kvb_redis_entry e;
        if (kvb_redis_entry_decode(it->blob, it->len, &e) == 0) {
            int64_t n = last_n - (long long)(n_acc - 1 - i);
            kvb__rlog_apply_own(&r->lg, lw, &e, r->inc, n, ms, sq);
            kvb_redis_entry_fini(&e);
        }
        retain(r, lw->name, it, prev, have_prev);
        it->done = true;
    }
    r->since_snapshot += n_acc;
}

static int append_lost_clear(kvb_redis_relay *r, struct kvb__rlog_worker *lw, struct kvb__rpos p)
{
    kvb_redis_entry e;
    memset(&e, 0, sizeof e);
    e.kind = KVB_REDIS_ENTRY_CLEAR;
    e.state = KVB_STREAM_RESYNCING;
    e.reason = KVB_REDIS_CLEAR_LOST;
    e.ep = p.ep;
    e.seq = p.seq;
    e.sub = p.sub;
    e.dp_rank = KVB_INDEX_NO_RANK;
    e.relay_ns = kvb__realtime_ns();
    size_t len;
    void *blob = encode_alloc(&e, &len);
    if (!blob)
        return -ENOMEM;
    char lease[160], incr[160], inc[32], ep[24], seq[24], sub[16];
    lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    snprintf(ep, sizeof ep, "%llu", (unsigned long long)e.ep);
    snprintf(seq, sizeof seq, "%lld", (long long)e.seq);
    snprintf(sub, sizeof sub, "%u", e.sub);
    const char *args[7] = {lease, lw->key, inc, ep, seq, sub, blob};
    size_t lens[7] = {strlen(lease), lw->key_len, strlen(inc), strlen(ep),
                      strlen(seq),   strlen(sub), len};
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_APPEND, 2, 7, args, lens);
    free(blob);
    if (!rep)
        return -EIO;
    int ret = -EPROTO;
    long long c, ln;
    if (kvb__rr_arr(rep, 3) && kvb__rr_int(rep->element[0], &c) && c == 1 &&
        kvb__rr_int(rep->element[2], &ln)) {
        uint64_t ms = 0, sq = 0;
        kvb__parse_id(rep->element[1]->str, rep->element[1]->len, &ms, &sq);
        kvb__rlog_apply_own(&r->lg, lw, &e, r->inc, ln, ms, sq);
        pthread_mutex_lock(&r->mu);
        r->st.lost_clears++;
        r->st.appended++;
        pthread_mutex_unlock(&r->mu);
        ret = 0;
    } else if (kvb__rr_arr(rep, 1) && kvb__rr_int(rep->element[0], &c) && c == -1) {
        ret = 1; /* not the holder any more */
    }
    freeReplyObject(rep);
    return ret;
}

/* One round: up to append_max_entries queued items, one script call per worker,
 * pipelined. 1 when something was appended, 0 nothing to do, negative errno,
 * -EPERM when a call said we are not the holder. */
static int append_round(kvb_redis_relay *r)
{
    uint32_t max = r->cfg.append_max_entries;
    struct relay_item **its = malloc(sizeof *its * max);
    struct group *groups = malloc(sizeof *groups * max);
    if (!its || !groups) {
        free(its);
        free(groups);
        return -ENOMEM;
    }
    pthread_mutex_lock(&r->mu);
    uint32_t cnt = r->count, head = r->head;
    pthread_mutex_unlock(&r->mu);
    /* collect: not-done items in ring order */
    uint32_t n = 0, ng = 0;
    r->round++;
    struct relay_item **tmp = malloc(sizeof *tmp * max);
    if (!tmp) {
        free(its);
        free(groups);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < cnt && n < max; i++) {
        struct relay_item *it = &r->ring[(head + i) % r->ring_cap];
        if (it->done)
            continue;
        tmp[n++] = it;
        struct relay_worker *pw = it->w;
        if (pw->round_stamp != r->round) {
            pw->round_stamp = r->round;
            pw->round_group = ng;
            struct kvb__rlog_worker *lw = kvb__rlog_get(&r->lg, &r->rc, pw->name);
            groups[ng++] = (struct group){.lw = lw, .pw = pw, .n = 0, .first = 0};
        }
        groups[pw->round_group].n++;
    }
    if (!n) {
        free(its);
        free(groups);
        free(tmp);
        return 0;
    }
    /* lay the items out group by group */
    uint32_t off = 0;
    for (uint32_t g = 0; g < ng; g++) {
        groups[g].first = off;
        off += groups[g].n;
        groups[g].n = 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct group *g = &groups[tmp[i]->w->round_group];
        its[g->first + g->n++] = tmp[i];
    }
    free(tmp);

    char lease[160], incr[160], inc[32];
    lease_keys(r, lease, incr, sizeof lease);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    /* per item 3 numbers of up to 24 bytes */
    char(*nums)[3][24] = malloc(sizeof *nums * n);
    const char **args = malloc(sizeof *args * (3 * ng + 4 * n));
    size_t *lens = malloc(sizeof *lens * (3 * ng + 4 * n));
    const char *const **gargs = malloc(sizeof *gargs * ng);
    const size_t **glens = malloc(sizeof *glens * ng);
    int *nkeys = malloc(sizeof *nkeys * ng), *nargs = malloc(sizeof *nargs * ng);
    redisReply **reps = malloc(sizeof *reps * ng);
    int ret = 0;
    if (!nums || !args || !lens || !gargs || !glens || !nkeys || !nargs || !reps) {
        ret = -ENOMEM;
        goto out;
    }
    size_t a = 0;
    for (uint32_t g = 0; g < ng; g++) {
        struct group *gr = &groups[g];
        if (!gr->lw) {
            ret = -ENOMEM;
            goto out;
        }
        gargs[g] = &args[a];
        glens[g] = &lens[a];
        nkeys[g] = 2;
        args[a] = lease;
        lens[a++] = strlen(lease);
        args[a] = gr->lw->key;
        lens[a++] = gr->lw->key_len;
        args[a] = inc;
        lens[a++] = strlen(inc);
        for (uint32_t i = 0; i < gr->n; i++) {
            struct relay_item *it = its[gr->first + i];
            char(*nb)[24] = nums[gr->first + i];
            snprintf(nb[0], 24, "%llu", (unsigned long long)it->pos.ep);
            snprintf(nb[1], 24, "%lld", (long long)it->pos.seq);
            snprintf(nb[2], 24, "%u", it->pos.sub);
            for (int k = 0; k < 3; k++) {
                args[a] = nb[k];
                lens[a++] = strlen(nb[k]);
            }
            args[a] = it->blob;
            lens[a++] = it->len;
        }
        nargs[g] = 3 + 4 * (int)gr->n;
    }
    ret = kvb__rconn_script_n(&r->rc, KVB_RS_APPEND, ng, nkeys, nargs, gargs, glens, reps);
    if (ret < 0)
        goto out;
    pthread_mutex_lock(&r->mu);
    r->st.append_calls += ng;
    pthread_mutex_unlock(&r->mu);
    uint64_t appended = 0, refused = 0;
    bool not_holder = false, bad = false;
    for (uint32_t g = 0; g < ng; g++) {
        redisReply *rep = reps[g];
        long long c, ln;
        if (!rep) {
            bad = true;
        } else if (kvb__rr_arr(rep, 3) && kvb__rr_int(rep->element[0], &c) && c >= 0 &&
                   (uint64_t)c == groups[g].n && kvb__rr_int(rep->element[2], &ln)) {
            group_accepted(r, &groups[g], its, (uint32_t)c, rep->element[1], ln);
            appended += (uint64_t)c;
        } else if (kvb__rr_arr(rep, 1) && kvb__rr_int(rep->element[0], &c) && c == -1) {
            not_holder = true;
            refused += groups[g].n;
        } else if (kvb__rr_arr(rep, 4) && kvb__rr_int(rep->element[0], &c) && c == -2 &&
                   kvb__rr_int(rep->element[1], &c) && c >= 0 && (uint64_t)c < groups[g].n &&
                   kvb__rr_int(rep->element[3], &ln)) {
            if (c > 0)
                group_accepted(r, &groups[g], its, (uint32_t)c, rep->element[2], ln);
            appended += (uint64_t)c;
            refused += groups[g].n - (uint64_t)c;
            r->need_verify = true;
        } else {
            bad = true; /* an error reply (OOM, script error) or a shape we do not know */
        }
        freeReplyObject(rep);
        reps[g] = NULL;
    }
    pthread_mutex_lock(&r->mu);
    r->st.appended += appended;
    r->st.refused += refused;
    pthread_mutex_unlock(&r->mu);
    pop_done(r, false);
    if (bad) {
        kvb__rconn_fail(&r->rc); /* reconnect, then verify before appending again */
        r->need_verify = true;
        ret = -EIO;
    } else if (not_holder) {
        ret = -EPERM;
    } else {
        ret = appended ? 1 : 0;
    }
out:
    free(nums);
    free(args);
    free(lens);
    free(gargs);
    free(glens);
    free(nkeys);
    free(nargs);
    free(reps);
    free(its);
    free(groups);
    return ret;
}

/* ---- snapshots ------------------------------------------------------------------------ */

static int write_snapshot(kvb_redis_relay *r)
{
    int64_t t0 = kvb_index_now_ns();
    void *ibuf = NULL, *mbuf = NULL;
    size_t ilen = 0, mlen = 0;
    int ret = kvb_index_save_mem(r->lg.idx[1], &ibuf, &ilen);
    if (ret < 0)
        return ret;
    ret = kvb__rlog_meta_encode(&r->lg, r->inc, ibuf, ilen, &mbuf, &mlen);
    if (ret < 0) {
        free(ibuf);
        return ret;
    }
    char lease[160], incr[160], skey[160], inc[32];
    lease_keys(r, lease, incr, sizeof lease);
    kvb__rconn_key(&r->rc, "snapshot", NULL, skey, sizeof skey);
    snprintf(inc, sizeof inc, "%llu", (unsigned long long)r->inc);
    const char *args[5] = {lease, skey, inc, mbuf, ibuf};
    size_t lens[5] = {strlen(lease), strlen(skey), strlen(inc), mlen, ilen};
    kvb__rconn_set_timeout(&r->rc, r->cfg.snapshot_timeout_ms);
    redisReply *rep = kvb__rconn_script(&r->rc, KVB_RS_SNAPSHOT, 2, 5, args, lens);
    kvb__rconn_set_timeout(&r->rc, r->cfg.io_timeout_ms);
    free(ibuf);
    free(mbuf);
    if (!rep) {
        r->need_verify = true;
        return -EIO;
    }
    long long v = 0;
    bool ok = kvb__rr_int(rep, &v);
    freeReplyObject(rep);
    if (!ok || v != 1)
        return ok ? -EPERM : -EPROTO;
    double secs = (double)(kvb_index_now_ns() - t0) / 1e9;
    /* trim behind the previous snapshot: a replica that loaded it can still read
     * its tail */
    uint64_t trimmed = 0, trims = 0;
    for (uint32_t i = 0; i < r->lg.n; i++) {
        struct kvb__rlog_worker *w = r->lg.list[i];
        if (w->have_snap) {
            w->trim_ms = w->snap_ms;
            w->trim_seq = w->snap_seq;
            w->have_trim = true;
        }
        if (w->n >= 0) {
            w->snap_ms = w->id_ms;
            w->snap_seq = w->id_seq;
            w->have_snap = true;
        }
        if (!w->have_trim)
            continue;
        char id[48];
        kvb__fmt_id(w->trim_ms, w->trim_seq, id, sizeof id);
        const char *targs[4] = {lease, w->key, inc, id};
        size_t tlens[4] = {strlen(lease), w->key_len, strlen(inc), strlen(id)};
        rep = kvb__rconn_script(&r->rc, KVB_RS_TRIM, 2, 4, targs, tlens);
        if (!rep)
            break;
        long long t;
        if (kvb__rr_int(rep, &t) && t >= 0) {
            trimmed += (uint64_t)t;
            trims++;
        }
        freeReplyObject(rep);
    }
    pthread_mutex_lock(&r->mu);
    r->st.snapshots++;
    r->st.snapshot_bytes = ilen + mlen;
    r->st.snapshot_seconds = secs;
    r->st.trims += trims;
    r->st.trimmed += trimmed;
    pthread_mutex_unlock(&r->mu);
    r->since_snapshot = 0;
    r->snap_last_ms = kvb__redis_mono_ms();
    return (int)(ilen + mlen > INT32_MAX ? INT32_MAX : ilen + mlen);
}

/* ---- the relay thread ------------------------------------------------------------------ */

static void retire(kvb_index *old[KVB_RLOG_IDX])
{
    for (int x = 0; x < KVB_RLOG_IDX; x++)
        if (old[x])
            kvb_index_destroy(old[x]);
}

static int standby_load(kvb_redis_relay *r)
{
    kvb_index *old[KVB_RLOG_IDX] = {NULL, NULL};
    uint64_t bytes = 0;
    int ret = kvb__rlog_fetch_snapshot(&r->lg, &r->rc, 2, r->cfg.snapshot_timeout_ms, old, &bytes);
    if (ret < 0) {
        wait_ms(r, 100); /* out of memory, or the connection broke */
        return ret;
    }
    retire(old);
    r->need_load = false;
    return 0;
}

/* Holding the lease (r->inc): read every stream to its end, then become ACTIVE. */
static int takeover(kvb_redis_relay *r)
{
    int64_t t0 = kvb_index_now_ns();
    for (int guard = 0; guard < 1000000; guard++) {
        if (kvb__redis_mono_ms() >= r->renew_due_ms) {
            int rr = lease_renew(r);
            if (rr <= 0)
                return rr == 0 ? -EPERM : rr;
        }
        if (r->lg.reload_wanted) {
            int ret = standby_load(r);
            if (ret < 0)
                return ret;
        }
        int ret = kvb__rlog_scan(&r->lg, &r->rc);
        if (ret < 0)
            return ret;
        bool full;
        ret = kvb__rlog_read(&r->lg, &r->rc, 10000, 0, &full);
        if (ret < 0)
            return ret;
        if (!full && !r->lg.reload_wanted)
            break;
        if (ret > 0 && !r->lg.reload_wanted)
            r->lg.fresh_holes = 0;
    }
    /* the last entry of every stream (applied or skipped) is what the append
     * script compares with */
    struct last_entry *le = calloc(r->lg.n ? r->lg.n : 1, sizeof *le);
    if (!le)
        return -ENOMEM;
    int ret = read_lasts(r, le);
    if (ret < 0) {
        free(le);
        return ret;
    }
    pthread_mutex_lock(&r->mu);
    for (uint32_t i = 0; i < r->lg.n; i++) {
        struct kvb__rlog_worker *lw = r->lg.list[i];
        struct relay_worker *pw = pw_get_locked(r, lw->name);
        if (!pw)
            continue;
        struct kvb__rpos p = {0, -1, 0};
        if (lw->have_seen)
            p = lw->seen;
        if (le[i].ok && kvb__rpos_cmp(le[i].f.pos, p) > 0)
            p = le[i].f.pos;
        pw->pos = p;
        pw->overflow = false;
        pw->n_ranks = 0;
        for (uint32_t k = 0; k < lw->n_ranks && k < RELAY_MAX_RANKS; k++)
            pw->ranks[pw->n_ranks++] = lw->ranks[k];
        lw->seen = p;
        lw->have_seen = true;
    }
    free(le);
    r->index = r->lg.idx[0];
    r->lg.idx[0] = NULL; /* from now on the subscriber feeds it */
    r->st.takeover_ns = kvb_index_now_ns() - t0;
    r->since_snapshot = 0;
    r->snap_last_ms = kvb__redis_mono_ms();
    pthread_mutex_unlock(&r->mu);
    set_state(r, KVB_REDIS_RELAY_ACTIVE);
    return 0;
}

static void standby_step(kvb_redis_relay *r)
{
    if (r->need_load || r->lg.reload_wanted) {
        if (standby_load(r) < 0)
            return;
    }
    int64_t now = kvb__redis_mono_ms();
    if (now >= r->scan_due_ms) {
        if (kvb__rlog_scan(&r->lg, &r->rc) < 0)
            return;
        r->scan_due_ms = now + 500;
    }
    if (now >= r->acquire_due_ms) {
        r->acquire_due_ms = now + r->cfg.acquire_poll_ms;
        int got = lease_acquire(r);
        if (got < 0)
            return;
        if (got == 1) {
            int ret = takeover(r);
            if (ret < 0 && kvb__rconn_ok(&r->rc))
                lease_release(r); /* let another standby have it at once */
            return;
        }
    }
    uint64_t before = r->lg.applied;
    bool full;
    int got = kvb__rlog_read(&r->lg, &r->rc, 1000, r->lg.n ? r->cfg.block_ms : 0, &full);
    if (got > 0 && !r->lg.reload_wanted)
        r->lg.fresh_holes = 0;
    pthread_mutex_lock(&r->mu);
    r->st.followed += r->lg.applied - before;
    pthread_mutex_unlock(&r->mu);
    if (got >= 0 && !r->lg.n)
        wait_ms(r, r->cfg.block_ms);
}

static void fence(kvb_redis_relay *r)
{
    set_state(r, KVB_REDIS_RELAY_FENCED);
    pop_done(r, true);
}

static void active_step(kvb_redis_relay *r)
{
    int64_t now = kvb__redis_mono_ms();
    if (now >= r->lease_deadline_ms) {
        to_lost(r); /* no renewal confirmed in time: we cannot know we hold it */
        return;
    }
    if (now >= r->renew_due_ms) {
        int rr = lease_renew(r);
        if (rr < 0)
            return;
        if (rr == 0) {
            to_lost(r);
            return;
        }
    }
    if (r->need_verify) {
        int v = verify_streams(r);
        if (v < 0)
            return;
        if (v == 1) {
            fence(r);
            return;
        }
        r->need_verify = false;
    }
    int ar = append_round(r);
    if (ar == -EPERM) {
        to_lost(r);
        return;
    }
    if (ar < 0)
        return;
    pthread_mutex_lock(&r->mu);
    bool asked = r->snap_requests > r->snap_done;
    uint64_t target = r->snap_requests;
    pthread_mutex_unlock(&r->mu);
    now = kvb__redis_mono_ms();
    bool due = asked || (r->cfg.snapshot_entries && r->since_snapshot >= r->cfg.snapshot_entries) ||
               (r->cfg.snapshot_ms && r->since_snapshot &&
                now - r->snap_last_ms >= (int64_t)r->cfg.snapshot_ms);
    if (due) {
        if (now + 50 >= r->renew_due_ms && lease_renew(r) <= 0)
            return;
        int sr = write_snapshot(r);
        if (sr == -EPERM) {
            to_lost(r);
            sr = -EAGAIN;
        }
        if (asked) {
            pthread_mutex_lock(&r->mu);
            r->snap_done = target;
            r->snap_result = sr;
            pthread_cond_broadcast(&r->done_cv);
            pthread_mutex_unlock(&r->mu);
        }
        return;
    }
    if (ar == 0) {
        /* idle: sleep until the renewal, new items or a request */
        pthread_mutex_lock(&r->mu);
        bool idle = !r->stop && r->count == 0 && r->snap_requests == r->snap_done;
        pthread_mutex_unlock(&r->mu);
        if (idle) {
            int64_t until = r->renew_due_ms;
            if (r->cfg.snapshot_ms && r->since_snapshot) {
                int64_t sd = r->snap_last_ms + r->cfg.snapshot_ms;
                if (sd < until)
                    until = sd;
            }
            wait_ms(r, until - kvb__redis_mono_ms());
        } else if (r->count) {
            /* items queued but none could be sent (all done, waiting to pop) */
            pop_done(r, false);
        }
    }
}

/* LOST: keep queueing; watch for another relay's entries (FENCED); take the lease
 * again with a new incarnation when it is free, and verify nothing changed. */
static void lost_step(kvb_redis_relay *r)
{
    int64_t now = kvb__redis_mono_ms();
    if (now < r->acquire_due_ms) {
        wait_ms(r, r->acquire_due_ms - now);
        return;
    }
    r->acquire_due_ms = now + r->cfg.acquire_poll_ms;
    /* read-only look first: another relay's entry at a stream's end is final
     * (streams created since we last looked included) */
    if (kvb__rlog_scan(&r->lg, &r->rc) < 0)
        return;
    struct last_entry *le = calloc(r->lg.n ? r->lg.n : 1, sizeof *le);
    if (!le)
        return;
    int ret = read_lasts(r, le);
    bool other = false;
    for (uint32_t i = 0; ret == 0 && i < r->lg.n; i++)
        if (le[i].exists && (!le[i].ok || (!is_mine(r, le[i].f.inc) && le[i].f.inc > r->inc)))
            other = true;
    free(le);
    if (ret < 0)
        return;
    if (other) {
        fence(r);
        return;
    }
    int got = lease_acquire(r);
    if (got <= 0)
        return;
    int v = verify_streams(r);
    if (v == 0) {
        r->need_verify = false;
        set_state(r, KVB_REDIS_RELAY_ACTIVE);
    } else if (v == 1) {
        lease_release(r);
        fence(r);
    } else {
        r->need_verify = true;
        set_state(r, KVB_REDIS_RELAY_ACTIVE); /* verified again after reconnecting */
    }
}

static void on_connected(kvb_redis_relay *r)
{
    pthread_mutex_lock(&r->mu);
    r->st.connected = true;
    r->st.reconnects = r->rc.reconnects;
    pthread_mutex_unlock(&r->mu);
    int st = atomic_load(&r->state);
    if (st == KVB_REDIS_RELAY_ACTIVE) {
        if (kvb__rconn_server_changed(&r->rc))
            to_lost(r); /* a restarted server may have lost the lease with its data */
        else
            r->need_verify = true;
    } else if (st == KVB_REDIS_RELAY_STANDBY) {
        /* a server that came back with less than we read: reload */
        if (kvb__rlog_heads(&r->lg, &r->rc) == 0 && r->lg.reload_wanted)
            r->need_load = true;
    }
}

static void *relay_main(void *arg)
{
    kvb_redis_relay *r = arg;
    uint32_t backoff = 50;
    while (!stopping(r)) {
        int st = atomic_load(&r->state);
        if (st == KVB_REDIS_RELAY_FENCED) {
            pop_done(r, true);
            wait_ms(r, 1000);
            continue;
        }
        if (!kvb__rconn_ok(&r->rc)) {
            pthread_mutex_lock(&r->mu);
            r->st.connected = false;
            r->st.errors = r->rc.errors;
            pthread_mutex_unlock(&r->mu);
            if (st == KVB_REDIS_RELAY_ACTIVE && kvb__redis_mono_ms() >= r->lease_deadline_ms)
                to_lost(r);
            if (kvb__rconn_connect(&r->rc) < 0) {
                wait_ms(r, backoff);
                backoff = backoff * 2 > r->cfg.backoff_max_ms ? r->cfg.backoff_max_ms : backoff * 2;
                continue;
            }
            backoff = 50;
            kvb__rconn_set_timeout(&r->rc, r->cfg.io_timeout_ms + r->cfg.block_ms);
            on_connected(r);
            continue;
        }
        switch (st) {
        case KVB_REDIS_RELAY_STANDBY:
            standby_step(r);
            break;
        case KVB_REDIS_RELAY_ACTIVE:
            active_step(r);
            break;
        case KVB_REDIS_RELAY_LOST:
            lost_step(r);
            break;
        default:
            wait_ms(r, 100);
        }
        pthread_mutex_lock(&r->mu);
        r->st.errors = r->rc.errors;
        r->st.connected = kvb__rconn_ok(&r->rc);
        pthread_mutex_unlock(&r->mu);
    }
    /* stopping: append what is queued for at most io_timeout_ms, then let go */
    if (atomic_load(&r->state) == KVB_REDIS_RELAY_ACTIVE && kvb__rconn_ok(&r->rc)) {
        int64_t until = kvb__redis_mono_ms() + r->cfg.io_timeout_ms;
        while (kvb__redis_mono_ms() < until && kvb__redis_mono_ms() < r->lease_deadline_ms) {
            int ar = append_round(r);
            if (ar <= 0)
                break;
        }
        lease_release(r);
    }
    pop_done(r, true);
    set_state(r, KVB_REDIS_RELAY_STOPPED);
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------ */

KVB_API int kvb_redis_relay_create(const kvb_redis_relay_config *cfg, kvb_redis_relay **out)
{
    if (!cfg || !out || !cfg->url)
        return -EINVAL;
    *out = NULL;
    kvb_redis_relay_config c = *cfg;
    kvb_redis_relay_config d;
    kvb_redis_relay_config_init(&d);
#define DEF(f)                                                                                     \
    if (!c.f)                                                                                      \
    c.f = d.f
    DEF(lease_ms);
    DEF(renew_ms);
    DEF(acquire_poll_ms);
    DEF(queue_entries);
    DEF(queue_bytes);
    DEF(append_max_entries);
    DEF(io_timeout_ms);
    DEF(snapshot_timeout_ms);
    DEF(block_ms);
    DEF(backoff_max_ms);
#undef DEF
    if (c.renew_ms >= c.lease_ms || c.queue_entries < 4 || c.append_max_entries > 100000)
        return -EINVAL;
    if (c.index.block_size == 0)
        kvb_index_config_init(&c.index);
    kvb_redis_relay *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    int ret = kvb__rconn_init(&r->rc, c.url, c.prefix, c.io_timeout_ms);
    if (ret < 0) {
        free(r);
        return ret;
    }
    /* a probe of the index configuration: -EINVAL now rather than in the thread */
    kvb_index *probe = NULL;
    ret = kvb_index_create(&c.index, &probe);
    if (ret < 0) {
        free(r);
        return ret;
    }
    kvb_index_destroy(probe);
    r->url_copy = strdup(c.url);
    r->prefix_copy = strdup(c.prefix ? c.prefix : "kvb:");
    r->ring_cap = c.queue_entries;
    r->ring = calloc(r->ring_cap, sizeof *r->ring);
    r->wmap_cap = 64;
    r->wmap = calloc(r->wmap_cap, sizeof *r->wmap);
    r->ret_cap = c.retain_bytes ? c.queue_entries : 0;
    r->ret = r->ret_cap ? calloc(r->ret_cap, sizeof *r->ret) : NULL;
    if (r->ret_cap && !r->ret)
        r->ret_cap = 0; /* no retention: lost entries become clears */
    if (!r->url_copy || !r->prefix_copy || !r->ring || !r->wmap ||
        kvb__rlog_init(&r->lg, &c.index) < 0) {
        free(r->url_copy);
        free(r->prefix_copy);
        free(r->ring);
        free(r->wmap);
        kvb__rlog_fini(&r->lg);
        free(r);
        return -ENOMEM;
    }
    c.url = r->url_copy;
    c.prefix = r->prefix_copy;
    r->cfg = c;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_cond_init(&r->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&r->state, KVB_REDIS_RELAY_STANDBY);
    r->st.state = KVB_REDIS_RELAY_STANDBY;
    r->need_load = true;
    ret = pthread_create(&r->thread, NULL, relay_main, r);
    if (ret != 0) {
        r->thread_started = false;
        kvb_redis_relay_destroy(r);
        return -ret;
    }
    r->thread_started = true;
    pthread_setname_np(r->thread, "kvb-relay"); /* for top -H, perf and the bench */
    *out = r;
    return 0;
}

KVB_API int kvb_redis_relay_destroy(kvb_redis_relay *r)
{
    if (!r)
        return -EINVAL;
    if (r->thread_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    kvb__rconn_close(&r->rc);
    for (uint32_t i = 0; i < r->count; i++)
        free(r->ring[(r->head + i) % r->ring_cap].blob);
    for (int x = 0; x < KVB_RLOG_IDX; x++)
        if (r->lg.idx[x])
            kvb_index_destroy(r->lg.idx[x]);
    if (r->index)
        kvb_index_destroy(r->index);
    kvb__rlog_fini(&r->lg);
    while (r->workers) {
        struct relay_worker *w = r->workers;
        r->workers = w->next;
        free(w);
    }
    free(r->wmap);
    for (uint32_t i = 0; i < r->ret_count; i++)
        free(r->ret[(r->ret_head + i) % r->ret_cap].blob);
    free(r->ret);
    free(r->ring);
    free(r->url_copy);
    free(r->prefix_copy);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->done_cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return 0;
}

static int timed_wait_done(kvb_redis_relay *r, const struct timespec *deadline)
{
    return pthread_cond_timedwait(&r->done_cv, &r->mu, deadline);
}

KVB_API int kvb_redis_relay_wait_active(kvb_redis_relay *r, uint32_t timeout_ms)
{
    if (!r)
        return -EINVAL;
    struct timespec dl = kvb__redis_deadline(timeout_ms);
    pthread_mutex_lock(&r->mu);
    int ret = 0;
    for (;;) {
        int st = atomic_load(&r->state);
        if (st == KVB_REDIS_RELAY_ACTIVE || (st == KVB_REDIS_RELAY_LOST && r->index))
            break;
        if (st == KVB_REDIS_RELAY_FENCED || st == KVB_REDIS_RELAY_STOPPED || r->stop) {
            ret = -ECANCELED;
            break;
        }
        if (timed_wait_done(r, &dl) == ETIMEDOUT) {
            ret = -ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ret;
}

KVB_API kvb_index *kvb_redis_relay_index(kvb_redis_relay *r)
{
    if (!r)
        return NULL;
    pthread_mutex_lock(&r->mu);
    kvb_index *idx = r->index;
    pthread_mutex_unlock(&r->mu);
    return idx;
}

KVB_API int kvb_redis_relay_flush(kvb_redis_relay *r, uint32_t timeout_ms)
{
    if (!r)
        return -EINVAL;
    struct timespec dl = kvb__redis_deadline(timeout_ms);
    pthread_mutex_lock(&r->mu);
    uint64_t target = r->enq_total;
    int ret = 0;
    while (r->done_total < target) {
        pthread_cond_signal(&r->cv);
        if (timed_wait_done(r, &dl) == ETIMEDOUT) {
            ret = r->done_total < target ? -ETIMEDOUT : 0;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ret;
}

KVB_API int kvb_redis_relay_snapshot(kvb_redis_relay *r, uint32_t timeout_ms, size_t *bytes)
{
    if (!r)
        return -EINVAL;
    if (atomic_load(&r->state) != KVB_REDIS_RELAY_ACTIVE)
        return -EAGAIN;
    struct timespec dl = kvb__redis_deadline(timeout_ms);
    pthread_mutex_lock(&r->mu);
    uint64_t target = ++r->snap_requests;
    pthread_cond_signal(&r->cv);
    int ret = 0;
    while (r->snap_done < target) {
        if (timed_wait_done(r, &dl) == ETIMEDOUT) {
            ret = -ETIMEDOUT;
            break;
        }
    }
    if (ret == 0) {
        ret = r->snap_result < 0 ? r->snap_result : 0;
        if (ret == 0 && bytes)
            *bytes = (size_t)r->st.snapshot_bytes;
    }
    pthread_mutex_unlock(&r->mu);
    return ret;
}

KVB_API int kvb_redis_relay_stats_get(kvb_redis_relay *r, kvb_redis_relay_stats *out)
{
    if (!r || !out)
        return -EINVAL;
    pthread_mutex_lock(&r->mu);
    *out = *stats_locked(r);
    out->state = (kvb_redis_relay_state)atomic_load(&r->state);
    out->queued = r->count;
    out->queued_bytes = r->bytes;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

#endif /* KVB_HAVE_REDIS */
