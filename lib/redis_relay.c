/*
 * redis_relay.c - the relay of FLEET.md section 8 (kvblock/redis.h): appends
 * what its subscriber accepts to one Redis Stream per worker, holds the lease,
 * writes snapshots and trims; as a standby it follows the log until it takes
 * the lease.
 *
 * This file: the subscriber callback and the producer workers it places notes
 * for, and the public functions; the queue, appends and the verification of
 * the streams are redis_relay_append.c, the lease, snapshots and the relay
 * thread's states redis_relay_thread.c (redis_relay_internal.h: the layout).
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
#include "redis_relay_internal.h"

#ifdef KVB_HAVE_REDIS

static const kvb_redis_relay_stats *stats_locked(kvb_redis_relay *r)
{
    return &r->st;
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

struct relay_worker *kvb__relay_pw_get_locked(kvb_redis_relay *r, const char *name)
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

void *kvb__relay_encode_alloc(const kvb_redis_entry *e, size_t *len)
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
    struct relay_worker *w = kvb__relay_pw_get_locked(r, worker);
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
        items[n].blob = kvb__relay_encode_alloc(&c, &items[n].len);
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
    items[n].blob = kvb__relay_encode_alloc(&e, &items[n].len);
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
    struct relay_worker *w = kvb__relay_pw_get_locked(r, worker);
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
    it.blob = kvb__relay_encode_alloc(&e, &it.len);
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
    kvb__redis_cond_init(&r->cv);
    kvb__redis_cond_init(&r->done_cv);
    atomic_init(&r->state, KVB_REDIS_RELAY_STANDBY);
    r->st.state = KVB_REDIS_RELAY_STANDBY;
    r->need_load = true;
    ret = kvb__redis_thread_start(&r->thread, &r->thread_started, kvb__relay_main, r, "kvb-relay");
    if (ret < 0) {
        kvb_redis_relay_destroy(r);
        return ret;
    }
    *out = r;
    return 0;
}

KVB_API int kvb_redis_relay_destroy(kvb_redis_relay *r)
{
    if (!r)
        return -EINVAL;
    if (r->thread_started)
        kvb__redis_stop_join(&r->mu, &r->cv, &r->stop, r->thread);
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
